#include "broker/log_table.h"

#include "broker/lmdb_formats.h"

namespace ordo::broker {

using namespace lmdb;  // NOLINT: the formats this file reads

paxos::StoreCode LogTable::Raw(MDB_txn* txn, uint64_t instance, std::span<const uint8_t>* record,
                               std::string* error) const {
  unsigned char key[8];
  PutBigEndian(instance, key);
  MDB_val k{8, key}, v;
  const int rc = mdb_get(txn, tables_.log, &k, &v);
  if (rc == MDB_NOTFOUND) return paxos::StoreCode::kNotFound;
  if (rc != 0) {
    *error = LmdbError("mdb_get", rc);
    return paxos::StoreCode::kIoError;
  }
  *record = {static_cast<const uint8_t*>(v.mv_data), v.mv_size};
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LogTable::Get(MDB_txn* txn, paxos::Instance instance, paxos::Entry* out) const {
  std::span<const uint8_t> record;
  if (paxos::StoreCode code = Raw(txn, instance.value(), &record, last_error_);
      code != paxos::StoreCode::kOk) {
    return code;
  }
  paxos::Entry e;
  const DecodeStatus d = DecodeLogRecord(record, &e);
  if (!d.ok() || e.instance != instance) return Corrupt(instance.value(), d);
  *out = std::move(e);
  return paxos::StoreCode::kOk;
}

paxos::StoreCode LogTable::Corrupt(uint64_t instance, const DecodeStatus& d) const {
  return damage_.Note(StorageDamage{
      StorageDamage::Kind::kLogRecord, instance, 0,
      "log record for instance " + std::to_string(instance) + ": " +
          (d.ok() ? std::string("stored under the wrong key") : d.ToString())});
}

paxos::StoreCode LogTable::Missing(uint64_t instance, const std::string& why) const {
  return damage_.Note(StorageDamage{
      StorageDamage::Kind::kLogRecord, instance, 0,
      "log record for instance " + std::to_string(instance) + " is missing (" + why + ")"});
}

int LogTable::DeleteBelow(MDB_txn* txn, paxos::Instance below, size_t max, size_t* deleted,
                          uint64_t* freed, paxos::Instance* next, paxos::AppliedState* base,
                          const paxos::AppliedSnapshot* snapshot) const {
  MDB_cursor* cur = nullptr;
  int rc = mdb_cursor_open(txn, tables_.log, &cur);
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
    if (*deleted >= max || (base != nullptr && *freed >= kDeleteBytesPerStep)) {
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
      const bool bad = !d.ok() || e.instance != i || e.value == nullptr;
      if (bad && snapshot != nullptr && snapshot->instance >= i) {
        // Damaged or missing, but this node's snapshot covers it: the base
        // jumps to the snapshot and the log goes up to it (peers may have
        // truncated the record, so it may never be repaired).
        *base = paxos::AppliedState(*snapshot);
        *next = std::max(*next, snapshot->instance.next());
        *freed += v.mv_size;
        if ((rc = mdb_cursor_del(cur, 0)) != 0) break;
        ++*deleted;
        continue;
      }
      if (bad) {
        const paxos::Instance damaged = i == base->applied().next() ? i : base->applied().next();
        damage_.Note(StorageDamage{
            StorageDamage::Kind::kLogRecord, damaged.value(), 0,
            "log record for instance " + std::to_string(damaged.value()) + ": " +
                (d.ok() ? std::string("missing or stored under the wrong key") : d.ToString())});
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

}  // namespace ordo::broker
