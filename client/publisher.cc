// Publisher: exactly-once publishing over retries (docs/protocol.md,
// "Publishing"), one blocking call at a time.
//
// The exactly-once state and the rules for every answer are the
// PublishSession's (client/internal/publish_session.h), shared with the
// AsyncPublisher; this file does the I/O and the timing around it. The
// session runs with its default limits: every request carries the whole
// queue (this call's messages behind any an earlier call left unacknowledged)
// and one request is in flight, so PublishBatch is one request per attempt.
//
// One attempt = one Publish request to one broker, answered by a reply the
// session reads (resend, redirect, back off, or a refusal that ends the call
// with kRejected), or by nothing within request_timeout: close the socket
// (so a late reply can never be matched), next broker, resend. Until every
// queued message is resolved or call_timeout has passed.
//
// Where it differs from the AsyncPublisher, on purpose:
//   - a call's backoffs and attempt log start afresh (PublishSession::
//     BeginCall): a call reports what happened to it;
//   - a refusal ends the call at once with kRejected, also when every refused
//     message may be stored and stays queued: resending the same request
//     would be refused again until call_timeout (the AsyncPublisher, which
//     never gives up on a message by itself, resends it after a pause);
//   - no ZeroMQ context is an error of the call (kUnavailable) rather than
//     one more broker to retry.

#include <exception>
#include <utility>

#include "client/internal/connection.h"
#include "client/internal/publish_core.h"
#include "client/internal/publish_session.h"
#include "ordo/client.h"

namespace ordo {
namespace {

namespace ci = client_internal;

using ci::kMessageOverheadBytes;
using ci::kRequestBytesMax;

}  // namespace

struct Publisher::Impl {
  Impl(ClientOptions options_in, uint64_t producer_id)
      : options(std::move(options_in)), session(producer_id, &options.brokers) {}

  Result<std::vector<uint64_t>> PublishBatch(const std::vector<OutgoingMessage>& messages);
  // Closes the socket if the step says so, and pauses as it says (never past
  // the call's deadline).
  void Follow(const ci::PublishStep& step, ci::Clock::time_point deadline) {
    if (step.reconnect) connection.reset();
    if (step.pause.count() > 0) ci::SleepAtMost(step.pause, deadline);
  }

