// The Ordo C++ client: publish with exactly-once retries, subscribe as a
// learner, replay a range, read cluster status. This header (and nothing else
// under client/) is the public API. docs/protocol.md is the wire contract.
//
// Thread rules: each object is used by one thread at a time. Objects are
// independent; each owns its ZeroMQ sockets.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
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
  kBackpressure,         // AsyncPublisher: the in-flight window is full (kFail mode)
  kClosed,               // AsyncPublisher: closed before the message was acknowledged
  // The CurveZMQ handshake failed: a broker refused this client's key, or
  // the broker's public key in ClientCredentials is wrong or missing, or
  // one side is plaintext. Reported within about a second, not retried.
  kAuthenticationFailed,
  // The broker knows this client's key, but the key lacks the permission
  // the request needs (the message names it). Not retried.
  kPermissionDenied,
  // Membership changes (ChangeMembers), each final for that call:
  kChangeInProgress,  // another change is not yet chosen: retry in a moment
  kUnknownMember,     // no member has that id
  kAlreadyMember,     // add: the id is taken (ids are never reused); promote: already a voter
  kLastVoter,         // remove: it is the only voter
  kNotCaughtUp,       // promote: the learner has not caught up yet: retry later
  // What a broker served does not hash to the stream's chain (docs/protocol.md,
  // "The chain"): a damaged disk or a bug on that broker. Nothing of it was
  // returned; a Subscriber has dropped that broker and goes on from the last
  // verified offset on another one when Next is called again.
  kIntegrity,
};

struct Error {
  ErrorCode code = ErrorCode::kUnavailable;
  std::string message;
  uint64_t earliest_offset = 0;  // with kOffsetBelowRetained
};

// A value or an Error. [[nodiscard]]: a call that returns one can fail, and
// ignoring it hides the failure.
template <typename T>
class [[nodiscard]] Result {
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

// CurveZMQ credentials (docs/protocol.md, "Security"): this client's key
// pair and each broker's public key, as `ordo keygen` writes them and
// `scripts/cluster up` prints (credentials=FILE). Empty (the default):
// plaintext, for brokers run with security.insecure.
struct ClientCredentials {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
  // A broker's client endpoint ("HOST:PORT", as in ClientOptions::brokers)
  // -> that broker's public key. Connecting (or being redirected) to a
  // broker not listed fails with kAuthenticationFailed.
  std::map<std::string, std::string> broker_keys;
  bool empty() const { return public_key.empty(); }
};

// Reads a credentials file (TOML: public_key, secret_key, [broker_keys]).
// Refused (kInvalidArgument) when others may read it, as ssh refuses a
// private key: the secret would not be one.
Result<ClientCredentials> LoadCredentials(const std::string& path);

struct ClientOptions {
  // Client endpoints, "HOST:PORT", as printed by `scripts/cluster up`
  // (brokers=...). Any one of them is enough to find the leader.
  std::vector<std::string> brokers;
  // How long to wait for one broker's answer before trying the next.
  std::chrono::milliseconds request_timeout{1000};
  // How long a call may take in all, across retries and leader changes.
  std::chrono::milliseconds call_timeout{30000};
  // Empty: plaintext.
  ClientCredentials credentials;
  // Subscribers and Replay check every message against the stream's hash
  // chain and return nothing that fails (kIntegrity). Off: what a broker
  // serves is trusted, as with brokers older than the chain.
  bool verify_chain = true;
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
  // during an election, or answered a message with a code this client does
  // not know: such a message's outcome is unknown, so it stays queued and is
  // resent with its sequence); kRejected when a broker refuses the request
  // as a whole (TooLarge, BadRequest): the refused messages that were
  // certainly never stored are dropped and their sequences reused, those
  // that may be stored (an earlier attempt went unanswered) stay queued and
  // are resent; kProtocol when a message of this call is stored but its
  // offset was forgotten by the broker (DuplicateTooOld, a retry of a batch
  // of more than 65,536 messages); kInvalidArgument for an empty broker
  // list or a request above 1 GiB. An empty `messages` resends the queued
  // messages, if any, and returns no offsets.
  Result<std::vector<uint64_t>> PublishBatch(const std::vector<OutgoingMessage>& messages);

