// The client issue's end-to-end tests through the library, against real
// brokers: one order for everyone, and subscribers that survive broker kills.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "tests/integration/cluster.h"

namespace ordo {
namespace {

using testing::Cluster;
using namespace std::chrono_literals;

TEST(Client, TwoPublishersThreeSubscribersOnDifferentBrokersSeeOneOrder) {
  Cluster c(3);
  ASSERT_NE(c.WaitForLeader(), 0);
  constexpr int kPerPublisher = 1000;
  std::vector<std::vector<Record>> seen(3);
  std::vector<std::thread> subscribers;
  for (int n = 1; n <= 3; ++n) {
    subscribers.emplace_back([&, n] {
      ClientOptions o = c.Options();
      o.brokers = {c.ClientEndpoint(n)};
      Subscriber s(o, StartAt::Earliest(), 64);  // small credit: flow control in play
      const auto deadline = std::chrono::steady_clock::now() + 60s;
      while (seen[n - 1].size() < 2 * kPerPublisher && std::chrono::steady_clock::now() < deadline) {
        auto r = s.Next(200ms);
        if (r.ok() && r.value()) seen[n - 1].push_back(*r.value());
      }
    });
  }
  std::vector<std::thread> publishers;
  std::atomic<int> failures{0};
  for (int p = 0; p < 2; ++p) {
    publishers.emplace_back([&, p] {
      Publisher pub(c.Options());
      for (int b = 0; b < 10; ++b) {
        std::vector<OutgoingMessage> batch;
        for (int i = 0; i < kPerPublisher / 10; ++i) {
          batch.push_back({"", "p" + std::to_string(p) + "-" + std::to_string(b * 100 + i)});
        }
        if (!pub.PublishBatch(batch).ok()) ++failures;
      }
    });
  }
  for (auto& t : publishers) t.join();
  for (auto& t : subscribers) t.join();
  ASSERT_EQ(failures, 0);
  for (int n = 0; n < 3; ++n) {
    ASSERT_EQ(seen[n].size(), 2u * kPerPublisher) << "subscriber on broker " << n + 1;
    std::map<std::string, int> last;  // per publisher, its messages stay in order
    for (size_t i = 0; i < seen[n].size(); ++i) {
      EXPECT_EQ(seen[n][i].offset, i);
      EXPECT_EQ(seen[n][i].payload, seen[0][i].payload) << "broker " << n + 1 << " offset " << i;
      const std::string& pl = seen[n][i].payload;
      const std::string who = pl.substr(0, 2);
      const int idx = std::stoi(pl.substr(3));
      if (last.count(who)) {
        EXPECT_GT(idx, last[who]);
      }
      last[who] = idx;
    }
  }
}

TEST(Client, ASubscriberSurvivesTheKillOfItsBroker) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  const int victim = leader % 3 + 1;  // a follower the subscriber reads from first
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(victim)};
  for (int n = 1; n <= 3; ++n) {
    if (n != victim) o.brokers.push_back(c.ClientEndpoint(n));
  }
  Subscriber s(o, StartAt::Earliest());
  Publisher p(c.Options());
  std::vector<Record> got;
  auto read = [&](size_t until) {
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (got.size() < until && std::chrono::steady_clock::now() < deadline) {
      auto r = s.Next(200ms);
      if (r.ok() && r.value()) got.push_back(*r.value());
    }
  };
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(p.Publish("a" + std::to_string(i)).ok());
  read(100);
  c.Kill(victim);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(p.Publish("b" + std::to_string(i)).ok());
  read(400);
  ASSERT_EQ(got.size(), 400u);
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].offset, i);  // no gap, no duplicate across the switch
    EXPECT_EQ(got[i].payload, (i < 200 ? "a" : "b") + std::to_string(i % 200));
  }
}

