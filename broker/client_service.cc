#include "broker/client_service.h"

#include <spdlog/spdlog.h>

#include <cstring>
#include <optional>

#include "schemas/client_generated.h"

namespace ordo::broker {

namespace wire = ordo::wire;

namespace {

constexpr auto kPublishTimeout = std::chrono::seconds(30);
constexpr size_t kDeliverMessagesMax = 2048;   // per Deliver frame
constexpr size_t kDeliverBytesMax = 1 << 20;   // per Deliver frame, roughly
// One read of the store serves a subscriber up to this much, in as many
// Deliver frames as it takes: a stored batch (up to 8,192 messages) is then
// checked (CRC32C, verifier) once rather than once per frame.
constexpr size_t kServeMessagesMax = 32768;
constexpr size_t kServeBytesMax = 8 << 20;
constexpr uint32_t kFetchMessagesMax = 10000;
// An idle subscription gets an empty Deliver (its head) this often: sending
// is how a ROUTER learns that a connection is gone (EHOSTUNREACH), so the
// subscription of a client that vanished is dropped, not served forever.
constexpr auto kSubscriberKeepalive = std::chrono::seconds(5);

uint16_t Code(wire::ErrorCode c) { return static_cast<uint16_t>(c); }
uint16_t ErrorCodeOf(wire::ErrorCode c) { return static_cast<uint16_t>(c); }

// One Deliver frame: messages in offset order, and this broker's head. Read
// from the store, each message is copied once, from its stored record into
// the frame (no per-message allocation).
class DeliverBuilder {
 public:
  explicit DeliverBuilder(size_t bytes_hint) : fbb_(bytes_hint) {}

  void Add(const StreamMessage& m) {
    Add(m.offset, MessageView{m.producer, m.sequence, AsBytes(m.key), AsBytes(m.payload)});
  }
  // The chain point of the messages added next; the frame carries it
  // before its first message of that instance (again in the next frame when
  // the instance goes on there).
  void SetPoint(const ChainPoint& point) {
    point_ = point;
    point_in_frame_ = false;
  }
  LmdbStore::InstanceVisitor PointVisitor() {
    return [this](const ChainPoint& point) { SetPoint(point); };
  }
  void Add(uint64_t offset, const MessageView& m) {
    if (point_ && !point_in_frame_) {
      flatbuffers::Offset<flatbuffers::Vector<uint8_t>> before, after;
      if (point_->has_chain) {
        before = fbb_.CreateVector(point_->before.bytes.data(), point_->before.kBytes);
        after = fbb_.CreateVector(point_->after.bytes.data(), point_->after.kBytes);
      }
      points_.push_back(wire::CreateChainPoint(fbb_, point_->instance, point_->first_offset,
                                               point_->count, before, after));
      point_in_frame_ = true;
    }
    const auto key = fbb_.CreateVector(m.key.data(), m.key.size());
    const auto payload = fbb_.CreateVector(m.payload.data(), m.payload.size());
    messages_.push_back(wire::CreateStreamMessage(fbb_, offset, m.producer, m.sequence, key, payload));
    last_offset_ = offset;
  }
  size_t count() const { return messages_.size(); }
  size_t bytes() const { return fbb_.GetSize(); }
  uint64_t last_offset() const { return last_offset_; }
  // Empties it for the next frame, keeping its buffer.
  void Reset() {
    fbb_.Clear();
    messages_.clear();
    points_.clear();
    point_in_frame_ = false;
  }
  LmdbStore::StreamVisitor Visitor() {
    return [this](uint64_t offset, const MessageView& m) { Add(offset, m); };
  }
  // Finishes the frame; its bytes are fbb().GetBufferPointer(), GetSize().
  flatbuffers::FlatBufferBuilder& Finish(uint64_t request_id, uint64_t head) {
    auto d =
        wire::CreateDeliverDirect(fbb_, &messages_, head, points_.empty() ? nullptr : &points_);
    wire::FinishClientEnvelopeBuffer(
        fbb_, wire::CreateClientEnvelope(fbb_, kClientFormatVersion, request_id,
                                         wire::Body::Deliver, d.Union()));
    return fbb_;
  }

