// Fuzz target: the client envelope, as a broker decodes every frame from a
// client (broker/codec.h: DecodeClientRequest, which ClientService calls on
// each request before it acts on it).
//
// Properties: a failure is a typed error with a message; the answer does
// not depend on alignment; a frame one byte over the limit is refused
// before it is read, under the request id decoding it gives; a decoded
// Publish keeps every limit (messages, key and message sizes, non-zero
// producer and sequence, each (producer, sequence) once) and holds no more
// bytes than its frame; a decoded request, encoded again as a client would,
// decodes to the same request.
#include <flatbuffers/flatbuffers.h>

#include <set>
#include <utility>

#include "broker/codec.h"
#include "schemas/client_generated.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

using broker::ClientRequest;

// Small limits, so inputs of a few KiB reach every refusal.
constexpr broker::ClientLimits kLimits{64 << 10, 1024};

flatbuffers::Offset<flatbuffers::Vector<uint8_t>> BytesOrAbsent(flatbuffers::FlatBufferBuilder& b,
                                                                std::string_view bytes) {
  if (bytes.empty()) return 0;  // as the client library writes an empty key
  return b.CreateVector(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// `request` as a client encodes it (client/internal: BuildEnvelope).
std::string Encode(const ClientRequest& request) {
  flatbuffers::FlatBufferBuilder b;
  wire::Body type = wire::Body::StatusRequest;
  flatbuffers::Offset<void> body;
  switch (request.kind) {
    case ClientRequest::Kind::kPublish: {
      std::vector<flatbuffers::Offset<wire::ClientMessage>> messages;
      for (const paxos::ClientMessage& m : request.messages) {
        const auto key = BytesOrAbsent(b, m.key);
        const auto payload = BytesOrAbsent(b, m.payload);
        messages.push_back(
            wire::CreateClientMessage(b, m.producer.value(), m.sequence, key, payload));
      }
      type = wire::Body::Publish;
      body = wire::CreatePublish(b, b.CreateVector(messages)).Union();
      break;
    }
    case ClientRequest::Kind::kSubscribe:
      type = wire::Body::Subscribe;
      body = wire::CreateSubscribe(b, request.from_offset, request.from_latest, request.credit,
                                   request.from_earliest)
                 .Union();
      break;
    case ClientRequest::Kind::kCredit:
      type = wire::Body::Credit;
      body = wire::CreateCredit(b, request.credit).Union();
      break;
    case ClientRequest::Kind::kFetch:
      type = wire::Body::Fetch;
      body = wire::CreateFetch(b, request.from_offset, request.max_messages, request.compacted)
                 .Union();
      break;
    case ClientRequest::Kind::kStatus:
      body = wire::CreateStatusRequest(b).Union();
      break;
    case ClientRequest::Kind::kMembers:
      type = wire::Body::MembersRequest;
      body = wire::CreateMembersRequest(b).Union();
      break;
    case ClientRequest::Kind::kChangeMembers: {
      const paxos::Member& m = request.change.member;
      const auto text = [](const std::string& s) { return s.empty() ? nullptr : s.c_str(); };
      const auto member = wire::CreateMemberDirect(b, m.id.value(), m.voter, text(m.peer),
                                                   text(m.client), text(m.public_key));
      wire::MemberChangeKind kind = wire::MemberChangeKind::AddLearner;
      if (request.change.kind == paxos::MembershipChange::Kind::kPromote) {
        kind = wire::MemberChangeKind::Promote;
      } else if (request.change.kind == paxos::MembershipChange::Kind::kRemove) {
        kind = wire::MemberChangeKind::Remove;
      }
      type = wire::Body::ChangeMembers;
      body = wire::CreateChangeMembers(b, kind, member).Union();
      break;
    }
  }
  wire::FinishClientEnvelopeBuffer(b, wire::CreateClientEnvelope(b, broker::kClientFormatVersion,
                                                                 request.request_id, type, body));
  return std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize());
}

bool SameRequest(const ClientRequest& a, const ClientRequest& b) {
  return a.kind == b.kind && a.request_id == b.request_id && a.from_offset == b.from_offset &&
         a.from_latest == b.from_latest && a.from_earliest == b.from_earliest &&
         a.credit == b.credit && a.max_messages == b.max_messages && a.compacted == b.compacted &&
         a.messages == b.messages && a.change.kind == b.change.kind &&
         a.change.member == b.change.member;
}

void CheckRequest(const ClientRequest& request, size_t frame_bytes) {
  if (request.kind == ClientRequest::Kind::kPublish) {
    ORDO_FUZZ_CHECK(!request.messages.empty());
    size_t content_bytes = 0;
    for (const paxos::ClientMessage& m : request.messages) {
      ORDO_FUZZ_CHECK(m.producer.value() != 0 && m.sequence != 0);
      ORDO_FUZZ_CHECK(m.key.size() <= broker::kKeyBytesMax);
      ORDO_FUZZ_CHECK(m.key.size() + m.payload.size() <= kLimits.message_bytes_max);
      content_bytes += m.key.size() + m.payload.size();
    }
    ORDO_FUZZ_CHECK(content_bytes <= frame_bytes);
    std::set<std::pair<uint64_t, uint64_t>> sequences;  // each once per request
    for (const paxos::ClientMessage& m : request.messages) {
      ORDO_FUZZ_CHECK(sequences.emplace(m.producer.value(), m.sequence).second);
    }
  } else {
    ORDO_FUZZ_CHECK(request.messages.empty());
  }
  if (request.kind == ClientRequest::Kind::kChangeMembers) {
    ORDO_FUZZ_CHECK(request.change.member.id != paxos::kNoNode);
    ORDO_FUZZ_CHECK(!request.change.member.voter);
    if (request.change.kind == paxos::MembershipChange::Kind::kAddLearner) {
      ORDO_FUZZ_CHECK(broker::CheckMember(request.change.member).empty());
    }
  }
  const std::string again = Encode(request);
  ClientRequest decoded;
  ORDO_FUZZ_CHECK_OK(broker::DecodeClientRequest(Bytes(again), kLimits, &decoded));
  ORDO_FUZZ_CHECK(SameRequest(decoded, request));
}

}  // namespace

