// The simulator's disk passes the node loop's storage contract, like the
// broker's LMDB store and journal (tests/unit/storage_contract.h), and the
// paxos::LogStore contract; plus its own fault model.
#include <gtest/gtest.h>

#include "tests/sim/sim_disk.h"
#include "tests/unit/log_store_contract.h"
#include "tests/unit/storage_contract.h"

namespace ordo::sim {
namespace {

// Crashes keep every unsynced write (the random prefix is tested below):
// the contract is about what must survive.
struct SimDiskFactory {
  SimDisk disk;
  paxos::LogStore& store() { return disk; }
  node::Storage& storage() { return disk; }
  void Reopen() { Crash(); }
  void Crash() {
    disk.Crash();
    EXPECT_EQ(disk.Open(), "");
  }
  void Wipe() { disk.Wipe(); }
};

TEST(SimDisk, ACrashLosesOnlyASuffixOfTheUnsyncedWrites) {
  paxos::Rng rng(5);
  for (int run = 0; run < 50; ++run) {
    SimDisk disk;
    disk.Configure(&rng, DiskFaults{}, paxos::Bug::kNone);
    const paxos::Ballot b{1, paxos::NodeId(1)};
    ASSERT_TRUE(disk.Write(paxos::HardState{b, paxos::Instance()}, {}, {},
                           node::Durability::kSync).ok());
    for (uint64_t c = 1; c <= 5; ++c) {
      ASSERT_TRUE(disk.Write(paxos::HardState{b, paxos::Instance(c)}, {}, {},
                             node::Durability::kVolatile).ok());
    }
    disk.Crash();
    ASSERT_EQ(disk.Open(), "");
    EXPECT_EQ(disk.LoadHardState().promised, b);
    EXPECT_LE(disk.LoadHardState().chosen, paxos::Instance(5));
  }
}

TEST(SimDisk, ASyncThatLiedIsFoundAtTheNextOpenOnceALaterSyncWentThrough) {
  paxos::Rng rng(1);
  SimDisk disk;
  DiskFaults always_lie;
  always_lie.lie_on_sync = 1.0;
  disk.Configure(&rng, always_lie, paxos::Bug::kNone);
  const paxos::Ballot b{1, paxos::NodeId(1)};
  const paxos::Entry e{paxos::Instance(1), b, paxos::MakeNoop(b)};
  ASSERT_TRUE(disk.Write(paxos::HardState{b, paxos::Instance()}, std::vector<paxos::Entry>{e}, {},
                         node::Durability::kSync).ok());
  disk.Configure(&rng, DiskFaults{}, paxos::Bug::kNone);
  ASSERT_TRUE(disk.Write(paxos::HardState{b, paxos::Instance()}, {}, {},
                         node::Durability::kSync).ok());
  disk.Crash();
  EXPECT_NE(disk.Open(), "");  // the host quarantines
}

TEST(SimDisk, ARottenRecordFailsItsCheck) {
  SimDisk disk;
  const paxos::Ballot b{1, paxos::NodeId(1)};
  const paxos::Entry e{paxos::Instance(1), b, paxos::MakeNoop(b)};
  ASSERT_TRUE(disk.Write(paxos::HardState{b, paxos::Instance()}, std::vector<paxos::Entry>{e}, {},
                         node::Durability::kSync).ok());
  disk.RotRecord(0);
  paxos::Entry out;
  EXPECT_EQ(disk.Get(paxos::Instance(1), &out), paxos::StoreCode::kCorrupt);
}

}  // namespace
}  // namespace ordo::sim

namespace ordo::paxos {
INSTANTIATE_TYPED_TEST_SUITE_P(SimDisk, LogStoreContract, ordo::sim::SimDiskFactory);
}  // namespace ordo::paxos
namespace ordo::node {
INSTANTIATE_TYPED_TEST_SUITE_P(SimDisk, StorageContract, ordo::sim::SimDiskFactory);
}  // namespace ordo::node
