// LmdbStore: the LogStore contract on real LMDB files, plus what only the
// broker's store does: checksums on every record, the offset index and
// stream reads.
#include <gtest/gtest.h>
#include <lmdb.h>

#include "tests/testing/corrupt_file.h"
#include "tests/testing/corrupt_lmdb.h"
#include "tests/testing/disk_faults.h"

#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include "broker/crc32c.h"
#include "broker/lmdb_formats.h"
#include "broker/lmdb_store.h"
#include "tests/unit/log_store_contract.h"
#include "tests/unit/storage_contract.h"
#include "broker/node_storage.h"

namespace ordo::broker {
namespace {

using paxos::Ballot;
using paxos::ClientMessage;
using paxos::Entry;
using paxos::HardState;
using paxos::Instance;
using paxos::NodeId;
using paxos::StoreCode;

std::string TempDir() {
  static std::mt19937_64 rng(std::random_device{}());
  auto p = std::filesystem::temp_directory_path() / ("ordo-lmdb-test-" + std::to_string(rng()));
  return p.string();
}

struct LmdbFactory {
  LmdbFactory() : dir(TempDir()) { Reopen(); }
  ~LmdbFactory() {
    lmdb.reset();
    std::filesystem::remove_all(dir);
  }
  paxos::LogStore& store() { return *lmdb; }
  void Reopen() {
    lmdb.reset();
    const Status s = LmdbStore::Open(dir, 64ull << 20, &lmdb);
    ASSERT_TRUE(s.ok()) << s.message();
  }
  std::string dir;
  std::unique_ptr<LmdbStore> lmdb;
};

}  // namespace
}  // namespace ordo::broker

namespace ordo::paxos {
INSTANTIATE_TYPED_TEST_SUITE_P(Lmdb, LogStoreContract, ordo::broker::LmdbFactory);
}  // namespace ordo::paxos

namespace ordo::broker {
namespace {
// The node loop's storage over LMDB and the journal; a crash loses the
// journal's unsynced bytes and LMDB's uncommitted transaction.
struct NodeStorageFactory {
  NodeStorageFactory() : dir(TempDir()) { Open(); }
  ~NodeStorageFactory() {
    node.reset();
    lmdb.reset();
    std::filesystem::remove_all(dir);
  }
  node::Storage& storage() { return *node; }
  void Open() {
    node.reset();
    lmdb.reset();
    const Status s = LmdbStore::Open(dir, 64ull << 20, &lmdb);
    ASSERT_TRUE(s.ok()) << s.message();
    node = std::make_unique<NodeStorage>(*lmdb);
  }
  void Crash() {
    lmdb->DropUnsyncedJournalForTest();
    Open();
  }
  void Wipe() {
    node.reset();
    lmdb.reset();
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    Open();
  }
  std::string dir;
  std::unique_ptr<LmdbStore> lmdb;
  std::unique_ptr<NodeStorage> node;
};
}  // namespace
}  // namespace ordo::broker

namespace ordo::node {
INSTANTIATE_TYPED_TEST_SUITE_P(LmdbAndJournal, StorageContract, ordo::broker::NodeStorageFactory);
}  // namespace ordo::node

namespace ordo::broker {
namespace {

using ordo::testing::FlipBitOnDisk;

paxos::AppliedInstance Applied(const paxos::ValuePtr& v, uint64_t instance, uint64_t first,
                               std::vector<paxos::PublishOutcome> outcomes) {
  paxos::AppliedInstance a;
  a.instance = Instance(instance);
  a.value = v;
  a.first_offset = paxos::Offset(first);
  for (auto o : outcomes) {
    paxos::MessageResult r;
    r.outcome = o;
    a.results.push_back(r);
    if (o == paxos::PublishOutcome::kAppended) ++a.appended;
  }
  return a;
}

std::string LmdbStorePath(const std::string& dir, const SnapshotHandle& h) {
  return dir + "/snapshots/snapshot-" + std::to_string(h.instance) + "-" +
         std::to_string(h.checksum) + ".ords";
}

ClientMessage Msg(uint64_t seq, std::string payload) {
  return ClientMessage{paxos::ProducerId(7), seq, "", std::move(payload)};
}

TEST(LmdbStore, AFlippedBitIsDetectedAndNeverReturned) {
  LmdbFactory f;
  const Ballot b{1, NodeId(1)};
  std::vector<Entry> entries = {Entry{Instance(1), b, paxos::MakeBatch(b, {Msg(1, "precious")})}};
  ASSERT_EQ(f.lmdb->Save(HardState{b, Instance(1)}, entries), StoreCode::kOk);
  f.lmdb.reset();
  FlipBitOnDisk(f.dir, 1);
  f.Reopen();
  Entry e;
  EXPECT_EQ(f.lmdb->Get(Instance(1), &e), StoreCode::kCorrupt);
  EXPECT_EQ(f.lmdb->corruptions(), 1u);
  EXPECT_NE(f.lmdb->last_error().find("instance 1"), std::string::npos);
  // A rewrite repairs it.
  ASSERT_EQ(f.lmdb->Save(HardState{b, Instance(1)}, entries), StoreCode::kOk);
  EXPECT_EQ(f.lmdb->Get(Instance(1), &e), StoreCode::kOk);
}

TEST(LmdbStore, StreamReadsFollowTheIndexAndSkipUnappliedMessages) {
  LmdbFactory f;
  const Ballot b{1, NodeId(1)};
  auto v1 = paxos::MakeBatch(b, {Msg(1, "a"), Msg(2, "b"), Msg(1, "dup"), Msg(3, "c")});
  auto v2 = paxos::MakeBatch(b, {Msg(4, "d")});
  using O = paxos::PublishOutcome;
  std::vector<Entry> entries = {Entry{Instance(1), b, v1}, Entry{Instance(2), b, v2}};
  std::vector<paxos::AppliedInstance> applied = {
      Applied(v1, 1, 0, {O::kAppended, O::kAppended, O::kDuplicate, O::kAppended}),
      Applied(v2, 2, 3, {O::kAppended})};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(2)}, entries, applied), StoreCode::kOk);
  EXPECT_EQ(f.lmdb->next_offset(), 4u);
  f.Reopen();
  EXPECT_EQ(f.lmdb->next_offset(), 4u);

  std::vector<StreamMessage> out;
  ASSERT_EQ(f.lmdb->ReadStream(0, 100, 1 << 20, &out), StoreCode::kOk);
  ASSERT_EQ(out.size(), 4u);
  const char* want[] = {"a", "b", "c", "d"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(out[i].offset, i);
    EXPECT_EQ(out[i].payload, want[i]);
  }
  out.clear();
  ASSERT_EQ(f.lmdb->ReadStream(2, 1, 1 << 20, &out), StoreCode::kOk);  // mid-instance, capped
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].payload, "c");
  out.clear();
  EXPECT_EQ(f.lmdb->ReadStream(4, 10, 1 << 20, &out), StoreCode::kOk);  // at the head
  EXPECT_TRUE(out.empty());
}

TEST(LmdbStore, StreamReadStopsBeforeACorruptRecord) {
  LmdbFactory f;
  const Ballot b{1, NodeId(1)};
  auto v1 = paxos::MakeBatch(b, {Msg(1, "a")});
  auto v2 = paxos::MakeBatch(b, {Msg(2, "b")});
  using O = paxos::PublishOutcome;
  std::vector<Entry> entries = {Entry{Instance(1), b, v1}, Entry{Instance(2), b, v2}};
  std::vector<paxos::AppliedInstance> applied = {Applied(v1, 1, 0, {O::kAppended}),
                                                 Applied(v2, 2, 1, {O::kAppended})};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(2)}, entries, applied), StoreCode::kOk);
  f.lmdb.reset();
  FlipBitOnDisk(f.dir, 2);
  f.Reopen();
  std::vector<StreamMessage> out;
  EXPECT_EQ(f.lmdb->ReadStream(0, 100, 1 << 20, &out), StoreCode::kCorrupt);
  ASSERT_EQ(out.size(), 1u);  // what comes before the bad record, nothing after
  EXPECT_EQ(out[0].payload, "a");
}

