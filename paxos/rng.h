// The core's only source of randomness (election jitter, peer choice): a small
// deterministic generator seeded by the host, so a simulation replays exactly.
#pragma once

#include <cstdint>

#include "paxos/namespace.h"

namespace ORDO_PAXOS_NAMESPACE {

// SplitMix64 (Steele, Lea, Flood 2014): tiny state, good enough for jitter.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n); n > 0.
  uint64_t Uniform(uint64_t n) { return Next() % n; }
  // True with probability p (0..1).
  bool Chance(double p) { return static_cast<double>(Next() >> 11) * 0x1.0p-53 < p; }

 private:
  uint64_t state_;
};

}  // namespace ordo::paxos
