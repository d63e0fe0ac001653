// Internal to the client library (not API): the exactly-once state of one
// producer (docs/protocol.md, "Publishing") and the rules that turn what a
// broker answered into what to do next. The synchronous Publisher and the
// AsyncPublisher both run on one PublishSession and do only the I/O and the
// timing around it: they ask it for the next request, hand it what came
// back (a reply, silence, a failed send or connect), act on the PublishStep
// it returns (close the socket, pause), and take resolved messages from the
// front of its queue.
//
// Pure: no socket, no clock, no thread; a step says how long to pause, the
// publisher's clock applies it.
//
// The queue holds every message enqueued and not yet taken, in order.
// Sequences are assigned when a message is first sent, so the assigned ones
// are a contiguous prefix of the queue and message i has sequence
// front.sequence + i. `send_index_` splits the queue: before it, messages
// sent in a request (awaiting an answer, or acknowledged out of order); from
// it, messages to send, first or again.
//
// Why pipelining is safe: the broker stores (producer, sequence) only as
// last stored + 1 and answers a later one OutOfSequence, so however requests
// are lost, refused or reordered by a leader change, nothing is stored out
// of order or twice. The session's one duty is to resend, with the same
// sequences, every message a request did not store: "rewind" send_index_ to
// the oldest such message. A message records the last request that carried
// it, so an answer about an older copy (already resent) triggers nothing.
// Switching brokers abandons every request in flight and rewinds to the
// front.
//
// Certainly not stored vs maybe stored. A sequence may be given back (to be
// reused by the next message) only if no copy of its message can ever be
// stored. Definite answers that store nothing: OutOfSequence, StaleLeader
// (per message), NotLeader, Busy, TooLarge, BadRequest, PermissionDenied
// (per request). Every
// other outcome is unknown and marks the message maybe_stored for good:
// silence, an abandoned request, Unavailable (a leader sends it for requests
// it had accepted when it loses leadership, and they may still be chosen),
// and every code this client does not expect or know.
//
// The rule for unknown codes: an unknown or unexpected code is "outcome
// unknown", never an error. Per message (a PublishResult code other than
// None, DuplicateTooOld, OutOfSequence, StaleLeader, or a message the reply
// left unanswered): the message stays queued, maybe_stored, and is resent
// with the same sequence, which the broker's deduplication makes safe.
// Per request (an Error code other than NotLeader, Busy, TooLarge,
// BadRequest, Unavailable; a body that is neither PublishReply nor Error):
// as Unavailable, the request may be stored; pause, next broker, resend.
// Failing such a message instead would leave a sequence that may or may not
// be stored: giving it back could store a later message under it, keeping it
// would stall every later one OutOfSequence.
//
// A refusal (TooLarge, BadRequest, PermissionDenied) is settled once no
// request is in flight.
// Its messages at the front that may be stored stay queued (and are resent
// alone, so a refusal caused by another message cannot hold them back); the
// rest are marked refused: sending stops at them, and once they reach the
// front they are taken out as rejected and give back their sequences, so
// the producer's sequences stay contiguous. Giving them back is safe because
// the first of them is certainly not stored, so no later sequence can be
// stored either (only last + 1 is).
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "client/internal/connection.h"
#include "client/internal/publish_core.h"

namespace ordo::client_internal {

// How requests are cut. The defaults are the synchronous Publisher's: one
// request holds the whole queue, and one is in flight at a time.
struct PublishLimits {
  size_t batch_messages_max = std::numeric_limits<size_t>::max();
  uint64_t batch_bytes_max = std::numeric_limits<uint64_t>::max();
  size_t requests_inflight_max = 1;
};

// What the publisher does after an event.
struct PublishStep {
  // OnReply: the frame answers a request in flight. False: a late or
  // unknown request_id, ignored (nothing else in the step is set).
  bool matched = false;
  // Close the socket: every request on it is abandoned (a late reply must
  // never reach a new socket). Target() has already moved on.
  bool reconnect = false;
  // Send nothing before this much time has passed.
  std::chrono::milliseconds pause{0};
  // The broker answered without taking the request: an Error, or a
  // PublishReply with a code this client does not know.
  bool refused = false;
  // A refusal (TooLarge, BadRequest) was settled: what became of the queue,
  // for the synchronous call's kRejected.
  std::optional<std::string> rejection;
  // kRejected (TooLarge, BadRequest) or kPermissionDenied.
  ErrorCode rejection_code = ErrorCode::kRejected;
};

// A message taken from the front of the queue.
struct PublishOutcome {
  enum class Kind {
    kStored,           // at `offset`
    kOffsetForgotten,  // stored once; DuplicateTooOld: the offset is lost
    kRejected,         // never stored: its request was refused (rejection())
    kUnresolved,       // PopAny only: not acknowledged; may or may not be stored
  };
  Kind kind = Kind::kUnresolved;
  uint64_t ticket = 0;  // Enqueue's return value
  uint64_t sequence = 0;
  uint64_t offset = 0;
  size_t bytes = 0;  // key + payload
};

class PublishSession {
 public:
  // `brokers` must outlive the session and not be empty once it sends.
  PublishSession(uint64_t producer_id, const std::vector<std::string>* brokers,
                 PublishLimits limits = {});
  PublishSession(const PublishSession&) = delete;
  PublishSession& operator=(const PublishSession&) = delete;

  uint64_t producer_id() const { return producer_id_; }

  // --- The queue ---