 private:
  flatbuffers::FlatBufferBuilder fbb_;
  std::vector<flatbuffers::Offset<wire::StreamMessage>> messages_;
  std::vector<flatbuffers::Offset<wire::ChainPoint>> points_;
  std::optional<ChainPoint> point_;
  bool point_in_frame_ = false;
  uint64_t last_offset_ = 0;
};

// Room for `bytes` of keys and payloads and `messages` message tables.
size_t DeliverBytesFor(size_t bytes, size_t messages) {
  return 1024 + bytes + 64 * std::min<size_t>(messages, 1 << 16);
}

}  // namespace

ClientService::ClientService(zmq::context_t& context, const BrokerConfig& config,
                             paxos::Replica& replica, LmdbStore& store, const CurveKeyPair* keys,
                             const AccessList* access)
    : config_(config),
      keys_(keys),
      access_(access),
      replica_(replica),
      store_(store),
      socket_(context, zmq::socket_type::router) {}

Status ClientService::Open() {
  std::string address;
  const std::string bind = config_.ClientBindEndpoint();  // [bind] client, or what it advertises
  ParseEndpoint(bind, &address);
  try {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndhwm, 100000);
    socket_.set(zmq::sockopt::rcvhwm, 100000);
    // A reply to a client that is gone fails with EHOSTUNREACH instead of
    // vanishing, so its subscription is dropped rather than served forever.
    socket_.set(zmq::sockopt::router_mandatory, 1);
    // A client host that vanishes without closing: TCP keep-alive ends its
    // connection (and frees what was queued to it) within about a minute.
    socket_.set(zmq::sockopt::tcp_keepalive, 1);
    socket_.set(zmq::sockopt::tcp_keepalive_idle, 30);
    socket_.set(zmq::sockopt::tcp_keepalive_intvl, 10);
    socket_.set(zmq::sockopt::tcp_keepalive_cnt, 3);
    // Hard cap (ZeroMQ drops the connection above it); frames between
    // frame_bytes_max and this get a TooLarge answer.
    socket_.set(zmq::sockopt::maxmsgsize, int64_t{config_.frame_bytes_max} * 2);
    if (keys_) {
      socket_.set(zmq::sockopt::curve_server, true);
      socket_.set(zmq::sockopt::curve_secretkey, keys_->secret_key);
      socket_.set(zmq::sockopt::zap_domain, kZapDomain);
    }
    socket_.bind(address);
  } catch (const zmq::error_t& e) {
    const std::string& advertised = config_.ClientEndpoint();
    return Status::Error("client endpoint " + advertised +
                         (bind == advertised ? "" : " (bound to " + bind + ")") + ": " +
                         BindErrorText(bind, e.num()));
  }
  return Status::Ok();
}

std::string ClientService::LeaderEndpoint() const {
  // The membership in effect (the log's) first: a member added later is in
  // no config file.
  if (const paxos::Member* p = replica_.membership().Find(replica_.leader()); p != nullptr) {
    return p->client;
  }
  const Member* m = config_.Find(replica_.leader().value());
  return m ? m->client : std::string();
}

