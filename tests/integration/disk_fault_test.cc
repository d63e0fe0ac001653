// The disk-fault campaign: real brokers, real LMDB files. For each fault
// class, one stopped broker of three (a minority) has its files damaged the
// way a disk damages them, is restarted, and more is published. Then every
// broker must serve one identical stream holding every acknowledged
// (offset, message) exactly once and nothing else, the compacted view must
// be the latest message of every key everywhere, and a reader connected only
// to the damaged broker must never be handed a wrong message meanwhile.
//
// Seeds vary per run (ORDO_FAULT_SEED=N replays one); a failure prints the
// seed. Each test prints how long the damaged broker took to serve the
// whole stream again.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "tests/integration/cluster.h"
#include "tests/testing/disk_faults.h"

namespace ordo {
namespace {

using testing::Cluster;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// Snapshots every 20 instances and no truncation, so damage lands below and
// above the latest snapshot point while every broker keeps the whole log;
// a small window, so a broker that lost its state votes again soon.
constexpr char kConfig[] =
    "[retention]\nsnapshot_interval_instances = 20\ninstances = 0\nage_seconds = 0\n"
    "[batching]\nwindow_instances_max = 8\n";
constexpr uint64_t kKeys = 37;

std::string ReadLog(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

uint64_t SeedForThisRun() {
  if (const char* s = std::getenv("ORDO_FAULT_SEED")) return std::strtoull(s, nullptr, 10);
  return std::random_device{}();
}

ClientOptions Only(const Cluster& c, int node) {
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(node)};
  return o;
}

// What was acknowledged: offset -> (key, payload).
struct Acked {
  std::map<uint64_t, std::pair<std::string, std::string>> at;
  uint64_t next = 0;  // the next message number
};

// `batches` PublishBatch calls of `per_batch` keyed messages (each batch is
// about one instance), through the brokers of `o`.
void Publish(const ClientOptions& o, int batches, int per_batch, Acked* acked) {
  Publisher p(o);
  for (int b = 0; b < batches; ++b) {
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < per_batch; ++i, ++acked->next) {
      batch.push_back({"key-" + std::to_string(acked->next % kKeys),
                       "message-" + std::to_string(acked->next) + std::string(40, '.')});
    }
    auto r = p.PublishBatch(batch);
    ASSERT_TRUE(r.ok()) << r.error().message;
    for (size_t i = 0; i < batch.size(); ++i) {
      ASSERT_TRUE(acked->at.emplace(r.value()[i], std::make_pair(batch[i].key, batch[i].payload))
                      .second)
          << "offset " << r.value()[i] << " acknowledged twice";
    }
  }
}

// Reads [0, head) from broker `node` alone until it serves all of it, or
// `timeout` passes; every record it is handed must be the acknowledged one.
// Returns whether it served everything.
bool ReadsEverythingRight(const Cluster& c, int node, const Acked& acked,
                          std::chrono::seconds timeout, std::string* problem) {
  const uint64_t head = acked.at.size();
  const auto deadline = Clock::now() + timeout;
  ClientOptions o = Only(c, node);
  o.call_timeout = 2s;
  while (Clock::now() < deadline) {
    uint64_t expect = 0;
    bool wrong = false;
    Result<uint64_t> r = Replay(o, 0, head, [&](const Record& rec, uint64_t) {
      auto it = acked.at.find(rec.offset);
      if (rec.offset != expect || it == acked.at.end() || it->second.first != rec.key ||
          it->second.second != rec.payload) {
        if (!wrong) {
          *problem = "broker " + std::to_string(node) + " served offset " +
                     std::to_string(rec.offset) + " (expected " + std::to_string(expect) +
                     ") with payload '" + rec.payload + "'";
        }
        wrong = true;
      }
      ++expect;
    });
    if (wrong) return false;
    if (r.ok() && expect == head) return true;
    std::this_thread::sleep_for(100ms);
  }
  *problem = "broker " + std::to_string(node) + " did not serve [0, " + std::to_string(head) +
             ") within the timeout";
  return false;
}

void ExpectCompactedView(const Cluster& c, int node, const Acked& acked) {
  std::map<std::string, std::pair<uint64_t, std::string>> latest;
  for (const auto& [offset, kp] : acked.at) latest[kp.first] = {offset, kp.second};
  auto view = ReplayCompacted(Only(c, node), 0, 0);
  ASSERT_TRUE(view.ok()) << "broker " << node << ": " << view.error().message;
  ASSERT_EQ(view.value().size(), latest.size()) << "broker " << node;
  for (const Record& r : view.value()) {
    auto it = latest.find(r.key);
    ASSERT_NE(it, latest.end()) << "broker " << node << " key " << r.key;
    EXPECT_EQ(r.offset, it->second.first) << "broker " << node << " key " << r.key;
    EXPECT_EQ(r.payload, it->second.second) << "broker " << node << " key " << r.key;
  }
}

// A fault: damages the stopped broker's directory `dir`. `peer_dir` is
// another broker's (for the class that swaps directories).
struct Fault {
  const char* name;
  bool kill9;  // stop with SIGKILL (the journal then holds unflushed records)
  // What the damaged broker must log (its detection), or "" where the damage
  // may land where nothing reads (free pages, an unsynced tail).
  const char* must_log;
  std::function<void(const std::string& dir, std::mt19937_64& rng)> damage;
};

uint64_t Pick(std::mt19937_64& rng, uint64_t n) { return n == 0 ? 0 : rng() % n; }

// Flips one random bit inside a random record's value (or key) of `db`,
// choosing among records `accept` admits.
void FlipInRecord(const std::string& dir, const char* db, bool key, std::mt19937_64& rng,
                  const std::function<bool(const testing::RecordOnDisk&)>& accept = nullptr) {
  std::vector<testing::RecordOnDisk> records = testing::RecordsOnDisk(dir, db);
  if (accept) std::erase_if(records, [&](const auto& r) { return !accept(r); });
  ASSERT_FALSE(records.empty()) << db;
  const testing::RecordOnDisk& r = records[Pick(rng, records.size())];
  const uint64_t at = key ? r.key_at + Pick(rng, r.key.size()) : r.value_at + Pick(rng, r.value_bytes);
  testing::FlipBit(dir + "/data.mdb", at, static_cast<int>(Pick(rng, 8)));
}

uint64_t InstanceOf(const testing::RecordOnDisk& r) {
  uint64_t v = 0;
  for (unsigned char ch : r.key) v = (v << 8) | ch;
  return v;
}

// The newest snapshot file (the one the store names): snapshot-N-CRC.ords
// with the highest N.
std::string LatestSnapshotFile(const std::string& dir) {
  std::string best;
  uint64_t best_instance = 0;
  for (const auto& e : fs::directory_iterator(dir + "/snapshots")) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with("snapshot-") || !name.ends_with(".ords")) continue;
    const uint64_t instance = std::strtoull(name.c_str() + 9, nullptr, 10);
    if (best.empty() || instance > best_instance) best = e.path().string(), best_instance = instance;
  }
  return best;
}

