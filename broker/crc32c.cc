#include "broker/crc32c.h"

#include <array>
#include <cstring>

#include "paxos/assert.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ORDO_CRC32C_HAVE_SSE42 1
#include <nmmintrin.h>
#else
#define ORDO_CRC32C_HAVE_SSE42 0
#endif

namespace ordo::broker {
namespace {

// The reflected Castagnoli polynomial: bit i is the coefficient of x^(31-i).
constexpr uint32_t kPolynomial = 0x82F63B78;

// kTables[0][b] is the CRC of the single byte b (without pre/post inversion).
// kTables[k][b] is the CRC of byte b followed by k zero bytes, which lets the
// slicing-by-8 loop fold eight input bytes into the state with eight
// independent lookups instead of eight dependent ones.
using Tables = std::array<std::array<uint32_t, 256>, 8>;

constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t crc = b;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) != 0 ? kPolynomial : 0);
    t[0][b] = crc;
  }
  for (size_t k = 1; k < t.size(); ++k) {
    for (size_t b = 0; b < 256; ++b) {
      const uint32_t prev = t[k - 1][b];
      t[k][b] = (prev >> 8) ^ t[0][prev & 0xFF];
    }
  }
  return t;
}

// Computed by the compiler: no static initialization order to worry about.
constexpr Tables kTables = MakeTables();
static_assert(kTables[0][1] == 0xF26B8303, "CRC32C table of byte 0x01");

// Little-endian load that is valid at any alignment and on any host order.
inline uint32_t LoadLe32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
         static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
}

inline uint32_t StepByte(uint32_t state, uint8_t byte) {
  return (state >> 8) ^ kTables[0][(state ^ byte) & 0xFF];
}

#if ORDO_CRC32C_HAVE_SSE42
// The crc32 instruction takes 3 cycles but a new one can start every cycle,
// so one dependent chain runs at a third of the unit's speed. Long inputs
// are cut into blocks of 3 x kStripe bytes whose three stripes are CRCed as
// independent chains, then joined: the register is linear in its inputs, so
// crc(A B C) = shift(shift(crc(A)) ^ crc(B)) ^ crc(C), where shift(x) is x
// carried through kStripe zero bytes. (Profiled: CRC32C was 14% of a
// replaying broker's CPU with one chain.)
constexpr size_t kStripe = 4096;

// shift(x) as four byte-indexed tables: shift is linear, so it is the XOR
// of the shifts of x's four bytes.
struct ShiftTables {
  uint32_t t[4][256];
};

__attribute__((target("sse4.2"))) uint32_t ZerosSse42(uint32_t state, size_t n) {
  uint64_t s = state;
  for (size_t i = 0; i < n; i += 8) s = _mm_crc32_u64(s, 0);
  return static_cast<uint32_t>(s);
}

const ShiftTables& StripeShift() {
  static const ShiftTables tables = [] {
    ShiftTables t{};
    for (uint32_t k = 0; k < 4; ++k) {
      for (uint32_t b = 0; b < 256; ++b) t.t[k][b] = ZerosSse42(b << (8 * k), kStripe);
    }
    return t;
  }();
  return tables;
}

inline uint32_t Shift(const ShiftTables& t, uint32_t x) {
  return t.t[0][x & 0xFF] ^ t.t[1][(x >> 8) & 0xFF] ^ t.t[2][(x >> 16) & 0xFF] ^ t.t[3][x >> 24];
}

// Compiled for SSE4.2 regardless of the baseline -march, and only called after
// the runtime CPU check, so one binary runs on every x86-64.
__attribute__((target("sse4.2"))) uint32_t ExtendSse42(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t state = ~crc;
  // Single bytes up to an 8-byte boundary keep the wide loads aligned.
  while (n > 0 && (reinterpret_cast<uintptr_t>(p) & 7) != 0) {
    state = _mm_crc32_u8(static_cast<uint32_t>(state), *p);
    ++p;
    --n;
  }
  if (n >= 3 * kStripe) {
    const ShiftTables& shift = StripeShift();
    while (n >= 3 * kStripe) {
      uint64_t a = state, b = 0, c = 0;
      for (size_t i = 0; i < kStripe; i += 8) {
        uint64_t wa, wb, wc;
        std::memcpy(&wa, p + i, 8);
        std::memcpy(&wb, p + kStripe + i, 8);
        std::memcpy(&wc, p + 2 * kStripe + i, 8);
        a = _mm_crc32_u64(a, wa);
        b = _mm_crc32_u64(b, wb);
        c = _mm_crc32_u64(c, wc);
      }
      const uint32_t ab = Shift(shift, static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b);
      state = Shift(shift, ab) ^ static_cast<uint32_t>(c);
      p += 3 * kStripe;
      n -= 3 * kStripe;
    }
  }
  while (n >= 8) {
    uint64_t word;
    std::memcpy(&word, p, sizeof(word));  // x86 is little-endian, as the CRC wants
    state = _mm_crc32_u64(state, word);
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    state = _mm_crc32_u8(static_cast<uint32_t>(state), *p);
    ++p;
    --n;
  }
  return ~static_cast<uint32_t>(state);
}
#endif

using ExtendFn = uint32_t (*)(uint32_t, const void*, size_t);

ExtendFn ChooseExtend() {
#if ORDO_CRC32C_HAVE_SSE42
  if (Crc32cHardwareAvailable()) return &ExtendSse42;
#endif
  return &Crc32cExtendPortable;
}

}  // namespace

uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  // The CRC is defined with the state pre- and post-inverted; undoing the
  // post-inversion of `crc` is what makes extension compose.
  uint32_t state = ~crc;
  while (n >= 8) {
    const uint32_t lo = LoadLe32(p) ^ state;
    const uint32_t hi = LoadLe32(p + 4);
    state = kTables[7][lo & 0xFF] ^ kTables[6][(lo >> 8) & 0xFF] ^ kTables[5][(lo >> 16) & 0xFF] ^
            kTables[4][lo >> 24] ^ kTables[3][hi & 0xFF] ^ kTables[2][(hi >> 8) & 0xFF] ^
            kTables[1][(hi >> 16) & 0xFF] ^ kTables[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    state = StepByte(state, *p);
    ++p;
    --n;
  }
  return ~state;
}

bool Crc32cHardwareAvailable() {
#if ORDO_CRC32C_HAVE_SSE42
  static const bool available = __builtin_cpu_supports("sse4.2") != 0;
  return available;
#else
  return false;
#endif
}

uint32_t Crc32cExtendHardware(uint32_t crc, const void* data, size_t n) {
  PAXOS_ASSERT(Crc32cHardwareAvailable());
#if ORDO_CRC32C_HAVE_SSE42
  return ExtendSse42(crc, data, n);
#else
  (void)crc;
  (void)data;
  (void)n;
  return 0;  // unreachable: the assertion above fails first
#endif
}

uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  // Chosen once; a function-local static is initialized thread-safely.
  static const ExtendFn extend = ChooseExtend();
  return extend(crc, data, n);
}

}  // namespace ordo::broker
