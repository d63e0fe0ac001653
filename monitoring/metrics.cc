#include "monitoring/metrics.h"

#include <civetweb.h>
#include <dirent.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <iterator>
#include <mutex>
#include <sstream>
#include <string>

namespace ordo::monitoring {

namespace {

using Clock = std::chrono::steady_clock;

// Accept timestamps kept at most: the window is far smaller, so more means
// chosen instances went unnoticed (lost leadership mid-round); start over.
constexpr size_t kPhase2TrackedMax = 65536;
constexpr auto kDiskStatInterval = std::chrono::seconds(1);

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// The event loop calls Update() every tick; /health answers 503 once it has
// not for this long (a loop stuck in a syscall or a lock).
constexpr auto kLoopStalledAfter = std::chrono::seconds(5);

// What civetweb reports while the server starts (e.g. "cannot bind to
// 127.0.0.1:7301: 98 (Address already in use)"), besides the error text
// mg_start2 returns. Civetweb calls log_message on the thread that starts
// it; messages from its worker threads later go to its own log as before.
thread_local std::string* civet_start_log = nullptr;

int CaptureCivetStartLog(const mg_connection*, const char* message) {
  if (civet_start_log == nullptr) return 0;  // 0: civetweb logs it itself
  if (!civet_start_log->empty()) *civet_start_log += "; ";
  *civet_start_log += message;
  return 1;
}

void Respond(mg_connection* conn, int status, const char* reason, const char* content_type,
             const std::string& body) {
  mg_printf(conn,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            status, reason, content_type, body.size());
  mg_write(conn, body.data(), body.size());
}

// --- Process metrics ---
// prometheus-cpp has no process collector: these are the names and
// meanings of the Prometheus clients' standard process metrics (the Go and
// Python clients'), read from /proc/self at each scrape.

double ReadStartTime() {
  // Field 22 of /proc/self/stat: the start, in clock ticks after boot
  // (fields counted after the command name, which may hold spaces).
  std::ifstream stat("/proc/self/stat");
  const std::string line((std::istreambuf_iterator<char>(stat)), {});
  const size_t paren = line.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(line.substr(paren + 1));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
    if (i < 22) continue;
    std::ifstream proc_stat("/proc/stat");
    std::string key;
    double boot = -1;
    while (proc_stat >> key) {
      if (key == "btime") {
        proc_stat >> boot;
        break;
      }
    }
    const long ticks = sysconf(_SC_CLK_TCK);
    if (boot < 0 || ticks <= 0) return -1;
    return boot + std::stod(field) / static_cast<double>(ticks);
  }
  return -1;
}

std::vector<prometheus::MetricFamily> ProcessFamilies(const prometheus::Labels& labels,
                                                      double start_time) {
  std::vector<prometheus::MetricFamily> out;
  const auto add = [&](const char* name, const char* help, prometheus::MetricType type,
                       double value) {
    prometheus::ClientMetric m;
    for (const auto& [k, v] : labels) m.label.push_back({k, v});
    (type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value) = value;
    out.push_back(prometheus::MetricFamily{name, help, type, {std::move(m)}});
  };
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) == 0) {
    const auto seconds = [](const timeval& t) {
      return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    add("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
        prometheus::MetricType::Counter, seconds(usage.ru_utime) + seconds(usage.ru_stime));
  }
  std::ifstream statm("/proc/self/statm");
  double pages = 0, resident = 0;
  if (statm >> pages >> resident) {
    const auto page = static_cast<double>(sysconf(_SC_PAGESIZE));
    add("process_virtual_memory_bytes", "Virtual memory size in bytes.",
        prometheus::MetricType::Gauge, pages * page);
    add("process_resident_memory_bytes", "Resident memory size in bytes.",
        prometheus::MetricType::Gauge, resident * page);
  }
  if (DIR* fds = opendir("/proc/self/fd")) {
    double open = 0;
    while (const dirent* e = readdir(fds)) open += e->d_name[0] != '.';
    closedir(fds);
    add("process_open_fds", "Number of open file descriptors.", prometheus::MetricType::Gauge,
        open - 1);  // (not the one reading the directory)
  }
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    add("process_max_fds", "Maximum number of open file descriptors.",
        prometheus::MetricType::Gauge,
        limit.rlim_cur == RLIM_INFINITY ? -1 : static_cast<double>(limit.rlim_cur));
  }
  if (start_time >= 0) {
    add("process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
        prometheus::MetricType::Gauge, start_time);
  }
  return out;
}

}  // namespace