  ClientOptions options;
  ci::PublishSession session;
  // Declared before the connection, so the socket closes before the context.
  ci::LazyContext context;
  std::unique_ptr<ci::Connection> connection;
};

Result<std::vector<uint64_t>> Publisher::Impl::PublishBatch(
    const std::vector<OutgoingMessage>& messages) {
  if (auto invalid = ci::ValidateOptions(options)) return *invalid;
  uint64_t call_bytes = 0;
  for (const OutgoingMessage& message : messages) {
    call_bytes += message.key.size() + message.payload.size();
  }
  if (session.queued_bytes() + call_bytes > kRequestBytesMax) {
    return Error{ErrorCode::kInvalidArgument,
                 "this call's messages (" + std::to_string(call_bytes) + " bytes) and the " +
                     std::to_string(session.size()) + " still-unacknowledged ones (" +
                     std::to_string(session.queued_bytes()) + " bytes) exceed one request's " +
                     std::to_string(kRequestBytesMax) +
                     " bytes; publish smaller batches (brokers accept 16 MiB frames by "
                     "default)",
                 0};
  }
  // An empty call with queued messages flushes them; with none it is a no-op.
  if (messages.empty() && session.empty()) return std::vector<uint64_t>{};

  // This call's messages are tickets [first_ticket, first_ticket + size).
  uint64_t first_ticket = 0;
  for (const OutgoingMessage& message : messages) {
    const uint64_t ticket = session.Enqueue(message.key, message.payload);
    if (first_ticket == 0) first_ticket = ticket;
  }
  session.BeginCall();

  std::vector<uint64_t> offsets(messages.size(), 0);
  std::vector<uint64_t> offsets_forgotten;  // this call's DuplicateTooOld sequences
  // Takes the resolved messages; only this call's offsets are returned.
  auto take_resolved = [&] {
    ci::PublishOutcome outcome;
    while (session.PopResolved(&outcome)) {
      if (first_ticket == 0 || outcome.ticket < first_ticket) continue;
      if (outcome.kind == ci::PublishOutcome::Kind::kStored) {
        offsets[outcome.ticket - first_ticket] = outcome.offset;
      } else if (outcome.kind == ci::PublishOutcome::Kind::kOffsetForgotten) {
        // Stored once, long ago; the broker forgot the offset. An older
        // call's message losing its offset costs nothing.
        offsets_forgotten.push_back(outcome.sequence);
      }
    }
  };
  bool last_was_refusal = false;  // the last attempt was answered, not silent
  const ci::Clock::time_point deadline = ci::Clock::now() + options.call_timeout;

  while (true) {
    take_resolved();
    if (session.empty()) break;
    if (ci::Clock::now() >= deadline) {
      const ErrorCode code = last_was_refusal ? ErrorCode::kUnavailable : ErrorCode::kTimeout;
      return Error{code,
                   "publish not acknowledged within call_timeout (" + ci::Ms(options.call_timeout) +
                       "): " + session.Describe() +
                       " still pending. Brokers tried: " + session.attempts().Summary() +
                       ". Check that the brokers run and listen on these client endpoints "
                       "(`scripts/cluster status`) and that a majority of them is up so a "
                       "leader can be elected. The messages stay queued and the next call "
                       "resends them, with the same sequences, ahead of its own.",
                   0};
    }
    if (!connection) {
      Result<zmq::context_t*> zmq_context = context.Get();
      if (!zmq_context.ok()) return zmq_context.error();
      Result<std::unique_ptr<ci::Connection>> opened =
          ci::Connection::Open(*zmq_context.value(), session.Target(), options.credentials);
      if (!opened.ok()) {
        if (opened.error().code == ErrorCode::kAuthenticationFailed) return opened.error();
        last_was_refusal = false;
        Follow(session.OnConnectFailed(opened.error().message), deadline);
        continue;
      }
      connection = std::move(opened.value());
    }

    flatbuffers::FlatBufferBuilder builder(static_cast<size_t>(session.unsent_bytes()) +
                                           session.unsent_messages() * kMessageOverheadBytes + 64);
    const uint64_t request_id = session.BuildRequest(builder);
    if (request_id == 0) {
      // Nothing to send with messages queued cannot happen with one request
      // in flight; never spin on it.
      ci::SleepAtMost(ci::kRetryPause, deadline);
      continue;
    }
    if (!connection->Send(builder)) {
      last_was_refusal = false;
      Follow(session.OnSendFailed(connection->last_error()), deadline);
      continue;
    }

    const ci::Clock::time_point attempt_deadline =
        ci::EarlierOf(ci::Clock::now() + options.request_timeout, deadline);
    const std::unique_ptr<ci::Frame> reply =
        ci::AwaitReply(*connection, request_id, attempt_deadline);
    if (!reply) {
      if (const std::optional<Error> refused = connection->refusal()) {
        // Not retried: another broker would refuse the key as well. What
        // was sent before (on an earlier handshake) may be stored: kept
        // queued, resent by the next call with the same sequences.
        Follow(session.OnSilence(refused->message), deadline);
        connection.reset();
        return Error{refused->code,
                     refused->message + " " + session.Describe() +
                         " stay queued; the next call resends them.",
                     0};
      }
      // No answer: the request may or may not have been stored. Resend the
      // same sequences elsewhere, from a fresh socket.
      std::string outcome = "no reply within " + ci::Ms(options.request_timeout);
      if (connection->frames_ignored() > 0) {
        outcome += "; ignored " + std::to_string(connection->frames_ignored()) +
                   " unreadable frame(s), the last: " + connection->last_ignored_reason();
      }
      last_was_refusal = false;
      Follow(session.OnSilence(std::move(outcome)), deadline);
      continue;
    }
    const ci::PublishStep step = session.OnReply(reply->envelope());
    last_was_refusal = step.refused;
    if (step.rejection) {
      // TooLarge / BadRequest / PermissionDenied: the request can never
      // succeed as it is.
      if (step.reconnect) connection.reset();
      take_resolved();
      return Error{step.rejection_code, *step.rejection, 0};
    }
    Follow(step, deadline);
  }

  if (!offsets_forgotten.empty()) {
    return Error{ErrorCode::kProtocol,
                 std::to_string(offsets_forgotten.size()) +
                     " message(s) of this call (first sequence " +
                     std::to_string(offsets_forgotten.front()) + " of producer " +
                     std::to_string(session.producer_id()) +
                     ") are stored exactly once, but the broker answered DuplicateTooOld: an "
                     "earlier attempt stored them more than 65,536 sequences ago, so their "
                     "offsets are forgotten. Every message of the call is stored; publish "
                     "smaller batches to always learn every offset.",
                 0};
  }
  return offsets;
}

Publisher::Publisher(ClientOptions options, uint64_t producer_id)
    : impl_(std::make_unique<Impl>(std::move(options), ci::ProducerIdOrRandom(producer_id))) {}

Publisher::~Publisher() = default;
Publisher::Publisher(Publisher&&) noexcept = default;
Publisher& Publisher::operator=(Publisher&&) noexcept = default;

Result<uint64_t> Publisher::Publish(std::string_view payload, std::string_view key) {
  Result<std::vector<uint64_t>> offsets =
      PublishBatch({OutgoingMessage{std::string(key), std::string(payload)}});
  if (!offsets.ok()) return offsets.error();
  return offsets.value().front();
}

Result<std::vector<uint64_t>> Publisher::PublishBatch(
    const std::vector<OutgoingMessage>& messages) {
  if (!impl_) {
    return Error{ErrorCode::kInvalidArgument, "this Publisher was moved from; use the new one", 0};
  }
  try {
    return impl_->PublishBatch(messages);
  } catch (const std::exception& e) {
    // No exception crosses the public API (STYLE.md 5). ZeroMQ errors are
    // handled below this; what remains is memory exhaustion and bugs.
    return Error{ErrorCode::kUnavailable, std::string("publish failed: ") + e.what(), 0};
  }
}

uint64_t Publisher::producer_id() const { return impl_ ? impl_->session.producer_id() : 0; }

}  // namespace ordo
