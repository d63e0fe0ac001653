// LmdbStore::Scrub and LmdbStore::Rewrite: the check of a whole store at
// start and the rewrite into fresh pages after damage, each in a child
// process (a damaged page can kill the process that reads it).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>

#include "broker/data_dir.h"
#include "broker/lmdb_formats.h"
#include "broker/lmdb_store.h"

namespace ordo::broker {

using namespace lmdb;  // NOLINT: the formats this file reads

namespace {

// Runs `body` in a child process (fork) that appends report lines to the
// string it is given (sent at its end, or when it calls `flush`: what
// must reach the parent even if the child dies) and returns its exit
// status: LMDB trusts its pages,
// and damaged ones can make it read or write out of bounds, so a crash
// there is a finding (kDamaged), never the broker's death. Nothing else of
// the broker runs in the child. Bounded in time: a damaged page can make a
// walk loop; a healthy one reads the file once.
using ChildBody = std::function<int(std::string* report, const std::function<void()>& flush)>;
Status RunInChild(const std::string& what, std::chrono::seconds budget, const ChildBody& body,
                  std::string* report, int* code) {
  report->clear();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Status::Storage(std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return Status::Storage(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::close(fds[0]);
    std::string out;
    auto flush = [&] {
      const char* p = out.data();
      size_t n = out.size();
      while (n > 0) {
        const ssize_t w = ::write(fds[1], p, n);
        if (w <= 0) break;
        p += w;
        n -= static_cast<size_t>(w);
      }
      out.clear();
    };
    const int status = body(&out, flush);
    flush();
    ::_exit(status);
  }
  ::close(fds[1]);
  char buf[4096];
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + budget;
  bool timed_out = false;
  while (true) {
    pollfd p{fds[0], POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    const int ready = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue;
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    report->append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  // A timeout or a SIGKILL (the OOM killer) is not proof of damage: a slow
  // disk or a busy machine must not cost the node its data. It refuses to
  // start (exit status 3) and says so; a crash on a page (SIGSEGV, SIGBUS)
  // is damage.
  if (timed_out) {
    return Status::Storage(what + " did not end within " +
                           std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                              deadline - start).count()) +
                           " s: a slow or failing disk, or damaged pages that loop; start "
                           "again, or move the data directory aside to rejoin as a lost disk");
  }
  if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
    return Status::Storage("the process " + what + " was killed (SIGKILL: out of memory?); "
                           "start again");
  }
  if (WIFSIGNALED(status)) {
    return Status::Damaged(what + " killed the process doing it (signal " +
                           std::to_string(WTERMSIG(status)) + "): its pages are damaged");
  }
  *code = WIFEXITED(status) ? WEXITSTATUS(status) : 3;
  return Status::Ok();
}

// Names the pages of `data_file` that are all zeros (the first three), for a message about damage LMDB reports without
// a page number: "; page 7 (bytes 28672 to 32767) is all zeros". Empty when
// there is none (or the geometry is unknown).
std::string ZeroedPages(const std::string& data_file, uint64_t page_bytes, uint64_t last_page) {
  if (page_bytes == 0) {  // LMDB could not read its meta pages: those, at the system's page size
    page_bytes = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    last_page = 1;
  }
  if (page_bytes == 0 || page_bytes > (1u << 16)) return "";
  const int fd = ::open(data_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::vector<char> page(page_bytes);
  std::vector<uint64_t> zeroed;
  for (uint64_t p = 0; p <= last_page && zeroed.size() < 3; ++p) {
    const ssize_t n = ::pread(fd, page.data(), page_bytes, static_cast<off_t>(p * page_bytes));
    if (n != static_cast<ssize_t>(page_bytes)) break;
    if (std::all_of(page.begin(), page.end(), [](char c) { return c == 0; })) zeroed.push_back(p);
  }
  ::close(fd);
  std::string out;
  for (uint64_t p : zeroed) {
    out += std::string(p < 2 ? "; meta page " : "; page ") + std::to_string(p) + " (bytes " +
           std::to_string(p * page_bytes) + " to " + std::to_string((p + 1) * page_bytes - 1) +
           ") is all zeros";
  }
  return out;
}

// How long a child may take over a file of `file_bytes`: a healthy one
// reads the file once (the scrub) or reads and writes it once (the
// rewrite), far below a slow disk's 16 MiB/s.
std::chrono::seconds Budget(uint64_t file_bytes, bool writes) {
  return writes ? std::chrono::seconds(120 + (file_bytes >> 24))
                : std::chrono::seconds(60 + (file_bytes >> 26));
}

// The map size for an environment of `file_bytes`: never below the file,
// or LMDB could refuse a store the configured size no longer covers.
uint64_t MapSize(uint64_t configured, uint64_t file_bytes) {
  return std::max(configured, file_bytes);
}

// The databases of the environment, in the order Scrub reads them.
constexpr const char* kDatabases[] = {"log", "index", "keys", "key_offsets", "meta"};

}  // namespace

Status LmdbStore::Scrub(const std::string& dir, uint64_t map_size_bytes, ScrubReport* out) {
  *out = ScrubReport{};
  const std::string data_file = dir + "/data.mdb";
  struct stat st {};
  if (::stat(data_file.c_str(), &st) != 0) return Status::Ok();  // nothing stored yet
  // The child: read-only, no lock file (the parent holds the directory),
  // its own environment. It reports lines "log N", "chain N OFFSET",
  // "derived", "pages",
  // "records N", "lmdb TEXT"; exit 2 for damage, 3 for another failure.
  auto body = [&](std::string* report, const std::function<void()>& flush) {
    MDB_env* env = nullptr;
    int rc = mdb_env_create(&env);
    if (rc == 0) rc = mdb_env_set_mapsize(env, MapSize(map_size_bytes, st.st_size));
    if (rc == 0) rc = mdb_env_set_maxdbs(env, 5);
    if (rc == 0) rc = mdb_env_open(env, dir.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
    MDB_txn* txn = nullptr;
    if (rc == 0) rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
    if (rc != 0) {
      *report += "lmdb opening: " + std::string(mdb_strerror(rc)) + "\n";
      return IsLmdbDamage(rc) ? 2 : 3;
    }
    // The file must hold every page LMDB's meta names (else SIGBUS below).
    MDB_envinfo info{};
    MDB_stat est{};
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &est) != 0) {
      *report += "lmdb reading its meta page\n";
      return 3;
    }
    *report += "geometry " + std::to_string(est.ms_psize) + " " +
               std::to_string(info.me_last_pgno) + " " + std::to_string(info.me_last_txnid) +
               "\n";
    flush();  // for a message naming a zeroed page, should a page kill this process
    if (static_cast<uint64_t>(st.st_size) < (uint64_t{info.me_last_pgno} + 1) * est.ms_psize) {
      *report += "lmdb the file is shorter than its pages\n";
      return 2;
    }
    uint64_t records = 0;
    size_t listed = 0;
    size_t chain_listed = 0;
    bool derived = false;
    bool pages = false;
    // Returns an exit status when the walk must stop there, -1 otherwise.
    auto walk = [&](const char* name,
                    const std::function<void(const MDB_val&, const MDB_val&)>& check) -> int {
      MDB_dbi dbi;
      int r = mdb_dbi_open(txn, name, 0, &dbi);
      if (r == MDB_NOTFOUND) return -1;
      const std::string db(name);
      const bool derived_db = db != "log" && db != "meta";
      MDB_cursor* cur = nullptr;
      if (r == 0) r = mdb_cursor_open(txn, dbi, &cur);
      MDB_val k, v;
      std::string previous;
      bool first = true;
      if (r == 0) {
        for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
          // Keys out of LMDB's order (memcmp, then length): a flipped bit
          // in a key, which makes the tree's searches unreliable.
          const std::string key(static_cast<const char*>(k.mv_data), k.mv_size);
          if (!first && !(previous < key)) {
            if (!derived_db) {
              *report += "lmdb keys out of order in the " + db + " database\n";
              return 2;
            }
            derived = pages = true;
          }
          first = false;
          previous = key;
          ++records;
          // The tree's own search must find what the walk finds: a damaged
          // branch page misleads searches (a record the loop reads by key
          // would look missing: an accepted value left out of a promise).
          MDB_val found{};
          MDB_val probe = k;
          if (mdb_get(txn, dbi, &probe, &found) != 0 || found.mv_size != v.mv_size ||
              std::memcmp(found.mv_data, v.mv_data, v.mv_size) != 0) {
            if (!derived_db) {
              *report += "lmdb a key of the " + db + " database that a search does not find\n";
              return 2;
            }
            derived = pages = true;  // rebuilt from the log
          }
          check(k, v);
        }
      }
      if (r != 0 && r != MDB_NOTFOUND) {
        // A derived tree LMDB cannot read is rebuilt like a damaged record
        // (the rewrite keeps what it can read of it).
        if (derived_db && IsLmdbDamage(r)) {
          derived = pages = true;
          // LMDB failed the transaction: the next database is read in a new one.
          mdb_txn_abort(txn);
          txn = nullptr;
          if ((r = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn)) != 0) {
            *report += "lmdb reading " + db + ": " + mdb_strerror(r) + "\n";
            return 3;
          }
          return -1;
        }
        *report += "lmdb reading " + db + ": " + mdb_strerror(r) + "\n";
        return IsLmdbDamage(r) ? 2 : 3;
      }
      return -1;
    };
    int status = walk("log", [&](const MDB_val& k, const MDB_val& v) {
      paxos::Entry e;
      const bool ok = k.mv_size == 8 &&
                      DecodeLogRecord({static_cast<const uint8_t*>(v.mv_data), v.mv_size}, &e).ok() &&
                      e.instance.value() == GetBigEndian(k.mv_data);
      if (!ok && k.mv_size != 8) {
        *report += "lmdb a log key that is not an instance\n";
        listed = SIZE_MAX;
      } else if (!ok && listed++ < kScrubListMax) {
        *report += "log " + std::to_string(GetBigEndian(k.mv_data)) + "\n";
      }
    });
    if (status >= 0) return status;
    if (listed == SIZE_MAX) return 2;
    MDB_dbi log_dbi;
    const bool has_log = mdb_dbi_open(txn, "log", 0, &log_dbi) == 0;
    std::optional<IndexRecord> previous_index;
    for (const char* db : {"index", "keys", "key_offsets"}) {
      const std::string name(db);
      status = walk(db, [&](const MDB_val& k, const MDB_val& v) {
        if (name == "index") {
          IndexRecord r;
          if (!DecodeIndex(k, v, &r)) {
            derived = true;
            return;
          }
          // Each record's chain goes on from the one before it (else the
          // index is damaged: rebuilt), and its log record's messages hash
          // to it: one that does not was changed behind a valid CRC (a bug,
          // or a deliberate edit), and no copy of it here can be trusted.
          if (previous_index && previous_index->has_chain && r.has_chain &&
              previous_index->first_offset + previous_index->appended == r.first_offset &&
              previous_index->chain != r.chain_before) {
            derived = true;
          }
          previous_index = r;
          unsigned char key[8];
          PutBigEndian(r.instance, key);
          MDB_val lk{8, key}, lv;
          if (has_log && r.has_chain && mdb_get(txn, log_dbi, &lk, &lv) == 0 &&
              CheckRecordChain({static_cast<const uint8_t*>(lv.mv_data), lv.mv_size}, r) ==
                  ChainCheck::kDiffers &&
              chain_listed++ < kScrubListMax) {
            *report +=
                "chain " + std::to_string(r.instance) + " " + std::to_string(r.first_offset) + "\n";
          }
        } else if (name == "keys") {
          StreamMessage m;
          derived |= !DecodeKeyed(k, v, &m);
        } else {
          derived |= k.mv_size != 8 || v.mv_size == 0;
        }
      });
      if (status >= 0) return status;
    }
    // Checked by Open, record by record.
    if ((status = walk("meta", [](const MDB_val&, const MDB_val&) {})) >= 0) return status;
    // LMDB's free list (database 0): a page number in it that is out of
    // range, or a list longer than its record, would have a later write
    // reuse a page in use (or one past the file); a page of it that cannot
    // be read would fail the next write. Nothing in it is data: the
    // rewrite builds a new one.
    MDB_cursor* fc = nullptr;
    if (mdb_cursor_open(txn, 0, &fc) == 0) {
      MDB_val k, v;
      int r = mdb_cursor_get(fc, &k, &v, MDB_FIRST);
      for (; r == 0 && !pages; r = mdb_cursor_get(fc, &k, &v, MDB_NEXT)) {
        size_t count = 0;
        if (v.mv_size >= sizeof(size_t)) std::memcpy(&count, v.mv_data, sizeof count);
        if (k.mv_size != sizeof(size_t) || v.mv_size < sizeof(size_t) ||
            count != v.mv_size / sizeof(size_t) - 1 || v.mv_size % sizeof(size_t) != 0) {
          pages = true;
          break;
        }
        for (size_t i = 1; i <= count; ++i) {
          size_t pgno = 0;
          std::memcpy(&pgno, static_cast<const char*>(v.mv_data) + i * sizeof(size_t), sizeof pgno);
          if (pgno < 2 || pgno > info.me_last_pgno) pages = true;
        }
      }
      if (r != 0 && r != MDB_NOTFOUND) pages = true;
      mdb_cursor_close(fc);
    }
    if (derived) *report += "derived\n";
    if (pages) *report += "pages\n";
    *report += "records " + std::to_string(records) + "\n";
    return 0;
  };
  std::string report;
  int code = 0;
  const Status run = RunInChild("reading " + data_file,
                                Budget(static_cast<uint64_t>(st.st_size), false), body, &report,
                                &code);
  std::istringstream lines(report);
  std::string line;
  std::string lmdb;
  uint64_t page_bytes = 0, last_page = 0, last_txnid = 0;
  while (std::getline(lines, line)) {
    if (line.rfind("geometry ", 0) == 0) {
      std::istringstream(line.substr(9)) >> page_bytes >> last_page >> last_txnid;
    } else if (line.rfind("log ", 0) == 0) {
      out->damaged_log.push_back(std::strtoull(line.c_str() + 4, nullptr, 10));
    } else if (line.rfind("chain ", 0) == 0) {
      uint64_t instance = 0, offset = 0;
      std::istringstream(line.substr(6)) >> instance >> offset;
      out->chain_mismatches.push_back({instance, offset});
    } else if (line == "derived") {
      out->damaged_derived = true;
    } else if (line == "pages") {
      out->damaged_pages = true;
    } else if (line.rfind("records ", 0) == 0) {
      out->records = std::strtoull(line.c_str() + 8, nullptr, 10);
    } else if (line.rfind("lmdb ", 0) == 0) {
      lmdb = line.substr(5);
    }
  }
  // LMDB names no page in its errors (nor does a crash): a zeroed one is
  // named here.
  if (run.kind() == Status::Kind::kDamaged) {
    return Status::Damaged(run.message() + ZeroedPages(data_file, page_bytes, last_page));
  }
  if (!run.ok()) return run;
  if (code == 2) {
    return Status::Damaged(data_file + ": " + lmdb + ZeroedPages(data_file, page_bytes, last_page));
  }
  if (code != 0) return Status::Storage("checking " + data_file + ": " + (lmdb.empty() ? "failed" : lmdb));
  // Checked here too, not only by Open: a rewrite after damage writes new
  // meta pages, and a rotted transaction id (LMDB opened an older commit)
  // would no longer show.
  if (page_bytes > 0) return CheckMetaPages(data_file, page_bytes, last_txnid);
  return Status::Ok();
}