TEST(LmdbStore, ACorruptHardStateRefusesToOpen) {
  LmdbFactory f;
  ASSERT_EQ(f.lmdb->Save(HardState{Ballot{3, NodeId(1)}, Instance(0)}, {}), StoreCode::kOk);
  f.lmdb.reset();
  {
    MDB_env* env = nullptr;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 3);
    mdb_env_set_mapsize(env, 64ull << 20);
    ASSERT_EQ(mdb_env_open(env, f.dir.c_str(), 0, 0644), 0);
    MDB_txn* txn = nullptr;
    mdb_txn_begin(env, nullptr, 0, &txn);
    MDB_dbi meta;
    mdb_dbi_open(txn, "meta", 0, &meta);
    MDB_val k{10, const_cast<char*>("hard_state")}, v;
    ASSERT_EQ(mdb_get(txn, meta, &k, &v), 0);
    std::string bytes(static_cast<const char*>(v.mv_data), v.mv_size);
    bytes[6] ^= 1;
    MDB_val nv{bytes.size(), bytes.data()};
    mdb_put(txn, meta, &k, &nv, 0);
    mdb_txn_commit(txn);
    mdb_env_close(env);
  }
  std::unique_ptr<LmdbStore> s;
  const Status st = LmdbStore::Open(f.dir, 64ull << 20, &s);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("hard state"), std::string::npos);
}


// Ten instances of one keyed message each: keys "k0".."k2", offsets 0..9.
// With a journal: odd instances synced, even ones not (the broker's deferred
// writes), as the broker mixes them.
void FillKeyed(LmdbFactory& f, bool journal = false) {
  const Ballot b{1, NodeId(1)};
  for (uint64_t i = 1; i <= 10; ++i) {
    ClientMessage m{paxos::ProducerId(7), i, "k" + std::to_string(i % 3), "v" + std::to_string(i)};
    auto v = paxos::MakeBatch(b, {m});
    std::vector<Entry> entries = {Entry{Instance(i), b, v}};
    auto a = Applied(v, i, i - 1, {paxos::PublishOutcome::kAppended});
    a.results[0].offset = paxos::Offset(i - 1);
    using D = LmdbStore::Durability;
    const D d = !journal ? D::kCommit : i % 2 == 1 ? D::kJournal : D::kJournalNoSync;
    ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(i)}, entries, {&a, 1}, d), StoreCode::kOk);
  }
}

// Writes the snapshot file of `snap` (with `keyed`) where `store` looks for
// it, as the snapshot service would; returns its handle.
SnapshotHandle WriteSnapshotFile(const LmdbStore& store, const paxos::AppliedSnapshot& snap,
                                 const std::vector<StreamMessage>& keyed = {}) {
  const std::string file = EncodeSnapshotFile(snap, keyed);
  const SnapshotHandle h{snap.instance.value(), file.size(), Crc32c(file.data(), file.size())};
  std::filesystem::create_directories(store.SnapshotDir());
  std::ofstream out(store.SnapshotPath(h), std::ios::binary);
  out << file;
  return h;
}

// What FillKeyed wrote, read back through every read path.
void ExpectKeyedFill(LmdbStore& s) {
  EXPECT_EQ(s.LoadHardState().chosen, Instance(10));
  EXPECT_EQ(s.LastInstance(), Instance(10));
  EXPECT_EQ(s.next_offset(), 10u);
  Entry e;
  ASSERT_EQ(s.Get(Instance(4), &e), StoreCode::kOk);
  EXPECT_EQ(e.value->messages.at(0).payload, "v4");
  std::vector<StreamMessage> msgs;
  ASSERT_EQ(s.ReadStream(0, 100, 1 << 20, &msgs), StoreCode::kOk);
  ASSERT_EQ(msgs.size(), 10u);
  EXPECT_EQ(msgs[9].payload, "v10");
  std::vector<StreamMessage> view;
  ASSERT_EQ(s.ReadCompacted(0, 0, 100, 1 << 20, &view), StoreCode::kOk);
  EXPECT_EQ(view.size(), 3u);
}

// A copy of the LMDB files of `dir` with an empty journal (its full size, all
// zeros), opened: what LMDB
// itself holds.
std::unique_ptr<LmdbStore> OpenLmdbOnly(const std::string& dir, const std::string& copy) {
  std::filesystem::create_directories(copy);
  std::filesystem::copy_file(dir + "/data.mdb", copy + "/data.mdb");
  std::ofstream(copy + "/journal").close();
  std::filesystem::resize_file(copy + "/journal", LmdbStore::kJournalFileBytes);  // all zeros: empty
  if (std::filesystem::exists(dir + "/snapshots")) {
    std::filesystem::copy(dir + "/snapshots", copy + "/snapshots");
  }
  std::unique_ptr<LmdbStore> s;
  const Status st = LmdbStore::Open(copy, 64ull << 20, &s);
  EXPECT_TRUE(st.ok()) << st.message();
  return s;
}

void FlipJournalByte(const std::string& dir, uint64_t at) {
  ordo::testing::FlipByteInFile(dir + "/journal", at);
}

TEST(LmdbStore, JournaledWritesAreReadAtOnceAndReplayedAfterACrash) {
  LmdbFactory f;
  FillKeyed(f, /*journal=*/true);
  EXPECT_TRUE(f.lmdb->has_pending());
  EXPECT_GT(f.lmdb->journal_bytes(), 0u);
  ExpectKeyedFill(*f.lmdb);  // the loop's reads see the pending writes
  {
    // LMDB's own commit does not hold them yet: only the journal does.
    const std::string copy = TempDir();
    auto lmdb_only = OpenLmdbOnly(f.dir, copy);
    ASSERT_TRUE(lmdb_only);
    EXPECT_EQ(lmdb_only->LastInstance(), paxos::kNoInstance);
    EXPECT_EQ(lmdb_only->next_offset(), 0u);
    lmdb_only.reset();
    std::filesystem::remove_all(copy);
  }
  f.Reopen();  // a crash: the pending transaction is dropped, not committed
  EXPECT_EQ(f.lmdb->journal_replayed(), 10u);
  EXPECT_FALSE(f.lmdb->has_pending());
  ExpectKeyedFill(*f.lmdb);
  // Open committed the replay: nothing is replayed twice.
  f.Reopen();
  EXPECT_EQ(f.lmdb->journal_replayed(), 0u);
  ExpectKeyedFill(*f.lmdb);
}

TEST(LmdbStore, ACommitEmptiesTheJournalAndLargeOrSnapshotWritesGoStraightToLmdb) {
  LmdbFactory f;
  const Ballot b{1, NodeId(1)};
  using D = LmdbStore::Durability;
  std::vector<Entry> one = {Entry{Instance(1), b, paxos::MakeBatch(b, {Msg(1, "small")})}};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(0)}, one, {}, D::kJournal), StoreCode::kOk);
  EXPECT_TRUE(f.lmdb->has_pending());
  ASSERT_EQ(f.lmdb->CommitPending(), StoreCode::kOk);
  EXPECT_FALSE(f.lmdb->has_pending());
  // The journal starts over, with the empty record that begins a pass.
  EXPECT_EQ(f.lmdb->journal_bytes(), (Journal::kHeaderBytes + 7) / 8 * 8);
  // Larger than a journal record may be: an LMDB commit, with what waited.
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(1)}, {}, {}, D::kJournal), StoreCode::kOk);
  EXPECT_TRUE(f.lmdb->has_pending());
  const std::string big(LmdbStore::kJournalRecordMax + 1, 'x');
  std::vector<Entry> large = {Entry{Instance(2), b, paxos::MakeBatch(b, {Msg(2, big)})}};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(1)}, large, {}, D::kJournal), StoreCode::kOk);
  EXPECT_FALSE(f.lmdb->has_pending());
  // Recording a snapshot is journaled too; another writer (here: the
  // truncation behind it) commits what waits first.
  std::vector<Entry> three = {Entry{Instance(3), b, paxos::MakeBatch(b, {Msg(3, "c")})}};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(2)}, three, {}, D::kJournal), StoreCode::kOk);
  paxos::AppliedSnapshot snap;
  snap.instance = Instance(1);
  snap.next_offset = paxos::Offset(1);
  const SnapshotHandle h = WriteSnapshotFile(*f.lmdb, snap);
  ASSERT_EQ(f.lmdb->RecordSnapshot(h, snap), StoreCode::kOk);
  EXPECT_TRUE(f.lmdb->has_pending());
  size_t deleted = 0;
  ASSERT_EQ(f.lmdb->Truncate(Instance(2), 100, &deleted), StoreCode::kOk);
  EXPECT_EQ(deleted, 1u);
  EXPECT_FALSE(f.lmdb->has_pending());
  const std::string copy = TempDir();
  auto lmdb_only = OpenLmdbOnly(f.dir, copy);
  ASSERT_TRUE(lmdb_only);
  EXPECT_EQ(lmdb_only->LastInstance(), Instance(3));
  EXPECT_EQ(lmdb_only->LoadHardState().chosen, Instance(2));
  EXPECT_EQ(lmdb_only->snapshot_handle().instance, 1u);
  EXPECT_EQ(lmdb_only->FirstInstance(), Instance(2));
  lmdb_only.reset();
  std::filesystem::remove_all(copy);
  f.Reopen();
  EXPECT_EQ(f.lmdb->journal_replayed(), 0u);
  Entry e;
  ASSERT_EQ(f.lmdb->Get(Instance(2), &e), StoreCode::kOk);
  EXPECT_EQ(e.value->messages.at(0).payload.size(), big.size());
}

