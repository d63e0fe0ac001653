// Membership: GetMembers / MembersAt (MembersRequest) and ChangeMembers
// (ChangeMembers, sent to the leader, answered once the change is chosen).
// docs/protocol.md, "Membership".

#include <exception>
#include <optional>
#include <utility>

#include "client/internal/connection.h"
#include "ordo/client.h"

namespace ordo {
namespace {

namespace ci = client_internal;

MemberInfo ToMemberInfo(const wire::MemberInfo& m) {
  MemberInfo out;
  out.id = m.id();
  out.voter = m.voter();
  out.peer = ci::ToString(m.peer());
  out.client = ci::ToString(m.client());
  out.public_key = ci::ToString(m.public_key());
  out.state = ci::ToString(m.state());
  out.heard = m.heard();
  out.last_heard_ms = m.last_heard_ms();
  out.lag_known = m.lag_known();
  out.lag_instances = m.lag_instances();
  return out;
}

MemberInfo ToMemberInfo(const wire::Member& m) {
  MemberInfo out;
  out.id = m.id();
  out.voter = m.voter();
  out.peer = ci::ToString(m.peer());
  out.client = ci::ToString(m.client());
  out.public_key = ci::ToString(m.public_key());
  out.state = m.voter() ? "voter" : "learner";
  return out;
}

Result<Members> MembersAtImpl(const std::string& endpoint, std::chrono::milliseconds timeout,
                              const ClientCredentials& credentials) {
  if (endpoint.empty()) {
    return Error{ErrorCode::kInvalidArgument, "MembersAt needs a broker's client endpoint", 0};
  }
  if (timeout.count() <= 0) {
    return Error{ErrorCode::kInvalidArgument, "MembersAt needs a positive timeout", 0};
  }
  const ci::Clock::time_point deadline = ci::Clock::now() + timeout;
  ci::LazyContext context;
  Result<std::unique_ptr<ci::Connection>> opened = ci::Connect(context, endpoint, credentials);
  if (!opened.ok()) return opened.error();
  const std::unique_ptr<ci::Connection> connection = std::move(opened.value());
  constexpr uint64_t kRequestId = 1;
  flatbuffers::FlatBufferBuilder builder(64);
  ci::BuildEnvelope(builder, kRequestId, wire::Body::MembersRequest,
                    [](auto& b) { return wire::CreateMembersRequest(b).Union(); });
  if (!connection->Send(builder)) {
    return Error{ErrorCode::kUnavailable, connection->last_error(), 0};
  }
  const std::unique_ptr<ci::Frame> reply = ci::AwaitReply(*connection, kRequestId, deadline);
  if (!reply) {
    if (const std::optional<Error>& refused = connection->refusal()) return *refused;
    return Error{ErrorCode::kTimeout,
                 "no MembersReply from " + endpoint + " within " + ci::Ms(timeout) +
                     "; check that a broker runs there and that this is its client endpoint",
                 0};
  }
  const wire::ClientEnvelope& envelope = reply->envelope();
  if (const wire::Error* refusal = envelope.body_as_Error()) {
    return Error{ci::RefusalCode(refusal->code()),
                 "broker " + endpoint + " refused MembersRequest: " + ci::Describe(*refusal), 0};
  }
  const wire::MembersReply* r = envelope.body_as_MembersReply();
  if (r == nullptr) {
    return Error{ErrorCode::kProtocol,
                 "broker " + endpoint + " answered MembersRequest with a " +
                     wire::EnumNameBody(envelope.body_type()) +
                     " frame; check that client and broker versions match (a broker older "
                     "than membership changes answers BadRequest)",
                 0};
  }
  Members out;
  out.endpoint = endpoint;
  out.node_id = r->node_id();
  out.leader_id = r->leader_id();
  out.bootstrap = r->bootstrap();
  out.change_pending = r->change_pending();
  out.chosen = r->chosen();
  if (r->members()) {
    for (const wire::MemberInfo* m : *r->members()) out.members.push_back(ToMemberInfo(*m));
  }
  return out;
}

wire::MemberChangeKind ToWire(MemberChange kind) {
  switch (kind) {
    case MemberChange::kAddLearner:
      return wire::MemberChangeKind::AddLearner;
    case MemberChange::kPromote:
      return wire::MemberChangeKind::Promote;
    case MemberChange::kRemove:
      return wire::MemberChangeKind::Remove;
  }
  return wire::MemberChangeKind::AddLearner;
}

Result<ChangeResult> ChangeMembersImpl(const ClientOptions& options, MemberChange kind,
                                       const MemberSpec& member) {
  if (auto invalid = ci::ValidateOptions(options)) return *invalid;
  if (member.id == 0) {
    return Error{ErrorCode::kInvalidArgument, "a member id is a positive integer", 0};
  }
  const ci::Clock::time_point deadline = ci::Clock::now() + options.call_timeout;
  ci::LazyContext context;
  ci::AttemptLog attempts;
  size_t broker_index = 0;
  std::optional<std::string> redirect;  // the leader a broker named
  uint64_t request_id = 0;
  while (ci::Clock::now() < deadline) {
    const std::string endpoint = redirect ? *redirect : options.brokers[broker_index];
    auto next_broker = [&] {
      if (!redirect) broker_index = (broker_index + 1) % options.brokers.size();
      redirect.reset();
    };
    Result<std::unique_ptr<ci::Connection>> opened =
        ci::Connect(context, endpoint, options.credentials);
    if (!opened.ok()) {
      if (opened.error().code == ErrorCode::kAuthenticationFailed) return opened.error();
      attempts.Record(endpoint, opened.error().message);
      next_broker();
      ci::SleepAtMost(ci::kRetryPause, deadline);
      continue;
    }
    const std::unique_ptr<ci::Connection> connection = std::move(opened.value());
    flatbuffers::FlatBufferBuilder builder(256);
    ++request_id;
    ci::BuildEnvelope(builder, request_id, wire::Body::ChangeMembers, [&](auto& b) {
      const auto m = wire::CreateMemberDirect(
          b, member.id, false, member.peer.empty() ? nullptr : member.peer.c_str(),
          member.client.empty() ? nullptr : member.client.c_str(),
          member.public_key.empty() ? nullptr : member.public_key.c_str());
      return wire::CreateChangeMembers(b, ToWire(kind), m).Union();
    });
    if (!connection->Send(builder)) {
      attempts.Record(endpoint, connection->last_error());
      next_broker();
      continue;
    }
    // The answer comes once the entry is chosen: give it the rest of the
    // call, not one request's timeout (a leader answers errors at once).
    const std::unique_ptr<ci::Frame> reply = ci::AwaitReply(*connection, request_id, deadline);
    if (!reply) {
      if (const std::optional<Error>& refused = connection->refusal()) return *refused;
      attempts.Record(endpoint, "no answer");
      next_broker();
      continue;
    }
    const wire::ClientEnvelope& envelope = reply->envelope();
    if (const wire::Error* refusal = envelope.body_as_Error()) {
      const std::string text = ci::Describe(*refusal);
      attempts.Record(endpoint, text);
      switch (refusal->code()) {
        case wire::ErrorCode::NotLeader:
          if (const std::string leader = ci::ToString(refusal->leader_endpoint());
              !leader.empty() && leader != endpoint) {
            redirect = leader;
          } else {
            next_broker();
            ci::SleepAtMost(ci::kRetryPause, deadline);
          }
          continue;
        case wire::ErrorCode::Unavailable:
          next_broker();
          ci::SleepAtMost(ci::kRetryPause, deadline);
          continue;
        default:
          return Error{ci::RefusalCode(refusal->code()),
                       "broker " + endpoint + " refused the change: " + text, 0};
      }
    }
    const wire::ChangeMembersReply* r = envelope.body_as_ChangeMembersReply();
    if (r == nullptr) {
      return Error{ErrorCode::kProtocol,
                   "broker " + endpoint + " answered ChangeMembers with a " +
                       wire::EnumNameBody(envelope.body_type()) + " frame",
                   0};
    }
    ChangeResult out;
    out.instance = r->instance();
    if (r->members()) {
      for (const wire::Member* m : *r->members()) out.members.push_back(ToMemberInfo(*m));
    }
    return out;
  }
  return Error{ErrorCode::kTimeout,
               "the membership change was not confirmed within call_timeout (" +
                   ci::Ms(options.call_timeout) + "). Brokers tried: " + attempts.Summary() +
                   ". It may still be chosen: list the members before retrying",
               0};
}

}  // namespace

Result<Members> MembersAt(const std::string& endpoint, std::chrono::milliseconds timeout,
                          const ClientCredentials& credentials) {
  try {
    return MembersAtImpl(endpoint, timeout, credentials);
  } catch (const std::exception& e) {
    return Error{ErrorCode::kUnavailable, std::string("members request failed: ") + e.what(), 0};
  }
}

Result<Members> GetMembers(const ClientOptions& options) {
  if (auto invalid = ci::ValidateOptions(options)) return *invalid;
  std::optional<Error> last;
  for (const std::string& endpoint : options.brokers) {
    Result<Members> r = MembersAt(endpoint, options.request_timeout, options.credentials);
    if (r.ok()) return r;
    if (r.error().code == ErrorCode::kAuthenticationFailed ||
        r.error().code == ErrorCode::kPermissionDenied) {
      return r;
    }
    last = r.error();
  }
  return *last;
}

Result<ChangeResult> ChangeMembers(const ClientOptions& options, MemberChange kind,
                                   const MemberSpec& member) {
  try {
    return ChangeMembersImpl(options, kind, member);
  } catch (const std::exception& e) {
    return Error{ErrorCode::kUnavailable, std::string("membership change failed: ") + e.what(), 0};
  }
}

}  // namespace ordo
