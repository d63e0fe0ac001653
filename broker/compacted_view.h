// The compacted view: the latest message of each key, derived from the log
// (and the latest snapshot's keyed messages). Two databases: `keys`
// (message key -> compacted-view record, lmdb_formats.h) and `key_offsets`
// (its offset, big-endian -> message key), for reads in offset order. A
// record that fails its check is reported (DamageRegistry), never served;
// the store rebuilds the view from the log.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <span>
#include <vector>

#include "broker/codec.h"
#include "broker/lmdb_tables.h"
#include "broker/status.h"
#include "broker/storage_damage.h"
#include "paxos/applied_state.h"

namespace ordo::broker {

class CompactedView {
 public:
  CompactedView(LmdbTables& tables, DamageRegistry& damage, std::string* last_error)
      : tables_(tables), damage_(damage), last_error_(last_error) {}

  // The keyed messages `a` appended become their keys' latest (journaled
  // when the write is). Returns an LMDB code (0 = ok).
  int Apply(MDB_txn* txn, const paxos::AppliedInstance& a);
  // Replaces the whole view with `keyed` (a snapshot's). Not journaled:
  // only in transactions committed at once.
  int Replace(MDB_txn* txn, std::span<const StreamMessage> keyed);
  // The whole view in ascending key order. Touches no state: any thread,
  // in a transaction of its own.
  Status ReadAll(MDB_txn* txn, std::vector<StreamMessage>* out) const;
  // The latest message of each key whose offset is in [from, to) (to 0: no
  // bound), in offset order, until `max_messages` or `max_bytes` (at least
  // one when any). kCorrupt (reported) at a record that fails its check:
  // the messages before it are returned.
  paxos::StoreCode Read(MDB_txn* txn, uint64_t from, uint64_t to, size_t max_messages,
                        size_t max_bytes, std::vector<StreamMessage>* out) const;

 private:
  int Put(MDB_txn* txn, const paxos::ClientMessage& m, uint64_t offset);

  LmdbTables& tables_;
  DamageRegistry& damage_;
  std::string* last_error_;
};

}  // namespace ordo::broker
