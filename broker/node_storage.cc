#include "broker/node_storage.h"

#include <chrono>

namespace ordo::broker {

namespace {
using Clock = std::chrono::steady_clock;

LmdbStore::Durability ToStore(node::Durability d) {
  switch (d) {
    case node::Durability::kVolatile: return LmdbStore::Durability::kJournalNoSync;
    case node::Durability::kSync: return LmdbStore::Durability::kJournal;
    case node::Durability::kCheckpoint: return LmdbStore::Durability::kCommit;
  }
  return LmdbStore::Durability::kCommit;
}
}  // namespace

Status NodeStorage::Write(const paxos::HardState& hard_state,
                          std::span<const paxos::Entry> entries,
                          std::span<const paxos::AppliedInstance> applied,
                          node::Durability durability) {
  const auto start = Clock::now();
  if (store_.Commit(hard_state, entries, applied, ToStore(durability)) != paxos::StoreCode::kOk) {
    // Fail-stop: continuing could vouch for state that is not durable.
    return Status::Error("storage failure: " + store_.last_error());
  }
  if (metrics_) {
    metrics_->ObserveFsync(std::chrono::duration<double>(Clock::now() - start).count());
  }
  if (store_.journal_bytes() >= kPendingJournalBytesMax) return CommitPending();
  return Status::Ok();
}

Status NodeStorage::MakeReadable(paxos::Instance last) {
  // The catch-up server reads in a read transaction of its own: every entry
  // it is asked for must be committed to LMDB, not only journaled.
  const paxos::Instance pending_first = store_.pending_first_instance();
  if (pending_first != paxos::kNoInstance && last >= pending_first) return CommitPending();
  return Status::Ok();
}

Status NodeStorage::CommitPending() {
  if (!store_.has_pending()) return Status::Ok();
  const auto start = Clock::now();
  if (store_.CommitPending() != paxos::StoreCode::kOk) {
    return Status::Error("storage failure: " + store_.last_error());
  }
  if (metrics_) {
    metrics_->ObserveFsync(std::chrono::duration<double>(Clock::now() - start).count());
  }
  return Status::Ok();
}

}  // namespace ordo::broker
