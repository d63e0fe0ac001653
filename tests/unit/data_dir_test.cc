// DataDir: a data directory's lock, its identity, and the quarantine of
// damaged contents.
#include "broker/data_dir.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "tests/testing/corrupt_file.h"

namespace ordo::broker {
namespace {

std::string TempDir() {
  static std::mt19937_64 rng(std::random_device{}());
  return (std::filesystem::temp_directory_path() / ("ordo-datadir-test-" + std::to_string(rng())))
      .string();
}

struct Dir {
  std::string path = TempDir();
  ~Dir() { std::filesystem::remove_all(path); }
};

TEST(DataDir, RecordsItsIdentityAndRefusesAnotherNodeOrCluster) {
  Dir d;
  {
    std::unique_ptr<DataDir> dir;
    Status s = DataDir::Acquire(d.path, "prod", 2, &dir);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_FALSE(dir->history_lost());
  }
  std::unique_ptr<DataDir> again;
  ASSERT_TRUE(DataDir::Acquire(d.path, "prod", 2, &again).ok());
  again.reset();
  std::unique_ptr<DataDir> other;
  Status s = DataDir::Acquire(d.path, "prod", 3, &other);
  EXPECT_EQ(s.kind(), Status::Kind::kStorage);
  EXPECT_NE(s.message().find("belongs to node 2 of cluster \"prod\""), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("this broker is node 3"), std::string::npos) << s.message();
  s = DataDir::Acquire(d.path, "test", 2, &other);
  EXPECT_EQ(s.kind(), Status::Kind::kStorage) << s.message();
}

TEST(DataDir, ASecondHolderIsRefusedUntilTheFirstLetsGo) {
  Dir d;
  std::unique_ptr<DataDir> first;
  ASSERT_TRUE(DataDir::Acquire(d.path, "ordo", 1, &first).ok());
  std::unique_ptr<DataDir> second;
  Status s = DataDir::Acquire(d.path, "ordo", 1, &second);
  EXPECT_EQ(s.kind(), Status::Kind::kStorage);
  EXPECT_NE(s.message().find("in use by another ordo-broker (pid " + std::to_string(::getpid())),
            std::string::npos)
      << s.message();
  first.reset();
  EXPECT_TRUE(DataDir::Acquire(d.path, "ordo", 1, &second).ok());
}

TEST(DataDir, ADamagedIdentityIsDamageAndQuarantineKeepsTheHistoryMark) {
  Dir d;
  {
    std::unique_ptr<DataDir> dir;
    ASSERT_TRUE(DataDir::Acquire(d.path, "ordo", 1, &dir).ok());
  }
  std::ofstream(d.path + "/data.mdb") << "pages";
  ordo::testing::FlipByteInFile(d.path + "/IDENTITY", 120);
  std::unique_ptr<DataDir> dir;
  Status s = DataDir::Acquire(d.path, "ordo", 1, &dir);
  ASSERT_EQ(s.kind(), Status::Kind::kDamaged) << s.message();
  ASSERT_TRUE(dir);
  const StatusOr<std::string> quarantined = dir->Quarantine();
  ASSERT_TRUE(quarantined.ok());
  const std::string moved = quarantined.value();
  EXPECT_TRUE(std::filesystem::exists(moved + "/data.mdb"));
  EXPECT_TRUE(std::filesystem::exists(moved + "/IDENTITY"));
  EXPECT_FALSE(std::filesystem::exists(d.path + "/data.mdb"));
  EXPECT_TRUE(dir->history_lost());
  dir.reset();
  // The next start finds a good identity that remembers the history.
  ASSERT_TRUE(DataDir::Acquire(d.path, "ordo", 1, &dir).ok());
  EXPECT_TRUE(dir->history_lost());
}

}  // namespace
}  // namespace ordo::broker
