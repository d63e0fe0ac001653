// Internal to the client library (not API): checks the messages a broker
// serves against the stream's hash chain (docs/protocol.md, "The chain"),
// frame by frame, without a socket, so tests and the client_reply fuzz
// target drive it on bytes.
//
// A Deliver carries the chain point of every instance its messages belong
// to. The verifier recomputes each instance's step from its messages and
// the point's `before`, and holds the instance's messages back until the
// result equals the point's `after`. It trusts, in this order: the chain
// value the caller anchored (a head recorded elsewhere, or where it
// verified up to on another broker), else the first point a broker gives
// it. From then on every point must go on from the one before: a broker
// serving anything but the chain it agreed with the others is caught.
//
// The caller feeds every message of an instance from its first one: a
// (re)subscription asks with from_instance_start unless an instance is
// under way (in_progress()), and messages below the offset the caller wants
// are only hashed.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/chain.h"
#include "schemas/client_generated.h"

namespace ordo::client_internal {

class ChainVerifier {
 public:
  enum class Step : uint8_t {
    kPending,   // the message's instance goes on
    kVerified,  // the message ended its instance, and the instance checked out
    kFailed,    // see error()
  };

  // The chain holds `value` at `offset` (an instance boundary, as a head
  // or a chain point's end gives it).
  void Anchor(uint64_t offset, const ChainValue& value);
  // One instance's chain point, as a frame gives it.
  struct Point {
    uint64_t instance = 0;
    uint64_t first_offset = 0;
    uint32_t count = 0;
    ChainValue before;
    ChainValue after;
    bool operator==(const Point&) const = default;
  };
  // The last instance that checked out (valid once verified_offset() is
  // set by Add, not by Anchor).
  const Point& last_verified() const { return last_verified_; }
  // Where everything up to was verified: the last instance's end and its
  // chain value (or the anchor). None before either.
  std::optional<uint64_t> verified_offset() const { return verified_offset_; }
  const ChainValue& verified_chain() const { return verified_chain_; }
  // An instance is under way: some of its messages were fed, not all.
  bool in_progress() const { return current_.has_value(); }
  // The offset that ends the instance under way (valid when in_progress()).
  uint64_t current_end() const;
  // Forgets the instance under way (its messages are dropped by the caller):
  // the next frame starts at verified_offset(), or anywhere when none.
  void Restart() { current_.reset(); }

  // The chain points of one Deliver, before its messages. kFailed when they
  // are malformed (a value not 32 bytes, a count of 0, points that do not
  // follow each other) or do not go on from what was verified.
  Step BeginFrame(const wire::Deliver& deliver);
  // The next message of the frame, in order.
  Step Add(const wire::StreamMessage& message);
  // Why the last kFailed (names the offset and the instance).
  const std::string& error() const { return error_; }

 private:
  struct Current {
    explicit Current(const Point& p)
        : point(p), step(p.before, p.instance, p.first_offset, p.count) {}
    Point point;
    uint32_t fed = 0;
    ChainStep step;
  };
  Step Fail(std::string why);

  std::optional<uint64_t> verified_offset_;
  ChainValue verified_chain_;
  Point last_verified_;
  std::optional<Current> current_;
  // The frame's points, and which one the next message belongs to.
  std::vector<Point> points_;
  size_t next_point_ = 0;
  std::string error_;
};

}  // namespace ordo::client_internal