const std::vector<Fault>& Faults() {
  static const std::vector<Fault> faults = {
      {"log_record_below_snapshot", false, "damaged",
       [](const std::string& d, std::mt19937_64& rng) {
         FlipInRecord(d, "log", false, rng,
                      [](const auto& r) { return InstanceOf(r) >= 2 && InstanceOf(r) < 40; });
       }},
      {"log_record_above_snapshot", false, "damaged",
       [](const std::string& d, std::mt19937_64& rng) {
         FlipInRecord(d, "log", false, rng, [](const auto& r) { return InstanceOf(r) > 61; });
       }},
      {"log_key", false, "damaged",
       [](const std::string& d, std::mt19937_64& rng) { FlipInRecord(d, "log", true, rng); }},
      {"index_key", false, "damaged",
       [](const std::string& d, std::mt19937_64& rng) { FlipInRecord(d, "index", true, rng); }},
      {"index_value", false, "damaged",
       [](const std::string& d, std::mt19937_64& rng) { FlipInRecord(d, "index", false, rng); }},
      {"compacted_view", false, "damaged",
       [](const std::string& d, std::mt19937_64& rng) { FlipInRecord(d, "keys", false, rng); }},
      {"hard_state_flipped", false, "stored state is damaged",
       [](const std::string& d, std::mt19937_64& rng) {
         FlipInRecord(d, "meta", false, rng, [](const auto& r) { return r.key == "hard_state"; });
       }},
      {"hard_state_deleted", false, "stored state is damaged",
       [](const std::string& d, std::mt19937_64&) { testing::DeleteMetaKey(d, "hard_state"); }},
      {"journal_key_deleted", true, "stored state is damaged",
       [](const std::string& d, std::mt19937_64&) { testing::DeleteMetaKey(d, "journal"); }},
      {"retained_renamed", false, "stored state is damaged",
       [](const std::string& d, std::mt19937_64&) { testing::RenameMetaKey(d, "retained", "retainee"); }},
      {"random_bit_flips", false, "",
       [](const std::string& d, std::mt19937_64& rng) {
         const std::string f = d + "/data.mdb";
         const uint64_t size = fs::file_size(f);
         for (int i = 0; i < 8; ++i) testing::FlipBit(f, Pick(rng, size), static_cast<int>(Pick(rng, 8)));
       }},
      {"zeroed_page", false, "",
       [](const std::string& d, std::mt19937_64& rng) {
         const std::string f = d + "/data.mdb";
         const uint64_t psize = testing::LmdbPageBytes(d);
         std::string bytes = testing::ReadFileBytes(f);
         const uint64_t page = Pick(rng, bytes.size() / psize);
         std::fill(bytes.begin() + static_cast<std::ptrdiff_t>(page * psize),
                   bytes.begin() + static_cast<std::ptrdiff_t>((page + 1) * psize), '\0');
         testing::WriteFileBytes(f, bytes);
       }},
      {"data_file_truncated", false, "",
       [](const std::string& d, std::mt19937_64& rng) {
         const std::string f = d + "/data.mdb";
         fs::resize_file(f, Pick(rng, fs::file_size(f)));
       }},
      {"journal_bit_flips", true, "",
       [](const std::string& d, std::mt19937_64& rng) {
         // Within what this pass wrote: the first 64 KiB hold its records.
         for (int i = 0; i < 4; ++i) {
           testing::FlipBit(d + "/journal", Pick(rng, 64 << 10), static_cast<int>(Pick(rng, 8)));
         }
       }},
      {"journal_truncated", true, "stored state is damaged",
       [](const std::string& d, std::mt19937_64& rng) {
         const std::string f = d + "/journal";
         fs::resize_file(f, Pick(rng, fs::file_size(f)));
       }},
      {"journal_deleted", true, "stored state is damaged", [](const std::string& d, std::mt19937_64&) { fs::remove(d + "/journal"); }},
      {"snapshot_flipped", false, "stored state is damaged",
       [](const std::string& d, std::mt19937_64& rng) {
         const std::string f = LatestSnapshotFile(d);
         ASSERT_FALSE(f.empty());
         testing::FlipBit(f, Pick(rng, fs::file_size(f)), static_cast<int>(Pick(rng, 8)));
       }},
      {"snapshot_truncated", false, "stored state is damaged",
       [](const std::string& d, std::mt19937_64& rng) {
         const std::string f = LatestSnapshotFile(d);
         ASSERT_FALSE(f.empty());
         fs::resize_file(f, Pick(rng, fs::file_size(f)));
       }},
      {"directory_wiped", false, "empty data directory",
       [](const std::string& d, std::mt19937_64&) {
         for (const auto& e : fs::directory_iterator(d)) fs::remove_all(e.path());
       }},
  };
  return faults;
}

