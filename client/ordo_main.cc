// build/ordo: the command-line client.
//
//   ordo publish   [-b LIST] [--key K] [MESSAGE ...]   (stdin lines when no MESSAGE)
//   ordo subscribe [-b LIST] [--from OFFSET|earliest|latest] [--count N]
//   ordo replay    [-b LIST] --from OFFSET|earliest [--to B] [--follow]
//   ordo status    [-b LIST] [--json | --format json]
//   ordo health    [-b LIST]
//   ordo verify    [-b LIST] [--from A] [--to B [--expect CHAIN]] | --head
//   ordo version   [-b LIST]   (and ordo --version)
//   ordo keygen    --out FILE [--force]
//   ordo members   [-b LIST] [--json]                 (list voters and learners)
//   ordo members add --id N --peer HOST:PORT --client HOST:PORT [--public-key Z | --key-file F]
//   ordo members promote --id N | remove --id N
//
// Every command but keygen takes --credentials FILE (or ORDO_CREDENTIALS)
// for CurveZMQ brokers, and --brokers (-b) may come from ORDO_BROKERS.
//
// Output: publish prints each message's offset, one per line, in input order;
// subscribe and replay print OFFSET<TAB>PAYLOAD lines (or JSON lines, raw
// payloads, or a --format template).
// Exit statuses: client/cli/cli_util.h (kExit...), printed by every --help.
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

#include "base/keys.h"
#include "client/cli/cli_util.h"
#include "client/cli/verify.h"
#include "ordo/client.h"

#ifndef ORDO_VERSION
#define ORDO_VERSION "unknown"
#endif

