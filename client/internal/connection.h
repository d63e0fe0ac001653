// Internal to the client library (not API): one DEALER connection to one
// broker's client endpoint, the framing and verification of every frame that
// crosses it, and small helpers the Publisher, Subscriber, Replay and
// GetStatus share.
//
// Frame format (docs/protocol.md, schemas/client.fbs): one ZeroMQ message of
// exactly one part, holding one FlatBuffers buffer finished with the file
// identifier "ORDC" and no size prefix:
//   bytes [0, 4)   root table offset
//   bytes [4, 8)   file identifier "ORDC"
//   ...            ClientEnvelope { version: 1, request_id, body: Body }
// A received frame is read only after, in this order: it is a single part;
// it is below FlatBuffers' 2 GiB limit; it is copied to 8-byte-aligned memory
// when it is not aligned (FlatBuffers reads scalars in place); the verifier
// accepts it (identifier, offsets in bounds, bounded depth and table count);
// its version is the one this client reads. Anything else is dropped and
// counted, never read and never fatal.
//
// Thread rules: like the public objects, a Connection is used by one thread
// at a time.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include <zmq.hpp>

#include "ordo/client.h"
#include "schemas/client_generated.h"

namespace ordo::client_internal {

using Clock = std::chrono::steady_clock;

// The envelope version this client writes and the only one it reads.
inline constexpr uint16_t kClientFormatVersion = 1;

// Pause after Unavailable (an election is running) before the next broker.
inline constexpr std::chrono::milliseconds kRetryPause{50};
// Busy: exponential backoff from kBusyBackoffMin, doubling, up to the max.
inline constexpr std::chrono::milliseconds kBusyBackoffMin{50};
inline constexpr std::chrono::milliseconds kBusyBackoffMax{500};
static_assert(kBusyBackoffMin <= kBusyBackoffMax);

// "HOST:PORT" -> "tcp://HOST:PORT". An endpoint that already names a
// transport ("tcp://...", "ipc://...") is kept as is, so tests and tools may
// pass ZeroMQ endpoints directly.
std::string ToZmqEndpoint(std::string_view endpoint);

// Readable name of a wire error code, with the number for codes this build
// does not know (a newer broker).
std::string WireCodeName(wire::ErrorCode code);

// The earlier of two time points.
Clock::time_point EarlierOf(Clock::time_point a, Clock::time_point b);

// Sleeps until `deadline` or for `pause`, whichever is sooner.
void SleepAtMost(std::chrono::milliseconds pause, Clock::time_point deadline);

// Milliseconds as a readable number, for messages.
std::string Ms(Clock::duration duration);

// Builds one ClientEnvelope around a body made by `make_body`, finished with
// the "ORDC" identifier.
template <typename MakeBody>
void BuildEnvelope(flatbuffers::FlatBufferBuilder& builder, uint64_t request_id,
                   wire::Body body_type, MakeBody&& make_body) {
  const flatbuffers::Offset<void> body = make_body(builder);
  const auto envelope =
      wire::CreateClientEnvelope(builder, kClientFormatVersion, request_id, body_type, body);
  wire::FinishClientEnvelopeBuffer(builder, envelope);
}

// One received frame that passed every check of the header comment. Not
// movable: the envelope points into the ZeroMQ message (or its aligned
// copy), and moving a small zmq::message_t moves its inline bytes.
class Frame {
 public:
  Frame() = default;
  Frame(const Frame&) = delete;
  Frame& operator=(const Frame&) = delete;

  // A frame holding a copy of `bytes`, after the checks a received one
  // goes through; null with *reason when they fail. For tests and
  // tests/fuzz: what Connection::Receive makes of a frame, without a socket.
  static std::unique_ptr<Frame> FromBytes(std::span<const uint8_t> bytes, std::string* reason);

  const wire::ClientEnvelope& envelope() const { return *envelope_; }
  // Bytes of the whole frame, for the Deliver size check.
  size_t size() const { return size_; }

 private:
  friend class Connection;
  // Runs the checks; on success sets envelope_. On failure returns false and
  // sets *reason.
  bool Parse(std::string* reason);

  zmq::message_t message_;
  std::vector<uint8_t> aligned_copy_;
  size_t size_ = 0;
  const wire::ClientEnvelope* envelope_ = nullptr;
};

// A DEALER socket connected to one broker. Never throws: every ZeroMQ error
// becomes a false / null return with a reason in last_error().
class Connection {
 public:
  // Creates the socket, sets every option we rely on and connects; with
  // `credentials` (not empty), as a CurveZMQ client pinned to the broker's
  // public key from credentials.broker_keys. kInvalidArgument when ZeroMQ
  // refuses the endpoint or the socket; kAuthenticationFailed when the
  // credentials name no key for `endpoint`.
  static Result<std::unique_ptr<Connection>> Open(zmq::context_t& context,
                                                  const std::string& endpoint,
                                                  const ClientCredentials& credentials);

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Queues one finished buffer for sending without blocking. False when
  // ZeroMQ cannot take it (queue full, context closing).
  bool Send(const flatbuffers::FlatBufferBuilder& builder);

  // Waits until `deadline` for the next frame that passes the checks.
  // Frames that fail are dropped and counted. Null at the deadline; with a
  // deadline already past, still takes a frame that is already queued.
  // Null at once when the handshake is refused (see refusal()).
  std::unique_ptr<Frame> Receive(Clock::time_point deadline);

