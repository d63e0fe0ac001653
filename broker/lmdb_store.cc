#include "broker/lmdb_store.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include "broker/codec.h"
#include "broker/crc32c.h"
#include "broker/data_dir.h"
#include "paxos/assert.h"

namespace ordo::broker {

namespace {

constexpr char kHardStateKey[] = "hard_state";
constexpr char kRetainedKey[] = "retained";  // first instance/offset, log bytes, snapshot handle
constexpr char kJournalKey[] = "journal";    // the journal generation that follows this commit
constexpr char kBaseKey[] = "base";          // the applied state at first_instance - 1
constexpr uint16_t kBaseFormatVersion = 1;
constexpr uint16_t kJournalMetaVersion = 1;
constexpr uint8_t kOpPut = 1;
constexpr uint8_t kOpDel = 2;
constexpr size_t kOpHeaderBytes = 1 + 1 + 2 + 4;  // op, db, key length (u16), value length (u32)
constexpr uint16_t kRetainedFormatVersion = 1;
// Version 2 adds the first offset (the key) to what the CRC covers; version
// 1 records (written before) are still read.
constexpr uint16_t kIndexFormatVersion = 2;

void PutBigEndian(uint64_t v, unsigned char out[8]) {
  for (int i = 7; i >= 0; --i) {
    out[i] = static_cast<unsigned char>(v & 0xff);
    v >>= 8;
  }
}

uint64_t GetBigEndian(const void* p) {
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
};

std::string EncodeIndex(const paxos::AppliedInstance& a) {
  std::string body;
  PutLe<uint16_t>(&body, kIndexFormatVersion);
  PutLe<uint64_t>(&body, a.first_offset.value());
  PutLe<uint64_t>(&body, a.instance.value());
  PutLe<uint32_t>(&body, a.appended);
  std::vector<uint32_t> skipped;
  for (size_t i = 0; i < a.results.size(); ++i) {
    if (a.results[i].outcome != paxos::PublishOutcome::kAppended) {
      skipped.push_back(static_cast<uint32_t>(i));
    }
  }
  PutLe<uint32_t>(&body, static_cast<uint32_t>(skipped.size()));
  for (uint32_t s : skipped) PutLe<uint32_t>(&body, s);
  std::string out;
  PutLe<uint32_t>(&out, Crc32c(body.data(), body.size()));
  return out + body;
}

// Checks an index record under `key` (a big-endian first offset) and
// decodes it. Version 2 checks the key too; a record that fails is never
// used.
bool DecodeIndex(const MDB_val& key, const MDB_val& v, IndexRecord* out) {
  if (key.mv_size != 8) return false;
  const uint64_t first_offset = GetBigEndian(key.mv_data);
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size < 4 + 2) return false;
  if (GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  const uint16_t version = GetLe<uint16_t>(p + 4);
  size_t at = 6;
  if (version == kIndexFormatVersion) {
    if (v.mv_size < at + 8 || GetLe<uint64_t>(p + at) != first_offset) return false;
    at += 8;
  } else if (version != 1) {
    return false;
  }
  const size_t fixed = at + 8 + 4 + 4;
  if (v.mv_size < fixed) return false;
  out->first_offset = first_offset;
  out->instance = GetLe<uint64_t>(p + at);
  out->appended = GetLe<uint32_t>(p + at + 8);
  const uint32_t n = GetLe<uint32_t>(p + at + 12);
  if (v.mv_size != fixed + size_t{n} * 4 || out->appended == 0 || out->instance == 0) return false;
  out->skipped.resize(n);
  for (uint32_t i = 0; i < n; ++i) out->skipped[i] = GetLe<uint32_t>(p + fixed + 4 * i);
  return true;
}

// The retention record: CRC32C (4, LE) over the rest, version (u16 = 1),
// first_instance, first_offset, log_bytes (u64 each), then the snapshot
// handle: instance, size (u64), checksum (u32). All LE.
std::string EncodeRetained(const Retained& r) {
  std::string body;
  PutLe<uint16_t>(&body, kRetainedFormatVersion);
  PutLe<uint64_t>(&body, r.first_instance);
  PutLe<uint64_t>(&body, r.first_offset);
  PutLe<uint64_t>(&body, r.log_bytes);
  PutLe<uint64_t>(&body, r.snapshot.instance);
  PutLe<uint64_t>(&body, r.snapshot.size);
  PutLe<uint32_t>(&body, r.snapshot.checksum);
  std::string out;
  PutLe<uint32_t>(&out, Crc32c(body.data(), body.size()));
  return out + body;
}

bool DecodeRetained(const MDB_val& v, Retained* out) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size != 4 + 2 + 8 * 5 + 4) return false;
  if (GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  if (GetLe<uint16_t>(p + 4) != kRetainedFormatVersion) return false;
  out->first_instance = GetLe<uint64_t>(p + 6);
  out->first_offset = GetLe<uint64_t>(p + 14);
  out->log_bytes = GetLe<uint64_t>(p + 22);
  out->snapshot.instance = GetLe<uint64_t>(p + 30);
  out->snapshot.size = GetLe<uint64_t>(p + 38);
  out->snapshot.checksum = GetLe<uint32_t>(p + 46);
  return true;
}

// The journal record in meta: CRC32C (4, LE) over the rest, version (u16 =
// 1), then the generation (u64) whose records continue this commit.
std::string EncodeJournalMeta(uint64_t generation) {
  std::string body;
  PutLe<uint16_t>(&body, kJournalMetaVersion);
  PutLe<uint64_t>(&body, generation);
  std::string out;
  PutLe<uint32_t>(&out, Crc32c(body.data(), body.size()));
  return out + body;
}

bool DecodeJournalMeta(const MDB_val& v, uint64_t* generation) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size != 4 + 2 + 8) return false;
  if (GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  if (GetLe<uint16_t>(p + 4) != kJournalMetaVersion) return false;
  *generation = GetLe<uint64_t>(p + 6);
  return true;
}

// The base record in meta: CRC32C (4, LE) over the rest, version (u16 = 1),
// then a snapshot file (schemas/snapshot.fbs) without keyed messages: the
// applied state right before the first instance still in the log, from
// which the offset index is re-derived after damage (RebuildStep).
std::string EncodeBase(const paxos::AppliedSnapshot& state) {
  std::string body;
  PutLe<uint16_t>(&body, kBaseFormatVersion);
  body += EncodeSnapshotFile(state, {});
  std::string out;
  PutLe<uint32_t>(&out, Crc32c(body.data(), body.size()));
  return out + body;
}

bool DecodeBase(const MDB_val& v, paxos::AppliedSnapshot* state) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size < 4 + 2 || GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  if (GetLe<uint16_t>(p + 4) != kBaseFormatVersion) return false;
  // The snapshot buffer must be aligned for FlatBuffers: copy it.
  const std::string file(reinterpret_cast<const char*>(p + 6), v.mv_size - 6);
  return DecodeSnapshotFile(AsBytes(file), state, nullptr).ok();
}

// A compacted-view record (value in the `keys` database, under the message
// key), version 2: CRC32C (4, LE) over the key and everything after the
// CRC, then version (u16 = 2), offset, producer, sequence (u64 LE), then the
// payload. Covering the key means a record moved to another key by a
// flipped bit fails its check. Version 1 (written before) had no version
// field and a CRC over the rest only; it is still read.
constexpr uint16_t kKeyedFormatVersion = 2;

std::string EncodeKeyed(std::string_view key, uint64_t offset, uint64_t producer,
                        uint64_t sequence, std::string_view payload) {
  std::string body;
  PutLe<uint16_t>(&body, kKeyedFormatVersion);
  PutLe<uint64_t>(&body, offset);
  PutLe<uint64_t>(&body, producer);
  PutLe<uint64_t>(&body, sequence);
  body += payload;
  std::string out;
  PutLe<uint32_t>(&out, Crc32cExtend(Crc32c(key), body.data(), body.size()));
  return out + body;
}

bool DecodeKeyed(const MDB_val& key, const MDB_val& v, StreamMessage* out) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size < 4) return false;
  const uint32_t crc = GetLe<uint32_t>(p);
  size_t at = 0;
  if (v.mv_size >= 4 + 2 + 24 && GetLe<uint16_t>(p + 4) == kKeyedFormatVersion &&
      crc == Crc32cExtend(Crc32c(key.mv_data, key.mv_size), p + 4, v.mv_size - 4)) {
    at = 6;
  } else if (v.mv_size >= 4 + 24 && crc == Crc32c(p + 4, v.mv_size - 4)) {
    at = 4;  // version 1
  } else {
    return false;
  }
  out->offset = GetLe<uint64_t>(p + at);
  out->producer = GetLe<uint64_t>(p + at + 8);
  out->sequence = GetLe<uint64_t>(p + at + 16);
  out->payload.assign(reinterpret_cast<const char*>(p + at + 24), v.mv_size - at - 24);
  out->key.assign(static_cast<const char*>(key.mv_data), key.mv_size);
  return true;
}

std::string LmdbError(const char* what, int rc) {
  return std::string(what) + ": " + mdb_strerror(rc);
}

}  // namespace

namespace {

// LMDB's codes for a file whose pages or structure are not what LMDB wrote:
// damage, as opposed to an environment problem (permissions, a full disk).
bool IsLmdbDamage(int rc) {
  return rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID ||
         rc == MDB_VERSION_MISMATCH || rc == MDB_BAD_TXN || rc == MDB_BAD_VALSIZE ||
         rc == MDB_INCOMPATIBLE;
}

// An LMDB failure while opening: kDamaged for damage, kStorage otherwise.
Status OpenFailure(const std::string& what, int rc) {
  const std::string message = LmdbError(what.c_str(), rc);
  return IsLmdbDamage(rc) ? Status::Damaged(message) : Status::Storage(message);
}

}  // namespace

