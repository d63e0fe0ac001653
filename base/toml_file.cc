#include "base/toml_file.h"

namespace ordo {

Status ParseTomlFile(const std::string& path, toml::table* out) {
  try {
    *out = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return Status::Error(path + ":" + std::to_string(e.source().begin.line) + ": " +
                         std::string(e.description()));
  }
  return Status::Ok();
}

}  // namespace ordo
