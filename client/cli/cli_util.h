// Pieces of build/ordo that are pure functions, kept apart so unit tests can
// call them (tests/client/cli_test.cc). Not part of the library's API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ordo/client.h"

namespace ordo::cli {

// Exit statuses of every `ordo` command (documented in --help and README.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;        // a message not acknowledged, a broker refused
inline constexpr int kExitUsage = 2;         // bad flags or arguments
inline constexpr int kExitUnavailable = 3;   // no broker or leader answered in time
inline constexpr int kExitBelowRetained = 4; // --from is below the earliest retained offset
inline constexpr int kExitRefused = 5;       // authentication or permission refused
// `ordo members add/promote/remove` (a membership change refused, final):
inline constexpr int kExitUnknownMember = 6;  // no member has that id
inline constexpr int kExitAlreadyMember = 7;  // add: the id is taken; promote: a voter already
inline constexpr int kExitLastVoter = 8;      // remove: it is the only voter
inline constexpr int kExitNotCaughtUp = 9;    // promote: not caught up within --timeout-ms
inline constexpr int kExitChangeInProgress =
    10;  // another change stayed unchosen until --timeout-ms
// replay: every broker tried served messages that fail the stream's chain
inline constexpr int kExitIntegrity = 11;

// The text every command's --help ends with.
inline constexpr const char* kExitStatusHelp =
    "Exit status: 0 ok; 1 a message was not acknowledged (or was too large, or the input "
    "was cut short) or a broker refused the request; "
    "2 usage error (a bad flag, or a broker endpoint without a port or whose host does not "
    "resolve); 3 no broker or leader answered in time (check `ordo health`); "
    "4 --from is below the earliest retained offset (use --from earliest); "
    "5 authentication or permission refused (check --credentials and the brokers' access "
    "file); 6-10 `ordo members` changes: 6 no member has that id, 7 already a member (or a "
    "voter, for promote), 8 the last voter cannot be removed, 9 the learner has not caught up, "
    "10 another change is in progress; 11 every broker tried served messages that fail the "
    "stream's hash chain (see `ordo verify`); 130/143 publish stopped by SIGINT/SIGTERM (the "
    "offsets of "
    "what was stored are "
    "printed).";

// The exit status for a failed call.
int ExitCodeFor(ErrorCode code);

// One line of replay progress, at most `width` columns:
//   [=========>          ]  45% 450/1000 1.2k msg/s
// `done` of `total` records after `elapsed_seconds`. Without room for a bar
// (narrow terminals) only the numbers are shown.
std::string RenderProgress(uint64_t done, uint64_t total, double elapsed_seconds, size_t width);

// A library error message as the CLI prints it: the C++ names it may
// mention (ClientOptions::call_timeout, AsyncPublisherOptions::..., Next,
// StartAt::...) become the flags or words a user of `ordo` knows.
std::string ForUsers(std::string message);

// Levenshtein distance (bytes).
size_t EditDistance(std::string_view a, std::string_view b);
// The candidate closest to `word` when it is close enough to be a typo of
// it (at most a third of its length, and at least 1, edits away; or
// `word` is a prefix of exactly one candidate); "" when none is.
std::string Closest(std::string_view word, const std::vector<std::string>& candidates);

// Why `endpoint` is not a usable client endpoint ([tcp://]HOST:PORT, a port
// 1..65535, a HOST that resolves), or nullopt when it is. Resolves HOST
// (getaddrinfo), so a typo fails at once rather than after --timeout-ms.
std::optional<std::string> CheckEndpoint(const std::string& endpoint);

// --delimiter and --format text: \n \t \r \0 \\ and \xHH become the
// bytes they name; nullopt (and `error` set) for a bad escape.
std::optional<std::string> Unescape(std::string_view text, std::string* error);

// True when `bytes` is valid UTF-8 (no overlong forms or surrogates).
bool IsUtf8(std::string_view bytes);
std::string Base64(std::string_view bytes);

// A JSON string literal of UTF-8 text (quotes, backslashes and control
// characters escaped).
std::string JsonString(std::string_view utf8);

// One record as a JSON object (one line, with the newline): offset and
// sequence as numbers, producer as a string (a random 64-bit id: JSON
// readers lose precision above 2^53), key and payload as strings when they
// are UTF-8, else in base64 with "key_encoding"/"payload_encoding":"base64".
std::string JsonRecord(const Record& record);

// A --format template, as kcat's -f: %o offset, %k key, %K key bytes, %s
// payload, %S payload bytes, %p producer, %q sequence, %% a percent sign;
// and the escapes of Unescape. nullopt (and `error`) for an unknown %X.
struct Template {
  std::string text;  // escapes already applied
};
std::optional<Template> ParseTemplate(std::string_view format, std::string* error);
std::string RenderRecord(const Template& t, const Record& record);

// Reads standard input (or any fd) as messages separated by a delimiter,
// or as length-prefixed frames, with read(2): a signal interrupts it (the
// standard streams retry EINTR and would not).
class InputReader {
 public:
  enum class Framing { kDelimited, kLengthPrefixed, kWhole };
  InputReader(int fd, Framing framing, std::string delimiter = "\n");
  enum class Got { kMessage, kEnd, kInterrupted, kError };
  // The next message into `out`. kError: a read error or, length-prefixed,
  // a truncated frame (see error()).
  Got Next(std::string& out);
  const std::string& error() const { return error_; }

 private:
  bool Fill();  // false at end of input, on interruption or error
  int fd_;
  Framing framing_;
  std::string delimiter_;
  std::string buffer_;
  size_t start_ = 0;
  bool eof_ = false;
  bool interrupted_ = false;
  bool done_ = false;
  std::string error_;
};

}  // namespace ordo::cli
