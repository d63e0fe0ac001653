// The broker issue's end-to-end tests: real ordo-broker processes on
// 127.0.0.1, temporary LMDB directories, driven through the client library.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <zmq.hpp>

#include "schemas/client_generated.h"
#include "tests/integration/cluster.h"
#include "tests/testing/corrupt_lmdb.h"
#include "tests/testing/partition.h"
#include "tests/testing/peer_socket.h"
#include "tests/testing/ports.h"

namespace ordo {
namespace {

using testing::Cluster;
using namespace std::chrono_literals;

// Reads [0, count) from one broker as a subscriber.
std::vector<Record> ReadAll(const Cluster& c, const std::string& broker, uint64_t count) {
  ClientOptions o = c.Options();
  o.brokers = {broker};
  o.request_timeout = 500ms;
  Subscriber s(o, StartAt::Earliest());
  std::vector<Record> out;
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (out.size() < count && std::chrono::steady_clock::now() < deadline) {
    auto r = s.Next(500ms);
    if (r.ok() && r.value()) out.push_back(*r.value());
  }
  return out;
}

// A stored batch of 6,000 messages is more than one Deliver frame (2,048
// messages): one read of the store serves it as several frames, and with a
// small credit over several turns. Every message arrives once, in order.
TEST(Broker, ABatchLargerThanADeliverFrameArrivesWholeAndInOrder) {
  Cluster c(3);
  ASSERT_NE(c.WaitForLeader(), 0);
  Publisher p(c.Options());
  std::vector<OutgoingMessage> batch;
  for (int i = 0; i < 6000; ++i) batch.push_back({"", "big-" + std::to_string(i)});
  auto r = p.PublishBatch(batch);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(c.WaitForHead(6000));
  for (uint32_t credit : {uint32_t{100000}, uint32_t{1000}}) {
    ClientOptions o = c.Options();
    o.brokers = {c.ClientEndpoint(1)};
    o.request_timeout = 500ms;
    Subscriber s(o, StartAt::Earliest(), credit);
    uint64_t next = 0;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (next < 6000 && std::chrono::steady_clock::now() < deadline) {
      auto m = s.Next(500ms);
      ASSERT_TRUE(m.ok()) << m.error().message;
      if (!m.value()) continue;
      ASSERT_EQ(m.value()->offset, next) << "credit " << credit;
      ASSERT_EQ(m.value()->payload, "big-" + std::to_string(next)) << "credit " << credit;
      ++next;
    }
    EXPECT_EQ(next, 6000u) << "credit " << credit;
  }
}

TEST(Broker, TenThousandMessagesThroughAFollowerArriveInOneOrderEverywhere) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  const int follower = leader % 3 + 1;
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(follower)};  // the redirect must find the leader
  Publisher p(o);
  std::vector<std::string> sent;
  for (int b = 0; b < 20; ++b) {
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < 500; ++i) {
      sent.push_back("msg-" + std::to_string(b * 500 + i));
      batch.push_back({"", sent.back()});
    }
    auto r = p.PublishBatch(batch);
    ASSERT_TRUE(r.ok()) << r.error().message;
    for (int i = 0; i < 500; ++i) ASSERT_EQ(r.value()[i], uint64_t(b * 500 + i));
  }
  ASSERT_TRUE(c.WaitForHead(10000));
  for (int n = 1; n <= 3; ++n) {
    const std::vector<Record> got = ReadAll(c, c.ClientEndpoint(n), 10000);
    ASSERT_EQ(got.size(), 10000u) << "broker " << n;
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_EQ(got[i].offset, i);
      ASSERT_EQ(got[i].payload, sent[i]) << "broker " << n << " offset " << i;
    }
  }
  auto replay = Replay(c.Options(), 9990, 10000);
  ASSERT_TRUE(replay.ok());
  ASSERT_EQ(replay.value().size(), 10u);
  EXPECT_EQ(replay.value()[0].payload, "msg-9990");
}

TEST(Broker, KillingTheLeaderLosesAndDuplicatesNothingAcknowledged) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  std::map<uint64_t, std::string> acked;  // offset -> payload
  std::atomic<int> batches{0};
  std::atomic<bool> failed{false};
  std::thread publisher([&] {
    Publisher p(c.Options());
    for (int b = 0; b < 60; ++b) {
      std::vector<OutgoingMessage> batch;
      for (int i = 0; i < 50; ++i) batch.push_back({"", "p" + std::to_string(b * 50 + i)});
      auto r = p.PublishBatch(batch);
      if (!r.ok()) {
        failed = true;
        return;
      }
      for (int i = 0; i < 50; ++i) acked[r.value()[i]] = batch[i].payload;
      ++batches;
    }
  });
  while (batches < 10 && !failed) std::this_thread::sleep_for(5ms);
  c.Kill(leader);  // kill -9 mid-stream
  publisher.join();
  ASSERT_FALSE(failed) << "the publisher gave up across the leader change";
  ASSERT_EQ(acked.size(), 3000u);
  const int new_leader = c.WaitForLeader();
  ASSERT_NE(new_leader, 0);
  ASSERT_NE(new_leader, leader);
  ASSERT_TRUE(c.WaitForHead(3000));
  std::vector<std::vector<Record>> streams;
  for (int n = 1; n <= 3; ++n) {
    if (n != leader) streams.push_back(ReadAll(c, c.ClientEndpoint(n), 3000));
  }
  // Restarted on its data, the old leader catches up and serves the same stream.
  c.Start(leader);
  ASSERT_TRUE(c.WaitForHead(3000));
  streams.push_back(ReadAll(c, c.ClientEndpoint(leader), 3000));
  for (const auto& s : streams) {
    ASSERT_EQ(s.size(), 3000u);
    std::set<std::string> seen;
    for (const Record& r : s) {
      EXPECT_TRUE(seen.insert(r.payload).second) << "duplicate " << r.payload;
      EXPECT_EQ(acked.at(r.offset), r.payload) << "offset " << r.offset;
    }
    for (size_t i = 0; i < s.size(); ++i) EXPECT_EQ(s[i].payload, streams[0][i].payload);
  }
}