TEST(LmdbStore, ARecordedSnapshotIsReplayedAfterACrash) {
  LmdbFactory f;
  FillKeyed(f, /*journal=*/true);
  paxos::AppliedSnapshot snap;
  snap.instance = Instance(5);
  snap.next_offset = paxos::Offset(5);
  const SnapshotHandle h = WriteSnapshotFile(*f.lmdb, snap);
  ASSERT_EQ(f.lmdb->RecordSnapshot(h, snap), StoreCode::kOk);
  f.lmdb->DropUnsyncedJournalForTest();  // and a power loss: it was synced
  f.Reopen();
  EXPECT_EQ(f.lmdb->journal_replayed(), 11u);
  EXPECT_EQ(f.lmdb->snapshot_handle(), h);
  ASSERT_TRUE(f.lmdb->LoadSnapshot().has_value());
  EXPECT_EQ(*f.lmdb->LoadSnapshot(), snap);
  ExpectKeyedFill(*f.lmdb);
}

TEST(LmdbStore, ATornLastJournalRecordLosesOnlyThatUnacknowledgedWrite) {
  LmdbFactory f;
  const Ballot b{1, NodeId(1)};
  uint64_t last_at = 0;
  for (uint64_t i = 1; i <= 3; ++i) {
    last_at = f.lmdb->journal_bytes();
    std::vector<Entry> e = {Entry{Instance(i), b, paxos::MakeBatch(b, {Msg(i, "m")})}};
    ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(i - 1)}, e, {}, LmdbStore::Durability::kJournal),
              StoreCode::kOk);
  }
  f.lmdb.reset();
  FlipJournalByte(f.dir, last_at + Journal::kHeaderBytes + 3);
  f.Reopen();
  EXPECT_EQ(f.lmdb->journal_replayed(), 2u);
  EXPECT_EQ(f.lmdb->LastInstance(), Instance(2));
  EXPECT_EQ(f.lmdb->LoadHardState().chosen, Instance(1));
  Entry e;
  EXPECT_EQ(f.lmdb->Get(Instance(3), &e), StoreCode::kNotFound);
}

TEST(LmdbStore, ADamagedJournalRecordBeforeIntactOnesRefusesToOpen) {
  LmdbFactory f;
  const Ballot b{1, NodeId(1)};
  uint64_t second_at = 0;
  for (uint64_t i = 1; i <= 3; ++i) {
    if (i == 2) second_at = f.lmdb->journal_bytes();
    std::vector<Entry> e = {Entry{Instance(i), b, paxos::MakeBatch(b, {Msg(i, "m")})}};
    ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(i - 1)}, e, {}, LmdbStore::Durability::kJournal),
              StoreCode::kOk);
  }
  f.lmdb.reset();
  FlipJournalByte(f.dir, second_at + Journal::kHeaderBytes + 3);
  std::unique_ptr<LmdbStore> s;
  const Status st = LmdbStore::Open(f.dir, 64ull << 20, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("journal"), std::string::npos) << st.message();
}

TEST(LmdbStore, APowerLossKeepsEveryJournaledWriteThatWasSynced) {
  LmdbFactory f;
  FillKeyed(f, /*journal=*/true);  // instance 10 is the last, and not synced
  f.lmdb->DropUnsyncedJournalForTest();
  f.Reopen();
  EXPECT_EQ(f.lmdb->journal_replayed(), 9u);
  EXPECT_EQ(f.lmdb->LastInstance(), Instance(9));
  EXPECT_EQ(f.lmdb->LoadHardState().chosen, Instance(9));
  EXPECT_EQ(f.lmdb->next_offset(), 9u);
  Entry e;
  ASSERT_EQ(f.lmdb->Get(Instance(9), &e), StoreCode::kOk);
  EXPECT_EQ(e.value->messages.at(0).payload, "v9");
}

TEST(LmdbStore, AMissingJournalIsRefusedOnceLmdbNamesOne) {
  LmdbFactory f;
  FillKeyed(f, /*journal=*/true);
  f.lmdb.reset();
  std::filesystem::remove(f.dir + "/journal");
  std::unique_ptr<LmdbStore> s;
  const Status st = LmdbStore::Open(f.dir, 64ull << 20, &s);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("journal"), std::string::npos) << st.message();
}

// A full map (MDB_MAP_FULL) stands for any failed write: the journaled
// writes before it were acknowledged, so the store refuses everything after
// it (the broker stops) and a restart with room replays them.
TEST(LmdbStore, AFailedWriteAfterJournaledOnesRefusesEverythingAndARestartKeepsThem) {
  const std::string dir = TempDir();
  const Ballot b{1, NodeId(1)};
  using D = LmdbStore::Durability;
  uint64_t acknowledged = 0;
  {
    std::unique_ptr<LmdbStore> s;
    ASSERT_TRUE(LmdbStore::Open(dir, 1ull << 20, &s).ok());
    const std::string payload(3000, 'p');
    StoreCode code = StoreCode::kOk;
    for (uint64_t i = 1; i <= 1000 && code == StoreCode::kOk; ++i) {
      std::vector<Entry> e = {Entry{Instance(i), b, paxos::MakeBatch(b, {Msg(i, payload)})}};
      code = s->Commit(HardState{b, Instance(i - 1)}, e, {}, D::kJournal);
      if (code == StoreCode::kOk) acknowledged = i;
    }
    ASSERT_EQ(code, StoreCode::kIoError) << "the 1 MiB map never filled";
    ASSERT_GT(acknowledged, 0u);
    EXPECT_TRUE(s->broken());
    Entry e;
    EXPECT_EQ(s->Get(Instance(1), &e), StoreCode::kIoError);
    std::vector<StreamMessage> view;
    EXPECT_EQ(s->ReadCompacted(0, 0, 10, 1 << 20, &view), StoreCode::kIoError);
    EXPECT_EQ(s->Commit(HardState{b, Instance(0)}, {}, {}, D::kJournal), StoreCode::kIoError);
    EXPECT_EQ(s->CommitPending(), StoreCode::kIoError);
  }
  std::unique_ptr<LmdbStore> s;
  const Status st = LmdbStore::Open(dir, 64ull << 20, &s);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(s->LastInstance(), Instance(acknowledged));
  Entry e;
  ASSERT_EQ(s->Get(Instance(acknowledged), &e), StoreCode::kOk);
  s.reset();
  std::filesystem::remove_all(dir);
}

TEST(LmdbStore, AJournalWithoutItsLmdbFilesIsNotReplayed) {
  LmdbFactory f;
  FillKeyed(f, /*journal=*/true);
  f.lmdb.reset();
  // The LMDB files lost, the journal left behind: a new member, with none
  // of the old one's writes (they would be half a history).
  std::filesystem::remove(f.dir + "/data.mdb");
  std::filesystem::remove(f.dir + "/lock.mdb");
  f.Reopen();
  EXPECT_TRUE(f.lmdb->opened_empty());
  EXPECT_EQ(f.lmdb->journal_replayed(), 0u);
  EXPECT_EQ(f.lmdb->LastInstance(), paxos::kNoInstance);
}

TEST(LmdbStore, TheCompactedViewKeepsTheLatestMessageOfEachKeyInOffsetOrder) {
  LmdbFactory f;
  FillKeyed(f);
  std::vector<StreamMessage> view;
  ASSERT_EQ(f.lmdb->ReadCompacted(0, 0, 100, 1 << 20, &view), StoreCode::kOk);
  // Message i (offset i - 1) has key k(i % 3): the latest of each key are
  // v8 (k2, offset 7), v9 (k0, offset 8) and v10 (k1, offset 9).
  ASSERT_EQ(view.size(), 3u);
  EXPECT_EQ(view[0].offset, 7u);
  EXPECT_EQ(view[0].key, "k2");
  EXPECT_EQ(view[0].payload, "v8");
  EXPECT_EQ(view[2].offset, 9u);
  EXPECT_EQ(view[2].key, "k1");
  view.clear();
  ASSERT_EQ(f.lmdb->ReadCompacted(8, 0, 100, 1 << 20, &view), StoreCode::kOk);
  EXPECT_EQ(view.size(), 2u);
}

