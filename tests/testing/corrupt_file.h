// Test helper: flips one bit of the byte at `at` in the file at `path`
// (what a rotting disk or a torn write does to a journal record).
#pragma once

#include <cstdint>
#include <fstream>
#include <string>

namespace ordo::testing {

inline void FlipByteInFile(const std::string& path, uint64_t at) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(at));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x40);
  f.seekp(static_cast<std::streamoff>(at));
  f.write(&c, 1);
}

}  // namespace ordo::testing
