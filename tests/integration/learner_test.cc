// Non-voting learner brokers (role = "learner"), end to end with real
// ordo-broker processes on 127.0.0.1: a learner added to a running cluster
// catches up, serves subscribers and replays, redirects publishes, never
// votes; killing it never affects publishing; the voters accept nothing but
// Fetch from a node that is not a member.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "broker/codec.h"
#include "tests/integration/cluster.h"
#include "tests/testing/peer_socket.h"
#include "tests/monitoring/prometheus_support.h"

namespace ordo {
namespace {

using testing::Cluster;
using namespace std::chrono_literals;

// Reads [from, from + count) from one broker only, as a subscriber.
std::vector<Record> ReadFrom(const Cluster& c, const std::string& broker, uint64_t from,
                             uint64_t count) {
  ClientOptions o = c.Options();
  o.brokers = {broker};
  o.request_timeout = 500ms;
  Subscriber s(o, StartAt::Offset(from));
  std::vector<Record> out;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    auto r = s.Next(500ms);
    if (r.ok() && r.value()) out.push_back(*r.value());
  }
  return out;
}

// Waits (bounded) until `pred` holds for the broker's status.
template <typename Pred>
bool WaitForStatus(const Cluster& c, const std::string& broker, Pred pred,
                   std::chrono::seconds timeout = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto s = GetStatus(broker, 300ms, c.Credentials());
    if (s.ok() && pred(s.value())) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

using testing::Sample;

std::vector<std::string> PublishBatches(Publisher& p, int batches, int size, uint64_t first) {
  std::vector<std::string> sent;
  for (int b = 0; b < batches; ++b) {
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < size; ++i) {
      batch.push_back({"", "msg-" + std::to_string(first + sent.size() + batch.size())});
    }
    auto r = p.PublishBatch(batch);
    EXPECT_TRUE(r.ok()) << r.error().message;
    if (!r.ok()) return sent;
    for (int i = 0; i < size; ++i) {
      EXPECT_EQ(r.value()[i], first + sent.size());
      sent.push_back(batch[i].payload);
    }
  }
  return sent;
}

TEST(Learner, AddedToARunningClusterCatchesUpServesSubscribersAndNeverVotes) {
  Cluster c(3, /*metrics=*/true);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publisher p(c.Options());
  std::vector<std::string> sent = PublishBatches(p, 10, 500, 0);
  ASSERT_EQ(sent.size(), 5000u);

  // Added while the cluster runs; the voters' files are not touched.
  const int k = c.AddLearner(4, /*metrics=*/true);
  const std::string learner = c.LearnerEndpoint(k);
  ASSERT_TRUE(
      WaitForStatus(c, learner, [](const BrokerStatus& s) { return s.next_offset >= 5000; }))
      << "the learner did not catch up; see " << c.LearnerLog(k);

  // Same offsets and payloads as the voters, read from the learner alone.
  std::vector<Record> got = ReadFrom(c, learner, 0, 5000);
  ASSERT_EQ(got.size(), 5000u);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].offset, i);
    ASSERT_EQ(got[i].payload, sent[i]) << "offset " << i;
  }
  ClientOptions only_learner = c.Options();
  only_learner.brokers = {learner};
  auto replay = Replay(only_learner, 4990, 5000);
  ASSERT_TRUE(replay.ok()) << replay.error().message;
  ASSERT_EQ(replay.value().size(), 10u);
  EXPECT_EQ(replay.value()[0].payload, "msg-4990");

  // A live subscriber on the learner sees what is published after it started.
  Subscriber live(only_learner, StartAt::Offset(5000));
  (void)live.Next(0ms);  // subscribes
  std::vector<std::string> more = PublishBatches(p, 2, 500, 5000);
  ASSERT_EQ(more.size(), 1000u);
  std::vector<Record> live_got;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (live_got.size() < 1000 && std::chrono::steady_clock::now() < deadline) {
    auto r = live.Next(500ms);
    if (r.ok() && r.value()) live_got.push_back(*r.value());
  }
  ASSERT_EQ(live_got.size(), 1000u);
  for (size_t i = 0; i < live_got.size(); ++i) {
    ASSERT_EQ(live_got[i].offset, 5000 + i);
    ASSERT_EQ(live_got[i].payload, more[i]);
  }

  // It reports itself as a learner, knows the leader (from the voters'
  // fetch replies) and redirects a publish there.
  ASSERT_TRUE(WaitForStatus(c, learner, [&](const BrokerStatus& s) {
    return s.leader_id == static_cast<uint32_t>(leader);
  })) << "the learner never learned the leader";
  auto st = GetStatus(learner, 1000ms, c.Credentials());
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st.value().role, "learner");
  EXPECT_FALSE(st.value().voter);
  EXPECT_EQ(st.value().node_id, 4u);
  EXPECT_EQ(st.value().leader_endpoint, c.ClientEndpoint(leader));
  EXPECT_EQ(st.value().votes_while_catching_up, 0u);  // vote messages the broker sent
  Publisher via_learner(only_learner);
  auto off = via_learner.Publish("through-the-learner");
  ASSERT_TRUE(off.ok()) << off.error().message;
  EXPECT_EQ(off.value(), 6000u);

  // Never voted: no promise of its own, no election; the voters do not
  // count it as a peer. (Started on an empty store, it took the voters'
  // highest promise as its floor, as any node that may have to rejoin after
  // a lost disk does: docs/core.md, "Membership". Never above theirs.)
  double voters_promised = 0;
  for (int n = 1; n <= 3; ++n) {
    voters_promised = std::max(voters_promised, Sample(c.MetricsEndpoint(n), "ordo_promised_round"));
  }
  EXPECT_LE(Sample(c.LearnerMetricsEndpoint(k), "ordo_promised_round"), voters_promised);
  EXPECT_EQ(Sample(c.LearnerMetricsEndpoint(k), "ordo_elections_started_total"), 0);
  double to_learner = 0;
  for (int n = 1; n <= 3; ++n) {
    auto s = GetStatus(c.ClientEndpoint(n), 1000ms, c.Credentials());
    ASSERT_TRUE(s.ok());
    EXPECT_TRUE(s.value().voter);
    for (const PeerInfo& peer : s.value().peers) EXPECT_NE(peer.node_id, 4u);
    // Replies to learners are counted under one label, whatever their ids.
    to_learner += std::max(
        0.0, Sample(c.MetricsEndpoint(n), "ordo_peer_sent_bytes_total", "peer=\"learner\""));
  }
  EXPECT_GT(to_learner, 0);
}

