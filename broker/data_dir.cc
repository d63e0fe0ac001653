#include "broker/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "base/durable_file.h"
#include "broker/crc32c.h"

namespace ordo::broker {

namespace {

constexpr char kLockFile[] = "LOCK";
constexpr char kIdentityFile[] = "IDENTITY";
constexpr char kDamagedPrefix[] = "damaged-";
constexpr int kIdentityFormat = 1;
constexpr size_t kIdentityBytesMax = 4096;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

}  // namespace

Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return Status::Storage(Errno("opening " + path));
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Status::Storage(Errno("fsync " + path));
  return Status::Ok();
}

namespace {

struct Identity {
  std::string cluster_id;
  uint32_t node_id = 0;
  bool history = false;
};

std::string IdentityBody(const Identity& id) {
  std::ostringstream s;
  s << "# Ordo data directory: the node and cluster it belongs to (broker/data_dir.h).\n"
    << "# A broker refuses a directory that names another node: never copy it.\n"
    << "format = " << kIdentityFormat << "\n"
    << "cluster_id = \"" << id.cluster_id << "\"\n"
    << "node_id = " << id.node_id << "\n";
  if (id.history) s << "history = true\n";
  return s.str();
}

// Parses IDENTITY; false (with *why) when it is not one this code wrote.
bool ParseIdentity(const std::string& text, Identity* out, std::string* why) {
  const size_t crc_at = text.rfind("crc32c = ");
  if (crc_at == std::string::npos || (crc_at > 0 && text[crc_at - 1] != '\n')) {
    *why = "no crc32c line";
    return false;
  }
  const std::string body = text.substr(0, crc_at);
  char crc_text[9] = {};
  unsigned crc = 0;
  if (std::sscanf(text.c_str() + crc_at, "crc32c = %8[0-9a-f]", crc_text) != 1 ||
      std::strlen(crc_text) != 8 || std::sscanf(crc_text, "%x", &crc) != 1 ||
      text.substr(crc_at) != "crc32c = " + std::string(crc_text) + "\n") {
    *why = "a malformed crc32c line";
    return false;
  }
  if (Crc32c(body) != crc) {
    *why = "its CRC32C does not match";
    return false;
  }
  std::istringstream lines(body);
  std::string line;
  bool format = false, cluster = false, node = false;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    unsigned long n = 0;
    char name[65] = {};
    if (line == "format = " + std::to_string(kIdentityFormat)) {
      format = true;
    } else if (std::sscanf(line.c_str(), "node_id = %lu", &n) == 1 &&
               line == "node_id = " + std::to_string(n) && n > 0 && n <= UINT32_MAX) {
      out->node_id = static_cast<uint32_t>(n);
      node = true;
    } else if (std::sscanf(line.c_str(), "cluster_id = \"%64[A-Za-z0-9._-]\"", name) == 1 &&
               line == "cluster_id = \"" + std::string(name) + "\"") {
      out->cluster_id = name;
      cluster = true;
    } else if (line == "history = true") {
      out->history = true;
    } else {
      *why = "an unknown line '" + line + "'";
      return false;
    }
  }
  if (!format || !cluster || !node) {
    *why = "a missing field";
    return false;
  }
  return true;
}

}  // namespace

