// The broker's client endpoint (docs/protocol.md): publish, subscribe, fetch,
// status over a ZeroMQ ROUTER. Publishes are acknowledged only once their
// instance is chosen and applied; subscriptions are served from this broker's
// LMDB with credit-based flow control, on followers as well as the leader.
//
// Thread rules: single-threaded (the broker's event loop).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "base/keys.h"
#include "broker/access.h"
#include "broker/client_connections.h"
#include "broker/codec.h"
#include "broker/config.h"
#include "broker/lmdb_store.h"
#include "broker/status.h"
#include "monitoring/metrics.h"
#include "paxos/replica.h"

namespace ordo::broker {

struct ClientCounters {
  uint64_t frames_rejected = 0;
  uint64_t messages_published = 0;  // taken into the leader's queue
  uint64_t publishes_acked = 0;
  uint64_t redirects = 0;
  uint64_t messages_delivered = 0;
  uint64_t permission_denied = 0;  // requests refused for a missing permission
  uint64_t slow_consumers = 0;     // subscriptions dropped as slow consumers
};

class ClientService {
 public:
  using Clock = std::chrono::steady_clock;

  // The ZAP domain of the client endpoint (zap_handler.h).
  static constexpr const char* kZapDomain = "ordo-client";

  // With `keys`, the endpoint is a CurveZMQ server (the ZAP handler decides
  // which client keys connect) and every request is checked against the
  // permissions `access` grants the key that sent it; both outlive this.
  // Without (security.insecure), everyone may do everything.
  ClientService(zmq::context_t& context, const BrokerConfig& config, paxos::Replica& replica,
                LmdbStore& store, const CurveKeyPair* keys = nullptr,
                const AccessList* access = nullptr);

  Status Open();
  zmq::socket_t& socket() { return socket_; }

  // Reads and handles every frame waiting on the socket (at most `max`).
  void Poll(size_t max);
  // Answers the publishes an applied batch settles.
  void OnApplied(std::span<const paxos::AppliedInstance> applied);
  // This node is no longer leader: its queued publishes will not be
  // answered here. Tell the clients to go to the new leader.
  void OnLostLeadership();
  // Pushes what subscribers have credit for; drops requests waiting too long.
  void Service(Clock::time_point now);
  // The access list was reloaded: ends (with PermissionDenied) the
  // subscriptions of keys that may no longer subscribe.
  void OnAccessChanged();

  const ClientCounters& counters() const { return counters_; }
  size_t subscriber_count() const { return subscriptions_.size(); }
  // Deliver bytes handed to ZeroMQ and not yet written to a socket, for all
  // connections (bounded by limits.subscribers_queued_bytes_max).
  int64_t queued_bytes() const { return queued_all_->bytes.load(std::memory_order_relaxed); }
  // Reported in status: counted by the broker as it sends (see Broker::DrainReady).
  void set_votes_while_catching_up(uint64_t n) { votes_while_catching_up_ = n; }
  // Largest and summed number of messages subscribers are behind the head.
  void SubscriberLag(uint64_t* max, uint64_t* sum) const;
  // The last Service() left a subscriber with credit and messages to send:
  // call it again without waiting.
  bool more_to_deliver() const { return more_to_deliver_; }

  // The connections of the endpoint, whose limit per key each frame is
  // checked against (null: no limit). Outlives this.
  void set_connections(ClientConnections* connections) { connections_ = connections; }

  // Where publish-to-ack latencies go; null (the default) records nothing.
  void set_metrics(monitoring::BrokerMetrics* metrics) { metrics_ = metrics; }

 private:
  uint64_t votes_while_catching_up_ = 0;
  bool more_to_deliver_ = false;
  struct Pending {
    std::string identity;
    uint64_t request_id = 0;
    std::vector<uint64_t> sequences;
    std::vector<uint64_t> offsets;
    std::vector<uint16_t> errors;  // ordo::wire::ErrorCode values
    std::vector<bool> answered;    // a later duplicate result changes nothing
    size_t remaining = 0;
    Clock::time_point started;
  };
  // Bytes of Deliver frames handed to ZeroMQ and not yet freed by it (it
  // frees a frame once written to the socket, or once its connection is
  // gone): what a subscriber holds of this broker's memory. Decremented on
  // ZeroMQ's I/O thread, hence atomic and shared with every frame in flight.
  struct QueuedBytes {
    std::atomic<int64_t> bytes{0};
    std::atomic<int64_t> freed{0};  // ever: moves while the client reads
  };
  struct Subscription {
    std::string key;  // the client's public key (Z85); "" in plaintext
    std::shared_ptr<QueuedBytes> queued;  // its connection's (queued_)
    // A slow consumer: bytes queued to its connection, and none of them
    // sent for slow_consumer_timeout_ms (its client does not read).
    int64_t freed_seen = 0;
    Clock::time_point progress_at{};
    Clock::time_point last_sent{};  // for the keep-alive of an idle one
    uint64_t request_id = 0;
    uint64_t next_offset = 0;
    uint64_t credit = 0;
    // Subscribe's from_instance_start, until the first frame went.
    bool from_instance_start = false;
  };
  using Key = std::pair<uint64_t, uint64_t>;  // (producer, sequence)

