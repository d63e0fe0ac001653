// The LogStore contract, for the in-memory store.
#include "tests/unit/log_store_contract.h"

namespace ordo::paxos {
namespace {

struct MemoryFactory {
  MemoryLogStore memory;
  LogStore& store() { return memory; }
  void Reopen() {}  // memory is its own durable state
};

INSTANTIATE_TYPED_TEST_SUITE_P(Memory, LogStoreContract, MemoryFactory);

}  // namespace
}  // namespace ordo::paxos
