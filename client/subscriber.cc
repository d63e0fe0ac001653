// Subscriber: a learner reading the stream from any broker
// (docs/protocol.md, "Subscribing").
//
// State: the next offset expected, a buffer of records received and not yet
// returned, and one subscription on one connection, identified by the
// request_id of its Subscribe (deliveries echo it, so deliveries of a
// replaced subscription are told apart and ignored).
//
// Flow control. `credit_` is the window: buffered records plus what the
// broker may still push never exceed it. The broker's remaining credit is
// tracked in granted_left_; when the room (window - buffered - granted_left_)
// reaches half the window, a Credit grants it.
//
// Contiguity. One subscription (one request_id) delivers consecutive
// offsets from the one it asked for. A record below the expected offset is a
// broken stream (a broker serving what it should not): that broker is
// given up and the next one asked. A record above it means a frame was
// lost, and the subscription restarts at the expected offset with a new
// Subscribe.
//
// Failure detection. After request_timeout without any frame, a
// StatusRequest goes out as a ping; one more request_timeout without any
// frame and the broker counts as failed: next broker, fresh socket,
// Subscribe from the expected offset. A ping also goes out with every
// Subscribe on a new connection, so a dead broker is noticed within one
// request_timeout rather than two. A broker that answers pings while its
// head is past our offset but delivers nothing (it restarted and forgot the
// subscription) gets a new Subscribe.

#include <algorithm>
#include <deque>
#include <exception>
#include <thread>
#include <utility>

#include "client/internal/connection.h"
#include "client/internal/deliver.h"
#include "ordo/client.h"

namespace ordo {
namespace {
namespace ci = client_internal;
}  // namespace

struct Subscriber::Impl {
  Impl(ClientOptions options_in, StartAt start, uint32_t credit_in)
      : options(std::move(options_in)),
        credit(credit_in),
        start_earliest(start.earliest && !start.latest),
        offset_known(!start.latest && !start_earliest),
        next_offset(offset_known ? start.offset : 0) {
    // Spread subscribers over the brokers: any broker serves them.
    if (!options.brokers.empty()) broker_index = ci::RandomU64() % options.brokers.size();
  }

  Result<std::optional<Record>> Next(std::chrono::milliseconds timeout);

  // On a connection just opened to the current broker: subscribes and pings.
  void Start();
  // Closes the connection and moves to the next broker.
  void FailOver();
  // A new Subscribe on the current connection from the expected offset;
  // deferred (resubscribe_needed) while the buffer leaves no room.
  void Subscribe();
  void Ping(bool idle_probe);
  // Sends Credit when the room reaches half the window, or the deferred
  // Subscribe once there is room.
  void Refill();
  // Handles one frame; an Error to return from Next, or none.
  // Any readable frame shows the broker is alive; then Handle.
  std::optional<Error> OnFrame(const ci::Frame& frame);
  // `answers_idle_probe`: the frame answers the ping sent after an idle
  // request_timeout.
  std::optional<Error> Handle(const ci::Frame& frame, bool answers_idle_probe);
  void HandleDeliver(const wire::Deliver& deliver, size_t frame_bytes);
  std::optional<Error> HandleSubscriptionError(const wire::Error& error);
  void Send(const flatbuffers::FlatBufferBuilder& builder);
  // Counts a broker given up without a frame from it; once every broker of
  // the list has been given up in a row, the Error for Next to return.
  std::optional<Error> NoteBrokerGivenUp();