namespace {
// LMDB keeps two meta pages and opens from the one with the higher
// transaction id; every commit writes the other one, so their ids are
// consecutive. An id that rotted lower makes LMDB open the older commit
// silently (and with it forget a promise or an accept that was synced):
// the ids must be `last` and `last - 1` (both 0 in a new file).
Status CheckMetaPages(const std::string& data_file, size_t page_size, size_t last) {
  // The page header (16 bytes) and MDB_meta up to mm_txnid: magic, version,
  // address, map size, two MDB_db (48 bytes each), last page.
  constexpr size_t kTxnIdAt = 16 + 4 + 4 + 8 + 8 + 2 * 48 + 8;
  constexpr uint32_t kMagic = 0xBEEFC0DE;
  const int fd = ::open(data_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::Storage(data_file + ": " + std::strerror(errno));
  uint64_t ids[2] = {0, 0};
  for (int k = 0; k < 2; ++k) {
    unsigned char page[kTxnIdAt + 8];
    const ssize_t n = ::pread(fd, page, sizeof(page), static_cast<off_t>(k * page_size));
    uint32_t magic = 0;
    if (n == static_cast<ssize_t>(sizeof(page))) std::memcpy(&magic, page + 16, sizeof(magic));
    if (magic != kMagic) {
      ::close(fd);
      return Status::Damaged(data_file + ": meta page " + std::to_string(k) +
                             " fails its check (bad magic)");
    }
    std::memcpy(&ids[k], page + kTxnIdAt, sizeof(ids[k]));
  }
  ::close(fd);
  const uint64_t high = std::max(ids[0], ids[1]);
  const uint64_t low = std::min(ids[0], ids[1]);
  const bool consecutive = high == last && (high == 0 ? low == 0 : low == high - 1);
  if (!consecutive) {
    return Status::Damaged(data_file + ": its meta pages name transactions " +
                           std::to_string(ids[0]) + " and " + std::to_string(ids[1]) +
                           " (opened at " + std::to_string(last) +
                           "): one of them rotted, and LMDB may have opened an older commit");
  }
  return Status::Ok();
}
}  // namespace

Status LmdbStore::Open(const std::string& dir, uint64_t map_size_bytes,
                       std::unique_ptr<LmdbStore>* out) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::Storage("data_dir " + dir + ": " + std::strerror(errno));
  }
  std::unique_ptr<LmdbStore> s(new LmdbStore());
  int rc = mdb_env_create(&s->env_);
  if (rc != 0) return Status::Storage(LmdbError("mdb_env_create", rc));
  // Spelled out: map size (an upper bound on the file, not an allocation),
  // three named databases, and flags 0 = durable commits with fsync, a
  // read-only map (stray writes through a pointer fault instead of
  // corrupting), and a lock file in the directory.
  if ((rc = mdb_env_set_mapsize(s->env_, map_size_bytes)) != 0 ||
      (rc = mdb_env_set_maxdbs(s->env_, 5)) != 0 ||
      (rc = mdb_env_set_maxreaders(s->env_, 16)) != 0) {
    return Status::Storage(LmdbError("configuring LMDB", rc));
  }
  const std::string data_file = dir + "/data.mdb";
  if ((rc = mdb_env_open(s->env_, dir.c_str(), MDB_NOTLS, 0644)) != 0) {
    return OpenFailure("opening LMDB in " + dir, rc);
  }
  // A data.mdb shorter than the pages its meta page names was truncated:
  // reading a page past its end through the map would kill the process
  // (SIGBUS), so it is refused before any page is read.
  {
    MDB_envinfo info{};
    MDB_stat stat{};
    struct stat st {};
    if (mdb_env_info(s->env_, &info) == 0 && mdb_env_stat(s->env_, &stat) == 0 &&
        ::stat(data_file.c_str(), &st) == 0) {
      const uint64_t needed = (uint64_t{info.me_last_pgno} + 1) * stat.ms_psize;
      if (static_cast<uint64_t>(st.st_size) < needed) {
        return Status::Damaged(data_file + " is " + std::to_string(st.st_size) +
                               " bytes, but its pages reach byte " + std::to_string(needed) +
                               ": the file was truncated");
      }
      if (Status ms = CheckMetaPages(data_file, stat.ms_psize, info.me_last_txnid); !ms.ok()) {
        return ms;
      }
    }
  }
  MDB_txn* txn = nullptr;
  if ((rc = mdb_txn_begin(s->env_, nullptr, 0, &txn)) != 0) {
    return OpenFailure("mdb_txn_begin", rc);
  }
  auto fail = [&](Status status) {
    mdb_txn_abort(txn);
    return status;
  };
  if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta_)) != 0 ||
      (rc = mdb_dbi_open(txn, "log", MDB_CREATE, &s->log_)) != 0 ||
      (rc = mdb_dbi_open(txn, "index", MDB_CREATE, &s->index_)) != 0 ||
      (rc = mdb_dbi_open(txn, "keys", MDB_CREATE, &s->keys_)) != 0 ||
      (rc = mdb_dbi_open(txn, "key_offsets", MDB_CREATE, &s->key_offsets_)) != 0) {
    return fail(OpenFailure("opening databases in " + data_file, rc));
  }
  // Whether the store holds anything the protocol relies on: then every
  // meta record must be there.
  bool holds_data = false;
  {
    MDB_stat st{};
    for (MDB_dbi dbi : {s->meta_, s->log_, s->index_, s->keys_}) {
      if ((rc = mdb_stat(txn, dbi, &st)) != 0) return fail(OpenFailure("mdb_stat", rc));
      holds_data |= st.ms_entries > 0;
    }
  }
  // The journal: what was made durable after LMDB's last commit is applied
  // first, so everything below reads the state the broker acknowledged.
  // Without a generation in meta (a new environment) nothing is replayed:
  // a journal file left from an earlier life must not leak into this one.
  const std::string journal_path = dir + "/journal";
  {
    MDB_val jk{sizeof(kJournalKey) - 1, const_cast<char*>(kJournalKey)}, jv;
    uint64_t generation = 0;
    rc = mdb_get(txn, s->meta_, &jk, &jv);
    if (rc == 0 && !DecodeJournalMeta(jv, &generation)) {
      return fail(Status::Damaged("the journal record in " + data_file +
                                  " fails its check: which journal writes were acknowledged "
                                  "is unknown"));
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return fail(OpenFailure("reading the journal record", rc));
    // A generation in meta means the journal may hold acknowledged writes:
    // a missing or shortened file is then damage, not a fresh start.
    const bool known = rc == 0;
    if (!known && holds_data) {
      return fail(Status::Damaged(data_file + " holds data but no journal record: the journal "
                                  "writes after its last commit cannot be found"));
    }
    if (Status js = Journal::Open(journal_path, kJournalFileBytes, /*create=*/!known,
                                  &s->journal_);
        !js.ok()) {
      return fail(known && !std::filesystem::exists(journal_path)
                      ? Status::Damaged("the journal " + journal_path + " is missing, yet " +
                                        data_file + " names a journal generation: it may have "
                                        "held acknowledged writes")
                      : Status::Storage(js.message()));
    }
    if (known && s->journal_->size() < kJournalFileBytes) {
      return fail(Status::Damaged("the journal " + journal_path + " is " +
                                  std::to_string(s->journal_->size()) + " bytes, shorter than the " +
                                  std::to_string(kJournalFileBytes) +
                                  " it was created with: it was truncated, and acknowledged "
                                  "writes may be missing"));
    }
    uint64_t next = 0;
    if (known) {
      Status rs = s->journal_->Replay(
          generation,
          [&](std::span<const uint8_t> body) { return s->ApplyJournalRecord(txn, body); },
          &s->journal_replayed_);
      if (!rs.ok()) return fail(rs);
      // The pass after this one already began: LMDB lost the commit that
      // named it (it went back to an older meta page), and with it writes
      // that pass's records do not repeat.
      if (s->journal_->StartsPass(generation + 1)) {
        return fail(Status::Damaged(
            data_file + " names journal generation " + std::to_string(generation) +
            ", but the journal already holds generation " + std::to_string(generation + 1) +
            ": LMDB lost its last commit"));
      }
      next = generation + 1;
    } else {
      next = std::mt19937_64(std::random_device{}())();
    }
    const std::string meta = EncodeJournalMeta(next);
    MDB_val mv{meta.size(), const_cast<char*>(meta.data())};
    if ((rc = mdb_put(txn, s->meta_, &jk, &mv, 0)) != 0) {
      return fail(OpenFailure("writing the journal record", rc));
    }
    s->journal_->Restart(next);
  }
  // Hard state.
  MDB_val k{sizeof(kHardStateKey) - 1, const_cast<char*>(kHardStateKey)};
  MDB_val v;
  rc = mdb_get(txn, s->meta_, &k, &v);
  if (rc == 0) {
    const DecodeStatus d = DecodeMetaRecord(
        {static_cast<const uint8_t*>(v.mv_data), v.mv_size}, &s->hard_state_);
    if (!d.ok()) {
      // Without its promise an acceptor could vote twice.
      return fail(Status::Damaged("the hard state in " + data_file + " fails its check (" +
                                  d.ToString() + "): this broker's promise is unknown"));
    }
  } else if (rc != MDB_NOTFOUND) {
    return fail(OpenFailure("reading the hard state", rc));
  }
  const bool no_hard_state = rc == MDB_NOTFOUND;
  // What is retained, and the snapshot the log continues from.
  Retained retained;
  MDB_val rk{sizeof(kRetainedKey) - 1, const_cast<char*>(kRetainedKey)};
  rc = mdb_get(txn, s->meta_, &rk, &v);
  if (rc == 0 && !DecodeRetained(v, &retained)) {
    return fail(Status::Damaged("the retention record in " + data_file +
                                " fails its check: where the log starts is unknown"));
  }
  if (rc != 0 && rc != MDB_NOTFOUND) return fail(OpenFailure("reading the retention record", rc));
  const bool no_retained = rc == MDB_NOTFOUND;
  s->dir_ = dir;
  s->first_instance_ = paxos::Instance(retained.first_instance);
  s->first_offset_ = retained.first_offset;
  s->log_bytes_ = retained.log_bytes;
  s->snapshot_handle_ = retained.snapshot;
  if (retained.snapshot.instance != 0) {
    std::string file;
    paxos::AppliedSnapshot state;
    Status fs = ReadSnapshotFile(s->SnapshotPath(retained.snapshot), retained.snapshot, &file);
    DecodeStatus d = fs.ok() ? DecodeSnapshotFile(AsBytes(file), &state, nullptr) : DecodeStatus();
    if (!fs.ok() || !d.ok() || state.instance.value() != retained.snapshot.instance) {
      return fail(Status::Damaged(
          (!fs.ok() ? fs.message()
           : !d.ok() ? "the snapshot file fails to decode: " + d.ToString()
                     : std::string("the snapshot file holds another instance")) +
          " (the snapshot the store names, at instance " +
          std::to_string(retained.snapshot.instance) + ")"));
    }
    s->snapshot_state_ = std::move(state);
  }
  // The base the index is re-derived from. Unknown (the index below the
  // latest snapshot can then not be rebuilt) when the record fails its
  // check, or in a store truncated before base records existed.
  {
    MDB_val bk{sizeof(kBaseKey) - 1, const_cast<char*>(kBaseKey)}, bv;
    rc = mdb_get(txn, s->meta_, &bk, &bv);
    paxos::AppliedSnapshot base;
    if (rc == 0 && DecodeBase(bv, &base) &&
        base.instance.value() + 1 == retained.first_instance) {
      s->base_ = std::move(base);
    } else if (rc == MDB_NOTFOUND && retained.first_instance == 1) {
      s->base_ = paxos::AppliedSnapshot{};  // the log starts at the beginning
    } else if (rc != 0 && rc != MDB_NOTFOUND) {
      return fail(OpenFailure("reading the base record", rc));
    }
  }
  // Last instance and head offset.
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(txn, s->log_, &cur)) != 0) return fail(OpenFailure("mdb_cursor_open", rc));
  rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  mdb_cursor_close(cur);
  if (rc == 0 && k.mv_size != 8) {
    return fail(Status::Damaged("the last key of the log in " + data_file + " is not an instance"));
  }
  if (rc != 0 && rc != MDB_NOTFOUND) return fail(OpenFailure("reading the log", rc));
  if (rc == 0) s->last_instance_ = paxos::Instance(GetBigEndian(k.mv_data));
  const bool no_log = rc == MDB_NOTFOUND;
  // A log, a retention record or a snapshot without a hard state: the
  // record that holds this node's promise is gone.
  if (no_hard_state && (!no_log || !no_retained)) {
    return fail(Status::Damaged(data_file + " holds a log but no hard state: this broker's "
                                "promise is unknown"));
  }
  // Every write of a log record writes the retention record too.
  if (no_retained && !no_log) {
    return fail(Status::Damaged(data_file + " holds a log but no retention record: where the "
                                "log starts, and its snapshot, are unknown"));
  }
  // A meta key this code never writes is a damaged (or renamed) one.
  {
    MDB_cursor* mc = nullptr;
    if ((rc = mdb_cursor_open(txn, s->meta_, &mc)) != 0) return fail(OpenFailure("mdb_cursor_open", rc));
    MDB_val mk, mv;
    std::string unknown;
    for (rc = mdb_cursor_get(mc, &mk, &mv, MDB_FIRST); rc == 0 && unknown.empty();
         rc = mdb_cursor_get(mc, &mk, &mv, MDB_NEXT)) {
      const std::string_view name(static_cast<const char*>(mk.mv_data), mk.mv_size);
      if (name != kHardStateKey && name != kRetainedKey && name != kJournalKey && name != kBaseKey) {
        unknown.assign(name.begin(), name.end());
      }
    }
    mdb_cursor_close(mc);
    if (!unknown.empty()) {
      return fail(Status::Damaged(data_file + " holds a meta record this broker never writes ('" +
                                  unknown + "'): a damaged key"));
    }
  }
  if ((rc = mdb_cursor_open(txn, s->index_, &cur)) != 0) {
    return fail(OpenFailure("mdb_cursor_open", rc));
  }
  // The head: the end of the last index record that passes its check. One
  // that fails is reported (the index is rebuilt); the broker also checks
  // the head against the replayed log.
  rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  for (int back = 0; rc == 0 && back < 64; ++back) {
    IndexRecord r;
    if (DecodeIndex(k, v, &r)) {
      s->next_offset_ = r.first_offset + r.appended;
      break;
    }
    s->NoteDamage(Damage{Damage::Kind::kIndexRecord, 0,
                         k.mv_size == 8 ? GetBigEndian(k.mv_data) : 0,
                         "offset index: the record at its end fails its check"});
    rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return fail(OpenFailure("reading the offset index", rc));
  s->opened_empty_ = no_hard_state && no_log && no_retained;
  s->next_offset_ = std::max(s->next_offset_, s->first_offset_);
  if ((rc = mdb_txn_commit(txn)) != 0) return OpenFailure("mdb_txn_commit", rc);
  *out = std::move(s);
  return Status::Ok();
}

