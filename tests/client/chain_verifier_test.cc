// ChainVerifier on its own (client/internal/chain_verifier.h): Deliver
// frames built here with their chain points, read as the client reads them.

#include "client/internal/chain_verifier.h"

#include <flatbuffers/flatbuffers.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "client/internal/connection.h"

namespace ordo::client_internal {
namespace {

namespace fb = flatbuffers;
using Step = ChainVerifier::Step;

struct Message {
  uint64_t offset;
  std::string payload;
};

// A stream of instances of `per` messages each, offsets from 0, instance
// i + 1 holding offsets [i * per, (i + 1) * per); with its true chain.
struct Stream {
  explicit Stream(uint32_t per_instance, uint64_t instances) : per(per_instance) {
    chain.push_back(ChainValue{});
    for (uint64_t i = 0; i < instances; ++i) {
      ChainStep step(chain.back(), i + 1, i * per, per);
      for (uint64_t o = i * per; o < (i + 1) * per; ++o) step.Add(7, o + 1, "", Payload(o));
      chain.push_back(step.Finish());
    }
  }
  static std::string Payload(uint64_t o) { return "m" + std::to_string(o); }
  uint32_t per;
  std::vector<ChainValue> chain;  // chain[i]: before instance i + 1
};

// A Deliver of offsets [from, to) of `s` with the points of their
// instances; `tamper`: that offset's payload is changed (the points are not).
std::string DeliverBytes(const Stream& s, uint64_t from, uint64_t to, int64_t tamper = -1) {
  fb::FlatBufferBuilder b;
  std::vector<fb::Offset<wire::StreamMessage>> messages;
  std::vector<fb::Offset<wire::ChainPoint>> points;
  for (uint64_t o = from; o < to; ++o) {
    const uint64_t i = o / s.per;
    if (o == from || o % s.per == 0) {
      points.push_back(wire::CreateChainPoint(b, i + 1, i * s.per, s.per,
                                              b.CreateVector(s.chain[i].bytes.data(), 32),
                                              b.CreateVector(s.chain[i + 1].bytes.data(), 32)));
    }
    const std::string payload = static_cast<int64_t>(o) == tamper ? "forged" : Stream::Payload(o);
    messages.push_back(wire::CreateStreamMessage(
        b, o, 7, o + 1, 0,
        b.CreateVector(reinterpret_cast<const uint8_t*>(payload.data()), payload.size())));
  }
  const auto deliver = wire::CreateDeliver(b, b.CreateVector(messages), to, b.CreateVector(points));
  wire::FinishClientEnvelopeBuffer(
      b, wire::CreateClientEnvelope(b, 1, 1, wire::Body::Deliver, deliver.Union()));
  return std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
}

// Feeds a frame; returns the steps, one per message.
std::vector<Step> Feed(ChainVerifier& v, const std::string& bytes) {
  std::string reason;
  const std::unique_ptr<client_internal::Frame> frame =
      Frame::FromBytes({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, &reason);
  EXPECT_NE(frame, nullptr) << reason;
  const wire::Deliver& d = *frame->envelope().body_as_Deliver();
  std::vector<Step> steps;
  if (v.BeginFrame(d) == Step::kFailed) return {Step::kFailed};
  for (const wire::StreamMessage* m : *d.messages()) {
    steps.push_back(v.Add(*m));
    if (steps.back() == Step::kFailed) break;
  }
  return steps;
}

TEST(ChainVerifier, WholeInstancesCheckOutEvenSplitAcrossFrames) {
  const Stream s(4, 5);
  ChainVerifier v;
  // Offsets 0-5 (instance 2 half), then 6-19.
  EXPECT_EQ(Feed(v, DeliverBytes(s, 0, 6)),
            (std::vector<Step>{Step::kPending, Step::kPending, Step::kPending, Step::kVerified,
                               Step::kPending, Step::kPending}));
  EXPECT_TRUE(v.in_progress());
  EXPECT_EQ(v.current_end(), 8u);
  EXPECT_EQ(*v.verified_offset(), 4u);
  const std::vector<Step> rest = Feed(v, DeliverBytes(s, 6, 20));
  EXPECT_EQ(rest.back(), Step::kVerified);
  EXPECT_EQ(*v.verified_offset(), 20u);
  EXPECT_EQ(v.verified_chain(), s.chain[5]);
  EXPECT_EQ(v.last_verified().instance, 5u);
}

TEST(ChainVerifier, AChangedPayloadFailsItsInstanceAndNothingOfItChecksOut) {
  const Stream s(4, 3);
  ChainVerifier v;
  const std::vector<Step> steps = Feed(v, DeliverBytes(s, 0, 12, /*tamper=*/6));
  ASSERT_EQ(steps.size(), 8u);  // instance 1 checks out; instance 2 fails at its end
  EXPECT_EQ(steps[3], Step::kVerified);
  EXPECT_EQ(steps[7], Step::kFailed);
  EXPECT_NE(v.error().find("instance 2"), std::string::npos) << v.error();
  EXPECT_EQ(*v.verified_offset(), 4u);
  EXPECT_FALSE(v.in_progress());
}

TEST(ChainVerifier, ABrokerWhoseChainDoesNotGoOnFromTheVerifiedOneFails) {
  const Stream s(4, 3);
  Stream other(4, 3);
  other.chain[1].bytes[0] ^= 1;  // another history before instance 2
  ChainVerifier v;
  EXPECT_EQ(Feed(v, DeliverBytes(s, 0, 4)).back(), Step::kVerified);
  EXPECT_EQ(Feed(v, DeliverBytes(other, 4, 8)), std::vector<Step>{Step::kFailed});
  EXPECT_NE(v.error().find("does not go on"), std::string::npos) << v.error();
  // An anchor is trusted the same way.
  ChainVerifier anchored;
  anchored.Anchor(4, s.chain[1]);
  EXPECT_EQ(Feed(anchored, DeliverBytes(other, 4, 8)), std::vector<Step>{Step::kFailed});
  EXPECT_EQ(Feed(anchored, DeliverBytes(s, 4, 8)).back(), Step::kVerified);
}

TEST(ChainVerifier, AFrameStartingInsideAnInstanceCannotBeVerified) {
  const Stream s(4, 3);
  ChainVerifier v;
  EXPECT_EQ(Feed(v, DeliverBytes(s, 5, 8)).back(), Step::kFailed);
  EXPECT_NE(v.error().find("not the first"), std::string::npos) << v.error();
  // The rest of an instance under way must come with the same point.
  ChainVerifier w;
  EXPECT_EQ(Feed(w, DeliverBytes(s, 0, 2)).back(), Step::kPending);
  Stream other(4, 3);
  other.chain[1].bytes[5] ^= 1;
  EXPECT_EQ(Feed(w, DeliverBytes(other, 2, 4)), std::vector<Step>{Step::kFailed});
}

TEST(ChainVerifier, MessagesWithoutChainPointsAreRefused) {
  fb::FlatBufferBuilder b;
  std::vector<fb::Offset<wire::StreamMessage>> messages{wire::CreateStreamMessage(b, 0, 7, 1)};
  const auto deliver = wire::CreateDeliver(b, b.CreateVector(messages), 1);
  wire::FinishClientEnvelopeBuffer(
      b, wire::CreateClientEnvelope(b, 1, 1, wire::Body::Deliver, deliver.Union()));
  ChainVerifier v;
  EXPECT_EQ(Feed(v, std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize())),
            std::vector<Step>{Step::kFailed});
  EXPECT_NE(v.error().find("without their chain"), std::string::npos) << v.error();
}

}  // namespace
}  // namespace ordo::client_internal