  uint64_t producer_id() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Options of an AsyncPublisher: batching, the in-flight window, and what
// Publish does when the window is full.
struct AsyncPublisherOptions {
  // A request holds at most this many messages and key+payload bytes. Keep
  // batch_bytes_max well below the brokers' limits.frame_bytes_max (16 MiB).
  size_t batch_messages_max = 10000;
  size_t batch_bytes_max = size_t{1} << 20;
  // How long a message may wait for its batch to fill before it is sent
  // anyway. 0 sends at once (batches then form only while requests are in
  // flight).
  std::chrono::milliseconds linger{5};
  // Messages (and key+payload bytes) published and not yet resolved. A
  // single message larger than window_bytes_max is let in alone. Keep
  // window_messages_max below 65,536: a broker remembers the offsets of a
  // producer's last 65,536 sequences, so a retry of an older one is stored
  // once but its offset is lost (the callback gets kProtocol).
  size_t window_messages_max = 32768;
  size_t window_bytes_max = size_t{64} << 20;
  // Publish requests sent to the leader and not yet answered.
  size_t requests_inflight_max = 8;
  // A message above this (key + payload) is refused by Publish with
  // kInvalidArgument; the brokers' limits.message_bytes_max defaults to 1 MiB.
  size_t message_bytes_max = size_t{1} << 20;
  // When the window is full, Publish waits for room (at most
  // ClientOptions::call_timeout, then kBackpressure), or fails at once with
  // kBackpressure.
  enum class WhenFull { kBlock, kFail };
  WhenFull when_full = WhenFull::kBlock;
};

// Called once per accepted message with its offset or why it failed. Runs on
// the publisher's I/O thread, in publish order; it must be quick and must
// not call Flush or Close, nor a blocking Publish, of the same publisher.
using PublishCallback = std::function<void(const Result<uint64_t>&)>;

// Publishes without waiting: messages are queued, batched (by size and
// linger time) and sent by a background I/O thread, with several requests in
// flight to the leader at once. The exactly-once rules of Publisher hold:
// sequences are assigned in publish order, every retry (timeout, broker
// failure, leader change) resends the same sequences, an acknowledged
// message is never lost and a retried one never stored twice, and messages
// are stored in publish order. The publisher never gives up on a queued
// message by itself: it retries until the message is acknowledged or the
// publisher is closed. A message a broker answers with a code this client
// does not know is resent with its sequence, like one whose request went
// unanswered (the Publisher does the same).
//
// Thread rules: Publish, Flush and Close may be called from any threads.
class AsyncPublisher {
 public:
  // producer_id 0 picks a random one. Starts the I/O thread; no I/O happens
  // before the first Publish.
  explicit AsyncPublisher(ClientOptions options, AsyncPublisherOptions async_options = {},
                          uint64_t producer_id = 0);
  // Close(ClientOptions::call_timeout).
  ~AsyncPublisher();
  AsyncPublisher(const AsyncPublisher&) = delete;
  AsyncPublisher& operator=(const AsyncPublisher&) = delete;

  // Queues one message; `done` is called once with its offset or an error.
  // Returns an Error (and never calls `done`) when the message is not
  // accepted: kBackpressure (window full; with kBlock, still full after
  // call_timeout), kInvalidArgument (bad options, message too large),
  // kClosed (after Close). The callback gets kClosed when the publisher is
  // closed before the broker acknowledged (the message may or may not be
  // stored), kRejected when a broker refused its request as a whole (it was
  // never stored), kProtocol when it is stored but its offset was forgotten
  // (DuplicateTooOld).
  std::optional<Error> Publish(std::string_view payload, std::string_view key,
                               PublishCallback done);
  // The same with a future; a message that is not accepted gives a future
  // that is ready with the error. Costs one allocation per message more
  // than the callback form.
  std::future<Result<uint64_t>> Publish(std::string_view payload, std::string_view key = {});

  // Sends what is queued without waiting for linger, and waits until every
  // message published before the call is resolved (its callback has run).
  // kTimeout when `timeout` passes first; the messages stay queued.
  std::optional<Error> Flush(std::chrono::milliseconds timeout);
  // Flush(timeout), then stops: messages still unresolved get kClosed, and
  // later Publish calls fail with kClosed. Idempotent.
  std::optional<Error> Close(std::chrono::milliseconds timeout);

