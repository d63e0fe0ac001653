#include "paxos/log_store.h"

#include <algorithm>

namespace ORDO_PAXOS_NAMESPACE {

Instance MemoryLogStore::LastInstance() const {
  return entries_.empty() ? kNoInstance : entries_.rbegin()->first;
}

StoreCode MemoryLogStore::Get(Instance instance, Entry* out) const {
  auto it = entries_.find(instance);
  if (it == entries_.end()) return StoreCode::kNotFound;
  if (corrupt_.count(instance)) return StoreCode::kCorrupt;
  *out = it->second;
  return StoreCode::kOk;
}

StoreCode MemoryLogStore::Save(const HardState& hard_state, std::span<const Entry> entries) {
  hard_state_ = hard_state;
  for (const Entry& e : entries) {
    if (e.instance < first_) continue;  // behind the snapshot: not kept
    entries_[e.instance] = e;
    corrupt_.erase(e.instance);  // a rewrite repairs the record
  }
  ++save_count_;
  return StoreCode::kOk;
}

void MemoryLogStore::SaveSnapshot(const AppliedSnapshot& snapshot) {
  if (!snapshot_ || snapshot_->instance < snapshot.instance) snapshot_ = snapshot;
}

void MemoryLogStore::Truncate(Instance first) {
  if (!snapshot_ || first <= first_) return;
  first = std::min(first, snapshot_->instance.next());
  entries_.erase(entries_.begin(), entries_.lower_bound(first));
  corrupt_.erase(corrupt_.begin(), corrupt_.lower_bound(first));
  first_ = first;
}

void MemoryLogStore::InstallSnapshot(const AppliedSnapshot& snapshot) {
  if (snapshot_ && snapshot_->instance >= snapshot.instance) return;
  snapshot_ = snapshot;
  const Instance first = snapshot.instance.next();
  entries_.erase(entries_.begin(), entries_.lower_bound(first));
  corrupt_.erase(corrupt_.begin(), corrupt_.lower_bound(first));
  first_ = std::max(first_, first);
  hard_state_.chosen = std::max(hard_state_.chosen, snapshot.instance);
  ++save_count_;
}

}  // namespace ordo::paxos
