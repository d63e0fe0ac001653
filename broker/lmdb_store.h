// The broker's durable storage: one LMDB environment per broker, behind the
// core's LogStore interface, plus what serves subscribers. LmdbStore is the
// composition and the durability path (the pending transaction and the
// journal); each concept is a part of its own, over the same databases
// (lmdb_tables.h) and transactions, with its format in lmdb_formats.h:
//   meta   "hard_state", "retained", "journal", "base": the hard state, where
//          the log starts and its snapshot (retention, here), the journal
//          generation that continues this commit, the applied state at the
//          log's start
//   log    instance -> log record (CRC32C + LogRecord): LogTable
//   index  first offset -> index record: OffsetIndex (reads, truncation,
//          the rebuild from the log)
//   keys, key_offsets: the compacted view: CompactedView
// Keys are big-endian u64 where numeric, so LMDB's byte order is numeric.
// What reads find damaged goes to one DamageRegistry (storage_damage.h);
// the check of a whole store at start and the rewrite after damage are in
// lmdb_scrub.cc.
//
// The durability point the protocol relies on is either LMDB's default
// durable commit, or a record in the write-ahead journal (broker/journal.h,
// DIR/journal) synced with fdatasync: a small Commit with Durability::kJournal
// goes into an LMDB write transaction that stays open (the "pending" one) and
// into one journal record. CommitPending commits that transaction durably,
// after which the journal starts over; Open replays what the journal holds
// beyond LMDB's last commit. The loop's own reads go through the pending
// transaction, so they see every write; other threads' read transactions see
// LMDB's last commit only (CommitPending first). Options are spelled out in
// Open() rather than left to defaults.
//
// Thread rules: the broker's event loop, except BeginRead, RawLogRecord
// and ReadKeyed, which other threads (the catch-up server, the snapshot
// encoder) call with read transactions they begin and end themselves
// (ReadTxn, broker/lmdb_txn.h): those see LMDB's last commit, not the
// pending transaction.
#pragma once

#include <lmdb.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "broker/codec.h"
#include "broker/journal.h"
#include "broker/compacted_view.h"
#include "broker/lmdb_formats.h"
#include "broker/lmdb_tables.h"
#include "broker/lmdb_txn.h"
#include "broker/log_table.h"
#include "broker/offset_index.h"
#include "broker/storage_damage.h"
#include "broker/status.h"
#include "paxos/applied_state.h"
#include "paxos/log_store.h"

namespace ordo::broker {


class LmdbStore final : public paxos::LogStore {
 public:
  // Opens (creating if needed) the environment in directory `dir`.
  static Status Open(const std::string& dir, uint64_t map_size_bytes,
                     std::unique_ptr<LmdbStore>* out);
  ~LmdbStore() override;
  // Neither copied nor moved: its parts refer to each other.
  LmdbStore(const LmdbStore&) = delete;
  LmdbStore& operator=(const LmdbStore&) = delete;
  LmdbStore(LmdbStore&&) = delete;
  LmdbStore& operator=(LmdbStore&&) = delete;

  // --- paxos::LogStore ---
  paxos::HardState LoadHardState() const override { return hard_state_; }
  paxos::Instance LastInstance() const override { return last_instance_; }
  paxos::StoreCode Get(paxos::Instance instance, paxos::Entry* out) const override;
  paxos::StoreCode Save(const paxos::HardState& hard_state,
                        std::span<const paxos::Entry> entries) override;

  enum class Durability : uint8_t {
    kCommit,         // an LMDB durable commit (with whatever is pending)
    kJournal,        // a journal record, synced; LMDB's commit comes later
    kJournalNoSync,  // a journal record made durable by the next sync or commit
  };
  // Saves a whole Ready atomically: hard state, entries, and the offset index
  // of the instances it applied. kJournal falls back to kCommit for a write
  // larger than kJournalRecordMax or than what is left of the journal.
  paxos::StoreCode Commit(const paxos::HardState& hard_state, std::span<const paxos::Entry> entries,
                          std::span<const paxos::AppliedInstance> applied,
                          Durability durability = Durability::kCommit);
  // Commits the pending transaction durably (no-op without one); the journal
  // then starts over. Other threads' reads see everything written before it.
  paxos::StoreCode CommitPending();
  bool has_pending() const { return pending_ != nullptr; }
  // Bytes of journal records since LMDB's last commit.
  uint64_t journal_bytes() const { return journal_ ? journal_->position() : 0; }
  // Journal records replayed by Open.
  uint64_t journal_replayed() const { return journal_replayed_; }
  // The first log instance written since LMDB's last commit (none: kNoInstance):
  // other threads' reads of instances below it need no CommitPending.
  paxos::Instance pending_first_instance() const { return pending_first_instance_; }
  // A write failed after journaled writes went into the pending transaction:
  // the store refuses every read and write; the broker must stop (a restart
  // replays the journal).
  bool broken() const { return broken_; }
  // Test hook, for a power loss: what the journal holds beyond its last sync
  // is zeroed.
  void DropUnsyncedJournalForTest() { journal_->DropUnsyncedForTest(); }