namespace {

// Runs `body` in a child process (fork) that appends report lines to the
// string it is given (sent at its end, or when it calls `flush`: what
// must reach the parent even if the child dies) and returns its exit
// status: LMDB trusts its pages,
// and damaged ones can make it read or write out of bounds, so a crash
// there is a finding (kDamaged), never the broker's death. Nothing else of
// the broker runs in the child. Bounded in time: a damaged page can make a
// walk loop; a healthy one reads the file once.
using ChildBody = std::function<int(std::string* report, const std::function<void()>& flush)>;
Status RunInChild(const std::string& what, uint64_t file_bytes, const ChildBody& body,
                  std::string* report, int* code) {
  report->clear();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::Storage(std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return Status::Storage(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::close(fds[0]);
    std::string out;
    auto flush = [&] {
      const char* p = out.data();
      size_t n = out.size();
      while (n > 0) {
        const ssize_t w = ::write(fds[1], p, n);
        if (w <= 0) break;
        p += w;
        n -= static_cast<size_t>(w);
      }
      out.clear();
    };
    const int status = body(&out, flush);
    flush();
    ::_exit(status);
  }
  ::close(fds[1]);
  char buf[4096];
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::seconds(60) + std::chrono::seconds(file_bytes >> 26);
  bool timed_out = false;
  while (true) {
    pollfd p{fds[0], POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue;
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    report->append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  // A timeout or a SIGKILL (the OOM killer) is not proof of damage: a slow
  // disk or a busy machine must not cost the node its data. It refuses to
  // start (exit status 3) and says so; a crash on a page (SIGSEGV, SIGBUS)
  // is damage.
  if (timed_out) {
    return Status::Storage(what + " did not end within " +
                           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                              deadline - start).count()) +
                           " s: a slow or failing disk, or damaged pages that loop; start "
                           "again, or move the data directory aside to rejoin as a lost disk");
  }
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
    return Status::Storage("the process " + what + " was killed (SIGKILL: out of memory?); "
                           "start again");
  }
  if (WIFSIGNALED(status)) {
    return Status::Damaged(what + " killed the process doing it (signal " +
                           std::to_string(WTERMSIG(status)) + "): its pages are damaged");
  }
  *code = WIFEXITED(status) ? WEXITSTATUS(status) : 3;
  return Status::Ok();
}

// Names the pages of `data_file` that are all zeros (the first three), for a message about damage LMDB reports without
// a page number: "; page 7 (bytes 28672 to 32767) is all zeros". Empty when
// there is none (or the geometry is unknown).
std::string ZeroedPages(const std::string& data_file, uint64_t page_bytes, uint64_t last_page) {
  if (page_bytes == 0) {  // LMDB could not read its meta pages: those, at the system's page size
    page_bytes = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    last_page = 1;
  }
  if (page_bytes == 0 || page_bytes > (1u << 16)) return "";
  const int fd = ::open(data_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::vector<char> page(page_bytes);
  std::vector<uint64_t> zeroed;
  for (uint64_t p = 0; p <= last_page && zeroed.size() < 3; ++p) {
    const ssize_t n = ::pread(fd, page.data(), page_bytes, static_cast<off_t>(p * page_bytes));
    if (n != static_cast<ssize_t>(page_bytes)) break;
    if (std::all_of(page.begin(), page.end(), [](char c) { return c == 0; })) zeroed.push_back(p);
  }
  ::close(fd);
  std::string out;
  for (uint64_t p : zeroed) {
    out += std::string(p < 2 ? "; meta page " : "; page ") + std::to_string(p) + " (bytes " +
           std::to_string(p * page_bytes) + " to " + std::to_string((p + 1) * page_bytes - 1) +
           ") is all zeros";
  }
  return out;
}

// The databases of the environment, in the order Scrub reads them.
constexpr const char* kDatabases[] = {"log", "index", "keys", "key_offsets", "meta"};

}  // namespace

Status LmdbStore::Scrub(const std::string& dir, uint64_t map_size_bytes, ScrubReport* out) {
  *out = ScrubReport{};
  const std::string data_file = dir + "/data.mdb";
  struct stat st {};
  if (::stat(data_file.c_str(), &st) != 0) return Status::Ok();  // nothing stored yet
  // The child: read-only, no lock file (the parent holds the directory),
  // its own environment. It reports lines "log N", "derived", "pages",
  // "records N", "lmdb TEXT"; exit 2 for damage, 3 for another failure.
  auto body = [&](std::string* report, const std::function<void()>& flush) {
    MDB_env* env = nullptr;
    int rc = mdb_env_create(&env);
    if (rc == 0) rc = mdb_env_set_mapsize(env, map_size_bytes);
    if (rc == 0) rc = mdb_env_set_maxdbs(env, 5);
    if (rc == 0) rc = mdb_env_open(env, dir.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
    MDB_txn* txn = nullptr;
    if (rc == 0) rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
    if (rc != 0) {
      *report += "lmdb opening: " + std::string(mdb_strerror(rc)) + "\n";
      return IsLmdbDamage(rc) ? 2 : 3;
    }
    // The file must hold every page LMDB's meta names (else SIGBUS below).
    MDB_envinfo info{};
    MDB_stat est{};
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &est) != 0) {
      *report += "lmdb reading its meta page\n";
      return 3;
    }
    *report += "geometry " + std::to_string(est.ms_psize) + " " +
               std::to_string(info.me_last_pgno) + "\n";
    flush();  // for a message naming a zeroed page, should a page kill this process
    if (static_cast<uint64_t>(st.st_size) < (uint64_t{info.me_last_pgno} + 1) * est.ms_psize) {
      *report += "lmdb the file is shorter than its pages\n";
      return 2;
    }
    uint64_t records = 0;
    size_t listed = 0;
    bool derived = false;
    bool pages = false;
    // Returns an exit status when the walk must stop there, -1 otherwise.
    auto walk = [&](const char* name,
                    const std::function<void(const MDB_val&, const MDB_val&)>& check) -> int {
      MDB_dbi dbi;
      int r = mdb_dbi_open(txn, name, 0, &dbi);
      if (r == MDB_NOTFOUND) return -1;
      const std::string db(name);
      const bool derived_db = db != "log" && db != "meta";
      MDB_cursor* cur = nullptr;
      if (r == 0) r = mdb_cursor_open(txn, dbi, &cur);
      MDB_val k, v;
      std::string previous;
      bool first = true;
      if (r == 0) {
        for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
          // Keys out of LMDB's order (memcmp, then length): a flipped bit
          // in a key, which makes the tree's searches unreliable.
          const std::string key(static_cast<const char*>(k.mv_data), k.mv_size);
          if (!first && !(previous < key)) {
            if (!derived_db) {
              *report += "lmdb keys out of order in the " + db + " database\n";
              return 2;
            }
            derived = pages = true;
          }
          first = false;
          previous = key;
          ++records;
          // The tree's own search must find what the walk finds: a damaged
          // branch page misleads searches (a record the loop reads by key
          // would look missing: an accepted value left out of a promise).
          MDB_val found{};
          MDB_val probe = k;
          if (mdb_get(txn, dbi, &probe, &found) != 0 || found.mv_size != v.mv_size ||
              std::memcmp(found.mv_data, v.mv_data, v.mv_size) != 0) {
            if (!derived_db) {
              *report += "lmdb a key of the " + db + " database that a search does not find\n";
              return 2;
            }
            derived = pages = true;  // rebuilt from the log
          }
          check(k, v);
        }
      }
      if (r != 0 && r != MDB_NOTFOUND) {
        // A derived tree LMDB cannot read is rebuilt like a damaged record
        // (the rewrite keeps what it can read of it).
        if (derived_db && IsLmdbDamage(r)) {
          derived = pages = true;
          // LMDB failed the transaction: the next database is read in a new one.
          mdb_txn_abort(txn);
          txn = nullptr;
          if ((r = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn)) != 0) {
            *report += "lmdb reading " + db + ": " + mdb_strerror(r) + "\n";
            return 3;
          }
          return -1;
        }
        *report += "lmdb reading " + db + ": " + mdb_strerror(r) + "\n";
        return IsLmdbDamage(r) ? 2 : 3;
      }
      return -1;
    };
    int status = walk("log", [&](const MDB_val& k, const MDB_val& v) {
      paxos::Entry e;
      const bool ok = k.mv_size == 8 &&
                      DecodeLogRecord({static_cast<const uint8_t*>(v.mv_data), v.mv_size}, &e).ok() &&
                      e.instance.value() == GetBigEndian(k.mv_data);
      if (!ok && k.mv_size != 8) {
        *report += "lmdb a log key that is not an instance\n";
        listed = SIZE_MAX;
      } else if (!ok && listed++ < kScrubListMax) {
        *report += "log " + std::to_string(GetBigEndian(k.mv_data)) + "\n";
      }
    });
    if (status >= 0) return status;
    if (listed == SIZE_MAX) return 2;
    for (const char* db : {"index", "keys", "key_offsets"}) {
      const std::string name(db);
      status = walk(db, [&](const MDB_val& k, const MDB_val& v) {
        if (name == "index") {
          IndexRecord r;
          derived |= !DecodeIndex(k, v, &r);
        } else if (name == "keys") {
          StreamMessage m;
          derived |= !DecodeKeyed(k, v, &m);
        } else {
          derived |= k.mv_size != 8 || v.mv_size == 0;
        }
      });
      if (status >= 0) return status;
    }
    // Checked by Open, record by record.
    if ((status = walk("meta", [](const MDB_val&, const MDB_val&) {})) >= 0) return status;
    // LMDB's free list (database 0): a page number in it that is out of
    // range, or a list longer than its record, would have a later write
    // reuse a page in use (or one past the file); a page of it that cannot
    // be read would fail the next write. Nothing in it is data: the
    // rewrite builds a new one.
    MDB_cursor* fc = nullptr;
    if (mdb_cursor_open(txn, 0, &fc) == 0) {
      MDB_val k, v;
      int r = mdb_cursor_get(fc, &k, &v, MDB_FIRST);
      for (; r == 0 && !pages; r = mdb_cursor_get(fc, &k, &v, MDB_NEXT)) {
        size_t count = 0;
        if (v.mv_size >= sizeof(size_t)) std::memcpy(&count, v.mv_data, sizeof count);
        if (k.mv_size != sizeof(size_t) || v.mv_size < sizeof(size_t) ||
            count != v.mv_size / sizeof(size_t) - 1 || v.mv_size % sizeof(size_t) != 0) {
          pages = true;
          break;
        }
        for (size_t i = 1; i <= count; ++i) {
          size_t pgno = 0;
          std::memcpy(&pgno, static_cast<const char*>(v.mv_data) + i * sizeof(size_t), sizeof pgno);
          if (pgno < 2 || pgno > info.me_last_pgno) pages = true;
        }
      }
      if (r != 0 && r != MDB_NOTFOUND) pages = true;
      mdb_cursor_close(fc);
    }
    if (derived) *report += "derived\n";
    if (pages) *report += "pages\n";
    *report += "records " + std::to_string(records) + "\n";
    return 0;
  };
  std::string report;
  int code = 0;
  const Status run = RunInChild("reading " + data_file, static_cast<uint64_t>(st.st_size), body,
                                &report, &code);
  std::istringstream lines(report);
  std::string line;
  std::string lmdb;
  uint64_t page_bytes = 0, last_page = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("geometry ", 0) == 0) {
      std::istringstream(line.substr(9)) >> page_bytes >> last_page;
    } else if (line.rfind("log ", 0) == 0) {
      out->damaged_log.push_back(std::strtoull(line.c_str() + 4, nullptr, 10));
    } else if (line == "derived") {
      out->damaged_derived = true;
    } else if (line == "pages") {
      out->damaged_pages = true;
    } else if (line.rfind("records ", 0) == 0) {
      out->records = std::strtoull(line.c_str() + 8, nullptr, 10);
    } else if (line.rfind("lmdb ", 0) == 0) {
      lmdb = line.substr(5);
    }
  }
  // LMDB names no page in its errors (nor does a crash): a zeroed one is
  // named here.
  if (run.kind() == Status::Kind::kDamaged) {
    return Status::Damaged(run.message() + ZeroedPages(data_file, page_bytes, last_page));
  }
  if (!run.ok()) return run;
  if (code == 2) {
    return Status::Damaged(data_file + ": " + lmdb + ZeroedPages(data_file, page_bytes, last_page));
  }
  if (code != 0) return Status::Storage("checking " + data_file + ": " + (lmdb.empty() ? "failed" : lmdb));
  return Status::Ok();
}