  // Appends a message; returns its ticket: 1, 2, 3... in enqueue order.
  uint64_t Enqueue(std::string key, std::string payload);
  bool empty() const { return queue_.empty(); }
  size_t size() const { return queue_.size(); }
  uint64_t queued_bytes() const { return queued_bytes_; }
  // Takes the front message if it is resolved (stored, offset forgotten, or
  // rejected: that once no request is in flight). False otherwise.
  bool PopResolved(PublishOutcome* out);
  // Takes the front message whatever its state (closing).
  bool PopAny(PublishOutcome* out);
  // Why the kRejected messages taken last were refused.
  const std::string& rejection() const { return rejection_; }
  ErrorCode rejection_code() const { return rejection_code_; }
  // "3 message(s) (sequences 4..6 of producer 77)".
  std::string Describe() const { return Describe(0, queue_.size()); }

  // --- Sending ---

  // A request may go out now: room in flight, messages to send, and no
  // refusal waiting to be settled.
  bool CanSend() const;
  // Queue index of the next message to send, and whether it was sent before.
  size_t send_index() const { return send_index_; }
  bool NextIsResend() const { return queue_[send_index_].sequence != 0; }
  size_t unsent_messages() const { return queue_.size() - send_index_; }
  uint64_t unsent_bytes() const { return unsent_bytes_; }
  // Builds the next request (after CanSend) into `builder`, which it clears,
  // and counts it in flight: messages from send_index() up to the limits,
  // sequences assigned to those sent for the first time. Returns its
  // request_id, or 0 when every message it walked was already acknowledged
  // (nothing to send).
  uint64_t BuildRequest(flatbuffers::FlatBufferBuilder& builder);
  size_t inflight() const { return inflight_.size(); }
  // The request_id of the oldest request in flight; 0 when none is.
  uint64_t oldest_inflight() const { return inflight_.empty() ? 0 : inflight_.front().request_id; }
  // The broker the next connection goes to.
  const std::string& Target() const { return rotation_.Target(); }

  // --- What happened; each returns what to do next ---

  // A frame that passed the connection's checks.
  PublishStep OnReply(const wire::ClientEnvelope& envelope);
  // No answer in time: every request in flight may be stored. `outcome`
  // says what was seen, for the attempt log.
  PublishStep OnSilence(std::string outcome);
  // The request just built could not be sent (it never left); the others in
  // flight on that socket are abandoned.
  PublishStep OnSendFailed(std::string why);
  // No connection could be opened to Target().
  PublishStep OnConnectFailed(std::string why);

  // What each broker did, for errors that give up.
  const AttemptLog& attempts() const { return attempts_; }
  // The synchronous Publisher, at the start of each call: a fresh attempt
  // log and backoffs, so one call's history does not slow the next.
  void BeginCall();

 private:
  struct Message {
    uint64_t ticket = 0;
    uint64_t sequence = 0;  // 0 until first sent
    std::string key;
    std::string payload;
    uint64_t last_request = 0;  // the newest request that carried it
    uint64_t offset = 0;
    bool maybe_stored = false;
    bool acknowledged = false;
    bool offset_forgotten = false;  // DuplicateTooOld
    bool refused = false;           // taken out as rejected once at the front
    size_t bytes() const { return key.size() + payload.size(); }
  };
  struct InFlight {
    uint64_t request_id = 0;
    uint64_t first_sequence = 0;
    uint64_t last_sequence = 0;
    size_t count = 0;  // messages carried
  };
  struct Refusal {
    uint64_t request_id = 0;
    std::string text;  // "broker X refused the publish request (TooLarge: ...)"
    ErrorCode code = ErrorCode::kRejected;  // or kPermissionDenied
  };

  static constexpr size_t kNoIndex = static_cast<size_t>(-1);

  PublishStep OnPublishReply(const InFlight& request, const wire::PublishReply& reply);
  PublishStep OnError(const InFlight& request, const wire::Error& error);
  // Settles a refusal once nothing is in flight.
  void Settle(PublishStep& step);
  // Every message of `request` not acknowledged may be stored.
  void MarkMaybeStored(const InFlight& request);
  // Gives up every request in flight (they may be stored) and rewinds to
  // the front. The caller moves the rotation.
  void Abandon();
  void Rewind(size_t index);
  // Index of the queued message with `sequence`, or kNoIndex.
  size_t IndexOf(uint64_t sequence) const;
  // Index of the oldest unacknowledged message whose newest copy is in
  // `request`, or kNoIndex.
  size_t OldestCarriedBy(const InFlight& request) const;
  PublishOutcome Pop(PublishOutcome::Kind kind);
  std::string Describe(size_t begin, size_t end) const;
  // Doubles up to the max; from 0, starts at the min.
  static std::chrono::milliseconds Grow(std::chrono::milliseconds backoff);

  const uint64_t producer_id_;
  const PublishLimits limits_;
  std::deque<Message> queue_;
  uint64_t queued_bytes_ = 0;
  size_t send_index_ = 0;
  uint64_t unsent_bytes_ = 0;  // of queue_[send_index_..]
  uint64_t next_ticket_ = 1;
  uint64_t next_sequence_ = 1;
  uint64_t next_request_id_ = 1;
  std::deque<InFlight> inflight_;  // in request_id order
  std::optional<Refusal> refusal_;
  std::string rejection_;
  ErrorCode rejection_code_ = ErrorCode::kRejected;
  std::chrono::milliseconds busy_backoff_ = kBusyBackoffMin;
  std::chrono::milliseconds resend_backoff_{0};
  int redirects_in_a_row_ = 0;
  AttemptLog attempts_;
  BrokerRotation rotation_;
  std::vector<flatbuffers::Offset<wire::ClientMessage>> scratch_;
};

}  // namespace ordo::client_internal
