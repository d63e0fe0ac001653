#include "node/node_loop.h"

#include <algorithm>
#include <utility>

namespace ORDO_NODE_NAMESPACE {

const char* ToString(Durability durability) {
  switch (durability) {
    case Durability::kVolatile: return "volatile";
    case Durability::kSync: return "sync";
    case Durability::kCheckpoint: return "checkpoint";
  }
  return "?";
}

NodeLoop::NodeLoop(paxos::Replica& replica, Storage& storage, Transport& transport, Host& host,
                   Options options)
    : replica_(replica),
      storage_(storage),
      transport_(transport),
      host_(host),
      options_(options),
      written_(storage.LoadHardState()) {}

Status NodeLoop::Write(const paxos::HardState& hard, std::span<const paxos::Entry> entries,
                       std::span<const paxos::AppliedInstance> applied, Durability durability) {
  std::span<const paxos::AppliedInstance> all = applied;
  if (!deferred_applied_.empty()) {
    deferred_applied_.insert(deferred_applied_.end(), applied.begin(), applied.end());
    all = deferred_applied_;
  }
  Status s = storage_.Write(hard, entries, all, durability);
  if (!s.ok()) return s;
  written_ = hard;
  deferred_applied_.clear();
  has_deferred_ = false;
  return Status::Ok();
}

Status NodeLoop::FlushDeferred() {
  if (!has_deferred_) return Status::Ok();
  const paxos::HardState hard = deferred_hard_;
  return Write(hard, {}, {}, Durability::kVolatile);
}

void NodeLoop::ReportUnreadable(paxos::Instance instance) {
  if (in_ready_) {
    unreadable_.push_back(instance);
  } else {
    replica_.ReportUnreadable(instance);
  }
}

Status NodeLoop::Drain() {
  for (paxos::Instance bad : std::exchange(unreadable_, {})) replica_.ReportUnreadable(bad);
  while (replica_.HasReady()) {
    paxos::Ready r = replica_.TakeReady();
    in_ready_ = true;
    host_.OnReady(r);
    for (const paxos::Message& m : r.messages) transport_.Send(m);
    host_.OnApplied(r.applied);
    if (bug(paxos::Bug::kVoteBeforePersist)) {
      for (const paxos::Message& m : r.messages_after_persist) transport_.Send(m);
    }
    bool index = false;
    for (const paxos::AppliedInstance& a : r.applied) index |= a.appended > 0;
    // What must be durable before messages_after_persist leave: accepted
    // entries, a changed promise and the lost-disk mark. A snapshot point is
    // a checkpoint: the snapshot's reader must see exactly it.
    const bool mark_changed = r.hard_state.catch_up_until != written_.catch_up_until &&
                              !bug(paxos::Bug::kForgetDeferredChosen);
    const bool now_needed = !r.entries.empty() || r.hard_state.promised != written_.promised ||
                            mark_changed || r.snapshot.has_value();
    if (now_needed) {
      Durability d = r.snapshot ? Durability::kCheckpoint : Durability::kSync;
      if (bug(paxos::Bug::kSkipJournalSync) && d == Durability::kSync) d = Durability::kVolatile;
      if (Status s = Write(r.hard_state, r.entries, r.applied, d); !s.ok()) {
        in_ready_ = false;
        return s;
      }
    } else if (r.hard_state_changed || index) {
      deferred_hard_ = r.hard_state;
      deferred_applied_.insert(deferred_applied_.end(), r.applied.begin(), r.applied.end());
      has_deferred_ = true;
      if (deferred_applied_.size() >= options_.deferred_instances_max) {
        if (Status s = FlushDeferred(); !s.ok()) {
          in_ready_ = false;
          return s;
        }
      }
    }
    if (!bug(paxos::Bug::kVoteBeforePersist)) {
      for (const paxos::Message& m : r.messages_after_persist) transport_.Send(m);
    }
    if (!r.fetches_to_serve.empty()) {
      paxos::Instance last{};
      for (const paxos::FetchToServe& f : r.fetches_to_serve) last = std::max(last, f.last);
      if (Status s = storage_.MakeReadable(last); !s.ok()) {
        in_ready_ = false;
        return s;
      }
      for (paxos::FetchToServe& f : r.fetches_to_serve) host_.ServeFetch(std::move(f));
    }
    if (r.lost_leadership) host_.OnLostLeadership();
    if (r.snapshot) host_.OnSnapshotPoint(*r.snapshot);
    if (r.need_snapshot) host_.OnNeedSnapshot(r.snapshot_peer, r.snapshot_min);
    replica_.Advance();
    in_ready_ = false;
    for (paxos::Instance bad : std::exchange(unreadable_, {})) replica_.ReportUnreadable(bad);
  }
  return Status::Ok();
}

}  // namespace ordo::node