// Every broker killed at once, with what they acknowledged still only in
// their journals (LMDB commits them every few seconds): restarted, each
// replays its journal and serves every acknowledged message, once, in order.
TEST(Broker, KillingEveryBrokerAtOnceLosesNothingAcknowledged) {
  Cluster c(3);
  ASSERT_NE(c.WaitForLeader(), 0);
  std::map<uint64_t, std::string> acked;  // offset -> payload
  {
    Publisher p(c.Options());
    for (int b = 0; b < 40; ++b) {
      std::vector<OutgoingMessage> batch;
      // Small batches: each is one journal record, as at low load.
      for (int i = 0; i < 5; ++i) batch.push_back({"", "j" + std::to_string(b * 5 + i)});
      auto r = p.PublishBatch(batch);
      ASSERT_TRUE(r.ok()) << r.error().message;
      for (int i = 0; i < 5; ++i) acked[r.value()[i]] = batch[i].payload;
    }
  }
  for (int n = 1; n <= 3; ++n) c.Kill(n);
  for (int n = 1; n <= 3; ++n) c.Start(n);
  ASSERT_NE(c.WaitForLeader(), 0);
  int replayed = 0;
  for (int n = 1; n <= 3; ++n) {
    std::ifstream log(c.Log(n));
    std::string line;
    while (std::getline(log, line)) {
      if (line.find("journal records replayed") != std::string::npos &&
          line.find("(0 journal records replayed)") == std::string::npos) {
        ++replayed;
        break;
      }
    }
  }
  EXPECT_GE(replayed, 1) << "the test meant to kill brokers whose writes were only journaled";
  ASSERT_EQ(acked.size(), 200u);
  ASSERT_TRUE(c.WaitForHead(200));
  for (int n = 1; n <= 3; ++n) {
    const std::vector<Record> s = ReadAll(c, c.ClientEndpoint(n), 200);
    ASSERT_EQ(s.size(), 200u) << "broker " << n;
    for (size_t i = 0; i < s.size(); ++i) {
      EXPECT_EQ(s[i].offset, i);
      EXPECT_EQ(acked.at(s[i].offset), s[i].payload) << "broker " << n << " offset " << i;
    }
  }
}

using testing::FlipBitOnDisk;

// A leader frozen (SIGSTOP) while the others elect a successor steps down
// when it runs again, and its log says so: one line per role change, a
// step-down included (scripts/cluster names the leader from these lines).
TEST(Broker, AFrozenLeaderStepsDownWhenItRunsAgainAndLogsIt) {
  Cluster c(3);
  const int old = c.WaitForLeader();
  ASSERT_NE(old, 0);
  ASSERT_EQ(::kill(c.Pid(old), SIGSTOP), 0);
  int successor = 0;
  for (const auto deadline = std::chrono::steady_clock::now() + 60s;
       (successor == 0 || successor == old) && std::chrono::steady_clock::now() < deadline;) {
    successor = c.WaitForLeader(2s);
  }
  ASSERT_EQ(::kill(c.Pid(old), SIGCONT), 0);
  ASSERT_NE(successor, 0);
  ASSERT_NE(successor, old);
  std::string line;
  for (const auto deadline = std::chrono::steady_clock::now() + 60s;
       line.empty() && std::chrono::steady_clock::now() < deadline;
       std::this_thread::sleep_for(50ms)) {
    std::ifstream log(c.Log(old));
    for (std::string l; std::getline(log, l);) {
      if (l.find("lost leadership") != std::string::npos) line = l;
    }
  }
  EXPECT_FALSE(line.empty()) << "the old leader " << old << " never logged its step-down";
  std::printf("old leader %d: %s\n", old, line.c_str());
}

// A leader cut off from its peers by the network (nftables drops every
// packet of its peer address; its client port stays reachable): the other
// two elect a successor and take publishes; once the network heals, the old
// leader steps down (and logs it), catches up, and serves every message in
// the one order.
TEST(Broker, ALeaderCutOffByTheNetworkStepsDownAndCatchesUpOnceItHeals) {
  testing::LocalClusterOptions options;
  options.nodes = 3;
  options.peer_host_prefix = "127.78." + std::to_string(20 + getpid() % 200) + ".";
  Cluster c(options);
  const int old = c.WaitForLeader();
  ASSERT_NE(old, 0);
  Publisher p(c.Options());
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(p.Publish("before-" + std::to_string(i)).ok());
  std::string error;
  std::unique_ptr<testing::Partition> cut =
      testing::Partition::Cut(options.peer_host_prefix + std::to_string(old), &error);
  ASSERT_NE(cut, nullptr) << error;
  for (int i = 0; i < 200; ++i) {
    auto r = p.Publish("during-" + std::to_string(i));
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
  const auto healed_at = std::chrono::steady_clock::now();
  cut->Heal();
  const std::vector<Record> got = ReadAll(c, c.ClientEndpoint(old), 250);  // (waits up to 60 s)
  std::printf("old leader %d caught up %lld ms after the heal\n", old,
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - healed_at)
                                         .count()));
  ASSERT_EQ(got.size(), 250u);
  for (int i = 0; i < 250; ++i) {
    EXPECT_EQ(got[static_cast<size_t>(i)].payload,
              i < 50 ? "before-" + std::to_string(i) : "during-" + std::to_string(i - 50));
  }
  bool said = false;
  for (const auto deadline = std::chrono::steady_clock::now() + 30s;
       !said && std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(50ms)) {
    std::ifstream log(c.Log(old));
    const std::string text((std::istreambuf_iterator<char>(log)), {});
    said = text.find("lost leadership") != std::string::npos;
  }
  EXPECT_TRUE(said) << "the old leader never logged its step-down";
}

