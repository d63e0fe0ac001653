// ordo-broker: one member of an Ordo cluster.
//
//   ordo-broker --config data/node1/ordo.toml
//   ordo-broker --config ordo.toml --node-id 2 --data-dir /var/lib/ordo/2
//
// Flags override the file. Exit status: 0 after SIGTERM/SIGINT (and for
// --help), 1 on a bad config or an endpoint it cannot bind, 2 on a usage
// error (an unknown flag, a missing --config, a flag's value of the wrong
// type), 3 when storage failed (fail-stop).
#include <malloc.h>

#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "broker/broker.h"
#include "broker/config.h"

namespace {
std::atomic<bool> g_stop{false};
std::atomic<bool> g_reload{false};
void OnSignal(int) { g_stop.store(true); }
void OnHangUp(int) { g_reload.store(true); }
}  // namespace

int main(int argc, char** argv) {
  // First: a SIGHUP (reload the access file, broker/access.h) that comes
  // while the broker starts must not end it.
  struct sigaction hup {};
  hup.sa_handler = OnHangUp;
  sigemptyset(&hup.sa_mask);
  sigaction(SIGHUP, &hup, nullptr);
  // A broker allocates and frees buffers of hundreds of KiB to a few MiB
  // many times a second (batches, frames, records). glibc's defaults give
  // each such block back to the kernel (its own mmap, or by trimming the
  // heap) and the next one page-faults its memory in again, which profiles
  // showed as the largest single cost on this kind of VM: a third to a
  // half of the brokers' CPU. Blocks up to 32 MiB now come from the heap,
  // and up to 128 MiB of free heap is kept for reuse (memory stays bounded
  // by the peak working set, which bench/ measures).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
  using ordo::broker::BrokerConfig;
  CLI::App app{"ordo-broker: a member of an Ordo cluster (see broker/ordo.example.toml)"};
  std::string config_path;
  std::optional<uint32_t> node_id, tick_ms;
  std::optional<std::string> data_dir, metrics, log_level, bind_peer, bind_client, bind_metrics;
  app.add_option("--config", config_path, "TOML configuration file")->required();
  app.add_option("--node-id", node_id, "Override node_id");
  app.add_option("--data-dir", data_dir, "Override data_dir");
  app.add_option("--metrics", metrics, "Override metrics (HOST:PORT, or '' to turn off)");
  app.add_option("--bind-peer", bind_peer,
                 "Override bind.peer: what to bind for the peer endpoint (IP:PORT, 0.0.0.0:PORT; "
                 "'' binds what [[members]] advertises)");
  app.add_option("--bind-client", bind_client, "Override bind.client (the same, for clients)");
  app.add_option("--bind-metrics", bind_metrics, "Override bind.metrics (the same, for metrics)");
  app.add_option("--log-level", log_level, "Override log_level (trace..error, off)");
  app.add_option("--tick-ms", tick_ms, "Override timing.tick_ms");
  app.footer(
      "Exit status: 0 after SIGTERM/SIGINT, 1 on a bad config or an endpoint that cannot be "
      "bound, 2 on a usage error, 3 when storage failed.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11's own statuses (104 to 109) mean nothing to an operator.
    std::fprintf(stderr, "ordo-broker: %s\nRun 'ordo-broker --help' for the flags.\n", e.what());
    return 2;
  }

  BrokerConfig config;
  ordo::broker::Status s = ordo::broker::LoadConfigFile(config_path, &config);
  if (s.ok()) {
    if (node_id) config.node_id = *node_id;
    if (data_dir) config.data_dir = *data_dir;
    if (metrics) config.metrics = *metrics;
    if (bind_peer) config.bind.peer = *bind_peer;
    if (bind_client) config.bind.client = *bind_client;
    if (bind_metrics) config.bind.metrics = *bind_metrics;
    if (log_level) config.log_level = *log_level;
    if (tick_ms) config.tick_ms = *tick_ms;
    s = ordo::broker::ValidateConfig(config);
  }
  if (!s.ok()) {
    std::fprintf(stderr, "ordo-broker: config error in %s: %s\n", config_path.c_str(),
                 s.message().c_str());
    return 1;
  }
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e [node " + std::to_string(config.node_id) +
                      "] %^%l%$ %v");
  spdlog::flush_on(spdlog::level::info);

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  ordo::broker::Broker broker(config);
  if (!(s = broker.Start()).ok()) {
    spdlog::critical("{}", s.message());
    return s.kind() == ordo::broker::Status::Kind::kError ? 1 : 3;
  }
  s = broker.Run(g_stop, &g_reload);
  if (!s.ok()) {
    spdlog::critical("{}", s.message());
    return 3;
  }
  return 0;
}