  // Room for the broker's 1 MiB between LMDB commits, plus the largest
  // record; written once when the file is created.
  static constexpr uint64_t kJournalFileBytes = 4ull << 20;
  // A larger write is an LMDB commit at once: at high load the batches are
  // large and their commits amortise LMDB's syncs; journaling them too would
  // write every byte twice. 64 KiB is about 400 messages of 128 bytes.
  static constexpr size_t kJournalRecordMax = 64 << 10;

  // --- Scrubbing at start ---
  // What Scrub found: records that fail their checks, to repair at once
  // rather than when a reader runs into them.
  struct ScrubReport {
    std::vector<uint64_t> damaged_log;  // instances (at most kScrubListMax)
    // Log records that pass their checks but whose messages do not hash to
    // the chain the index recorded when they were applied: (instance, its
    // first offset), at most kScrubListMax.
    std::vector<std::pair<uint64_t, uint64_t>> chain_mismatches;
    bool damaged_derived = false;       // an index or compacted-view record
    bool damaged_pages = false;         // LMDB's structure: a derived tree, the free list
    uint64_t records = 0;               // records checked
    bool clean() const {
      return damaged_log.empty() && chain_mismatches.empty() && !damaged_derived && !damaged_pages;
    }
  };
  static constexpr size_t kScrubListMax = 4096;
  // Reads every record of the LMDB environment in `dir` (if there is one)
  // and checks it, in a child process: LMDB trusts its pages, and damaged
  // ones can make it read out of bounds, so a crash there is a finding
  // (kDamaged), never the broker's death. kDamaged too when LMDB reports
  // damage or its meta pages fail their check (CheckMetaPages, as in Open,
  // but before a rewrite replaces them); kStorage when the check does not
  // end in time. Before Open, with the directory locked by this process.
  static Status Scrub(const std::string& dir, uint64_t map_size_bytes, ScrubReport* out);
  // Where a scrub found damage, more may hide in what LMDB trusts and never
  // checks (a node's size or offset, a page's bounds, the free list): a
  // write into such a page goes out of bounds, corrupting other records or
  // killing the process. Rewrite copies every record of the environment in
  // `dir`, bytes as read (a record failing its check still fails it, to be
  // repaired), into a new file of fresh pages, in a child process, and
  // renames it over data.mdb. Before Open, like Scrub. Returns the records
  // copied.
  // The original stays as kPreRewriteFile (a hard link) until the caller,
  // having opened the copy and found it sound, calls DropPreRewrite: damage
  // that sends the directory to quarantine keeps the file as it was found.
  static StatusOr<uint64_t> Rewrite(const std::string& dir, uint64_t map_size_bytes);
  static constexpr const char* kPreRewriteFile = "data.mdb.pre-rewrite";
  static Status DropPreRewrite(const std::string& dir);
  // A log record Scrub found damaged, reported like one a read ran into.
  void NoteScrubbedDamage(uint64_t instance) {
    damage_.Note(Damage{Damage::Kind::kLogRecord, instance, 0,
                      "log record for instance " + std::to_string(instance) +
                          " fails its check (found by the scrub at start)"});
  }

