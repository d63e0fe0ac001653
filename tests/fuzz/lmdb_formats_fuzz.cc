// Fuzz target: the LMDB-side record formats (broker/lmdb_formats.h), as the
// store reads them back: the offset index and the compacted view (each
// checked with the key it is stored under), the retention, journal and base
// records of the meta database, and the operations of a journal record's
// body (ParseJournalOp, as LmdbStore replays them).
//
// Input: byte 0 picks the format; for the index and the compacted view,
// byte 1 is the key's length and the key follows; the rest is the value.
// Each value is decoded as it is, and again with its CRC32C made to match.
//
// Properties: a decoded record stays within its bytes (the index's
// skipped list, the payload, the operations' keys and values), names the
// key it is stored under, and re-encodes to a record that decodes the same
// (the fixed-size records to the very same bytes); a journal body parses
// operation by operation, each one moving forward, until its end or a typed
// refusal.
#include <lmdb.h>

#include <algorithm>

#include "broker/crc32c.h"
#include "broker/lmdb_formats.h"
#include "tests/fuzz/broker_support.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

namespace lmdb = broker::lmdb;

enum Format : uint8_t { kIndex, kKeyed, kRetained, kJournalMeta, kBase, kJournalOps, kFormats };

MDB_val Val(std::span<const uint8_t> bytes) {
  return MDB_val{bytes.size(), const_cast<uint8_t*>(bytes.data())};
}

bool Equal(std::span<const uint8_t> a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), Bytes(b).begin());
}

void CheckIndex(std::span<const uint8_t> key, std::span<const uint8_t> value) {
  lmdb::IndexRecord r;
  if (!lmdb::DecodeIndex(Val(key), Val(value), &r)) return;
  ORDO_FUZZ_CHECK(key.size() == 8);
  ORDO_FUZZ_CHECK(r.first_offset == lmdb::GetBigEndian(key.data()));
  ORDO_FUZZ_CHECK(r.instance != 0 && r.appended != 0);
  ORDO_FUZZ_CHECK(r.skipped.size() * 4 <= value.size());
  // The encoder writes skipped positions in ascending order, below the
  // batch's size: such a record re-encodes (as the current version) to one
  // that decodes the same.
  constexpr uint32_t kPositionsMax = 1 << 16;
  bool canonical = true;
  for (size_t i = 0; i < r.skipped.size(); ++i) {
    canonical &= r.skipped[i] < kPositionsMax && (i == 0 || r.skipped[i] > r.skipped[i - 1]);
  }
  if (!canonical) return;
  paxos::AppliedInstance a;
  a.instance = paxos::Instance(r.instance);
  a.first_offset = paxos::Offset(r.first_offset);
  a.appended = r.appended;
  a.results.resize(r.skipped.empty() ? 0 : r.skipped.back() + 1);
  for (uint32_t s : r.skipped) a.results[s].outcome = paxos::PublishOutcome::kDuplicate;
  const std::string again = lmdb::EncodeIndex(a);
  lmdb::IndexRecord decoded;
  ORDO_FUZZ_CHECK(lmdb::DecodeIndex(Val(key), Val(Bytes(again)), &decoded));
  ORDO_FUZZ_CHECK(decoded.first_offset == r.first_offset && decoded.instance == r.instance &&
                  decoded.appended == r.appended && decoded.skipped == r.skipped);
}

void CheckKeyed(std::span<const uint8_t> key, std::span<const uint8_t> value) {
  broker::StreamMessage m;
  if (!lmdb::DecodeKeyed(Val(key), Val(value), &m)) return;
  ORDO_FUZZ_CHECK(Equal(key, m.key));
  ORDO_FUZZ_CHECK(m.payload.size() + 4 + 24 <= value.size());
  const std::string again = lmdb::EncodeKeyed(m.key, m.offset, m.producer, m.sequence, m.payload);
  broker::StreamMessage decoded;
  ORDO_FUZZ_CHECK(lmdb::DecodeKeyed(Val(key), Val(Bytes(again)), &decoded));
  ORDO_FUZZ_CHECK(decoded == m);
}

void CheckRetained(std::span<const uint8_t> value) {
  broker::Retained r;
  if (!lmdb::DecodeRetained(Val(value), &r)) return;
  ORDO_FUZZ_CHECK(Equal(value, lmdb::EncodeRetained(r)));
}

void CheckJournalMeta(std::span<const uint8_t> value) {
  uint64_t generation = 0;
  if (!lmdb::DecodeJournalMeta(Val(value), &generation)) return;
  ORDO_FUZZ_CHECK(Equal(value, lmdb::EncodeJournalMeta(generation)));
}

