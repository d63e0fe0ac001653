// broker::NodeStorage: the node loop's Storage (node/storage.h) over the
// LMDB store and its journal. kSync is a journal record and one fdatasync
// (LMDB's commit comes later, CommitPending); kVolatile a journal record
// made durable by the next sync; kCheckpoint an LMDB commit. Past
// kPendingJournalBytesMax of journal the pending transaction is committed.
#pragma once

#include "broker/lmdb_store.h"
#include "monitoring/metrics.h"
#include "node/storage.h"

namespace ordo::broker {

class NodeStorage final : public node::StorageReadingFrom {
 public:
  explicit NodeStorage(LmdbStore& store) : StorageReadingFrom(store), store_(store) {}
  void set_metrics(monitoring::BrokerMetrics* metrics) { metrics_ = metrics; }

  Status Write(const paxos::HardState& hard_state, std::span<const paxos::Entry> entries,
               std::span<const paxos::AppliedInstance> applied,
               node::Durability durability) override;
  // Commits the journaled writes to LMDB when a reader needs `last`.
  Status MakeReadable(paxos::Instance last) override;
  // Commits the store's pending transaction to LMDB (see lmdb_store.h).
  Status CommitPending();

  // Journaled writes are committed to LMDB after this many bytes of journal.
  // The commit stalls the loop, for longer the more it writes: 1 MiB keeps
  // that to a few ms (8 MiB gave p99s of 25-180 ms at 70-350 k msgs/s).
  static constexpr uint64_t kPendingJournalBytesMax = 1ull << 20;

 private:
  LmdbStore& store_;
  monitoring::BrokerMetrics* metrics_ = nullptr;
};

}  // namespace ordo::broker
