// Internal to the client library (not API): the checks of one Deliver of
// the live subscription against the stream the Subscriber expects
// (docs/protocol.md, "Subscribing"), without a socket: the Subscriber
// applies the verdict, tests/client and the client_reply fuzz target call
// it on bytes.
//
// In order, the rules the Subscriber has always followed:
//  1. The keys and payloads add up to no more than the frame
//     (DeliverSizeIsPlausible); else the frame is ignored whole.
//  2. The start. Known (StartAt::Offset, or once fixed): the next offset
//     expected. Not known yet: StartAt::Latest takes the first message's
//     offset, or with no message the head the broker reports; StartAt::
//     Earliest takes the first message's offset, and an empty Deliver
//     leaves it unknown.
//  3. The messages at start, start + 1, ... are accepted, up to the first
//     one at another offset: one below is a broken stream (a broker serving
//     what it should not; nothing more of it is used), one above means a
//     frame was lost (subscribe again from where the accepted ones end).
// A message with no key or payload reads as empty and one with no offset
// as 0 (FlatBuffers' defaults; the verifier has checked that the fields
// present lie within the frame); a Deliver with no message vector is an
// empty one.
//
// Credit: the broker spent one of its credit on every message it sent up
// to the first refused one; what follows it is not read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "schemas/client_generated.h"

namespace ordo::client_internal {

enum class DeliverError : uint8_t {
  kOk = 0,
  kInflated,       // rule 1: ignored whole, nothing read
  kBelowExpected,  // a message below the next offset expected: a broken stream
  kGap,            // a message above it: a frame was lost
};

// Where the stream stands before a Deliver.
struct DeliverExpectation {
  // The next offset expected; none while a StartAt::Latest or
  // StartAt::Earliest subscription has not fixed its start.
  std::optional<uint64_t> next_offset;
  // With no next_offset: StartAt::Earliest (else StartAt::Latest).
  bool start_earliest = false;
};

struct DeliverVerdict {
  DeliverError error = DeliverError::kOk;
  // Why, for the log and for Errors; empty with kOk.
  std::string message;
  // The offset the accepted messages start at: the expected one, or the
  // one this Deliver fixed. None when the start is still unknown (an empty
  // Deliver of StartAt::Earliest) or the frame was inflated.
  std::optional<uint64_t> start;
  // messages()[0, accepted) are at start, start + 1, ...
  size_t accepted = 0;
  // Messages the broker spent credit on: the accepted ones, and the
  // refused one after them.
  size_t credit_used = 0;

  bool ok() const { return error == DeliverError::kOk; }
};

// `deliver` must have passed the Verifier (Frame::FromBytes, or
// Connection::Receive); `frame_bytes` is the size of its frame.
DeliverVerdict ValidateDeliver(const wire::Deliver& deliver, size_t frame_bytes,
                               const DeliverExpectation& expected);

}  // namespace ordo::client_internal