std::vector<Seed> Seeds() {
  using Kind = ClientRequest::Kind;
  std::string binary;
  for (int c = 0; c < 256; c += 5) binary.push_back(static_cast<char>(c));
  const ClientRequest publish{
      .kind = Kind::kPublish,
      .request_id = 1,
      .messages = {{paxos::ProducerId(77), 1, "", "hello"},
                   {paxos::ProducerId(77), 2, "user-1", binary},
                   {paxos::ProducerId(78), 9, std::string(broker::kKeyBytesMax, 'k'), ""}}};
  return {
      {"publish", Encode(publish)},
      {"subscribe",
       Encode({.kind = Kind::kSubscribe, .request_id = 2, .from_offset = 1000, .credit = 100})},
      {"subscribe-earliest",
       Encode({.kind = Kind::kSubscribe, .request_id = 2, .from_earliest = true, .credit = 100})},
      {"subscribe-latest",
       Encode({.kind = Kind::kSubscribe, .request_id = 2, .from_latest = true, .credit = 1})},
      {"credit", Encode({.kind = Kind::kCredit, .request_id = 2, .credit = 50})},
      {"fetch",
       Encode({.kind = Kind::kFetch, .request_id = 3, .from_offset = 5, .max_messages = 10000})},
      {"fetch-compacted", Encode({.kind = Kind::kFetch,
                                  .request_id = 3,
                                  .from_offset = 5,
                                  .max_messages = 10000,
                                  .compacted = true})},
      {"status", Encode({.kind = Kind::kStatus, .request_id = ~uint64_t{0}})},
      {"members", Encode({.kind = Kind::kMembers, .request_id = 4})},
      {"change-add", Encode({.kind = Kind::kChangeMembers,
                             .request_id = 5,
                             .change = {paxos::MembershipChange::Kind::kAddLearner,
                                        {paxos::NodeId(6), false, "10.0.0.6:7106", "10.0.0.6:7206",
                                         "HQxNzNFoZs0Y5AQ>-(VM<ru<<^F#P$f-)PZjG0Nb"}}})},
      {"change-remove", Encode({.kind = Kind::kChangeMembers,
                                .request_id = 6,
                                .change = {paxos::MembershipChange::Kind::kRemove,
                                           {paxos::NodeId(3), false, "", "", ""}}})},
  };
}

}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ordo;
  const std::span<const uint8_t> frame(data, size);
  broker::ClientRequest request;
  const broker::DecodeStatus s = broker::DecodeClientRequest(frame, fuzz::kLimits, &request);
  ORDO_FUZZ_CHECK(s.ok() || !s.message().empty());

  const fuzz::Misaligned misaligned(frame);
  broker::ClientRequest other;
  ORDO_FUZZ_CHECK(broker::DecodeClientRequest(misaligned.bytes(), fuzz::kLimits, &other).code() ==
                  s.code());
  ORDO_FUZZ_CHECK(other.request_id == request.request_id);
  if (size > 0) {
    broker::ClientLimits tight = fuzz::kLimits;
    tight.frame_bytes_max = size - 1;
    ORDO_FUZZ_CHECK(broker::DecodeClientRequest(frame, tight, &other).code() ==
                    broker::DecodeCode::kTooLarge);
    // A frame over the limit still names its request, as decoding it would.
    ORDO_FUZZ_CHECK(other.request_id == request.request_id);
  }
  if (s.ok()) fuzz::CheckRequest(request, size);
  return 0;
}
