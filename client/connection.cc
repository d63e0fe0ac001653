#include "client/internal/connection.h"

#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <random>
#include <thread>
#include <utility>

#include "base/chain.h"
#include "base/keys.h"

namespace ordo::client_internal {
namespace {

namespace fb = flatbuffers;

// A buffer starts with the root offset and the file identifier; anything
// shorter cannot be a ClientEnvelope.
constexpr size_t kBufferHeaderBytes = sizeof(fb::uoffset_t) + fb::kFileIdentifierLength;

// FlatBuffers reads scalars with plain loads: the buffer must be aligned to
// the widest scalar in client.fbs (ulong, and the Ballot struct).
constexpr size_t kBufferAlignment = 8;
static_assert(alignof(wire::Ballot) <= kBufferAlignment);

// The deepest legal path is ClientEnvelope > Deliver > StreamMessage (or
// StatusReply > PeerStatus): 3 tables. Headroom for appended fields, and far
// below FlatBuffers' default of 64, so a hostile frame cannot make the
// verifier recurse deeply. Same bound as broker/codec.cc.
constexpr fb::uoffset_t kVerifierDepthMax = 8;

// Every table visit needs a 4-byte offset pointing at it, so an honest frame
// of n bytes has fewer than n / 4 visits; more means offsets revisit shared
// tables, and refusing that keeps verification linear in the frame's size.
constexpr size_t kVerifierBytesPerTable = sizeof(fb::uoffset_t);

// Socket options we rely on, spelled out because defaults can change.
// Linger 0: closing a socket (switching brokers, destroying an object) drops
// unsent requests at once instead of blocking; retries resend them anyway.
constexpr int kLingerMs = 0;
// Requests queued while the TCP connection is being set up; far more than a
// client ever has in flight (one publish, or a subscribe, a ping and credit).
constexpr int kSendQueueFramesMax = 1000;
// Unlimited receive queue: the subscriber's credit already bounds what a
// broker may push, and a ZeroMQ drop at a high-water mark would only turn
// into a gap and a resubscribe.
constexpr int kReceiveQueueFramesMax = 0;
// ZeroMQ reconnects a dropped TCP connection by itself: first after 10 ms
// (a restarted broker is back in use at once), then backing off to 100 ms
// while it stays down.
constexpr int kReconnectIntervalMs = 10;
constexpr int kReconnectIntervalMaxMs = 100;
// A frame FlatBuffers cannot address is garbage; refuse it in ZeroMQ before
// it is allocated. (Brokers cap frames far lower: limits.frame_bytes_max.)
constexpr int64_t kFrameBytesMax = static_cast<int64_t>(FLATBUFFERS_MAX_BUFFER_SIZE) - 1;

fb::Verifier::Options VerifierOptions(size_t size) {
  fb::Verifier::Options options;
  options.max_depth = kVerifierDepthMax;
  // size < 2 GiB was checked, so this fits a uoffset_t.
  options.max_tables = static_cast<fb::uoffset_t>(size / kVerifierBytesPerTable + 1);
  options.check_alignment = true;
  options.check_nested_flatbuffers = true;
  return options;
}

}  // namespace

std::string ToZmqEndpoint(std::string_view endpoint) {
  if (endpoint.find("://") != std::string_view::npos) return std::string(endpoint);
  return "tcp://" + std::string(endpoint);
}

std::string WireCodeName(wire::ErrorCode code) {
  const auto value = static_cast<uint16_t>(code);
  if (code >= wire::ErrorCode::MIN && code <= wire::ErrorCode::MAX) {
    return wire::EnumNameErrorCode(code);
  }
  return "code " + std::to_string(value) + " (unknown to this client)";
}

Clock::time_point EarlierOf(Clock::time_point a, Clock::time_point b) { return std::min(a, b); }

void SleepAtMost(std::chrono::milliseconds pause, Clock::time_point deadline) {
  const Clock::time_point until = EarlierOf(Clock::now() + pause, deadline);
  std::this_thread::sleep_until(until);
}

std::string Ms(Clock::duration duration) {
  return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(duration).count()) +
         " ms";
}

