// broker/codec: round trips of peer frames and stored records, and every way
// a frame or record can be refused. Frames the encoder never produces (wrong
// version, unknown enum, missing required field, shared offsets) are built by
// hand with the generated FlatBuffers API.
#include "broker/codec.h"

#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "broker/crc32c.h"
#include "schemas/client_generated.h"
#include "schemas/meta_generated.h"
#include "schemas/peer_generated.h"
#include "schemas/record_generated.h"
#include "schemas/snapshot_generated.h"

namespace ordo::paxos {

// Readable gtest failure messages for the core's types.
template <typename Tag, typename Rep>
void PrintTo(const StrongInt<Tag, Rep>& v, std::ostream* os) {
  *os << v.value();
}
void PrintTo(const Ballot& b, std::ostream* os) { *os << ToString(b); }
void PrintTo(MessageType t, std::ostream* os) { *os << ToString(t); }
void PrintTo(ValueKind k, std::ostream* os) { *os << ToString(k); }
void PrintTo(StoreCode c, std::ostream* os) { *os << ToString(c); }

}  // namespace ordo::paxos

namespace ordo::broker {

void PrintTo(DecodeCode c, std::ostream* os) { *os << ToString(c); }

namespace {

namespace fb = flatbuffers;
using paxos::Ballot;
using paxos::ClientMessage;
using paxos::Entry;
using paxos::HardState;
using paxos::Instance;
using paxos::Message;
using paxos::MessageType;
using paxos::NodeId;
using paxos::ProducerId;
using paxos::ValueKind;

constexpr size_t kFrameBytesMax = size_t{64} << 20;
constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
constexpr uint32_t kU32Max = std::numeric_limits<uint32_t>::max();

constexpr MessageType kAllMessageTypes[] = {
    MessageType::kPrepare,     MessageType::kPromise,      MessageType::kAccept,
    MessageType::kAccepted,    MessageType::kReject,       MessageType::kCommit,
    MessageType::kCommitReply, MessageType::kFetch,        MessageType::kFetchReply,
    MessageType::kPreVote,     MessageType::kPreVoteGrant, MessageType::kTimeoutNow,
};

Ballot MakeBallot(uint64_t round, uint32_t node) { return Ballot{round, NodeId(node)}; }

// Every byte value, twice, so zero bytes sit in the middle of the data.
std::string AllByteValues() {
  std::string s;
  for (int round = 0; round < 2; ++round) {
    for (int b = 0; b < 256; ++b) s.push_back(static_cast<char>(b));
  }
  return s;
}

ClientMessage MakeClientMessage(uint64_t producer, uint64_t sequence, std::string key,
                                std::string payload) {
  return ClientMessage{ProducerId(producer), sequence, std::move(key), std::move(payload)};
}

// One entry of every value kind, with binary payloads, an empty key, an empty
// payload and an empty batch.
std::vector<Entry> SampleEntries() {
  std::vector<ClientMessage> messages = {
      MakeClientMessage(1, 1, "", "hello"),
      MakeClientMessage(kU64Max, kU64Max, std::string("k\0y", 3), AllByteValues()),
      MakeClientMessage(2, 3, "key", ""),
      MakeClientMessage(3, 4, "", std::string(7, '\0')),
  };
  return {
      Entry{Instance(7), MakeBallot(3, 2), paxos::MakeBatch(MakeBallot(2, 1), messages)},
      Entry{Instance(8), MakeBallot(3, 2), paxos::MakeNoop(MakeBallot(3, 2))},
      Entry{Instance(9), MakeBallot(3, 2), paxos::MakeBarrier(MakeBallot(3, 2))},
      Entry{Instance(10), MakeBallot(4, 3), paxos::MakeBatch(MakeBallot(4, 3), {})},
  };
}

std::vector<paxos::ChainHint> SampleChainHints() {
  std::vector<paxos::ChainHint> hints(2);
  for (size_t i = 0; i < hints.size(); ++i) {
    hints[i].instance = Instance(4 + 2 * i);
    for (size_t b = 0; b < ChainValue::kBytes; ++b) {
      hints[i].before.bytes[b] = static_cast<uint8_t>(i * 64 + b);
      hints[i].after.bytes[b] = static_cast<uint8_t>(255 - b - i);
    }
  }
  return hints;
}

Message SampleMessage(MessageType type) {
  Message m;
  m.type = type;
  m.from = NodeId(1);
  m.to = NodeId(3);
  m.ballot = MakeBallot(5, 1);
  m.promised = MakeBallot(6, 2);
  m.instance = Instance(7);
  m.instance_last = Instance(10);
  m.chosen = Instance(6);
  m.entries = SampleEntries();
  if (type == MessageType::kAccept || type == MessageType::kCommit) m.chain = SampleChainHints();
  return m;
}

void ExpectSameMessage(const Message& actual, const Message& expected) {
  EXPECT_EQ(actual.type, expected.type);
  EXPECT_EQ(actual.from, expected.from);
  EXPECT_EQ(actual.to, expected.to);
  EXPECT_EQ(actual.ballot, expected.ballot);
  EXPECT_EQ(actual.promised, expected.promised);
  EXPECT_EQ(actual.instance, expected.instance);
  EXPECT_EQ(actual.instance_last, expected.instance_last);
  EXPECT_EQ(actual.chosen, expected.chosen);
  EXPECT_EQ(actual.chain, expected.chain);
  ASSERT_EQ(actual.entries.size(), expected.entries.size());
  for (size_t i = 0; i < actual.entries.size(); ++i) {
    ASSERT_NE(actual.entries[i].value, nullptr) << "entry " << i;
    EXPECT_TRUE(paxos::SameEntry(actual.entries[i], expected.entries[i])) << "entry " << i;
  }
}

Message RoundTrip(const Message& message) {
  const std::string frame = EncodePeerMessage(message);
  Message out;
  const DecodeStatus status = DecodePeerMessage(AsBytes(frame), kFrameBytesMax, &out);
  EXPECT_TRUE(status.ok()) << status.ToString();
  return out;
}

// A message decoders must leave alone when they fail.
Message Sentinel() {
  Message m;
  m.type = MessageType::kFetch;
  m.chosen = Instance(12345);
  return m;
}

void ExpectUntouched(const Message& m) {
  EXPECT_EQ(m.type, MessageType::kFetch);
  EXPECT_EQ(m.chosen, Instance(12345));
  EXPECT_TRUE(m.entries.empty());
}

DecodeStatus DecodeFrame(std::string_view frame, Message* out) {
  return DecodePeerMessage(AsBytes(frame), kFrameBytesMax, out);
}

DecodeCode DecodeFrameCode(std::string_view frame) {
  Message out = Sentinel();
  const DecodeStatus status = DecodeFrame(frame, &out);
  if (!status.ok()) {
    ExpectUntouched(out);
    EXPECT_FALSE(status.message().empty());
  }
  return status.code();
}

uint32_t LoadLe32(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<uint8_t>(s[at + i])) << (8 * i);
  return v;
}

void StoreLe32(uint32_t v, std::string* s, size_t at) {
  for (size_t i = 0; i < 4; ++i) (*s)[at + i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

std::string BufferOf(const fb::FlatBufferBuilder& builder) {
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

// --- Hand-built frames, for shapes EncodePeerMessage never produces ---

std::string FinishFrame(fb::FlatBufferBuilder& builder, fb::Offset<wire::PeerMessage> message,
                        uint16_t version = kPeerFormatVersion) {
  wire::FinishSizePrefixedPeerEnvelopeBuffer(builder,
                                             wire::CreatePeerEnvelope(builder, version, message));
  return BufferOf(builder);
}

fb::Offset<wire::Value> HandValue(fb::FlatBufferBuilder& builder,
                                  wire::ValueKind kind = wire::ValueKind::Noop) {
  const wire::Ballot origin(1, 1);
  return wire::CreateValue(builder, kind, &origin);
}

fb::Offset<wire::PeerMessage> HandMessage(
    fb::FlatBufferBuilder& builder, wire::MessageType type,
    fb::Offset<fb::Vector<fb::Offset<wire::Entry>>> entries = 0) {
  const wire::Ballot ballot(2, 1);
  return wire::CreatePeerMessage(builder, type, 1, 2, &ballot, &ballot, 1, 1, 0, entries);
}

// Prefixes a hand-built record buffer with its CRC32C, as the store does.
std::string WithCrc(const fb::FlatBufferBuilder& builder) {
  std::string record(kRecordChecksumBytes, '\0');
  record += BufferOf(builder);
  StoreLe32(Crc32c(std::string_view(record).substr(kRecordChecksumBytes)), &record, 0);
  return record;
}

// ============================================================================
// Peer frames: round trips
// ============================================================================

TEST(PeerCodecTest, RoundTripsEveryMessageTypeWithEveryValueKind) {
  for (MessageType type : kAllMessageTypes) {
    SCOPED_TRACE(paxos::ToString(type));
    const Message message = SampleMessage(type);
    ExpectSameMessage(RoundTrip(message), message);

    Message bare = message;
    bare.entries.clear();
    ExpectSameMessage(RoundTrip(bare), bare);
  }
}

TEST(PeerCodecTest, RoundTripsAllZeroMessage) {
  const Message message;  // zero ballots and instances, no entries
  ExpectSameMessage(RoundTrip(message), message);
}

TEST(PeerCodecTest, RoundTripsExtremeValues) {
  Message m = SampleMessage(MessageType::kAccept);
  m.from = NodeId(kU32Max);
  m.to = NodeId(kU32Max);
  m.ballot = MakeBallot(kU64Max, kU32Max);
  m.promised = MakeBallot(kU64Max, 0);
  m.instance = Instance(kU64Max);
  m.instance_last = Instance(kU64Max);
  m.chosen = Instance(kU64Max);
  m.entries = {Entry{Instance(kU64Max), MakeBallot(kU64Max, kU32Max),
                     paxos::MakeBarrier(MakeBallot(kU64Max, kU32Max))}};
  ExpectSameMessage(RoundTrip(m), m);
}

TEST(PeerCodecTest, RoundTripsBinaryKeysAndPayloads) {
  const std::vector<ClientMessage> messages = {
      MakeClientMessage(9, 1, AllByteValues(), AllByteValues()),
      MakeClientMessage(9, 2, std::string(1, '\0'), std::string(1, '\0')),
      MakeClientMessage(9, 3, "", ""),
      MakeClientMessage(9, 4, "\xFF\xFE", std::string("\0\0\0\xFF", 4)),
  };
  Message m = SampleMessage(MessageType::kAccept);
  m.entries = {Entry{Instance(1), MakeBallot(1, 1), paxos::MakeBatch(MakeBallot(1, 1), messages)}};
  const Message decoded = RoundTrip(m);
  ExpectSameMessage(decoded, m);
  ASSERT_EQ(decoded.entries.size(), 1u);
  EXPECT_EQ(decoded.entries[0].value->messages, messages);
}

TEST(PeerCodecTest, RoundTripsLargeBatch) {
  std::mt19937_64 rng(42);
  std::vector<ClientMessage> messages;
  for (uint64_t i = 1; i <= 20000; ++i) {
    std::string payload(rng() % 200, '\0');
    for (char& c : payload) c = static_cast<char>(rng());
    messages.push_back(MakeClientMessage(rng(), i, i % 3 == 0 ? "" : std::to_string(i), payload));
  }
  messages.push_back(MakeClientMessage(1, 20001, "big", std::string(size_t{4} << 20, 'x')));
  Message m = SampleMessage(MessageType::kAccept);
  m.entries = {Entry{Instance(100), MakeBallot(8, 2), paxos::MakeBatch(MakeBallot(8, 2), messages)},
               Entry{Instance(101), MakeBallot(8, 2), paxos::MakeNoop(MakeBallot(8, 2))}};
  const std::string frame = EncodePeerMessage(m);

  Message out;
  ASSERT_TRUE(DecodePeerMessage(AsBytes(frame), frame.size(), &out).ok());  // limit is inclusive
  ExpectSameMessage(out, m);
  EXPECT_EQ(DecodePeerMessage(AsBytes(frame), frame.size() - 1, &out).code(),
            DecodeCode::kTooLarge);
}

// The codec carries what it is given; refusing messages on a non-batch value
// is the core's business, if anyone's.
TEST(PeerCodecTest, CarriesMessagesOfNonBatchValues) {
  auto value = std::make_shared<paxos::Value>();
  value->kind = ValueKind::kNoop;
  value->origin = MakeBallot(1, 1);
  value->messages = {MakeClientMessage(1, 1, "k", "v")};
  Message m = SampleMessage(MessageType::kPromise);
  m.entries = {Entry{Instance(3), MakeBallot(1, 1), value}};
  ExpectSameMessage(RoundTrip(m), m);
}

TEST(PeerCodecTest, FrameLayoutIsSizePrefixIdentifierThenVersion) {
  const std::string frame = EncodePeerMessage(SampleMessage(MessageType::kCommit));
  ASSERT_GE(frame.size(), 12u);
  EXPECT_EQ(LoadLe32(frame, 0), frame.size() - 4);
  EXPECT_EQ(frame.substr(8, 4), "ORDP");
  const auto* envelope = fb::GetSizePrefixedRoot<wire::PeerEnvelope>(frame.data());
  EXPECT_EQ(envelope->version(), 2);
  EXPECT_EQ(kPeerFormatVersion, 2);
}

TEST(PeerCodecTest, DecodesFramesAtAnyAlignment) {
  const Message m = SampleMessage(MessageType::kFetchReply);
  const std::string frame = EncodePeerMessage(m);
  std::vector<uint8_t> storage(frame.size() + 16);
  for (size_t offset = 0; offset < 8; ++offset) {
    std::memcpy(storage.data() + offset, frame.data(), frame.size());
    Message out;
    const DecodeStatus s = DecodePeerMessage(
        std::span<const uint8_t>(storage.data() + offset, frame.size()), kFrameBytesMax, &out);
    ASSERT_TRUE(s.ok()) << "offset " << offset << ": " << s.ToString();
    ExpectSameMessage(out, m);
  }
}

// ============================================================================
// Peer frames: what decoding refuses
// ============================================================================

TEST(PeerDecodeTest, RefusesEmptyFrame) {
  EXPECT_EQ(DecodeFrameCode(""), DecodeCode::kTruncated);
  Message out = Sentinel();
  EXPECT_FALSE(DecodePeerMessage({}, kFrameBytesMax, &out).ok());
  ExpectUntouched(out);
}

TEST(PeerDecodeTest, RefusesOversizedFrameBeforeReadingIt) {
  const std::string frame = EncodePeerMessage(SampleMessage(MessageType::kAccept));
  Message out = Sentinel();
  DecodeStatus s = DecodePeerMessage(AsBytes(frame), frame.size() - 1, &out);
  EXPECT_EQ(s.code(), DecodeCode::kTooLarge);
  EXPECT_NE(s.message().find("limit"), std::string::npos) << s.message();
  ExpectUntouched(out);
  // Garbage over the limit is "too large", not "malformed": nothing was read.
  const std::string garbage(1000, '\xAB');
  EXPECT_EQ(DecodePeerMessage(AsBytes(garbage), 999, &out).code(), DecodeCode::kTooLarge);
  EXPECT_EQ(DecodePeerMessage(AsBytes(garbage), 0, &out).code(), DecodeCode::kTooLarge);
  ExpectUntouched(out);
}

TEST(PeerDecodeTest, RefusesFrameTruncatedAtEveryLength) {
  const std::string frame = EncodePeerMessage(SampleMessage(MessageType::kAccept));
  for (size_t n = 0; n < frame.size(); ++n) {
    const DecodeCode code = DecodeFrameCode(std::string_view(frame).substr(0, n));
    EXPECT_NE(code, DecodeCode::kOk) << "truncated to " << n << " of " << frame.size();
  }
}

TEST(PeerDecodeTest, RefusesTrailingBytes) {
  std::string frame = EncodePeerMessage(SampleMessage(MessageType::kCommit));
  frame.push_back('\0');
  EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kMalformed);
}

// Truncations whose size prefix is patched to match get past the first check
// and reach the verifier. They must never decode into anything but the
// original message (cutting only trailing alignment padding is harmless).
TEST(PeerDecodeTest, TruncatedFramesWithPatchedSizeAreNeverMisread) {
  const Message m = SampleMessage(MessageType::kPromise);
  const std::string frame = EncodePeerMessage(m);
  for (size_t n = 4; n < frame.size(); ++n) {
    std::string cut = frame.substr(0, n);
    StoreLe32(static_cast<uint32_t>(n - 4), &cut, 0);
    Message out;
    if (DecodeFrame(cut, &out).ok()) {
      SCOPED_TRACE("truncated to " + std::to_string(n));
      EXPECT_GE(n, frame.size() - 3);  // only padding may go
      ExpectSameMessage(out, m);
    }
  }
}

TEST(PeerDecodeTest, RefusesRandomGarbage) {
  std::mt19937_64 rng(1234);
  for (int trial = 0; trial < 5000; ++trial) {
    std::string garbage(rng() % 1024, '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    // Half the buffers get a plausible header so they reach the verifier.
    if (trial % 2 == 1 && garbage.size() >= 12) {
      StoreLe32(static_cast<uint32_t>(garbage.size() - 4), &garbage, 0);
      garbage.replace(8, 4, "ORDP");
    }
    EXPECT_NE(DecodeFrameCode(garbage), DecodeCode::kOk) << "trial " << trial;
  }
}

// Random corruption of a valid frame must never crash or read out of bounds
// (the sanitizer build checks the latter); what does decode must re-encode
// and decode to the same message.
TEST(PeerDecodeTest, SurvivesRandomCorruptionOfValidFrames) {
  std::mt19937_64 rng(99);
  const std::string frame = EncodePeerMessage(SampleMessage(MessageType::kAccept));
  int decoded = 0;
  for (int trial = 0; trial < 5000; ++trial) {
    std::string mutated = frame;
    const int flips = 1 + static_cast<int>(rng() % 8);
    for (int i = 0; i < flips; ++i) {
      // Leave the size prefix alone half the time so the verifier is reached.
      const size_t at = trial % 2 == 0 ? 4 + rng() % (frame.size() - 4) : rng() % frame.size();
      mutated[at] = static_cast<char>(rng());
    }
    Message out;
    if (!DecodeFrame(mutated, &out).ok()) continue;
    ++decoded;
    ExpectSameMessage(RoundTrip(out), out);
  }
  // Most corruptions land in payload bytes and still decode: the point is
  // that none of them crash, and that both outcomes were exercised.
  EXPECT_GT(decoded, 0);
  EXPECT_LT(decoded, 5000);
}

TEST(PeerDecodeTest, RefusesWrongFileIdentifier) {
  std::string frame = EncodePeerMessage(SampleMessage(MessageType::kCommit));
  frame.replace(8, 4, "ORDL");
  Message out = Sentinel();
  const DecodeStatus s = DecodeFrame(frame, &out);
  EXPECT_EQ(s.code(), DecodeCode::kWrongIdentifier);
  EXPECT_NE(s.message().find("\"ORDL\""), std::string::npos) << s.message();
  ExpectUntouched(out);

  frame.replace(8, 4, std::string("\0\x01\"\\", 4));
  EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kWrongIdentifier);
  EXPECT_NE(DecodeFrame(frame, &out).message().find("\\x00\\x01\\x22\\x5c"), std::string::npos)
      << DecodeFrame(frame, &out).message();
}

TEST(PeerDecodeTest, RefusesStoredRecordOnPeerSocket) {
  const std::string record = EncodeLogRecord(SampleEntries()[0]);
  EXPECT_NE(DecodeFrameCode(record), DecodeCode::kOk);
  // Even with a size prefix in front, the identifier gives it away.
  std::string framed(4, '\0');
  framed += record.substr(kRecordChecksumBytes);
  StoreLe32(static_cast<uint32_t>(framed.size() - 4), &framed, 0);
  EXPECT_EQ(DecodeFrameCode(framed), DecodeCode::kWrongIdentifier);
}

TEST(PeerDecodeTest, RefusesOtherVersions) {
  for (uint16_t version : {0, 3, 0xFFFF}) {
    fb::FlatBufferBuilder builder;
    const std::string frame =
        FinishFrame(builder, HandMessage(builder, wire::MessageType::Commit), version);
    Message out = Sentinel();
    const DecodeStatus s = DecodeFrame(frame, &out);
    EXPECT_EQ(s.code(), DecodeCode::kWrongVersion) << "version " << version;
    EXPECT_NE(s.message().find("version " + std::to_string(version)), std::string::npos)
        << s.message();
    ExpectUntouched(out);
  }
  // The same frame at versions 1 and 2 decodes: the hand-built frames are sound.
  for (uint16_t version : {1, 2}) {
    fb::FlatBufferBuilder builder;
    EXPECT_EQ(DecodeFrameCode(FinishFrame(
                  builder, HandMessage(builder, wire::MessageType::Commit), version)),
              DecodeCode::kOk);
  }
}

// A future version's frame reports its version even when its layout would
// not verify as version 1: here its message is missing altogether.
TEST(PeerDecodeTest, ReportsVersionBeforeVerifyingTheRest) {
  fb::FlatBufferBuilder builder;
  wire::PeerEnvelopeBuilder envelope(builder);
  envelope.add_version(3);
  const fb::Offset<wire::PeerEnvelope> root(builder.EndTable(envelope.start_));
  wire::FinishSizePrefixedPeerEnvelopeBuffer(builder, root);
  EXPECT_EQ(DecodeFrameCode(BufferOf(builder)), DecodeCode::kWrongVersion);
}

TEST(PeerDecodeTest, RefusesUnknownMessageType) {
  for (int type : {12, 100, 255}) {
    fb::FlatBufferBuilder builder;
    const std::string frame =
        FinishFrame(builder, HandMessage(builder, static_cast<wire::MessageType>(type)));
    EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kInvalid) << "type " << type;
  }
}

TEST(PeerDecodeTest, RefusesUnknownValueKind) {
  for (int kind : {4, 200}) {
    fb::FlatBufferBuilder builder;
    const wire::Ballot ballot(1, 1);
    const auto value = HandValue(builder, static_cast<wire::ValueKind>(kind));
    const std::vector<fb::Offset<wire::Entry>> entries = {
        wire::CreateEntry(builder, 1, &ballot, HandValue(builder)),
        wire::CreateEntry(builder, 2, &ballot, value)};
    const std::string frame = FinishFrame(
        builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)));
    Message out = Sentinel();
    const DecodeStatus s = DecodeFrame(frame, &out);
    EXPECT_EQ(s.code(), DecodeCode::kInvalid) << "kind " << kind;
    EXPECT_NE(s.message().find("entry 1 (instance 2)"), std::string::npos) << s.message();
    ExpectUntouched(out);
  }
}

