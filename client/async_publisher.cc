// AsyncPublisher: exactly-once publishing (docs/protocol.md, "Publishing")
// with batching and several requests in flight, driven by one I/O thread.
//
// Threads: callers of Publish append to `incoming` under the mutex and wake
// the I/O thread through an eventfd; the I/O thread alone owns the ZeroMQ
// socket and the session below, and runs the callbacks.
//
// The exactly-once state and the rules for every answer are the
// PublishSession's (client/internal/publish_session.h), shared with the
// synchronous Publisher; this file does the I/O and the timing around it:
// when a batch goes (full, lingered, flushing, or a resend), when the broker
// counts as silent, and the callbacks. `pending` runs beside the session's
// queue, one entry per message, in the same order.
//
// Where it differs from the Publisher, on purpose:
//   - batches and a window (AsyncPublisherOptions) instead of the whole
//     queue in one request;
//   - backoffs and the attempt log run for the publisher's life;
//   - a refusal whose messages may all be stored is resent after a pause
//     (the Publisher's call returns kRejected): the publisher never gives up
//     on a message by itself;
//   - failing to create a ZeroMQ context is retried like a broker that
//     cannot be reached: there is no call to return it from.

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
#include "client/internal/publish_session.h"
#include "ordo/client.h"

namespace ordo {
namespace {

namespace ci = client_internal;
using std::chrono::milliseconds;

}  // namespace

struct AsyncPublisher::Impl {
  // A message accepted by Publish, until the I/O thread takes it.
  struct Incoming {
    std::string key;
    std::string payload;
    PublishCallback done;
  };
  // What the I/O thread keeps of a message beside the session's copy.
  struct Pending {
    PublishCallback done;
    ci::Clock::time_point queued_at;
  };

  Impl(ClientOptions options_in, AsyncPublisherOptions async_in, uint64_t producer_id)
      : options(std::move(options_in)),
        async(async_in),
        session(producer_id, &options.brokers,
                ci::PublishLimits{async.batch_messages_max, async.batch_bytes_max,
                                  async.requests_inflight_max}) {}

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
  void CheckTimeouts(ci::Clock::time_point now);
  // Closes the socket if the step says so, and holds sending back as it
  // says.
  void Follow(const ci::PublishStep& step, ci::Clock::time_point now);
  // Runs the callbacks of the resolved messages at the front, in order;
  // with `all`, of every message (closing).
  void Resolve(bool all, const Error& unresolved);
  // Tells the callers `count` messages of `bytes` are resolved.
  void Release(size_t count, uint64_t bytes);
  milliseconds PollTimeout(ci::Clock::time_point now) const;
  // When the broker counts as silent: request_timeout after the oldest
  // request in flight was sent or after the last reply, whichever is later.
  // Requests pipelined behind others wait at the leader, so the age of one
  // request says nothing; a broker that answers nothing at all has failed.
  ci::Clock::time_point ReplyDeadline() const {
    return std::max(sent_at.front().second, last_reply_at) + options.request_timeout;
  }

  const ClientOptions options;
  const AsyncPublisherOptions async;
  std::optional<Error> invalid;  // the options' error, returned by Publish

  // Shared with callers, under `mutex`.
  std::mutex mutex;
  std::condition_variable room_cv;      // window room freed, or closing
  std::condition_variable resolved_cv;  // `resolved` advanced, or the thread ended
  std::vector<Incoming> incoming;
  size_t window_messages = 0;
  uint64_t window_bytes = 0;
  uint64_t accepted = 0;     // messages accepted by Publish, ever
  uint64_t resolved = 0;     // of those, resolved (callback run)
  uint64_t flush_until = 0;  // ignore linger until `resolved` reaches it
  bool closing = false;      // Close began: Publish refuses
  bool stop = false;         // Close's wait ended: the thread fails the rest and ends
  bool thread_ended = false;
  std::string thread_error;  // why the thread ended early, if it did
  ErrorCode thread_error_code = ErrorCode::kClosed;  // what its messages fail with

  std::mutex close_mutex;  // one Close at a time
  bool closed = false;     // under close_mutex
  int wake_fd = -1;
  std::thread thread;

