// A broker's data directory: whose it is, who uses it, and where damaged
// contents go.
//
// DIR/LOCK      an exclusive flock held for the broker's lifetime (the kernel
//               drops it when the process dies, however it dies), with the
//               holder's pid inside for the message a second broker prints.
//               LMDB's own lock.mdb does not stop a second writer process.
// DIR/IDENTITY  which node of which cluster the directory belongs to, written
//               once (atomically: a temporary file, fsync, rename, fsync of
//               DIR) and checked at every start. Format (text, version 1):
//                 # ...comment lines...
//                 format = 1
//                 cluster_id = "NAME"
//                 node_id = N
//                 history = true        (only after a quarantine, below)
//                 crc32c = XXXXXXXX     (CRC32C of every line above, hex)
// DIR/damaged-YYYYMMDDTHHMMSSZ/
//               what Quarantine moved aside: the LMDB files, the journal and
//               the snapshots of a store whose checks failed. Kept for the
//               operator to look at; nothing reads it. Safe to delete.
//
// Why `history`: a node whose store was quarantined had a history, possibly
// with votes it no longer remembers. Its fresh, empty store must never
// count as a member of a new cluster (README, "A lost disk"), even when
// every peer it can reach is empty too: it waits for a peer that has the
// history instead (a cluster whose every member was damaged does not restart
// by itself).
//
// Thread rules: the broker's start-up, on one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "broker/status.h"

namespace ordo::broker {

class DataDir {
 public:
  // Creates `dir` if needed, locks it and checks its identity against
  // (cluster_id, node_id), recording it when there is none yet. Errors:
  // kStorage when another process holds the lock, when the identity names
  // another node or cluster, or on an I/O error; kDamaged when IDENTITY
  // fails its check (*out is then still set, locked: the caller may
  // Quarantine and RecordIdentity).
  static Status Acquire(const std::string& dir, const std::string& cluster_id, uint32_t node_id,
                        std::unique_ptr<DataDir>* out);
  ~DataDir();
  DataDir(const DataDir&) = delete;
  DataDir& operator=(const DataDir&) = delete;

  const std::string& path() const { return dir_; }
  // The directory's store was quarantined once (see `history` above).
  bool history_lost() const { return history_lost_; }

  // Moves every file of the directory but LOCK, IDENTITY and earlier
  // quarantines into a new DIR/damaged-<time>/, and records in IDENTITY that
  // this node had a history. *moved_to names the new directory.
  StatusOr<std::string> Quarantine();

 private:
  DataDir() = default;
  Status WriteIdentity();

  std::string dir_;
  std::string cluster_id_;
  uint32_t node_id_ = 0;
  bool history_lost_ = false;
  int lock_fd_ = -1;
};

// fsync of a file or (directory = true) of a directory's entries: what
// makes a create or a rename durable.
Status FsyncPath(const std::string& path, bool directory);

}  // namespace ordo::broker
