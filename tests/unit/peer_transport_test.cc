// PeerTransport with real ZeroMQ sockets on 127.0.0.1: a learner's frames
// reach a voter's ROUTER, the voter's replies come back over the learner's
// own connection, and the voter remembers a bounded number of learners.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "broker/codec.h"
#include "broker/peer_transport.h"
#include "broker/zap_handler.h"
#include "tests/testing/ports.h"

namespace ordo::broker {
namespace {

using namespace std::chrono_literals;

std::string Endpoint() { return ordo::testing::ReserveEndpoint(); }

BrokerConfig Config(uint32_t node_id, const std::vector<Member>& members) {
  BrokerConfig c;
  c.node_id = node_id;
  c.members = members;
  c.data_dir = "/unused";
  c.security.insecure = true;
  if (!c.Find(node_id)) {
    c.role = Role::kLearner;
    c.client = Endpoint();
  }
  EXPECT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c).message();
  return c;
}

paxos::Message Make(paxos::MessageType type, uint32_t from, uint32_t to) {
  paxos::Message m;
  m.type = type;
  m.from = paxos::NodeId(from);
  m.to = paxos::NodeId(to);
  m.instance = paxos::Instance(1);
  m.instance_last = paxos::Instance(10);
  return m;
}

// Waits (bounded) for one frame on `t`, decodes it, and notes it as the
// broker does. Returns false when none arrived.
bool ReceiveOne(PeerTransport& t, paxos::Message* m, PeerTransport::Sender* sender) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<zmq::pollitem_t> items;
    t.AddPollItems(&items);
    zmq::poll(items, 100ms);
    zmq::message_t frame;
    bool well_formed = false;
    if (!t.Receive(&frame, &well_formed, sender)) continue;
    EXPECT_TRUE(well_formed);
    EXPECT_TRUE(DecodePeerMessage({static_cast<const uint8_t*>(frame.data()), frame.size()},
                                  1 << 20, m)
                    .ok());
    t.NoteReceived(*m, frame.size(), sender->route);
    return true;
  }
  return false;
}

