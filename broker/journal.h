// The write-ahead journal in front of LMDB: one preallocated file of framed,
// checksummed records, written at its start again after every LMDB commit.
//
// Why: an LMDB commit is two syncs of scattered pages (the data, then the
// meta page that points at them). A small durable write (one Accept, one
// promise) is one sequential record and one fdatasync here instead; LmdbStore
// keeps the same writes in an open LMDB transaction and commits it now and
// then, after which the records are redundant and the journal starts over.
//
// Record (all LE): magic u32 "ORJ1", body length u32, CRC32C u32 over the
// rest, generation u64, index u64 (0, 1, 2, ... within a generation), body.
// A generation is one pass over the file: LmdbStore's commit names the next
// generation, so records of a pass LMDB already holds, and leftovers of older
// passes further into the file, never match. Replay reads the records of one
// generation in order and stops at the first that is absent or torn (a write
// that was never acknowledged: its fdatasync had not returned), unless an
// intact record of the same pass follows it, which is corruption of an
// acknowledged write and an error.
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
  static constexpr size_t kHeaderBytes = 4 + 4 + 4 + 8 + 8;

  // Opens `path`, creating it and reserving `size_bytes` when it is new or
  // smaller (the reserve keeps the size fixed, so an fdatasync has no file
  // size to write).
  static Status Open(const std::string& path, uint64_t size_bytes, std::unique_ptr<Journal>* out);
  ~Journal();
  Journal(const Journal&) = delete;
  Journal& operator=(const Journal&) = delete;

  // Calls apply(body) for each record of `generation` from the file's start,
  // in order; sets *records to how many. An error when a record fails its
  // check and an intact one of the same pass follows, or when apply fails.
  Status Replay(uint64_t generation, const std::function<Status(std::span<const uint8_t>)>& apply,
                uint64_t* records) const;

  // Starts a pass: the next record goes to the file's start with `generation`.
  void Restart(uint64_t generation);
  // Whether a record of `body_bytes` fits in what is left of the file.
  bool Fits(size_t body_bytes) const { return position_ + kHeaderBytes + body_bytes <= size_; }
  // Writes one record of the current pass (not yet durable: see Sync).
  Status Append(std::span<const uint8_t> body);
  // The same without a copy: append the body to the returned buffer (it
  // holds the header's room), then FinishRecord writes it.
  std::vector<uint8_t>* StartRecord();
  Status FinishRecord();
  size_t pending_body_bytes() const { return frame_.size() - kHeaderBytes; }
  // Makes every record appended so far durable (fdatasync).
  Status Sync();

  uint64_t generation() const { return generation_; }
  // Bytes of this pass, and records in it.
  uint64_t position() const { return position_; }
  uint64_t records() const { return index_; }
  const std::string& path() const { return path_; }

 private:
  Journal() = default;
  enum class Read { kIntact, kAbsent, kDamaged };
  // Reads the record at `at` expected to be record `index` of `generation`:
  // kIntact (with *body), kAbsent (no such record: another pass, zeros, or a
  // header cut short), kDamaged (its header names it, its checksum fails;
  // *body_bytes says where the next one would start).
  Read ReadRecord(uint64_t at, uint64_t generation, uint64_t index, std::vector<uint8_t>* body,
                  uint64_t* body_bytes) const;

  int fd_ = -1;
  std::string path_;
  uint64_t size_ = 0;
  uint64_t generation_ = 0;
  uint64_t position_ = 0;
  uint64_t index_ = 0;
  std::vector<uint8_t> frame_ = std::vector<uint8_t>(kHeaderBytes);  // reused: header + body
};

}  // namespace ordo::broker