TEST(Broker, ACorruptRecordIsDetectedNeverServedAndRepairedFromPeers) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publisher p(c.Options());
  std::vector<OutgoingMessage> batch;
  for (int i = 0; i < 100; ++i) batch.push_back({"", "rec-" + std::to_string(i)});
  ASSERT_TRUE(p.PublishBatch(batch).ok());
  ASSERT_TRUE(c.WaitForHead(100));
  const int victim = leader % 3 + 1;
  c.Kill(victim, SIGTERM);
  FlipBitOnDisk(c.DataDir(victim), 2);  // instance 1 is the barrier, 2 holds messages
  c.Start(victim);
  // Detected: counted in its status, and said in its log.
  uint64_t corruptions = 0;
  for (int i = 0; i < 100 && corruptions == 0; ++i) {
    auto s = GetStatus(c.ClientEndpoint(victim), 300ms, c.Credentials());
    if (s.ok()) corruptions = s.value().storage_corruptions;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_GE(corruptions, 1u);
  // Repaired from peers: it serves the original stream, never the bad bytes.
  const std::vector<Record> got = ReadAll(c, c.ClientEndpoint(victim), 100);
  ASSERT_EQ(got.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(got[i].payload, "rec-" + std::to_string(i));
  std::ifstream log(c.Log(victim));
  const std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("damaged record"), std::string::npos) << text;
}

// A raw DEALER on broker `n`'s client endpoint, with the admin client's key.
zmq::socket_t DealerTo(zmq::context_t& ctx, const Cluster& c, int n) {
  return testing::PeerDealer(ctx, c.ClientEndpoint(n), c.CredentialsFile(), c.KeyFile(n));
}

TEST(Broker, GarbageTruncatedAndOversizedFramesChangeNothing) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publisher p(c.Options());
  ASSERT_TRUE(p.Publish("before").ok());
  zmq::context_t ctx;
  for (int n = 1; n <= 3; ++n) {
    for (const std::string& ep : {c.ClientEndpoint(n), c.PeerEndpoint(n)}) {
      // As an authenticated sender, so the garbage reaches the decoder: on
      // the peer endpoint another member (its key), on the client endpoint
      // the admin client. Every send is dontwait: a DEALER with no
      // connection would block.
      zmq::socket_t s = ep == c.PeerEndpoint(n)
                            ? testing::PeerDealer(ctx, ep, c.KeyFile(n % 3 + 1), c.KeyFile(n))
                            : DealerTo(ctx, c, n);
      std::mt19937 rng(n);
      for (int i = 0; i < 200; ++i) {
        std::string junk(rng() % 300, '\0');
        for (char& ch : junk) ch = static_cast<char>(rng());
        s.send(zmq::buffer(junk), zmq::send_flags::dontwait);
      }
      s.send(zmq::str_buffer("ORDC"), zmq::send_flags::dontwait);        // truncated
      std::string big(17 << 20, 'x');                                      // over 16 MiB
      s.send(zmq::buffer(big), zmq::send_flags::dontwait);
      s.send(zmq::str_buffer("a"), zmq::send_flags::sndmore | zmq::send_flags::dontwait);  // two frames
      s.send(zmq::str_buffer("b"), zmq::send_flags::dontwait);
      if (ep == c.ClientEndpoint(n)) {
        // Someone to answer: a typed error comes back.
        zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}};
        zmq::poll(items, 1, 2000ms);
        EXPECT_TRUE(items[0].revents & ZMQ_POLLIN) << "no error reply from " << ep;
      }
    }
  }
  // Every broker still serves; nothing was lost or added.
  auto after = p.Publish("after");
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(after.value(), 1u);
  ASSERT_TRUE(c.WaitForHead(2));
  uint64_t rejected = 0;
  for (int n = 1; n <= 3; ++n) {
    const auto got = ReadAll(c, c.ClientEndpoint(n), 2);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].payload, "before");
    EXPECT_EQ(got[1].payload, "after");
    auto s = GetStatus(c.ClientEndpoint(n), 500ms, c.Credentials());
    ASSERT_TRUE(s.ok());
    rejected += s.value().frames_rejected;
  }
  EXPECT_GT(rejected, 0u);
}


// One raw Publish request of (producer, sequences), as a client would send it.
// A raw client connection, for frames the client library would not send.

// The next frame on `s` (copied, so FlatBuffers reads it aligned); empty
// after 10 s without one.
std::vector<uint8_t> NextFrame(zmq::socket_t& s) {
  zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, std::chrono::milliseconds(10000));
  zmq::message_t m;
  if (!(items[0].revents & ZMQ_POLLIN) || !s.recv(m)) return {};
  return std::vector<uint8_t>(static_cast<const uint8_t*>(m.data()),
                              static_cast<const uint8_t*>(m.data()) + m.size());
}

std::string RawPublish(uint64_t request_id, uint64_t producer, std::vector<uint64_t> sequences) {
  flatbuffers::FlatBufferBuilder b;
  std::vector<flatbuffers::Offset<wire::ClientMessage>> msgs;
  for (uint64_t seq : sequences) {
    const std::string payload = "m" + std::to_string(seq);
    msgs.push_back(wire::CreateClientMessage(
        b, producer, seq, 0,
        b.CreateVector(reinterpret_cast<const uint8_t*>(payload.data()), payload.size())));
  }
  const auto body = wire::CreatePublish(b, b.CreateVector(msgs)).Union();
  wire::FinishClientEnvelopeBuffer(
      b, wire::CreateClientEnvelope(b, 1, request_id, wire::Body::Publish, body));
  return std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
}

// After a refused publish on an empty stream: `producer`'s sequences 1 and 2
// are stored at offsets 0 and 1, so the refusal stored nothing.
void ExpectStoredFromOffsetZero(zmq::socket_t& s, uint64_t request_id, uint64_t producer) {
  s.send(zmq::buffer(RawPublish(request_id, producer, {1, 2})), zmq::send_flags::none);
  const std::vector<uint8_t> r = NextFrame(s);
  ASSERT_FALSE(r.empty()) << "no reply";
  const auto* env = wire::GetClientEnvelope(r.data());
  ASSERT_EQ(env->body_type(), wire::Body::PublishReply);
  const auto* results = env->body_as_PublishReply()->results();
  ASSERT_EQ(results->size(), 2u);
  EXPECT_EQ(results->Get(0)->error(), wire::ErrorCode::None);
  EXPECT_EQ(results->Get(0)->offset(), 0u) << "the refused publish stored something";
  EXPECT_EQ(results->Get(1)->offset(), 1u);
}