std::unique_ptr<Frame> Frame::FromBytes(std::span<const uint8_t> bytes, std::string* reason) {
  auto frame = std::make_unique<Frame>();
  frame->message_.rebuild(bytes.data(), bytes.size());
  if (!frame->Parse(reason)) return nullptr;
  return frame;
}

bool Frame::Parse(std::string* reason) {
  size_ = message_.size();
  if (size_ < kBufferHeaderBytes) {
    *reason = "a frame of " + std::to_string(size_) + " bytes, too short for a ClientEnvelope";
    return false;
  }
  if (size_ >= FLATBUFFERS_MAX_BUFFER_SIZE) {
    *reason = "a frame of " + std::to_string(size_) + " bytes, above FlatBuffers' 2 GiB limit";
    return false;
  }
  const auto* data = static_cast<const uint8_t*>(message_.data());
  // ZeroMQ stores small messages inline and may hand out large ones at any
  // offset of its receive buffer; std::vector's allocation is aligned for
  // any scalar.
  if (reinterpret_cast<uintptr_t>(data) % kBufferAlignment != 0) {
    aligned_copy_.assign(data, data + size_);
    data = aligned_copy_.data();
  }
  fb::Verifier verifier(data, size_, VerifierOptions(size_));
  if (!wire::VerifyClientEnvelopeBuffer(verifier)) {
    *reason = "a frame of " + std::to_string(size_) +
              " bytes that is not a valid ClientEnvelope (\"ORDC\") buffer";
    return false;
  }
  const wire::ClientEnvelope* envelope = wire::GetClientEnvelope(data);
  if (envelope->version() != kClientFormatVersion) {
    *reason = "a ClientEnvelope of version " + std::to_string(envelope->version()) +
              "; this client reads version " + std::to_string(kClientFormatVersion);
    return false;
  }
  envelope_ = envelope;
  return true;
}

Result<std::unique_ptr<Connection>> Connection::Open(zmq::context_t& context,
                                                     const std::string& endpoint,
                                                     const ClientCredentials& credentials) {
  const bool curve = !credentials.empty();
  std::string server_key;
  if (curve) {
    auto key = credentials.broker_keys.find(endpoint);
    if (key == credentials.broker_keys.end() && endpoint.starts_with("tcp://")) {
      key = credentials.broker_keys.find(endpoint.substr(6));
    }
    if (key == credentials.broker_keys.end()) {
      return Error{ErrorCode::kAuthenticationFailed,
                   "the credentials hold no public key for broker " + endpoint +
                       " (their [broker_keys] name " +
                       std::to_string(credentials.broker_keys.size()) +
                       " broker(s)); add it, as `scripts/cluster up` writes it: \"" + endpoint +
                       "\" = \"<the broker's public_key>\"",
                   0};
    }
    server_key = key->second;
  }
  try {
    zmq::socket_t socket(context, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, kLingerMs);
    // Queue requests on the pipe that connect() creates, before the TCP
    // handshake completes, so the first send never blocks or fails.
    socket.set(zmq::sockopt::immediate, false);
    socket.set(zmq::sockopt::sndhwm, kSendQueueFramesMax);
    socket.set(zmq::sockopt::rcvhwm, kReceiveQueueFramesMax);
    socket.set(zmq::sockopt::reconnect_ivl, kReconnectIntervalMs);
    socket.set(zmq::sockopt::reconnect_ivl_max, kReconnectIntervalMaxMs);
    socket.set(zmq::sockopt::maxmsgsize, kFrameBytesMax);
    if (curve) {
      socket.set(zmq::sockopt::curve_serverkey, server_key);
      socket.set(zmq::sockopt::curve_publickey, credentials.public_key);
      socket.set(zmq::sockopt::curve_secretkey, credentials.secret_key);
    }
    // Handshakes, watched also in plaintext: a CurveZMQ broker refuses a
    // plaintext client with a mechanism mismatch.
    static std::atomic<uint64_t> monitors{0};
    const std::string events_endpoint =
        "inproc://ordo-client-handshakes-" + std::to_string(++monitors);
    zmq::socket_t events;
    if (zmq_socket_monitor(socket.handle(), events_endpoint.c_str(),
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) == 0) {
      events = zmq::socket_t(context, zmq::socket_type::pair);
      events.set(zmq::sockopt::linger, 0);
      events.connect(events_endpoint);
    }
    socket.connect(ToZmqEndpoint(endpoint));
    return std::unique_ptr<Connection>(
        new Connection(std::move(socket), std::move(events), endpoint, curve));
  } catch (const zmq::error_t& e) {
    return Error{ErrorCode::kInvalidArgument,
                 "cannot connect to \"" + endpoint + "\" (" + e.what() +
                     "); endpoints are HOST:PORT, as printed by `scripts/cluster up`" +
                     (curve ? "; keys are 40 characters of Z85" : ""),
                 0};
  }
}