Status LmdbStore::Rewrite(const std::string& dir, uint64_t map_size_bytes, uint64_t* records) {
  *records = 0;
  const std::string data_file = dir + "/data.mdb";
  const std::string scratch = dir + "/rewrite";
  std::error_code ec;
  std::filesystem::remove_all(scratch, ec);  // left by a crash during an earlier rewrite
  if (!std::filesystem::create_directory(scratch, ec)) {
    return Status::Storage("creating " + scratch + ": " + ec.message());
  }
  struct stat st {};
  if (::stat(data_file.c_str(), &st) != 0) {
    return Status::Storage(data_file + ": " + std::strerror(errno));
  }
  // The child copies every record of every database, as read, into a new
  // environment: LMDB builds its pages and free list afresh. A record that
  // fails its check stays as it is (the broker repairs or rebuilds it);
  // one LMDB refuses as a key (a damaged one of a derived database) is
  // left out. It reports "records N" or "lmdb TEXT".
  auto body = [&](std::string* report, const std::function<void()>&) {
    MDB_env* from = nullptr;
    MDB_env* to = nullptr;
    int rc = mdb_env_create(&from);
    if (rc == 0) rc = mdb_env_set_mapsize(from, map_size_bytes);
    if (rc == 0) rc = mdb_env_set_maxdbs(from, 5);
    if (rc == 0) rc = mdb_env_open(from, dir.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
    if (rc == 0) rc = mdb_env_create(&to);
    if (rc == 0) rc = mdb_env_set_mapsize(to, map_size_bytes);
    if (rc == 0) rc = mdb_env_set_maxdbs(to, 5);
    // Synced once at the end (mdb_env_sync), before the parent renames it.
    if (rc == 0) rc = mdb_env_open(to, scratch.c_str(), MDB_NOLOCK | MDB_NOSYNC, 0644);
    MDB_txn* rtxn = nullptr;
    if (rc == 0) rc = mdb_txn_begin(from, nullptr, MDB_RDONLY, &rtxn);
    if (rc != 0) {
      *report += "lmdb opening: " + std::string(mdb_strerror(rc)) + "\n";
      return IsLmdbDamage(rc) ? 2 : 3;
    }
    uint64_t copied = 0;
    for (const char* db : kDatabases) {
      const std::string name(db);
      const bool derived_db = name != "log" && name != "meta";
      MDB_dbi src;
      rc = mdb_dbi_open(rtxn, db, 0, &src);
      if (rc == MDB_NOTFOUND) continue;
      MDB_cursor* cur = nullptr;
      if (rc == 0) rc = mdb_cursor_open(rtxn, src, &cur);
      MDB_txn* wtxn = nullptr;
      MDB_dbi dst;
      if (rc == 0) rc = mdb_txn_begin(to, nullptr, 0, &wtxn);
      if (rc == 0) rc = mdb_dbi_open(wtxn, db, MDB_CREATE, &dst);
      // Committed every 64 MiB: a write transaction's dirty pages are bounded.
      uint64_t batch_bytes = 0;
      MDB_val k, v;
      int r = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc;
      for (; r == 0; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        rc = mdb_put(wtxn, dst, &k, &v, 0);
        if (rc == MDB_BAD_VALSIZE && derived_db) {
          rc = 0;
          continue;
        }
        if (rc != 0) break;
        ++copied;
        batch_bytes += k.mv_size + v.mv_size;
        if (batch_bytes >= (64u << 20)) {
          batch_bytes = 0;
          if ((rc = mdb_txn_commit(wtxn)) != 0 || (rc = mdb_txn_begin(to, nullptr, 0, &wtxn)) != 0) {
            wtxn = nullptr;
            break;
          }
        }
      }
      // What follows a page of a derived tree that LMDB cannot read is left
      // out: it is rebuilt from the log.
      if (rc == 0 && r != MDB_NOTFOUND && !(derived_db && IsLmdbDamage(r))) rc = r;
      if (r != 0 && r != MDB_NOTFOUND && rc == 0) {
        // LMDB failed the read transaction: the next database is read in a new one.
        mdb_txn_abort(rtxn);
        rtxn = nullptr;
        rc = mdb_txn_begin(from, nullptr, MDB_RDONLY, &rtxn);
      }
      if (rc == 0) {
        rc = mdb_txn_commit(wtxn);
      } else if (wtxn) {
        mdb_txn_abort(wtxn);
      }
      if (rc != 0) {
        *report += "lmdb copying the " + name + " database: " + mdb_strerror(rc) + "\n";
        return IsLmdbDamage(rc) ? 2 : 3;
      }
    }
    if ((rc = mdb_env_sync(to, 1)) != 0) {
      *report += "lmdb syncing the new file: " + std::string(mdb_strerror(rc)) + "\n";
      return 3;
    }
    mdb_env_close(to);
    *report += "records " + std::to_string(copied) + "\n";
    return 0;
  };
  std::string report;
  int code = 0;
  if (Status s = RunInChild("rewriting " + data_file, static_cast<uint64_t>(st.st_size), body,
                            &report, &code);
      !s.ok()) {
    std::filesystem::remove_all(scratch, ec);
    return s;
  }
  std::string lmdb;
  std::istringstream lines(report);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("records ", 0) == 0) *records = std::strtoull(line.c_str() + 8, nullptr, 10);
    if (line.rfind("lmdb ", 0) == 0) lmdb = line.substr(5);
  }
  if (code != 0) {
    std::filesystem::remove_all(scratch, ec);
    const std::string message = "rewriting " + data_file + ": " + (lmdb.empty() ? "failed" : lmdb);
    return code == 2 ? Status::Damaged(message) : Status::Storage(message);
  }
  // In place at once: the rename is atomic, and the directory entry is
  // synced (the new file's pages already are).
  if (::rename((scratch + "/data.mdb").c_str(), data_file.c_str()) != 0) {
    const std::string error = std::strerror(errno);
    std::filesystem::remove_all(scratch, ec);
    return Status::Storage("replacing " + data_file + ": " + error);
  }
  if (Status s = FsyncPath(dir, /*directory=*/true); !s.ok()) return s;
  std::filesystem::remove_all(scratch, ec);
  return Status::Ok();
}
LmdbStore::~LmdbStore() {
  // Not committed here: what it holds is in the journal, replayed on open.
  if (pending_) mdb_txn_abort(pending_);
  if (env_) mdb_env_close(env_);
}

