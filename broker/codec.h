// The edge between the consensus core's plain structs and Ordo's bytes: peer
// frames (schemas/peer.fbs), stored records (schemas/record.fbs,
// schemas/meta.fbs), snapshot files (schemas/snapshot.fbs) and client
// requests (schemas/client.fbs). The core never sees bytes; the broker calls
// these on every frame it sends or receives and every record it puts or
// gets.
//
// Formats (the .fbs files define the tables; this is the framing around them)
//
//   Peer frame, one ZeroMQ frame of n bytes: a size-prefixed FlatBuffers
//   buffer (FlatBuffers' standard FinishSizePrefixed layout), root
//   PeerEnvelope. All integers little-endian.
//     bytes [0, 4)    n - 4, the size of what follows; a frame whose length
//                     disagrees is refused, so no truncation or trailing
//                     junk is ever read as a message
//     bytes [4, 8)    root table offset, relative to byte 4
//     bytes [8, 12)   file identifier "ORDP"
//     ...             PeerEnvelope { version: 1, message: PeerMessage }
//
//   Client request, one ZeroMQ frame (docs/protocol.md): a FlatBuffers
//   buffer without a size prefix: root offset, file identifier "ORDC",
//   ClientEnvelope { version: 1 (the default, so usually absent),
//   request_id, body }. Steps 1 to 5 below apply as to a peer frame, minus
//   the size prefix.
//
//   Stored record, one LMDB value:
//     bytes [0, 4)   CRC32C (broker/crc32c.h) of bytes [4, n), little-endian
//     bytes [4, n)   a FlatBuffers buffer: root offset, then the file
//                    identifier ("ORDL" for LogRecord in the log database,
//                    "ORDM" for MetaRecord holding the hard state), then the
//                    root table, whose field 0 is `version` (1).
//
// The version field is field 0 of every root table in every version, so a
// reader can tell "a format I do not read" from "garbage". It is bumped only
// by a change an older reader would misread; appended fields keep it.
//
// Decoding checks, in this order, and stops at the first failure:
//   1. size: a peer frame above `frame_bytes_max` (or anything at or above
//      FlatBuffers' 2 GiB limit) is refused before a byte of it is read (a
//      client request: before anything but its request_id is read);
//   2. framing: long enough for the header; for a peer frame, the size
//      prefix equals the rest of the frame; for a record, the CRC32C prefix
//      matches the rest;
//   3. the file identifier, so a frame or record of another kind is refused;
//   4. the version field of the root table;
//   5. the FlatBuffers verifier over the whole buffer (offsets in bounds,
//      alignment, required fields present, at most 8 nested tables and at
//      most one table visit per 4 bytes of input, which bounds its work);
//   6. field ranges: every enum is a known value, entry instances are >= 1,
//      and the keys and payloads add up to no more than the input's size (a
//      buffer whose offsets share one payload many times would otherwise
//      inflate into far more memory than it occupies);
//   7. only then conversion into the plain struct.
// Decoding never throws, aborts, or reads outside the input, whatever the
// input. The input may have any alignment (it is copied when it is not
// 8-byte aligned, because FlatBuffers reads scalars in place).
//
// What decoding does not check: protocol rules (a ballot below a promise,
// entries out of order, a message addressed to another node). Those belong to
// the core, which must treat a decoded message as untrusted input.
//
// Thread rules: every function is pure and thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"
#include "paxos/applied_state.h"
#include "paxos/log_store.h"
#include "paxos/message.h"
#include "paxos/replica.h"
#include "paxos/value.h"

namespace flatbuffers {
class DetachedBuffer;
}

namespace ordo::broker {

// The format versions this build writes. It reads peer frames and log
// records of versions 1 to these (version 2 carries each value as its own
// buffer, encoded once: schemas/peer.fbs), the other formats of exactly
// these.
inline constexpr uint16_t kPeerFormatVersion = 2;
inline constexpr uint16_t kLogRecordFormatVersion = 2;
inline constexpr uint16_t kMetaRecordFormatVersion = 1;
inline constexpr uint16_t kSnapshotFormatVersion = 1;
inline constexpr uint16_t kClientFormatVersion = 1;

// The longest message key: keys index the compacted view, and LMDB keys are
// at most 511 bytes.
inline constexpr size_t kKeyBytesMax = 256;

// The CRC32C prefix of a stored record.
inline constexpr size_t kRecordChecksumBytes = 4;

enum class DecodeCode : uint8_t {
  kOk = 0,
  kTooLarge = 1,          // above the size limit; nothing was read (but a request's id)
  kTruncated = 2,         // shorter than the fixed header (and CRC prefix)
  kChecksumMismatch = 3,  // stored record: CRC32C differs from the bytes
  kWrongIdentifier = 4,   // another format's file identifier
  kWrongVersion = 5,      // a version this build does not read
  kMalformed = 6,         // refused by the FlatBuffers verifier
  kInvalid = 7,           // verified, but a field is out of range
};

const char* ToString(DecodeCode code);

// The outcome of a decode: a code for the program and a message for the
// operator's log (it names the format, the field and the offending value).
class [[nodiscard]] DecodeStatus : public BasicStatus<DecodeCode> {
 public:
  DecodeStatus() = default;  // ok
  static DecodeStatus Error(DecodeCode code, std::string message) {
    return DecodeStatus(code, std::move(message));
  }