namespace {

using ordo::cli::ExitCodeFor;
using Clock = std::chrono::steady_clock;

constexpr const char* kVersion = ORDO_VERSION;

int Fail(const ordo::Error& e) {
  std::fprintf(stderr, "ordo: %s\n", ordo::cli::ForUsers(e.message).c_str());
  return ExitCodeFor(e.code);
}

// --from below the retained range: name the earliest offset and what to do.
int FailBelowRetained(const ordo::Error& e, uint64_t from) {
  std::fprintf(stderr,
               "ordo: offset %llu is no longer retained; the earliest available offset is %llu. "
               "Use --from %llu, or --from earliest.\n",
               static_cast<unsigned long long>(from),
               static_cast<unsigned long long>(e.earliest_offset),
               static_cast<unsigned long long>(e.earliest_offset));
  return ordo::cli::kExitBelowRetained;
}

std::string Json(const std::string& s) { return ordo::cli::JsonString(s); }

// How subscribe and replay print a record (--format).
struct Output {
  enum class Kind { kText, kJson, kRaw, kTemplate };
  Kind kind = Kind::kText;
  ordo::cli::Template templ;
};
Output g_output;

// --format: text, json, raw, or a template (anything with a %).
bool ParseFormat(const std::string& text, Output* out) {
  if (text == "text") return true;
  if (text == "json") {
    out->kind = Output::Kind::kJson;
    return true;
  }
  if (text == "raw") {
    out->kind = Output::Kind::kRaw;
    return true;
  }
  if (text.find('%') != std::string::npos) {
    std::string error;
    std::optional<ordo::cli::Template> t = ordo::cli::ParseTemplate(text, &error);
    if (!t) {
      std::fprintf(stderr, "ordo: %s\n", error.c_str());
      return false;
    }
    out->kind = Output::Kind::kTemplate;
    out->templ = std::move(*t);
    return true;
  }
  const std::string near = ordo::cli::Closest(text, {"text", "json", "raw"});
  std::fprintf(stderr,
               "ordo: --format takes text, json, raw or a template such as '%%o\\t%%k\\t%%s\\n', "
               "not '%s'%s\n",
               text.c_str(), near.empty() ? "" : ("; did you mean " + near + "?").c_str());
  return false;
}

void PrintRecord(const ordo::Record& r) {
  std::string line;
  switch (g_output.kind) {
    case Output::Kind::kJson:
      line = ordo::cli::JsonRecord(r);
      break;
    case Output::Kind::kRaw:
      line = r.payload;
      break;
    case Output::Kind::kTemplate:
      line = ordo::cli::RenderRecord(g_output.templ, r);
      break;
    case Output::Kind::kText:
      line =
          std::to_string(r.offset) + "\t" + r.payload + "\n";  // the contract: OFFSET<TAB>PAYLOAD
      break;
  }
  std::fwrite(line.data(), 1, line.size(), stdout);
}

// "earliest", "latest" (when allowed) or a number; nullopt (and a message)
// for anything else.
struct From {
  bool earliest = false;
  bool latest = false;
  uint64_t offset = 0;
};
std::optional<From> ParseFrom(const std::string& text, bool latest_allowed) {
  From from;
  if (text == "earliest") {
    from.earliest = true;
    return from;
  }
  if (text == "latest" && latest_allowed) {
    from.latest = true;
    return from;
  }
  size_t used = 0;
  try {
    if (!text.empty() && text[0] != '-') from.offset = std::stoull(text, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != text.size()) {
    std::fprintf(stderr, "ordo: --from takes an offset (a number), earliest%s, not '%s'\n",
                 latest_allowed ? " or latest" : "", text.c_str());
    return std::nullopt;
  }
  return from;
}

size_t TerminalColumns() {
  winsize size{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

// The replay progress bar goes to standard error when it is a terminal, and
// not when standard output is that same terminal: the bar's \r would
// overwrite records.
bool ShowProgress() {
  if (isatty(STDERR_FILENO) == 0) return false;
  if (isatty(STDOUT_FILENO) == 0) return true;
  struct stat out {};
  struct stat err {};
  if (fstat(STDOUT_FILENO, &out) != 0 || fstat(STDERR_FILENO, &err) != 0) return false;
  return out.st_rdev != err.st_rdev;
}

// SIGINT/SIGTERM while publishing: stop reading, wait for what was sent.
volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int signo) { g_signal = signo; }

void CatchStopSignals() {
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigemptyset(&action.sa_mask);
  // No SA_RESTART: a read(2) waiting for input returns EINTR. SA_RESETHAND:
  // a second signal stops ordo at once.
  action.sa_flags = SA_RESETHAND;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

struct PublishFlags {
  std::string key;
  std::vector<std::string> messages;
  uint64_t linger_ms = 5;
  size_t batch_messages = 10000;
  size_t batch_bytes = size_t{1} << 20;
  size_t window = 32768;
  size_t message_bytes_max = size_t{1} << 20;
  std::string on_oversize = "stop";
  std::string file;
  bool null_delimited = false;
  std::optional<std::string> delimiter;  // set after parsing, when given
  bool length_prefixed = false;
  std::optional<std::string> key_delimiter;
};

int Publish(const ordo::ClientOptions& options, const PublishFlags& flags) {
  // Input framing (checked before any connection).
  std::string delimiter = "\n";
  std::string error;
  if (flags.delimiter) {
    std::optional<std::string> d = ordo::cli::Unescape(*flags.delimiter, &error);
    if (!d || d->empty()) {
      std::fprintf(stderr, "ordo: --delimiter: %s\n", d ? "must not be empty" : error.c_str());
      return ordo::cli::kExitUsage;
    }
    delimiter = *d;
  }
  if (flags.null_delimited) delimiter = std::string(1, '\0');
  std::string key_delimiter;
  if (flags.key_delimiter) {
    std::optional<std::string> d = ordo::cli::Unescape(*flags.key_delimiter, &error);
    if (!d || d->empty()) {
      std::fprintf(stderr, "ordo: --key-delimiter: %s\n", d ? "must not be empty" : error.c_str());
      return ordo::cli::kExitUsage;
    }
    key_delimiter = *d;
  }
  const int modes = (flags.null_delimited ? 1 : 0) + (flags.delimiter ? 1 : 0) +
                    (flags.length_prefixed ? 1 : 0) + (flags.file.empty() ? 0 : 1) +
                    (flags.messages.empty() ? 0 : 1);
  if (modes > 1) {
    std::fprintf(stderr,
                 "ordo: MESSAGE arguments, --file, -0/--null, --delimiter and --length-prefixed "
                 "choose how to read messages: give at most one\n");
    return ordo::cli::kExitUsage;
  }
  int input_fd = STDIN_FILENO;
  if (!flags.file.empty() && flags.file != "-") {
    input_fd = open(flags.file.c_str(), O_RDONLY | O_CLOEXEC);
    if (input_fd < 0) {
      std::fprintf(stderr, "ordo: --file %s: %s\n", flags.file.c_str(), std::strerror(errno));
      return ordo::cli::kExitUsage;
    }
  }
  using Framing = ordo::cli::InputReader::Framing;
  const Framing framing = !flags.file.empty()     ? Framing::kWhole
                          : flags.length_prefixed ? Framing::kLengthPrefixed
                                                  : Framing::kDelimited;
  ordo::cli::InputReader reader(input_fd, framing, delimiter);
  // Messages are counted as lines when they are lines.
  const char* unit = framing == Framing::kDelimited && delimiter == "\n" && flags.messages.empty()
                         ? "line"
                         : "message";

  ordo::AsyncPublisherOptions async;
  async.linger = std::chrono::milliseconds(flags.linger_ms);
  async.batch_messages_max = flags.batch_messages;
  async.batch_bytes_max = flags.batch_bytes;
  async.window_messages_max = flags.window;
  async.message_bytes_max = flags.message_bytes_max;
  // The publisher's threads (and ZeroMQ's, which it starts) inherit a mask
  // with the stop signals blocked: they reach this thread, whose read(2)
  // they interrupt.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ordo::AsyncPublisher publisher(options, async);
  CatchStopSignals();
  pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);

  // Callbacks run on the publisher's thread, in input order; main reads
  // this state only after Close, which joins that thread.
  struct State {
    bool stdout_is_tty = false;
    uint64_t stored = 0;
    uint64_t failed = 0;
    uint64_t first_failed_line = 0;
    std::optional<ordo::Error> first_error;
  } state;
  state.stdout_is_tty = isatty(STDOUT_FILENO) != 0;

  std::optional<ordo::Error> refused;
  uint64_t line = 0;
  uint64_t oversized = 0;
  bool stopped_at_oversize = false;
  // false: stop reading.
  auto publish = [&](const std::string& message) {
    ++line;
    std::string_view payload = message;
    std::string_view key = flags.key;
    if (!key_delimiter.empty()) {
      const size_t at = payload.find(key_delimiter);
      if (at != std::string_view::npos) {
        key = payload.substr(0, at);
        payload.remove_prefix(at + key_delimiter.size());
      }
    }
    const size_t bytes = key.size() + payload.size();
    if (bytes > flags.message_bytes_max) {
      ++oversized;
      const bool stop = flags.on_oversize == "stop";
      std::fprintf(stderr,
                   "ordo: %s %llu is %zu bytes (key + payload), above --message-bytes-max "
                   "(%zu; the brokers' limits.message_bytes_max, 1 MiB by default, must allow "
                   "it too): %s\n",
                   unit, static_cast<unsigned long long>(line), bytes, flags.message_bytes_max,
                   stop ? "not sent, and nothing after it was read (--on-oversize skip sends "
                          "the others)"
                        : "skipped");
      stopped_at_oversize = stop;
      return !stop;
    }
    // Captures one pointer and one number: fits std::function's inline
    // storage, so no allocation per message.
    refused =
        publisher.Publish(payload, key, [s = &state, n = line](const ordo::Result<uint64_t>& r) {
          if (r.ok()) {
            ++s->stored;
            std::fprintf(stdout, "%llu\n", static_cast<unsigned long long>(r.value()));
            if (s->stdout_is_tty) std::fflush(stdout);
            return;
          }
          if (s->failed++ == 0) {
            s->first_error = r.error();
            s->first_failed_line = n;
          }
        });
    return !refused && g_signal == 0;
  };
  bool input_failed = false;
  if (!flags.messages.empty()) {
    for (const std::string& m : flags.messages) {
      if (!publish(m)) break;
    }
  } else {
    std::string message;
    while (g_signal == 0) {
      const ordo::cli::InputReader::Got got = reader.Next(message);
      if (got == ordo::cli::InputReader::Got::kMessage) {
        if (!publish(message)) break;
        continue;
      }
      if (got == ordo::cli::InputReader::Got::kError) {
        std::fprintf(stderr, "ordo: %s\n", reader.error().c_str());
        input_failed = true;
      }
      break;
    }
  }
  if (input_fd != STDIN_FILENO) close(input_fd);
  if (g_signal != 0) {
    std::fprintf(stderr,
                 "ordo: %s: stopped reading after %s %llu; waiting for the acknowledgments of "
                 "what was sent (at most --timeout-ms; again to stop at once)\n",
                 g_signal == SIGINT ? "interrupted" : "terminated", unit,
                 static_cast<unsigned long long>(line));
  }
  // Waits for the acknowledgments (at most --timeout-ms); what is left then
  // is reported as not acknowledged.
  (void)publisher.Close(options.call_timeout);
  std::fflush(stdout);
  if (refused) {
    std::fprintf(stderr, "ordo: %s %llu was not published: %s\n", unit,
                 static_cast<unsigned long long>(line),
                 ordo::cli::ForUsers(refused->message).c_str());
  }
  if (state.failed > 0) {
    std::fprintf(stderr, "ordo: %llu message(s) not acknowledged; the first (%s %llu): %s\n",
                 static_cast<unsigned long long>(state.failed), unit,
                 static_cast<unsigned long long>(state.first_failed_line),
                 ordo::cli::ForUsers(state.first_error->message).c_str());
  }
  if (g_signal != 0) {
    std::fprintf(stderr, "ordo: %llu message(s) stored (their offsets are printed above)\n",
                 static_cast<unsigned long long>(state.stored));
    return 128 + g_signal;
  }
  if (refused) return ExitCodeFor(refused->code);
  if (state.first_error) return ExitCodeFor(state.first_error->code);
  if (oversized > 0) {
    if (!stopped_at_oversize) {
      std::fprintf(stderr, "ordo: %llu oversized message(s) skipped\n",
                   static_cast<unsigned long long>(oversized));
    }
    return ordo::cli::kExitFailed;
  }
  if (input_failed) return ordo::cli::kExitFailed;
  return ordo::cli::kExitOk;
}

struct SubscribeFlags {
  uint64_t count = 0;          // 0: no limit
  std::optional<uint64_t> to;  // stop before this offset
  bool retry_forever = false;  // never give up while brokers are down
};

int Subscribe(const ordo::ClientOptions& options, const From& from, const SubscribeFlags& flags) {
  ordo::StartAt start = from.earliest ? ordo::StartAt::Earliest()
                        : from.latest ? ordo::StartAt::Latest()
                                      : ordo::StartAt::Offset(from.offset);
  if (flags.to && !from.earliest && !from.latest && *flags.to <= from.offset) {
    return ordo::cli::kExitOk;
  }
  ordo::Subscriber s(options, start);
  bool warned = false;
  // Brokers down: kTimeout errors, one per round of the broker list. A
  // streak of them longer than --timeout-ms gives up; a record, or a pause
  // between them longer than a few rounds (brokers answered meanwhile),
  // ends the streak.
  bool failing = false;
  Clock::time_point failing_since{};
  Clock::time_point last_failure{};
  const std::chrono::milliseconds round_max =
      options.request_timeout * static_cast<int64_t>(2 * options.brokers.size()) +
      std::chrono::milliseconds(2000);
  // Brokers in a row whose messages failed the chain, no record between.
  size_t integrity_failures = 0;
  for (uint64_t n = 0; flags.count == 0 || n < flags.count;) {
    auto r = s.Next(std::chrono::milliseconds(1000));
    if (!r.ok()) {
      if (r.error().code == ordo::ErrorCode::kOffsetBelowRetained) {
        return FailBelowRetained(r.error(), from.offset);
      }
      if (r.error().code == ordo::ErrorCode::kIntegrity) {
        // Nothing wrong was printed; the subscriber goes on elsewhere. Once
        // every broker failed so, there is nowhere to go.
        std::fprintf(stderr, "ordo: %s\n", ordo::cli::ForUsers(r.error().message).c_str());
        if (++integrity_failures >= options.brokers.size()) return Fail(r.error());
        continue;
      }
      if (r.error().code == ordo::ErrorCode::kTimeout) {
        const Clock::time_point now = Clock::now();
        if (!failing || now - last_failure > round_max) failing_since = now;
        failing = true;
        last_failure = now;
        if (!flags.retry_forever && now - failing_since >= options.call_timeout) {
          std::fprintf(stderr,
                       "ordo: %s\nordo: gave up after --timeout-ms (%lld ms) without a broker "
                       "(--retry-forever keeps trying)\n",
                       ordo::cli::ForUsers(r.error().message).c_str(),
                       static_cast<long long>(options.call_timeout.count()));
          return ordo::cli::kExitUnavailable;
        }
        // Say so once, and keep trying.
        if (!warned) {
          std::fprintf(stderr, "ordo: %s\n", ordo::cli::ForUsers(r.error().message).c_str());
        }
        warned = true;
        continue;
      }
      return Fail(r.error());
    }
    if (!r.value()) continue;
    if (flags.to && r.value()->offset >= *flags.to) break;
    failing = false;
    integrity_failures = 0;
    PrintRecord(*r.value());
    std::fflush(stdout);
    ++n;
    if (flags.to && r.value()->offset + 1 >= *flags.to) break;
  }
  return ordo::cli::kExitOk;
}

// to: nullopt = the head at the start.
int Replay(const ordo::ClientOptions& options, const From& from, std::optional<uint64_t> to,
           bool compacted) {
  const bool progress = ShowProgress();
  const Clock::time_point start = Clock::now();
  Clock::time_point drawn{};
  uint64_t first = from.offset;
  uint64_t done = 0;
  auto draw = [&](uint64_t end, bool last) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const std::string line = ordo::cli::RenderProgress(done, end > first ? end - first : 0, elapsed,
                                                       TerminalColumns() - 1);
    std::fprintf(stderr, "\r%s%s", line.c_str(), last ? "\n" : "");
  };
  auto each = [&](const ordo::Record& record, uint64_t end) {
    PrintRecord(record);
    ++done;
    if (progress && Clock::now() - drawn > std::chrono::milliseconds(100)) {
      drawn = Clock::now();
      draw(end, false);
    }
  };
  // --to is one past the last offset: --to 0 (or --to A) is an empty range.
  if (to && *to == 0) return ordo::cli::kExitOk;
  // The library's 0 means "up to the head".
  const uint64_t to_arg = to.value_or(0);
  // earliest: replay from 0 and, when the broker says history now starts
  // later, from the earliest offset it names (retention may move meanwhile).
  if (compacted) {
    // The compacted view has no retained range: earliest is offset 0.
    if (from.earliest) first = 0;
    ordo::Result<uint64_t> end = ordo::ReplayCompacted(options, first, to_arg, each);
    std::fflush(stdout);
    if (!end.ok()) return Fail(end.error());
    if (progress) draw(end.value(), true);
    return ordo::cli::kExitOk;
  }
  ordo::Result<uint64_t> end = ordo::Replay(options, first, to_arg, each);
  for (int tries = 0; from.earliest && !end.ok() && done == 0 &&
                      end.error().code == ordo::ErrorCode::kOffsetBelowRetained && tries < 3;
       ++tries) {
    first = end.error().earliest_offset;
    if (to && *to <= first) {
      std::fflush(stdout);
      return ordo::cli::kExitOk;  // the range ends below the earliest retained offset
    }
    end = ordo::Replay(options, first, to_arg, each);
  }
  std::fflush(stdout);
  if (!end.ok()) {
    if (progress && done > 0) std::fputc('\n', stderr);
    if (end.error().code == ordo::ErrorCode::kOffsetBelowRetained) {
      return FailBelowRetained(end.error(), first + done);
    }
    // The options and the range were checked before: an invalid argument
    // now is a --to past the head, after replaying up to the head.
    if (to && end.error().code == ordo::ErrorCode::kInvalidArgument) {
      std::fprintf(stderr,
                   "ordo: replay stopped at the head of the stream, offset %llu: --to %llu is "
                   "past it (replay --follow waits for the offsets up to --to)\n",
                   static_cast<unsigned long long>(first + done),
                   static_cast<unsigned long long>(*to));
      return ordo::cli::kExitOk;
    }
    return Fail(end.error());
  }
  if (progress) draw(end.value(), true);
  return ordo::cli::kExitOk;
}

// What `status` shows of one peer: its lag and when this broker last heard
// it. A lag is only as fresh as that: a follower hears its leader all the
// time and the other followers seldom, so an old one is shown as unknown.
std::string PeerCell(const ordo::PeerInfo& p, uint64_t heartbeat_ms) {
  const bool fresh = p.last_heard_ms <= heartbeat_ms;
  return std::to_string(p.node_id) + ":" + (fresh ? std::to_string(p.lag_instances) : "?") + "/" +
         (p.last_heard_ms < 10000 ? std::to_string(p.last_heard_ms) + "ms"
                                  : std::to_string(p.last_heard_ms / 1000) + "s");
}

int Status(const ordo::ClientOptions& options, bool json) {
  int rc = ordo::cli::kExitOk;
  const auto timeout = options.request_timeout;
  // Peers heard within this long have a lag worth showing (a leader sends
  // every follower something every 30 ms by default; a peer link silent
  // for timing.peer_link_timeout_ms, 1 s, is taken for dead).
  constexpr uint64_t kFreshMs = 1000;
  if (json) {
    for (const std::string& b : options.brokers) {
      auto r = ordo::GetStatus(b, timeout, options.credentials);
      if (!r.ok()) {
        std::printf("{\"endpoint\":%s,\"error\":%s}\n", Json(b).c_str(),
                    Json(ordo::cli::ForUsers(r.error().message)).c_str());
        rc = ExitCodeFor(r.error().code);
        continue;
      }
      const ordo::BrokerStatus& s = r.value();
      std::string peers;
      for (const auto& p : s.peers) {
        peers += std::string(peers.empty() ? "" : ",") +
                 "{\"node_id\":" + std::to_string(p.node_id) +
                 ",\"chosen\":" + std::to_string(p.chosen) +
                 ",\"lag_instances\":" + std::to_string(p.lag_instances) +
                 ",\"last_heard_ms\":" + std::to_string(p.last_heard_ms) + "}";
      }
      std::printf(
          "{\"endpoint\":%s,\"node_id\":%u,\"role\":%s,\"leader_id\":%u,\"ballot\":[%lu,%u],"
          "\"chosen\":%lu,\"next_offset\":%lu,\"earliest_offset\":%lu,\"first_retained\":%lu,"
          "\"voter\":%s,\"catching_up\":%s,\"rejoin_target\":%lu,\"snapshots_installed\":%lu,"
          "\"version\":%s,\"chain_head\":%s,\"peers\":[%s]}\n",
          Json(b).c_str(), s.node_id, Json(s.role).c_str(), s.leader_id,
          static_cast<unsigned long>(s.ballot_round), s.ballot_node,
          static_cast<unsigned long>(s.chosen), static_cast<unsigned long>(s.next_offset),
          static_cast<unsigned long>(s.earliest_offset),
          static_cast<unsigned long>(s.first_retained), s.voter ? "true" : "false",
          s.catching_up ? "true" : "false", static_cast<unsigned long>(s.rejoin_target),
          static_cast<unsigned long>(s.snapshots_installed), Json(s.version).c_str(),
          Json(s.chain_head).c_str(), peers.c_str());
    }
    return rc;
  }
  // CHAIN: the first 16 hex digits of the chain head at NEXT_OFFSET (--json
  // has all 64); brokers at the same NEXT_OFFSET show the same one.
  std::printf("%-6s %-22s %-11s %-10s %-10s %-12s %-10s %-16s %s\n", "NODE", "ENDPOINT", "ROLE",
              "BALLOT", "CHOSEN", "NEXT_OFFSET", "EARLIEST", "CHAIN",
              "PEERS (id:lag instances/last heard)");
  size_t members = 0, voters_answering = 0;
  uint32_t leader = 0;
  for (const std::string& b : options.brokers) {
    auto r = ordo::GetStatus(b, timeout, options.credentials);
    if (!r.ok()) {
      const bool refused = ExitCodeFor(r.error().code) == ordo::cli::kExitRefused;
      std::printf("%-6s %-22s %-11s %s\n", "?", b.c_str(), refused ? "refused" : "unreachable",
                  ordo::cli::ForUsers(r.error().message).c_str());
      rc = ExitCodeFor(r.error().code);
      continue;
    }
    const ordo::BrokerStatus& s = r.value();
    std::string peers;
    for (const auto& p : s.peers) peers += (peers.empty() ? "" : " ") + PeerCell(p, kFreshMs);
    const std::string ballot =
        "(" + std::to_string(s.ballot_round) + "," + std::to_string(s.ballot_node) + ")";
    // A voter that lost its disk and does not vote yet says so.
    const std::string role = s.catching_up ? "catching-up" : s.role;
    const std::string chain = s.chain_head.empty() ? "?" : s.chain_head.substr(0, 16);
    std::printf("%-6u %-22s %-11s %-10s %-10lu %-12lu %-10lu %-16s %s\n", s.node_id, b.c_str(),
                role.c_str(), ballot.c_str(), static_cast<unsigned long>(s.chosen),
                static_cast<unsigned long>(s.next_offset),
                static_cast<unsigned long>(s.earliest_offset), chain.c_str(), peers.c_str());
    if (s.voter) {
      members = std::max(members, s.peers.size() + 1);
      if (!s.catching_up) ++voters_answering;
    }
    if (s.role == "leader") leader = s.node_id;
  }
  // The verdict, as `ordo health` gives it.
  const size_t quorum = members / 2 + 1;
  if (members == 0) {
    std::printf("quorum: unknown (no voting member answered)\n");
  } else if (leader != 0 && voters_answering >= quorum) {
    std::printf("quorum: yes, leader node %u; %zu of %zu voting members answered (quorum %zu)\n",
                leader, voters_answering, members, quorum);
  } else {
    std::printf("quorum: no%s; %zu of %zu voting members answered (quorum %zu)\n",
                leader != 0 ? "" : ", no leader answered", voters_answering, members, quorum);
  }
  return rc;
}

// One line per broker, then the verdict: healthy (exit 0) when a leader
// and a majority of the voting members answer.
int Health(const ordo::ClientOptions& options) {
  size_t voters_answering = 0;
  size_t members = 0;
  bool leader = false;
  uint32_t leader_id = 0;
  int failure = ordo::cli::kExitUnavailable;
  for (const std::string& b : options.brokers) {
    const Clock::time_point start = Clock::now();
    auto r = ordo::GetStatus(b, options.request_timeout, options.credentials);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (!r.ok()) {
      std::printf("%s is unhealthy: %s\n", b.c_str(),
                  ordo::cli::ForUsers(r.error().message).c_str());
      if (ExitCodeFor(r.error().code) == ordo::cli::kExitRefused) {
        failure = ordo::cli::kExitRefused;
      }
      continue;
    }
    const ordo::BrokerStatus& s = r.value();
    const std::string role = s.catching_up ? "catching-up" : s.role;
    std::printf("%s is healthy: node %u, %s, took %.1f ms\n", b.c_str(), s.node_id, role.c_str(),
                ms);
    if (s.voter) {
      members = std::max(members, s.peers.size() + 1);
      if (!s.catching_up) ++voters_answering;
    }
    if (s.role == "leader") {
      leader = true;
      leader_id = s.node_id;
    }
  }
  const size_t quorum = members / 2 + 1;
  if (leader && voters_answering >= quorum) {
    std::printf(
        "cluster is healthy: leader node %u; %zu of %zu voting members answered "
        "(quorum %zu)\n",
        leader_id, voters_answering, members, quorum);
    return ordo::cli::kExitOk;
  }
  std::printf("cluster is unhealthy: %s; %zu of %zu voting members answered (quorum %zu)\n",
              leader ? "a leader answered" : "no leader answered", voters_answering, members,
              members == 0 ? size_t{0} : quorum);
  return failure;
}

int Version(const ordo::ClientOptions& options) {
  std::printf("client: ordo %s\n", kVersion);
  int rc = ordo::cli::kExitOk;
  for (const std::string& b : options.brokers) {
    auto r = ordo::GetStatus(b, options.request_timeout, options.credentials);
    if (!r.ok()) {
      std::printf("%s: no answer: %s\n", b.c_str(), ordo::cli::ForUsers(r.error().message).c_str());
      rc = ExitCodeFor(r.error().code);
      continue;
    }
    const ordo::BrokerStatus& s = r.value();
    std::printf(
        "%s: ordo-broker %s (node %u)\n", b.c_str(),
        s.version.empty() ? "unknown (this broker does not report its version)" : s.version.c_str(),
        s.node_id);
  }
  return rc;
}

int KeyGen(const std::string& path, bool force) {
  ordo::StatusOr<ordo::CurveKeyPair> pair = ordo::GenerateKeyPair();
  ordo::Status s = pair.status();
  if (s.ok()) s = ordo::WriteKeyFile(path, ordo::KeyFile{pair.value(), {}}, force);
  if (!s.ok()) {
    std::fprintf(stderr, "ordo keygen: %s\n", s.message().c_str());
    return ordo::cli::kExitFailed;
  }
  std::printf("public_key=%s\n", pair.value().public_key.c_str());
  return ordo::cli::kExitOk;
}

// --- ordo members ---

std::string MemberJson(const ordo::MemberInfo& m, bool with_state) {
  std::string out = "{\"id\":" + std::to_string(m.id) +
                    ",\"voter\":" + (m.voter ? "true" : "false") + ",\"peer\":" + Json(m.peer) +
                    ",\"client\":" + Json(m.client) + ",\"public_key\":" + Json(m.public_key);
  if (with_state) {
    out += ",\"state\":" + Json(m.state);
    if (m.heard) out += ",\"last_heard_ms\":" + std::to_string(m.last_heard_ms);
    if (m.lag_known) out += ",\"lag_instances\":" + std::to_string(m.lag_instances);
  }
  return out + "}";
}

int ListMembers(const ordo::ClientOptions& options, bool json) {
  ordo::Result<ordo::Members> r = ordo::GetMembers(options);
  if (!r.ok()) return Fail(r.error());
  const ordo::Members& m = r.value();
  if (json) {
    std::string members;
    for (const ordo::MemberInfo& x : m.members) {
      members += (members.empty() ? "" : ",") + MemberJson(x, true);
    }
    std::printf(
        "{\"endpoint\":%s,\"node_id\":%u,\"leader_id\":%u,\"bootstrap\":%s,"
        "\"change_pending\":%llu,\"chosen\":%llu,\"members\":[%s]}\n",
        Json(m.endpoint).c_str(), m.node_id, m.leader_id, m.bootstrap ? "true" : "false",
        static_cast<unsigned long long>(m.change_pending),
        static_cast<unsigned long long>(m.chosen), members.c_str());
    return ordo::cli::kExitOk;
  }
  std::printf("%-6s %-8s %-22s %-22s %-10s %-10s %s\n", "ID", "KIND", "PEER", "CLIENT", "STATE",
              "LAG", "LAST_HEARD");
  for (const ordo::MemberInfo& x : m.members) {
    const std::string lag = x.lag_known ? std::to_string(x.lag_instances) : "-";
    const std::string heard = x.heard ? std::to_string(x.last_heard_ms) + "ms" : "-";
    std::printf("%-6u %-8s %-22s %-22s %-10s %-10s %s\n", x.id, x.voter ? "voter" : "learner",
                x.peer.c_str(), x.client.c_str(), x.state.c_str(), lag.c_str(), heard.c_str());
  }
  std::printf(
      "(as node %u at %s sees it%s%s)\n", m.node_id, m.endpoint.c_str(),
      m.bootstrap ? "; bootstrap membership from the config files, no change yet" : "",
      m.change_pending != 0
          ? ("; a change is pending at instance " + std::to_string(m.change_pending)).c_str()
          : "");
  return ordo::cli::kExitOk;
}

int ChangeMembers(const ordo::ClientOptions& options, ordo::MemberChange kind,
                  ordo::MemberSpec spec, bool json) {
  // Promote waits while the learner catches up, and any change while
  // another one finishes: both are retried until --timeout-ms.
  const auto deadline = Clock::now() + options.call_timeout;
  for (;;) {
    ordo::ClientOptions call = options;
    call.call_timeout = std::max<std::chrono::milliseconds>(
        std::chrono::milliseconds(1),
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    ordo::Result<ordo::ChangeResult> r = ordo::ChangeMembers(call, kind, spec);
    if (r.ok()) {
      const ordo::ChangeResult& c = r.value();
      if (json) {
        std::string members;
        for (const ordo::MemberInfo& x : c.members) {
          members += (members.empty() ? "" : ",") + MemberJson(x, false);
        }
        std::printf("{\"instance\":%llu,\"members\":[%s]}\n",
                    static_cast<unsigned long long>(c.instance), members.c_str());
      } else {
        const char* what = kind == ordo::MemberChange::kAddLearner ? "added as a learner"
                           : kind == ordo::MemberChange::kPromote  ? "promoted to voter"
                                                                   : "removed";
        std::string voters, learners;
        for (const ordo::MemberInfo& x : c.members) {
          std::string& list = x.voter ? voters : learners;
          list += (list.empty() ? "" : ",") + std::to_string(x.id);
        }
        std::printf("node %u %s at instance %llu; voters %s; learners %s\n", spec.id, what,
                    static_cast<unsigned long long>(c.instance), voters.c_str(),
                    learners.empty() ? "none" : learners.c_str());
      }
      return ordo::cli::kExitOk;
    }
    const ordo::ErrorCode code = r.error().code;
    const bool retryable =
        code == ordo::ErrorCode::kNotCaughtUp || code == ordo::ErrorCode::kChangeInProgress;
    // A retry needs time for a round trip; what the leader said last is
    // the answer when there is none left.
    const bool time_left =
        Clock::now() + std::chrono::milliseconds(200) + options.request_timeout < deadline;
    if (!retryable || !time_left) {
      if (retryable) {
        std::fprintf(stderr, "ordo: gave up after --timeout-ms (%lld ms)\n",
                     static_cast<long long>(options.call_timeout.count()));
      }
      return Fail(r.error());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

CLI::App* FindCommand(CLI::App& app, const std::string& name) {
  for (CLI::App* c : app.get_subcommands([](CLI::App*) { return true; })) {
    if (c->get_name() == name) return c;
  }
  return nullptr;
}

// After a parse error: for an unknown flag of the chosen command, the
// closest known one.
void SuggestFlags(CLI::App& app, int argc, char** argv) {
  CLI::App* command = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (command == nullptr) {
      if (arg.empty() || arg[0] != '-') command = FindCommand(app, arg);
      continue;
    }
    if (arg.size() < 2 || arg[0] != '-') continue;
    const std::string name = arg.substr(0, arg.find('='));
    if (command->get_option_no_throw(name) != nullptr || name == "-h" || name == "--help") {
      continue;
    }
    std::vector<std::string> known;
    for (const CLI::Option* o : command->get_options()) {
      for (const std::string& l : o->get_lnames()) known.push_back("--" + l);
    }
    const std::string near = ordo::cli::Closest(name, known);
    if (!near.empty()) {
      std::fprintf(stderr, "ordo %s: unknown flag %s; did you mean %s?\n",
                   command->get_name().c_str(), name.c_str(), near.c_str());
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ordo: publish to, subscribe to and inspect an Ordo cluster"};
  app.require_subcommand(1);
  app.footer(ordo::cli::kExitStatusHelp);
  app.set_version_flag("--version", std::string("ordo ") + kVersion,
                       "Print this client's version and exit (`ordo version` asks the brokers "
                       "too)");
  std::string brokers;
  std::string credentials_file;
  std::vector<std::string> broker_key_flags;
  uint64_t timeout_ms = 30000;
  uint64_t request_timeout_ms = 1000;
  // Not CLI11's envname: every command's option writes the same variable,
  // and the environment of a command not chosen would overwrite the flag
  // of the one chosen. The environment is read after parsing instead.
  std::vector<CLI::Option*> broker_options;
  std::vector<CLI::Option*> credentials_options;
  auto common = [&](CLI::App* c) {
    broker_options.push_back(
        c->add_option("-b,--brokers", brokers,
                      "Client endpoints HOST:PORT,... (brokers= of scripts/cluster up); any one "
                      "finds the leader. Default: $ORDO_BROKERS, which `eval "
                      "\"$(scripts/cluster env)\"` sets. Required, but by `ordo version`"));
    credentials_options.push_back(c->add_option(
        "--credentials", credentials_file,
        "CurveZMQ key file of this client, with the brokers' public keys "
        "(credentials= of scripts/cluster up). Default: $ORDO_CREDENTIALS, which `eval "
        "\"$(scripts/cluster env)\"` sets. Without: plaintext, for brokers run with "
        "security.insecure"));
    c->add_option("--broker-key", broker_key_flags,
                  "HOST:PORT=KEY: a broker's public key, beside (or instead of) those in the "
                  "credentials file; repeat per broker")
        ->take_all();
    c->add_option("--request-timeout-ms", request_timeout_ms,
                  "How long to wait for one broker before trying the next")
        ->capture_default_str()
        ->check(CLI::Range(uint64_t{1}, uint64_t{3600000}));
    c->footer(ordo::cli::kExitStatusHelp);
  };
  const char* kFormatHelp =
      "text (OFFSET<TAB>PAYLOAD lines), json (one object a line: offset, key, payload, "
      "producer as a string, sequence; key and payload in base64 with key_encoding/"
      "payload_encoding \"base64\" when they are not UTF-8), raw (the payloads' bytes only, "
      "nothing between them), or a template as kcat -f: %o offset, %k key, %K key bytes, "
      "%s payload, %S payload bytes, %p producer, %q sequence, %% a %, and \\n \\t \\r \\0 "
      "\\\\ \\xHH, e.g. '%o\\t%k\\t%s\\n'";

  auto* publish = app.add_subcommand(
      "publish",
      "Publish each MESSAGE, or each line of standard input, and print each message's offset in "
      "input order. Exactly-once: retries after broker failures never store a message twice. "
      "SIGINT/SIGTERM stops reading, waits for the messages sent (at most --timeout-ms), prints "
      "their offsets and exits 130/143.");
  common(publish);
  PublishFlags pf;
  publish->add_option("--key", pf.key, "Key for every message (without --key-delimiter in it)");
  publish->add_option("MESSAGE", pf.messages, "Messages (default: lines of standard input)");
  publish->add_option("--file", pf.file,
                      "Publish the whole of FILE as one message ('-': all of standard input)");
  publish->add_flag("-0,--null", pf.null_delimited,
                    "Messages on standard input end with a NUL byte, not a newline (find "
                    "-print0, xargs -0)");
  std::string delimiter_flag;
  std::string key_delimiter_flag;
  auto* delimiter_option = publish->add_option(
      "--delimiter", delimiter_flag,
      "Messages on standard input end with D (bytes; \\n \\t \\r \\0 \\\\ \\xHH "
      "escapes), not a newline; the last one needs none");
  publish->add_flag("--length-prefixed", pf.length_prefixed,
                    "Standard input is frames: a 4-byte unsigned big-endian length N, then N "
                    "bytes of message (key + delimiter + payload with --key-delimiter)");
  auto* key_delimiter_option =
      publish->add_option("--key-delimiter", key_delimiter_flag,
                          "Each message is KEY D PAYLOAD, split at the first D (as kcat -K); one "
                          "without D has --key, or none");
  publish
      ->add_option("--message-bytes-max", pf.message_bytes_max,
                   "Largest message (key + payload) to send; keep it at most the brokers' "
                   "limits.message_bytes_max")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 30));
  publish
      ->add_option("--on-oversize", pf.on_oversize,
                   "A message above --message-bytes-max: stop (send nothing after it) or "
                   "skip it; either way it is reported with its line number and the exit "
                   "status is 1")
      ->capture_default_str()
      ->check(CLI::IsMember({"stop", "skip"}));
  publish->add_option("--linger-ms", pf.linger_ms, "How long a batch may wait to fill")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{60000}));
  publish->add_option("--batch-messages", pf.batch_messages, "Messages per request at most")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1000000}));
  publish->add_option("--batch-bytes", pf.batch_bytes,
                      "Key+payload bytes per request at most (keep below the brokers' "
                      "limits.frame_bytes_max)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{1} << 30));
  publish->add_option("--window", pf.window,
                      "Messages published and not yet acknowledged at most; reading input "
                      "pauses while it is full (at most 65536, the brokers' dedup memory)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{1}, size_t{65536}));
  publish->add_option("--timeout-ms", timeout_ms,
                      "How long to wait for acknowledgments (after the input ends, or while the "
                      "window is full) before giving up")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{86400000}));