TEST(LmdbStore, TruncationStopsAtTheSnapshotAndMovesTheEarliestOffset) {
  LmdbFactory f;
  FillKeyed(f);
  size_t deleted = 0;
  // Nothing is truncated without a snapshot.
  ASSERT_EQ(f.lmdb->Truncate(Instance(8), 100, &deleted), StoreCode::kOk);
  EXPECT_EQ(deleted, 0u);
  paxos::AppliedSnapshot snap;
  snap.instance = Instance(5);
  snap.next_offset = paxos::Offset(5);
  const SnapshotHandle h{5, 100, 42};
  ASSERT_EQ(f.lmdb->RecordSnapshot(h, snap), StoreCode::kOk);
  // Asked for 8, truncates only up to the snapshot (first retained 6), in
  // steps of at most 2 records.
  ASSERT_EQ(f.lmdb->Truncate(Instance(8), 2, &deleted), StoreCode::kOk);
  EXPECT_EQ(deleted, 2u);
  EXPECT_EQ(f.lmdb->FirstInstance(), Instance(3));
  EXPECT_EQ(f.lmdb->earliest_offset(), 2u);
  ASSERT_EQ(f.lmdb->Truncate(Instance(8), 100, &deleted), StoreCode::kOk);
  EXPECT_EQ(deleted, 3u);
  EXPECT_EQ(f.lmdb->FirstInstance(), Instance(6));
  EXPECT_EQ(f.lmdb->earliest_offset(), 5u);
  Entry e;
  EXPECT_EQ(f.lmdb->Get(Instance(5), &e), StoreCode::kNotFound);
  EXPECT_EQ(f.lmdb->Get(Instance(6), &e), StoreCode::kOk);
  std::vector<StreamMessage> msgs;
  ASSERT_EQ(f.lmdb->ReadStream(5, 100, 1 << 20, &msgs), StoreCode::kOk);
  ASSERT_EQ(msgs.size(), 5u);
  EXPECT_EQ(msgs[0].payload, "v6");
}

TEST(LmdbStore, AnInstalledSnapshotSurvivesAReopenAndAMissingFileIsRefused) {
  LmdbFactory f;
  FillKeyed(f);
  paxos::AppliedSnapshot snap;
  snap.instance = Instance(50);
  snap.next_offset = paxos::Offset(500);
  snap.producers.push_back({paxos::ProducerId(7), 500, {{451, 450, 50}}});
  std::vector<StreamMessage> keyed = {{499, 7, 500, "only", "latest"}};
  const SnapshotHandle h = WriteSnapshotFile(*f.lmdb, snap, keyed);
  ASSERT_EQ(f.lmdb->InstallSnapshot(h, snap, keyed), StoreCode::kOk);
  f.Reopen();
  EXPECT_EQ(f.lmdb->LoadHardState().chosen, Instance(50));
  EXPECT_EQ(f.lmdb->FirstInstance(), Instance(51));
  EXPECT_EQ(f.lmdb->earliest_offset(), 500u);
  EXPECT_EQ(f.lmdb->next_offset(), 500u);
  ASSERT_TRUE(f.lmdb->LoadSnapshot().has_value());
  EXPECT_EQ(*f.lmdb->LoadSnapshot(), snap);
  std::vector<StreamMessage> view;
  ASSERT_EQ(f.lmdb->ReadCompacted(0, 0, 100, 1 << 20, &view), StoreCode::kOk);
  ASSERT_EQ(view.size(), 1u);
  EXPECT_EQ(view[0].payload, "latest");
  // The log below 51 exists only in that file: without it, refuse to start.
  f.lmdb.reset();
  std::filesystem::remove(LmdbStorePath(f.dir, h));
  std::unique_ptr<LmdbStore> again;
  const Status st = LmdbStore::Open(f.dir, 64ull << 20, &again);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("snapshot file"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace ordo::broker

namespace ordo::broker {
namespace {

// --- Damage: every record checked, the derived ones rebuilt ---

namespace damage {

// Commits instances 1..n, one keyed message each (keys k0..k2), applied by a
// real AppliedState, as the broker does; returns that state.
paxos::AppliedState FillApplied(LmdbFactory& f, uint64_t n) {
  const Ballot b{1, NodeId(1)};
  paxos::AppliedState state;
  for (uint64_t i = 1; i <= n; ++i) {
    ClientMessage m{paxos::ProducerId(7), i, "k" + std::to_string(i % 3), "v" + std::to_string(i)};
    auto v = paxos::MakeBatch(b, {m});
    std::vector<Entry> entries = {Entry{Instance(i), b, v}};
    const paxos::AppliedInstance a = state.Apply(Instance(i), v);
    EXPECT_EQ(f.lmdb->Commit(HardState{b, Instance(i)}, entries, {&a, 1}), StoreCode::kOk);
  }
  return state;
}

// Moves the index record of `offset` to key `to` (what a flipped key bit does).
void MoveIndexKey(const std::string& dir, uint64_t offset, uint64_t to) {
  ordo::testing::WithLmdb(dir, "index", true, [&](MDB_txn* txn, MDB_dbi dbi) {
    std::string from_key = ordo::testing::BigEndianKey(offset), to_key = ordo::testing::BigEndianKey(to);
    MDB_val k{8, from_key.data()}, v;
    ASSERT_EQ(mdb_get(txn, dbi, &k, &v), 0);
    const std::string value(static_cast<const char*>(v.mv_data), v.mv_size);
    ASSERT_EQ(mdb_del(txn, dbi, &k, nullptr), 0);
    MDB_val nk{8, to_key.data()}, nv{value.size(), const_cast<char*>(value.data())};
    ASSERT_EQ(mdb_put(txn, dbi, &nk, &nv, 0), 0);
  });
}

void Rebuild(LmdbStore& s, uint64_t applied, uint64_t* fixed) {
  ASSERT_EQ(s.StartRebuild(Instance(applied)), StoreCode::kOk) << s.last_error();
  bool done = false;
  for (int i = 0; i < 100 && !done; ++i) {
    ASSERT_EQ(s.RebuildStep(Instance(applied), 3, &done, fixed), StoreCode::kOk) << s.last_error();
  }
  ASSERT_TRUE(done);
}

std::vector<uint64_t> Offsets(LmdbStore& s, uint64_t from, StoreCode* code) {
  std::vector<StreamMessage> out;
  *code = s.ReadStream(from, 100, 1 << 20, &out);
  std::vector<uint64_t> offsets;
  for (const StreamMessage& m : out) {
    EXPECT_EQ(m.payload, "v" + std::to_string(m.offset + 1));
    offsets.push_back(m.offset);
  }
  return offsets;
}

TEST(LmdbStoreDamage, AnIndexRecordUnderAnotherKeyIsNeverServedAndIsRebuilt) {
  LmdbFactory f;
  FillApplied(f, 10);
  f.lmdb.reset();
  MoveIndexKey(f.dir, 4, 100);
  f.Reopen();
  StoreCode code;
  // Offsets 0-3 are served, then the gap where offset 4's record was.
  EXPECT_EQ(Offsets(*f.lmdb, 0, &code), (std::vector<uint64_t>{0, 1, 2, 3}));
  EXPECT_EQ(code, StoreCode::kCorrupt);
  // Found at open (the record at the index's end, key 100, fails its check:
  // the key is in its CRC) and by the read (nothing holds offset 4).
  std::vector<LmdbStore::Damage> d = f.lmdb->TakeNewDamage();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].kind, LmdbStore::Damage::Kind::kIndexRecord);
  EXPECT_EQ(d[0].offset, 100u);
  EXPECT_EQ(d[1].kind, LmdbStore::Damage::Kind::kIndexRecord);
  EXPECT_EQ(d[1].offset, 4u);
  EXPECT_EQ(f.lmdb->corruptions(), 2u);
  Offsets(*f.lmdb, 4, &code);  // again: counted and reported once
  EXPECT_TRUE(f.lmdb->TakeNewDamage().empty());
  EXPECT_EQ(f.lmdb->corruptions(), 2u);
  uint64_t fixed = 0;
  Rebuild(*f.lmdb, 10, &fixed);
  EXPECT_EQ(fixed, 2u);  // offset 4 written again, key 100 removed
  EXPECT_EQ(Offsets(*f.lmdb, 0, &code).size(), 10u);
  EXPECT_EQ(code, StoreCode::kOk);
  f.Reopen();
  EXPECT_EQ(Offsets(*f.lmdb, 3, &code).size(), 7u);
  EXPECT_EQ(code, StoreCode::kOk);
}

TEST(LmdbStoreDamage, TheIndexBelowTheSnapshotIsRebuiltFromTheBaseTruncationKeeps) {
  LmdbFactory f;
  paxos::AppliedState state;
  {
    LmdbFactory& g = f;
    const Ballot b{1, NodeId(1)};
    for (uint64_t i = 1; i <= 10; ++i) {
      ClientMessage m{paxos::ProducerId(7), i, "k" + std::to_string(i % 3), "v" + std::to_string(i)};
      auto v = paxos::MakeBatch(b, {m});
      std::vector<Entry> entries = {Entry{Instance(i), b, v}};
      const paxos::AppliedInstance a = state.Apply(Instance(i), v);
      ASSERT_EQ(g.lmdb->Commit(HardState{b, Instance(i)}, entries, {&a, 1}), StoreCode::kOk);
      if (i == 6) {
        const paxos::AppliedSnapshot snap = state.Snapshot();
        const SnapshotHandle h = WriteSnapshotFile(*g.lmdb, snap);
        ASSERT_EQ(g.lmdb->RecordSnapshot(h, snap), StoreCode::kOk);
      }
    }
  }
  size_t deleted = 0;
  ASSERT_EQ(f.lmdb->Truncate(Instance(4), 100, &deleted), StoreCode::kOk);
  EXPECT_EQ(deleted, 3u);
  EXPECT_EQ(f.lmdb->earliest_offset(), 3u);
  f.lmdb.reset();
  MoveIndexKey(f.dir, 4, 5000);  // instance 5: below the snapshot at 6
  f.Reopen();
  StoreCode code;
  EXPECT_EQ(Offsets(*f.lmdb, 3, &code), (std::vector<uint64_t>{3}));
  EXPECT_EQ(code, StoreCode::kCorrupt);
  uint64_t fixed = 0;
  Rebuild(*f.lmdb, 10, &fixed);
  EXPECT_EQ(Offsets(*f.lmdb, 3, &code), (std::vector<uint64_t>{3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(code, StoreCode::kOk);
  std::vector<StreamMessage> view;
  ASSERT_EQ(f.lmdb->ReadCompacted(0, 0, 100, 1 << 20, &view), StoreCode::kOk);
  EXPECT_EQ(view.size(), 3u);
}

TEST(LmdbStoreDamage, ADamagedCompactedViewRecordIsNeverServedAndIsRebuilt) {
  LmdbFactory f;
  FillApplied(f, 10);
  f.lmdb.reset();
  std::mt19937_64 rng(1);
  const auto records = ordo::testing::RecordsOnDisk(f.dir, "keys");
  ASSERT_FALSE(records.empty());
  ordo::testing::FlipBit(f.dir + "/data.mdb", records[0].value_at + records[0].value_bytes - 1, 3);
  f.Reopen();
  std::vector<StreamMessage> view;
  EXPECT_EQ(f.lmdb->ReadCompacted(0, 0, 100, 1 << 20, &view), StoreCode::kCorrupt);
  for (const StreamMessage& m : view) EXPECT_EQ(m.payload, "v" + std::to_string(m.offset + 1));
  auto d = f.lmdb->TakeNewDamage();
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].kind, LmdbStore::Damage::Kind::kCompactedView);
  uint64_t fixed = 0;
  Rebuild(*f.lmdb, 10, &fixed);
  view.clear();
  ASSERT_EQ(f.lmdb->ReadCompacted(0, 0, 100, 1 << 20, &view), StoreCode::kOk);
  ASSERT_EQ(view.size(), 3u);
  EXPECT_EQ(view[2].payload, "v10");
}

Status ReopenStatus(LmdbFactory& f) {
  f.lmdb.reset();
  return LmdbStore::Open(f.dir, 64ull << 20, &f.lmdb);
}

TEST(LmdbStoreDamage, StateThatMayHideAVoteIsDamageNotAFreshStart) {
  struct Case {
    const char* name;
    std::function<void(const std::string&)> damage;
  };
  const std::vector<Case> cases = {
      {"a flipped hard state",
       [](const std::string& d) {
         for (const auto& r : ordo::testing::RecordsOnDisk(d, "meta")) {
           if (r.key == "hard_state") ordo::testing::FlipBit(d + "/data.mdb", r.value_at + 5, 2);
         }
       }},
      {"no hard state", [](const std::string& d) { ordo::testing::DeleteMetaKey(d, "hard_state"); }},
      {"no retention record", [](const std::string& d) { ordo::testing::DeleteMetaKey(d, "retained"); }},
      {"no journal record", [](const std::string& d) { ordo::testing::DeleteMetaKey(d, "journal"); }},
      {"a renamed meta key",
       [](const std::string& d) { ordo::testing::RenameMetaKey(d, "retained", "retainee"); }},
      {"a truncated journal",
       [](const std::string& d) { std::filesystem::resize_file(d + "/journal", 65536); }},
      {"a missing journal", [](const std::string& d) { std::filesystem::remove(d + "/journal"); }},
  };
  for (const Case& c : cases) {
    LmdbFactory f;
    FillApplied(f, 5);
    f.lmdb.reset();
    c.damage(f.dir);
    const Status s = ReopenStatus(f);
    EXPECT_EQ(s.kind(), Status::Kind::kDamaged) << c.name << ": " << s.message();
  }
}

TEST(LmdbStoreDamage, LmdbGoingBackToAnOlderCommitIsDamage) {
  LmdbFactory f;
  const Ballot b{1, NodeId(1)};
  auto v = paxos::MakeBatch(b, {Msg(1, "a")});
  std::vector<Entry> one = {Entry{Instance(1), b, v}};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(0)}, one, {}, LmdbStore::Durability::kJournal),
            StoreCode::kOk);
  ASSERT_EQ(f.lmdb->CommitPending(), StoreCode::kOk);
  const std::string old = ordo::testing::ReadFileBytes(f.dir + "/data.mdb");  // names generation g+1
  std::vector<Entry> two = {Entry{Instance(2), b, v}};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(0)}, two, {}, LmdbStore::Durability::kJournal),
            StoreCode::kOk);
  ASSERT_EQ(f.lmdb->CommitPending(), StoreCode::kOk);  // names g+2, and the journal starts g+2
  std::vector<Entry> three = {Entry{Instance(3), b, v}};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(0)}, three, {}, LmdbStore::Durability::kJournal),
            StoreCode::kOk);
  f.lmdb.reset();
  ordo::testing::WriteFileBytes(f.dir + "/data.mdb", old);  // LMDB lost its last commit
  const Status s = ReopenStatus(f);
  EXPECT_EQ(s.kind(), Status::Kind::kDamaged) << s.message();
  EXPECT_NE(s.message().find("lost its last commit"), std::string::npos) << s.message();
}

