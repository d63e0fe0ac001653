// Security on the peer endpoint, against real brokers: what a process that
// is not a member can do by reaching a peer port (nothing), and what a
// member's key can claim (only to be itself).
#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "broker/codec.h"
#include "tests/integration/cluster.h"
#include "tests/monitoring/prometheus_support.h"
#include "tests/testing/peer_socket.h"

namespace ordo {
namespace {

using testing::Cluster;
using testing::Sample;
using namespace std::chrono_literals;

// The forged frames: the report that opened the security issue sent a
// Commit from the leader's id at a ballot far above any real one; a
// Prepare at that ballot would make the target promise it.
std::vector<std::string> Forged(uint32_t from, uint32_t to) {
  std::vector<std::string> frames;
  for (paxos::MessageType type : {paxos::MessageType::kCommit, paxos::MessageType::kPrepare}) {
    paxos::Message m;
    m.type = type;
    m.from = paxos::NodeId(from);
    m.to = paxos::NodeId(to);
    m.ballot = paxos::Ballot{1000000, paxos::NodeId(from)};
    m.instance = paxos::Instance(1);
    frames.push_back(broker::EncodePeerMessage(m));
  }
  return frames;
}

// Sends `frames` on `s` for `d` (a burst every 10 ms), sampling broker
// `status_endpoint`'s status meanwhile: false if it ever took the forged
// ballot or another leader than `leader`.
bool Flood(zmq::socket_t& s, const std::vector<std::string>& frames, std::chrono::milliseconds d,
           const std::string& status_endpoint, uint32_t leader) {
  bool unchanged = true;
  for (const auto end = std::chrono::steady_clock::now() + d;
       std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(10ms)) {
    for (int i = 0; i < 5; ++i) {
      for (const std::string& f : frames) s.send(zmq::buffer(f), zmq::send_flags::dontwait);
    }
    const auto st = GetStatus(status_endpoint, 500ms);
    if (st.ok() && (st.value().ballot_round >= 1000000 || st.value().leader_id != leader)) {
      unchanged = false;
    }
  }
  return unchanged;
}

// Waits (bounded) until metric `name`{label} on broker `n` reaches `at_least`.
double WaitForSample(Cluster& c, int n, const std::string& name, const std::string& label,
                     double at_least) {
  double v = -1;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(20ms)) {
    v = Sample(c.MetricsEndpoint(n), name, label);
    if (v >= at_least) break;
  }
  return v;
}

TEST(Security, NoProcessOutsideTheClusterCanSwayAVoteAndAMemberKeyCannotSpeakForAnother) {
  Cluster c(3, /*metrics=*/true);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publisher p(c.Options());
  ASSERT_TRUE(p.Publish("before").ok());
  const int target = leader % 3 + 1;       // a follower
  const int other = (leader + 1) % 3 + 1;  // the third node
  ASSERT_NE(target, other);
  const auto before = GetStatus(c.ClientEndpoint(target), 2s);
  ASSERT_TRUE(before.ok());
  const std::vector<std::string> forged =
      Forged(static_cast<uint32_t>(leader), static_cast<uint32_t>(target));
  const std::string status_at = c.ClientEndpoint(target);
  const uint32_t leader_id = static_cast<uint32_t>(leader);
  zmq::context_t ctx;

  // 1. Plaintext, as in the report: the CURVE handshake never completes.
  zmq::socket_t plain = testing::PeerDealer(ctx, c.PeerEndpoint(target));
  EXPECT_TRUE(Flood(plain, forged, 1000ms, status_at, leader_id));
  // 2. CURVE with a key no config lists: the ZAP handler refuses it.
  const std::string stranger = (c.dir() / "stranger.key").string();
  {
    StatusOr<CurveKeyPair> pair = GenerateKeyPair();
    ASSERT_TRUE(pair.ok());
    ASSERT_TRUE(WriteKeyFile(stranger, KeyFile{pair.value(), {}}, true).ok());
  }
  zmq::socket_t unknown =
      testing::PeerDealer(ctx, c.PeerEndpoint(target), stranger, c.KeyFile(target));
  EXPECT_TRUE(Flood(unknown, forged, 1000ms, status_at, leader_id));
  EXPECT_GE(WaitForSample(c, target, "ordo_handshakes_refused_total", "source=\"peer\"", 1), 1);
  // 3. A member's own key (node `other`, stolen or misused) claiming to be
  // the leader: let in, but every frame is dropped and counted.
  zmq::socket_t impostor =
      testing::PeerDealer(ctx, c.PeerEndpoint(target), c.KeyFile(other), c.KeyFile(target));
  EXPECT_TRUE(Flood(impostor, forged, 1000ms, status_at, leader_id))
      << "a member's key spoke for the leader";
  EXPECT_GE(WaitForSample(c, target, "ordo_frames_rejected_total", "source=\"peer\"", 1), 1);

  // Nothing changed: the same leader, no ballot near the forged one, and
  // the cluster still takes publishes.
  for (int n = 1; n <= 3; ++n) {
    const auto s = GetStatus(c.ClientEndpoint(n), 2s);
    ASSERT_TRUE(s.ok()) << "node " << n;
    EXPECT_EQ(s.value().leader_id, static_cast<uint32_t>(leader)) << "node " << n;
    EXPECT_LT(s.value().ballot_round, 1000u) << "node " << n;
  }
  EXPECT_EQ(GetStatus(c.ClientEndpoint(target), 2s).value().ballot_round,
            before.value().ballot_round);
  auto after = p.Publish("after");
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(after.value(), 1u);
}

TEST(Security, ALearnerKeyIsLetInOnlyOnceListedAndTheListIsReloadedOnSighup) {
  Cluster c(3, /*metrics=*/true);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publisher p(c.Options());
  ASSERT_TRUE(p.Publish("x").ok());
  ASSERT_TRUE(c.WaitForHead(1));
  // A learner whose key no voter knows: every handshake is refused, and it
  // learns nothing.
  const int k = c.AddLearner(7, /*metrics=*/false, /*allow=*/false);
  EXPECT_GE(WaitForSample(c, leader, "ordo_handshakes_refused_total", "source=\"peer\"", 1), 1);
  const auto early = GetStatus(c.LearnerEndpoint(k), 2s);
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early.value().chosen, 0u);
  // Listed (access.toml, then SIGHUP to the running voters): let in, with
  // no restart of anyone; it catches up and serves.
  c.AllowLearner(7);
  ClientOptions o;
  o.brokers = {c.LearnerEndpoint(k)};
  o.request_timeout = 500ms;
  Subscriber s(o, StartAt::Earliest());
  std::optional<Record> got;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       !got && std::chrono::steady_clock::now() < deadline;) {
    auto r = s.Next(500ms);
    if (r.ok() && r.value()) got = *r.value();
  }
  ASSERT_TRUE(got.has_value()) << "the learner never caught up once listed";
  EXPECT_EQ(got->payload, "x");
  for (int n = 1; n <= 3; ++n) EXPECT_TRUE(c.Running(n)) << "SIGHUP ended node " << n;
}

}  // namespace
}  // namespace ordo
