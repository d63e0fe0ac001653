// Reads a TOML file (toml++) into a table, with the error a user can act
// on: "PATH:LINE: what is wrong". Every config-like file of Ordo (broker
// config, access file, key files) is read through it.
#pragma once

#include <toml++/toml.h>

#include <string>
#include <string_view>

#include "base/status.h"

namespace ordo {

Status ParseTomlFile(const std::string& path, toml::table* out);

// The same for a file's text; `source` names it in messages. The text must
// be ASCII: toml++ 3.3.0 (Debian 12's) reaches undefined behaviour
// (__builtin_unreachable) on many non-ASCII characters where it checks for
// whitespace, é and ü among them (marzer/tomlplusplus#190; found by
// tests/fuzz, config), so any other byte is refused, naming its line and
// column. Other characters are written as \uXXXX escapes in strings, which
// toml++ decodes safely.
Status ParseToml(std::string_view text, const std::string& source, toml::table* out);

}  // namespace ordo
