// ValidateDeliver on its own (client/internal/deliver.h): Deliver frames
// made by the fake broker's helpers, read as the client reads them
// (Frame::FromBytes), against each kind of start.

#include "client/internal/deliver.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "client/internal/connection.h"
#include "tests/client/fake_broker.h"

namespace ordo::client_internal {
namespace {

using testing::DeliverFrame;
using testing::DeliverRange;
using testing::SharedPayloadDeliverFrame;

const DeliverExpectation kLatest{std::nullopt, false};
const DeliverExpectation kEarliest{std::nullopt, true};
DeliverExpectation At(uint64_t offset) { return {offset, false}; }

// The frame's bytes, checked as a received frame and validated.
DeliverVerdict Validate(const std::string& bytes, const DeliverExpectation& expected) {
  std::string reason;
  const std::unique_ptr<Frame> frame =
      Frame::FromBytes({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, &reason);
  EXPECT_NE(frame, nullptr) << reason;
  if (frame == nullptr) return {};
  const wire::Deliver* deliver = frame->envelope().body_as_Deliver();
  EXPECT_NE(deliver, nullptr);
  if (deliver == nullptr) return {};
  return ValidateDeliver(*deliver, frame->size(), expected);
}

TEST(ValidateDeliver, ContiguousMessagesFromTheExpectedOffsetAreAllAccepted) {
  const DeliverVerdict v = Validate(DeliverRange(1, 10, 14, 20), At(10));
  EXPECT_TRUE(v.ok()) << v.message;
  EXPECT_TRUE(v.message.empty());
  EXPECT_EQ(v.start, 10u);
  EXPECT_EQ(v.accepted, 4u);
  EXPECT_EQ(v.credit_used, 4u);
}

TEST(ValidateDeliver, AnEmptyDeliverAcceptsNothingAndKeepsTheStart) {
  const DeliverVerdict v = Validate(DeliverFrame(1, {}, 20), At(10));
  EXPECT_TRUE(v.ok());
  EXPECT_EQ(v.start, 10u);
  EXPECT_EQ(v.accepted, 0u);
  EXPECT_EQ(v.credit_used, 0u);
}

TEST(ValidateDeliver, AnOffsetAboveTheExpectedOneIsAGapAfterTheContiguousOnes) {
  // 10 and 11, then 13: 12 was lost.
  const DeliverVerdict v = Validate(DeliverFrame(1,
                                                 {testing::TestRecord(10), testing::TestRecord(11),
                                                  testing::TestRecord(13), testing::TestRecord(14)},
                                                 20),
                                    At(10));
  EXPECT_EQ(v.error, DeliverError::kGap);
  EXPECT_EQ(v.accepted, 2u);
  EXPECT_EQ(v.credit_used, 3u);  // 14 is not read
  EXPECT_EQ(v.message, "delivered offset 13 where 12 was expected (a frame was lost)");

  const DeliverVerdict first = Validate(DeliverRange(1, 11, 14, 20), At(10));
  EXPECT_EQ(first.error, DeliverError::kGap);
  EXPECT_EQ(first.accepted, 0u);
  EXPECT_EQ(first.credit_used, 1u);
}

TEST(ValidateDeliver, AnOffsetBelowTheExpectedOneIsABrokenStream) {
  const DeliverVerdict v = Validate(
      DeliverFrame(1, {testing::TestRecord(3), {1, 7, 99, "", "wrong"}, testing::TestRecord(4)}, 6),
      At(3));
  EXPECT_EQ(v.error, DeliverError::kBelowExpected);
  EXPECT_EQ(v.accepted, 1u);
  EXPECT_EQ(v.credit_used, 2u);
  EXPECT_EQ(v.message, "delivered offset 1 where 4 was expected (a broken stream)");

  // A repeated offset is below the expected one too.
  const DeliverVerdict repeated =
      Validate(DeliverFrame(1, {testing::TestRecord(3), testing::TestRecord(3)}, 6), At(3));
  EXPECT_EQ(repeated.error, DeliverError::kBelowExpected);
  EXPECT_EQ(repeated.accepted, 1u);
}

TEST(ValidateDeliver, LatestStartsAtTheFirstMessageOrElseAtTheHead) {
  const DeliverVerdict v = Validate(DeliverRange(1, 42, 44, 44), kLatest);
  EXPECT_TRUE(v.ok());
  EXPECT_EQ(v.start, 42u);
  EXPECT_EQ(v.accepted, 2u);

  const DeliverVerdict empty = Validate(DeliverFrame(1, {}, 44), kLatest);
  EXPECT_TRUE(empty.ok());
  EXPECT_EQ(empty.start, 44u);
  EXPECT_EQ(empty.accepted, 0u);
}

TEST(ValidateDeliver, EarliestStartsAtTheFirstMessageAndAnEmptyDeliverLeavesItUnknown) {
  const DeliverVerdict v = Validate(DeliverRange(1, 7, 9, 9), kEarliest);
  EXPECT_TRUE(v.ok());
  EXPECT_EQ(v.start, 7u);
  EXPECT_EQ(v.accepted, 2u);

  const DeliverVerdict empty = Validate(DeliverFrame(1, {}, 9), kEarliest);
  EXPECT_TRUE(empty.ok());
  EXPECT_EQ(empty.start, std::nullopt);
  EXPECT_EQ(empty.accepted, 0u);
}

TEST(ValidateDeliver, AnUnknownStartStillNeedsContiguousMessages) {
  const DeliverVerdict v =
      Validate(DeliverFrame(1, {testing::TestRecord(42), testing::TestRecord(40)}, 44), kLatest);
  EXPECT_EQ(v.error, DeliverError::kBelowExpected);
  EXPECT_EQ(v.start, 42u);
  EXPECT_EQ(v.accepted, 1u);
}

TEST(ValidateDeliver, AbsentFieldsReadAsTheirDefaults) {
  // No message vector: an empty Deliver.
  flatbuffers::FlatBufferBuilder builder;
  BuildEnvelope(builder, 1, wire::Body::Deliver,
                [](auto& b) { return wire::CreateDeliver(b, 0, 30).Union(); });
  const std::string no_messages(reinterpret_cast<const char*>(builder.GetBufferPointer()),
                                builder.GetSize());
  const DeliverVerdict v = Validate(no_messages, kLatest);
  EXPECT_TRUE(v.ok());
  EXPECT_EQ(v.start, 30u);
  EXPECT_EQ(v.accepted, 0u);

  // A message with no offset is at offset 0, with no key or payload.
  flatbuffers::FlatBufferBuilder b2;
  BuildEnvelope(b2, 1, wire::Body::Deliver, [](auto& b) {
    const auto message = wire::CreateStreamMessage(b);
    return wire::CreateDeliver(b, b.CreateVector(&message, 1), 1).Union();
  });
  const std::string bare(reinterpret_cast<const char*>(b2.GetBufferPointer()), b2.GetSize());
  const DeliverVerdict at_zero = Validate(bare, At(0));
  EXPECT_TRUE(at_zero.ok());
  EXPECT_EQ(at_zero.accepted, 1u);
  EXPECT_EQ(Validate(bare, At(5)).error, DeliverError::kBelowExpected);
}

TEST(ValidateDeliver, MessagesSharingOnePayloadPastTheFrameSizeAreRefusedWhole) {
  const std::string frame = SharedPayloadDeliverFrame(1, 10, 64, 1024, 74);
  ASSERT_LT(frame.size(), 64u * 1024);
  const DeliverVerdict v = Validate(frame, At(10));
  EXPECT_EQ(v.error, DeliverError::kInflated);
  EXPECT_FALSE(v.message.empty());
  EXPECT_EQ(v.start, std::nullopt);
  EXPECT_EQ(v.accepted, 0u);
  EXPECT_EQ(v.credit_used, 0u);
  // The same messages, sharing a payload that fits: contiguous, accepted.
  EXPECT_TRUE(Validate(SharedPayloadDeliverFrame(1, 10, 4, 16, 14), At(10)).ok());
}

}  // namespace
}  // namespace ordo::client_internal
