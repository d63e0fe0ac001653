// Security against real brokers. The peer endpoint: what a process that is
// not a member can do by reaching a peer port (nothing), and what a
// member's key can claim (only to be itself). The client endpoint: what a
// client without a listed key gets (nothing, and told so at once), and
// what a listed key may do (what its permissions say, reloaded on SIGHUP).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "broker/codec.h"
#include "schemas/client_generated.h"
#include "tests/integration/cluster.h"
#include "tests/monitoring/prometheus_support.h"
#include "tests/testing/peer_socket.h"
#include "tests/testing/shell.h"

namespace ordo {
namespace {

using testing::Cluster;
using testing::Sample;
namespace wire = ordo::wire;
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
           const Cluster& c, const std::string& status_endpoint, uint32_t leader) {
  bool unchanged = true;
  for (const auto end = std::chrono::steady_clock::now() + d;
       std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(10ms)) {
    for (int i = 0; i < 5; ++i) {
      for (const std::string& f : frames) s.send(zmq::buffer(f), zmq::send_flags::dontwait);
    }
    const auto st = GetStatus(status_endpoint, 500ms, c.Credentials());
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
  const auto before = GetStatus(c.ClientEndpoint(target), 2s, c.Credentials());
  ASSERT_TRUE(before.ok());
  const std::vector<std::string> forged =
      Forged(static_cast<uint32_t>(leader), static_cast<uint32_t>(target));
  const std::string status_at = c.ClientEndpoint(target);
  const uint32_t leader_id = static_cast<uint32_t>(leader);
  zmq::context_t ctx;

  // 1. Plaintext, as in the report: the CURVE handshake never completes.
  zmq::socket_t plain = testing::PeerDealer(ctx, c.PeerEndpoint(target));
  EXPECT_TRUE(Flood(plain, forged, 1000ms, c, status_at, leader_id));
  // 2. CURVE with a key no config lists: the ZAP handler refuses it.
  const std::string stranger = (c.dir() / "stranger.key").string();
  {
    StatusOr<CurveKeyPair> pair = GenerateKeyPair();
    ASSERT_TRUE(pair.ok());
    ASSERT_TRUE(WriteKeyFile(stranger, KeyFile{pair.value(), {}}, true).ok());
  }
  zmq::socket_t unknown =
      testing::PeerDealer(ctx, c.PeerEndpoint(target), stranger, c.KeyFile(target));
  EXPECT_TRUE(Flood(unknown, forged, 1000ms, c, status_at, leader_id));
  EXPECT_GE(WaitForSample(c, target, "ordo_handshakes_refused_total", "source=\"peer\"", 1), 1);
  // 3. A member's own key (node `other`, stolen or misused) claiming to be
  // the leader: let in, but every frame is dropped and counted.
  zmq::socket_t impostor =
      testing::PeerDealer(ctx, c.PeerEndpoint(target), c.KeyFile(other), c.KeyFile(target));
  EXPECT_TRUE(Flood(impostor, forged, 1000ms, c, status_at, leader_id))
      << "a member's key spoke for the leader";
  EXPECT_GE(WaitForSample(c, target, "ordo_frames_rejected_total", "source=\"peer\"", 1), 1);

  // Nothing changed: the same leader, no ballot near the forged one, and
  // the cluster still takes publishes.
  for (int n = 1; n <= 3; ++n) {
    const auto s = GetStatus(c.ClientEndpoint(n), 2s, c.Credentials());
    ASSERT_TRUE(s.ok()) << "node " << n;
    EXPECT_EQ(s.value().leader_id, static_cast<uint32_t>(leader)) << "node " << n;
    EXPECT_LT(s.value().ballot_round, 1000u) << "node " << n;
  }
  EXPECT_EQ(GetStatus(c.ClientEndpoint(target), 2s, c.Credentials()).value().ballot_round,
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
  const auto early = GetStatus(c.LearnerEndpoint(k), 2s, c.Credentials());
  ASSERT_TRUE(early.ok());
  EXPECT_EQ(early.value().chosen, 0u);
  // Listed (access.toml, then SIGHUP to the running voters): let in, with
  // no restart of anyone; it catches up and serves.
  c.AllowLearner(7);
  ClientOptions o = c.Options();
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

// Runs `command` through the shell: its exit status and what it printed.
using testing::RunShell;
using Ran = testing::ShellRun;

std::string Joined(const std::vector<std::string>& brokers) {
  std::string out;
  for (const std::string& b : brokers) out += (out.empty() ? "" : ",") + b;
  return out;
}

ClientCredentials NewKey(const ClientCredentials& like) {
  auto pair = GenerateKeyPair();
  EXPECT_TRUE(pair.ok());
  ClientCredentials c = like;
  c.public_key = pair.value().public_key;
  c.secret_key = pair.value().secret_key;
  return c;
}

// Every call with `o` fails with kAuthenticationFailed: not a timeout (the
// call timeout is a minute), not a refusal of the request.
void ExpectRefusedEverywhere(const ClientOptions& o, const std::string& who) {
  const auto started = std::chrono::steady_clock::now();
  Publisher p(o);
  auto published = p.Publish("from " + who);
  ASSERT_FALSE(published.ok()) << who;
  EXPECT_EQ(published.error().code, ErrorCode::kAuthenticationFailed)
      << who << ": " << published.error().message;
  std::printf("%s: publish refused after %lld ms: %s\n", who.c_str(),
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - started)
                                         .count()),
              published.error().message.c_str());
  auto replayed = Replay(o, 0, 0);
  ASSERT_FALSE(replayed.ok()) << who;
  EXPECT_EQ(replayed.error().code, ErrorCode::kAuthenticationFailed) << who;
  auto status = GetStatus(o.brokers[0], 60s, o.credentials);
  ASSERT_FALSE(status.ok()) << who;
  EXPECT_EQ(status.error().code, ErrorCode::kAuthenticationFailed) << who;
  Subscriber s(o, StartAt::Earliest());
  auto next = s.Next(60s);
  ASSERT_FALSE(next.ok()) << who << (next.value() ? ": got a record" : ": got nothing");
  EXPECT_EQ(next.error().code, ErrorCode::kAuthenticationFailed) << who;
}

TEST(Security, AClientWithoutAListedKeyGetsNothingAndIsToldSoAtOnce) {
  Cluster c(3, /*metrics=*/true);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publisher admin(c.Options());
  ASSERT_TRUE(admin.Publish("x").ok());

  ClientOptions plaintext = c.Options();
  plaintext.credentials = {};
  ExpectRefusedEverywhere(plaintext, "plaintext");

  ClientOptions unknown = c.Options();
  unknown.credentials = NewKey(c.Credentials());
  ExpectRefusedEverywhere(unknown, "an unlisted key");
  // Counted where the handshakes went (brokers[0] for most calls).
  double refused = 0;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       refused < 1 && std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(20ms)) {
    refused = 0;
    for (int n = 1; n <= 3; ++n) {
      refused += std::max(
          0.0, Sample(c.MetricsEndpoint(n), "ordo_handshakes_refused_total", "source=\"client\""));
    }
  }
  EXPECT_GE(refused, 1);

  // A listed key that pins the wrong broker keys: the brokers cannot read
  // its hello.
  ClientOptions wrong_server = c.Options();
  for (auto& [endpoint, key] : wrong_server.credentials.broker_keys) {
    key = GenerateKeyPair().value().public_key;
  }
  ExpectRefusedEverywhere(wrong_server, "wrong broker keys");

  // No broker key for an endpoint at all.
  ClientOptions unpinned = c.Options();
  unpinned.credentials.broker_keys.clear();
  Publisher q(unpinned);
  auto r = q.Publish("y");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kAuthenticationFailed) << r.error().message;