ClientService::SendResult ClientService::SendFrame(const std::string& identity,
                                                   const uint8_t* data, size_t size) {
  try {
    if (!socket_.send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return SendResult::kFull;  // the client reads slowly: it will ask again
    }
    (void)socket_.send(zmq::const_buffer(data, size), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return SendResult::kGone;
    return SendResult::kFull;
  }
  return SendResult::kSent;
}

namespace {

// What a queued Deliver frame's free function needs (ZeroMQ calls it on its
// I/O thread).
struct QueuedFrame {
  std::shared_ptr<void> keep_connection, keep_all;  // the counters stay alive
  std::atomic<int64_t>* connection;
  std::atomic<int64_t>* connection_freed;
  std::atomic<int64_t>* all;
  int64_t size;
};

void FreeQueuedFrame(void* data, void* hint) {
  auto* frame = static_cast<QueuedFrame*>(hint);
  frame->connection->fetch_sub(frame->size, std::memory_order_relaxed);
  frame->connection_freed->fetch_add(frame->size, std::memory_order_relaxed);
  frame->all->fetch_sub(frame->size, std::memory_order_relaxed);
  delete[] static_cast<uint8_t*>(data);
  delete frame;
}

}  // namespace

std::shared_ptr<ClientService::QueuedBytes> ClientService::QueuedFor(const std::string& identity) {
  std::shared_ptr<QueuedBytes>& q = queued_[identity];
  if (!q) q = std::make_shared<QueuedBytes>();
  return q;
}

ClientService::SendResult ClientService::SendDeliver(const std::string& identity,
                                                     const uint8_t* data, size_t size,
                                                     const std::shared_ptr<QueuedBytes>& queued) {
  try {
    if (!socket_.send(zmq::buffer(identity),
                      zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
      return SendResult::kFull;
    }
    // ZeroMQ would copy the frame anyway; this copy carries a free function,
    // which is how the bytes it still holds are known.
    auto* copy = new uint8_t[size];
    std::memcpy(copy, data, size);
    auto* frame = new QueuedFrame{queued,         queued_all_,         &queued->bytes,
                                  &queued->freed, &queued_all_->bytes, static_cast<int64_t>(size)};
    queued->bytes.fetch_add(frame->size, std::memory_order_relaxed);
    queued_all_->bytes.fetch_add(frame->size, std::memory_order_relaxed);
    zmq::message_t body(copy, size, &FreeQueuedFrame, frame);  // frees both, whatever happens
    (void)socket_.send(body, zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return SendResult::kGone;
    return SendResult::kFull;
  }
  return SendResult::kSent;
}

std::map<std::string, ClientService::Subscription>::iterator ClientService::DropSlowConsumer(
    std::map<std::string, Subscription>::iterator it) {
  ++counters_.slow_consumers;
  const auto now = Clock::now();
  if (now - last_slow_log_ > std::chrono::seconds(10)) {  // rate-limited
    last_slow_log_ = now;
    spdlog::warn(
        "dropped a slow consumer (key {}): {} bytes queued to it, none read for {} ms "
        "({} slow consumers in all)",
        it->second.key.empty() ? "-" : it->second.key, it->second.queued->bytes.load(),
        config_.slow_consumer_timeout_ms, counters_.slow_consumers);
  }
  SendError(it->first, it->second.request_id, Code(wire::ErrorCode::SlowConsumer),
            "slow consumer: nothing of what was queued to this connection was read for " +
                std::to_string(config_.slow_consumer_timeout_ms) +
                " ms (limits.slow_consumer_timeout_ms), so its subscription was dropped; "
                "subscribe again and read faster");
  return subscriptions_.erase(it);
}

void ClientService::SendError(const std::string& identity, uint64_t request_id, uint16_t code,
                              const std::string& message, uint64_t earliest_offset) {
  flatbuffers::FlatBufferBuilder fbb(256);
  const std::string leader =
      code == Code(wire::ErrorCode::NotLeader) ? LeaderEndpoint() : std::string();
  auto err = wire::CreateErrorDirect(fbb, static_cast<wire::ErrorCode>(code), message.c_str(),
                                     leader.c_str(), earliest_offset);
  wire::FinishClientEnvelopeBuffer(
      fbb, wire::CreateClientEnvelope(fbb, kClientFormatVersion, request_id, wire::Body::Error,
                                      err.Union()));
  SendFrame(identity, fbb.GetBufferPointer(), fbb.GetSize());
}

void ClientService::Poll(size_t max) {
  for (size_t n = 0; n < max; ++n) {
    zmq::message_t identity, frame;
    try {
      if (!socket_.recv(identity, zmq::recv_flags::dontwait)) return;
      if (!identity.more()) continue;  // cannot happen on a ROUTER
      (void)socket_.recv(frame, zmq::recv_flags::none);
      bool extra = false;
      while (frame.more()) {
        // A client sends exactly one frame per request: more is malformed.
        zmq::message_t more;
        (void)socket_.recv(more, zmq::recv_flags::none);
        extra = true;
        if (!more.more()) break;
      }
      const std::string id(static_cast<const char*>(identity.data()), identity.size());
      if (extra) {
        ++counters_.frames_rejected;
        uint64_t rid = 0;  // the first frame's, if it names one
        (void)PeekClientRequestId({static_cast<const uint8_t*>(frame.data()), frame.size()}, &rid);
        SendError(id, rid, Code(wire::ErrorCode::BadRequest),
                  "a request is exactly one ZeroMQ frame holding one ClientEnvelope");
        continue;
      }
      // CURVE: the key the ZAP handler let in (its user id) comes with
      // every frame of the connection.
      const char* key = keys_ ? zmq_msg_gets(frame.handle(), "User-Id") : nullptr;
      const std::string_view k = key ? std::string_view(key) : std::string_view();
      // The connection it came on (its descriptor), for the limit per key.
      const bool over_limit =
          connections_ && !connections_->OnFrame(zmq_msg_get(frame.handle(), ZMQ_SRCFD), k);
      Handle(id, frame, k, over_limit);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::warn("client socket: {}", e.what());
      return;
    }
  }
}

bool ClientService::Permitted(const std::string& identity, uint64_t request_id,
                              std::string_view key, Permission permission) {
  if (!access_) return true;  // plaintext
  auto grant = access_->clients.find(key);
  if (grant != access_->clients.end() && (grant->second.permissions & permission) != 0) {
    return true;
  }
  ++counters_.permission_denied;
  const std::string who =
      grant == access_->clients.end()
          ? "this client's key, no longer in the broker's access file,"
          : "this client's key" +
                (grant->second.name.empty() ? std::string() : " (\"" + grant->second.name + "\")");
  SendError(identity, request_id, Code(wire::ErrorCode::PermissionDenied),
            "permission denied: " + who + " lacks the \"" + PermissionName(permission) +
                "\" permission. An operator grants it in the broker's access file "
                "(security.access_file, [[clients]] permissions), then sends the broker SIGHUP");
  return false;
}

void ClientService::Handle(const std::string& identity, const zmq::message_t& frame,
                           std::string_view key, bool over_limit) {
  // Refused frames are counted and logged (rate-limited), and answered:
  // with the request's id once the envelope could be read.
  auto reject = [&](uint64_t request_id, uint16_t code, const std::string& why) {
    ++counters_.frames_rejected;
    ++rejects_since_log_;
    const auto now = Clock::now();
    if (now - last_reject_log_ > std::chrono::seconds(1)) {  // rate-limited
      spdlog::warn("rejected {} bad client frame(s); latest: {}", rejects_since_log_, why);
      rejects_since_log_ = 0;
      last_reject_log_ = now;
    }
    SendError(identity, request_id, code, why);
  };
  ClientRequest request;
  const DecodeStatus decoded = DecodeClientRequest(
      {static_cast<const uint8_t*>(frame.data()), frame.size()},
      ClientLimits{config_.frame_bytes_max, config_.message_bytes_max}, &request);
  if (!decoded.ok()) {
    reject(request.request_id,
           Code(decoded.code() == DecodeCode::kTooLarge ? wire::ErrorCode::TooLarge
                                                        : wire::ErrorCode::BadRequest),
           decoded.message());
    return;
  }
  const uint64_t rid = request.request_id;
  if (over_limit) {
    if (request.kind != ClientRequest::Kind::kCredit) {  // (nothing answers a credit)
      SendError(identity, rid, Code(wire::ErrorCode::TooManyConnections),
                "too many connections: this client's key already holds " +
                    std::to_string(config_.client_connections_per_key_max) +
                    " connections to this broker (limits.client_connections_per_key_max); this "
                    "one is closed. Use another broker, or fewer connections per key");
    }
    return;
  }
  switch (request.kind) {
    case ClientRequest::Kind::kPublish:
      if (!Permitted(identity, rid, key, kPermissionPublish)) return;
      HandlePublish(identity, rid, std::move(request.messages));
      return;
    case ClientRequest::Kind::kSubscribe:
      if (!Permitted(identity, rid, key, kPermissionSubscribe)) return;
      HandleSubscribe(identity, request, key);
      return;
    case ClientRequest::Kind::kCredit: {
      // (Only a subscription, which needed the permission, has credit.)
      auto it = subscriptions_.find(identity);
      if (it != subscriptions_.end()) {
        it->second.credit =
            std::min<uint64_t>(it->second.credit + request.credit, config_.subscriber_credit_max);
      }
      return;
    }
    case ClientRequest::Kind::kFetch:
      if (!Permitted(identity, rid, key, kPermissionSubscribe)) return;
      HandleFetch(identity, request);
      return;
    case ClientRequest::Kind::kStatus:
      if (!Permitted(identity, rid, key, kPermissionAdmin)) return;
      HandleStatus(identity, rid);
      return;
    case ClientRequest::Kind::kMembers:
      if (!Permitted(identity, rid, key, kPermissionAdmin)) return;
      HandleMembers(identity, rid);
      return;
    case ClientRequest::Kind::kChangeMembers:
      if (!Permitted(identity, rid, key, kPermissionAdmin)) return;
      HandleChangeMembers(identity, rid, request.change);
      return;
  }
}

void ClientService::HandlePublish(const std::string& identity, uint64_t rid,
                                  std::vector<paxos::ClientMessage> batch) {
  if (replica_.role() != paxos::Role::kLeader) {
    ++counters_.redirects;
    if (replica_.leader() == paxos::kNoNode && !config_.Self()) {
      SendError(identity, rid, Code(wire::ErrorCode::Unavailable),
                "this broker is a learner and has not yet heard who leads: publish to a voting "
                "member");
    } else if (replica_.leader() == paxos::kNoNode) {
      SendError(identity, rid, Code(wire::ErrorCode::Unavailable),
                "no leader is known yet (an election is running): retry shortly");
    } else {
      SendError(identity, rid, Code(wire::ErrorCode::NotLeader),
                "this broker is not the leader: publish to " + LeaderEndpoint());
    }
    return;
  }
  Pending p;
  p.identity = identity;
  p.request_id = rid;
  p.remaining = batch.size();
  p.offsets.assign(batch.size(), 0);
  p.errors.assign(batch.size(), Code(wire::ErrorCode::None));
  p.answered.assign(batch.size(), false);
  p.started = Clock::now();
  std::vector<Key> keys;
  for (const auto& m : batch) {
    keys.emplace_back(m.producer.value(), m.sequence);
    p.sequences.push_back(m.sequence);
  }
  const paxos::ProposeResult r = replica_.Propose(std::move(batch));
  if (r.code == paxos::ProposeResult::Code::kBusy) {
    SendError(identity, rid, Code(wire::ErrorCode::Busy),
              "the leader's queue is full (batching.pending_bytes_max): back off and retry");
    return;
  }
  if (r.code == paxos::ProposeResult::Code::kNotLeader) {
    SendError(identity, rid, Code(wire::ErrorCode::Unavailable), "leadership changed: retry");
    return;
  }
  counters_.messages_published += keys.size();
  auto it = pending_.insert(pending_.end(), std::move(p));
  for (size_t i = 0; i < keys.size();) {
    size_t n = 1;
    while (i + n < keys.size() && keys[i + n].first == keys[i].first &&
           keys[i + n].second == keys[i].second + n) {
      ++n;
    }
    waiting_.emplace(keys[i], Run{it, i, n, n});
    run_count_max_ = std::max<uint64_t>(run_count_max_, n);
    i += n;
  }
}

void ClientService::OnApplied(std::span<const paxos::AppliedInstance> applied) {
  if (!changes_.empty()) SettleChanges(applied);
  if (waiting_.empty()) return;
  for (const paxos::AppliedInstance& a : applied) {
    for (const paxos::MessageResult& r : a.results) {
      const uint64_t producer = r.producer.value();
      // The runs of this producer that start at or before this sequence,
      // nearest first. Usually the first one holds it and the next starts
      // too far back to reach it. (Two runs hold the same sequence only
      // when a client resent a request to the same leader: both answer.)
      auto it = waiting_.upper_bound(Key{producer, r.sequence});
      while (it != waiting_.begin()) {
        const auto run = std::prev(it);
        if (run->first.first != producer) break;
        const uint64_t behind = r.sequence - run->first.second;  // first <= sequence
        if (behind >= run_count_max_) break;  // neither this run nor any before reaches it
        if (behind < run->second.count && Answer(run, r)) continue;  // erased: `it` still valid
        it = run;
      }
    }
  }
}

bool ClientService::Answer(Runs::iterator run, const paxos::MessageResult& r) {
  Run& w = run->second;
  const size_t index = w.first_index + (r.sequence - run->first.second);
  Pending& p = *w.pending;
  if (p.answered[index]) return false;
  p.answered[index] = true;
  uint16_t code = Code(wire::ErrorCode::None);
  switch (r.outcome) {
    case paxos::PublishOutcome::kAppended:
      break;
    case paxos::PublishOutcome::kDuplicate:
      if (!r.offset_known) code = Code(wire::ErrorCode::DuplicateTooOld);
      break;
    case paxos::PublishOutcome::kOutOfSequence:
      code = Code(wire::ErrorCode::OutOfSequence);
      break;
    case paxos::PublishOutcome::kStaleLeader:
      code = Code(wire::ErrorCode::StaleLeader);
      break;
  }
  p.offsets[index] = r.offset.value();
  p.errors[index] = code;
  const auto pending = w.pending;
  const bool done = --w.left == 0;
  if (done) waiting_.erase(run);
  if (--pending->remaining == 0) Reply(pending);
  return done;
}

void ClientService::Reply(std::list<Pending>::iterator it) {
  flatbuffers::FlatBufferBuilder fbb(64 + 32 * it->sequences.size());
  std::vector<flatbuffers::Offset<wire::PublishResult>> results;
  results.reserve(it->sequences.size());
  for (size_t i = 0; i < it->sequences.size(); ++i) {
    results.push_back(wire::CreatePublishResult(fbb, it->sequences[i], it->offsets[i],
                                                static_cast<wire::ErrorCode>(it->errors[i])));
    if (it->errors[i] == Code(wire::ErrorCode::None)) ++counters_.publishes_acked;
  }
  auto reply = wire::CreatePublishReplyDirect(fbb, &results);
  wire::FinishClientEnvelopeBuffer(
      fbb, wire::CreateClientEnvelope(fbb, kClientFormatVersion, it->request_id,
                                      wire::Body::PublishReply, reply.Union()));
  SendFrame(it->identity, fbb.GetBufferPointer(), fbb.GetSize());
  if (metrics_) {
    metrics_->ObservePublishAck(std::chrono::duration<double>(Clock::now() - it->started).count());
  }
  pending_.erase(it);
}

void ClientService::OnLostLeadership() {
  // The queued messages may still be chosen under the next leader (or be
  // skipped by its barrier); the client's retry with the same sequences
  // settles which, exactly once.
  for (const Pending& p : pending_) {
    SendError(p.identity, p.request_id, Code(wire::ErrorCode::Unavailable),
              "this broker lost leadership before your messages were chosen: retry");
  }
  pending_.clear();
  waiting_.clear();
}

void ClientService::HandleSubscribe(const std::string& identity, const ClientRequest& s,
                                    std::string_view key) {
  const uint64_t rid = s.request_id;
  const uint64_t head = store_.next_offset();
  uint64_t from = s.from_latest ? head : s.from_earliest ? store_.earliest_offset() : s.from_offset;
  if (from < store_.earliest_offset()) {
    SendError(identity, rid, Code(wire::ErrorCode::OffsetBelowRetained),
              "offset " + std::to_string(from) + " is no longer retained; the earliest is " +
                  std::to_string(store_.earliest_offset()),
              store_.earliest_offset());
    return;
  }
  Subscription& sub = subscriptions_[identity];
  sub.key = key;
  if (!sub.queued) sub.queued = QueuedFor(identity);
  sub.last_sent = sub.progress_at = Clock::now();
  sub.freed_seen = sub.queued->freed.load(std::memory_order_relaxed);
  sub.request_id = rid;
  sub.next_offset = from;
  sub.from_instance_start = s.from_instance_start;
  sub.credit = std::min<uint64_t>(s.credit, config_.subscriber_credit_max);
  if (s.from_latest || sub.credit == 0) {
    // Tell the client where it starts, even before any message exists.
    DeliverBuilder deliver(128);
    auto& fbb = deliver.Finish(rid, head);
    SendFrame(identity, fbb.GetBufferPointer(), fbb.GetSize());
  }
}

void ClientService::HandleFetch(const std::string& identity, const ClientRequest& f) {
  const uint64_t rid = f.request_id;
  if (f.compacted) {
    std::vector<StreamMessage> msgs;
    const uint32_t max = std::min(f.max_messages, kFetchMessagesMax);
    if (store_.ReadCompacted(f.from_offset, 0, max, config_.frame_bytes_max / 2, &msgs) !=
            paxos::StoreCode::kOk &&
        msgs.empty()) {
      SendError(identity, rid, Code(wire::ErrorCode::Unavailable),
                "this broker cannot read its compacted view right now; try another broker");
      return;
    }
    DeliverBuilder deliver(DeliverBytesFor(config_.frame_bytes_max / 2, msgs.size()));
    for (const StreamMessage& m : msgs) deliver.Add(m);
    auto& fbb = deliver.Finish(rid, store_.next_offset());
    SendFrame(identity, fbb.GetBufferPointer(), fbb.GetSize());
    return;
  }
  if (f.from_offset < store_.earliest_offset()) {
    SendError(identity, rid, Code(wire::ErrorCode::OffsetBelowRetained),
              "offset " + std::to_string(f.from_offset) +
                  " is no longer retained; the earliest is " +
                  std::to_string(store_.earliest_offset()),
              store_.earliest_offset());
    return;
  }
  const uint32_t max = std::min(f.max_messages, kFetchMessagesMax);
  const size_t max_bytes = config_.frame_bytes_max / 2;
  DeliverBuilder deliver(DeliverBytesFor(max_bytes, max));
  const LmdbStore::InstanceVisitor points = deliver.PointVisitor();
  const paxos::StoreCode code = store_.ReadStream(f.from_offset, max, max_bytes, deliver.Visitor(),
                                                  &points, f.from_instance_start);
  if (code != paxos::StoreCode::kOk && deliver.count() == 0) {
    SendError(identity, rid, Code(wire::ErrorCode::Unavailable),
              "this broker cannot read offset " + std::to_string(f.from_offset) + " right now (" +
                  paxos::ToString(code) + "); try another broker");
    return;
  }
  auto& fbb = deliver.Finish(rid, store_.next_offset());
  SendFrame(identity, fbb.GetBufferPointer(), fbb.GetSize());
}

void ClientService::HandleStatus(const std::string& identity, uint64_t rid) {
  const paxos::Status s = replica_.status();
  flatbuffers::FlatBufferBuilder fbb(512);
  std::vector<flatbuffers::Offset<wire::PeerStatus>> peers;
  for (const paxos::PeerStatus& p : s.peers) {
    const uint64_t lag = s.chosen > p.chosen ? s.chosen.value() - p.chosen.value() : 0;
    peers.push_back(wire::CreatePeerStatus(fbb, p.id.value(), p.chosen.value(), lag,
                                           p.ticks_since_heard * config_.tick_ms));
  }
  const wire::Ballot ballot(s.leader_ballot.round, s.leader_ballot.node.value());
  const wire::Ballot promised(s.promised.round, s.promised.node.value());
  const std::string leader = LeaderEndpoint();
  const char* role = s.voter ? paxos::ToString(s.role) : "learner";  // a learner never campaigns
  paxos::ChainValue chain;
  const bool chain_known = store_.ChainHead(&chain);
  const std::vector<uint8_t> chain_head(chain.bytes.begin(), chain.bytes.end());
  auto reply = wire::CreateStatusReplyDirect(
      fbb, config_.node_id, role, s.leader.value(), leader.c_str(), &ballot, &promised,
      s.chosen.value(), s.last_instance.value(), store_.next_offset(), store_.earliest_offset(),
      &peers, store_.corruptions(), counters_.frames_rejected, s.voter, s.catching_up,
      s.rejoin_target.value(), votes_while_catching_up_, s.first_retained.value(),
      s.snapshots_installed, ORDO_VERSION, chain_known ? &chain_head : nullptr);
  wire::FinishClientEnvelopeBuffer(
      fbb, wire::CreateClientEnvelope(fbb, kClientFormatVersion, rid, wire::Body::StatusReply,
                                      reply.Union()));
  SendFrame(identity, fbb.GetBufferPointer(), fbb.GetSize());
}

void ClientService::OnAccessChanged() {
  for (auto it = subscriptions_.begin(); it != subscriptions_.end();) {
    if (Permitted(it->first, it->second.request_id, it->second.key, kPermissionSubscribe)) {
      ++it;
    } else {
      it = subscriptions_.erase(it);
    }
  }
}

void ClientService::SubscriberLag(uint64_t* max, uint64_t* sum) const {
  const uint64_t head = store_.next_offset();
  *max = 0;
  *sum = 0;
  for (const auto& [identity, sub] : subscriptions_) {
    const uint64_t lag = head > sub.next_offset ? head - sub.next_offset : 0;
    *max = std::max(*max, lag);
    *sum += lag;
  }
}

namespace {
using MemberOffsets = std::vector<flatbuffers::Offset<wire::Member>>;
MemberOffsets MembersToWire(flatbuffers::FlatBufferBuilder& fbb, const paxos::Membership& m) {
  MemberOffsets out;
  for (const paxos::Member& x : m.members) {
    out.push_back(wire::CreateMemberDirect(fbb, x.id.value(), x.voter, x.peer.c_str(),
                                           x.client.c_str(), x.public_key.c_str()));
  }
  return out;
}

// Whether `m` is the membership `change` makes (the entry at the instance
// is ours, not another leader's value).
bool Reflects(const paxos::Membership& m, const paxos::MembershipChange& change) {
  const paxos::Member* x = m.Find(change.member.id);
  switch (change.kind) {
    case paxos::MembershipChange::Kind::kAddLearner:
      return x != nullptr && x->peer == change.member.peer && x->client == change.member.client &&
             x->public_key == change.member.public_key;
    case paxos::MembershipChange::Kind::kPromote:
      return x != nullptr && x->voter;
    case paxos::MembershipChange::Kind::kRemove:
      return x == nullptr;
  }
  return false;
}
}  // namespace

void ClientService::HandleMembers(const std::string& identity, uint64_t rid) {
  const paxos::Status s = replica_.status();
  const paxos::Membership& membership = replica_.membership();
  flatbuffers::FlatBufferBuilder fbb(1024);
  std::vector<flatbuffers::Offset<wire::MemberInfo>> members;
  for (const paxos::Member& m : membership.members) {
    std::string state = "learner";
    bool heard = false, lag_known = false;
    uint64_t heard_ms = 0, lag = 0;
    if (m.id == replica_.id()) {
      if (m.voter) state = paxos::ToString(s.role);
      lag_known = true;
    } else {
      if (m.voter) state = m.id == s.leader ? "leader" : "follower";
      for (const paxos::PeerStatus& p : s.peers) {
        if (p.id != m.id) continue;
        heard = true;
        heard_ms = p.ticks_since_heard * config_.tick_ms;
        lag_known = true;
        lag = s.chosen > p.chosen ? s.chosen.value() - p.chosen.value() : 0;
      }
    }
    members.push_back(wire::CreateMemberInfoDirect(fbb, m.id.value(), m.voter, m.peer.c_str(),
                                                   m.client.c_str(), m.public_key.c_str(),
                                                   state.c_str(), heard, heard_ms, lag_known, lag));
  }
  auto reply = wire::CreateMembersReplyDirect(fbb, config_.node_id, s.leader.value(), &members,
                                              replica_.applied_state().membership().empty(),
                                              replica_.change_pending().value(), s.chosen.value());
  wire::FinishClientEnvelopeBuffer(
      fbb, wire::CreateClientEnvelope(fbb, kClientFormatVersion, rid, wire::Body::MembersReply,
                                      reply.Union()));
  SendFrame(identity, fbb.GetBufferPointer(), fbb.GetSize());
}

void ClientService::HandleChangeMembers(const std::string& identity, uint64_t rid,
                                        const paxos::MembershipChange& change) {
  using Code = paxos::ChangeResult::Code;
  if (change.kind == paxos::MembershipChange::Kind::kAddLearner && keys_ != nullptr &&
      change.member.public_key.empty()) {
    SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::BadRequest),
              "this cluster runs CurveZMQ: a new member needs its public key (ordo keygen "
              "makes a key file; pass --public-key or --key-file)");
    return;
  }
  const std::string id = std::to_string(change.member.id.value());
  if (change.kind == paxos::MembershipChange::Kind::kAddLearner &&
      replica_.membership().Find(change.member.id) == nullptr) {
    // Two members with one key could not be told apart (a frame counts as
    // sent by its key's member), nor two on one endpoint.
    for (const paxos::Member& m : replica_.membership().members) {
      const bool same_key = !m.public_key.empty() && m.public_key == change.member.public_key;
      const bool same_endpoint = m.peer == change.member.peer || m.client == change.member.client ||
                                 m.peer == change.member.client || m.client == change.member.peer;
      if (same_key || same_endpoint) {
        SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::BadRequest),
                  "node " + id + " would share " + (same_key ? "its public key" : "an endpoint") +
                      " with member " + std::to_string(m.id.value()));
        return;
      }
    }
  }
  const paxos::ChangeResult r = replica_.ProposeChange(change);
  switch (r.code) {
    case Code::kOk: {
      PendingChange p{identity, rid, change, r.instance, Clock::now()};
      changes_.push_back(std::move(p));
      spdlog::info("membership change proposed at instance {}: {} node {}", r.instance.value(),
                   change.kind == paxos::MembershipChange::Kind::kAddLearner ? "add learner"
                   : change.kind == paxos::MembershipChange::Kind::kPromote  ? "promote"
                                                                             : "remove",
                   id);
      return;
    }
    case Code::kNotLeader:
      ++counters_.redirects;
      if (replica_.leader() == paxos::kNoNode || LeaderEndpoint().empty()) {
        SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::Unavailable),
                  "no leader is known yet (an election is running): retry shortly");
      } else {
        SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::NotLeader),
                  "this broker is not the leader: send membership changes to " + LeaderEndpoint());
      }
      return;
    case Code::kInProgress:
      SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::ChangeInProgress),
                "another membership change is not yet chosen (or the leader is still "
                "recovering): retry in a moment");
      return;
    case Code::kUnknownMember:
      SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::UnknownMember),
                "node " + id + " is not a member (ordo members lists them)");
      return;
    case Code::kAlreadyMember:
      SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::AlreadyMember),
                change.kind == paxos::MembershipChange::Kind::kPromote
                    ? "node " + id + " is a voter already"
                    : "node " + id + " is a member already (ids are never reused: pick a new one)");
      return;
    case Code::kLastVoter:
      SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::LastVoter),
                "node " + id + " is the only voter: add and promote another one first");
      return;
    case Code::kNotCaughtUp:
      SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::NotCaughtUp),
                "learner " + id +
                    " has not caught up with the log yet (or the leader has not "
                    "heard from it): retry once it has");
      return;
    case Code::kInvalid:
      SendError(identity, rid, ErrorCodeOf(wire::ErrorCode::BadRequest),
                "invalid membership change for node " + id + " (id 0, or more than " +
                    std::to_string(paxos::VoteSet::kVotersMax) + " voters)");
      return;
  }
}