  // Handshakes. ZeroMQ retries a failed handshake silently (or, refused by
  // the broker's ZAP handler, never again), so a refused key would look
  // like a broker that never answers. The socket's monitor reports each
  // handshake; one the broker refused (ZMQ_EVENT_HANDSHAKE_FAILED_AUTH),
  // a mechanism mismatch (plaintext against CurveZMQ), or three closed in
  // a row before completing (the broker could not decrypt our hello: a
  // wrong broker key) set refusal(): kAuthenticationFailed, nothing more
  // will come on this connection.
  //
  // The monitor's socket, to zmq_poll beside handle(); null if ZeroMQ
  // could not make one (then handshakes are not watched).
  void* events_handle() { return events_ ? events_.handle() : nullptr; }
  // Takes what the monitor reported (call when events_handle() polls in).
  void ReadHandshakeEvents();
  const std::optional<Error>& refusal() const { return refusal_; }

  const std::string& endpoint() const { return endpoint_; }
  // The socket, for zmq_poll together with other descriptors (the
  // AsyncPublisher's wake-up eventfd). Only for polling.
  void* handle() { return socket_.handle(); }
  const std::string& last_error() const { return last_error_; }
  // Frames dropped by the checks since Open, and why the last one was.
  uint64_t frames_ignored() const { return frames_ignored_; }
  const std::string& last_ignored_reason() const { return last_ignored_reason_; }

 private:
  Connection(zmq::socket_t socket, zmq::socket_t events, std::string endpoint, bool curve)
      : socket_(std::move(socket)),
        events_(std::move(events)),
        endpoint_(std::move(endpoint)),
        curve_(curve) {}

  // One non-blocking receive; null when nothing valid was queued.
  std::unique_ptr<Frame> TryReceiveOne(bool* got_something);

  zmq::socket_t socket_;
  zmq::socket_t events_;  // the PAIR end of socket_'s monitor (inproc)
  std::string endpoint_;  // as the user (or a NotLeader reply) spelled it
  bool curve_ = false;
  int closed_in_handshake_ = 0;  // in a row
  std::optional<Error> refusal_;
  std::string last_error_;
  uint64_t frames_ignored_ = 0;
  std::string last_ignored_reason_;
};

// Lazily created ZeroMQ context. Each public object owns one (see the
// comment in client.cc on why not one shared static context); creating it
// lazily keeps constructors free of I/O and of failure.
class LazyContext {
 public:
  // The context (never null), or kUnavailable if ZeroMQ cannot create one.
  Result<zmq::context_t*> Get();

 private:
  std::unique_ptr<zmq::context_t> context_;
};

// LazyContext::Get, then Connection::Open: for callers that treat both
// failures alike (try the next broker).
Result<std::unique_ptr<Connection>> Connect(LazyContext& context, const std::string& endpoint,
                                            const ClientCredentials& credentials);

// Waits until `deadline` for the frame answering `request_id`; frames with
// other request ids (answers to abandoned requests, deliveries of an old
// subscription) are skipped. Null at the deadline.
std::unique_ptr<Frame> AwaitReply(Connection& connection, uint64_t request_id,
                                  Clock::time_point deadline);

// What each broker did during one call, for the message of the Error a call
// returns when it gives up: the last outcome per endpoint, in the order the
// endpoints were first tried.
class AttemptLog {
 public:
  void Record(const std::string& endpoint, std::string outcome);
  // Records `outcome` only for an endpoint with none yet: for a wait the
  // call's deadline cut short, which says less than what came before.
  void RecordIfFirst(const std::string& endpoint, std::string outcome);
  // "a:1 (no reply within 100 ms); b:2 (Unavailable: ...)", or "none".
  std::string Summary() const;

 private:
  // Bounded: a NotLeader chain could name endpoints without end.
  static constexpr size_t kEndpointsMax = 16;
  std::vector<std::pair<std::string, std::string>> entries_;
};

// Checks what every call needs from ClientOptions: at least one broker, no
// empty endpoint, positive timeouts. Returns an Error to hand back, or none.
std::optional<Error> ValidateOptions(const ClientOptions& options);

// Why a broker refused a request (an Error frame), as the public code.
ErrorCode RefusalCode(wire::ErrorCode code);

// A readable "CODE: message" for an Error frame.
std::string Describe(const wire::Error& error);

// A FlatBuffers string as std::string; absent reads as empty.
std::string ToString(const flatbuffers::String* text);

// 64 random bits from std::random_device, or, where it has no entropy
// source (it throws), from the clock and an address; never crashes.
uint64_t RandomU64();

// Translates a Verifier-checked StatusReply from `endpoint` into the
// public BrokerStatus.
BrokerStatus ToBrokerStatus(const wire::StatusReply& reply, std::string endpoint);

// Translates a Verifier-checked StreamMessage into a Record.
Record ToRecord(const wire::StreamMessage& message);

// True when the keys and payloads of a Deliver add up to no more than the
// frame that carries them. A hostile buffer whose offsets share one payload
// among many messages would otherwise inflate into far more memory than it
// occupies on the wire.
bool DeliverSizeIsPlausible(const wire::Deliver& deliver, size_t frame_bytes);

}  // namespace ordo::client_internal
