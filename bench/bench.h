// ordo-bench internals shared by the subcommands: a cluster of real brokers,
// /proc sampling of their CPU and memory, latency recording, the publishing
// load driver, and table output. See bench/README.md for what each figure
// means.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/json.h"
#include "ordo/client.h"
#include "tests/testing/local_cluster.h"

namespace ordo::testing {
class NetnsLab;
}

namespace ordo::bench {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d);

// Options every subcommand shares.
struct CommonOptions {
  std::string brokers;      // "" = start our own 3-node cluster
  std::string broker_bin;   // path of ordo-broker
  std::string json_path;    // "" = no JSON file
  std::string ceiling_path; // "" = measure a quick ceiling in this run
  int request_timeout_ms = 1000;
  int nodes = 3;
  bool keep_dir = false;    // keep the cluster's directory (logs) for a look
  bool insecure = false;    // plaintext ports (security.insecure), for the cost of CURVE
  std::string credentials;  // with --brokers: the client's key file ("" = plaintext)
};

// A snapshot of one broker process from /proc.
struct ProcSample {
  double cpu_s = 0;          // utime + stime
  uint64_t rss_peak_bytes = 0;  // VmHWM
  uint64_t rss_anon_bytes = 0;  // RssAnon: memory beyond LMDB's file-backed map
  bool ok = false;
};
ProcSample SampleProc(pid_t pid);

// 3 (or `nodes`) real ordo-broker processes on 127.0.0.1 with free ports,
// fsync on (LMDB's default durable commits), in a temporary directory removed
// by the destructor; or, with --brokers, an existing cluster we only talk to.
class BenchCluster {
 public:
  // extra_toml is appended to every broker's config (e.g. a [retention] table).
  // `peer_host_prefix`: see LocalClusterOptions (for partitions).
  // `lab`: every broker in its namespace of `lab` (which must outlive this).
  BenchCluster(const CommonOptions& options, const std::string& extra_toml = "",
               const std::string& peer_host_prefix = "", const testing::NetnsLab* lab = nullptr);
  ~BenchCluster();
  BenchCluster(const BenchCluster&) = delete;
  BenchCluster& operator=(const BenchCluster&) = delete;

  bool external() const { return external_; }
  int nodes() const { return static_cast<int>(client_.size()); }
  const std::vector<std::string>& brokers() const { return client_; }
  // What clients of this cluster connect with (empty: plaintext).
  const ClientCredentials& credentials() const { return credentials_; }
  ClientOptions Options(std::chrono::milliseconds request_timeout,
                        std::chrono::milliseconds call_timeout = std::chrono::seconds(60)) const;

  void Start(int i);
  void Kill(int i, int sig = 9);
  bool Running(int i) const { return local_ && local_->Running(i); }
  pid_t Pid(int i) const { return local_ ? local_->Pid(i) : -1; }
  std::string LogTail(int i) const { return local_ ? local_->LogTail(i) : ""; }
  // Throws with the broker's log when one of ours exited on its own.
  void CheckAlive();
  // Throws when no leader is found within `timeout`.
  int WaitForLeader(std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Per running broker of ours: a ProcSample (empty for external brokers).
  std::vector<ProcSample> Sample() const;

 private:
  bool external_ = false;
  std::vector<std::string> client_;
  ClientCredentials credentials_;
  std::unique_ptr<testing::LocalCluster> local_;  // ours (tests/testing/local_cluster.h)
};

// Ack latencies, per message, in microseconds. Messages of one batch share
// their latency, so entries carry a count.
class LatencyRecorder {
 public:
  void Add(double latency_us, uint64_t count);
  void Merge(const LatencyRecorder& other);
  uint64_t count() const { return count_; }
  // q in [0, 1]; 0 when empty.
  double Percentile(double q) const;
  double Max() const;
  Json ToJson() const;  // {"p50_us":..,"p90_us":..,"p99_us":..,"p999_us":..,"max_us":..}