// Replays the whole stream and checks that the messages of one publisher
// (payloads "<prefix><i>", i < n) are there each exactly once, in order.
void ExpectEachOnceInOrder(const Cluster& c, const std::string& prefix, int n) {
  // Acknowledged means durable on a majority; every broker shows it once it
  // has learned and written it, a moment later.
  ASSERT_TRUE(c.WaitForHead(static_cast<uint64_t>(n)));
  auto all = Replay(c.Options(), 0, 0);
  ASSERT_TRUE(all.ok()) << all.error().message;
  std::vector<int> seen;
  for (const Record& r : all.value()) {
    if (r.payload.rfind(prefix, 0) == 0) seen.push_back(std::stoi(r.payload.substr(prefix.size())));
  }
  ASSERT_EQ(seen.size(), static_cast<size_t>(n)) << "lost or duplicated messages";
  for (int i = 0; i < n; ++i) ASSERT_EQ(seen[i], i) << "at position " << i;
}

TEST(Client, AnAsyncPublisherSurvivesTheKillOfTheLeaderWithNoLossAndNoDuplicate) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  constexpr int kMessages = 20000;
  AsyncPublisherOptions async;
  async.batch_messages_max = 500;  // many requests in flight when the leader dies
  AsyncPublisher publisher(c.Options(), async);
  std::atomic<int> acked{0};
  std::atomic<int> failed{0};
  std::mutex mutex;
  std::vector<uint64_t> offsets;
  for (int i = 0; i < kMessages; ++i) {
    if (i == kMessages / 2) {
      // Kill the leader with requests in flight.
      const auto deadline = std::chrono::steady_clock::now() + 60s;
      while (acked < kMessages / 4 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(1ms);
      }
      ASSERT_GE(acked, kMessages / 4) << "the first messages were never acknowledged";
      c.Kill(leader);
    }
    auto refused = publisher.Publish("a" + std::to_string(i), "", [&](const Result<uint64_t>& r) {
      if (!r.ok()) {
        ++failed;
        return;
      }
      std::lock_guard lock(mutex);
      offsets.push_back(r.value());
      ++acked;
    });
    ASSERT_FALSE(refused) << refused->message;
  }
  ASSERT_FALSE(publisher.Flush(60s));
  EXPECT_EQ(failed, 0);
  ASSERT_EQ(acked, kMessages);
  for (size_t i = 1; i < offsets.size(); ++i) ASSERT_LT(offsets[i - 1], offsets[i]);
  ExpectEachOnceInOrder(c, "a", kMessages);
}

TEST(Client, OrdoPublishFromStdinSurvivesTheKillOfTheLeaderWithNoLossAndNoDuplicate) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  constexpr int kLines = 20000;
  const auto out = std::filesystem::temp_directory_path() /
                   ("ordo-publish-" + std::to_string(std::random_device{}()));
  std::string brokers;
  for (const std::string& b : c.Brokers()) brokers += (brokers.empty() ? "" : ",") + b;
  // The credentials through the environment, as `eval "$(scripts/cluster env)"` sets them.
  const std::string command = "ORDO_CREDENTIALS=" + c.CredentialsFile() + " " +
                              std::string(ORDO_CLI_BIN) + " publish --brokers " + brokers +
                              " --request-timeout-ms 500 --timeout-ms 60000 --batch-messages 200"
                              " > " +
                              out.string();
  FILE* pipe = popen(command.c_str(), "w");
  ASSERT_NE(pipe, nullptr);
  for (int i = 0; i < kLines; ++i) {
    std::fprintf(pipe, "p%d\n", i);
    if (i == kLines / 2) {
      std::fflush(pipe);
      // Let the first half reach the leader, then kill it mid-stream.
      ASSERT_TRUE(c.WaitForHead(kLines / 4)) << "the first messages never arrived";
      c.Kill(leader);
    }
  }
  const int status = pclose(pipe);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "ordo publish reported unacknowledged messages";
  std::ifstream offsets_file(out);
  std::vector<uint64_t> offsets;
  for (uint64_t o; offsets_file >> o;) offsets.push_back(o);
  std::filesystem::remove(out);
  ASSERT_EQ(offsets.size(), static_cast<size_t>(kLines)) << "one offset per input line";
  for (size_t i = 1; i < offsets.size(); ++i) ASSERT_LT(offsets[i - 1], offsets[i]);
  ExpectEachOnceInOrder(c, "p", kLines);
}

