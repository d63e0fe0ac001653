// The broker's durable storage: one LMDB environment per broker, behind the
// core's LogStore interface, plus the offset index that serves subscribers.
//
// Named databases (all keys big-endian u64, so LMDB's byte order is numeric):
//   meta   "hard_state" -> meta record (CRC32C + MetaRecord, broker/codec.h)
//   log    instance     -> log record (CRC32C + LogRecord)
//   index  first offset -> index record: CRC32C (4, LE) over the rest, then
//          version (u16 = 1), instance (u64), appended (u32), n_skipped (u32),
//          then n_skipped u32 positions in the batch of messages that got no
//          offset (duplicates, out of sequence, stale leader), all LE.
//          Written only for instances that appended at least one message.
//
// Every Commit is one write transaction; LMDB's default durable commit (fsync)
// is the durability point the protocol relies on. Options are spelled out in
// Open() rather than left to defaults.
//
// Thread rules: single-threaded (the broker's event loop).
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "broker/status.h"
#include "paxos/applied_state.h"
#include "paxos/log_store.h"

namespace ordo::broker {

// One message of the stream as served to subscribers.
struct StreamMessage {
  uint64_t offset = 0;
  uint64_t producer = 0;
  uint64_t sequence = 0;
  std::string key;
  std::string payload;
};

class LmdbStore final : public paxos::LogStore {
 public:
  // Opens (creating if needed) the environment in directory `dir`.
  static Status Open(const std::string& dir, uint64_t map_size_bytes,
                     std::unique_ptr<LmdbStore>* out);
  ~LmdbStore() override;
  LmdbStore(const LmdbStore&) = delete;
  LmdbStore& operator=(const LmdbStore&) = delete;

  // --- paxos::LogStore ---
  paxos::HardState LoadHardState() const override { return hard_state_; }
  paxos::Instance LastInstance() const override { return last_instance_; }
  paxos::StoreCode Get(paxos::Instance instance, paxos::Entry* out) const override;
  paxos::StoreCode Save(const paxos::HardState& hard_state,
                        std::span<const paxos::Entry> entries) override;

  // Saves a whole Ready in one transaction: hard state, entries, and the
  // offset index of the instances it applied.
  paxos::StoreCode Commit(const paxos::HardState& hard_state, std::span<const paxos::Entry> entries,
                          std::span<const paxos::AppliedInstance> applied);

  // --- the stream ---
  // One past the last offset in the index (the head a subscriber can reach).
  uint64_t next_offset() const { return next_offset_; }
  uint64_t earliest_offset() const { return 0; }
  // Appends messages from `from` on, in offset order, until `max_messages` or
  // `max_bytes` (at least one message is returned when any is available).
  // kCorrupt when a record on the way fails its check: the messages before it
  // are returned, nothing after it.
  paxos::StoreCode ReadStream(uint64_t from, size_t max_messages, size_t max_bytes,
                              std::vector<StreamMessage>* out) const;

  // Records that failed their checksum, since open.
  uint64_t corruptions() const { return corruptions_; }
  // The environment held no hard state and no log when opened: a new member,
  // or one whose disk was lost (the core tells them apart by asking peers).
  bool opened_empty() const { return opened_empty_; }
  const std::string& last_error() const { return last_error_; }

 private:
  LmdbStore() = default;
  paxos::StoreCode GetIn(MDB_txn* txn, paxos::Instance instance, paxos::Entry* out) const;

  MDB_env* env_ = nullptr;
  MDB_dbi meta_ = 0;
  MDB_dbi log_ = 0;
  MDB_dbi index_ = 0;
  paxos::HardState hard_state_{};
  paxos::Instance last_instance_{};
  uint64_t next_offset_ = 0;
  mutable uint64_t corruptions_ = 0;
  bool opened_empty_ = false;
  mutable std::string last_error_;
};

}  // namespace ordo::broker
