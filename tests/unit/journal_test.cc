// Journal: the framed, checksummed record file in front of LMDB, on a real
// file. What LmdbStore builds on it is tested in lmdb_store_test.cc.
#include "broker/journal.h"

#include <gtest/gtest.h>

#include "tests/testing/corrupt_file.h"

#include <filesystem>
#include <fstream>
#include <random>

namespace ordo::broker {
namespace {

struct TempFile {
  TempFile() {
    static std::mt19937_64 rng(std::random_device{}());
    path = (std::filesystem::temp_directory_path() / ("ordo-journal-" + std::to_string(rng())))
               .string();
  }
  ~TempFile() { std::filesystem::remove(path); }
  std::string path;
};

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::vector<std::string> ReplayAll(const Journal& j, uint64_t generation, Status* status) {
  std::vector<std::string> out;
  uint64_t n = 0;
  *status = j.Replay(
      generation,
      [&](std::span<const uint8_t> body) {
        out.emplace_back(reinterpret_cast<const char*>(body.data()), body.size());
        return Status::Ok();
      },
      &n);
  EXPECT_EQ(n, out.size());
  return out;
}

using ordo::testing::FlipByteInFile;

TEST(Journal, RecordsOfTheGenerationReplayInOrderAfterAReopen) {
  TempFile t;
  {
    std::unique_ptr<Journal> j;
    ASSERT_TRUE(Journal::Open(t.path, 1 << 20, true, &j).ok());
    EXPECT_EQ(std::filesystem::file_size(t.path), 1u << 20);  // reserved up front
    j->Restart(41);
    ASSERT_TRUE(j->Append(Bytes("one")).ok());
    ASSERT_TRUE(j->Append(Bytes("")).ok());
    ASSERT_TRUE(j->Append(Bytes("three")).ok());
    ASSERT_TRUE(j->Sync().ok());
    EXPECT_EQ(j->records(), 3u);
  }
  std::unique_ptr<Journal> j;
  ASSERT_TRUE(Journal::Open(t.path, 1 << 20, true, &j).ok());
  Status s;
  EXPECT_EQ(ReplayAll(*j, 41, &s), (std::vector<std::string>{"one", "", "three"}));
  EXPECT_TRUE(s.ok());
  // Another generation's records are not this one's.
  EXPECT_TRUE(ReplayAll(*j, 42, &s).empty());
  EXPECT_TRUE(s.ok());
}

TEST(Journal, ANewPassHidesTheOldOnesLeftoversFurtherIn) {
  TempFile t;
  std::unique_ptr<Journal> j;
  ASSERT_TRUE(Journal::Open(t.path, 1 << 20, true, &j).ok());
  j->Restart(7);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(j->Append(Bytes("old record " + std::to_string(i))).ok());
  j->Restart(8);
  ASSERT_TRUE(j->Append(Bytes("new")).ok());
  ASSERT_TRUE(j->Sync().ok());
  Status s;
  EXPECT_EQ(ReplayAll(*j, 8, &s), (std::vector<std::string>{"new"}));
  EXPECT_TRUE(s.ok());
}

TEST(Journal, ATornLastRecordEndsTheReplay) {
  TempFile t;
  std::unique_ptr<Journal> j;
  ASSERT_TRUE(Journal::Open(t.path, 1 << 20, true, &j).ok());
  j->Restart(1);
  ASSERT_TRUE(j->Append(Bytes("kept")).ok());
  const uint64_t last = j->position();
  ASSERT_TRUE(j->Append(Bytes("torn")).ok());
  ASSERT_TRUE(j->Sync().ok());
  FlipByteInFile(t.path, last + Journal::kHeaderBytes + 1);
  Status s;
  EXPECT_EQ(ReplayAll(*j, 1, &s), (std::vector<std::string>{"kept"}));
  EXPECT_TRUE(s.ok()) << s.message();
}

// Each record synced before the next is written, as the broker's votes are.
std::unique_ptr<Journal> ThreeSyncedRecords(const std::string& path, uint64_t* second_at) {
  std::unique_ptr<Journal> j;
  EXPECT_TRUE(Journal::Open(path, 1 << 20, true, &j).ok());
  j->Restart(1);
  for (const char* body : {"first", "second", "third"}) {
    if (std::string(body) == "second") *second_at = j->position();
    EXPECT_TRUE(j->Append(Bytes(body)).ok());
    EXPECT_TRUE(j->Sync().ok());
  }
  return j;
}

TEST(Journal, ADamagedSyncedRecordBeforeAnIntactOneIsAnError) {
  // Anywhere in the record: the body, or a header field (magic, length,
  // generation, index) that would otherwise make it look like the end.
  for (uint64_t at : {uint64_t{Journal::kHeaderBytes + 2}, uint64_t{4}, uint64_t{8}, uint64_t{12},
                      uint64_t{20}}) {
    TempFile t;
    uint64_t second = 0;
    auto j = ThreeSyncedRecords(t.path, &second);
    FlipByteInFile(t.path, second + at);
    Status s;
    ReplayAll(*j, 1, &s);
    EXPECT_FALSE(s.ok()) << "byte " << at;
    EXPECT_NE(s.message().find("record 1"), std::string::npos) << s.message();
  }
}

TEST(Journal, TwoDamagedRecordsBeforeAnIntactOneAreAnError) {
  TempFile t;
  std::unique_ptr<Journal> j;
  ASSERT_TRUE(Journal::Open(t.path, 1 << 20, true, &j).ok());
  j->Restart(1);
  std::vector<uint64_t> at;
  for (int i = 0; i < 4; ++i) {
    at.push_back(j->position());
    ASSERT_TRUE(j->Append(Bytes("record " + std::to_string(i))).ok());
    ASSERT_TRUE(j->Sync().ok());
  }
  FlipByteInFile(t.path, at[1] + Journal::kHeaderBytes);
  FlipByteInFile(t.path, at[2] + Journal::kHeaderBytes);
  Status s;
  ReplayAll(*j, 1, &s);
  EXPECT_FALSE(s.ok());
}

TEST(Journal, AnIntactRecordWhoseHeaderCrossesTheScansChunkIsFound) {
  // Replay looks for later records 1 MiB at a time: record 2 starts 16 bytes
  // before the first MiB ends, its header running into the next.
  TempFile t;
  std::unique_ptr<Journal> j;
  ASSERT_TRUE(Journal::Open(t.path, 2 << 20, true, &j).ok());
  j->Restart(1);
  ASSERT_TRUE(j->Append(Bytes("x")).ok());  // 40 bytes with its header
  ASSERT_TRUE(j->Sync().ok());
  const std::string big((1 << 20) - 16 - 40 - Journal::kHeaderBytes, 'b');
  ASSERT_TRUE(j->Append(Bytes(big)).ok());
  ASSERT_TRUE(j->Sync().ok());
  ASSERT_EQ(j->position(), (1u << 20) - 16);
  ASSERT_TRUE(j->Append(Bytes("last")).ok());
  ASSERT_TRUE(j->Sync().ok());
  FlipByteInFile(t.path, Journal::kHeaderBytes);       // record 0's body
  FlipByteInFile(t.path, 40 + Journal::kHeaderBytes);  // record 1's body
  Status s;
  ReplayAll(*j, 1, &s);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("record 2 says"), std::string::npos) << s.message();
}

TEST(Journal, ATornUnsyncedRecordBeforeAnIntactUnacknowledgedOneEndsTheReplay) {
  // A power loss during the sync of two records: the kernel wrote the
  // second, not all of the first. Neither was acknowledged: not an error.
  TempFile t;
  std::unique_ptr<Journal> j;
  ASSERT_TRUE(Journal::Open(t.path, 1 << 20, true, &j).ok());
  j->Restart(1);
  ASSERT_TRUE(j->Append(Bytes("acknowledged")).ok());
  ASSERT_TRUE(j->Sync().ok());
  const uint64_t unsynced = j->position();
  ASSERT_TRUE(j->Append(Bytes("deferred, not synced")).ok());
  ASSERT_TRUE(j->Append(Bytes("its sync never returned")).ok());
  FlipByteInFile(t.path, unsynced + Journal::kHeaderBytes + 1);
  Status s;
  EXPECT_EQ(ReplayAll(*j, 1, &s), (std::vector<std::string>{"acknowledged"}));
  EXPECT_TRUE(s.ok()) << s.message();
}

TEST(Journal, WhatNoSyncCoveredIsLostAtAPowerLossAndTheRestIsKept) {
  TempFile t;
  std::unique_ptr<Journal> j;
  ASSERT_TRUE(Journal::Open(t.path, 1 << 20, true, &j).ok());
  j->Restart(1);
  ASSERT_TRUE(j->Append(Bytes("a")).ok());
  ASSERT_TRUE(j->Append(Bytes("b")).ok());
  ASSERT_TRUE(j->Sync().ok());
  ASSERT_TRUE(j->Append(Bytes("c")).ok());
  j->DropUnsyncedForTest();
  Status s;
  EXPECT_EQ(ReplayAll(*j, 1, &s), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(s.ok()) << s.message();
}

TEST(Journal, AMissingFileIsAnErrorUnlessAskedToCreateIt) {
  TempFile t;
  std::unique_ptr<Journal> j;
  const Status s = Journal::Open(t.path, 1 << 20, false, &j);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(t.path), std::string::npos) << s.message();
  EXPECT_FALSE(std::filesystem::exists(t.path));
}

TEST(Journal, ARecordThatDoesNotFitIsRefused) {
  TempFile t;
  std::unique_ptr<Journal> j;
  ASSERT_TRUE(Journal::Open(t.path, 4096, true, &j).ok());
  j->Restart(1);
  const std::string big(4096, 'x');
  EXPECT_FALSE(j->Fits(big.size()));
  EXPECT_FALSE(j->Append(Bytes(big)).ok());
  EXPECT_EQ(j->records(), 0u);
  EXPECT_TRUE(j->Fits(4096 - Journal::kHeaderBytes));
}

}  // namespace
}  // namespace ordo::broker
