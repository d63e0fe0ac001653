// PublishSession: see client/internal/publish_session.h for the state and
// the rules; this file keeps to them.

#include "client/internal/publish_session.h"

#include <algorithm>
#include <utility>

namespace ordo::client_internal {

using std::chrono::milliseconds;

PublishSession::PublishSession(uint64_t producer_id, const std::vector<std::string>* brokers,
                               PublishLimits limits)
    : producer_id_(producer_id), limits_(limits), rotation_(brokers) {}

uint64_t PublishSession::Enqueue(std::string key, std::string payload) {
  Message m;
  m.ticket = next_ticket_++;
  m.key = std::move(key);
  m.payload = std::move(payload);
  queued_bytes_ += m.bytes();
  unsent_bytes_ += m.bytes();
  queue_.push_back(std::move(m));
  return queue_.back().ticket;
}

void PublishSession::BeginCall() {
  attempts_ = AttemptLog();
  busy_backoff_ = kBusyBackoffMin;
  resend_backoff_ = milliseconds{0};
  redirects_in_a_row_ = 0;
}

milliseconds PublishSession::Grow(milliseconds backoff) {
  return backoff.count() == 0 ? kBusyBackoffMin : std::min(backoff * 2, kBusyBackoffMax);
}

// ----------------------------------------------------------------- queue

PublishOutcome PublishSession::Pop(PublishOutcome::Kind kind) {
  Message& m = queue_.front();
  PublishOutcome out;
  out.kind = kind;
  out.ticket = m.ticket;
  out.sequence = m.sequence;
  out.offset = m.offset;
  out.bytes = m.bytes();
  if (kind == PublishOutcome::Kind::kRejected && m.sequence != 0) {
    // The first of a refused run: its sequence and every later one are
    // given back (none can be stored, see the header); the rest are
    // numbered again when sent. Nothing is in flight (PopResolved), so no
    // late answer can meet a renumbered message.
    next_sequence_ = m.sequence;
    for (Message& other : queue_) {
      other.sequence = 0;
      other.last_request = 0;
    }
  }
  if (send_index_ > 0) {
    --send_index_;
  } else {
    unsent_bytes_ -= m.bytes();
  }
  queued_bytes_ -= m.bytes();
  queue_.pop_front();
  return out;
}

bool PublishSession::PopResolved(PublishOutcome* out) {
  if (queue_.empty()) return false;
  const Message& m = queue_.front();
  if (m.acknowledged) {
    *out = Pop(m.offset_forgotten ? PublishOutcome::Kind::kOffsetForgotten
                                  : PublishOutcome::Kind::kStored);
    return true;
  }
  if (m.refused && inflight_.empty()) {
    *out = Pop(PublishOutcome::Kind::kRejected);
    return true;
  }
  return false;
}

bool PublishSession::PopAny(PublishOutcome* out) {
  if (PopResolved(out)) return true;
  if (queue_.empty()) return false;
  *out = Pop(queue_.front().refused ? PublishOutcome::Kind::kRejected
                                    : PublishOutcome::Kind::kUnresolved);
  return true;
}

std::string PublishSession::Describe(size_t begin, size_t end) const {
  std::string text = std::to_string(end - begin) + " message(s)";
  uint64_t first = 0;
  uint64_t last = 0;
  for (size_t i = begin; i < end; ++i) {
    if (queue_[i].sequence == 0) continue;
    if (first == 0) first = queue_[i].sequence;
    last = queue_[i].sequence;
  }
  if (first != 0) {
    text += " (sequences " + std::to_string(first) + ".." + std::to_string(last) + " of producer " +
            std::to_string(producer_id_) + ")";
  }
  return text;
}

// --------------------------------------------------------------- sending

bool PublishSession::CanSend() const {
  return !refusal_ && inflight_.size() < limits_.requests_inflight_max &&
         send_index_ < queue_.size() && !queue_[send_index_].refused;
}

uint64_t PublishSession::BuildRequest(flatbuffers::FlatBufferBuilder& builder) {
  if (!CanSend()) return 0;
  const uint64_t request_id = next_request_id_++;
  // Messages from send_index_ up to the limits; acknowledged ones (answered
  // out of order before a rewind) are skipped; a refused one ends it.
  size_t end = send_index_;
  size_t count = 0;
  uint64_t bytes = 0;
  uint64_t walked_bytes = 0;
  uint64_t first_sequence = 0;
  uint64_t last_sequence = 0;
  while (end < queue_.size() && count < limits_.batch_messages_max) {
    Message& m = queue_[end];
    if (m.refused) break;
    if (!m.acknowledged) {
      if (count > 0 && bytes + m.bytes() > limits_.batch_bytes_max) break;
      if (m.sequence == 0) m.sequence = next_sequence_++;
      m.last_request = request_id;
      if (count == 0) first_sequence = m.sequence;
      last_sequence = m.sequence;
      ++count;
      bytes += m.bytes();
    }
    walked_bytes += m.bytes();
    ++end;
  }
  const size_t begin = send_index_;
  send_index_ = end;
  unsent_bytes_ -= walked_bytes;
  if (count == 0) return 0;

  builder.Clear();
  BuildPublishRequest(
      builder, request_id, producer_id_, queue_.begin() + static_cast<ptrdiff_t>(begin),
      queue_.begin() + static_cast<ptrdiff_t>(end),
      [request_id](const Message& m) { return !m.acknowledged && m.last_request == request_id; },
      scratch_);
  inflight_.push_back(InFlight{request_id, first_sequence, last_sequence, count});
  return request_id;
}

size_t PublishSession::IndexOf(uint64_t sequence) const {
  if (queue_.empty() || queue_.front().sequence == 0 || sequence < queue_.front().sequence) {
    return kNoIndex;
  }
  const uint64_t index = sequence - queue_.front().sequence;
  if (index >= queue_.size() || queue_[index].sequence != sequence) return kNoIndex;
  return static_cast<size_t>(index);
}

size_t PublishSession::OldestCarriedBy(const InFlight& request) const {
  for (uint64_t s = request.first_sequence; s <= request.last_sequence && s != 0; ++s) {
    const size_t i = IndexOf(s);
    if (i == kNoIndex) continue;
    if (!queue_[i].acknowledged && queue_[i].last_request == request.request_id) return i;
  }
  return kNoIndex;
}

void PublishSession::Rewind(size_t index) {
  if (index == kNoIndex || index >= send_index_) return;
  for (size_t i = index; i < send_index_; ++i) unsent_bytes_ += queue_[i].bytes();
  send_index_ = index;
}

void PublishSession::MarkMaybeStored(const InFlight& request) {
  // Sequences do not change while a request is in flight, so every
  // unacknowledged message in its range was in it (copies resent since
  // included: this copy may be stored all the same).
  for (uint64_t s = request.first_sequence; s <= request.last_sequence && s != 0; ++s) {
    const size_t i = IndexOf(s);
    if (i != kNoIndex && !queue_[i].acknowledged) queue_[i].maybe_stored = true;
  }
}

void PublishSession::Abandon() {
  // Every message before send_index_ is acknowledged or carried by a
  // request in flight; those requests may be stored.
  if (!inflight_.empty()) {
    const uint64_t oldest = inflight_.front().request_id;
    for (size_t i = 0; i < send_index_; ++i) {
      Message& m = queue_[i];
      if (!m.acknowledged && m.last_request >= oldest) m.maybe_stored = true;
    }
  }
  inflight_.clear();
  Rewind(0);
}

// ---------------------------------------------------------------- events

PublishStep PublishSession::OnSilence(std::string outcome) {
  attempts_.Record(Target(), std::move(outcome));
  Abandon();
  rotation_.Next();
  PublishStep step;
  step.reconnect = true;
  Settle(step);
  return step;
}

PublishStep PublishSession::OnSendFailed(std::string why) {
  // The request built last never left; the others on the socket are given
  // up as if silent.
  if (!inflight_.empty()) inflight_.pop_back();
  return OnSilence(std::move(why));
}

PublishStep PublishSession::OnConnectFailed(std::string why) {
  attempts_.Record(Target(), std::move(why));
  rotation_.Next();
  PublishStep step;
  step.pause = kRetryPause;
  return step;
}

PublishStep PublishSession::OnReply(const wire::ClientEnvelope& envelope) {
  const auto it = std::find_if(inflight_.begin(), inflight_.end(), [&](const InFlight& f) {
    return f.request_id == envelope.request_id();
  });
  // Ignore replies whose request_id we no longer wait for (protocol.md).
  if (it == inflight_.end()) return PublishStep{};
  const InFlight request = *it;
  inflight_.erase(it);

  PublishStep step;
  if (const wire::PublishReply* reply = envelope.body_as_PublishReply()) {
    step = OnPublishReply(request, *reply);
  } else if (const wire::Error* error = envelope.body_as_Error()) {
    step = OnError(request, *error);
  } else {
    // Not an answer to a Publish: its outcome is unknown.
    attempts_.Record(Target(), std::string("answered with a ") +
                                   wire::EnumNameBody(envelope.body_type()) + " frame");
    MarkMaybeStored(request);
    Abandon();
    rotation_.Next();
    step.reconnect = true;
  }
  step.matched = true;
  Settle(step);
  return step;
}

PublishStep PublishSession::OnPublishReply(const InFlight& request,
                                           const wire::PublishReply& reply) {
  PublishStep step;
  busy_backoff_ = kBusyBackoffMin;
  redirects_in_a_row_ = 0;
  bool progress = false;
  bool resend = false;
  std::optional<std::pair<uint64_t, wire::ErrorCode>> unknown;  // the first one
  const auto* results = reply.results();
  if (results != nullptr) {
    for (const wire::PublishResult* result : *results) {
      const size_t i = IndexOf(result->sequence());
      if (i == kNoIndex || queue_[i].acknowledged) continue;  // answered before
      Message& m = queue_[i];
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
        case wire::ErrorCode::OutOfSequence:
        case wire::ErrorCode::StaleLeader:
          resend = true;  // not stored; resent below
          break;
        default:
          // A code protocol.md does not allow here, or one this client does
          // not know: the outcome is unknown (see the header).
          m.maybe_stored = true;
          if (!unknown) unknown.emplace(m.sequence, result->error());
          break;
      }
    }
  }
  // A message the reply left unanswered: outcome unknown too. An honest
  // broker answers every message, so this pass is rare.
  const size_t answered = results ? results->size() : 0;
  size_t unanswered = 0;
  if (answered != request.count) {
    std::vector<bool> seen(request.last_sequence - request.first_sequence + 1, false);
    if (results != nullptr) {
      for (const wire::PublishResult* result : *results) {
        const uint64_t s = result->sequence();
        if (s >= request.first_sequence && s <= request.last_sequence) {
          seen[s - request.first_sequence] = true;
        }
      }
    }
    for (uint64_t s = request.first_sequence; s <= request.last_sequence; ++s) {
      const size_t i = IndexOf(s);
      if (i == kNoIndex || seen[s - request.first_sequence]) continue;
      Message& m = queue_[i];
      if (m.acknowledged || m.last_request != request.request_id) continue;
      m.maybe_stored = true;
      ++unanswered;
    }
  }