TEST(PeerTransport, ALearnerGetsTheVotersRepliesOverItsOwnConnection) {
  zmq::context_t ctx;
  const std::vector<Member> members = {{1, Endpoint(), Endpoint(), ""}, {2, Endpoint(), Endpoint(), ""}};
  const BrokerConfig voter_config = Config(1, members);
  const BrokerConfig learner_config = Config(9, members);
  PeerTransport voter(ctx, voter_config, nullptr);
  PeerTransport learner(ctx, learner_config, nullptr);
  ASSERT_TRUE(voter.Open().ok());
  ASSERT_TRUE(learner.Open().ok());  // binds nothing: a learner has no peer endpoint

  // Before the learner spoke, the voter has no way to reach it.
  EXPECT_FALSE(voter.Send(Make(paxos::MessageType::kFetchReply, 1, 9)));

  paxos::Message m;
  PeerTransport::Sender route;
  bool sent = false;
  for (int i = 0; i < 100 && !sent; ++i) {  // the DEALER drops until connected
    sent = learner.Send(Make(paxos::MessageType::kFetch, 9, 1));
    if (!sent) std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(sent);
  ASSERT_TRUE(ReceiveOne(voter, &m, &route));
  EXPECT_EQ(m.from, paxos::NodeId(9));
  EXPECT_FALSE(route.route.empty());  // it came on the ROUTER
  EXPECT_EQ(voter.learner_routes(), 1u);

  ASSERT_TRUE(voter.Send(Make(paxos::MessageType::kFetchReply, 1, 9)));
  ASSERT_TRUE(ReceiveOne(learner, &m, &route));
  EXPECT_EQ(m.type, paxos::MessageType::kFetchReply);
  EXPECT_EQ(m.from, paxos::NodeId(1));
  EXPECT_TRUE(route.route.empty());  // it came on the learner's DEALER

  // Learners are counted under one link, apart from the members.
  const auto& links = voter.links();
  ASSERT_EQ(links.size(), 2u);
  EXPECT_GT(links.at(PeerTransport::kLearnersLinkId).bytes_sent, 0u);
  EXPECT_GT(links.at(PeerTransport::kLearnersLinkId).bytes_received, 0u);
  EXPECT_EQ(learner.links().count(PeerTransport::kLearnersLinkId), 0u);
  EXPECT_GT(learner.links().at(1).bytes_received, 0u);
}

CurveKeyPair NewKeys() {
  StatusOr<CurveKeyPair> pair = GenerateKeyPair();
  EXPECT_TRUE(pair.ok()) << pair.status().message();
  return pair.value();
}

// With CURVE, the voter's ROUTER lets in the keys its ZAP handler accepts
// and tells whose each frame is; a key it does not know sends nothing.
TEST(PeerTransport, WithCurveOnlyKnownKeysGetInAndEachFrameNamesItsKey) {
  zmq::context_t ctx;
  const CurveKeyPair voter_keys = NewKeys(), other_keys = NewKeys(), learner_keys = NewKeys(),
                     stranger_keys = NewKeys();
  std::vector<Member> members = {{1, Endpoint(), Endpoint(), voter_keys.public_key},
                                 {2, Endpoint(), Endpoint(), other_keys.public_key}};
  BrokerConfig voter_config = Config(1, members);
  BrokerConfig learner_config = Config(9, members);
  for (BrokerConfig* c : {&voter_config, &learner_config}) {
    c->security.insecure = false;
    c->security.key_file = "/unused.key";
    ASSERT_TRUE(ValidateConfig(*c).ok()) << ValidateConfig(*c).message();
  }
  std::unique_ptr<ZapHandler> zap;
  ASSERT_TRUE(ZapHandler::Start(
                  ctx,
                  [&](const ZapRequest& r) {
                    return r.domain == PeerTransport::kZapDomain &&
                                   r.public_key == learner_keys.public_key
                               ? ZapAnswer::kAllow
                               : ZapAnswer::kUnknownKey;
                  },
                  &zap)
                  .ok());
  PeerTransport voter(ctx, voter_config, &voter_keys);
  PeerTransport learner(ctx, learner_config, &learner_keys);
  PeerTransport stranger(ctx, learner_config, &stranger_keys);
  ASSERT_TRUE(voter.Open().ok());
  ASSERT_TRUE(learner.Open().ok());
  ASSERT_TRUE(stranger.Open().ok());

  // Sends from both until the voter has heard the learner (the DEALERs drop
  // until their handshakes are done); the ZAP handler answers meanwhile.
  paxos::Message m;
  PeerTransport::Sender sender;
  bool heard = false;
  int from_stranger = 0;
  for (const auto deadline = std::chrono::steady_clock::now() + 10s;
       !heard && std::chrono::steady_clock::now() < deadline;) {
    (void)learner.Send(Make(paxos::MessageType::kFetch, 9, 1));
    (void)stranger.Send(Make(paxos::MessageType::kFetch, 9, 1));
    std::vector<zmq::pollitem_t> items;
    zap->AddPollItem(&items);
    voter.AddPollItems(&items);
    zmq::poll(items, 10ms);
    zap->Drain();
    zmq::message_t frame;
    bool well_formed = false;
    while (voter.Receive(&frame, &well_formed, &sender)) {
      if (sender.key == learner_keys.public_key) {
        heard = true;
        ASSERT_TRUE(DecodePeerMessage({static_cast<const uint8_t*>(frame.data()), frame.size()},
                                      1 << 20, &m)
                        .ok());
        voter.NoteReceived(m, frame.size(), sender.route);  // the route back to it
        break;
      } else {
        ++from_stranger;
      }
    }
  }
  ASSERT_TRUE(heard) << "the learner's key was never let in";
  EXPECT_EQ(sender.link, 0u);  // on the ROUTER
  EXPECT_EQ(from_stranger, 0) << "a frame arrived from a key the ZAP handler refused";
  EXPECT_GE(zap->refused().at(PeerTransport::kZapDomain), 1u);

  // A frame on a DEALER is from the member it connected to (its pinned key).
  ASSERT_TRUE(voter.Send(Make(paxos::MessageType::kFetchReply, 1, 9)));
  ASSERT_TRUE(ReceiveOne(learner, &m, &sender));
  EXPECT_EQ(sender.link, 1u);
  EXPECT_TRUE(sender.key.empty());
}

TEST(ZapRequest, OnlyAWellFormedCurveRequestParsesAndEachAnswerHasItsStatus) {
  const std::string key(32, '\x01');
  std::vector<std::string_view> parts = {"1.0", "7", "ordo-client", "127.0.0.1", "", "CURVE", key};
  StatusOr<ZapRequest> r = ParseZapRequest(parts);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r.value().request_id, "7");
  EXPECT_EQ(r.value().domain, "ordo-client");
  EXPECT_EQ(r.value().address, "127.0.0.1");
  EXPECT_EQ(r.value().public_key.size(), 40u);
  for (auto broken : {std::vector<std::string_view>(parts.begin(), parts.end() - 1),
                      std::vector<std::string_view>{"1.1", "7", "d", "a", "", "CURVE", key},
                      std::vector<std::string_view>{"1.0", "7", "d", "a", "", "PLAIN", key},
                      std::vector<std::string_view>{"1.0", "7", "d", "a", "", "CURVE", "short"}}) {
    EXPECT_FALSE(ParseZapRequest(broken).ok());
  }
  EXPECT_EQ(MakeZapReply(ZapAnswer::kAllow, "K").status, "200");
  EXPECT_EQ(MakeZapReply(ZapAnswer::kAllow, "K").user_id, "K");
  EXPECT_EQ(MakeZapReply(ZapAnswer::kUnknownKey, "K").status, "400");
  EXPECT_EQ(MakeZapReply(ZapAnswer::kUnknownKey, "K").user_id, "");
  EXPECT_EQ(MakeZapReply(ZapAnswer::kTooManyConnections, "K").status, "400");
  EXPECT_EQ(MakeZapReply(ZapAnswer::kTooManyConnections, "K").user_id, "");
  EXPECT_EQ(MalformedZapReply("x").status, "500");
}