TEST(PeerDecodeTest, RefusesEntryWithoutValue) {
  fb::FlatBufferBuilder builder;
  wire::EntryBuilder entry(builder);
  entry.add_instance(1);
  // EndTable directly: the generated Finish() would insist on the value.
  const fb::Offset<wire::Entry> bare(builder.EndTable(entry.start_));
  const std::vector<fb::Offset<wire::Entry>> entries = {bare};
  const std::string frame = FinishFrame(
      builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)));
  EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kMalformed);
}

// value_bytes by hand: a Value buffer of its own, aligned in the frame as
// the encoder aligns it.
fb::Offset<fb::Vector<uint8_t>> HandValueBytes(fb::FlatBufferBuilder& builder,
                                               std::string_view bytes) {
  builder.ForceVectorAlignment(bytes.size(), 1, 8);
  return builder.CreateVector(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

std::string HandValueBuffer(wire::ValueKind kind = wire::ValueKind::Noop) {
  fb::FlatBufferBuilder nested;
  nested.Finish(HandValue(nested, kind));
  return BufferOf(nested);
}

// Version 1 peers and stores wrote the value as a table: still read.
TEST(PeerDecodeTest, ReadsVersion1EntriesWithValueTables) {
  fb::FlatBufferBuilder builder;
  const wire::Ballot ballot(2, 1);
  const std::vector<fb::Offset<wire::Entry>> entries = {
      wire::CreateEntry(builder, 7, &ballot, HandValue(builder, wire::ValueKind::Barrier))};
  const std::string frame = FinishFrame(
      builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)), 1);
  Message out;
  ASSERT_TRUE(DecodeFrame(frame, &out).ok());
  ASSERT_EQ(out.entries.size(), 1u);
  EXPECT_EQ(out.entries[0].instance, Instance(7));
  EXPECT_EQ(out.entries[0].value->kind, paxos::ValueKind::kBarrier);
  EXPECT_EQ(out.entries[0].value->encoded.size, 0u);  // encoded again when sent on
}

