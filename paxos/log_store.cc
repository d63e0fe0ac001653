#include "paxos/log_store.h"

namespace ordo::paxos {

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
    entries_[e.instance] = e;
    corrupt_.erase(e.instance);  // a rewrite repairs the record
  }
  ++save_count_;
  return StoreCode::kOk;
}

}  // namespace ordo::paxos
