// AsyncPublisher: exactly-once publishing (docs/protocol.md, "Publishing")
// with batching and several requests in flight, driven by one I/O thread.
//
// Threads: callers of Publish append to `incoming` under the mutex and wake
// the I/O thread through an eventfd; the I/O thread alone owns the ZeroMQ
// socket and the queue below, and runs the callbacks.
//
// The queue holds every accepted, unresolved message in publish order.
// Sequences are assigned when a message is first sent, so the assigned ones
// are a contiguous prefix of the queue and message i has sequence
// front.sequence + i. `send_index` splits the queue: before it, messages sent
// in a request (awaiting an answer, or acknowledged out of order); from it,
// messages to send, first or again.
//
// Why pipelining is safe: the broker stores (producer, sequence) only as
// last stored + 1 and answers a later one OutOfSequence, so however requests
// are lost, refused or reordered by a leader change, nothing is stored out of
// order or twice. The client's one duty is to resend, with the same
// sequences, every message a request did not store: "rewind" `send_index` to
// the oldest such message. A message records the last request that carried
// it, so an answer about an older copy (already resent) triggers nothing.
// Switching brokers abandons the socket and every request on it and rewinds
// to the front of the queue.

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

#include "client/internal/connection.h"
#include "client/internal/publish_core.h"
#include "ordo/client.h"

namespace ordo {
namespace {

namespace ci = client_internal;
using std::chrono::milliseconds;

constexpr size_t kNoIndex = static_cast<size_t>(-1);

}  // namespace

struct AsyncPublisher::Impl {
  struct Message {
    uint64_t sequence = 0;  // 0 until first sent
    std::string key;
    std::string payload;
    PublishCallback done;
    uint64_t last_request = 0;  // the newest request that carried it
    uint64_t offset = 0;
    ci::Clock::time_point queued_at;
    // A request carrying it went unanswered: it may be stored. Only a message
    // that is certainly not stored may give its sequence back.
    bool maybe_stored = false;
    bool acknowledged = false;
    bool offset_forgotten = false;  // DuplicateTooOld
    size_t bytes() const { return key.size() + payload.size(); }
  };
  struct InFlight {
    uint64_t request_id;
    ci::Clock::time_point sent_at;
    uint64_t first_sequence;
    uint64_t last_sequence;
  };
  // A request refused as a whole (TooLarge, BadRequest), handled once no
  // request is in flight.
  struct Refusal {
    uint64_t request_id;
    std::string text;
  };

  Impl(ClientOptions options_in, AsyncPublisherOptions async_in, uint64_t producer_id_in)
      : options(std::move(options_in)),
        async(async_in),
        producer_id(producer_id_in),
        rotation(&options.brokers) {}

  // --- Caller side ---
  std::optional<Error> Publish(std::string_view payload, std::string_view key,
                               PublishCallback done);
  std::optional<Error> Flush(milliseconds timeout);
  std::optional<Error> Close(milliseconds timeout);
  void Wake();

  // --- I/O thread ---
  void Run();
  void Loop();
  void TakeIncoming(ci::Clock::time_point now);
  void SendReady(ci::Clock::time_point now);
  bool EnsureConnection(ci::Clock::time_point now);
  void SendOneRequest(ci::Clock::time_point now);
  void ReceiveReplies(ci::Clock::time_point now);
  void HandleReply(const ci::Frame& frame, ci::Clock::time_point now);
  void HandleRefusal(ci::Clock::time_point now);
  void CheckTimeouts(ci::Clock::time_point now);
  // Gives up the socket and every request on it, then resends from the front.
  void Abandon();
  void Rewind(size_t index);
  // Index of the queued message with `sequence`, or kNoIndex.
  size_t IndexOf(uint64_t sequence) const;
  // Index of the oldest unacknowledged message whose newest copy is in
  // `request`, or kNoIndex.
  size_t OldestCarriedBy(const InFlight& request) const;
  // Runs the callbacks of the acknowledged messages at the front, in order.
  void ResolveFront();
  // Resolves `count` messages at the front with `error`.
  void FailFront(size_t count, const Error& error);
  // Tells the callers `count` messages of `bytes` are resolved.
  void Release(size_t count, uint64_t bytes);
  milliseconds PollTimeout(ci::Clock::time_point now) const;
  // When the broker counts as silent: request_timeout after the oldest
  // request in flight was sent or after the last reply, whichever is later.
  // Requests pipelined behind others wait at the leader, so the age of one
  // request says nothing; a broker that answers nothing at all has failed.
  ci::Clock::time_point ReplyDeadline() const {
    return std::max(inflight.front().sent_at, last_reply_at) + options.request_timeout;
  }
  std::string Describe(size_t count) const;