TEST(PeerDecodeTest, RefusesEntryWithBothValueAndValueBytes) {
  fb::FlatBufferBuilder builder;
  const wire::Ballot ballot(2, 1);
  const auto bytes = HandValueBytes(builder, HandValueBuffer());
  const std::vector<fb::Offset<wire::Entry>> entries = {
      wire::CreateEntry(builder, 1, &ballot, HandValue(builder), bytes)};
  const std::string frame = FinishFrame(
      builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)));
  EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kMalformed);
}

TEST(PeerDecodeTest, RefusesValueBytesThatAreNotAValue) {
  std::string garbage(64, '\xff');
  const std::string truncated = HandValueBuffer().substr(0, 6);
  for (const std::string& bytes : {garbage, truncated, std::string("abc")}) {
    fb::FlatBufferBuilder builder;
    const wire::Ballot ballot(2, 1);
    const auto value_bytes = HandValueBytes(builder, bytes);
    const std::vector<fb::Offset<wire::Entry>> entries = {
        wire::CreateEntry(builder, 1, &ballot, 0, value_bytes)};
    const std::string frame = FinishFrame(
        builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)));
    EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kMalformed) << bytes.size();
  }
  // The control: the same shape with a real Value buffer decodes.
  fb::FlatBufferBuilder builder;
  const wire::Ballot ballot(2, 1);
  const auto value_bytes = HandValueBytes(builder, HandValueBuffer(wire::ValueKind::Barrier));
  const std::vector<fb::Offset<wire::Entry>> entries = {
      wire::CreateEntry(builder, 1, &ballot, 0, value_bytes)};
  const std::string frame = FinishFrame(
      builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)));
  EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kOk);
}

// A batch is encoded once: a follower stores and forwards the bytes it
// received, and they make the same record the leader's value makes.
TEST(PeerCodecTest, DecodedValuesKeepTheirEncodingForTheLogRecord) {
  Message m = SampleMessage(MessageType::kAccept);
  m.entries = SampleEntries();
  const Message out = RoundTrip(m);
  ASSERT_EQ(out.entries.size(), m.entries.size());
  for (size_t i = 0; i < out.entries.size(); ++i) {
    EXPECT_GT(out.entries[i].value->encoded.size, 0u) << i;
    EXPECT_EQ(EncodeLogRecord(out.entries[i]), EncodeLogRecord(m.entries[i])) << i;
  }
  // A copy may be changed, so it does not carry the cached encoding.
  paxos::Value copy = *out.entries[0].value;
  EXPECT_EQ(copy.encoded.size, 0u);
  EXPECT_EQ(copy, *out.entries[0].value);
}

// Decoded keys and payloads are views into a buffer the value owns (one per
// batch, not one per message): they must not point into the frame, which
// the broker reuses as soon as the frame is decoded.
TEST(PeerCodecTest, DecodedMessagesDoNotPointIntoTheFrame) {
  Message m = SampleMessage(MessageType::kAccept);
  m.entries = SampleEntries();
  std::string frame = EncodePeerMessage(m);
  Message out;
  ASSERT_TRUE(DecodeFrame(frame, &out).ok());
  std::fill(frame.begin(), frame.end(), 'Z');
  ASSERT_EQ(out.entries.size(), m.entries.size());
  for (size_t i = 0; i < out.entries.size(); ++i) {
    EXPECT_EQ(out.entries[i].value->messages, m.entries[i].value->messages) << i;
  }
  // A message copied out of its value keeps its bytes alive by itself.
  const ClientMessage kept = out.entries[0].value->messages[1];
  out = Message();
  EXPECT_EQ(kept, m.entries[0].value->messages[1]);

  // The same for a version 1 value table, whose bytes are gathered into one
  // buffer of the value's own.
  fb::FlatBufferBuilder builder;
  const wire::Ballot ballot(2, 1), origin(1, 1);
  std::vector<fb::Offset<wire::ClientMessage>> msgs;
  for (uint64_t i = 1; i <= 3; ++i) {
    const std::string key = i == 2 ? "" : "k" + std::to_string(i);
    const std::string payload(20 * i, static_cast<char>('a' + i));
    msgs.push_back(wire::CreateClientMessage(
        builder, 9, i,
        key.empty() ? 0
                    : builder.CreateVector(reinterpret_cast<const uint8_t*>(key.data()), key.size()),
        builder.CreateVector(reinterpret_cast<const uint8_t*>(payload.data()), payload.size())));
  }
  const auto value =
      wire::CreateValue(builder, wire::ValueKind::Batch, &origin, builder.CreateVector(msgs));
  const std::vector<fb::Offset<wire::Entry>> entries = {
      wire::CreateEntry(builder, 7, &ballot, value)};
  std::string v1 = FinishFrame(
      builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)), 1);
  ASSERT_TRUE(DecodeFrame(v1, &out).ok());
  std::fill(v1.begin(), v1.end(), 'Z');
  ASSERT_EQ(out.entries.size(), 1u);
  const auto& got = out.entries[0].value->messages;
  ASSERT_EQ(got.size(), 3u);
  for (uint64_t i = 1; i <= 3; ++i) {
    EXPECT_EQ(got[i - 1].key, i == 2 ? std::string() : "k" + std::to_string(i)) << i;
    EXPECT_EQ(got[i - 1].payload, std::string(20 * i, static_cast<char>('a' + i))) << i;
    EXPECT_EQ(got[i - 1].sequence, i);
  }
}

TEST(PeerDecodeTest, RefusesEnvelopeWithoutMessage) {
  fb::FlatBufferBuilder builder;
  wire::PeerEnvelopeBuilder envelope(builder);
  envelope.add_version(kPeerFormatVersion);
  const fb::Offset<wire::PeerEnvelope> root(builder.EndTable(envelope.start_));
  wire::FinishSizePrefixedPeerEnvelopeBuffer(builder, root);
  // Verified (neither field is required), then refused: exactly one is set.
  EXPECT_EQ(DecodeFrameCode(BufferOf(builder)), DecodeCode::kInvalid);
}