  // --- the stream ---
  // One past the last offset in the index (the head a subscriber can reach).
  uint64_t next_offset() const { return next_offset_; }
  // The head as the replayed log gives it, when the index disagrees (it is
  // damaged and being rebuilt: reads of the damage fail their checks).
  void ResetNextOffset(uint64_t next_offset) { next_offset_ = next_offset; }
  // The first offset still served (below it, only the snapshot has the state).
  uint64_t earliest_offset() const { return first_offset_; }
  // Appends messages from `from` on, in offset order, until `max_messages` or
  // `max_bytes` (at least one message is returned when any is available).
  // kCorrupt when a record on the way fails its check: the messages before it
  // are returned, nothing after it.
  paxos::StoreCode ReadStream(uint64_t from, size_t max_messages, size_t max_bytes,
                              std::vector<StreamMessage>* out) const;
  // The same messages, read in place: visit(offset, message) for each, the
  // spans valid only during the call (serving a subscriber copies each
  // message once, into its Deliver frame).
  // With `on_instance`, each instance's chain point comes before its first
  // message; with `from_instance_start`, the read starts at the first offset
  // of the instance holding `from` (OffsetIndex::Read).
  using StreamVisitor = std::function<void(uint64_t offset, const MessageView& message)>;
  using InstanceVisitor = OffsetIndex::InstanceVisitor;
  paxos::StoreCode ReadStream(uint64_t from, size_t max_messages, size_t max_bytes,
                              const StreamVisitor& visit,
                              const InstanceVisitor* on_instance = nullptr,
                              bool from_instance_start = false) const;
  // The stream's chain at next_offset() (docs/protocol.md, "The chain"):
  // the last index record's, or the base's when the index holds none.
  // False when it is not known (that record fails its check, or was
  // written before the chain).
  bool ChainHead(paxos::ChainValue* out) const;

  // --- retention and snapshots ---
  paxos::Instance FirstInstance() const override { return first_instance_; }
  std::optional<paxos::AppliedSnapshot> LoadSnapshot() const override { return snapshot_state_; }
  const SnapshotHandle& snapshot_handle() const { return snapshot_handle_; }
  // Where the snapshot file with `handle` lives: DIR/snapshots/snapshot-N-CRC.ords.
  std::string SnapshotPath(const SnapshotHandle& handle) const;
  std::string SnapshotDir() const { return dir_ + "/snapshots"; }
  // Reads a snapshot file and checks its size and CRC32C against `handle`.
  static Status ReadSnapshotFile(const std::string& path, const SnapshotHandle& handle,
                                 std::string* out);
  // Bytes of log records kept (an upper bound: overwrites count twice).
  uint64_t log_bytes() const { return log_bytes_; }

  // A read transaction seeing the last commit, for the calling thread
  // (empty when LMDB refuses one). Thread-safe.
  ReadTxn BeginRead() const;
  // The stored bytes of the log record of `instance`, read in `txn` (from
  // BeginRead) and valid while it lives; unchecked. Thread-safe: it touches
  // no member state. kOk, kNotFound, or kIoError with *error.
  paxos::StoreCode RawLogRecord(const ReadTxn& txn, uint64_t instance,
                                std::span<const uint8_t>* record, std::string* error) const {
    return log_.Raw(txn.get(), instance, record, error);
  }
  // The compacted view in ascending key order, read in `txn`. Thread-safe.
  Status ReadKeyed(const ReadTxn& txn, std::vector<StreamMessage>* out) const;
  // The compacted view: the latest message of each key whose offset is in
  // [from, to) (to 0: no bound), in offset order, bounded like ReadStream.
  paxos::StoreCode ReadCompacted(uint64_t from, uint64_t to, size_t max_messages,
                                 size_t max_bytes, std::vector<StreamMessage>* out) const;

  // The snapshot file `handle` (already written, fsynced) holds `state`:
  // the log may now be truncated up to state.instance. Journaled.
  paxos::StoreCode RecordSnapshot(const SnapshotHandle& handle, const paxos::AppliedSnapshot& state);
  // Drops up to `max_entries` of the oldest log records below `first`
  // (never past the snapshot), with their offset index. One transaction.
  paxos::StoreCode Truncate(paxos::Instance first, size_t max_entries, size_t* deleted);
  // Replaces everything up to state.instance with a snapshot installed from
  // a peer (its file is already in place): log, index and compacted view,
  // chosen frontier raised to state.instance. One transaction.
  paxos::StoreCode InstallSnapshot(const SnapshotHandle& handle, const paxos::AppliedSnapshot& state,
                                   std::span<const StreamMessage> keyed);

  // Something a read found damaged (it returned kCorrupt and served nothing
  // of it): a log record, repaired by fetching it from a peer (the broker
  // reports it to the core), or a record of the offset index or of the
  // compacted view, which are derived from the log and rebuilt here.
  using Damage = StorageDamage;
  // Damage found since the last call, each record once (a reader that runs
  // into it again before it is repaired adds nothing).
  std::vector<Damage> TakeNewDamage() { return damage_.TakeNew(); }

