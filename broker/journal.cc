#include "broker/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "broker/crc32c.h"

namespace ordo::broker {

namespace {

constexpr uint32_t kMagic = 0x324A524F;  // "ORJ2" little-endian
// Header field offsets.
constexpr size_t kCrcAt = 0, kMagicAt = 4, kLengthAt = 8, kGenerationAt = 12, kIndexAt = 20,
                 kSyncedAt = 28;

template <typename T>
void StoreLe(uint8_t* p, T v) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>((v >> (8 * i)) & 0xff);
}

template <typename T>
T LoadLe(const uint8_t* p) {
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(p[i]) << (8 * i));
  return v;
}

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }

bool PreadAll(int fd, uint8_t* dst, size_t n, uint64_t at) {
  while (n > 0) {
    const ssize_t got = ::pread(fd, dst, n, static_cast<off_t>(at));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    dst += got;
    n -= static_cast<size_t>(got);
    at += static_cast<uint64_t>(got);
  }
  return true;
}

bool PwriteAll(int fd, const uint8_t* p, size_t n, uint64_t at) {
  while (n > 0) {
    const ssize_t done = ::pwrite(fd, p, n, static_cast<off_t>(at));
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) return false;
    p += done;
    n -= static_cast<size_t>(done);
    at += static_cast<uint64_t>(done);
  }
  return true;
}

}  // namespace

Status Journal::Open(const std::string& path, uint64_t size_bytes, bool create,
                     std::unique_ptr<Journal>* out) {
  std::unique_ptr<Journal> j(new Journal());
  j->path_ = path;
  j->fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
  if (j->fd_ < 0) return Status::Error(Errno("opening the journal " + path));
  struct stat st {};
  if (::fstat(j->fd_, &st) != 0) return Status::Error(Errno("stat " + path));
  j->size_ = static_cast<uint64_t>(st.st_size);
  if (create && j->size_ < size_bytes) {
    // Reserved once; then every pass overwrites blocks the file already has.
    const int rc = ::posix_fallocate(j->fd_, 0, static_cast<off_t>(size_bytes));
    if (rc != 0) {
      return Status::Error("reserving " + std::to_string(size_bytes) + " bytes for the journal " +
                           path + ": " + std::strerror(rc));
    }
    if (::fsync(j->fd_) != 0) return Status::Error(Errno("fsync " + path));
    // The new name must be durable too.
    const size_t slash = path.find_last_of('/');
    const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || ::fsync(dfd) != 0) {
      const Status s = Status::Error(Errno("fsync of the directory " + dir));
      if (dfd >= 0) ::close(dfd);
      return s;
    }
    ::close(dfd);
    j->size_ = size_bytes;
  }
  *out = std::move(j);
  return Status::Ok();
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

bool Journal::ReadIntact(uint64_t at, uint64_t generation, Header* header,
                         std::vector<uint8_t>* body) const {
  uint8_t h[kHeaderBytes];
  if (at + kHeaderBytes > size_ || !PreadAll(fd_, h, kHeaderBytes, at)) return false;
  if (LoadLe<uint32_t>(h + kMagicAt) != kMagic || LoadLe<uint64_t>(h + kGenerationAt) != generation) {
    return false;
  }
  const uint32_t length = LoadLe<uint32_t>(h + kLengthAt);
  if (at + kHeaderBytes + length > size_) return false;
  body->resize(length);
  if (!PreadAll(fd_, body->data(), length, at + kHeaderBytes)) return false;
  uint32_t crc = Crc32c(h + kMagicAt, kHeaderBytes - kMagicAt);
  crc = Crc32cExtend(crc, body->data(), body->size());
  if (crc != LoadLe<uint32_t>(h + kCrcAt)) return false;
  header->length = length;
  header->generation = generation;
  header->index = LoadLe<uint64_t>(h + kIndexAt);
  header->synced = LoadLe<uint64_t>(h + kSyncedAt);
  return true;
}

