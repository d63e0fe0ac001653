#include "broker/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "broker/crc32c.h"

namespace ordo::broker {

namespace {

constexpr uint32_t kMagic = 0x314A524F;  // "ORJ1" little-endian

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

}  // namespace

Status Journal::Open(const std::string& path, uint64_t size_bytes, std::unique_ptr<Journal>* out) {
  std::unique_ptr<Journal> j(new Journal());
  j->path_ = path;
  j->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (j->fd_ < 0) return Status::Error(Errno("opening the journal " + path));
  struct stat st {};
  if (::fstat(j->fd_, &st) != 0) return Status::Error(Errno("stat " + path));
  if (static_cast<uint64_t>(st.st_size) < size_bytes) {
    // Reserved once; then every pass overwrites blocks the file already has.
    const int rc = ::posix_fallocate(j->fd_, 0, static_cast<off_t>(size_bytes));
    if (rc != 0) {
      return Status::Error("reserving " + std::to_string(size_bytes) + " bytes for the journal " +
                           path + ": " + std::strerror(rc));
    }
    if (::fsync(j->fd_) != 0) return Status::Error(Errno("fsync " + path));
    // The new name must be durable too.
    const std::string dir = path.substr(0, path.find_last_of('/') + 1);
    const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    j->size_ = size_bytes;
  } else {
    j->size_ = static_cast<uint64_t>(st.st_size);
  }
  *out = std::move(j);
  return Status::Ok();
}

Journal::~Journal() {
  if (fd_ >= 0) ::close(fd_);
}

Journal::Read Journal::ReadRecord(uint64_t at, uint64_t generation, uint64_t index,
                                  std::vector<uint8_t>* body, uint64_t* body_bytes) const {
  uint8_t h[kHeaderBytes];
  if (at + kHeaderBytes > size_ || !PreadAll(fd_, h, kHeaderBytes, at)) return Read::kAbsent;
  const uint32_t length = LoadLe<uint32_t>(h + 4);
  if (LoadLe<uint32_t>(h) != kMagic || LoadLe<uint64_t>(h + 12) != generation ||
      LoadLe<uint64_t>(h + 20) != index) {
    return Read::kAbsent;
  }
  *body_bytes = length;
  if (at + kHeaderBytes + length > size_) return Read::kDamaged;
  body->resize(length);
  if (!PreadAll(fd_, body->data(), length, at + kHeaderBytes)) return Read::kDamaged;
  uint32_t crc = Crc32c(h + 12, 16);
  crc = Crc32cExtend(crc, body->data(), body->size());
  return crc == LoadLe<uint32_t>(h + 8) ? Read::kIntact : Read::kDamaged;
}

Status Journal::Replay(uint64_t generation,
                       const std::function<Status(std::span<const uint8_t>)>& apply,
                       uint64_t* records) const {
  *records = 0;
  std::vector<uint8_t> body;
  uint64_t at = 0;
  for (uint64_t index = 0;; ++index) {
    uint64_t length = 0;
    const Read r = ReadRecord(at, generation, index, &body, &length);
    if (r == Read::kAbsent) return Status::Ok();
    if (r == Read::kDamaged) {
      // A torn last write was never acknowledged. An intact record after it
      // was: its fdatasync made this one durable too, so this is damage.
      std::vector<uint8_t> next;
      uint64_t next_length = 0;
      if (ReadRecord(at + kHeaderBytes + length, generation, index + 1, &next, &next_length) ==
          Read::kIntact) {
        return Status::Error("journal " + path_ + ": record " + std::to_string(index) +
                             " at byte " + std::to_string(at) +
                             " fails its check but later records are intact; acknowledged "
                             "writes would be lost. Move the data directory away to rejoin "
                             "from the peers");
      }
      return Status::Ok();
    }
    if (Status s = apply(body); !s.ok()) return s;
    ++*records;
    at += kHeaderBytes + length;
  }
}

void Journal::Restart(uint64_t generation) {
  generation_ = generation;
  position_ = 0;
  index_ = 0;
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
  uint8_t* h = frame_.data();
  StoreLe<uint32_t>(h, kMagic);
  StoreLe<uint32_t>(h + 4, static_cast<uint32_t>(body_bytes));
  StoreLe<uint64_t>(h + 12, generation_);
  StoreLe<uint64_t>(h + 20, index_);
  StoreLe<uint32_t>(h + 8, Crc32c(h + 12, frame_.size() - 12));
  const uint8_t* p = frame_.data();
  size_t left = frame_.size();
  uint64_t at = position_;
  while (left > 0) {
    const ssize_t n = ::pwrite(fd_, p, left, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::Error(Errno("writing the journal " + path_));
    p += n;
    left -= static_cast<size_t>(n);
    at += static_cast<uint64_t>(n);
  }
  position_ += frame_.size();
  ++index_;
  return Status::Ok();
}

Status Journal::Sync() {
  if (::fdatasync(fd_) != 0) return Status::Error(Errno("fdatasync of the journal " + path_));
  return Status::Ok();
}

}  // namespace ordo::broker
