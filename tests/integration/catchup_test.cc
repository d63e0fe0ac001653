// Issue 5's end-to-end tests: retention, snapshots and catch-up with real
// ordo-broker processes on 127.0.0.1.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <thread>

#include "tests/integration/cluster.h"

namespace ordo {
namespace {

using testing::Cluster;
using namespace std::chrono_literals;

std::string ReadLog(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

// Polls `done` until it holds or `timeout` passes.
template <typename F>
bool WaitFor(F done, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return done();
}

std::string Key(uint64_t i, uint64_t keys) { return "key-" + std::to_string(i % keys); }
std::string Payload(uint64_t i) {
  std::string p = "message-" + std::to_string(i) + "-";
  p.resize(100, 'x');
  return p;
}

// Publishes [first, first + batches * per_batch) through the brokers in `o`.
void PublishKeyed(const ClientOptions& o, uint64_t first, int batches, int per_batch, uint64_t keys) {
  Publisher p(o);
  for (int b = 0; b < batches; ++b) {
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < per_batch; ++i) {
      const uint64_t n = first + uint64_t(b) * per_batch + i;
      batch.push_back({Key(n, keys), Payload(n)});
    }
    auto r = p.PublishBatch(batch);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r.value().front(), first + uint64_t(b) * per_batch);
  }
}

ClientOptions Only(const Cluster& c, int node) {
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(node)};
  return o;
}

uint64_t FirstRetained(const Cluster& c, int node) {
  auto s = GetStatus(c.ClientEndpoint(node), 500ms, c.Credentials());
  return s.ok() ? s.value().first_retained : 0;
}

// The compacted view every broker must agree on: key -> latest message.
void ExpectCompactedView(const Cluster& c, int node, uint64_t head, uint64_t keys) {
  auto view = ReplayCompacted(Only(c, node));
  ASSERT_TRUE(view.ok()) << view.error().message;
  ASSERT_EQ(view.value().size(), keys) << "broker " << node;
  uint64_t previous = 0;
  for (const Record& r : view.value()) {
    // The latest message of a key is among the last `keys` offsets.
    ASSERT_GE(r.offset, head - keys) << "broker " << node;
    ASSERT_TRUE(r.offset >= previous) << "broker " << node << ": not in offset order";
    previous = r.offset;
    EXPECT_EQ(r.key, Key(r.offset, keys)) << "broker " << node;
    EXPECT_EQ(r.payload, Payload(r.offset)) << "broker " << node;
  }
}

constexpr char kRetention[] =
    "[retention]\nsnapshot_interval_instances = 50\ninstances = 128\nage_seconds = 0\n";

TEST(CatchUp, ABrokerBehindTheTruncatedLogRejoinsThroughASnapshot) {
  Cluster c(3, false, kRetention);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  const int victim = leader % 3 + 1;
  const int other = 6 - leader - victim;
  c.Kill(victim);

  // 200,000 messages while it is down; 5,000 keys for the compacted view.
  constexpr uint64_t kKeys = 5000;
  constexpr uint64_t kHead = 200000;
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(leader), c.ClientEndpoint(other)};
  PublishKeyed(o, 0, 200, 1000, kKeys);
  ASSERT_TRUE(c.WaitForHead(kHead));
  // The others truncate their logs behind their snapshots.
  ASSERT_TRUE(WaitFor([&] { return FirstRetained(c, leader) > 1 && FirstRetained(c, other) > 1; },
                      60s));

  c.Start(victim);
  ASSERT_TRUE(c.WaitForHead(kHead, std::chrono::seconds(120))) << ReadLog(c.Log(victim));
  const std::string log = ReadLog(c.Log(victim));
  EXPECT_NE(log.find("installed snapshot at instance"), std::string::npos) << log;
  auto st = GetStatus(c.ClientEndpoint(victim), 1s, c.Credentials());
  ASSERT_TRUE(st.ok());
  EXPECT_GE(st.value().snapshots_installed, 1u);
  EXPECT_GT(st.value().earliest_offset, 0u);

  // The same stream everywhere, over what every broker still retains.
  uint64_t from = 0;
  for (int n = 1; n <= 3; ++n) {
    auto s = GetStatus(c.ClientEndpoint(n), 1s, c.Credentials());
    ASSERT_TRUE(s.ok());
    from = std::max(from, s.value().earliest_offset);
  }
  ASSERT_LT(from, kHead);
  for (int n = 1; n <= 3; ++n) {
    auto records = Replay(Only(c, n), from, kHead);
    ASSERT_TRUE(records.ok()) << "broker " << n << ": " << records.error().message;
    ASSERT_EQ(records.value().size(), kHead - from) << "broker " << n;
    for (const Record& r : records.value()) {
      ASSERT_EQ(r.payload, Payload(r.offset)) << "broker " << n << " offset " << r.offset;
    }
  }
  // And the same compacted view, including the part only the snapshot had.
  for (int n = 1; n <= 3; ++n) ExpectCompactedView(c, n, kHead, kKeys);

  // Below the retained range: a typed error naming the earliest offset...
  auto below = Replay(Only(c, victim), 0, 10);
  ASSERT_FALSE(below.ok());
  EXPECT_EQ(below.error().code, ErrorCode::kOffsetBelowRetained);
  EXPECT_EQ(below.error().earliest_offset, st.value().earliest_offset);
  // ...and through the CLI, exit code 4 and a message that says what to do.
  const std::string cmd = std::string(ORDO_CLI_BIN) + " replay --brokers " +
                          c.ClientEndpoint(victim) + " --credentials " + c.CredentialsFile() +
                          " --from 0 --to 10 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string out;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  const int rc = pclose(pipe);
  EXPECT_EQ(WEXITSTATUS(rc), 4) << out;
  EXPECT_NE(out.find("earliest available offset is " + std::to_string(st.value().earliest_offset)),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("--from earliest"), std::string::npos) << out;
}