  ClientOptions options;
  uint32_t credit;
  // False for StartAt::Latest until the first Deliver fixes the start.
  // StartAt::Earliest: until the first record arrives, every
  // (re)subscription asks for the broker's earliest retained offset.
  bool start_earliest;
  bool offset_known;
  uint64_t next_offset;
  std::deque<Record> buffer;
  uint32_t granted_left = 0;
  bool resubscribe_needed = false;
  size_t broker_index = 0;
  uint64_t next_request_id = 1;
  uint64_t subscription_id = 0;  // request_id of the live Subscribe; 0: none
  uint64_t ping_id = 0;          // request_id of the outstanding ping; 0: none
  bool ping_is_idle_probe = false;
  ci::Clock::time_point ping_sent_at;
  ci::Clock::time_point last_frame_at;
  bool delivered_since_ping = false;
  bool connection_broken = false;  // a send failed; fail over at the next turn
  std::string broken_stream;       // why the broker's stream cannot be trusted; the same
  size_t broken_in_a_row = 0;      // brokers given up for a broken stream, no record between
  // After a broker refused us (Unavailable, ...) or could not be opened:
  // give it a moment before connecting to the next one.
  ci::Clock::time_point reconnect_not_before;
  // Brokers failed over in a row without a frame from any of them.
  size_t silent_brokers_in_a_row = 0;
  ci::AttemptLog attempts;
  // Declared before the connection, so the socket closes before the context.
  ci::LazyContext context;
  std::unique_ptr<ci::Connection> connection;
};

void Subscriber::Impl::Send(const flatbuffers::FlatBufferBuilder& builder) {
  if (!connection->Send(builder)) connection_broken = true;
}

std::optional<Error> Subscriber::Impl::NoteBrokerGivenUp() {
  // Every broker tried in turn, none answering: say so instead of returning
  // "no record yet" forever. The subscriber keeps its place; calling Next
  // again keeps trying.
  if (++silent_brokers_in_a_row < options.brokers.size()) return std::nullopt;
  silent_brokers_in_a_row = 0;
  return Error{ErrorCode::kTimeout,
               "no broker answered the subscriber (expecting offset " +
                   (offset_known     ? std::to_string(next_offset)
                    : start_earliest ? std::string("earliest")
                                     : std::string("latest")) +
                   "). Brokers tried: " + attempts.Summary() +
                   ". Check that the brokers run and listen on these client endpoints "
                   "(`scripts/cluster status`); calling Next again keeps trying.",
               0};
}

void Subscriber::Impl::Start() {
  connection_broken = false;
  subscription_id = 0;
  Subscribe();
  Ping(/*idle_probe=*/false);
  last_frame_at = ci::Clock::now();
}

void Subscriber::Impl::FailOver() {
  connection.reset();
  connection_broken = false;
  subscription_id = 0;
  ping_id = 0;
  granted_left = 0;
  // The records already buffered stay: they are contiguous and the new
  // subscription starts right after them.
  resubscribe_needed = false;
  broker_index = (broker_index + 1) % options.brokers.size();
}

void Subscriber::Impl::Subscribe() {
  const uint32_t buffered = static_cast<uint32_t>(std::min<size_t>(buffer.size(), credit));
  const uint32_t grant = credit - buffered;
  if (grant == 0) {
    resubscribe_needed = true;
    return;
  }
  resubscribe_needed = false;
  subscription_id = next_request_id++;
  granted_left = grant;
  flatbuffers::FlatBufferBuilder builder(128);
  ci::BuildEnvelope(builder, subscription_id, wire::Body::Subscribe, [&](auto& b) {
    // Until the start of a Latest (Earliest) subscription is known, every
    // (re)subscription asks for the head (the earliest offset) again.
    return wire::CreateSubscribe(b, offset_known ? next_offset : 0,
                                 !offset_known && !start_earliest, grant,
                                 !offset_known && start_earliest)
        .Union();
  });
  Send(builder);
}

void Subscriber::Impl::Ping(bool idle_probe) {
  ping_id = next_request_id++;
  ping_is_idle_probe = idle_probe;
  ping_sent_at = ci::Clock::now();
  delivered_since_ping = false;
  // A Fetch of no messages: answered with an empty Deliver carrying the
  // broker's head, and needing only the subscribe permission (a
  // StatusRequest needs admin).
  flatbuffers::FlatBufferBuilder builder(64);
  const uint64_t from = offset_known ? next_offset : 0;
  ci::BuildEnvelope(builder, ping_id, wire::Body::Fetch, [&](auto& b) {
    return wire::CreateFetch(b, from, /*max_messages=*/0).Union();
  });
  Send(builder);
}

void Subscriber::Impl::Refill() {
  if (!connection || connection_broken) return;
  if (resubscribe_needed) {
    Subscribe();
    return;
  }
  if (subscription_id == 0) return;
  const uint64_t used = buffer.size() + uint64_t{granted_left};
  if (used >= credit) return;
  const auto room = static_cast<uint32_t>(credit - used);
  if (room < std::max<uint32_t>(1, credit / 2)) return;
  granted_left += room;
  flatbuffers::FlatBufferBuilder builder(64);
  // Credit carries the subscription's request_id, so an Error answering it
  // is read as an error of the subscription.
  ci::BuildEnvelope(builder, subscription_id, wire::Body::Credit,
                    [&](auto& b) { return wire::CreateCredit(b, room).Union(); });
  Send(builder);
}

void Subscriber::Impl::HandleDeliver(const wire::Deliver& deliver, size_t frame_bytes) {
  // The checks: client/internal/deliver.h.
  const ci::DeliverVerdict verdict = ci::ValidateDeliver(
      deliver, frame_bytes,
      {offset_known ? std::optional<uint64_t>(next_offset) : std::nullopt, start_earliest});
  if (verdict.error == ci::DeliverError::kInflated) return;
  if (!offset_known) {
    // StartAt::Latest or Earliest: this Deliver fixed the start, or (an
    // empty one of Earliest) did not.
    if (!verdict.start) return;
    next_offset = *verdict.start;
    offset_known = true;
  }
  const auto* messages = deliver.messages();
  if (messages == nullptr || messages->size() == 0) return;
  delivered_since_ping = true;
  granted_left -= static_cast<uint32_t>(std::min<size_t>(granted_left, verdict.credit_used));
  for (size_t i = 0; i < verdict.accepted; ++i) {
    buffer.push_back(ci::ToRecord(*messages->Get(static_cast<flatbuffers::uoffset_t>(i))));
    ++next_offset;
    broken_in_a_row = 0;
  }
  switch (verdict.error) {
    case ci::DeliverError::kBelowExpected:
      // Failed over at the next turn; nothing more from this broker is used.
      broken_stream = verdict.message;
      return;
    case ci::DeliverError::kGap:
      // A frame was lost: restart the subscription where we are. The rest
      // of this frame (and of the old subscription) is ignored.
      Subscribe();
      return;
    case ci::DeliverError::kOk:
    case ci::DeliverError::kInflated:
      break;
  }
  // Dropped duplicates used credit without using room.
  Refill();
}

std::optional<Error> Subscriber::Impl::HandleSubscriptionError(const wire::Error& error) {
  const std::string endpoint = connection->endpoint();
  const std::string described = ci::Describe(error);
  attempts.Record(endpoint, described);
  switch (error.code()) {
    case wire::ErrorCode::OffsetBelowRetained: {
      // Keep the connection; the next Next asks again (and fails again
      // unless the caller starts elsewhere).
      subscription_id = 0;
      resubscribe_needed = true;
      const uint64_t earliest = error.earliest_offset();
      if (start_earliest && !offset_known) {
        // Asked for the earliest of a broker that reads only from_offset
        // (older than from_earliest), or retention moved on meanwhile:
        // start where this broker says history begins.
        next_offset = earliest;
        offset_known = true;
        return std::nullopt;
      }
      return Error{ErrorCode::kOffsetBelowRetained,
                   "offset " + std::to_string(next_offset) + " is no longer retained by " +
                       endpoint + " (" + described + "); the earliest offset available is " +
                       std::to_string(earliest) + ". Start a new Subscriber at StartAt::Offset(" +
                       std::to_string(earliest) + ") to read what remains.",
                   earliest};
    }
    case wire::ErrorCode::PermissionDenied:
      subscription_id = 0;
      resubscribe_needed = true;
      return Error{ErrorCode::kPermissionDenied,
                   "broker " + endpoint + " refused the subscription (" + described + ")", 0};
    case wire::ErrorCode::TooLarge:
    case wire::ErrorCode::BadRequest:
      subscription_id = 0;
      resubscribe_needed = true;
      return Error{ErrorCode::kRejected,
                   "broker " + endpoint + " refused the subscription (" + described +
                       "); check the credit (" + std::to_string(credit) +
                       ") against the broker's limits.subscriber_credit_max",
                   0};
    default:
      // Unavailable, Internal, or a code this client does not know: this
      // broker cannot serve us now; another one can, after a pause (an
      // election may be running).
      FailOver();
      reconnect_not_before = ci::Clock::now() + ci::kRetryPause;
      return std::nullopt;
  }
}

std::optional<Error> Subscriber::Impl::Handle(const ci::Frame& frame, bool answers_idle_probe) {
  const wire::ClientEnvelope& envelope = frame.envelope();
  const uint64_t request_id = envelope.request_id();
  if (subscription_id != 0 && request_id == subscription_id) {
    if (const wire::Deliver* deliver = envelope.body_as_Deliver()) {
      HandleDeliver(*deliver, frame.size());
    } else if (const wire::Error* error = envelope.body_as_Error()) {
      return HandleSubscriptionError(*error);
    }
    return std::nullopt;
  }
  if (answers_idle_probe) {
    // An idle stream, yet the broker's head is past our offset and we have
    // credit: it lost our subscription (a restart behind the same endpoint,
    // which ZeroMQ reconnects silently). Subscribe again. The ping's answer
    // (an empty Deliver) gives the head; an Earliest subscriber that has
    // seen nothing yet pinged from offset 0 and is behind when the broker
    // holds any record (or no longer retains 0).
    bool behind = false;
    if (const wire::Deliver* head = envelope.body_as_Deliver()) {
      behind = offset_known ? head->head_offset() > next_offset
                            : start_earliest && head->head_offset() > 0;
    } else if (const wire::Error* error = envelope.body_as_Error()) {
      behind =
          !offset_known && start_earliest && error->code() == wire::ErrorCode::OffsetBelowRetained;
    }
    if (!delivered_since_ping && behind && subscription_id != 0 && granted_left > 0) {
      Subscribe();
    }
  }
  // Anything else: a reply to an abandoned ping, a delivery of a replaced
  // subscription. Ignored.
  return std::nullopt;
}

std::optional<Error> Subscriber::Impl::OnFrame(const ci::Frame& frame) {
  if (!broken_stream.empty()) return std::nullopt;  // this broker is being given up
  last_frame_at = ci::Clock::now();
  silent_brokers_in_a_row = 0;
  const bool answers_idle_probe =
      ping_id != 0 && ping_is_idle_probe && frame.envelope().request_id() == ping_id;
  ping_id = 0;  // answered, by this frame or by any other
  return Handle(frame, answers_idle_probe);
}

Result<std::optional<Record>> Subscriber::Impl::Next(std::chrono::milliseconds timeout) {
  if (auto invalid = ci::ValidateOptions(options)) return *invalid;
  if (credit == 0) {
    return Error{ErrorCode::kInvalidArgument,
                 "the subscriber's credit is 0, so no broker may ever push a record; pass a "
                 "credit of at least 1 (10000 is the default)",
                 0};
  }
  const ci::Clock::time_point deadline =
      ci::Clock::now() + std::max(timeout, std::chrono::milliseconds{0});
  while (true) {
    if (!buffer.empty()) {
      Record record = std::move(buffer.front());
      buffer.pop_front();
      Refill();
      return std::optional<Record>(std::move(record));
    }
    if (connection && (connection_broken || !broken_stream.empty())) {
      attempts.Record(connection->endpoint(),
                      broken_stream.empty() ? connection->last_error() : broken_stream);
      const bool broken = !broken_stream.empty();
      broken_stream.clear();
      FailOver();
      if (broken && ++broken_in_a_row >= options.brokers.size()) {
        broken_in_a_row = 0;
        return Error{ErrorCode::kProtocol,
                     "every broker tried served a broken stream at offset " +
                         std::to_string(next_offset) + ": " + attempts.Summary() +
                         ". Nothing of it was returned; calling Next again keeps trying.",
                     0};
      }
    }
    if (!connection) {
      if (ci::Clock::now() < reconnect_not_before) {
        std::this_thread::sleep_until(ci::EarlierOf(deadline, reconnect_not_before));
        if (ci::Clock::now() >= deadline) return std::optional<Record>();
        continue;
      }
      Result<std::unique_ptr<ci::Connection>> opened =
          ci::Connect(context, options.brokers[broker_index], options.credentials);
      if (!opened.ok()) {
        if (opened.error().code == ErrorCode::kAuthenticationFailed) return opened.error();
        attempts.Record(options.brokers[broker_index], opened.error().message);
        FailOver();
        reconnect_not_before = ci::Clock::now() + ci::kRetryPause;
        if (std::optional<Error> given_up = NoteBrokerGivenUp()) return *given_up;
        continue;
      }
      connection = std::move(opened.value());
      Start();
    }
    if (resubscribe_needed) Subscribe();

    const ci::Clock::time_point now = ci::Clock::now();
    if (ping_id != 0 && now - ping_sent_at >= options.request_timeout) {
      // The caller may have stayed away from Next longer than the ping's
      // timeout: read what is already queued before judging the broker.
      if (std::unique_ptr<ci::Frame> queued = connection->Receive(now)) {
        if (std::optional<Error> error = OnFrame(*queued)) return *error;
        continue;
      }
      std::string outcome =
          "no frame for " + ci::Ms(now - last_frame_at) + " and no answer to a ping";
      if (connection->frames_ignored() > 0) {
        outcome += "; ignored " + std::to_string(connection->frames_ignored()) +
                   " unreadable frame(s), the last: " + connection->last_ignored_reason();
      }
      attempts.Record(connection->endpoint(), std::move(outcome));
      FailOver();
      if (std::optional<Error> given_up = NoteBrokerGivenUp()) return *given_up;
      continue;
    }
    if (ping_id == 0 && now - last_frame_at >= options.request_timeout) {
      Ping(/*idle_probe=*/true);
    }
    const ci::Clock::time_point alarm = ping_id != 0 ? ping_sent_at + options.request_timeout
                                                     : last_frame_at + options.request_timeout;
    std::unique_ptr<ci::Frame> frame = connection->Receive(ci::EarlierOf(deadline, alarm));
    if (!frame) {
      if (const std::optional<Error>& refused = connection->refusal()) {
        // Final, like PermissionDenied: calling Next again tries again.
        const Error error = *refused;
        FailOver();
        return error;
      }
      if (ci::Clock::now() >= deadline) return std::optional<Record>();
      continue;
    }
    if (std::optional<Error> error = OnFrame(*frame)) return *error;
  }
}

Subscriber::Subscriber(ClientOptions options, StartAt start, uint32_t credit)
    : impl_(std::make_unique<Impl>(std::move(options), start, credit)) {}

Subscriber::~Subscriber() = default;
Subscriber::Subscriber(Subscriber&&) noexcept = default;
Subscriber& Subscriber::operator=(Subscriber&&) noexcept = default;

Result<std::optional<Record>> Subscriber::Next(std::chrono::milliseconds timeout) {
  if (!impl_) {
    return Error{ErrorCode::kInvalidArgument, "this Subscriber was moved from; use the new one", 0};
  }
  try {
    return impl_->Next(timeout);
  } catch (const std::exception& e) {
    // No exception crosses the public API (STYLE.md 5).
    return Error{ErrorCode::kUnavailable, std::string("subscriber failed: ") + e.what(), 0};
  }
}

uint64_t Subscriber::next_offset() const {
  if (!impl_) return 0;
  // Records already received wait in the buffer; the next one Next returns
  // is its front, not the next one the broker will send.
  if (!impl_->buffer.empty()) return impl_->buffer.front().offset;
  // StartAt::Latest before the first Deliver: not known yet.
  return impl_->offset_known ? impl_->next_offset : 0;
}

}  // namespace ordo