// The leader answers every message of every request, also when a client
// resends a request that is still waiting (both copies get the same
// offsets) and when one request holds several producers and a gap.
TEST(Broker, EveryWaitingPublishIsAnsweredOnceWithItsOffsets) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  zmq::context_t ctx;
  zmq::socket_t s = DealerTo(ctx, c, leader);
  std::vector<uint64_t> first(50), second(10);
  for (uint64_t i = 0; i < 50; ++i) first[i] = i + 1;
  for (uint64_t i = 0; i < 10; ++i) second[i] = i + 51;
  const uint64_t kA = 0xA11CE, kB = 0xB0B;
  s.send(zmq::buffer(RawPublish(1, kA, first)), zmq::send_flags::none);
  s.send(zmq::buffer(RawPublish(2, kA, first)), zmq::send_flags::none);  // a resend
  s.send(zmq::buffer(RawPublish(3, kA, second)), zmq::send_flags::none);
  // Two producers interleaved in one request, and one out of sequence.
  flatbuffers::FlatBufferBuilder mixed;
  {
    std::vector<flatbuffers::Offset<wire::ClientMessage>> msgs;
    for (uint64_t i = 1; i <= 6; ++i) {
      const uint64_t producer = i % 2 ? kB : 0xC0FFEE;
      msgs.push_back(wire::CreateClientMessage(mixed, producer, (i + 1) / 2, 0,
                                               mixed.CreateVector<uint8_t>({1, 2, 3})));
    }
    msgs.push_back(wire::CreateClientMessage(mixed, kB, 10, 0, mixed.CreateVector<uint8_t>({4})));
    const auto body = wire::CreatePublish(mixed, mixed.CreateVector(msgs)).Union();
    wire::FinishClientEnvelopeBuffer(
        mixed, wire::CreateClientEnvelope(mixed, 1, 4, wire::Body::Publish, body));
  }
  s.send(zmq::buffer(mixed.GetBufferPointer(), mixed.GetSize()), zmq::send_flags::none);

  std::map<uint64_t, std::vector<std::tuple<uint64_t, uint64_t, wire::ErrorCode>>> replies;
  while (replies.size() < 4) {
    const std::vector<uint8_t> aligned = NextFrame(s);
    ASSERT_FALSE(aligned.empty()) << "only " << replies.size() << " replies";
    const auto* env = wire::GetClientEnvelope(aligned.data());
    ASSERT_EQ(env->body_type(), wire::Body::PublishReply) << "request " << env->request_id();
    ASSERT_EQ(replies.count(env->request_id()), 0u) << "answered twice";
    auto& out = replies[env->request_id()];
    for (const auto* r : *env->body_as_PublishReply()->results()) {
      out.emplace_back(r->sequence(), r->offset(), r->error());
    }
  }
  ASSERT_EQ(replies[1].size(), 50u);
  ASSERT_EQ(replies[2].size(), 50u);
  ASSERT_EQ(replies[3].size(), 10u);
  for (size_t i = 0; i < 50; ++i) {
    EXPECT_EQ(std::get<2>(replies[1][i]), wire::ErrorCode::None) << i;
    EXPECT_EQ(std::get<2>(replies[2][i]), wire::ErrorCode::None) << i;
    EXPECT_EQ(std::get<1>(replies[1][i]), std::get<1>(replies[2][i])) << "sequence " << i + 1;
  }
  EXPECT_EQ(std::get<1>(replies[3][0]), std::get<1>(replies[1][49]) + 1);
  ASSERT_EQ(replies[4].size(), 7u);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(std::get<2>(replies[4][i]), wire::ErrorCode::None) << i;
  EXPECT_EQ(std::get<2>(replies[4][6]), wire::ErrorCode::OutOfSequence);
}

// FlatBuffers lets many messages point at one payload: a small frame could
// then stand for gigabytes of messages. The leader refuses it as a whole
// before copying anything, stores nothing, and keeps serving.
TEST(Broker, APublishWhoseMessagesShareOnePayloadIsRefused) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  zmq::context_t ctx;
  zmq::socket_t s = DealerTo(ctx, c, leader);
  flatbuffers::FlatBufferBuilder shared;
  {
    const auto payload = shared.CreateVector(std::vector<uint8_t>(64 * 1024, 'x'));
    std::vector<flatbuffers::Offset<wire::ClientMessage>> msgs;
    for (uint64_t i = 1; i <= 2000; ++i) {
      msgs.push_back(wire::CreateClientMessage(shared, 0xD00D, i, 0, payload));
    }
    const auto body = wire::CreatePublish(shared, shared.CreateVector(msgs)).Union();
    wire::FinishClientEnvelopeBuffer(
        shared, wire::CreateClientEnvelope(shared, 1, 7, wire::Body::Publish, body));
  }
  ASSERT_LT(shared.GetSize(), 200u * 1024);  // stands for 125 MiB of payloads
  s.send(zmq::buffer(shared.GetBufferPointer(), shared.GetSize()), zmq::send_flags::none);
  std::vector<uint8_t> r = NextFrame(s);
  ASSERT_FALSE(r.empty()) << "no reply";
  const auto* env = wire::GetClientEnvelope(r.data());
  ASSERT_EQ(env->body_type(), wire::Body::Error);
  EXPECT_EQ(env->request_id(), 7u);
  EXPECT_EQ(env->body_as_Error()->code(), wire::ErrorCode::BadRequest);
  EXPECT_NE(env->body_as_Error()->message()->str().find("share"), std::string::npos)
      << env->body_as_Error()->message()->str();
  // Nothing was stored, and the same producer's honest publish is served.
  ExpectStoredFromOffsetZero(s, 8, 0xD00D);
}

