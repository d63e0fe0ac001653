// The client issue's end-to-end tests through the library, against real
// brokers: one order for everyone, and subscribers that survive broker kills.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
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

}  // namespace
}  // namespace ordo
