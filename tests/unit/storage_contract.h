// The node loop's storage contract (node/storage.h), one typed suite for
// every node::Storage: the broker's LMDB store and journal (broker_test) and
// the simulator's disk (sim_test), so the simulator's disk is no kinder than
// the real one. A factory F provides `node::Storage& storage()` and
// `void Crash()`: the process dies (what was not synced is lost) and the
// store is opened again.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "node/storage.h"

namespace ordo::node {

template <typename F>
class StorageContract : public ::testing::Test {
 protected:
  F factory_;
  Storage& storage() { return factory_.storage(); }
  static paxos::Entry E(uint64_t instance, paxos::Ballot b) {
    return paxos::Entry{paxos::Instance(instance), b,
                        paxos::MakeBatch(b, {paxos::ClientMessage{paxos::ProducerId(9), instance,
                                                                  "", "payload"}})};
  }
  void Write(const paxos::HardState& h, std::vector<paxos::Entry> entries, Durability d) {
    ASSERT_TRUE(storage().Write(h, entries, {}, d).ok());
  }
  bool Has(uint64_t instance) {
    paxos::Entry e;
    return storage().Get(paxos::Instance(instance), &e) == paxos::StoreCode::kOk;
  }
};

TYPED_TEST_SUITE_P(StorageContract);

TYPED_TEST_P(StorageContract, ASyncedWriteSurvivesACrash) {
  const paxos::Ballot b{3, paxos::NodeId(1)};
  this->Write(paxos::HardState{b, paxos::Instance()}, {this->E(1, b), this->E(2, b)},
              Durability::kSync);
  this->factory_.Crash();
  EXPECT_EQ(this->storage().LoadHardState().promised, b);
  EXPECT_TRUE(this->Has(1));
  EXPECT_TRUE(this->Has(2));
}

TYPED_TEST_P(StorageContract, ACheckpointSurvivesACrash) {
  const paxos::Ballot b{3, paxos::NodeId(1)};
  this->Write(paxos::HardState{b, paxos::Instance(1)}, {this->E(1, b)}, Durability::kCheckpoint);
  this->factory_.Crash();
  EXPECT_EQ(this->storage().LoadHardState(), (paxos::HardState{b, paxos::Instance(1)}));
  EXPECT_TRUE(this->Has(1));
}

TYPED_TEST_P(StorageContract, AVolatileWriteIsDurableOnceASyncFollowsIt) {
  const paxos::Ballot b{3, paxos::NodeId(1)};
  this->Write(paxos::HardState{b, paxos::Instance()}, {this->E(1, b)}, Durability::kSync);
  this->Write(paxos::HardState{b, paxos::Instance(1)}, {}, Durability::kVolatile);
  const paxos::Ballot b2{4, paxos::NodeId(2)};
  this->Write(paxos::HardState{b2, paxos::Instance(1)}, {this->E(2, b2)}, Durability::kSync);
  this->factory_.Crash();
  EXPECT_EQ(this->storage().LoadHardState(), (paxos::HardState{b2, paxos::Instance(1)}));
  EXPECT_TRUE(this->Has(1));
  EXPECT_TRUE(this->Has(2));
}

TYPED_TEST_P(StorageContract, ACrashAfterAnyWriteKeepsEverySyncedOneBeforeIt) {
  // A crash after each write of a sequence that mixes durabilities: what
  // was synced before the crash is there; what was only volatile may be
  // gone, never anything synced before it.
  const paxos::Ballot b{1, paxos::NodeId(1)};
  const Durability ds[] = {Durability::kSync, Durability::kVolatile, Durability::kVolatile,
                           Durability::kSync, Durability::kVolatile, Durability::kCheckpoint,
                           Durability::kVolatile, Durability::kSync};
  constexpr size_t kWrites = sizeof(ds) / sizeof(ds[0]);
  for (size_t crash_after = 1; crash_after <= kWrites; ++crash_after) {
    this->factory_.Wipe();
    size_t synced_instances = 0;
    for (size_t k = 0; k < crash_after; ++k) {
      // Write k: promise round k+1, and (except volatile ones) instance k+1.
      const paxos::Ballot bk{k + 1, paxos::NodeId(1)};
      std::vector<paxos::Entry> entries;
      if (ds[k] != Durability::kVolatile) entries.push_back(this->E(k + 1, bk));
      this->Write(paxos::HardState{bk, paxos::Instance()}, entries, ds[k]);
      if (ds[k] != Durability::kVolatile) synced_instances = k + 1;
    }
    this->factory_.Crash();
    for (size_t k = 0; k < synced_instances; ++k) {
      if (ds[k] != Durability::kVolatile) {
        EXPECT_TRUE(this->Has(k + 1)) << "crash after write " << crash_after << ", instance "
                                      << k + 1;
      }
    }
    EXPECT_GE(this->storage().LoadHardState().promised.round, synced_instances)
        << "crash after write " << crash_after;
    EXPECT_LE(this->storage().LoadHardState().promised.round, crash_after);
  }
  (void)b;
}

REGISTER_TYPED_TEST_SUITE_P(StorageContract, ASyncedWriteSurvivesACrash,
                            ACheckpointSurvivesACrash, AVolatileWriteIsDurableOnceASyncFollowsIt,
                            ACrashAfterAnyWriteKeepsEverySyncedOneBeforeIt);

}  // namespace ordo::node