void CheckBase(std::span<const uint8_t> value) {
  paxos::AppliedSnapshot state;
  if (!lmdb::DecodeBase(Val(value), &state)) return;
  const std::string again = lmdb::EncodeBase(state);
  paxos::AppliedSnapshot decoded;
  ORDO_FUZZ_CHECK(lmdb::DecodeBase(Val(Bytes(again)), &decoded));
  ORDO_FUZZ_CHECK(decoded == state);
}

void Check(Format format, std::span<const uint8_t> key, std::span<const uint8_t> value) {
  switch (format) {
    case kIndex:
      return CheckIndex(key, value);
    case kKeyed:
      return CheckKeyed(key, value);
    case kRetained:
      return CheckRetained(value);
    case kJournalMeta:
      return CheckJournalMeta(value);
    case kBase:
      return CheckBase(value);
    case kJournalOps:
      CheckJournalOps(value);
      return;
    case kFormats:
      break;
  }
}

// The input of this target for one record.
std::string Input(Format format, std::string_view key, std::string_view value) {
  std::string input(1, static_cast<char>(format));
  if (format == kIndex || format == kKeyed) {
    input.push_back(static_cast<char>(key.size()));
    input += key;
  }
  return input + std::string(value);
}

std::string BigEndianKey(uint64_t v) {
  unsigned char k[8];
  lmdb::PutBigEndian(v, k);
  return std::string(reinterpret_cast<const char*>(k), sizeof(k));
}

}  // namespace

std::vector<Seed> Seeds() {
  std::vector<Seed> seeds;
  paxos::AppliedInstance applied;
  applied.instance = paxos::Instance(12);
  applied.first_offset = paxos::Offset(300);
  applied.appended = 3;
  applied.results.resize(5);
  applied.results[1].outcome = paxos::PublishOutcome::kDuplicate;
  applied.results[3].outcome = paxos::PublishOutcome::kOutOfSequence;
  seeds.push_back({"index", Input(kIndex, BigEndianKey(300), lmdb::EncodeIndex(applied))});
  seeds.push_back(
      {"keyed", Input(kKeyed, "user-42", lmdb::EncodeKeyed("user-42", 17, 99, 3, "latest value"))});
  broker::Retained retained{101, 5000, 1 << 20, broker::SnapshotHandle{100, 4096, 0xfeedbeef}};
  seeds.push_back({"retained", Input(kRetained, "", lmdb::EncodeRetained(retained))});
  seeds.push_back({"journal-meta", Input(kJournalMeta, "", lmdb::EncodeJournalMeta(0x0123456789))});
  paxos::AppliedSnapshot base;
  base.instance = paxos::Instance(100);
  base.next_offset = paxos::Offset(5000);
  base.barrier = paxos::Ballot{4, paxos::NodeId(2)};
  base.producers = {{paxos::ProducerId(7), 12, {{1, 10, 5}, {8, 4000, 5}}},
                    {paxos::ProducerId(9), 1, {{1, 4999, 1}}}};
  seeds.push_back({"base", Input(kBase, "", lmdb::EncodeBase(base))});
  std::vector<uint8_t> ops;
  const std::string k = BigEndianKey(12), v = "a log record's bytes";
  lmdb::AppendJournalOp(&ops, lmdb::kJournalPut, lmdb::kLogDb, Val(Bytes(k)), v.size());
  ops.insert(ops.end(), v.begin(), v.end());
  lmdb::AppendJournalOp(&ops, lmdb::kJournalDel, lmdb::kIndexDb, Val(Bytes(k)), 0);
  seeds.push_back({"journal-ops", Input(kJournalOps, "",
                                        {reinterpret_cast<const char*>(ops.data()), ops.size()})});
  return seeds;
}

}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ordo::fuzz;
  if (size == 0) return 0;
  const Format format = static_cast<Format>(data[0] % kFormats);
  std::span<const uint8_t> rest(data + 1, size - 1), key;
  if (format == kIndex || format == kKeyed) {
    if (rest.empty()) return 0;
    const size_t key_bytes = std::min<size_t>(rest[0], rest.size() - 1);
    key = rest.subspan(1, key_bytes);
    rest = rest.subspan(1 + key_bytes);
  }
  // Each record is checked at an odd address too: LMDB aligns values to 2
  // bytes at best.
  Check(format, key, rest);
  Check(format, Misaligned(key).bytes(), Misaligned(rest).bytes());
  if (format != kJournalOps) {
    // The compacted view's CRC covers its key (version 2).
    const uint32_t initial = format == kKeyed ? ordo::broker::Crc32c(key) : 0;
    Check(format, key, WithMatchingChecksum(rest, initial));
  }
  return 0;
}
