// `failover`, `catchup` and `replay`: figures of a cluster that changes
// (a leader killed, a broker behind) or is read back.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <thread>

#include "bench/bench.h"
#include "tests/testing/netns.h"
#include "tests/testing/partition.h"

namespace ordo::bench {
namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void NeedOwnCluster(const BenchCluster& cluster, const char* what) {
  if (cluster.external()) {
    throw std::runtime_error(std::string(what) +
                             " stops and restarts brokers, so it needs a cluster of its own: "
                             "drop --brokers");
  }
}

// Acks arriving this soon after the old leader was reaped were already on
// their way (replies sitting in the client's socket); no election finishes
// this fast (the election timeout is at least 150 ms by default).
constexpr auto kStaleAckGrace = std::chrono::milliseconds(20);

}  // namespace

int CmdFailover(const CommonOptions& common, const FailoverOptions& o) {
  BenchCluster cluster(common);
  NeedOwnCluster(cluster, "failover");
  cluster.WaitForLeader();
  const std::string payload = Payload(o.size);
  const ClientOptions copt = cluster.Options(std::chrono::milliseconds(common.request_timeout_ms));
  std::vector<std::unique_ptr<AckSink>> sinks;
  for (int p = 0; p < o.publishers; ++p) {
    sinks.push_back(std::make_unique<AckSink>());
    sinks.back()->window_begin = Clock::now();
    sinks.back()->keep_ack_times = true;
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int p = 0; p < o.publishers; ++p) {
    threads.emplace_back([&, p] {
      auto driver = MakeSyncBatchDriver(copt, o.window, *sinks[static_cast<size_t>(p)]);
      while (!stop.load()) {
        const auto now = Clock::now();
        for (size_t i = 0; i < o.window; ++i) driver->Submit(payload, now);
      }
    });
  }
  auto acks_after = [&](Clock::time_point t) {
    std::optional<Clock::time_point> first;
    for (auto& s : sinks) {
      std::lock_guard<std::mutex> lock(s->mu);
      for (auto a : s->ack_times) {
        if (a > t && (!first || a < *first)) first = a;
      }
    }
    return first;
  };
  const auto steady = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.steady_s));
  Json rounds = Json::MakeArray();
  std::vector<double> failover_ms, gap_ms;
  std::string failure;
  for (int k = 1; k <= o.rounds && failure.empty(); ++k) {
    const int leader = cluster.WaitForLeader();
    std::this_thread::sleep_for(steady);
    const auto t_kill = Clock::now();
    cluster.Kill(leader);
    const auto t_reaped = Clock::now();
    std::optional<Clock::time_point> first;
    const auto deadline = t_reaped + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(o.timeout_s));
    while (!(first = acks_after(t_reaped + kStaleAckGrace)) && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    Json r = Json::MakeObject();
    r["round"] = k;
    r["killed_node"] = leader;
    if (!first) {
      failure = "round " + std::to_string(k) + ": no acknowledgement within " +
                Fmt(o.timeout_s, 1) + " s of killing leader " + std::to_string(leader);
      r["failover_ms"] = Json();
    } else {
      const double ms = Ms(*first - t_kill);
      failover_ms.push_back(ms);
      r["failover_ms"] = ms;
      std::this_thread::sleep_for(steady);
      // The longest wait between two acks of one publisher around the kill.
      double gap = 0;
      for (auto& s : sinks) {
        std::lock_guard<std::mutex> lock(s->mu);
        std::vector<Clock::time_point> a;
        for (auto t : s->ack_times) {
          if (t > t_kill - steady) a.push_back(t);
        }
        std::sort(a.begin(), a.end());
        for (size_t i = 1; i < a.size(); ++i) gap = std::max(gap, Ms(a[i] - a[i - 1]));
        s->ack_times.clear();
      }
      gap_ms.push_back(gap);
      r["ack_gap_ms_max"] = gap;
    }
    rounds.Push(r);
    cluster.Start(leader);
  }
  stop.store(true);
  // Publishers finish their current call (it may wait out call_timeout if
  // the cluster is gone).
  for (auto& t : threads) t.join();
  cluster.CheckAlive();
  uint64_t errors = 0;
  for (auto& s : sinks) errors += s->errors;

  Json out = Json::MakeObject();
  out["benchmark"] = "failover";
  out["publishers"] = o.publishers;
  out["window"] = static_cast<uint64_t>(o.window);
  out["request_timeout_ms"] = common.request_timeout_ms;
  out["rounds"] = rounds;
  out["failover_ms_p50"] = Median(failover_ms);
  out["failover_ms_max"] = failover_ms.empty() ? 0 : *std::max_element(failover_ms.begin(), failover_ms.end());
  out["ack_gap_ms_p50"] = Median(gap_ms);
  out["ack_gap_ms_max"] = gap_ms.empty() ? 0 : *std::max_element(gap_ms.begin(), gap_ms.end());
  out["publish_errors"] = errors;
  if (!failure.empty()) out["failure"] = failure;

  Table t("failover: kill -9 of the leader under load, " + std::to_string(rounds.array().size()) +
          " round(s), client request timeout " + std::to_string(common.request_timeout_ms) + " ms");
  for (const Json& r : rounds.array()) {
    const Json* f = r.Find("failover_ms");
    t.Row("round " + Fmt(*r.NumberAt("round")) + " (killed node " + Fmt(*r.NumberAt("killed_node")) + ")",
          f && f->is_number() ? Fmt(f->number(), 1) + " ms to first ack" : "no ack",
          r.Find("ack_gap_ms_max") ? "longest ack gap " + Fmt(*r.NumberAt("ack_gap_ms_max"), 1) + " ms" : "");
  }
  t.Row("first ack by new leader", "p50 " + Fmt(*out.NumberAt("failover_ms_p50"), 1) + " ms",
        "max " + Fmt(*out.NumberAt("failover_ms_max"), 1) + " ms (target: p50 <= 500, max <= 1500)");
  t.Row("longest ack gap", "p50 " + Fmt(*out.NumberAt("ack_gap_ms_p50"), 1) + " ms",
        "max " + Fmt(*out.NumberAt("ack_gap_ms_max"), 1) + " ms");
  t.Print();
  WriteJson(common, out);
  if (!failure.empty()) {
    std::cerr << "ordo-bench failover: " << failure << "\n";
    return 1;
  }
  return 0;
}

