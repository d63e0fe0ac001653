#include "broker/offset_index.h"

#include <cstring>

#include "broker/lmdb_formats.h"

namespace ordo::broker {

using namespace lmdb;  // NOLINT: the formats this file reads and writes

int OffsetIndex::Put(MDB_txn* txn, const paxos::AppliedInstance& a) {
  unsigned char key[8];
  PutBigEndian(a.first_offset.value(), key);
  const std::string record = EncodeIndex(a);
  MDB_val k{8, key}, v{record.size(), const_cast<char*>(record.data())};
  return tables_.Put(txn, kIndexDb, k, v);
}

int OffsetIndex::FindHead(MDB_txn* txn, uint64_t* head) const {
  *head = 0;
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, tables_.index, &cur);
  if (rc != 0) return rc;
  MDB_val k, v;
  rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  for (int back = 0; rc == 0 && back < 64; ++back) {
    IndexRecord r;
    if (DecodeIndex(k, v, &r)) {
      *head = r.first_offset + r.appended;
      break;
    }
    damage_.Note(StorageDamage{StorageDamage::Kind::kIndexRecord, 0,
                               k.mv_size == 8 ? GetBigEndian(k.mv_data) : 0,
                               "offset index: the record at its end fails its check"});
    rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

bool OffsetIndex::LastPoint(MDB_txn* txn, ChainPoint* out) const {
  MDB_cursor* cur = nullptr;
  if (mdb_cursor_open(txn, tables_.index, &cur) != 0) return false;
  MDB_val k, v;
  IndexRecord r;
  const bool ok = mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && DecodeIndex(k, v, &r);
  mdb_cursor_close(cur);
  if (!ok) return false;
  *out = ChainPoint{r.instance, r.first_offset, r.appended, r.has_chain, r.chain_before, r.chain};
  return true;
}

paxos::StoreCode OffsetIndex::Read(MDB_txn* txn, uint64_t from, uint64_t head, size_t max_messages,
                                   size_t max_bytes, const Visitor& visit,
                                   const InstanceVisitor* on_instance,
                                   bool from_instance_start) const {
  if (from >= head || max_messages == 0) return paxos::StoreCode::kOk;
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, tables_.index, &cur);
  if (rc != 0) {
    *last_error_ = LmdbError("mdb_cursor_open", rc);
    return paxos::StoreCode::kIoError;
  }
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
  std::optional<ChainPoint> previous_chain;
  auto index_damage = [&](uint64_t offset, const std::string& what) {
    code = damage_.Note(StorageDamage{StorageDamage::Kind::kIndexRecord, 0, offset,
                                      "offset index at offset " + std::to_string(offset) + ": " +
                                          what});
  };
  while (!full && taken < max_messages && (taken == 0 || bytes < max_bytes)) {
    const uint64_t want = expected ? *expected : from;
    if (want >= head) break;  // everything up to the head was read
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
    // Each record's chain goes on from the one before it: a record that
    // does not is damaged (its CRC held, so it was written so, or moved).
    if (previous_chain && idx.has_chain && previous_chain->has_chain &&
        idx.chain_before != previous_chain->after) {
      index_damage(idx.first_offset, "its chain does not go on from the record before it");
      break;
    }
    if (!expected && from_instance_start) from = idx.first_offset;
    const ChainPoint point{idx.instance,  idx.first_offset, idx.appended,
                           idx.has_chain, idx.chain_before, idx.chain};
    bool point_sent = false;
    std::span<const uint8_t> record;
    code = log_.Raw(txn, idx.instance, &record, last_error_);
    if (code == paxos::StoreCode::kNotFound) {
      // Applied instances stay in the log until truncation removes their
      // index too: the record was lost.
      code = log_.Missing(idx.instance, "the offset index names it");
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
          if (on_instance != nullptr && !point_sent) {
            (*on_instance)(point);
            point_sent = true;
          }
          visit(o, m);
          bytes += m.key.size() + m.payload.size() + 32;
          ++taken;
        });
    if (!d.ok() || wrong_instance) {
      code = log_.Corrupt(idx.instance, d);
      break;
    }
    if (wrong_count) {
      index_damage(idx.first_offset, "its record does not match instance " +
                                         std::to_string(idx.instance) + "'s messages");
      break;
    }
    expected = end;
    previous_chain = point;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  return code;
}

int OffsetIndex::DeleteBelow(MDB_txn* txn, bool has_base, paxos::Instance reached,
                             uint64_t* first_offset) {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, tables_.index, &cur);
  if (rc != 0) return rc;
  MDB_val k, v;
  for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;) {
    IndexRecord idx;
    if (has_base ? k.mv_size == 8 && GetBigEndian(k.mv_data) >= *first_offset
                 : DecodeIndex(k, v, &idx) && paxos::Instance(idx.instance) >= reached) {
      if (!has_base) *first_offset = GetBigEndian(k.mv_data);
      break;
    }
    if ((rc = mdb_cursor_del(cur, 0)) != 0) break;
    rc = mdb_cursor_get(cur, &k, &v, MDB_GET_CURRENT);
    if (rc != 0) rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

int OffsetIndex::RebuildStep(MDB_txn* txn, paxos::Instance applied, size_t max_instances,
                             const paxos::AppliedSnapshot* base, paxos::StoreCode* code,
                             bool* finished) {
  *code = paxos::StoreCode::kOk;
  *finished = false;
  if (!rebuild_) return 0;
  Rebuild& rb = *rebuild_;
  int rc = 0;
  MDB_cursor* cur = nullptr;
  if ((rc = mdb_cursor_open(txn, tables_.index, &cur)) != 0) return rc;
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
    *code = log_.Get(txn, i, &e);
    if (*code == paxos::StoreCode::kNotFound) *code = log_.Missing(i.value(), "it was applied");
    if (*code != paxos::StoreCode::kOk) break;  // what was checked so far is kept
    const paxos::AppliedInstance a = rb.state.Apply(i, e.value);
    ++n;
    if (a.appended == 0) continue;
    const std::string record = EncodeIndex(a);
    unsigned char key[8];
    PutBigEndian(a.first_offset.value(), key);
    MDB_val k{8, key}, v;
    rc = mdb_get(txn, tables_.index, &k, &v);
    if (rc != 0 && rc != MDB_NOTFOUND) break;
    if (rc == MDB_NOTFOUND || v.mv_size != record.size() ||
        std::memcmp(v.mv_data, record.data(), record.size()) != 0) {
      MDB_val rv{record.size(), const_cast<char*>(record.data())};
      if ((rc = mdb_put(txn, tables_.index, &k, &rv, 0)) != 0) break;
      ++rb.fixed;
    }
    rc = remove_strays(a.first_offset.value() + 1, a.first_offset.value() + a.appended);
    if (rc != 0) break;
  }
  *finished = *code == paxos::StoreCode::kOk && rc == 0 && rb.state.applied() >= applied;
  // Past the head nothing belongs in the index; below the base nothing is retained.
  if (*finished) rc = remove_strays(rb.state.next_offset().value(), UINT64_MAX);
  if (*finished && rc == 0 && base != nullptr) rc = remove_strays(0, base->next_offset.value());
  mdb_cursor_close(cur);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

}  // namespace ordo::broker
