// node::MemoryStorage: node::Storage over paxos::MemoryLogStore, for unit
// tests of the core: every write is "durable" at once, whatever it asks for.
#pragma once

#include "node/storage.h"

namespace ordo::node {

class MemoryStorage final : public Storage {
 public:
  paxos::HardState LoadHardState() const override { return store_.LoadHardState(); }
  paxos::Instance LastInstance() const override { return store_.LastInstance(); }
  paxos::StoreCode Get(paxos::Instance instance, paxos::Entry* out) const override {
    return store_.Get(instance, out);
  }
  paxos::Instance FirstInstance() const override { return store_.FirstInstance(); }
  std::optional<paxos::AppliedSnapshot> LoadSnapshot() const override {
    return store_.LoadSnapshot();
  }
  Status Write(const paxos::HardState& hard_state, std::span<const paxos::Entry> entries,
               std::span<const paxos::AppliedInstance>, Durability) override {
    return store_.Save(hard_state, entries) == paxos::StoreCode::kOk
               ? Status::Ok()
               : Status::Storage("memory store refused the write");
  }
  Status MakeReadable(paxos::Instance) override { return Status::Ok(); }

  // Test hooks, as MemoryLogStore's.
  void CorruptForTest(paxos::Instance instance) { store_.CorruptForTest(instance); }
  uint64_t save_count() const { return store_.save_count(); }
  paxos::MemoryLogStore& memory() { return store_; }
  const paxos::MemoryLogStore& memory() const { return store_; }

 private:
  paxos::MemoryLogStore store_;
};

}  // namespace ordo::node
