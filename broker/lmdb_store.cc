#include "broker/lmdb_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "broker/codec.h"
#include "broker/crc32c.h"
#include "broker/data_dir.h"
#include "broker/lmdb_formats.h"
#include "paxos/assert.h"

namespace ordo::broker {

using namespace lmdb;  // NOLINT: the formats this file reads and writes

namespace {


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

int LmdbStore::Put(MDB_txn* txn, Db db, const MDB_val& key, const MDB_val& value) {
  MDB_val k = key, v = value;
  const int rc = mdb_put(txn, Dbi(db), &k, &v, 0);
  if (rc == 0 && record_) {
    AppendJournalOp(record_, kJournalPut, db, key, value.mv_size);
    const auto* b = static_cast<const uint8_t*>(value.mv_data);
    record_->insert(record_->end(), b, b + value.mv_size);
  }
  return rc;
}

int LmdbStore::Del(MDB_txn* txn, Db db, const MDB_val& key) {
  MDB_val k = key;
  const int rc = mdb_del(txn, Dbi(db), &k, nullptr);
  if (rc == 0 && record_) AppendJournalOp(record_, kJournalDel, db, key, 0);
  return rc;
}

Status LmdbStore::ApplyJournalRecord(MDB_txn* txn, std::span<const uint8_t> body) {
  JournalOp op;
  for (size_t at = 0; at < body.size();) {
    const size_t start = at;
    if (!ParseJournalOp(body, &at, &op)) {
      return Status::Damaged("journal record: malformed operation at byte " + std::to_string(start));
    }
    const int rc = op.op == kJournalPut ? mdb_put(txn, Dbi(op.db), &op.key, &op.value, 0)
                                        : mdb_del(txn, Dbi(op.db), &op.key, nullptr);
    if (rc != 0 && !(op.op == kJournalDel && rc == MDB_NOTFOUND)) {
      return OpenFailure("replaying the journal", rc);
    }
  }
  return Status::Ok();
}

LmdbStore::LoopTxn LmdbStore::LoopRead() const {
  LoopTxn t;
  if (broken_) {
    last_error_ = "storage failed earlier; reads are refused";
  } else if (pending_ != nullptr) {
    t.txn = pending_;
  } else {
    int rc = 0;
    t.owned = ReadTxn::Begin(env_, &rc);
    if (rc != 0) last_error_ = LmdbError("mdb_txn_begin", rc);
    t.txn = t.owned.get();
  }
  return t;
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
  return RawLogRecordIn(txn, instance, record, &last_error_);
}

paxos::StoreCode LmdbStore::RawLogRecordIn(MDB_txn* txn, uint64_t instance,
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
  const LoopTxn loop = LoopRead();
  MDB_txn* txn = loop.txn;
  if (txn == nullptr) return paxos::StoreCode::kIoError;
  const paxos::StoreCode code = GetIn(txn, instance, out);
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
      AppendJournalOp(record_, kJournalPut, kLogDb, k, record.size());
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
  // A damaged record counts as repaired once its new copy is written.
  for (const paxos::Entry& e : entries) {
    if (e.instance >= first_instance_) ForgetDamage(Damage::Kind::kLogRecord, e.instance.value());
  }
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

ReadTxn LmdbStore::BeginRead() const {
  int rc = 0;
  return ReadTxn::Begin(env_, &rc);
}

Status LmdbStore::ReadKeyed(const ReadTxn& txn, std::vector<StreamMessage>* out) const {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn.get(), keys_, &cur);
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
  const LoopTxn loop = LoopRead();
  MDB_txn* txn = loop.txn;
  if (txn == nullptr) return paxos::StoreCode::kIoError;
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
  const LoopTxn loop = LoopRead();
  MDB_txn* txn = loop.txn;
  if (txn == nullptr) return paxos::StoreCode::kIoError;
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