class DiskFault : public ::testing::TestWithParam<size_t> {};

TEST_P(DiskFault, AMinorityWithDamageRepairsAndServesOnlyWhatWasAcknowledged) {
  const Fault& fault = Faults()[GetParam()];
  const uint64_t seed = SeedForThisRun();
  SCOPED_TRACE(std::string("fault ") + fault.name + ", seed " + std::to_string(seed) +
               " (replay: ORDO_FAULT_SEED=" + std::to_string(seed) + ")");
  std::mt19937_64 rng(seed);
  Cluster c(3, false, kConfig);
  ASSERT_NE(c.WaitForLeader(), 0);
  Acked acked;
  Publish(c.Options(), 70, 5, &acked);  // about 70 instances: snapshots at 20, 40, 60
  ASSERT_TRUE(c.WaitForHead(acked.at.size()));
  const int victim = 1 + static_cast<int>(Pick(rng, 3));  // the leader, too, sometimes
  c.Kill(victim, fault.kill9 ? SIGKILL : SIGTERM);
  fault.damage(c.DataDir(victim), rng);
  if (HasFatalFailure()) return;
  c.Start(victim);
  const auto restarted = Clock::now();
  // More traffic: a broker that starts over needs new instances to vote again.
  ClientOptions others = c.Options();
  Publish(others, 40, 5, &acked);

  std::string problem;
  const bool served = ReadsEverythingRight(c, victim, acked, 90s, &problem);
  const double seconds = std::chrono::duration<double>(Clock::now() - restarted).count();
  const std::string log = ReadLog(c.Log(victim));
  ASSERT_TRUE(served) << problem << "\n--- broker " << victim << "'s log:\n" << log;
  std::printf("[ fault %s, seed %llu ] broker %d served everything %.2f s after its restart\n",
              fault.name, static_cast<unsigned long long>(seed), victim, seconds);
  // What the broker said about it (the campaign's table comes from these).
  std::istringstream lines(log);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("damaged") != std::string::npos || line.find("rebuil") != std::string::npos ||
        line.find("records checked") != std::string::npos ||
        line.find("not voting") != std::string::npos || line.find("voting (") != std::string::npos) {
      std::printf("    | %s\n", line.c_str());
    }
  }
  ASSERT_TRUE(c.Running(victim)) << log;
  // The file as it was before a rewrite went once the copy was opened.
  EXPECT_FALSE(std::filesystem::exists(c.DataDir(victim) + "/data.mdb.pre-rewrite"));
  EXPECT_NE(log.find(fault.must_log), std::string::npos) << "not detected:\n" << log;
  // Served everything: a damaged log record was rewritten, and said so.
  if (std::string_view(fault.name).starts_with("log_record")) {
    EXPECT_NE(log.find("repaired with a peer's copy"), std::string::npos) << log;
  }
  for (int n = 1; n <= 3; ++n) {
    ASSERT_TRUE(ReadsEverythingRight(c, n, acked, 30s, &problem)) << problem;
    ExpectCompactedView(c, n, acked);
  }
  // And it goes on: a publish through the damaged broker alone is acknowledged.
  Acked more = acked;
  ClientOptions through = Only(c, victim);
  Publish(through, 1, 1, &more);
}