TEST(Learner, KillingALearnerNeverAffectsPublishing) {
  Cluster c(3);
  ASSERT_NE(c.WaitForLeader(), 0);
  const int k = c.AddLearner(4);
  ASSERT_TRUE(WaitForStatus(c, c.LearnerEndpoint(k),
                            [](const BrokerStatus& s) { return s.role == "learner"; }));

  // One publisher (voters only in its list) publishes without pause while
  // the learner is killed with -9, restarted and killed again.
  std::atomic<int> batches{0};
  std::atomic<bool> stop{false}, failed{false};
  std::vector<std::string> sent;  // the publisher thread's until it is joined
  std::string failure;
  std::thread publisher([&] {
    Publisher p(c.Options());
    while (!stop.load()) {
      std::vector<OutgoingMessage> batch;
      for (int i = 0; i < 50; ++i) batch.push_back({"", "m" + std::to_string(sent.size() + i)});
      auto r = p.PublishBatch(batch);
      if (!r.ok()) {
        failure = r.error().message;
        failed = true;
        return;
      }
      for (int i = 0; i < 50; ++i) {
        if (r.value()[i] != sent.size()) {
          failure = "offset " + std::to_string(r.value()[i]) + " for message " +
                    std::to_string(sent.size());
          failed = true;
          return;
        }
        sent.push_back(batch[i].payload);
      }
      ++batches;
    }
  });
  auto wait_batches = [&](int n) {
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (batches.load() < n && !failed.load() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
    }
  };
  wait_batches(20);
  c.KillLearner(k);
  wait_batches(60);
  c.StartLearner(k);
  wait_batches(100);
  c.KillLearner(k);
  wait_batches(140);
  stop = true;
  publisher.join();
  ASSERT_TRUE(failure.empty()) << failure;
  ASSERT_GE(batches.load(), 140);

  // Restarted on its data, it catches up with everything acknowledged.
  c.StartLearner(k);
  const uint64_t total = sent.size();
  ASSERT_TRUE(WaitForStatus(c, c.LearnerEndpoint(k),
                            [&](const BrokerStatus& s) { return s.next_offset >= total; }))
      << "see " << c.LearnerLog(k);
  std::vector<Record> got = ReadFrom(c, c.LearnerEndpoint(k), 0, total);
  ASSERT_EQ(got.size(), total);
  for (size_t i = 0; i < total; ++i) ASSERT_EQ(got[i].payload, sent[i]) << "offset " << i;
}

