// Fuzz target: the peer envelope, as a broker decodes every frame from a peer
// socket (broker/codec.h: DecodePeerFrame, DecodePeerMessage), consensus
// messages and snapshot transfer messages (the chunks a fetcher receives)
// alike.
//
// Properties: a failure is a typed error with a message; DecodePeerMessage
// agrees with DecodePeerFrame; the answer does not depend on the input's
// alignment; a frame one byte over the limit is refused before it is read;
// a decoded frame holds no more key, payload and chunk bytes than it has,
// and encodes to a frame that decodes to the same message.
#include <flatbuffers/flatbuffers.h>

#include "broker/codec.h"
#include "schemas/peer_generated.h"
#include "tests/fuzz/broker_support.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

using broker::DecodeCode;
using broker::DecodeStatus;
using broker::PeerFrame;
using broker::SnapshotMessage;

bool SameSnapshotMessage(const SnapshotMessage& a, const SnapshotMessage& b) {
  return a.op == b.op && a.from == b.from && a.to == b.to && a.handle == b.handle &&
         a.offset == b.offset && a.min_instance == b.min_instance && a.data == b.data &&
         a.data_checksum == b.data_checksum;
}

void CheckRoundTrip(const PeerFrame& frame, size_t input_bytes) {
  std::string again;
  if (frame.is_snapshot) {
    ORDO_FUZZ_CHECK(frame.snapshot.data.size() <= input_bytes);
    again = broker::EncodeSnapshotMessage(frame.snapshot);
  } else {
    ORDO_FUZZ_CHECK(ContentBytes(frame.message) <= input_bytes);
    again = broker::EncodePeerMessage(frame.message);
  }
  PeerFrame decoded;
  ORDO_FUZZ_CHECK_OK(broker::DecodePeerFrame(Bytes(again), again.size(), &decoded));
  ORDO_FUZZ_CHECK(decoded.is_snapshot == frame.is_snapshot);
  if (frame.is_snapshot) {
    ORDO_FUZZ_CHECK(SameSnapshotMessage(decoded.snapshot, frame.snapshot));
  } else {
    ORDO_FUZZ_CHECK(SameMessage(decoded.message, frame.message));
  }
}

}  // namespace