Status DataDir::Acquire(const std::string& dir, const std::string& cluster_id, uint32_t node_id,
                        std::unique_ptr<DataDir>* out) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::Storage("data_dir " + dir + ": " + ec.message());
  std::unique_ptr<DataDir> d(new DataDir());
  d->dir_ = dir;
  d->cluster_id_ = cluster_id;
  d->node_id_ = node_id;
  const std::string lock = dir + "/" + kLockFile;
  d->lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (d->lock_fd_ < 0) return Status::Storage(Errno("opening " + lock));
  if (::flock(d->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(d->lock_fd_, pid, sizeof pid - 1, 0);
    std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : std::string("?");
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    if (err == EWOULDBLOCK) {
      return Status::Storage("data_dir " + dir + " is in use by another ordo-broker (pid " +
                             holder + "): two brokers on one directory would corrupt it. Stop "
                             "that one, or give this broker its own data_dir");
    }
    errno = err;
    return Status::Storage(Errno("locking " + lock));
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(d->lock_fd_, 0) != 0 ||
      ::pwrite(d->lock_fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return Status::Storage(Errno("writing " + lock));
  }

  const std::string path = dir + "/" + kIdentityFile;
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    // A new directory, or one written before identities existed: this node
    // claims it now.
    Status s = d->WriteIdentity();
    if (s.ok()) *out = std::move(d);
    return s;
  }
  std::string text;
  text.resize(kIdentityBytesMax + 1);
  f.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(f.gcount()));
  Identity id;
  std::string why;
  if (text.size() > kIdentityBytesMax) why = "it is larger than any identity file";
  if (!why.empty() || !ParseIdentity(text, &id, &why)) {
    *out = std::move(d);
    return Status::Damaged(path + " fails its check (" + why + ")");
  }
  if (id.cluster_id != cluster_id || id.node_id != node_id) {
    return Status::Storage("data_dir " + dir + " belongs to node " + std::to_string(id.node_id) +
                           " of cluster \"" + id.cluster_id + "\", but this broker is node " +
                           std::to_string(node_id) + " of cluster \"" + cluster_id +
                           "\" (its config's node_id and cluster_id). Point data_dir at this "
                           "node's own directory; a copy of another node's would vote with "
                           "that node's promises");
  }
  d->history_lost_ = id.history;
  *out = std::move(d);
  return Status::Ok();
}

DataDir::~DataDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // drops the flock
}

Status DataDir::WriteIdentity() {
  const std::string body =
      IdentityBody(Identity{cluster_id_, node_id_, history_lost_});
  char crc[16];
  std::snprintf(crc, sizeof crc, "%08x", Crc32c(body));
  const std::string text = body + "crc32c = " + crc + "\n";
  const std::string path = dir_ + "/" + kIdentityFile;
  if (Status s = WriteFileDurably(path, text, 0644); !s.ok()) return Status::Storage(s.message());
  return Status::Ok();
}

StatusOr<std::string> DataDir::Quarantine() {
  char stamp[32];
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  std::string target = dir_ + "/" + kDamagedPrefix + stamp;
  for (int n = 1; std::filesystem::exists(target); ++n) {
    target = dir_ + "/" + kDamagedPrefix + stamp + "-" + std::to_string(n);
  }
  std::error_code ec;
  std::filesystem::create_directory(target, ec);
  if (ec) return Status::Storage("creating " + target + ": " + ec.message());
  std::vector<std::filesystem::path> entries;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) entries.push_back(e.path());
  if (ec) return Status::Storage("listing " + dir_ + ": " + ec.message());
  // data.mdb last: should a move fail half way, the next start still finds
  // the damage there (and quarantines again) rather than an empty store
  // beside a loose original (data.mdb.pre-rewrite, which it would remove).
  std::stable_partition(entries.begin(), entries.end(),
                        [](const std::filesystem::path& p) { return p.filename() != "data.mdb"; });
  for (const std::filesystem::path& p : entries) {
    const std::string name = p.filename().string();
    if (name == kLockFile || name.rfind(kDamagedPrefix, 0) == 0) continue;
    std::filesystem::rename(p, std::filesystem::path(target) / name, ec);
    if (ec) return Status::Storage("moving " + p.string() + " to " + target + ": " + ec.message());
  }
  if (Status s = FsyncPath(target, true); !s.ok()) return s;
  history_lost_ = true;
  if (Status s = WriteIdentity(); !s.ok()) return s;  // also makes the moves durable (fsync of DIR)
  return target;
}

}  // namespace ordo::broker
