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
// The chain (client/internal/chain_verifier.h). With verify_chain, every
// message is checked against the stream's hash chain before Next returns
// it: the records of an instance wait in `pending` until the instance is
// complete and checks out, then move to the buffer. A (re)subscription
// with no instance under way asks for from_instance_start, and the first
// Deliver may then start below the expected offset, at the start of the
// instance holding it; those records are only hashed. A failed check gives
// the broker up like a broken stream, drops what is pending, and goes on
// from the last verified offset on the next broker; Next reports it once
// (kIntegrity). Pending records count against the window; when they fill
// it, the broker is granted the rest of the instance under way (the
// window is exceeded by at most one instance).
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

#include "client/internal/chain_verifier.h"
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
        next_offset(offset_known ? start.offset : 0),
        release_from(next_offset),
        // Once: options never change, and checking them takes a Z85 decode
        // of every key, too much for each record.
        invalid_options(ci::ValidateOptions(options)) {
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
  // A record received (and verified, when verifying) goes to the buffer
  // unless it lies below the start the caller asked for.
  void Release(Record record);
  // The credit a (re)subscription or a Credit may grant now.
  uint32_t Room() const;
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
  // The offset of the first record not yet given to the caller (or moved
  // to the buffer): records below it are not returned again.
  uint64_t release_from;
  std::optional<Error> invalid_options;
  std::deque<Record> buffer;
  std::deque<Record> pending;  // received, their instance not yet verified
  ci::ChainVerifier verifier;
  // This subscription asked for from_instance_start and has not yet had a
  // message: its first Deliver may start below next_offset.
  bool may_rewind = false;
  std::string integrity_error;  // set with broken_stream by a failed check
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

uint32_t Subscriber::Impl::Room() const {
  const uint64_t used = buffer.size() + pending.size() + uint64_t{granted_left};
  if (used < credit) return static_cast<uint32_t>(credit - used);
  // Records of an unfinished instance fill the window: without the rest of
  // that instance none of them can be returned, so the broker gets credit
  // for it (and no more).
  if (verifier.in_progress() && granted_left == 0 && verifier.current_end() > next_offset) {
    return static_cast<uint32_t>(std::min<uint64_t>(verifier.current_end() - next_offset, credit));
  }
  return 0;
}

void Subscriber::Impl::Subscribe() {
  granted_left = 0;
  const uint32_t grant = Room();
  if (grant == 0) {
    resubscribe_needed = true;
    return;
  }
  resubscribe_needed = false;
  subscription_id = next_request_id++;
  granted_left = grant;
  // Verifying with no instance under way: from the start of the instance
  // holding next_offset, so all of its messages can be hashed.
  const bool from_instance_start = options.verify_chain && !verifier.in_progress();
  may_rewind = from_instance_start && offset_known;
  flatbuffers::FlatBufferBuilder builder(128);
  ci::BuildEnvelope(builder, subscription_id, wire::Body::Subscribe, [&](auto& b) {
    // Until the start of a Latest (Earliest) subscription is known, every
    // (re)subscription asks for the head (the earliest offset) again.
    return wire::CreateSubscribe(b, offset_known ? next_offset : 0,
                                 !offset_known && !start_earliest, grant,
                                 !offset_known && start_earliest, from_instance_start)
        .Union();
  });
  Send(builder);
}

void Subscriber::Impl::Release(Record record) {
  if (record.offset < release_from) return;  // only hashed: below where the caller starts
  release_from = record.offset + 1;
  buffer.push_back(std::move(record));
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
  const uint32_t room = Room();
  if (room == 0) return;
  const bool stuck = buffer.size() + pending.size() + uint64_t{granted_left} >= credit;
  if (!stuck && room < std::max<uint32_t>(1, credit / 2)) return;
  granted_left += room;
  flatbuffers::FlatBufferBuilder builder(64);
  // Credit carries the subscription's request_id, so an Error answering it
  // is read as an error of the subscription.
  ci::BuildEnvelope(builder, subscription_id, wire::Body::Credit,
                    [&](auto& b) { return wire::CreateCredit(b, room).Union(); });
  Send(builder);
}

void Subscriber::Impl::HandleDeliver(const wire::Deliver& deliver, size_t frame_bytes) {
  const auto* messages = deliver.messages();
  const bool has_messages = messages != nullptr && messages->size() > 0;
  std::optional<uint64_t> expected =
      offset_known ? std::optional<uint64_t>(next_offset) : std::nullopt;
  if (may_rewind && has_messages && deliver.chain() != nullptr && deliver.chain()->size() > 0) {
    // from_instance_start: the frame may start at the first offset of the
    // instance holding next_offset (the verifier checks the rest).
    const wire::ChainPoint* first = deliver.chain()->Get(0);
    if (first->first_offset() <= next_offset &&
        next_offset - first->first_offset() < first->count()) {
      expected = first->first_offset();
    }
  }
  // The checks: client/internal/deliver.h.
  const ci::DeliverVerdict verdict =
      ci::ValidateDeliver(deliver, frame_bytes, {expected, start_earliest});
  if (verdict.error == ci::DeliverError::kInflated) return;
  if (!offset_known) {
    // StartAt::Latest or Earliest: this Deliver fixed the start, or (an
    // empty one of Earliest) did not.
    if (!verdict.start) return;
    next_offset = release_from = *verdict.start;
    offset_known = true;
  }
  if (!has_messages) return;
  may_rewind = false;
  if (verdict.start) next_offset = *verdict.start;
  delivered_since_ping = true;
  granted_left -= static_cast<uint32_t>(std::min<size_t>(granted_left, verdict.credit_used));
  if (options.verify_chain && verdict.accepted > 0 &&
      verifier.BeginFrame(deliver) == ci::ChainVerifier::Step::kFailed) {
    integrity_error = broken_stream = verifier.error();
    return;
  }
  for (size_t i = 0; i < verdict.accepted; ++i) {
    const wire::StreamMessage& m = *messages->Get(static_cast<flatbuffers::uoffset_t>(i));
    ++next_offset;
    if (!options.verify_chain) {
      broken_in_a_row = 0;
      Release(ci::ToRecord(m));
      continue;
    }
    pending.push_back(ci::ToRecord(m));
    switch (verifier.Add(m)) {
      case ci::ChainVerifier::Step::kPending:
        break;
      case ci::ChainVerifier::Step::kVerified:
        broken_in_a_row = 0;
        for (Record& r : pending) Release(std::move(r));
        pending.clear();
        break;
      case ci::ChainVerifier::Step::kFailed:
        integrity_error = broken_stream = verifier.error();
        return;
    }
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
  if (invalid_options) return *invalid_options;
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
      const std::string endpoint = connection->endpoint();
      attempts.Record(endpoint, broken_stream.empty() ? connection->last_error() : broken_stream);
      const bool broken = !broken_stream.empty();
      broken_stream.clear();
      FailOver();
      if (!integrity_error.empty()) {
        // Back to the last verified offset (or the first one not returned):
        // what is pending came from the broker just given up.
        const std::string why = std::move(integrity_error);
        integrity_error.clear();
        pending.clear();
        verifier.Restart();
        next_offset = std::max(release_from, verifier.verified_offset().value_or(0));
        const bool everyone = ++broken_in_a_row >= options.brokers.size();
        if (everyone) broken_in_a_row = 0;
        return Error{ErrorCode::kIntegrity,
                     "broker " + endpoint + " served messages that fail the stream's chain: " +
                         why + ". Nothing of them was returned; " +
                         (everyone ? std::string("every broker tried failed so (")
                                   : std::string("the next broker takes over (")) +
                         attempts.Summary() + "), from offset " + std::to_string(next_offset) +
                         " when Next is called again.",
                     0};
      }
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
  // StartAt::Latest before the first Deliver: not known yet. Records of an
  // instance not yet verified are not counted as received.
  return impl_->offset_known ? impl_->release_from : 0;
}

}  // namespace ordo