struct BrokerMetrics::Impl {
  struct Peer {
    prometheus::Gauge* lag = nullptr;
    prometheus::Gauge* last_heard = nullptr;
    prometheus::Counter* bytes_sent = nullptr;
    prometheus::Counter* bytes_received = nullptr;
    prometheus::Counter* frames_dropped = nullptr;
    PeerLink last;
  };

  // Stopped first: its threads read everything below.
  ~Impl() {
    if (server != nullptr) mg_stop(server);
  }

  mg_context* server = nullptr;  // /metrics and /health (civetweb)
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Labels node;
  std::string data_dir;
  double start_time = -1;  // process_start_time_seconds (-1: unknown)
  // For /health, read on civetweb's threads: when the loop last called
  // Update() (steady clock, ns), and whether storage failed.
  std::atomic<int64_t> updated_ns{0};
  std::atomic<bool> storage_failed_now{false};

  static int ServeMetrics(mg_connection* conn, void* self);
  static int ServeHealth(mg_connection* conn, void* self);

  prometheus::Gauge* is_leader = nullptr;
  prometheus::Gauge* role[3] = {};  // by paxos::Role
  prometheus::Gauge* leader_id = nullptr;
  prometheus::Gauge* ballot_round = nullptr;
  prometheus::Gauge* promised_round = nullptr;
  prometheus::Gauge* chosen = nullptr;
  prometheus::Gauge* last_instance = nullptr;
  prometheus::Gauge* next_offset = nullptr;
  prometheus::Gauge* first_retained_instance = nullptr;
  prometheus::Gauge* first_retained_offset = nullptr;
  prometheus::Gauge* pending_messages = nullptr;
  prometheus::Gauge* inflight_instances = nullptr;
  prometheus::Gauge* storage_failed = nullptr;
  prometheus::Gauge* non_voter_catching_up = nullptr;
  prometheus::Gauge* subscribers = nullptr;
  prometheus::Gauge* subscriber_lag_max = nullptr;
  prometheus::Gauge* subscriber_lag_sum = nullptr;
  prometheus::Gauge* subscribers_queued_bytes = nullptr;
  prometheus::Counter* slow_consumers = nullptr;
  prometheus::Gauge* client_connections = nullptr;
  prometheus::Counter* client_connections_closed_over_limit = nullptr;
  prometheus::Counter* client_connections_closed_silent = nullptr;
  prometheus::Gauge* disk_avail = nullptr;
  prometheus::Gauge* disk_size = nullptr;

  prometheus::Counter* elections_started = nullptr;
  prometheus::Counter* elections_won = nullptr;
  prometheus::Counter* instances_proposed = nullptr;
  prometheus::Counter* instances_chosen = nullptr;
  prometheus::Counter* messages_published = nullptr;
  prometheus::Counter* messages_committed = nullptr;
  prometheus::Counter* messages_duplicate = nullptr;
  prometheus::Counter* messages_acked = nullptr;
  prometheus::Counter* messages_delivered = nullptr;
  prometheus::Counter* checksum_failures = nullptr;
  prometheus::Counter* chain_hashed = nullptr;
  prometheus::Counter* chain_hints_taken = nullptr;
  prometheus::Counter* chain_hint_mismatches = nullptr;
  prometheus::Gauge* storage_quarantined = nullptr;
  prometheus::Counter* storage_rebuilds = nullptr;
  prometheus::Counter* storage_repairs = nullptr;
  prometheus::Counter* client_frames_rejected = nullptr;
  prometheus::Counter* peer_frames_rejected = nullptr;
  prometheus::Counter* peer_handshakes_refused = nullptr;
  prometheus::Counter* client_handshakes_refused = nullptr;
  prometheus::Counter* client_permission_denied = nullptr;
  prometheus::Counter* redirects = nullptr;
  prometheus::Counter* fetches_sent = nullptr;
  prometheus::Counter* catchup_sent = nullptr;
  prometheus::Counter* catchup_received = nullptr;
  prometheus::Counter* catchup_dropped = nullptr;
  prometheus::Counter* snapshot_installs = nullptr;

