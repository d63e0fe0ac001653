#include "paxos/replica.h"

#include <algorithm>
#include <cstring>

#include "paxos/assert.h"

namespace ORDO_PAXOS_NAMESPACE {

namespace {

// Bytes a queued client message counts for, in batching and flow control.
size_t MessageBytes(const ClientMessage& m) { return 32 + m.key.size() + m.payload.size(); }

}  // namespace

const char* ToString(Role role) {
  switch (role) {
    case Role::kFollower: return "follower";
    case Role::kCandidate: return "candidate";
    case Role::kLeader: return "leader";
  }
  return "?";
}

#ifdef ORDO_PAXOS_BUGS
bool Replica::bug(int b) const { return config_.bug == static_cast<Bug>(b); }
#else
bool Replica::bug(int) const { return false; }
#endif

// Bug numbers usable without the enum in production builds.
namespace {
constexpr int kBugForgetPromise = 1;
constexpr int kBugOwnValue = 2;
constexpr int kBugOutOfOrderApply = 3;
constexpr int kBugMinorityCommit = 4;
constexpr int kBugAcceptBelowPromise = 5;
constexpr int kBugAckBeforeQuorumSync = 6;
constexpr int kBugConfigBeforeChosen = 7;
constexpr int kBugStaleChainHint = 8;
}  // namespace

Replica::Replica(const Config& config, const LogStore& store)
    : config_(config), store_(store), rng_(config.seed ^ (uint64_t{config.id.value()} << 32)) {
  PAXOS_ASSERT(config_.id != kNoNode);
  PAXOS_ASSERT(!config_.voters.empty() || !config_.seeds.empty());
  PAXOS_ASSERT(config_.voters.size() <= VoteSet::kVotersMax);
  PAXOS_ASSERT(config_.election_timeout_ticks > 0);
  PAXOS_ASSERT(config_.heartbeat_interval_ticks > 0);
  PAXOS_ASSERT(config_.heartbeat_interval_ticks < config_.election_timeout_ticks);
  PAXOS_ASSERT(config_.window_instances_max > 0);
  PAXOS_ASSERT(config_.accept_entries_max > 0);
  PAXOS_ASSERT(config_.fetch_entries_max > 0);
  for (NodeId v : config_.voters) {
    Member m;
    m.id = v;
    m.voter = true;
    for (const Member& b : config_.bootstrap_members) {
      if (b.id == v) m = b, m.voter = true;
    }
    bootstrap_.members.push_back(std::move(m));
  }
  std::sort(bootstrap_.members.begin(), bootstrap_.members.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
  UseMembership(bootstrap_);

  hard_ = store_.LoadHardState();
  last_instance_ = store_.LastInstance();
  max_round_seen_ = hard_.promised.round;
  known_chosen_ = hard_.chosen;
  // Rebuild the applied state: from the snapshot the log continues from, if
  // any, then the chosen log. Replay is not output: the host already acted
  // on these instances before the restart.
  if (std::optional<AppliedSnapshot> snap = store_.LoadSnapshot()) {
    PAXOS_ASSERT(snap->instance <= hard_.chosen);
    applied_ = AppliedState(*snap);
    apply_next_ = snap->instance.next();
  }
  PAXOS_ASSERT(store_.FirstInstance() <= apply_next_);
  if (!applied_.membership().empty()) UseMembership(applied_.membership());
  replaying_ = true;
  ApplyUpTo();
  replaying_ = false;
  applied_out_.clear();
  ResetElectionTimer();
  // Durable, so a restart in the middle of catching up does not vote early.
  if (hard_.catch_up_until == HardState::kProbing) {
    rejoin_ = Rejoin::kProbing;
  } else if (hard_.catch_up_until != kNoInstance) {
    rejoin_ = Rejoin::kCatchingUp;
    rejoin_target_ = hard_.catch_up_until;
  } else if (config_.probe_before_voting && (!IsVoter() || Quorum() > 1)) {
    // (A non-voter too: a configuration entry may make it a voter later,
    // and the mark must be durable before anything else it writes.)
    rejoin_ = Rejoin::kProbing;
    hard_.catch_up_until = HardState::kProbing;
    hard_dirty_ = true;
  }
  if (rejoin_ == Rejoin::kProbing && config_.history_lost) history_seen_ = true;
  if (rejoin_ == Rejoin::kProbing) Probe();
  if (rejoin_ == Rejoin::kCatchingUp) CheckRejoin();
}

std::optional<size_t> Replica::VoterIndex(NodeId id) const {
  for (size_t i = 0; i < config_.voters.size(); ++i) {
    if (config_.voters[i] == id) return i;
  }
  return std::nullopt;
}

void Replica::UseMembership(const Membership& membership) {
  membership_ = membership;
  config_.voters = membership.Voters();
  PAXOS_ASSERT(config_.voters.size() <= VoteSet::kVotersMax);
  self_index_ = VoterIndex(config_.id);
  const std::vector<NodeId>& targets = config_.voters.empty() ? config_.seeds : config_.voters;
  std::vector<Peer> peers;
  for (NodeId id : targets) {
    if (id == config_.id) continue;
    if (const Peer* known = Source(id)) {
      peers.push_back(*known);
    } else {
      Peer p{id, kNoInstance, false};
      p.heard_tick = now_;  // a new voter gets one quorum check of grace
      peers.push_back(p);
    }
  }
  peers_ = std::move(peers);
  std::erase_if(others_, [&](const Peer& o) {
    return o.id == config_.id ||
           std::any_of(peers_.begin(), peers_.end(), [&](const Peer& p) { return p.id == o.id; });
  });
  std::erase_if(learner_chosen_, [&](const auto& kv) {
    const Member* m = membership_.Find(kv.first);
    return m == nullptr || m->voter;
  });
}

void Replica::OnConfigApplied(Instance instance) {
  const bool was_voter = IsVoter();
  const bool was_leader = role_ == Role::kLeader;
  const Ballot ballot = ballot_;
  // Everyone hears, under the old configuration, that the entry is chosen.
  if (was_leader) BroadcastCommit();
  UseMembership(applied_.membership());
  if (change_inflight_ != kNoInstance && change_inflight_ <= instance)
    change_inflight_ = kNoInstance;
  if (replaying_) return;
  if (bug(kBugConfigBeforeChosen)) return;  // broken on purpose: "in effect" long ago
  if (leader_ != kNoNode && leader_ != config_.id && !membership_.IsVoter(leader_)) {
    leader_ = kNoNode;  // a removed leader: nobody sticks to it
  }
  if (was_leader) {
    // The instances after this one belong to the new configuration: a
    // leader needs a promise from a quorum of it, so it campaigns again
    // (its followers stick to it, so that is one round trip). A leader
    // that is no longer a voter hands over to the most caught-up voter.
    BecomeFollower(kNoNode, Ballot{});
    if (IsVoter()) {
      BecomeCandidate();
    } else {
      const Peer* best = nullptr;
      for (const Peer& p : peers_) {
        if (best == nullptr || p.chosen > best->chosen) best = &p;
      }
      if (best != nullptr) {
        Message m = NewMessage(MessageType::kTimeoutNow, best->id);
        m.ballot = ballot;
        Send(std::move(m));
      }
    }
  } else if (role_ == Role::kCandidate) {
    BecomeFollower(kNoNode, Ballot{});  // its promises may be of the old configuration
  }
  if (!was_voter && IsVoter() && rejoin_ != Rejoin::kNone && !storage_failed_ && heard_any_ &&
      instance > first_heard_chosen_) {
    // Started with an empty store, this node must rejoin as after a lost
    // disk before it votes (the mark set at start): it may have voted under
    // this id before. Not when the entry that makes it a voter was chosen
    // after this process first heard the cluster: until then it was a
    // learner, which never voted (ids are never reused). After a restart,
    // or made a voter by a snapshot, it cannot tell, and rejoins.
    rejoin_ = Rejoin::kNone;
    rejoin_target_ = kNoInstance;
    hard_.catch_up_until = kNoInstance;
    hard_dirty_ = true;
    ResetElectionTimer();
  }
}

void Replica::OnTimeoutNow(const Message& m) {
  // The leader that sent it left the voters: campaign at once, without the
  // pre-vote (the others no longer stick to it).
  if (!Votes() || role_ != Role::kFollower || m.ballot < hard_.promised) return;
  BecomeCandidate();
}

const char* ToString(ChangeResult::Code code) {
  switch (code) {
    case ChangeResult::Code::kOk:
      return "ok";
    case ChangeResult::Code::kNotLeader:
      return "not the leader";
    case ChangeResult::Code::kInProgress:
      return "a membership change is in progress";
    case ChangeResult::Code::kUnknownMember:
      return "no such member";
    case ChangeResult::Code::kAlreadyMember:
      return "already a member";
    case ChangeResult::Code::kLastVoter:
      return "the last voter cannot be removed";
    case ChangeResult::Code::kNotCaughtUp:
      return "the learner has not caught up";
    case ChangeResult::Code::kInvalid:
      return "invalid change";
  }
  return "?";
}

ChangeResult Replica::ProposeChange(const MembershipChange& change) {
  PAXOS_ASSERT(!ready_outstanding_);
  using Code = ChangeResult::Code;
  ChangeResult r;
  r.leader = leader_;
  if (role_ != Role::kLeader) return r.code = Code::kNotLeader, r;
  // One change at a time, and only once this leadership has recovered what
  // earlier leaders left open (its barrier is chosen): then no entry of an
  // older leader can surface after the new one.
  if ((change_inflight_ != kNoInstance || barrier_instance_ == kNoInstance ||
       hard_.chosen < barrier_instance_) &&
      !bug(kBugConfigBeforeChosen)) {
    return r.code = Code::kInProgress, r;
  }
  const NodeId id = change.member.id;
  if (id == kNoNode) return r.code = Code::kInvalid, r;
  Membership next = membership_;
  auto it = std::find_if(next.members.begin(), next.members.end(),
                         [&](const Member& m) { return m.id == id; });
  switch (change.kind) {
    case MembershipChange::Kind::kAddLearner: {
      if (it != next.members.end()) return r.code = Code::kAlreadyMember, r;
      Member m = change.member;
      m.voter = false;
      next.members.push_back(std::move(m));
      break;
    }
    case MembershipChange::Kind::kPromote: {
      if (it == next.members.end()) return r.code = Code::kUnknownMember, r;
      if (it->voter) return r.code = Code::kAlreadyMember, r;
      if (config_.voters.size() >= VoteSet::kVotersMax) return r.code = Code::kInvalid, r;
      auto lc = learner_chosen_.find(id);
      const uint64_t behind_max = config_.window_instances_max;
      if (lc == learner_chosen_.end() || lc->second.value() + behind_max < hard_.chosen.value()) {
        return r.code = Code::kNotCaughtUp, r;
      }
      it->voter = true;
      break;
    }
    case MembershipChange::Kind::kRemove: {
      if (it == next.members.end()) return r.code = Code::kUnknownMember, r;
      if (it->voter && config_.voters.size() <= 1) return r.code = Code::kLastVoter, r;
      next.members.erase(it);
      break;
    }
  }
  r.instance = next_instance_;
  if (bug(kBugConfigBeforeChosen)) {
    // Broken on purpose: in effect at once, the pipeline goes on.
    ValuePtr v = MakeConfig(ballot_, std::move(next));
    AssignInstance(v);
    UseMembership(v->membership);
    SendUnsentAccepts();
    if (!IsVoter()) BecomeFollower(kNoNode, Ballot{});
    return r.code = Code::kOk, r;
  }
  change_inflight_ = next_instance_;
  AssignInstance(MakeConfig(ballot_, std::move(next)));
  SendUnsentAccepts();
  return r.code = Code::kOk, r;
}

Message Replica::NewMessage(MessageType type, NodeId to) const {
  Message m;
  m.type = type;
  m.from = config_.id;
  m.to = to;
  m.chosen = hard_.chosen;  // every message tells the sender's chosen frontier
  return m;
}

// ---------------------------------------------------------------------------
// Storage overlay: entries staged for the next Ready shadow the store.

StoreCode Replica::ReadEntry(Instance instance, Entry* out) {
  auto it = staged_.find(instance);
  if (it != staged_.end()) {
    *out = it->second;
    return StoreCode::kOk;
  }
  if (auto u = unapplied_.find(instance); u != unapplied_.end()) {
    *out = u->second.entry;
    return StoreCode::kOk;
  }
  return store_.Get(instance, out);
}

void Replica::StageEntry(const Entry& entry) {
  PAXOS_ASSERT(entry.instance != kNoInstance);
  PAXOS_ASSERT(entry.value != nullptr);
  staged_[entry.instance] = entry;
  last_instance_ = std::max(last_instance_, entry.instance);
  // The cached copy must never differ from the stored one: an overwrite
  // replaces it, or drops it when the new one does not fit.
  if (auto it = unapplied_.find(entry.instance); it != unapplied_.end()) {
    unapplied_bytes_ -= it->second.bytes;
    unapplied_.erase(it);
  }
  if (entry.instance < apply_next_ || config_.unapplied_cache_bytes_max == 0) return;
  const uint64_t bytes = entry.value->ByteSize();
  if (unapplied_bytes_ + bytes <= config_.unapplied_cache_bytes_max) {
    unapplied_.emplace(entry.instance, Unapplied{entry, bytes});
    unapplied_bytes_ += bytes;
  }
}

void Replica::DropUnappliedBelow(Instance next) {
  auto end = unapplied_.lower_bound(next);
  for (auto it = unapplied_.begin(); it != end; ++it) {
    unapplied_bytes_ -= it->second.bytes;
  }
  unapplied_.erase(unapplied_.begin(), end);
}

void Replica::SetPromised(Ballot ballot) {
  if (ballot == hard_.promised) return;
  hard_.promised = ballot;
  hard_dirty_ = true;
}

void Replica::SetChosen(Instance chosen) {
  // The frontier only moves forward, one instance at a time.
  PAXOS_ASSERT(chosen == hard_.chosen.next());
  hard_.chosen = chosen;
  hard_dirty_ = true;
  known_chosen_ = std::max(known_chosen_, chosen);
  ++counters_.instances_chosen;
}

// ---------------------------------------------------------------------------
// Ready / Advance

bool Replica::HasReady() const {
  return hard_dirty_ || !staged_.empty() || !msgs_.empty() || !msgs_after_persist_.empty() ||
         !applied_out_.empty() || !fetches_to_serve_.empty() || lost_leadership_ ||
         snapshot_out_.has_value() ||
         (need_snapshot_ && snapshot_asked_tick_ == 0);
}

Ready Replica::TakeReady() {
  PAXOS_ASSERT(!ready_outstanding_);
  Ready r;
  r.hard_state_changed = hard_dirty_;
  r.hard_state = hard_;
  hard_dirty_ = false;
  // Applying stopped at a snapshot point short of the chosen frontier: the
  // durable mark says no more than what this Ready hands over, so a crash
  // before the next one never restores state the host did not see applied.
  // The rest of the frontier goes with the next Ready.
  if (snapshot_out_ && snapshot_out_->instance < hard_.chosen) {
    r.hard_state.chosen = snapshot_out_->instance;
    hard_dirty_ = true;
  }
  r.entries.reserve(staged_.size());
  for (auto& [instance, entry] : staged_) r.entries.push_back(std::move(entry));
  r.messages = std::move(msgs_);
  r.messages_after_persist = std::move(msgs_after_persist_);
  r.applied = std::move(applied_out_);
  r.fetches_to_serve = std::move(fetches_to_serve_);
  fetches_to_serve_.clear();
  r.lost_leadership = lost_leadership_;
  r.snapshot = std::move(snapshot_out_);
  snapshot_out_.reset();
  if (need_snapshot_ && snapshot_asked_tick_ == 0) {
    // Looked at again every few fetch timeouts (Tick) and asked again while
    // the need lasts, in case the host's transfer failed.
    r.need_snapshot = true;
    r.snapshot_peer = snapshot_peer_;
    r.snapshot_min = snapshot_min_;
    snapshot_asked_tick_ = now_ + 10 * uint64_t{config_.fetch_timeout_ticks};
  }
  staged_.clear();
  msgs_.clear();
  msgs_after_persist_.clear();
  applied_out_.clear();
  lost_leadership_ = false;
  ready_outstanding_ = true;
  return r;
}

void Replica::Advance() {
  PAXOS_ASSERT(ready_outstanding_);
  ready_outstanding_ = false;
  // What the last Ready staged is durable now: our own promise and our own
  // accepts may count toward a quorum.
  // Taken first: instances a leader elected right here assigns are not
  // durable yet and must wait for the next Ready.
  std::vector<Instance> accepted = std::move(self_accept_pending_);
  self_accept_pending_.clear();
  if (self_promise_pending_) {
    self_promise_pending_ = false;
    if (role_ == Role::kCandidate) {
      self_promised_ = true;
      CheckElection();
    }
  }
  if (role_ == Role::kLeader && self_index_) {
    for (Instance i : accepted) CountAccept(i, *self_index_);
    AdvanceFrontier();
  }
  // The last Ready stopped at a snapshot point: go on applying.
  ApplyUpTo();
  CheckElection();  // a candidate that won but waited to catch up (BecomeLeader)
  if (forget_votes_pending_) {
    forget_votes_pending_ = false;
    if (Votes()) {
      ++counters_.storage_corruptions;
      ForgetVotes();
    }
  }
}

// ---------------------------------------------------------------------------
// Time

void Replica::ResetElectionTimer() {
  election_elapsed_ = 0;
  election_timeout_ = config_.election_timeout_ticks + rng_.Uniform(config_.election_timeout_ticks);
}

void Replica::Tick() {
  PAXOS_ASSERT(!ready_outstanding_);
  ++now_;
  if (role_ == Role::kLeader) {
    if (++heartbeat_elapsed_ >= config_.heartbeat_interval_ticks) {
      heartbeat_elapsed_ = 0;
      BroadcastCommit();
    }
    Retransmit();
    CheckQuorum();
  } else if (Votes()) {
    if (role_ == Role::kCandidate && now_ - prepare_sent_tick_ >= config_.retransmit_ticks) {
      // Prepares may be lost: ask again those that have not answered.
      prepare_sent_tick_ = now_;
      for (const Peer& p : peers_) {
        if (promises_.count(p.id)) continue;
        Message m = NewMessage(MessageType::kPrepare, p.id);
        m.ballot = ballot_;
        m.instance = hard_.chosen.next();
        Send(std::move(m));
      }
    }
    if (++election_elapsed_ >= election_timeout_) StartPreVote();
  }
  bool timed_out = false;
  std::vector<NodeId> slow;
  for (auto it = fetches_.begin(); it != fetches_.end();) {
    if (now_ - it->second.sent_tick >= FetchTimeoutOf(it->second.peer)) {
      fetch_failed_peer_ = it->second.peer;  // slow or gone: ask another
      slow.push_back(it->second.peer);
      it = fetches_.erase(it);
      timed_out = true;
    } else {
      ++it;
    }
  }
  // A reply that is only slow (a busy peer, a long commit here) still comes
  // and is used; asking that peer again at the same pace would have every
  // range served several times over, which makes it slower still (measured:
  // 11 times the log sent, GBs queued, elections). So the next fetch to it
  // waits twice as long; other peers keep their own pace.
  for (Peer& p : peers_) {
    if (std::find(slow.begin(), slow.end(), p.id) == slow.end()) continue;
    p.fetch_timeout = std::min(2 * FetchTimeoutOf(p.id),
                               kFetchBackoffMax * uint64_t{config_.fetch_timeout_ticks});
  }
  if (need_snapshot_ && snapshot_asked_tick_ != 0 && now_ >= snapshot_asked_tick_) {
    // Still no snapshot: look again, the need may have gone (a commit moved
    // the frontier, a peer still has the range); if not, it is asked again.
    need_snapshot_ = false;
    MaybeFetch(false);
  }
  if (rejoin_ != Rejoin::kNone) CheckRejoin();
  if (rejoin_ == Rejoin::kProbing) {
    if (now_ % config_.fetch_timeout_ticks == 0) Probe();
  } else if (!Votes() && fetches_.empty() && !peers_.empty()) {
    // A learner (or a voter catching up) hears no commits from the leader:
    // it polls a peer for what was chosen since; the reply's frontier drives
    // the range fetches. Also when it knows of more but no peer it heard
    // from can serve it (the one that could restarted behind): the poll
    // hears from another.
    size_t i = rng_.Uniform(peers_.size());
    if (peers_[i].id == fetch_failed_peer_) i = (i + 1) % peers_.size();  // another, if any
    SendFetch(peers_[i].id, hard_.chosen.next(),
              Instance(hard_.chosen.value() + config_.fetch_entries_max));
  }
  if (timed_out) MaybeFetch(false);
}

// ---------------------------------------------------------------------------
// Roles

void Replica::BecomeFollower(NodeId leader, Ballot leader_ballot) {
  if (role_ == Role::kLeader) {
    lost_leadership_ = true;
    pending_.clear();
    pending_bytes_ = 0;
    inflight_.clear();
  }
  role_ = Role::kFollower;
  leader_ = leader;
  leader_ballot_ = leader_ballot;
  if (leader != kNoNode) leader_heard_tick_ = now_;
  prevoting_ = false;
  promises_.clear();
  self_promised_ = false;
  ResetElectionTimer();
}

void Replica::HeardLeader(NodeId leader, Ballot ballot) {
  if (role_ != Role::kFollower) {
    BecomeFollower(leader, ballot);
    return;
  }
  leader_ = leader;
  leader_ballot_ = ballot;
  leader_heard_tick_ = now_;
  election_elapsed_ = 0;
  prevoting_ = false;
}

void Replica::StartPreVote() {
  // A failed election falls back to following until the pre-vote succeeds.
  if (role_ == Role::kCandidate) BecomeFollower(kNoNode, Ballot{});
  ResetElectionTimer();
  if (Quorum() <= 1) {
    BecomeCandidate();
    return;
  }
  // A node that cannot read what it accepted must not lead: its recovery
  // would miss a value that may be chosen.
  if (!OwnLogReadable()) return;
  prevoting_ = true;
  prevote_grants_.clear();
  prevote_ballot_ = Ballot{max_round_seen_ + 1, config_.id};
  for (const Peer& p : peers_) {
    Message m = NewMessage(MessageType::kPreVote, p.id);
    m.ballot = prevote_ballot_;
    m.instance = hard_.chosen.next();
    Send(std::move(m));
  }
}

bool Replica::OwnLogReadable() {
  for (Instance i = hard_.chosen.next(); i <= last_instance_; i = i.next()) {
    Entry e;
    const StoreCode code = ReadEntry(i, &e);
    if (code == StoreCode::kOk || code == StoreCode::kNotFound) continue;
    ++counters_.storage_corruptions;
    ForgetVotes();
    return false;
  }
  return true;
}

void Replica::ForgetVotes() {
  // Protocol-aware recovery: an accepted value this node can no longer read
  // may be one a quorum counted on. It votes on nothing (no promise, no
  // accept, no pre-vote) until it has caught up past anything it could have
  // voted on, exactly as after a lost disk; the peers' chosen values then
  // overwrite what it could not read.
  storage_failed_ = true;
  if (role_ != Role::kFollower) BecomeFollower(kNoNode, Ballot{});
  if (!IsVoter() || Quorum() <= 1 || rejoin_ != Rejoin::kNone) return;  // nobody to learn from
  rejoin_ = Rejoin::kProbing;
  history_seen_ = true;
  probe_last_.clear();
  probe_fresh_.clear();
  hard_.catch_up_until = HardState::kProbing;
  hard_dirty_ = true;
  Probe();
}

void Replica::OnPreVote(const Message& m) {
  // A node this configuration does not make a voter (removed, and it has
  // not learned it yet) gets no support: it cannot lead, only disrupt. A
  // refusal is answered even by a node that does not vote: it carries our
  // chosen frontier, from which a node that missed its own removal (and
  // hears from no leader) learns there is a log to fetch.
  if (!Votes() || !VoterIndex(m.from)) {
    Message r = NewMessage(MessageType::kReject, m.from);
    r.ballot = m.ballot;
    r.promised = hard_.promised;
    Send(std::move(r));
    return;
  }
  // Grant exactly when a real Prepare with this ballot would be promised, and
  // the candidate is not so far behind that it would lead by catching up
  // (a candidate that is behind catches up before it leads).
  const bool lagging =
      m.instance.value() + config_.window_instances_max < hard_.chosen.value() + 1;
  if (m.ballot > hard_.promised && !SticksToLeader(m.from) && !lagging) {
    Message r = NewMessage(MessageType::kPreVoteGrant, m.from);
    r.ballot = m.ballot;
    Send(std::move(r));
    return;
  }
  Message r = NewMessage(MessageType::kReject, m.from);
  r.ballot = m.ballot;
  r.promised = hard_.promised;
  Send(std::move(r));
}

void Replica::OnPreVoteGrant(const Message& m) {
  // (Not once this node stopped voting meanwhile: a lost record, or a
  // configuration entry that needs it to rejoin first.)
  if (!prevoting_ || !Votes() || m.ballot != prevote_ballot_ || !VoterIndex(m.from)) return;
  prevote_grants_.insert(m.from);
  if (prevote_grants_.size() + 1 >= Quorum()) {
    prevoting_ = false;
    // Campaign at the ballot the grants were for; if a higher one appeared
    // meanwhile, the grants are stale: ask again.
    if (max_round_seen_ >= prevote_ballot_.round) {
      StartPreVote();
      return;
    }
    BecomeCandidate();
  }
}

void Replica::BecomeCandidate() {
  PAXOS_ASSERT(role_ != Role::kLeader);
  PAXOS_ASSERT(IsVoter());
  role_ = Role::kCandidate;
  leader_ = kNoNode;
  ballot_ = Ballot{max_round_seen_ + 1, config_.id};
  max_round_seen_ = ballot_.round;
  // Our own promise counts once it is durable (see Advance).
  SetPromised(ballot_);
  promises_.clear();
  self_promised_ = false;
  self_promise_pending_ = true;
  ++counters_.elections_started;
  ResetElectionTimer();
  prepare_sent_tick_ = now_;
  // Phase 1a: one prepare covers every instance we do not know chosen.
  for (const Peer& p : peers_) {
    Message m = NewMessage(MessageType::kPrepare, p.id);
    m.ballot = ballot_;
    m.instance = hard_.chosen.next();
    Send(std::move(m));
  }
}

void Replica::CheckElection() {
  if (role_ != Role::kCandidate || !self_promised_) return;
  if (promises_.size() + 1 >= Quorum()) BecomeLeader();
}

void Replica::BecomeLeader() {
  // Recovery reads every value this node accepted: it was readable when the
  // campaign began, and must still be.
  if (!OwnLogReadable()) return;

  // Everything up to F is chosen: some acceptor said so. We learn those
  // instances by fetching them, never by re-proposing.
  Instance frontier = hard_.chosen;
  for (const auto& [node, p] : promises_) frontier = std::max(frontier, p.chosen);
  // Install the chosen values the promises carried (entries at or below the
  // promiser's frontier are chosen), in order.
  for (bool progress = true; progress && hard_.chosen < frontier;) {
    progress = false;
    const Instance want = hard_.chosen.next();
    for (const auto& [node, p] : promises_) {
      if (want > p.chosen) continue;
      auto it = std::find_if(p.entries.begin(), p.entries.end(),
                             [&](const Entry& e) { return e.instance == want; });
      if (it == p.entries.end() || it->value == nullptr) continue;
      StageEntry(*it);
      SetChosen(want);
      progress = true;
      break;
    }
  }
  const Membership before = membership_;
  ApplyUpTo();
  // A leader must know the configuration of every instance it proposes,
  // which the chosen log up to there decides. Behind a gap it does not
  // (the gap may hold a configuration entry): it fetches and campaigns
  // later. And promises from a quorum of an older configuration do not make
  // it leader of a newer one: it campaigns again under the new one.
  if (role_ != Role::kCandidate || !(membership_ == before)) {
    if (role_ == Role::kCandidate) BecomeFollower(kNoNode, Ballot{});
    if (IsVoter() && Votes()) BecomeCandidate();
    return;
  }
  if (hard_.chosen < frontier || apply_next_ <= hard_.chosen) {
    // Still a candidate: Advance looks again once the gap is fetched (or
    // applying resumed after a snapshot point); the election timeout ends it.
    known_chosen_ = std::max(known_chosen_, frontier);
    MaybeFetch(false);
    return;
  }
  role_ = Role::kLeader;
  leader_ = config_.id;
  leader_ballot_ = ballot_;
  ++counters_.elections_won;

  // Recovery of open instances above F: for each, the value accepted at the
  // highest ballot among the promises (ours included), else a no-op.
  Instance highest = frontier;
  std::map<Instance, Entry> best;
  auto consider = [&](const Entry& e, bool own) {
    if (e.instance <= frontier) return;
    highest = std::max(highest, e.instance);
    // Broken on purpose: re-propose our own value (or a no-op), ignoring
    // what the promises reported.
    if (bug(kBugOwnValue) && !own) return;
    auto [it, inserted] = best.try_emplace(e.instance, e);
    if (!inserted && e.ballot > it->second.ballot) it->second = e;
  };
  for (const auto& [node, p] : promises_) {
    for (const Entry& e : p.entries) consider(e, false);
  }
  for (Instance i = hard_.chosen.next(); i <= last_instance_; i = i.next()) {
    Entry e;
    const StoreCode code = ReadEntry(i, &e);
    if (code == StoreCode::kOk) consider(e, true);
    PAXOS_ASSERT(code == StoreCode::kOk || code == StoreCode::kNotFound);  // checked before campaigning
  }
  promises_.clear();

  inflight_.clear();
  next_instance_ = frontier.next();
  unsent_from_ = next_instance_;
  change_inflight_ = kNoInstance;
  barrier_instance_ = kNoInstance;
  for (Instance i = frontier.next(); i <= highest; i = i.next()) {
    auto it = best.find(i);
    // A recovered value keeps its origin ballot (the barrier rule needs it).
    AssignInstance(it != best.end() ? it->second.value : MakeNoop(ballot_));
    if (it != best.end() && it->second.value->kind == ValueKind::kConfig &&
        !bug(kBugConfigBeforeChosen)) {
      // A configuration entry: what follows it belongs to its configuration,
      // whose quorum this leader has no promise from. It stops here; once
      // the entry is chosen it campaigns again (OnConfigApplied), and that
      // campaign recovers the rest.
      change_inflight_ = i;
      break;
    }
  }
  if (change_inflight_ == kNoInstance) {
    // The leader barrier: batches from older leaders that surface after
    // this point are skipped when applied (the phantom-log fix).
    barrier_instance_ = next_instance_;
    AssignInstance(MakeBarrier(ballot_));
  }

  known_chosen_ = std::max(known_chosen_, frontier);
  heartbeat_elapsed_ = 0;
  quorum_check_tick_ = now_;
  commit_sent_ = hard_.chosen;
  SendUnsentAccepts();
  MaybeFetch(false);  // if some acceptor is ahead of us, learn what we missed
}

bool Replica::SticksToLeader(NodeId candidate) const {
  // Leader stickiness: while a live leader speaks to us, refuse to help
  // anyone depose it. This prevents duelling proposers and keeps a node that
  // was cut off from disrupting a healthy cluster when it comes back.
  if (role_ == Role::kLeader) return true;
  return leader_ != kNoNode && candidate != leader_ &&
         now_ - leader_heard_tick_ < config_.election_timeout_ticks;
}

// ---------------------------------------------------------------------------
// Messages

void Replica::Step(const Message& m) {
  PAXOS_ASSERT(!ready_outstanding_);
  if (m.to != config_.id || m.from == config_.id) return;  // misdirected
  // Only ballots someone used count: a pre-vote's is hypothetical, and a
  // Reject's echoes the ballot it refuses (ours, or our hypothetical one);
  // its `promised` is the refuser's real promise.
  const bool hypothetical = m.type == MessageType::kPreVote ||
                            m.type == MessageType::kPreVoteGrant ||
                            m.type == MessageType::kReject;
  max_round_seen_ = std::max({max_round_seen_, hypothetical ? 0 : m.ballot.round,
                              m.promised.round});
  NoteChosen(m.from, m.chosen);
  if (!m.chain.empty()) TakeChainHints(m);
  if (rejoin_ == Rejoin::kProbing && !history_seen_ && VoterIndex(m.from) &&
      (m.chosen != kNoInstance || m.first_retained > Instance(1))) {
    history_seen_ = true;  // something was chosen: we may have voted on it
  }
  switch (m.type) {
    case MessageType::kPrepare: OnPrepare(m); break;
    case MessageType::kPromise: OnPromise(m); break;
    case MessageType::kAccept: OnAccept(m); break;
    case MessageType::kAccepted: OnAccepted(m); break;
    case MessageType::kReject: OnReject(m); break;
    case MessageType::kCommit: OnCommit(m); break;
    case MessageType::kCommitReply: OnCommitReply(m); break;
    case MessageType::kFetch: OnFetch(m); break;
    case MessageType::kFetchReply: OnFetchReply(m); break;
    case MessageType::kPreVote: OnPreVote(m); break;
    case MessageType::kPreVoteGrant: OnPreVoteGrant(m); break;
    case MessageType::kTimeoutNow:
      OnTimeoutNow(m);
      break;
  }
  if (rejoin_ == Rejoin::kProbing) CheckRejoin();
  MaybeFetch(false);
}

void Replica::OnPrepare(const Message& m) {
  if (!Votes()) return;
  // P1a: never promise below an existing promise. A repeat of the ballot we
  // promised is answered again (the first answer may have been lost).
  const bool refuse = (m.ballot < hard_.promised && !bug(kBugForgetPromise)) ||
                      (m.ballot != hard_.promised && SticksToLeader(m.from)) || !VoterIndex(m.from);
  if (refuse) {
    Message r = NewMessage(MessageType::kReject, m.from);
    r.ballot = m.ballot;
    r.promised = hard_.promised;
    Send(std::move(r));
    return;
  }
  if (m.ballot > hard_.promised || bug(kBugForgetPromise)) {
    SetPromised(m.ballot);
    if (role_ != Role::kFollower) {
      BecomeFollower(kNoNode, Ballot{});
    } else {
      leader_ = kNoNode;  // the old leader can no longer get our votes
      prevoting_ = false;  // we back this candidate now, not our own pre-vote
      ResetElectionTimer();
    }
  }
  // Phase 1b: every value we accepted from the prepare's instance on. Below
  // our frontier the values are chosen; the frontier itself tells that.
  Message r = NewMessage(MessageType::kPromise, m.from);
  r.ballot = m.ballot;
  // Chosen values the candidate lacks come first (bounded; it fetches the
  // rest), so a new leader rarely depends on one peer to learn them.
  const uint64_t chosen_last =
      std::min(hard_.chosen.value(), m.instance.value() + config_.fetch_entries_max - 1);
  for (Instance i = m.instance; i.value() <= chosen_last && i != kNoInstance; i = i.next()) {
    Entry e;
    if (ReadEntry(i, &e) != StoreCode::kOk) break;
    r.entries.push_back(std::move(e));
  }
  for (Instance i = std::max(m.instance, hard_.chosen.next()); i <= last_instance_; i = i.next()) {
    Entry e;
    StoreCode code = ReadEntry(i, &e);
    if (code == StoreCode::kNotFound) continue;
    if (code != StoreCode::kOk) {
      // We cannot vouch for what we accepted: no promise.
      ++counters_.storage_corruptions;
      ForgetVotes();
      return;
    }
    r.entries.push_back(std::move(e));
  }
  SendAfterPersist(std::move(r));
}

bool Replica::IgnorePromise(const Message& m) const {
  return role_ != Role::kCandidate || m.ballot != ballot_ || !VoterIndex(m.from);
}

void Replica::OnPromise(const Message& m) {
  if (IgnorePromise(m)) return;
  promises_[m.from] = PromiseFrom{m.chosen, m.entries};
  CheckElection();
}

void Replica::OnAccept(const Message& m) {
  if (!Votes()) {
    // A voter catching up learns who leads (for redirects), nothing more.
    if (IsVoter() && m.ballot >= hard_.promised) leader_ = m.from;
    return;
  }
  // P1a: accept only at or above our promise.
  if (m.ballot < hard_.promised && !bug(kBugForgetPromise) && !bug(kBugAcceptBelowPromise)) {
    Message r = NewMessage(MessageType::kReject, m.from);
    r.ballot = m.ballot;
    r.promised = hard_.promised;
    Send(std::move(r));
    return;
  }
  if (m.ballot > hard_.promised || bug(kBugForgetPromise)) SetPromised(m.ballot);
  HeardLeader(m.from, m.ballot);
  if (m.entries.empty()) return;
  // Phase 2b. An instance we already know chosen holds the same value (Paxos
  // safety), so it is not rewritten, but it is still acknowledged.
  for (const Entry& e : m.entries) {
    if (e.instance > hard_.chosen) StageEntry(Entry{e.instance, m.ballot, e.value});
    if (bug(kBugConfigBeforeChosen) && e.value->kind == ValueKind::kConfig) {
      UseMembership(e.value->membership);  // broken on purpose: accepted is not chosen
      if (!IsVoter() && role_ != Role::kFollower) BecomeFollower(kNoNode, Ballot{});
    }
  }
  Message r = NewMessage(MessageType::kAccepted, m.from);
  r.ballot = m.ballot;
  r.instance = m.entries.front().instance;
  r.instance_last = m.entries.back().instance;
  SendAfterPersist(std::move(r));
  // The piggybacked commit.
  if (m.ballot > commit_ballot_) {
    commit_ballot_ = m.ballot;
    commit_hint_ = m.chosen;
  } else {
    commit_hint_ = std::max(commit_hint_, m.chosen);
  }
  LearnFromCommit();
}

bool Replica::IgnoreAccepted(const Message& m) const {
  return role_ != Role::kLeader || m.ballot != ballot_ || !VoterIndex(m.from) ||
         m.instance > m.instance_last;
}

void Replica::OnAccepted(const Message& m) {
  if (IgnoreAccepted(m)) return;
  const size_t index = *VoterIndex(m.from);
  for (Peer& p : peers_) {
    if (p.id == m.from) p.heard_tick = now_;
  }
  for (auto it = inflight_.lower_bound(m.instance);
       it != inflight_.end() && it->first <= m.instance_last; ++it) {
    CountAccept(it->first, index);
  }
  AdvanceFrontier();
}

void Replica::OnReject(const Message& m) {
  // A candidate outbid by a higher promise gives way; it will try again with
  // a higher ballot if no leader shows up. A leader ignores single refusals:
  // it steps down only when it loses its quorum (CheckQuorum) or hears from a
  // leader with a higher ballot.
  if (role_ == Role::kCandidate && m.ballot == ballot_ && m.promised > ballot_) {
    BecomeFollower(kNoNode, Ballot{});
  }
  // A voter promised above our ballot (to a candidate that then failed)
  // would reject us forever while our followers stick with us: take over
  // again with a higher ballot so it votes again. Our followers grant it
  // (stickiness exempts the leader they follow).
  if (role_ == Role::kLeader && m.ballot == ballot_ && m.promised > ballot_ &&
      VoterIndex(m.from)) {
    BecomeFollower(kNoNode, Ballot{});
    BecomeCandidate();
  }
}

void Replica::OnCommit(const Message& m) {
  if (!Votes()) {
    // Not answered: a voter catching up must not count toward the leader's
    // quorum check. Its frontier was noted; it fetches from there.
    if (IsVoter() && m.ballot >= hard_.promised) leader_ = m.from;
    return;
  }
  if (m.ballot < hard_.promised) {
    // An old leader: tell it about the newer promise.
    Message r = NewMessage(MessageType::kReject, m.from);
    r.ballot = m.ballot;
    r.promised = hard_.promised;
    Send(std::move(r));
    return;
  }
  HeardLeader(m.from, m.ballot);
  if (m.ballot > commit_ballot_) {
    commit_ballot_ = m.ballot;
    commit_hint_ = m.chosen;
  } else {
    commit_hint_ = std::max(commit_hint_, m.chosen);
  }
  LearnFromCommit();
  Message r = NewMessage(MessageType::kCommitReply, m.from);
  r.ballot = m.ballot;
  Send(std::move(r));
}

void Replica::OnCommitReply(const Message& m) {
  if (role_ != Role::kLeader || m.ballot != ballot_) return;
  for (Peer& p : peers_) {
    if (p.id == m.from) p.heard_tick = now_;
  }
}

void Replica::OnFetch(const Message& m) {
  // Serve chosen entries only: they are facts, not votes, so any replica may
  // answer, and a follower never waits for the leader to learn.
  Message r = NewMessage(MessageType::kFetchReply, m.from);
  r.instance = m.instance;
  r.promised = hard_.promised;
  r.first_retained = store_.FirstInstance();
  r.instance_last = last_instance_;  // the highest instance we accepted
  // Who leads, as we know it: a learner hears nothing else from the leader
  // and needs it to redirect publishes.
  if (leader_ != kNoNode) r.ballot = role_ == Role::kLeader ? ballot_ : leader_ballot_;
  const Instance last = std::min(m.instance_last, hard_.chosen);
  uint64_t bytes = 0;
  // Below the first retained instance only the snapshot has the state: the
  // empty reply with first_retained tells the asker to install one.
  const Instance first = m.instance < r.first_retained ? Instance(last.value() + 1) : m.instance;
  if (config_.host_serves_fetch && first <= last && first != kNoInstance) {
    fetches_to_serve_.push_back(FetchToServe{std::move(r), last});
    return;
  }
  for (Instance i = first; i <= last && i != kNoInstance; i = i.next()) {
    if (r.entries.size() >= config_.fetch_entries_max || bytes >= config_.fetch_bytes_max) break;
    Entry e;
    if (ReadEntry(i, &e) != StoreCode::kOk) {
      ++counters_.storage_corruptions;
      NoteRepair(i);
      break;  // never serve a record that fails its check
    }
    bytes += e.value->ByteSize();
    r.entries.push_back(std::move(e));
  }
  Send(std::move(r));
}

bool Replica::NoteRepair(Instance instance) {
  if (repairs_.size() >= kRepairsMax) return false;
  return repairs_.insert(instance).second;
}

void Replica::ReportUnreadable(Instance instance) {
  PAXOS_ASSERT(!ready_outstanding_);
  ++counters_.storage_corruptions;
  if (instance <= hard_.chosen && instance >= store_.FirstInstance()) NoteRepair(instance);
  MaybeFetch(false);
}

void Replica::OnFetchReply(const Message& m) {
  auto it = fetches_.find(m.instance);
  if (it != fetches_.end() && it->second.peer == m.from) {
    // In time: this peer's timeout comes back down towards twice this round trip.
    const uint64_t base = config_.fetch_timeout_ticks;
    const uint64_t rtt = now_ - it->second.sent_tick;
    if (Peer* p = Source(m.from)) {
      p->fetch_timeout = std::clamp(2 * rtt + base, base, FetchTimeoutOf(p->id));
    }
    fetches_.erase(it);
  }
  if (m.from == fetch_failed_peer_) fetch_failed_peer_ = kNoNode;
  if (Peer* p = Source(m.from)) p->first_retained = std::max(Instance(1), m.first_retained);
  if (!IsVoter() && VoterIndex(m.ballot.node) && m.ballot >= leader_ballot_) {
    leader_ = m.ballot.node;  // a learner: only to name the leader to clients
    leader_ballot_ = m.ballot;
  }
  if (m.entries.empty() && m.chosen < m.instance) {
    // It cannot serve what we asked: a peer that restarted may come back
    // with a lower durable frontier (its chosen mark is written lazily), and
    // the higher one it reported before would keep us asking it in vain.
    if (Peer* p = Source(m.from)) p->chosen = m.chosen;
  }
  if (rejoin_ == Rejoin::kProbing && VoterIndex(m.from)) {
    probe_last_[m.from] = m.instance_last;
    // Fresh only if this peer holds nothing chosen and nothing accepted: an
    // accepted value may pair with an accept we forgot. A promise we may
    // have forgotten went to a candidate that promised itself at least as
    // much, and every peer answers before we vote: taking the highest
    // promise reported as our own restores that floor. (It must not count
    // as history: in a new cluster a quick node's self-promise would keep
    // the slower ones waiting for instances nobody can choose.)
    if (m.promised > hard_.promised) SetPromised(m.promised);
    if (m.chosen == kNoInstance && m.first_retained <= Instance(1) &&
        m.instance_last == kNoInstance) {
      probe_fresh_.insert(m.from);
    } else {
      history_seen_ = true;
    }
  }
  // Replies may come back out of order from several peers: entries beyond
  // the next instance wait in fetched_ahead_ (bounded by the pipeline, and
  // in bytes by MaybeFetch).
  const uint64_t ahead_max =
      hard_.chosen.value() + uint64_t{config_.fetch_pipeline_max} * config_.fetch_entries_max;
  Instance expect = m.instance;
  for (const Entry& e : m.entries) {
    if (e.value == nullptr || e.instance != expect) break;  // runs are contiguous
    expect = e.instance.next();
    ++counters_.fetched_entries;
    if (e.instance <= hard_.chosen) {
      if (repairs_.erase(e.instance) > 0) StageEntry(e);  // rewrite the record that failed its check
      continue;
    }
    if (e.instance.value() > ahead_max) break;
    if (fetched_ahead_.emplace(e.instance, e).second) fetched_ahead_bytes_ += e.value->ByteSize();
  }
  TakeFetched();
  LearnFromCommit();
  AdvanceFrontier();
}

void Replica::TakeFetched() {
  while (!fetched_ahead_.empty()) {
    auto it = fetched_ahead_.begin();
    if (it->first <= hard_.chosen) {
      DropFetchedAhead(it);
      continue;
    }
    if (it->first != hard_.chosen.next()) break;
    if (role_ == Role::kLeader && inflight_.count(it->first)) {
      fetched_ahead_.clear();
      fetched_ahead_bytes_ = 0;
      break;
    }
    StageEntry(it->second);
    SetChosen(it->first);
    DropFetchedAhead(it);
  }
}

void Replica::DropFetchedAhead(std::map<Instance, Entry>::iterator it) {
  fetched_ahead_bytes_ -= std::min(fetched_ahead_bytes_, it->second.value->ByteSize());
  fetched_ahead_.erase(it);
}

// ---------------------------------------------------------------------------
// Leader: phase 2

void Replica::AssignInstance(ValuePtr value) {
  const Instance i = next_instance_;
  next_instance_ = i.next();
  StageEntry(Entry{i, ballot_, value});
  if (bug(kBugAckBeforeQuorumSync) && self_index_) {
    CountAccept(i, *self_index_);  // broken on purpose: not durable yet
  } else {
    self_accept_pending_.push_back(i);
  }
  inflight_[i] = Inflight{std::move(value), VoteSet{}, now_, false};
  ++counters_.instances_proposed;
}

ProposeResult Replica::Propose(std::vector<ClientMessage> messages) {
  PAXOS_ASSERT(!ready_outstanding_);
  if (role_ != Role::kLeader) return ProposeResult{ProposeResult::Code::kNotLeader, leader_};
  uint64_t bytes = 0;
  for (const ClientMessage& m : messages) bytes += MessageBytes(m);
  if (!pending_.empty() && pending_bytes_ + bytes > config_.pending_bytes_max) {
    return ProposeResult{ProposeResult::Code::kBusy, leader_};
  }
  for (ClientMessage& m : messages) pending_.push_back(std::move(m));
  pending_bytes_ += bytes;
  CutBatches();
  return ProposeResult{ProposeResult::Code::kOk, leader_};
}

void Replica::CutBatches() {
  if (role_ != Role::kLeader) return;
  // Batches form naturally: while the window is full, proposals queue up, and
  // the next free slot takes all of them (up to the batch limits).
  // Nothing goes after a configuration entry until it is chosen: the
  // configuration of the instances after it depends on it.
  while (!pending_.empty() && change_inflight_ == kNoInstance &&
         next_instance_.value() - 1 - hard_.chosen.value() < config_.window_instances_max) {
    std::vector<ClientMessage> batch;
    uint64_t bytes = 0;
    while (!pending_.empty() && batch.size() < config_.batch_messages_max) {
      const size_t size = MessageBytes(pending_.front());
      if (!batch.empty() && bytes + size > config_.batch_bytes_max) break;
      batch.push_back(std::move(pending_.front()));
      pending_.pop_front();
      bytes += size;
      pending_bytes_ -= size;
    }
    AssignInstance(MakeBatch(ballot_, std::move(batch)));
  }
  SendUnsentAccepts();
}

void Replica::SendUnsentAccepts() {
  if (unsent_from_ >= next_instance_) return;
  for (const Peer& p : peers_) SendAccepts(p.id, unsent_from_, next_instance_.prev());
  unsent_from_ = next_instance_;
}

void Replica::SendAccepts(NodeId to, Instance first, Instance last) {
  Message m;
  for (auto it = inflight_.lower_bound(first); it != inflight_.end() && it->first <= last; ++it) {
    if (m.entries.empty()) {
      m = NewMessage(MessageType::kAccept, to);
      m.ballot = ballot_;
    } else {
      PAXOS_ASSERT(it->first == m.entries.back().instance.next());  // runs are contiguous
    }
    m.entries.push_back(Entry{it->first, ballot_, it->second.value});
    if (m.entries.size() >= config_.accept_entries_max) Send(std::move(m)), m = Message{};
  }
  if (!m.entries.empty()) Send(std::move(m));
  commit_sent_ = hard_.chosen;
}

void Replica::Retransmit() {
  std::vector<Instance> resent;
  for (size_t pi = 0; pi < peers_.size(); ++pi) {
    const size_t index = *VoterIndex(peers_[pi].id);
    Instance run_first{}, run_last{};
    auto flush = [&] {
      if (run_first != kNoInstance) SendAccepts(peers_[pi].id, run_first, run_last);
      run_first = kNoInstance;
    };
    for (auto& [instance, f] : inflight_) {
      // Backing off: a peer that is only slow (a saturated machine, a long
      // fsync) would otherwise get the whole window again every few ticks,
      // each copy making it slower still.
      const uint64_t wait = uint64_t{config_.retransmit_ticks} << std::min<uint32_t>(f.resends, 3);
      const bool due = !f.chosen && !f.acks.Has(index) && now_ - f.sent_tick >= wait &&
                       instance < unsent_from_;
      if (!due) {
        flush();
        continue;
      }
      if (run_first != kNoInstance && instance != run_last.next()) flush();
      if (run_first == kNoInstance) run_first = instance;
      run_last = instance;
      resent.push_back(instance);
    }
    flush();
  }
  for (Instance i : resent) {
    Inflight& f = inflight_[i];
    if (f.sent_tick != now_) ++f.resends;  // once per round, whatever the peers
    f.sent_tick = now_;
  }
}

void Replica::CheckQuorum() {
  if (now_ - quorum_check_tick_ < config_.election_timeout_ticks) return;
  size_t heard = 1;  // ourselves
  for (const Peer& p : peers_) {
    if (p.heard_tick > quorum_check_tick_) ++heard;
  }
  quorum_check_tick_ = now_;
  // A leader that cannot reach a majority steps down, so clients are
  // redirected instead of waiting on a leader that cannot commit.
  if (heard < Quorum()) BecomeFollower(kNoNode, Ballot{});
}

void Replica::BroadcastCommit() {
  for (const Peer& p : peers_) {
    Message m = NewMessage(MessageType::kCommit, p.id);
    m.ballot = ballot_;
    Send(std::move(m));
  }
  commit_sent_ = hard_.chosen;
}

void Replica::CountAccept(Instance instance, size_t voter_index) {
  auto it = inflight_.find(instance);
  if (it == inflight_.end() || it->second.chosen) return;
  it->second.acks.Add(voter_index);
  if (it->second.acks.IsQuorumOf(config_.voters.size()) || bug(kBugMinorityCommit)) {
    it->second.chosen = true;
    if (bug(kBugOutOfOrderApply) && instance > hard_.chosen.next()) {
      // Broken on purpose: apply as soon as chosen, ahead of the gap.
      ApplyChosen(instance, it->second.value);
      chosen_ahead_.insert(instance);
    }
  }
}

// ---------------------------------------------------------------------------
// Learning

void Replica::NoteChosen(NodeId from, Instance chosen) {
  if (!heard_any_) {
    heard_any_ = true;
    first_heard_chosen_ = chosen;
  }
  if (const Member* m = membership_.Find(from); m != nullptr && !m->voter) {
    Instance& c = learner_chosen_[from];
    c = std::max(c, chosen);
  }
  Peer* p = Source(from);
  if (p == nullptr && from != config_.id && others_.size() < kOthersMax) {
    // Outside the configuration this node knows (a member added after it,
    // or it missed its own removal): still a source of chosen entries.
    others_.push_back(Peer{from, kNoInstance, false});
    p = &others_.back();
  }
  if (p != nullptr) {
    p->chosen = std::max(p->chosen, chosen);
    p->heard = true;
    p->spoke_tick = now_;
  }
  known_chosen_ = std::max(known_chosen_, chosen);
}

void Replica::LearnFromCommit() {
  if (role_ == Role::kLeader) return;
  // "Everything up to commit_hint_ is chosen, and what you accepted at
  // commit_ballot_ is the chosen value." Where our entry is missing or from
  // another ballot we have a gap, which MaybeFetch fills from any peer.
  while (hard_.chosen < commit_hint_) {
    const Instance i = hard_.chosen.next();
    Entry e;
    if (ReadEntry(i, &e) != StoreCode::kOk || e.ballot != commit_ballot_) break;
    SetChosen(i);
  }
  ApplyUpTo();
}

void Replica::AdvanceFrontier() {
  if (role_ == Role::kLeader) {
    for (auto it = inflight_.begin(); it != inflight_.end() && it->second.chosen;) {
      if (it->first != hard_.chosen.next()) break;
      SetChosen(it->first);
      it = inflight_.erase(it);
    }
  }
  ApplyUpTo();
  if (role_ == Role::kLeader) {
    CutBatches();
    // Followers learn the new frontier from the next accept; if none is going
    // out, tell them now rather than at the next heartbeat.
    if (commit_sent_ < hard_.chosen) BroadcastCommit();
  }
}

void Replica::ApplyUpTo() {
  // Strictly in instance order: a learner never applies past a gap.
  while (apply_next_ <= hard_.chosen) {
    // A Ready never applies past a snapshot point: its snapshot describes
    // the state right after its last applied instance. Advance goes on.
    if (snapshot_out_) break;
    const Instance i = apply_next_;
    if (chosen_ahead_.erase(i)) {
      apply_next_ = i.next();
      continue;
    }
    Entry e;
    const StoreCode code = ReadEntry(i, &e);
    if (code != StoreCode::kOk) {
      // A chosen record we cannot read: fetch it from a peer, then go on.
      if (NoteRepair(i)) ++counters_.storage_corruptions;
      return;
    }
    ApplyChosen(i, e.value);
    apply_next_ = i.next();
    DropUnappliedBelow(apply_next_);
    if (!replaying_ && config_.snapshot_interval_instances != 0 &&
        i.value() % config_.snapshot_interval_instances == 0) {
      snapshot_out_ = applied_.Snapshot();
    }
  }
  DropUnappliedBelow(apply_next_);
  if (rejoin_ == Rejoin::kCatchingUp) CheckRejoin();
}

void Replica::ApplyChosen(Instance instance, const ValuePtr& value) {
  // A hint counts only from this node's own chain before the instance: a
  // node that missed or derived something else earlier hashes.
  std::optional<ChainValue> hinted;
  bool check = true;
  if (auto h = chain_hints_.find(instance); h != chain_hints_.end()) {
    if (h->second.before == applied_.chain()) {
      hinted = h->second.after;
      check = config_.chain_check_every != 0 && instance.value() % config_.chain_check_every == 0;
    }
  }
  chain_hints_.erase(chain_hints_.begin(), chain_hints_.upper_bound(instance));
  AppliedInstance a =
      applied_.Apply(applied_.applied().next(), value, hinted && !check ? &*hinted : nullptr);
  a.instance = instance;
  if (a.appended > 0) {
    if (hinted && !check) {
      ++counters_.chain_hints_taken;
    } else {
      ++counters_.chain_hashed;
      // Two replicas derived different states from the same chosen value,
      // or a hint was damaged: this node's own value stands.
      if (hinted && *hinted != a.chain) ++counters_.chain_hint_mismatches;
    }
    if (config_.chain_hints) {
      if (!recent_chain_.empty() && recent_chain_.back().instance >= instance) {
        recent_chain_.clear();  // out of order: only the out-of-order-apply mutant
      }
      recent_chain_.push_back(ChainHint{instance, a.chain_before, a.chain});
      if (recent_chain_.size() > kRecentChainMax) recent_chain_.pop_front();
    }
  }
  if (value->kind == ValueKind::kConfig) OnConfigApplied(instance);
  counters_.messages_appended += a.appended;
  for (const MessageResult& r : a.results) {
    if (r.outcome == PublishOutcome::kDuplicate) ++counters_.messages_duplicate;
  }
  applied_out_.push_back(std::move(a));
}

void Replica::TakeChainHints(const Message& m) {
  // Only a leader's accepts and commits hint, and a leader is a voter of
  // the configuration at a ballot not below our promise (peer frames'
  // senders are authenticated by the host). Hints are used only where their
  // `before` is this node's chain, and bounded.
  if (!config_.chain_hints || !VoterIndex(m.from) || m.ballot < hard_.promised) return;
  if (m.type != MessageType::kAccept && m.type != MessageType::kCommit) return;
  for (const ChainHint& h : m.chain) {
    if (h.instance < apply_next_) continue;
    if (chain_hints_.size() >= kChainHintsMax && chain_hints_.count(h.instance) == 0) break;
    chain_hints_[h.instance] = h;
  }
}

void Replica::AttachChainHints(Message* m) {
  if (recent_chain_.empty()) return;
  Peer* p = Source(m->to);
  if (p == nullptr) return;
  // Each hint goes to a peer once, from the first instance it may not have
  // applied: one lost, the peer hashes that instance itself.
  const Instance from = std::max(p->chosen, p->hinted).next();
  auto it = std::lower_bound(recent_chain_.begin(), recent_chain_.end(), from,
                             [](const ChainHint& h, Instance i) { return h.instance < i; });
  for (; it != recent_chain_.end() && m->chain.size() < kChainHintsPerMessage; ++it) {
    m->chain.push_back(*it);
    if (bug(kBugStaleChainHint)) m->chain.back().after = m->chain.back().before;
  }
  if (!m->chain.empty()) p->hinted = m->chain.back().instance;
}

void Replica::Send(Message m) {
  if (config_.chain_hints && role_ == Role::kLeader &&
      (m.type == MessageType::kAccept || m.type == MessageType::kCommit)) {
    AttachChainHints(&m);
  }
  msgs_.push_back(std::move(m));
}

void Replica::SendFetch(NodeId peer, Instance first, Instance last) {
  Message m = NewMessage(MessageType::kFetch, peer);
  m.instance = first;
  m.instance_last = last;
  Send(std::move(m));
  fetches_[first] = Fetch{peer, first, last, now_};
  ++counters_.fetches_sent;
}

uint64_t Replica::FetchTimeoutOf(NodeId peer) const {
  const uint64_t base = config_.fetch_timeout_ticks;
  if (const Peer* p = Source(peer)) return std::max(base, p->fetch_timeout);
  return base;
}

const Replica::Peer* Replica::Source(NodeId id) const {
  for (const std::vector<Peer>* list : {&peers_, &others_}) {
    for (const Peer& p : *list) {
      if (p.id == id) return &p;
    }
  }
  return nullptr;
}

void Replica::MaybeFetch(bool force) {
  if (peers_.empty() || need_snapshot_) return;
  // The frontier may have reached fetched entries by another way (a commit).
  if (!fetched_ahead_.empty()) {
    TakeFetched();
    ApplyUpTo();
  }
  if (force) fetches_.clear();
  // Spread the load: among the peers that have the range, the one with the
  // fewest of our fetches in flight (random among equals), avoiding the
  // last one that timed out when there is a choice.
  auto pick = [&](Instance first, Instance last, bool* truncated) -> NodeId {
    std::vector<NodeId> best;
    size_t best_load = SIZE_MAX;
    *truncated = false;
    for (int pass = 0; pass < 3 && best.empty(); ++pass) {
      for (const std::vector<Peer>* list : {&peers_, &others_}) {
        for (const Peer& p : *list) {
          if (p.chosen < (pass == 0 ? last : first)) continue;
          if (p.first_retained > first) {
            *truncated = true;
            continue;
          }
          if (p.id == fetch_failed_peer_ && pass < 2) continue;
          size_t load = 0;
          for (const auto& [f, fetch] : fetches_) load += fetch.peer == p.id;
          if (load < best_load) best.clear(), best_load = load;
          if (load == best_load) best.push_back(p.id);
        }
      }
    }
    return best.empty() ? kNoNode : best[rng_.Uniform(best.size())];
  };
  bool truncated = false;
  // Repairs: a fetch per run of consecutive damaged instances, a few in
  // flight at a time, beside the range fetches below.
  size_t repairs_in_flight = 0;
  for (const auto& [first, fetch] : fetches_) repairs_in_flight += fetch.last <= hard_.chosen;
  for (auto it = repairs_.begin();
       it != repairs_.end() && repairs_in_flight < config_.fetch_pipeline_max;) {
    const Instance first = *it;
    Instance last = first;
    for (++it; it != repairs_.end() && *it == last.next() &&
               last.value() - first.value() + 1 < config_.fetch_entries_max;
         ++it) {
      last = *it;
    }
    bool gone = false;
    NodeId peer = pick(first, last, &gone);
    if (peer == kNoNode && gone) {
      // Every peer that had the record truncated it behind a snapshot.
      // Applied already, it is needed by nobody (a peer that falls behind
      // installs a snapshot): the repair ends. Not yet applied, only a
      // snapshot gets this node past it, as for a range fetch below.
      if (first < apply_next_) {
        repairs_.erase(repairs_.find(first), it);
        continue;
      }
      if (!need_snapshot_) {
        need_snapshot_ = true;
        snapshot_asked_tick_ = 0;
        snapshot_peer_ = kNoNode;
        snapshot_min_ = first;
      }
      break;
    }
    if (peer == kNoNode) {
      // No peer says it has the record chosen: this node's copy may be the
      // only chosen one, and the value lives on only as accepted votes of
      // others. It must neither serve nor lead nor vote as if it knew it:
      // it stops voting until caught up (ForgetVotes), so the others
      // recover the instance from their votes.
      // (At the next Advance: votes already in this Ready were cast before
      // it knew.)
      bool all_heard = true;
      for (const Peer& p : peers_) all_heard &= p.heard;
      if (Votes() && all_heard) forget_votes_pending_ = true;
      peer = peers_[rng_.Uniform(peers_.size())].id;
    }
    if (fetches_.count(first)) continue;
    SendFetch(peer, first, last);
    ++repairs_in_flight;
  }
  // Pipelined range fetches over [chosen + 1, known_chosen_]: find the next
  // instance neither in flight nor already fetched, ask for a run from there.
  const uint64_t ahead_max =
      hard_.chosen.value() + uint64_t{config_.fetch_pipeline_max} * config_.fetch_entries_max;
  Instance x = hard_.chosen.next();
  while (x <= known_chosen_ && x.value() <= ahead_max) {
    if (fetches_.size() >= config_.fetch_pipeline_max + repairs_in_flight) break;
    bool covered = false;
    for (const auto& [f, fetch] : fetches_) {
      if (fetch.first <= x && x <= fetch.last) {
        x = fetch.last.next();
        covered = true;
        break;
      }
    }
    if (covered) continue;
    if (fetched_ahead_.count(x)) {
      x = x.next();
      continue;
    }
    // Beyond the next gap, only while what waits behind it is small: a slow
    // reply for the gap must not make everything fetched after it pile up
    // in memory (and then be written in one huge commit).
    if (x != hard_.chosen.next() &&
        fetched_ahead_bytes_ >= kFetchedAheadReplies * config_.fetch_bytes_max) {
      break;
    }
    uint64_t last = std::min({known_chosen_.value(), x.value() + config_.fetch_entries_max - 1,
                              ahead_max});
    auto next_fetch = fetches_.upper_bound(x);
    if (next_fetch != fetches_.end()) last = std::min(last, next_fetch->first.value() - 1);
    auto next_have = fetched_ahead_.upper_bound(x);
    if (next_have != fetched_ahead_.end()) last = std::min(last, next_have->first.value() - 1);
    const NodeId peer = pick(x, Instance(last), &truncated);
    if (peer == kNoNode) {
      if (truncated && x == hard_.chosen.next()) {
        // Every peer that has what we need next has truncated it: only a
        // snapshot gets us there. The host fetches and installs it.
        need_snapshot_ = true;
        snapshot_asked_tick_ = 0;
        snapshot_peer_ = kNoNode;
        snapshot_min_ = x;
        Instance best{};
        for (const std::vector<Peer>* list : {&peers_, &others_}) {
          for (const Peer& p : *list) {
            if (p.first_retained > x && p.chosen > best) best = p.chosen, snapshot_peer_ = p.id;
          }
        }
        fetches_.clear();
      }
      break;
    }
    SendFetch(peer, x, Instance(last));
    x = Instance(last).next();
  }
}

void Replica::InstallSnapshot(const AppliedSnapshot& snapshot) {
  PAXOS_ASSERT(!ready_outstanding_);
  // Above what this node applied: usually above its chosen frontier, or a
  // chosen record it cannot read that every peer has truncated.
  if (snapshot.instance < apply_next_) return;
  if (role_ != Role::kFollower) BecomeFollower(kNoNode, Ballot{});
  applied_ = AppliedState(snapshot);
  UseMembership(snapshot.membership.empty() ? bootstrap_ : snapshot.membership);
  change_inflight_ = kNoInstance;
  // The host raised the stored frontier with the install; this keeps them equal.
  hard_.chosen = std::max(hard_.chosen, snapshot.instance);
  hard_dirty_ = true;
  known_chosen_ = std::max(known_chosen_, snapshot.instance);
  apply_next_ = snapshot.instance.next();
  last_instance_ = std::max(last_instance_, snapshot.instance);
  staged_.erase(staged_.begin(), staged_.upper_bound(snapshot.instance));
  DropUnappliedBelow(apply_next_);
  // Applied but not yet handed over: the snapshot covers them.
  std::erase_if(applied_out_,
                [&](const AppliedInstance& a) { return a.instance <= snapshot.instance; });
  if (snapshot_out_ && snapshot_out_->instance <= snapshot.instance) snapshot_out_.reset();
  while (!fetched_ahead_.empty() && fetched_ahead_.begin()->first <= snapshot.instance) {
    DropFetchedAhead(fetched_ahead_.begin());
  }
  fetches_.clear();
  repairs_.erase(repairs_.begin(), repairs_.upper_bound(snapshot.instance));
  chain_hints_.erase(chain_hints_.begin(), chain_hints_.upper_bound(snapshot.instance));
  recent_chain_.clear();
  need_snapshot_ = false;
  ++counters_.snapshots_installed;
  TakeFetched();
  ApplyUpTo();
  if (rejoin_ == Rejoin::kCatchingUp) CheckRejoin();
  MaybeFetch(false);
}

// ---------------------------------------------------------------------------
// Rejoin after a lost disk

void Replica::Probe() {
  for (const Peer& p : peers_) {
    Message m = NewMessage(MessageType::kFetch, p.id);
    m.instance = Instance(1);
    m.instance_last = Instance(1);
    Send(std::move(m));
  }
}

void Replica::CheckRejoin() {
  if (rejoin_ == Rejoin::kProbing) {
    if (history_seen_) {
      // What we may have voted on before we lost the disk: any instance
      // accepted by a majority is reported by some peer of any quorum of
      // them; any instance a leader assigned is at most its window beyond
      // what was chosen then. Once an instance past both is chosen and
      // applied here, none of our forgotten votes can matter any more.
      if (probe_last_.size() < Quorum()) return;
      Instance highest = known_chosen_;
      for (const auto& [peer, last] : probe_last_) highest = std::max(highest, last);
      rejoin_ = Rejoin::kCatchingUp;
      rejoin_target_ = Instance(highest.value() + config_.window_instances_max + 1);
      hard_.catch_up_until = rejoin_target_;
      hard_dirty_ = true;
    } else if (probe_fresh_.size() == peers_.size()) {
      // A new cluster: nothing was ever chosen, so nothing can be forgotten.
      // (Every peer must say so: a quorum of empty peers might be missing
      // the one that holds what we forgot.)
      rejoin_ = Rejoin::kNone;
      hard_.catch_up_until = kNoInstance;
      hard_dirty_ = true;
      ResetElectionTimer();
      return;
    } else {
      return;
    }
  }
  if (rejoin_ == Rejoin::kCatchingUp && apply_next_ > rejoin_target_) {
    rejoin_ = Rejoin::kNone;
    storage_failed_ = false;  // the values it could not read are behind it now
    hard_.catch_up_until = kNoInstance;
    hard_dirty_ = true;
    ResetElectionTimer();
  }
}

Status Replica::status() const {
  Status s = counters_;
  s.id = config_.id;
  s.role = role_;
  s.leader = leader_;
  s.promised = hard_.promised;
  s.leader_ballot = role_ == Role::kLeader ? ballot_ : leader_ballot_;
  s.chosen = hard_.chosen;
  s.last_instance = last_instance_;
  s.next_offset = applied_.next_offset();
  s.pending_messages = pending_.size();
  s.inflight_instances = inflight_.size();
  s.storage_failed = storage_failed_;
  s.voter = IsVoter();
  s.catching_up = rejoin_ != Rejoin::kNone;
  s.rejoin_target = rejoin_target_;
  s.first_retained = store_.FirstInstance();
  for (const Peer& p : peers_) {
    s.peers.push_back(PeerStatus{p.id, p.chosen, now_ - p.spoke_tick});
  }
  return s;
}

}  // namespace ordo::paxos