  const ClientOptions options;
  const AsyncPublisherOptions async;
  uint64_t producer_id;
  std::optional<Error> invalid;  // the options' error, returned by Publish

  // Shared with callers, under `mutex`.
  std::mutex mutex;
  std::condition_variable room_cv;      // window room freed, or closing
  std::condition_variable resolved_cv;  // `resolved` advanced, or the thread ended
  std::vector<Message> incoming;
  size_t window_messages = 0;
  uint64_t window_bytes = 0;
  uint64_t accepted = 0;     // messages accepted by Publish, ever
  uint64_t resolved = 0;     // of those, resolved (callback run)
  uint64_t flush_until = 0;  // ignore linger until `resolved` reaches it
  bool closing = false;      // Close began: Publish refuses
  bool stop = false;         // Close's wait ended: the thread fails the rest and ends
  bool thread_ended = false;
  std::string thread_error;  // why the thread ended early, if it did

  std::mutex close_mutex;  // one Close at a time
  bool closed = false;     // under close_mutex
  int wake_fd = -1;
  std::thread thread;

  // I/O thread only.
  std::vector<Message> taking;  // swapped with `incoming`, keeps its capacity
  std::deque<Message> queue;
  size_t send_index = 0;
  uint64_t unsent_bytes = 0;  // of queue[send_index..]
  uint64_t next_sequence = 1;
  uint64_t next_request_id = 1;
  std::deque<InFlight> inflight;
  uint64_t resolved_here = 0;
  bool flushing = false;
  ci::Clock::time_point send_not_before{};
  milliseconds busy_backoff = ci::kBusyBackoffMin;
  milliseconds resend_backoff{0};
  int redirects_in_a_row = 0;
  ci::Clock::time_point last_reply_at{};
  std::optional<Refusal> refusal;
  ci::AttemptLog attempts;
  ci::BrokerRotation rotation;
  flatbuffers::FlatBufferBuilder builder{1 << 16};
  std::vector<flatbuffers::Offset<wire::ClientMessage>> scratch;
  // Declared before the connection, so the socket closes before the context.
  ci::LazyContext context;
  std::unique_ptr<ci::Connection> connection;
};

// ---------------------------------------------------------------- callers

void AsyncPublisher::Impl::Wake() {
  const uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the thread wakes anyway.
  while (write(wake_fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

std::optional<Error> AsyncPublisher::Impl::Publish(std::string_view payload,
                                                   std::string_view key, PublishCallback done) {
  if (invalid) return invalid;
  const uint64_t bytes = payload.size() + key.size();
  if (bytes > async.message_bytes_max) {
    return Error{ErrorCode::kInvalidArgument,
                 "a message of " + std::to_string(bytes) +
                     " bytes (key + payload) exceeds AsyncPublisherOptions::message_bytes_max (" +
                     std::to_string(async.message_bytes_max) +
                     "); split it, or raise both that option and the brokers' "
                     "limits.message_bytes_max",
                 0};
  }
  // The copies happen outside the lock.
  Message message;
  message.key.assign(key);
  message.payload.assign(payload);
  message.done = std::move(done);

  std::unique_lock lock(mutex);
  auto closed_error = [&] {
    return Error{ErrorCode::kClosed,
                 thread_ended && !thread_error.empty()
                     ? "this AsyncPublisher stopped: " + thread_error
                     : "this AsyncPublisher is closed; create a new one to publish",
                 0};
  };
  if (closing || thread_ended) return closed_error();
  auto full = [&] {
    return window_messages > 0 && (window_messages + 1 > async.window_messages_max ||
                                   window_bytes + bytes > async.window_bytes_max);
  };
  if (full()) {
    const std::string window = std::to_string(window_messages) + " message(s), " +
                               std::to_string(window_bytes) + " bytes unacknowledged (window " +
                               std::to_string(async.window_messages_max) + " messages, " +
                               std::to_string(async.window_bytes_max) + " bytes)";
    if (async.when_full == AsyncPublisherOptions::WhenFull::kFail) {
      return Error{ErrorCode::kBackpressure,
                   "the in-flight window is full: " + window +
                       "; retry after some callbacks ran, or use WhenFull::kBlock",
                   0};
    }
    const bool room = room_cv.wait_for(lock, options.call_timeout,
                                       [&] { return !full() || closing || thread_ended; });
    if (closing || thread_ended) return closed_error();
    if (!room) {
      return Error{ErrorCode::kBackpressure,
                   "the in-flight window stayed full for call_timeout (" +
                       ci::Ms(options.call_timeout) + "): " + window +
                       ". The brokers acknowledge slower than you publish, or no leader is "
                       "reachable; check `ordo status`",
                   0};
    }
  }
  ++window_messages;
  window_bytes += bytes;
  ++accepted;
  const bool wake = incoming.empty();
  incoming.push_back(std::move(message));
  lock.unlock();
  if (wake) Wake();
  return std::nullopt;
}

std::optional<Error> AsyncPublisher::Impl::Flush(milliseconds timeout) {
  std::unique_lock lock(mutex);
  const uint64_t target = accepted;
  if (resolved >= target) return std::nullopt;
  flush_until = std::max(flush_until, target);
  lock.unlock();
  Wake();
  lock.lock();
  if (resolved_cv.wait_for(lock, timeout, [&] { return resolved >= target || thread_ended; })) {
    if (resolved >= target) return std::nullopt;
  }
  return Error{ErrorCode::kTimeout,
               std::to_string(target - std::min(target, resolved)) +
                   " message(s) not resolved within " + ci::Ms(timeout) +
                   "; they stay queued and are retried. Check that a majority of the brokers "
                   "runs (`ordo status`)",
               0};
}

std::optional<Error> AsyncPublisher::Impl::Close(milliseconds timeout) {
  std::lock_guard close_lock(close_mutex);
  if (closed) return std::nullopt;
  closed = true;
  std::unique_lock lock(mutex);
  closing = true;
  const uint64_t target = accepted;
  flush_until = std::max(flush_until, target);
  room_cv.notify_all();  // blocked Publish calls return kClosed
  lock.unlock();
  Wake();
  lock.lock();
  resolved_cv.wait_for(lock, timeout, [&] { return resolved >= target || thread_ended; });
  const uint64_t unresolved = target - std::min(target, resolved);
  stop = true;
  lock.unlock();
  Wake();
  if (thread.joinable()) thread.join();
  if (unresolved == 0) return std::nullopt;
  return Error{ErrorCode::kTimeout,
               std::to_string(unresolved) + " message(s) were not acknowledged within " +
                   ci::Ms(timeout) + " of Close; their callbacks got kClosed",
               0};
}

// -------------------------------------------------------------- I/O thread

void AsyncPublisher::Impl::Run() {
  try {
    Loop();
  } catch (const std::exception& e) {
    // No exception crosses the API; what remains is memory exhaustion and bugs.
    std::lock_guard lock(mutex);
    thread_error = std::string("its I/O thread failed: ") + e.what();
  }
  connection.reset();
  // Whatever is left resolves with kClosed, in publish order.
  std::string why;
  {
    std::lock_guard lock(mutex);
    why = thread_error.empty()
              ? "the AsyncPublisher was closed before a broker acknowledged the message; it "
                "may or may not be stored"
              : "the AsyncPublisher stopped (" + thread_error + ") before the message was "
                "acknowledged; it may or may not be stored";
  }
  if (!queue.empty()) why += ". Brokers tried: " + attempts.Summary();
  const Error error{ErrorCode::kClosed, why, 0};
  while (true) {
    FailFront(queue.size(), error);
    std::unique_lock lock(mutex);
    if (incoming.empty()) {
      thread_ended = true;
      lock.unlock();
      room_cv.notify_all();
      resolved_cv.notify_all();
      return;
    }
    taking.swap(incoming);
    lock.unlock();
    for (Message& m : taking) queue.push_back(std::move(m));
    taking.clear();
  }
}

void AsyncPublisher::Impl::Loop() {
  while (true) {
    ci::Clock::time_point now = ci::Clock::now();
    TakeIncoming(now);
    {
      std::lock_guard lock(mutex);
      if (stop) return;
    }
    ResolveFront();
    if (refusal && inflight.empty()) HandleRefusal(now);
    SendReady(now);

    zmq_pollitem_t items[2] = {{nullptr, wake_fd, ZMQ_POLLIN, 0},
                               {connection ? connection->handle() : nullptr, 0, ZMQ_POLLIN, 0}};
    const int count = connection ? 2 : 1;
    const milliseconds timeout = PollTimeout(now);
    if (zmq_poll(items, count, static_cast<long>(timeout.count())) < 0 && zmq_errno() != EINTR) {
      throw std::runtime_error(std::string("zmq_poll: ") + zmq_strerror(zmq_errno()));
    }
    if (items[0].revents & ZMQ_POLLIN) {
      uint64_t value = 0;
      (void)!read(wake_fd, &value, sizeof value);
    }
    now = ci::Clock::now();
    if (connection) ReceiveReplies(now);
    CheckTimeouts(now);
  }
}

milliseconds AsyncPublisher::Impl::PollTimeout(ci::Clock::time_point now) const {
  std::optional<ci::Clock::time_point> until;
  auto sooner = [&](ci::Clock::time_point t) { until = until ? std::min(*until, t) : t; };
  if (!inflight.empty()) sooner(ReplyDeadline());
  if (!refusal && send_index < queue.size() && inflight.size() < async.requests_inflight_max) {
    // SendReady held back: for linger, or for a pause after a refusal.
    const Message& next = queue[send_index];
    ci::Clock::time_point at = send_not_before;
    if (next.sequence == 0 && !flushing) at = std::max(at, next.queued_at + async.linger);
    sooner(at);
  }
  if (!until) return milliseconds{-1};
  if (*until <= now) return milliseconds{0};
  // Round up: rounding down would wake just before the time and spin.
  return std::chrono::ceil<milliseconds>(*until - now);
}

void AsyncPublisher::Impl::TakeIncoming(ci::Clock::time_point now) {
  {
    std::lock_guard lock(mutex);
    taking.swap(incoming);
    flushing = closing || resolved_here < flush_until;
  }
  for (Message& m : taking) {
    m.queued_at = now;
    unsent_bytes += m.bytes();
    queue.push_back(std::move(m));
  }
  taking.clear();
}

bool AsyncPublisher::Impl::EnsureConnection(ci::Clock::time_point now) {
  if (connection) return true;
  Result<std::unique_ptr<ci::Connection>> opened = ci::Connect(context, rotation.Target());
  if (!opened.ok()) {
    attempts.Record(rotation.Target(), opened.error().message);
    rotation.Next();
    send_not_before = now + ci::kRetryPause;
    return false;
  }
  connection = std::move(opened.value());
  return true;
}

void AsyncPublisher::Impl::SendReady(ci::Clock::time_point now) {
  if (refusal || now < send_not_before) return;
  while (inflight.size() < async.requests_inflight_max && send_index < queue.size()) {
    const Message& next = queue[send_index];
    const bool resend = next.sequence != 0;
    const bool full = queue.size() - send_index >= async.batch_messages_max ||
                      unsent_bytes >= async.batch_bytes_max;
    const bool lingered = now >= next.queued_at + async.linger;
    if (!(resend || full || lingered || flushing)) return;
    if (!EnsureConnection(now)) return;
    SendOneRequest(now);
    if (!connection) return;  // the send failed: paused or switched
  }
}

void AsyncPublisher::Impl::SendOneRequest(ci::Clock::time_point now) {
  const uint64_t request_id = next_request_id++;
  // Take messages from send_index up to the batch limits; acknowledged ones
  // (answered out of order before a rewind) are skipped.
  size_t end = send_index;
  size_t count = 0;
  uint64_t bytes = 0;
  uint64_t walked_bytes = 0;
  uint64_t first_sequence = 0;
  uint64_t last_sequence = 0;
  while (end < queue.size() && count < async.batch_messages_max) {
    Message& m = queue[end];
    if (!m.acknowledged) {
      if (count > 0 && bytes + m.bytes() > async.batch_bytes_max) break;
      if (m.sequence == 0) m.sequence = next_sequence++;
      m.last_request = request_id;
      if (count == 0) first_sequence = m.sequence;
      last_sequence = m.sequence;
      ++count;
      bytes += m.bytes();
    }
    walked_bytes += m.bytes();
    ++end;
  }
  const size_t begin = send_index;
  send_index = end;
  unsent_bytes -= walked_bytes;
  if (count == 0) return;

  builder.Clear();
  ci::BuildPublishRequest(
      builder, request_id, producer_id, queue.begin() + static_cast<ptrdiff_t>(begin),
      queue.begin() + static_cast<ptrdiff_t>(end),
      [request_id](const Message& m) { return !m.acknowledged && m.last_request == request_id; },
      scratch);
  if (!connection->Send(builder)) {
    attempts.Record(connection->endpoint(), connection->last_error());
    Abandon();
    rotation.Next();
    return;
  }
  inflight.push_back(InFlight{request_id, now, first_sequence, last_sequence});
}

void AsyncPublisher::Impl::ReceiveReplies(ci::Clock::time_point now) {
  // A deadline in the past takes only what is already queued.
  while (connection) {
    const std::unique_ptr<ci::Frame> frame = connection->Receive(ci::Clock::time_point{});
    if (!frame) return;
    HandleReply(*frame, now);
  }
}

size_t AsyncPublisher::Impl::IndexOf(uint64_t sequence) const {
  if (queue.empty() || queue.front().sequence == 0 || sequence < queue.front().sequence) {
    return kNoIndex;
  }
  const uint64_t index = sequence - queue.front().sequence;
  if (index >= queue.size() || queue[index].sequence != sequence) return kNoIndex;
  return static_cast<size_t>(index);
}

size_t AsyncPublisher::Impl::OldestCarriedBy(const InFlight& request) const {
  for (uint64_t s = request.first_sequence; s <= request.last_sequence && s != 0; ++s) {
    const size_t i = IndexOf(s);
    if (i == kNoIndex) continue;
    if (!queue[i].acknowledged && queue[i].last_request == request.request_id) return i;
  }
  return kNoIndex;
}

void AsyncPublisher::Impl::Rewind(size_t index) {
  if (index == kNoIndex || index >= send_index) return;
  for (size_t i = index; i < send_index; ++i) unsent_bytes += queue[i].bytes();
  send_index = index;
}

void AsyncPublisher::Impl::Abandon() {
  // The unanswered requests may be stored: their messages must never give
  // their sequences back.
  if (!inflight.empty()) {
    const uint64_t oldest = inflight.front().request_id;
    for (size_t i = 0; i < send_index; ++i) {
      if (!queue[i].acknowledged && queue[i].last_request >= oldest) queue[i].maybe_stored = true;
    }
  }
  inflight.clear();
  connection.reset();  // linger 0: a late reply can never reach a new socket
  Rewind(0);
}

void AsyncPublisher::Impl::HandleReply(const ci::Frame& frame, ci::Clock::time_point now) {
  const wire::ClientEnvelope& envelope = frame.envelope();
  const auto it = std::find_if(inflight.begin(), inflight.end(), [&](const InFlight& f) {
    return f.request_id == envelope.request_id();
  });
  // Ignore replies whose request_id we no longer wait for (protocol.md).
  if (it == inflight.end()) return;
  last_reply_at = now;
  const InFlight request = *it;
  inflight.erase(it);
  const std::string endpoint = connection->endpoint();

  if (const wire::PublishReply* reply = envelope.body_as_PublishReply()) {
    busy_backoff = ci::kBusyBackoffMin;
    redirects_in_a_row = 0;
    bool progress = false;
    if (const auto* results = reply->results()) {
      for (const wire::PublishResult* result : *results) {
        const size_t i = IndexOf(result->sequence());
        if (i == kNoIndex || queue[i].acknowledged) continue;  // answered before
        Message& m = queue[i];
        switch (result->error()) {
          case wire::ErrorCode::None:
            m.acknowledged = true;
            m.offset = result->offset();
            progress = true;
            break;
          case wire::ErrorCode::DuplicateTooOld:
            m.acknowledged = true;
            m.offset_forgotten = true;
            progress = true;
            break;
          default:
            // OutOfSequence, StaleLeader: not stored; resent below. A code
            // protocol.md does not allow here is treated the same way.
            break;
        }
      }
    }
    // Everything of this request not acknowledged (refused per message, or
    // left unanswered) is resent, with what follows it.
    const size_t oldest = OldestCarriedBy(request);
    if (oldest != kNoIndex) {
      attempts.Record(endpoint, "asked to resend (OutOfSequence or StaleLeader)");
      Rewind(oldest);
      if (progress) {
        resend_backoff = milliseconds{0};
      } else {
        // A broker that keeps answering the same way is not flooded.
        resend_backoff = resend_backoff.count() == 0
                             ? ci::kBusyBackoffMin
                             : std::min(resend_backoff * 2, ci::kBusyBackoffMax);
        send_not_before = now + resend_backoff;
      }
    }
    return;
  }

  const wire::Error* error = envelope.body_as_Error();
  if (error == nullptr) {
    attempts.Record(endpoint, std::string("answered with a ") +
                                  wire::EnumNameBody(envelope.body_type()) + " frame");
    Abandon();
    rotation.Next();
    return;
  }
  attempts.Record(endpoint, ci::Describe(*error));
  switch (error->code()) {
    case wire::ErrorCode::NotLeader: {
      const std::string leader = ci::ToString(error->leader_endpoint());
      // Two followers naming each other, or a leader that just lost its
      // quorum: after the first hop, give the election a moment.
      if (redirects_in_a_row++ > 0) send_not_before = now + ci::kRetryPause;
      Abandon();
      if (!leader.empty() && ci::ToZmqEndpoint(leader) != ci::ToZmqEndpoint(endpoint)) {
        rotation.RedirectTo(leader);
      } else {
        rotation.Next();
      }
      return;
    }
    case wire::ErrorCode::Busy:
      // The leader's queue is full: same broker, after a growing pause. The
      // requests behind this one fail OutOfSequence and are resent too.
      Rewind(OldestCarriedBy(request));
      send_not_before = now + busy_backoff;
      busy_backoff = std::min(busy_backoff * 2, ci::kBusyBackoffMax);
      return;
    case wire::ErrorCode::TooLarge:
    case wire::ErrorCode::BadRequest:
      // Resending it as is can never succeed. Stop sending and settle once
      // the requests in flight are answered (HandleRefusal).
      Rewind(OldestCarriedBy(request));
      refusal = Refusal{request.request_id,
                        "broker " + endpoint + " refused the publish request (" +
                            ci::Describe(*error) + ")"};
      return;
    case wire::ErrorCode::Unavailable:
    default:
      // No leader known (an election is running), a broker-side failure
      // (Internal), or a code this client does not know: try elsewhere.
      send_not_before = now + ci::kRetryPause;
      Abandon();
      rotation.Next();
      return;
  }
}

void AsyncPublisher::Impl::HandleRefusal(ci::Clock::time_point now) {
  const uint64_t request_id = refusal->request_id;
  const std::string text = std::move(refusal->text);
  refusal.reset();
  size_t refused = 0;
  while (refused < queue.size() && queue[refused].last_request == request_id &&
         !queue[refused].acknowledged) {
    ++refused;
  }
  bool renumber_safe = refused > 0;
  for (const Message& m : queue) renumber_safe = renumber_safe && !m.maybe_stored;
  if (!renumber_safe) {
    // Older messages are still unresolved (settle them first), or a message
    // may be stored and so must keep its sequence: resend after a pause.
    Rewind(0);
    send_not_before = now + busy_backoff;
    busy_backoff = std::min(busy_backoff * 2, ci::kBusyBackoffMax);
    return;
  }
  // The refused messages are at the front and certainly not stored (a
  // refusal stores nothing; everything sent after them was refused or out of
  // sequence). Fail them and give their sequences back, so the producer's
  // sequences stay contiguous; the rest are numbered again when sent.
  next_sequence = queue.front().sequence;
  FailFront(refused, Error{ErrorCode::kRejected,
                           text + "; it was never stored. Fix the message's size or content "
                                  "(see the brokers' limits) and publish it again",
                           0});
  for (Message& m : queue) {
    m.sequence = 0;
    m.last_request = 0;
  }
  Rewind(0);
}

void AsyncPublisher::Impl::CheckTimeouts(ci::Clock::time_point now) {
  if (inflight.empty() || now < ReplyDeadline()) return;
  // No answer: the request may or may not be stored. Resend the same
  // sequences elsewhere, from a fresh socket.
  std::string outcome = "no reply within " + ci::Ms(options.request_timeout);
  if (connection && connection->frames_ignored() > 0) {
    outcome += "; ignored " + std::to_string(connection->frames_ignored()) +
               " unreadable frame(s), the last: " + connection->last_ignored_reason();
  }
  attempts.Record(connection ? connection->endpoint() : rotation.Target(), std::move(outcome));
  Abandon();
  rotation.Next();
}

void AsyncPublisher::Impl::ResolveFront() {
  size_t count = 0;
  uint64_t bytes = 0;
  while (!queue.empty() && queue.front().acknowledged) {
    Message& m = queue.front();
    if (m.offset_forgotten) {
      m.done(Error{ErrorCode::kProtocol,
                   "message " + std::to_string(m.sequence) + " of producer " +
                       std::to_string(producer_id) +
                       " is stored exactly once, but the broker answered DuplicateTooOld: its "
                       "offset is forgotten",
                   0});
    } else {
      m.done(m.offset);
    }
    bytes += m.bytes();
    if (send_index > 0) {
      --send_index;
    } else {
      unsent_bytes -= m.bytes();
    }
    queue.pop_front();
    ++count;
  }
  Release(count, bytes);
}

void AsyncPublisher::Impl::FailFront(size_t count, const Error& error) {
  uint64_t bytes = 0;
  for (size_t n = 0; n < count && !queue.empty(); ++n) {
    Message& m = queue.front();
    if (m.acknowledged && !m.offset_forgotten) {
      m.done(m.offset);  // acknowledged after all: it gets its offset
    } else {
      m.done(error);
    }
    bytes += m.bytes();
    if (send_index > 0) {
      --send_index;
    } else {
      unsent_bytes -= m.bytes();
    }
    queue.pop_front();
  }
  Release(count, bytes);
}

void AsyncPublisher::Impl::Release(size_t count, uint64_t bytes) {
  if (count == 0) return;
  resolved_here += count;
  {
    std::lock_guard lock(mutex);
    resolved += count;
    window_messages -= count;
    window_bytes -= bytes;
  }
  room_cv.notify_all();
  resolved_cv.notify_all();
}

// ------------------------------------------------------------- public API

AsyncPublisher::AsyncPublisher(ClientOptions options, AsyncPublisherOptions async_options,
                               uint64_t producer_id)
    : impl_(std::make_unique<Impl>(std::move(options), async_options, producer_id)) {
  while (impl_->producer_id == 0) impl_->producer_id = ci::RandomU64();
  impl_->invalid = ci::ValidateOptions(impl_->options);
  const AsyncPublisherOptions& a = impl_->async;
  if (!impl_->invalid && (a.batch_messages_max == 0 || a.batch_bytes_max == 0 ||
                          a.window_messages_max == 0 || a.window_bytes_max == 0 ||
                          a.requests_inflight_max == 0 || a.linger.count() < 0 ||
                          a.batch_bytes_max > ci::kRequestBytesMax)) {
    impl_->invalid = Error{ErrorCode::kInvalidArgument,
                           "AsyncPublisherOptions: the batch, window and in-flight limits must "
                           "be positive (batch_bytes_max at most 1 GiB) and linger not "
                           "negative",
                           0};
  }
  impl_->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (impl_->wake_fd < 0) {
    impl_->invalid = Error{ErrorCode::kUnavailable,
                           std::string("cannot create an eventfd for the I/O thread: ") +
                               std::strerror(errno),
                           0};
  }
  if (impl_->invalid) {
    std::lock_guard lock(impl_->mutex);
    impl_->thread_ended = true;
    impl_->closed = true;
    return;
  }
  impl_->thread = std::thread([impl = impl_.get()] { impl->Run(); });
}

AsyncPublisher::~AsyncPublisher() {
  impl_->Close(impl_->options.call_timeout);
  if (impl_->wake_fd >= 0) close(impl_->wake_fd);
}

std::optional<Error> AsyncPublisher::Publish(std::string_view payload, std::string_view key,
                                             PublishCallback done) {
  try {
    return impl_->Publish(payload, key, std::move(done));
  } catch (const std::exception& e) {
    return Error{ErrorCode::kUnavailable, std::string("publish failed: ") + e.what(), 0};
  }
}

std::future<Result<uint64_t>> AsyncPublisher::Publish(std::string_view payload,
                                                      std::string_view key) {
  auto promise = std::make_shared<std::promise<Result<uint64_t>>>();
  std::future<Result<uint64_t>> future = promise->get_future();
  std::optional<Error> refused =
      Publish(payload, key, [promise](const Result<uint64_t>& r) { promise->set_value(r); });
  if (refused) promise->set_value(std::move(*refused));
  return future;
}

std::optional<Error> AsyncPublisher::Flush(milliseconds timeout) { return impl_->Flush(timeout); }

std::optional<Error> AsyncPublisher::Close(milliseconds timeout) { return impl_->Close(timeout); }

uint64_t AsyncPublisher::producer_id() const { return impl_->producer_id; }

}  // namespace ordo
