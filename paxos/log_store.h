// The storage seam of the core. The core reads durable state through a
// LogStore; the host writes each Ready's persistent part into it and that
// write is the durability point (one LMDB transaction in the broker).
#pragma once

#include <map>
#include <optional>
#include <span>
#include <string>

#include "paxos/applied_state.h"
#include "paxos/namespace.h"
#include "paxos/types.h"
#include "paxos/value.h"

namespace ORDO_PAXOS_NAMESPACE {

// The acceptor's durable scalars.
struct HardState {
  Ballot promised{};  // highest ballot promised (P1a)
  Instance chosen{};  // every instance up to here is chosen and stored locally
  // A voter that lost its disk does not vote until it has applied this
  // instance (kProbing: it has not learned yet how far that is); none = votes.
  Instance catch_up_until{};
  static constexpr Instance kProbing{~uint64_t{0}};
  bool operator==(const HardState&) const = default;
};

enum class StoreCode : uint8_t {
  kOk = 0,
  kNotFound = 1,
  kCorrupt = 2,  // the record failed its checksum: never serve or vote on it
  kIoError = 3,
};

const char* ToString(StoreCode code);

// Thread rules: single-threaded, like the core. Implementations: MemoryLogStore
// (tests, simulator) and the LMDB store in broker/.
class LogStore {
 public:
  virtual ~LogStore() = default;

  // --- Reads, used by the core. ---
  virtual HardState LoadHardState() const = 0;
  // Highest instance with an entry, or kNoInstance when the log is empty.
  virtual Instance LastInstance() const = 0;
  // Fills *out for `instance`. kNotFound when no entry; kCorrupt when the
  // stored record fails its check (the entry must then be treated as unknown).
  virtual StoreCode Get(Instance instance, Entry* out) const = 0;
  // The first instance still in the log: instances below it were truncated
  // behind the snapshot (LoadSnapshot), so Get answers kNotFound for them.
  virtual Instance FirstInstance() const { return Instance(1); }
  // The snapshot the log continues from, if any: the applied state at
  // snapshot.instance (>= FirstInstance() - 1).
  virtual std::optional<AppliedSnapshot> LoadSnapshot() const { return std::nullopt; }

  // --- Writes, done by the host with a Ready's contents. ---
  // Atomically makes `hard_state` and `entries` (inserted or overwritten)
  // durable. Returns kOk or kIoError; on error the host must stop the replica
  // (fail-stop: nothing it vouched for may be lost).
  virtual StoreCode Save(const HardState& hard_state, std::span<const Entry> entries) = 0;
};

// An in-memory LogStore: "durable" means "written here". The simulator keeps
// it across a simulated crash and throws the replica's memory away.
class MemoryLogStore final : public LogStore {
 public:
  HardState LoadHardState() const override { return hard_state_; }
  Instance LastInstance() const override;
  StoreCode Get(Instance instance, Entry* out) const override;
  StoreCode Save(const HardState& hard_state, std::span<const Entry> entries) override;
  Instance FirstInstance() const override { return first_; }
  std::optional<AppliedSnapshot> LoadSnapshot() const override { return snapshot_; }

  // What a host does with snapshots (the simulator plays host):
  // remembers `snapshot` as the one to serve and to restart from.
  void SaveSnapshot(const AppliedSnapshot& snapshot);
  // Drops the entries below `first` (at most snapshot.instance + 1).
  void Truncate(Instance first);
  // Replaces everything up to snapshot.instance with `snapshot` (a snapshot
  // installed from a peer): entries up to there are dropped and the chosen
  // frontier moves up to it.
  void InstallSnapshot(const AppliedSnapshot& snapshot);

  // Test hooks: mark a stored record as failing its checksum, or drop all.
  void CorruptForTest(Instance instance) { corrupt_[instance] = true; }
  size_t EntryCount() const { return entries_.size(); }
  uint64_t save_count() const { return save_count_; }

 private:
  HardState hard_state_{};
  Instance first_{1};
  std::optional<AppliedSnapshot> snapshot_;
  std::map<Instance, Entry> entries_;
  std::map<Instance, bool> corrupt_;
  uint64_t save_count_ = 0;
};

}  // namespace ordo::paxos
