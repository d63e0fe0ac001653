// build/ordo: the command-line client (first cut; issue 4 completes it).
//
//   ordo publish   --brokers LIST [--key K] [MESSAGE ...]   (stdin lines when no MESSAGE)
//   ordo subscribe --brokers LIST [--from OFFSET|earliest|latest] [--count N]
//   ordo replay    --brokers LIST --from A [--to B]
//   ordo status    --brokers LIST
//
// Output: publish prints each message's offset, one per line, in input order;
// subscribe and replay print OFFSET<TAB>PAYLOAD lines. Exit status: 0 ok,
// 1 a message was not acknowledged / a broker failed, 2 bad usage.
#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "ordo/client.h"

namespace {

int Fail(const ordo::Error& e) {
  std::fprintf(stderr, "ordo: %s\n", e.message.c_str());
  return 1;
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ordo: publish to, subscribe to and inspect an Ordo cluster"};
  app.require_subcommand(1);
  std::string brokers;
  auto add_brokers = [&](CLI::App* c) {
    c->add_option("--brokers", brokers, "Client endpoints HOST:PORT,... (brokers= of scripts/cluster up)")
        ->required();
  };

  auto* publish = app.add_subcommand("publish", "Publish each MESSAGE, or each line of stdin");
  add_brokers(publish);
  std::string key;
  std::vector<std::string> messages;
  publish->add_option("--key", key, "Key for every message");
  publish->add_option("MESSAGE", messages, "Messages (default: lines of standard input)");

  auto* subscribe = app.add_subcommand("subscribe", "Print the stream as OFFSET<TAB>PAYLOAD");
  add_brokers(subscribe);
  std::string from = "latest";
  uint64_t count = 0;
  subscribe->add_option("--from", from, "OFFSET, earliest or latest (default latest)");
  subscribe->add_option("--count", count, "Stop after N messages (default: follow forever)");
  std::string format = "text";
  subscribe->add_option("--format", format, "text (OFFSET<TAB>PAYLOAD) or json (one object a line)")
      ->check(CLI::IsMember({"text", "json"}));

  auto* replay = app.add_subcommand("replay", "Print offsets [A, B) and exit");
  add_brokers(replay);
  uint64_t replay_from = 0, replay_to = 0;
  replay->add_option("--from", replay_from, "First offset")->required();
  replay->add_option("--to", replay_to, "One past the last offset (default: the head)");
  replay->add_option("--format", format, "text (OFFSET<TAB>PAYLOAD) or json (one object a line)")
      ->check(CLI::IsMember({"text", "json"}));

  auto* status = app.add_subcommand("status", "Show every broker's role, ballot and progress");
  add_brokers(status);
  bool status_json = false;
  status->add_flag("--json", status_json, "One JSON object per broker, one per line");

  CLI11_PARSE(app, argc, argv);
  g_json = format == "json";
  ordo::ClientOptions options;
  options.brokers = ordo::ParseBrokerList(brokers);
  if (options.brokers.empty()) {
    std::fprintf(stderr, "ordo: --brokers needs HOST:PORT,... (see scripts/cluster up)\n");
    return 2;
  }

  if (*publish) {
    if (messages.empty()) {
      for (std::string line; std::getline(std::cin, line);) messages.push_back(line);
    }
    ordo::Publisher p(options);
    constexpr size_t kChunk = 1000;
    for (size_t i = 0; i < messages.size(); i += kChunk) {
      std::vector<ordo::OutgoingMessage> batch;
      for (size_t j = i; j < std::min(messages.size(), i + kChunk); ++j) {
        batch.push_back({key, messages[j]});
      }
      auto r = p.PublishBatch(batch);
      if (!r.ok()) return Fail(r.error());
      for (uint64_t o : r.value()) std::printf("%lu\n", static_cast<unsigned long>(o));
      std::fflush(stdout);
    }
    return 0;
  }
  if (*subscribe) {
    ordo::StartAt start = ordo::StartAt::Latest();
    if (from == "earliest") {
      start = ordo::StartAt::Earliest();
    } else if (from != "latest") {
      try {
        start = ordo::StartAt::Offset(std::stoull(from));
      } catch (...) {
        std::fprintf(stderr, "ordo: --from takes an offset, earliest or latest, not '%s'\n",
                     from.c_str());
        return 2;
      }
    }
    ordo::Subscriber s(options, start);
    for (uint64_t n = 0; count == 0 || n < count;) {
      auto r = s.Next(std::chrono::milliseconds(1000));
      if (!r.ok()) {
        if (r.error().code == ordo::ErrorCode::kTimeout) continue;  // brokers down: keep trying
        return Fail(r.error());
      }
      if (!r.value()) continue;
      PrintRecord(*r.value());
      std::fflush(stdout);
      ++n;
    }
    return 0;
  }
  if (*replay) {
    auto r = ordo::Replay(options, replay_from, replay_to);
    if (!r.ok()) return Fail(r.error());
    for (const ordo::Record& rec : r.value()) PrintRecord(rec);
    return 0;
  }
  // status
  int rc = 0;
  if (status_json) {
    for (const std::string& b : options.brokers) {
      auto r = ordo::GetStatus(b, std::chrono::milliseconds(1000));
      if (!r.ok()) {
        std::printf("{\"endpoint\":%s,\"error\":%s}\n", Json(b).c_str(),
                    Json(r.error().message).c_str());
        rc = 1;
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
          "\"chosen\":%lu,\"next_offset\":%lu,\"earliest_offset\":%lu,\"peers\":[%s]}\n",
          Json(b).c_str(), s.node_id, Json(s.role).c_str(), s.leader_id,
          static_cast<unsigned long>(s.ballot_round), s.ballot_node,
          static_cast<unsigned long>(s.chosen), static_cast<unsigned long>(s.next_offset),
          static_cast<unsigned long>(s.earliest_offset), peers.c_str());
    }
    return rc;
  }
  std::printf("%-6s %-22s %-10s %-10s %-10s %-12s %s\n", "NODE", "ENDPOINT", "ROLE", "BALLOT",
              "CHOSEN", "NEXT_OFFSET", "PEER LAG (instances)");
  for (const std::string& b : options.brokers) {
    auto r = ordo::GetStatus(b, std::chrono::milliseconds(1000));
    if (!r.ok()) {
      std::printf("%-6s %-22s %s\n", "?", b.c_str(), "unreachable");
      rc = 1;
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
    std::printf("%-6u %-22s %-10s %-10s %-10lu %-12lu %s\n", s.node_id, b.c_str(), s.role.c_str(),
                ballot.c_str(), static_cast<unsigned long>(s.chosen),
                static_cast<unsigned long>(s.next_offset), lag.c_str());
  }
  return rc;
}
