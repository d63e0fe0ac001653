// The node loop's storage seam: the core's reads (paxos::LogStore) plus one
// write call whose durability is explicit. The broker implements it with
// LMDB and its journal (broker/node_storage.h), the simulator with a disk
// that loses what was not synced at a crash (tests/sim/sim_disk.h), unit
// tests with memory (node/memory_storage.h).
#pragma once

#include <cstdint>
#include <span>

#include "base/status.h"
#include "paxos/applied_state.h"
#include "paxos/log_store.h"
#include "paxos/namespace.h"

namespace ORDO_NODE_NAMESPACE {

// What a write must survive.
enum class Durability : uint8_t {
  // May be lost at a crash until a later write that is kSync or kCheckpoint
  // (those make everything before them durable too). Only for state that is
  // re-derived after a crash: the chosen mark, the offset index.
  kVolatile,
  // Durable when Write returns: what a vote or a promise stands on.
  kSync,
  // Durable and visible to readers on other threads (a snapshot point: the
  // snapshot encoder reads exactly this state).
  kCheckpoint,
};
const char* ToString(Durability durability);

class Storage : public paxos::LogStore {
 public:
  // Writes the hard state, the entries (inserted or overwritten) and the
  // offset index of `applied` as one atomic unit, with `durability`.
  // A failure is fail-stop: the caller stops the node.
  virtual Status Write(const paxos::HardState& hard_state, std::span<const paxos::Entry> entries,
                       std::span<const paxos::AppliedInstance> applied, Durability durability) = 0;
  // Entries up to `last` must be readable by another thread's reader (the
  // broker's catch-up server) before it is handed a fetch to serve.
  virtual Status MakeReadable(paxos::Instance last) = 0;

  // paxos::LogStore's write, for hosts that have no index: a synced write.
  paxos::StoreCode Save(const paxos::HardState& hard_state,
                        std::span<const paxos::Entry> entries) final {
    return Write(hard_state, entries, {}, Durability::kSync).ok() ? paxos::StoreCode::kOk
                                                                  : paxos::StoreCode::kIoError;
  }
};

// A Storage whose reads are those of another paxos::LogStore (the broker's
// LMDB store, a memory store): subclasses add the writes.
class StorageReadingFrom : public Storage {
 public:
  explicit StorageReadingFrom(const paxos::LogStore& reads) : reads_(reads) {}
  paxos::HardState LoadHardState() const override { return reads_.LoadHardState(); }
  paxos::Instance LastInstance() const override { return reads_.LastInstance(); }
  paxos::StoreCode Get(paxos::Instance instance, paxos::Entry* out) const override {
    return reads_.Get(instance, out);
  }
  paxos::Instance FirstInstance() const override { return reads_.FirstInstance(); }
  std::optional<paxos::AppliedSnapshot> LoadSnapshot() const override {
    return reads_.LoadSnapshot();
  }

 private:
  const paxos::LogStore& reads_;
};

}  // namespace ordo::node
