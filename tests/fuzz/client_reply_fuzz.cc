// Fuzz target: the client library's decoding of what a broker sends back
// (client/internal/connection.h): the checks every received frame goes
// through (Frame::FromBytes, as Connection::Receive), then what the library
// reads of each body: an Error (Describe, RefusalCode), a Deliver (the
// subscriber's checks, ValidateDeliver in client/internal/deliver.h, against
// several expected starts, then ToRecord, and the chain check, ChainVerifier),
// a StatusReply (ToBrokerStatus)
// and the publisher's rules for a PublishReply or an Error
// (PublishSession::OnReply, with two requests in flight).
//
// Properties: a refused frame comes with a reason; an accepted one has the
// version this client reads; a Deliver is refused whole exactly when it
// fails the size check, and otherwise starts at the expected offset (or,
// with none, the first message's, or the head for StartAt::Latest), accepts
// messages at consecutive offsets from there (modulo 2^64, as the
// subscriber counts), all of them when it is ok, and refuses the first one
// at another offset as below (a broken stream) or above (a gap) what was
// expected, after spending credit on it; the messages accepted hold no more
// key and payload bytes than the frame; the publisher never resolves more
// messages than it queued, resolves a message as stored only from a reply
// that answers it, and gives every message back when it closes.
#include <string>
#include <vector>

#include "client/internal/chain_verifier.h"
#include "client/internal/connection.h"
#include "client/internal/deliver.h"
#include "client/internal/publish_session.h"
#include "tests/client/fake_broker.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

namespace ci = client_internal;

// One Deliver against one expectation, as the subscriber would apply it.
void CheckDeliver(const wire::Deliver& deliver, size_t frame_bytes,
                  const ci::DeliverExpectation& expected) {
  const auto* messages = deliver.messages();
  const size_t count = messages == nullptr ? 0 : messages->size();
  const auto offset_of = [&](size_t i) {
    return messages->Get(static_cast<flatbuffers::uoffset_t>(i))->offset();
  };
  const ci::DeliverVerdict verdict = ci::ValidateDeliver(deliver, frame_bytes, expected);
  ORDO_FUZZ_CHECK(verdict.ok() == verdict.message.empty());
  ORDO_FUZZ_CHECK((verdict.error == ci::DeliverError::kInflated) ==
                  !ci::DeliverSizeIsPlausible(deliver, frame_bytes));
  if (verdict.error == ci::DeliverError::kInflated) {
    ORDO_FUZZ_CHECK(!verdict.start && verdict.accepted == 0 && verdict.credit_used == 0);
    return;
  }
  if (expected.next_offset) {
    ORDO_FUZZ_CHECK(verdict.start == expected.next_offset);
  } else if (count > 0) {
    ORDO_FUZZ_CHECK(verdict.start == offset_of(0));
  } else if (!expected.start_earliest) {
    ORDO_FUZZ_CHECK(verdict.start == deliver.head_offset());
  } else {
    ORDO_FUZZ_CHECK(!verdict.start);
  }
  ORDO_FUZZ_CHECK(verdict.accepted <= count);
  ORDO_FUZZ_CHECK(verdict.credit_used == verdict.accepted + (verdict.ok() ? 0 : 1));
  ORDO_FUZZ_CHECK(verdict.credit_used <= count);
  if (verdict.ok()) ORDO_FUZZ_CHECK(verdict.accepted == count);
  if (!verdict.start) {
    ORDO_FUZZ_CHECK(count == 0);
    return;
  }
  size_t bytes = 0;
  for (size_t i = 0; i < verdict.accepted; ++i) {
    ORDO_FUZZ_CHECK(offset_of(i) == *verdict.start + i);
    const Record record = ci::ToRecord(*messages->Get(static_cast<flatbuffers::uoffset_t>(i)));
    ORDO_FUZZ_CHECK(record.offset == offset_of(i));
    bytes += record.key.size() + record.payload.size();
  }
  ORDO_FUZZ_CHECK(bytes <= frame_bytes);
  const uint64_t next = *verdict.start + verdict.accepted;
  if (verdict.error == ci::DeliverError::kBelowExpected) {
    ORDO_FUZZ_CHECK(offset_of(verdict.accepted) < next);
  }
  if (verdict.error == ci::DeliverError::kGap) ORDO_FUZZ_CHECK(offset_of(verdict.accepted) > next);
}

// The chain check of a Deliver (client/internal/chain_verifier.h), fresh
// and anchored: a failure says why and leaves no instance under way; an
// instance checks out at its last message, and the verified offset is then
// one past it.
void CheckChain(const wire::Deliver& deliver, bool anchored) {
  ci::ChainVerifier v;
  if (anchored) v.Anchor(10, ChainValue{});
  if (v.BeginFrame(deliver) == ci::ChainVerifier::Step::kFailed) {
    ORDO_FUZZ_CHECK(!v.error().empty());
    ORDO_FUZZ_CHECK(!v.in_progress());
    return;
  }
  if (deliver.messages() == nullptr) return;
  for (const wire::StreamMessage* m : *deliver.messages()) {
    const ci::ChainVerifier::Step step = v.Add(*m);
    if (step == ci::ChainVerifier::Step::kFailed) {
      ORDO_FUZZ_CHECK(!v.error().empty());
      ORDO_FUZZ_CHECK(!v.in_progress());
      return;
    }
    if (step == ci::ChainVerifier::Step::kVerified) {
      ORDO_FUZZ_CHECK(v.verified_offset() && *v.verified_offset() == m->offset() + 1);
      ORDO_FUZZ_CHECK(!v.in_progress());
    } else {
      ORDO_FUZZ_CHECK(v.in_progress() && v.current_end() > m->offset() + 1);
    }
  }
}