TEST(PeerDecodeTest, SnapshotMessagesRoundTripAndAreNotConsensusMessages) {
  SnapshotMessage m;
  m.op = SnapshotMessage::kChunk;
  m.from = 2;
  m.to = 3;
  m.handle = SnapshotHandle{480, 123456, 0xdeadbeef};
  m.offset = 4096;
  m.data = std::string(1000, 'x');
  m.data_checksum = 77;
  const std::string frame = EncodeSnapshotMessage(m);
  PeerFrame f;
  ASSERT_TRUE(DecodePeerFrame(AsBytes(frame), 1 << 20, &f).ok());
  ASSERT_TRUE(f.is_snapshot);
  EXPECT_EQ(f.snapshot.op, SnapshotMessage::kChunk);
  EXPECT_EQ(f.snapshot.from, 2u);
  EXPECT_EQ(f.snapshot.handle, m.handle);
  EXPECT_EQ(f.snapshot.offset, 4096u);
  EXPECT_EQ(f.snapshot.data, m.data);
  EXPECT_EQ(f.snapshot.data_checksum, 77u);
  paxos::Message consensus;
  EXPECT_EQ(DecodePeerMessage(AsBytes(frame), 1 << 20, &consensus).code(), DecodeCode::kInvalid);
}

TEST(SnapshotFileTest, RoundTripsAndIsCanonical) {
  paxos::AppliedSnapshot st;
  st.instance = paxos::Instance(96);
  st.next_offset = paxos::Offset(1000);
  st.barrier = paxos::Ballot{3, paxos::NodeId(2)};
  st.producers.push_back({paxos::ProducerId(5), 40, {{1, 0, 40}}});
  std::vector<StreamMessage> keyed = {{10, 5, 11, "a", "first"}, {999, 5, 40, "b", "last"}};
  const std::string a = EncodeSnapshotFile(st, keyed);
  EXPECT_EQ(a, EncodeSnapshotFile(st, keyed));  // identical bytes on every broker
  paxos::AppliedSnapshot back;
  std::vector<StreamMessage> keyed_back;
  ASSERT_TRUE(DecodeSnapshotFile(AsBytes(a), &back, &keyed_back).ok());
  EXPECT_EQ(back, st);
  EXPECT_EQ(keyed_back, keyed);
  std::string broken = a;
  broken.resize(broken.size() / 2);
  EXPECT_FALSE(DecodeSnapshotFile(AsBytes(broken), &back, nullptr).ok());
}

// A hand-built snapshot file: `producers` and `keyed` as given.
std::string HandSnapshot(fb::FlatBufferBuilder& builder,
                         std::vector<fb::Offset<wire::ProducerState>> producers,
                         std::vector<fb::Offset<wire::KeyedMessage>> keyed) {
  const wire::Ballot barrier(1, 1);
  wire::FinishSnapshotBuffer(
      builder, wire::CreateSnapshot(builder, kSnapshotFormatVersion, 10, 20, &barrier,
                                    builder.CreateVector(producers), builder.CreateVector(keyed)));
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

DecodeCode DecodeSnapshotCode(const std::string& file) {
  paxos::AppliedSnapshot state;
  std::vector<StreamMessage> keyed;
  return DecodeSnapshotFile(AsBytes(file), &state, &keyed).code();
}

// Found by tests/fuzz (snapshot): a zero-length key passes the verifier
// (`required` only asks for the field), but the compacted view cannot hold
// it and the encoder cannot write it back.
TEST(SnapshotFileTest, RefusesKeysTheCompactedViewCannotHold) {
  for (const size_t key_bytes : {size_t{0}, kKeyBytesMax + 1}) {
    fb::FlatBufferBuilder builder;
    const std::vector<uint8_t> key(key_bytes, 'k');
    const std::string file =
        HandSnapshot(builder, {}, {wire::CreateKeyedMessageDirect(builder, &key, 1, 2, 3)});
    EXPECT_EQ(DecodeSnapshotCode(file), DecodeCode::kInvalid) << key_bytes << "-byte key";
  }
}

// Many keyed messages sharing one payload, or many producers sharing one
// vector of sequence runs: a small file that would decode into far more
// memory than it occupies.
TEST(SnapshotFileTest, RefusesSharedOffsetInflation) {
  {
    fb::FlatBufferBuilder builder;
    const auto payload = builder.CreateVector(std::vector<uint8_t>(1000, 'p'));
    std::vector<fb::Offset<wire::KeyedMessage>> keyed;
    for (uint8_t i = 0; i < 100; ++i) {
      keyed.push_back(
          wire::CreateKeyedMessage(builder, builder.CreateVector(&i, 1), i, 1, 1, payload));
    }
    EXPECT_EQ(DecodeSnapshotCode(HandSnapshot(builder, {}, keyed)), DecodeCode::kInvalid);
  }
  {
    fb::FlatBufferBuilder builder;
    const std::vector<wire::SequenceRun> many(100, wire::SequenceRun(1, 0, 1));
    const auto runs = builder.CreateVectorOfStructs(many);
    std::vector<fb::Offset<wire::ProducerState>> producers;
    for (uint64_t id = 1; id <= 100; ++id) {
      producers.push_back(wire::CreateProducerState(builder, id, 1, runs));
    }
    EXPECT_EQ(DecodeSnapshotCode(HandSnapshot(builder, producers, {})), DecodeCode::kInvalid);
  }
}

// Found by tests/fuzz (lmdb_formats, through the base record): the verifier
// checks that a vector of structs starts at a 4-byte boundary, not that its
// 8-byte SequenceRun elements are aligned; reading them was undefined
// behaviour. Built both ways (4 bytes of padding or none), one of the two
// files has them misaligned.
TEST(SnapshotFileTest, RefusesMisalignedSequenceRuns) {
  int misaligned = 0;
  for (const bool pad : {false, true}) {
    fb::FlatBufferBuilder builder;
    if (pad) builder.PushElement<uint32_t>(0);
    const std::vector<wire::SequenceRun> runs = {{1, 0, 3}, {7, 10, 2}};
    builder.StartVector(runs.size() * sizeof(wire::SequenceRun) / sizeof(uint32_t),
                        sizeof(uint32_t));
    builder.PushBytes(reinterpret_cast<const uint8_t*>(runs.data()),
                      runs.size() * sizeof(wire::SequenceRun));
    const fb::Offset<fb::Vector<const wire::SequenceRun*>> vector(builder.EndVector(runs.size()));
    const std::string file =
        HandSnapshot(builder, {wire::CreateProducerState(builder, 5, 8, vector)}, {});
    const auto* stored = wire::GetSnapshot(file.data())->producers()->Get(0)->runs();
    const auto at = reinterpret_cast<const char*>(stored->Data()) - file.data();
    const bool aligned = at % alignof(wire::SequenceRun) == 0;
    misaligned += !aligned;
    EXPECT_EQ(DecodeSnapshotCode(file), aligned ? DecodeCode::kOk : DecodeCode::kMalformed)
        << (pad ? "padded" : "not padded");
  }
  EXPECT_EQ(misaligned, 1);
}

TEST(PeerDecodeTest, RefusesEntryForInstanceZero) {
  fb::FlatBufferBuilder builder;
  const wire::Ballot ballot(1, 1);
  const std::vector<fb::Offset<wire::Entry>> entries = {
      wire::CreateEntry(builder, 0, &ballot, HandValue(builder))};
  const std::string frame = FinishFrame(
      builder, HandMessage(builder, wire::MessageType::Promise, builder.CreateVector(entries)));
  EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kInvalid);
}

TEST(PeerDecodeTest, RefusesChainHintsOutOfOrderOrForInstanceZero) {
  for (const std::vector<uint64_t>& instances :
       {std::vector<uint64_t>{5, 5}, std::vector<uint64_t>{6, 5}, std::vector<uint64_t>{0, 1}}) {
    Message m = SampleMessage(MessageType::kCommit);
    m.chain.resize(instances.size());
    for (size_t i = 0; i < instances.size(); ++i) m.chain[i].instance = Instance(instances[i]);
    EXPECT_EQ(DecodeFrameCode(EncodePeerMessage(m)), DecodeCode::kInvalid)
        << instances[0] << ", " << instances[1];
  }
}

// A hostile writer may place the hints' vector at a 4-byte boundary; its
// 8-byte structs are then refused, never read misaligned (found by the
// peer_frame fuzzer under UBSan).
TEST(PeerDecodeTest, RefusesMisalignedChainHints) {
  bool tried_misaligned = false;
  for (size_t pad = 0; pad < 2 && !tried_misaligned; ++pad) {
    fb::FlatBufferBuilder builder;
    // (Bytes pushed first end up after the vector: they move it by 4.)
    for (size_t i = 0; i < pad; ++i) builder.PushElement<uint32_t>(0);
    // One hint's bytes as a vector of 4-byte elements (4-byte aligned only).
    builder.StartVector(sizeof(wire::ChainHint) / 4, 4);
    std::vector<uint8_t> hint(sizeof(wire::ChainHint), 0);
    hint[0] = 5;  // instance 5
    builder.PushBytes(hint.data(), hint.size());
    const fb::uoffset_t raw = builder.EndVector(1);
    const wire::Ballot ballot(2, 1);
    const auto body =
        wire::CreatePeerMessage(builder, wire::MessageType::Commit, 1, 2, &ballot, &ballot, 1, 1, 0,
                                0, 0, fb::Offset<fb::Vector<const wire::ChainHint*>>(raw));
    const std::string frame = FinishFrame(builder, body);
    // Where the vector's data landed, relative to the frame's start.
    const auto* envelope = wire::GetSizePrefixedPeerEnvelope(frame.data());
    const auto* chain = envelope->message()->chain();
    ASSERT_NE(chain, nullptr);
    const size_t at = reinterpret_cast<const char*>(chain->Data()) - frame.data();
    if (at % alignof(wire::ChainHint) == 0) continue;
    tried_misaligned = true;
    EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kInvalid);
  }
  EXPECT_TRUE(tried_misaligned);
}

