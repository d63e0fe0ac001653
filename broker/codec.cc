#include "broker/codec.h"

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <vector>

#include "broker/crc32c.h"
#include "paxos/assert.h"
#include "paxos/quorum.h"
#include "schemas/client_generated.h"
#include "schemas/meta_generated.h"
#include "schemas/peer_generated.h"
#include "schemas/record_generated.h"
#include "schemas/snapshot_generated.h"

namespace ordo::broker {
namespace {

namespace fb = flatbuffers;

// A FlatBuffers buffer starts with the root table offset and the file
// identifier; anything shorter cannot be one of ours.
constexpr size_t kBufferHeaderBytes = sizeof(fb::uoffset_t) + fb::kFileIdentifierLength;

// The deepest legal path is PeerEnvelope > PeerMessage > Entry > Value >
// ClientMessage: 5 tables. A little headroom for appended fields, and far
// below FlatBuffers' default of 64, so a hostile buffer cannot make the
// verifier recurse deeply.
constexpr fb::uoffset_t kVerifierDepthMax = 8;

// Every table visit needs a 4-byte offset pointing at it, so an honest buffer
// of n bytes has fewer than n / 4 visits. Buffers whose offsets revisit shared
// tables more often than that are refused, which keeps verification linear in
// the input's size.
constexpr size_t kVerifierBytesPerTable = sizeof(fb::uoffset_t);

// FlatBuffers reads scalars with plain loads, so the buffer has to be aligned
// to the widest scalar the schemas hold: ulong and the Ballot struct.
constexpr size_t kBufferAlignment = 8;
static_assert(alignof(wire::Ballot) <= kBufferAlignment);
static_assert(sizeof(wire::Ballot) == 16, "Ballot is round:ulong, node:uint, 4 bytes padding");

// The version is field 0 of every root table, in every version (see
// codec.h), which is what lets DecodeRoot read it before the full verify.
constexpr fb::voffset_t kVersionField = 4;
static_assert(wire::PeerEnvelope::VT_VERSION == kVersionField);
static_assert(wire::LogRecord::VT_VERSION == kVersionField);
static_assert(wire::MetaRecord::VT_VERSION == kVersionField);
static_assert(wire::Snapshot::VT_VERSION == kVersionField);
static_assert(wire::ClientEnvelope::VT_VERSION == kVersionField);

// One decodable format: its name for messages, its file identifier (taken
// from the generated code, so it is the one the schema declares) and the one
// version this build reads.
struct Format {
  const char* name;
  const char* (*identifier)();
  uint16_t version;      // the newest, which this build writes
  uint16_t min_version;  // the oldest it still reads
  // Peer frames carry FlatBuffers' 4-byte size prefix; records do not need
  // it, their CRC32C already catches a truncation.
  bool size_prefixed;
  // What an absent version field reads as: the schema's default. 1 for the
  // client envelope, whose builders leave a version equal to it out.
  uint16_t version_default = 0;
};

constexpr Format kPeerFormat{"peer frame", &wire::PeerEnvelopeIdentifier, kPeerFormatVersion, 1,
                             true};
constexpr Format kLogRecordFormat{"log record", &wire::LogRecordIdentifier, kLogRecordFormatVersion,
                                  1, false};
constexpr Format kMetaRecordFormat{"meta record", &wire::MetaRecordIdentifier,
                                   kMetaRecordFormatVersion, kMetaRecordFormatVersion, false};
constexpr Format kSnapshotFormat{"snapshot file", &wire::SnapshotIdentifier,
                                 kSnapshotFormatVersion, kSnapshotFormatVersion, false};
constexpr Format kClientFormat{"client request", &wire::ClientEnvelopeIdentifier,
                               kClientFormatVersion, kClientFormatVersion,
                               /*size_prefixed=*/false, /*version_default=*/1};
static_assert(kClientFormatVersion == 1, "client.fbs: ClientEnvelope.version = 1, the default");

// Where the FlatBuffers buffer proper (root offset, identifier) starts.
constexpr size_t BufferStart(const Format& format) {
  return format.size_prefixed ? sizeof(fb::uoffset_t) : 0;
}

std::string Name(const Format& format) { return format.name; }

// --- Alignment ---

// The input as 8-byte aligned bytes: the input itself when it already is
// (ZeroMQ frames usually are), otherwise a copy. A record's FlatBuffers bytes
// start 4 bytes into an LMDB value that LMDB only aligns to 2, so records
// mostly take the copy.
class AlignedBytes {
 public:
  explicit AlignedBytes(std::span<const uint8_t> bytes) : bytes_(bytes) {
    if (reinterpret_cast<uintptr_t>(bytes.data()) % kBufferAlignment == 0) return;
    copy_ = std::make_unique_for_overwrite<uint64_t[]>((bytes.size() + sizeof(uint64_t) - 1) / sizeof(uint64_t));
    if (!bytes.empty()) std::memcpy(copy_.get(), bytes.data(), bytes.size());
    bytes_ = {reinterpret_cast<const uint8_t*>(copy_.get()), bytes.size()};
  }
  const uint8_t* data() const { return bytes_.data(); }
  size_t size() const { return bytes_.size(); }