  // Everything of this request not acknowledged is resent, with what
  // follows it.
  const size_t oldest = OldestCarriedBy(request);
  if (oldest == kNoIndex) return step;
  if (unknown) {
    attempts_.Record(Target(), "answered message " + std::to_string(unknown->first) + " with " +
                                   WireCodeName(unknown->second) +
                                   ", which protocol.md does not allow in a PublishResult: "
                                   "outcome unknown, resent with the same sequence");
    step.refused = true;
  } else if (resend) {
    attempts_.Record(Target(), "asked to resend (OutOfSequence or StaleLeader)");
  } else if (unanswered > 0) {
    attempts_.Record(Target(), "left " + std::to_string(unanswered) + " message(s) unanswered");
  }
  Rewind(oldest);
  // Resend at once while the broker makes progress; back off when it keeps
  // answering the same way, so a confused broker is not flooded.
  if (progress) {
    resend_backoff_ = milliseconds{0};
  } else {
    resend_backoff_ = Grow(resend_backoff_);
    step.pause = resend_backoff_;
  }
  return step;
}

PublishStep PublishSession::OnError(const InFlight& request, const wire::Error& error) {
  PublishStep step;
  step.refused = true;
  attempts_.Record(Target(), client_internal::Describe(error));
  switch (error.code()) {
    case wire::ErrorCode::NotLeader: {
      const std::string leader = ToString(error.leader_endpoint());
      // Two followers naming each other, or a leader that just lost its
      // quorum: after the first hop, give the election a moment.
      if (redirects_in_a_row_++ > 0) step.pause = kRetryPause;
      const bool elsewhere = !leader.empty() && ToZmqEndpoint(leader) != ToZmqEndpoint(Target());
      Abandon();
      if (elsewhere) {
        rotation_.RedirectTo(leader);
      } else {
        rotation_.Next();
      }
      step.reconnect = true;
      return step;
    }
    case wire::ErrorCode::Busy:
      // The leader's queue is full: same broker, after a growing pause. The
      // requests behind this one fail OutOfSequence and are resent too.
      Rewind(OldestCarriedBy(request));
      step.pause = busy_backoff_;
      busy_backoff_ = std::min(busy_backoff_ * 2, kBusyBackoffMax);
      return step;
    case wire::ErrorCode::TooLarge:
    case wire::ErrorCode::BadRequest:
    case wire::ErrorCode::PermissionDenied:
      // Resending it as is can never succeed. Stop sending and settle once
      // the requests in flight are answered (Settle). The oldest refusal
      // is the one settled; a later one is met again when resent.
      Rewind(OldestCarriedBy(request));
      if (!refusal_) {
        refusal_ =
            Refusal{request.request_id,
                    "broker " + Target() + " refused the publish request (" +
                        client_internal::Describe(error) + ")",
                    error.code() == wire::ErrorCode::PermissionDenied ? ErrorCode::kPermissionDenied
                                                                      : ErrorCode::kRejected};
      }
      return step;
    case wire::ErrorCode::Unavailable:
    default:
      // No leader known (an election is running), a leader that lost its
      // quorum or leadership with the request accepted, a broker-side
      // failure (Internal), or a code this client does not know: the
      // request may be stored. Try elsewhere.
      MarkMaybeStored(request);
      step.pause = kRetryPause;
      Abandon();
      rotation_.Next();
      step.reconnect = true;
      return step;
  }
}

