// The stream's hash chain (docs/protocol.md, "The chain"): a value every
// replica derives from the messages it applies, in offset order, so that a
// reader can check that what a broker served is the agreed order. For each
// applied instance that appends at least one message:
//
//   chain(i) = BLAKE2b-256(chain(before i) || instance (u64 LE)
//                          || first offset (u64 LE) || count (u32 LE)
//                          || per appended message, in offset order:
//                             producer (u64 LE) || sequence (u64 LE)
//                             || key length (u32 LE) || key
//                             || payload length (u32 LE) || payload)
//
// starting from 32 zero bytes before offset 0. Instances that append
// nothing (no-ops, barriers, configuration entries, batches whose messages
// were all duplicates or stale) leave it unchanged. BLAKE2b (libsodium's
// crypto_generichash, unkeyed) is a pure function, so the consensus core
// (paxos::AppliedState computes the chain) stays free of I/O, clocks and
// threads; the client library checks it with the same code.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ordo {

struct ChainValue {
  static constexpr size_t kBytes = 32;
  std::array<uint8_t, kBytes> bytes{};
  bool operator==(const ChainValue&) const = default;
  bool zero() const;
  std::string Hex() const;  // 64 lowercase hex digits
  // Parses 64 hex digits; false otherwise.
  static bool FromHex(std::string_view hex, ChainValue* out);
};

// One instance's step of the chain, fed its messages one by one.
class ChainStep {
 public:
  ChainStep(const ChainValue& before, uint64_t instance, uint64_t first_offset, uint32_t count);
  void Add(uint64_t producer, uint64_t sequence, std::string_view key, std::string_view payload);
  ChainValue Finish();

 private:
  // libsodium's crypto_generichash_state, kept opaque here (384 bytes,
  // 64-byte aligned) so this header needs no sodium.h.
  alignas(64) unsigned char state_[384];
};

}  // namespace ordo
