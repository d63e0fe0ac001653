#include "base/chain.h"

#include <sodium.h>

#include <cstring>

namespace ordo {
namespace {

static_assert(sizeof(crypto_generichash_state) <= 384, "ChainStep::state_ is too small");
static_assert(alignof(crypto_generichash_state) <= 64, "ChainStep::state_ is misaligned");

template <typename T>
void PutLe(unsigned char* out, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) out[i] = static_cast<unsigned char>((v >> (8 * i)) & 0xff);
}

crypto_generichash_state* State(unsigned char* raw) {
  return reinterpret_cast<crypto_generichash_state*>(raw);
}

}  // namespace

bool ChainValue::zero() const {
  for (uint8_t b : bytes) {
    if (b != 0) return false;
  }
  return true;
}

std::string ChainValue::Hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(kBytes * 2, '0');
  for (size_t i = 0; i < kBytes; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

bool ChainValue::FromHex(std::string_view hex, ChainValue* out) {
  if (hex.size() != kBytes * 2) return false;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < kBytes; ++i) {
    const int hi = digit(hex[2 * i]), lo = digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out->bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

ChainStep::ChainStep(const ChainValue& before, uint64_t instance, uint64_t first_offset,
                     uint32_t count) {
  // sodium_init picks the fastest BLAKE2b for this CPU (AVX2 where there
  // is one); once per process.
  [[maybe_unused]] static const int initialized = sodium_init();
  // crypto_generichash_init only fails for out-of-range lengths; 32 is in range.
  crypto_generichash_init(State(state_), nullptr, 0, ChainValue::kBytes);
  unsigned char header[ChainValue::kBytes + 8 + 8 + 4];
  std::memcpy(header, before.bytes.data(), ChainValue::kBytes);
  PutLe<uint64_t>(header + 32, instance);
  PutLe<uint64_t>(header + 40, first_offset);
  PutLe<uint32_t>(header + 48, count);
  crypto_generichash_update(State(state_), header, sizeof(header));
}

void ChainStep::Add(uint64_t producer, uint64_t sequence, std::string_view key,
                    std::string_view payload) {
  // One update for the fixed fields and the key when it is short: fewer
  // calls into libsodium, which copies into its block buffer anyway.
  unsigned char head[8 + 8 + 4 + 64 + 4];
  PutLe<uint64_t>(head, producer);
  PutLe<uint64_t>(head + 8, sequence);
  PutLe<uint32_t>(head + 16, static_cast<uint32_t>(key.size()));
  size_t n = 20;
  if (key.size() <= 64) {
    if (!key.empty()) std::memcpy(head + n, key.data(), key.size());
    n += key.size();
  } else {
    crypto_generichash_update(State(state_), head, n);
    crypto_generichash_update(State(state_), reinterpret_cast<const unsigned char*>(key.data()),
                              key.size());
    n = 0;
  }
  PutLe<uint32_t>(head + n, static_cast<uint32_t>(payload.size()));
  n += 4;
  crypto_generichash_update(State(state_), head, n);
  if (!payload.empty()) {
    crypto_generichash_update(State(state_), reinterpret_cast<const unsigned char*>(payload.data()),
                              payload.size());
  }
}

ChainValue ChainStep::Finish() {
  ChainValue out;
  crypto_generichash_final(State(state_), out.bytes.data(), ChainValue::kBytes);
  return out;
}

}  // namespace ordo
