// `throughput` (closed loop: every publisher keeps its window in flight) and
// `latency` (open loop at a fixed offered rate).
#include <unistd.h>

#include <ctime>
#include <iostream>
#include <thread>

#include "bench/bench.h"

namespace ordo::bench {
namespace {

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::optional<double> CeilingAt(const Json& ceiling, const std::string& path) {
  return ceiling.NumberAt(path);
}

}  // namespace

Json RunThroughput(const CommonOptions& common, const ThroughputOptions& o, BenchCluster& cluster,
                   const Json& ceiling) {
  AckSink sink;
  const auto t0 = Clock::now();
  sink.window_begin = t0 + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(o.warmup_s));
  sink.window_end = sink.window_begin + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(o.duration_s));
  const std::string payload = Payload(o.size);
  const ClientOptions copt = cluster.Options(std::chrono::milliseconds(common.request_timeout_ms));
  std::vector<std::thread> threads;
  for (int p = 0; p < o.publishers; ++p) {
    threads.emplace_back([&] {
      auto driver = MakeSyncBatchDriver(copt, o.window, sink);
      while (Clock::now() < sink.window_end) {
        // One send time per window: the messages of a window go out together.
        const auto now = Clock::now();
        for (size_t i = 0; i < o.window; ++i) driver->Submit(payload, now);
      }
      driver->Flush();
    });
  }
  // A subscriber ten times slower than the stream: the broker must hold it
  // back with flow control, not buffer for it (the memory target).
  std::atomic<bool> sub_stop{false};
  std::atomic<uint64_t> sub_read{0};
  std::string sub_error;
  std::thread sub_thread;
  if (o.slow_subscriber) {
    sub_thread = std::thread([&] {
      Subscriber sub(copt, StartAt::Latest(), 1000);
      const auto start = Clock::now();
      while (!sub_stop.load()) {
        uint64_t acked = 0;
        {
          std::lock_guard<std::mutex> lock(sink.mu);
          acked = sink.acked;
        }
        const double elapsed = Seconds(Clock::now() - start);
        const double window_elapsed = Seconds(Clock::now() - sink.window_begin);
        const double stream_rate = window_elapsed > 0.2 ? static_cast<double>(acked) / window_elapsed : 0;
        if (static_cast<double>(sub_read.load()) > std::max(100.0, stream_rate / 10 * elapsed)) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        auto r = sub.Next(std::chrono::milliseconds(100));
        if (!r.ok()) {
          sub_error = r.error().message;
          return;
        }
        if (r.value()) sub_read.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_until(sink.window_begin);
  const std::vector<ProcSample> before = cluster.Sample();
  const double client_cpu0 = ProcessCpuSeconds();
  std::vector<uint64_t> anon_max(before.size(), 0);
  while (Clock::now() < sink.window_end) {
    std::this_thread::sleep_for(std::min<Clock::duration>(std::chrono::milliseconds(100),
                                                          sink.window_end - Clock::now()));
    const auto s = cluster.Sample();
    for (size_t i = 0; i < s.size(); ++i) anon_max[i] = std::max(anon_max[i], s[i].rss_anon_bytes);
  }
  const std::vector<ProcSample> after = cluster.Sample();
  const double client_cpu = ProcessCpuSeconds() - client_cpu0;
  for (auto& t : threads) t.join();
  sub_stop.store(true);
  if (sub_thread.joinable()) sub_thread.join();
  cluster.CheckAlive();

  const double msgs = static_cast<double>(sink.acked);
  Json r = Json::MakeObject();
  r["publishers"] = o.publishers;
  r["message_bytes"] = static_cast<uint64_t>(o.size);
  r["window"] = static_cast<uint64_t>(o.window);
  r["duration_s"] = o.duration_s;
  r["acked"] = sink.acked;
  r["errors"] = sink.errors;
  if (!sink.last_error.empty()) r["last_error"] = sink.last_error;
  r["msgs_per_s"] = msgs / o.duration_s;
  r["mb_per_s"] = msgs * static_cast<double>(o.size) / o.duration_s / 1e6;
  r["latency"] = sink.latency.ToJson();
  r["client_cpu_s"] = client_cpu;
  if (o.slow_subscriber) {
    r["slow_subscriber_read"] = sub_read.load();
    if (!sub_error.empty()) r["slow_subscriber_error"] = sub_error;
  }
  Json brokers = Json::MakeArray();
  std::optional<double> cpu_total;
  for (size_t i = 0; i < after.size(); ++i) {
    Json b = Json::MakeObject();
    b["node"] = static_cast<uint64_t>(i + 1);
    if (before[i].ok && after[i].ok) {
      b["cpu_s"] = after[i].cpu_s - before[i].cpu_s;
      cpu_total = cpu_total.value_or(0) + after[i].cpu_s - before[i].cpu_s;
    }
    b["rss_peak_bytes"] = after[i].rss_peak_bytes;
    b["rss_anon_max_bytes"] = std::max(anon_max[i], after[i].rss_anon_bytes);
    brokers.Push(b);
  }
  r["brokers"] = brokers;
  r["broker_cpu_s"] = Json::Maybe(cpu_total);
  r["broker_cpu_s_per_million"] =
      Json::Maybe(cpu_total && msgs > 0 ? std::optional<double>(*cpu_total * 1e6 / msgs) : std::nullopt);
  r["ceiling_msgs_per_s"] = Json::Maybe(CeilingAt(ceiling, "replicated.batch_256k_msgs_per_s"));
  r["pct_of_ceiling"] = Json::Maybe(
      CeilingAt(ceiling, "replicated.batch_256k_msgs_per_s")
          ? std::optional<double>(100.0 * msgs / o.duration_s /
                                  *CeilingAt(ceiling, "replicated.batch_256k_msgs_per_s"))
          : std::nullopt);
  return r;
}

int CmdThroughput(const CommonOptions& common, const ThroughputOptions& o) {
  const Json ceiling = LoadOrMeasureCeiling(common, o.size);
  BenchCluster cluster(common);
  cluster.WaitForLeader();
  Json r = RunThroughput(common, o, cluster, ceiling);

  Table t("throughput: " + std::to_string(o.publishers) + " publishers x window " +
          std::to_string(o.window) + ", " + std::to_string(o.size) + "-byte messages, " +
          Fmt(o.duration_s, 1) + " s");
  const double rate = *r.NumberAt("msgs_per_s");
  t.Row("acked", Fmt(rate) + " msgs/s",
        Pct(rate, CeilingAt(ceiling, "replicated.batch_256k_msgs_per_s")) +
            " of the 3-way replication ceiling (256 KiB batches), " +
            Pct(rate, CeilingAt(ceiling, "replicated.batch_64k_msgs_per_s")) + " of it with 64 KiB");
  t.Row("", Fmt(*r.NumberAt("mb_per_s"), 2) + " MB/s", "");
  for (const char* q : {"p50", "p90", "p99", "p999", "max"}) {
    const double us = *r.NumberAt(std::string("latency.") + q + "_us");
    t.Row(std::string("ack latency ") + q, Us(us),
          std::string(q) == "p50"
              ? "floor " + Us(CeilingAt(ceiling, "latency_floor_us").value_or(0)) + " (one LMDB commit)"
              : "");
  }
  if (auto per = r.NumberAt("broker_cpu_s_per_million")) {
    t.Row("broker CPU (3 brokers)", Fmt(*per, 2) + " s per million msgs",
          Fmt(*per, 2) + " us/msg; ZeroMQ alone: " +
              Fmt(CeilingAt(ceiling, "zmq.single.cpu_us_per_msg").value_or(0), 3) + " us/msg");
  } else {
    t.Row("broker CPU", "n/a", "external brokers: their /proc is not ours to read");
  }
  for (const Json& b : r.Find("brokers")->array()) {
    t.Row("broker " + Fmt(*b.NumberAt("node")) + " memory",
          Fmt(*b.NumberAt("rss_peak_bytes") / 1048576.0, 1) + " MiB peak RSS",
          Fmt(*b.NumberAt("rss_anon_max_bytes") / 1048576.0, 1) + " MiB anonymous (beyond LMDB's map)");
  }
  if (o.slow_subscriber) {
    t.Row("slow subscriber", Fmt(*r.NumberAt("slow_subscriber_read")) + " msgs read",
          "reads at a tenth of the ack rate" +
              (r.Find("slow_subscriber_error") ? "; error: " + r.Find("slow_subscriber_error")->string() : ""));
  }
  t.Row("load generator CPU", Fmt(*r.NumberAt("client_cpu_s"), 2) + " s", "shares the cores with the brokers");
  t.Row("errors", Fmt(*r.NumberAt("errors")), r.Find("last_error") ? r.Find("last_error")->string() : "");
  t.Print();

  Json out = Json::MakeObject();
  out["benchmark"] = "throughput";
  out["cluster"] = cluster.external() ? "external" : "3 local brokers, fsync on";
  out["result"] = r;
  WriteJson(common, out);
  if (*r.NumberAt("acked") == 0) {
    std::cerr << "ordo-bench throughput: no message was acknowledged; see last_error above\n";
    return 1;
  }
  return 0;
}

// Open loop: message i of the run is due at t0 + i / rate, whatever happened
// to earlier ones. The schedule is dealt round robin to `senders` threads,
// each with its own publisher, and each message's latency counts from its due
// time, so a stall shows up in the percentiles instead of slowing the
// schedule down. With the async client (the default) a sender hands each due
// message to its AsyncPublisher at once; with the sync client a thread blocks
// on one request at a time and sends every message that fell due meanwhile as
// the next batch, so its figures include that wait (head-of-line blocking in
// the load generator, not in the brokers).
Json RunOpenLoop(const CommonOptions& common, const LatencyOptions& o, BenchCluster& cluster,
                 double rate) {
  AckSink sink;
  const double warmup_s = std::min(0.5, o.duration_s * 0.2);
  const auto t0 = Clock::now() + std::chrono::milliseconds(50);
  sink.window_begin = t0 + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(warmup_s));
  sink.window_end = t0 + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(o.duration_s));
  const std::string payload = Payload(o.size);
  const ClientOptions copt = cluster.Options(std::chrono::milliseconds(common.request_timeout_ms));
  const int senders = std::max(1, o.senders);
  // How late a sender that slept until a due time woke up: the load
  // generator's own share of every latency above (timer and scheduler).
  std::mutex wake_mu;
  LatencyRecorder wake_late;
  std::vector<std::thread> threads;
  for (int j = 0; j < senders; ++j) {
    threads.emplace_back([&, j] {
      LatencyRecorder late;
      auto driver = o.client == "sync" ? MakeSyncBatchDriver(copt, o.batch_max, sink)
                                       : MakeAsyncDriver(copt, o.requests_inflight, sink);
      auto due = [&](uint64_t k) {
        const double at = static_cast<double>(static_cast<uint64_t>(j) + k * static_cast<uint64_t>(senders)) / rate;
        return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(at));
      };
      uint64_t k = 0;
      while (due(k) < sink.window_end) {
        const bool sleeps = Clock::now() < due(k);
        std::this_thread::sleep_until(due(k));
        const auto now = Clock::now();
        if (sleeps && due(k) >= sink.window_begin) {
          late.Add(std::chrono::duration<double, std::micro>(now - due(k)).count(), 1);
        }
        size_t n = 0;
        while (n < o.batch_max && due(k) <= now && due(k) < sink.window_end) {
          driver->Submit(payload, due(k));
          ++k, ++n;
        }
        driver->SendDue();
      }
      driver->Flush();
      std::lock_guard<std::mutex> l(wake_mu);
      wake_late.Merge(late);
    });
  }
  for (auto& t : threads) t.join();
  cluster.CheckAlive();
  const double window_s = Seconds(sink.window_end - sink.window_begin);
  Json r = Json::MakeObject();
  r["offered_per_s"] = rate;
  r["achieved_per_s"] = static_cast<double>(sink.acked) / window_s;
  r["errors"] = sink.errors;
  if (!sink.last_error.empty()) r["last_error"] = sink.last_error;
  r["latency"] = sink.latency.ToJson();
  r["sender_wake_late"] = wake_late.ToJson();
  return r;
}