 private:
  static_assert(alignof(uint64_t) >= kBufferAlignment);
  std::unique_ptr<uint64_t[]> copy_;
  std::span<const uint8_t> bytes_;
};

// --- Little-endian CRC prefix ---

void StoreLe32(uint32_t v, char* p) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

uint32_t LoadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

uint16_t LoadLe16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }

uint64_t LoadLe64(const uint8_t* p) {
  return static_cast<uint64_t>(LoadLe32(p)) | static_cast<uint64_t>(LoadLe32(p + 4)) << 32;
}

// --- Error messages ---

DecodeStatus Fail(DecodeCode code, std::string message) {
  return DecodeStatus::Error(code, std::move(message));
}

// Four identifier bytes from untrusted input, printable whatever they are.
std::string QuoteIdentifier(const uint8_t* p) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (size_t i = 0; i < fb::kFileIdentifierLength; ++i) {
    const uint8_t c = p[i];
    if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  return out + "\"";
}

std::string EntryWhere(size_t index, uint64_t instance) {
  return "entry " + std::to_string(index) + " (instance " + std::to_string(instance) + ")";
}

// --- Enum and struct conversions ---

wire::Ballot ToWire(const paxos::Ballot& ballot) {
  return wire::Ballot(ballot.round, ballot.node.value());
}

// An absent ballot field is the zero ballot (common.fbs).
paxos::Ballot FromWire(const wire::Ballot* ballot) {
  if (ballot == nullptr) return paxos::Ballot{};
  return paxos::Ballot{ballot->round(), paxos::NodeId(ballot->node())};
}

wire::ValueKind ToWire(paxos::ValueKind kind) {
  switch (kind) {
    case paxos::ValueKind::kBatch:
      return wire::ValueKind::Batch;
    case paxos::ValueKind::kNoop:
      return wire::ValueKind::Noop;
    case paxos::ValueKind::kBarrier:
      return wire::ValueKind::Barrier;
    case paxos::ValueKind::kConfig:
      return wire::ValueKind::Config;
  }
  PAXOS_ASSERT(false && "unknown paxos::ValueKind");
  return wire::ValueKind::Noop;
}

// False for a value no version of the schema defines.
bool FromWire(wire::ValueKind kind, paxos::ValueKind* out) {
  switch (kind) {
    case wire::ValueKind::Batch:
      *out = paxos::ValueKind::kBatch;
      return true;
    case wire::ValueKind::Noop:
      *out = paxos::ValueKind::kNoop;
      return true;
    case wire::ValueKind::Barrier:
      *out = paxos::ValueKind::kBarrier;
      return true;
    case wire::ValueKind::Config:
      *out = paxos::ValueKind::kConfig;
      return true;
  }
  return false;
}

wire::MessageType ToWire(paxos::MessageType type) {
  switch (type) {
    case paxos::MessageType::kPrepare:
      return wire::MessageType::Prepare;
    case paxos::MessageType::kPromise:
      return wire::MessageType::Promise;
    case paxos::MessageType::kAccept:
      return wire::MessageType::Accept;
    case paxos::MessageType::kAccepted:
      return wire::MessageType::Accepted;
    case paxos::MessageType::kReject:
      return wire::MessageType::Reject;
    case paxos::MessageType::kCommit:
      return wire::MessageType::Commit;
    case paxos::MessageType::kCommitReply:
      return wire::MessageType::CommitReply;
    case paxos::MessageType::kFetch:
      return wire::MessageType::Fetch;
    case paxos::MessageType::kFetchReply:
      return wire::MessageType::FetchReply;
    case paxos::MessageType::kPreVote:
      return wire::MessageType::PreVote;
    case paxos::MessageType::kPreVoteGrant:
      return wire::MessageType::PreVoteGrant;
    case paxos::MessageType::kTimeoutNow:
      return wire::MessageType::TimeoutNow;
  }
  PAXOS_ASSERT(false && "unknown paxos::MessageType");
  return wire::MessageType::Commit;
}

bool FromWire(wire::MessageType type, paxos::MessageType* out) {
  switch (type) {
    case wire::MessageType::Prepare:
      *out = paxos::MessageType::kPrepare;
      return true;
    case wire::MessageType::Promise:
      *out = paxos::MessageType::kPromise;
      return true;
    case wire::MessageType::Accept:
      *out = paxos::MessageType::kAccept;
      return true;
    case wire::MessageType::Accepted:
      *out = paxos::MessageType::kAccepted;
      return true;
    case wire::MessageType::Reject:
      *out = paxos::MessageType::kReject;
      return true;
    case wire::MessageType::Commit:
      *out = paxos::MessageType::kCommit;
      return true;
    case wire::MessageType::CommitReply:
      *out = paxos::MessageType::kCommitReply;
      return true;
    case wire::MessageType::Fetch:
      *out = paxos::MessageType::kFetch;
      return true;
    case wire::MessageType::FetchReply:
      *out = paxos::MessageType::kFetchReply;
      return true;
    case wire::MessageType::PreVote:
      *out = paxos::MessageType::kPreVote;
      return true;
    case wire::MessageType::PreVoteGrant:
      *out = paxos::MessageType::kPreVoteGrant;
      return true;
    case wire::MessageType::TimeoutNow:
      *out = paxos::MessageType::kTimeoutNow;
      return true;
  }
  return false;
}

// --- Encoding ---

fb::Offset<fb::Vector<uint8_t>> BytesToWire(fb::FlatBufferBuilder& builder,
                                            std::string_view bytes) {
  // Empty is written as absent: it reads back the same and costs nothing.
  if (bytes.empty()) return 0;
  return builder.CreateVector(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

fb::Offset<fb::Vector<fb::Offset<wire::Member>>> MembersToWire(
    fb::FlatBufferBuilder& builder, const paxos::Membership& membership) {
  std::vector<fb::Offset<wire::Member>> members;
  members.reserve(membership.members.size());
  for (const paxos::Member& m : membership.members) {
    members.push_back(wire::CreateMemberDirect(builder, m.id.value(), m.voter, m.peer.c_str(),
                                               m.client.c_str(), m.public_key.c_str()));
  }
  return builder.CreateVector(members);
}

fb::Offset<wire::Value> ValueToWire(fb::FlatBufferBuilder& builder, const paxos::Value& value) {
  fb::Offset<fb::Vector<fb::Offset<wire::ClientMessage>>> messages_offset = 0;
  if (!value.messages.empty()) {
    std::vector<fb::Offset<wire::ClientMessage>> messages;
    messages.reserve(value.messages.size());
    for (const paxos::ClientMessage& m : value.messages) {
      const auto key = BytesToWire(builder, m.key);
      const auto payload = BytesToWire(builder, m.payload);
      messages.push_back(
          wire::CreateClientMessage(builder, m.producer.value(), m.sequence, key, payload));
    }
    messages_offset = builder.CreateVector(messages);
  }
  // Only a configuration entry writes `members`: every other value encodes
  // byte for byte as before the field was appended.
  const auto members =
      value.kind == paxos::ValueKind::kConfig ? MembersToWire(builder, value.membership) : 0;
  const wire::Ballot origin = ToWire(value.origin);
  return wire::CreateValue(builder, ToWire(value.kind), &origin, messages_offset, members);
}

// FlatBuffers buffers are limited to 2 GiB and the builder only checks that
// in debug builds. Frames and records this big are a batching bug upstream
// (batches are capped far lower), so encoding one is refused loudly.
constexpr size_t kEncodedBytesMax = size_t{1} << 30;
static_assert(kEncodedBytesMax / 32 * 50 < FLATBUFFERS_MAX_BUFFER_SIZE,
              "the worst-case overhead over BuilderBytesFor's estimate still fits");

// Room for the value's bytes plus the tables around them, so a large batch
// is built without a reallocation (profiled: growing the buffer and copying
// the batch was the leader's largest cost). paxos::Value::ByteSize() counts
// every key and payload byte plus 32 per message; a ClientMessage table with
// its vectors takes up to about 60, so 32 more per message are reserved. An
// estimate within kEncodedBytesMax keeps the real buffer well inside the
// 2 GiB limit.
size_t BuilderBytesFor(const paxos::Value* value) {
  constexpr size_t kOverheadBytes = 128;
  if (value == nullptr) return kOverheadBytes;
  return kOverheadBytes + value->ByteSize() + 32 * value->messages.size();
}

// The value's own buffer (root Value), encoded the first time and kept on
// the value: every Accept to every follower and the log record copy these
// bytes instead of encoding each message again (profiled: re-encoding was
// about a third of the leader's CPU).
std::span<const uint8_t> EncodedValue(const paxos::Value& value) {
  if (value.encoded.owner == nullptr) {
    fb::FlatBufferBuilder builder(BuilderBytesFor(&value));
    builder.Finish(ValueToWire(builder, value));
    auto buffer = std::make_shared<fb::DetachedBuffer>(builder.Release());
    value.encoded.data = buffer->data();
    value.encoded.size = buffer->size();
    value.encoded.owner = std::move(buffer);
  }
  return {value.encoded.data, value.encoded.size};
}

// value_bytes: the encoded value, aligned for the widest scalar in it so a
// reader can use it in place.
fb::Offset<fb::Vector<uint8_t>> ValueBytesToWire(fb::FlatBufferBuilder& builder,
                                                 const paxos::Value& value) {
  const std::span<const uint8_t> bytes = EncodedValue(value);
  builder.ForceVectorAlignment(bytes.size(), 1, kBufferAlignment);
  return builder.CreateVector(bytes.data(), bytes.size());
}

// Prefixes the finished buffer with its CRC32C (the stored record layout).
std::string ChecksummedRecord(const fb::FlatBufferBuilder& builder) {
  const uint8_t* buffer = builder.GetBufferPointer();
  const size_t size = builder.GetSize();
  std::string record(kRecordChecksumBytes + size, '\0');
  StoreLe32(Crc32c(buffer, size), record.data());
  std::memcpy(record.data() + kRecordChecksumBytes, buffer, size);
  return record;
}

// --- Decoding ---

fb::Verifier::Options VerifierOptions(size_t size) {
  fb::Verifier::Options options;
  options.max_depth = kVerifierDepthMax;
  // size < 2 GiB was checked, so this fits a uoffset_t.
  options.max_tables = static_cast<fb::uoffset_t>(size / kVerifierBytesPerTable + 1);
  options.check_alignment = true;
  return options;
}

// Reads the root table's version field after verifying only the root offset
// (at BufferStart), the root table's header and that one field. False if
// those are malformed.
bool PeekVersion(const AlignedBytes& bytes, const Format& format, uint16_t* version) {
  const size_t start = BufferStart(format);
  fb::Verifier verifier(bytes.data(), bytes.size(), VerifierOptions(bytes.size()));
  const fb::uoffset_t root_offset = verifier.VerifyOffset(start);
  if (root_offset == 0) return false;
  const auto* root = reinterpret_cast<const fb::Table*>(bytes.data() + start + root_offset);
  if (!root->VerifyTableStart(verifier)) return false;
  if (!root->VerifyField<uint16_t>(verifier, kVersionField, sizeof(uint16_t))) return false;
  *version = root->GetField<uint16_t>(kVersionField, format.version_default);
  return true;
}

// Steps 2 (the FlatBuffers part) to 5 of codec.h for one root type: header
// and size prefix, identifier, version, verifier. On success *root points
// into `bytes`.
template <typename Root>
DecodeStatus DecodeRoot(const AlignedBytes& bytes, const Format& format, const Root** root) {
  const size_t start = BufferStart(format);
  if (bytes.size() < start + kBufferHeaderBytes) {
    return Fail(DecodeCode::kTruncated, Name(format) + " of " + std::to_string(bytes.size()) +
                                            " bytes is shorter than its " +
                                            std::to_string(start + kBufferHeaderBytes) +
                                            "-byte FlatBuffers header");
  }
  if (format.size_prefixed) {
    const size_t declared = fb::ReadScalar<fb::uoffset_t>(bytes.data());
    const size_t actual = bytes.size() - start;
    if (declared != actual) {
      return Fail(declared > actual ? DecodeCode::kTruncated : DecodeCode::kMalformed,
                  Name(format) + " has " + std::to_string(actual) +
                      " bytes after its size prefix, which declares " + std::to_string(declared));
    }
  }
  const uint8_t* identifier = bytes.data() + start + sizeof(fb::uoffset_t);
  if (!fb::BufferHasIdentifier(bytes.data() + start, format.identifier())) {
    return Fail(DecodeCode::kWrongIdentifier, Name(format) + " has file identifier " +
                                                  QuoteIdentifier(identifier) + ", expected \"" +
                                                  format.identifier() + "\"");
  }
  uint16_t version = 0;
  if (!PeekVersion(bytes, format, &version)) {
    return Fail(DecodeCode::kMalformed,
                Name(format) + ": root table fails FlatBuffers verification");
  }
  if (version < format.min_version || version > format.version) {
    return Fail(DecodeCode::kWrongVersion,
                Name(format) + " has version " + std::to_string(version) +
                    ", this build reads version " +
                    (format.min_version == format.version
                         ? std::to_string(format.version)
                         : std::to_string(format.min_version) + " to " +
                               std::to_string(format.version)));
  }
  fb::Verifier verifier(bytes.data(), bytes.size(), VerifierOptions(bytes.size()));
  const bool verified = format.size_prefixed
                            ? verifier.VerifySizePrefixedBuffer<Root>(format.identifier())
                            : verifier.VerifyBuffer<Root>(format.identifier());
  if (!verified) {
    return Fail(DecodeCode::kMalformed,
                Name(format) + " of " + std::to_string(bytes.size()) +
                    " bytes fails FlatBuffers verification (bad offset, missing required "
                    "field, or nesting or table count over the limit)");
  }
  *root = format.size_prefixed ? fb::GetSizePrefixedRoot<Root>(bytes.data())
                               : fb::GetRoot<Root>(bytes.data());
  return DecodeStatus();
}

// A membership as the wire carries it (a configuration entry's or a
// snapshot's members): "" and *out filled when CheckMembership accepts it,
// else why not (*out then partly filled).
std::string MembersFromWire(const fb::Vector<fb::Offset<wire::Member>>* members,
                            paxos::Membership* out) {
  out->members.clear();
  if (members == nullptr || members->size() == 0) return "";  // none: the bootstrap holds
  if (members->size() > kMembersMax) {
    return std::to_string(members->size()) + " members, more than " + std::to_string(kMembersMax);
  }
  out->members.reserve(members->size());
  for (const wire::Member* m : *members) {
    paxos::Member& member = out->members.emplace_back();
    member.id = paxos::NodeId(m->id());
    member.voter = m->voter();
    // (Bounded before they are copied: CheckMembership bounds them again.)
    for (auto [from, to] : {std::pair{m->peer(), &member.peer},
                            {m->client(), &member.client},
                            {m->public_key(), &member.public_key}}) {
      if (from == nullptr) continue;
      if (from->size() > kEndpointBytesMax) {
        return "member " + std::to_string(m->id()) + ": a string of " +
               std::to_string(from->size()) + " bytes (at most " +
               std::to_string(kEndpointBytesMax) + ")";
      }
      to->assign(from->data(), from->size());
    }
  }
  return CheckMembership(*out);
}

// Step 6 for a value: its kind must be known. `where` names the value for the
// message; it is only called on failure, so valid input costs no strings.
template <typename Where>
DecodeStatus CheckValue(const wire::Value& value, const Format& format, Where where) {
  paxos::ValueKind kind;
  if (!FromWire(value.kind(), &kind)) {
    return Fail(DecodeCode::kInvalid, Name(format) + ": " + where() + ": value kind " +
                                          std::to_string(static_cast<unsigned>(value.kind())) +
                                          " is not one this build knows");
  }
  const bool has_members = value.members() != nullptr && value.members()->size() > 0;
  if (kind != paxos::ValueKind::kConfig) {
    if (!has_members) return DecodeStatus();
    return Fail(DecodeCode::kInvalid, Name(format) + ": " + where() + ": a " +
                                          paxos::ToString(kind) + " value carries members");
  }
  if (!has_members) {
    return Fail(DecodeCode::kInvalid,
                Name(format) + ": " + where() + ": a configuration entry without members");
  }
  paxos::Membership membership;
  if (std::string why = MembersFromWire(value.members(), &membership); !why.empty()) {
    return Fail(DecodeCode::kInvalid, Name(format) + ": " + where() + ": " + why);
  }
  return DecodeStatus();
}

// Where an Entry or LogRecord keeps its value: the `value` table (version 1)
// or `value_bytes`, a buffer of its own (version 2). `bytes` is empty for a
// table.
struct ValueRef {
  const wire::Value* value = nullptr;
  std::span<const uint8_t> bytes;
};

// Exactly one of the two must be set; value_bytes is verified here as a
// buffer of its own (the outer verifier saw only a byte vector).
template <typename Holder, typename Where>
DecodeStatus ResolveValue(const Holder& holder, const Format& format, Where where,
                          ValueRef* out) {
  const fb::Vector<uint8_t>* bytes = holder.value_bytes();
  if ((holder.value() == nullptr) == (bytes == nullptr)) {
    return Fail(DecodeCode::kMalformed,
                Name(format) + ": " + where() + ": exactly one of value and value_bytes must be set");
  }
  if (bytes == nullptr) {
    out->value = holder.value();
    out->bytes = {};
    return DecodeStatus();
  }
  // In place when aligned (our writers align it); a copy would not outlive
  // this call, so a misaligned one is refused.
  if (reinterpret_cast<uintptr_t>(bytes->data()) % kBufferAlignment != 0 ||
      bytes->size() < sizeof(fb::uoffset_t)) {
    return Fail(DecodeCode::kMalformed,
                Name(format) + ": " + where() + ": value_bytes is misaligned or too short");
  }
  fb::Verifier verifier(bytes->data(), bytes->size(), VerifierOptions(bytes->size()));
  if (!verifier.VerifyBuffer<wire::Value>(nullptr)) {
    return Fail(DecodeCode::kMalformed,
                Name(format) + ": " + where() + ": value_bytes fails FlatBuffers verification");
  }
  out->value = fb::GetRoot<wire::Value>(bytes->data());
  out->bytes = {bytes->data(), bytes->size()};
  return DecodeStatus();
}

// The key and payload bytes a value decodes to, for the inflation check.
// Messages of a non-batch value are counted and carried along like any
// others: the apply step ignores them, and refusing them here buys nothing.
size_t ContentBytes(const wire::Value& value) {
  size_t bytes = 0;
  if (const auto* messages = value.messages(); messages != nullptr) {
    for (const wire::ClientMessage* m : *messages) {
      if (m->key() != nullptr) bytes += m->key()->size();
      if (m->payload() != nullptr) bytes += m->payload()->size();
    }
  }
  return bytes;
}

// Step 6's inflation check: the encoder writes every key and payload once,
// so an honest buffer holds them all within its own size.
DecodeStatus CheckContentBytes(size_t content_bytes, size_t input_bytes, const Format& format) {
  if (content_bytes <= input_bytes) return DecodeStatus();
  return Fail(DecodeCode::kInvalid, Name(format) + " of " + std::to_string(input_bytes) +
                                        " bytes would decode to " + std::to_string(content_bytes) +
                                        " bytes of keys and payloads (shared offsets)");
}

std::string_view ViewOf(const fb::Vector<uint8_t>* bytes) {
  if (bytes == nullptr) return {};
  return {reinterpret_cast<const char*>(bytes->data()), bytes->size()};
}

// Precondition: CheckValue passed for `value`. `encoded`: the value's own
// buffer when it came as one, kept (copied once) so it is stored and sent
// again without encoding; the messages' keys and payloads are views into
// that copy. A version 1 value (a table inside a bigger buffer) gets one
// buffer for all its bytes instead. Either way: one allocation per batch,
// none per message.
paxos::ValuePtr ValueFromWire(const wire::Value& value, std::span<const uint8_t> encoded) {
  auto out = std::make_shared<paxos::Value>();
  const auto* messages = value.messages();
  std::shared_ptr<std::vector<uint8_t>> copy;
  std::optional<paxos::BytesArena> arena;
  if (!encoded.empty()) {
    copy = std::make_shared<std::vector<uint8_t>>(encoded.begin(), encoded.end());
    out->encoded.data = copy->data();
    out->encoded.size = copy->size();
    out->encoded.owner = copy;
  } else {
    arena.emplace(ContentBytes(value));
  }
  auto view = [&](const fb::Vector<uint8_t>* bytes) {
    const std::string_view v = ViewOf(bytes);
    if (!copy) return arena->Keep(v);
    if (v.empty()) return paxos::Bytes();
    // The same place in the copy as in `encoded`.
    const size_t at = reinterpret_cast<const uint8_t*>(v.data()) - encoded.data();
    return paxos::Bytes::Shared(copy, {reinterpret_cast<const char*>(copy->data()) + at, v.size()});
  };
  const bool known = FromWire(value.kind(), &out->kind);
  PAXOS_ASSERT(known);
  out->origin = FromWire(value.origin());
  if (out->kind == paxos::ValueKind::kConfig) {
    const std::string why = MembersFromWire(value.members(), &out->membership);
    PAXOS_ASSERT(why.empty());  // CheckValue passed
  }
  if (messages != nullptr) {
    out->messages.reserve(messages->size());
    for (const wire::ClientMessage* m : *messages) {
      paxos::ClientMessage& message = out->messages.emplace_back();
      message.producer = paxos::ProducerId(m->producer());
      message.sequence = m->sequence();
      message.key = view(m->key());
      message.payload = view(m->payload());
    }
  }
  return out;
}

// Step 1 and 2 for a stored record: size, CRC prefix, checksum. On success
// *body is the FlatBuffers part.
DecodeStatus CheckRecordFraming(std::span<const uint8_t> record, const Format& format,
                                std::span<const uint8_t>* body) {
  if (record.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return Fail(DecodeCode::kTooLarge, Name(format) + " of " + std::to_string(record.size()) +
                                           " bytes exceeds the FlatBuffers limit");
  }
  if (record.size() < kRecordChecksumBytes + kBufferHeaderBytes) {
    return Fail(DecodeCode::kTruncated,
                Name(format) + " of " + std::to_string(record.size()) +
                    " bytes is shorter than its CRC32C prefix and FlatBuffers header (" +
                    std::to_string(kRecordChecksumBytes + kBufferHeaderBytes) + " bytes)");
  }
  *body = record.subspan(kRecordChecksumBytes);
  const uint32_t stored = LoadLe32(record.data());
  const uint32_t computed = Crc32c(body->data(), body->size());
  if (stored != computed) {
    char hex[64];
    std::snprintf(hex, sizeof(hex), "stored 0x%08x, computed 0x%08x", stored, computed);
    return Fail(DecodeCode::kChecksumMismatch, Name(format) + " fails its CRC32C check (" + hex +
                                                   ") over " + std::to_string(body->size()) +
                                                   " bytes");
  }
  return DecodeStatus();
}

}  // namespace

const char* ToString(DecodeCode code) {
  switch (code) {
    case DecodeCode::kOk:
      return "ok";
    case DecodeCode::kTooLarge:
      return "too large";
    case DecodeCode::kTruncated:
      return "truncated";
    case DecodeCode::kChecksumMismatch:
      return "checksum mismatch";
    case DecodeCode::kWrongIdentifier:
      return "wrong identifier";
    case DecodeCode::kWrongVersion:
      return "wrong version";
    case DecodeCode::kMalformed:
      return "malformed";
    case DecodeCode::kInvalid:
      return "invalid";
  }
  return "?";
}

std::string DecodeStatus::ToString() const {
  if (ok()) return "ok";
  return std::string(broker::ToString(code())) + ": " + message();
}

// --- Peer frames ---

std::string EncodePeerMessage(const paxos::Message& message) {
  const std::unique_ptr<fb::DetachedBuffer> frame = EncodePeerFrame(message);
  return std::string(reinterpret_cast<const char*>(frame->data()), frame->size());
}

namespace {
// The message around its (already built) entries, and the envelope.
std::unique_ptr<fb::DetachedBuffer> FinishPeerFrame(
    fb::FlatBufferBuilder& builder, const paxos::Message& message,
    fb::Offset<fb::Vector<fb::Offset<wire::Entry>>> entries_offset) {
  const wire::Ballot ballot = ToWire(message.ballot);
  const wire::Ballot promised = ToWire(message.promised);
  fb::Offset<fb::Vector<const wire::ChainHint*>> chain_offset = 0;
  if (!message.chain.empty()) {
    wire::ChainHint* hints = nullptr;
    chain_offset = builder.CreateUninitializedVectorOfStructs(message.chain.size(), &hints);
    for (const paxos::ChainHint& h : message.chain) {
      *hints = wire::ChainHint(h.instance.value(), fb::make_span(h.before.bytes),
                               fb::make_span(h.after.bytes));
      ++hints;
    }
  }
  const auto body = wire::CreatePeerMessage(
      builder, ToWire(message.type), message.from.value(), message.to.value(), &ballot, &promised,
      message.instance.value(), message.instance_last.value(), message.chosen.value(),
      entries_offset, message.first_retained.value(), chain_offset);
  wire::FinishSizePrefixedPeerEnvelopeBuffer(
      builder, wire::CreatePeerEnvelope(builder, kPeerFormatVersion, body));
  return std::make_unique<fb::DetachedBuffer>(builder.Release());
}
}  // namespace

std::unique_ptr<fb::DetachedBuffer> EncodePeerFrame(const paxos::Message& message) {
  size_t capacity = BuilderBytesFor(nullptr) + message.chain.size() * sizeof(wire::ChainHint);
  for (const paxos::Entry& entry : message.entries) capacity += BuilderBytesFor(entry.value.get());
  PAXOS_ASSERT(capacity <= kEncodedBytesMax);
  fb::FlatBufferBuilder builder(capacity);

  fb::Offset<fb::Vector<fb::Offset<wire::Entry>>> entries_offset = 0;
  if (!message.entries.empty()) {
    std::vector<fb::Offset<wire::Entry>> entries;
    entries.reserve(message.entries.size());
    for (const paxos::Entry& entry : message.entries) {
      PAXOS_ASSERT(entry.value != nullptr);
      const auto value_bytes = ValueBytesToWire(builder, *entry.value);
      const wire::Ballot ballot = ToWire(entry.ballot);
      entries.push_back(
          wire::CreateEntry(builder, entry.instance.value(), &ballot, 0, value_bytes));
    }
    entries_offset = builder.CreateVector(entries);
  }
  return FinishPeerFrame(builder, message, entries_offset);
}

namespace {
DecodeStatus DecodeConsensus(const wire::PeerMessage& message, size_t frame_size,
                             paxos::Message* out);
DecodeStatus DecodeSnapshotMessage(const wire::SnapshotMessage& message, size_t frame_size,
                                   SnapshotMessage* out);
}  // namespace

DecodeStatus DecodePeerMessage(std::span<const uint8_t> frame, size_t frame_bytes_max,
                               paxos::Message* out) {
  PeerFrame f;
  DecodeStatus s = DecodePeerFrame(frame, frame_bytes_max, &f);
  if (!s.ok()) return s;
  if (f.is_snapshot) {
    return Fail(DecodeCode::kInvalid, Name(kPeerFormat) + ": a snapshot message, not a consensus one");
  }
  *out = std::move(f.message);
  return DecodeStatus();
}

DecodeStatus DecodePeerFrame(std::span<const uint8_t> frame, size_t frame_bytes_max,
                             PeerFrame* out) {
  // Step 1, before anything else is read.
  if (frame.size() > frame_bytes_max) {
    return Fail(DecodeCode::kTooLarge, Name(kPeerFormat) + " of " + std::to_string(frame.size()) +
                                           " bytes exceeds the limit of " +
                                           std::to_string(frame_bytes_max));
  }
  if (frame.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return Fail(DecodeCode::kTooLarge, Name(kPeerFormat) + " of " + std::to_string(frame.size()) +
                                           " bytes exceeds the FlatBuffers limit");
  }
  const AlignedBytes bytes(frame);
  const wire::PeerEnvelope* envelope = nullptr;
  if (DecodeStatus s = DecodeRoot(bytes, kPeerFormat, &envelope); !s.ok()) return s;
  if ((envelope->message() == nullptr) == (envelope->snapshot() == nullptr)) {
    return Fail(DecodeCode::kInvalid,
                Name(kPeerFormat) + ": exactly one of message and snapshot must be set");
  }
  if (envelope->snapshot() != nullptr) {
    out->is_snapshot = true;
    return DecodeSnapshotMessage(*envelope->snapshot(), frame.size(), &out->snapshot);
  }
  out->is_snapshot = false;
  return DecodeConsensus(*envelope->message(), frame.size(), &out->message);
}

namespace {

DecodeStatus DecodeConsensus(const wire::PeerMessage& message, size_t frame_size,
                             paxos::Message* out) {
  paxos::Message decoded;
  if (!FromWire(message.type(), &decoded.type)) {
    return Fail(DecodeCode::kInvalid, Name(kPeerFormat) + ": message type " +
                                          std::to_string(static_cast<unsigned>(message.type())) +
                                          " is not one this build knows");
  }
  const auto* entries = message.entries();
  size_t content_bytes = 0;
  std::vector<ValueRef> values(entries != nullptr ? entries->size() : 0);
  if (entries != nullptr) {
    for (fb::uoffset_t i = 0; i < entries->size(); ++i) {
      const wire::Entry& entry = *entries->Get(i);
      const auto where = [&] { return EntryWhere(i, entry.instance()); };
      if (entry.instance() == paxos::kNoInstance.value()) {
        return Fail(DecodeCode::kInvalid,
                    Name(kPeerFormat) + ": " + where() + ": instances are numbered from 1");
      }
      if (DecodeStatus s = ResolveValue(entry, kPeerFormat, where, &values[i]); !s.ok()) return s;
      if (DecodeStatus s = CheckValue(*values[i].value, kPeerFormat, where); !s.ok()) return s;
      content_bytes += ContentBytes(*values[i].value);
    }
  }
  if (DecodeStatus s = CheckContentBytes(content_bytes, frame_size, kPeerFormat); !s.ok()) {
    return s;
  }
  // Chain hints: fixed-size structs the verifier bounds-checked; only their
  // order is left. (What they say is checked where they are used.)
  const auto* chain = message.chain();
  if (chain != nullptr) {
    // The verifier checks the vector's length field, not that its 8-byte
    // structs are 8-byte aligned: a writer of our own aligns them, a hostile
    // one may not (the frame itself sits at an aligned address).
    if (reinterpret_cast<uintptr_t>(chain->Data()) % alignof(wire::ChainHint) != 0) {
      return Fail(DecodeCode::kInvalid, Name(kPeerFormat) + ": chain hints are misaligned");
    }
    for (fb::uoffset_t i = 0; i < chain->size(); ++i) {
      const uint64_t instance = chain->Get(i)->instance();
      if (instance == paxos::kNoInstance.value() ||
          (i > 0 && instance <= chain->Get(i - 1)->instance())) {
        return Fail(DecodeCode::kInvalid, Name(kPeerFormat) + ": chain hint " + std::to_string(i) +
                                              " (instance " + std::to_string(instance) +
                                              ") is not above the one before");
      }
    }
  }

  // Step 7: every check passed, conversion cannot fail.
  decoded.from = paxos::NodeId(message.from());
  decoded.to = paxos::NodeId(message.to());
  decoded.ballot = FromWire(message.ballot());
  decoded.promised = FromWire(message.promised());
  decoded.instance = paxos::Instance(message.instance());
  decoded.instance_last = paxos::Instance(message.instance_last());
  decoded.chosen = paxos::Instance(message.chosen());
  decoded.first_retained = paxos::Instance(message.first_retained());
  if (chain != nullptr) {
    decoded.chain.reserve(chain->size());
    for (const wire::ChainHint* h : *chain) {
      paxos::ChainHint& hint = decoded.chain.emplace_back();
      hint.instance = paxos::Instance(h->instance());
      std::copy(h->before()->begin(), h->before()->end(), hint.before.bytes.begin());
      std::copy(h->after()->begin(), h->after()->end(), hint.after.bytes.begin());
    }
  }
  if (entries != nullptr) {
    decoded.entries.reserve(entries->size());
    for (fb::uoffset_t i = 0; i < entries->size(); ++i) {
      const wire::Entry* entry = entries->Get(i);
      decoded.entries.push_back(paxos::Entry{paxos::Instance(entry->instance()),
                                             FromWire(entry->ballot()),
                                             ValueFromWire(*values[i].value, values[i].bytes)});
    }
  }
  *out = std::move(decoded);
  return DecodeStatus();
}

DecodeStatus DecodeSnapshotMessage(const wire::SnapshotMessage& m, size_t frame_size,
                                   SnapshotMessage* out) {
  if (m.op() != wire::SnapshotOp::Request && m.op() != wire::SnapshotOp::Chunk &&
      m.op() != wire::SnapshotOp::Unavailable) {
    return Fail(DecodeCode::kInvalid, Name(kPeerFormat) + ": snapshot op " +
                                          std::to_string(static_cast<unsigned>(m.op())) +
                                          " is not one this build knows");
  }
  const size_t data_bytes = m.data() ? m.data()->size() : 0;
  if (data_bytes > frame_size) {
    return Fail(DecodeCode::kInvalid, Name(kPeerFormat) + ": snapshot chunk larger than its frame");
  }
  SnapshotMessage d;
  d.op = static_cast<SnapshotMessage::Op>(m.op());
  d.from = m.from();
  d.to = m.to();
  d.handle = SnapshotHandle{m.instance(), m.size(), m.checksum()};
  d.offset = m.offset();
  d.min_instance = m.min_instance();
  if (m.data()) d.data.assign(reinterpret_cast<const char*>(m.data()->data()), data_bytes);
  d.data_checksum = m.data_checksum();
  *out = std::move(d);
  return DecodeStatus();
}

}  // namespace

std::string EncodeSnapshotMessage(const SnapshotMessage& m) {
  fb::FlatBufferBuilder builder(m.data.size() + 256);
  fb::Offset<fb::Vector<uint8_t>> data = 0;
  if (!m.data.empty()) {
    data = builder.CreateVector(reinterpret_cast<const uint8_t*>(m.data.data()), m.data.size());
  }
  const auto body = wire::CreateSnapshotMessage(
      builder, static_cast<wire::SnapshotOp>(m.op), m.from, m.to, m.handle.instance,
      m.handle.size, m.handle.checksum, m.offset, m.min_instance, data, m.data_checksum);
  wire::FinishSizePrefixedPeerEnvelopeBuffer(
      builder, wire::CreatePeerEnvelope(builder, kPeerFormatVersion, 0, body));
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

// --- Memberships ---

static_assert(kVotersMax == paxos::VoteSet::kVotersMax, "a configuration the core can hold");

bool WellFormedEndpoint(std::string_view endpoint) {
  if (endpoint.size() > kEndpointBytesMax) return false;
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == endpoint.size()) return false;
  const std::string_view port = endpoint.substr(colon + 1);
  if (port.size() > 5) return false;
  uint32_t p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    p = p * 10 + static_cast<uint32_t>(c - '0');
  }
  if (p == 0 || p > 65535) return false;
  for (char c : endpoint.substr(0, colon)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == '_' || c == ':' || c == '[' || c == ']';
    if (!ok) return false;
  }
  return true;
}

bool WellFormedPublicKey(std::string_view key) {
  if (key.empty()) return true;
  if (key.size() != kPublicKeyChars) return false;
  static constexpr std::string_view kZ85 =
      "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
  for (char c : key) {
    if (kZ85.find(c) == std::string_view::npos) return false;
  }
  return true;
}

std::string CheckMember(const paxos::Member& m) {
  const std::string name = "member " + std::to_string(m.id.value());
  if (m.id == paxos::kNoNode) return "a member with id 0 (ids start at 1)";
  if (!WellFormedEndpoint(m.peer))
    return name + ": peer endpoint '" + m.peer + "' is not HOST:PORT";
  if (!WellFormedEndpoint(m.client)) {
    return name + ": client endpoint '" + m.client + "' is not HOST:PORT";
  }
  if (!WellFormedPublicKey(m.public_key)) {
    return name + ": public key '" + m.public_key + "' is not 40 characters of Z85";
  }
  return "";
}

std::string CheckMembership(const paxos::Membership& membership) {
  if (membership.members.size() > kMembersMax) {
    return std::to_string(membership.members.size()) + " members, more than " +
           std::to_string(kMembersMax);
  }
  size_t voters = 0;
  for (size_t i = 0; i < membership.members.size(); ++i) {
    const paxos::Member& m = membership.members[i];
    if (std::string why = CheckMember(m); !why.empty()) return why;
    if (i > 0 && !(membership.members[i - 1].id < m.id)) {
      return "member ids are not unique and ascending (" +
             std::to_string(membership.members[i - 1].id.value()) + " then " +
             std::to_string(m.id.value()) + ")";
    }
    if (m.voter) ++voters;
  }
  if (voters == 0) return "a membership without a voter";
  if (voters > kVotersMax) {
    return std::to_string(voters) + " voters, more than " + std::to_string(kVotersMax);
  }
  return "";
}

// --- Snapshot files ---

std::string EncodeSnapshotFile(const paxos::AppliedSnapshot& state,
                               std::span<const StreamMessage> keyed) {
  size_t bytes = 1024 + state.producers.size() * 64;
  for (const StreamMessage& m : keyed) bytes += m.key.size() + m.payload.size() + 64;
  fb::FlatBufferBuilder builder(bytes);
  std::vector<fb::Offset<wire::ProducerState>> producers;
  producers.reserve(state.producers.size());
  for (const paxos::ProducerSnapshot& p : state.producers) {
    std::vector<wire::SequenceRun> runs;
    runs.reserve(p.runs.size());
    for (const auto& r : p.runs) runs.emplace_back(r.sequence_first, r.offset_first, r.count);
    producers.push_back(wire::CreateProducerStateDirect(builder, p.id.value(), p.last_sequence,
                                                        &runs));
  }
  std::vector<fb::Offset<wire::KeyedMessage>> messages;
  messages.reserve(keyed.size());
  for (const StreamMessage& m : keyed) {
    const auto key = BytesToWire(builder, m.key);
    const auto payload = BytesToWire(builder, m.payload);
    messages.push_back(wire::CreateKeyedMessage(builder, key, m.offset, m.producer, m.sequence,
                                                payload));
  }
  const wire::Ballot barrier = ToWire(state.barrier);
  // Written only when a configuration entry was applied: a snapshot of a
  // cluster that never changed its membership is byte for byte as before.
  const auto members = state.membership.empty() ? 0 : MembersToWire(builder, state.membership);
  // Absent while zero (nothing appended yet), like the membership.
  const auto chain =
      state.chain.zero() ? 0 : builder.CreateVector(state.chain.bytes.data(), state.chain.kBytes);
  const auto root = wire::CreateSnapshot(
      builder, kSnapshotFormatVersion, state.instance.value(), state.next_offset.value(), &barrier,
      builder.CreateVector(producers), builder.CreateVector(messages), members, chain);
  wire::FinishSnapshotBuffer(builder, root);
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

namespace {
// Step 6 for a snapshot file. The verifier checks that a vector of structs
// starts at a 4-byte boundary (its length), not that its elements are
// aligned: a runs vector must be, for SequenceRun's 8-byte fields (our
// encoder aligns every one that is not empty). Every key is one the
// compacted view can hold. And, as for values (CheckContentBytes), the
// runs, keys and payloads must fit in the file: the encoder writes each
// once, and a file whose producers share one runs vector, or whose messages
// share one payload, would otherwise decode into far more memory than it
// occupies.
DecodeStatus CheckSnapshot(const wire::Snapshot& root, size_t file_bytes) {
  size_t content_bytes = 0;
  if (const auto* producers = root.producers(); producers != nullptr) {
    for (const wire::ProducerState* p : *producers) {
      const auto* runs = p->runs();
      if (runs == nullptr || runs->size() == 0) continue;  // no element is read
      if (reinterpret_cast<uintptr_t>(runs->Data()) % alignof(wire::SequenceRun) != 0) {
        return Fail(DecodeCode::kMalformed, Name(kSnapshotFormat) + ": producer " +
                                                std::to_string(p->id()) +
                                                ": its sequence runs are misaligned");
      }
      content_bytes += size_t{runs->size()} * sizeof(wire::SequenceRun);
    }
  }
  if (const auto* messages = root.keyed(); messages != nullptr) {
    for (fb::uoffset_t i = 0; i < messages->size(); ++i) {
      const wire::KeyedMessage* m = messages->Get(i);
      if (m->key()->size() == 0 || m->key()->size() > kKeyBytesMax) {
        return Fail(DecodeCode::kInvalid, Name(kSnapshotFormat) + ": keyed message " +
                                              std::to_string(i) + " has a key of " +
                                              std::to_string(m->key()->size()) + " bytes (1 to " +
                                              std::to_string(kKeyBytesMax) + ")");
      }
      content_bytes += m->key()->size() + (m->payload() ? m->payload()->size() : 0);
    }
  }
  paxos::Membership membership;
  if (std::string why = MembersFromWire(root.members(), &membership); !why.empty()) {
    return Fail(DecodeCode::kInvalid, Name(kSnapshotFormat) + ": membership: " + why);
  }
  if (root.chain() != nullptr && root.chain()->size() != paxos::ChainValue::kBytes) {
    return Fail(DecodeCode::kInvalid, Name(kSnapshotFormat) + ": a chain value of " +
                                          std::to_string(root.chain()->size()) +
                                          " bytes (32 expected)");
  }
  if (content_bytes <= file_bytes) return DecodeStatus();
  return Fail(DecodeCode::kInvalid, Name(kSnapshotFormat) + " of " + std::to_string(file_bytes) +
                                        " bytes would decode to " + std::to_string(content_bytes) +
                                        " bytes of sequence runs, keys and payloads (shared "
                                        "offsets)");
}
}  // namespace

DecodeStatus DecodeSnapshotFile(std::span<const uint8_t> file, paxos::AppliedSnapshot* state,
                                std::vector<StreamMessage>* keyed) {
  if (file.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return Fail(DecodeCode::kTooLarge, "snapshot file exceeds the FlatBuffers limit");
  }
  const AlignedBytes bytes(file);
  const wire::Snapshot* root = nullptr;
  if (DecodeStatus s = DecodeRoot(bytes, kSnapshotFormat, &root); !s.ok()) return s;
  if (DecodeStatus s = CheckSnapshot(*root, file.size()); !s.ok()) return s;

  // Step 7: every check passed, conversion cannot fail.
  paxos::AppliedSnapshot st;
  st.instance = paxos::Instance(root->instance());
  st.next_offset = paxos::Offset(root->next_offset());
  st.barrier = FromWire(root->barrier());
  {
    const std::string why = MembersFromWire(root->members(), &st.membership);
    PAXOS_ASSERT(why.empty());  // CheckSnapshot passed
  }
  if (root->chain() != nullptr) {
    std::memcpy(st.chain.bytes.data(), root->chain()->data(), paxos::ChainValue::kBytes);
  }
  if (root->producers()) {
    for (const wire::ProducerState* p : *root->producers()) {
      paxos::ProducerSnapshot ps;
      ps.id = paxos::ProducerId(p->id());
      ps.last_sequence = p->last_sequence();
      if (p->runs()) {
        for (const wire::SequenceRun* r : *p->runs()) {
          ps.runs.push_back({r->sequence_first(), r->offset_first(), r->count()});
        }
      }
      st.producers.push_back(std::move(ps));
    }
  }
  if (keyed && root->keyed()) {
    keyed->reserve(root->keyed()->size());
    for (const wire::KeyedMessage* m : *root->keyed()) {
      keyed->push_back(StreamMessage{m->offset(), m->producer(), m->sequence(),
                                     std::string(ViewOf(m->key())),
                                     std::string(ViewOf(m->payload()))});
    }
  }
  *state = std::move(st);
  return DecodeStatus();
}

// --- Log records ---

struct LogRecordEncoder::Impl {
  explicit Impl(size_t capacity) : builder(capacity) {}
  fb::FlatBufferBuilder builder;
};

LogRecordEncoder::LogRecordEncoder(const paxos::Entry& entry) {
  PAXOS_ASSERT(entry.value != nullptr);
  PAXOS_ASSERT(BuilderBytesFor(entry.value.get()) <= kEncodedBytesMax);
  impl_ = std::make_unique<Impl>(BuilderBytesFor(entry.value.get()));
  fb::FlatBufferBuilder& builder = impl_->builder;
  const auto value_bytes = ValueBytesToWire(builder, *entry.value);
  const wire::Ballot ballot = ToWire(entry.ballot);
  wire::FinishLogRecordBuffer(
      builder, wire::CreateLogRecord(builder, kLogRecordFormatVersion, entry.instance.value(),
                                     &ballot, 0, value_bytes));
}

LogRecordEncoder::~LogRecordEncoder() = default;

size_t LogRecordEncoder::size() const { return kRecordChecksumBytes + impl_->builder.GetSize(); }

void LogRecordEncoder::WriteTo(uint8_t* dst) const {
  const uint8_t* buffer = impl_->builder.GetBufferPointer();
  const size_t size = impl_->builder.GetSize();
  StoreLe32(Crc32c(buffer, size), reinterpret_cast<char*>(dst));
  std::memcpy(dst + kRecordChecksumBytes, buffer, size);
}

std::string EncodeLogRecord(const paxos::Entry& entry) {
  const LogRecordEncoder encoder(entry);
  std::string record(encoder.size(), '\0');
  encoder.WriteTo(reinterpret_cast<uint8_t*>(record.data()));
  return record;
}

namespace {
// Every check of a stored log record (codec.h, steps 1 to 6), then
// use(record, value) while the (possibly copied) bytes are alive.
template <typename Use>
DecodeStatus WithLogRecord(std::span<const uint8_t> record, Use&& use) {
  std::span<const uint8_t> body;
  if (DecodeStatus s = CheckRecordFraming(record, kLogRecordFormat, &body); !s.ok()) return s;
  const AlignedBytes bytes(body);
  const wire::LogRecord* log_record = nullptr;
  if (DecodeStatus s = DecodeRoot(bytes, kLogRecordFormat, &log_record); !s.ok()) return s;

  const auto where = [&] { return "instance " + std::to_string(log_record->instance()); };
  if (log_record->instance() == paxos::kNoInstance.value()) {
    return Fail(DecodeCode::kInvalid,
                Name(kLogRecordFormat) + ": " + where() + ": instances are numbered from 1");
  }
  ValueRef ref;
  if (DecodeStatus s = ResolveValue(*log_record, kLogRecordFormat, where, &ref); !s.ok()) return s;
  if (DecodeStatus s = CheckValue(*ref.value, kLogRecordFormat, where); !s.ok()) return s;
  if (DecodeStatus s = CheckContentBytes(ContentBytes(*ref.value), body.size(), kLogRecordFormat);
      !s.ok()) {
    return s;
  }
  use(*log_record, ref);
  return DecodeStatus();
}
}  // namespace

DecodeStatus DecodeLogRecord(std::span<const uint8_t> record, paxos::Entry* out) {
  return WithLogRecord(record, [&](const wire::LogRecord& r, const ValueRef& ref) {
    *out = paxos::Entry{paxos::Instance(r.instance()), FromWire(r.ballot()),
                        ValueFromWire(*ref.value, ref.bytes)};
  });
}

DecodeStatus VisitLogRecord(std::span<const uint8_t> record, uint64_t* instance,
                            const MessageVisitor& visit) {
  return VisitLogRecord(
      record,
      [&](uint64_t i, uint32_t) {
        *instance = i;
        return true;
      },
      visit);
}

DecodeStatus VisitLogRecord(std::span<const uint8_t> record, const RecordAdmitter& admit,
                            const MessageVisitor& visit) {
  return WithLogRecord(record, [&](const wire::LogRecord& r, const ValueRef& ref) {
    const auto* messages = ref.value->messages();
    if (!admit(r.instance(), messages == nullptr ? 0 : messages->size())) return;
    if (messages == nullptr) return;
    const auto span_of = [](const fb::Vector<uint8_t>* v) {
      return v == nullptr ? std::span<const uint8_t>()
                          : std::span<const uint8_t>(v->data(), v->size());
    };
    for (fb::uoffset_t i = 0; i < messages->size(); ++i) {
      const wire::ClientMessage* m = messages->Get(i);
      visit(i, MessageView{m->producer(), m->sequence(), span_of(m->key()), span_of(m->payload())});
    }
  });
}

struct FetchReplyEncoder::Impl {
  explicit Impl(size_t capacity) : builder(capacity) {}
  fb::FlatBufferBuilder builder;
  std::vector<fb::Offset<wire::Entry>> entries;
};

FetchReplyEncoder::FetchReplyEncoder(size_t capacity)
    : impl_(std::make_unique<Impl>(capacity + BuilderBytesFor(nullptr))) {}

FetchReplyEncoder::~FetchReplyEncoder() = default;

DecodeStatus FetchReplyEncoder::Add(std::span<const uint8_t> record, paxos::Instance instance,
                                    size_t* value_bytes) {
  fb::FlatBufferBuilder& builder = impl_->builder;
  bool wrong_key = false;
  DecodeStatus s = WithLogRecord(record, [&](const wire::LogRecord& r, const ValueRef& ref) {
    if (r.instance() != instance.value()) {
      wrong_key = true;
      return;
    }
    fb::Offset<fb::Vector<uint8_t>> bytes;
    if (!ref.bytes.empty()) {
      // Version 2: the value's own buffer, copied as it is.
      builder.ForceVectorAlignment(ref.bytes.size(), 1, kBufferAlignment);
      bytes = builder.CreateVector(ref.bytes.data(), ref.bytes.size());
      *value_bytes = ref.bytes.size();
    } else {
      // Version 1 stored the value as a table: encode its buffer once.
      const paxos::ValuePtr value = ValueFromWire(*ref.value, {});
      bytes = ValueBytesToWire(builder, *value);
      *value_bytes = value->ByteSize();
    }
    const wire::Ballot ballot = ToWire(FromWire(r.ballot()));
    impl_->entries.push_back(wire::CreateEntry(builder, r.instance(), &ballot, 0, bytes));
    ++entries_;
  });
  if (s.ok() && wrong_key) {
    s = Fail(DecodeCode::kInvalid, Name(kLogRecordFormat) + ": stored under instance " +
                                       std::to_string(instance.value()) + ", holds another");
  }
  return s;
}

std::unique_ptr<fb::DetachedBuffer> FetchReplyEncoder::Finish(const paxos::Message& header) {
  PAXOS_ASSERT(header.entries.empty());
  fb::FlatBufferBuilder& builder = impl_->builder;
  const auto entries = impl_->entries.empty()
                           ? fb::Offset<fb::Vector<fb::Offset<wire::Entry>>>(0)
                           : builder.CreateVector(impl_->entries);
  return FinishPeerFrame(builder, header, entries);
}

// --- Meta records ---

std::string EncodeMetaRecord(const paxos::HardState& hard_state) {
  fb::FlatBufferBuilder builder(BuilderBytesFor(nullptr));
  const wire::Ballot promised = ToWire(hard_state.promised);
  wire::FinishMetaRecordBuffer(builder,
                               wire::CreateMetaRecord(builder, kMetaRecordFormatVersion, &promised,
                                                      hard_state.chosen.value(),
                                                      hard_state.catch_up_until.value()));
  return ChecksummedRecord(builder);
}

DecodeStatus DecodeMetaRecord(std::span<const uint8_t> record, paxos::HardState* out) {
  std::span<const uint8_t> body;
  if (DecodeStatus s = CheckRecordFraming(record, kMetaRecordFormat, &body); !s.ok()) return s;
  const AlignedBytes bytes(body);
  const wire::MetaRecord* meta = nullptr;
  if (DecodeStatus s = DecodeRoot(bytes, kMetaRecordFormat, &meta); !s.ok()) return s;

  *out = paxos::HardState{FromWire(meta->promised()), paxos::Instance(meta->chosen()),
                          paxos::Instance(meta->catch_up_until())};
  return DecodeStatus();
}

// --- Client requests ---

namespace {

// The client request kinds, by the envelope body that carries them.
bool RequestKind(wire::Body body, ClientRequest::Kind* kind) {
  switch (body) {
    case wire::Body::Publish:
      *kind = ClientRequest::Kind::kPublish;
      return true;
    case wire::Body::Subscribe:
      *kind = ClientRequest::Kind::kSubscribe;
      return true;
    case wire::Body::Credit:
      *kind = ClientRequest::Kind::kCredit;
      return true;
    case wire::Body::Fetch:
      *kind = ClientRequest::Kind::kFetch;
      return true;
    case wire::Body::StatusRequest:
      *kind = ClientRequest::Kind::kStatus;
      return true;
    case wire::Body::MembersRequest:
      *kind = ClientRequest::Kind::kMembers;
      return true;
    case wire::Body::ChangeMembers:
      *kind = ClientRequest::Kind::kChangeMembers;
      return true;
    default:  // NONE, the replies, and bodies this build does not know
      return false;
  }
}

// Step 6 for a Publish: no (producer, sequence) twice. The broker answers a
// sequence with the offset it was stored at, so a second message with the
// same one would be acknowledged at the first one's offset and dropped.
DecodeStatus CheckDistinctSequences(const fb::Vector<fb::Offset<wire::ClientMessage>>& messages) {
  using Key = std::pair<uint64_t, uint64_t>;
  const auto key_of = [&](fb::uoffset_t i) {
    const wire::ClientMessage* m = messages.Get(i);
    return Key{m->producer(), m->sequence()};
  };
  // Usually ascending (one producer's contiguous sequences): one pass.
  bool ascending = true;
  for (fb::uoffset_t i = 1; i < messages.size() && ascending; ++i) {
    ascending = key_of(i - 1) < key_of(i);
  }
  if (ascending) return DecodeStatus();
  std::vector<std::pair<Key, fb::uoffset_t>> keys;
  keys.reserve(messages.size());
  for (fb::uoffset_t i = 0; i < messages.size(); ++i) keys.emplace_back(key_of(i), i);
  std::sort(keys.begin(), keys.end());
  for (size_t i = 1; i < keys.size(); ++i) {
    if (keys[i].first != keys[i - 1].first) continue;
    return Fail(DecodeCode::kInvalid, "messages[" + std::to_string(keys[i - 1].second) +
                                          "] and messages[" + std::to_string(keys[i].second) +
                                          "] both carry producer " +
                                          std::to_string(keys[i].first.first) + " sequence " +
                                          std::to_string(keys[i].first.second) +
                                          ": a request carries each sequence of a producer once");
  }
  return DecodeStatus();
}

// Step 6 for a Publish, then step 7: its messages as the core takes them,
// every key and payload copied into one buffer (one allocation per request,
// none per message).
DecodeStatus DecodePublish(const wire::Publish& publish, size_t frame_bytes,
                           size_t message_bytes_max, std::vector<paxos::ClientMessage>* out) {
  const auto* messages = publish.messages();
  if (messages == nullptr || messages->size() == 0) {
    return Fail(DecodeCode::kInvalid, "publish carries no messages");
  }
  size_t content_bytes = 0;
  for (const wire::ClientMessage* m : *messages) {
    content_bytes += (m->key() ? m->key()->size() : 0) + (m->payload() ? m->payload()->size() : 0);
  }
  if (content_bytes > frame_bytes) {
    // Only messages sharing one payload's bytes can do this; refused before
    // it is multiplied into memory.
    return Fail(DecodeCode::kInvalid, "a publish of " + std::to_string(frame_bytes) +
                                          " bytes would hold " + std::to_string(content_bytes) +
                                          " bytes of keys and payloads (messages share bytes)");
  }
  for (const wire::ClientMessage* m : *messages) {
    const size_t key_bytes = m->key() ? m->key()->size() : 0;
    const size_t payload_bytes = m->payload() ? m->payload()->size() : 0;
    if (key_bytes + payload_bytes > message_bytes_max) {
      return Fail(DecodeCode::kTooLarge, "a message of " +
                                             std::to_string(key_bytes + payload_bytes) +
                                             " bytes exceeds limits.message_bytes_max (" +
                                             std::to_string(message_bytes_max) + ")");
    }
    if (key_bytes > kKeyBytesMax) {
      // Keys index the compacted view (an LMDB key: at most 511 bytes).
      return Fail(DecodeCode::kTooLarge, "a key of " + std::to_string(key_bytes) +
                                             " bytes exceeds the limit of " +
                                             std::to_string(kKeyBytesMax) + " bytes");
    }
    if (m->producer() == 0 || m->sequence() == 0) {
      return Fail(DecodeCode::kInvalid,
                  "producer and sequence must be non-zero (sequences start at 1)");
    }
  }
  if (DecodeStatus s = CheckDistinctSequences(*messages); !s.ok()) return s;
  paxos::BytesArena arena(content_bytes);
  out->clear();
  out->reserve(messages->size());
  for (const wire::ClientMessage* m : *messages) {
    out->push_back(paxos::ClientMessage{paxos::ProducerId(m->producer()), m->sequence(),
                                        arena.Keep(ViewOf(m->key())),
                                        arena.Keep(ViewOf(m->payload()))});
  }
  return DecodeStatus();
}

}  // namespace

bool PeekClientRequestId(std::span<const uint8_t> frame, uint64_t* request_id) {
  // What the verifier checks on the way to this one field, and no more (so
  // every frame that verifies reads the same id here), with byte-wise
  // little-endian loads: the frame may have any alignment and is not copied.
  const size_t size = frame.size();
  const uint8_t* p = frame.data();
  if (size < kBufferHeaderBytes || !fb::BufferHasIdentifier(p, wire::ClientEnvelopeIdentifier())) {
    return false;
  }
  const uint64_t table = LoadLe32(p);  // the root table
  if (table == 0 || table > size || size - table < sizeof(fb::soffset_t)) return false;
  const int64_t vtable = static_cast<int64_t>(table) - static_cast<int32_t>(LoadLe32(p + table));
  if (vtable < 0 || static_cast<uint64_t>(vtable) + sizeof(fb::voffset_t) > size) return false;
  const uint16_t vtable_bytes = LoadLe16(p + vtable);
  if (static_cast<uint64_t>(vtable) + vtable_bytes > size) return false;
  constexpr fb::voffset_t kField = wire::ClientEnvelope::VT_REQUEST_ID;
  const uint16_t field =
      kField + sizeof(fb::voffset_t) <= vtable_bytes ? LoadLe16(p + vtable + kField) : 0;
  if (field == 0) {  // absent: the default
    *request_id = 0;
    return true;
  }
  if (table + field + sizeof(uint64_t) > size) return false;
  *request_id = LoadLe64(p + table + field);
  return true;
}

DecodeStatus DecodeClientRequest(std::span<const uint8_t> frame, const ClientLimits& limits,
                                 ClientRequest* out) {
  // The id the refusal answers, read before any other check (a frame too
  // large to decode, or of a version this build does not read, still names
  // its request: request_id is field 1 of the envelope in every version).
  out->request_id = 0;
  if (uint64_t id = 0; PeekClientRequestId(frame, &id)) out->request_id = id;
  // Step 1, before anything else is read.
  if (frame.size() > limits.frame_bytes_max || frame.size() >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    return Fail(DecodeCode::kTooLarge, "frame of " + std::to_string(frame.size()) +
                                           " bytes exceeds limits.frame_bytes_max (" +
                                           std::to_string(limits.frame_bytes_max) + ")");
  }
  const AlignedBytes bytes(frame);
  const wire::ClientEnvelope* envelope = nullptr;
  if (DecodeStatus s = DecodeRoot(bytes, kClientFormat, &envelope); !s.ok()) return s;
  out->request_id = envelope->request_id();
  ClientRequest decoded;
  decoded.request_id = envelope->request_id();
  if (!RequestKind(envelope->body_type(), &decoded.kind)) {
    return Fail(DecodeCode::kInvalid,
                "body type " + std::to_string(static_cast<unsigned>(envelope->body_type())) +
                    " is not a request");
  }
  // The verifier accepts a union whose type is set and whose value is
  // absent: only a StatusRequest or a MembersRequest, which have no fields,
  // may come that way.
  if (envelope->body() == nullptr && decoded.kind != ClientRequest::Kind::kStatus &&
      decoded.kind != ClientRequest::Kind::kMembers) {
    return Fail(DecodeCode::kMalformed, std::string("a ") +
                                            wire::EnumNameBody(envelope->body_type()) +
                                            " request without its body");
  }
  switch (decoded.kind) {
    case ClientRequest::Kind::kPublish:
      if (DecodeStatus s = DecodePublish(*envelope->body_as_Publish(), frame.size(),
                                         limits.message_bytes_max, &decoded.messages);
          !s.ok()) {
        return s;
      }
      break;
    case ClientRequest::Kind::kSubscribe: {
      const wire::Subscribe& subscribe = *envelope->body_as_Subscribe();
      decoded.from_offset = subscribe.from_offset();
      decoded.from_latest = subscribe.from_latest();
      decoded.from_earliest = subscribe.from_earliest();
      decoded.from_instance_start = subscribe.from_instance_start();
      decoded.credit = subscribe.credit();
      break;
    }
    case ClientRequest::Kind::kCredit:
      decoded.credit = envelope->body_as_Credit()->credit();
      break;
    case ClientRequest::Kind::kFetch: {
      const wire::Fetch& fetch = *envelope->body_as_Fetch();
      decoded.from_offset = fetch.from_offset();
      decoded.max_messages = fetch.max_messages();
      decoded.compacted = fetch.compacted();
      decoded.from_instance_start = fetch.from_instance_start();
      break;
    }
    case ClientRequest::Kind::kStatus:
    case ClientRequest::Kind::kMembers:
      break;
    case ClientRequest::Kind::kChangeMembers: {
      const wire::ChangeMembers& change = *envelope->body_as_ChangeMembers();
      using Kind = paxos::MembershipChange::Kind;
      switch (change.kind()) {
        case wire::MemberChangeKind::AddLearner:
          decoded.change.kind = Kind::kAddLearner;
          break;
        case wire::MemberChangeKind::Promote:
          decoded.change.kind = Kind::kPromote;
          break;
        case wire::MemberChangeKind::Remove:
          decoded.change.kind = Kind::kRemove;
          break;
        default:
          return Fail(DecodeCode::kInvalid,
                      "ChangeMembers: kind " +
                          std::to_string(static_cast<unsigned>(change.kind())) +
                          " is not one this build knows");
      }
      const wire::Member* m = change.member();
      if (m == nullptr || m->id() == 0) {
        return Fail(DecodeCode::kInvalid, "ChangeMembers: no member id (ids start at 1)");
      }
      paxos::Member& member = decoded.change.member;
      member.id = paxos::NodeId(m->id());
      if (decoded.change.kind == Kind::kAddLearner) {
        member.voter = false;
        for (auto [from, to] : {std::pair{m->peer(), &member.peer},
                                {m->client(), &member.client},
                                {m->public_key(), &member.public_key}}) {
          if (from == nullptr) continue;
          if (from->size() > kEndpointBytesMax) {
            return Fail(DecodeCode::kInvalid,
                        "ChangeMembers: a field of " + std::to_string(from->size()) +
                            " bytes (at most " + std::to_string(kEndpointBytesMax) + ")");
          }
          to->assign(from->data(), from->size());
        }
        if (std::string why = CheckMember(member); !why.empty()) {
          return Fail(DecodeCode::kInvalid, "ChangeMembers: " + why);
        }
      }
      break;
    }
  }
  *out = std::move(decoded);
  return DecodeStatus();
}

}  // namespace ordo::broker