  // The CLI: exit status 5, with the reason.
  const Ran cli = RunShell(std::string(ORDO_CLI_BIN) + " publish --brokers " + Joined(c.Brokers()) +
                           " plaintext");
  EXPECT_EQ(cli.status, 5) << cli.out;
  EXPECT_NE(cli.out.find("CurveZMQ"), std::string::npos) << cli.out;

  // Nothing of theirs was stored.
  auto all = Replay(c.Options(), 0, 0);
  ASSERT_TRUE(all.ok()) << all.error().message;
  ASSERT_EQ(all.value().size(), 1u);
  EXPECT_EQ(all.value()[0].payload, "x");
}

TEST(Security, EachRequestNeedsItsPermissionAndSighupChangesThemWithoutARestart) {
  Cluster c(3, /*metrics=*/true);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  const std::string reader_file = c.AllowClient("reader", {"subscribe"});
  auto reader = LoadCredentials(reader_file);
  ASSERT_TRUE(reader.ok()) << reader.error().message;
  ClientOptions ro = c.Options();
  ro.credentials = reader.value();

  // Subscribe it may: it reads what the admin publishes.
  Publisher admin(c.Options());
  ASSERT_TRUE(admin.Publish("first").ok());
  Subscriber sub(ro, StartAt::Earliest());
  std::optional<Record> got;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       !got && std::chrono::steady_clock::now() < deadline;) {
    auto n = sub.Next(500ms);
    ASSERT_TRUE(n.ok()) << n.error().message;
    if (n.value()) got = *n.value();
  }
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->payload, "first");
  // Idle, it pings its broker (request_timeout 500 ms): with requests its
  // key may make, so nothing is refused. (Checked before anything is
  // refused on purpose: a refused request the CLI gave up on under load may
  // still be counted later.)
  auto denied_total = [&] {
    double sum = 0;
    for (int n = 1; n <= 3; ++n) {
      sum += std::max(0.0, Sample(c.MetricsEndpoint(n), "ordo_client_permission_denied_total", ""));
    }
    return sum;
  };
  for (int i = 0; i < 6; ++i) {
    auto idle = sub.Next(500ms);
    ASSERT_TRUE(idle.ok()) << idle.error().message;
    EXPECT_FALSE(idle.value().has_value());
  }
  EXPECT_EQ(denied_total(), 0) << "an idle subscriber's pings were refused";

  // No publish: a typed refusal naming the permission, and nothing stored.
  Publisher denied(ro);
  auto r = denied.Publish("not allowed");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ErrorCode::kPermissionDenied) << r.error().message;
  EXPECT_NE(r.error().message.find("\"publish\" permission"), std::string::npos)
      << r.error().message;
  auto status = GetStatus(c.ClientEndpoint(leader), 5s, ro.credentials);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().code, ErrorCode::kPermissionDenied);
  EXPECT_NE(status.error().message.find("\"admin\" permission"), std::string::npos)
      << status.error().message;
  EXPECT_GE(WaitForSample(c, leader, "ordo_client_permission_denied_total", "", 1), 1);

  // The CLI: exit status 5 for both, and the reason on stderr.
  const std::string cli = std::string(ORDO_CLI_BIN);
  const std::string flags = " --brokers " + Joined(c.Brokers()) + " --credentials " + reader_file;
  const Ran pub = RunShell(cli + " publish" + flags + " not-allowed");
  EXPECT_EQ(pub.status, 5) << pub.out;
  EXPECT_NE(pub.out.find("\"publish\" permission"), std::string::npos) << pub.out;
  const Ran st = RunShell(cli + " status" + flags);
  EXPECT_EQ(st.status, 5) << st.out;

  // SIGHUP with publish granted and subscribe taken away: the running
  // subscription ends with PermissionDenied; the same key now publishes.
  c.SetClientPermissions("reader", {"publish"});
  std::optional<Error> ended;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       !ended && std::chrono::steady_clock::now() < deadline;) {
    auto n = sub.Next(500ms);
    if (!n.ok()) ended = n.error();
  }
  ASSERT_TRUE(ended.has_value()) << "the subscription outlived its permission";
  EXPECT_EQ(ended->code, ErrorCode::kPermissionDenied) << ended->message;
  auto now_allowed = denied.Publish("allowed now");
  ASSERT_TRUE(now_allowed.ok()) << now_allowed.error().message;
  const Ran pub2 = RunShell(cli + " publish" + flags + " also-allowed");
  EXPECT_EQ(pub2.status, 0) << pub2.out;
  const Ran replay = RunShell(cli + " replay" + flags + " --from 0");
  EXPECT_EQ(replay.status, 5) << replay.out;
  for (int n = 1; n <= 3; ++n) EXPECT_TRUE(c.Running(n)) << "SIGHUP ended node " << n;
}

