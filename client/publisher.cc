// Publisher: exactly-once publishing over retries (docs/protocol.md,
// "Publishing").
//
// State: the producer id, the next sequence to assign, and the queue of
// unacknowledged messages in sequence order. Every request carries the whole
// queue, oldest first, so a retry always resends the same sequences and the
// broker's (producer, sequence) check makes it idempotent.
//
// One attempt = one Publish request to one broker, answered by either
//   - PublishReply: per-message results; acknowledged messages leave the
//     queue, OutOfSequence / StaleLeader ones stay and are resent at once;
//   - Error: NotLeader (go to leader_endpoint, or the next broker),
//     Unavailable (pause, next broker), Busy (back off, same broker),
//     TooLarge / BadRequest (give up: the request can never succeed);
//   - nothing within request_timeout: close the socket (so a late reply can
//     never be matched), next broker, resend.
// until the queue is empty or call_timeout has passed.

#include <algorithm>
#include <deque>
#include <exception>
#include <utility>

#include "client/internal/connection.h"
#include "client/internal/publish_core.h"
#include "ordo/client.h"

namespace ordo {
namespace {

namespace ci = client_internal;

using ci::kMessageOverheadBytes;
using ci::kRequestBytesMax;

}  // namespace

struct Publisher::Impl {
  // A message assigned a sequence and not yet acknowledged.
  struct Pending {
    uint64_t sequence = 0;
    std::string key;
    std::string payload;
    // A request holding it timed out, so it may be stored. Only messages
    // that are certainly not stored may give their sequence back.
    bool maybe_stored = false;
    // Set while reading a PublishReply; the message then leaves the queue.
    bool acknowledged = false;
  };

  Impl(ClientOptions options_in, uint64_t producer_id_in)
      : options(std::move(options_in)), producer_id(producer_id_in), rotation(&options.brokers) {}

  Result<std::vector<uint64_t>> PublishBatch(const std::vector<OutgoingMessage>& messages);

  // Builds the Publish request holding the whole queue.
  void BuildRequest(uint64_t request_id, flatbuffers::FlatBufferBuilder& builder) const;
  // The endpoint the next attempt goes to.
  const std::string& Target() const { return rotation.Target(); }
  void DropConnection() { connection.reset(); }
  // Round robin over ClientOptions::brokers, with a fresh socket.
  void NextBroker() {
    DropConnection();
    rotation.Next();
  }
  // NotLeader with a named leader: go there, even if it is not in the list.
  void RedirectTo(const std::string& leader) {
    DropConnection();
    rotation.RedirectTo(leader);
  }
  // "sequences 4..9 of producer 0x..." for messages.
  std::string DescribeQueue() const;
  // Drops the messages that are certainly not stored (the newest ones whose
  // requests all got a definite answer) and gives their sequences back, so
  // the producer's sequences stay contiguous. Returns how many.
  size_t DropUnstoredTail();