void Connection::ReadHandshakeEvents() {
  if (!events_) return;
  try {
    zmq::message_t event, address;
    while (!refusal_ && events_.recv(event, zmq::recv_flags::dontwait)) {
      if (event.more()) (void)events_.recv(address, zmq::recv_flags::none);
      // ZeroMQ 4's event frame: uint16 event, uint32 value (host order).
      uint16_t what = 0;
      uint32_t value = 0;
      if (event.size() < 6) continue;
      std::memcpy(&what, event.data(), 2);
      std::memcpy(&value, static_cast<const char*>(event.data()) + 2, 4);
      const std::string fix =
          curve_ ? " Check the key file (--credentials / ORDO_CREDENTIALS): its [broker_keys] "
                   "must hold this broker's public key, and the broker's access file "
                   "(security.access_file, [[clients]]) this client's public key."
                 : " This broker requires CurveZMQ: pass credentials (--credentials FILE or "
                   "ORDO_CREDENTIALS; `scripts/cluster up` prints credentials=FILE).";
      switch (what) {
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
          closed_in_handshake_ = 0;
          break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
          refusal_ = Error{ErrorCode::kAuthenticationFailed,
                           "broker " + endpoint_ + " refused this client's key (ZAP status " +
                               std::to_string(value) +
                               "): it is not in the broker's access file, or it holds twice "
                               "limits.client_connections_per_key_max connections to that broker "
                               "already." +
                               fix,
                           0};
          break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
          refusal_ = Error{
              ErrorCode::kAuthenticationFailed,
              value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                  ? (curve_ ? "broker " + endpoint_ +
                                  " does not speak CurveZMQ (it runs with security.insecure); "
                                  "connect without credentials"
                            : "broker " + endpoint_ + " refused a plaintext connection." + fix)
                  : "the CurveZMQ handshake with broker " + endpoint_ + " failed (protocol error " +
                        std::to_string(value) + ")." + fix,
              0};
          break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
          // Once may be a broker going down mid-handshake; three in a row,
          // ZeroMQ reconnecting in between, is a broker that cannot read
          // our hello.
          if (++closed_in_handshake_ >= 3) {
            refusal_ = Error{ErrorCode::kAuthenticationFailed,
                             "broker " + endpoint_ +
                                 " closed the connection during the handshake, three times in a "
                                 "row: " +
                                 (curve_ ? "the public key the credentials give for it is likely "
                                           "not its key." +
                                               fix
                                         : "it may require CurveZMQ." + fix),
                             0};
          }
          break;
        default:
          break;
      }
    }
  } catch (const zmq::error_t&) {
    // The context is closing; nothing more to learn.
  }
}