  uint64_t producer_id() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Where a subscription starts.
struct StartAt {
  static StartAt Offset(uint64_t offset) { return StartAt{offset, false, false}; }
  // The earliest offset the broker still retains (0 until retention removes
  // history).
  static StartAt Earliest() { return StartAt{0, false, true}; }
  static StartAt Latest() { return StartAt{0, true, false}; }
  uint64_t offset = 0;
  bool latest = false;
  bool earliest = false;
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

// Called by the streaming Replay for each record, in offset order, with the
// end of the range (`to`, or the head when `to` is 0).
using ReplayCallback = std::function<void(const Record& record, uint64_t end)>;
// Replays [from, to) like the one above, but hands each record to `each` as
// it arrives instead of holding the range in memory, and call_timeout bounds
// the time without progress rather than the whole call. Returns the end of
// the range. The same errors; records before an error were already handed.
Result<uint64_t> Replay(const ClientOptions& options, uint64_t from, uint64_t to,
                        const ReplayCallback& each);

// One instance's step of the stream's hash chain (docs/protocol.md, "The
// chain"), as a verified replay checked it: the instance appended `count`
// messages from `first_offset` and took the chain from `before` to `after`
// (64 hex digits each).
struct ChainInstance {
  uint64_t instance = 0;
  uint64_t first_offset = 0;
  uint32_t count = 0;
  std::string before;
  std::string after;
};
using ChainCallback = std::function<void(const ChainInstance& instance)>;
// The streaming Replay, checking the chain whatever options.verify_chain
// says, and handing `each_instance` every instance it checked, once all of
// its messages in the range were handed to `each`. The last instance is
// read to its end even when `to` falls inside it (its messages from `to` on
// are hashed, not handed). Returns the end of the last instance checked: the
// offset the chain value of the last ChainInstance holds at. With one
// broker in options, a failed check is kIntegrity at once (ordo verify
// reads each broker so); with several, the next broker takes over.
Result<uint64_t> ReplayVerified(const ClientOptions& options, uint64_t from, uint64_t to,
                                const ReplayCallback& each, const ChainCallback& each_instance);

// The compacted view: the latest message of each key, for keys whose latest
// message has an offset in [from, to) (to = 0: up to the head), in offset
// order. Unkeyed messages are not in it. Works below the retained range:
// snapshots carry the compacted view.
Result<std::vector<Record>> ReplayCompacted(const ClientOptions& options, uint64_t from = 0,
                                            uint64_t to = 0);
Result<uint64_t> ReplayCompacted(const ClientOptions& options, uint64_t from, uint64_t to,
                                 const ReplayCallback& each);

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
  std::string version;  // the broker's release; "" from a broker too old to say
  // The stream's chain at next_offset, 64 hex digits (docs/protocol.md, "The
  // chain"); "" when the broker does not know it (older, or repairing).
  std::string chain_head;
};

// Asks one broker (its client endpoint, HOST:PORT) for its status.
// Needs the admin permission.
Result<BrokerStatus> GetStatus(const std::string& endpoint, std::chrono::milliseconds timeout,
                               const ClientCredentials& credentials = {});

// --- Membership (docs/protocol.md, "Membership"; needs the admin permission) ---

struct MemberInfo {
  uint32_t id = 0;
  bool voter = false;      // false: a learner member (pulls the log, never votes)
  std::string peer;        // HOST:PORT
  std::string client;      // HOST:PORT
  std::string public_key;  // Z85; "" on a plaintext cluster
  // As the answering broker sees it: "leader", "follower", "candidate" or "learner".
  std::string state;
  bool heard = false;  // last_heard_ms is known
  uint64_t last_heard_ms = 0;
  bool lag_known = false;  // lag_instances is known
  uint64_t lag_instances = 0;
};

struct Members {
  std::string endpoint;  // the broker that answered
  uint32_t node_id = 0;
  uint32_t leader_id = 0;  // 0: unknown to it
  bool bootstrap = false;  // no configuration entry yet: the config files' [[members]]
  uint64_t change_pending = 0;
  uint64_t chosen = 0;
  std::vector<MemberInfo> members;  // ascending id
};

// The members as the first broker of options.brokers that answers knows
// them (the leader's view when it is that broker; MembersAt for one).
Result<Members> GetMembers(const ClientOptions& options);
Result<Members> MembersAt(const std::string& endpoint, std::chrono::milliseconds timeout,
                          const ClientCredentials& credentials = {});

enum class MemberChange { kAddLearner, kPromote, kRemove };

struct MemberSpec {
  uint32_t id = 0;
  std::string peer;        // kAddLearner: HOST:PORT other members connect to
  std::string client;      // kAddLearner: HOST:PORT clients connect to
  std::string public_key;  // kAddLearner on a CurveZMQ cluster: its public key (Z85)
};

struct ChangeResult {
  uint64_t instance = 0;            // the configuration entry's log instance
  std::vector<MemberInfo> members;  // the membership in effect after it (no state)
};

// One membership change, sent to the leader (following redirects, trying
// the brokers in turn), returning once its configuration entry is chosen
// and applied. Errors: the membership codes above, kPermissionDenied,
// kRejected (a malformed member), kTimeout/kUnavailable within call_timeout.
Result<ChangeResult> ChangeMembers(const ClientOptions& options, MemberChange kind,
                                   const MemberSpec& member);

}  // namespace ordo
