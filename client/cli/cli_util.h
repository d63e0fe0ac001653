// Pieces of build/ordo that are pure functions, kept apart so unit tests can
// call them (tests/client/cli_test.cc). Not part of the library's API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ordo/client.h"

namespace ordo::cli {

// Exit statuses of every `ordo` command (documented in --help and README.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;        // a message not acknowledged, a broker refused
inline constexpr int kExitUsage = 2;         // bad flags or arguments
inline constexpr int kExitUnavailable = 3;   // no broker or leader answered in time
inline constexpr int kExitBelowRetained = 4; // --from is below the earliest retained offset
inline constexpr int kExitRefused = 5;       // authentication or permission refused

// The text every command's --help ends with.
inline constexpr const char* kExitStatusHelp =
    "Exit status: 0 ok; 1 a message was not acknowledged or a broker refused the request; "
    "2 usage error; 3 no broker or leader answered in time (check `ordo status`); "
    "4 --from is below the earliest retained offset (use --from earliest); "
    "5 authentication or permission refused (check --credentials and the brokers' access "
    "file).";

// The exit status for a failed call.
int ExitCodeFor(ErrorCode code);

// One line of replay progress, at most `width` columns:
//   [=========>          ]  45% 450/1000 1.2k msg/s
// `done` of `total` records after `elapsed_seconds`. Without room for a bar
// (narrow terminals) only the numbers are shown.
std::string RenderProgress(uint64_t done, uint64_t total, double elapsed_seconds, size_t width);

}  // namespace ordo::cli