  prometheus::Histogram* publish_ack = nullptr;
  prometheus::Histogram* phase2 = nullptr;
  prometheus::Histogram* fsync = nullptr;
  prometheus::Histogram* batch_size = nullptr;
  prometheus::Histogram* snapshot_install = nullptr;

  prometheus::Family<prometheus::Gauge>* peer_lag = nullptr;
  prometheus::Family<prometheus::Gauge>* peer_heard = nullptr;
  prometheus::Family<prometheus::Counter>* peer_sent = nullptr;
  prometheus::Family<prometheus::Counter>* peer_received = nullptr;
  prometheus::Family<prometheus::Counter>* peer_dropped = nullptr;
  std::map<uint32_t, Peer> peers;  // configured members only: bounded

  BrokerGauges last;
  std::map<uint64_t, Clock::time_point> accept_sent;  // instance -> first Accept
  uint64_t applied_max = 0;
  Clock::time_point disk_checked{};

  Peer& PeerFor(uint32_t id);
  void UpdateDisk();
};

namespace {

prometheus::Gauge* G(prometheus::Registry& r, const char* name, const char* help,
                     const prometheus::Labels& labels) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(r).Add(labels);
}

prometheus::Counter* C(prometheus::Registry& r, const char* name, const char* help,
                       const prometheus::Labels& labels) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(r).Add(labels);
}

prometheus::Histogram* H(prometheus::Registry& r, const char* name, const char* help,
                         const prometheus::Labels& labels,
                         prometheus::Histogram::BucketBoundaries b) {
  return &prometheus::BuildHistogram().Name(name).Help(help).Register(r).Add(labels, std::move(b));
}

// Counters only go up: add what the mirrored value grew by since last time.
void Mirror(prometheus::Counter* c, uint64_t now, uint64_t before) {
  if (now > before) c->Increment(static_cast<double>(now - before));
}

// Latencies from 100 us (an in-memory round on loopback) to 30 s (the
// publish timeout).
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
          0.1,    0.25,    0.5,    1,     2.5,    5,     10,   30};
}

}  // namespace

int BrokerMetrics::Impl::ServeMetrics(mg_connection* conn, void* self) {
  const Impl& i = *static_cast<const Impl*>(self);
  std::vector<prometheus::MetricFamily> families = i.registry->Collect();
  for (auto& f : ProcessFamilies(i.node, i.start_time)) families.push_back(std::move(f));
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, families);
  Respond(conn, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text.str());
  return 200;
}

int BrokerMetrics::Impl::ServeHealth(mg_connection* conn, void* self) {
  const Impl& i = *static_cast<const Impl*>(self);
  const auto since =
      std::chrono::nanoseconds(NowNs() - i.updated_ns.load(std::memory_order_relaxed));
  const char* text = "text/plain; charset=utf-8";
  if (i.storage_failed_now.load(std::memory_order_relaxed)) {
    Respond(conn, 503, "Service Unavailable", text,
            "storage failed: this broker no longer votes (see its log)\n");
    return 503;
  }
  if (since > kLoopStalledAfter) {
    Respond(
        conn, 503, "Service Unavailable", text,
        "stalled: the event loop has not run for " +
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(since).count()) +
            " ms\n");
    return 503;
  }
  Respond(conn, 200, "OK", text, "ok\n");
  return 200;
}

BrokerMetrics::Impl::Peer& BrokerMetrics::Impl::PeerFor(uint32_t id) {
  auto it = peers.find(id);
  if (it != peers.end()) return it->second;
  prometheus::Labels l = node;
  // Id 0 counts every learner together (broker::PeerTransport::kLearnersLinkId),
  // so learners coming and going never grow the label set.
  l.emplace("peer", id == 0 ? std::string("learner") : std::to_string(id));
  Peer p;
  p.lag = &peer_lag->Add(l);
  p.last_heard = &peer_heard->Add(l);
  p.bytes_sent = &peer_sent->Add(l);
  p.bytes_received = &peer_received->Add(l);
  p.frames_dropped = &peer_dropped->Add(l);
  p.last.peer = id;
  return peers.emplace(id, p).first->second;
}