std::string FaultName(const ::testing::TestParamInfo<size_t>& param) {
  return Faults()[param.param].name;
}

INSTANTIATE_TEST_SUITE_P(Campaign, DiskFault, ::testing::Range<size_t>(0, Faults().size()),
                         FaultName);

// A directory of another node is refused (exit 3, naming both nodes), and
// the broker runs again once it has its own directory back.
TEST(DiskFaultIdentity, AnotherNodesDirectoryIsRefusedAndItsOwnIsTakenBack) {
  Cluster c(3, false, kConfig);
  ASSERT_NE(c.WaitForLeader(), 0);
  Acked acked;
  Publish(c.Options(), 10, 5, &acked);
  ASSERT_TRUE(c.WaitForHead(acked.at.size()));
  c.Kill(2, SIGTERM);
  c.Kill(3, SIGTERM);
  const std::string own = c.DataDir(2) + ".own";
  fs::rename(c.DataDir(2), own);
  fs::copy(c.DataDir(3), c.DataDir(2), fs::copy_options::recursive);
  fs::remove(c.DataDir(2) + "/LOCK");
  c.Start(3);
  std::filesystem::remove(c.Log(2));
  c.Start(2);
  EXPECT_EQ(c.WaitForExit(2), 3);
  const std::string log = ReadLog(c.Log(2));
  EXPECT_NE(log.find("belongs to node 3"), std::string::npos) << log;
  EXPECT_NE(log.find("this broker is node 2"), std::string::npos) << log;
  fs::remove_all(c.DataDir(2));
  fs::rename(own, c.DataDir(2));
  c.Start(2);
  Publish(c.Options(), 10, 5, &acked);
  std::string problem;
  for (int n = 1; n <= 3; ++n) EXPECT_TRUE(ReadsEverythingRight(c, n, acked, 30s, &problem)) << problem;
}