bool Connection::Send(const flatbuffers::FlatBufferBuilder& builder) {
  try {
    const zmq::send_result_t sent =
        socket_.send(zmq::const_buffer(builder.GetBufferPointer(), builder.GetSize()),
                     zmq::send_flags::dontwait);
    if (!sent) {
      last_error_ = "the send queue to " + endpoint_ + " is full";
      return false;
    }
    return true;
  } catch (const zmq::error_t& e) {
    last_error_ = "sending to " + endpoint_ + " failed: " + e.what();
    return false;
  }
}

std::unique_ptr<Frame> Connection::TryReceiveOne(bool* got_something) {
  *got_something = false;
  auto frame = std::make_unique<Frame>();
  try {
    const zmq::recv_result_t received = socket_.recv(frame->message_, zmq::recv_flags::dontwait);
    if (!received) return nullptr;
    *got_something = true;
    if (frame->message_.more()) {
      // The protocol is one frame per message. Parts of one message arrive
      // together, so draining without waiting takes exactly this message.
      zmq::message_t part;
      bool more = true;
      while (more) {
        if (!socket_.recv(part, zmq::recv_flags::dontwait)) break;
        more = part.more();
      }
      ++frames_ignored_;
      last_ignored_reason_ = "a multi-part message (the protocol sends one frame per message)";
      return nullptr;
    }
  } catch (const zmq::error_t& e) {
    // EINTR and friends: nothing was taken; the caller waits again.
    last_error_ = "receiving from " + endpoint_ + " failed: " + e.what();
    return nullptr;
  }
  std::string reason;
  if (!frame->Parse(&reason)) {
    ++frames_ignored_;
    last_ignored_reason_ = std::move(reason);
    return nullptr;
  }
  return frame;
}

std::unique_ptr<Frame> Connection::Receive(Clock::time_point deadline) {
  while (true) {
    bool got_something = false;
    std::unique_ptr<Frame> frame = TryReceiveOne(&got_something);
    if (frame) return frame;
    if (got_something) continue;  // dropped a bad frame; more may be queued
    const Clock::time_point now = Clock::now();
    if (now >= deadline) return nullptr;
    // Round up: rounding down would wake just before the deadline and spin.
    const auto wait = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    if (refusal_) return nullptr;
    zmq_pollitem_t items[2] = {{socket_.handle(), 0, ZMQ_POLLIN, 0},
                               {events_handle(), 0, ZMQ_POLLIN, 0}};
    if (zmq_poll(items, events_ ? 2 : 1, static_cast<long>(wait.count())) < 0 &&
        zmq_errno() != EINTR) {
      // Only a terminated context fails here, and we own the context; do
      // not spin on it either way.
      last_error_ = std::string("polling ") + endpoint_ + " failed: " + zmq_strerror(zmq_errno());
      std::this_thread::sleep_until(deadline);
      return nullptr;
    }
    if (events_ && (items[1].revents & ZMQ_POLLIN) != 0) {
      ReadHandshakeEvents();
      if (refusal_) return nullptr;
    }
  }
}

Result<zmq::context_t*> LazyContext::Get() {
  if (context_) return context_.get();
  try {
    // One I/O thread: a client object has one connection at a time.
    auto context = std::make_unique<zmq::context_t>(1);
    // Do not block zmq_ctx_term on unsent messages (every socket also sets
    // linger 0); destroying a client object must never hang.
    context->set(zmq::ctxopt::blocky, false);
    context_ = std::move(context);
    return context_.get();
  } catch (const zmq::error_t& e) {
    return Error{ErrorCode::kUnavailable,
                 std::string("cannot create a ZeroMQ context: ") + e.what(), 0};
  }
}

Result<std::unique_ptr<Connection>> Connect(LazyContext& context, const std::string& endpoint,
                                            const ClientCredentials& credentials) {
  Result<zmq::context_t*> zmq_context = context.Get();
  if (!zmq_context.ok()) return zmq_context.error();
  return Connection::Open(*zmq_context.value(), endpoint, credentials);
}