MDB_dbi LmdbStore::Dbi(Db db) const {
  switch (db) {
    case kMetaDb: return meta_;
    case kLogDb: return log_;
    case kIndexDb: return index_;
    case kKeysDb: return keys_;
    case kKeyOffsetsDb: return key_offsets_;
    case kDbCount: break;
  }
  PAXOS_ASSERT(false && "unknown database");
  return meta_;
}

void LmdbStore::RecordOp(uint8_t op, Db db, const MDB_val& key, size_t value_bytes) {
  std::vector<uint8_t>& r = *record_;
  const size_t at = r.size();
  r.resize(at + kOpHeaderBytes + key.mv_size);
  uint8_t* p = r.data() + at;
  p[0] = op;
  p[1] = db;
  p[2] = static_cast<uint8_t>(key.mv_size & 0xff);
  p[3] = static_cast<uint8_t>(key.mv_size >> 8);
  for (int i = 0; i < 4; ++i) p[4 + i] = static_cast<uint8_t>((value_bytes >> (8 * i)) & 0xff);
  std::memcpy(p + kOpHeaderBytes, key.mv_data, key.mv_size);
}

int LmdbStore::Put(MDB_txn* txn, Db db, const MDB_val& key, const MDB_val& value) {
  MDB_val k = key, v = value;
  const int rc = mdb_put(txn, Dbi(db), &k, &v, 0);
  if (rc == 0 && record_) {
    RecordOp(kOpPut, db, key, value.mv_size);
    const auto* b = static_cast<const uint8_t*>(value.mv_data);
    record_->insert(record_->end(), b, b + value.mv_size);
  }
  return rc;
}

int LmdbStore::Del(MDB_txn* txn, Db db, const MDB_val& key) {
  MDB_val k = key;
  const int rc = mdb_del(txn, Dbi(db), &k, nullptr);
  if (rc == 0 && record_) RecordOp(kOpDel, db, key, 0);
  return rc;
}

Status LmdbStore::ApplyJournalRecord(MDB_txn* txn, std::span<const uint8_t> body) {
  size_t at = 0;
  while (at < body.size()) {
    // A record that passed its CRC yet does not parse was not written by
    // this code: damage.
    if (body.size() - at < kOpHeaderBytes) {
      return Status::Damaged("journal record: truncated operation");
    }
    const uint8_t* p = body.data() + at;
    const uint8_t op = p[0];
    const uint8_t db = p[1];
    const size_t klen = size_t{p[2]} | (size_t{p[3]} << 8);
    const size_t vlen = GetLe<uint32_t>(p + 4);
    if ((op != kOpPut && op != kOpDel) || db >= kDbCount ||
        body.size() - at - kOpHeaderBytes < klen + vlen || (op == kOpDel && vlen != 0)) {
      return Status::Damaged("journal record: malformed operation at byte " + std::to_string(at));
    }
    MDB_val k{klen, const_cast<uint8_t*>(p + kOpHeaderBytes)};
    MDB_val v{vlen, const_cast<uint8_t*>(p + kOpHeaderBytes + klen)};
    const int rc = op == kOpPut ? mdb_put(txn, Dbi(static_cast<Db>(db)), &k, &v, 0)
                                : mdb_del(txn, Dbi(static_cast<Db>(db)), &k, nullptr);
    if (rc != 0 && !(op == kOpDel && rc == MDB_NOTFOUND)) {
      return OpenFailure("replaying the journal", rc);
    }
    at += kOpHeaderBytes + klen + vlen;
  }
  return Status::Ok();
}

MDB_txn* LmdbStore::LoopRead(bool* owned) const {
  *owned = pending_ == nullptr;
  if (broken_) {
    last_error_ = "storage failed earlier; reads are refused";
    return nullptr;
  }
  return pending_ ? pending_ : BeginRead();
}

paxos::StoreCode LmdbStore::Broken(const std::string& what) {
  broken_ = true;
  last_error_ = what;
  return paxos::StoreCode::kIoError;
}

