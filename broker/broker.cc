#include "broker/broker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <random>

#include "broker/codec.h"

namespace ordo::broker {

using Clock = std::chrono::steady_clock;

namespace {
constexpr size_t kPeerBytesPerTurnMax = 16 << 20;  // peer frames decoded per loop turn
// Fetches waiting for the catch-up server; beyond, they are dropped (the
// asker times out and asks again, backing off).
constexpr size_t kCatchUpQueuedMax = 16;
}  // namespace

Broker::Broker(BrokerConfig config) : config_(std::move(config)) {}

Broker::~Broker() {
  // Sockets close before the context terminates (and the catch-up server's
  // thread stops before the store closes).
  catchup_.reset();
  connections_.reset();
  clients_.reset();
  snapshots_.reset();
  peers_.reset();
}

Status Broker::OpenStorage() {
  Status s = DataDir::Acquire(config_.data_dir, config_.cluster_id, config_.node_id, &data_dir_);
  if (s.ok()) {
    const auto start = Clock::now();
    s = LmdbStore::Scrub(config_.data_dir, config_.map_size_bytes, &scrub_);
    if (s.ok() && scrub_.records > 0) {
      spdlog::info("storage {}: {} records checked in {} ms{}", config_.data_dir, scrub_.records,
                   std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count(),
                   scrub_.clean() ? "" : "; damaged ones are repaired (below)");
    }
    if (s.ok() && !scrub_.clean()) {
      // Never written into: pages around a damaged record may be damaged
      // in ways no check sees.
      const auto rewrite_start = Clock::now();
      const StatusOr<uint64_t> copied = LmdbStore::Rewrite(config_.data_dir, config_.map_size_bytes);
      s = copied.status();
      if (s.ok()) {
        spdlog::warn("storage {}: data.mdb was rewritten into fresh pages ({} records in {} ms), "
                     "so that no write goes into a damaged page", config_.data_dir, copied.value(),
                     std::chrono::duration_cast<std::chrono::milliseconds>(
                         Clock::now() - rewrite_start).count());
      }
    }
  }
  if (s.ok()) s = LmdbStore::Open(config_.data_dir, config_.map_size_bytes, &store_);
  if (s.ok() && !scrub_.chain_mismatches.empty()) {
    // A record that passes its checksum yet is not what was applied: what
    // changed it (a bug, an edit) may have changed others the chain cannot
    // see (unapplied ones, the hard state). Nothing here is trusted.
    const auto [instance, offset] = scrub_.chain_mismatches.front();
    s = Status::Damaged("the log record of instance " + std::to_string(instance) +
                        " (offsets from " + std::to_string(offset) +
                        ") passes its checksum but does not hash to the stream's chain its "
                        "index recorded when it was applied (" +
                        std::to_string(scrub_.chain_mismatches.size()) +
                        " such record(s)): it was changed after it was written");
  }
  if (s.ok()) {
    // A damaged record above the durable chosen mark may be a value this
    // node accepted and vouched for: it is no better than a lost one.
    for (uint64_t instance : scrub_.damaged_log) {
      if (instance > store_->LoadHardState().chosen.value()) {
        s = Status::Damaged("the log record of instance " + std::to_string(instance) +
                            " fails its check, and it is above the chosen frontier (" +
                            std::to_string(store_->LoadHardState().chosen.value()) +
                            "): a value this broker accepted may be lost");
        break;
      }
    }
  }
  // The file as it was before a rewrite goes once the copy is trusted (a
  // start after a crash between the two removes it too).
  if (s.ok()) {
    if (Status d = LmdbStore::DropPreRewrite(config_.data_dir); !d.ok()) {
      spdlog::warn("storage {}: {} (the copy is in use; remove it by hand)", config_.data_dir,
                   d.message());
    }
  }
  if (s.kind() != Status::Kind::kDamaged) return s;
  // What is stored may hide a promise or an accepted value this node gave
  // (protocol-aware recovery): it must not vote on it. With peers to learn
  // from, it starts over as a lost disk does: the damaged files move aside,
  // and it rejoins as a non-voter until it has caught up past anything it
  // could have voted on. A single voter has no one to restore it from.
  store_.reset();
  if (config_.Self() && config_.members.size() == 1) {
    return Status::Storage("stored state in " + config_.data_dir + " is damaged (" + s.message() +
                           ") and a single-member cluster has no peer to restore it from. "
                           "Restore the directory from a backup");
  }
  const StatusOr<std::string> moved_to = data_dir_->Quarantine();
  if (!moved_to.ok()) {
    return Status::Storage(moved_to.status().message() +
                           " (while moving damaged state aside: " + s.message() + ")");
  }
  spdlog::error("stored state is damaged: {}. It was moved to {}; this broker starts over "
                "empty and catches up from its peers before it votes (the directory can be "
                "deleted once you have looked at it)",
                s.message(), moved_to.value());
  quarantined_ = true;
  scrub_ = {};
  return LmdbStore::Open(config_.data_dir, config_.map_size_bytes, &store_);
}

Status Broker::Start() {
  Status s = OpenStorage();
  if (!s.ok()) return s.kind() == Status::Kind::kError ? Status::Storage(s.message()) : s;
  const paxos::HardState hs = store_->LoadHardState();
  spdlog::info("storage {}: promised {}, chosen up to instance {}, last instance {}, next offset {}"
               " ({} journal records replayed)",
               config_.data_dir, paxos::ToString(hs.promised), hs.chosen.value(),
               store_->LastInstance().value(), store_->next_offset(), store_->journal_replayed());
  // Election jitter must differ between brokers and runs; the core itself
  // takes the seed as an input and stays deterministic.
  std::random_device rd;
  const uint64_t seed = (uint64_t{rd()} << 32) ^ rd();
  paxos::Config core = config_.CoreConfig(seed);
  // An empty data directory may be a new cluster or a lost disk: the core
  // asks the peers before it votes (docs/operations.md, "Lost disks").
  core.probe_before_voting = store_->opened_empty();
  core.history_lost = data_dir_->history_lost();
  // Fetches are served off the event loop (broker/catchup_server.h).
  core.host_serves_fetch = true;
  if (core.probe_before_voting && config_.Self()) {
    spdlog::info("empty data directory: asking the peers whether the cluster has a history "
                 "before voting");
  }
  node_storage_ = std::make_unique<NodeStorage>(*store_);
  replica_ = std::make_unique<paxos::Replica>(core, *node_storage_);
  loop_ = std::make_unique<node::NodeLoop>(*replica_, *node_storage_, *this, *this);
  // The head the index gives must be where the replayed log ends: a
  // damaged last index record (or a lost one) would move it.
  // (Only when the replay reached the chosen frontier: a damaged chosen
  // record stops it until the record is repaired.)
  if (replica_->applied_state().applied() == replica_->chosen() &&
      store_->next_offset() != replica_->applied_state().next_offset().value()) {
    spdlog::error("damaged offset index in {}: it ends at offset {}, the log at {}; it is "
                  "rebuilt from the log", config_.data_dir, store_->next_offset(),
                  replica_->applied_state().next_offset().value());
    store_->ResetNextOffset(replica_->applied_state().next_offset().value());
    derived_damage_ = true;
  }
  // What the scrub found is repaired now, not when a reader first needs it.
  for (uint64_t instance : scrub_.damaged_log) store_->NoteScrubbedDamage(instance);
  HandleStorageDamage();
  if (scrub_.damaged_derived) {
    spdlog::error("damaged records in {}: the offset index or the compacted view; they are "
                  "rebuilt from the log", config_.data_dir);
    derived_damage_ = true;
  }
  if (!(s = StartSecurity()).ok()) return s;
  peers_ = std::make_unique<PeerTransport>(context_, config_, keys_ ? &*keys_ : nullptr);
  if (!(s = peers_->Open()).ok()) return s;

  catchup_ = std::make_unique<CatchUpServer>(
      context_, *store_,
      CatchUpServer::Limits{core.fetch_entries_max, core.fetch_bytes_max, kCatchUpQueuedMax});
  if (!(s = catchup_->Start()).ok()) return s;
  snapshots_ = std::make_unique<SnapshotService>(
      config_, *store_, *peers_, [this] { return replica_->applied_state().applied(); },
      [this] {
        // An install replaces the index: what waits must be written first.
        const Status flushed = loop_->FlushDeferred();
        if (!flushed.ok()) deferred_error_ = flushed.message();
        return flushed.ok();
      });
  // The store's membership (the log's, or a snapshot's) wins over the file.
  if (!(s = FollowMembership()).ok()) return s;
  clients_ = std::make_unique<ClientService>(context_, config_, *replica_, *store_,
                                             keys_ ? &*keys_ : nullptr, keys_ ? &access_ : nullptr);
  // Always: it also sets the client connections' TCP user timeout.
  ClientConnections::Options connection_options;
  connection_options.tcp_user_timeout_ms = 2 * static_cast<int>(config_.slow_consumer_timeout_ms);
  connection_options.per_key_max = config_.client_connections_per_key_max;
  s = ClientConnections::Attach(context_, clients_->socket(), &connections_, connection_options);
  if (!s.ok()) return s;
  clients_->set_connections(connections_.get());
  if (!(s = clients_->Open()).ok()) return s;
  connections_->Count();  // takes the listening event: the timeout is set
  if (!config_.metrics.empty()) {
    s = monitoring::BrokerMetrics::Start(config_.MetricsBindEndpoint(), config_.node_id,
                                         config_.data_dir, &metrics_);
    if (!s.ok()) return s;
    clients_->set_metrics(metrics_.get());
    node_storage_->set_metrics(metrics_.get());
  }
  // Each endpoint as others reach it, and what it is bound to where that differs.
  auto where = [](const std::string& advertised, const std::string& bound) {
    return bound == advertised ? advertised : advertised + " (bound to " + bound + ")";
  };
  spdlog::info(
      "node {} up ({}): peers on {}, clients on {}, metrics on {}", config_.node_id,
      !config_.Self() ? "learner"
      : config_.join  ? "voter, joining"
                      : "voter",
      config_.Self() ? where(config_.Self()->peer, config_.PeerBindEndpoint()) : "(none: learner)",
      where(config_.ClientEndpoint(), config_.ClientBindEndpoint()),
      config_.metrics.empty() ? "(off)" : where(config_.metrics, config_.MetricsBindEndpoint()));
  return Status::Ok();
}

Status Broker::StartSecurity() {
  if (config_.security.insecure) {
    spdlog::warn("security.insecure = true: every port is plaintext, and anyone who can reach "
                 "them can vote, publish and read as any node or client");
    return Status::Ok();
  }
  StatusOr<KeyFile> file = LoadKeyFile(config_.security.key_file);
  if (!file.ok()) return Status::Error("security.key_file: " + file.status().message());
  keys_ = file.value().pair;
  for (const Member& m : config_.members) member_by_key_[m.public_key] = m.id;
  if (const Member* self = config_.Self(); self && self->public_key != keys_->public_key) {
    return Status::Error("security.key_file " + config_.security.key_file + " holds public key " +
                         keys_->public_key + ", but [[members]] lists " + self->public_key +
                         " for node " + std::to_string(config_.node_id));
  }
  if (member_by_key_.count(keys_->public_key) && !config_.Self()) {
    return Status::Error("security.key_file: a learner cannot use a member's key");
  }
  StatusOr<AccessList> access = LoadAccessFile(config_.security.access_file, config_);
  if (!access.ok()) return Status::Error("security.access_file: " + access.status().message());
  access_ = std::move(access).value();
  // Before any CURVE socket binds (see zap_handler.h).
  return ZapHandler::Start(
      context_,
      [this](const ZapRequest& request) {
        const std::string& k = request.public_key;
        bool known = false;
        if (request.domain == PeerTransport::kZapDomain) {
          known = member_by_key_.count(k) > 0 || access_.learners.count(k) > 0;
        } else if (request.domain == ClientService::kZapDomain) {
          // Any listed client connects, up to its limit of connections;
          // each request is then checked against its permissions
          // (client_service.h).
          known = access_.clients.count(k) > 0;
          if (known && connections_ && !connections_->Admit(k, Clock::now())) {
            return ZapAnswer::kTooManyConnections;
          }
        }
        return known ? ZapAnswer::kAllow : ZapAnswer::kUnknownKey;
      },
      &zap_);
}

void Broker::ReloadAccess() {
  if (config_.security.insecure) {
    spdlog::info("SIGHUP: plaintext mode, no access file to reload");
    return;
  }
  StatusOr<AccessList> access = LoadAccessFile(config_.security.access_file, config_);
  if (!access.ok()) {
    spdlog::error("SIGHUP: keeping the access list as it was: {}", access.status().message());
    return;
  }
  access_ = std::move(access).value();
  if (clients_) clients_->OnAccessChanged();
  spdlog::info("SIGHUP: reloaded {} ({} learner keys, {} client keys)",
               config_.security.access_file, access_.learners.size(), access_.clients.size());
}

bool Broker::SentBy(const PeerTransport::Sender& sender, uint32_t from, bool timeout_now,
                    std::string* why) const {
  if (!keys_) return true;  // plaintext: nothing to check against
  if (sender.link != 0) {
    // On a DEALER: the member whose server key it pinned.
    if (from == sender.link) return true;
    *why = "a frame from node " + std::to_string(sender.link) + "'s connection claims from " +
           std::to_string(from);
    return false;
  }
  uint32_t id = 0;
  if (auto m = member_by_key_.find(sender.key); m != member_by_key_.end()) {
    id = m->second;
  } else if (auto l = access_.learners.find(sender.key); l != access_.learners.end()) {
    id = l->second;  // (a key removed at a reload sends nothing more)
  } else if (auto r = removed_by_key_.find(sender.key); timeout_now && r != removed_by_key_.end()) {
    id = r->second;  // a leader the last change removed hands over
  }
  if (id != 0 && id == from) return true;
  *why = id == 0 ? "a frame from key " + sender.key + ", which is no member's or learner's"
                 : "a frame sent with node " + std::to_string(id) + "'s key claims from " +
                       std::to_string(from);
  return false;
}

void Broker::HandlePeerFrames(size_t max, size_t max_bytes) {
  const size_t limit = config_.PeerFrameBytesMax();
  size_t bytes = 0;
  // Bounded by bytes too: what a turn decodes is held (as entries to
  // persist) until DrainReady writes it, so a backlog of batch frames must
  // not be decoded all at once.
  for (size_t n = 0; n < max && bytes < max_bytes; ++n) {
    zmq::message_t frame;
    bool well_formed = false;
    PeerTransport::Sender sender;
    if (!peers_->Receive(&frame, &well_formed, &sender)) return;
    const std::string& route = sender.route;
    bytes += frame.size();
    PeerFrame f;
    DecodeStatus d;
    if (!well_formed) {
      d = DecodeStatus::Error(DecodeCode::kMalformed, "not a single-frame peer message");
    } else {
      d = DecodePeerFrame({static_cast<const uint8_t*>(frame.data()), frame.size()}, limit, &f);
    }
    const uint32_t from = f.is_snapshot ? f.snapshot.from : f.message.from.value();
    const uint32_t to = f.is_snapshot ? f.snapshot.to : f.message.to.value();
    if (d.ok() && (to != config_.node_id || from == config_.node_id)) {
      d = DecodeStatus::Error(DecodeCode::kInvalid, "from/to is not a peer and this node");
    }
    // The sender is the key that sent the frame, whatever the frame says.
    // A leader that a configuration entry removed sends one last message,
    // TimeoutNow, to its successor, which may have applied the entry first.
    const bool handover = d.ok() && !f.is_snapshot &&
                          f.message.type == paxos::MessageType::kTimeoutNow &&
                          removed_ids_.count(from) > 0;
    if (std::string why; d.ok() && !SentBy(sender, from, handover, &why)) {
      d = DecodeStatus::Error(DecodeCode::kInvalid, why);
    }
    // A non-member is a learner: it may only ask for chosen entries (Fetch),
    // which vouch for nothing; anything else from it could sway a vote. A
    // learner hears only from members.
    // (A snapshot request is also a read: a learner behind the truncated
    // log installs a snapshot like anyone else.)
    const bool read_only = f.is_snapshot ? f.snapshot.op == SnapshotMessage::kRequest
                                         : f.message.type == paxos::MessageType::kFetch;
    if (d.ok() && !member_ids_.count(from) && !handover && (!read_only || !config_.Self())) {
      d = DecodeStatus::Error(DecodeCode::kInvalid,
                              "node " + std::to_string(from) +
                                  " is not a member: only Fetch is accepted from a learner");
    }
    if (!d.ok()) {
      ++peer_frames_rejected_;
      ++peer_rejects_since_log_;
      const auto now = Clock::now();
      if (now - last_peer_reject_log_ > std::chrono::seconds(1)) {  // rate-limited
        spdlog::warn("rejected {} bad peer frame(s); latest: {}", peer_rejects_since_log_,
                     d.ToString());
        peer_rejects_since_log_ = 0;
        last_peer_reject_log_ = now;
      }
      continue;
    }
    if (f.is_snapshot) {
      peers_->NoteReceivedSnapshot(f.snapshot, frame.size(), route);
      snapshots_->OnMessage(f.snapshot, Clock::now());
      continue;
    }
    peers_->NoteReceived(f.message, frame.size(), route);
    replica_->Step(f.message);
  }
}

void Broker::SendCatchUpReplies() {
  catchup_->Drain(
      [this](uint32_t to, zmq::message_t frame) { peers_->SendCatchUp(to, std::move(frame)); },
      [this](paxos::Instance instance, const std::string& what) {
        // Logged and counted once per record, like the loop's own reads.
        if (catchup_damaged_.size() < kCatchUpDamagedMax &&
            catchup_damaged_.insert(instance.value()).second) {
          spdlog::error("damaged record (found serving a peer's fetch): {}; it is not served "
                        "and is being repaired from a peer", what);
          ++catchup_damage_count_;
        }
        loop_->ReportUnreadable(instance);
      });
}

Status Broker::DrainReady() {
  if (Status s = loop_->Drain(); !s.ok()) return s;
  if (std::optional<paxos::AppliedSnapshot> installed = snapshots_->TakeInstalled()) {
    replica_->InstallSnapshot(*installed);
    if (Status s = FollowMembership(); !s.ok()) return s;
    if (metrics_) metrics_->ObserveSnapshotInstall(snapshots_->counters().last_install_seconds);
    return DrainReady();
  }
  return Status::Ok();
}

void Broker::Send(const paxos::Message& message) { peers_->Send(message); }

void Broker::OnReady(const paxos::Ready& r) {
  if (metrics_) metrics_->OnReady(r);
  // An independent check of the core's promise: a voter catching up after
  // a lost disk, or a learner, sends no vote. Reported in status; tests
  // assert it is 0.
  // (A learner member, or a broker joining, is no voter either.)
  if (const paxos::Status st = replica_->status(); st.voter && !st.catching_up) return;
  for (const auto* list : {&r.messages, &r.messages_after_persist}) {
    for (const paxos::Message& m : *list) {
      if (m.type == paxos::MessageType::kPromise || m.type == paxos::MessageType::kAccepted ||
          m.type == paxos::MessageType::kPreVoteGrant || m.type == paxos::MessageType::kPrepare) {
        ++votes_while_catching_up_;
      }
    }
  }
  clients_->set_votes_while_catching_up(votes_while_catching_up_);
}

// Publish acks need not wait for this node's write (see node_loop.h);
// subscribers are served from the store, after it.
void Broker::OnApplied(std::span<const paxos::AppliedInstance> applied) {
  bool changed = false;
  for (const paxos::AppliedInstance& a : applied) {
    if (a.value && a.value->kind == paxos::ValueKind::kConfig) {
      LogMembershipChange(a.instance, a.value->membership);
      changed = true;
    }
  }
  // Once for the batch: the links follow the membership in effect after it.
  if (changed) {
    if (Status s = FollowMembership(); !s.ok() && membership_error_.empty()) {
      membership_error_ = s.message();
    }
  }
  clients_->OnApplied(applied);
}

namespace {
std::string IdList(const std::vector<uint32_t>& ids) {
  std::string out;
  for (uint32_t id : ids) out += (out.empty() ? "" : ",") + std::to_string(id);
  return out.empty() ? "none" : out;
}
}  // namespace

void Broker::LogMembershipChange(paxos::Instance instance, const paxos::Membership& m) {
  std::vector<uint32_t> voters, learners;
  for (const paxos::Member& p : m.members) (p.voter ? voters : learners).push_back(p.id.value());
  const paxos::Member* self = m.Find(paxos::NodeId(config_.node_id));
  const int self_state = self == nullptr ? 0 : self->voter ? 2 : 1;
  spdlog::info("membership changed at instance {}: voters {}, learners {}", instance.value(),
               IdList(voters), IdList(learners));
  if (self_state != self_state_) {
    if (self_state == 0) {
      spdlog::warn(
          "this broker (node {}) was removed from the cluster at instance {}: it is "
          "no longer a member, and keeps running as a non-member until stopped",
          config_.node_id, instance.value());
    } else if (self_state == 2) {
      spdlog::info("this broker (node {}) is a voter from instance {} on", config_.node_id,
                   instance.value() + 1);
    } else {
      spdlog::info(
          "this broker (node {}) is a learner member from instance {} on (it pulls "
          "the log and does not vote)",
          config_.node_id, instance.value() + 1);
    }
  }
  self_state_ = self_state;
}

Status Broker::FollowMembership() {
  const paxos::Membership& m = replica_->membership();
  std::vector<Member> members;
  std::vector<uint32_t> voters, learners;
  if (m.empty()) {
    // No configuration known: the file's [[members]] (a joining broker's
    // seeds) until the first entry is fetched.
    members = config_.members;
  } else {
    for (const paxos::Member& p : m.members) {
      members.push_back(Member{p.id.value(), p.peer, p.client, p.public_key});
      (p.voter ? voters : learners).push_back(p.id.value());
    }
  }
  const paxos::Member* self = m.Find(paxos::NodeId(config_.node_id));
  const int self_state = self == nullptr ? 0 : self->voter ? 2 : 1;
  // Said once, at start; later changes are logged as they are applied
  // (LogMembershipChange).
  if (self_state_ != -1) {
  } else if (!m.empty()) {
    spdlog::info("membership{}: voters {}, learners {}; this broker is {}",
                 replica_->applied_state().membership().empty() ? " (bootstrap: [[members]])"
                                                                : " (from the log)",
                 IdList(voters), IdList(learners),
                 self_state == 2   ? "a voter"
                 : self_state == 1 ? "a learner member"
                                   : "not a member");
  } else {
    spdlog::info("joining: no membership known yet; pulling the log from {}", [&] {
      std::vector<uint32_t> seeds;
      for (const Member& x : config_.members) {
        if (x.id != config_.node_id) seeds.push_back(x.id);
      }
      return IdList(seeds);
    }());
  }
  self_state_ = self_state;
  // Who the last change removed, for their handover (TimeoutNow) only.
  removed_ids_.clear();
  removed_by_key_.clear();
  for (const auto& [key, id] : member_by_key_) {
    if (m.Find(paxos::NodeId(id)) == nullptr) removed_by_key_[key] = id;
  }
  for (uint32_t id : member_ids_) {
    if (!m.empty() && m.Find(paxos::NodeId(id)) == nullptr) removed_ids_.insert(id);
  }
  if (m.empty()) removed_by_key_.clear();
  member_ids_.clear();
  member_by_key_.clear();
  for (const Member& x : members) {
    member_ids_.insert(x.id);
    if (!x.public_key.empty()) member_by_key_[x.public_key] = x.id;
  }
  std::vector<uint32_t> peer_ids;
  for (const Member& x : members) {
    if (x.id != config_.node_id) peer_ids.push_back(x.id);
  }
  snapshots_->SetPeers(peer_ids);
  return peers_->SetMembers(members);
}

void Broker::ServeFetch(paxos::FetchToServe fetch) { catchup_->Submit(std::move(fetch)); }

void Broker::ReportFrontierToLeader() {
  // The leader promotes a learner member only once it has heard, in a
  // fetch, that its chosen frontier is close to its own; a learner that
  // caught up fetches nothing more while the log is idle, and one that
  // caught up from followers may never have told the leader at all (then
  // `ordo members promote` would wait in vain). So a learner member asks
  // the leader, twice a second, for the instance after its frontier: a
  // read, answered with an empty FetchReply, that carries the frontier.
  if (self_state_ != 1 || ++frontier_ticks_ * config_.tick_ms < kFrontierReportMs) return;
  frontier_ticks_ = 0;
  std::vector<paxos::NodeId> to;
  if (replica_->leader() != paxos::kNoNode) {
    to.push_back(replica_->leader());
  } else {
    to = replica_->membership().Voters();
  }
  for (paxos::NodeId id : to) {
    paxos::Message m;
    m.type = paxos::MessageType::kFetch;
    m.from = paxos::NodeId(config_.node_id);
    m.to = id;
    m.chosen = replica_->chosen();
    m.instance = replica_->chosen().next();
    m.instance_last = m.instance;
    peers_->Send(m);
  }
}

void Broker::OnLostLeadership() { clients_->OnLostLeadership(); }

// Right after its checkpoint: the read transaction sees exactly this state.
void Broker::OnSnapshotPoint(const paxos::AppliedSnapshot& snapshot) { snapshots_->Take(snapshot); }

void Broker::OnNeedSnapshot(paxos::NodeId peer, paxos::Instance min) {
  snapshots_->Need(peer.value(), min.value());
}

void Broker::ReportRoleChanges() {
  const paxos::Role role = replica_->role();
  const paxos::NodeId leader = replica_->leader();
  if (role != last_role_ || leader != last_leader_) {
    // One line per change, a step-down included (scripts/cluster reads
    // these to name the leader).
    const paxos::Status s = replica_->status();
    if (last_role_ == paxos::Role::kLeader && role != paxos::Role::kLeader) {
      spdlog::warn("lost leadership (promised {}): {}", paxos::ToString(s.promised),
                   leader != paxos::kNoNode
                       ? "now following leader " + std::to_string(leader.value())
                       : std::string("no leader known"));
    }
    if (role == paxos::Role::kLeader) {
      spdlog::info("became leader with ballot {}", paxos::ToString(s.leader_ballot));
    } else if (leader != paxos::kNoNode) {
      spdlog::info("following leader {} (ballot {})", leader.value(),
                   paxos::ToString(s.leader_ballot));
    } else if (role == paxos::Role::kCandidate) {
      spdlog::info("election: candidate with ballot {}", paxos::ToString(s.promised));
    } else if (last_role_ != paxos::Role::kLeader) {
      spdlog::info("no leader known (promised {})", paxos::ToString(s.promised));
    }
    last_role_ = role;
    last_leader_ = leader;
  }
  const paxos::Status st = replica_->status();
  if (st.catching_up != last_catching_up_ || st.rejoin_target != last_rejoin_target_) {
    if (st.catching_up && st.rejoin_target == paxos::kNoInstance) {
      spdlog::warn("not voting: waiting for every peer to say whether the cluster has a history");
    } else if (st.catching_up) {
      spdlog::warn("this broker lost its log: not voting until it has applied instance {} "
                   "(applied {} so far)", st.rejoin_target.value(), st.chosen.value());
    } else {
      spdlog::info("voting (caught up at instance {})", st.chosen.value());
    }
    last_catching_up_ = st.catching_up;
    last_rejoin_target_ = st.rejoin_target;
  }
}

void Broker::HandleStorageDamage() {
  for (LmdbStore::Damage& d : store_->TakeNewDamage()) {
    switch (d.kind) {
      case LmdbStore::Damage::Kind::kLogRecord:
        // The core fetches the chosen record from a peer and rewrites it
        // (an accepted one it can no longer vouch for stops its vote).
        spdlog::error("damaged record in {}: {}; it is not served and is being repaired from "
                      "a peer", config_.data_dir, d.what);
        loop_->ReportUnreadable(paxos::Instance(d.instance));
        break;
      case LmdbStore::Damage::Kind::kIndexRecord:
      case LmdbStore::Damage::Kind::kCompactedView:
        spdlog::error("damaged record in {}: {}; it is not served and is being rebuilt from "
                      "the log", config_.data_dir, d.what);
        derived_damage_ = true;
        break;
    }
  }
}

void Broker::ReportRepairs() {
  // One line per loop turn, however many a fetch reply repaired.
  if (const std::vector<uint64_t> repaired = store_->TakeRepaired(); !repaired.empty()) {
    const auto [low, high] = std::minmax_element(repaired.begin(), repaired.end());
    spdlog::info("{} damaged log record{} in {} repaired with a peer's copy (instance{} {})",
                 repaired.size(), repaired.size() == 1 ? "" : "s", config_.data_dir,
                 repaired.size() == 1 ? "" : "s",
                 repaired.size() == 1 ? std::to_string(*low)
                                      : std::to_string(*low) + " to " + std::to_string(*high));
  }
}

Status Broker::RepairDerived() {
  if (!derived_damage_ && !store_->rebuilding()) return Status::Ok();
  const paxos::Instance applied = replica_->applied_state().applied();
  // Only from a complete state: while a damaged chosen record stops the
  // apply, the index and compacted view on disk reach further than what
  // a rebuild would derive (it would serve older values as the latest).
  if (!store_->rebuilding() && applied != replica_->chosen()) return Status::Ok();
  if (!store_->rebuilding()) {
    // The index of what waits belongs to what is rebuilt: write it first.
    if (Status s = loop_->FlushDeferred(); !s.ok()) return s;
    const paxos::StoreCode code = store_->StartRebuild(applied);
    if (code == paxos::StoreCode::kIoError) {
      return Status::Error("storage failure: " + store_->last_error());
    }
    if (code != paxos::StoreCode::kOk) {
      // A log record on the way is being repaired (retried at the next
      // tick), or nothing to rebuild from: said once.
      if (code != paxos::StoreCode::kCorrupt && rebuild_error_ != store_->last_error()) {
        rebuild_error_ = store_->last_error();
        spdlog::error("cannot rebuild the offset index and compacted view: {}", rebuild_error_);
      }
      return Status::Ok();
    }
    derived_damage_ = false;
    rebuild_error_.clear();
    spdlog::warn("rebuilding the offset index and the compacted view from the log");
  }
  bool done = false;
  uint64_t fixed = 0;
  const paxos::StoreCode code = store_->RebuildStep(applied, kRebuildInstancesPerTick, &done, &fixed);
  if (code == paxos::StoreCode::kIoError) {
    return Status::Error("storage failure: " + store_->last_error());
  }
  if (code == paxos::StoreCode::kCorrupt) {
    // The rebuild waits for a damaged log record. The core was told of it
    // at the end of the loop turn; from the next tick on, Repairing() says
    // whether a copy will come. One that no peer holds any more (they
    // truncated it) never comes: when this node's own snapshot covers the
    // record, the log is cut up to the snapshot (the base jumps over the
    // record) and the rebuild goes on from there.
    const paxos::Instance at = store_->rebuild_next();
    const paxos::Instance snapshot(store_->snapshot_handle().instance);
    if (at == rebuild_blocked_at_ && !replica_->Repairing(at) && at <= snapshot) {
      if (!rebuild_cut_logged_) {
        rebuild_cut_logged_ = true;
        spdlog::warn("log record for instance {} cannot be repaired: every peer truncated it; "
                     "this broker's snapshot at {} covers it, so its log is cut up to there",
                     at.value(), snapshot.value());
      }
      size_t deleted = 0;
      if (store_->Truncate(snapshot.next(), kRebuildCutStepMax, &deleted) ==
          paxos::StoreCode::kIoError) {
        return Status::Error("storage failure: " + store_->last_error());
      }
    }
    rebuild_blocked_at_ = at;
  } else {
    rebuild_blocked_at_ = paxos::kNoInstance;
    rebuild_cut_logged_ = false;
  }
  if (done) {
    ++derived_rebuilds_;
    spdlog::info("offset index and compacted view rebuilt from the log ({} records rewritten or "
                 "removed)", fixed);
  }
  return Status::Ok();
}

void Broker::UpdateMetrics() {
  if (!metrics_) return;
  monitoring::BrokerGauges g;
  g.core = replica_->status();
  g.next_offset = store_->next_offset();
  g.first_retained_instance = g.core.first_retained.value();
  g.non_voter_catching_up = g.core.catching_up;
  g.storage_corruptions = store_->corruptions() + catchup_damage_count_;
  g.storage_quarantined = quarantined_;
  g.storage_rebuilds = derived_rebuilds_;
  g.storage_repairs = store_->repairs();
  g.tick_ms = config_.tick_ms;
  g.first_retained_offset = store_->earliest_offset();
  const ClientCounters& c = clients_->counters();
  g.client_frames_rejected = c.frames_rejected;
  g.peer_frames_rejected = peer_frames_rejected_;
  if (zap_) {
    for (const auto& [domain, n] : zap_->refused()) {
      // (Malformed ZAP requests, domain "", count as peer refusals.)
      (domain == ClientService::kZapDomain ? g.client_handshakes_refused
                                           : g.peer_handshakes_refused) += n;
    }
  }
  g.client_permission_denied = c.permission_denied;
  g.messages_published = c.messages_published;
  g.publishes_acked = c.publishes_acked;
  g.redirects = c.redirects;
  g.messages_delivered = c.messages_delivered;
  for (const auto& [peer, link] : peers_->links()) {
    g.links.push_back({peer, link.bytes_sent, link.bytes_received, link.frames_dropped});
  }
  g.catchup_bytes_sent = peers_->catchup_bytes_sent();
  g.catchup_bytes_received = peers_->catchup_bytes_received();
  g.catchup_fetches_dropped = catchup_->dropped();
  g.subscribers = clients_->subscriber_count();
  g.subscribers_queued_bytes = clients_->queued_bytes();
  g.slow_consumers = c.slow_consumers;
  clients_->SubscriberLag(&g.subscriber_lag_max, &g.subscriber_lag_sum);
  if (connections_) {
    g.client_connections = connections_->Count();
    g.client_connections_closed_over_limit = connections_->closed_over_limit();
    g.client_connections_closed_silent = connections_->closed_silent();
  }
  metrics_->Update(g);
}

Status Broker::Run(const std::atomic<bool>& stop, std::atomic<bool>* reload) {
  const auto tick = std::chrono::milliseconds(config_.tick_ms);
  auto next_tick = Clock::now() + tick;
  std::vector<zmq::pollitem_t> items;
  size_t catchup_item = 0;
  size_t zap_item = 0;
  uint64_t links_generation = 0;
  // Again whenever the peer links change (a membership change).
  auto poll_items = [&] {
    items.clear();
    links_generation = peers_->generation();
    peers_->AddPollItems(&items);
    items.push_back({clients_->socket().handle(), 0, ZMQ_POLLIN, 0});
    catchup_item = items.size();
    items.push_back({catchup_->socket().handle(), 0, ZMQ_POLLIN, 0});
    zap_item = items.size();
    if (zap_) zap_->AddPollItem(&items);
  };
  poll_items();
  while (!stop.load(std::memory_order_relaxed)) {
    if (peers_->generation() != links_generation) poll_items();
    if (!membership_error_.empty()) return Status::Error(membership_error_);
    if (reload && reload->exchange(false)) ReloadAccess();
    auto now = Clock::now();
    const auto wait = clients_->more_to_deliver()
                          ? std::chrono::milliseconds(0)
                          : std::max(std::chrono::milliseconds(0),
                                     std::chrono::duration_cast<std::chrono::milliseconds>(
                                         next_tick - now));
    try {
      // Group commit of what waits (DrainReady): while frames keep coming
      // it coalesces; as soon as the loop has nothing to do, it is written,
      // so subscribers see an acknowledged message within one fsync.
      if (loop_->has_deferred() && zmq::poll(items, std::chrono::milliseconds(0)) == 0) {
        if (Status s = loop_->FlushDeferred(); !s.ok()) return s;
      }
      zmq::poll(items, wait);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) return Status::Error(std::string("poll: ") + e.what());
      continue;  // a signal: check `stop`
    }
    if (zap_ && (items[zap_item].revents & ZMQ_POLLIN) != 0) zap_->Drain();
    HandlePeerFrames(4096, kPeerBytesPerTurnMax);
    // Only when a reply is waiting: an empty check costs a syscall per turn.
    if ((items[catchup_item].revents & ZMQ_POLLIN) != 0) SendCatchUpReplies();
    if (!deferred_error_.empty()) return Status::Error(deferred_error_);
    // A failed write anywhere (the snapshot service's too) stops the broker.
    if (store_->broken()) return Status::Error("storage failure: " + store_->last_error());
    clients_->Poll(4096);
    now = Clock::now();
    if (now >= next_tick) {
      peers_->Tick(now);
      replica_->Tick();
      next_tick += tick;
      if (next_tick < now) next_tick = now + tick;  // we fell behind: do not burst
      if (Status s = loop_->FlushDeferred(); !s.ok()) return s;
      if (Status s = RepairDerived(); !s.ok()) return s;
      if (!store_->has_pending()) {
        pending_ticks_ = 0;
      } else if (++pending_ticks_ * config_.tick_ms >= kPendingMs) {
        if (Status s = node_storage_->CommitPending(); !s.ok()) return s;
      }
      snapshots_->Tick(now, replica_->applied_state().applied());
      ReportFrontierToLeader();
      connections_->Sweep(now);
      ReportRoleChanges();
      UpdateMetrics();
    }
    Status s = DrainReady();
    if (!s.ok()) return s;
    ReportRepairs();  // before a reader is served the repaired record
    clients_->Service(now);
    HandleStorageDamage();
  }
  if (Status s = loop_->FlushDeferred(); !s.ok()) return s;
  if (Status s = node_storage_->CommitPending(); !s.ok()) return s;
  spdlog::info("shutting down");
  return Status::Ok();
}

}  // namespace ordo::broker