  // The LogStore verdict for a stored record: kOk, or kCorrupt for every
  // failure. A record the broker cannot read is never served or voted on,
  // whether it rotted on disk or was written by a newer version.
  paxos::StoreCode store_code() const {
    return ok() ? paxos::StoreCode::kOk : paxos::StoreCode::kCorrupt;
  }

  // "ok", or "<code>: <message>".
  std::string ToString() const;

 private:
  DecodeStatus(DecodeCode code, std::string message) : BasicStatus(code, std::move(message)) {}
};

// One message of the stream as served to subscribers.
struct StreamMessage {
  uint64_t offset = 0;
  uint64_t producer = 0;
  uint64_t sequence = 0;
  std::string key;
  std::string payload;
  bool operator==(const StreamMessage&) const = default;
};

// One instance's place in the stream's chain (docs/protocol.md, "The
// chain"), as the offset index keeps it and Deliver carries it: the
// instance appended `count` messages from `first_offset`, taking the chain
// from `before` to `after`. has_chain false: an index record written before
// the chain (format 2), which knows neither.
struct ChainPoint {
  uint64_t instance = 0;
  uint64_t first_offset = 0;
  uint32_t count = 0;
  bool has_chain = false;
  paxos::ChainValue before;
  paxos::ChainValue after;
  bool operator==(const ChainPoint&) const = default;
};

// Names one snapshot file: the instance it was taken at, its size and the
// CRC32C of all its bytes. Equal handles mean byte-identical files.
struct SnapshotHandle {
  uint64_t instance = 0;  // 0: no snapshot
  uint64_t size = 0;
  uint32_t checksum = 0;
  bool operator==(const SnapshotHandle&) const = default;
};

// A snapshot transfer message (schemas/peer.fbs, SnapshotMessage).
struct SnapshotMessage {
  enum Op : uint8_t { kRequest = 0, kChunk = 1, kUnavailable = 2 };
  Op op = kRequest;
  uint32_t from = 0;
  uint32_t to = 0;
  SnapshotHandle handle;
  uint64_t offset = 0;
  uint64_t min_instance = 0;
  std::string data;
  uint32_t data_checksum = 0;
};

// A decoded peer frame: a consensus message or a snapshot message.
struct PeerFrame {
  bool is_snapshot = false;
  paxos::Message message;
  SnapshotMessage snapshot;
};

// Views a byte string (an encoded frame or record) as the bytes decoders take.
inline std::span<const uint8_t> AsBytes(std::string_view bytes) {
  return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

// --- Peer frames ---

// Encodes `message` as one peer frame (version kPeerFormatVersion).
// Preconditions (asserted): every entry has a value, and the entries' values
// add up to at most 1 GiB of paxos::Value::ByteSize() (FlatBuffers' hard
// limit is 2 GiB; the broker caps batches far lower). Field values are written
// as they are; the core is trusted to send what it means. Keys and payloads
// are written once each, never shared, so the frame decodes under step 6.
// The caller enforces its own frame_bytes_max on the result; the size is
// about the sum of paxos::Value::ByteSize() over the entries (up to half as
// much again for batches of tiny messages).
std::string EncodePeerMessage(const paxos::Message& message);

// The same frame in the encoder's own buffer, so the sender hands it to
// ZeroMQ without copying it (PeerTransport::Send).
std::unique_ptr<flatbuffers::DetachedBuffer> EncodePeerFrame(const paxos::Message& message);

// A FetchReply frame built from stored log records as they are: each
// record's value bytes are copied into the frame once, not decoded into
// messages and encoded again. How a broker serves catch-up off its event
// loop (broker/catchup_server.h). Not thread-safe; one per reply.
class FetchReplyEncoder {
 public:
  // `capacity`: about the value bytes expected (the buffer grows if needed).
  explicit FetchReplyEncoder(size_t capacity);
  ~FetchReplyEncoder();
  FetchReplyEncoder(const FetchReplyEncoder&) = delete;
  FetchReplyEncoder& operator=(const FetchReplyEncoder&) = delete;
  // Every check DecodeLogRecord makes, and the record must hold `instance`
  // (the key it was read under); then it is appended as the next entry and
  // *value_bytes set to its value's size. On a failure nothing is appended.
  DecodeStatus Add(std::span<const uint8_t> record, paxos::Instance instance,
                   size_t* value_bytes);
  size_t entries() const { return entries_; }
  // The frame: `header` (a FetchReply without entries) carrying the entries
  // added, as EncodePeerFrame would encode it. Call once.
  std::unique_ptr<flatbuffers::DetachedBuffer> Finish(const paxos::Message& header);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  size_t entries_ = 0;
};

// Decodes one peer frame into *out, running every check listed at the top of
// this file. `frame_bytes_max` is the receiver's limit on a frame's size.
// Returns ok and fills *out, or returns the first failure and leaves *out
// untouched. Fields a message type does not use come back as their zero
// values; decoded entries get fresh, unshared values.
DecodeStatus DecodePeerMessage(std::span<const uint8_t> frame, size_t frame_bytes_max,
                               paxos::Message* out);

// Decodes a peer frame of either kind, with every check above.
DecodeStatus DecodePeerFrame(std::span<const uint8_t> frame, size_t frame_bytes_max,
                             PeerFrame* out);
std::string EncodeSnapshotMessage(const SnapshotMessage& message);

// --- Snapshot files (schemas/snapshot.fbs) ---

// Encodes the applied state and the compacted view (keyed messages in
// ascending key order) as one snapshot file. Canonical: equal inputs give
// equal bytes.
std::string EncodeSnapshotFile(const paxos::AppliedSnapshot& state,
                               std::span<const StreamMessage> keyed);
// Decodes a snapshot file with the checks above: identifier, version,
// verifier, then every sequence run aligned, every key 1 to kKeyBytesMax
// bytes, and the runs, keys and payloads adding up to no more than the
// file's size. Returns ok and fills *state (and *keyed, which may be null),
// or returns the first failure and leaves them untouched.
DecodeStatus DecodeSnapshotFile(std::span<const uint8_t> file, paxos::AppliedSnapshot* state,
                                std::vector<StreamMessage>* keyed);

// --- Stored records ---

// Encodes `entry` as a log record: CRC32C prefix, then a LogRecord buffer
// (version kLogRecordFormatVersion). Preconditions (asserted): entry.value
// is set and at most 1 GiB by paxos::Value::ByteSize(). The LMDB key (the
// big-endian instance) is the caller's business.
std::string EncodeLogRecord(const paxos::Entry& entry);

// The same record, encoded but not yet laid out: size() bytes, written by
// WriteTo straight into their destination (the store reserves the space in
// its page with MDB_RESERVE), so a batch is not copied once more into a
// string on its way to disk.
class LogRecordEncoder {
 public:
  explicit LogRecordEncoder(const paxos::Entry& entry);
  ~LogRecordEncoder();
  LogRecordEncoder(const LogRecordEncoder&) = delete;
  LogRecordEncoder& operator=(const LogRecordEncoder&) = delete;
  size_t size() const;
  // Writes the CRC32C prefix and the buffer to dst[0, size()).
  void WriteTo(uint8_t* dst) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Decodes a log record into *out after every check above; there is no size
// limit beyond FlatBuffers' own, since the broker wrote the record itself.
// Returns ok and fills *out, or the first failure (use store_code() for the
// LogStore answer) and leaves *out untouched. The caller must still compare
// out->instance with the key it read the record under: a record stored under
// the wrong key is as corrupt as a flipped bit.
DecodeStatus DecodeLogRecord(std::span<const uint8_t> record, paxos::Entry* out);

// One message of a stored batch, read in place: the spans point into the
// record (or its aligned copy) and are valid only during the visit.
struct MessageView {
  uint64_t producer = 0;
  uint64_t sequence = 0;
  std::span<const uint8_t> key;
  std::span<const uint8_t> payload;
};

// DecodeLogRecord's checks, without building a paxos::Value (serving reads
// allocates nothing per message): sets *instance, then calls visit(i, m)
// for each message i of the record's value in order. Nothing is visited if
// a check fails.
using MessageVisitor = std::function<void(uint32_t index, const MessageView& message)>;
DecodeStatus VisitLogRecord(std::span<const uint8_t> record, uint64_t* instance,
                            const MessageVisitor& visit);
// The same, but first calls admit(instance, number of messages), and visits
// nothing unless it returns true: a reader checks what it knows of the
// record (the instance it expects, how many messages it expects) before any
// message is used.
using RecordAdmitter = std::function<bool(uint64_t instance, uint32_t messages)>;
DecodeStatus VisitLogRecord(std::span<const uint8_t> record, const RecordAdmitter& admit,
                            const MessageVisitor& visit);

// Encodes the acceptor's hard state as a meta record: CRC32C prefix, then a
// MetaRecord buffer (version kMetaRecordFormatVersion).
std::string EncodeMetaRecord(const paxos::HardState& hard_state);

// Decodes a meta record into *out, with the same checks and contract as
// DecodeLogRecord (minus the key comparison: the hard state has one key).
DecodeStatus DecodeMetaRecord(std::span<const uint8_t> record, paxos::HardState* out);

// --- Memberships (schemas/common.fbs, Member) ---

// What a membership may hold, on the wire, on disk and in a client's
// change request: at most kMembersMax members, of which at most kVotersMax
// voters (paxos::VoteSet), endpoints and keys of at most kEndpointBytesMax
// bytes.
inline constexpr size_t kMembersMax = 256;
inline constexpr size_t kVotersMax = 64;
inline constexpr size_t kEndpointBytesMax = 255;
inline constexpr size_t kPublicKeyChars = 40;  // Z85 of a 32-byte CurveZMQ key

// HOST:PORT: a host of letters, digits, '.', '-', '_' or ':' (IPv6, in
// brackets or not), a port 1..65535, at most kEndpointBytesMax bytes.
bool WellFormedEndpoint(std::string_view endpoint);
// Empty (a plaintext cluster), or kPublicKeyChars characters of Z85.
bool WellFormedPublicKey(std::string_view key);
// "" when `membership` is one a configuration entry may carry: ids
// non-zero, unique and ascending; at most kMembersMax members and
// kVotersMax voters, at least one voter; every endpoint well-formed, every
// key well-formed. Else what is wrong, naming the member.
std::string CheckMembership(const paxos::Membership& membership);
// One member's fields alone (no relation to the others): "" or why not.
std::string CheckMember(const paxos::Member& member);

// --- Client requests (schemas/client.fbs) ---

// What a broker allows a client to send (config: limits.*).
struct ClientLimits {
  size_t frame_bytes_max = 0;    // the whole frame
  size_t message_bytes_max = 0;  // one published message's key + payload
};

// One decoded client request. Which fields are meaningful depends on kind.
struct ClientRequest {
  enum class Kind : uint8_t {
    kPublish,
    kSubscribe,
    kCredit,
    kFetch,
    kStatus,
    kMembers,
    kChangeMembers
  };
  Kind kind = Kind::kStatus;
  uint64_t request_id = 0;     // echoed by the reply
  uint64_t from_offset = 0;    // kSubscribe, kFetch
  bool from_latest = false;    // kSubscribe: start at the head instead
  bool from_earliest = false;  // kSubscribe: start at the earliest retained offset
  uint32_t credit = 0;         // kSubscribe, kCredit
  uint32_t max_messages = 0;   // kFetch
  bool compacted = false;      // kFetch: the compacted view
  bool from_instance_start = false;  // kSubscribe, kFetch: start at that instance's first offset
  // kPublish: at least one message, each with a non-zero producer and
  // sequence (no pair twice), a key of at most kKeyBytesMax bytes and key +
  // payload within message_bytes_max. The keys and payloads share one buffer.
  std::vector<paxos::ClientMessage> messages;
  // kChangeMembers: a known kind and a member id; for kAddLearner a member
  // CheckMember accepts (endpoints HOST:PORT, a Z85 key or none).
  paxos::MembershipChange change;
};

// Decodes one client request frame: steps 1 to 5 above (kTooLarge above
// limits.frame_bytes_max, then the header, "ORDC", version 1, the
// verifier), then step 6: the body is a request (kInvalid for a reply, an
// unknown body or none), present unless it is a StatusRequest (kMalformed);
// a Publish has messages (kInvalid), whose keys and payloads add up to no
// more than the frame (kInvalid), each within the limits above (kTooLarge)
// and with a non-zero producer and sequence (kInvalid), no (producer,
// sequence) twice (kInvalid). Returns ok and fills *out; or returns the
// first failure and leaves *out untouched but for out->request_id, which
// the refusal answers: PeekClientRequestId's, read before every check (so
// a frame over the limit, of an unknown version or failing the verifier
// still names its request), else 0. Whoever answers maps kTooLarge to the
// wire's TooLarge and every other failure to BadRequest.
DecodeStatus DecodeClientRequest(std::span<const uint8_t> frame, const ClientLimits& limits,
                                 ClientRequest* out);

// The envelope's request_id (field 1 of ClientEnvelope in every version),
// read with bounds checks only: the header, the identifier "ORDC", the root
// table's vtable and that one field. False (*request_id untouched) if any
// of them is out of bounds. Never reads more than those few bytes, whatever
// the frame's size, and takes any alignment. Every frame that passes the
// verifier passes this with the same id.
bool PeekClientRequestId(std::span<const uint8_t> frame, uint64_t* request_id);

}  // namespace ordo::broker
