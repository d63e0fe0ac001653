// The client issue's end-to-end tests through the library, against real
// brokers: one order for everyone, and subscribers that survive broker kills.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <sys/wait.h>

#include <mutex>
#include <random>

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

}  // namespace
}  // namespace ordo
