// The offset index: first offset (big-endian u64) -> index record
// (lmdb_formats.h: the instance and which of its messages got no offset),
// one for each applied instance that appended a message, in the store's
// `index` database. Stream reads follow it into the log. It is derived from
// the log: a record that fails its check (or is missing, or moved under
// another key) is reported (DamageRegistry), never served, and rebuilt from
// the log by RebuildStep, from the applied state at the log's start (the
// base).
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <functional>
#include <optional>

#include "broker/codec.h"
#include "broker/lmdb_tables.h"
#include "broker/log_table.h"
#include "broker/storage_damage.h"
#include "paxos/applied_state.h"

namespace ordo::broker {

class OffsetIndex {
 public:
  OffsetIndex(LmdbTables& tables, const LogTable& log, DamageRegistry& damage,
              std::string* last_error)
      : tables_(tables), log_(log), damage_(damage), last_error_(last_error) {}

  // The record of `a` (which appended at least one message); journaled when
  // the write is. Returns an LMDB code.
  int Put(MDB_txn* txn, const paxos::AppliedInstance& a);
  // *head: the end of the last record that passes its check (0 when none);
  // the ones after it are reported. Returns an LMDB code.
  int FindHead(MDB_txn* txn, uint64_t* head) const;

  // Messages from offset `from` up to `head`, in offset order: visit(offset,
  // message) for each, the spans valid only during the call, until
  // `max_messages` or `max_bytes` (at least one when any is available).
  // kCorrupt (reported) when an index or log record on the way fails its
  // check: the messages before it were visited, nothing after it.
  // With `on_instance`, each instance's chain point is passed to it before
  // the first of its messages is visited; with `from_instance_start`, the
  // read starts at the first offset of the instance holding `from` (a
  // reader verifying the chain needs every message of an instance).
  using Visitor = std::function<void(uint64_t offset, const MessageView& message)>;
  using InstanceVisitor = std::function<void(const ChainPoint& point)>;
  paxos::StoreCode Read(MDB_txn* txn, uint64_t from, uint64_t head, size_t max_messages,
                        size_t max_bytes, const Visitor& visit,
                        const InstanceVisitor* on_instance = nullptr,
                        bool from_instance_start = false) const;
  // The chain point of the last record (the chain at the head); false when
  // the index is empty or that record fails its check.
  bool LastPoint(MDB_txn* txn, ChainPoint* out) const;

  // Truncation: deletes the records of instances below `reached` (with a
  // base, those below base's next offset instead). *first_offset: the first
  // offset kept (given: base's next offset when there is a base, else the
  // head). Returns an LMDB code.
  int DeleteBelow(MDB_txn* txn, bool has_base, paxos::Instance reached, uint64_t* first_offset);

  // --- rebuilding from the log ---
  void StartRebuild(const paxos::AppliedSnapshot& base) {
    rebuild_ = Rebuild{paxos::AppliedState(base), 0};
  }
  bool rebuilding() const { return rebuild_.has_value(); }
  // The instance the rebuild reads next (the damaged one it waits for).
  paxos::Instance rebuild_next() const {
    return rebuild_ ? rebuild_->state.applied().next() : paxos::kNoInstance;
  }
  // Where the rebuilt index ends (its head).
  uint64_t rebuild_head() const { return rebuild_ ? rebuild_->state.next_offset().value() : 0; }
  uint64_t rebuild_fixed() const { return rebuild_ ? rebuild_->fixed : 0; }
  void EndRebuild() { rebuild_.reset(); }
  // The log's start moved to `base`: a rebuild behind it goes on from it
  // (the records it would read are gone, and so is their part of the index).
  void RebaseRebuild(const paxos::AppliedSnapshot& base) {
    if (rebuild_ && rebuild_->state.applied() < base.instance) {
      rebuild_->state = paxos::AppliedState(base);
    }
  }
  // Checks (and rewrites where they differ) the records of up to
  // `max_instances` more instances, up to `applied`, in `txn`. *code: kOk, or
  // the log's code at a record it could not read (reported; the rebuild
  // waits there). *finished: it reached `applied`, and strays past the head
  // and (with `base`) below the base are gone. Returns an LMDB code.
  int RebuildStep(MDB_txn* txn, paxos::Instance applied, size_t max_instances,
                  const paxos::AppliedSnapshot* base, paxos::StoreCode* code, bool* finished);

 private:
  struct Rebuild {
    paxos::AppliedState state;  // as of the last instance checked
    uint64_t fixed = 0;         // records rewritten or removed
  };

  LmdbTables& tables_;
  const LogTable& log_;
  DamageRegistry& damage_;
  std::string* last_error_;
  std::optional<Rebuild> rebuild_;
};

}  // namespace ordo::broker