StatusOr<uint64_t> LmdbStore::Rewrite(const std::string& dir, uint64_t map_size_bytes) {
  uint64_t records = 0;
  const std::string data_file = dir + "/data.mdb";
  const std::string scratch = dir + "/rewrite";
  std::error_code ec;
  std::filesystem::remove_all(scratch, ec);  // left by a crash during an earlier rewrite
  if (!std::filesystem::create_directory(scratch, ec)) {
    return Status::Storage("creating " + scratch + ": " + ec.message());
  }
  struct stat st {};
  if (::stat(data_file.c_str(), &st) != 0) {
    return Status::Storage(data_file + ": " + std::strerror(errno));
  }
  // Said up front, not as a failure half way: the copy takes about what
  // the file's pages take (with a margin: its pages may be fuller or
  // emptier), beside the original (kept until the broker has opened the
  // copy, see kPreRewriteFile).
  struct statvfs fs {};
  const uint64_t needed = static_cast<uint64_t>(st.st_blocks) * 512 / 4 * 5 + (1u << 20);
  if (::statvfs(dir.c_str(), &fs) == 0 && uint64_t{fs.f_bavail} * fs.f_frsize < needed) {
    std::filesystem::remove_all(scratch, ec);
    return Status::Storage("rewriting " + data_file + " after damage needs about " +
                           std::to_string(needed >> 20) + " MiB free in " + dir + ", and " +
                           std::to_string((uint64_t{fs.f_bavail} * fs.f_frsize) >> 20) +
                           " MiB are: free space and start again (or move the data directory "
                           "aside to rejoin as a lost disk)");
  }
  const uint64_t map_size = MapSize(map_size_bytes, static_cast<uint64_t>(st.st_size));
  // The child copies every record of every database, as read, into a new
  // environment: LMDB builds its pages and free list afresh. A record that
  // fails its check stays as it is (the broker repairs or rebuilds it);
  // one LMDB refuses as a key (a damaged one of a derived database) is
  // left out. It reports "records N" or "lmdb TEXT".
  auto body = [&](std::string* report, const std::function<void()>&) {
    MDB_env* from = nullptr;
    MDB_env* to = nullptr;
    int rc = mdb_env_create(&from);
    if (rc == 0) rc = mdb_env_set_mapsize(from, map_size);
    if (rc == 0) rc = mdb_env_set_maxdbs(from, 5);
    if (rc == 0) rc = mdb_env_open(from, dir.c_str(), MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0644);
    if (rc == 0) rc = mdb_env_create(&to);
    if (rc == 0) rc = mdb_env_set_mapsize(to, map_size);
    if (rc == 0) rc = mdb_env_set_maxdbs(to, 5);
    // Synced once at the end (mdb_env_sync), before the parent renames it.
    if (rc == 0) rc = mdb_env_open(to, scratch.c_str(), MDB_NOLOCK | MDB_NOSYNC, 0644);
    MDB_txn* rtxn = nullptr;
    if (rc == 0) rc = mdb_txn_begin(from, nullptr, MDB_RDONLY, &rtxn);
    if (rc != 0) {
      *report += "lmdb opening: " + std::string(mdb_strerror(rc)) + "\n";
      return IsLmdbDamage(rc) ? 2 : 3;
    }
    uint64_t copied = 0;
    for (const char* db : kDatabases) {
      const std::string name(db);
      const bool derived_db = name != "log" && name != "meta";
      MDB_dbi src;
      rc = mdb_dbi_open(rtxn, db, 0, &src);
      if (rc == MDB_NOTFOUND) continue;
      if (derived_db && IsLmdbDamage(rc)) {
        // A derived database LMDB cannot find (the scrub counted it as
        // damaged derived state): left out and rebuilt from the log. The
        // failure may have failed the read transaction: a new one.
        mdb_txn_abort(rtxn);
        rtxn = nullptr;
        if ((rc = mdb_txn_begin(from, nullptr, MDB_RDONLY, &rtxn)) != 0) {
          *report += "lmdb reading the " + name + " database: " + mdb_strerror(rc) + "\n";
          return 3;
        }
        continue;
      }
      MDB_cursor* cur = nullptr;
      if (rc == 0) rc = mdb_cursor_open(rtxn, src, &cur);
      MDB_txn* wtxn = nullptr;
      MDB_dbi dst;
      if (rc == 0) rc = mdb_txn_begin(to, nullptr, 0, &wtxn);
      if (rc == 0) rc = mdb_dbi_open(wtxn, db, MDB_CREATE, &dst);
      // Committed every 64 MiB: a write transaction's dirty pages are bounded.
      uint64_t batch_bytes = 0;
      MDB_val k, v;
      int r = rc == 0 ? mdb_cursor_get(cur, &k, &v, MDB_FIRST) : rc;
      for (; r == 0; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        rc = mdb_put(wtxn, dst, &k, &v, 0);
        if (rc == MDB_BAD_VALSIZE && derived_db) {
          rc = 0;
          continue;
        }
        if (rc != 0) break;
        ++copied;
        batch_bytes += k.mv_size + v.mv_size;
        if (batch_bytes >= (64u << 20)) {
          batch_bytes = 0;
          if ((rc = mdb_txn_commit(wtxn)) != 0 || (rc = mdb_txn_begin(to, nullptr, 0, &wtxn)) != 0) {
            wtxn = nullptr;
            break;
          }
        }
      }
      // What follows a page of a derived tree that LMDB cannot read is left
      // out: it is rebuilt from the log.
      if (rc == 0 && r != MDB_NOTFOUND && !(derived_db && IsLmdbDamage(r))) rc = r;
      if (r != 0 && r != MDB_NOTFOUND && rc == 0) {
        // LMDB failed the read transaction: the next database is read in a new one.
        mdb_txn_abort(rtxn);
        rtxn = nullptr;
        rc = mdb_txn_begin(from, nullptr, MDB_RDONLY, &rtxn);
      }
      if (rc == 0) {
        rc = mdb_txn_commit(wtxn);
      } else if (wtxn) {
        mdb_txn_abort(wtxn);
      }
      if (rc != 0) {
        *report += "lmdb copying the " + name + " database: " + mdb_strerror(rc) + "\n";
        return IsLmdbDamage(rc) ? 2 : 3;
      }
    }
    if ((rc = mdb_env_sync(to, 1)) != 0) {
      *report += "lmdb syncing the new file: " + std::string(mdb_strerror(rc)) + "\n";
      return 3;
    }
    mdb_env_close(to);
    *report += "records " + std::to_string(copied) + "\n";
    return 0;
  };
  std::string report;
  int code = 0;
  if (Status s = RunInChild("rewriting " + data_file,
                            Budget(static_cast<uint64_t>(st.st_size), true), body, &report, &code);
      !s.ok()) {
    std::filesystem::remove_all(scratch, ec);
    return s;
  }
  std::string lmdb;
  std::istringstream lines(report);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("records ", 0) == 0) records = std::strtoull(line.c_str() + 8, nullptr, 10);
    if (line.rfind("lmdb ", 0) == 0) lmdb = line.substr(5);
  }
  if (code != 0) {
    std::filesystem::remove_all(scratch, ec);
    const std::string message = "rewriting " + data_file + ": " + (lmdb.empty() ? "failed" : lmdb);
    return code == 2 ? Status::Damaged(message) : Status::Storage(message);
  }
  // The original stays, as evidence, until the broker has opened the copy
  // and found nothing that sends the directory to quarantine (which takes
  // it along); see DropPreRewrite.
  // One already there is from a rewrite whose copy was never trusted (a
  // crash, or a start that failed after it): it is the file as first found,
  // and data.mdb is only a copy of it.
  const std::string kept = dir + "/" + kPreRewriteFile;
  if (::access(kept.c_str(), F_OK) != 0 && ::link(data_file.c_str(), kept.c_str()) != 0) {
    const std::string error = std::strerror(errno);
    std::filesystem::remove_all(scratch, ec);
    return Status::Storage("keeping " + data_file + " as " + kept + ": " + error);
  }
  // In place at once: the rename is atomic, and the directory entry is
  // synced (the new file's pages already are).
  if (::rename((scratch + "/data.mdb").c_str(), data_file.c_str()) != 0) {
    const std::string error = std::strerror(errno);
    std::filesystem::remove_all(scratch, ec);
    return Status::Storage("replacing " + data_file + ": " + error);
  }
  if (Status s = FsyncPath(dir, /*directory=*/true); !s.ok()) return s;
  std::filesystem::remove_all(scratch, ec);
  return records;
}

Status LmdbStore::DropPreRewrite(const std::string& dir) {
  const std::string kept = dir + "/" + kPreRewriteFile;
  if (::unlink(kept.c_str()) != 0) {
    if (errno == ENOENT) return Status::Ok();
    return Status::Storage("removing " + kept + ": " + std::strerror(errno));
  }
  return FsyncPath(dir, /*directory=*/true);
}

}  // namespace ordo::broker