void ClientService::SettleChanges(std::span<const paxos::AppliedInstance> applied) {
  for (const paxos::AppliedInstance& a : applied) {
    for (auto it = changes_.begin(); it != changes_.end();) {
      if (a.instance < it->instance) {
        ++it;
        continue;
      }
      // At its instance: ours if that is a configuration entry that makes
      // the change. Past it (a snapshot jumped over it): the membership
      // now in effect tells.
      const bool ours = a.instance == it->instance
                            ? a.value && a.value->kind == paxos::ValueKind::kConfig &&
                                  Reflects(a.value->membership, it->change)
                            : Reflects(replica_.membership(), it->change);
      if (ours) {
        const paxos::Membership& m =
            a.instance == it->instance ? a.value->membership : replica_.membership();
        flatbuffers::FlatBufferBuilder fbb(1024);
        MemberOffsets members = MembersToWire(fbb, m);
        auto reply = wire::CreateChangeMembersReplyDirect(fbb, it->instance.value(), &members);
        wire::FinishClientEnvelopeBuffer(
            fbb, wire::CreateClientEnvelope(fbb, kClientFormatVersion, it->request_id,
                                            wire::Body::ChangeMembersReply, reply.Union()));
        SendFrame(it->identity, fbb.GetBufferPointer(), fbb.GetSize());
      } else {
        SendError(it->identity, it->request_id, ErrorCodeOf(wire::ErrorCode::Unavailable),
                  "the leader lost its leadership before the change was chosen: it was not "
                  "made; retry");
      }
      it = changes_.erase(it);
    }
  }
}

