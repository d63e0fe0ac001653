#include "tests/fuzz/broker_support.h"

#include <algorithm>
#include <limits>
#include <string>

#include "broker/crc32c.h"
#include "broker/lmdb_formats.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {

bool SameMessage(const paxos::Message& a, const paxos::Message& b) {
  if (a.type != b.type || a.from != b.from || a.to != b.to || a.ballot != b.ballot ||
      a.promised != b.promised || a.instance != b.instance || a.instance_last != b.instance_last ||
      a.chosen != b.chosen || a.first_retained != b.first_retained ||
      a.entries.size() != b.entries.size()) {
    return false;
  }
  for (size_t i = 0; i < a.entries.size(); ++i) {
    if (!paxos::SameEntry(a.entries[i], b.entries[i])) return false;
  }
  return true;
}

size_t ContentBytes(const paxos::Value& value) {
  size_t bytes = 0;
  for (const paxos::ClientMessage& m : value.messages) bytes += m.key.size() + m.payload.size();
  return bytes;
}

size_t ContentBytes(const paxos::Message& message) {
  size_t bytes = 0;
  for (const paxos::Entry& e : message.entries) {
    if (e.value != nullptr) bytes += ContentBytes(*e.value);
  }
  return bytes;
}

std::vector<uint8_t> WithMatchingChecksum(std::span<const uint8_t> record, uint32_t initial) {
  constexpr size_t kPrefixBytes = 4;
  std::vector<uint8_t> out(record.begin(), record.end());
  if (out.size() < kPrefixBytes) return out;
  const uint32_t crc =
      broker::Crc32cExtend(initial, out.data() + kPrefixBytes, out.size() - kPrefixBytes);
  for (size_t i = 0; i < kPrefixBytes; ++i) out[i] = static_cast<uint8_t>(crc >> (8 * i));
  return out;
}

size_t CheckJournalOps(std::span<const uint8_t> body) {
  namespace lmdb = broker::lmdb;
  size_t ops = 0;
  for (size_t at = 0; at < body.size(); ++ops) {
    const size_t start = at;
    lmdb::JournalOp op;
    if (lmdb::ParseJournalOp(body, &at, &op) != lmdb::JournalOpParse::kOk) {
      ORDO_FUZZ_CHECK(at == start);
      break;
    }
    ORDO_FUZZ_CHECK(at > start && at <= body.size());
    ORDO_FUZZ_CHECK(op.op == lmdb::kJournalPut || op.op == lmdb::kJournalDel);
    ORDO_FUZZ_CHECK(op.db < lmdb::kDbCount);
    ORDO_FUZZ_CHECK(op.op == lmdb::kJournalPut || op.value.mv_size == 0);
    const auto* key = static_cast<const uint8_t*>(op.key.mv_data);
    const auto* value = static_cast<const uint8_t*>(op.value.mv_data);
    ORDO_FUZZ_CHECK(key == body.data() + start + lmdb::kJournalOpHeaderBytes);
    ORDO_FUZZ_CHECK(value == key + op.key.mv_size);
    ORDO_FUZZ_CHECK(value + op.value.mv_size == body.data() + at);
    // The writer's encoding of the same operation is these very bytes.
    std::vector<uint8_t> again;
    lmdb::AppendJournalOp(&again, op.op, op.db, op.key, op.value.mv_size);
    again.insert(again.end(), value, value + op.value.mv_size);
    ORDO_FUZZ_CHECK(std::equal(again.begin(), again.end(), body.begin() + start));
  }
  return ops;
}

paxos::Membership SampleMembership() {
  using paxos::NodeId;
  return paxos::Membership{{
      {NodeId(1), true, "127.0.0.1:7101", "127.0.0.1:7201",
       "oaU}vlG&Lz&]Z9zpp<+h^ky(lTBQY7!4rJyhk)SF"},
      {NodeId(2), true, "db-2.example:7102", "db-2.example:7202",
       "T=Z/4YXyvSwajF=+6(+]D*v@x}/JeIvrsC<V}DV>"},
      {NodeId(6), false, "[::1]:7106", "[::1]:7206", "HQxNzNFoZs0Y5AQ>-(VM<ru<<^F#P$f-)PZjG0Nb"},
  }};
}

paxos::Entry SampleConfigEntry() {
  const paxos::Ballot b{5, paxos::NodeId(1)};
  return {paxos::Instance(11), b, paxos::MakeConfig(b, SampleMembership())};
}

std::vector<paxos::Entry> SampleEntries() {
  using paxos::Ballot;
  using paxos::NodeId;
  constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
  std::string bytes;
  for (int b = 0; b < 256; b += 7) bytes.push_back(static_cast<char>(b));
  const std::vector<paxos::ClientMessage> messages = {
      {paxos::ProducerId(1), 1, "", "hello"},
      {paxos::ProducerId(kU64Max), kU64Max, std::string("k\0y", 3), bytes},
      {paxos::ProducerId(2), 3, "key", ""},
      {paxos::ProducerId(3), 4, "", std::string(7, '\0')},
  };
  const Ballot b32{3, NodeId(2)};
  return {
      {paxos::Instance(7), b32, paxos::MakeBatch(Ballot{2, NodeId(1)}, messages)},
      {paxos::Instance(8), b32, paxos::MakeNoop(b32)},
      {paxos::Instance(9), b32, paxos::MakeBarrier(b32)},
      {paxos::Instance(10), Ballot{4, NodeId(3)}, paxos::MakeBatch(Ballot{4, NodeId(3)}, {})},
  };
}

}  // namespace ordo::fuzz