  // I/O thread only, except `session.producer_id()`, which never changes.
  std::vector<Incoming> taking;  // swapped with `incoming`, keeps its capacity
  ci::PublishSession session;
  std::deque<Pending> pending;  // beside the session's queue
  // Send times of the requests in flight, in request_id order; entries the
  // session no longer has in flight are trimmed from the front.
  std::deque<std::pair<uint64_t, ci::Clock::time_point>> sent_at;
  uint64_t resolved_here = 0;
  bool flushing = false;
  ci::Clock::time_point send_not_before{};
  ci::Clock::time_point last_reply_at{};
  flatbuffers::FlatBufferBuilder builder{1 << 16};
  // Declared before the connection, so the socket closes before the context.
  ci::LazyContext context;
  std::unique_ptr<ci::Connection> connection;
  // A broker refused the handshake (kAuthenticationFailed): the thread ends,
  // failing every message with it, as no broker will take this key.
  std::optional<Error> fatal;
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
  Incoming message;
  message.key.assign(key);
  message.payload.assign(payload);
  message.done = std::move(done);

  std::unique_lock lock(mutex);
  auto closed_error = [&] {
    return Error{thread_ended ? thread_error_code : ErrorCode::kClosed,
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
  if (fatal) {
    std::lock_guard lock(mutex);
    thread_error = fatal->message;
    thread_error_code = fatal->code;
  }
  connection.reset();
  // Whatever is left resolves with kClosed, in publish order.
  std::string why;
  {
    std::lock_guard lock(mutex);
    why = fatal ? fatal->message + " The message was not acknowledged."
          : thread_error.empty()
              ? "the AsyncPublisher was closed before a broker acknowledged the message; it "
                "may or may not be stored"
              : "the AsyncPublisher stopped (" + thread_error +
                    ") before the message was "
                    "acknowledged; it may or may not be stored";
  }
  if (!session.empty()) why += ". Brokers tried: " + session.attempts().Summary();
  const Error error{fatal ? fatal->code : ErrorCode::kClosed, why, 0};
  while (true) {
    Resolve(/*all=*/true, error);
    {
      std::lock_guard lock(mutex);
      if (incoming.empty()) {
        thread_ended = true;
        break;
      }
    }
    TakeIncoming(ci::Clock::now());
  }
  room_cv.notify_all();
  resolved_cv.notify_all();
}

void AsyncPublisher::Impl::Loop() {
  while (true) {
    ci::Clock::time_point now = ci::Clock::now();
    TakeIncoming(now);
    {
      std::lock_guard lock(mutex);
      if (stop) return;
    }
    Resolve(/*all=*/false, Error{});
    SendReady(now);

    if (fatal) return;
    void* events = connection ? connection->events_handle() : nullptr;
    zmq_pollitem_t items[3] = {{nullptr, wake_fd, ZMQ_POLLIN, 0},
                               {connection ? connection->handle() : nullptr, 0, ZMQ_POLLIN, 0},
                               {events, 0, ZMQ_POLLIN, 0}};
    const int count = connection ? (events ? 3 : 2) : 1;
    const milliseconds timeout = PollTimeout(now);
    if (zmq_poll(items, count, static_cast<long>(timeout.count())) < 0 && zmq_errno() != EINTR) {
      throw std::runtime_error(std::string("zmq_poll: ") + zmq_strerror(zmq_errno()));
    }
    if (items[0].revents & ZMQ_POLLIN) {
      uint64_t value = 0;
      (void)!read(wake_fd, &value, sizeof value);
    }
    now = ci::Clock::now();
    if (count == 3 && (items[2].revents & ZMQ_POLLIN) != 0) {
      connection->ReadHandshakeEvents();
      if (connection->refusal()) {
        fatal = *connection->refusal();
        return;
      }
    }
    if (connection) ReceiveReplies(now);
    CheckTimeouts(now);
  }
}

milliseconds AsyncPublisher::Impl::PollTimeout(ci::Clock::time_point now) const {
  std::optional<ci::Clock::time_point> until;
  auto sooner = [&](ci::Clock::time_point t) { until = until ? std::min(*until, t) : t; };
  if (session.inflight() > 0) sooner(ReplyDeadline());
  if (session.CanSend()) {
    // SendReady held back: for linger, or for a pause.
    ci::Clock::time_point at = send_not_before;
    if (!session.NextIsResend() && !flushing) {
      at = std::max(at, pending[session.send_index()].queued_at + async.linger);
    }
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
  for (Incoming& m : taking) {
    session.Enqueue(std::move(m.key), std::move(m.payload));
    pending.push_back(Pending{std::move(m.done), now});
  }
  taking.clear();
}

bool AsyncPublisher::Impl::EnsureConnection(ci::Clock::time_point now) {
  if (connection) return true;
  Result<std::unique_ptr<ci::Connection>> opened =
      ci::Connect(context, session.Target(), options.credentials);
  if (!opened.ok()) {
    if (opened.error().code == ErrorCode::kAuthenticationFailed) fatal = opened.error();
    Follow(session.OnConnectFailed(opened.error().message), now);
    return false;
  }
  connection = std::move(opened.value());
  return true;
}

void AsyncPublisher::Impl::SendReady(ci::Clock::time_point now) {
  if (now < send_not_before) return;
  while (session.CanSend()) {
    const bool resend = session.NextIsResend();
    const bool full = session.unsent_messages() >= async.batch_messages_max ||
                      session.unsent_bytes() >= async.batch_bytes_max;
    const bool lingered = now >= pending[session.send_index()].queued_at + async.linger;
    if (!(resend || full || lingered || flushing)) return;
    if (!EnsureConnection(now)) return;
    SendOneRequest(now);
    if (!connection) return;  // the send failed: switched brokers
  }
}

void AsyncPublisher::Impl::SendOneRequest(ci::Clock::time_point now) {
  const uint64_t request_id = session.BuildRequest(builder);
  if (request_id == 0) return;
  if (!connection->Send(builder)) {
    Follow(session.OnSendFailed(connection->last_error()), now);
    return;
  }
  sent_at.emplace_back(request_id, now);
}

void AsyncPublisher::Impl::ReceiveReplies(ci::Clock::time_point now) {
  // A deadline in the past takes only what is already queued.
  while (connection) {
    const std::unique_ptr<ci::Frame> frame = connection->Receive(ci::Clock::time_point{});
    if (!frame) return;
    const ci::PublishStep step = session.OnReply(frame->envelope());
    if (!step.matched) continue;  // an answer to a request we no longer wait for
    last_reply_at = now;
    Follow(step, now);
  }
}

void AsyncPublisher::Impl::Follow(const ci::PublishStep& step, ci::Clock::time_point now) {
  // A rejection needs nothing here: its messages resolve at the front.
  if (step.reconnect) connection.reset();  // linger 0: a late reply never reaches a new socket
  if (step.pause.count() > 0) send_not_before = now + step.pause;
  const uint64_t oldest = session.oldest_inflight();
  while (!sent_at.empty() && (oldest == 0 || sent_at.front().first < oldest)) sent_at.pop_front();
}

void AsyncPublisher::Impl::CheckTimeouts(ci::Clock::time_point now) {
  if (session.inflight() == 0 || now < ReplyDeadline()) return;
  // No answer: the request may or may not be stored. Resend the same
  // sequences elsewhere, from a fresh socket.
  std::string outcome = "no reply within " + ci::Ms(options.request_timeout);
  if (connection && connection->frames_ignored() > 0) {
    outcome += "; ignored " + std::to_string(connection->frames_ignored()) +
               " unreadable frame(s), the last: " + connection->last_ignored_reason();
  }
  Follow(session.OnSilence(std::move(outcome)), now);
}

void AsyncPublisher::Impl::Resolve(bool all, const Error& unresolved) {
  size_t count = 0;
  uint64_t bytes = 0;
  ci::PublishOutcome outcome;
  while (all ? session.PopAny(&outcome) : session.PopResolved(&outcome)) {
    PublishCallback done = std::move(pending.front().done);
    pending.pop_front();
    switch (outcome.kind) {
      case ci::PublishOutcome::Kind::kStored:
        done(outcome.offset);
        break;
      case ci::PublishOutcome::Kind::kOffsetForgotten:
        done(Error{ErrorCode::kProtocol,
                   "message " + std::to_string(outcome.sequence) + " of producer " +
                       std::to_string(session.producer_id()) +
                       " is stored exactly once, but the broker answered DuplicateTooOld: its "
                       "offset is forgotten",
                   0});
        break;
      case ci::PublishOutcome::Kind::kRejected:
        done(Error{session.rejection_code(), session.rejection(), 0});
        break;
      case ci::PublishOutcome::Kind::kUnresolved:
        done(unresolved);
        break;
    }
    bytes += outcome.bytes;
    ++count;
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
    : impl_(std::make_unique<Impl>(std::move(options), async_options,
                                   ci::ProducerIdOrRandom(producer_id))) {
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

uint64_t AsyncPublisher::producer_id() const { return impl_->session.producer_id(); }

}  // namespace ordo
