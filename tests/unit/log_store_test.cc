// Contract tests every LogStore implementation must pass (one typed suite;
// the LMDB store joins it with the broker).
#include <gtest/gtest.h>

#include "paxos/log_store.h"

namespace ordo::paxos {
namespace {

template <typename T>
class LogStoreContract : public testing::Test {
 protected:
  T store_;
};

using Stores = testing::Types<MemoryLogStore>;
TYPED_TEST_SUITE(LogStoreContract, Stores);

TYPED_TEST(LogStoreContract, EmptyStore) {
  EXPECT_EQ(this->store_.LoadHardState(), HardState{});
  EXPECT_EQ(this->store_.LastInstance(), kNoInstance);
  Entry e;
  EXPECT_EQ(this->store_.Get(Instance(1), &e), StoreCode::kNotFound);
}

TYPED_TEST(LogStoreContract, SaveThenReadBack) {
  const Ballot b{4, NodeId(2)};
  const HardState hs{b, Instance(1)};
  std::vector<Entry> entries = {
      Entry{Instance(1), b, MakeBatch(b, {ClientMessage{ProducerId(1), 1, "k", "v"}})},
      Entry{Instance(3), b, MakeNoop(b)}};
  ASSERT_EQ(this->store_.Save(hs, entries), StoreCode::kOk);
  EXPECT_EQ(this->store_.LoadHardState(), hs);
  EXPECT_EQ(this->store_.LastInstance(), Instance(3));
  Entry e;
  ASSERT_EQ(this->store_.Get(Instance(1), &e), StoreCode::kOk);
  EXPECT_TRUE(SameEntry(e, entries[0]));
  EXPECT_EQ(this->store_.Get(Instance(2), &e), StoreCode::kNotFound);
}

TYPED_TEST(LogStoreContract, OverwriteKeepsTheNewerRecord) {
  const Ballot b1{1, NodeId(1)}, b2{2, NodeId(2)};
  this->store_.Save(HardState{b1, kNoInstance}, std::vector<Entry>{{Instance(1), b1, MakeNoop(b1)}});
  this->store_.Save(HardState{b2, kNoInstance},
                    std::vector<Entry>{{Instance(1), b2, MakeBarrier(b2)}});
  Entry e;
  ASSERT_EQ(this->store_.Get(Instance(1), &e), StoreCode::kOk);
  EXPECT_EQ(e.ballot, b2);
  EXPECT_EQ(e.value->kind, ValueKind::kBarrier);
}

}  // namespace
}  // namespace ordo::paxos
