// Fuzz target: the stored records of the log and meta databases, as a
// broker reads them back from LMDB (broker/codec.h: DecodeLogRecord, both
// VisitLogRecord forms, FetchReplyEncoder::Add, DecodeMetaRecord).
//
// Each input is decoded as it is, and again with its CRC32C prefix made to
// match, so that mutations reach the FlatBuffers checks behind the checksum.
//
// Properties: a failure is a typed error with a message; the answer does
// not depend on alignment; VisitLogRecord and FetchReplyEncoder::Add accept
// exactly what DecodeLogRecord accepts, and see the same messages; no
// record is both a log and a meta record; a decoded record holds no more
// key and payload bytes than it has, and re-encodes to a record that
// decodes the same (and, through FetchReplyEncoder, to the same entry in
// a FetchReply frame).
#include <flatbuffers/flatbuffers.h>

#include <memory>

#include "broker/codec.h"
#include "tests/fuzz/broker_support.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

using broker::DecodeStatus;

// A copy of a visited message (the visit's spans die with the call).
struct Visited {
  uint32_t index;
  paxos::ClientMessage message;
};

void CheckLogRecord(std::span<const uint8_t> record) {
  paxos::Entry entry;
  const DecodeStatus s = broker::DecodeLogRecord(record, &entry);
  ORDO_FUZZ_CHECK(s.ok() || !s.message().empty());
  ORDO_FUZZ_CHECK(s.store_code() == (s.ok() ? paxos::StoreCode::kOk : paxos::StoreCode::kCorrupt));

  const Misaligned misaligned(record);
  paxos::Entry other;
  ORDO_FUZZ_CHECK(broker::DecodeLogRecord(misaligned.bytes(), &other).code() == s.code());

  uint64_t instance = 0;
  std::vector<Visited> visited;
  const DecodeStatus v =
      broker::VisitLogRecord(record, &instance, [&](uint32_t i, const broker::MessageView& m) {
        visited.push_back(
            {i,
             {paxos::ProducerId(m.producer), m.sequence, std::string(m.key.begin(), m.key.end()),
              std::string(m.payload.begin(), m.payload.end())}});
      });
  ORDO_FUZZ_CHECK(v.code() == s.code());
  // A reader that refuses the record at admission visits nothing.
  bool admitted = false;
  const DecodeStatus refused = broker::VisitLogRecord(
      record,
      [&](uint64_t, uint32_t) {
        admitted = true;
        return false;
      },
      [&](uint32_t, const broker::MessageView&) { ORDO_FUZZ_CHECK(false); });
  ORDO_FUZZ_CHECK(refused.code() == s.code());
  ORDO_FUZZ_CHECK(admitted == s.ok());

  broker::FetchReplyEncoder encoder(record.size());
  size_t value_bytes = 0;
  const paxos::Instance key = s.ok() ? entry.instance : paxos::Instance(1);
  const DecodeStatus added = encoder.Add(record, key, &value_bytes);
  ORDO_FUZZ_CHECK(added.code() == s.code());
  if (s.ok()) {
    // Under another key the record is refused as a misplaced one.
    broker::FetchReplyEncoder misplaced(record.size());
    ORDO_FUZZ_CHECK(!misplaced.Add(record, entry.instance.next(), &value_bytes).ok());
    ORDO_FUZZ_CHECK(misplaced.entries() == 0);
  }
  if (!s.ok()) {
    ORDO_FUZZ_CHECK(encoder.entries() == 0);
    return;
  }

  ORDO_FUZZ_CHECK(entry.value != nullptr);
  ORDO_FUZZ_CHECK(entry.instance.value() != 0);
  ORDO_FUZZ_CHECK(instance == entry.instance.value());
  ORDO_FUZZ_CHECK(ContentBytes(*entry.value) <= record.size());
  ORDO_FUZZ_CHECK(visited.size() == entry.value->messages.size());
  for (size_t i = 0; i < visited.size(); ++i) {
    ORDO_FUZZ_CHECK(visited[i].index == i);
    ORDO_FUZZ_CHECK(visited[i].message == entry.value->messages[i]);
  }

  const std::string again = broker::EncodeLogRecord(entry);
  paxos::Entry decoded;
  ORDO_FUZZ_CHECK_OK(broker::DecodeLogRecord(Bytes(again), &decoded));
  ORDO_FUZZ_CHECK(paxos::SameEntry(decoded, entry));

  ORDO_FUZZ_CHECK(encoder.entries() == 1);
  paxos::Message header;
  header.type = paxos::MessageType::kFetchReply;
  header.from = paxos::NodeId(1);
  header.to = paxos::NodeId(2);
  const std::unique_ptr<flatbuffers::DetachedBuffer> frame = encoder.Finish(header);
  paxos::Message reply;
  ORDO_FUZZ_CHECK_OK(
      broker::DecodePeerMessage({frame->data(), frame->size()}, frame->size(), &reply));
  ORDO_FUZZ_CHECK(reply.entries.size() == 1);
  ORDO_FUZZ_CHECK(paxos::SameEntry(reply.entries[0], entry));
}

void CheckMetaRecord(std::span<const uint8_t> record, bool log_record_ok) {
  paxos::HardState hard_state;
  const DecodeStatus s = broker::DecodeMetaRecord(record, &hard_state);
  ORDO_FUZZ_CHECK(s.ok() || !s.message().empty());
  ORDO_FUZZ_CHECK(!(s.ok() && log_record_ok));  // the identifiers differ
  const Misaligned misaligned(record);
  paxos::HardState other;
  ORDO_FUZZ_CHECK(broker::DecodeMetaRecord(misaligned.bytes(), &other).code() == s.code());
  if (!s.ok()) return;
  const std::string again = broker::EncodeMetaRecord(hard_state);
  paxos::HardState decoded;
  ORDO_FUZZ_CHECK_OK(broker::DecodeMetaRecord(Bytes(again), &decoded));
  ORDO_FUZZ_CHECK(decoded == hard_state);
}

void CheckRecord(std::span<const uint8_t> record) {
  CheckLogRecord(record);
  paxos::Entry entry;
  CheckMetaRecord(record, broker::DecodeLogRecord(record, &entry).ok());
}

}  // namespace

std::vector<Seed> Seeds() {
  std::vector<Seed> seeds;
  for (const paxos::Entry& e : SampleEntries()) {
    seeds.push_back(
        {"log-instance-" + std::to_string(e.instance.value()), broker::EncodeLogRecord(e)});
  }
  seeds.push_back({"log-config", broker::EncodeLogRecord(SampleConfigEntry())});
  seeds.push_back({"meta-fresh", broker::EncodeMetaRecord(paxos::HardState{})});
  seeds.push_back({"meta-probing", broker::EncodeMetaRecord(paxos::HardState{
                                       paxos::Ballot{7, paxos::NodeId(3)}, paxos::Instance(41),
                                       paxos::HardState::kProbing})});
  return seeds;
}

}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ordo;
  const std::span<const uint8_t> input(data, size);
  static_assert(broker::kRecordChecksumBytes == 4, "WithMatchingChecksum's prefix");
  fuzz::CheckRecord(input);
  fuzz::CheckRecord(fuzz::WithMatchingChecksum(input));
  return 0;
}