// Kilobytes of anonymous memory (not the LMDB map, which is file-backed) of
// process `pid`.
uint64_t RssAnonKb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoull(line.substr(8));
  }
  return 0;
}

// A client that subscribes from 0 with all the credit it may and never
// reads, with a tiny TCP receive window: what it is sent piles up in the
// broker unless the broker bounds it.
zmq::socket_t HostileSubscriber(zmq::context_t& ctx, const Cluster& c, int n, bool latest) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvbuf, 4096);
  s.set(zmq::sockopt::rcvhwm, 1);
  s.set(zmq::sockopt::curve_serverkey, c.Credentials().broker_keys.at(c.ClientEndpoint(n)));
  s.set(zmq::sockopt::curve_publickey, c.Credentials().public_key);
  s.set(zmq::sockopt::curve_secretkey, c.Credentials().secret_key);
  s.connect("tcp://" + c.ClientEndpoint(n));
  flatbuffers::FlatBufferBuilder fbb(128);
  wire::FinishClientEnvelopeBuffer(
      fbb, wire::CreateClientEnvelope(fbb, broker::kClientFormatVersion, 1, wire::Body::Subscribe,
                                      wire::CreateSubscribe(fbb, 0, latest, 100000).Union()));
  s.send(zmq::const_buffer(fbb.GetBufferPointer(), fbb.GetSize()), zmq::send_flags::dontwait);
  return s;
}

