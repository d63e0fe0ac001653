// Fuzz target: the journal file (broker/journal.h), replayed as a broker
// replays it at start: Journal::Replay over a file holding the input, each
// record's body parsed into operations as LmdbStore applies them. The
// generation replayed is the one the first record names (bytes 12..19).
//
// Each input is replayed as it is, and again with every record's CRC32C
// made to match (walking the records from the start, as far as their
// headers and lengths fit), so mutations reach what lies behind the
// checksums: lengths, indexes, the synced counts and the bodies.
//
// Properties: Replay ends in ok or a typed kDamaged with a message; every
// body it hands out lies within the file; it replays a prefix of the
// records (indexes 0, 1, 2, ...), the same each time; StartsPass agrees
// with whether a first record was replayed.
#include <unistd.h>

#include <memory>
#include <string>

#include "broker/crc32c.h"
#include "broker/journal.h"
#include "broker/lmdb_formats.h"
#include "tests/fuzz/broker_support.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

using broker::Journal;

// Header layout (broker/journal.h): CRC32C, magic, length, generation,
// index, synced.
constexpr size_t kMagicAt = 4, kLengthAt = 8, kGenerationAt = 12;

uint64_t LoadLe(const uint8_t* p, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

void Replay(std::span<const uint8_t> file) {
  static MemoryFile memory("ordo-fuzz-journal");
  std::unique_ptr<Journal> journal;
  ORDO_FUZZ_CHECK_OK(Journal::Open(memory.Write(file), 0, /*create=*/false, &journal));
  ORDO_FUZZ_CHECK(journal->size() == file.size());
  const uint64_t generation =
      file.size() >= kGenerationAt + 8 ? LoadLe(file.data() + kGenerationAt, 8) : 0;

  std::vector<std::vector<uint8_t>> bodies;
  uint64_t records = 0;
  const Status s = journal->Replay(
      generation,
      [&](std::span<const uint8_t> body) {
        ORDO_FUZZ_CHECK(body.size() + Journal::kHeaderBytes <= file.size());
        CheckJournalOps(body);
        bodies.emplace_back(body.begin(), body.end());
        return Status::Ok();
      },
      &records);
  ORDO_FUZZ_CHECK(s.ok() || (s.kind() == Status::Kind::kDamaged && !s.message().empty()));
  ORDO_FUZZ_CHECK(records == bodies.size());
  ORDO_FUZZ_CHECK(records * Journal::kHeaderBytes <= file.size());
  ORDO_FUZZ_CHECK(journal->StartsPass(generation) == (records > 0));

  // Deterministic: a second replay hands out the same bodies.
  size_t again = 0;
  uint64_t records_again = 0;
  const Status s2 = journal->Replay(
      generation,
      [&](std::span<const uint8_t> body) {
        ORDO_FUZZ_CHECK(again < bodies.size());
        ORDO_FUZZ_CHECK(
            std::equal(body.begin(), body.end(), bodies[again].begin(), bodies[again].end()));
        ++again;
        return Status::Ok();
      },
      &records_again);
  ORDO_FUZZ_CHECK(s2.kind() == s.kind() && records_again == records);
}

// The file with each record's CRC32C rewritten to match its header and
// body, from the start as far as the records' lengths fit.
std::vector<uint8_t> WithMatchingChecksums(std::span<const uint8_t> file) {
  std::vector<uint8_t> out(file.begin(), file.end());
  uint64_t at = 0;
  while (at + Journal::kHeaderBytes <= out.size()) {
    uint8_t* h = out.data() + at;
    const uint64_t length = LoadLe(h + kLengthAt, 4);
    if (at + Journal::kHeaderBytes + length > out.size()) break;
    const uint32_t crc = broker::Crc32c(h + kMagicAt, Journal::kHeaderBytes - kMagicAt + length);
    for (size_t i = 0; i < 4; ++i) h[i] = static_cast<uint8_t>(crc >> (8 * i));
    at += (Journal::kHeaderBytes + length + 7) & ~uint64_t{7};
  }
  return out;
}

}  // namespace

std::vector<Seed> Seeds() {
  // Records written by the real journal into a real file, copied out.
  char dir_template[] = "/tmp/ordo-fuzz-journal-XXXXXX";
  const char* dir = ::mkdtemp(dir_template);
  ORDO_FUZZ_CHECK(dir != nullptr);
  const std::string path = std::string(dir) + "/journal";
  constexpr size_t kFileBytes = 1024;
  std::vector<Seed> seeds;
  const auto snapshot = [&](std::string name) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    ORDO_FUZZ_CHECK(f != nullptr);
    std::string bytes(kFileBytes, '\0');
    bytes.resize(std::fread(bytes.data(), 1, bytes.size(), f));
    std::fclose(f);
    seeds.push_back({std::move(name), std::move(bytes)});
  };
  {
    std::unique_ptr<Journal> journal;
    ORDO_FUZZ_CHECK_OK(Journal::Open(path, kFileBytes, /*create=*/true, &journal));
    journal->Restart(0x5eed);
    ORDO_FUZZ_CHECK_OK(journal->Append({}));  // the empty record that begins a pass
    std::vector<uint8_t> body;
    const std::string key = "hard_state", value = "a meta record's bytes";
    broker::lmdb::AppendJournalOp(&body, broker::lmdb::kJournalPut, broker::lmdb::kMetaDb,
                                  MDB_val{key.size(), const_cast<char*>(key.data())}, value.size());
    body.insert(body.end(), value.begin(), value.end());
    ORDO_FUZZ_CHECK_OK(journal->Append(body));
    ORDO_FUZZ_CHECK_OK(journal->Sync());
    snapshot("synced-pass");
    // A record written after the sync, whose header says two were synced.
    broker::lmdb::AppendJournalOp(&body, broker::lmdb::kJournalDel, broker::lmdb::kIndexDb,
                                  MDB_val{key.size(), const_cast<char*>(key.data())}, 0);
    ORDO_FUZZ_CHECK_OK(journal->Append(body));
    snapshot("unsynced-tail");
    // The next pass over the same file: leftovers of the old one behind it.
    journal->Restart(0x5eee);
    ORDO_FUZZ_CHECK_OK(journal->Append({}));
    snapshot("second-pass");
  }
  std::remove(path.c_str());
  ::rmdir(dir);
  return seeds;
}

}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> input(data, size);
  ordo::fuzz::Replay(input);
  ordo::fuzz::Replay(ordo::fuzz::WithMatchingChecksums(input));
  return 0;
}
