// Shared by the fuzz targets (tests/fuzz/, one program per decoder): the
// seed-corpus mode, the property check that fails a run, and helpers the
// targets have in common.
//
// Each target defines LLVMFuzzerTestOneInput, which calls the real decoder
// on the input and checks what must hold whatever the input: a failure is a
// typed error (never a crash, an assert or a sanitizer report), and a
// success re-encodes to what decodes the same, within the input's size.
// Each also defines Seeds(): valid inputs made by the real encoders, which
// `TARGET --write-corpus=DIR` writes to DIR (tests/fuzz/corpus/TARGET/ is
// that output, plus the inputs of bugs the fuzzers found).
//
// The corpus stays fresh: every seed Seeds() writes must be in
// tests/fuzz/corpus/TARGET/ under its name with the same bytes (extra files
// are allowed). scripts/test --fuzz checks it before fuzzing and fails on a
// missing or different seed; after changing a format, an encoder or a seed,
// run `build-fuzz/fuzz_TARGET --write-corpus=tests/fuzz/corpus/TARGET` and
// commit the result. So Seeds() must be deterministic: no clock, no random
// bytes, nothing of the machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ordo::fuzz {

// One seed input: its file name in the corpus and its bytes.
struct Seed {
  std::string name;
  std::string bytes;
};

// Defined by each target.
std::vector<Seed> Seeds();

// Prints what failed and where, then aborts: libFuzzer saves the input as a
// crash (crash-SHA1 in the working directory, or -artifact_prefix=).
[[noreturn]] void Fail(const char* condition, const char* file, int line,
                       const std::string& detail = "");

// A property of the target: checked in every build (fuzz targets run with
// NDEBUG in RelWithDebInfo, so this is not assert()).
#define ORDO_FUZZ_CHECK(condition) \
  ((condition) ? static_cast<void>(0) : ::ordo::fuzz::Fail(#condition, __FILE__, __LINE__))

// The same for an expression giving a status (ordo::Status, DecodeStatus):
// it must be ok, or its message is printed with the failure.
#define ORDO_FUZZ_CHECK_OK(expression)                                                          \
  do {                                                                                          \
    const auto& ordo_fuzz_status = (expression);                                                \
    if (!ordo_fuzz_status.ok()) {                                                               \
      ::ordo::fuzz::Fail(#expression " is ok", __FILE__, __LINE__, ordo_fuzz_status.message()); \
    }                                                                                           \
  } while (false)

// A file in memory (memfd) for readers that take a path: Write replaces
// its content and returns a path that opens it (/proc/self/fd/N). One
// descriptor for the whole run; `mode` is the file's permission bits.
class MemoryFile {
 public:
  explicit MemoryFile(const char* name, unsigned mode = 0600);
  const std::string& Write(std::span<const uint8_t> bytes);

 private:
  int fd_;
  std::string path_;
};

// The same bytes at an address that is not 8-byte aligned, for decoders
// that must give the same answer at any alignment (FlatBuffers reads
// scalars in place; ZeroMQ and LMDB hand out bytes at any address).
class Misaligned {
 public:
  explicit Misaligned(std::span<const uint8_t> bytes);
  std::span<const uint8_t> bytes() const { return {storage_.data() + 1, size_}; }

 private:
  std::vector<uint8_t> storage_;
  size_t size_;
};

// A string's bytes as the decoders take them.
inline std::span<const uint8_t> Bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace ordo::fuzz
