// Fuzz target: the client library's decoding of what a broker sends back
// (client/internal/connection.h): the checks every received frame goes
// through (Frame::FromBytes, as Connection::Receive), then what the library
// reads of each body: an Error (Describe, RefusalCode), a Deliver (the size
// check, then ToRecord), a StatusReply (ToBrokerStatus) and the publisher's
// rules for a PublishReply or an Error (PublishSession::OnReply, with two
// requests in flight).
//
// Properties: a refused frame comes with a reason; an accepted one has the
// version this client reads; a Deliver that passes the size check holds no
// more key and payload bytes than its frame; the publisher never resolves
// more messages than it queued, resolves a message as stored only from a
// reply that answers it, and gives every message back when it closes.
#include <string>
#include <vector>

#include "client/internal/connection.h"
#include "client/internal/publish_session.h"
#include "tests/client/fake_broker.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

namespace ci = client_internal;

void CheckBody(const ci::Frame& frame) {
  const wire::ClientEnvelope& envelope = frame.envelope();
  ORDO_FUZZ_CHECK(envelope.version() == ci::kClientFormatVersion);
  if (const wire::Error* error = envelope.body_as_Error()) {
    ORDO_FUZZ_CHECK(!ci::Describe(*error).empty());
    (void)ci::RefusalCode(error->code());
  }
  if (const wire::Deliver* deliver = envelope.body_as_Deliver()) {
    if (ci::DeliverSizeIsPlausible(*deliver, frame.size()) && deliver->messages() != nullptr) {
      size_t bytes = 0;
      for (const wire::StreamMessage* message : *deliver->messages()) {
        const Record record = ci::ToRecord(*message);
        bytes += record.key.size() + record.payload.size();
      }
      ORDO_FUZZ_CHECK(bytes <= frame.size());
    }
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
