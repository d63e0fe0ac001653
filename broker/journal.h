// The write-ahead journal in front of LMDB: one preallocated file of framed,
// checksummed records, written at its start again after every LMDB commit.
//
// Why: an LMDB commit is two syncs of scattered pages (the data, then the
// meta page that points at them). A small durable write (one Accept, one
// promise) is one sequential record and one fdatasync here instead; LmdbStore
// keeps the same writes in an open LMDB transaction and commits it now and
// then, after which the records are redundant and the journal starts over.
//
// Record (all LE), at 8-byte aligned positions: CRC32C u32 over everything
// after it, magic u32 "ORJ2", body length u32, generation u64, index u64 (0,
// 1, 2, ... within a generation), synced u64 (how many records of this
// generation a Sync had made durable when this one was written), body, zero
// padding to 8 bytes.
//
// A generation is one pass over the file: LmdbStore's commit names the next
// generation, so records of a pass LMDB already holds, and leftovers of older
// passes further into the file, never match. Replay applies the records of
// one generation in order and stops at the first that is not intact: the
// tail that no Sync had made durable, which a crash may leave torn, absent,
// or intact in any mix. It is an error only when an intact record of the pass
// (anywhere further in the file) says a Sync had made that one durable before
// it was written: then an acknowledged write is damaged.
//
// Assumes what SQLite's journal does (powersafe overwrite): writing a new
// record into the sector of the last synced one does not damage that one.
//
// Thread rules: one thread (the broker's event loop, through LmdbStore).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "broker/status.h"

namespace ordo::broker {

class Journal {
 public:
  static constexpr size_t kHeaderBytes = 4 + 4 + 4 + 8 + 8 + 8;

  // Opens `path`. `create`: create it (reserving `size_bytes`, which keeps
  // the size fixed so an fdatasync has no file size to write) when it is
  // missing or smaller; otherwise a missing file is an error. (Writing the
  // reserve with zeros instead, so no write lands in an unwritten extent,
  // made no difference to pwrite + fdatasync here: 258-292 us p50 either way.)
  static Status Open(const std::string& path, uint64_t size_bytes, bool create,
                     std::unique_ptr<Journal>* out);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Calls apply(body) for each record of `generation` from the file's start,
  // in order; sets *records to how many. kDamaged when a record that was
  // synced fails its check; apply's error when apply fails.
  Status Replay(uint64_t generation, const std::function<Status(std::span<const uint8_t>)>& apply,
                uint64_t* records) const;

  // Starts a pass: the next record goes to the file's start with `generation`.
  void Restart(uint64_t generation);
  // Whether a record of `body_bytes` fits in what is left of the file.
  bool Fits(size_t body_bytes) const { return position_ + RecordBytes(body_bytes) <= size_; }
  // Writes one record of the current pass (not yet durable: see Sync).
  Status Append(std::span<const uint8_t> body);
  // The same without a copy: append the body to the returned buffer (it
  // holds the header's room), then FinishRecord writes it.
  std::vector<uint8_t>* StartRecord();
  Status FinishRecord();
  size_t pending_body_bytes() const { return frame_.size() - kHeaderBytes; }
  // Makes every record appended so far durable (fdatasync).
  Status Sync();

  // Whether the file starts with an intact first record of `generation`:
  // that pass began (LmdbStore checks that LMDB did not lose the commit
  // that started it).
  bool StartsPass(uint64_t generation) const;
  // The file's size: what it was created with, unless it was truncated.
  uint64_t size() const { return size_; }

  uint64_t generation() const { return generation_; }
  // Bytes of this pass, and records in it.
  uint64_t position() const { return position_; }
  uint64_t records() const { return index_; }
  const std::string& path() const { return path_; }

  // Test hook, for a power loss: zeroes what was written after the last
  // Sync (the page cache's unsynced bytes, lost).
  void DropUnsyncedForTest();

 private:
  struct Header {
    uint32_t length = 0;
    uint64_t generation = 0;
    uint64_t index = 0;
    uint64_t synced = 0;
  };
  static size_t RecordBytes(size_t body_bytes) { return (kHeaderBytes + body_bytes + 7) & ~size_t{7}; }
  Journal() = default;
  // The record at `at` of `generation` if it is intact (fills *header and
  // *body); false otherwise.
  bool ReadIntact(uint64_t at, uint64_t generation, Header* header, std::vector<uint8_t>* body) const;

  int fd_ = -1;
  std::string path_;
  uint64_t size_ = 0;
  uint64_t generation_ = 0;
  uint64_t position_ = 0;
  uint64_t index_ = 0;
  uint64_t synced_records_ = 0;
  uint64_t synced_position_ = 0;
  std::vector<uint8_t> frame_ = std::vector<uint8_t>(kHeaderBytes);  // reused: header + body
};

}  // namespace ordo::broker
