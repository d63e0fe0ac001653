// The named LMDB databases of one store (see broker/lmdb_store.h for what
// each holds), and the writes into them that the journal mirrors: a Put or
// Del made while a journal record is being built (`record` set) is appended
// to it as an operation (lmdb_formats.h), which Open replays after a crash.
// Shared by the store's parts (LogTable, OffsetIndex, CompactedView); one
// thread, the broker's event loop, writes.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <vector>

#include "broker/lmdb_formats.h"
#include "paxos/assert.h"

namespace ordo::broker {

struct LmdbTables {
  MDB_dbi meta = 0;
  MDB_dbi log = 0;
  MDB_dbi index = 0;
  MDB_dbi keys = 0;         // message key -> latest message of that key
  MDB_dbi key_offsets = 0;  // its offset (big-endian) -> message key
  // The journal record the current write is building, if any.
  std::vector<uint8_t>* record = nullptr;

  MDB_dbi Dbi(lmdb::JournalDb db) const {
    switch (db) {
      case lmdb::kMetaDb: return meta;
      case lmdb::kLogDb: return log;
      case lmdb::kIndexDb: return index;
      case lmdb::kKeysDb: return keys;
      case lmdb::kKeyOffsetsDb: return key_offsets;
      case lmdb::kDbCount: break;
    }
    PAXOS_ASSERT(false && "unknown database");
    return meta;
  }
  // mdb_put / mdb_del, mirrored into `record` when there is one.
  int Put(MDB_txn* txn, lmdb::JournalDb db, const MDB_val& key, const MDB_val& value) {
    MDB_val k = key, v = value;
    const int rc = mdb_put(txn, Dbi(db), &k, &v, 0);
    if (rc == 0 && record != nullptr) {
      lmdb::AppendJournalOp(record, lmdb::kJournalPut, db, key, value.mv_size);
      const auto* b = static_cast<const uint8_t*>(value.mv_data);
      record->insert(record->end(), b, b + value.mv_size);
    }
    return rc;
  }
  int Del(MDB_txn* txn, lmdb::JournalDb db, const MDB_val& key) {
    MDB_val k = key;
    const int rc = mdb_del(txn, Dbi(db), &k, nullptr);
    if (rc == 0 && record != nullptr) lmdb::AppendJournalOp(record, lmdb::kJournalDel, db, key, 0);
    return rc;
  }
};

}  // namespace ordo::broker
