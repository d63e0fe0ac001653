// build/ordo: the command-line client.
//
//   ordo publish   --brokers LIST [--key K] [MESSAGE ...]   (stdin lines when no MESSAGE)
//   ordo subscribe --brokers LIST [--from OFFSET|earliest|latest] [--count N]
//   ordo replay    --brokers LIST --from OFFSET|earliest [--to B]
//   ordo status    --brokers LIST [--json]
//   ordo keygen    --out FILE [--force]
//
// Every command but keygen takes --credentials FILE (or ORDO_CREDENTIALS)
// for CurveZMQ brokers, and --brokers may come from ORDO_BROKERS.
//
// Output: publish prints each message's offset, one per line, in input order;
// subscribe and replay print OFFSET<TAB>PAYLOAD lines (or JSON lines).
// Exit statuses: client/cli/cli_util.h (kExit...), printed by every --help.
#include <sys/ioctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>

#include "base/keys.h"
#include "client/cli/cli_util.h"
#include "ordo/client.h"

namespace {

using ordo::cli::ExitCodeFor;
using Clock = std::chrono::steady_clock;

int Fail(const ordo::Error& e) {
  std::fprintf(stderr, "ordo: %s\n", e.message.c_str());
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

// A JSON string: quotes, backslashes and control bytes escaped; other bytes
// pass through unchanged.
std::string Json(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

bool g_json = false;

void PrintRecord(const ordo::Record& r) {
  std::string line;
  if (g_json) {
    line = "{\"offset\":" + std::to_string(r.offset) + ",\"key\":" + Json(r.key) +
           ",\"payload\":" + Json(r.payload) + ",\"producer\":" + std::to_string(r.producer) +
           ",\"sequence\":" + std::to_string(r.sequence) + "}\n";
  } else {
    line = std::to_string(r.offset) + "\t" + r.payload + "\n";
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

struct PublishFlags {
  std::string key;
  std::vector<std::string> messages;
  uint64_t linger_ms = 5;
  size_t batch_messages = 10000;
  size_t batch_bytes = size_t{1} << 20;
  size_t window = 32768;
};

int Publish(const ordo::ClientOptions& options, const PublishFlags& flags) {
  ordo::AsyncPublisherOptions async;
  async.linger = std::chrono::milliseconds(flags.linger_ms);
  async.batch_messages_max = flags.batch_messages;
  async.batch_bytes_max = flags.batch_bytes;
  async.window_messages_max = flags.window;
  ordo::AsyncPublisher publisher(options, async);

  // Callbacks run on the publisher's thread, in input order; main reads
  // this state only after Close, which joins that thread.
  struct State {
    bool stdout_is_tty = false;
    uint64_t failed = 0;
    uint64_t first_failed_line = 0;
    std::optional<ordo::Error> first_error;
  } state;
  state.stdout_is_tty = isatty(STDOUT_FILENO) != 0;

  std::optional<ordo::Error> refused;
  uint64_t line = 0;
  auto publish = [&](const std::string& payload) {
    ++line;
    // Captures one pointer and one number: fits std::function's inline
    // storage, so no allocation per message.
    refused = publisher.Publish(
        payload, flags.key, [s = &state, n = line](const ordo::Result<uint64_t>& r) {
          if (r.ok()) {
            std::fprintf(stdout, "%llu\n", static_cast<unsigned long long>(r.value()));
            if (s->stdout_is_tty) std::fflush(stdout);
            return;
          }
          if (s->failed++ == 0) {
            s->first_error = r.error();
            s->first_failed_line = n;
          }
        });
    return !refused;
  };
  if (!flags.messages.empty()) {
    for (const std::string& m : flags.messages) {
      if (!publish(m)) break;
    }
  } else {
    for (std::string text; std::getline(std::cin, text);) {
      if (!publish(text)) break;
    }
  }
  // Waits for the acknowledgments (at most --timeout-ms); what is left then
  // is reported as not acknowledged.
  publisher.Close(options.call_timeout);
  std::fflush(stdout);
  if (refused) {
    std::fprintf(stderr, "ordo: message %llu was not published: %s\n",
                 static_cast<unsigned long long>(line), refused->message.c_str());
  }
  if (state.failed > 0) {
    std::fprintf(stderr,
                 "ordo: %llu message(s) not acknowledged; the first (message %llu): %s\n",
                 static_cast<unsigned long long>(state.failed),
                 static_cast<unsigned long long>(state.first_failed_line),
                 state.first_error->message.c_str());
  }
  if (refused) return ExitCodeFor(refused->code);
  if (state.first_error) return ExitCodeFor(state.first_error->code);
  return ordo::cli::kExitOk;
}

int Subscribe(const ordo::ClientOptions& options, const From& from, uint64_t count) {
  ordo::StartAt start = from.earliest ? ordo::StartAt::Earliest()
                        : from.latest ? ordo::StartAt::Latest()
                                      : ordo::StartAt::Offset(from.offset);
  ordo::Subscriber s(options, start);
  bool warned = false;
  for (uint64_t n = 0; count == 0 || n < count;) {
    auto r = s.Next(std::chrono::milliseconds(1000));
    if (!r.ok()) {
      if (r.error().code == ordo::ErrorCode::kOffsetBelowRetained) {
        return FailBelowRetained(r.error(), from.offset);
      }
      if (r.error().code == ordo::ErrorCode::kTimeout) {
        // Brokers down: a follower keeps trying, and says so once.
        if (!warned) std::fprintf(stderr, "ordo: %s\n", r.error().message.c_str());
        warned = true;
        continue;
      }
      return Fail(r.error());
    }
    if (!r.value()) continue;
    PrintRecord(*r.value());
    std::fflush(stdout);
    ++n;
  }
  return ordo::cli::kExitOk;
}

int Replay(const ordo::ClientOptions& options, const From& from, uint64_t to, bool compacted) {
  const bool progress = isatty(STDERR_FILENO) != 0;
  const Clock::time_point start = Clock::now();
  Clock::time_point drawn{};
  uint64_t first = from.offset;
  uint64_t done = 0;
  auto draw = [&](uint64_t end, bool last) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const std::string line =
        ordo::cli::RenderProgress(done, end > first ? end - first : 0, elapsed, TerminalColumns() - 1);
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
  // earliest: replay from 0 and, when the broker says history now starts
  // later, from the earliest offset it names (retention may move meanwhile).
  if (compacted) {
    // The compacted view has no retained range: earliest is offset 0.
    if (from.earliest) first = 0;
    ordo::Result<uint64_t> end = ordo::ReplayCompacted(options, first, to, each);
    std::fflush(stdout);
    if (!end.ok()) return Fail(end.error());
    if (progress) draw(end.value(), true);
    return ordo::cli::kExitOk;
  }
  ordo::Result<uint64_t> end = ordo::Replay(options, first, to, each);
  for (int tries = 0; from.earliest && !end.ok() && done == 0 &&
                      end.error().code == ordo::ErrorCode::kOffsetBelowRetained && tries < 3;
       ++tries) {
    first = end.error().earliest_offset;
    end = ordo::Replay(options, first, to, each);
  }
  std::fflush(stdout);
  if (!end.ok()) {
    if (progress && done > 0) std::fputc('\n', stderr);
    if (end.error().code == ordo::ErrorCode::kOffsetBelowRetained) {
      return FailBelowRetained(end.error(), first + done);
    }
    return Fail(end.error());
  }
  if (progress) draw(end.value(), true);
  return ordo::cli::kExitOk;
}

int Status(const ordo::ClientOptions& options, bool json) {
  int rc = ordo::cli::kExitOk;
  const auto timeout = std::chrono::milliseconds(1000);
  if (json) {
    for (const std::string& b : options.brokers) {
      auto r = ordo::GetStatus(b, timeout, options.credentials);
      if (!r.ok()) {
        std::printf("{\"endpoint\":%s,\"error\":%s}\n", Json(b).c_str(),
                    Json(r.error().message).c_str());
        rc = ExitCodeFor(r.error().code);
        continue;
      }
      const ordo::BrokerStatus& s = r.value();
      std::string peers;
      for (const auto& p : s.peers) {
        peers += std::string(peers.empty() ? "" : ",") + "{\"node_id\":" +
                 std::to_string(p.node_id) + ",\"chosen\":" + std::to_string(p.chosen) +
                 ",\"lag_instances\":" + std::to_string(p.lag_instances) + "}";
      }
      std::printf(
          "{\"endpoint\":%s,\"node_id\":%u,\"role\":%s,\"leader_id\":%u,\"ballot\":[%lu,%u],"
          "\"chosen\":%lu,\"next_offset\":%lu,\"earliest_offset\":%lu,\"first_retained\":%lu,"
          "\"voter\":%s,\"catching_up\":%s,\"rejoin_target\":%lu,\"snapshots_installed\":%lu,"
          "\"peers\":[%s]}\n",
          Json(b).c_str(), s.node_id, Json(s.role).c_str(), s.leader_id,
          static_cast<unsigned long>(s.ballot_round), s.ballot_node,
          static_cast<unsigned long>(s.chosen), static_cast<unsigned long>(s.next_offset),
          static_cast<unsigned long>(s.earliest_offset),
          static_cast<unsigned long>(s.first_retained), s.voter ? "true" : "false",
          s.catching_up ? "true" : "false", static_cast<unsigned long>(s.rejoin_target),
          static_cast<unsigned long>(s.snapshots_installed), peers.c_str());
    }
    return rc;
  }
  std::printf("%-6s %-22s %-11s %-10s %-10s %-12s %-10s %s\n", "NODE", "ENDPOINT", "ROLE",
              "BALLOT", "CHOSEN", "NEXT_OFFSET", "EARLIEST", "PEER LAG (instances)");
  for (const std::string& b : options.brokers) {
    auto r = ordo::GetStatus(b, timeout, options.credentials);
    if (!r.ok()) {
      const bool refused = ExitCodeFor(r.error().code) == ordo::cli::kExitRefused;
      std::printf("%-6s %-22s %s\n", "?", b.c_str(), refused ? "refused" : "unreachable");
      if (refused) std::fprintf(stderr, "ordo: %s\n", r.error().message.c_str());
      rc = ExitCodeFor(r.error().code);
      continue;
    }
    const ordo::BrokerStatus& s = r.value();
    std::string lag;
    for (const auto& p : s.peers) {
      lag += (lag.empty() ? "" : " ") + std::to_string(p.node_id) + ":" +
             std::to_string(p.lag_instances);
    }
    const std::string ballot =
        "(" + std::to_string(s.ballot_round) + "," + std::to_string(s.ballot_node) + ")";
    // A voter that lost its disk and does not vote yet says so.
    const std::string role = s.catching_up ? "catching-up" : s.role;
    std::printf("%-6u %-22s %-11s %-10s %-10lu %-12lu %-10lu %s\n", s.node_id, b.c_str(),
                role.c_str(), ballot.c_str(), static_cast<unsigned long>(s.chosen),
                static_cast<unsigned long>(s.next_offset),
                static_cast<unsigned long>(s.earliest_offset), lag.c_str());
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

}  // namespace

int main(int argc, char** argv) {
  std::ios::sync_with_stdio(false);
  CLI::App app{"ordo: publish to, subscribe to and inspect an Ordo cluster"};
  app.require_subcommand(1);
  app.footer(ordo::cli::kExitStatusHelp);
  std::string brokers;
  std::string credentials_file;
  std::vector<std::string> broker_key_flags;
  uint64_t timeout_ms = 30000;
  uint64_t request_timeout_ms = 1000;
  auto common = [&](CLI::App* c) {
    c->add_option("-b,--brokers", brokers,
                  "Client endpoints HOST:PORT,... (brokers= of scripts/cluster up); any one "
                  "finds the leader")
        ->envname("ORDO_BROKERS")
        ->required();
    c->add_option("--credentials", credentials_file,
                  "CurveZMQ key file of this client, with the brokers' public keys "
                  "(credentials= of scripts/cluster up; `eval \"$(scripts/cluster env)\"` sets "
                  "it). Without: plaintext, for brokers run with security.insecure")
        ->envname("ORDO_CREDENTIALS");
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

  auto* publish = app.add_subcommand(
      "publish",
      "Publish each MESSAGE, or each line of standard input, and print each message's offset in "
      "input order. Exactly-once: retries after broker failures never store a message twice.");
  common(publish);
  PublishFlags pf;
  publish->add_option("--key", pf.key, "Key for every message");
  publish->add_option("MESSAGE", pf.messages, "Messages (default: lines of standard input)");
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
  uint64_t count = 0;
  subscribe->add_option("--from", from_text, "OFFSET, earliest (retained) or latest")
      ->capture_default_str();
  subscribe->add_option("--count", count, "Stop after N messages (default: follow forever)");
  std::string format = "text";
  subscribe->add_option("--format", format, "text (OFFSET<TAB>PAYLOAD) or json (one object a line)")
      ->check(CLI::IsMember({"text", "json"}));

  auto* replay = app.add_subcommand(
      "replay",
      "Print offsets [A, B) and exit; to a terminal, show a progress bar on standard error");
  common(replay);
  std::string replay_from;
  uint64_t replay_to = 0;
  replay->add_option("--from", replay_from, "First offset A, or earliest (retained)")->required();
  replay->add_option("--to", replay_to, "One past the last offset, B (default: the head)");
  bool compacted = false;
  replay->add_flag("--compacted", compacted,
                   "Only the latest message of each key (offsets skip); works below the "
                   "retained range");
  replay->add_option("--format", format, "text (OFFSET<TAB>PAYLOAD) or json (one object a line)")
      ->check(CLI::IsMember({"text", "json"}));
  replay->add_option("--timeout-ms", timeout_ms,
                     "Give up after this long without progress")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{86400000}));

  auto* status = app.add_subcommand("status", "Show every broker's role, ballot and progress");
  common(status);
  bool status_json = false;
  status->add_flag("--json", status_json, "One JSON object per broker, one per line");

  auto* keygen = app.add_subcommand(
      "keygen",
      "Write a new CurveZMQ key pair to FILE (mode 0600) and print its public key as "
      "public_key=KEY. Give the public key to the brokers (or clients); the file stays secret.");
  std::string keygen_out;
  bool keygen_force = false;
  keygen->add_option("--out", keygen_out, "The key file to write")->required();
  keygen->add_flag("--force", keygen_force, "Replace FILE if it exists");
  keygen->footer(ordo::cli::kExitStatusHelp);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help is a "successful" ParseError; every other one is a usage error.
    const int rc = app.exit(e);
    return rc == 0 ? ordo::cli::kExitOk : ordo::cli::kExitUsage;
  }
  if (*keygen) return KeyGen(keygen_out, keygen_force);
  g_json = format == "json";
  ordo::ClientOptions options;
  options.brokers = ordo::ParseBrokerList(brokers);
  options.request_timeout = std::chrono::milliseconds(request_timeout_ms);
  options.call_timeout = std::chrono::milliseconds(timeout_ms);
  if (options.brokers.empty()) {
    std::fprintf(stderr, "ordo: --brokers needs HOST:PORT,... (see scripts/cluster up)\n");
    return ordo::cli::kExitUsage;
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
    return Subscribe(options, *from, count);
  }
  if (*replay) {
    const std::optional<From> from = ParseFrom(replay_from, false);
    if (!from) return ordo::cli::kExitUsage;
    if (replay_to != 0 && !from->earliest && replay_to < from->offset) {
      std::fprintf(stderr, "ordo: --to (%llu) is below --from (%llu); --to is one past the last "
                           "offset to print\n",
                   static_cast<unsigned long long>(replay_to),
                   static_cast<unsigned long long>(from->offset));
      return ordo::cli::kExitUsage;
    }
    return Replay(options, *from, replay_to, compacted);
  }
  return Status(options, status_json);
}