// Found by tests/fuzz (client_envelope): the FlatBuffers verifier accepts a
// union whose type is set and whose value is absent, and a 28-byte frame of
// that shape (a Publish without its body) crashed the broker. Each such
// request is refused with BadRequest, answered under its request_id, and
// the leader keeps serving.
TEST(Broker, ARequestWithoutItsBodyIsRefused) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  zmq::context_t ctx;
  zmq::socket_t s = DealerTo(ctx, c, leader);
  uint64_t request_id = 20;
  for (const wire::Body body :
       {wire::Body::Publish, wire::Body::Subscribe, wire::Body::Credit, wire::Body::Fetch}) {
    flatbuffers::FlatBufferBuilder b;
    wire::FinishClientEnvelopeBuffer(b, wire::CreateClientEnvelope(b, 1, ++request_id, body, 0));
    s.send(zmq::buffer(b.GetBufferPointer(), b.GetSize()), zmq::send_flags::none);
    const std::vector<uint8_t> r = NextFrame(s);
    ASSERT_FALSE(r.empty()) << "no reply to a " << wire::EnumNameBody(body) << " without a body";
    const auto* env = wire::GetClientEnvelope(r.data());
    ASSERT_EQ(env->body_type(), wire::Body::Error);
    EXPECT_EQ(env->request_id(), request_id);
    EXPECT_EQ(env->body_as_Error()->code(), wire::ErrorCode::BadRequest);
  }
  s.send(zmq::buffer(RawPublish(30, 0xB0D7, {1})), zmq::send_flags::none);
  const std::vector<uint8_t> r = NextFrame(s);
  ASSERT_FALSE(r.empty()) << "no reply to a publish";
  const auto* env = wire::GetClientEnvelope(r.data());
  ASSERT_EQ(env->body_type(), wire::Body::PublishReply);
  EXPECT_EQ(env->body_as_PublishReply()->results()->Get(0)->error(), wire::ErrorCode::None);
}

// A frame the broker cannot decode is answered under its request_id
// whenever the envelope's first bytes name one (a client waits for that
// id and would otherwise resend it forever); only a frame that is no
// envelope at all is answered under request 0.
TEST(Broker, RefusedFramesAreAnsweredUnderTheirRequestId) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  zmq::context_t ctx;
  zmq::socket_t s = DealerTo(ctx, c, leader);
  const auto expect_error = [&](uint64_t request_id, wire::ErrorCode code, const char* what) {
    const std::vector<uint8_t> r = NextFrame(s);
    ASSERT_FALSE(r.empty()) << "no reply to " << what;
    const auto* env = wire::GetClientEnvelope(r.data());
    ASSERT_EQ(env->body_type(), wire::Body::Error) << what;
    EXPECT_EQ(env->request_id(), request_id) << what;
    EXPECT_EQ(env->body_as_Error()->code(), code)
        << what << ": " << env->body_as_Error()->message()->str();
  };
  // Over limits.frame_bytes_max (16 MiB): TooLarge, under its id.
  {
    flatbuffers::FlatBufferBuilder b(18 << 20);
    const std::vector<uint8_t> payload(17 << 20, 'x');
    std::vector<flatbuffers::Offset<wire::ClientMessage>> msgs{
        wire::CreateClientMessage(b, 0xB16, 1, 0, b.CreateVector(payload))};
    const auto body = wire::CreatePublish(b, b.CreateVector(msgs)).Union();
    wire::FinishClientEnvelopeBuffer(
        b, wire::CreateClientEnvelope(b, 1, 51, wire::Body::Publish, body));
    s.send(zmq::buffer(b.GetBufferPointer(), b.GetSize()), zmq::send_flags::none);
    expect_error(51, wire::ErrorCode::TooLarge, "a frame over the limit");
  }
  // A version this broker does not read.
  {
    flatbuffers::FlatBufferBuilder b;
    wire::FinishClientEnvelopeBuffer(
        b, wire::CreateClientEnvelope(b, 2, 52, wire::Body::StatusRequest, 0));
    s.send(zmq::buffer(b.GetBufferPointer(), b.GetSize()), zmq::send_flags::none);
    expect_error(52, wire::ErrorCode::BadRequest, "an unknown version");
  }
  // Failing the verifier: a publish cut short.
  const std::string publish = RawPublish(53, 0xB16, {1});
  s.send(zmq::buffer(publish.substr(0, publish.size() - 8)), zmq::send_flags::none);
  expect_error(53, wire::ErrorCode::BadRequest, "a truncated frame");
  // Two frames: the first one's id.
  const std::string status = [] {
    flatbuffers::FlatBufferBuilder b;
    wire::FinishClientEnvelopeBuffer(
        b, wire::CreateClientEnvelope(b, 1, 54, wire::Body::StatusRequest, 0));
    return std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
  }();
  s.send(zmq::buffer(status), zmq::send_flags::sndmore);
  s.send(zmq::str_buffer("more"), zmq::send_flags::none);
  expect_error(54, wire::ErrorCode::BadRequest, "two frames");
  // No envelope at all: request 0.
  s.send(zmq::str_buffer("not an envelope"), zmq::send_flags::none);
  expect_error(0, wire::ErrorCode::BadRequest, "garbage");
  // None of them stored anything.
  s.send(zmq::buffer(RawPublish(55, 0xB16, {1})), zmq::send_flags::none);
  const std::vector<uint8_t> r = NextFrame(s);
  ASSERT_FALSE(r.empty());
  const auto* env = wire::GetClientEnvelope(r.data());
  ASSERT_EQ(env->body_type(), wire::Body::PublishReply);
  EXPECT_EQ(env->request_id(), 55u);
  EXPECT_EQ(env->body_as_PublishReply()->results()->Get(0)->offset(), 0u);
}