// A Deliver against every kind of start: StartAt::Latest and Earliest
// before the start is known, and known starts at its first message, past
// it, at its head and at a fixed offset.
void CheckDeliver(const wire::Deliver& deliver, size_t frame_bytes) {
  CheckDeliver(deliver, frame_bytes, {std::nullopt, false});
  CheckDeliver(deliver, frame_bytes, {std::nullopt, true});
  CheckDeliver(deliver, frame_bytes, {deliver.head_offset(), false});
  CheckDeliver(deliver, frame_bytes, {10, false});
  if (deliver.messages() != nullptr && deliver.messages()->size() > 0) {
    const uint64_t first = deliver.messages()->Get(0)->offset();
    CheckDeliver(deliver, frame_bytes, {first, false});
    CheckDeliver(deliver, frame_bytes, {first + 1, false});
  }
  CheckChain(deliver, false);
  CheckChain(deliver, true);
}

void CheckBody(const ci::Frame& frame) {
  const wire::ClientEnvelope& envelope = frame.envelope();
  ORDO_FUZZ_CHECK(envelope.version() == ci::kClientFormatVersion);
  if (const wire::Error* error = envelope.body_as_Error()) {
    ORDO_FUZZ_CHECK(!ci::Describe(*error).empty());
    (void)ci::RefusalCode(error->code());
  }
  if (const wire::Deliver* deliver = envelope.body_as_Deliver()) {
    CheckDeliver(*deliver, frame.size());
  }
  if (const wire::StatusReply* reply = envelope.body_as_StatusReply()) {
    const BrokerStatus status = ci::ToBrokerStatus(*reply, "127.0.0.1:7201");
    ORDO_FUZZ_CHECK(status.peers.size() == (reply->peers() ? reply->peers()->size() : 0));
  }
}

// A publisher with messages 1-2 in request 1 and message 3 in request 2,
// handed this frame as the answer.
void CheckPublisher(const ci::Frame& frame) {
  static const std::vector<std::string> kBrokers = {"127.0.0.1:7201", "127.0.0.1:7202"};
  ci::PublishSession session(77, &kBrokers, ci::PublishLimits{2, 1 << 20, 2});
  constexpr size_t kMessages = 3;
  for (size_t i = 0; i < kMessages; ++i) session.Enqueue(i == 1 ? "key" : "", "payload");
  flatbuffers::FlatBufferBuilder builder;
  ORDO_FUZZ_CHECK(session.BuildRequest(builder) == 1);
  ORDO_FUZZ_CHECK(session.BuildRequest(builder) == 2);

  const uint64_t request_id = frame.envelope().request_id();
  const ci::PublishStep step = session.OnReply(frame.envelope());
  ORDO_FUZZ_CHECK(step.matched == (request_id == 1 || request_id == 2));
  size_t resolved = 0;
  ci::PublishOutcome outcome;
  while (session.PopResolved(&outcome)) {
    ++resolved;
    ORDO_FUZZ_CHECK(outcome.ticket == resolved);
    if (outcome.kind == ci::PublishOutcome::Kind::kStored) {
      ORDO_FUZZ_CHECK(frame.envelope().body_as_PublishReply() != nullptr);
    }
  }
  ORDO_FUZZ_CHECK(resolved <= kMessages);
  // The other request is never answered: the publisher closes.
  (void)session.OnSilence("no reply");
  while (session.PopAny(&outcome)) ++resolved;
  ORDO_FUZZ_CHECK(resolved == kMessages);
  ORDO_FUZZ_CHECK(session.empty());
}

}  // namespace

std::vector<Seed> Seeds() {
  using namespace ordo::testing;
  const StatusSpec status{.node_id = 2,
                          .role = "follower",
                          .leader_id = 1,
                          .leader_endpoint = "127.0.0.1:7201",
                          .ballot_round = 4,
                          .ballot_node = 1,
                          .chosen = 99,
                          .next_offset = 1000,
                          .peers = {{1, 99, 0, 10}, {3, 90, 9, 250}}};
  return {
      {"publish-reply", PublishReplyFrame(1, {{1, 100}, {2, 101}})},
      {"publish-reply-mixed", PublishReplyFrame(2, {{3, 0, wire::ErrorCode::OutOfSequence}})},
      {"publish-reply-duplicate", PublishReplyFrame(1, {{2, 0, wire::ErrorCode::DuplicateTooOld}})},
      {"error-not-leader", ErrorFrame(1, wire::ErrorCode::NotLeader,
                                      "this broker is not the leader", "127.0.0.1:7202")},
      {"error-busy", ErrorFrame(2, wire::ErrorCode::Busy, "the leader's queue is full")},
      {"error-below-retained", ErrorFrame(5, wire::ErrorCode::OffsetBelowRetained,
                                          "offset 3 is no longer retained", "", 40)},
      {"deliver", DeliverRange(7, 10, 14, 20)},
      {"deliver-empty", DeliverFrame(7, {}, 20)},
      {"deliver-gap", DeliverFrame(7, {TestRecord(10), TestRecord(11), TestRecord(13)}, 20)},
      {"deliver-below", DeliverFrame(7, {TestRecord(10), TestRecord(9)}, 20)},
      {"deliver-shared-payload", SharedPayloadDeliverFrame(7, 10, 16, 256, 26)},
      {"status", StatusReplyFrame(9, status)},
  };
}

}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ordo;
  std::string reason;
  const std::unique_ptr<client_internal::Frame> frame =
      client_internal::Frame::FromBytes({data, size}, &reason);
  if (frame == nullptr) {
    ORDO_FUZZ_CHECK(!reason.empty());
    return 0;
  }
  ORDO_FUZZ_CHECK(frame->size() == size);
  fuzz::CheckBody(*frame);
  fuzz::CheckPublisher(*frame);
  return 0;
}