paxos::StoreCode LmdbStore::CommitPending() {
  if (broken_) return paxos::StoreCode::kIoError;
  if (pending_ == nullptr) return paxos::StoreCode::kOk;
  MDB_txn* txn = pending_;
  pending_ = nullptr;
  // The records of this pass are in LMDB once this commits; the next pass
  // gets a generation of its own.
  const uint64_t next = journal_->generation() + 1;
  const std::string meta = EncodeJournalMeta(next);
  MDB_val k{sizeof(kJournalKey) - 1, const_cast<char*>(kJournalKey)};
  MDB_val v{meta.size(), const_cast<char*>(meta.data())};
  int rc = mdb_put(txn, meta_, &k, &v, 0);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return Broken(LmdbError("writing the journal record", rc));
  }
  if ((rc = mdb_txn_commit(txn)) != 0) return Broken(LmdbError("mdb_txn_commit", rc));
  journal_->Restart(next);
  pending_first_instance_ = paxos::kNoInstance;
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::GetIn(MDB_txn* txn, paxos::Instance instance,
                                  paxos::Entry* out) const {
  std::span<const uint8_t> record;
  if (paxos::StoreCode code = LogRecordIn(txn, instance.value(), &record);
      code != paxos::StoreCode::kOk) {
    return code;
  }
  paxos::Entry e;
  const DecodeStatus d = DecodeLogRecord(record, &e);
  if (!d.ok() || e.instance != instance) return CorruptRecord(instance.value(), d);
  *out = std::move(e);
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::LogRecordIn(MDB_txn* txn, uint64_t instance,
                                        std::span<const uint8_t>* record) const {
  return RawLogRecord(txn, instance, record, &last_error_);
}

paxos::StoreCode LmdbStore::RawLogRecord(MDB_txn* txn, uint64_t instance,
                                         std::span<const uint8_t>* record,
                                         std::string* error) const {
  unsigned char key[8];
  PutBigEndian(instance, key);
  MDB_val k{8, key}, v;
  const int rc = mdb_get(txn, log_, &k, &v);
  if (rc == MDB_NOTFOUND) return paxos::StoreCode::kNotFound;
  if (rc != 0) {
    *error = LmdbError("mdb_get", rc);
    return paxos::StoreCode::kIoError;
  }
  *record = {static_cast<const uint8_t*>(v.mv_data), v.mv_size};
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::CorruptRecord(uint64_t instance, const DecodeStatus& d) const {
  return NoteDamage(Damage{Damage::Kind::kLogRecord, instance, 0,
                           "log record for instance " + std::to_string(instance) + ": " +
                               (d.ok() ? std::string("stored under the wrong key") : d.ToString())});
}

paxos::StoreCode LmdbStore::Get(paxos::Instance instance, paxos::Entry* out) const {
  bool owned = false;
  MDB_txn* txn = LoopRead(&owned);
  if (txn == nullptr) {
    last_error_ = "mdb_txn_begin failed";
    return paxos::StoreCode::kIoError;
  }
  const paxos::StoreCode code = GetIn(txn, instance, out);
  if (owned) EndRead(txn);
  return code;
}

paxos::StoreCode LmdbStore::Save(const paxos::HardState& hard_state,
                                 std::span<const paxos::Entry> entries) {
  return Commit(hard_state, entries, {});
}

paxos::StoreCode LmdbStore::Commit(const paxos::HardState& hard_state,
                                   std::span<const paxos::Entry> entries,
                                   std::span<const paxos::AppliedInstance> applied,
                                   Durability durability) {
  if (broken_) return paxos::StoreCode::kIoError;
  // Everything goes into the pending transaction (begun here when there is
  // none); a journaled write also into one journal record, built as it goes.
  if (pending_ == nullptr && BeginWrite(&pending_) != paxos::StoreCode::kOk) {
    pending_ = nullptr;
    return paxos::StoreCode::kIoError;
  }
  MDB_txn* txn = pending_;
  // Journaled only when small (see kJournalRecordMax): decided up front from
  // a bound, so a large write is encoded once, straight into LMDB's page.
  size_t bound = 256;
  for (const paxos::Entry& e : entries) {
    bound += 256 + (e.value ? e.value->ByteSize() + 32 * e.value->messages.size() : 0);
  }
  for (const paxos::AppliedInstance& a : applied) {
    bound += 128 + 8 * a.results.size();
    if (a.value == nullptr) continue;
    for (const paxos::ClientMessage& m : a.value->messages) {
      if (!m.key.empty()) bound += 192 + 2 * m.key.size() + m.payload.size();
    }
  }
  const bool journal = durability != Durability::kCommit && bound <= kJournalRecordMax &&
                       journal_->Fits(bound);
  record_ = journal ? journal_->StartRecord() : nullptr;
  int rc = 0;
  auto fail = [&](const char* what) {
    record_ = nullptr;
    pending_ = nullptr;
    mdb_txn_abort(txn);
    return Broken(LmdbError(what, rc));
  };
  if (hard_state != hard_state_) {
    const std::string meta = EncodeMetaRecord(hard_state);
    MDB_val k{sizeof(kHardStateKey) - 1, const_cast<char*>(kHardStateKey)};
    MDB_val v{meta.size(), const_cast<char*>(meta.data())};
    if ((rc = Put(txn, kMetaDb, k, v)) != 0) return fail("writing the hard state");
  }
  paxos::Instance last = last_instance_;
  uint64_t log_bytes = log_bytes_;
  for (const paxos::Entry& e : entries) {
    if (e.instance < first_instance_) continue;  // behind the snapshot: not kept
    unsigned char key[8];
    PutBigEndian(e.instance.value(), key);
    const LogRecordEncoder record(e);
    MDB_val k{8, key}, v{record.size(), nullptr};
    if (record_ != nullptr) {
      // Encoded into the journal record, and LMDB copies it from there.
      RecordOp(kOpPut, kLogDb, k, record.size());
      const size_t at = record_->size();
      record_->resize(at + record.size());
      record.WriteTo(record_->data() + at);
      v.mv_data = record_->data() + at;
      if ((rc = mdb_put(txn, log_, &k, &v, 0)) != 0) return fail("writing a log record");
    } else {
      // Written in place: LMDB reserves the space in its page (MDB_RESERVE).
      if ((rc = mdb_put(txn, log_, &k, &v, MDB_RESERVE)) != 0) return fail("writing a log record");
      record.WriteTo(static_cast<uint8_t*>(v.mv_data));
    }
    last = std::max(last, e.instance);
    ForgetDamage(Damage::Kind::kLogRecord, e.instance.value());
    log_bytes += record.size();  // an overwrite counts twice: an upper bound
    if (pending_first_instance_ == paxos::kNoInstance || e.instance < pending_first_instance_) {
      pending_first_instance_ = e.instance;
    }
  }
  uint64_t next = next_offset_;
  for (const paxos::AppliedInstance& a : applied) {
    if (a.appended == 0) continue;
    unsigned char key[8];
    PutBigEndian(a.first_offset.value(), key);
    const std::string record = EncodeIndex(a);
    MDB_val k{8, key}, v{record.size(), const_cast<char*>(record.data())};
    if ((rc = Put(txn, kIndexDb, k, v)) != 0) return fail("writing the offset index");
    next = std::max(next, a.first_offset.value() + a.appended);
    // The compacted view: the latest message of each key.
    const auto& msgs = a.value->messages;
    for (size_t i = 0; i < a.results.size() && i < msgs.size(); ++i) {
      if (a.results[i].outcome != paxos::PublishOutcome::kAppended || msgs[i].key.empty()) continue;
      if (msgs[i].key.size() > kKeyBytesMax) continue;  // refused at publish; defensive
      if ((rc = PutKeyed(txn, msgs[i], a.results[i].offset.value())) != 0) {
        return fail("writing the compacted view");
      }
    }
  }
  if (log_bytes != log_bytes_) {
    Retained r = CurrentRetained();
    r.log_bytes = log_bytes;
    if ((rc = PutRetained(txn, r)) != 0) return fail("writing the retention record");
  }
  if (FinishWrite(journal, durability) != paxos::StoreCode::kOk) return paxos::StoreCode::kIoError;
  hard_state_ = hard_state;
  last_instance_ = last;
  next_offset_ = next;
  log_bytes_ = log_bytes;
  return paxos::StoreCode::kOk;
}

int LmdbStore::PutKeyed(MDB_txn* txn, const paxos::ClientMessage& m, uint64_t offset) {
  MDB_val k{m.key.size(), const_cast<char*>(m.key.data())}, v;
  int rc = mdb_get(txn, keys_, &k, &v);
  if (rc == 0) {
    StreamMessage old;
    if (DecodeKeyed(k, v, &old)) {
      unsigned char ok[8];
      PutBigEndian(old.offset, ok);
      MDB_val okv{8, ok};
      rc = Del(txn, kKeyOffsetsDb, okv);
      if (rc != 0 && rc != MDB_NOTFOUND) return rc;
    }
  } else if (rc != MDB_NOTFOUND) {
    return rc;
  }
  const std::string record = EncodeKeyed(m.key, offset, m.producer.value(), m.sequence, m.payload);
  MDB_val rv{record.size(), const_cast<char*>(record.data())};
  if ((rc = Put(txn, kKeysDb, k, rv)) != 0) return rc;
  unsigned char ok[8];
  PutBigEndian(offset, ok);
  MDB_val okv{8, ok}, kv{m.key.size(), const_cast<char*>(m.key.data())};
  return Put(txn, kKeyOffsetsDb, okv, kv);
}

paxos::StoreCode LmdbStore::BeginWrite(MDB_txn** txn) {
  // One write transaction at a time: what is pending is committed first.
  if (CommitPending() != paxos::StoreCode::kOk) return paxos::StoreCode::kIoError;
  const int rc = mdb_txn_begin(env_, nullptr, 0, txn);
  if (rc == 0) return paxos::StoreCode::kOk;
  last_error_ = LmdbError("mdb_txn_begin", rc);
  return paxos::StoreCode::kIoError;
}

paxos::StoreCode LmdbStore::Abort(MDB_txn* txn, const char* what, int rc) {
  last_error_ = LmdbError(what, rc);
  mdb_txn_abort(txn);
  return paxos::StoreCode::kIoError;
}

int LmdbStore::DeleteLogBelow(MDB_txn* txn, paxos::Instance below, size_t max, size_t* deleted,
                              uint64_t* freed, paxos::Instance* next, paxos::AppliedState* base) {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, log_, &cur);
  if (rc != 0) return rc;
  *next = below;
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    const paxos::Instance i(k.mv_size == 8 ? GetBigEndian(k.mv_data) : 0);
    if (i >= *next) break;
    if (base != nullptr && i < base->applied().next()) {
      // Below the base: already part of it (a key that rotted downward, or
      // a leftover): it goes without being applied.
      *freed += v.mv_size;
      if ((rc = mdb_cursor_del(cur, 0)) != 0) break;
      ++*deleted;
      continue;
    }
    // With a base to move, each record is decoded too: bounded in bytes
    // per call as well, so a truncation step never stalls the loop long.
    if (*deleted >= max || (base != nullptr && *freed >= kTruncateBytesPerStep)) {
      *next = i;
      break;
    }
    if (base != nullptr) {
      // The base moves past the record before it goes; a record that is
      // missing or fails its check stops the truncation there until it is
      // repaired.
      paxos::Entry e;
      const DecodeStatus d = i == base->applied().next()
                                 ? DecodeLogRecord({static_cast<const uint8_t*>(v.mv_data), v.mv_size}, &e)
                                 : DecodeStatus::Error(DecodeCode::kInvalid, "missing");
      if ((!d.ok() || e.instance != i || e.value == nullptr) && snapshot_state_ &&
          snapshot_state_->instance >= i) {
        // Damaged or missing, but this node's snapshot covers it: the base
        // jumps to the snapshot and the log goes up to it (peers may have
        // truncated the record, so it may never be repaired).
        *base = paxos::AppliedState(*snapshot_state_);
        *next = std::max(*next, snapshot_state_->instance.next());
        *freed += v.mv_size;
        if ((rc = mdb_cursor_del(cur, 0)) != 0) break;
        ++*deleted;
        continue;
      }
      if (!d.ok() || e.instance != i || e.value == nullptr) {
        const paxos::Instance damaged = i == base->applied().next() ? i : base->applied().next();
        NoteDamage(Damage{Damage::Kind::kLogRecord, damaged.value(), 0,
                          "log record for instance " + std::to_string(damaged.value()) + ": " +
                              (d.ok() ? std::string("missing or stored under the wrong key")
                                      : d.ToString())});
        *next = damaged;
        break;
      }
      base->Apply(i, e.value);
    }
    *freed += v.mv_size;
    if ((rc = mdb_cursor_del(cur, 0)) != 0) break;
    ++*deleted;
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

Retained LmdbStore::CurrentRetained() const {
  return Retained{first_instance_.value(), first_offset_, log_bytes_, snapshot_handle_};
}

int LmdbStore::PutBase(MDB_txn* txn, const paxos::AppliedSnapshot& base) {
  const std::string record = EncodeBase(base);
  MDB_val k{sizeof(kBaseKey) - 1, const_cast<char*>(kBaseKey)};
  MDB_val v{record.size(), const_cast<char*>(record.data())};
  return mdb_put(txn, meta_, &k, &v, 0);
}

int LmdbStore::PutRetained(MDB_txn* txn, const Retained& r) {
  const std::string record = EncodeRetained(r);
  MDB_val k{sizeof(kRetainedKey) - 1, const_cast<char*>(kRetainedKey)};
  MDB_val v{record.size(), const_cast<char*>(record.data())};
  return Put(txn, kMetaDb, k, v);
}

std::string LmdbStore::SnapshotPath(const SnapshotHandle& h) const {
  return dir_ + "/snapshots/snapshot-" + std::to_string(h.instance) + "-" +
         std::to_string(h.checksum) + ".ords";
}

Status LmdbStore::ReadSnapshotFile(const std::string& path, const SnapshotHandle& h,
                                   std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::Error("snapshot file " + path + " is missing");
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  if (bytes.size() != h.size || Crc32c(bytes.data(), bytes.size()) != h.checksum) {
    return Status::Error("snapshot file " + path + " fails its check (size or CRC32C)");
  }
  *out = std::move(bytes);
  return Status::Ok();
}

MDB_txn* LmdbStore::BeginRead() const {
  MDB_txn* txn = nullptr;
  if (mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn) != 0) return nullptr;
  return txn;
}

void LmdbStore::EndRead(MDB_txn* txn) {
  if (txn) mdb_txn_abort(txn);
}

Status LmdbStore::ReadKeyed(MDB_txn* txn, std::vector<StreamMessage>* out) const {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, keys_, &cur);
  if (rc != 0) return Status::Error(LmdbError("mdb_cursor_open", rc));
  MDB_val k, v;
  Status result = Status::Ok();
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    StreamMessage m;
    if (!DecodeKeyed(k, v, &m)) {
      result = Status::Error("a compacted-view record fails its check");
      break;
    }
    out->push_back(std::move(m));
  }
  mdb_cursor_close(cur);
  return result;
}

paxos::StoreCode LmdbStore::ReadCompacted(uint64_t from, uint64_t to, size_t max_messages,
                                          size_t max_bytes, std::vector<StreamMessage>* out) const {
  bool owned = false;
  MDB_txn* txn = LoopRead(&owned);
  if (txn == nullptr) {
    last_error_ = "mdb_txn_begin failed";
    return paxos::StoreCode::kIoError;
  }
  MDB_cursor* cur = nullptr;
  mdb_cursor_open(txn, key_offsets_, &cur);
  unsigned char key[8];
  PutBigEndian(from, key);
  MDB_val k{8, key}, v;
  paxos::StoreCode code = paxos::StoreCode::kOk;
  size_t bytes = 0;
  for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
       rc == 0 && out->size() < max_messages && (out->empty() || bytes < max_bytes);
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) break;
    const uint64_t offset = GetBigEndian(k.mv_data);
    if (to != 0 && offset >= to) break;
    MDB_val kv = v, rv;
    StreamMessage m;
    if (mdb_get(txn, keys_, &kv, &rv) != 0 || !DecodeKeyed(kv, rv, &m) || m.offset != offset) {
      code = NoteDamage(Damage{Damage::Kind::kCompactedView, 0, offset,
                               "compacted view record for offset " + std::to_string(offset) +
                                   " fails its check"});
      break;
    }
    bytes += m.key.size() + m.payload.size() + 32;
    out->push_back(std::move(m));
  }
  mdb_cursor_close(cur);
  if (owned) EndRead(txn);
  return code;
}