// Two different messages with one (producer, sequence) in one request would
// both be acknowledged at one offset and the second dropped: the request is
// refused as a whole (BadRequest) and stores nothing.
TEST(Broker, APublishCarryingASequenceTwiceIsRefusedAndStoresNothing) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  zmq::context_t ctx;
  zmq::socket_t s = DealerTo(ctx, c, leader);
  s.send(zmq::buffer(RawPublish(61, 0xD0B, {1, 2, 1})), zmq::send_flags::none);
  std::vector<uint8_t> r = NextFrame(s);
  ASSERT_FALSE(r.empty()) << "no reply";
  const auto* env = wire::GetClientEnvelope(r.data());
  ASSERT_EQ(env->body_type(), wire::Body::Error);
  EXPECT_EQ(env->request_id(), 61u);
  EXPECT_EQ(env->body_as_Error()->code(), wire::ErrorCode::BadRequest);
  EXPECT_NE(env->body_as_Error()->message()->str().find("messages[0] and messages[2]"),
            std::string::npos)
      << env->body_as_Error()->message()->str();
  ExpectStoredFromOffsetZero(s, 62, 0xD0B);
}

// What docs/protocol.md says of reads at and past the head: a Fetch past
// the head is an empty Deliver, not an error; from_latest wins over
// from_earliest and from_offset; a Subscribe past the head waits for the
// stream to get there; a Credit has no reply; a new Subscribe replaces the
// old one, whose frames carry the old id.
TEST(Broker, ReadsAtAndPastTheHeadBehaveAsTheProtocolSays) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publisher p(c.Options());
  for (const char* m : {"a", "b", "c"}) ASSERT_TRUE(p.Publish(m).ok());
  ASSERT_TRUE(c.WaitForHead(3));
  zmq::context_t ctx;
  const int follower = leader % 3 + 1;
  zmq::socket_t s = DealerTo(ctx, c, follower);
  const auto send = [&](uint64_t request_id, wire::Body type, auto make_body) {
    flatbuffers::FlatBufferBuilder b;
    const auto body = make_body(b);
    wire::FinishClientEnvelopeBuffer(b, wire::CreateClientEnvelope(b, 1, request_id, type, body));
    s.send(zmq::buffer(b.GetBufferPointer(), b.GetSize()), zmq::send_flags::none);
  };
  struct Got {
    uint64_t request_id = 0;
    wire::Body type = wire::Body::NONE;
    uint64_t head = 0;
    std::vector<uint64_t> offsets;
  };
  const auto next = [&]() {
    Got g;
    const std::vector<uint8_t> r = NextFrame(s);
    if (r.empty()) return g;
    const auto* env = wire::GetClientEnvelope(r.data());
    g.request_id = env->request_id();
    g.type = env->body_type();
    if (const auto* d = env->body_as_Deliver()) {
      g.head = d->head_offset();
      if (d->messages()) {
        for (const auto* m : *d->messages()) g.offsets.push_back(m->offset());
      }
    }
    return g;
  };
  // Fetch past the head, and with max_messages 0: empty, with the head.
  send(70, wire::Body::Fetch, [](auto& b) { return wire::CreateFetch(b, 10, 5).Union(); });
  Got g = next();
  EXPECT_EQ(g.request_id, 70u);
  ASSERT_EQ(g.type, wire::Body::Deliver);
  EXPECT_TRUE(g.offsets.empty());
  EXPECT_EQ(g.head, 3u);
  send(71, wire::Body::Fetch, [](auto& b) { return wire::CreateFetch(b, 1, 0).Union(); });
  g = next();
  EXPECT_EQ(g.request_id, 71u);
  ASSERT_EQ(g.type, wire::Body::Deliver);
  EXPECT_TRUE(g.offsets.empty());
  EXPECT_EQ(g.head, 3u);
  // Every start flag: from_latest wins (an empty Deliver at the head, then
  // the next message).
  send(72, wire::Body::Subscribe,
       [](auto& b) { return wire::CreateSubscribe(b, 1, true, 10, true).Union(); });
  g = next();
  EXPECT_EQ(g.request_id, 72u);
  ASSERT_EQ(g.type, wire::Body::Deliver);
  EXPECT_TRUE(g.offsets.empty());
  EXPECT_EQ(g.head, 3u);
  ASSERT_TRUE(p.Publish("d").ok());  // offset 3
  g = next();
  EXPECT_EQ(g.request_id, 72u);
  ASSERT_EQ(g.offsets, std::vector<uint64_t>{3});
  // Past the head: it waits for offset 6 and starts there. A Credit (with
  // any id) is never answered.
  send(73, wire::Body::Subscribe,
       [](auto& b) { return wire::CreateSubscribe(b, 6, false, 10).Union(); });
  send(999, wire::Body::Credit, [](auto& b) { return wire::CreateCredit(b, 5).Union(); });
  for (const char* m : {"e", "f", "g", "h"}) ASSERT_TRUE(p.Publish(m).ok());  // 4 to 7
  std::vector<uint64_t> delivered;
  while (delivered.size() < 2) {
    g = next();
    ASSERT_EQ(g.type, wire::Body::Deliver) << "request " << g.request_id;
    ASSERT_NE(g.request_id, 999u) << "a Credit was answered";
    if (g.request_id == 72u) continue;  // queued for the replaced subscription
    ASSERT_EQ(g.request_id, 73u);
    delivered.insert(delivered.end(), g.offsets.begin(), g.offsets.end());
  }
  EXPECT_EQ(delivered, (std::vector<uint64_t>{6, 7}));
}

// Reads a broker's whole log file.
std::string ReadLog(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// A listening TCP socket on 127.0.0.1:PORT, as another program holding it.
class PortHolder {
 public:
  explicit PortHolder(const std::string& endpoint) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    // The killed broker's accepted connections may linger in TIME_WAIT.
    const int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1))));
    ok_ = bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && listen(fd_, 1) == 0;
  }
  ~PortHolder() { close(fd_); }
  bool ok() const { return ok_; }

 private:
  int fd_ = -1;
  bool ok_ = false;
};

