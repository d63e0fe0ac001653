// What a log instance holds: a batch of client messages, a no-op, or a leader
// barrier. Values are immutable once built and shared by pointer, so a batch
// is not copied as it moves between the log, the wire and the learner.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "paxos/types.h"

namespace ordo::paxos {

enum class ValueKind : uint8_t {
  kBatch = 0,    // client messages, in the order they get offsets
  kNoop = 1,     // fills an instance a dead leader left open
  kBarrier = 2,  // written by each new leader after recovery (phantom-log fix)
};

const char* ToString(ValueKind kind);

// One published message. (producer, sequence) makes publishing idempotent.
struct ClientMessage {
  ProducerId producer{};
  uint64_t sequence = 0;  // per producer, from 1, contiguous
  std::string key;        // optional; empty means unkeyed
  std::string payload;
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

struct Value {
  ValueKind kind = ValueKind::kNoop;
  // The ballot of the leader that created this value. It travels unchanged when
  // a later leader re-proposes the value during recovery; for a barrier it is
  // the new leader's ballot. A batch whose origin is below the latest applied
  // barrier is skipped when applied.
  Ballot origin{};
  std::vector<ClientMessage> messages;  // only for kBatch
  mutable HostEncoding encoded;         // see HostEncoding

  bool operator==(const Value& o) const {
    return kind == o.kind && origin == o.origin && messages == o.messages;
  }
  // Approximate encoded size, for batching and flow-control limits.
  size_t ByteSize() const;
};

using ValuePtr = std::shared_ptr<const Value>;

ValuePtr MakeNoop(Ballot origin);
ValuePtr MakeBarrier(Ballot origin);
ValuePtr MakeBatch(Ballot origin, std::vector<ClientMessage> messages);

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
