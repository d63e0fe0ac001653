#include "broker/lmdb_store.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <random>

#include "broker/codec.h"
#include "broker/crc32c.h"
#include "paxos/assert.h"

namespace ordo::broker {

namespace {

constexpr char kHardStateKey[] = "hard_state";
constexpr char kRetainedKey[] = "retained";  // first instance/offset, log bytes, snapshot handle
constexpr char kJournalKey[] = "journal";    // the journal generation that follows this commit
constexpr uint16_t kJournalMetaVersion = 1;
constexpr uint8_t kOpPut = 1;
constexpr uint8_t kOpDel = 2;
constexpr size_t kOpHeaderBytes = 1 + 1 + 2 + 4;  // op, db, key length (u16), value length (u32)
constexpr uint16_t kRetainedFormatVersion = 1;
constexpr uint16_t kIndexFormatVersion = 1;

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
  uint64_t instance = 0;
  uint32_t appended = 0;
  std::vector<uint32_t> skipped;
};

std::string EncodeIndex(const paxos::AppliedInstance& a) {
  std::string body;
  PutLe<uint16_t>(&body, kIndexFormatVersion);
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

bool DecodeIndex(const MDB_val& v, IndexRecord* out) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  constexpr size_t kFixed = 4 + 2 + 8 + 4 + 4;
  if (v.mv_size < kFixed) return false;
  if (GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  if (GetLe<uint16_t>(p + 4) != kIndexFormatVersion) return false;
  out->instance = GetLe<uint64_t>(p + 6);
  out->appended = GetLe<uint32_t>(p + 14);
  const uint32_t n = GetLe<uint32_t>(p + 18);
  if (v.mv_size != kFixed + size_t{n} * 4) return false;
  out->skipped.resize(n);
  for (uint32_t i = 0; i < n; ++i) out->skipped[i] = GetLe<uint32_t>(p + kFixed + 4 * i);
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

// A compacted-view record (value in the `keys` database, under the message
// key): CRC32C (4, LE) over the rest, offset, producer, sequence (u64 LE),
// then the payload.
std::string EncodeKeyed(uint64_t offset, uint64_t producer, uint64_t sequence,
                        std::string_view payload) {
  std::string body;
  PutLe<uint64_t>(&body, offset);
  PutLe<uint64_t>(&body, producer);
  PutLe<uint64_t>(&body, sequence);
  body += payload;
  std::string out;
  PutLe<uint32_t>(&out, Crc32c(body.data(), body.size()));
  return out + body;
}

bool DecodeKeyed(const MDB_val& v, StreamMessage* out) {
  const auto* p = static_cast<const unsigned char*>(v.mv_data);
  if (v.mv_size < 28 || GetLe<uint32_t>(p) != Crc32c(p + 4, v.mv_size - 4)) return false;
  out->offset = GetLe<uint64_t>(p + 4);
  out->producer = GetLe<uint64_t>(p + 12);
  out->sequence = GetLe<uint64_t>(p + 20);
  out->payload.assign(reinterpret_cast<const char*>(p + 28), v.mv_size - 28);
  return true;
}

std::string LmdbError(const char* what, int rc) {
  return std::string(what) + ": " + mdb_strerror(rc);
}

}  // namespace

Status LmdbStore::Open(const std::string& dir, uint64_t map_size_bytes,
                       std::unique_ptr<LmdbStore>* out) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::Error("data_dir " + dir + ": " + std::strerror(errno));
  }
  std::unique_ptr<LmdbStore> s(new LmdbStore());
  int rc = mdb_env_create(&s->env_);
  if (rc != 0) return Status::Error(LmdbError("mdb_env_create", rc));
  // Spelled out: map size (an upper bound on the file, not an allocation),
  // three named databases, and flags 0 = durable commits with fsync, a
  // read-only map (stray writes through a pointer fault instead of
  // corrupting), and a lock file in the directory.
  if ((rc = mdb_env_set_mapsize(s->env_, map_size_bytes)) != 0 ||
      (rc = mdb_env_set_maxdbs(s->env_, 5)) != 0 ||
      (rc = mdb_env_set_maxreaders(s->env_, 16)) != 0) {
    return Status::Error(LmdbError("configuring LMDB", rc));
  }
  if ((rc = mdb_env_open(s->env_, dir.c_str(), MDB_NOTLS, 0644)) != 0) {
    return Status::Error(LmdbError(("opening LMDB in " + dir).c_str(), rc));
  }
  MDB_txn* txn = nullptr;
  if ((rc = mdb_txn_begin(s->env_, nullptr, 0, &txn)) != 0) {
    return Status::Error(LmdbError("mdb_txn_begin", rc));
  }
  if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta_)) != 0 ||
      (rc = mdb_dbi_open(txn, "log", MDB_CREATE, &s->log_)) != 0 ||
      (rc = mdb_dbi_open(txn, "index", MDB_CREATE, &s->index_)) != 0 ||
      (rc = mdb_dbi_open(txn, "keys", MDB_CREATE, &s->keys_)) != 0 ||
      (rc = mdb_dbi_open(txn, "key_offsets", MDB_CREATE, &s->key_offsets_)) != 0) {
    mdb_txn_abort(txn);
    return Status::Error(LmdbError("opening databases", rc));
  }
  // The journal: what was made durable after LMDB's last commit is applied
  // first, so everything below reads the state the broker acknowledged.
  // Without a generation in meta (a new environment) nothing is replayed:
  // a journal file left from an earlier life must not leak into this one.
  {
    MDB_val jk{sizeof(kJournalKey) - 1, const_cast<char*>(kJournalKey)}, jv;
    uint64_t generation = 0;
    rc = mdb_get(txn, s->meta_, &jk, &jv);
    if (rc == 0 && !DecodeJournalMeta(jv, &generation)) {
      mdb_txn_abort(txn);
      return Status::Error("the journal record in " + dir + " fails its check; this broker cannot "
                           "tell which journal writes it acknowledged. Move the data directory "
                           "away to rejoin from the peers");
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
      mdb_txn_abort(txn);
      return Status::Error(LmdbError("reading the journal record", rc));
    }
    // A generation in meta means the journal may hold acknowledged writes:
    // a missing file is then an error, not a fresh start.
    const bool known = rc == 0;
    if (Status js = Journal::Open(dir + "/journal", kJournalFileBytes, /*create=*/!known,
                                  &s->journal_);
        !js.ok()) {
      mdb_txn_abort(txn);
      return Status::Error(js.message() +
                           (known ? "; this broker's LMDB names a journal generation, so the "
                                    "journal may hold acknowledged writes. Restore the file, or "
                                    "move the data directory away to rejoin from the peers"
                                  : ""));
    }
    uint64_t next = 0;
    if (known) {
      Status rs = s->journal_->Replay(
          generation,
          [&](std::span<const uint8_t> body) { return s->ApplyJournalRecord(txn, body); },
          &s->journal_replayed_);
      if (!rs.ok()) {
        mdb_txn_abort(txn);
        return rs;
      }
      next = generation + 1;
    } else {
      next = std::mt19937_64(std::random_device{}())();
    }
    const std::string meta = EncodeJournalMeta(next);
    MDB_val mv{meta.size(), const_cast<char*>(meta.data())};
    if ((rc = mdb_put(txn, s->meta_, &jk, &mv, 0)) != 0) {
      mdb_txn_abort(txn);
      return Status::Error(LmdbError("writing the journal record", rc));
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
      mdb_txn_abort(txn);
      // Without its promise an acceptor could vote twice: refuse to start.
      return Status::Error("the hard state in " + dir + " fails its check (" + d.ToString() +
                           "); this broker cannot vote safely. Move the data directory away "
                           "to rejoin as a fresh member");
    }
  } else if (rc != MDB_NOTFOUND) {
    mdb_txn_abort(txn);
    return Status::Error(LmdbError("reading the hard state", rc));
  }
  const bool no_hard_state = rc == MDB_NOTFOUND;
  // What is retained, and the snapshot the log continues from.
  Retained retained;
  MDB_val rk{sizeof(kRetainedKey) - 1, const_cast<char*>(kRetainedKey)};
  rc = mdb_get(txn, s->meta_, &rk, &v);
  if (rc == 0 && !DecodeRetained(v, &retained)) {
    mdb_txn_abort(txn);
    return Status::Error("the retention record in " + dir + " fails its check; this broker "
                         "cannot tell where its log starts. Move the data directory away to "
                         "rejoin from the peers");
  }
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
    if (!fs.ok() || !d.ok()) {
      mdb_txn_abort(txn);
      return Status::Error((fs.ok() ? "the snapshot file fails to decode: " + d.ToString()
                                    : fs.message()) +
                           "; the log before instance " +
                           std::to_string(retained.first_instance) +
                           " is only in that snapshot. Move the data directory away to rejoin "
                           "from the peers");
    }
    s->snapshot_state_ = std::move(state);
  }
  // Last instance and head offset.
  MDB_cursor* cur = nullptr;
  mdb_cursor_open(txn, s->log_, &cur);
  if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) {
    s->last_instance_ = paxos::Instance(GetBigEndian(k.mv_data));
  }
  mdb_cursor_close(cur);
  mdb_cursor_open(txn, s->index_, &cur);
  if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) {
    IndexRecord r;
    if (DecodeIndex(v, &r)) s->next_offset_ = GetBigEndian(k.mv_data) + r.appended;
  }
  mdb_cursor_close(cur);
  s->opened_empty_ = no_hard_state && s->last_instance_ == paxos::kNoInstance &&
                     retained.snapshot.instance == 0;
  s->next_offset_ = std::max(s->next_offset_, s->first_offset_);
  if ((rc = mdb_txn_commit(txn)) != 0) return Status::Error(LmdbError("mdb_txn_commit", rc));
  *out = std::move(s);
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
    if (body.size() - at < kOpHeaderBytes) return Status::Error("journal record: truncated operation");
    const uint8_t* p = body.data() + at;
    const uint8_t op = p[0];
    const uint8_t db = p[1];
    const size_t klen = size_t{p[2]} | (size_t{p[3]} << 8);
    const size_t vlen = GetLe<uint32_t>(p + 4);
    if ((op != kOpPut && op != kOpDel) || db >= kDbCount ||
        body.size() - at - kOpHeaderBytes < klen + vlen || (op == kOpDel && vlen != 0)) {
      return Status::Error("journal record: malformed operation at byte " + std::to_string(at));
    }
    MDB_val k{klen, const_cast<uint8_t*>(p + kOpHeaderBytes)};
    MDB_val v{vlen, const_cast<uint8_t*>(p + kOpHeaderBytes + klen)};
    const int rc = op == kOpPut ? mdb_put(txn, Dbi(static_cast<Db>(db)), &k, &v, 0)
                                : mdb_del(txn, Dbi(static_cast<Db>(db)), &k, nullptr);
    if (rc != 0 && !(op == kOpDel && rc == MDB_NOTFOUND)) {
      return Status::Error(LmdbError("replaying the journal", rc));
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
  ++corruptions_;
  last_error_ = "log record for instance " + std::to_string(instance) + ": " +
                (d.ok() ? std::string("stored under the wrong key") : d.ToString());
  return paxos::StoreCode::kCorrupt;
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
    if (DecodeKeyed(v, &old)) {
      unsigned char ok[8];
      PutBigEndian(old.offset, ok);
      MDB_val okv{8, ok};
      rc = Del(txn, kKeyOffsetsDb, okv);
      if (rc != 0 && rc != MDB_NOTFOUND) return rc;
    }
  } else if (rc != MDB_NOTFOUND) {
    return rc;
  }
  const std::string record = EncodeKeyed(offset, m.producer.value(), m.sequence, m.payload);
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
                              uint64_t* freed, paxos::Instance* next) {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, log_, &cur);
  if (rc != 0) return rc;
  *next = below;
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    const paxos::Instance i(k.mv_size == 8 ? GetBigEndian(k.mv_data) : 0);
    if (i >= below) break;
    if (*deleted >= max) {
      *next = i;
      break;
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
    if (!DecodeKeyed(v, &m)) {
      result = Status::Error("a compacted-view record fails its check");
      break;
    }
    m.key.assign(static_cast<const char*>(k.mv_data), k.mv_size);
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
    if (mdb_get(txn, keys_, &kv, &rv) != 0 || !DecodeKeyed(rv, &m) || m.offset != offset) {
      ++corruptions_;
      last_error_ = "compacted view record for offset " + std::to_string(offset) +
                    " fails its check";
      code = paxos::StoreCode::kCorrupt;
      break;
    }
    m.key.assign(static_cast<const char*>(v.mv_data), v.mv_size);
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
  if ((rc = DeleteLogBelow(txn, first, max_entries, deleted, &freed, &reached)) != 0) {
    return fail("truncating the log");
  }
  MDB_cursor* cur = nullptr;
  MDB_val k, v;
  // The offset index of the dropped instances; the first one left is the
  // earliest offset still served.
  uint64_t first_offset = next_offset_;
  mdb_cursor_open(txn, index_, &cur);
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;) {
    IndexRecord idx;
    if (DecodeIndex(v, &idx) && paxos::Instance(idx.instance) >= reached) {
      first_offset = GetBigEndian(k.mv_data);
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
  if ((rc = mdb_txn_commit(txn)) != 0) {
    last_error_ = LmdbError("mdb_txn_commit", rc);
    return paxos::StoreCode::kIoError;
  }
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
  if ((rc = DeleteLogBelow(txn, state.instance.next(), SIZE_MAX, &deleted, &freed, &reached)) != 0) {
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
  if (last_instance_ < state.instance) last_instance_ = paxos::kNoInstance;
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
  int rc = 0;
  MDB_cursor* cur = nullptr;
  mdb_cursor_open(txn, index_, &cur);
  unsigned char key[8];
  PutBigEndian(from, key);
  MDB_val k{8, key}, v;
  // The index entry holding `from` is the last one whose key is <= from.
  rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  if (rc == MDB_NOTFOUND || (rc == 0 && GetBigEndian(k.mv_data) > from)) {
    rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
  }
  paxos::StoreCode code = paxos::StoreCode::kOk;
  size_t taken = 0, bytes = 0;
  bool full = false;
  while (rc == 0 && !full && taken < max_messages && (taken == 0 || bytes < max_bytes)) {
    IndexRecord idx;
    if (k.mv_size != 8 || !DecodeIndex(v, &idx)) {
      ++corruptions_;
      last_error_ = "offset index record fails its check";
      code = paxos::StoreCode::kCorrupt;
      break;
    }
    const uint64_t first = GetBigEndian(k.mv_data);
    std::span<const uint8_t> record;
    code = LogRecordIn(txn, idx.instance, &record);
    if (code != paxos::StoreCode::kOk) {
      if (code == paxos::StoreCode::kNotFound) {
        last_error_ = "the offset index names instance " + std::to_string(idx.instance) +
                      ", which is not in the log";
      }
      break;
    }
    // Offsets of this record's messages: in order, minus the skipped ones.
    uint64_t offset = first;
    size_t skip = 0;
    uint64_t stored_instance = 0;
    const DecodeStatus d = VisitLogRecord(
        record, &stored_instance, [&](uint32_t i, const MessageView& m) {
          // A record stored under the wrong key is served not at all (the
          // instance is known before the first message is visited).
          if (stored_instance != idx.instance) return;
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
    if (!d.ok() || stored_instance != idx.instance) {
      code = CorruptRecord(idx.instance, d);  // nothing of it was served
      break;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  if (owned) EndRead(txn);
  return code;
}

}  // namespace ordo::broker