// `ordo ARGS` with the cluster's credentials in the environment (as
// `eval "$(scripts/cluster env)"` sets them); stdout and stderr apart.
struct Ran {
  int status = -1;
  std::string out;
  std::string err;
};
Ran OrdoCli(const Cluster& c, const std::string& args, const std::string& input = "") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("ordo-cli-it-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "in", std::ios::binary) << input; }
  std::string brokers;
  for (const std::string& b : c.Brokers()) brokers += (brokers.empty() ? "" : ",") + b;
  const std::string command =
      "ORDO_BROKERS=" + brokers + " ORDO_CREDENTIALS=" + c.CredentialsFile() + " " +
      std::string(ORDO_CLI_BIN) + " " + args + " <" + (dir / "in").string() + " >" +
      (dir / "out").string() + " 2>" + (dir / "err").string();
  const int raw = std::system(command.c_str());
  auto read = [](const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  Ran ran;
  ran.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  ran.out = read(dir / "out");
  ran.err = read(dir / "err");
  std::filesystem::remove_all(dir);
  return ran;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Issue 19 through build/ordo against real brokers: health, versions,
// bytes in and out, --to past the head, a bad endpoint.
TEST(Client, OrdoHealthVersionBytesAndRangesAgainstRealBrokers) {
  Cluster c(3);
  ASSERT_NE(c.WaitForLeader(), 0);
  // health waits for nothing: a leader is there, every broker answers.
  Ran health = OrdoCli(c, "health");
  for (int tries = 0; health.status != 0 && tries < 50; ++tries) {
    std::this_thread::sleep_for(100ms);  // every broker may not know the leader yet
    health = OrdoCli(c, "health");
  }
  EXPECT_EQ(health.status, 0) << health.out << health.err;
  EXPECT_EQ(Count(health.out, " is healthy: node "), 3u) << health.out;
  EXPECT_NE(health.out.find("cluster is healthy: leader node "), std::string::npos) << health.out;
  EXPECT_NE(health.out.find("3 of 3 voting members answered (quorum 2)"), std::string::npos)
      << health.out;

  const Ran version = OrdoCli(c, "version");
  EXPECT_EQ(version.status, 0) << version.err;
  EXPECT_NE(version.out.find(std::string("client: ordo ") + ORDO_VERSION), std::string::npos);
  EXPECT_EQ(Count(version.out, std::string(": ordo-broker ") + ORDO_VERSION + " (node "), 3u)
      << version.out;

  // One binary message from a file, and back byte for byte.
  const std::string bytes("\x00\xff\n\x01 binary\r\n", 13);
  const auto file = std::filesystem::temp_directory_path() /
                    ("ordo-it-bytes-" + std::to_string(std::random_device{}()));
  { std::ofstream(file, std::ios::binary) << bytes; }
  const Ran published = OrdoCli(c, "publish --file " + file.string());
  std::filesystem::remove(file);
  ASSERT_EQ(published.status, 0) << published.err;
  ASSERT_EQ(published.out, "0\n");
  const Ran raw = OrdoCli(c, "replay --from 0 --to 1 --format raw");
  EXPECT_EQ(raw.status, 0) << raw.err;
  EXPECT_EQ(raw.out, bytes);
  const Ran json = OrdoCli(c, "replay --from 0 --to 1 --format json");
  EXPECT_NE(json.out.find("\"payload\":\"AP8KASBiaW5hcnkNCg==\",\"payload_encoding\":\"base64\""),
            std::string::npos)
      << json.out;
  EXPECT_NE(json.out.find("\"producer\":\""), std::string::npos) << json.out;

  // Keys from the input, NUL-delimited; the compacted view shows them.
  using namespace std::string_literals;
  const Ran keyed = OrdoCli(c, "publish -0 --key-delimiter :", "a:1\0b:2\0a:3\0"s);
  ASSERT_EQ(keyed.status, 0) << keyed.err;
  EXPECT_EQ(keyed.out, "1\n2\n3\n");
  ASSERT_TRUE(c.WaitForHead(4));
  const Ran compacted = OrdoCli(c, "replay --from 0 --compacted --format '%o %k %s\\n'");
  EXPECT_EQ(compacted.status, 0) << compacted.err;
  EXPECT_EQ(compacted.out, "2 b 2\n3 a 3\n");
  EXPECT_EQ(OrdoCli(c, "replay --from 0 --compacted").out, "2\t2\n3\t3\n");
  const Ran templ = OrdoCli(c, "replay --from 1 --to 3 --format '%k=%s;'");
  EXPECT_EQ(templ.out, "a=1;b=2;");

  // --to: one past the last offset; past the head, stop there and say so.
  EXPECT_EQ(OrdoCli(c, "replay --from 0 --to 0").out, "");
  const Ran past = OrdoCli(c, "replay --from 2 --to 100");
  EXPECT_EQ(past.status, 0) << past.err;
  EXPECT_EQ(past.out, "2\t2\n3\t3\n");
  EXPECT_NE(past.err.find("stopped at the head of the stream, offset 4: --to 100 is past it"),
            std::string::npos)
      << past.err;

  // A typo in a host fails at once, before any connection.
  const Ran typo = OrdoCli(c, "publish --brokers no-such-broker.invalid:7201 x");
  EXPECT_EQ(typo.status, 2) << typo.err;  // (a wait for a broker would end in 3)
  EXPECT_NE(typo.err.find("cannot resolve"), std::string::npos) << typo.err;

  // `status` with every broker up: one line each, and the quorum.
  const int leader = c.WaitForLeader();
  const Ran up = OrdoCli(c, "status");
  EXPECT_EQ(up.status, 0) << up.out << up.err;
  std::printf("%s", up.out.c_str());
  EXPECT_NE(up.out.find("quorum: yes, leader node " + std::to_string(leader)), std::string::npos)
      << up.out;

  // Two brokers of three down: no quorum, unhealthy.
  for (int n = 1; n <= 3; ++n) {
    if (n != leader % 3 + 1) c.Kill(n);
  }
  const Ran down = OrdoCli(c, "health --request-timeout-ms 300");
  EXPECT_EQ(down.status, 3) << down.out << down.err;
  EXPECT_EQ(Count(down.out, " is unhealthy: no StatusReply from "), 2u) << down.out;
  EXPECT_NE(down.out.find("cluster is unhealthy"), std::string::npos) << down.out;
  // The survivor's status says why the others are missing, that there is
  // no quorum, and shows its dead peers as not heard (no made-up lag 0).
  const Ran alone = OrdoCli(c, "status --request-timeout-ms 300");
  EXPECT_EQ(alone.status, 3) << alone.out << alone.err;
  EXPECT_EQ(Count(alone.out, "unreachable no StatusReply from "), 2u) << alone.out;
  EXPECT_NE(alone.out.find("quorum: no"), std::string::npos) << alone.out;
  // (Its peers were last heard before the kills: their lags are not shown
  // once that is over 1 s old.)
  bool stale = false;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       !stale && std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(200ms)) {
    stale = Count(OrdoCli(c, "status --request-timeout-ms 300").out, ":?/") == 2;
  }
  const Ran later = OrdoCli(c, "status --request-timeout-ms 300");
  EXPECT_TRUE(stale) << later.out;
  std::printf("%s", later.out.c_str());
}

}  // namespace
}  // namespace ordo