int CmdLatency(const CommonOptions& common, const LatencyOptions& o) {
  const Json ceiling = LoadOrMeasureCeiling(common, o.size);
  BenchCluster cluster(common);
  cluster.WaitForLeader();
  Json out = Json::MakeObject();
  out["benchmark"] = "latency";
  out["cluster"] = cluster.external() ? "external" : "3 local brokers, fsync on";
  out["senders"] = o.senders;
  out["client"] = o.client;
  out["message_bytes"] = static_cast<uint64_t>(o.size);
  out["duration_s"] = o.duration_s;
  std::vector<std::pair<std::string, double>> points;
  if (!o.rates.empty()) {
    for (double r : o.rates) points.emplace_back("fixed", r);
  } else {
    ThroughputOptions probe;
    probe.size = o.size;
    probe.duration_s = o.probe_s;
    probe.warmup_s = 0.5;
    const Json p = RunThroughput(common, probe, cluster, ceiling);
    const double max = *p.NumberAt("msgs_per_s");
    out["max_msgs_per_s"] = max;
    if (max <= 0) throw std::runtime_error("the throughput probe acknowledged nothing; is the cluster healthy?");
    if (o.include_1000) points.emplace_back("1000/s", 1000);
    for (double f : o.fractions) points.emplace_back(Fmt(f * 100) + "% of max", f * max);
  }
  Json results = Json::MakeArray();
  const double floor_us = ceiling.NumberAt("latency_floor_us").value_or(0);
  Table t("latency: open loop, " + std::to_string(o.senders) + " " + o.client + " senders, " +
          std::to_string(o.size) + "-byte messages, " + Fmt(o.duration_s, 1) + " s per rate" +
          (out.Find("max_msgs_per_s") ? ", max " + Fmt(*out.NumberAt("max_msgs_per_s")) + " msgs/s" : ""));
  for (const auto& [label, rate] : points) {
    // Each rate starts on a quiet disk: the probe (and a rate near the
    // maximum) leaves GBs of dirty pages whose writeback would otherwise
    // land in the next rate's fsyncs (the 1,000/s point above all).
    ::sync();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    Json r = RunOpenLoop(common, o, cluster, rate);
    r["label"] = label;
    const double p50 = *r.NumberAt("latency.p50_us");
    r["floor_pct_of_p50"] = p50 > 0 ? Json(100.0 * floor_us / p50) : Json();
    t.Row(label + " (" + Fmt(rate) + "/s offered)",
          "p50 " + Us(p50) + "  p99 " + Us(*r.NumberAt("latency.p99_us")) + "  p99.9 " +
              Us(*r.NumberAt("latency.p999_us")) + "  max " + Us(*r.NumberAt("latency.max_us")),
          Fmt(*r.NumberAt("achieved_per_s")) + "/s achieved; floor " + Us(floor_us) + " = " +
              Pct(floor_us, p50) + " of p50; senders woke " +
              Us(r.NumberAt("sender_wake_late.p50_us").value_or(0)) + " late (p50)" +
              (*r.NumberAt("errors") > 0 ? "; errors " + Fmt(*r.NumberAt("errors")) : ""));
    results.Push(r);
  }
  t.Print();
  out["rates"] = results;
  WriteJson(common, out);
  return 0;
}

}  // namespace ordo::bench
