// The free functions of the client API: ParseBrokerList, Replay, GetStatus.
// Publisher is in publisher.cc, Subscriber in subscriber.cc, the socket and
// frame handling they share in connection.cc.
//
// ZeroMQ contexts: every Publisher and Subscriber owns one context (created
// on first use), and Replay and GetStatus create one per call, rather than
// all sharing one static context, because
//   - client.h promises that objects are independent; with one context, a
//     user's object destroyed during static destruction (or leaked into a
//     detached thread) could make the shared context's zmq_ctx_term block
//     forever at exit, and destruction order between statics of different
//     translation units is unspecified;
//   - a context does not survive fork(); a per-object one is created in the
//     process that uses it;
//   - a static would be the only global state of the library.
// The cost is one ZeroMQ I/O thread per live object (and a thread start per
// Replay or GetStatus call), small next to a network round trip. A program
// holding thousands of subscribers would want a shared context; client.h
// would then need a way to pass one in.

#include "ordo/client.h"

#include <algorithm>
#include <exception>
#include <optional>
#include <utility>

#include "base/keys.h"
#include "client/internal/chain_verifier.h"
#include "client/internal/connection.h"

namespace ordo {
namespace {

namespace ci = client_internal;
using fb_size = flatbuffers::uoffset_t;

// Messages asked for by one Fetch. Bounds the reply the broker builds; the
// broker may send fewer (its frame limit).
constexpr uint32_t kFetchMessagesMax = 10000;

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Replays [from, to) into `each`; returns the end of the range. With
// `deadline_per_progress`, call_timeout bounds the time without progress.
Result<uint64_t> ReplayImpl(const ClientOptions& options, uint64_t from, uint64_t to,
                            const ReplayCallback& each, bool deadline_per_progress,
                            bool compacted = false, const ChainCallback* each_instance = nullptr) {
  if (auto invalid = ci::ValidateOptions(options)) return *invalid;
  if (to != 0 && to < from) {
    return Error{ErrorCode::kInvalidArgument,
                 "Replay range [" + std::to_string(from) + ", " + std::to_string(to) +
                     ") is reversed: `to` must be at least `from` (or 0 for the head)",
                 0};
  }
  if (to != 0 && to == from) return to;

  ci::LazyContext context;
  std::unique_ptr<ci::Connection> connection;
  size_t broker_index = 0;
  uint64_t next_request_id = 1;
  ci::AttemptLog attempts;
  bool last_was_refusal = false;
  // The end of the range: `to`, or the head of the first broker to answer.
  std::optional<uint64_t> end;
  if (to != 0) end = to;
  uint64_t cursor = from;
  // Brokers in a row that had nothing at `cursor`, and the highest head seen:
  // when every broker is short, `to` is beyond the stream's head.
  size_t brokers_short = 0;
  uint64_t head_max = 0;
  ci::Clock::time_point deadline = ci::Clock::now() + options.call_timeout;

  auto next_broker = [&] {
    connection.reset();
    broker_index = (broker_index + 1) % options.brokers.size();
  };

  // The chain (client/internal/chain_verifier.h): records wait in
  // `pending` until their instance checks out; past `end` the rest of the
  // last instance is read to check it, and not handed.
  const bool verify = (options.verify_chain || each_instance != nullptr) && !compacted;
  ci::ChainVerifier verifier;
  std::vector<Record> pending;
  uint64_t handed_to = from;  // records below it were handed (or are below `from`)
  size_t integrity_failures = 0;
  auto restart_verification = [&] {
    pending.clear();
    verifier.Restart();
    cursor = std::max(handed_to, verifier.verified_offset().value_or(0));
  };

  while (!end || cursor < *end || (verify && verifier.in_progress())) {
    if (ci::Clock::now() >= deadline) {
      return Error{last_was_refusal ? ErrorCode::kUnavailable : ErrorCode::kTimeout,
                   "replay stopped at offset " + std::to_string(cursor) + " after call_timeout (" +
                       ci::Ms(options.call_timeout) + "). Brokers tried: " + attempts.Summary() +
                       ". Check that the brokers run and listen on these client endpoints "
                       "(`scripts/cluster status`).",
                   0};
    }
    const std::string& endpoint = options.brokers[broker_index];
    if (!connection) {
      Result<zmq::context_t*> zmq_context = context.Get();
      if (!zmq_context.ok()) return zmq_context.error();
      Result<std::unique_ptr<ci::Connection>> opened =
          ci::Connection::Open(*zmq_context.value(), endpoint, options.credentials);
      if (!opened.ok()) {
        if (opened.error().code == ErrorCode::kAuthenticationFailed) return opened.error();
        attempts.Record(endpoint, opened.error().message);
        last_was_refusal = false;
        next_broker();
        ci::SleepAtMost(ci::kRetryPause, deadline);
        continue;
      }
      connection = std::move(opened.value());
    }
    uint32_t max_messages = kFetchMessagesMax;
    const bool from_instance_start = verify && !verifier.in_progress();
    if (end) {
      // Verifying: past `end` to the end of the instance under way. (An
      // answer from the start of an instance below `cursor` ends below
      // `end`; the next Fetch goes on from there.)
      const uint64_t until =
          verify && verifier.in_progress() ? std::max(*end, verifier.current_end()) : *end;
      max_messages = static_cast<uint32_t>(std::min<uint64_t>(max_messages, until - cursor));
    }
    const uint64_t request_id = next_request_id++;
    flatbuffers::FlatBufferBuilder builder(128);
    ci::BuildEnvelope(builder, request_id, wire::Body::Fetch, [&](auto& b) {
      return wire::CreateFetch(b, cursor, max_messages, compacted, from_instance_start).Union();
    });
    if (!connection->Send(builder)) {
      attempts.Record(endpoint, connection->last_error());
      last_was_refusal = false;
      next_broker();
      continue;
    }
    const std::unique_ptr<ci::Frame> reply =
        ci::AwaitReply(*connection, request_id,
                       ci::EarlierOf(ci::Clock::now() + options.request_timeout, deadline));
    if (!reply) {
      if (const std::optional<Error>& refused = connection->refusal()) return *refused;
      if (ci::Clock::now() >= deadline) {
        // The call's deadline, not request_timeout, ended the wait: the
        // broker's last answer (a refusal, say) is the better account.
        attempts.RecordIfFirst(endpoint, "no reply before call_timeout");
        continue;
      }
      attempts.Record(endpoint, "no reply within " + ci::Ms(options.request_timeout));
      last_was_refusal = false;
      next_broker();
      continue;
    }
    const wire::ClientEnvelope& envelope = reply->envelope();
    if (const wire::Error* error = envelope.body_as_Error()) {
      attempts.Record(endpoint, ci::Describe(*error));
      last_was_refusal = true;
      switch (error->code()) {
        case wire::ErrorCode::OffsetBelowRetained:
          return Error{ErrorCode::kOffsetBelowRetained,
                       "offset " + std::to_string(cursor) + " is no longer retained by " +
                           endpoint + " (" + ci::Describe(*error) +
                           "); replay from the earliest offset available, " +
                           std::to_string(error->earliest_offset()),
                       error->earliest_offset()};
        case wire::ErrorCode::PermissionDenied:
          return Error{ErrorCode::kPermissionDenied,
                       "broker " + endpoint + " refused to replay: " + ci::Describe(*error), 0};
        case wire::ErrorCode::TooLarge:
        case wire::ErrorCode::BadRequest:
          return Error{
              ErrorCode::kRejected,
              "broker " + endpoint + " refused Fetch{from_offset: " + std::to_string(cursor) +
                  ", max_messages: " + std::to_string(max_messages) + "}: " + ci::Describe(*error),
              0};
        default:
          ci::SleepAtMost(ci::kRetryPause, deadline);
          next_broker();
          continue;
      }
    }
    const wire::Deliver* deliver = envelope.body_as_Deliver();
    if (deliver == nullptr || !ci::DeliverSizeIsPlausible(*deliver, reply->size())) {
      attempts.Record(endpoint, deliver == nullptr
                                    ? std::string("answered Fetch with a ") +
                                          wire::EnumNameBody(envelope.body_type()) + " frame"
                                    : std::string("sent a Deliver inflated past its size"));
      last_was_refusal = false;
      next_broker();
      continue;
    }
    last_was_refusal = false;
    if (!end) {
      end = deliver->head_offset();  // the head at the time of the call
      if (cursor >= *end) break;
    }
    size_t appended = 0;
    bool gap = false;
    if (compacted) {
      // Offsets skip by design: older messages of a key and unkeyed ones.
      if (const auto* messages = deliver->messages()) {
        for (const wire::StreamMessage* message : *messages) {
          if (message->offset() < cursor) {
            gap = true;  // an answer from below what was asked: a broken stream
            break;
          }
          if (message->offset() >= *end) break;
          each(ci::ToRecord(*message), *end);
          cursor = message->offset() + 1;
          ++appended;
        }
      }
      if (gap) {
        attempts.Record(endpoint, "answered a compacted Fetch from " + std::to_string(cursor) +
                                      " with an offset below it (a broken stream)");
        gap = false;
        next_broker();
        continue;
      }
      if (appended == 0) break;  // no more keys below the end
      continue;
    }
    const auto* messages = deliver->messages();
    if (verify && messages != nullptr && messages->size() > 0) {
      // from_instance_start: the answer may start at the first offset of
      // the instance holding `cursor`, never lower.
      const auto* points = deliver->chain();
      if (from_instance_start && points != nullptr && points->size() > 0) {
        const wire::ChainPoint* first = points->Get(0);
        if (first->first_offset() <= cursor && cursor - first->first_offset() < first->count() &&
            messages->Get(0)->offset() == first->first_offset()) {
          cursor = first->first_offset();
        }
      }
      bool failed = verifier.BeginFrame(*deliver) == ci::ChainVerifier::Step::kFailed;
      for (fb_size i = 0; !failed && i < messages->size(); ++i) {
        const wire::StreamMessage* message = messages->Get(i);
        if (!verifier.in_progress() && cursor >= *end) break;
        if (message->offset() != cursor) {
          gap = true;
          break;
        }
        ++cursor;
        ++appended;
        if (message->offset() >= handed_to && message->offset() < *end) {
          pending.push_back(ci::ToRecord(*message));
        }
        switch (verifier.Add(*message)) {
          case ci::ChainVerifier::Step::kPending:
            break;
          case ci::ChainVerifier::Step::kVerified:
            integrity_failures = 0;
            for (const Record& r : pending) each(r, *end);
            if (!pending.empty()) handed_to = pending.back().offset + 1;
            pending.clear();
            if (each_instance != nullptr) {
              const ci::ChainVerifier::Point& v = verifier.last_verified();
              (*each_instance)(ChainInstance{v.instance, v.first_offset, v.count, v.before.Hex(),
                                             v.after.Hex()});
            }
            break;
          case ci::ChainVerifier::Step::kFailed:
            failed = true;
            break;
        }
      }
      if (failed) {
        attempts.Record(endpoint,
                        "served messages that fail the stream's chain: " + verifier.error());
        restart_verification();
        next_broker();
        if (++integrity_failures >= options.brokers.size()) {
          return Error{ErrorCode::kIntegrity,
                       "replay stopped at offset " + std::to_string(cursor) +
                           ": every broker tried served messages that fail the stream's chain (" +
                           attempts.Summary() + "); nothing of them was handed",
                       0};
        }
        continue;
      }
    } else if (messages != nullptr) {
      for (const wire::StreamMessage* message : *messages) {
        if (cursor >= *end) break;
        // A Fetch from `cursor` is answered from exactly there, in order:
        // any other offset is a broken stream (a damaged broker), never
        // something to skip or to fill in.
        if (message->offset() != cursor) {
          gap = true;
          break;
        }
        each(ci::ToRecord(*message), *end);
        ++cursor;
        ++appended;
      }
    }
    if (gap) {
      if (verify) restart_verification();
      attempts.Record(endpoint, "answered Fetch from " + std::to_string(cursor) +
                                    " with a record at another offset (a broken stream)");
      next_broker();
      continue;
    }
    if (appended > 0) {
      brokers_short = 0;
      if (deadline_per_progress) deadline = ci::Clock::now() + options.call_timeout;
      continue;  // next page from the same broker
    }
    if (cursor >= *end) break;
    // Nothing at `cursor`: this broker lags (a follower), or `to` is past the
    // head. Ask the others; when all are short, say so.
    head_max = std::max(head_max, deliver->head_offset());
    attempts.Record(endpoint, "has nothing at offset " + std::to_string(cursor) + " (head " +
                                  std::to_string(deliver->head_offset()) + ")");
    if (++brokers_short >= options.brokers.size()) {
      return Error{ErrorCode::kInvalidArgument,
                   "Replay to offset " + std::to_string(*end) +
                       " goes past the head of the stream: the brokers hold offsets below " +
                       std::to_string(head_max) + " (replayed up to " + std::to_string(cursor) +
                       "). Pass to = 0 to replay up to the head.",
                   0};
    }
    ci::SleepAtMost(ci::kRetryPause, deadline);
    next_broker();
  }
  // ReplayVerified: the last instance's end, which may lie past `to`.
  if (each_instance != nullptr && verifier.verified_offset() &&
      *verifier.verified_offset() > end.value_or(0)) {
    return *verifier.verified_offset();
  }
  return end.value_or(cursor);
}

Result<BrokerStatus> GetStatusImpl(const std::string& endpoint, std::chrono::milliseconds timeout,
                                   const ClientCredentials& credentials) {
  if (endpoint.empty()) {
    return Error{ErrorCode::kInvalidArgument,
                 "GetStatus needs a broker's client endpoint (HOST:PORT)", 0};
  }
  if (timeout.count() <= 0) {
    return Error{ErrorCode::kInvalidArgument, "GetStatus needs a positive timeout", 0};
  }
  const ci::Clock::time_point deadline = ci::Clock::now() + timeout;
  ci::LazyContext context;
  // Both errors as they are: kUnavailable without a context, kInvalidArgument
  // for an endpoint ZeroMQ refuses.
  Result<std::unique_ptr<ci::Connection>> opened = ci::Connect(context, endpoint, credentials);
  if (!opened.ok()) return opened.error();
  const std::unique_ptr<ci::Connection> connection = std::move(opened.value());

  constexpr uint64_t kRequestId = 1;
  flatbuffers::FlatBufferBuilder builder(64);
  ci::BuildEnvelope(builder, kRequestId, wire::Body::StatusRequest,
                    [](auto& b) { return wire::CreateStatusRequest(b).Union(); });
  if (!connection->Send(builder)) {
    return Error{ErrorCode::kUnavailable, connection->last_error(), 0};
  }
  const std::unique_ptr<ci::Frame> reply = ci::AwaitReply(*connection, kRequestId, deadline);
  if (!reply) {
    if (const std::optional<Error>& refused = connection->refusal()) return *refused;
    std::string text = "no StatusReply from " + endpoint + " within " + ci::Ms(timeout);
    if (connection->frames_ignored() > 0) {
      text += " (ignored " + std::to_string(connection->frames_ignored()) +
              " unreadable frame(s), the last: " + connection->last_ignored_reason() + ")";
    }
    text +=
        "; check that a broker runs there and that this is its client endpoint "
        "(`scripts/cluster status`)";
    return Error{ErrorCode::kTimeout, std::move(text), 0};
  }
  const wire::ClientEnvelope& envelope = reply->envelope();
  if (const wire::Error* refusal = envelope.body_as_Error()) {
    return Error{ci::RefusalCode(refusal->code()),
                 "broker " + endpoint + " refused StatusRequest: " + ci::Describe(*refusal),
                 refusal->earliest_offset()};
  }
  const wire::StatusReply* reply_status = envelope.body_as_StatusReply();
  if (reply_status == nullptr) {
    return Error{ErrorCode::kProtocol,
                 "broker " + endpoint + " answered StatusRequest with a " +
                     wire::EnumNameBody(envelope.body_type()) +
                     " frame; check that client and broker versions match",
                 0};
  }
  return ci::ToBrokerStatus(*reply_status, endpoint);
}

}  // namespace

Result<ClientCredentials> LoadCredentials(const std::string& path) {
  StatusOr<KeyFile> file = LoadKeyFile(path);
  if (!file.ok()) {
    return Error{ErrorCode::kInvalidArgument, "credentials: " + file.status().message(), 0};
  }
  ClientCredentials c;
  c.public_key = file.value().pair.public_key;
  c.secret_key = file.value().pair.secret_key;
  c.broker_keys = file.value().broker_keys;
  return c;
}

std::vector<std::string> ParseBrokerList(std::string_view list) {
  std::vector<std::string> brokers;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = list.substr(start, comma - start);
    while (!item.empty() && IsSpace(item.front())) item.remove_prefix(1);
    while (!item.empty() && IsSpace(item.back())) item.remove_suffix(1);
    if (!item.empty()) brokers.emplace_back(item);
    start = comma + 1;
  }
  return brokers;
}