// Each endpoint a broker binds, taken by another program: the broker stops
// at once (exit 1) with a message naming the endpoint and the reason.
TEST(Broker, AnEndpointInUseStopsStartupNamingTheEndpointAndWhy) {
  Cluster c(3, /*metrics=*/true);
  c.Kill(1);
  struct Case {
    std::string what, endpoint;
  };
  for (const Case& k : {Case{"metrics endpoint", c.MetricsEndpoint(1)},
                        Case{"client endpoint", c.ClientEndpoint(1)},
                        Case{"peer endpoint", c.PeerEndpoint(1)}}) {
    PortHolder holder(k.endpoint);
    ASSERT_TRUE(holder.ok()) << k.endpoint;
    std::filesystem::remove(c.Log(1));
    c.Start(1);
    EXPECT_EQ(c.WaitForExit(1), 1) << k.what;
    const std::string log = ReadLog(c.Log(1));
    EXPECT_NE(log.find(k.what + " " + k.endpoint), std::string::npos) << log;
    EXPECT_NE(log.find("Address already in use"), std::string::npos) << log;
  }
}

// Runs `command` through the shell: its exit status (-1 if it did not
// exit), and what it wrote to stdout and stderr in *out.
int RunCommand(const std::string& command, std::string* out) {
  out->clear();
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof buf, p)) > 0;) out->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// ordo-broker itself: usage errors exit 2 (not CLI11's 104 to 109), a
// config that is a directory, binds a host name ([bind]: ZeroMQ binds only
// to addresses and interfaces) or an address that is not this machine's
// exits 1, each with a message that says what is wrong.
TEST(Broker, UsageAndStartupErrorsSayWhatIsWrongWithTheDocumentedStatus) {
  const std::string bin = ORDO_BROKER_BIN;
  std::string out;
  EXPECT_EQ(RunCommand(bin + " --config x.toml --bogus", &out), 2) << out;
  EXPECT_NE(out.find("--bogus"), std::string::npos) << out;
  EXPECT_NE(out.find("--help"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(bin, &out), 2) << out;
  EXPECT_NE(out.find("--config"), std::string::npos) << out;
  EXPECT_EQ(RunCommand(bin + " --config x.toml --node-id abc", &out), 2) << out;
  EXPECT_EQ(RunCommand(bin + " --config", &out), 2) << out;
  EXPECT_EQ(RunCommand(bin + " --help", &out), 0) << out;
  EXPECT_NE(out.find("Exit status"), std::string::npos) << out;

  const auto dir =
      std::filesystem::temp_directory_path() / ("ordo-broker-usage-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  EXPECT_EQ(RunCommand(bin + " --config " + dir.string(), &out), 1) << out;
  EXPECT_NE(out.find("is a directory"), std::string::npos) << out;
  EXPECT_EQ(out.find("members"), std::string::npos) << out;

  const std::string port = std::to_string(testing::ReservePort());
  const std::string config = (dir / "ordo.toml").string();
  std::ofstream(config) << "node_id = 1\ndata_dir = \"" << (dir / "data").string()
                        << "\"\nmetrics = \"\"\n[security]\ninsecure = true\n"
                        << "[[members]]\nid = 1\npeer = \"db1.invalid:" << port << "\"\nclient = \""
                        << testing::ReserveEndpoint() << "\"\n";
  EXPECT_EQ(
      RunCommand(bin + " --config " + config + " --bind-peer no-such-host.invalid:" + port, &out),
      1)
      << out;
  EXPECT_NE(out.find("bind.peer: 'no-such-host.invalid' is a host name"), std::string::npos) << out;
  // 192.0.2.1 (TEST-NET-1) is no address of this machine: what a broker
  // behind NAT that binds what it advertises would meet.
  EXPECT_EQ(RunCommand(bin + " --config " + config + " --bind-peer 192.0.2.1:" + port, &out), 1)
      << out;
  EXPECT_NE(out.find("peer endpoint db1.invalid:" + port + " (bound to 192.0.2.1:" + port +
                     "): cannot bind: host '192.0.2.1' is not an address of this machine"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("[bind]"), std::string::npos) << out;
  std::filesystem::remove_all(dir);
}

// What an HTTP GET of `path` on `endpoint` (HOST:PORT, HOST resolved as a
// client would) answers: the whole response, "" when it cannot connect.
std::string HttpGet(const std::string& endpoint, const std::string& path) {
  const size_t colon = endpoint.rfind(':');
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(endpoint.substr(0, colon).c_str(), endpoint.substr(colon + 1).c_str(), &hints,
                  &found) != 0) {
    return "";
  }
  std::string response;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + endpoint + "\r\n\r\n";
    if (send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buf[4096];
      for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) response.append(buf, n);
    }
  }
  if (fd >= 0) close(fd);
  freeaddrinfo(found);
  return response;
}

// Brokers that bind one address and advertise another ([bind]): the
// brokers, the clients and the redirects use only the advertised endpoints
// ([[members]], metrics), here a host name (which ZeroMQ cannot bind: such a
// broker did not start before [bind]) or a second loopback address, while
// each broker binds every interface, or 127.0.0.1.
struct AdvertiseCase {
  const char* advertise;
  const char* bind;  // "" = no [bind]: a host name then binds 0.0.0.0
};
class AdvertisedEndpoints : public ::testing::TestWithParam<AdvertiseCase> {};