double SampleOn(const Cluster& c, int n, const std::string& name) {
  return Sample(c.MetricsEndpoint(n), name, "");
}

TEST(Security, HostileSubscribersCannotExhaustABrokersMemoryAndDeadOnesAreForgotten) {
  // 200 hostile clients, here with one key: its connection limit is
  // raised past them (200 keys would do the same at the default).
  Cluster c(3, /*metrics=*/true,
            "[limits]\nslow_consumer_timeout_ms = 1000\nclient_connections_per_key_max = 1000\n");
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  const int target = leader % 3 + 1;  // a follower serves them
  Publisher p(c.Options());
  for (int batch = 0; batch < 4; ++batch) {
    std::vector<OutgoingMessage> messages(3000, OutgoingMessage{"", std::string(1000, 'h')});
    ASSERT_TRUE(p.PublishBatch(messages).ok());
  }
  ASSERT_TRUE(c.WaitForHead(12000));
  const uint64_t before_kb = RssAnonKb(c.Pid(target));
  zmq::context_t ctx;
  std::vector<zmq::socket_t> hostile;
  for (int i = 0; i < 200; ++i) hostile.push_back(HostileSubscriber(ctx, c, target, false));
  // 200 x 12 MB asked for; the broker holds at most its bound, drops them
  // as slow consumers, and its memory stays bounded throughout.
  uint64_t peak_kb = 0;
  double slow = 0, queued_peak = 0;
  for (const auto until = std::chrono::steady_clock::now() + 10s;
       std::chrono::steady_clock::now() < until; std::this_thread::sleep_for(100ms)) {
    peak_kb = std::max(peak_kb, RssAnonKb(c.Pid(target)));
    slow = SampleOn(c, target, "ordo_slow_consumers_total");
    queued_peak = std::max(queued_peak, SampleOn(c, target, "ordo_subscribers_queued_bytes"));
  }
  std::printf(
      "broker RssAnon: %llu KiB before, %llu KiB at the peak; queued at most %.0f "
      "bytes; %.0f slow consumers\n",
      static_cast<unsigned long long>(before_kb), static_cast<unsigned long long>(peak_kb),
      queued_peak, slow);
  EXPECT_LT(peak_kb - before_kb, 256u * 1024) << "hostile subscribers grew the broker this much";
  // limits.subscribers_queued_bytes_max (64 MiB), overshot by at most one
  // frame per subscriber that was under its own bound.
  EXPECT_LE(queued_peak, 64.0 * (1 << 20) + 200.0 * (1 << 20));
  EXPECT_GE(slow, 1);
  EXPECT_TRUE(c.Running(target));

  // An honest subscriber on the same broker reads everything (the stuck
  // connections' bytes are freed as the kernel gives up on them).
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(target)};
  Subscriber honest(o, StartAt::Earliest());
  uint64_t read = 0;
  for (const auto deadline = std::chrono::steady_clock::now() + 60s;
       read < 12000 && std::chrono::steady_clock::now() < deadline;) {
    auto r = honest.Next(500ms);
    ASSERT_TRUE(r.ok()) << r.error().message;
    if (r.value()) ++read;
  }
  EXPECT_EQ(read, 12000u);
  hostile.clear();

  // Subscribers that subscribe and vanish are forgotten (the broker's
  // keep-alive finds their connections gone): the hostile ones not yet
  // dropped, then 100 that subscribe at the head and close.
  const double baseline = 1;  // `honest`
  auto wait_for_subscribers = [&](double n) {
    double left = -1;
    for (const auto deadline = std::chrono::steady_clock::now() + 30s;
         left != n && std::chrono::steady_clock::now() < deadline;
         std::this_thread::sleep_for(100ms)) {
      left = SampleOn(c, target, "ordo_subscribers");
    }
    return left;
  };
  EXPECT_EQ(wait_for_subscribers(baseline), baseline) << "subscriptions of closed connections";
  {
    std::vector<zmq::socket_t> gone;
    for (int i = 0; i < 100; ++i) gone.push_back(HostileSubscriber(ctx, c, target, true));
    double seen = 0;
    for (const auto deadline = std::chrono::steady_clock::now() + 10s;
         seen < baseline + 100 && std::chrono::steady_clock::now() < deadline;
         std::this_thread::sleep_for(50ms)) {
      seen = SampleOn(c, target, "ordo_subscribers");
    }
    EXPECT_GE(seen, baseline + 100);
  }
  EXPECT_EQ(wait_for_subscribers(baseline), baseline) << "subscriptions of closed connections";
}