// A live subscriber that stops reading while retention moves past its
// place gets a typed error naming the earliest offset, after every record it
// was sent: nothing is skipped without a word.
TEST(CatchUp, ASubscriberLeftBehindByRetentionGetsOffsetBelowRetained) {
  Cluster c(3, false, kRetention);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  // Ten instances of 100: the subscriber verifies the chain an instance at
  // a time, so its window of 100 holds one.
  PublishKeyed(c.Options(), 0, 10, 100, 10);
  ASSERT_TRUE(c.WaitForHead(1000));
  const int node = leader % 3 + 1;  // a follower serves it
  Subscriber sub(Only(c, node), StartAt::Offset(0), /*credit=*/100);
  uint64_t next = 0;
  for (; next < 10; ++next) {
    auto r = sub.Next(5s);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_TRUE(r.value().has_value());
    ASSERT_EQ(r.value()->offset, next);
    ASSERT_EQ(r.value()->payload, Payload(next));
  }
  // It stops reading; 400 more instances (retention keeps 128) and the logs
  // are truncated far past its place.
  PublishKeyed(c.Options(), 1000, 400, 100, 10);
  ASSERT_TRUE(c.WaitForHead(41000));
  ASSERT_TRUE(WaitFor(
      [&] {
        auto st = GetStatus(c.ClientEndpoint(node), 500ms, c.Credentials());
        return st.ok() && st.value().earliest_offset > 1000;
      },
      60s));
  // What it was sent still comes, in order; then the error.
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  bool refused = false;
  while (!refused && std::chrono::steady_clock::now() < deadline) {
    auto r = sub.Next(1s);
    if (!r.ok()) {
      ASSERT_EQ(r.error().code, ErrorCode::kOffsetBelowRetained) << r.error().message;
      EXPECT_GT(r.error().earliest_offset, next);
      refused = true;
    } else if (r.value().has_value()) {
      ASSERT_EQ(r.value()->offset, next) << "a record was skipped";
      ASSERT_EQ(r.value()->payload, Payload(next));
      ++next;
    }
  }
  EXPECT_TRUE(refused) << "no OffsetBelowRetained; read up to offset " << next;
  EXPECT_LT(next, 1000u);  // it never read past what it had credit for
}

TEST(CatchUp, AnInterruptedSnapshotTransferResumesFromAnotherPeer) {
  // Small chunks and a send rate limit make the transfer last long enough
  // to kill its sender in the middle.
  const std::string retention = std::string(kRetention) +
                                "snapshot_chunk_bytes = 8192\nsnapshot_send_bytes_per_sec = 200000\n";
  Cluster c(3, false, retention);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  const int victim = leader % 3 + 1;
  c.Kill(victim);

  constexpr uint64_t kKeys = 3000;
  constexpr uint64_t kHead = 20000;
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(leader), c.ClientEndpoint(6 - leader - victim)};
  PublishKeyed(o, 0, 400, 50, kKeys);  // 400 instances: several snapshot points
  ASSERT_TRUE(c.WaitForHead(kHead));
  ASSERT_TRUE(WaitFor(
      [&] { return FirstRetained(c, leader) > 1 && FirstRetained(c, 6 - leader - victim) > 1; },
      60s));
  // Both peers took their newest snapshot at the same instance: same bytes.
  std::this_thread::sleep_for(500ms);

  c.Start(victim);
  // Which peer it fetches from, then wait until bytes have arrived.
  std::smatch match;
  const std::regex fetching("fetching a snapshot from node ([0-9]+)");
  std::string log;
  ASSERT_TRUE(WaitFor([&] {
    log = ReadLog(c.Log(victim));
    return std::regex_search(log, match, fetching);
  }, 30s)) << log;
  const int sender = std::stoi(match[1].str());
  ASSERT_NE(sender, victim);
  const std::filesystem::path snapshots = std::filesystem::path(c.DataDir(victim)) / "snapshots";
  auto received = [&] {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(snapshots, ec)) {
      if (e.path().extension() == ".part" && std::filesystem::file_size(e.path(), ec) > 0) {
        return true;
      }
    }
    return false;
  };
  ASSERT_TRUE(WaitFor(received, 30s)) << ReadLog(c.Log(victim));
  c.Kill(sender);

  const int survivor = 6 - sender - victim;
  ASSERT_TRUE(WaitFor([&] {
    return ReadLog(c.Log(victim)).find("installed snapshot at instance") != std::string::npos;
  }, 90s)) << ReadLog(c.Log(victim));
  log = ReadLog(c.Log(victim));
  EXPECT_NE(log.find("resuming from node " + std::to_string(survivor)), std::string::npos) << log;
  EXPECT_EQ(log.find("starting over"), std::string::npos) << log;
  EXPECT_NE(log.find("from node " + std::to_string(survivor) + " in"), std::string::npos) << log;

  // The two that are left agree on the stream and the compacted view, and
  // they still make progress together.
  ASSERT_TRUE(c.WaitForHead(kHead, std::chrono::seconds(60)));
  ClientOptions two = c.Options();
  two.brokers = {c.ClientEndpoint(survivor), c.ClientEndpoint(victim)};
  PublishKeyed(two, kHead, 2, 50, kKeys);
  ASSERT_TRUE(c.WaitForHead(kHead + 100, std::chrono::seconds(60)));
  ExpectCompactedView(c, victim, kHead + 100, kKeys);
  ExpectCompactedView(c, survivor, kHead + 100, kKeys);
}

}  // namespace
}  // namespace ordo