  // --- Re-deriving the index and the compacted view after damage ---
  // Both are functions of the log: the offset index of the applied state at
  // the log's start (the base) and every instance after it; the compacted
  // view of the latest snapshot's and every instance after that. Begins a
  // rebuild: the compacted view at once, in one transaction (the snapshot
  // encoder must never read half of it); the index in RebuildStep. kCorrupt
  // when a log record on the way fails its check (it is reported as
  // damage; call again once it is repaired); kNotFound without a base.
  paxos::StoreCode StartRebuild(paxos::Instance applied);
  bool rebuilding() const { return index_.rebuilding(); }
  // The instance the rebuild reads next: the damaged one it waits for
  // after a kCorrupt.
  paxos::Instance rebuild_next() const { return index_.rebuild_next(); }
  // Checks (and rewrites where they differ) the index records of up to
  // `max_instances` more instances, up to `applied`; *done at the end, when
  // the index and compacted-view damage found so far counts as repaired.
  // *fixed: records rewritten or removed by the whole rebuild.
  paxos::StoreCode RebuildStep(paxos::Instance applied, size_t max_instances, bool* done,
                               uint64_t* fixed);
  // Records that failed their checks, each counted once, since open.
  uint64_t corruptions() const { return damage_.corruptions(); }
  // Damaged log records rewritten since open (with a peer's copy), and
  // those not yet taken, in the order written.
  uint64_t repairs() const { return damage_.repairs(); }
  std::vector<uint64_t> TakeRepaired() { return damage_.TakeRepaired(); }
  // The environment held no hard state and no log when opened: a new member,
  // or one whose disk was lost (the core tells them apart by asking peers).
  bool opened_empty() const { return opened_empty_; }
  const std::string& last_error() const { return last_error_; }

 private:
  LmdbStore() = default;
  int PutBase(MDB_txn* txn, const paxos::AppliedSnapshot& base);
  // The compacted view from the latest snapshot's file and the log up to
  // `applied`, in one transaction.
  paxos::StoreCode RebuildKeyed(paxos::Instance applied);
  // Begins a write transaction; kIoError (with last_error_) when it cannot.
  paxos::StoreCode BeginWrite(MDB_txn** txn);
  // Aborts `txn` after `what` failed with `rc`: kIoError, with last_error_.
  paxos::StoreCode Abort(MDB_txn* txn, const char* what, int rc);
  Retained CurrentRetained() const;
  int PutRetained(MDB_txn* txn, const Retained& r);

  // Applies one journal record's operations in `txn` (Open's replay).
  Status ApplyJournalRecord(MDB_txn* txn, std::span<const uint8_t> body);
  // The loop's reads: in the pending transaction when there is one (they
  // see every write), else in a read transaction of their own. txn is
  // nullptr when broken() or LMDB fails (last_error() says why).
  struct LoopTxn {
    MDB_txn* txn = nullptr;
    ReadTxn owned;
  };
  LoopTxn LoopRead() const;
  // Ends a write into the pending transaction: the journal record built in
  // record_ is written (and synced for kJournal) when `journaled` and it
  // fits; otherwise everything pending is committed to LMDB.
  paxos::StoreCode FinishWrite(bool journaled, Durability durability);
  // Marks the store broken (see broken()) after `what` failed: kIoError.
  paxos::StoreCode Broken(const std::string& what);

  MDB_env* env_ = nullptr;
  std::string dir_;
  paxos::Instance first_instance_{1};
  uint64_t first_offset_ = 0;
  uint64_t log_bytes_ = 0;
  SnapshotHandle snapshot_handle_;
  std::optional<paxos::AppliedSnapshot> snapshot_state_;
  // The applied state at first_instance_ - 1 (meta "base"), if known.
  std::optional<paxos::AppliedSnapshot> base_;
  paxos::HardState hard_state_{};
  paxos::Instance last_instance_{};
  uint64_t next_offset_ = 0;
  bool opened_empty_ = false;
  mutable std::string last_error_;
  std::unique_ptr<Journal> journal_;
  MDB_txn* pending_ = nullptr;           // writes journaled, not yet committed in LMDB
  bool broken_ = false;
  uint64_t journal_replayed_ = 0;
  paxos::Instance pending_first_instance_{};

  // The parts, by concept, over the same databases and transactions.
  LmdbTables tables_;
  mutable DamageRegistry damage_{&last_error_};
  LogTable log_{tables_, damage_, &last_error_};
  OffsetIndex index_{tables_, log_, damage_, &last_error_};
  CompactedView view_{tables_, damage_, &last_error_};
};

}  // namespace ordo::broker