TEST(Learner, AVoterAcceptsOnlyFetchFromANonMemberAndRepliesOnItsConnection) {
  Cluster c(3, /*metrics=*/true);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publisher p(c.Options());
  ASSERT_EQ(PublishBatches(p, 1, 10, 0).size(), 10u);
  ASSERT_TRUE(c.WaitForHead(10));
  const int voter = leader % 3 + 1;
  // The gauges are refreshed once per tick: the first sample after the
  // leader's election may still show the promise from before it.
  double promised_before = 0;
  for (const auto deadline = std::chrono::steady_clock::now() + 10s;
       promised_before <= 0 && std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(10ms)) {
    promised_before = Sample(c.MetricsEndpoint(voter), "ordo_promised_round");
  }
  ASSERT_GT(promised_before, 0);

  // A process that is no member (node 9) connects like a learner, with a
  // learner's key the voters let in.
  const std::string key_file = c.AllowLearner(9);
  zmq::context_t ctx;
  zmq::socket_t s =
      testing::PeerDealer(ctx, c.PeerEndpoint(voter), key_file, c.KeyFile(voter));
  // A vote request from it is rejected: it could sway an election.
  paxos::Message prepare;
  prepare.type = paxos::MessageType::kPrepare;
  prepare.from = paxos::NodeId(9);
  prepare.to = paxos::NodeId(static_cast<uint32_t>(voter));
  prepare.ballot = paxos::Ballot{1000000, paxos::NodeId(9)};
  prepare.instance = paxos::Instance(1);
  const std::string bad = broker::EncodePeerMessage(prepare);
  s.send(zmq::buffer(bad));
  // A fetch is answered, over this connection.
  paxos::Message fetch;
  fetch.type = paxos::MessageType::kFetch;
  fetch.from = paxos::NodeId(9);
  fetch.to = prepare.to;
  fetch.instance = paxos::Instance(1);
  fetch.instance_last = paxos::Instance(100);
  const std::string good = broker::EncodePeerMessage(fetch);
  s.send(zmq::buffer(good));
  s.set(zmq::sockopt::rcvtimeo, 10000);
  zmq::message_t reply;
  ASSERT_TRUE(s.recv(reply).has_value()) << "no FetchReply routed back to a non-member";
  paxos::Message m;
  ASSERT_TRUE(broker::DecodePeerMessage({static_cast<const uint8_t*>(reply.data()), reply.size()},
                                        64 << 20, &m)
                  .ok());
  EXPECT_EQ(m.type, paxos::MessageType::kFetchReply);
  EXPECT_EQ(m.to, paxos::NodeId(9));
  EXPECT_FALSE(m.entries.empty());  // chosen entries, from instance 1
  EXPECT_EQ(m.ballot.node, paxos::NodeId(static_cast<uint32_t>(leader)));  // who leads

  // Frames are handled in order: the prepare was rejected before the fetch
  // was answered, and promised nothing. (Metrics are refreshed every tick.)
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (Sample(c.MetricsEndpoint(voter), "ordo_frames_rejected_total", "source=\"peer\"") < 1 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GE(Sample(c.MetricsEndpoint(voter), "ordo_frames_rejected_total", "source=\"peer\""), 1);
  EXPECT_EQ(Sample(c.MetricsEndpoint(voter), "ordo_promised_round"), promised_before);
  EXPECT_EQ(c.WaitForLeader(), leader);
}

}  // namespace
}  // namespace ordo