Result<std::vector<Record>> Replay(const ClientOptions& options, uint64_t from, uint64_t to) {
  try {
    std::vector<Record> records;
    Result<uint64_t> end = ReplayImpl(
        options, from, to, [&](const Record& record, uint64_t) { records.push_back(record); },
        false);
    if (!end.ok()) return end.error();
    return records;
  } catch (const std::exception& e) {
    // No exception crosses the public API (STYLE.md 5).
    return Error{ErrorCode::kUnavailable, std::string("replay failed: ") + e.what(), 0};
  }
}

Result<uint64_t> ReplayCompacted(const ClientOptions& options, uint64_t from, uint64_t to,
                                 const ReplayCallback& each) {
  try {
    return ReplayImpl(options, from, to, each, true, true);
  } catch (const std::exception& e) {
    return Error{ErrorCode::kUnavailable, std::string("replay failed: ") + e.what(), 0};
  }
}

Result<std::vector<Record>> ReplayCompacted(const ClientOptions& options, uint64_t from,
                                            uint64_t to) {
  std::vector<Record> records;
  Result<uint64_t> end = ReplayCompacted(
      options, from, to, [&](const Record& record, uint64_t) { records.push_back(record); });
  if (!end.ok()) return end.error();
  return records;
}

Result<uint64_t> Replay(const ClientOptions& options, uint64_t from, uint64_t to,
                        const ReplayCallback& each) {
  try {
    return ReplayImpl(options, from, to, each, true);
  } catch (const std::exception& e) {
    return Error{ErrorCode::kUnavailable, std::string("replay failed: ") + e.what(), 0};
  }
}

Result<uint64_t> ReplayVerified(const ClientOptions& options, uint64_t from, uint64_t to,
                                const ReplayCallback& each, const ChainCallback& each_instance) {
  try {
    return ReplayImpl(options, from, to, each, true, false, &each_instance);
  } catch (const std::exception& e) {
    return Error{ErrorCode::kUnavailable, std::string("replay failed: ") + e.what(), 0};
  }
}

Result<BrokerStatus> GetStatus(const std::string& endpoint, std::chrono::milliseconds timeout,
                               const ClientCredentials& credentials) {
  try {
    return GetStatusImpl(endpoint, timeout, credentials);
  } catch (const std::exception& e) {
    return Error{ErrorCode::kUnavailable, std::string("status request failed: ") + e.what(), 0};
  }
}

}  // namespace ordo