// One payload referenced by many messages: a small frame that would inflate
// into far more memory than it occupies.
TEST(PeerDecodeTest, RefusesSharedPayloadInflation) {
  fb::FlatBufferBuilder builder;
  const std::string payload(1000, 'p');
  const auto shared =
      builder.CreateVector(reinterpret_cast<const uint8_t*>(payload.data()), payload.size());
  std::vector<fb::Offset<wire::ClientMessage>> messages;
  for (uint64_t i = 1; i <= 100; ++i) {
    messages.push_back(wire::CreateClientMessage(builder, 1, i, 0, shared));
  }
  const wire::Ballot ballot(1, 1);
  const auto value =
      wire::CreateValue(builder, wire::ValueKind::Batch, &ballot, builder.CreateVector(messages));
  const std::vector<fb::Offset<wire::Entry>> entries = {
      wire::CreateEntry(builder, 1, &ballot, value)};
  const std::string frame = FinishFrame(
      builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)));
  ASSERT_LT(frame.size(), 100 * payload.size());
  EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kInvalid);
}

// Shared tables visited many times: more table visits than the frame has
// room for offsets, which the verifier's table limit refuses.
TEST(PeerDecodeTest, RefusesSharedTableExplosion) {
  fb::FlatBufferBuilder builder;
  const auto message = wire::CreateClientMessage(builder, 1, 1);
  const std::vector<fb::Offset<wire::ClientMessage>> messages(200, message);
  const wire::Ballot ballot(1, 1);
  const auto value =
      wire::CreateValue(builder, wire::ValueKind::Batch, &ballot, builder.CreateVector(messages));
  const auto entry = wire::CreateEntry(builder, 1, &ballot, value);
  const std::vector<fb::Offset<wire::Entry>> entries(200, entry);
  const std::string frame = FinishFrame(
      builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)));
  EXPECT_EQ(DecodeFrameCode(frame), DecodeCode::kMalformed);
}

// ============================================================================
// Log records
// ============================================================================

paxos::Entry DecodeLogOk(std::string_view record) {
  Entry out;
  const DecodeStatus s = DecodeLogRecord(AsBytes(record), &out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(s.store_code(), paxos::StoreCode::kOk);
  return out;
}

// Decodes an entry expected to be refused and checks the store's verdict.
DecodeCode DecodeLogRefused(std::string_view record) {
  Entry out{Instance(555), MakeBallot(5, 5), nullptr};
  const DecodeStatus s = DecodeLogRecord(AsBytes(record), &out);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.store_code(), paxos::StoreCode::kCorrupt);
  EXPECT_FALSE(s.message().empty());
  EXPECT_EQ(out.instance, Instance(555));  // untouched
  EXPECT_EQ(out.value, nullptr);
  return s.code();
}

TEST(LogRecordTest, RoundTripsEveryValueKind) {
  for (const Entry& entry : SampleEntries()) {
    SCOPED_TRACE(paxos::ToString(entry.value->kind));
    EXPECT_TRUE(paxos::SameEntry(DecodeLogOk(EncodeLogRecord(entry)), entry));
  }
}

TEST(LogRecordTest, RoundTripsExtremeValues) {
  const Entry entry{
      Instance(kU64Max), MakeBallot(kU64Max, kU32Max),
      paxos::MakeBatch(MakeBallot(kU64Max, kU32Max),
                       {MakeClientMessage(kU64Max, kU64Max, AllByteValues(), AllByteValues())})};
  EXPECT_TRUE(paxos::SameEntry(DecodeLogOk(EncodeLogRecord(entry)), entry));
}

TEST(LogRecordTest, LayoutIsCrcThenFlatBuffer) {
  const std::string record = EncodeLogRecord(SampleEntries()[0]);
  ASSERT_GE(record.size(), 12u);
  EXPECT_EQ(LoadLe32(record, 0), Crc32c(std::string_view(record).substr(4)));
  EXPECT_EQ(record.substr(8, 4), "ORDL");
  EXPECT_EQ(kLogRecordFormatVersion, 2);
}

TEST(LogRecordTest, DecodesAtAnyAlignment) {
  const Entry entry = SampleEntries()[0];
  const std::string record = EncodeLogRecord(entry);
  std::vector<uint8_t> storage(record.size() + 16);
  for (size_t offset = 0; offset < 8; ++offset) {
    std::memcpy(storage.data() + offset, record.data(), record.size());
    Entry out;
    const DecodeStatus s =
        DecodeLogRecord(std::span<const uint8_t>(storage.data() + offset, record.size()), &out);
    ASSERT_TRUE(s.ok()) << "offset " << offset << ": " << s.ToString();
    EXPECT_TRUE(paxos::SameEntry(out, entry));
  }
}

TEST(LogRecordTest, EverySingleBitFlipIsCorrupt) {
  for (const Entry& entry : SampleEntries()) {
    const std::string record = EncodeLogRecord(entry);
    for (size_t bit = 0; bit < record.size() * 8; ++bit) {
      std::string flipped = record;
      flipped[bit / 8] = static_cast<char>(flipped[bit / 8] ^ (1 << (bit % 8)));
      EXPECT_EQ(DecodeLogRefused(flipped), DecodeCode::kChecksumMismatch) << "bit " << bit;
    }
  }
}

TEST(LogRecordTest, EveryTruncationIsCorrupt) {
  const std::string record = EncodeLogRecord(SampleEntries()[0]);
  for (size_t n = 0; n < record.size(); ++n) {
    const DecodeCode code = DecodeLogRefused(std::string_view(record).substr(0, n));
    if (n < kRecordChecksumBytes + 8) {
      EXPECT_EQ(code, DecodeCode::kTruncated) << n;
    } else {
      EXPECT_EQ(code, DecodeCode::kChecksumMismatch) << n;
    }
  }
}

TEST(LogRecordTest, RefusesRandomGarbage) {
  std::mt19937_64 rng(77);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string garbage(rng() % 512, '\0');
    for (char& c : garbage) c = static_cast<char>(rng());
    // Half get a valid checksum and identifier, so the verifier sees them.
    if (trial % 2 == 1 && garbage.size() >= 12) {
      garbage.replace(8, 4, "ORDL");
      StoreLe32(Crc32c(std::string_view(garbage).substr(4)), &garbage, 0);
    }
    DecodeLogRefused(garbage);
  }
}

// A record with a valid checksum whose FlatBuffers content is another kind
// or another version: the checksum alone is not enough.
TEST(LogRecordTest, RefusesMetaRecordWithValidChecksum) {
  const std::string meta = EncodeMetaRecord(HardState{MakeBallot(1, 1), Instance(1)});
  EXPECT_EQ(DecodeLogRefused(meta), DecodeCode::kWrongIdentifier);
}

TEST(LogRecordTest, RefusesOtherVersions) {
  for (uint16_t version : {0, 3}) {
    fb::FlatBufferBuilder builder;
    const wire::Ballot ballot(1, 1);
    wire::FinishLogRecordBuffer(
        builder, wire::CreateLogRecord(builder, version, 1, &ballot, HandValue(builder)));
    EXPECT_EQ(DecodeLogRefused(WithCrc(builder)), DecodeCode::kWrongVersion) << version;
  }
}

// Serving reads visits the stored messages in place, in order, with the
// same checks as DecodeLogRecord, and visits nothing of a bad record.
TEST(LogRecordTest, VisitSeesEveryMessageInPlaceAndNothingOfABadRecord) {
  const Entry entry = SampleEntries()[0];
  ASSERT_FALSE(entry.value->messages.empty());
  const std::string record = EncodeLogRecord(entry);
  std::vector<ClientMessage> seen;
  uint64_t instance = 0;
  const DecodeStatus s = VisitLogRecord(AsBytes(record), &instance,
                                        [&](uint32_t i, const MessageView& m) {
                                          EXPECT_EQ(i, seen.size());
                                          seen.push_back(ClientMessage{
                                              paxos::ProducerId(m.producer), m.sequence,
                                              std::string(m.key.begin(), m.key.end()),
                                              std::string(m.payload.begin(), m.payload.end())});
                                        });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(instance, entry.instance.value());
  EXPECT_EQ(seen, entry.value->messages);

  std::string corrupt = record;
  corrupt[corrupt.size() - 3] ^= 0x40;
  size_t visits = 0;
  EXPECT_EQ(VisitLogRecord(AsBytes(corrupt), &instance,
                           [&](uint32_t, const MessageView&) { ++visits; })
                .code(),
            DecodeCode::kChecksumMismatch);
  EXPECT_EQ(visits, 0u);
}

TEST(LogRecordTest, ReadsVersion1RecordsWithValueTables) {
  fb::FlatBufferBuilder builder;
  const wire::Ballot ballot(1, 1);
  wire::FinishLogRecordBuffer(
      builder, wire::CreateLogRecord(builder, 1, 5, &ballot, HandValue(builder)));
  const Entry e = DecodeLogOk(WithCrc(builder));
  EXPECT_EQ(e.instance, Instance(5));
  EXPECT_EQ(e.value->kind, paxos::ValueKind::kNoop);
}

