// Fuzz target: snapshot files (broker/codec.h: DecodeSnapshotFile), as a
// broker reads its own at start and one it assembled from a peer's chunks
// before installing it (the chunks themselves arrive in peer frames: the
// peer_frame target). The file's handle (size and CRC32C) is checked before
// decoding, but it comes from the same peer as the bytes, so the decoder
// is all that stands between a peer and the applied state.
//
// Properties: a failure is a typed error with a message; decoding with and
// without the keyed messages agrees; the answer does not depend on
// alignment; the keys and payloads decoded fit in the file; a decoded file
// re-encodes to one that decodes the same; the applied state it describes
// can be built, snapshotted and applied on.
#include "broker/codec.h"
#include "paxos/applied_state.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

using broker::DecodeStatus;
using broker::StreamMessage;

void CheckAppliedState(const paxos::AppliedSnapshot& snapshot) {
  paxos::AppliedState state(snapshot);
  ORDO_FUZZ_CHECK(state.applied() == snapshot.instance);
  ORDO_FUZZ_CHECK(state.producer_count() <= snapshot.producers.size());
  // Applying goes on after the snapshot: a retry of each producer's last
  // sequence and the next one.
  std::vector<paxos::ClientMessage> batch;
  for (size_t i = 0; i < snapshot.producers.size() && i < 4; ++i) {
    const paxos::ProducerSnapshot& p = snapshot.producers[i];
    batch.push_back({p.id, p.last_sequence, "", "retry"});
    batch.push_back({p.id, p.last_sequence + 1, "k", "next"});
  }
  const paxos::AppliedInstance applied =
      state.Apply(snapshot.instance.next(), paxos::MakeBatch(snapshot.barrier, std::move(batch)));
  ORDO_FUZZ_CHECK(applied.results.size() == applied.value->messages.size());
  (void)state.Snapshot();
}

}  // namespace

std::vector<Seed> Seeds() {
  paxos::AppliedSnapshot state;
  state.instance = paxos::Instance(10000);
  state.next_offset = paxos::Offset(123456);
  state.barrier = paxos::Ballot{9, paxos::NodeId(3)};
  state.producers = {
      {paxos::ProducerId(1), 3, {{1, 0, 3}}},
      {paxos::ProducerId(0xABCDEF), 70000, {{4465, 60000, 60000}, {64465, 130000, 5536}}},
      {paxos::ProducerId(~uint64_t{0}), 1, {}},
  };
  const std::vector<StreamMessage> keyed = {
      {5, 1, 2, "a", "first"},
      {99, 0xABCDEF, 9, std::string("b\0c", 3), std::string(40, '\0')},
      {123455, 1, 3, std::string(broker::kKeyBytesMax, 'z'), ""},
  };
  return {
      {"empty", broker::EncodeSnapshotFile(paxos::AppliedSnapshot{}, {})},
      {"state", broker::EncodeSnapshotFile(state, {})},
      {"state-keyed", broker::EncodeSnapshotFile(state, keyed)},
      {"state-membership",
       [&] {
         paxos::AppliedSnapshot s = state;
         s.membership.members = {
             {paxos::NodeId(1), true, "127.0.0.1:7101", "127.0.0.1:7201", ""},
             {paxos::NodeId(4), false, "db-4.example:7104", "db-4.example:7204", ""}};
         return broker::EncodeSnapshotFile(s, {});
       }()},
  };
}

}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ordo;
  const std::span<const uint8_t> file(data, size);
  paxos::AppliedSnapshot state;
  std::vector<broker::StreamMessage> keyed;
  const broker::DecodeStatus s = broker::DecodeSnapshotFile(file, &state, &keyed);
  ORDO_FUZZ_CHECK(s.ok() || !s.message().empty());

  paxos::AppliedSnapshot without_keyed;
  ORDO_FUZZ_CHECK(broker::DecodeSnapshotFile(file, &without_keyed, nullptr).code() == s.code());
  const fuzz::Misaligned misaligned(file);
  paxos::AppliedSnapshot other;
  ORDO_FUZZ_CHECK(broker::DecodeSnapshotFile(misaligned.bytes(), &other, nullptr).code() ==
                  s.code());
  if (!s.ok()) {
    ORDO_FUZZ_CHECK(keyed.empty());
    return 0;
  }
  ORDO_FUZZ_CHECK(without_keyed == state);

  size_t keyed_bytes = 0;
  for (const broker::StreamMessage& m : keyed) keyed_bytes += m.key.size() + m.payload.size();
  ORDO_FUZZ_CHECK(keyed_bytes <= size);

  const std::string again = broker::EncodeSnapshotFile(state, keyed);
  paxos::AppliedSnapshot decoded;
  std::vector<broker::StreamMessage> decoded_keyed;
  ORDO_FUZZ_CHECK_OK(broker::DecodeSnapshotFile(fuzz::Bytes(again), &decoded, &decoded_keyed));
  ORDO_FUZZ_CHECK(decoded == state);
  ORDO_FUZZ_CHECK(decoded_keyed == keyed);

  fuzz::CheckAppliedState(state);
  return 0;
}
