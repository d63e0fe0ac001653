// Quorum arithmetic, as small pure functions.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "paxos/namespace.h"

namespace ORDO_PAXOS_NAMESPACE {

// Votes needed among `voters` for a majority.
constexpr size_t QuorumSize(size_t voters) { return voters / 2 + 1; }

// A set of voters, one bit per voter index (clusters have at most 64 voters).
class VoteSet {
 public:
  static constexpr size_t kVotersMax = 64;
  void Add(size_t index) { bits_ |= uint64_t{1} << index; }
  bool Has(size_t index) const { return (bits_ >> index) & 1; }
  size_t Count() const { return static_cast<size_t>(std::popcount(bits_)); }
  bool IsQuorumOf(size_t voters) const { return Count() >= QuorumSize(voters); }
  void Clear() { bits_ = 0; }

 private:
  uint64_t bits_ = 0;
};

}  // namespace ordo::paxos