// Serving catch-up from stored records as they are (FetchReplyEncoder) must
// give the frame the core's own reply would: the same entries, decoded.
TEST(LogRecordTest, AFetchReplyBuiltFromStoredRecordsDecodesToTheirEntries) {
  const Ballot b{3, NodeId(2)};
  const Entry v2{Instance(7), b,
                 paxos::MakeBatch(b, {ClientMessage{ProducerId(9), 4, "k", "payload"}})};
  fb::FlatBufferBuilder builder;
  const wire::Ballot ballot(1, 1);
  wire::FinishLogRecordBuffer(
      builder, wire::CreateLogRecord(builder, 1, 8, &ballot, HandValue(builder)));
  const std::string v1 = WithCrc(builder);
  const std::string v2_record = EncodeLogRecord(v2);

  FetchReplyEncoder encoder(1024);
  size_t bytes = 0;
  ASSERT_TRUE(encoder.Add(AsBytes(v2_record), Instance(7), &bytes).ok());
  EXPECT_GT(bytes, 0u);
  ASSERT_TRUE(encoder.Add(AsBytes(v1), Instance(8), &bytes).ok());
  // Stored under another key, or failing its check: refused, not added.
  EXPECT_EQ(encoder.Add(AsBytes(v2_record), Instance(9), &bytes).code(), DecodeCode::kInvalid);
  std::string corrupt = v2_record;
  corrupt[corrupt.size() - 3] ^= 0x40;
  EXPECT_EQ(encoder.Add(AsBytes(corrupt), Instance(7), &bytes).code(),
            DecodeCode::kChecksumMismatch);
  EXPECT_EQ(encoder.entries(), 2u);

  Message header;
  header.type = MessageType::kFetchReply;
  header.from = NodeId(1);
  header.to = NodeId(3);
  header.instance = Instance(7);
  header.chosen = Instance(8);
  header.first_retained = Instance(2);
  const std::unique_ptr<fb::DetachedBuffer> frame = encoder.Finish(header);
  Message got;
  const DecodeStatus d = DecodePeerMessage({frame->data(), frame->size()}, kFrameBytesMax, &got);
  ASSERT_TRUE(d.ok()) << d.ToString();
  EXPECT_EQ(got.type, MessageType::kFetchReply);
  EXPECT_EQ(got.to, NodeId(3));
  EXPECT_EQ(got.chosen, Instance(8));
  EXPECT_EQ(got.first_retained, Instance(2));
  ASSERT_EQ(got.entries.size(), 2u);
  EXPECT_EQ(got.entries[0].instance, Instance(7));
  EXPECT_EQ(got.entries[0].ballot, b);
  EXPECT_EQ(got.entries[0].value->messages, v2.value->messages);
  EXPECT_EQ(got.entries[1].instance, Instance(8));
  EXPECT_EQ(got.entries[1].value->kind, DecodeLogOk(v1).value->kind);
}

TEST(LogRecordTest, RefusesRecordsWithoutOrWithBothValues) {
  const wire::Ballot ballot(1, 1);
  {
    fb::FlatBufferBuilder builder;
    wire::FinishLogRecordBuffer(
        builder, wire::CreateLogRecord(builder, kLogRecordFormatVersion, 5, &ballot));
    EXPECT_EQ(DecodeLogRefused(WithCrc(builder)), DecodeCode::kMalformed);
  }
  {
    fb::FlatBufferBuilder builder;
    const auto bytes = HandValueBytes(builder, HandValueBuffer());
    wire::FinishLogRecordBuffer(builder, wire::CreateLogRecord(builder, kLogRecordFormatVersion, 5,
                                                               &ballot, HandValue(builder), bytes));
    EXPECT_EQ(DecodeLogRefused(WithCrc(builder)), DecodeCode::kMalformed);
  }
}

TEST(LogRecordTest, RefusesInstanceZeroAndUnknownKind) {
  const wire::Ballot ballot(1, 1);
  {
    fb::FlatBufferBuilder builder;
    wire::FinishLogRecordBuffer(builder, wire::CreateLogRecord(builder, kLogRecordFormatVersion, 0,
                                                               &ballot, HandValue(builder)));
    EXPECT_EQ(DecodeLogRefused(WithCrc(builder)), DecodeCode::kInvalid);
  }
  {
    fb::FlatBufferBuilder builder;
    const auto value = HandValue(builder, static_cast<wire::ValueKind>(7));
    wire::FinishLogRecordBuffer(
        builder, wire::CreateLogRecord(builder, kLogRecordFormatVersion, 1, &ballot, value));
    EXPECT_EQ(DecodeLogRefused(WithCrc(builder)), DecodeCode::kInvalid);
  }
  {
    fb::FlatBufferBuilder builder;
    wire::FinishLogRecordBuffer(builder, wire::CreateLogRecord(builder, kLogRecordFormatVersion, 1,
                                                               &ballot, HandValue(builder)));
    EXPECT_EQ(DecodeLogOk(WithCrc(builder)).instance, Instance(1));  // the control
  }
}

// ============================================================================
// Meta records
// ============================================================================

TEST(MetaRecordTest, RoundTrips) {
  for (const HardState& state : {HardState{}, HardState{MakeBallot(3, 2), Instance(17)},
                                 HardState{MakeBallot(kU64Max, kU32Max), Instance(kU64Max)}}) {
    HardState out;
    const DecodeStatus s = DecodeMetaRecord(AsBytes(EncodeMetaRecord(state)), &out);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(out, state);
  }
}

TEST(MetaRecordTest, LayoutIsCrcThenFlatBuffer) {
  const std::string record = EncodeMetaRecord(HardState{MakeBallot(3, 2), Instance(17)});
  EXPECT_EQ(LoadLe32(record, 0), Crc32c(std::string_view(record).substr(4)));
  EXPECT_EQ(record.substr(8, 4), "ORDM");
}

DecodeCode DecodeMetaRefused(std::string_view record) {
  const HardState sentinel{MakeBallot(9, 9), Instance(99)};
  HardState out = sentinel;
  const DecodeStatus s = DecodeMetaRecord(AsBytes(record), &out);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.store_code(), paxos::StoreCode::kCorrupt);
  EXPECT_EQ(out, sentinel);
  return s.code();
}

TEST(MetaRecordTest, EverySingleBitFlipAndTruncationIsCorrupt) {
  const std::string record = EncodeMetaRecord(HardState{MakeBallot(3, 2), Instance(17)});
  for (size_t bit = 0; bit < record.size() * 8; ++bit) {
    std::string flipped = record;
    flipped[bit / 8] = static_cast<char>(flipped[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_EQ(DecodeMetaRefused(flipped), DecodeCode::kChecksumMismatch) << "bit " << bit;
  }
  for (size_t n = 0; n < record.size(); ++n) {
    EXPECT_NE(DecodeMetaRefused(std::string_view(record).substr(0, n)), DecodeCode::kOk) << n;
  }
}

TEST(MetaRecordTest, RefusesLogRecordAndOtherVersions) {
  EXPECT_EQ(DecodeMetaRefused(EncodeLogRecord(SampleEntries()[1])), DecodeCode::kWrongIdentifier);
  fb::FlatBufferBuilder builder;
  const wire::Ballot ballot(1, 1);
  wire::FinishMetaRecordBuffer(builder, wire::CreateMetaRecord(builder, 2, &ballot, 1));
  EXPECT_EQ(DecodeMetaRefused(WithCrc(builder)), DecodeCode::kWrongVersion);
}

// ============================================================================
// Client requests
// ============================================================================

constexpr ClientLimits kClientLimits{1 << 20, 1024};

std::string ClientFrame(fb::FlatBufferBuilder& builder, uint64_t request_id, wire::Body type,
                        fb::Offset<void> body, uint16_t version = kClientFormatVersion) {
  wire::FinishClientEnvelopeBuffer(
      builder, wire::CreateClientEnvelope(builder, version, request_id, type, body));
  return BufferOf(builder);
}

std::string PublishFrame(
    uint64_t request_id,
    const std::vector<std::tuple<uint64_t, uint64_t, std::string, std::string>>& messages) {
  fb::FlatBufferBuilder builder;
  std::vector<fb::Offset<wire::ClientMessage>> offsets;
  for (const auto& [producer, sequence, key, payload] : messages) {
    const auto bytes = [&](const std::string& v) {
      return builder.CreateVector(reinterpret_cast<const uint8_t*>(v.data()), v.size());
    };
    offsets.push_back(wire::CreateClientMessage(builder, producer, sequence,
                                                key.empty() ? 0 : bytes(key), bytes(payload)));
  }
  return ClientFrame(builder, request_id, wire::Body::Publish,
                     wire::CreatePublish(builder, builder.CreateVector(offsets)).Union());
}

DecodeStatus DecodeClient(const std::string& frame, ClientRequest* out) {
  return DecodeClientRequest(AsBytes(frame), kClientLimits, out);
}

TEST(ClientDecodeTest, DecodesEveryRequest) {
  ClientRequest r;
  ASSERT_TRUE(
      DecodeClient(PublishFrame(7, {{5, 1, "", "a"}, {5, 2, "k", std::string(3, '\0')}}), &r).ok());
  EXPECT_EQ(r.kind, ClientRequest::Kind::kPublish);
  EXPECT_EQ(r.request_id, 7u);
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1], (ClientMessage{ProducerId(5), 2, "k", std::string(3, '\0')}));

  fb::FlatBufferBuilder b;
  const std::string subscribe = ClientFrame(b, 8, wire::Body::Subscribe,
                                            wire::CreateSubscribe(b, 40, false, 100, true).Union());
  ASSERT_TRUE(DecodeClient(subscribe, &r).ok());
  EXPECT_EQ(r.kind, ClientRequest::Kind::kSubscribe);
  EXPECT_EQ(r.from_offset, 40u);
  EXPECT_TRUE(r.from_earliest);
  EXPECT_EQ(r.credit, 100u);
  EXPECT_TRUE(r.messages.empty());

  b.Clear();
  ASSERT_TRUE(
      DecodeClient(ClientFrame(b, 9, wire::Body::Fetch, wire::CreateFetch(b, 3, 10, true).Union()),
                   &r)
          .ok());
  EXPECT_EQ(r.kind, ClientRequest::Kind::kFetch);
  EXPECT_EQ(r.max_messages, 10u);
  EXPECT_TRUE(r.compacted);

  b.Clear();
  ASSERT_TRUE(
      DecodeClient(ClientFrame(b, 10, wire::Body::Credit, wire::CreateCredit(b, 5).Union()), &r)
          .ok());
  EXPECT_EQ(r.kind, ClientRequest::Kind::kCredit);
  EXPECT_EQ(r.credit, 5u);

  // A StatusRequest has no fields: its body may be absent.
  b.Clear();
  ASSERT_TRUE(DecodeClient(ClientFrame(b, 11, wire::Body::StatusRequest, 0), &r).ok());
  EXPECT_EQ(r.kind, ClientRequest::Kind::kStatus);
  EXPECT_EQ(r.request_id, 11u);
}