  ClientOptions options;
  uint64_t producer_id;
  uint64_t next_sequence = 1;
  std::deque<Pending> unacked;
  uint64_t unacked_bytes = 0;
  ci::BrokerRotation rotation;
  uint64_t next_request_id = 1;
  // Declared before the connection, so the socket closes before the context.
  ci::LazyContext context;
  std::unique_ptr<ci::Connection> connection;
};

std::string Publisher::Impl::DescribeQueue() const {
  std::string text = std::to_string(unacked.size()) + " message(s)";
  if (!unacked.empty()) {
    text += " (sequences " + std::to_string(unacked.front().sequence) + ".." +
            std::to_string(unacked.back().sequence) + " of producer " +
            std::to_string(producer_id) + ")";
  }
  return text;
}

size_t Publisher::Impl::DropUnstoredTail() {
  // The maybe-stored messages are a prefix of the queue: a request holds the
  // whole queue, so when one times out every older message was in it too.
  size_t dropped = 0;
  while (!unacked.empty() && !unacked.back().maybe_stored) {
    next_sequence = unacked.back().sequence;
    unacked_bytes -= unacked.back().key.size() + unacked.back().payload.size();
    unacked.pop_back();
    ++dropped;
  }
  return dropped;
}

void Publisher::Impl::BuildRequest(uint64_t request_id,
                                   flatbuffers::FlatBufferBuilder& builder) const {
  std::vector<flatbuffers::Offset<wire::ClientMessage>> scratch;
  scratch.reserve(unacked.size());
  ci::BuildPublishRequest(builder, request_id, producer_id, unacked.begin(), unacked.end(),
                          [](const Pending&) { return true; }, scratch);
}

Result<std::vector<uint64_t>> Publisher::Impl::PublishBatch(
    const std::vector<OutgoingMessage>& messages) {
  if (auto invalid = ci::ValidateOptions(options)) return *invalid;
  uint64_t call_bytes = 0;
  for (const OutgoingMessage& message : messages) {
    call_bytes += message.key.size() + message.payload.size();
  }
  if (unacked_bytes + call_bytes > kRequestBytesMax) {
    return Error{ErrorCode::kInvalidArgument,
                 "this call's messages (" + std::to_string(call_bytes) + " bytes) and the " +
                     std::to_string(unacked.size()) + " still-unacknowledged ones (" +
                     std::to_string(unacked_bytes) + " bytes) exceed one request's " +
                     std::to_string(kRequestBytesMax) +
                     " bytes; publish smaller batches (brokers accept 16 MiB frames by "
                     "default)",
                 0};
  }
  // An empty call with queued messages flushes them; with none it is a no-op.
  if (messages.empty() && unacked.empty()) return std::vector<uint64_t>{};

  // Sequences are assigned in call order, contiguous, before any I/O.
  const uint64_t call_first = next_sequence;
  for (const OutgoingMessage& message : messages) {
    unacked.push_back(Pending{next_sequence++, message.key, message.payload, false, false});
  }
  unacked_bytes += call_bytes;
  const uint64_t call_end = next_sequence;  // one past this call's last sequence
  auto in_call = [&](uint64_t sequence) { return sequence >= call_first && sequence < call_end; };

  std::vector<uint64_t> offsets(messages.size(), 0);
  std::vector<uint64_t> offsets_forgotten;  // this call's DuplicateTooOld sequences
  ci::AttemptLog attempts;
  bool last_was_refusal = false;  // the last attempt got an Error, not silence
  std::chrono::milliseconds busy_backoff = ci::kBusyBackoffMin;
  std::chrono::milliseconds resend_backoff{0};
  int redirects_in_a_row = 0;
  const ci::Clock::time_point start = ci::Clock::now();
  const ci::Clock::time_point deadline = start + options.call_timeout;

  while (!unacked.empty()) {
    const ci::Clock::time_point now = ci::Clock::now();
    if (now >= deadline) {
      const ErrorCode code = last_was_refusal ? ErrorCode::kUnavailable : ErrorCode::kTimeout;
      return Error{code,
                   "publish not acknowledged within call_timeout (" + ci::Ms(options.call_timeout) +
                       "): " + DescribeQueue() +
                       " still pending. Brokers tried: " + attempts.Summary() +
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
          ci::Connection::Open(*zmq_context.value(), Target());
      if (!opened.ok()) {
        attempts.Record(Target(), opened.error().message);
        last_was_refusal = false;
        NextBroker();
        ci::SleepAtMost(ci::kRetryPause, deadline);
        continue;
      }
      connection = std::move(opened.value());
    }
    const std::string endpoint = connection->endpoint();

    const uint64_t request_id = next_request_id++;
    flatbuffers::FlatBufferBuilder builder(static_cast<size_t>(unacked_bytes) +
                                           unacked.size() * kMessageOverheadBytes + 64);
    BuildRequest(request_id, builder);
    if (!connection->Send(builder)) {
      attempts.Record(endpoint, connection->last_error());
      last_was_refusal = false;
      NextBroker();
      continue;
    }

    const ci::Clock::time_point attempt_deadline =
        ci::EarlierOf(ci::Clock::now() + options.request_timeout, deadline);
    const std::unique_ptr<ci::Frame> reply =
        ci::AwaitReply(*connection, request_id, attempt_deadline);
    if (!reply) {
      // No answer: the request may or may not have been stored. Resend the
      // same sequences elsewhere, from a fresh socket.
      for (Pending& pending : unacked) pending.maybe_stored = true;
      std::string outcome = "no reply within " + ci::Ms(options.request_timeout);
      if (connection->frames_ignored() > 0) {
        outcome += "; ignored " + std::to_string(connection->frames_ignored()) +
                   " unreadable frame(s), the last: " + connection->last_ignored_reason();
      }
      attempts.Record(endpoint, std::move(outcome));
      last_was_refusal = false;
      NextBroker();
      continue;
    }

    const wire::ClientEnvelope& envelope = reply->envelope();
    if (const wire::PublishReply* publish_reply = envelope.body_as_PublishReply()) {
      last_was_refusal = false;
      busy_backoff = ci::kBusyBackoffMin;
      redirects_in_a_row = 0;
      bool progress = false;
      bool resend = false;
      if (const auto* results = publish_reply->results()) {
        for (const wire::PublishResult* result : *results) {
          const uint64_t sequence = result->sequence();
          const auto it = std::lower_bound(
              unacked.begin(), unacked.end(), sequence,
              [](const Pending& pending, uint64_t s) { return pending.sequence < s; });
          // A result for a sequence we no longer wait for (answered twice)
          // changes nothing.
          if (it == unacked.end() || it->sequence != sequence || it->acknowledged) continue;
          switch (result->error()) {
            case wire::ErrorCode::None:
              if (in_call(sequence)) offsets[sequence - call_first] = result->offset();
              it->acknowledged = true;
              progress = true;
              break;
            case wire::ErrorCode::DuplicateTooOld:
              // Stored once, long ago; the broker forgot the offset. Only an
              // offset of this call is returned, so an older message's loss
              // of offset costs nothing.
              if (in_call(sequence)) offsets_forgotten.push_back(sequence);
              it->acknowledged = true;
              progress = true;
              break;
            case wire::ErrorCode::OutOfSequence:
            case wire::ErrorCode::StaleLeader:
              // Not stored; resend every unacknowledged message, oldest first.
              resend = true;
              break;
            default:
              return Error{ErrorCode::kProtocol,
                           "broker " + endpoint + " answered message " + std::to_string(sequence) +
                               " of producer " + std::to_string(producer_id) + " with " +
                               ci::WireCodeName(result->error()) +
                               ", which protocol.md does not allow for one message of a "
                               "PublishReply; the message stays queued. Check that client "
                               "and broker versions match.",
                           0};
          }
        }
      }
      for (const Pending& pending : unacked) {
        if (pending.acknowledged) unacked_bytes -= pending.key.size() + pending.payload.size();
      }
      std::erase_if(unacked, [](const Pending& pending) { return pending.acknowledged; });
      if (!unacked.empty()) {
        attempts.Record(endpoint, resend ? "asked to resend (OutOfSequence or StaleLeader)"
                                         : "left messages unanswered");
        // Resend at once while the broker makes progress; back off when it
        // keeps answering the same way, so a confused broker is not flooded.
        if (progress) {
          resend_backoff = std::chrono::milliseconds{0};
        } else {
          resend_backoff = resend_backoff.count() == 0
                               ? ci::kBusyBackoffMin
                               : std::min(resend_backoff * 2, ci::kBusyBackoffMax);
          ci::SleepAtMost(resend_backoff, deadline);
        }
      }
      continue;
    }

    const wire::Error* error = envelope.body_as_Error();
    if (error == nullptr) {
      attempts.Record(endpoint, std::string("answered with a ") +
                                    wire::EnumNameBody(envelope.body_type()) + " frame");
      last_was_refusal = false;
      NextBroker();
      continue;
    }
    attempts.Record(endpoint, ci::Describe(*error));
    last_was_refusal = true;
    switch (error->code()) {
      case wire::ErrorCode::NotLeader: {
        const std::string leader = ci::ToString(error->leader_endpoint());
        // Two followers naming each other, or a leader that just lost its
        // quorum: after the first hop, give the election a moment.
        if (redirects_in_a_row++ > 0) ci::SleepAtMost(ci::kRetryPause, deadline);
        if (!leader.empty() && ci::ToZmqEndpoint(leader) != ci::ToZmqEndpoint(endpoint)) {
          RedirectTo(leader);
        } else {
          NextBroker();
        }
        break;
      }
      case wire::ErrorCode::Busy:
        // The leader's queue is full: same broker, after a growing pause.
        ci::SleepAtMost(busy_backoff, deadline);
        busy_backoff = std::min(busy_backoff * 2, ci::kBusyBackoffMax);
        break;
      case wire::ErrorCode::TooLarge:
      case wire::ErrorCode::BadRequest: {
        // The request as a whole breaks a limit or is malformed: resending
        // it can never succeed. It "changes nothing", so the messages that
        // were never in a timed-out request are certainly not stored; they
        // are dropped and their sequences reused.
        const std::string queue = DescribeQueue();
        const size_t dropped = DropUnstoredTail();
        std::string text = "broker " + endpoint + " refused the publish request of " + queue +
                           " (" + ci::Describe(*error) + "). ";
        if (dropped > 0) {
          text += std::to_string(dropped) +
                  " message(s) that were never stored are dropped (their sequences will be "
                  "reused); fix their size or content and publish them again. ";
        }
        if (!unacked.empty()) {
          text += DescribeQueue() +
                  " stay queued because an earlier attempt timed out and they may be stored; "
                  "the next call resends them.";
        }
        return Error{ErrorCode::kRejected, std::move(text), 0};
      }
      case wire::ErrorCode::Unavailable:
      default:
        // No leader known (an election is running), a broker-side failure
        // (Internal), or a code this client does not know: try elsewhere.
        ci::SleepAtMost(ci::kRetryPause, deadline);
        NextBroker();
        break;
    }
  }

  if (!offsets_forgotten.empty()) {
    return Error{ErrorCode::kProtocol,
                 std::to_string(offsets_forgotten.size()) +
                     " message(s) of this call (first sequence " +
                     std::to_string(offsets_forgotten.front()) + " of producer " +
                     std::to_string(producer_id) +
                     ") are stored exactly once, but the broker answered DuplicateTooOld: an "
                     "earlier attempt stored them more than 65,536 sequences ago, so their "
                     "offsets are forgotten. Every message of the call is stored; publish "
                     "smaller batches to always learn every offset.",
                 0};
  }
  return offsets;
}

Publisher::Publisher(ClientOptions options, uint64_t producer_id)
    : impl_(std::make_unique<Impl>(std::move(options), producer_id)) {
  // 0 is "pick one": a random id makes two producers colliding (and so
  // deduplicating each other's messages) vanishingly unlikely.
  while (impl_->producer_id == 0) impl_->producer_id = ci::RandomU64();
}

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

uint64_t Publisher::producer_id() const { return impl_ ? impl_->producer_id : 0; }

}  // namespace ordo
