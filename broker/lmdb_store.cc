#include "broker/lmdb_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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

// Spelled out: map size (an upper bound on the file, not an allocation),
// five named databases, and a bounded reader table.
int ConfigureEnv(MDB_env* env, uint64_t map_size_bytes) {
  int rc = mdb_env_set_mapsize(env, map_size_bytes);
  if (rc == 0) rc = mdb_env_set_maxdbs(env, 5);
  if (rc == 0) rc = mdb_env_set_maxreaders(env, 16);
  return rc;
}

// A new data.mdb is made whole beside the directory's files and renamed
// into place. LMDB writes both meta pages of a new file at once, unsynced
// until its first commit: a power loss there would leave a file that looks
// damaged (MDB_INVALID) though it never held anything. So a data.mdb under
// its own name has always had one synced commit, and a half-made one is
// only ever in kCreatingDir, which nothing was acknowledged from.
constexpr char kCreatingDir[] = "creating";

Status CreateDataFile(const std::string& dir, uint64_t map_size_bytes) {
  const std::string staging = dir + "/" + kCreatingDir;
  std::error_code ec;
  std::filesystem::remove_all(staging, ec);  // left by a crash while creating
  if (ec) return Status::Storage("removing " + staging + ": " + ec.message());
  if (::mkdir(staging.c_str(), 0755) != 0) {
    return Status::Storage("creating " + staging + ": " + std::strerror(errno));
  }
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != 0) return Status::Storage(LmdbError("mdb_env_create", rc));
  MDB_txn* txn = nullptr;
  if (rc == 0) rc = ConfigureEnv(env, map_size_bytes);
  if (rc == 0) rc = mdb_env_open(env, staging.c_str(), MDB_NOTLS, 0644);
  // One commit that creates the meta database (every open needs it): it
  // syncs the pages, then the meta page, so both meta pages are whole.
  MDB_dbi dbi = 0;
  if (rc == 0) rc = mdb_txn_begin(env, nullptr, 0, &txn);
  if (rc == 0) rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &dbi);
  if (rc == 0) {
    rc = mdb_txn_commit(txn);
  } else if (txn != nullptr) {
    mdb_txn_abort(txn);
  }
  if (rc == 0) rc = mdb_env_sync(env, 1);
  mdb_env_close(env);
  if (rc != 0) {
    std::filesystem::remove_all(staging, ec);
    return Status::Storage("creating " + staging + "/data.mdb: " + LmdbError("LMDB", rc));
  }
  const std::string data_file = dir + "/data.mdb";
  if (::rename((staging + "/data.mdb").c_str(), data_file.c_str()) != 0) {
    const std::string error = std::strerror(errno);
    std::filesystem::remove_all(staging, ec);
    return Status::Storage("moving the new data.mdb into " + dir + ": " + error);
  }
  if (Status s = FsyncPath(dir, /*directory=*/true); !s.ok()) return s;
  std::filesystem::remove_all(staging, ec);
  return Status::Ok();
}

}  // namespace