void BrokerMetrics::Impl::UpdateDisk() {
  const auto now = Clock::now();
  if (now - disk_checked < kDiskStatInterval) return;
  disk_checked = now;
  struct statvfs s {};
  if (statvfs(data_dir.c_str(), &s) != 0) return;  // keep the last values
  disk_avail->Set(static_cast<double>(s.f_bavail) * static_cast<double>(s.f_frsize));
  disk_size->Set(static_cast<double>(s.f_blocks) * static_cast<double>(s.f_frsize));
}

::ordo::Status BrokerMetrics::Start(const std::string& endpoint, uint32_t node_id,
                                    const std::string& data_dir,
                                    std::unique_ptr<BrokerMetrics>* out) {
  std::unique_ptr<BrokerMetrics> m(new BrokerMetrics());
  m->impl_ = std::make_unique<Impl>();
  Impl& i = *m->impl_;
  i.data_dir = data_dir;
  prometheus::Registry& r = *i.registry;
  i.node = {{"node", std::to_string(node_id)}};
  const prometheus::Labels& l = i.node;

  // Role and leadership.
  i.is_leader = G(r, "ordo_leader", "1 when this broker is the leader, else 0", l);
  auto& role = prometheus::BuildGauge()
                   .Name("ordo_role")
                   .Help("1 for this broker's current role (follower, candidate, leader), else 0")
                   .Register(r);
  for (paxos::Role x : {paxos::Role::kFollower, paxos::Role::kCandidate, paxos::Role::kLeader}) {
    prometheus::Labels rl = l;
    rl.emplace("role", paxos::ToString(x));
    i.role[static_cast<int>(x)] = &role.Add(rl);
  }
  i.leader_id =
      G(r, "ordo_leader_node", "Node id of the leader this broker follows (0: none known)", l);
  i.ballot_round = G(r, "ordo_ballot_round", "Round of the leader's ballot as known here", l);
  i.promised_round = G(r, "ordo_promised_round", "Round of the highest ballot promised here", l);
  i.non_voter_catching_up = G(r, "ordo_non_voter_catching_up",
                              "1 while this broker is a non-voter catching up before it votes", l);
  i.storage_failed =
      G(r, "ordo_storage_failed", "1 when a storage error stopped this broker from voting", l);

  // The log and the stream.
  i.chosen = G(r, "ordo_chosen_instance", "Chosen frontier: every instance up to it is chosen", l);
  i.last_instance = G(r, "ordo_last_instance", "Highest log instance stored here", l);
  i.next_offset = G(r, "ordo_next_offset",
                    "One past the last offset applied here (the last applied offset + 1)", l);
  i.first_retained_instance =
      G(r, "ordo_first_retained_instance", "Lowest log instance still retained here", l);
  i.first_retained_offset =
      G(r, "ordo_first_retained_offset", "Lowest stream offset still retained here", l);
  i.pending_messages =
      G(r, "ordo_pending_messages", "Messages queued at the leader, not yet in an instance", l);
  i.inflight_instances =
      G(r, "ordo_inflight_instances", "Instances the leader proposed that are not yet chosen", l);

  // Peers: the families exist from the start; one child per configured peer.
  i.peer_lag =
      &prometheus::BuildGauge()
           .Name("ordo_peer_lag_instances")
           .Help(
               "Instances the peer's chosen frontier is behind this broker's, as last reported "
               "(current on the leader, which hears from every peer)")
           .Register(r);
  i.peer_heard =
      &prometheus::BuildGauge()
           .Name("ordo_peer_last_heard_seconds")
           .Help("Seconds since the peer last reported its chosen frontier (current on the leader)")
           .Register(r);
  i.peer_sent = &prometheus::BuildCounter()
                     .Name("ordo_peer_sent_bytes_total")
                     .Help("Bytes sent to the peer")
                     .Register(r);
  i.peer_received = &prometheus::BuildCounter()
                         .Name("ordo_peer_received_bytes_total")
                         .Help("Bytes of well-formed frames received from the peer")
                         .Register(r);
  i.peer_dropped = &prometheus::BuildCounter()
                        .Name("ordo_peer_dropped_frames_total")
                        .Help("Frames to the peer dropped because it was down or its queue full")
                        .Register(r);

  // Consensus counters.
  i.elections_started = C(r, "ordo_elections_started_total", "Elections this broker started", l);
  i.elections_won = C(r, "ordo_elections_won_total", "Elections this broker won", l);
  i.instances_proposed =
      C(r, "ordo_instances_proposed_total", "Log instances this broker proposed as leader", l);
  i.instances_chosen = C(r, "ordo_instances_chosen_total", "Log instances learned chosen", l);
  i.fetches_sent = C(r, "ordo_fetches_sent_total", "Fetch requests for missing instances", l);

  // Messages.
  i.messages_published = C(r, "ordo_messages_published_total",
                           "Messages the leader took from publish requests into its queue", l);
  i.messages_committed = C(r, "ordo_messages_committed_total",
                           "Messages appended to the stream (applied with a new offset)", l);
  i.messages_duplicate =
      C(r, "ordo_messages_deduplicated_total", "Retried messages answered with their offset", l);
  i.messages_acked =
      C(r, "ordo_messages_acknowledged_total", "Published messages acknowledged by this broker", l);
  i.messages_delivered = C(r, "ordo_messages_delivered_total", "Messages pushed to subscribers", l);
  i.redirects = C(r, "ordo_redirects_total", "Publish requests sent to the leader instead", l);

  // Errors.
  i.checksum_failures = C(r, "ordo_checksum_failures_total",
                          "Stored records that failed their checks (each counted once)", l);
  i.chain_hashed = C(r, "ordo_chain_hashed_instances_total",
                     "Instances whose step of the stream's chain this broker hashed itself", l);
  i.chain_hints_taken = C(r, "ordo_chain_hints_taken_total",
                          "Instances whose chain this broker took from the leader's hint", l);
  i.chain_hint_mismatches =
      C(r, "ordo_chain_hint_mismatches_total",
        "Chain hints this broker checked and found to differ from its own hash", l);
  i.storage_quarantined =
      G(r, "ordo_storage_quarantined",
        "1 when this broker found its stored state damaged at start, moved it aside and "
        "rejoined from its peers", l);
  i.storage_rebuilds = C(r, "ordo_storage_rebuilds_total",
                         "Rebuilds of the offset index and compacted view from the log after "
                         "damage", l);
  i.storage_repairs = C(r, "ordo_storage_repairs_total",
                        "Damaged log records rewritten with a peer's copy", l);
  auto& rejected = prometheus::BuildCounter()
                       .Name("ordo_frames_rejected_total")
                       .Help("Malformed or oversized frames rejected, by source (client, peer)")
                       .Register(r);
  prometheus::Labels lc = l, lp = l;
  lc.emplace("source", "client");
  lp.emplace("source", "peer");
  i.client_frames_rejected = &rejected.Add(lc);
  i.peer_frames_rejected = &rejected.Add(lp);
  auto& refused = prometheus::BuildCounter()
                      .Name("ordo_handshakes_refused_total")
                      .Help(
                          "CurveZMQ handshakes refused: keys that are no member's, learner's "
                          "or client's, or a client key past its connection limit, by source "
                          "(client, peer)")
                      .Register(r);
  i.peer_handshakes_refused = &refused.Add(lp);
  i.client_handshakes_refused = &refused.Add(lc);
  i.client_permission_denied =
      C(r, "ordo_client_permission_denied_total",
        "Client requests refused because the client's key lacks the permission", l);

  // Clients and subscribers.
  i.client_connections =
      G(r, "ordo_client_connections", "TCP connections open on the client endpoint", l);
  auto& closed = prometheus::BuildCounter()
                     .Name("ordo_client_connections_closed_total")
                     .Help(
                         "Client connections the broker closed, by reason: too_many_for_key "
                         "(past limits.client_connections_per_key_max), silent (sent nothing "
                         "for 30 s after connecting)")
                     .Register(r);
  prometheus::Labels over = l, silent = l;
  over.emplace("reason", "too_many_for_key");
  silent.emplace("reason", "silent");
  i.client_connections_closed_over_limit = &closed.Add(over);
  i.client_connections_closed_silent = &closed.Add(silent);
  i.subscribers = G(r, "ordo_subscribers", "Subscriptions served by this broker", l);
  i.subscriber_lag_max = G(r, "ordo_subscriber_lag_messages_max",
                           "Largest number of messages any subscriber is behind the head", l);
  i.subscribers_queued_bytes =
      G(r, "ordo_subscribers_queued_bytes",
        "Deliver bytes handed to ZeroMQ for subscribers and not yet sent (bounded by "
        "limits.subscribers_queued_bytes_max)",
        l);
  i.slow_consumers = C(r, "ordo_slow_consumers_total",
                       "Subscriptions dropped because their connection left "
                       "limits.subscriber_queued_bytes_max unread for slow_consumer_timeout_ms",
                       l);
  i.subscriber_lag_sum = G(r, "ordo_subscribers_lag_messages",
                           "Messages all subscribers together are behind the head", l);

  // Catch-up and snapshots.
  auto& catchup = prometheus::BuildCounter()
                      .Name("ordo_catchup_bytes_total")
                      .Help("Bytes of catch-up traffic (fetch replies, snapshots), by direction")
                      .Register(r);
  prometheus::Labels ls = l, lr = l;
  ls.emplace("direction", "sent");
  lr.emplace("direction", "received");
  i.catchup_sent = &catchup.Add(ls);
  i.catchup_received = &catchup.Add(lr);
  i.catchup_dropped = C(r, "ordo_catchup_fetches_dropped_total",
                        "Peers' fetches not served because the catch-up thread's queue was full "
                        "(the peer asks again after its fetch timeout)",
                        l);
  i.snapshot_installs = C(r, "ordo_snapshot_installs_total", "Snapshots installed here", l);
  i.snapshot_install = H(r, "ordo_snapshot_install_seconds",
                         "Time from a snapshot's first chunk to its installation", l,
                         {0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600});

  // Latencies and sizes.
  i.publish_ack = H(r, "ordo_publish_ack_seconds",
                    "Leader: from a publish request's arrival to its reply", l, LatencyBuckets());
  i.phase2 = H(r, "ordo_phase2_round_trip_seconds",
               "Leader: from the first Accept sent for an instance to that instance chosen", l,
               LatencyBuckets());
  i.fsync =
      H(r, "ordo_fsync_seconds",
        "Duration of one durable write: a journal record with its fdatasync (or, for the chosen mark, without), or an LMDB commit with its fsync", l, LatencyBuckets());
  i.batch_size = H(r, "ordo_batch_messages", "Client messages per proposed batch value", l,
                   prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128, 256, 512,
                                                           1024, 2048, 4096, 8192});

  // Disk of the data directory.
  i.disk_avail = G(r, "ordo_data_filesystem_avail_bytes",
                   "Bytes available to the broker on the data directory's filesystem", l);
  i.disk_size =
      G(r, "ordo_data_filesystem_size_bytes", "Size of the data directory's filesystem", l);
  i.UpdateDisk();

  // The build.
  auto& build = prometheus::BuildGauge()
                    .Name("ordo_build_info")
                    .Help("1, labelled with the version of this broker's build")
                    .Register(r);
  prometheus::Labels lb = l;
  lb.emplace("version", ORDO_VERSION);
  build.Add(lb).Set(1);
  i.start_time = ReadStartTime();
  i.updated_ns = NowNs();

  // The HTTP server, civetweb's C API (prometheus-cpp's Exposer serves
  // only collectables, and throws away why it could not start).
  static std::once_flag civetweb_initialized;
  std::call_once(civetweb_initialized, [] { mg_init_library(0); });
  mg_callbacks callbacks{};
  callbacks.log_message = CaptureCivetStartLog;
  const char* options[] = {"listening_ports", endpoint.c_str(), "num_threads", "2", nullptr};
  mg_init_data init{};
  init.callbacks = &callbacks;
  init.configuration_options = options;
  char error_text[256] = "";
  mg_error_data error{};
  error.text = error_text;
  error.text_buffer_size = sizeof(error_text);
  std::string start_log;
  civet_start_log = &start_log;
  i.server = mg_start2(&init, &error);
  civet_start_log = nullptr;
  if (i.server == nullptr) {
    std::string why = start_log;
    if (error_text[0] != '\0' && why.find(error_text) == std::string::npos) {
      why += (why.empty() ? "" : "; ") + std::string(error_text);
    }
    return ::ordo::Status::Error("metrics endpoint " + endpoint + ": " +
                                 (why.empty() ? "the HTTP server did not start" : why));
  }
  mg_set_request_handler(i.server, "/metrics", &Impl::ServeMetrics, &i);
  mg_set_request_handler(i.server, "/health", &Impl::ServeHealth, &i);
  *out = std::move(m);
  return ::ordo::Status::Ok();
}