// A CurveZMQ connection with the cluster's client key to broker `n` that has
// sent one request and been answered: bound to the key on the broker.
zmq::socket_t AnsweredConnection(zmq::context_t& ctx, const Cluster& c, int n) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_serverkey, c.Credentials().broker_keys.at(c.ClientEndpoint(n)));
  s.set(zmq::sockopt::curve_publickey, c.Credentials().public_key);
  s.set(zmq::sockopt::curve_secretkey, c.Credentials().secret_key);
  s.set(zmq::sockopt::rcvtimeo, 20000);
  s.connect("tcp://" + c.ClientEndpoint(n));
  flatbuffers::FlatBufferBuilder fbb(128);
  wire::FinishClientEnvelopeBuffer(
      fbb, wire::CreateClientEnvelope(fbb, broker::kClientFormatVersion, 1, wire::Body::Fetch,
                                      wire::CreateFetch(fbb, 0, 0).Union()));
  s.send(zmq::const_buffer(fbb.GetBufferPointer(), fbb.GetSize()), zmq::send_flags::none);
  zmq::message_t reply;
  EXPECT_TRUE(s.recv(reply)) << "no answer on a connection within the key's limit";
  return s;
}

TEST(Security, AClientKeyHoldsAtMostItsLimitOfConnectionsToABrokerAndClientsGoElsewhere) {
  Cluster c(3, /*metrics=*/true, "[limits]\nclient_connections_per_key_max = 3\n");
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  const int target = leader % 3 + 1;
  zmq::context_t ctx;
  std::vector<zmq::socket_t> held;
  for (int i = 0; i < 3; ++i) held.push_back(AnsweredConnection(ctx, c, target));

  // A fourth connection with the key is refused at its first request, and
  // the client says why instead of waiting out its call.
  const auto refused = GetStatus(c.ClientEndpoint(target), 5s, c.Credentials());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().code, ErrorCode::kAuthenticationFailed) << refused.error().message;
  EXPECT_NE(refused.error().message.find("too many connections"), std::string::npos)
      << refused.error().message;
  EXPECT_GE(WaitForSample(c, target, "ordo_client_connections_closed_total",
                          "reason=\"too_many_for_key\"", 1),
            1);
  const std::string cli = ORDO_CLI_BIN;
  const std::string env = "ORDO_CREDENTIALS=" + c.CredentialsFile() + " ";
  Publisher p(c.Options());  // tries `target` among the others
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(p.Publish("past the limit " + std::to_string(i)).ok());
  // The refusal must be heard, not raced: with a request timeout shorter
  // than a loaded machine's reply time, the CLI gave up on the connection
  // before its TooManyConnections answer came and reported only silence.
  Ran alone = RunShell(env + cli + " replay --brokers " + c.ClientEndpoint(target) +
                       " --from 0 --to 5 --request-timeout-ms 5000 --timeout-ms 6000");
  EXPECT_EQ(alone.status, 3) << alone.out;
  EXPECT_NE(alone.out.find("too many connections"), std::string::npos) << alone.out;
  Ran all = RunShell(env + cli + " replay --brokers " + Joined(c.Options().brokers) +
                     " --from 0 --to 5 --request-timeout-ms 500");
  EXPECT_EQ(all.status, 0) << all.out;
  EXPECT_NE(all.out.find("4\tpast the limit 4"), std::string::npos) << all.out;

  // A connection that goes frees its place.
  held.pop_back();
  bool served = false;
  for (const auto deadline = std::chrono::steady_clock::now() + 20s;
       !served && std::chrono::steady_clock::now() < deadline;) {
    served = GetStatus(c.ClientEndpoint(target), 1s, c.Credentials()).ok();
  }
  EXPECT_TRUE(served) << "the key's place was not freed by a closed connection";
  EXPECT_TRUE(c.Running(target));
}

}  // namespace
}  // namespace ordo