// Every refusal answers the request whose id can be read (a client waits
// for that id; docs/protocol.md); only a frame that is no envelope at all
// answers request 0.
TEST(ClientDecodeTest, RefusesWhatIsNotARequest) {
  ClientRequest r;
  const std::string publish = PublishFrame(7, {{5, 1, "", "a"}});
  EXPECT_EQ(
      DecodeClientRequest(AsBytes(publish), ClientLimits{publish.size() - 1, 1024}, &r).code(),
      DecodeCode::kTooLarge);
  EXPECT_EQ(r.request_id, 7u);
  r.request_id = 99;
  EXPECT_EQ(DecodeClient("ORDC", &r).code(), DecodeCode::kTruncated);
  EXPECT_EQ(r.request_id, 0u);
  EXPECT_EQ(DecodeClient(EncodeMetaRecord({}).substr(kRecordChecksumBytes), &r).code(),
            DecodeCode::kWrongIdentifier);
  EXPECT_EQ(r.request_id, 0u);
  fb::FlatBufferBuilder b;
  EXPECT_EQ(DecodeClient(ClientFrame(b, 3, wire::Body::StatusRequest, 0, 2), &r).code(),
            DecodeCode::kWrongVersion);
  EXPECT_EQ(r.request_id, 3u);
  EXPECT_EQ(DecodeClient(publish.substr(0, publish.size() - 8), &r).code(), DecodeCode::kMalformed);
  EXPECT_EQ(r.request_id, 7u);

  b.Clear();
  EXPECT_EQ(DecodeClient(ClientFrame(b, 4, wire::Body::Deliver, wire::CreateDeliver(b).Union()), &r)
                .code(),
            DecodeCode::kInvalid);
  EXPECT_EQ(r.request_id, 4u);
  b.Clear();
  EXPECT_EQ(DecodeClient(ClientFrame(b, 5, wire::Body::NONE, 0), &r).code(), DecodeCode::kInvalid);
  // Found by tests/fuzz (client_envelope): the verifier accepts a request
  // type whose body is absent, and reading it crashed the broker.
  for (const wire::Body type :
       {wire::Body::Publish, wire::Body::Subscribe, wire::Body::Credit, wire::Body::Fetch}) {
    b.Clear();
    EXPECT_EQ(DecodeClient(ClientFrame(b, 6, type, 0), &r).code(), DecodeCode::kMalformed)
        << wire::EnumNameBody(type);
    EXPECT_EQ(r.request_id, 6u);
  }
}

// The id of a refused frame is read defensively: from a frame far over the
// limit (its first bytes only), at any alignment, and never out of bounds.
TEST(ClientDecodeTest, ReadsTheRequestIdOfFramesItCannotDecode) {
  const std::string big = PublishFrame(41, {{5, 1, "", std::string(4096, 'p')}});
  ClientRequest r;
  EXPECT_EQ(DecodeClientRequest(AsBytes(big), ClientLimits{64, 1 << 20}, &r).code(),
            DecodeCode::kTooLarge);
  EXPECT_EQ(r.request_id, 41u);
  // Only the envelope's first bytes: the rest may be anything.
  const std::string head = big.substr(0, 64) + std::string(big.size() - 64, '\xff');
  EXPECT_EQ(DecodeClientRequest(AsBytes(head), ClientLimits{64, 1 << 20}, &r).code(),
            DecodeCode::kTooLarge);
  EXPECT_EQ(r.request_id, 41u);
  uint64_t id = 0;
  ASSERT_TRUE(PeekClientRequestId(AsBytes(head), &id));
  EXPECT_EQ(id, 41u);
  // At an odd address.
  const std::string shifted = "x" + big;
  ASSERT_TRUE(PeekClientRequestId(AsBytes(shifted).subspan(1), &id));
  EXPECT_EQ(id, 41u);
  // An envelope without a request_id is request 0.
  fb::FlatBufferBuilder b;
  ASSERT_TRUE(PeekClientRequestId(AsBytes(ClientFrame(b, 0, wire::Body::StatusRequest, 0)), &id));
  EXPECT_EQ(id, 0u);
  // Every truncation of a frame: the id, or no id, never a read out of
  // bounds (ASan) and never another id.
  for (size_t n = 0; n < big.size(); ++n) {
    const std::string cut = big.substr(0, n);
    uint64_t got = 12345;
    if (PeekClientRequestId(AsBytes(cut), &got)) {
      EXPECT_EQ(got, 41u) << n;
    } else {
      EXPECT_EQ(got, 12345u) << n;
    }
    EXPECT_FALSE(DecodeClient(cut, &r).ok());
    EXPECT_TRUE(r.request_id == 41u || r.request_id == 0u) << n;
  }
  // Garbage behind the identifier: offsets out of bounds are not followed.
  std::mt19937_64 rng(19);
  for (int i = 0; i < 20000; ++i) {
    std::string junk(8 + rng() % 40, '\0');
    for (char& c : junk) c = static_cast<char>(rng() % 4 == 0 ? rng() % 16 : rng());
    junk.replace(4, 4, "ORDC");
    (void)PeekClientRequestId(AsBytes(junk), &id);
    (void)DecodeClient(junk, &r);
  }
  EXPECT_FALSE(PeekClientRequestId(AsBytes(std::string("\x00\x00\x00\x00ORDC", 8)), &id));
  EXPECT_FALSE(PeekClientRequestId(AsBytes(std::string("\xff\xff\xff\x7fORDC", 8)), &id));
}

// Two messages with one (producer, sequence) in a request: the second would
// be acknowledged at the first one's offset and never stored.
TEST(ClientDecodeTest, RefusesAPublishCarryingASequenceTwice) {
  ClientRequest r;
  DecodeStatus s = DecodeClient(PublishFrame(8, {{5, 1, "", "a"}, {5, 1, "", "b"}}), &r);
  EXPECT_EQ(s.code(), DecodeCode::kInvalid);
  EXPECT_NE(s.message().find("messages[0] and messages[1]"), std::string::npos) << s.message();
  EXPECT_EQ(r.request_id, 8u);
  EXPECT_TRUE(r.messages.empty());
  // Far apart, among other producers.
  s = DecodeClient(
      PublishFrame(8, {{5, 1, "", "a"}, {6, 1, "", "b"}, {5, 2, "", "c"}, {5, 1, "", "a"}}), &r);
  EXPECT_EQ(s.code(), DecodeCode::kInvalid);
  EXPECT_NE(s.message().find("messages[0] and messages[3]"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("producer 5 sequence 1"), std::string::npos) << s.message();
  // One sequence of two producers, and sequences out of order, are fine
  // (the applied state answers the latter OutOfSequence per message).
  EXPECT_TRUE(DecodeClient(PublishFrame(8, {{5, 1, "", "a"}, {6, 1, "", "b"}}), &r).ok());
  EXPECT_TRUE(DecodeClient(PublishFrame(8, {{5, 3, "", "a"}, {5, 2, "", "b"}}), &r).ok());
  EXPECT_EQ(r.messages.size(), 2u);
}

TEST(ClientDecodeTest, RefusesPublishesBreakingTheLimits) {
  ClientRequest r;
  EXPECT_EQ(DecodeClient(PublishFrame(1, {}), &r).code(), DecodeCode::kInvalid);
  EXPECT_EQ(DecodeClient(PublishFrame(1, {{5, 1, "", std::string(1025, 'p')}}), &r).code(),
            DecodeCode::kTooLarge);
  EXPECT_EQ(
      DecodeClient(PublishFrame(1, {{5, 1, std::string(kKeyBytesMax + 1, 'k'), ""}}), &r).code(),
      DecodeCode::kTooLarge);
  EXPECT_EQ(DecodeClient(PublishFrame(1, {{0, 1, "", "a"}}), &r).code(), DecodeCode::kInvalid);
  EXPECT_EQ(DecodeClient(PublishFrame(1, {{5, 0, "", "a"}}), &r).code(), DecodeCode::kInvalid);
  // Messages sharing one payload: more bytes than the frame holds.
  fb::FlatBufferBuilder b;
  const auto shared = b.CreateVector(std::vector<uint8_t>(500, 'p'));
  std::vector<fb::Offset<wire::ClientMessage>> messages;
  for (uint64_t i = 1; i <= 10; ++i) {
    messages.push_back(wire::CreateClientMessage(b, 5, i, 0, shared));
  }
  const std::string inflated = ClientFrame(
      b, 2, wire::Body::Publish, wire::CreatePublish(b, b.CreateVector(messages)).Union());
  const DecodeStatus s = DecodeClient(inflated, &r);
  EXPECT_EQ(s.code(), DecodeCode::kInvalid);
  EXPECT_NE(s.message().find("share"), std::string::npos) << s.message();
  EXPECT_EQ(r.request_id, 2u);
  EXPECT_TRUE(r.messages.empty());
}

// ============================================================================
// DecodeStatus
// ============================================================================

TEST(DecodeStatusTest, ToStringNamesCodeAndMessage) {
  EXPECT_EQ(DecodeStatus().ToString(), "ok");
  EXPECT_TRUE(DecodeStatus().ok());
  EXPECT_EQ(DecodeStatus().store_code(), paxos::StoreCode::kOk);
  const DecodeStatus s = DecodeStatus::Error(DecodeCode::kMalformed, "bad offset");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "malformed: bad offset");
  EXPECT_EQ(s.store_code(), paxos::StoreCode::kCorrupt);
}

// ============================================================================
// Memberships: configuration entries, snapshots, change requests
// ============================================================================

paxos::Member MakeMember(uint32_t id, bool voter) {
  paxos::Member m;
  m.id = NodeId(id);
  m.voter = voter;
  m.peer = "127.0.0.1:" + std::to_string(7100 + id);
  m.client = "host-" + std::to_string(id) + ".example:" + std::to_string(7200 + id);
  m.public_key = std::string(39, 'a') + static_cast<char>('A' + id % 26);
  return m;
}

paxos::Membership SampleMembership() {
  return paxos::Membership{{MakeMember(1, true), MakeMember(2, true), MakeMember(6, false)}};
}

TEST(MembershipCodecTest, ConfigEntriesRoundTripInEveryFrameAndRecord) {
  Message m = SampleMessage(MessageType::kAccept);
  m.entries.push_back(Entry{Instance(11), MakeBallot(4, 3),
                            paxos::MakeConfig(MakeBallot(4, 3), SampleMembership())});
  const Message back = RoundTrip(m);
  ASSERT_EQ(back.entries.size(), m.entries.size());
  EXPECT_EQ(back.entries.back().value->kind, ValueKind::kConfig);
  EXPECT_EQ(back.entries.back().value->membership, SampleMembership());
  Entry stored;
  ASSERT_TRUE(DecodeLogRecord(AsBytes(EncodeLogRecord(m.entries.back())), &stored).ok());
  EXPECT_TRUE(paxos::SameEntry(stored, m.entries.back()));
  EXPECT_EQ(stored.value->membership, SampleMembership());
}