 private:
  mutable std::vector<std::pair<double, uint64_t>> entries_;
  mutable bool sorted_ = true;
  uint64_t count_ = 0;
};

// What a publisher reports back: messages acknowledged, with the time.
struct AckSink {
  std::mutex mu;
  LatencyRecorder latency;
  uint64_t acked = 0;
  uint64_t errors = 0;
  std::string last_error;
  // Measurement window: only acks inside it count (warm-up and drain excluded).
  Clock::time_point window_begin = Clock::time_point::max();
  Clock::time_point window_end = Clock::time_point::max();
  // Every ack's time, when wanted (failover: the gaps).
  bool keep_ack_times = false;
  std::vector<Clock::time_point> ack_times;
};

// The load driver: the one place that calls the publishing API.
class PublishDriver {
 public:
  virtual ~PublishDriver() = default;
  // Queues one message whose latency counts from `scheduled` (the intended
  // send time: open-loop callers pass the schedule, closed-loop callers now).
  // May send (and block) once the window is full.
  virtual void Submit(std::string_view payload, Clock::time_point scheduled) = 0;
  // Open loop, after each round of due messages: the synchronous driver
  // sends them as one batch and waits for its ack; the asynchronous one has
  // sent them already and does not wait.
  virtual void SendDue() { Flush(); }
  // Sends what is queued and waits for every outstanding ack.
  virtual void Flush() = 0;
};
// Synchronous PublishBatch calls: one request in flight per driver, and
// window = messages per request.
std::unique_ptr<PublishDriver> MakeSyncBatchDriver(ClientOptions options, size_t window,
                                                   AckSink& sink);
// An AsyncPublisher with no linger: each message is sent as soon as it is
// submitted, batches form only while requests are in flight (at most
// `requests_inflight` to the leader), as a producer at a high rate would
// publish. Latency counts until the message's own callback.
std::unique_ptr<PublishDriver> MakeAsyncDriver(ClientOptions options, size_t requests_inflight,
                                               AckSink& sink);

// Publishes `count` messages of `size` bytes as fast as possible with
// `publishers` threads (used to fill a cluster before catchup and replay).
// Returns the head offset after the last ack; throws on error.
uint64_t Fill(const ClientOptions& options, uint64_t count, size_t size, int publishers,
              size_t window);

std::string Payload(size_t size);

// The machine's ceilings (see ceiling.cc), read from --ceiling FILE or
// measured quickly in this run.
Json LoadOrMeasureCeiling(const CommonOptions& options, size_t message_bytes);
// Each figure is the best of `repeats` runs of `seconds_per_test`.
Json MeasureCeiling(double seconds_per_test, size_t message_bytes, const std::string& dir,
                    int repeats);

// Table output.
class Table {
 public:
  explicit Table(std::string title) : title_(std::move(title)) {}
  void Row(const std::string& name, const std::string& value, const std::string& note = "");
  void Print() const;

 private:
  std::string title_;
  std::vector<std::vector<std::string>> rows_;
};
std::string Fmt(double v, int decimals = 0);           // 12,345 style
std::string Pct(std::optional<double> part, std::optional<double> whole);  // "(12.3% of X)"
std::string Us(double us);                               // "1.23 ms" / "456 us"

void WriteJson(const CommonOptions& options, const Json& j);
Json MachineInfo();

// Subcommands.
struct ThroughputOptions {
  // 16 synchronous publishers = 16 windows in flight at the leader (its
  // pipeline holds 64 instances); 4 leave it mostly idle.
  int publishers = 16;
  size_t size = 128;
  double duration_s = 10;
  double warmup_s = 1;
  size_t window = 1024;
  bool slow_subscriber = false;  // one subscriber reading at a tenth of the ack rate
};
// Runs the closed-loop load and returns the result object (also used by
// `latency` to find the maximum).
Json RunThroughput(const CommonOptions& common, const ThroughputOptions& options,
                   BenchCluster& cluster, const Json& ceiling);
int CmdThroughput(const CommonOptions& common, const ThroughputOptions& options);

struct LatencyOptions {
  std::vector<double> rates;       // messages/s; empty = fractions of the maximum
  std::vector<double> fractions{0.1, 0.5, 0.8};
  bool include_1000 = true;        // the fixed 1,000/s point
  double duration_s = 5;
  double probe_s = 3;
  int senders = 8;
  size_t size = 128;
  size_t batch_max = 4096;
  // "async": AsyncPublisher (several requests in flight per sender);
  // "sync": blocking PublishBatch (one request in flight per sender).
  std::string client = "sync";
  size_t requests_inflight = 8;
};
int CmdLatency(const CommonOptions& common, const LatencyOptions& options);

struct FailoverOptions {
  int rounds = 5;
  int publishers = 2;
  size_t window = 64;
  size_t size = 128;
  double steady_s = 1.5;
  double timeout_s = 10;
};
int CmdFailover(const CommonOptions& common, const FailoverOptions& options);

struct HealOptions {
  int rounds = 5;
  double partition_s = 10;   // how long each follower is cut off
  double timeout_s = 120;    // give up a round after this long without healing
  int link_timeout_ms = -1;  // timing.peer_link_timeout_ms for the brokers (-1: theirs)
  bool netns = false;        // brokers in network namespaces, the leader isolated
};
// A follower cut off from its peers (nftables, tests/testing/partition.h)
// while messages trickle in, then the partition healed, K times: time from
// the heal to that follower having what the leader had chosen at the heal.
//
// With `netns`: each broker in a network namespace of its own on a bridge
// (tests/testing/netns.h), and the leader is the one cut off, K times:
// failover (the cut to the acknowledgement of the first message sent after
// it, by a client that knows the other brokers), the heal to the leader hearing every peer within 200 ms,
// and the heal to the old leader having what the new one had chosen.
int CmdHeal(const CommonOptions& common, const HealOptions& options);

struct CatchupOptions {
  uint64_t messages = 200000;
  size_t size = 128;
  std::string mode = "range";  // range | snapshot
  double timeout_s = 120;
};
int CmdCatchup(const CommonOptions& common, const CatchupOptions& options);

struct ReplayOptions {
  uint64_t messages = 200000;
  size_t size = 128;
  uint32_t credit = 10000;
  std::string api = "subscriber";  // subscriber | replay
};
int CmdReplay(const CommonOptions& common, const ReplayOptions& options);

struct CeilingOptions {
  double seconds_per_test = 0.5;
  int repeats = 3;
  size_t size = 128;
};
int CmdCeiling(const CommonOptions& common, const CeilingOptions& options);

}  // namespace ordo::bench
