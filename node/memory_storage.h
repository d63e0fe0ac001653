// node::MemoryStorage: node::Storage over paxos::MemoryLogStore, for unit
// tests of the core: every write is "durable" at once, whatever it asks for.
#pragma once

#include "node/storage.h"
#include "paxos/namespace.h"

namespace ORDO_NODE_NAMESPACE {

class MemoryStorage final : public StorageReadingFrom {
 public:
  MemoryStorage() : StorageReadingFrom(store_) {}  // (store_ is only read later)
  MemoryStorage(const MemoryStorage&) = delete;
  MemoryStorage& operator=(const MemoryStorage&) = delete;
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
