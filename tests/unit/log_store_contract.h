// Contract tests every LogStore implementation must pass: one typed suite,
// instantiated for MemoryLogStore (paxos_test) and LmdbStore (broker_test).
// A factory type F provides `paxos::LogStore& store()` and `void Reopen()`
// (reopen from durable state; a no-op for the memory store).
#pragma once

#include <gtest/gtest.h>

#include "paxos/log_store.h"

namespace ordo::paxos {

template <typename F>
class LogStoreContract : public ::testing::Test {
 protected:
  F factory_;
  LogStore& store() { return factory_.store(); }
};

TYPED_TEST_SUITE_P(LogStoreContract);

TYPED_TEST_P(LogStoreContract, EmptyStore) {
  EXPECT_EQ(this->store().LoadHardState(), HardState{});
  EXPECT_EQ(this->store().LastInstance(), kNoInstance);
  Entry e;
  EXPECT_EQ(this->store().Get(Instance(1), &e), StoreCode::kNotFound);
}

TYPED_TEST_P(LogStoreContract, SaveThenReadBackAfterReopen) {
  const Ballot b{4, NodeId(2)};
  const HardState hs{b, Instance(1)};
  std::vector<Entry> entries = {
      Entry{Instance(1), b, MakeBatch(b, {ClientMessage{ProducerId(1), 1, "k", std::string("v\0w", 3)}})},
      Entry{Instance(3), b, MakeNoop(b)}};
  ASSERT_EQ(this->store().Save(hs, entries), StoreCode::kOk);
  this->factory_.Reopen();
  EXPECT_EQ(this->store().LoadHardState(), hs);
  EXPECT_EQ(this->store().LastInstance(), Instance(3));
  Entry e;
  ASSERT_EQ(this->store().Get(Instance(1), &e), StoreCode::kOk);
  EXPECT_TRUE(SameEntry(e, entries[0]));
  EXPECT_EQ(this->store().Get(Instance(2), &e), StoreCode::kNotFound);
}

TYPED_TEST_P(LogStoreContract, OverwriteKeepsTheNewerRecord) {
  const Ballot b1{1, NodeId(1)}, b2{2, NodeId(2)};
  this->store().Save(HardState{b1, kNoInstance}, std::vector<Entry>{{Instance(1), b1, MakeNoop(b1)}});
  this->store().Save(HardState{b2, kNoInstance},
                     std::vector<Entry>{{Instance(1), b2, MakeBarrier(b2)}});
  this->factory_.Reopen();
  Entry e;
  ASSERT_EQ(this->store().Get(Instance(1), &e), StoreCode::kOk);
  EXPECT_EQ(e.ballot, b2);
  EXPECT_EQ(e.value->kind, ValueKind::kBarrier);
  EXPECT_EQ(this->store().LoadHardState().promised, b2);
}

REGISTER_TYPED_TEST_SUITE_P(LogStoreContract, EmptyStore, SaveThenReadBackAfterReopen,
                            OverwriteKeepsTheNewerRecord);

}  // namespace ordo::paxos