void ClientService::Service(Clock::time_point now) {
  for (auto it = changes_.begin(); it != changes_.end();) {
    if (now - it->started < kChangeTimeout) {
      ++it;
      continue;
    }
    SendError(it->identity, it->request_id, ErrorCodeOf(wire::ErrorCode::Unavailable),
              "the change was not chosen within 30 s (no quorum?): it may still be; list the "
              "members, then retry");
    it = changes_.erase(it);
  }
  // Subscriptions: push what each has credit for, from this broker's log.
  const uint64_t head = store_.next_offset();
  more_to_deliver_ = false;
  // One builder for every frame of this turn: its buffer is reused.
  std::optional<DeliverBuilder> builder;
  for (auto it = subscriptions_.begin(); it != subscriptions_.end();) {
    Subscription& sub = it->second;
    if (sub.next_offset < store_.earliest_offset()) {
      // Retention moved past a subscriber too slow to keep up: it must
      // restart from the earliest offset (or read the compacted view).
      SendError(it->first, sub.request_id, Code(wire::ErrorCode::OffsetBelowRetained),
                "offset " + std::to_string(sub.next_offset) +
                    " is no longer retained (this subscriber fell behind the retention "
                    "limits); the earliest is " + std::to_string(store_.earliest_offset()),
                store_.earliest_offset());
      it = subscriptions_.erase(it);
      continue;
    }
    // Progress: ZeroMQ sent some of what was queued (the client reads), or
    // nothing is queued.
    const int64_t freed = sub.queued->freed.load(std::memory_order_relaxed);
    if (freed != sub.freed_seen || sub.queued->bytes.load(std::memory_order_relaxed) == 0) {
      sub.freed_seen = freed;
      sub.progress_at = now;
    } else if (now - sub.progress_at >=
               std::chrono::milliseconds(config_.slow_consumer_timeout_ms)) {
      it = DropSlowConsumer(it);
      continue;
    }
    const bool waiting = sub.credit > 0 && sub.next_offset < head;
    const auto connection_max = static_cast<int64_t>(config_.subscriber_queued_bytes_max);
    if (!waiting) {
      if (now - sub.last_sent >= kSubscriberKeepalive) {
        DeliverBuilder empty(128);
        auto& fbb = empty.Finish(sub.request_id, head);
        if (SendFrame(it->first, fbb.GetBufferPointer(), fbb.GetSize()) == SendResult::kGone) {
          it = subscriptions_.erase(it);
          continue;
        }
        sub.last_sent = now;
      }
      ++it;
      continue;
    }
    const auto all_max = static_cast<int64_t>(config_.subscribers_queued_bytes_max);
    auto over = [&] {
      return sub.queued->bytes.load(std::memory_order_relaxed) >= connection_max ||
             queued_all_->bytes.load(std::memory_order_relaxed) >= all_max;
    };
    if (over()) {  // every subscriber's share is taken: wait for ZeroMQ to send
      ++it;
      continue;
    }
    if (!builder) builder.emplace(DeliverBytesFor(kDeliverBytesMax, kDeliverMessagesMax));
    DeliverBuilder& deliver = *builder;
    const size_t max = std::min<uint64_t>(sub.credit, kServeMessagesMax);
    SendResult sent = SendResult::kSent;
    size_t visited = 0;
    auto send = [&] {
      auto& fbb = deliver.Finish(sub.request_id, head);
      sent = SendDeliver(it->first, fbb.GetBufferPointer(), fbb.GetSize(), sub.queued);
      if (sent == SendResult::kSent) {
        sub.next_offset = deliver.last_offset() + 1;
        sub.from_instance_start = false;
        sub.credit -= deliver.count();
        sub.last_sent = now;
        counters_.messages_delivered += deliver.count();
        // Bounded: the rest waits until ZeroMQ has sent what is queued.
        if (over()) sent = SendResult::kFull;
      }
      deliver.Reset();
    };
    const LmdbStore::InstanceVisitor points = deliver.PointVisitor();
    store_.ReadStream(
        sub.next_offset, max, kServeBytesMax,
        [&](uint64_t offset, const MessageView& m) {
          ++visited;
          // Once a frame could not go, the rest waits for a later turn.
          if (sent != SendResult::kSent) return;
          deliver.Add(offset, m);
          if (deliver.count() >= kDeliverMessagesMax || deliver.bytes() >= kDeliverBytesMax) {
            send();
          }
        },
        &points, sub.from_instance_start);
    if (sent == SendResult::kSent && deliver.count() > 0) send();
    deliver.Reset();
    if (sent == SendResult::kGone) {
      it = subscriptions_.erase(it);
      continue;
    }
    if (visited == 0 || sent == SendResult::kFull) {  // unreadable here (being repaired), or full
      ++it;
      continue;
    }
    // More to push at once: the loop must not sleep until the next frame
    // or tick (that paced replays at one Deliver per loop turn).
    more_to_deliver_ |= sub.credit > 0 && sub.next_offset < head;
    ++it;
  }
  // Counters no subscription and no frame in flight uses any more.
  if (now - queued_swept_ >= std::chrono::seconds(1)) {
    queued_swept_ = now;
    for (auto q = queued_.begin(); q != queued_.end();) {
      q = q->second.use_count() == 1 ? queued_.erase(q) : std::next(q);
    }
  }
  // Publishes that waited too long (a stuck quorum): let the client retry.
  while (!pending_.empty() && now - pending_.front().started > kPublishTimeout) {
    const Pending& p = pending_.front();
    SendError(p.identity, p.request_id, Code(wire::ErrorCode::Unavailable),
              "not chosen within 30 s: retry");
    for (auto w = waiting_.begin(); w != waiting_.end();) {
      w = w->second.pending == pending_.begin() ? waiting_.erase(w) : std::next(w);
    }
    pending_.pop_front();
  }
}

}  // namespace ordo::broker
