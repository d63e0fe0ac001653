#include "tests/testing/write_points.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bitset>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

namespace ordo::testing {
namespace {

template <typename F>
F Next(const char* name) {
  void* f = ::dlsym(RTLD_NEXT, name);
  if (f == nullptr) {
    std::fprintf(stderr, "write_points: no %s after this program\n", name);
    std::abort();
  }
  return reinterpret_cast<F>(f);
}

// libc's functions (or whatever comes after this program, e.g. ASan's).
struct Real {
  ssize_t (*write)(int, const void*, size_t) = Next<decltype(write)>("write");
  ssize_t (*pwrite)(int, const void*, size_t, off_t) = Next<decltype(pwrite)>("pwrite");
  ssize_t (*pwrite64)(int, const void*, size_t, off64_t) = Next<decltype(pwrite64)>("pwrite64");
  ssize_t (*writev)(int, const iovec*, int) = Next<decltype(writev)>("writev");
  ssize_t (*pwritev)(int, const iovec*, int, off_t) = Next<decltype(pwritev)>("pwritev");
  ssize_t (*pwritev64)(int, const iovec*, int, off64_t) = Next<decltype(pwritev64)>("pwritev64");
  int (*fsync)(int) = Next<decltype(fsync)>("fsync");
  int (*fdatasync)(int) = Next<decltype(fdatasync)>("fdatasync");
  int (*ftruncate)(int, off_t) = Next<decltype(ftruncate)>("ftruncate");
  int (*msync)(void*, size_t, int) = Next<decltype(msync)>("msync");
};
const Real& R() {
  static const Real real;
  return real;
}

constexpr uint64_t kPage = 4096;

// Bytes of one page written since the file's last sync, with what they
// held before (what a power loss leaves there).
struct HeldPage {
  std::bitset<kPage> held;
  std::array<uint8_t, kPage> old{};
};

struct File {
  uint64_t name_hash = 0;  // of its path when first seen: the same in every run
  int shadow = -1;         // our own descriptor of the file (O_RDWR), for reads and the undo
  uint64_t durable_size = 0;
  std::map<uint64_t, std::unique_ptr<HeldPage>> pages;
};

struct State {
  WritePointPlan plan;
  std::string prefix;  // the directory, resolved, with a trailing '/'
  uint64_t points = 0;
  uint64_t unmodelled = 0;
  std::map<std::pair<dev_t, ino_t>, File> files;
};

std::atomic<bool> g_armed{false};
State* g_state = nullptr;  // never freed: the armed process ends in _exit
thread_local bool t_inside = false;

// Marks the calls below as ours (no recursion into the model), keeping errno.
class Inside {
 public:
  Inside() : errno_(errno) { t_inside = true; }
  ~Inside() {
    t_inside = false;
    errno = errno_;
  }
  void KeepErrno() { errno_ = errno; }

