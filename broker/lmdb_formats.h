// The on-disk formats of what LmdbStore keeps in LMDB (meta keys, the
// offset index, the compacted view, the retention, base and journal
// records), each with its version and beside its reader, and the LMDB
// helpers the store and its scrub share. Internal to broker/.
#pragma once

#include <lmdb.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "broker/codec.h"
#include "broker/status.h"
#include "paxos/applied_state.h"

namespace ordo::broker::lmdb {

inline constexpr char kHardStateKey[] = "hard_state";

inline constexpr char kRetainedKey[] = "retained";  // first instance/offset, log bytes, snapshot handle
inline constexpr char kJournalKey[] = "journal";    // the journal generation that follows this commit
inline constexpr char kBaseKey[] = "base";          // the applied state at first_instance - 1
inline constexpr uint16_t kBaseFormatVersion = 1;

inline constexpr uint16_t kJournalMetaVersion = 1;

inline constexpr uint16_t kRetainedFormatVersion = 1;

}  // namespace ordo::broker::lmdb

namespace ordo::broker {
// Where the log starts (meta "retained").
struct Retained {
  uint64_t first_instance = 1;
  uint64_t first_offset = 0;
  uint64_t log_bytes = 0;
  SnapshotHandle snapshot;
};
}  // namespace ordo::broker

namespace ordo::broker::lmdb {

// The index record: CRC32C (4, LE) over the rest, version (u16), the first
// offset (u64; version 2 on: the key, so the CRC covers it), instance
// (u64), appended (u32), the number of skipped messages (u32) and their
// indexes in the record (u32 each), then (version 3) the stream's chain
// before and after the instance (32 bytes each). All LE. Versions 1 and 2
// (written before) are still read; they carry no chain.
inline constexpr uint16_t kIndexFormatVersion = 3;

inline void PutBigEndian(uint64_t v, unsigned char out[8]) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<unsigned char>(v & 0xff);
    v >>= 8;
  }
}

inline uint64_t GetBigEndian(const void* p) {
  const auto* b = static_cast<const unsigned char*>(p);
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | b[i];
  return v;
}

template <typename T>
void PutLe(std::string* s, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

template <typename T>
T GetLe(const unsigned char* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(p[i]) << (8 * i));
  return v;
}

struct IndexRecord {
  uint64_t first_offset = 0;  // the key
  uint64_t instance = 0;
  uint32_t appended = 0;
  std::vector<uint32_t> skipped;
  bool has_chain = false;  // version 3
  paxos::ChainValue chain_before;
  paxos::ChainValue chain;
};

std::string EncodeIndex(const paxos::AppliedInstance& a);

// Whether the messages of the log record `record` that the index record
// `idx` gives offsets take the chain from idx.chain_before to idx.chain: a
// record altered behind a valid CRC does not (kDiffers). kUnreadable: the
// log record fails its own checks, or is not the one `idx` names (damage
// of another kind). kMatches too for an index record without a chain
// (format 1 or 2).
enum class ChainCheck : uint8_t { kMatches, kDiffers, kUnreadable };
ChainCheck CheckRecordChain(std::span<const uint8_t> record, const IndexRecord& idx);

// Checks an index record under `key` (a big-endian first offset) and
// decodes it. Version 2 checks the key too; a record that fails is never
// used.
bool DecodeIndex(const MDB_val& key, const MDB_val& v, IndexRecord* out);

// The retention record: CRC32C (4, LE) over the rest, version (u16 = 1),
// first_instance, first_offset, log_bytes (u64 each), then the snapshot
// handle: instance, size (u64), checksum (u32). All LE.
std::string EncodeRetained(const Retained& r);

bool DecodeRetained(const MDB_val& v, Retained* out);

// The journal record in meta: CRC32C (4, LE) over the rest, version (u16 =
// 1), then the generation (u64) whose records continue this commit.
std::string EncodeJournalMeta(uint64_t generation);

bool DecodeJournalMeta(const MDB_val& v, uint64_t* generation);

// The base record in meta: CRC32C (4, LE) over the rest, version (u16 = 1),
// then a snapshot file (schemas/snapshot.fbs) without keyed messages: the
// applied state right before the first instance still in the log, from
// which the offset index is re-derived after damage (RebuildStep).
std::string EncodeBase(const paxos::AppliedSnapshot& state);

bool DecodeBase(const MDB_val& v, paxos::AppliedSnapshot* state);

// A compacted-view record (value in the `keys` database, under the message
// key), version 2: CRC32C (4, LE) over the key and everything after the
// CRC, then version (u16 = 2), offset, producer, sequence (u64 LE), then the
// payload. Covering the key means a record moved to another key by a
// flipped bit fails its check. Version 1 (written before) had no version
// field and a CRC over the rest only; it is still read.
inline constexpr uint16_t kKeyedFormatVersion = 2;

std::string EncodeKeyed(std::string_view key, uint64_t offset, uint64_t producer,
                        uint64_t sequence, std::string_view payload);

bool DecodeKeyed(const MDB_val& key, const MDB_val& v, StreamMessage* out);

// A journal record's body (broker/journal.h frames it): the operations of
// one write on the databases, in order, each an op code (u8), the database
// (u8, JournalDb), key length (u16 LE), value length (u32 LE), the key, then
// the value (none for a delete). Replayed into LMDB at open. The op codes
// are the format's version: format 1 is kJournalPut and kJournalDel; a later
// format takes new codes instead of changing these, so a journal an older
// broker left behind after a crash still replays.
inline constexpr uint8_t kJournalPut = 1;
inline constexpr uint8_t kJournalDel = 2;
inline constexpr size_t kJournalOpHeaderBytes = 1 + 1 + 2 + 4;
// The databases by number, as journal operations name them: never renumber.
enum JournalDb : uint8_t {
  kMetaDb = 0,
  kLogDb = 1,
  kIndexDb = 2,
  kKeysDb = 3,
  kKeyOffsetsDb = 4,
  kDbCount = 5
};

// Appends an operation's header and key to `body`; the caller appends the
// `value_bytes` of the value (or writes them in place).
void AppendJournalOp(std::vector<uint8_t>* body, uint8_t op, JournalDb db, const MDB_val& key,
                     size_t value_bytes);

struct JournalOp {
  uint8_t op = 0;
  JournalDb db = kMetaDb;
  MDB_val key{};
  MDB_val value{};  // points into the body
};
// Parses the operation at *at of `body` and moves *at past it. kMalformed:
// not one any version writes, damage (the record passed its CRC); kNewer: a
// well-formed operation whose code this version does not know (written by
// a newer broker, before a downgrade).
enum class JournalOpParse : uint8_t { kOk, kMalformed, kNewer };
JournalOpParse ParseJournalOp(std::span<const uint8_t> body, size_t* at, JournalOp* out);

std::string LmdbError(const char* what, int rc);

// LMDB's codes for a file whose pages or structure are not what LMDB wrote:
// damage, as opposed to an environment problem (permissions, a full disk).
bool IsLmdbDamage(int rc);
// An LMDB failure while opening: kDamaged for damage, kStorage otherwise.
Status OpenFailure(const std::string& what, int rc);
// LMDB keeps two meta pages and opens from the one with the higher
// transaction id; every commit writes the other one, so their ids are
// consecutive. An id that rotted lower makes LMDB open the older commit
// silently (and with it forget a promise or an accept that was synced):
// the ids must be `last` and `last - 1` (both 0 in a new file).
Status CheckMetaPages(const std::string& data_file, size_t page_size, size_t last);

}  // namespace ordo::broker::lmdb