  // `key`: the sender's public key (Z85), "" in plaintext. `over_limit`:
  // its connection is past the key's limit (answered TooManyConnections).
  void Handle(const std::string& identity, const zmq::message_t& frame, std::string_view key,
              bool over_limit);
  // Whether `key` holds `permission`; answers PermissionDenied if not.
  bool Permitted(const std::string& identity, uint64_t request_id, std::string_view key,
                 Permission permission);
  // `batch`: a decoded Publish's messages (broker/codec.h, DecodeClientRequest).
  void HandlePublish(const std::string& identity, uint64_t request_id,
                     std::vector<paxos::ClientMessage> batch);
  void HandleSubscribe(const std::string& identity, const ClientRequest& subscribe,
                       std::string_view key);
  void HandleFetch(const std::string& identity, const ClientRequest& fetch);
  void HandleStatus(const std::string& identity, uint64_t request_id);
  void HandleMembers(const std::string& identity, uint64_t request_id);
  // Proposes the change (leader only) and answers it once its instance is
  // applied (SettleChanges), or at once with the typed error.
  void HandleChangeMembers(const std::string& identity, uint64_t request_id,
                           const paxos::MembershipChange& change);
  void SettleChanges(std::span<const paxos::AppliedInstance> applied);
  struct PendingChange {
    std::string identity;
    uint64_t request_id = 0;
    paxos::MembershipChange change;
    paxos::Instance instance{};
    Clock::time_point started;
  };
  std::list<PendingChange> changes_;
  static constexpr std::chrono::seconds kChangeTimeout{30};
  void SendError(const std::string& identity, uint64_t request_id, uint16_t code,
                 const std::string& message, uint64_t earliest_offset = 0);
  void Reply(std::list<Pending>::iterator it);
  enum class SendResult { kSent, kFull, kGone };
  SendResult SendFrame(const std::string& identity, const uint8_t* data, size_t size);
  // A Deliver frame, counted in `queued` and queued_all_ until ZeroMQ frees it.
  SendResult SendDeliver(const std::string& identity, const uint8_t* data, size_t size,
                         const std::shared_ptr<QueuedBytes>& queued);
  std::shared_ptr<QueuedBytes> QueuedFor(const std::string& identity);
  // Drops the subscription at `it` as a slow consumer; returns the next one.
  std::map<std::string, Subscription>::iterator DropSlowConsumer(
      std::map<std::string, Subscription>::iterator it);
  std::string LeaderEndpoint() const;

  const BrokerConfig& config_;
  const CurveKeyPair* keys_;
  const AccessList* access_;
  paxos::Replica& replica_;
  LmdbStore& store_;
  zmq::socket_t socket_;
  std::list<Pending> pending_;
  // Messages waiting for their offsets, one record per run of consecutive
  // sequences of one producer within a request (usually the whole request),
  // keyed by (producer, first sequence): a node per request, not per
  // message (profiled: the per-message map was a tenth of the leader).
  struct Run {
    std::list<Pending>::iterator pending;
    size_t first_index = 0;  // in pending->sequences
    uint64_t count = 0;
    uint64_t left = 0;  // not yet answered
  };
  using Runs = std::multimap<Key, Run>;
  // Answers one message of `run`; true if that erased the run.
  bool Answer(Runs::iterator run, const paxos::MessageResult& r);
  Runs waiting_;
  uint64_t run_count_max_ = 0;  // the longest run ever waited on
  std::map<std::string, Subscription> subscriptions_;  // by client identity
  // By identity, while a subscription or a frame in flight uses it: kept
  // across re-subscriptions, so subscribing again does not reset the bound.
  std::map<std::string, std::shared_ptr<QueuedBytes>> queued_;
  std::shared_ptr<QueuedBytes> queued_all_ = std::make_shared<QueuedBytes>();
  Clock::time_point queued_swept_{};
  Clock::time_point last_slow_log_{};
  ClientCounters counters_;
  monitoring::BrokerMetrics* metrics_ = nullptr;
  ClientConnections* connections_ = nullptr;
  Clock::time_point last_reject_log_{};
  uint64_t rejects_since_log_ = 0;
};

}  // namespace ordo::broker
