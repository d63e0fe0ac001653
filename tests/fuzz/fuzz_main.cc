// What every fuzz target shares (tests/fuzz/fuzz.h), including the
// --write-corpus mode: libFuzzer calls LLVMFuzzerInitialize before it parses
// its own flags, so the mode runs and exits before libFuzzer sees the flag.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {

void Fail(const char* condition, const char* file, int line, const std::string& detail) {
  std::fprintf(stderr, "fuzz property failed at %s:%d: %s%s%s\n", file, line, condition,
               detail.empty() ? "" : ": ", detail.c_str());
  std::abort();
}

MemoryFile::MemoryFile(const char* name, unsigned mode) : fd_(::memfd_create(name, 0)) {
  ORDO_FUZZ_CHECK(fd_ >= 0);
  ORDO_FUZZ_CHECK(::fchmod(fd_, mode) == 0);
  path_ = "/proc/self/fd/" + std::to_string(fd_);
}

const std::string& MemoryFile::Write(std::span<const uint8_t> bytes) {
  ORDO_FUZZ_CHECK(::ftruncate(fd_, 0) == 0);
  ORDO_FUZZ_CHECK(::pwrite(fd_, bytes.data(), bytes.size(), 0) ==
                  static_cast<ssize_t>(bytes.size()));
  return path_;
}

Misaligned::Misaligned(std::span<const uint8_t> bytes) : size_(bytes.size()) {
  // std::vector's buffer is aligned for any scalar: one byte in is not.
  storage_.resize(bytes.size() + 1);
  if (!bytes.empty()) std::memcpy(storage_.data() + 1, bytes.data(), bytes.size());
}

namespace {

// Writes Seeds() into `dir` (created if missing), one file per seed.
int WriteCorpus(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  size_t bytes = 0;
  const std::vector<Seed> seeds = Seeds();
  for (const Seed& seed : seeds) {
    const std::string path = dir + "/" + seed.name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(seed.bytes.data(), static_cast<std::streamsize>(seed.bytes.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return 1;
    }
    bytes += seed.bytes.size();
  }
  std::printf("wrote %zu seeds (%zu bytes) to %s\n", seeds.size(), bytes, dir.c_str());
  return 0;
}

}  // namespace
}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  static constexpr char kFlag[] = "--write-corpus=";
  for (int i = 1; i < *argc; ++i) {
    const char* arg = (*argv)[i];
    if (std::strncmp(arg, kFlag, sizeof(kFlag) - 1) == 0) {
      std::exit(ordo::fuzz::WriteCorpus(arg + sizeof(kFlag) - 1));
    }
  }
  return 0;
}
