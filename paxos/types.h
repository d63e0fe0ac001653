// Fundamental vocabulary of the consensus core: strong types for node ids,
// instances, offsets, producers and ballots. Plain values, no I/O.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <string>

#include "paxos/namespace.h"

namespace ORDO_PAXOS_NAMESPACE {

// A strong integer type: explicit construction, defaulted comparisons, no
// implicit arithmetic, so an Instance can never be passed where an Offset is
// expected.
template <typename Tag, typename Rep>
class StrongInt {
 public:
  using rep = Rep;
  constexpr StrongInt() = default;
  constexpr explicit StrongInt(Rep v) : value_(v) {}
  constexpr Rep value() const { return value_; }
  constexpr auto operator<=>(const StrongInt&) const = default;
  constexpr StrongInt next() const { return StrongInt(value_ + 1); }
  constexpr StrongInt prev() const { return StrongInt(value_ - 1); }

 private:
  Rep value_{};
};

struct NodeIdTag {};
struct InstanceTag {};
struct OffsetTag {};
struct ProducerIdTag {};

// A voting or learner broker. 0 is "none".
using NodeId = StrongInt<NodeIdTag, uint32_t>;
// A slot of the replicated log, numbered from 1; 0 means "none / before the log".
using Instance = StrongInt<InstanceTag, uint64_t>;
// A message's position in the global stream, from 0.
using Offset = StrongInt<OffsetTag, uint64_t>;
// Identifies one idempotent producer; chosen by the client (random 64 bits).
using ProducerId = StrongInt<ProducerIdTag, uint64_t>;

inline constexpr NodeId kNoNode{0};
inline constexpr Instance kNoInstance{0};

// A ballot (round, node), ordered lexicographically. Unique per node because
// the node id breaks ties. Ballot{} (0, 0) is below every real ballot.
struct Ballot {
  uint64_t round = 0;
  NodeId node{};
  constexpr auto operator<=>(const Ballot&) const = default;
  constexpr bool IsZero() const { return round == 0 && node == kNoNode; }
};

std::string ToString(const Ballot& b);

}  // namespace ordo::paxos

template <typename Tag, typename Rep>
struct std::hash<ordo::paxos::StrongInt<Tag, Rep>> {
  size_t operator()(const ordo::paxos::StrongInt<Tag, Rep>& v) const noexcept {
    return std::hash<Rep>{}(v.value());
  }
};