std::unique_ptr<Frame> AwaitReply(Connection& connection, uint64_t request_id,
                                  Clock::time_point deadline) {
  while (true) {
    std::unique_ptr<Frame> frame = connection.Receive(deadline);
    if (!frame) return nullptr;
    if (frame->envelope().request_id() == request_id) return frame;
    // Ignore replies whose request_id we no longer wait for (protocol.md).
    if (Clock::now() >= deadline) return nullptr;
  }
}

void AttemptLog::Record(const std::string& endpoint, std::string outcome) {
  for (auto& entry : entries_) {
    if (entry.first == endpoint) {
      entry.second = std::move(outcome);
      return;
    }
  }
  if (entries_.size() < kEndpointsMax) entries_.emplace_back(endpoint, std::move(outcome));
}

void AttemptLog::RecordIfFirst(const std::string& endpoint, std::string outcome) {
  for (const auto& entry : entries_) {
    if (entry.first == endpoint) return;
  }
  Record(endpoint, std::move(outcome));
}

std::string AttemptLog::Summary() const {
  if (entries_.empty()) return "none";
  std::string summary;
  for (const auto& [endpoint, outcome] : entries_) {
    if (!summary.empty()) summary += "; ";
    summary += endpoint + " (" + outcome + ")";
  }
  return summary;
}

std::optional<Error> ValidateOptions(const ClientOptions& options) {
  if (options.brokers.empty()) {
    return Error{ErrorCode::kInvalidArgument,
                 "ClientOptions::brokers is empty: pass the brokers' client endpoints "
                 "(HOST:PORT, the brokers= list printed by `scripts/cluster up`; "
                 "ParseBrokerList splits it)",
                 0};
  }
  for (size_t i = 0; i < options.brokers.size(); ++i) {
    if (options.brokers[i].empty()) {
      return Error{ErrorCode::kInvalidArgument,
                   "ClientOptions::brokers[" + std::to_string(i) +
                       "] is empty: every entry must be a HOST:PORT client endpoint",
                   0};
    }
  }
  if (options.request_timeout.count() <= 0 || options.call_timeout.count() <= 0) {
    return Error{ErrorCode::kInvalidArgument,
                 "ClientOptions::request_timeout (" +
                     std::to_string(options.request_timeout.count()) + " ms) and call_timeout (" +
                     std::to_string(options.call_timeout.count()) +
                     " ms) must both be positive; 1000 and 30000 are reasonable",
                 0};
  }
  const ClientCredentials& c = options.credentials;
  if (!c.empty()) {
    std::string bad;
    if (!IsCurveKey(c.public_key)) bad = "public_key";
    if (!IsCurveKey(c.secret_key)) bad = "secret_key";
    for (const auto& [endpoint, key] : c.broker_keys) {
      if (!IsCurveKey(key)) bad = "broker_keys[\"" + endpoint + "\"]";
    }
    if (!bad.empty()) {
      return Error{ErrorCode::kInvalidArgument,
                   "ClientOptions::credentials." + bad +
                       " is not a key: 40 characters of Z85, as `ordo keygen` writes them",
                   0};
    }
  }
  return std::nullopt;
}

ErrorCode RefusalCode(wire::ErrorCode code) {
  switch (code) {
    case wire::ErrorCode::TooLarge:
    case wire::ErrorCode::BadRequest:
      return ErrorCode::kRejected;
    case wire::ErrorCode::OffsetBelowRetained:
      return ErrorCode::kOffsetBelowRetained;
    case wire::ErrorCode::PermissionDenied:
      return ErrorCode::kPermissionDenied;
    case wire::ErrorCode::ChangeInProgress:
      return ErrorCode::kChangeInProgress;
    case wire::ErrorCode::UnknownMember:
      return ErrorCode::kUnknownMember;
    case wire::ErrorCode::AlreadyMember:
      return ErrorCode::kAlreadyMember;
    case wire::ErrorCode::LastVoter:
      return ErrorCode::kLastVoter;
    case wire::ErrorCode::NotCaughtUp:
      return ErrorCode::kNotCaughtUp;
    default:
      return ErrorCode::kUnavailable;
  }
}