std::vector<Seed> Seeds() {
  std::vector<Seed> seeds;
  const auto add = [&](std::string name, std::string bytes) {
    seeds.push_back({std::move(name), std::move(bytes)});
  };
  const std::vector<paxos::Entry> entries = SampleEntries();
  for (int t = 0; t <= static_cast<int>(paxos::MessageType::kPreVoteGrant); ++t) {
    paxos::Message m;
    m.type = static_cast<paxos::MessageType>(t);
    m.from = paxos::NodeId(1);
    m.to = paxos::NodeId(3);
    m.ballot = paxos::Ballot{5, paxos::NodeId(1)};
    m.promised = paxos::Ballot{6, paxos::NodeId(2)};
    m.instance = paxos::Instance(7);
    m.instance_last = paxos::Instance(10);
    m.chosen = paxos::Instance(6);
    const std::string name = paxos::ToString(m.type);
    add("message-" + name, broker::EncodePeerMessage(m));
    if (m.type == paxos::MessageType::kPromise || m.type == paxos::MessageType::kAccept ||
        m.type == paxos::MessageType::kFetchReply) {
      m.entries = entries;
      m.first_retained = paxos::Instance(m.type == paxos::MessageType::kFetchReply ? 3 : 0);
      add("message-" + name + "-entries", broker::EncodePeerMessage(m));
    }
    if (m.type == paxos::MessageType::kAccept || m.type == paxos::MessageType::kCommit) {
      // Chain hints for two instances.
      m.chain.resize(2);
      for (size_t i = 0; i < 2; ++i) {
        m.chain[i].instance = paxos::Instance(5 + i);
        m.chain[i].before.bytes.fill(static_cast<uint8_t>(0x10 + i));
        m.chain[i].after.bytes.fill(static_cast<uint8_t>(0x11 + i));
      }
      add("message-" + name + "-chain", broker::EncodePeerMessage(m));
    }
  }
  {
    // A configuration entry, and the handover of a removed leader.
    paxos::Message m;
    m.type = paxos::MessageType::kAccept;
    m.from = paxos::NodeId(1);
    m.to = paxos::NodeId(2);
    m.ballot = paxos::Ballot{5, paxos::NodeId(1)};
    m.instance = paxos::Instance(11);
    m.instance_last = paxos::Instance(11);
    m.entries = {SampleConfigEntry()};
    add("message-Accept-config", broker::EncodePeerMessage(m));
    m.type = paxos::MessageType::kTimeoutNow;
    m.entries.clear();
    add("message-TimeoutNow", broker::EncodePeerMessage(m));
  }
  // Version 1: entries carry a Value table instead of value_bytes. No
  // writer makes it any more; readers still take it (schemas/peer.fbs).
  {
    flatbuffers::FlatBufferBuilder b;
    const wire::Ballot ballot(3, 2);
    const std::vector<flatbuffers::Offset<wire::ClientMessage>> messages = {
        wire::CreateClientMessageDirect(b, 1, 1, nullptr, nullptr),
        wire::CreateClientMessage(b, 2, 5, b.CreateVector<uint8_t>({'k'}),
                                  b.CreateVector<uint8_t>({0, 1, 2})),
    };
    const auto value =
        wire::CreateValue(b, wire::ValueKind::Batch, &ballot, b.CreateVector(messages));
    const std::vector<flatbuffers::Offset<wire::Entry>> wire_entries = {
        wire::CreateEntry(b, 7, &ballot, value)};
    const auto body = wire::CreatePeerMessage(b, wire::MessageType::Accept, 1, 2, &ballot, nullptr,
                                              7, 0, 6, b.CreateVector(wire_entries));
    wire::FinishSizePrefixedPeerEnvelopeBuffer(b, wire::CreatePeerEnvelope(b, 1, body));
    add("message-accept-version1",
        std::string(reinterpret_cast<const char*>(b.GetBufferPointer()), b.GetSize()));
  }
  SnapshotMessage request;
  request.op = SnapshotMessage::kRequest;
  request.from = 2;
  request.to = 1;
  request.min_instance = 100;
  add("snapshot-request", broker::EncodeSnapshotMessage(request));
  SnapshotMessage chunk = request;
  chunk.op = SnapshotMessage::kChunk;
  chunk.handle = broker::SnapshotHandle{100, 4096, 0x1234abcd};
  chunk.offset = 1024;
  chunk.data = std::string("ORDS snapshot bytes\0\1\2", 22);
  chunk.data_checksum = 0xcafe;
  add("snapshot-chunk", broker::EncodeSnapshotMessage(chunk));
  SnapshotMessage unavailable = request;
  unavailable.op = SnapshotMessage::kUnavailable;
  unavailable.handle = chunk.handle;
  add("snapshot-unavailable", broker::EncodeSnapshotMessage(unavailable));
  return seeds;
}

}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ordo;
  const std::span<const uint8_t> input(data, size);
  broker::PeerFrame frame;
  const broker::DecodeStatus s = broker::DecodePeerFrame(input, size, &frame);
  ORDO_FUZZ_CHECK(s.ok() == (s.code() == broker::DecodeCode::kOk));
  ORDO_FUZZ_CHECK(s.ok() || !s.message().empty());

  paxos::Message message;
  const broker::DecodeStatus sm = broker::DecodePeerMessage(input, size, &message);
  ORDO_FUZZ_CHECK(sm.ok() == (s.ok() && !frame.is_snapshot));

  const fuzz::Misaligned misaligned(input);
  broker::PeerFrame other;
  ORDO_FUZZ_CHECK(broker::DecodePeerFrame(misaligned.bytes(), size, &other).code() == s.code());

  if (size > 0) {
    ORDO_FUZZ_CHECK(broker::DecodePeerFrame(input, size - 1, &other).code() ==
                    broker::DecodeCode::kTooLarge);
  }
  if (s.ok()) {
    if (!frame.is_snapshot) ORDO_FUZZ_CHECK(fuzz::SameMessage(message, frame.message));
    fuzz::CheckRoundTrip(frame, size);
  }
  return 0;
}