  auto* subscribe = app.add_subcommand(
      "subscribe", "Print the stream as OFFSET<TAB>PAYLOAD lines, following it live");
  common(subscribe);
  std::string from_text = "latest";
  SubscribeFlags sf;
  subscribe->add_option("--from", from_text, "OFFSET, earliest (retained) or latest")
      ->capture_default_str();
  subscribe->add_option("--count", sf.count, "Stop after N messages (default: follow forever)");
  std::string format = "text";
  subscribe->add_option("--format", format, kFormatHelp)->capture_default_str();
  subscribe
      ->add_option("--timeout-ms", timeout_ms,
                   "Give up (exit 3) when no broker has answered for this long")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{86400000}));
  subscribe->add_flag("--retry-forever", sf.retry_forever,
                      "Never give up while the brokers are down; keep trying");
  bool no_verify = false;
  const char* kNoVerifyHelp =
      "Trust what brokers serve instead of checking each message against the stream's hash "
      "chain (for brokers older than the chain)";
  subscribe->add_flag("--no-verify", no_verify, kNoVerifyHelp);

  auto* replay = app.add_subcommand(
      "replay",
      "Print offsets [A, B) and exit; to a terminal, show a progress bar on standard error "
      "(not when standard output is that terminal too)");
  common(replay);
  std::string replay_from;
  uint64_t replay_to_flag = 0;
  replay->add_option("--from", replay_from, "First offset A, or earliest (retained)")->required();
  auto* replay_to_option =
      replay->add_option("--to", replay_to_flag,
                         "One past the last offset, B: --to A prints nothing (default: the head at "
                         "the start). Past the head: stops there, says so and exits 0; with "
                         "--follow, waits for the offsets up to B");
  bool compacted = false;
  replay->add_flag("--compacted", compacted,
                   "Only the latest message of each key (offsets skip), as OFFSET<TAB>KEY<TAB>"
                   "PAYLOAD lines; works below the retained range");
  bool follow = false;
  replay->add_flag("--follow", follow,
                   "Wait for offsets not yet published: up to --to, or forever without it");
  replay->add_option("--format", format, kFormatHelp)->capture_default_str();
  replay->add_option("--timeout-ms", timeout_ms,
                     "Give up after this long without progress")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{86400000}));
  replay->add_flag("--retry-forever", sf.retry_forever,
                   "With --follow: never give up while the brokers are down");
  replay->add_flag("--no-verify", no_verify, kNoVerifyHelp);

  auto* status =
      app.add_subcommand("status",
                         "Show every broker's role, ballot and progress (each asked for at most "
                         "--request-timeout-ms)");
  common(status);
  bool status_json = false;
  std::string status_format = "text";
  status->add_flag("--json", status_json, "One JSON object per broker, one per line");
  status->add_option("--format", status_format, "text (a table) or json (as --json)")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}));

  auto* verify = app.add_subcommand(
      "verify",
      "Check the stream's hash chain on every broker and compare them: one line per broker, "
      "ENDPOINT<TAB>END<TAB>CHAIN<TAB>VERDICT, CHAIN being the chain value at offset END (the "
      "end of the instance holding --to - 1). Exit 0 when all agree; 1 when one differs or "
      "fails its own chain, with the first differing offset");
  common(verify);
  ordo::cli::VerifyFlags vf;
  uint64_t verify_from = 0, verify_to = 0;
  auto* verify_from_option =
      verify->add_option("--from", verify_from,
                         "First offset A (default: the highest earliest retained offset of the "
                         "brokers)");
  auto* verify_to_option = verify->add_option(
      "--to", verify_to, "One past the last offset, B (default: the lowest head of the brokers)");
  verify->add_flag("--head", vf.head,
                   "Print the current head as OFFSET<TAB>CHAIN (the leader's), to record "
                   "elsewhere and check later with --to OFFSET --expect CHAIN");
  verify->add_option("--expect", vf.expect,
                     "With --to: the chain value (64 hex digits) every broker must have at --to; "
                     "exit 1 otherwise");
  verify
      ->add_option("--timeout-ms", timeout_ms,
                   "Give up on a broker after this long without progress")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{86400000}));

  auto* health = app.add_subcommand(
      "health",
      "Ask every broker (at most --request-timeout-ms each) and print one line per broker, "
      "then the verdict: exit 0 when a leader and a majority of the voting members answer, "
      "else 3 (or 5 when refused), as etcdctl endpoint health");
  common(health);

  auto* version =
      app.add_subcommand("version",
                         "Print this client's version and, with --brokers (or ORDO_BROKERS), each "
                         "broker's");
  common(version);

  auto* members = app.add_subcommand(
      "members",
      "List the members (voters and learners: id, peer, client, state) as a broker knows "
      "them; or change them: add, promote, remove (admin permission)");
  common(members);
  bool members_json = false;
  members->add_flag("--json", members_json, "One JSON object: the members and their state");
  members->require_subcommand(0, 1);
  ordo::MemberSpec member_spec;
  std::string member_key_file;
  auto member_change = [&](const char* name, const char* help) {
    CLI::App* c = members->add_subcommand(name, help);
    common(c);
    c->add_option("--id", member_spec.id, "The member's node id (never reused)")
        ->required()
        ->check(CLI::Range(uint32_t{1}, uint32_t{0xffffffff}));
    c->add_option("--timeout-ms", timeout_ms,
                  "How long to wait for the change to be chosen (promote: also for the "
                  "learner to catch up)")
        ->capture_default_str()
        ->check(CLI::Range(uint64_t{1}, uint64_t{86400000}));
    c->add_flag("--json", members_json, "Print the outcome as one JSON object");
    return c;
  };
  auto* members_add = member_change(
      "add", "Add a member as a learner: it pulls the log and does not vote until promoted");
  members_add->add_option("--peer", member_spec.peer, "Its peer endpoint HOST:PORT")->required();
  members_add->add_option("--client", member_spec.client, "Its client endpoint HOST:PORT")
      ->required();
  auto* key_option = members_add->add_option(
      "--public-key", member_spec.public_key,
      "Its CurveZMQ public key (Z85, 40 characters; ordo keygen prints it)");
  members_add->add_option("--key-file", member_key_file, "Its key file (ordo keygen --out)")
      ->excludes(key_option);
  auto* members_promote = member_change(
      "promote", "Make a learner a voter, once it has caught up (retried until --timeout-ms)");
  auto* members_remove = member_change(
      "remove", "Remove a member, a voter (the leader too: it hands over) or a learner");

  auto* keygen = app.add_subcommand(
      "keygen",
      "Write a new CurveZMQ key pair to FILE (mode 0600) and print its public key as "
      "public_key=KEY. Give the public key to the brokers (or clients); the file stays secret.");
  std::string keygen_out;
  bool keygen_force = false;
  keygen->add_option("--out", keygen_out, "The key file to write")->required();
  keygen->add_flag("--force", keygen_force, "Replace FILE if it exists");
  keygen->footer(ordo::cli::kExitStatusHelp);

  // An unknown command: say which one was meant.
  if (argc > 1 && argv[1][0] != '-' && FindCommand(app, argv[1]) == nullptr) {
    std::vector<std::string> names;
    for (const CLI::App* c : app.get_subcommands([](CLI::App*) { return true; })) {
      names.push_back(c->get_name());
    }
    const std::string near = ordo::cli::Closest(argv[1], names);
    std::string all;
    for (const std::string& n : names) all += (all.empty() ? "" : ", ") + n;
    std::fprintf(stderr, "ordo: unknown command '%s'%s (commands: %s; ordo --help)\n", argv[1],
                 near.empty() ? "" : ("; did you mean '" + near + "'?").c_str(), all.c_str());
    return ordo::cli::kExitUsage;
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version are "successful" ParseErrors; every other one is
    // a usage error.
    const int rc = app.exit(e);
    if (rc != 0) SuggestFlags(app, argc, argv);
    return rc == 0 ? ordo::cli::kExitOk : ordo::cli::kExitUsage;
  }
  if (*keygen) return KeyGen(keygen_out, keygen_force);
  if (delimiter_option->count() > 0) pf.delimiter = delimiter_flag;
  if (key_delimiter_option->count() > 0) pf.key_delimiter = key_delimiter_flag;
  std::optional<uint64_t> replay_to;
  if (replay_to_option->count() > 0) replay_to = replay_to_flag;
  if (!ParseFormat(format, &g_output)) return ordo::cli::kExitUsage;
  auto given = [](const std::vector<CLI::Option*>& options) {
    return std::any_of(options.begin(), options.end(),
                       [](const CLI::Option* o) { return o->count() > 0; });
  };
  if (const char* env = std::getenv("ORDO_BROKERS"); env != nullptr && !given(broker_options)) {
    brokers = env;
  }
  if (const char* env = std::getenv("ORDO_CREDENTIALS");
      env != nullptr && !given(credentials_options)) {
    credentials_file = env;
  }
  ordo::ClientOptions options;
  options.brokers = ordo::ParseBrokerList(brokers);
  options.request_timeout = std::chrono::milliseconds(request_timeout_ms);
  options.call_timeout = std::chrono::milliseconds(timeout_ms);
  options.verify_chain = !no_verify;
  if (options.brokers.empty() && !*version) {
    std::fprintf(stderr,
                 "ordo: --brokers (-b) is required: HOST:PORT,... (brokers= of scripts/cluster "
                 "up), or ORDO_BROKERS, which `eval \"$(scripts/cluster env)\"` sets\n");
    return ordo::cli::kExitUsage;
  }
  // A typo, or a host without a port, fails now rather than after --timeout-ms.
  for (const std::string& b : options.brokers) {
    if (std::optional<std::string> bad = ordo::cli::CheckEndpoint(b)) {
      std::fprintf(stderr, "ordo: --brokers: %s\n", bad->c_str());
      return ordo::cli::kExitUsage;
    }
  }
  if (!credentials_file.empty()) {
    ordo::Result<ordo::ClientCredentials> c = ordo::LoadCredentials(credentials_file);
    if (!c.ok()) return Fail(c.error());
    options.credentials = std::move(c.value());
  }
  for (const std::string& flag : broker_key_flags) {
    // A key is 40 characters, and Z85 has '=' among them: split before it.
    const size_t eq = flag.size() > 41 ? flag.size() - 41 : 0;
    if (eq == 0 || flag[eq] != '=' || !ordo::IsCurveKey(flag.substr(eq + 1))) {
      std::fprintf(stderr,
                   "ordo: --broker-key takes HOST:PORT=KEY (a 40-character Z85 key), "
                   "not '%s'\n",
                   flag.c_str());
      return ordo::cli::kExitUsage;
    }
    if (options.credentials.empty()) {
      std::fprintf(stderr, "ordo: --broker-key needs --credentials (this client's own key)\n");
      return ordo::cli::kExitUsage;
    }
    options.credentials.broker_keys[flag.substr(0, eq)] = flag.substr(eq + 1);
  }

  if (*publish) return Publish(options, pf);
  if (*subscribe) {
    const std::optional<From> from = ParseFrom(from_text, true);
    if (!from) return ordo::cli::kExitUsage;
    return Subscribe(options, *from, sf);
  }
  if (*replay) {
    const std::optional<From> from = ParseFrom(replay_from, false);
    if (!from) return ordo::cli::kExitUsage;
    if (replay_to && !from->earliest && *replay_to < from->offset) {
      std::fprintf(stderr,
                   "ordo: --to (%llu) is below --from (%llu); --to is one past the last "
                   "offset to print\n",
                   static_cast<unsigned long long>(*replay_to),
                   static_cast<unsigned long long>(from->offset));
      return ordo::cli::kExitUsage;
    }
    if (follow) {
      if (compacted) {
        std::fprintf(stderr, "ordo: --follow does not go with --compacted\n");
        return ordo::cli::kExitUsage;
      }
      sf.to = replay_to;
      return Subscribe(options, *from, sf);
    }
    return Replay(options, *from, replay_to, compacted);
  }
  if (*members) {
    if (*members_add) {
      if (!member_key_file.empty()) {
        ordo::StatusOr<ordo::KeyFile> file = ordo::LoadKeyFile(member_key_file);
        if (!file.ok()) {
          std::fprintf(stderr, "ordo: --key-file: %s\n", file.status().message().c_str());
          return ordo::cli::kExitUsage;
        }
        member_spec.public_key = file.value().pair.public_key;
      }
      if (!member_spec.public_key.empty() && !ordo::IsCurveKey(member_spec.public_key)) {
        std::fprintf(stderr, "ordo: --public-key: '%s' is not 40 characters of Z85\n",
                     member_spec.public_key.c_str());
        return ordo::cli::kExitUsage;
      }
      for (const std::string* e : {&member_spec.peer, &member_spec.client}) {
        if (std::optional<std::string> bad = ordo::cli::CheckEndpoint(*e)) {
          std::fprintf(stderr, "ordo: members add: %s\n", bad->c_str());
          return ordo::cli::kExitUsage;
        }
      }
      return ChangeMembers(options, ordo::MemberChange::kAddLearner, member_spec, members_json);
    }
    if (*members_promote) {
      return ChangeMembers(options, ordo::MemberChange::kPromote, member_spec, members_json);
    }
    if (*members_remove) {
      return ChangeMembers(options, ordo::MemberChange::kRemove, member_spec, members_json);
    }
    return ListMembers(options, members_json);
  }
  if (*verify) {
    if (verify_from_option->count() > 0) vf.from = verify_from;
    if (verify_to_option->count() > 0) vf.to = verify_to;
    return ordo::cli::Verify(options, vf);
  }
  if (*health) return Health(options);
  if (*version) return Version(options);
  return Status(options, status_json || status_format == "json");
}