// The same when the lost commit held a write straight to LMDB (too large
// for the journal) and nothing was journaled after it: the commit began
// the next pass of the journal, which is what Open finds.
TEST(LmdbStoreDamage, LmdbLosingACommitNoJournalRecordFollowedIsDamage) {
  LmdbFactory f;
  const Ballot b{1, NodeId(1)};
  std::vector<Entry> one = {Entry{Instance(1), b, paxos::MakeBatch(b, {Msg(1, "a")})}};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(0)}, one, {}, LmdbStore::Durability::kJournal),
            StoreCode::kOk);
  ASSERT_EQ(f.lmdb->CommitPending(), StoreCode::kOk);
  const std::string old = ordo::testing::ReadFileBytes(f.dir + "/data.mdb");
  const std::string big(LmdbStore::kJournalRecordMax + 1, 'x');
  std::vector<Entry> large = {Entry{Instance(2), b, paxos::MakeBatch(b, {Msg(2, big)})}};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(0)}, large, {}, LmdbStore::Durability::kJournal),
            StoreCode::kOk);
  EXPECT_FALSE(f.lmdb->has_pending());  // committed, acknowledged
  f.lmdb.reset();
  ordo::testing::WriteFileBytes(f.dir + "/data.mdb", old);  // LMDB went back a commit
  const Status s = ReopenStatus(f);
  EXPECT_EQ(s.kind(), Status::Kind::kDamaged) << s.message();
  EXPECT_NE(s.message().find("lost its last commit"), std::string::npos) << s.message();
}

TEST(LmdbStoreDamage, TheScrubFindsDamagedRecordsAndATruncatedFile) {
  LmdbFactory f;
  FillApplied(f, 10);
  f.lmdb.reset();
  FlipBitOnDisk(f.dir, 3);
  LmdbStore::ScrubReport report;
  Status s = LmdbStore::Scrub(f.dir, 64ull << 20, &report);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(report.damaged_log, (std::vector<uint64_t>{3}));
  EXPECT_FALSE(report.damaged_derived);
  EXPECT_GT(report.records, 20u);
  std::filesystem::resize_file(f.dir + "/data.mdb", 3 * 4096);
  s = LmdbStore::Scrub(f.dir, 64ull << 20, &report);
  EXPECT_EQ(s.kind(), Status::Kind::kDamaged) << s.message();
  // A directory with nothing in it is fine.
  const std::string empty = TempDir();
  std::filesystem::create_directories(empty);
  EXPECT_TRUE(LmdbStore::Scrub(empty, 64ull << 20, &report).ok());
  std::filesystem::remove_all(empty);
}


