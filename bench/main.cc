// ordo-bench: Ordo's benchmark suite (bench/README.md).
//
//   ordo-bench ceiling    --json ceiling.json
//   ordo-bench throughput --publishers 16 --size 128 --duration 20 --window 1024
//   ordo-bench latency    [--rates 1000,20000]
//   ordo-bench failover   --rounds 5
//   ordo-bench catchup    --messages 200000 [--mode snapshot]
//   ordo-bench replay     --messages 200000
//   ordo-bench report     results.json      (the summary table of bench/run-all)
//
// Each starts its own 3-broker cluster on 127.0.0.1 (fsync on) in a temporary
// directory, or talks to --brokers HOST:PORT,...
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "bench/bench.h"

namespace ordo::bench {
namespace {

std::string DefaultBrokerBin() {
  // The ordo-broker next to this binary (both live in build/).
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto sibling = self.parent_path() / "ordo-broker";
    if (std::filesystem::exists(sibling)) return sibling.string();
  }
  return ORDO_BENCH_BROKER_BIN;
}

std::string Row(std::optional<double> v, int decimals, const std::string& unit) {
  return v ? Fmt(*v, decimals) + unit : "n/a";
}

// The summary of a bench/run-all file against the targets.
int Report(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("cannot read " + path + "; run bench/run-all first");
  std::stringstream ss;
  ss << f.rdbuf();
  Json j;
  try {
    j = Json::Parse(ss.str());
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(path + ": " + e.what() + "; give a file written by bench/run-all");
  }
  Table t("Ordo benchmark summary (" + path + ")");
  const Json* ceiling_run = j.Find("ceiling");
  if (const Json* m = ceiling_run ? ceiling_run->Find("machine") : nullptr) {
    const Json* cpu = m->Find("cpu");
    t.Row("machine", (cpu && cpu->is_string() ? cpu->string() : "?") + ", " +
                         Row(m->NumberAt("cores"), 0, " cores"), "");
  }
  // The better of the ceilings measured at the start and at the end.
  auto best = [&](const std::string& key) {
    const auto a = j.NumberAt("ceiling.ceiling." + key);
    const auto b = j.NumberAt("ceiling_end.ceiling." + key);
    if (a && b) return std::optional<double>(std::max(*a, *b));
    return a ? a : b;
  };
  const auto rep = best("replicated.batch_256k_msgs_per_s");
  t.Row("ceiling: 3-way replication (256 KiB batches)", Row(rep, 0, " msgs/s"),
        "start " + Row(j.NumberAt("ceiling.ceiling.replicated.batch_256k_msgs_per_s"), 0, "") + ", end " +
            Row(j.NumberAt("ceiling_end.ceiling.replicated.batch_256k_msgs_per_s"), 0, "") +
            "; fsyncs/s " + Row(best("fsync.fsyncs_per_s"), 0, "") + ", LMDB commit " +
            Row(best("lmdb.single.commits_per_s"), 0, "/s"));
  const auto tput = j.NumberAt("throughput.result.msgs_per_s");
  t.Row("throughput", Row(tput, 0, " msgs/s"),
        "target >= 500,000; " + Pct(tput, rep) + " of the replication ceiling");
  t.Row("  ack latency p50 / p99 at max", Row(j.NumberAt("throughput.result.latency.p50_us"), 0, " us") +
                                               " / " + Row(j.NumberAt("throughput.result.latency.p99_us"), 0, " us"),
        "closed loop");
  const auto cpu = j.NumberAt("throughput.result.broker_cpu_s_per_million");
  t.Row("broker CPU per message (3 brokers)", Row(cpu, 2, " us"), "target <= 2 us");
  double anon = 0;
  if (const Json* tr = j.Find("throughput")) {
    if (const Json* r = tr->Find("result")) {
      if (const Json* b = r->Find("brokers")) {
        for (const Json& x : b->array()) anon = std::max(anon, x.NumberAt("rss_anon_max_bytes").value_or(0));
      }
    }
  }
  t.Row("broker memory beyond LMDB (max)", Fmt(anon / 1048576.0, 1) + " MiB", "target <= 256 MiB");
  if (const Json* l = j.Find("latency")) {
    if (const Json* rates = l->Find("rates")) {
      for (const Json& r : rates->array()) {
        const Json* label = r.Find("label");
        std::string target;
        if (label && label->string() == "1000/s") target = "target p50 <= 1 ms, p99 <= 3 ms";
        if (label && label->string() == "50% of max") target = "target p99 <= 25 ms";
        t.Row("latency at " + (label ? label->string() : std::string("?")) + " (" +
                  Row(r.NumberAt("offered_per_s"), 0, "/s") + ")",
              "p50 " + Row(r.NumberAt("latency.p50_us"), 0, " us") + ", p99 " +
                  Row(r.NumberAt("latency.p99_us"), 0, " us"),
              target);
      }
    }
  }
  t.Row("failover: first ack by new leader", "p50 " + Row(j.NumberAt("failover.failover_ms_p50"), 0, " ms") +
                                                 ", max " + Row(j.NumberAt("failover.failover_ms_max"), 0, " ms"),
        "target p50 <= 500 ms, max <= 1,500 ms");
  t.Row("failover: longest ack gap", "p50 " + Row(j.NumberAt("failover.ack_gap_ms_p50"), 0, " ms") +
                                         ", max " + Row(j.NumberAt("failover.ack_gap_ms_max"), 0, " ms"), "");
  t.Row("catch-up (range pull)", Row(j.NumberAt("catchup.msgs_per_s"), 0, " msgs/s"),
        Row(j.NumberAt("catchup.mb_per_s"), 1, " MB/s; target >= 1,000,000 msgs/s; ") +
            Pct(j.NumberAt("catchup.msgs_per_s"), best("lmdb.batch_256k.msgs_per_s")) +
            " of one broker's LMDB ceiling");
  const Json* snap = j.Find("catchup_snapshot");
  const Json* avail = snap ? snap->Find("available") : nullptr;
  const bool snap_ok = snap && avail && avail->is_bool() && avail->boolean();
  t.Row("catch-up (snapshot install)",
        snap_ok ? Row(snap->NumberAt("msgs_per_s"), 0, " msgs/s") : "not available yet",
        "target >= 1,000,000 msgs/s");
  t.Row("replay to one subscriber", Row(j.NumberAt("replay.msgs_per_s"), 0, " msgs/s"),
        Row(j.NumberAt("replay.mb_per_s"), 1, " MB/s; target >= 3,000,000 msgs/s; ") +
            Pct(j.NumberAt("replay.msgs_per_s"), best("zmq.batch_256k.msgs_per_s")) + " of ZeroMQ loopback");
  t.Print();
  return 0;
}

}  // namespace
}  // namespace ordo::bench