std::string Describe(const wire::Error& error) {
  std::string text = WireCodeName(error.code());
  const std::string message = ToString(error.message());
  if (!message.empty()) text += ": " + message;
  return text;
}

std::string ToString(const flatbuffers::String* text) {
  return text == nullptr ? std::string() : text->str();
}

uint64_t RandomU64() {
  try {
    std::random_device device;
    static_assert(sizeof(std::random_device::result_type) >= sizeof(uint32_t));
    const uint64_t high = static_cast<uint32_t>(device());
    const uint64_t low = static_cast<uint32_t>(device());
    return (high << 32) | low;
  } catch (const std::exception&) {
    // splitmix64 over the clock and a stack address: not cryptographic, but
    // distinct across processes started at different times or places.
    uint64_t x = static_cast<uint64_t>(Clock::now().time_since_epoch().count());
    x ^= static_cast<uint64_t>(reinterpret_cast<uintptr_t>(&x));
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  }
}

BrokerStatus ToBrokerStatus(const wire::StatusReply& reply, std::string endpoint) {
  BrokerStatus status;
  status.endpoint = std::move(endpoint);
  status.node_id = reply.node_id();
  status.role = ToString(reply.role());
  status.leader_id = reply.leader_id();
  status.leader_endpoint = ToString(reply.leader_endpoint());
  if (const wire::Ballot* ballot = reply.ballot()) {
    status.ballot_round = ballot->round();
    status.ballot_node = ballot->node();
  }
  status.chosen = reply.chosen();
  status.last_instance = reply.last_instance();
  status.next_offset = reply.next_offset();
  status.earliest_offset = reply.earliest_offset();
  if (const auto* peers = reply.peers()) {
    status.peers.reserve(peers->size());
    for (const wire::PeerStatus* peer : *peers) {
      status.peers.push_back(
          PeerInfo{peer->node_id(), peer->chosen(), peer->lag_instances(), peer->last_heard_ms()});
    }
  }
  status.storage_corruptions = reply.storage_corruptions();
  status.frames_rejected = reply.frames_rejected();
  status.voter = reply.voter();
  status.catching_up = reply.catching_up();
  status.rejoin_target = reply.rejoin_target();
  status.votes_while_catching_up = reply.votes_while_catching_up();
  status.first_retained = reply.first_retained();
  status.snapshots_installed = reply.snapshots_installed();
  status.version = ToString(reply.version());
  if (const auto* chain = reply.chain_head();
      chain != nullptr && chain->size() == ChainValue::kBytes) {
    ChainValue value;
    std::memcpy(value.bytes.data(), chain->data(), ChainValue::kBytes);
    status.chain_head = value.Hex();
  }
  return status;
}

Record ToRecord(const wire::StreamMessage& message) {
  Record record;
  record.offset = message.offset();
  record.producer = message.producer();
  record.sequence = message.sequence();
  if (const auto* key = message.key()) {
    record.key.assign(reinterpret_cast<const char*>(key->data()), key->size());
  }
  if (const auto* payload = message.payload()) {
    record.payload.assign(reinterpret_cast<const char*>(payload->data()), payload->size());
  }
  return record;
}

bool DeliverSizeIsPlausible(const wire::Deliver& deliver, size_t frame_bytes) {
  const auto* messages = deliver.messages();
  if (messages == nullptr) return true;
  uint64_t total = 0;
  for (const wire::StreamMessage* message : *messages) {
    if (const auto* key = message->key()) total += key->size();
    if (const auto* payload = message->payload()) total += payload->size();
    if (total > frame_bytes) return false;
  }
  return true;
}

}  // namespace ordo::client_internal