// Rebuilds the index and compacted view of FillApplied(f, 10)'s store, then
// expects all 10 offsets served and a clean scrub; returns the records fixed.
uint64_t RebuildAndExpectAClean10(LmdbFactory& f) {
  uint64_t fixed = 0;
  Rebuild(*f.lmdb, 10, &fixed);
  StoreCode code;
  EXPECT_EQ(Offsets(*f.lmdb, 0, &code).size(), 10u);
  EXPECT_EQ(code, StoreCode::kOk);
  f.lmdb.reset();
  LmdbStore::ScrubReport report;
  EXPECT_TRUE(LmdbStore::Scrub(f.dir, 64ull << 20, &report).ok());
  EXPECT_TRUE(report.clean());
  return fixed;
}

TEST(LmdbStoreDamage, AfterDamageTheFileIsRewrittenIntoFreshPagesBeforeAnyWrite) {
  LmdbFactory f;
  FillApplied(f, 10);
  f.lmdb.reset();
  MoveIndexKey(f.dir, 4, 100);  // the rebuild rewrites the index
  FlipBitOnDisk(f.dir, 3);
  ordo::testing::DamageRootPageBounds(f.dir, "index");
  LmdbStore::ScrubReport report;
  ASSERT_TRUE(LmdbStore::Scrub(f.dir, 64ull << 20, &report).ok());
  EXPECT_EQ(report.damaged_log, (std::vector<uint64_t>{3}));
  EXPECT_TRUE(report.damaged_derived);
  EXPECT_TRUE(report.damaged_pages);  // the bogus record breaks the keys' order
  const std::string before = ordo::testing::ReadFileBytes(f.dir + "/data.mdb");
  const StatusOr<uint64_t> copied = LmdbStore::Rewrite(f.dir, 64ull << 20);
  ASSERT_TRUE(copied.ok()) << copied.status().message();
  EXPECT_EQ(copied.value(), report.records - 1);  // all but the bogus one (LMDB refuses its key)
  EXPECT_FALSE(std::filesystem::exists(f.dir + "/rewrite"));
  // The original is kept, as found, until the copy is trusted; a second
  // rewrite before that (a start that failed after the first) keeps it too.
  EXPECT_EQ(ordo::testing::ReadFileBytes(f.dir + "/" + LmdbStore::kPreRewriteFile), before);
  ASSERT_TRUE(LmdbStore::Rewrite(f.dir, 64ull << 20).ok());
  EXPECT_EQ(ordo::testing::ReadFileBytes(f.dir + "/" + LmdbStore::kPreRewriteFile), before);
  ASSERT_TRUE(LmdbStore::DropPreRewrite(f.dir).ok());
  EXPECT_FALSE(std::filesystem::exists(f.dir + "/" + LmdbStore::kPreRewriteFile));
  EXPECT_TRUE(LmdbStore::DropPreRewrite(f.dir).ok());  // none: nothing to do
  // The pages are sound; the records are as they were: the damaged log
  // record still fails its check (to be repaired from a peer), the moved
  // index record is still there to rebuild.
  ASSERT_TRUE(LmdbStore::Scrub(f.dir, 64ull << 20, &report).ok());
  EXPECT_EQ(report.damaged_log, (std::vector<uint64_t>{3}));
  EXPECT_TRUE(report.damaged_derived);
  EXPECT_FALSE(report.damaged_pages);
  f.Reopen();
  Entry e;
  EXPECT_EQ(f.lmdb->Get(Instance(3), &e), StoreCode::kCorrupt);
  EXPECT_EQ(f.lmdb->Get(Instance(4), &e), StoreCode::kOk);
  // The repair (a peer's copy) and the rebuild write into what was the
  // damaged page.
  const Ballot b{1, NodeId(1)};
  std::vector<Entry> repaired = {
      Entry{Instance(3), b, paxos::MakeBatch(b, {ClientMessage{paxos::ProducerId(7), 3, "k0", "v3"}})}};
  ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(10)}, repaired, {}), StoreCode::kOk);
  EXPECT_EQ(f.lmdb->repairs(), 1u);
  EXPECT_EQ(f.lmdb->TakeRepaired(), (std::vector<uint64_t>{3}));
  EXPECT_TRUE(f.lmdb->TakeRepaired().empty());
  RebuildAndExpectAClean10(f);
}


// Zeroes the root page of database `db` in the stopped store at `dir`;
// returns its number.
uint64_t ZeroRootPage(const std::string& dir, const char* db) {
  const uint64_t page = ordo::testing::RootPage(dir, db);
  const uint64_t bytes = ordo::testing::LmdbPageBytes(dir);
  std::string file = ordo::testing::ReadFileBytes(dir + "/data.mdb");
  std::fill_n(file.begin() + static_cast<std::ptrdiff_t>(page * bytes), bytes, '\0');
  ordo::testing::WriteFileBytes(dir + "/data.mdb", file);
  return page;
}

TEST(LmdbStoreDamage, AZeroedPageIsDamageThatNamesThePage) {
  LmdbFactory f;
  FillApplied(f, 10);
  f.lmdb.reset();
  const uint64_t page = ZeroRootPage(f.dir, "log");
  const uint64_t bytes = ordo::testing::LmdbPageBytes(f.dir);
  LmdbStore::ScrubReport report;
  const Status s = LmdbStore::Scrub(f.dir, 64ull << 20, &report);
  EXPECT_EQ(s.kind(), Status::Kind::kDamaged) << s.message();
  EXPECT_NE(s.message().find("page " + std::to_string(page) + " (bytes " +
                             std::to_string(page * bytes) + " to " +
                             std::to_string((page + 1) * bytes - 1) + ") is all zeros"),
            std::string::npos)
      << s.message();
}

// The offset index is derived from the log: a page of it that LMDB cannot
// read is left out by the rewrite and rebuilt, not a reason to start over.
TEST(LmdbStoreDamage, AZeroedPageOfTheIndexIsRebuiltFromTheLog) {
  LmdbFactory f;
  FillApplied(f, 10);
  f.lmdb.reset();
  ZeroRootPage(f.dir, "index");
  LmdbStore::ScrubReport report;
  Status s = LmdbStore::Scrub(f.dir, 64ull << 20, &report);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(report.damaged_log.empty());
  EXPECT_TRUE(report.damaged_derived);
  EXPECT_TRUE(report.damaged_pages);
  s = LmdbStore::Rewrite(f.dir, 64ull << 20).status();
  ASSERT_TRUE(s.ok()) << s.message();
  f.Reopen();
  EXPECT_EQ(RebuildAndExpectAClean10(f), 10u);  // every index record written again
}

// A derived database LMDB refuses to open is left out by the rewrite and
// rebuilt, as the scrub said it would be, not a reason to start over.
TEST(LmdbStoreDamage, ADerivedDatabaseLmdbCannotOpenIsRebuiltFromTheLog) {
  LmdbFactory f;
  FillApplied(f, 10);
  f.lmdb.reset();
  ordo::testing::DamageNamedDatabaseRecord(f.dir, "keys");
  LmdbStore::ScrubReport report;
  Status s = LmdbStore::Scrub(f.dir, 64ull << 20, &report);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(report.damaged_log.empty());
  EXPECT_TRUE(report.damaged_derived);
  s = LmdbStore::Rewrite(f.dir, 64ull << 20).status();
  ASSERT_TRUE(s.ok()) << s.message();
  f.Reopen();
  RebuildAndExpectAClean10(f);
}

// A rewrite needs room for its copy: without it, it says so before it
// starts (exit status 3, what to do), rather than failing half way.
// Mounts a small tmpfs in a mount namespace of its own (root only).
TEST(LmdbStoreDamage, ARewriteWithoutRoomForItsCopySaysSoUpFront) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root: mounts a tmpfs in its own mount namespace";
  LmdbFactory f;
  FillApplied(f, 10);
  f.lmdb.reset();
  FlipBitOnDisk(f.dir, 3);
  const std::string small = TempDir();
  std::filesystem::create_directories(small);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // Exit status: 0 as expected, else the step that went wrong.
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=4m") != 0) {
      ::_exit(10);
    }
    std::error_code ec;
    std::filesystem::copy_file(f.dir + "/data.mdb", small + "/data.mdb", ec);
    if (ec) ::_exit(11);
    // Fills the rest but for less than the file's size.
    const auto file = std::filesystem::file_size(small + "/data.mdb");
    std::ofstream filler(small + "/filler", std::ios::binary);
    const std::string chunk(4096, 'x');
    for (auto space = std::filesystem::space(small); space.available > file / 2;
         space = std::filesystem::space(small)) {
      if (!filler.write(chunk.data(), chunk.size()).flush()) break;
    }
    const Status s = LmdbStore::Rewrite(small, 64ull << 20).status();
    if (s.kind() != Status::Kind::kStorage) ::_exit(12);
    if (s.message().find("MiB free") == std::string::npos) ::_exit(13);
    if (std::filesystem::exists(small + "/rewrite")) ::_exit(14);
    ::_exit(0);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  std::filesystem::remove_all(small);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Instances 1..n as FillApplied, with a snapshot recorded at `snap_at`.
