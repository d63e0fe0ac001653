// Reads a TOML file (toml++) into a table, with the error a user can act
// on: "PATH:LINE: what is wrong". Every config-like file of Ordo (broker
// config, access file, key files) is read through it.
#pragma once

#include <toml++/toml.h>

#include <string>

#include "base/status.h"

namespace ordo {

Status ParseTomlFile(const std::string& path, toml::table* out);

}  // namespace ordo