int CmdCatchup(const CommonOptions& common, const CatchupOptions& o) {
  if (o.mode != "range" && o.mode != "snapshot") {
    throw std::runtime_error("--mode " + o.mode + ": expected range or snapshot");
  }
  Json out = Json::MakeObject();
  out["benchmark"] = "catchup";
  out["mode"] = o.mode;
  out["messages"] = o.messages;
  out["message_bytes"] = static_cast<uint64_t>(o.size);
  // Snapshot install needs the others to have truncated their logs: a tight
  // retention. A publish request of thousands of messages is one instance,
  // so M messages make only tens of instances: a small window allows the
  // small retention (at least twice the window) that truncates them.
  const std::string extra =
      o.mode == "snapshot"
          ? "[batching]\nwindow_instances_max = 8\n[retention]\nsnapshot_interval_instances = 8\n"
            "instances = 16\nage_seconds = 0\n"
          : "";
  auto cluster = std::make_unique<BenchCluster>(common, extra);
  NeedOwnCluster(*cluster, "catchup");
  out["available"] = true;
  const Json ceiling = LoadOrMeasureCeiling(common, o.size);
  const int leader = cluster->WaitForLeader();
  const int lagging = leader % cluster->nodes() + 1;
  const ClientOptions copt = cluster->Options(std::chrono::milliseconds(common.request_timeout_ms));
  cluster->Kill(lagging);
  size_t window = std::clamp<size_t>((512 * 1024) / std::max<size_t>(1, o.size), 1, 4096);
  // A request is about one instance: enough of them for the others to
  // truncate behind a snapshot (retention 16 instances, snapshots every 8).
  if (o.mode == "snapshot") window = std::min<size_t>(window, std::max<uint64_t>(1, o.messages / 100));
  const auto f0 = Clock::now();
  const uint64_t head = Fill(copt, o.messages, o.size, 2, window);
  out["fill_msgs_per_s"] = static_cast<double>(o.messages) / Seconds(Clock::now() - f0);
  const std::string endpoint = cluster->brokers()[static_cast<size_t>(lagging - 1)];
  if (o.mode == "snapshot") {
    // Wait until every running broker has truncated behind a snapshot, so
    // no peer can serve the range.
    const auto until = Clock::now() + std::chrono::seconds(60);
    while (Clock::now() < until) {
      bool all = true;
      for (int n = 1; n <= cluster->nodes(); ++n) {
        if (n == lagging) continue;
        auto s = GetStatus(cluster->brokers()[static_cast<size_t>(n - 1)],
                           std::chrono::milliseconds(500), cluster->credentials());
        all &= s.ok() && s.value().first_retained > 1;
      }
      if (all) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  const auto t0 = Clock::now();
  cluster->Start(lagging);
  std::optional<Clock::time_point> t_up;
  uint64_t offset_up = 0;
  const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout_s));
  bool done = false;
  while (Clock::now() < deadline) {
    cluster->CheckAlive();
    auto s = GetStatus(endpoint, std::chrono::milliseconds(200), cluster->credentials());
    if (s.ok()) {
      if (!t_up) t_up = Clock::now(), offset_up = s.value().next_offset;
      if (s.value().next_offset >= head) {
        done = true;
        break;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const auto t1 = Clock::now();
  if (!done) {
    throw std::runtime_error("broker " + std::to_string(lagging) + " did not reach offset " +
                             std::to_string(head) + " within " + Fmt(o.timeout_s) + " s; its log:\n" +
                             cluster->LogTail(lagging));
  }
  const double total_s = Seconds(t1 - t0);
  if (o.mode == "snapshot") {
    auto s = GetStatus(endpoint, std::chrono::milliseconds(1000), cluster->credentials());
    out["snapshots_installed"] = s.ok() ? s.value().snapshots_installed : uint64_t{0};
    if (!s.ok() || s.value().snapshots_installed == 0) {
      throw std::runtime_error("broker " + std::to_string(lagging) +
                               " caught up without installing a snapshot; its log:\n" +
                               cluster->LogTail(lagging));
    }
  }
  const double applying_s = Seconds(t1 - *t_up);
  const double caught = static_cast<double>(head - offset_up);
  out["head"] = head;
  out["startup_s"] = Seconds(*t_up - t0);
  out["total_s"] = total_s;
  out["msgs_per_s"] = static_cast<double>(o.messages) / total_s;
  out["mb_per_s"] = static_cast<double>(o.messages) * static_cast<double>(o.size) / total_s / 1e6;
  // From its first status answer: without process start and LMDB open.
  out["msgs_per_s_after_start"] = applying_s > 0 ? Json(caught / applying_s) : Json();
  const auto ceil = ceiling.NumberAt("lmdb.batch_256k.msgs_per_s");
  out["ceiling_msgs_per_s"] = Json::Maybe(ceil);
  out["pct_of_ceiling"] = ceil ? Json(100.0 * static_cast<double>(o.messages) / total_s / *ceil) : Json();

  Table t("catchup (" + o.mode + "): broker " + std::to_string(lagging) + " behind by " +
          Fmt(static_cast<double>(o.messages)) + " x " + std::to_string(o.size) + "-byte messages");
  t.Row("caught up", Fmt(*out.NumberAt("msgs_per_s")) + " msgs/s",
        Fmt(*out.NumberAt("mb_per_s"), 2) + " MB/s; " +
            Pct(*out.NumberAt("msgs_per_s"), ceil) + " of one broker's LMDB ceiling (256 KiB commits)");
  t.Row("time", Fmt(total_s, 2) + " s", "incl. " + Fmt(*out.NumberAt("startup_s"), 2) + " s process start");
  if (auto a = out.NumberAt("msgs_per_s_after_start")) t.Row("after start", Fmt(*a) + " msgs/s", "");
  t.Row("filling (for reference)", Fmt(*out.NumberAt("fill_msgs_per_s")) + " msgs/s", "2 publishers");
  t.Print();
  WriteJson(common, out);
  return 0;
}

int CmdReplay(const CommonOptions& common, const ReplayOptions& o) {
  if (o.api != "subscriber" && o.api != "replay") {
    throw std::runtime_error("--api " + o.api + ": expected subscriber or replay");
  }
  const Json ceiling = LoadOrMeasureCeiling(common, o.size);
  BenchCluster cluster(common);
  cluster.WaitForLeader();
  const ClientOptions copt = cluster.Options(std::chrono::milliseconds(common.request_timeout_ms));
  auto st = GetStatus(cluster.brokers()[0], std::chrono::milliseconds(1000), cluster.credentials());
  const uint64_t start = st.ok() ? st.value().next_offset : 0;
  const size_t window = std::clamp<size_t>((512 * 1024) / std::max<size_t>(1, o.size), 1, 4096);
  const uint64_t head = Fill(copt, o.messages, o.size, 2, window);
  const uint64_t from = cluster.external() ? head - o.messages : start;
  uint64_t bytes = 0, read = 0;
  const auto t0 = Clock::now();
  if (o.api == "subscriber") {
    Subscriber sub(copt, StartAt::Offset(from), o.credit);
    uint64_t expect = from;
    while (read < o.messages) {
      auto r = sub.Next(std::chrono::milliseconds(5000));
      if (!r.ok()) throw std::runtime_error("subscriber: " + r.error().message);
      if (!r.value()) throw std::runtime_error("subscriber: nothing for 5 s at offset " + std::to_string(expect));
      const Record& rec = *r.value();
      if (rec.offset != expect) {
        throw std::runtime_error("subscriber: offset " + std::to_string(rec.offset) + " where " +
                                 std::to_string(expect) + " was expected");
      }
      ++expect, ++read;
      bytes += rec.payload.size() + rec.key.size();
    }
  } else {
    auto r = Replay(copt, from, from + o.messages);
    if (!r.ok()) throw std::runtime_error("replay: " + r.error().message);
    read = r.value().size();
    for (const Record& rec : r.value()) bytes += rec.payload.size() + rec.key.size();
  }
  const double s = Seconds(Clock::now() - t0);
  cluster.CheckAlive();
  Json out = Json::MakeObject();
  out["benchmark"] = "replay";
  out["api"] = o.api;
  out["messages"] = read;
  out["message_bytes"] = static_cast<uint64_t>(o.size);
  out["credit"] = o.credit;
  out["seconds"] = s;
  out["msgs_per_s"] = static_cast<double>(read) / s;
  out["mb_per_s"] = static_cast<double>(bytes) / s / 1e6;
  const auto ceil = ceiling.NumberAt("zmq.batch_256k.msgs_per_s");
  out["ceiling_msgs_per_s"] = Json::Maybe(ceil);
  out["pct_of_ceiling"] = ceil ? Json(100.0 * static_cast<double>(read) / s / *ceil) : Json();
  Table t("replay: one " + o.api + " reading " + Fmt(static_cast<double>(read)) + " x " +
          std::to_string(o.size) + "-byte messages from offset " + std::to_string(from));
  t.Row("read", Fmt(*out.NumberAt("msgs_per_s")) + " msgs/s",
        Fmt(*out.NumberAt("mb_per_s"), 2) + " MB/s; " + Pct(*out.NumberAt("msgs_per_s"), ceil) +
            " of ZeroMQ loopback (256 KiB frames)");
  t.Row("time", Fmt(s, 2) + " s", "");
  t.Print();
  WriteJson(common, out);
  if (read != o.messages) {
    std::cerr << "ordo-bench replay: read " << read << " of " << o.messages << " messages\n";
    return 1;
  }
  return 0;
}

namespace {

// The leader at the highest ballot any broker reports (an isolated old
// leader may still call itself one), with its status; 0 when none answers.
int HighestLeader(const BenchCluster& cluster, BrokerStatus* out) {
  int leader = 0;
  std::pair<uint64_t, uint32_t> highest{0, 0}, leading{0, 0};
  for (int i = 1; i <= cluster.nodes(); ++i) {
    auto s = GetStatus(cluster.brokers()[static_cast<size_t>(i - 1)],
                       std::chrono::milliseconds(200), cluster.credentials());
    if (!s.ok()) continue;
    const std::pair<uint64_t, uint32_t> ballot{s.value().ballot_round, s.value().ballot_node};
    highest = std::max(highest, ballot);
    if (s.value().role == "leader" && (leader == 0 || ballot > leading)) {
      leader = i, leading = ballot;
      if (out) *out = s.value();
    }
  }
  return leader != 0 && leading == highest ? leader : 0;
}

// A leader "hears" a peer when its status says heard within this.
constexpr uint64_t kHeardWithinMs = 200;

double Max(const std::vector<double>& v) {
  return v.empty() ? 0 : *std::max_element(v.begin(), v.end());
}

// `heal --netns`: see bench.h.
int CmdHealNetns(const CommonOptions& common, const HealOptions& o) {
  if (!common.brokers.empty()) {
    throw std::runtime_error(
        "heal --netns starts brokers in namespaces of its own: drop --brokers");
  }
  std::string error;
  std::unique_ptr<testing::NetnsLab> lab = testing::NetnsLab::Create(common.nodes, &error);
  if (!lab) throw std::runtime_error("heal --netns: " + error);
  const std::string toml =
      o.link_timeout_ms >= 0
          ? "[timing]\npeer_link_timeout_ms = " + std::to_string(o.link_timeout_ms) + "\n"
          : std::string();
  auto cluster = std::make_unique<BenchCluster>(common, toml, "", lab.get());
  cluster->WaitForLeader();
  auto status = [&](int i) {
    return GetStatus(cluster->brokers()[static_cast<size_t>(i - 1)], std::chrono::milliseconds(200),
                     cluster->credentials());
  };
  const auto timeout =
      std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.timeout_s));
  Json rounds = Json::MakeArray();
  std::vector<double> failover_ms, quorum_ms, caught_up_ms;
  uint64_t errors = 0;
  std::string failure;
  for (int k = 1; k <= o.rounds && failure.empty(); ++k) {
    int leader = 0;
    for (const auto deadline = Clock::now() + timeout;
         (leader = HighestLeader(*cluster, nullptr)) == 0 && Clock::now() < deadline;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (leader == 0) {
      failure = "round " + std::to_string(k) + ": no leader";
      break;
    }
    std::vector<int> others;
    ClientOptions copt = cluster->Options(std::chrono::milliseconds(common.request_timeout_ms));
    copt.brokers.clear();
    for (int i = 1; i <= cluster->nodes(); ++i) {
      if (i == leader) continue;
      others.push_back(i);
      copt.brokers.push_back(cluster->brokers()[static_cast<size_t>(i - 1)]);
    }
    // A trickle of publishes through the brokers that keep a majority.
    std::atomic<bool> stop{false};
    std::mutex mu;
    std::vector<std::pair<Clock::time_point, Clock::time_point>> acks;  // sent, acknowledged
    std::thread trickle([&] {
      Publisher p(copt);
      while (!stop.load()) {
        const auto sent = Clock::now();
        if (p.Publish("heal").ok()) {
          std::lock_guard<std::mutex> lock(mu);
          acks.emplace_back(sent, Clock::now());
        } else {
          std::lock_guard<std::mutex> lock(mu);
          ++errors;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
    // When the first message sent after `t` was acknowledged.
    auto first_ack_after = [&](Clock::time_point t) -> std::optional<Clock::time_point> {
      std::lock_guard<std::mutex> lock(mu);
      for (const auto& [sent, acked] : acks) {
        if (sent > t) return acked;
      }
      return std::nullopt;
    };
    const auto warm = Clock::now();
    while (!first_ack_after(warm + std::chrono::milliseconds(200)) &&
           Clock::now() < warm + timeout) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    Json r = Json::MakeObject();
    r["round"] = k;
    r["cut_node"] = leader;
    // Failover: from the moment the first rule may take effect to the
    // acknowledgement of the first message sent once all are in place.
    const auto t_cut_begin = Clock::now();
    if (!lab->Cut({leader}, others, &error)) {
      failure = error;
    }
    const auto t_cut = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(o.partition_s));
    std::optional<Clock::time_point> first;
    while (failure.empty() && !(first = first_ack_after(t_cut)) && Clock::now() < t_cut + timeout) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    BrokerStatus now_leading;
    const int successor = failure.empty() ? HighestLeader(*cluster, &now_leading) : 0;
    const uint64_t target = successor != 0 ? now_leading.chosen : 0;
    if (!first && failure.empty()) {
      failure = "round " + std::to_string(k) + ": no acknowledgement within " + Fmt(o.timeout_s) +
                " s of cutting leader " + std::to_string(leader) + " off";
    }
    if (first) {
      failover_ms.push_back(Ms(*first - t_cut_begin));
      r["failover_ms"] = failover_ms.back();
    }
    r["target_instance"] = target;
    if (!lab->Heal(&error) && failure.empty()) failure = error;
    const auto t_heal = Clock::now();
    std::optional<double> quorum, caught_up;
    while (failure.empty() && (!quorum || !caught_up) && Clock::now() < t_heal + timeout) {
      if (!quorum) {
        BrokerStatus s;
        if (HighestLeader(*cluster, &s) != 0 &&
            s.peers.size() + 1 == static_cast<size_t>(cluster->nodes()) &&
            std::all_of(s.peers.begin(), s.peers.end(),
                        [](const PeerInfo& p) { return p.last_heard_ms <= kHeardWithinMs; })) {
          quorum = Ms(Clock::now() - t_heal);
        }
      }
      if (!caught_up) {
        auto s = status(leader);
        if (s.ok() && s.value().chosen >= target) caught_up = Ms(Clock::now() - t_heal);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    stop = true;
    trickle.join();
    if (quorum) {
      quorum_ms.push_back(*quorum);
      r["full_quorum_ms"] = *quorum;
    }
    if (caught_up) {
      caught_up_ms.push_back(*caught_up);
      r["heal_ms"] = *caught_up;
    }
    if (failure.empty() && (!quorum || !caught_up)) {
      failure =
          "round " + std::to_string(k) + ": " +
          (!quorum ? "the leader did not hear every peer" : "the old leader did not catch up") +
          " within " + Fmt(o.timeout_s) + " s of the heal";
    }
    rounds.Push(r);
    cluster->CheckAlive();
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  cluster->CheckAlive();
  cluster.reset();  // the brokers stop before their namespaces go

  Json out = Json::MakeObject();
  out["benchmark"] = "heal";
  out["netns"] = true;
  out["partition_s"] = o.partition_s;
  out["peer_link_timeout_ms"] = o.link_timeout_ms >= 0 ? Json(o.link_timeout_ms) : Json();
  out["heard_within_ms"] = kHeardWithinMs;
  out["rounds"] = rounds;
  out["failover_ms_p50"] = Median(failover_ms);
  out["failover_ms_max"] = Max(failover_ms);
  out["full_quorum_ms_p50"] = Median(quorum_ms);
  out["full_quorum_ms_max"] = Max(quorum_ms);
  out["heal_ms_p50"] = Median(caught_up_ms);
  out["heal_ms_max"] = Max(caught_up_ms);
  out["publish_errors"] = errors;
  if (!failure.empty()) out["failure"] = failure;
  Table t("heal --netns: the leader cut off (brokers in network namespaces) for " +
          Fmt(o.partition_s, 1) + " s, " + std::to_string(rounds.array().size()) + " round(s)" +
          (o.link_timeout_ms >= 0 ? ", peer_link_timeout_ms " + std::to_string(o.link_timeout_ms)
                                  : std::string()));
  auto ms = [](const Json& r, const char* key) {
    const Json* v = r.Find(key);
    return v && v->is_number() ? Fmt(v->number(), 1) + " ms" : std::string("-");
  };
  for (const Json& r : rounds.array()) {
    t.Row("round " + Fmt(*r.NumberAt("round")) + " (node " + Fmt(*r.NumberAt("cut_node")) + ")",
          "failover " + ms(r, "failover_ms"),
          "full quorum " + ms(r, "full_quorum_ms") + ", caught up " + ms(r, "heal_ms"));
  }
  t.Row("failover", "p50 " + Fmt(*out.NumberAt("failover_ms_p50"), 1) + " ms",
        "max " + Fmt(*out.NumberAt("failover_ms_max"), 1) + " ms");
  t.Row("heal to full quorum", "p50 " + Fmt(*out.NumberAt("full_quorum_ms_p50"), 1) + " ms",
        "max " + Fmt(*out.NumberAt("full_quorum_ms_max"), 1) +
            " ms (every peer heard within 200 ms; target: within 1 s)");
  t.Row("heal to caught up", "p50 " + Fmt(*out.NumberAt("heal_ms_p50"), 1) + " ms",
        "max " + Fmt(*out.NumberAt("heal_ms_max"), 1) + " ms");
  t.Print();
  WriteJson(common, out);
  if (!failure.empty()) {
    std::cerr << "ordo-bench heal: " << failure << "\n";
    return 1;
  }
  return 0;
}

}  // namespace

int CmdHeal(const CommonOptions& common, const HealOptions& o) {
  if (o.netns) return CmdHealNetns(common, o);
  // Peer addresses of their own (127.77.X.i) so that one member can be cut
  // off by address; X from the pid, so that two runs do not share them.
  const std::string prefix = "127.77." + std::to_string(20 + getpid() % 200) + ".";
  const std::string toml =
      o.link_timeout_ms >= 0
          ? "[timing]\npeer_link_timeout_ms = " + std::to_string(o.link_timeout_ms) + "\n"
          : std::string();
  BenchCluster cluster(common, toml, prefix);
  NeedOwnCluster(cluster, "heal");
  cluster.WaitForLeader();
  const ClientOptions copt = cluster.Options(std::chrono::milliseconds(common.request_timeout_ms));
  // A trickle of publishes, so that the cut-off follower falls behind.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> errors{0};
  std::thread trickle([&] {
    Publisher p(copt);
    while (!stop.load()) {
      if (!p.Publish("heal").ok()) ++errors;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  auto status = [&](int i) {
    return GetStatus(cluster.brokers()[static_cast<size_t>(i - 1)], std::chrono::milliseconds(200),
                     cluster.credentials());
  };
  Json rounds = Json::MakeArray();
  std::vector<double> heal_ms;
  std::string failure;
  for (int k = 1; k <= o.rounds && failure.empty(); ++k) {
    const int leader = cluster.WaitForLeader();
    const int cut = leader % cluster.nodes() + 1;
    std::string error;
    std::unique_ptr<testing::Partition> partition =
        testing::Partition::Cut(prefix + std::to_string(cut), &error);
    if (!partition) {
      failure = error;
      break;
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(o.partition_s));
    // What the leader had chosen at the heal (the cut-off one was a follower).
    auto leader_status = status(leader);
    const uint64_t target = leader_status.ok() ? leader_status.value().chosen : 0;
    const auto t_heal = Clock::now();
    partition->Heal();
    std::optional<double> healed;
    for (const auto deadline = t_heal + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(o.timeout_s));
         !healed && Clock::now() < deadline;) {
      auto s = status(cut);
      if (s.ok() && s.value().chosen >= target) {
        healed = Ms(Clock::now() - t_heal);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    Json r = Json::MakeObject();
    r["round"] = k;
    r["cut_node"] = cut;
    r["target_instance"] = target;
    if (healed) {
      r["heal_ms"] = *healed;
      heal_ms.push_back(*healed);
    } else {
      failure = "node " + std::to_string(cut) + " did not reach instance " +
                std::to_string(target) + " within " + Fmt(o.timeout_s) + " s of the heal";
    }
    rounds.Push(r);
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  stop = true;
  trickle.join();
  cluster.CheckAlive();

  Json out = Json::MakeObject();
  out["benchmark"] = "heal";
  out["partition_s"] = o.partition_s;
  out["peer_link_timeout_ms"] = o.link_timeout_ms >= 0 ? Json(o.link_timeout_ms) : Json();
  out["rounds"] = rounds;
  out["heal_ms_p50"] = Median(heal_ms);
  out["heal_ms_max"] = heal_ms.empty() ? 0 : *std::max_element(heal_ms.begin(), heal_ms.end());
  out["publish_errors"] = errors.load();
  if (!failure.empty()) out["failure"] = failure;
  Table t("heal: a follower cut off from its peers for " + Fmt(o.partition_s, 1) + " s, " +
          std::to_string(rounds.array().size()) + " round(s)" +
          (o.link_timeout_ms >= 0 ? ", peer_link_timeout_ms " + std::to_string(o.link_timeout_ms)
                                  : std::string()));
  for (const Json& r : rounds.array()) {
    const Json* h = r.Find("heal_ms");
    t.Row("round " + Fmt(*r.NumberAt("round")) + " (node " + Fmt(*r.NumberAt("cut_node")) + ")",
          h && h->is_number() ? Fmt(h->number(), 1) + " ms" : "not healed",
          "to have instance " + Fmt(*r.NumberAt("target_instance")));
  }
  t.Row("heal to caught up", "p50 " + Fmt(*out.NumberAt("heal_ms_p50"), 1) + " ms",
        "max " + Fmt(*out.NumberAt("heal_ms_max"), 1) + " ms (target: within 1 s)");
  t.Print();
  WriteJson(common, out);
  if (!failure.empty()) {
    std::cerr << "ordo-bench heal: " << failure << "\n";
    return 1;
  }
  return 0;
}

}  // namespace ordo::bench
