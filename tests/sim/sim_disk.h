// SimDisk: the simulator's storage under the node loop (node::Storage),
// with a fault model. It keeps two states: what reads see (the page cache)
// and what survives a crash (the platter). A write with kSync or
// kCheckpoint makes everything written before it durable; a kVolatile write
// is durable only once a later sync happens, and a crash keeps a random
// prefix of the writes since the last sync (each write is atomic, as a
// journal record with its checksum is).
//
// Faults, for a node the seed made faulty (a minority):
//   - a record or the hard state ("meta") fails its check (bit rot);
//   - a misdirected write: a write also lands on another record's place,
//     which then fails its check (the key is covered by the checksum);
//   - a sync the disk lied about: that write is lost when a later sync
//     goes through, which the journal's sequence shows at the next open;
//   - a crash in the middle of a write (nothing of it survives).
// What the open finds damaged is reported (Open) and the host does what
// the broker does: quarantine and rejoin as a lost disk.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "node/storage.h"
#include "paxos/bugs.h"
#include "paxos/rng.h"

namespace ordo::sim {

struct DiskFaults {
  double crash_in_write = 0;  // per synced write
  double lie_on_sync = 0;     // per synced write
  double misdirect = 0;       // per write with entries
};

class SimDisk final : public node::Storage {
 public:
  // --- node::Storage ---
  paxos::HardState LoadHardState() const override { return live_.hard; }
  paxos::Instance LastInstance() const override;
  paxos::StoreCode Get(paxos::Instance instance, paxos::Entry* out) const override;
  paxos::Instance FirstInstance() const override { return live_.first; }
  std::optional<paxos::AppliedSnapshot> LoadSnapshot() const override { return live_.snapshot; }
  Status Write(const paxos::HardState& hard_state, std::span<const paxos::Entry> entries,
               std::span<const paxos::AppliedInstance> applied,
               node::Durability durability) override;
  Status MakeReadable(paxos::Instance) override { return Status::Ok(); }

  // --- the simulator's side ---
  // What is really stored (for the checker): like Get, with no mutant.
  paxos::StoreCode Peek(paxos::Instance instance, paxos::Entry* out) const;
  void Configure(paxos::Rng* rng, DiskFaults faults, paxos::Bug bug) {
    rng_ = rng;
    faults_ = faults;
    bug_ = bug;
  }
  // A process crash: what reads see becomes what survived.
  void Crash();
  // Opens after a crash or at start: "" when the state is sound, else what
  // failed its checks (the host quarantines: Wipe, then rejoin).
  std::string Open();
  void Wipe();
  bool Empty() const;
  // After a crash: what the node had been told was durable and the disk no
  // longer holds ("" when nothing). Unless Open reports damage, that is a
  // lost write nobody noticed.
  const std::string& lost_at_crash() const { return lost_at_crash_; }

  // Host-side snapshot writes (durable at once, like the broker's).
  void SaveSnapshot(const paxos::AppliedSnapshot& snapshot);
  void Truncate(paxos::Instance first);
  void InstallSnapshot(const paxos::AppliedSnapshot& snapshot);

  // What the node was told is durable (synced, or synced as far as the
  // disk admitted): backs a vote for `ballot` on [first, last] (an empty
  // range: a promise)? Instances up to `chosen` (the node knows them
  // chosen, and acknowledges them without a rewrite) need a record at any
  // ballot.
  bool Backs(paxos::Ballot ballot, paxos::Instance first, paxos::Instance last,
             paxos::Instance chosen) const;
  // The hard state as the node was told it is durable.
  paxos::HardState ClaimedHardState() const;
  // After an open: whether the state still has the accept (instance,
  // ballot), or has moved past it (a higher ballot, chosen, truncated).
  bool Holds(paxos::Instance instance, paxos::Ballot ballot) const;

  // Faults.
  void RotRecord(uint64_t pick);  // a stored record fails its check
  void RotMeta();                 // the hard state fails its check (seen at open)
  uint64_t faults() const { return faults_injected_; }
  uint64_t writes() const { return writes_; }

 private:
  struct State {
    paxos::HardState hard{};
    paxos::Instance first{1};
    std::optional<paxos::AppliedSnapshot> snapshot;
    std::map<paxos::Instance, paxos::Entry> entries;
    std::set<paxos::Instance> rotten;
    bool meta_rotten = false;
  };
  struct Record {  // one write, as the journal holds it
    paxos::HardState hard{};
    std::vector<paxos::Entry> entries;
    std::optional<paxos::Instance> misdirected_onto;
    bool synced = false;  // asked for kSync/kCheckpoint
    bool lied = false;    // ...and the disk only said so
  };
  static void Apply(const Record& r, State* s);
  void Sync();

  paxos::Rng* rng_ = nullptr;
  DiskFaults faults_{};
  paxos::Bug bug_ = paxos::Bug::kNone;
  State live_;     // what reads see
  State durable_;  // what a crash keeps
  State claimed_;  // what the node was told is durable (lied syncs included)
  std::vector<Record> unsynced_;
  size_t claimed_upto_ = 0;  // unsynced_[0, this) are in claimed_ (lied syncs)
  bool journal_gap_ = false;
  std::string lost_at_crash_;  // a lied-about write was lost behind a later sync
  uint64_t faults_injected_ = 0;
  uint64_t writes_ = 0;
};

}  // namespace ordo::sim