paxos::StoreCode LmdbStore::FinishWrite(bool journaled, Durability durability) {
  record_ = nullptr;
  if (journaled && journal_->Fits(journal_->pending_body_bytes())) {
    Status s = journal_->FinishRecord();
    if (s.ok() && durability == Durability::kJournal) s = journal_->Sync();
    if (!s.ok()) {
      mdb_txn_abort(pending_);
      pending_ = nullptr;
      return Broken(s.message());
    }
    return paxos::StoreCode::kOk;
  }
  return CommitPending();  // too large for the journal, or kCommit
}

paxos::StoreCode LmdbStore::RecordSnapshot(const SnapshotHandle& handle,
                                           const paxos::AppliedSnapshot& state) {
  // One small record, journaled like a Commit: all three brokers record a
  // snapshot at the same moment, and an LMDB commit each (two syncs) on a
  // disk that is also taking their snapshot files lengthened that stall.
  if (broken_) return paxos::StoreCode::kIoError;
  if (pending_ == nullptr && BeginWrite(&pending_) != paxos::StoreCode::kOk) {
    pending_ = nullptr;
    return paxos::StoreCode::kIoError;
  }
  record_ = journal_->StartRecord();
  Retained r = CurrentRetained();
  r.snapshot = handle;
  if (const int rc = PutRetained(pending_, r); rc != 0) {
    record_ = nullptr;
    mdb_txn_abort(pending_);
    pending_ = nullptr;
    return Broken(LmdbError("recording the snapshot", rc));
  }
  if (FinishWrite(true, Durability::kJournal) != paxos::StoreCode::kOk) {
    return paxos::StoreCode::kIoError;
  }
  snapshot_handle_ = handle;
  snapshot_state_ = state;
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::Truncate(paxos::Instance first, size_t max_entries, size_t* deleted) {
  *deleted = 0;
  if (!snapshot_state_) return paxos::StoreCode::kOk;
  first = std::min(first, snapshot_state_->instance.next());
  if (first <= first_instance_) return paxos::StoreCode::kOk;
  MDB_txn* txn = nullptr;
  int rc = 0;
  if (BeginWrite(&txn) != paxos::StoreCode::kOk) return paxos::StoreCode::kIoError;
  auto fail = [&](const char* what) { return Abort(txn, what, rc); };
  // Oldest first, a bounded number per call so the stream never waits long.
  uint64_t freed = 0;
  paxos::Instance reached = first;
  std::optional<paxos::AppliedState> base;
  if (base_) base.emplace(*base_);
  if ((rc = DeleteLogBelow(txn, first, max_entries, deleted, &freed, &reached,
                           base ? &*base : nullptr)) != 0) {
    return fail("truncating the log");
  }
  if (reached <= first_instance_) {  // stopped at a damaged record
    mdb_txn_abort(txn);
    return paxos::StoreCode::kOk;
  }
  MDB_cursor* cur = nullptr;
  MDB_val k, v;
  // The offset index of the dropped instances; the first one left is the
  // earliest offset still served: where the base ends, when it is known.
  uint64_t first_offset = base ? base->next_offset().value() : next_offset_;
  mdb_cursor_open(txn, index_, &cur);
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;) {
    IndexRecord idx;
    if (base ? k.mv_size == 8 && GetBigEndian(k.mv_data) >= first_offset
             : DecodeIndex(k, v, &idx) && paxos::Instance(idx.instance) >= reached) {
      if (!base) first_offset = GetBigEndian(k.mv_data);
      break;
    }
    if ((rc = mdb_cursor_del(cur, 0)) != 0) {
      mdb_cursor_close(cur);
      return fail("truncating the offset index");
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
    if (rc != 0) rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  Retained r = CurrentRetained();
  r.first_instance = reached.value();
  r.first_offset = std::max(first_offset_, first_offset);
  r.log_bytes = log_bytes_ > freed ? log_bytes_ - freed : 0;
  if ((rc = PutRetained(txn, r)) != 0) return fail("writing the retention record");
  std::optional<paxos::AppliedSnapshot> new_base;
  if (base) {
    new_base = base->Snapshot();
    if ((rc = PutBase(txn, *new_base)) != 0) return fail("writing the base record");
  }
  if ((rc = mdb_txn_commit(txn)) != 0) {
    last_error_ = LmdbError("mdb_txn_commit", rc);
    return paxos::StoreCode::kIoError;
  }
  // A rebuild behind the new base goes on from it: the records it would
  // read are gone, and so is their part of the index.
  if (rebuild_ && new_base && rebuild_->state.applied() < new_base->instance) {
    rebuild_->state = paxos::AppliedState(*new_base);
  }
  base_ = std::move(new_base);
  first_instance_ = reached;
  first_offset_ = r.first_offset;
  log_bytes_ = r.log_bytes;
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::InstallSnapshot(const SnapshotHandle& handle,
                                            const paxos::AppliedSnapshot& state,
                                            std::span<const StreamMessage> keyed) {
  MDB_txn* txn = nullptr;
  int rc = 0;
  if (BeginWrite(&txn) != paxos::StoreCode::kOk) return paxos::StoreCode::kIoError;
  auto fail = [&](const char* what) { return Abort(txn, what, rc); };
  // Everything up to the snapshot's instance is replaced by it.
  size_t deleted = 0;
  uint64_t freed = 0;
  paxos::Instance reached;
  if ((rc = DeleteLogBelow(txn, state.instance.next(), SIZE_MAX, &deleted, &freed, &reached,
                           nullptr)) != 0) {
    return fail("clearing the log");
  }
  if ((rc = mdb_drop(txn, index_, 0)) != 0 || (rc = mdb_drop(txn, keys_, 0)) != 0 ||
      (rc = mdb_drop(txn, key_offsets_, 0)) != 0) {
    return fail("clearing the index and compacted view");
  }
  for (const StreamMessage& m : keyed) {
    if (m.key.empty() || m.key.size() > kKeyBytesMax) continue;
    paxos::ClientMessage cm{paxos::ProducerId(m.producer), m.sequence, m.key, m.payload};
    if ((rc = PutKeyed(txn, cm, m.offset)) != 0) return fail("writing the compacted view");
  }
  paxos::HardState hs = hard_state_;
  hs.chosen = std::max(hs.chosen, state.instance);
  const std::string meta = EncodeMetaRecord(hs);
  MDB_val mk{sizeof(kHardStateKey) - 1, const_cast<char*>(kHardStateKey)};
  MDB_val mv{meta.size(), const_cast<char*>(meta.data())};
  if ((rc = mdb_put(txn, meta_, &mk, &mv, 0)) != 0) return fail("writing the hard state");
  Retained r{state.instance.value() + 1, state.next_offset.value(), 0, handle};
  if ((rc = PutRetained(txn, r)) != 0) return fail("writing the retention record");
  if ((rc = PutBase(txn, state)) != 0) return fail("writing the base record");
  if ((rc = mdb_txn_commit(txn)) != 0) {
    last_error_ = LmdbError("mdb_txn_commit", rc);
    return paxos::StoreCode::kIoError;
  }
  hard_state_ = hs;
  first_instance_ = state.instance.next();
  first_offset_ = r.first_offset;
  next_offset_ = state.next_offset.value();
  log_bytes_ = 0;
  snapshot_handle_ = handle;
  snapshot_state_ = state;
  base_ = state;
  if (last_instance_ < state.instance) last_instance_ = paxos::kNoInstance;
  // A rebuild in progress read records the install just replaced: the
  // broker starts a new one if damage remains.
  rebuild_.reset();
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::ReadStream(uint64_t from, size_t max_messages, size_t max_bytes,
                                       std::vector<StreamMessage>* out) const {
  return ReadStream(from, max_messages, max_bytes, [&](uint64_t offset, const MessageView& m) {
    out->push_back(StreamMessage{offset, m.producer, m.sequence,
                                 std::string(m.key.begin(), m.key.end()),
                                 std::string(m.payload.begin(), m.payload.end())});
  });
}

paxos::StoreCode LmdbStore::ReadStream(uint64_t from, size_t max_messages, size_t max_bytes,
                                       const StreamVisitor& visit) const {
  if (from >= next_offset_ || max_messages == 0) return paxos::StoreCode::kOk;
  bool owned = false;
  MDB_txn* txn = LoopRead(&owned);
  if (txn == nullptr) {
    last_error_ = "mdb_txn_begin failed";
    return paxos::StoreCode::kIoError;
  }
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, index_, &cur);
  unsigned char key[8];
  PutBigEndian(from, key);
  MDB_val k{8, key}, v;
  // The index entry holding `from` is the last one whose key is <= from.
  if (rc == 0) rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  if (rc == MDB_NOTFOUND || (rc == 0 && (k.mv_size != 8 || GetBigEndian(k.mv_data) > from))) {
    rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
  }
  paxos::StoreCode code = paxos::StoreCode::kOk;
  size_t taken = 0, bytes = 0;
  bool full = false;
  // The offset the next index record must start at: records are
  // contiguous, each starting where the one before ends. Any other key is a
  // damaged or missing record (a flipped bit in a key moves a record).
  std::optional<uint64_t> expected;
  auto index_damage = [&](uint64_t offset, const std::string& what) {
    code = NoteDamage(Damage{Damage::Kind::kIndexRecord, 0, offset,
                             "offset index at offset " + std::to_string(offset) + ": " + what});
  };
  while (!full && taken < max_messages && (taken == 0 || bytes < max_bytes)) {
    const uint64_t want = expected ? *expected : from;
    if (want >= next_offset_) break;  // everything up to the head was read
    if (rc != 0) {
      index_damage(want, rc == MDB_NOTFOUND ? "no record holds it"
                                            : std::string("LMDB: ") + mdb_strerror(rc));
      break;
    }
    IndexRecord idx;
    if (!DecodeIndex(k, v, &idx)) {
      index_damage(k.mv_size == 8 ? GetBigEndian(k.mv_data) : want, "the record fails its check");
      break;
    }
    const uint64_t end = idx.first_offset + idx.appended;
    if (expected ? idx.first_offset != *expected : !(idx.first_offset <= from && from < end)) {
      index_damage(want, "no record holds it (the next record starts at offset " +
                             std::to_string(idx.first_offset) + ")");
      break;
    }
    std::span<const uint8_t> record;
    code = LogRecordIn(txn, idx.instance, &record);
    if (code == paxos::StoreCode::kNotFound) {
      // Applied instances stay in the log until truncation removes their
      // index too: the record was lost.
      code = NoteDamage(Damage{Damage::Kind::kLogRecord, idx.instance, 0,
                               "log record for instance " + std::to_string(idx.instance) +
                                   " is missing (the offset index names it)"});
      break;
    }
    if (code != paxos::StoreCode::kOk) break;
    // Offsets of this record's messages: in order, minus the skipped ones.
    uint64_t offset = idx.first_offset;
    size_t skip = 0;
    bool wrong_instance = false, wrong_count = false;
    const DecodeStatus d = VisitLogRecord(
        record,
        [&](uint64_t stored_instance, uint32_t messages) {
          // Checked before any message is used: a record stored under the
          // wrong key, or an index that does not describe this record.
          wrong_instance = stored_instance != idx.instance;
          uint32_t last = 0;
          bool ascending = true;
          for (size_t i = 0; i < idx.skipped.size(); ++i) {
            ascending &= (i == 0 || idx.skipped[i] > last) && idx.skipped[i] < messages;
            last = idx.skipped[i];
          }
          wrong_count = !ascending || uint64_t{idx.appended} + idx.skipped.size() != messages;
          return !wrong_instance && !wrong_count;
        },
        [&](uint32_t i, const MessageView& m) {
          if (skip < idx.skipped.size() && idx.skipped[skip] == i) {
            ++skip;
            return;
          }
          const uint64_t o = offset++;
          if (o < from || full) return;
          if (taken >= max_messages || (taken > 0 && bytes >= max_bytes)) {
            full = true;
            return;
          }
          visit(o, m);
          bytes += m.key.size() + m.payload.size() + 32;
          ++taken;
        });
    if (!d.ok() || wrong_instance) {
      code = NoteDamage(Damage{
          Damage::Kind::kLogRecord, idx.instance, 0,
          "log record for instance " + std::to_string(idx.instance) + ": " +
              (d.ok() ? std::string("stored under the wrong key") : d.ToString())});
      break;
    }
    if (wrong_count) {
      index_damage(idx.first_offset, "its record does not match instance " +
                                         std::to_string(idx.instance) + "'s messages");
      break;
    }
    expected = end;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  if (owned) EndRead(txn);
  return code;
}

paxos::StoreCode LmdbStore::StartRebuild(paxos::Instance applied) {
  if (broken_) return paxos::StoreCode::kIoError;
  if (!base_) {
    last_error_ = "no base state is known (a store truncated before base records existed): "
                  "the index below the latest snapshot cannot be re-derived";
    return paxos::StoreCode::kNotFound;
  }
  if (const paxos::StoreCode code = RebuildKeyed(applied); code != paxos::StoreCode::kOk) {
    return code;
  }
  rebuild_ = Rebuild{paxos::AppliedState(*base_), 0};
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::RebuildKeyed(paxos::Instance applied) {
  // From the latest snapshot (its keyed messages are in its file), or from
  // the log's start when there is none.
  std::vector<StreamMessage> keyed;
  paxos::AppliedState state;
  if (snapshot_state_) {
    std::string file;
    paxos::AppliedSnapshot decoded;
    Status s = ReadSnapshotFile(SnapshotPath(snapshot_handle_), snapshot_handle_, &file);
    if (s.ok() && !DecodeSnapshotFile(AsBytes(file), &decoded, &keyed).ok()) {
      s = Status::Error("the snapshot file fails to decode");
    }
    if (!s.ok()) {
      last_error_ = s.message() + ": the compacted view cannot be re-derived";
      return paxos::StoreCode::kCorrupt;
    }
    state = paxos::AppliedState(*snapshot_state_);
  } else if (base_ && base_->instance == paxos::kNoInstance) {
    state = paxos::AppliedState(*base_);
  } else {
    last_error_ = "no snapshot to re-derive the compacted view from";
    return paxos::StoreCode::kNotFound;
  }
  MDB_txn* txn = nullptr;
  if (BeginWrite(&txn) != paxos::StoreCode::kOk) return paxos::StoreCode::kIoError;
  int rc = 0;
  if ((rc = mdb_drop(txn, keys_, 0)) != 0 || (rc = mdb_drop(txn, key_offsets_, 0)) != 0) {
    return Abort(txn, "clearing the compacted view", rc);
  }
  for (const StreamMessage& m : keyed) {
    if (m.key.empty() || m.key.size() > kKeyBytesMax) continue;
    paxos::ClientMessage cm{paxos::ProducerId(m.producer), m.sequence, m.key, m.payload};
    if ((rc = PutKeyed(txn, cm, m.offset)) != 0) return Abort(txn, "writing the compacted view", rc);
  }
  for (paxos::Instance i = state.applied().next(); i <= applied; i = i.next()) {
    paxos::Entry e;
    if (const paxos::StoreCode code = GetIn(txn, i, &e); code != paxos::StoreCode::kOk) {
      mdb_txn_abort(txn);
      if (code == paxos::StoreCode::kNotFound) {
        NoteDamage(Damage{Damage::Kind::kLogRecord, i.value(), 0,
                          "log record for instance " + std::to_string(i.value()) +
                              " is missing (it was applied)"});
        return paxos::StoreCode::kCorrupt;
      }
      return code;
    }
    const paxos::AppliedInstance a = state.Apply(i, e.value);
    const auto& msgs = a.value->messages;
    for (size_t m = 0; m < a.results.size() && m < msgs.size(); ++m) {
      if (a.results[m].outcome != paxos::PublishOutcome::kAppended || msgs[m].key.empty() ||
          msgs[m].key.size() > kKeyBytesMax) {
        continue;
      }
      if ((rc = PutKeyed(txn, msgs[m], a.results[m].offset.value())) != 0) {
        return Abort(txn, "writing the compacted view", rc);
      }
    }
  }
  if ((rc = mdb_txn_commit(txn)) != 0) {
    last_error_ = LmdbError("mdb_txn_commit", rc);
    return paxos::StoreCode::kIoError;
  }
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::RebuildStep(paxos::Instance applied, size_t max_instances, bool* done,
                                        uint64_t* fixed) {
  *done = false;
  if (!rebuild_) return paxos::StoreCode::kNotFound;
  Rebuild& rb = *rebuild_;
  MDB_txn* txn = nullptr;
  if (BeginWrite(&txn) != paxos::StoreCode::kOk) return paxos::StoreCode::kIoError;
  int rc = 0;
  paxos::StoreCode code = paxos::StoreCode::kOk;
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(txn, index_, &cur)) != 0) return Abort(txn, "mdb_cursor_open", rc);
  // Removes every index key in [from, to) but `keep` (strays: records a
  // flipped bit moved under another key).
  auto remove_strays = [&](uint64_t from, uint64_t to) {
    unsigned char key[8];
    PutBigEndian(from, key);
    MDB_val k{8, key}, v;
    int r = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (r == 0) {
      if (k.mv_size == 8 && GetBigEndian(k.mv_data) >= to) break;
      if ((r = mdb_cursor_del(cur, 0)) != 0) return r;
      ++rb.fixed;
      // After a delete the cursor rests on the next record, if any.
      r = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
      if (r != 0) r = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    return r == MDB_NOTFOUND ? 0 : r;
  };
  size_t n = 0;
  while (n < max_instances && rb.state.applied() < applied) {
    const paxos::Instance i = rb.state.applied().next();
    paxos::Entry e;
    code = GetIn(txn, i, &e);
    if (code == paxos::StoreCode::kNotFound) {
      code = NoteDamage(Damage{Damage::Kind::kLogRecord, i.value(), 0,
                               "log record for instance " + std::to_string(i.value()) +
                                   " is missing (it was applied)"});
    }
    if (code != paxos::StoreCode::kOk) break;  // what was checked so far is kept
    const paxos::AppliedInstance a = rb.state.Apply(i, e.value);
    ++n;
    if (a.appended == 0) continue;
    const std::string record = EncodeIndex(a);
    unsigned char key[8];
    PutBigEndian(a.first_offset.value(), key);
    MDB_val k{8, key}, v;
    rc = mdb_get(txn, index_, &k, &v);
    if (rc != 0 && rc != MDB_NOTFOUND) break;
    if (rc == MDB_NOTFOUND || v.mv_size != record.size() ||
        std::memcmp(v.mv_data, record.data(), record.size()) != 0) {
      MDB_val rv{record.size(), const_cast<char*>(record.data())};
      if ((rc = mdb_put(txn, index_, &k, &rv, 0)) != 0) break;
      ++rb.fixed;
    }
    rc = remove_strays(a.first_offset.value() + 1, a.first_offset.value() + a.appended);
    if (rc != 0) break;
  }
  const bool finished = code == paxos::StoreCode::kOk && rc == 0 && rb.state.applied() >= applied;
  // Past the head nothing belongs in the index; below the base nothing is retained.
  if (finished) rc = remove_strays(rb.state.next_offset().value(), UINT64_MAX);
  if (finished && rc == 0 && base_) rc = remove_strays(0, base_->next_offset.value());
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return Abort(txn, "rebuilding the offset index", rc);
  if ((rc = mdb_txn_commit(txn)) != 0) {
    last_error_ = LmdbError("mdb_txn_commit", rc);
    return paxos::StoreCode::kIoError;
  }
  *fixed = rb.fixed;
  if (code != paxos::StoreCode::kOk) return code;
  if (finished) {
    next_offset_ = std::max(rb.state.next_offset().value(), first_offset_);
    std::erase_if(known_damage_, [](const auto& d) { return d.first != Damage::Kind::kLogRecord; });
    rebuild_.reset();
    *done = true;
  }
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::NoteDamage(Damage damage) const {
  last_error_ = damage.what;
  const auto id = std::make_pair(damage.kind, damage.kind == Damage::Kind::kLogRecord
                                                  ? damage.instance
                                                  : damage.offset);
  // Counted and handed to the broker once per record, however often readers
  // run into it before it is repaired.
  if (known_damage_.size() < kKnownDamageMax && known_damage_.insert(id).second) {
    ++corruptions_;
    new_damage_.push_back(std::move(damage));
  }
  return paxos::StoreCode::kCorrupt;
}

std::vector<LmdbStore::Damage> LmdbStore::TakeNewDamage() {
  std::vector<Damage> out = std::move(new_damage_);
  new_damage_.clear();
  return out;
}

void LmdbStore::ForgetDamage(Damage::Kind kind, uint64_t at) {
  if (known_damage_.empty() || known_damage_.erase({kind, at}) == 0) return;
  if (kind == Damage::Kind::kLogRecord) {
    ++repairs_;
    repaired_.push_back(at);
  }
}

}  // namespace ordo::broker