 private:
  int errno_;
};

bool Active() { return g_armed.load(std::memory_order_acquire) && !t_inside; }
bool PowerLoss() {
  return g_state->plan.fault == WriteFault::kPowerLoss ||
         g_state->plan.fault == WriteFault::kPartialPowerLoss;
}

uint64_t SizeOf(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// The file behind `fd` when it is a regular file under the plan's
// directory (first seen: its size now is taken as durable).
File* Tracked(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return nullptr;
  char link[64];
  std::snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  char path[PATH_MAX];
  const ssize_t n = ::readlink(link, path, sizeof(path) - 1);
  if (n <= 0) return nullptr;
  path[n] = '\0';
  State& s = *g_state;
  if (std::strncmp(path, s.prefix.c_str(), s.prefix.size()) != 0) return nullptr;
  auto [it, fresh] = s.files.try_emplace({st.st_dev, st.st_ino});
  if (fresh) {
    it->second.shadow = ::open(link, O_RDWR | O_CLOEXEC);
    if (it->second.shadow < 0) {
      std::fprintf(stderr, "write_points: cannot reopen %s: %s\n", path, std::strerror(errno));
      ::_exit(120);
    }
    it->second.durable_size = static_cast<uint64_t>(st.st_size);
    it->second.name_hash = std::hash<std::string_view>()(std::string_view(path + s.prefix.size()));
  }
  return &it->second;
}

// Bytes [at, at + len) are about to be overwritten without a sync: keep
// what they hold now (past the end: zeros), unless already kept.
void Hold(File& f, uint64_t at, uint64_t len) {
  if (len == 0) return;
  std::vector<uint8_t> old(len, 0);
  for (uint64_t done = 0; done < len;) {
    const ssize_t got =
        ::pread(f.shadow, old.data() + done, len - done, static_cast<off_t>(at + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // the end of the file: the rest was a hole
    done += static_cast<uint64_t>(got);
  }
  for (uint64_t i = 0; i < len;) {
    const uint64_t byte = at + i;
    std::unique_ptr<HeldPage>& p = f.pages[byte / kPage];
    if (!p) p = std::make_unique<HeldPage>();
    const uint64_t in_page = std::min(len - i, kPage - byte % kPage);
    for (uint64_t k = 0; k < in_page; ++k) {
      const size_t b = (byte + k) % kPage;
      if (!p->held[b]) {
        p->held[b] = true;
        p->old[b] = old[i + k];
      }
    }
    i += in_page;
  }
}

// Bytes [at, at + len) were written durably (an O_DSYNC descriptor).
void Release(File& f, uint64_t at, uint64_t len) {
  for (uint64_t byte = at; byte < at + len;) {
    const uint64_t in_page = std::min(at + len - byte, kPage - byte % kPage);
    auto it = f.pages.find(byte / kPage);
    if (it != f.pages.end()) {
      for (uint64_t k = 0; k < in_page; ++k) it->second->held[(byte + k) % kPage] = false;
      if (it->second->held.none()) f.pages.erase(it);
    }
    byte += in_page;
  }
  f.durable_size = std::max(f.durable_size, at + len);
}

void WriteAll(int fd, const uint8_t* p, size_t n, uint64_t at) {
  while (n > 0) {
    const ssize_t done = R().pwrite(fd, p, n, static_cast<off_t>(at));
    if (done < 0 && errno == EINTR) continue;
    if (done <= 0) {
      std::fprintf(stderr, "write_points: the undo failed: %s\n", std::strerror(errno));
      ::_exit(121);
    }
    p += done;
    n -= static_cast<size_t>(done);
    at += static_cast<uint64_t>(done);
  }
}

constexpr uint64_t kSector = 512;
static_assert(kPage % kSector == 0);

uint64_t Mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The power loss: every file back to its durable image (partial: with
// the sectors and sizes the seed lets survive).
void LosePower() {
  const bool partial = g_state->plan.fault == WriteFault::kPartialPowerLoss;
  const uint64_t seed = Mix(g_state->plan.seed);
  auto survives = [&](const File& f, uint64_t what) {
    return partial && (Mix(seed ^ Mix(f.name_hash ^ Mix(what))) & 1) != 0;
  };
  for (auto& [id, f] : g_state->files) {
    const uint64_t size =
        survives(f, ~uint64_t{0}) ? std::max(f.durable_size, SizeOf(f.shadow)) : f.durable_size;
    if (R().ftruncate(f.shadow, static_cast<off_t>(size)) != 0) {
      std::fprintf(stderr, "write_points: the undo's truncate failed: %s\n", std::strerror(errno));
      ::_exit(121);
    }
    for (const auto& [page, p] : f.pages) {
      for (uint64_t sector = 0; sector < kPage; sector += kSector) {
        const uint64_t at = page * kPage + sector;
        if (at >= size || survives(f, at / kSector)) continue;
        for (uint64_t b = sector; b < sector + kSector && page * kPage + b < size;) {
          if (!p->held[b]) {
            ++b;
            continue;
          }
          uint64_t e = b;
          while (e < sector + kSector && p->held[e] && page * kPage + e < size) ++e;
          WriteAll(f.shadow, p->old.data() + b, e - b, page * kPage + b);
          b = e;
        }
      }
    }
  }
}

[[noreturn]] void Strike(int fd, const iovec* iov, int iovcnt, uint64_t at, uint64_t len) {
  const WritePointPlan& plan = g_state->plan;
  switch (plan.fault) {
    case WriteFault::kTornCrash: {
      // What lands of the write: its first half.
      std::vector<uint8_t> part;
      for (int i = 0; i < iovcnt && part.size() < len / 2; ++i) {
        const auto* b = static_cast<const uint8_t*>(iov[i].iov_base);
        const size_t take = std::min<size_t>(iov[i].iov_len, len / 2 - part.size());
        part.insert(part.end(), b, b + take);
      }
      WriteAll(fd, part.data(), part.size(), at);
      break;
    }
    case WriteFault::kPowerLoss:
    case WriteFault::kPartialPowerLoss:
      LosePower();
      break;
    case WriteFault::kCrash:
    case WriteFault::kNone:
      break;
  }
  ::_exit(plan.exit_code);
}

// One write of `iov` at `offset` (-1: the descriptor's position), done by
// `forward` unless the fault strikes first.
template <typename Forward>
ssize_t OnWrite(int fd, const iovec* iov, int iovcnt, int64_t offset, Forward&& forward) {
  if (!Active()) return forward();
  Inside inside;
  File* f = Tracked(fd);
  if (f == nullptr) {
    const ssize_t r = forward();
    inside.KeepErrno();
    return r;
  }
  uint64_t len = 0;
  for (int i = 0; i < iovcnt; ++i) len += iov[i].iov_len;
  const int flags = ::fcntl(fd, F_GETFL);
  uint64_t at = 0;
  if (offset >= 0) {
    at = static_cast<uint64_t>(offset);
  } else if (flags & O_APPEND) {
    at = SizeOf(fd);
  } else {
    at = static_cast<uint64_t>(std::max<off_t>(0, ::lseek(fd, 0, SEEK_CUR)));
  }
  State& s = *g_state;
  if (++s.points == s.plan.at) Strike(fd, iov, iovcnt, at, len);
  // O_SYNC includes O_DSYNC's bit.
  const bool durable = flags >= 0 && (flags & O_DSYNC) != 0;
  const bool model = PowerLoss();
  if (model && !durable) Hold(*f, at, len);
  const ssize_t r = forward();
  inside.KeepErrno();
  if (model && durable && r > 0) Release(*f, at, static_cast<uint64_t>(r));
  return r;
}

void OnSync(int fd, int rc) {
  if (rc != 0 || !Active()) return;
  Inside inside;
  if (File* f = Tracked(fd)) {
    f->pages.clear();
    f->durable_size = SizeOf(fd);
  }
}

}  // namespace

const char* ToString(WriteFault fault) {
  switch (fault) {
    case WriteFault::kNone:
      return "none";
    case WriteFault::kCrash:
      return "crash";
    case WriteFault::kTornCrash:
      return "torn write and crash";
    case WriteFault::kPowerLoss:
      return "power loss";
    case WriteFault::kPartialPowerLoss:
      return "power loss keeping some unsynced sectors";
  }
  return "?";
}

void ArmWritePoints(const WritePointPlan& plan) {
  (void)R();  // resolved before the first call needs it
  auto* s = new State();
  s->plan = plan;
  char resolved[PATH_MAX];
  s->prefix = (::realpath(plan.dir.c_str(), resolved) ? std::string(resolved) : plan.dir) + "/";
  g_state = s;
  g_armed.store(true, std::memory_order_release);
}

uint64_t WritePointsSoFar() { return g_state ? g_state->points : 0; }
uint64_t UnmodelledWriteCalls() { return g_state ? g_state->unmodelled : 0; }

void StrikeNow() {
  t_inside = true;
  if (g_state && PowerLoss()) LosePower();
  ::_exit(g_state ? g_state->plan.exit_code : 86);
}

}  // namespace ordo::testing

// --- the interposed functions ---
using ordo::testing::OnSync;
using ordo::testing::OnWrite;
using ordo::testing::R;

extern "C" {

ssize_t write(int fd, const void* buf, size_t n) {
  const iovec iov{const_cast<void*>(buf), n};
  return OnWrite(fd, &iov, 1, -1, [&] { return R().write(fd, buf, n); });
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t at) {
  const iovec iov{const_cast<void*>(buf), n};
  return OnWrite(fd, &iov, 1, at, [&] { return R().pwrite(fd, buf, n, at); });
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t at) {
  const iovec iov{const_cast<void*>(buf), n};
  return OnWrite(fd, &iov, 1, at, [&] { return R().pwrite64(fd, buf, n, at); });
}

ssize_t writev(int fd, const iovec* iov, int iovcnt) {
  return OnWrite(fd, iov, iovcnt, -1, [&] { return R().writev(fd, iov, iovcnt); });
}

ssize_t pwritev(int fd, const iovec* iov, int iovcnt, off_t at) {
  return OnWrite(fd, iov, iovcnt, at, [&] { return R().pwritev(fd, iov, iovcnt, at); });
}

ssize_t pwritev64(int fd, const iovec* iov, int iovcnt, off64_t at) {
  return OnWrite(fd, iov, iovcnt, at, [&] { return R().pwritev64(fd, iov, iovcnt, at); });
}

int fsync(int fd) {
  const int rc = R().fsync(fd);
  OnSync(fd, rc);
  return rc;
}

int fdatasync(int fd) {
  const int rc = R().fdatasync(fd);
  OnSync(fd, rc);
  return rc;
}

int ftruncate(int fd, off_t length) noexcept {
  using namespace ordo::testing;
  if (Active()) {
    // Cut bytes are lost only once synced: until then a power loss brings
    // them back (and the durable size stays).
    Inside inside;
    if (File* f = Tracked(fd); f && PowerLoss()) {
      const uint64_t size = SizeOf(fd);
      if (static_cast<uint64_t>(length) < size) Hold(*f, length, size - length);
    }
  }
  return R().ftruncate(fd, length);
}

int msync(void* addr, size_t length, int flags) {
  if (ordo::testing::Active()) ++ordo::testing::g_state->unmodelled;
  return R().msync(addr, length, flags);
}

}  // extern "C"
