#include "base/toml_file.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace ordo {

Status ParseToml(std::string_view text, const std::string& source, toml::table* out) {
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte == '\n') {
      ++line;
      line_start = i + 1;
    } else if (byte >= 0x80) {
      char hex[8];
      std::snprintf(hex, sizeof(hex), "0x%02X", byte);
      return Status::Error(source + ":" + std::to_string(line) + ": byte " + hex + " at column " +
                           std::to_string(i - line_start + 1) +
                           " is not ASCII; write other characters as \\uXXXX in a string");
    }
  }
  try {
    *out = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return Status::Error(source + ":" + std::to_string(e.source().begin.line) + ": " +
                         std::string(e.description()));
  }
  return Status::Ok();
}

Status ParseTomlFile(const std::string& path, toml::table* out) {
  // (An ifstream opens a directory, and reads it as an empty file.)
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return Status::Error(path + ": is a directory; give the TOML file (e.g. " +
                         (std::filesystem::path(path) / "ordo.toml").string() + ")");
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) return Status::Error(path + ": cannot be read (" + std::strerror(errno) + ")");
  const std::string text((std::istreambuf_iterator<char>(file)), {});
  if (file.bad()) return Status::Error(path + ": reading it failed");
  return ParseToml(text, path, out);
}

}  // namespace ordo