TEST_P(AdvertisedEndpoints, ElectALeaderAndServePublishAndReplayThroughTheAdvertisedOnes) {
  testing::LocalClusterOptions options;
  options.nodes = 3;
  options.metrics = true;
  options.advertise_host = GetParam().advertise;
  options.bind_host = GetParam().bind;
  Cluster c(options);
  const std::string bind = GetParam().bind;
  const std::string bound_host = bind.empty() || bind == "*" ? "0.0.0.0" : bind;
  auto port_of = [](const std::string& e) { return e.substr(e.rfind(':')); };
  for (int n = 1; n <= 3; ++n) {
    ASSERT_EQ(c.ClientEndpoint(n).rfind(options.advertise_host + ":", 0), 0u);
  }
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0) << c.LogTail(1);
  for (int n = 1; n <= 3; ++n) {
    const std::string log = c.LogTail(n, 1 << 20);
    for (const std::string& e : {c.PeerEndpoint(n), c.ClientEndpoint(n), c.MetricsEndpoint(n)}) {
      EXPECT_NE(log.find(e + " (bound to " + bound_host + port_of(e) + ")"), std::string::npos)
          << "node " << n << ": " << log;
    }
  }
  // Through a follower: its redirect names the leader's advertised endpoint.
  const int follower = leader % 3 + 1;
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(follower)};
  Publisher p(o);
  std::vector<OutgoingMessage> batch;
  for (int i = 0; i < 100; ++i) batch.push_back({"", "adv-" + std::to_string(i)});
  auto r = p.PublishBatch(batch);
  ASSERT_TRUE(r.ok()) << r.error().message;
  for (int i = 0; i < 100; ++i) ASSERT_EQ(r.value()[i], uint64_t(i));
  ASSERT_TRUE(c.WaitForHead(100));
  for (int n = 1; n <= 3; ++n) {
    const std::vector<Record> got = ReadAll(c, c.ClientEndpoint(n), 100);
    ASSERT_EQ(got.size(), 100u) << "broker " << n;
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i].payload, "adv-" + std::to_string(i));
  }
  auto replay = Replay(c.Options(), 90, 100);
  ASSERT_TRUE(replay.ok()) << replay.error().message;
  ASSERT_EQ(replay.value().size(), 10u);
  EXPECT_EQ(replay.value()[0].payload, "adv-90");
  auto status = GetStatus(c.ClientEndpoint(follower), 1s, c.Credentials());
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_EQ(status.value().leader_endpoint, c.ClientEndpoint(leader));
  // Prometheus scrapes the advertised metrics endpoint.
  EXPECT_NE(HttpGet(c.MetricsEndpoint(leader), "/metrics").find("ordo_chosen_instance"),
            std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Bind, AdvertisedEndpoints,
                         ::testing::Values(AdvertiseCase{"localhost", "0.0.0.0"},
                                           AdvertiseCase{"localhost", ""},
                                           AdvertiseCase{"localhost", "127.0.0.1"},
                                           AdvertiseCase{"127.0.0.42", "*"}),
                         [](const ::testing::TestParamInfo<AdvertiseCase>& param_info) {
                           const std::string bind = param_info.param.bind;
                           std::string name = std::string(param_info.param.advertise) + "_bind_" +
                                              (bind.empty()  ? "none"
                                               : bind == "*" ? "any"
                                                             : bind);
                           for (char& ch : name) {
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

TEST(Broker, AVoterWhoseDiskWasWipedCatchesUpBeforeVotingAndNothingAcknowledgedIsLost) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  const int wiped = leader % 3 + 1;
  std::mutex mu;
  std::map<uint64_t, std::string> acked;  // offset -> payload
  std::atomic<bool> stop{false}, failed{false};
  std::thread publisher([&] {
    Publisher p(c.Options());
    for (int b = 0; !stop; ++b) {
      std::vector<OutgoingMessage> batch;
      for (int i = 0; i < 20; ++i) batch.push_back({"", "w" + std::to_string(b * 20 + i)});
      auto r = p.PublishBatch(batch);
      if (!r.ok()) {
        failed = true;
        return;
      }
      std::lock_guard<std::mutex> l(mu);
      for (int i = 0; i < 20; ++i) acked[r.value()[i]] = batch[i].payload;
    }
  });
  auto acked_count = [&] {
    std::lock_guard<std::mutex> l(mu);
    return acked.size();
  };
  while (acked_count() < 2000 && !failed) std::this_thread::sleep_for(10ms);

  // Lose the disk: kill -9, wipe the data directory, restart empty.
  c.Kill(wiped);
  std::filesystem::remove_all(c.DataDir(wiped));
  c.Start(wiped);
  // It asks its peers, learns the cluster has a history, and stays a
  // non-voter until it has applied an instance past anything it could have
  // voted on; then it votes again.
  const auto deadline = std::chrono::steady_clock::now() + 90s;
  bool voting = false;
  while (!voting && std::chrono::steady_clock::now() < deadline && !failed) {
    auto s = GetStatus(c.ClientEndpoint(wiped), 300ms, c.Credentials());
    if (s.ok()) {
      ASSERT_EQ(s.value().votes_while_catching_up, 0u);
      const std::string log = ReadLog(c.Log(wiped));
      voting = !s.value().catching_up &&
               log.find("not voting until it has applied instance") != std::string::npos;
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(voting) << ReadLog(c.Log(wiped));
  EXPECT_NE(ReadLog(c.Log(wiped)).find("voting (caught up at instance"), std::string::npos);
  auto s = GetStatus(c.ClientEndpoint(wiped), 1s, c.Credentials());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s.value().votes_while_catching_up, 0u);

  // Now it must carry its weight: without the old leader, the rejoined
  // broker is half of every quorum.
  const size_t before_kill = acked_count();
  while (acked_count() < before_kill + 200 && !failed) std::this_thread::sleep_for(10ms);
  c.Kill(leader);
  const size_t after_kill = acked_count();
  while (acked_count() < after_kill + 500 && !failed) std::this_thread::sleep_for(10ms);
  stop = true;
  publisher.join();
  ASSERT_FALSE(failed);

  uint64_t head = 0;
  {
    std::lock_guard<std::mutex> l(mu);
    head = acked.rbegin()->first + 1;
  }
  ASSERT_TRUE(c.WaitForHead(head));
  for (int n = 1; n <= 3; ++n) {
    if (!c.Running(n)) continue;
    const std::vector<Record> got = ReadAll(c, c.ClientEndpoint(n), head);
    ASSERT_EQ(got.size(), head) << "broker " << n;
    std::lock_guard<std::mutex> l(mu);
    for (const auto& [offset, payload] : acked) {
      ASSERT_EQ(got[offset].payload, payload) << "broker " << n << " offset " << offset;
    }
  }
}

}  // namespace
}  // namespace ordo
