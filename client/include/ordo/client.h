// The Ordo C++ client: publish with exactly-once retries, subscribe as a
// learner, replay a range, read cluster status. This header (and nothing else
// under client/) is the public API. docs/protocol.md is the wire contract.
//
// Thread rules: each object is used by one thread at a time. Objects are
// independent; each owns its ZeroMQ sockets.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ordo {

// Why a call failed. Every error carries a readable message saying what was
// wrong and what to do.
enum class ErrorCode {
  kTimeout,              // no broker answered in time
  kUnavailable,          // brokers answered but none could take the request
  kRejected,             // the broker refused the request (too large, malformed)
  kOffsetBelowRetained,  // see Error::earliest_offset
  kProtocol,             // a broker sent something this client cannot read
  kInvalidArgument,      // the call's own arguments are wrong (e.g. no brokers)
};

struct Error {
  ErrorCode code = ErrorCode::kUnavailable;
  std::string message;
  uint64_t earliest_offset = 0;  // with kOffsetBelowRetained
};

// A value or an Error.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  const T& value() const { return std::get<0>(v_); }
  T& value() { return std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

struct ClientOptions {
  // Client endpoints, "HOST:PORT", as printed by `scripts/cluster up`
  // (brokers=...). Any one of them is enough to find the leader.
  std::vector<std::string> brokers;
  // How long to wait for one broker's answer before trying the next.
  std::chrono::milliseconds request_timeout{1000};
  // How long a call may take in all, across retries and leader changes.
  std::chrono::milliseconds call_timeout{30000};
};

// Parses "HOST:PORT,HOST:PORT,..." into ClientOptions::brokers.
std::vector<std::string> ParseBrokerList(std::string_view list);

struct OutgoingMessage {
  std::string key;  // optional; empty = unkeyed
  std::string payload;
};

struct Record {
  uint64_t offset = 0;
  uint64_t producer = 0;
  uint64_t sequence = 0;
  std::string key;
  std::string payload;
};

// Publishes messages and returns their offsets once they are durable on a
// majority. Exactly-once: each message gets the next sequence of this
// producer; retries after timeouts, broker failures and leader changes resend
// the same sequences, so a message is never lost once acknowledged and never
// stored twice. Messages of one publisher are stored in call order.
class Publisher {
 public:
  // producer_id 0 picks a random one.
  explicit Publisher(ClientOptions options, uint64_t producer_id = 0);
  ~Publisher();
  Publisher(Publisher&&) noexcept;
  Publisher& operator=(Publisher&&) noexcept;

  // Publishes one message; returns its offset.
  Result<uint64_t> Publish(std::string_view payload, std::string_view key = {});
  // Publishes many messages in one request; returns their offsets in order.
  // On error, messages of this call that were not acknowledged stay queued
  // and are resent (with their sequences) ahead of the next call's.
  //
  // Errors: kTimeout / kUnavailable when call_timeout passes (kUnavailable
  // if the last broker tried answered but could not take the request, e.g.
  // during an election); kRejected when a broker refuses the request as a
  // whole (TooLarge, BadRequest): the refused messages that were certainly
  // never stored are dropped and their sequences reused, those that may be
  // stored (an earlier attempt timed out) stay queued; kProtocol when a
  // message of this call is stored but its offset was forgotten by the
  // broker (DuplicateTooOld, a retry of a batch of more than 65,536
  // messages); kInvalidArgument for an empty broker list or a request above
  // 1 GiB. An empty `messages` resends the queued messages, if any, and
  // returns no offsets.
  Result<std::vector<uint64_t>> PublishBatch(const std::vector<OutgoingMessage>& messages);

  uint64_t producer_id() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Where a subscription starts.
struct StartAt {
  static StartAt Offset(uint64_t offset) { return StartAt{offset, false}; }
  static StartAt Earliest() { return StartAt{0, false}; }
  static StartAt Latest() { return StartAt{0, true}; }
  uint64_t offset = 0;
  bool latest = false;
};

// Reads the stream in offset order, with no gap and no duplicate, from any
// broker (followers included). Credit-based flow control: the broker never
// pushes more than the subscriber has room for. When its broker fails, it
// switches to another and resumes from the next offset.
class Subscriber {
 public:
  Subscriber(ClientOptions options, StartAt start, uint32_t credit = 10000);
  ~Subscriber();
  Subscriber(Subscriber&&) noexcept;
  Subscriber& operator=(Subscriber&&) noexcept;

  // The next record, or nullopt when none arrived within `timeout`
  // (timeout 0 polls). Errors: kOffsetBelowRetained (with earliest_offset);
  // kRejected when the broker refuses the subscription (BadRequest,
  // TooLarge); kTimeout when every broker of the list was given up in turn
  // without answering. After an error the subscriber keeps its place, and
  // calling Next again retries.
  Result<std::optional<Record>> Next(std::chrono::milliseconds timeout);
  // The offset the next record will have. With StartAt::Latest, 0 until the
  // first record (or the broker's head) arrives; a Latest subscriber that
  // fails over before that starts again at the new broker's head.
  uint64_t next_offset() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Replays [from, to) (to = 0: up to the head at the time of the call) from any
// broker; returns the records in order. "The head" is the one reported by the
// first broker to answer. A `to` beyond the head of every broker in the list
// is kInvalidArgument; an offset compacted away is kOffsetBelowRetained.
Result<std::vector<Record>> Replay(const ClientOptions& options, uint64_t from, uint64_t to);

struct PeerInfo {
  uint32_t node_id = 0;
  uint64_t chosen = 0;
  uint64_t lag_instances = 0;
  uint64_t last_heard_ms = 0;
};

struct BrokerStatus {
  std::string endpoint;  // the client endpoint that answered
  uint32_t node_id = 0;
  std::string role;      // "leader", "follower", "candidate", "learner"
  uint32_t leader_id = 0;
  std::string leader_endpoint;
  uint64_t ballot_round = 0;
  uint32_t ballot_node = 0;
  uint64_t chosen = 0;
  uint64_t last_instance = 0;
  uint64_t next_offset = 0;
  uint64_t earliest_offset = 0;
  std::vector<PeerInfo> peers;
  uint64_t storage_corruptions = 0;
  uint64_t frames_rejected = 0;
  bool voter = true;              // false: a learner broker (never votes)
  bool catching_up = false;       // lost its disk: not voting until it has caught up
  uint64_t rejoin_target = 0;     // ...past this instance (0 while it asks its peers)
  uint64_t votes_while_catching_up = 0;  // counted by the broker; always 0
  uint64_t first_retained = 0;    // first instance still in its log
  uint64_t snapshots_installed = 0;
};

// Asks one broker (its client endpoint, HOST:PORT) for its status.
Result<BrokerStatus> GetStatus(const std::string& endpoint, std::chrono::milliseconds timeout);

}  // namespace ordo
