// Prometheus metrics of one broker, exposed on its metrics endpoint
// (/metrics, pull), with /health beside them (200 "ok"; 503 once Update()
// has not come for 5 s, or while the core reports failed storage). Every
// name starts with ordo_ (but the standard process_* metrics, read from
// /proc/self at each scrape), uses base units (seconds, bytes) and ends in
// _total for counters. Labels are of bounded cardinality
// only: node, peer (a configured member id, or "learner" for all learners
// together), role, source. Subscribers and producers never become labels;
// subscribers are summarised by count and max/sum of their lag.
//
// Two ways in:
//   - Update(BrokerGauges) once per tick: gauges are set, and counters kept
//     by the broker as plain integers are mirrored (they only grow);
//   - Observe...() and OnReady() from the event loop as things happen
//     (histograms). prometheus-cpp serves the registry from its own threads;
//     its metrics are atomics (histograms: one uncontended mutex), and every
//     metric object is created once and cached, so no call here looks up a
//     label set on the hot path.
//
// Thread rules: every method is called from the broker's event loop only.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "paxos/replica.h"

namespace ordo::monitoring {

// One peer link as counted by broker::PeerTransport.
struct PeerLink {
  uint32_t peer = 0;  // a member's id; 0: every learner together (label peer="learner")
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;  // of well-formed frames from that peer
  uint64_t frames_dropped = 0;  // sends dropped: the peer's queue was full or it was down
};

struct BrokerGauges {
  paxos::Status core;
  uint32_t tick_ms = 0;  // turns the core's ticks into seconds
  uint64_t next_offset = 0;
  uint64_t first_retained_offset = 0;
  uint64_t storage_corruptions = 0;  // damaged records found, each once
  bool storage_quarantined = false;  // this start moved damaged state aside
  uint64_t storage_rebuilds = 0;     // index and compacted view rebuilt from the log
  uint64_t storage_repairs = 0;      // damaged log records rewritten with a peer's copy
  uint64_t client_frames_rejected = 0;
  uint64_t peer_frames_rejected = 0;
  uint64_t peer_handshakes_refused = 0;  // CurveZMQ keys the ZAP handler refused
  uint64_t client_handshakes_refused = 0;
  uint64_t client_permission_denied = 0;  // requests refused for a missing permission
  uint64_t messages_published = 0;  // accepted into the leader's queue
  uint64_t publishes_acked = 0;
  uint64_t redirects = 0;
  uint64_t messages_delivered = 0;
  std::vector<PeerLink> links;
  uint64_t catchup_bytes_sent = 0;  // FetchReply (and later snapshot) bytes
  uint64_t catchup_bytes_received = 0;
  uint64_t catchup_fetches_dropped = 0;  // peers' fetches refused: the serving queue was full
  uint64_t subscribers = 0;
  uint64_t subscriber_lag_max = 0;  // messages behind this broker's head
  uint64_t subscriber_lag_sum = 0;
  int64_t subscribers_queued_bytes = 0;  // Deliver bytes queued in ZeroMQ, not yet sent
  uint64_t slow_consumers = 0;
  uint64_t client_connections = 0;
  // Client connections the broker closed: past their key's limit
  // (limits.client_connections_per_key_max), and silent since accepted.
  uint64_t client_connections_closed_over_limit = 0;
  uint64_t client_connections_closed_silent = 0;

  // --- Issue 5 (retention, snapshots, learners): the broker fills these. ---
  uint64_t first_retained_instance = 1;  // lowest instance still in the log
  bool non_voter_catching_up = false;    // a non-voter that has not caught up yet
};

class BrokerMetrics {
 public:
  // Starts the HTTP server on "HOST:PORT" (an error names the endpoint and
  // why, e.g. "Address already in use"). `data_dir` is the directory whose
  // filesystem's free space is reported (for the disk-full alert).
  static ::ordo::Status Start(const std::string& endpoint, uint32_t node_id,
                              const std::string& data_dir, std::unique_ptr<BrokerMetrics>* out);
  ~BrokerMetrics();

  // Once per tick (cheap: at most one statvfs a second).
  void Update(const BrokerGauges& g);

  // A publish request's messages were all settled and its reply sent:
  // `seconds` since the request arrived.
  void ObservePublishAck(double seconds);
  // One durable write: a journal record (with its fdatasync) or an LMDB
  // commit (with its fsync).
  void ObserveFsync(double seconds);
  // Each Ready the core hands out, before it is acted on: times phase 2 on
  // the leader (first Accept sent for an instance -> that instance applied,
  // i.e. chosen) and records the size of each newly proposed batch. The core
  // has no clock, so the timestamps are taken here.
  void OnReady(const paxos::Ready& ready);

  // --- Issue 5 hooks. ---
  // A snapshot was installed; `seconds` from its first chunk to installed.
  void ObserveSnapshotInstall(double seconds);

 private:
  BrokerMetrics() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ordo::monitoring
