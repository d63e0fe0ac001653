// CRC32C: published test vectors, agreement between the software and SSE4.2
// implementations and a bit-at-a-time reference, and extension.
#include "broker/crc32c.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace ordo::broker {
namespace {

// The definition, one bit at a time: slow and obviously right, the yardstick
// for the table-driven code.
uint32_t ReferenceCrc32c(const uint8_t* p, size_t n) {
  uint32_t crc = 0xFFFFFFFF;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) != 0 ? 0x82F63B78 : 0);
  }
  return ~crc;
}

struct Vector {
  std::vector<uint8_t> data;
  uint32_t crc;
};

std::vector<uint8_t> Bytes(std::string_view s) { return {s.begin(), s.end()}; }

std::vector<uint8_t> Iota(size_t n, bool ascending) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(ascending ? i : n - 1 - i);
  return v;
}

// The check value of the CRC catalogue, and the iSCSI examples of RFC 3720,
// appendix B.4.
std::vector<Vector> KnownVectors() {
  return {
      {{}, 0x00000000},
      {Bytes("a"), 0xC1D04330},
      {Bytes("123456789"), 0xE3069283},
      {std::vector<uint8_t>(32, 0x00), 0x8A9136AA},
      {std::vector<uint8_t>(32, 0xFF), 0x62A8AB43},
      {Iota(32, true), 0x46DD794E},
      {Iota(32, false), 0x113FDB5C},
  };
}

TEST(Crc32cTest, KnownVectors) {
  for (const Vector& v : KnownVectors()) {
    SCOPED_TRACE("length " + std::to_string(v.data.size()));
    EXPECT_EQ(Crc32c(v.data), v.crc);
    EXPECT_EQ(Crc32cExtendPortable(0, v.data.data(), v.data.size()), v.crc);
    EXPECT_EQ(ReferenceCrc32c(v.data.data(), v.data.size()), v.crc);
    if (Crc32cHardwareAvailable()) {
      EXPECT_EQ(Crc32cExtendHardware(0, v.data.data(), v.data.size()), v.crc);
    }
  }
}

TEST(Crc32cTest, StringOverloads) {
  EXPECT_EQ(Crc32c(std::string_view("123456789")), 0xE3069283u);
  EXPECT_EQ(Crc32c(std::string_view()), 0u);
  EXPECT_EQ(Crc32c(nullptr, 0), 0u);
}

// A buffer with slack on both sides, so tests can start at every alignment.
std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t n) {
  std::vector<uint8_t> v(n);
  for (uint8_t& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(Crc32cTest, PortableMatchesReferenceAtEveryLengthAndAlignment) {
  std::mt19937_64 rng(20240601);
  const std::vector<uint8_t> buffer = RandomBytes(rng, 300);
  for (size_t offset = 0; offset < 16; ++offset) {
    for (size_t n = 0; offset + n <= buffer.size(); n += (n < 40 ? 1 : 13)) {
      const uint8_t* p = buffer.data() + offset;
      ASSERT_EQ(Crc32cExtendPortable(0, p, n), ReferenceCrc32c(p, n))
          << "offset " << offset << " length " << n;
    }
  }
}

TEST(Crc32cTest, HardwareMatchesPortableOnRandomBuffers) {
  if (!Crc32cHardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this machine or build";
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 2000; ++trial) {
    const size_t n = rng() % 4096;
    const size_t offset = rng() % 16;
    const std::vector<uint8_t> buffer = RandomBytes(rng, n + offset);
    const uint8_t* p = buffer.data() + offset;
    const uint32_t seed = trial % 2 == 0 ? 0 : static_cast<uint32_t>(rng());
    ASSERT_EQ(Crc32cExtendHardware(seed, p, n), Crc32cExtendPortable(seed, p, n))
        << "trial " << trial << " offset " << offset << " length " << n;
  }
}

// Inputs of 12 KiB and more are CRCed as three interleaved stripes and
// joined; every length and alignment around the block boundaries must still
// give the one-chain answer.
TEST(Crc32cTest, HardwareMatchesPortableAcrossStripedBlocks) {
  if (!Crc32cHardwareAvailable()) GTEST_SKIP() << "no SSE4.2 on this machine or build";
  std::mt19937_64 rng(11);
  const std::vector<uint8_t> buffer = RandomBytes(rng, 5 * 12288 + 64);
  for (size_t n : {size_t{12287}, size_t{12288}, size_t{12289}, size_t{12295}, size_t{24576},
                   size_t{24583}, size_t{36863}, size_t{5 * 12288 + 40}}) {
    for (size_t offset : {0, 1, 3, 8, 13}) {
      for (uint32_t seed : {0u, 0xDEADBEEFu}) {
        ASSERT_EQ(Crc32cExtendHardware(seed, buffer.data() + offset, n),
                  Crc32cExtendPortable(seed, buffer.data() + offset, n))
            << "offset " << offset << " length " << n << " seed " << seed;
      }
    }
  }
}

TEST(Crc32cTest, DispatchMatchesPortable) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    const std::vector<uint8_t> buffer = RandomBytes(rng, rng() % 1000);
    ASSERT_EQ(Crc32c(buffer), Crc32cExtendPortable(0, buffer.data(), buffer.size()));
  }
}

// Extend(Extend(0, a), b) == Crc(a + b): how a caller checksums data that
// arrives in pieces.
TEST(Crc32cTest, ExtendComposes) {
  std::mt19937_64 rng(3);
  const std::vector<uint8_t> buffer = RandomBytes(rng, 200);
  const uint32_t whole = Crc32c(buffer);
  for (size_t split = 0; split <= buffer.size(); ++split) {
    const uint32_t first = Crc32c(buffer.data(), split);
    EXPECT_EQ(Crc32cExtend(first, buffer.data() + split, buffer.size() - split), whole);
    EXPECT_EQ(Crc32cExtendPortable(first, buffer.data() + split, buffer.size() - split), whole);
  }
}

TEST(Crc32cTest, DetectsEverySingleBitFlip) {
  std::mt19937_64 rng(5);
  std::vector<uint8_t> buffer = RandomBytes(rng, 64);
  const uint32_t original = Crc32c(buffer);
  for (size_t bit = 0; bit < buffer.size() * 8; ++bit) {
    buffer[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    EXPECT_NE(Crc32c(buffer), original) << "bit " << bit;
    buffer[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
  }
}

}  // namespace
}  // namespace ordo::broker