paxos::AppliedState FillWithSnapshot(LmdbFactory& f, uint64_t n, uint64_t snap_at) {
  const Ballot b{1, NodeId(1)};
  paxos::AppliedState state;
  for (uint64_t i = 1; i <= n; ++i) {
    ClientMessage m{paxos::ProducerId(7), i, "k" + std::to_string(i % 3), "v" + std::to_string(i)};
    auto v = paxos::MakeBatch(b, {m});
    std::vector<Entry> entries = {Entry{Instance(i), b, v}};
    const paxos::AppliedInstance a = state.Apply(Instance(i), v);
    EXPECT_EQ(f.lmdb->Commit(HardState{b, Instance(i)}, entries, {&a, 1}), StoreCode::kOk);
    if (i == snap_at) {
      const paxos::AppliedSnapshot snap = state.Snapshot();
      const SnapshotHandle h = WriteSnapshotFile(*f.lmdb, snap);
      EXPECT_EQ(f.lmdb->RecordSnapshot(h, snap), StoreCode::kOk);
    }
  }
  return state;
}

TEST(LmdbStoreDamage, ARecordWhoseKeyRottedBelowTheBaseIsDroppedAndTruncationGoesOn) {
  LmdbFactory f;
  FillWithSnapshot(f, 10, 8);
  size_t deleted = 0;
  ASSERT_EQ(f.lmdb->Truncate(Instance(5), 100, &deleted), StoreCode::kOk);
  ASSERT_EQ(f.lmdb->FirstInstance(), Instance(5));
  f.lmdb.reset();
  // Key 5 -> 4: a cleared bit in the first record's key (order is kept).
  {
    uint64_t at = 0;
    MDB_env* env = nullptr;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 8);
    mdb_env_set_mapsize(env, 64ull << 20);
    ASSERT_EQ(mdb_env_open(env, f.dir.c_str(), MDB_RDONLY | MDB_NOLOCK, 0644), 0);
    MDB_envinfo info;
    mdb_env_info(env, &info);
    MDB_txn* txn = nullptr;
    mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
    MDB_dbi dbi;
    mdb_dbi_open(txn, "log", 0, &dbi);
    MDB_cursor* cur = nullptr;
    mdb_cursor_open(txn, dbi, &cur);
    MDB_val k, v;
    ASSERT_EQ(mdb_cursor_get(cur, &k, &v, MDB_FIRST), 0);
    const size_t delta = static_cast<size_t>(static_cast<char*>(v.mv_data) - static_cast<char*>(k.mv_data));
    const std::string pattern = std::string(static_cast<char*>(k.mv_data), delta) +
                                std::string(static_cast<char*>(v.mv_data), v.mv_size);
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    const std::string file = ordo::testing::ReadFileBytes(f.dir + "/data.mdb");
    int n = 0;
    for (size_t pos = file.find(pattern); pos != std::string::npos; pos = file.find(pattern, pos + 1)) {
      at = pos;
      ordo::testing::FlipBit(f.dir + "/data.mdb", at + 7, 0);
      ++n;
    }
    ASSERT_GT(n, 0);
  }
  LmdbStore::ScrubReport report;
  ASSERT_TRUE(LmdbStore::Scrub(f.dir, 64ull << 20, &report).ok());
  f.Reopen();
  for (int round = 0; round < 3; ++round) {
    ASSERT_EQ(f.lmdb->Truncate(Instance(9), 100, &deleted), StoreCode::kOk);
    f.lmdb->TakeNewDamage();
    // The core repairs instance 5 from a peer: rewrite it.
    const Ballot b{1, NodeId(1)};
    ClientMessage m{paxos::ProducerId(7), 5, "k2", "v5"};
    std::vector<Entry> e5 = {Entry{Instance(5), b, paxos::MakeBatch(b, {m})}};
    ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(10)}, e5, {}), StoreCode::kOk);
  }
  EXPECT_GT(f.lmdb->FirstInstance(), Instance(5)) << "truncation never moves past the stray key 4";
  EXPECT_EQ(f.lmdb->FirstInstance(), Instance(9));
}

TEST(LmdbStoreDamage, ARebuildBlockedOnARecordTheSnapshotCoversGoesOnOnceTheLogIsCutThere) {
  // A damaged record below this node's snapshot that no peer still holds
  // (they truncated it) is never repaired. Cutting the log up to the
  // snapshot jumps the base over it, and the rebuild must go on from there
  // instead of waiting for the deleted record forever.
  LmdbFactory f;
  FillWithSnapshot(f, 10, 8);
  f.lmdb.reset();
  FlipBitOnDisk(f.dir, 5);
  MoveIndexKey(f.dir, 6, 5000);  // derived damage too: a rebuild is needed
  f.Reopen();
  ASSERT_EQ(f.lmdb->StartRebuild(Instance(10)), StoreCode::kOk) << f.lmdb->last_error();
  bool done = false;
  uint64_t fixed = 0;
  StoreCode code = StoreCode::kOk;
  for (int i = 0; i < 10 && code == StoreCode::kOk; ++i) {
    code = f.lmdb->RebuildStep(Instance(10), 3, &done, &fixed);
  }
  ASSERT_EQ(code, StoreCode::kCorrupt);
  EXPECT_EQ(f.lmdb->rebuild_next(), Instance(5));
  size_t deleted = 0;
  for (int i = 0; i < 10 && f.lmdb->FirstInstance() <= Instance(8); ++i) {
    ASSERT_EQ(f.lmdb->Truncate(Instance(9), 100, &deleted), StoreCode::kOk) << f.lmdb->last_error();
  }
  ASSERT_EQ(f.lmdb->FirstInstance(), Instance(9));
  ASSERT_TRUE(f.lmdb->rebuilding());
  for (int i = 0; i < 10 && !done; ++i) {
    ASSERT_EQ(f.lmdb->RebuildStep(Instance(10), 3, &done, &fixed), StoreCode::kOk) << f.lmdb->last_error();
  }
  EXPECT_TRUE(done);
  StoreCode read;
  EXPECT_EQ(Offsets(*f.lmdb, 8, &read), (std::vector<uint64_t>{8, 9}));
  EXPECT_EQ(read, StoreCode::kOk);
  f.lmdb->TakeNewDamage();
  EXPECT_EQ(f.lmdb->corruptions(), 2u) << "the deleted record was reported as missing";
}

TEST(LmdbStoreDamage, AMetaPageWhoseTransactionIdRottedIsDamage) {
  // LMDB opens from the meta page with the higher transaction id: one that
  // rotted lower makes it open the older commit, which may lack a synced
  // promise. Their ids must be consecutive.
  LmdbFactory f;
  FillApplied(f, 5);
  f.lmdb.reset();
  // With a damaged record beside it (see the scrub below).
  FlipBitOnDisk(f.dir, 2);
  const std::string file = f.dir + "/data.mdb";
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  constexpr size_t kTxnIdAt = 16 + 4 + 4 + 8 + 8 + 2 * 48 + 8;
  std::string bytes = ordo::testing::ReadFileBytes(file);
  uint64_t ids[2];
  std::memcpy(&ids[0], bytes.data() + kTxnIdAt, 8);
  std::memcpy(&ids[1], bytes.data() + page + kTxnIdAt, 8);
  ASSERT_EQ(std::max(ids[0], ids[1]), std::min(ids[0], ids[1]) + 1);
  const size_t newer = ids[0] > ids[1] ? 0 : 1;
  ASSERT_GE(ids[newer], 4u);
  const uint64_t rotted = ids[newer] - 4;  // below the other: LMDB takes the older commit
  std::memcpy(bytes.data() + newer * page + kTxnIdAt, &rotted, 8);
  ordo::testing::WriteFileBytes(file, bytes);
  const Status s = ReopenStatus(f);
  EXPECT_EQ(s.kind(), Status::Kind::kDamaged) << s.message();
  EXPECT_NE(s.message().find("meta pages"), std::string::npos) << s.message();
  // The scrub says so too: it finds the damaged record, and the rewrite
  // that follows would write new meta pages and hide the rot.
  LmdbStore::ScrubReport report;
  const Status scrubbed = LmdbStore::Scrub(f.dir, 64ull << 20, &report);
  EXPECT_EQ(scrubbed.kind(), Status::Kind::kDamaged) << scrubbed.message();
  EXPECT_NE(scrubbed.message().find("meta pages"), std::string::npos) << scrubbed.message();
}