BrokerMetrics::~BrokerMetrics() = default;

void BrokerMetrics::Update(const BrokerGauges& g) {
  Impl& i = *impl_;
  const paxos::Status& s = g.core;
  i.updated_ns.store(NowNs(), std::memory_order_relaxed);
  i.storage_failed_now.store(s.storage_failed, std::memory_order_relaxed);
  i.is_leader->Set(s.role == paxos::Role::kLeader ? 1 : 0);
  for (int r = 0; r < 3; ++r) i.role[r]->Set(static_cast<int>(s.role) == r ? 1 : 0);
  i.leader_id->Set(static_cast<double>(s.leader.value()));
  i.ballot_round->Set(static_cast<double>(s.leader_ballot.round));
  i.promised_round->Set(static_cast<double>(s.promised.round));
  i.non_voter_catching_up->Set(g.non_voter_catching_up ? 1 : 0);
  i.storage_failed->Set(s.storage_failed ? 1 : 0);
  i.storage_quarantined->Set(g.storage_quarantined ? 1 : 0);
  i.chosen->Set(static_cast<double>(s.chosen.value()));
  i.last_instance->Set(static_cast<double>(s.last_instance.value()));
  i.next_offset->Set(static_cast<double>(g.next_offset));
  i.first_retained_instance->Set(static_cast<double>(g.first_retained_instance));
  i.first_retained_offset->Set(static_cast<double>(g.first_retained_offset));
  i.pending_messages->Set(static_cast<double>(s.pending_messages));
  i.inflight_instances->Set(static_cast<double>(s.inflight_instances));
  i.client_connections->Set(static_cast<double>(g.client_connections));
  i.subscribers->Set(static_cast<double>(g.subscribers));
  i.subscriber_lag_max->Set(static_cast<double>(g.subscriber_lag_max));
  i.subscriber_lag_sum->Set(static_cast<double>(g.subscriber_lag_sum));
  i.subscribers_queued_bytes->Set(static_cast<double>(g.subscribers_queued_bytes));
  Mirror(i.slow_consumers, g.slow_consumers, i.last.slow_consumers);
  Mirror(i.client_connections_closed_over_limit, g.client_connections_closed_over_limit,
         i.last.client_connections_closed_over_limit);
  Mirror(i.client_connections_closed_silent, g.client_connections_closed_silent,
         i.last.client_connections_closed_silent);

  for (const paxos::PeerStatus& p : s.peers) {
    Impl::Peer& m = i.PeerFor(p.id.value());
    const uint64_t lag = s.chosen > p.chosen ? s.chosen.value() - p.chosen.value() : 0;
    m.lag->Set(static_cast<double>(lag));
    m.last_heard->Set(static_cast<double>(p.ticks_since_heard * g.tick_ms) / 1000.0);
  }
  for (const PeerLink& link : g.links) {
    Impl::Peer& m = i.PeerFor(link.peer);
    Mirror(m.bytes_sent, link.bytes_sent, m.last.bytes_sent);
    Mirror(m.bytes_received, link.bytes_received, m.last.bytes_received);
    Mirror(m.frames_dropped, link.frames_dropped, m.last.frames_dropped);
    m.last = link;
  }

  Mirror(i.elections_started, s.elections_started, i.last.core.elections_started);
  Mirror(i.elections_won, s.elections_won, i.last.core.elections_won);
  Mirror(i.instances_proposed, s.instances_proposed, i.last.core.instances_proposed);
  Mirror(i.instances_chosen, s.instances_chosen, i.last.core.instances_chosen);
  Mirror(i.fetches_sent, s.fetches_sent, i.last.core.fetches_sent);
  Mirror(i.messages_committed, s.messages_appended, i.last.core.messages_appended);
  Mirror(i.messages_duplicate, s.messages_duplicate, i.last.core.messages_duplicate);
  Mirror(i.messages_published, g.messages_published, i.last.messages_published);
  Mirror(i.messages_acked, g.publishes_acked, i.last.publishes_acked);
  Mirror(i.messages_delivered, g.messages_delivered, i.last.messages_delivered);
  Mirror(i.redirects, g.redirects, i.last.redirects);
  Mirror(i.checksum_failures, g.storage_corruptions, i.last.storage_corruptions);
  Mirror(i.chain_hashed, s.chain_hashed, i.last.core.chain_hashed);
  Mirror(i.chain_hints_taken, s.chain_hints_taken, i.last.core.chain_hints_taken);
  Mirror(i.chain_hint_mismatches, s.chain_hint_mismatches, i.last.core.chain_hint_mismatches);
  Mirror(i.storage_rebuilds, g.storage_rebuilds, i.last.storage_rebuilds);
  Mirror(i.storage_repairs, g.storage_repairs, i.last.storage_repairs);
  Mirror(i.client_frames_rejected, g.client_frames_rejected, i.last.client_frames_rejected);
  Mirror(i.peer_frames_rejected, g.peer_frames_rejected, i.last.peer_frames_rejected);
  Mirror(i.peer_handshakes_refused, g.peer_handshakes_refused, i.last.peer_handshakes_refused);
  Mirror(i.client_handshakes_refused, g.client_handshakes_refused,
         i.last.client_handshakes_refused);
  Mirror(i.client_permission_denied, g.client_permission_denied, i.last.client_permission_denied);
  Mirror(i.catchup_sent, g.catchup_bytes_sent, i.last.catchup_bytes_sent);
  Mirror(i.catchup_received, g.catchup_bytes_received, i.last.catchup_bytes_received);
  Mirror(i.catchup_dropped, g.catchup_fetches_dropped, i.last.catchup_fetches_dropped);
  i.last = g;
  i.last.links.clear();  // kept per peer above
  i.UpdateDisk();
}

