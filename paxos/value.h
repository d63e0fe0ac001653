// What a log instance holds: a batch of client messages, a no-op, or a leader
// barrier. Values are immutable once built and shared by pointer, so a batch
// is not copied as it moves between the log, the wire and the learner.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "paxos/namespace.h"
#include "paxos/types.h"

namespace ORDO_PAXOS_NAMESPACE {

enum class ValueKind : uint8_t {
  kBatch = 0,    // client messages, in the order they get offsets
  kNoop = 1,     // fills an instance a dead leader left open
  kBarrier = 2,  // written by each new leader after recovery (phantom-log fix)
  kConfig = 3,   // a new membership: governs every instance after its own
};

const char* ToString(ValueKind kind);

// Immutable bytes of a message: usually a view into a buffer it shares with
// the other messages of its batch (the batch's own copy of the bytes it was
// decoded from), so a batch of N messages costs no N allocations and copies;
// or a copy of its own (Copy, and the implicit conversions, for tests and
// small values). Copying a Bytes shares the buffer; the buffer lives as long
// as any Bytes that views it.
class Bytes {
 public:
  Bytes() = default;
  Bytes(std::string_view s) { *this = Copy(s); }    // NOLINT: implicit by design
  Bytes(const std::string& s) { *this = Copy(s); }  // NOLINT
  Bytes(const char* s) { *this = Copy(s); }         // NOLINT
  static Bytes Copy(std::string_view s);
  // A view of `view`, which must lie inside what `owner` keeps alive.
  static Bytes Shared(std::shared_ptr<const void> owner, std::string_view view) {
    Bytes b;
    if (!view.empty()) {
      b.owner_ = std::move(owner);
      b.view_ = view;
    }
    return b;
  }

  std::string_view view() const { return view_; }
  operator std::string_view() const { return view_; }  // NOLINT
  const char* data() const { return view_.data(); }
  size_t size() const { return view_.size(); }
  bool empty() const { return view_.empty(); }
  std::string str() const { return std::string(view_); }

  friend bool operator==(const Bytes& a, const Bytes& b) { return a.view_ == b.view_; }
  friend bool operator==(const Bytes& a, std::string_view b) { return a.view_ == b; }
  friend bool operator==(const Bytes& a, const std::string& b) { return a.view_ == b; }
  friend bool operator==(const Bytes& a, const char* b) { return a.view_ == b; }

 private:
  std::shared_ptr<const void> owner_;
  std::string_view view_;
};

// One buffer for the bytes of many messages (a batch): Keep copies bytes in
// and returns a Bytes viewing them. The buffer never reallocates: bytes
// beyond `capacity` get a buffer of their own.
class BytesArena {
 public:
  explicit BytesArena(size_t capacity) : buffer_(std::make_shared<std::string>()) {
    buffer_->reserve(capacity);
  }
  Bytes Keep(std::string_view bytes) {
    if (bytes.empty()) return Bytes();
    if (bytes.size() > buffer_->capacity() - buffer_->size()) return Bytes::Copy(bytes);
    const size_t at = buffer_->size();
    buffer_->append(bytes);
    return Bytes::Shared(buffer_, std::string_view(buffer_->data() + at, bytes.size()));
  }

 private:
  std::shared_ptr<std::string> buffer_;
};

// One published message. (producer, sequence) makes publishing idempotent.
struct ClientMessage {
  ProducerId producer{};
  uint64_t sequence = 0;  // per producer, from 1, contiguous
  Bytes key;              // optional; empty means unkeyed
  Bytes payload;
  bool operator==(const ClientMessage&) const = default;
};

// The host's encoding of a value (the broker's: a FlatBuffers buffer whose
// root is a Value), made the first time the value is sent or stored and
// then copied verbatim into every frame and record that carries it. A cache:
// not part of the value's identity, never read by the core, and not carried
// over when a Value is copied (a copy may be changed).
struct HostEncoding {
  HostEncoding() = default;
  HostEncoding(const HostEncoding&) {}
  HostEncoding& operator=(const HostEncoding&) {
    owner.reset();
    data = nullptr;
    size = 0;
    return *this;
  }
  HostEncoding(HostEncoding&&) = default;
  HostEncoding& operator=(HostEncoding&&) = default;

  std::shared_ptr<const void> owner;  // keeps `data` alive
  const uint8_t* data = nullptr;
  size_t size = 0;
};

// One member of the cluster. The core reads only `id` and `voter`; the
// endpoints and key are the host's (what other brokers and clients connect
// to, and the CurveZMQ key its frames must come with), agreed through the
// log like the rest so every broker learns a new member the same way.
struct Member {
  NodeId id{};
  bool voter = false;  // votes and may lead; else a learner (pulls the log)
  std::string peer;
  std::string client;
  std::string public_key;
  bool operator==(const Member&) const = default;
};

// The whole membership, as a configuration entry carries it (never a
// delta), members in ascending id. Empty: none chosen yet (the bootstrap
// configuration of the host's file holds).
struct Membership {
  std::vector<Member> members;
  bool operator==(const Membership&) const = default;
  bool empty() const { return members.empty(); }
  const Member* Find(NodeId id) const;
  bool IsVoter(NodeId id) const;
  std::vector<NodeId> Voters() const;  // ascending
};

struct Value {
  ValueKind kind = ValueKind::kNoop;
  // The ballot of the leader that created this value. It travels unchanged when
  // a later leader re-proposes the value during recovery; for a barrier it is
  // the new leader's ballot. A batch whose origin is below the latest applied
  // barrier is skipped when applied.
  Ballot origin{};
  std::vector<ClientMessage> messages;  // only for kBatch
  Membership membership;                // only for kConfig
  mutable HostEncoding encoded;         // see HostEncoding

  bool operator==(const Value& o) const {
    return kind == o.kind && origin == o.origin && messages == o.messages &&
           membership == o.membership;
  }
  // Approximate encoded size, for batching and flow-control limits.
  size_t ByteSize() const;
};

using ValuePtr = std::shared_ptr<const Value>;

ValuePtr MakeNoop(Ballot origin);
ValuePtr MakeBarrier(Ballot origin);
ValuePtr MakeBatch(Ballot origin, std::vector<ClientMessage> messages);
ValuePtr MakeConfig(Ballot origin, Membership membership);

// An acceptor's record for one instance: the value it accepted and the ballot
// it accepted it at.
struct Entry {
  Instance instance{};
  Ballot ballot{};
  ValuePtr value;
};

// Deep comparison (values compared by content).
bool SameEntry(const Entry& a, const Entry& b);

}  // namespace ordo::paxos
