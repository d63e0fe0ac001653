// The log: instance (big-endian u64) -> log record (CRC32C + LogRecord,
// broker/codec.h), in the store's `log` database. Reads check each record
// and report one that fails (DamageRegistry) instead of returning it.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <span>
#include <string>

#include "broker/codec.h"
#include "broker/lmdb_tables.h"
#include "broker/storage_damage.h"
#include "paxos/applied_state.h"
#include "paxos/log_store.h"

namespace ordo::broker {

class LogTable {
 public:
  LogTable(const LmdbTables& tables, DamageRegistry& damage, std::string* last_error)
      : tables_(tables), damage_(damage), last_error_(last_error) {}

  // The stored bytes of the record of `instance`, valid while `txn` lives;
  // unchecked. Touches no state: any thread, in a transaction of its own.
  // kOk, kNotFound, or kIoError with *error.
  paxos::StoreCode Raw(MDB_txn* txn, uint64_t instance, std::span<const uint8_t>* record,
                       std::string* error) const;
  // The record of `instance`, checked and decoded. kCorrupt (reported) when
  // it fails its check or is stored under another instance.
  paxos::StoreCode Get(MDB_txn* txn, paxos::Instance instance, paxos::Entry* out) const;
  // Reports the record of `instance` as damaged (kCorrupt): it failed its
  // check `d`, or (d ok) is stored under the wrong key.
  paxos::StoreCode Corrupt(uint64_t instance, const DecodeStatus& d) const;
  // Reports the record of `instance` as missing: `why` it must be there.
  paxos::StoreCode Missing(uint64_t instance, const std::string& why) const;

  // Deletes the records below `below`, oldest first, at most `max` of them;
  // *next is the first instance kept (`below` when none was left behind),
  // *freed their bytes. Returns an LMDB code (0 = ok). With `base`, each
  // record is applied to it before it goes; a record that fails its check
  // stops the deletion there (*next = it), unless `snapshot` covers it:
  // then the base jumps to the snapshot.
  int DeleteBelow(MDB_txn* txn, paxos::Instance below, size_t max, size_t* deleted,
                  uint64_t* freed, paxos::Instance* next, paxos::AppliedState* base,
                  const paxos::AppliedSnapshot* snapshot) const;
  // With a base to move, a truncation step decodes each record: it is
  // bounded in bytes too, so it never stalls the loop long.
  static constexpr uint64_t kDeleteBytesPerStep = 4 << 20;

 private:
  const LmdbTables& tables_;
  DamageRegistry& damage_;
  std::string* last_error_;
};

}  // namespace ordo::broker