Status LmdbStore::Open(const std::string& dir, uint64_t map_size_bytes,
                       std::unique_ptr<LmdbStore>* out) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::Storage("data_dir " + dir + ": " + std::strerror(errno));
  }
  const std::string data_file = dir + "/data.mdb";
  if (::access(data_file.c_str(), F_OK) != 0) {
    if (errno != ENOENT) return Status::Storage(data_file + ": " + std::strerror(errno));
    if (Status c = CreateDataFile(dir, map_size_bytes); !c.ok()) return c;
  }
  std::unique_ptr<LmdbStore> s(new LmdbStore());
  int rc = mdb_env_create(&s->env_);
  if (rc != 0) return Status::Storage(LmdbError("mdb_env_create", rc));
  // Flags 0 (below): durable commits with fsync, a read-only map (stray
  // writes through a pointer fault instead of corrupting), and a lock file
  // in the directory.
  if ((rc = ConfigureEnv(s->env_, map_size_bytes)) != 0) {
    return Status::Storage(LmdbError("configuring LMDB", rc));
  }
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
  if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->tables_.meta)) != 0 ||
      (rc = mdb_dbi_open(txn, "log", MDB_CREATE, &s->tables_.log)) != 0 ||
      (rc = mdb_dbi_open(txn, "index", MDB_CREATE, &s->tables_.index)) != 0 ||
      (rc = mdb_dbi_open(txn, "keys", MDB_CREATE, &s->tables_.keys)) != 0 ||
      (rc = mdb_dbi_open(txn, "key_offsets", MDB_CREATE, &s->tables_.key_offsets)) != 0) {
    return fail(OpenFailure("opening databases in " + data_file, rc));
  }
  // Whether the store holds anything the protocol relies on: then every
  // meta record must be there.
  bool holds_data = false;
  {
    MDB_stat st{};
    for (MDB_dbi dbi : {s->tables_.meta, s->tables_.log, s->tables_.index, s->tables_.keys}) {
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
    rc = mdb_get(txn, s->tables_.meta, &jk, &jv);
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
      uint64_t markers = 0;  // the empty records that begin passes (CommitPending)
      Status rs = s->journal_->Replay(
          generation,
          [&](std::span<const uint8_t> body) {
            markers += body.empty();
            return s->ApplyJournalRecord(txn, body);
          },
          &s->journal_replayed_);
      if (!rs.ok()) return fail(rs);
      s->journal_replayed_ -= markers;
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
    if ((rc = mdb_put(txn, s->tables_.meta, &jk, &mv, 0)) != 0) {
      return fail(OpenFailure("writing the journal record", rc));
    }
    s->journal_->Restart(next);
  }
  // Hard state.
  MDB_val k{sizeof(kHardStateKey) - 1, const_cast<char*>(kHardStateKey)};
  MDB_val v;
  rc = mdb_get(txn, s->tables_.meta, &k, &v);
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
  rc = mdb_get(txn, s->tables_.meta, &rk, &v);
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
    rc = mdb_get(txn, s->tables_.meta, &bk, &bv);
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
  if ((rc = mdb_cursor_open(txn, s->tables_.log, &cur)) != 0) return fail(OpenFailure("mdb_cursor_open", rc));
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
    if ((rc = mdb_cursor_open(txn, s->tables_.meta, &mc)) != 0) return fail(OpenFailure("mdb_cursor_open", rc));
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
  // The head: the end of the last index record that passes its check. One
  // that fails is reported (the index is rebuilt); the broker also checks
  // the head against the replayed log.
  if ((rc = s->index_.FindHead(txn, &s->next_offset_)) != 0) {
    return fail(OpenFailure("reading the offset index", rc));
  }
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

Status LmdbStore::ApplyJournalRecord(MDB_txn* txn, std::span<const uint8_t> body) {
  JournalOp op;
  for (size_t at = 0; at < body.size();) {
    const size_t start = at;
    switch (ParseJournalOp(body, &at, &op)) {
      case JournalOpParse::kOk: break;
      case JournalOpParse::kMalformed:
        return Status::Damaged("journal record: malformed operation at byte " +
                               std::to_string(start));
      case JournalOpParse::kNewer:
        return Status::Storage("journal record: operation code " +
                               std::to_string(body[start]) + " at byte " + std::to_string(start) +
                               " is not one this version knows: the journal was written by a "
                               "newer broker; start that version again");
    }
    const int rc = op.op == kJournalPut ? mdb_put(txn, tables_.Dbi(op.db), &op.key, &op.value, 0)
                                        : mdb_del(txn, tables_.Dbi(op.db), &op.key, nullptr);
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
  int rc = mdb_put(txn, tables_.meta, &k, &v, 0);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return Broken(LmdbError("writing the journal record", rc));
  }
  if ((rc = mdb_txn_commit(txn)) != 0) return Broken(LmdbError("mdb_txn_commit", rc));
  journal_->Restart(next);
  // The new pass begins at once with an empty record (written, not synced):
  // should LMDB later open an older commit (a meta page whose transaction id
  // rotted can look like the older one), Open finds this pass already begun
  // and refuses, even when no journaled write followed this commit (a large
  // write committed straight to LMDB is in no journal record).
  journal_->StartRecord();
  if (Status s = journal_->FinishRecord(); !s.ok()) return Broken(s.message());
  pending_first_instance_ = paxos::kNoInstance;
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::Get(paxos::Instance instance, paxos::Entry* out) const {
  const LoopTxn loop = LoopRead();
  MDB_txn* txn = loop.txn;
  if (txn == nullptr) return paxos::StoreCode::kIoError;
  return log_.Get(txn, instance, out);
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
  tables_.record = journal ? journal_->StartRecord() : nullptr;
  std::vector<uint8_t>* const record = tables_.record;
  int rc = 0;
  auto fail = [&](const char* what) {
    tables_.record = nullptr;
    pending_ = nullptr;
    mdb_txn_abort(txn);
    return Broken(LmdbError(what, rc));
  };
  if (hard_state != hard_state_) {
    const std::string meta = EncodeMetaRecord(hard_state);
    MDB_val k{sizeof(kHardStateKey) - 1, const_cast<char*>(kHardStateKey)};
    MDB_val v{meta.size(), const_cast<char*>(meta.data())};
    if ((rc = tables_.Put(txn, kMetaDb, k, v)) != 0) return fail("writing the hard state");
  }
  paxos::Instance last = last_instance_;
  uint64_t log_bytes = log_bytes_;
  for (const paxos::Entry& e : entries) {
    if (e.instance < first_instance_) continue;  // behind the snapshot: not kept
    unsigned char key[8];
    PutBigEndian(e.instance.value(), key);
    const LogRecordEncoder encoded(e);
    MDB_val k{8, key}, v{encoded.size(), nullptr};
    if (record != nullptr) {
      // Encoded into the journal record, and LMDB copies it from there.
      AppendJournalOp(record, kJournalPut, kLogDb, k, encoded.size());
      const size_t at = record->size();
      record->resize(at + encoded.size());
      encoded.WriteTo(record->data() + at);
      v.mv_data = record->data() + at;
      if ((rc = mdb_put(txn, tables_.log, &k, &v, 0)) != 0) return fail("writing a log record");
    } else {
      // Written in place: LMDB reserves the space in its page (MDB_RESERVE).
      if ((rc = mdb_put(txn, tables_.log, &k, &v, MDB_RESERVE)) != 0) {
        return fail("writing a log record");
      }
      encoded.WriteTo(static_cast<uint8_t*>(v.mv_data));
    }
    last = std::max(last, e.instance);
    log_bytes += encoded.size();  // an overwrite counts twice: an upper bound
    if (pending_first_instance_ == paxos::kNoInstance || e.instance < pending_first_instance_) {
      pending_first_instance_ = e.instance;
    }
  }
  uint64_t next = next_offset_;
  for (const paxos::AppliedInstance& a : applied) {
    if (a.appended == 0) continue;
    if ((rc = index_.Put(txn, a)) != 0) return fail("writing the offset index");
    next = std::max(next, a.first_offset.value() + a.appended);
    // The compacted view: the latest message of each key.
    if ((rc = view_.Apply(txn, a)) != 0) return fail("writing the compacted view");
  }
  if (log_bytes != log_bytes_) {
    Retained r = CurrentRetained();
    r.log_bytes = log_bytes;
    if ((rc = PutRetained(txn, r)) != 0) return fail("writing the retention record");
  }
  if (FinishWrite(journal, durability) != paxos::StoreCode::kOk) return paxos::StoreCode::kIoError;
  // A damaged record counts as repaired once its new copy is written.
  for (const paxos::Entry& e : entries) {
    if (e.instance >= first_instance_) damage_.Forget(Damage::Kind::kLogRecord, e.instance.value());
  }
  hard_state_ = hard_state;
  last_instance_ = last;
  next_offset_ = next;
  log_bytes_ = log_bytes;
  return paxos::StoreCode::kOk;
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

Retained LmdbStore::CurrentRetained() const {
  return Retained{first_instance_.value(), first_offset_, log_bytes_, snapshot_handle_};
}

int LmdbStore::PutBase(MDB_txn* txn, const paxos::AppliedSnapshot& base) {
  const std::string record = EncodeBase(base);
  MDB_val k{sizeof(kBaseKey) - 1, const_cast<char*>(kBaseKey)};
  MDB_val v{record.size(), const_cast<char*>(record.data())};
  return mdb_put(txn, tables_.meta, &k, &v, 0);
}

int LmdbStore::PutRetained(MDB_txn* txn, const Retained& r) {
  const std::string record = EncodeRetained(r);
  MDB_val k{sizeof(kRetainedKey) - 1, const_cast<char*>(kRetainedKey)};
  MDB_val v{record.size(), const_cast<char*>(record.data())};
  return tables_.Put(txn, kMetaDb, k, v);
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
  return view_.ReadAll(txn.get(), out);
}

paxos::StoreCode LmdbStore::ReadCompacted(uint64_t from, uint64_t to, size_t max_messages,
                                          size_t max_bytes, std::vector<StreamMessage>* out) const {
  const LoopTxn loop = LoopRead();
  if (loop.txn == nullptr) return paxos::StoreCode::kIoError;
  return view_.Read(loop.txn, from, to, max_messages, max_bytes, out);
}

paxos::StoreCode LmdbStore::FinishWrite(bool journaled, Durability durability) {
  tables_.record = nullptr;
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
  tables_.record = journal_->StartRecord();
  Retained r = CurrentRetained();
  r.snapshot = handle;
  if (const int rc = PutRetained(pending_, r); rc != 0) {
    tables_.record = nullptr;
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
  if ((rc = log_.DeleteBelow(txn, first, max_entries, deleted, &freed, &reached,
                             base ? &*base : nullptr,
                             snapshot_state_ ? &*snapshot_state_ : nullptr)) != 0) {
    return fail("truncating the log");
  }
  if (reached <= first_instance_) {  // stopped at a damaged record
    mdb_txn_abort(txn);
    return paxos::StoreCode::kOk;
  }
  // The offset index of the dropped instances; the first one left is the
  // earliest offset still served: where the base ends, when it is known.
  uint64_t first_offset = base ? base->next_offset().value() : next_offset_;
  if ((rc = index_.DeleteBelow(txn, base.has_value(), reached, &first_offset)) != 0) {
    return fail("truncating the offset index");
  }
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
  if (new_base) index_.RebaseRebuild(*new_base);
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
  if ((rc = log_.DeleteBelow(txn, state.instance.next(), SIZE_MAX, &deleted, &freed, &reached,
                             nullptr, nullptr)) != 0) {
    return fail("clearing the log");
  }
  if ((rc = mdb_drop(txn, tables_.index, 0)) != 0) return fail("clearing the offset index");
  if ((rc = view_.Replace(txn, keyed)) != 0) return fail("writing the compacted view");
  paxos::HardState hs = hard_state_;
  hs.chosen = std::max(hs.chosen, state.instance);
  const std::string meta = EncodeMetaRecord(hs);
  MDB_val mk{sizeof(kHardStateKey) - 1, const_cast<char*>(kHardStateKey)};
  MDB_val mv{meta.size(), const_cast<char*>(meta.data())};
  if ((rc = mdb_put(txn, tables_.meta, &mk, &mv, 0)) != 0) return fail("writing the hard state");
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
  index_.EndRebuild();
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
                                       const StreamVisitor& visit,
                                       const InstanceVisitor* on_instance,
                                       bool from_instance_start) const {
  if (from >= next_offset_ || max_messages == 0) return paxos::StoreCode::kOk;
  const LoopTxn loop = LoopRead();
  if (loop.txn == nullptr) return paxos::StoreCode::kIoError;
  return index_.Read(loop.txn, from, next_offset_, max_messages, max_bytes, visit, on_instance,
                     from_instance_start);
}

bool LmdbStore::ChainHead(paxos::ChainValue* out) const {
  const LoopTxn loop = LoopRead();
  if (loop.txn == nullptr) return false;
  ChainPoint last;
  if (index_.LastPoint(loop.txn, &last) && last.first_offset + last.count == next_offset_) {
    *out = last.after;
    return last.has_chain;
  }
  // No record: nothing appended since the base (or at all).
  if (next_offset_ == (base_ ? base_->next_offset.value() : 0)) {
    *out = base_ ? base_->chain : paxos::ChainValue{};
    return true;
  }
  return false;
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
  index_.StartRebuild(*base_);
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
  if ((rc = view_.Replace(txn, keyed)) != 0) return Abort(txn, "writing the compacted view", rc);
  for (paxos::Instance i = state.applied().next(); i <= applied; i = i.next()) {
    paxos::Entry e;
    if (const paxos::StoreCode code = log_.Get(txn, i, &e); code != paxos::StoreCode::kOk) {
      mdb_txn_abort(txn);
      if (code == paxos::StoreCode::kNotFound) return log_.Missing(i.value(), "it was applied");
      return code;
    }
    const paxos::AppliedInstance a = state.Apply(i, e.value);
    if ((rc = view_.Apply(txn, a)) != 0) return Abort(txn, "writing the compacted view", rc);
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
  if (!index_.rebuilding()) return paxos::StoreCode::kNotFound;
  MDB_txn* txn = nullptr;
  if (BeginWrite(&txn) != paxos::StoreCode::kOk) return paxos::StoreCode::kIoError;
  paxos::StoreCode code = paxos::StoreCode::kOk;
  bool finished = false;
  int rc = index_.RebuildStep(txn, applied, max_instances, base_ ? &*base_ : nullptr, &code,
                              &finished);
  if (rc != 0) return Abort(txn, "rebuilding the offset index", rc);
  if ((rc = mdb_txn_commit(txn)) != 0) {
    last_error_ = LmdbError("mdb_txn_commit", rc);
    return paxos::StoreCode::kIoError;
  }
  *fixed = index_.rebuild_fixed();
  if (code != paxos::StoreCode::kOk) return code;
  if (finished) {
    next_offset_ = std::max(index_.rebuild_head(), first_offset_);
    damage_.ForgetDerived();
    index_.EndRebuild();
    *done = true;
  }
  return paxos::StoreCode::kOk;
}

}  // namespace ordo::broker
