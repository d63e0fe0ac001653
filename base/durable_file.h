// Writes a whole file so that a crash leaves either the old file or the new
// one: a fresh PATH.tmp (created with `mode`), written, fsynced, renamed
// over PATH, and the directory fsynced.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "base/status.h"

namespace ordo {

Status WriteFileDurably(const std::string& path, std::string_view bytes, mode_t mode);

}  // namespace ordo