int main(int argc, char** argv) {
  using namespace ordo::bench;
  CLI::App app{"ordo-bench: Ordo's benchmark suite (see bench/README.md)"};
  app.require_subcommand(1);
  CommonOptions common;
  common.broker_bin = DefaultBrokerBin();

  // 0 = the command's default: 1000 ms (the client's default), 200 ms for
  // failover, where it bounds how long a publisher waits on the dead leader.
  common.request_timeout_ms = 0;
  auto add_common = [&](CLI::App* sub) {
    sub->add_option("--brokers", common.brokers,
                    "Use this cluster (client endpoints HOST:PORT,...) instead of starting one");
    sub->add_option("--json", common.json_path, "Also write the results to this JSON file");
    sub->add_option("--ceiling", common.ceiling_path,
                    "Ceiling JSON from `ordo-bench ceiling --json` (default: measure a quick one)");
    sub->add_option("--broker-bin", common.broker_bin, "The ordo-broker binary")->capture_default_str();
    sub->add_option("--request-timeout-ms", common.request_timeout_ms,
                    "Client request timeout before trying the next broker (default 1000; failover 200)")
        ->check(CLI::Range(1, 600000));
    sub->add_flag("--keep-dir", common.keep_dir, "Keep the cluster's directory (configs, logs, data)");
    sub->add_flag("--insecure", common.insecure,
                  "Plaintext ports instead of CurveZMQ (security.insecure), to measure what "
                  "encryption costs");
    sub->add_option("--credentials", common.credentials,
                    "With --brokers: the client's key file (credentials= of scripts/cluster up)")
        ->envname("ORDO_CREDENTIALS");
  };

  ThroughputOptions tp;
  auto* throughput = app.add_subcommand("throughput", "Closed-loop publishing: acked msgs/s, ack latency, broker CPU and memory");
  throughput->add_option("--publishers", tp.publishers, "Publisher threads")->capture_default_str()->check(CLI::Range(1, 256));
  throughput->add_option("--size", tp.size, "Message payload bytes")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  throughput->add_option("--duration", tp.duration_s, "Measured seconds")->capture_default_str()->check(CLI::Range(0.1, 3600.0));
  throughput->add_option("--warmup", tp.warmup_s, "Seconds before measuring")->capture_default_str()->check(CLI::Range(0.0, 600.0));
  throughput->add_option("--window", tp.window, "Messages in flight per publisher (one PublishBatch call today)")
      ->capture_default_str()->check(CLI::Range(1, 65536));
  throughput->add_flag("--slow-subscriber", tp.slow_subscriber,
                       "Also run a subscriber reading ten times slower than the stream (memory target)");
  add_common(throughput);

  LatencyOptions lat;
  auto* latency = app.add_subcommand("latency", "Open-loop publishing at fixed offered rates: latency percentiles");
  latency->add_option("--rates", lat.rates, "Offered msgs/s (default: 1000/s and 10%, 50%, 80% of the measured maximum)")
      ->delimiter(',')->check(CLI::PositiveNumber);
  latency->add_option("--duration", lat.duration_s, "Seconds per rate")->capture_default_str()->check(CLI::Range(0.2, 3600.0));
  latency->add_option("--probe-duration", lat.probe_s, "Seconds of the throughput run that finds the maximum")
      ->capture_default_str()->check(CLI::Range(0.2, 600.0));
  latency->add_option("--senders", lat.senders, "Sender threads, each with its own publisher")
      ->capture_default_str()->check(CLI::Range(1, 256));
  latency->add_option("--size", lat.size, "Message payload bytes")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  latency->add_option("--batch-max", lat.batch_max, "Most messages one sync sender sends at once when behind")
      ->capture_default_str()->check(CLI::Range(1, 65536));
  latency->add_option("--client", lat.client,
                      "async: AsyncPublisher, several requests in flight per sender; sync: blocking "
                      "PublishBatch, one request in flight per sender (due messages wait for it)")
      ->capture_default_str()->check(CLI::IsMember({"async", "sync"}));
  latency->add_option("--requests-inflight", lat.requests_inflight, "Requests in flight per async sender")
      ->capture_default_str()->check(CLI::Range(1, 1024));

  FailoverOptions fo;
  auto* failover = app.add_subcommand("failover", "kill -9 of the leader under load, K times: time to the first ack by the new leader");
  failover->add_option("--rounds", fo.rounds, "Kills (K)")->capture_default_str()->check(CLI::Range(1, 1000));
  failover->add_option("--publishers", fo.publishers, "Publisher threads")->capture_default_str()->check(CLI::Range(1, 64));
  failover->add_option("--window", fo.window, "Messages per PublishBatch")->capture_default_str()->check(CLI::Range(1, 65536));
  failover->add_option("--size", fo.size, "Message payload bytes")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  failover->add_option("--steady", fo.steady_s, "Seconds of steady load before each kill and after the new leader")
      ->capture_default_str()->check(CLI::Range(0.1, 600.0));
  failover->add_option("--timeout", fo.timeout_s, "Give up a round after this many seconds without an ack")
      ->capture_default_str()->check(CLI::Range(1.0, 600.0));

  HealOptions ho;
  auto* heal = app.add_subcommand("heal",
                                  "A follower cut off from its peers (nftables; needs root), then "
                                  "healed, K times: time until it has caught up "
                                  "(--netns: brokers in network namespaces, the "
                                  "leader cut off)");
  heal->add_option("--rounds", ho.rounds, "Partitions (K)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  heal->add_option("--partition", ho.partition_s, "Seconds each follower stays cut off")
      ->capture_default_str()
      ->check(CLI::Range(0.5, 600.0));
  heal->add_option("--timeout", ho.timeout_s, "Give up a round after this many seconds")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 3600.0));
  heal->add_option("--peer-link-timeout-ms", ho.link_timeout_ms,
                   "timing.peer_link_timeout_ms for the brokers (0: no heartbeats; default: the "
                   "brokers' own)")
      ->check(CLI::Range(0, 600000));
  heal->add_flag("--netns", ho.netns,
                 "Each broker in a network namespace of its own on a bridge (needs root, ip and "
                 "nft); the leader is cut off: failover, heal to the leader hearing every peer, "
                 "heal to the old leader caught up");

  CatchupOptions co;
  auto* catchup = app.add_subcommand("catchup", "A broker stopped while M messages are published, restarted: catch-up speed");
  catchup->add_option("--messages", co.messages, "Messages published while it is down (M)")
      ->capture_default_str()->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  catchup->add_option("--size", co.size, "Message payload bytes")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  catchup->add_option("--mode", co.mode, "range (pull the missing instances) or snapshot (tight retention: install a snapshot, then pull the rest)")
      ->capture_default_str()->check(CLI::IsMember({"range", "snapshot"}));
  catchup->add_option("--timeout", co.timeout_s, "Give up after this many seconds")->capture_default_str()->check(CLI::Range(1.0, 3600.0));

  ReplayOptions ro;
  auto* replay = app.add_subcommand("replay", "One subscriber reading M messages from the start: msgs/s and MB/s");
  replay->add_option("--messages", ro.messages, "Messages to publish and read back (M)")
      ->capture_default_str()->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  replay->add_option("--size", ro.size, "Message payload bytes")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  replay->add_option("--credit", ro.credit, "Subscriber credit (records in flight)")->capture_default_str()->check(CLI::Range(1, 100000));
  replay->add_option("--api", ro.api, "subscriber (ordo::Subscriber) or replay (ordo::Replay, one call)")
      ->capture_default_str()->check(CLI::IsMember({"subscriber", "replay"}));

  CeilingOptions ce;
  auto* ceiling = app.add_subcommand("ceiling", "This machine's raw limits: ZeroMQ loopback, LMDB durable commits, fsync");
  ceiling->add_option("--seconds", ce.seconds_per_test, "Seconds per measurement")->capture_default_str()->check(CLI::Range(0.01, 60.0));
  ceiling->add_option("--repeats", ce.repeats, "Runs per measurement; the best is kept (others' load only lowers it)")
      ->capture_default_str()->check(CLI::Range(1, 100));
  ceiling->add_option("--size", ce.size, "Message bytes the figures are expressed in")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  ceiling->add_option("--json", common.json_path, "Also write the results to this JSON file");

  std::string report_path;
  auto* report = app.add_subcommand("report", "Print the summary table of a bench/run-all JSON file, with the targets");
  report->add_option("file", report_path, "The JSON file bench/run-all wrote")->required();

  add_common(latency);
  add_common(failover);
  add_common(heal);
  add_common(catchup);
  add_common(replay);

  CLI11_PARSE(app, argc, argv);
  if (common.request_timeout_ms == 0) common.request_timeout_ms = failover->parsed() ? 200 : 1000;
  try {
    if (throughput->parsed()) return CmdThroughput(common, tp);
    if (latency->parsed()) return CmdLatency(common, lat);
    if (failover->parsed()) return CmdFailover(common, fo);
    if (heal->parsed()) return CmdHeal(common, ho);
    if (catchup->parsed()) return CmdCatchup(common, co);
    if (replay->parsed()) return CmdReplay(common, ro);
    if (ceiling->parsed()) return CmdCeiling(common, ce);
    if (report->parsed()) return Report(report_path);
  } catch (const std::exception& e) {
    std::cerr << "ordo-bench: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