void PublishSession::Settle(PublishStep& step) {
  if (!refusal_ || !inflight_.empty()) return;
  const Refusal refusal = std::move(*refusal_);
  refusal_.reset();
  Rewind(0);
  // The refused run: the front's unresolved messages whose newest copy was
  // in the refused request (acknowledged ones before it are resolved).
  size_t start = 0;
  while (start < queue_.size() && queue_[start].acknowledged) ++start;
  size_t end = start;
  while (end < queue_.size() && queue_[end].last_request == refusal.request_id &&
         !queue_[end].acknowledged && !queue_[end].refused) {
    ++end;
  }
  size_t kept = start;
  while (kept < end && queue_[kept].maybe_stored) ++kept;
  if (kept == end) {
    // Older messages are still unresolved (settle them first), or every
    // refused message may be stored and so must keep its sequence: resend
    // after a pause.
    step.pause = std::max(step.pause, busy_backoff_);
    busy_backoff_ = std::min(busy_backoff_ * 2, kBusyBackoffMax);
    if (end > start) {
      step.rejection_code = refusal.code;
      step.rejection = refusal.text + ". " + Describe(start, end) +
                       " stay queued because an earlier attempt went unanswered and they may "
                       "be stored; they are resent with their sequences.";
    }
    return;
  }
  const bool denied = refusal.code == ErrorCode::kPermissionDenied;
  const std::string fix = denied ? "publish them again once this client's key may publish"
                                 : "fix their size or content and publish them again";
  std::string text = refusal.text + ": " + Describe(start, end) + ". " +
                     std::to_string(end - kept) +
                     " message(s) that were never stored are dropped (their sequences will be "
                     "reused); " +
                     fix + ".";
  if (kept > start) {
    text += " " + Describe(start, kept) +
            " stay queued because an earlier attempt went unanswered and they may be stored; "
            "they are resent with their sequences.";
  }
  step.rejection = std::move(text);
  step.rejection_code = refusal.code;
  rejection_code_ = refusal.code;
  rejection_ = refusal.text + "; it was never stored. " +
               (denied ? "Publish it again once this client's key may publish"
                       : "Fix the message's size or content (see the brokers' limits) and "
                         "publish it again");
  for (size_t i = kept; i < end; ++i) queue_[i].refused = true;
}

}  // namespace ordo::client_internal