TEST(MembershipCodecTest, OtherValuesCarryNoMembers) {
  // No `members` on a batch, a no-op or a barrier: their bytes (and so the
  // fuzz seeds and stored records of older builds) are unchanged.
  for (const Entry& e : SampleEntries()) {
    const std::string record = EncodeLogRecord(e);
    Entry back;
    ASSERT_TRUE(DecodeLogRecord(AsBytes(record), &back).ok());
    EXPECT_TRUE(back.value->membership.empty());
  }
}

TEST(MembershipCodecTest, RefusesBadConfigurationEntries) {
  struct Case {
    const char* what;
    paxos::Membership membership;
    const char* message;
  };
  paxos::Membership zero = SampleMembership();
  zero.members[0].id = NodeId(0);
  paxos::Membership twice = SampleMembership();
  twice.members[1].id = NodeId(1);
  paxos::Membership descending = SampleMembership();
  std::swap(descending.members[0], descending.members[2]);
  paxos::Membership no_voter{{MakeMember(3, false)}};
  paxos::Membership bad_peer = SampleMembership();
  bad_peer.members[1].peer = "no-port";
  paxos::Membership bad_client = SampleMembership();
  bad_client.members[1].client = "host:99999";
  paxos::Membership bad_key = SampleMembership();
  bad_key.members[1].public_key = "short";
  paxos::Membership long_host = SampleMembership();
  long_host.members[1].peer = std::string(300, 'h') + ":1";
  paxos::Membership too_many;
  for (uint32_t i = 1; i <= 65; ++i) too_many.members.push_back(MakeMember(i, true));
  const Case cases[] = {
      {"id 0", zero, "id 0"},
      {"an id twice", twice, "unique and ascending"},
      {"descending ids", descending, "unique and ascending"},
      {"no voter", no_voter, "without a voter"},
      {"a peer without a port", bad_peer, "peer endpoint"},
      {"a port out of range", bad_client, "client endpoint"},
      {"a short key", bad_key, "public key"},
      {"a long host", long_host, "bytes"},
      {"65 voters", too_many, "more than 64"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    // Built by hand: MakeConfig would sort the members.
    auto value = std::make_shared<paxos::Value>();
    value->kind = ValueKind::kConfig;
    value->membership = c.membership;
    const Entry e{Instance(5), MakeBallot(1, 1), value};
    Entry back;
    const DecodeStatus s = DecodeLogRecord(AsBytes(EncodeLogRecord(e)), &back);
    EXPECT_EQ(s.code(), DecodeCode::kInvalid);
    EXPECT_NE(s.message().find(c.message), std::string::npos) << s.message();
    Message m;
    m.type = MessageType::kAccept;
    m.entries = {e};
    Message out;
    EXPECT_EQ(DecodePeerMessage(AsBytes(EncodePeerMessage(m)), kFrameBytesMax, &out).code(),
              DecodeCode::kInvalid);
  }
}

TEST(MembershipCodecTest, RefusesMembersOnOtherValuesAndAConfigWithout) {
  fb::FlatBufferBuilder builder;
  const wire::Ballot origin(1, 1);
  const std::vector<fb::Offset<wire::Member>> members = {
      wire::CreateMemberDirect(builder, 1, true, "127.0.0.1:1", "127.0.0.1:2", "")};
  const auto noop_with =
      wire::CreateValue(builder, wire::ValueKind::Noop, &origin, 0, builder.CreateVector(members));
  const wire::Ballot ballot(1, 1);
  const std::vector<fb::Offset<wire::Entry>> entries = {
      wire::CreateEntry(builder, 1, &ballot, noop_with)};
  const std::string frame = FinishFrame(
      builder, HandMessage(builder, wire::MessageType::Accept, builder.CreateVector(entries)));
  Message out;
  EXPECT_EQ(DecodePeerMessage(AsBytes(frame), kFrameBytesMax, &out).code(), DecodeCode::kInvalid);

  fb::FlatBufferBuilder b3;
  const auto empty_config = wire::CreateValue(b3, wire::ValueKind::Config, &origin);
  const std::vector<fb::Offset<wire::Entry>> e3 = {wire::CreateEntry(b3, 1, &ballot, empty_config)};
  const std::string f3 =
      FinishFrame(b3, HandMessage(b3, wire::MessageType::Accept, b3.CreateVector(e3)));
  const DecodeStatus s = DecodePeerMessage(AsBytes(f3), kFrameBytesMax, &out);
  EXPECT_EQ(s.code(), DecodeCode::kInvalid);
  EXPECT_NE(s.message().find("without members"), std::string::npos) << s.message();
}

TEST(MembershipCodecTest, SnapshotsCarryTheMembershipCanonically) {
  paxos::AppliedSnapshot st;
  st.instance = paxos::Instance(10);
  st.next_offset = paxos::Offset(3);
  const std::string without = EncodeSnapshotFile(st, {});
  st.membership = SampleMembership();
  const std::string with = EncodeSnapshotFile(st, {});
  EXPECT_NE(with, without);
  EXPECT_EQ(with, EncodeSnapshotFile(st, {}));
  paxos::AppliedSnapshot back;
  ASSERT_TRUE(DecodeSnapshotFile(AsBytes(with), &back, nullptr).ok());
  EXPECT_EQ(back, st);
  ASSERT_TRUE(DecodeSnapshotFile(AsBytes(without), &back, nullptr).ok());
  EXPECT_TRUE(back.membership.empty());
  // A membership the log could not hold is refused in a snapshot too.
  st.membership.members[0].id = NodeId(0);
  EXPECT_EQ(DecodeSnapshotFile(AsBytes(EncodeSnapshotFile(st, {})), &back, nullptr).code(),
            DecodeCode::kInvalid);
}

std::string ChangeFrame(uint64_t request_id, wire::MemberChangeKind kind, uint32_t id,
                        const char* peer, const char* client, const char* key) {
  fb::FlatBufferBuilder builder;
  const auto member = wire::CreateMemberDirect(builder, id, true, peer, client, key);
  return ClientFrame(builder, request_id, wire::Body::ChangeMembers,
                     wire::CreateChangeMembers(builder, kind, member).Union());
}

TEST(MembershipCodecTest, DecodesAndChecksMembershipRequests) {
  ClientRequest r;
  {
    fb::FlatBufferBuilder builder;
    ASSERT_TRUE(DecodeClient(ClientFrame(builder, 4, wire::Body::MembersRequest,
                                         wire::CreateMembersRequest(builder).Union()),
                             &r)
                    .ok());
    EXPECT_EQ(r.kind, ClientRequest::Kind::kMembers);
  }
  const std::string key(40, 'z');
  ASSERT_TRUE(DecodeClient(ChangeFrame(5, wire::MemberChangeKind::AddLearner, 6, "10.0.0.6:7106",
                                       "10.0.0.6:7206", key.c_str()),
                           &r)
                  .ok());
  EXPECT_EQ(r.kind, ClientRequest::Kind::kChangeMembers);
  EXPECT_EQ(r.change.kind, paxos::MembershipChange::Kind::kAddLearner);
  EXPECT_EQ(r.change.member.id, NodeId(6));
  EXPECT_FALSE(r.change.member.voter);  // a new member is a learner, whatever the frame says
  EXPECT_EQ(r.change.member.peer, "10.0.0.6:7106");
  EXPECT_EQ(r.change.member.public_key, key);
  ASSERT_TRUE(
      DecodeClient(ChangeFrame(6, wire::MemberChangeKind::Remove, 3, nullptr, nullptr, nullptr), &r)
          .ok());
  EXPECT_EQ(r.change.kind, paxos::MembershipChange::Kind::kRemove);
  EXPECT_EQ(r.change.member.id, NodeId(3));

  const std::string refused[] = {
      ChangeFrame(7, wire::MemberChangeKind::Promote, 0, nullptr, nullptr, nullptr),
      ChangeFrame(7, static_cast<wire::MemberChangeKind>(9), 3, nullptr, nullptr, nullptr),
      ChangeFrame(7, wire::MemberChangeKind::AddLearner, 6, "nowhere", "10.0.0.6:7206", ""),
      ChangeFrame(7, wire::MemberChangeKind::AddLearner, 6, "10.0.0.6:7106", nullptr, ""),
      ChangeFrame(7, wire::MemberChangeKind::AddLearner, 6, "10.0.0.6:7106", "a b:1", ""),
      ChangeFrame(7, wire::MemberChangeKind::AddLearner, 6, "10.0.0.6:7106", "10.0.0.6:7206",
                  "not-a-key"),
  };
  for (const std::string& frame : refused) {
    r = ClientRequest{};
    const DecodeStatus s = DecodeClient(frame, &r);
    EXPECT_EQ(s.code(), DecodeCode::kInvalid) << s.message();
    EXPECT_EQ(r.request_id, 7u);
  }
}

TEST(MembershipCodecTest, EndpointAndKeyChecks) {
  EXPECT_TRUE(WellFormedEndpoint("127.0.0.1:1"));
  EXPECT_TRUE(WellFormedEndpoint("db-1.example.com:65535"));
  EXPECT_TRUE(WellFormedEndpoint("[::1]:7101"));
  EXPECT_FALSE(WellFormedEndpoint(""));
  EXPECT_FALSE(WellFormedEndpoint(":7101"));
  EXPECT_FALSE(WellFormedEndpoint("host:"));
  EXPECT_FALSE(WellFormedEndpoint("host:0"));
  EXPECT_FALSE(WellFormedEndpoint("host:65536"));
  EXPECT_FALSE(WellFormedEndpoint("host:123456"));
  EXPECT_FALSE(WellFormedEndpoint("ho st:1"));
  EXPECT_FALSE(WellFormedEndpoint(std::string("ho\0st:1", 8)));
  EXPECT_TRUE(WellFormedPublicKey(""));
  EXPECT_TRUE(WellFormedPublicKey("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"));
  EXPECT_FALSE(WellFormedPublicKey(std::string(39, 'a')));
  EXPECT_FALSE(WellFormedPublicKey(std::string(40, '"')));
}

}  // namespace
}  // namespace ordo::broker