TEST(PeerTransport, AVoterRemembersABoundedNumberOfLearnersTheMostRecentlyHeard) {
  zmq::context_t ctx;
  const std::vector<Member> members = {{1, Endpoint(), Endpoint(), ""}, {2, Endpoint(), Endpoint(), ""}};
  const BrokerConfig voter_config = Config(1, members);
  PeerTransport voter(ctx, voter_config, nullptr);
  ASSERT_TRUE(voter.Open().ok());

  // More learners than the voter remembers, each heard once, in turn.
  const size_t n = PeerTransport::kLearnerRoutesMax + 8;
  std::vector<zmq::socket_t> learners;
  for (size_t i = 0; i < n; ++i) {
    zmq::socket_t s(ctx, zmq::socket_type::dealer);
    s.set(zmq::sockopt::linger, 0);
    s.set(zmq::sockopt::rcvtimeo, 10000);
    s.connect("tcp://" + members[0].peer);
    const uint32_t id = 100 + static_cast<uint32_t>(i);
    s.send(zmq::buffer(EncodePeerMessage(Make(paxos::MessageType::kFetch, id, 1))));
    paxos::Message m;
    PeerTransport::Sender route;
    ASSERT_TRUE(ReceiveOne(voter, &m, &route));
    ASSERT_EQ(m.from, paxos::NodeId(id));
    learners.push_back(std::move(s));
  }
  EXPECT_EQ(voter.learner_routes(), PeerTransport::kLearnerRoutesMax);
  EXPECT_EQ(voter.links().size(), 2u);  // one member, all learners together

  // The first ones heard were forgotten; the latest are answered.
  EXPECT_FALSE(voter.Send(Make(paxos::MessageType::kFetchReply, 1, 100)));
  EXPECT_FALSE(voter.Send(Make(paxos::MessageType::kFetchReply, 1, 107)));
  const uint32_t last = 100 + static_cast<uint32_t>(n) - 1;
  ASSERT_TRUE(voter.Send(Make(paxos::MessageType::kFetchReply, 1, last)));
  zmq::message_t reply;
  ASSERT_TRUE(learners.back().recv(reply).has_value());
  paxos::Message m;
  ASSERT_TRUE(
      DecodePeerMessage({static_cast<const uint8_t*>(reply.data()), reply.size()}, 1 << 20, &m)
          .ok());
  EXPECT_EQ(m.to, paxos::NodeId(last));
  // A forgotten learner is re-learned from its next frame.
  learners.front().send(zmq::buffer(EncodePeerMessage(Make(paxos::MessageType::kFetch, 100, 1))));
  PeerTransport::Sender route;
  ASSERT_TRUE(ReceiveOne(voter, &m, &route));
  EXPECT_TRUE(voter.Send(Make(paxos::MessageType::kFetchReply, 1, 100)));
  EXPECT_EQ(voter.learner_routes(), PeerTransport::kLearnerRoutesMax);
}

}  // namespace
}  // namespace ordo::broker