void BrokerMetrics::ObservePublishAck(double seconds) { impl_->publish_ack->Observe(seconds); }

void BrokerMetrics::ObserveFsync(double seconds) { impl_->fsync->Observe(seconds); }

void BrokerMetrics::ObserveSnapshotInstall(double seconds) {
  impl_->snapshot_installs->Increment();
  impl_->snapshot_install->Observe(seconds);
}

void BrokerMetrics::OnReady(const paxos::Ready& ready) {
  Impl& i = *impl_;
  const auto now = Clock::now();
  for (const paxos::Message& m : ready.messages) {
    if (m.type != paxos::MessageType::kAccept) continue;
    for (const paxos::Entry& e : m.entries) {
      // Accepts of applied instances only help a lagging peer catch up.
      if (e.instance.value() <= i.applied_max) continue;
      // Retransmissions and the same Accept to the next peer keep the first time.
      const bool first = i.accept_sent.emplace(e.instance.value(), now).second;
      if (first && e.value && e.value->kind == paxos::ValueKind::kBatch) {
        i.batch_size->Observe(static_cast<double>(e.value->messages.size()));
      }
    }
  }
  for (const paxos::AppliedInstance& a : ready.applied) {
    i.applied_max = std::max(i.applied_max, a.instance.value());
    auto it = i.accept_sent.find(a.instance.value());
    if (it == i.accept_sent.end()) continue;
    i.phase2->Observe(Seconds(now - it->second));
    i.accept_sent.erase(it);
  }
  // Applied in order: anything at or below was chosen without us noticing.
  i.accept_sent.erase(i.accept_sent.begin(), i.accept_sent.upper_bound(i.applied_max));
  if (ready.lost_leadership || i.accept_sent.size() > kPhase2TrackedMax) i.accept_sent.clear();
}

}  // namespace ordo::monitoring
