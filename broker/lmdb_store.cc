#include "broker/lmdb_store.h"

#include <sys/stat.h>

#include <cstring>

#include "broker/codec.h"
#include "broker/crc32c.h"
#include "paxos/assert.h"

namespace ordo::broker {

namespace {

constexpr char kHardStateKey[] = "hard_state";
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
      (rc = mdb_env_set_maxdbs(s->env_, 3)) != 0 ||
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
      (rc = mdb_dbi_open(txn, "index", MDB_CREATE, &s->index_)) != 0) {
    mdb_txn_abort(txn);
    return Status::Error(LmdbError("opening databases", rc));
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
  s->opened_empty_ = no_hard_state && s->last_instance_ == paxos::kNoInstance;
  if ((rc = mdb_txn_commit(txn)) != 0) return Status::Error(LmdbError("mdb_txn_commit", rc));
  *out = std::move(s);
  return Status::Ok();
}

LmdbStore::~LmdbStore() {
  if (env_) mdb_env_close(env_);
}

paxos::StoreCode LmdbStore::GetIn(MDB_txn* txn, paxos::Instance instance,
                                  paxos::Entry* out) const {
  unsigned char key[8];
  PutBigEndian(instance.value(), key);
  MDB_val k{8, key}, v;
  const int rc = mdb_get(txn, log_, &k, &v);
  if (rc == MDB_NOTFOUND) return paxos::StoreCode::kNotFound;
  if (rc != 0) {
    last_error_ = LmdbError("mdb_get", rc);
    return paxos::StoreCode::kIoError;
  }
  paxos::Entry e;
  const DecodeStatus d = DecodeLogRecord({static_cast<const uint8_t*>(v.mv_data), v.mv_size}, &e);
  if (!d.ok() || e.instance != instance) {
    ++corruptions_;
    last_error_ = "log record for instance " + std::to_string(instance.value()) + ": " +
                  (d.ok() ? std::string("stored under the wrong key") : d.ToString());
    return paxos::StoreCode::kCorrupt;
  }
  *out = std::move(e);
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::Get(paxos::Instance instance, paxos::Entry* out) const {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn);
  if (rc != 0) {
    last_error_ = LmdbError("mdb_txn_begin", rc);
    return paxos::StoreCode::kIoError;
  }
  const paxos::StoreCode code = GetIn(txn, instance, out);
  mdb_txn_abort(txn);
  return code;
}

paxos::StoreCode LmdbStore::Save(const paxos::HardState& hard_state,
                                 std::span<const paxos::Entry> entries) {
  return Commit(hard_state, entries, {});
}

paxos::StoreCode LmdbStore::Commit(const paxos::HardState& hard_state,
                                   std::span<const paxos::Entry> entries,
                                   std::span<const paxos::AppliedInstance> applied) {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, 0, &txn);
  if (rc != 0) {
    last_error_ = LmdbError("mdb_txn_begin", rc);
    return paxos::StoreCode::kIoError;
  }
  auto fail = [&](const char* what) {
    last_error_ = LmdbError(what, rc);
    mdb_txn_abort(txn);
    return paxos::StoreCode::kIoError;
  };
  if (hard_state != hard_state_) {
    const std::string meta = EncodeMetaRecord(hard_state);
    MDB_val k{sizeof(kHardStateKey) - 1, const_cast<char*>(kHardStateKey)};
    MDB_val v{meta.size(), const_cast<char*>(meta.data())};
    if ((rc = mdb_put(txn, meta_, &k, &v, 0)) != 0) return fail("writing the hard state");
  }
  paxos::Instance last = last_instance_;
  for (const paxos::Entry& e : entries) {
    unsigned char key[8];
    PutBigEndian(e.instance.value(), key);
    const std::string record = EncodeLogRecord(e);
    MDB_val k{8, key}, v{record.size(), const_cast<char*>(record.data())};
    if ((rc = mdb_put(txn, log_, &k, &v, 0)) != 0) return fail("writing a log record");
    last = std::max(last, e.instance);
  }
  uint64_t next = next_offset_;
  for (const paxos::AppliedInstance& a : applied) {
    if (a.appended == 0) continue;
    unsigned char key[8];
    PutBigEndian(a.first_offset.value(), key);
    const std::string record = EncodeIndex(a);
    MDB_val k{8, key}, v{record.size(), const_cast<char*>(record.data())};
    if ((rc = mdb_put(txn, index_, &k, &v, 0)) != 0) return fail("writing the offset index");
    next = std::max(next, a.first_offset.value() + a.appended);
  }
  if ((rc = mdb_txn_commit(txn)) != 0) {
    last_error_ = LmdbError("mdb_txn_commit", rc);
    return paxos::StoreCode::kIoError;
  }
  hard_state_ = hard_state;
  last_instance_ = last;
  next_offset_ = next;
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LmdbStore::ReadStream(uint64_t from, size_t max_messages, size_t max_bytes,
                                       std::vector<StreamMessage>* out) const {
  if (from >= next_offset_ || max_messages == 0) return paxos::StoreCode::kOk;
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn);
  if (rc != 0) {
    last_error_ = LmdbError("mdb_txn_begin", rc);
    return paxos::StoreCode::kIoError;
  }
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
  while (rc == 0 && taken < max_messages && (taken == 0 || bytes < max_bytes)) {
    IndexRecord idx;
    if (k.mv_size != 8 || !DecodeIndex(v, &idx)) {
      ++corruptions_;
      last_error_ = "offset index record fails its check";
      code = paxos::StoreCode::kCorrupt;
      break;
    }
    const uint64_t first = GetBigEndian(k.mv_data);
    paxos::Entry e;
    code = GetIn(txn, paxos::Instance(idx.instance), &e);
    if (code != paxos::StoreCode::kOk) break;
    uint64_t offset = first;
    size_t skip = 0;
    const auto& msgs = e.value->messages;
    for (uint32_t i = 0; i < msgs.size() && taken < max_messages; ++i) {
      if (skip < idx.skipped.size() && idx.skipped[skip] == i) {
        ++skip;
        continue;
      }
      if (offset >= from) {
        if (taken > 0 && bytes >= max_bytes) break;
        out->push_back(StreamMessage{offset, msgs[i].producer.value(), msgs[i].sequence,
                                     msgs[i].key, msgs[i].payload});
        bytes += msgs[i].key.size() + msgs[i].payload.size() + 32;
        ++taken;
      }
      ++offset;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return code;
}

}  // namespace ordo::broker