Status Journal::Replay(uint64_t generation,
                       const std::function<Status(std::span<const uint8_t>)>& apply,
                       uint64_t* records) const {
  *records = 0;
  std::vector<uint8_t> body;
  uint64_t at = 0;
  Header h;
  for (uint64_t index = 0;; ++index) {
    if (ReadIntact(at, generation, &h, &body) && h.index == index) {
      if (Status s = apply(body); !s.ok()) return s;
      ++*records;
      at += RecordBytes(h.length);
      continue;
    }
    // The end of what is durable, unless a later record of this pass says
    // this one had been synced. Any such record sits at an aligned position
    // after this one: look at every position whose magic and generation
    // match (a few per MiB read).
    // Chunks overlap by 64 bytes, so no header is cut at a chunk's end. A
    // chunk is 1 MiB, or what is left of a smaller file (at least twice
    // the overlap, so each step moves on): a short journal does not cost
    // a 1 MiB buffer.
    constexpr uint64_t kChunkBytesMax = 1 << 20, kOverlapBytes = 64;
    static_assert(kHeaderBytes <= kOverlapBytes);
    const uint64_t left = at < size_ ? size_ - at : 0;
    std::vector<uint8_t> chunk(
        static_cast<size_t>(std::clamp(left, 2 * kOverlapBytes, kChunkBytesMax)));
    for (uint64_t base = at; base < size_; base += chunk.size() - kOverlapBytes) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), size_ - base));
      if (!PreadAll(fd_, chunk.data(), n, base)) break;
      for (size_t off = 0; off + kHeaderBytes <= n; off += 8) {
        const uint8_t* p = chunk.data() + off;
        if (LoadLe<uint32_t>(p + kMagicAt) != kMagic ||
            LoadLe<uint64_t>(p + kGenerationAt) != generation) {
          continue;
        }
        Header later;
        std::vector<uint8_t> later_body;
        if (ReadIntact(base + off, generation, &later, &later_body) && later.index > index &&
            later.synced > index) {
          return Status::Damaged(
              "journal " + path_ + ": record " + std::to_string(index) + " at byte " +
              std::to_string(at) + " is damaged or missing, but record " +
              std::to_string(later.index) + " says it had been synced: acknowledged writes "
              "are lost");
        }
      }
    }
    return Status::Ok();
  }
}

bool Journal::StartsPass(uint64_t generation) const {
  Header h;
  std::vector<uint8_t> body;
  return ReadIntact(0, generation, &h, &body) && h.index == 0;
}

void Journal::Restart(uint64_t generation) {
  generation_ = generation;
  position_ = 0;
  index_ = 0;
  synced_records_ = 0;
  synced_position_ = 0;
}

std::vector<uint8_t>* Journal::StartRecord() {
  frame_.resize(kHeaderBytes);
  return &frame_;
}

Status Journal::Append(std::span<const uint8_t> body) {
  std::vector<uint8_t>* frame = StartRecord();
  frame->insert(frame->end(), body.begin(), body.end());
  return FinishRecord();
}

Status Journal::FinishRecord() {
  const size_t body_bytes = frame_.size() - kHeaderBytes;
  if (!Fits(body_bytes)) return Status::Error("journal " + path_ + ": full");
  frame_.resize(RecordBytes(body_bytes), 0);
  uint8_t* h = frame_.data();
  StoreLe<uint32_t>(h + kMagicAt, kMagic);
  StoreLe<uint32_t>(h + kLengthAt, static_cast<uint32_t>(body_bytes));
  StoreLe<uint64_t>(h + kGenerationAt, generation_);
  StoreLe<uint64_t>(h + kIndexAt, index_);
  StoreLe<uint64_t>(h + kSyncedAt, synced_records_);
  StoreLe<uint32_t>(h + kCrcAt, Crc32c(h + kMagicAt, kHeaderBytes - kMagicAt + body_bytes));
  if (!PwriteAll(fd_, frame_.data(), frame_.size(), position_)) {
    return Status::Error(Errno("writing the journal " + path_));
  }
  position_ += frame_.size();
  ++index_;
  return Status::Ok();
}

Status Journal::Sync() {
  if (::fdatasync(fd_) != 0) return Status::Error(Errno("fdatasync of the journal " + path_));
  synced_records_ = index_;
  synced_position_ = position_;
  return Status::Ok();
}

void Journal::DropUnsyncedForTest() {
  if (position_ <= synced_position_) return;
  const std::vector<uint8_t> zeros(position_ - synced_position_, 0);
  PwriteAll(fd_, zeros.data(), zeros.size(), synced_position_);
}

}  // namespace ordo::broker