TEST(LmdbStoreDamage, AnInstallDuringARebuildEndsTheRebuild) {
  LmdbFactory f;
  FillApplied(f, 10);
  ASSERT_EQ(f.lmdb->StartRebuild(Instance(10)), StoreCode::kOk) << f.lmdb->last_error();
  bool done = false;
  uint64_t fixed = 0;
  ASSERT_EQ(f.lmdb->RebuildStep(Instance(10), 3, &done, &fixed), StoreCode::kOk);
  ASSERT_FALSE(done);
  // A snapshot at 20 from a peer.
  paxos::AppliedState state;
  const Ballot b{1, NodeId(1)};
  for (uint64_t i = 1; i <= 20; ++i) {
    ClientMessage m{paxos::ProducerId(7), i, "k" + std::to_string(i % 3), "v" + std::to_string(i)};
    state.Apply(Instance(i), paxos::MakeBatch(b, {m}));
  }
  const paxos::AppliedSnapshot snap = state.Snapshot();
  const SnapshotHandle h = WriteSnapshotFile(*f.lmdb, snap);
  ASSERT_EQ(f.lmdb->InstallSnapshot(h, snap, {}), StoreCode::kOk);
  // The records it was reading are gone: a new rebuild starts if needed.
  EXPECT_FALSE(f.lmdb->rebuilding());
}
}  // namespace damage
}  // namespace
}  // namespace ordo::broker

namespace ordo::broker {
namespace {
// A read transaction stays with the thread that began it: another thread
// using it is a bug, stopped at once, not a read of some other commit.
TEST(LmdbStoreDeathTest, AReadTransactionUsedByAnotherThreadAborts) {
  LmdbFactory f;
  damage::FillApplied(f, 2);
  std::vector<StreamMessage> keyed;
  ReadTxn txn = f.lmdb->BeginRead();
  ASSERT_TRUE(txn);
  ASSERT_TRUE(f.lmdb->ReadKeyed(txn, &keyed).ok());
  EXPECT_EQ(keyed.size(), 2u);
  EXPECT_DEATH(std::thread([&] { (void)f.lmdb->ReadKeyed(txn, &keyed); }).join(),
               "did not begin it");
}
}  // namespace
}  // namespace ordo::broker

namespace ordo::broker {
namespace {
// The journal's operation format (version 1: op codes 1 and 2) reads back
// what it wrote, refuses what no version writes, and tells a later format's
// operation apart.
TEST(LmdbFormats, AJournalOperationReadsBackAndAnUnknownOneIsRefused) {
  std::vector<uint8_t> body;
  const std::string key = "hard_state", value = "0123456789";
  lmdb::AppendJournalOp(&body, lmdb::kJournalPut, lmdb::kMetaDb,
                        MDB_val{key.size(), const_cast<char*>(key.data())}, value.size());
  body.insert(body.end(), value.begin(), value.end());
  lmdb::AppendJournalOp(&body, lmdb::kJournalDel, lmdb::kLogDb,
                        MDB_val{key.size(), const_cast<char*>(key.data())}, 0);
  size_t at = 0;
  lmdb::JournalOp op;
  ASSERT_EQ(lmdb::ParseJournalOp(body, &at, &op), lmdb::JournalOpParse::kOk);
  EXPECT_EQ(op.op, lmdb::kJournalPut);
  EXPECT_EQ(op.db, lmdb::kMetaDb);
  EXPECT_EQ(std::string(static_cast<const char*>(op.key.mv_data), op.key.mv_size), key);
  EXPECT_EQ(std::string(static_cast<const char*>(op.value.mv_data), op.value.mv_size), value);
  ASSERT_EQ(lmdb::ParseJournalOp(body, &at, &op), lmdb::JournalOpParse::kOk);
  EXPECT_EQ(op.op, lmdb::kJournalDel);
  EXPECT_EQ(op.value.mv_size, 0u);
  EXPECT_EQ(at, body.size());
  for (auto [where, byte] : {std::pair<size_t, uint8_t>{0, 0}, {1, lmdb::kDbCount}, {4, 0xff}}) {
    std::vector<uint8_t> bad = body;
    bad[where] = byte;  // no op code, a database, a length past the end
    at = 0;
    EXPECT_EQ(lmdb::ParseJournalOp(bad, &at, &op), lmdb::JournalOpParse::kMalformed) << where;
  }
  at = body.size() - 1;  // a truncated operation
  EXPECT_EQ(lmdb::ParseJournalOp(body, &at, &op), lmdb::JournalOpParse::kMalformed);
  // A well-formed operation of a later format (after a downgrade): not damage.
  std::vector<uint8_t> newer = body;
  newer[0] = 3;
  at = 0;
  EXPECT_EQ(lmdb::ParseJournalOp(newer, &at, &op), lmdb::JournalOpParse::kNewer);
}
}  // namespace
}  // namespace ordo::broker

namespace ordo::broker {
namespace {

// The index keeps each instance's chain point (format 3): reads hand them
// out before each instance's messages, they follow each other, the head's
// survives a reopen and truncation, and a rebuild re-derives them from the
// base the log starts at.
TEST(LmdbStore, TheIndexKeepsTheChainAndReadsHandItOutPerInstance) {
  LmdbFactory f;
  paxos::AppliedState state;
  std::vector<paxos::ChainValue> after;  // after[i]: the chain after instance i + 1
  const Ballot b{1, NodeId(1)};
  for (uint64_t i = 1; i <= 10; ++i) {
    ClientMessage m1{paxos::ProducerId(7), 2 * i - 1, "", "a" + std::to_string(i)};
    ClientMessage m2{paxos::ProducerId(7), 2 * i, "k", "b" + std::to_string(i)};
    auto v = paxos::MakeBatch(b, {m1, m2});
    std::vector<Entry> entries = {Entry{Instance(i), b, v}};
    const paxos::AppliedInstance a = state.Apply(Instance(i), v);
    after.push_back(a.chain);
    ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(i)}, entries, {&a, 1}), StoreCode::kOk);
    if (i == 6) {
      const paxos::AppliedSnapshot snap = state.Snapshot();
      EXPECT_EQ(snap.chain, a.chain);
      ASSERT_EQ(f.lmdb->RecordSnapshot(WriteSnapshotFile(*f.lmdb, snap), snap), StoreCode::kOk);
    }
  }
  paxos::ChainValue head;
  ASSERT_TRUE(f.lmdb->ChainHead(&head));
  EXPECT_EQ(head, state.chain());
  // From offset 9 (the second message of instance 5), and from the start
  // of that instance.
  for (const bool from_start : {false, true}) {
    std::vector<ChainPoint> points;
    std::vector<uint64_t> offsets;
    const LmdbStore::InstanceVisitor on_point = [&](const ChainPoint& p) { points.push_back(p); };
    ASSERT_EQ(f.lmdb->ReadStream(
                  9, 100, 1 << 20, [&](uint64_t o, const MessageView&) { offsets.push_back(o); },
                  &on_point, from_start),
              StoreCode::kOk);
    EXPECT_EQ(offsets.front(), from_start ? 8u : 9u);
    ASSERT_EQ(points.size(), 6u);
    for (size_t k = 0; k < points.size(); ++k) {
      const uint64_t instance = 5 + k;
      EXPECT_EQ(points[k].instance, instance);
      EXPECT_EQ(points[k].first_offset, 2 * (instance - 1));
      EXPECT_EQ(points[k].count, 2u);
      EXPECT_TRUE(points[k].has_chain);
      EXPECT_EQ(points[k].before, after[instance - 2]);
      EXPECT_EQ(points[k].after, after[instance - 1]);
    }
  }
  size_t deleted = 0;
  ASSERT_EQ(f.lmdb->Truncate(Instance(7), 100, &deleted), StoreCode::kOk);
  f.Reopen();
  ASSERT_TRUE(f.lmdb->ChainHead(&head));
  EXPECT_EQ(head, state.chain());
  // The rebuild from the base (the snapshot at 6) derives the same points.
  f.lmdb.reset();
  damage::MoveIndexKey(f.dir, 16, 5000);  // instance 9's record
  f.Reopen();
  uint64_t fixed = 0;
  damage::Rebuild(*f.lmdb, 10, &fixed);
  EXPECT_GE(fixed, 1u);
  std::vector<ChainPoint> points;
  const LmdbStore::InstanceVisitor on_point = [&](const ChainPoint& p) { points.push_back(p); };
  ASSERT_EQ(f.lmdb->ReadStream(
                12, 100, 1 << 20, [](uint64_t, const MessageView&) {}, &on_point),
            StoreCode::kOk);
  ASSERT_EQ(points.size(), 4u);
  EXPECT_EQ(points[0].before, after[5]);
  EXPECT_EQ(points[3].after, state.chain());
}

}  // namespace
}  // namespace ordo::broker