// A second broker process on a running broker's directory is refused
// (exit 3, naming the holder), and the first one is unharmed.
TEST(DiskFaultIdentity, ASecondProcessOnADirectoryInUseIsRefused) {
  Cluster c(3, false, kConfig);
  ASSERT_NE(c.WaitForLeader(), 0);
  const std::string out = c.DataDir(1) + ".second.log";
  const std::string cmd = std::string(ORDO_BROKER_BIN) + " --config " + c.Config(1) +
                          " > " + out + " 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 3);
  const std::string log = ReadLog(out);
  EXPECT_NE(log.find("is in use by another ordo-broker (pid"), std::string::npos) << log;
  Acked acked;
  Publish(c.Options(), 5, 5, &acked);
  std::string problem;
  EXPECT_TRUE(ReadsEverythingRight(c, 1, acked, 30s, &problem)) << problem;
}

// Two faults at once (the scenario): follower F is down while 200
// messages are acknowledged by L and G; L and G are killed; G's journal is
// truncated; F and G start with L still down. G lost what it vouched for, so
// F and G are not a majority of trustworthy voters: publishing is refused,
// nothing is reassigned. When L returns, the stream is whole everywhere.
TEST(DiskFaultTwoFaults, ATruncatedJournalWhileAnotherIsBehindLosesAndReassignsNothing) {
  Cluster c(3, false, kConfig);
  const int l = c.WaitForLeader();
  ASSERT_NE(l, 0);
  const int f = l % 3 + 1;
  const int g = 6 - l - f;
  Acked acked;
  Publish(c.Options(), 10, 5, &acked);
  ASSERT_TRUE(c.WaitForHead(acked.at.size()));
  c.Kill(f, SIGTERM);
  ClientOptions lg = c.Options();
  lg.brokers = {c.ClientEndpoint(l), c.ClientEndpoint(g)};
  Publish(lg, 40, 5, &acked);
  c.Kill(l, SIGKILL);
  c.Kill(g, SIGKILL);
  fs::resize_file(c.DataDir(g) + "/journal", 4096);
  c.Start(f);
  c.Start(g);
  // Nothing may be acknowledged at offsets that were already given.
  ClientOptions fg = c.Options();
  fg.brokers = {c.ClientEndpoint(f), c.ClientEndpoint(g)};
  fg.call_timeout = 3s;
  Publisher p(fg);
  auto r = p.Publish("must-wait");
  if (r.ok()) {
    EXPECT_GE(r.value(), acked.at.size()) << "an acknowledged offset was given again";
  }
  EXPECT_FALSE(r.ok()) << "F and G published without a majority of trustworthy voters";
  c.Start(l);
  ASSERT_NE(c.WaitForLeader(60s), 0);
  ClientOptions all = c.Options();
  Publisher after(all);
  auto late = after.Publish("after");  // may also settle "must-wait" first
  ASSERT_TRUE(late.ok()) << late.error().message;
  EXPECT_GE(late.value(), acked.at.size());
  std::string problem;
  for (int n = 1; n <= 3; ++n) {
    // Every acknowledged message at its offset on every broker.
    const auto deadline = Clock::now() + 60s;
    bool ok = false;
    while (!ok && Clock::now() < deadline) {
      auto got = Replay(Only(c, n), 0, acked.at.size());
      ok = got.ok() && got.value().size() == acked.at.size();
      for (size_t i = 0; ok && i < got.value().size(); ++i) {
        ok = got.value()[i].payload == acked.at.at(got.value()[i].offset).second;
        EXPECT_TRUE(ok) << "broker " << n << " offset " << got.value()[i].offset;
      }
      if (!ok) std::this_thread::sleep_for(200ms);
    }
    EXPECT_TRUE(ok) << "broker " << n << "\n" << ReadLog(c.Log(n));
  }
  EXPECT_NE(ReadLog(c.Log(g)).find("stored state is damaged"), std::string::npos) << ReadLog(c.Log(g));
}

}  // namespace
}  // namespace ordo
