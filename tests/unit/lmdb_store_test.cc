// LmdbStore: the LogStore contract on real LMDB files, plus what only the
// broker's store does: checksums on every record, the offset index and
// stream reads.
#include <gtest/gtest.h>
#include <lmdb.h>

#include "tests/testing/corrupt_lmdb.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "broker/crc32c.h"
#include "broker/lmdb_store.h"
#include "tests/unit/log_store_contract.h"

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
void FillKeyed(LmdbFactory& f) {
  const Ballot b{1, NodeId(1)};
  for (uint64_t i = 1; i <= 10; ++i) {
    ClientMessage m{paxos::ProducerId(7), i, "k" + std::to_string(i % 3), "v" + std::to_string(i)};
    auto v = paxos::MakeBatch(b, {m});
    std::vector<Entry> entries = {Entry{Instance(i), b, v}};
    auto a = Applied(v, i, i - 1, {paxos::PublishOutcome::kAppended});
    a.results[0].offset = paxos::Offset(i - 1);
    ASSERT_EQ(f.lmdb->Commit(HardState{b, Instance(i)}, entries, {&a, 1}), StoreCode::kOk);
  }
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
  const std::string file = EncodeSnapshotFile(snap, keyed);
  const SnapshotHandle h{50, file.size(), Crc32c(file.data(), file.size())};
  std::filesystem::create_directories(f.lmdb->SnapshotDir());
  {
    std::ofstream out(f.lmdb->SnapshotPath(h), std::ios::binary);
    out << file;
  }
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
