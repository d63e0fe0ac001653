// paxos::Replica: one broker's acceptor, learner and (possible) leader, as a
// pure deterministic state machine in the style of etcd's raft package.
//
// Inputs: Step(message), Tick() (logical time), Propose(batch).
// Output: one Ready batch at a time. The host must, in this order:
//   1. optionally send ready.messages (they vouch for nothing unpersisted);
//   2. durably save ready.hard_state and ready.entries (LogStore::Save);
//   3. send ready.messages_after_persist (promises and accepted replies);
//   4. act on ready.applied (ack publishes, serve subscribers);
//   5. call Advance(), then loop while HasReady().
// No Step/Tick/Propose may happen between TakeReady() and Advance().
//
// The core never touches a socket, a file, a clock or a thread; randomness
// comes from Config::seed.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "paxos/applied_state.h"
#include "paxos/bugs.h"
#include "paxos/log_store.h"
#include "paxos/message.h"
#include "paxos/namespace.h"
#include "paxos/quorum.h"
#include "paxos/rng.h"
#include "paxos/types.h"
#include "paxos/value.h"

namespace ORDO_PAXOS_NAMESPACE {


struct Config {
  NodeId id{};
  // The bootstrap configuration: every voting member, this node included
  // (or, for a node joining a running cluster, empty). A configuration
  // entry chosen in the log replaces it for every instance after that
  // entry, on every replica: the log wins over the file.
  std::vector<NodeId> voters;
  // The bootstrap members with their host fields (endpoints, keys), for the
  // first configuration entry to start from; ids not among them get empty
  // fields. Optional.
  std::vector<Member> bootstrap_members;
  // Peers to pull the log from while this node knows no voter (it joins a
  // running cluster with an empty `voters`): it learns the membership from
  // the configuration entries it fetches.
  std::vector<NodeId> seeds;

  // Time, in ticks. A follower starts an election when it has not heard a
  // leader for a random number of ticks in [election_timeout_ticks, 2x).
  uint32_t election_timeout_ticks = 10;
  uint32_t heartbeat_interval_ticks = 2;
  uint32_t retransmit_ticks = 3;     // resend unanswered accepts / prepares
  uint32_t fetch_timeout_ticks = 3;  // re-ask another peer for a missing range

  // Batching and flow control.
  uint32_t window_instances_max = 32;     // instances assigned but not yet chosen
  uint32_t batch_messages_max = 4096;     // client messages per instance
  uint32_t batch_bytes_max = 256 << 10;   // bytes per instance
  uint64_t pending_bytes_max = 64 << 20;  // queued proposals before kBusy
  uint32_t accept_entries_max = 64;       // entries per Accept message
  uint32_t fetch_entries_max = 256;       // entries per FetchReply
  uint64_t fetch_bytes_max = 4 << 20;     // bytes per FetchReply
  uint32_t fetch_pipeline_max = 4;        // range fetches in flight, spread over peers

  // Snapshots: the applied state is handed to the host (Ready::snapshot)
  // after every instance that is a multiple of this; 0 = never. The points
  // are the same on every replica, so their snapshots are identical.
  uint64_t snapshot_interval_instances = 0;

  // Accepted entries not yet applied are also kept in memory, up to this
  // many bytes (Value::ByteSize), so applying a chosen instance does not read
  // back and decode what this node just wrote. Above the bound (a long gap,
  // a deep catch-up) entries are read from the store as before. 0 = off.
  // (A cached batch takes about 2.5 times its ByteSize: its messages and
  // its encoded bytes. In steady state the leader's window bounds it far
  // lower.)
  uint64_t unapplied_cache_bytes_max = 32 << 20;

  // The host reads and sends the entries a Fetch asks for (Ready::
  // fetches_to_serve) instead of the core reading them into the reply: a
  // broker serves catch-up from its store on another thread, so a peer
  // pulling GBs never stalls this node's event loop (and its heartbeats).
  bool host_serves_fetch = false;

  // The store was empty when the host started. A voter that lost its disk
  // must not vote on what it forgot: it first asks its peers, and if the
  // cluster has a history it stays a non-voter until it has applied an
  // instance chosen after its restart. In a new cluster (every peer says it
  // is empty) it votes at once; it waits while a peer has not answered.
  bool probe_before_voting = false;
  // With probe_before_voting: the store was emptied because its contents
  // failed their checks (the host quarantined them), so this node had a
  // history and may have voted. Peers that say they are empty never make it
  // a member of a new cluster; it waits for one that has the history.
  bool history_lost = false;

  // Chain hints. The stream's chain (paxos/applied_state.h) is hashed by
  // the leader as it applies each instance, and its accepts and commits
  // tell followers the value (Message::chain): a follower whose chain
  // before the instance is the hint's `before` takes its `after` instead
  // of hashing the instance's messages again, so the cluster hashes each
  // message about once rather than once per replica. Still, a follower
  // hashes itself every instance whose number is a multiple of
  // chain_check_every (1: every one, hints are then only compared; 0:
  // none) and where the two differ keeps its own value and counts it
  // (Status::chain_hint_mismatches). A follower without a matching hint
  // (it caught up by fetching, it missed a message) hashes. false: hash
  // every instance, send and take no hints.
  bool chain_hints = true;
  uint32_t chain_check_every = 32;

  uint64_t seed = 0;  // election jitter and peer choice

#ifdef ORDO_PAXOS_BUGS
  Bug bug = Bug::kNone;
#endif
};

enum class Role : uint8_t { kFollower = 0, kCandidate = 1, kLeader = 2 };
const char* ToString(Role role);

// A FetchReply whose entries the host adds (Config::host_serves_fetch):
// the stored chosen entries from reply.instance to `last`, in order, within
// fetch_entries_max and fetch_bytes_max, stopping before the first one it
// cannot read (and reporting a corrupt one with ReportUnreadable). Read
// after this Ready's entries are durable, every one of them is stored.
struct FetchToServe {
  Message reply;  // header only: no entries
  Instance last{};
};

struct Ready {
  bool hard_state_changed = false;
  HardState hard_state{};
  std::vector<Entry> entries;  // to insert or overwrite, ascending instances
  std::vector<Message> messages;
  std::vector<Message> messages_after_persist;
  std::vector<AppliedInstance> applied;  // newly chosen, in instance order
  // Host-served fetches (Config::host_serves_fetch), to send once this
  // Ready is persisted.
  std::vector<FetchToServe> fetches_to_serve;
  // Set when this node stopped being leader: proposals it had queued but not
  // yet assigned to an instance are dropped; the host fails their requests
  // (the client retries, and exactly-once makes that safe).
  bool lost_leadership = false;
  // At a snapshot point: the applied state right after the last instance of
  // `applied` (a Ready never applies past a snapshot point). The host saves
  // a snapshot of its own state as of this Ready, then may truncate the log
  // up to snapshot->instance.
  std::optional<AppliedSnapshot> snapshot;
  // The instances this node needs are below the first retained instance of
  // every peer that has them: the host should fetch a snapshot (preferably
  // from `snapshot_peer`) at or above `snapshot_min`, install it in the store
  // and call InstallSnapshot. Repeated while the need lasts.
  bool need_snapshot = false;
  NodeId snapshot_peer{};
  Instance snapshot_min{};
};

// One membership change at a time, as the next configuration entry.
struct MembershipChange {
  enum class Kind : uint8_t {
    kAddLearner = 0,  // `member` joins as a learner (it pulls the log, never votes)
    kPromote = 1,     // learner `member.id` becomes a voter
    kRemove = 2,      // `member.id` leaves (a voter or a learner; the leader too)
  };
  Kind kind = Kind::kAddLearner;
  Member member;  // kAddLearner: the whole member; else only the id counts
};

struct ChangeResult {
  enum class Code : uint8_t {
    kOk = 0,          // assigned to `instance`; in effect once that is chosen
    kNotLeader = 1,   // redirect to `leader` (kNoNode when unknown)
    kInProgress = 2,  // a change is not yet chosen, or this leader is still recovering
    kUnknownMember = 3,
    kAlreadyMember = 4,  // add: the id is taken; promote: already a voter
    kLastVoter = 5,      // remove: the only voter
    kNotCaughtUp = 6,    // promote: the learner is too far behind to vote yet
    kInvalid = 7,        // id 0, or more voters than a VoteSet holds
  };
  Code code = Code::kOk;
  NodeId leader{};
  Instance instance{};
};
const char* ToString(ChangeResult::Code code);

struct ProposeResult {
  enum class Code : uint8_t {
    kOk = 0,
    kNotLeader = 1,  // redirect to `leader` (kNoNode when unknown)
    kBusy = 2,       // pending queue full: back off and retry
  };
  Code code = Code::kOk;
  NodeId leader{};
};

// Counters and gauges for status and metrics (read-only snapshot).
struct PeerStatus {
  NodeId id{};
  Instance chosen{};          // last chosen frontier it reported
  uint64_t ticks_since_heard = 0;  // since any message from it (on every replica)
};
struct Status {
  NodeId id{};
  Role role = Role::kFollower;
  NodeId leader{};
  Ballot promised{};
  Ballot leader_ballot{};
  Instance chosen{};
  Instance last_instance{};
  Offset next_offset{};
  uint64_t pending_messages = 0;
  uint64_t inflight_instances = 0;
  std::vector<PeerStatus> peers;
  uint64_t elections_started = 0;
  uint64_t elections_won = 0;
  uint64_t instances_proposed = 0;
  uint64_t instances_chosen = 0;
  uint64_t messages_appended = 0;
  uint64_t messages_duplicate = 0;
  uint64_t fetches_sent = 0;
  uint64_t fetched_entries = 0;
  uint64_t snapshots_installed = 0;
  uint64_t storage_corruptions = 0;
  // Instances that appended messages, by how their chain was derived: hashed
  // here, or taken from a chain hint; and checks of a hint (chain_check_every)
  // that found another value.
  uint64_t chain_hashed = 0;
  uint64_t chain_hints_taken = 0;
  uint64_t chain_hint_mismatches = 0;
  bool storage_failed = false;
  bool voter = false;        // a voting member (not a learner)
  bool catching_up = false;  // a voter that lost its disk, not voting yet
  Instance rejoin_target{};  // ...until it has applied this instance
  Instance first_retained{};
};

class Replica {
 public:
  // Restores from `store` (promised ballot, chosen frontier, log) and replays
  // the chosen log into the applied state. `store` must outlive the replica.
  Replica(const Config& config, const LogStore& store);

  void Tick();
  void Step(const Message& message);
  // Queues client messages for the log. Only the leader accepts them.
  ProposeResult Propose(std::vector<ClientMessage> messages);
  // Assigns a configuration entry for `change` (leader only). The host
  // learns the outcome when that instance is applied: the change is in
  // effect if the applied value is this configuration entry (a leader that
  // lost its leadership meanwhile may see another value there).
  ChangeResult ProposeChange(const MembershipChange& change);
  // The host installed `snapshot` in the store (entries up to its instance
  // dropped, chosen frontier raised to it): continue from there. Ignored
  // unless snapshot.instance is above what this node applied (usually: above
  // chosen()). A leader steps down first.
  void InstallSnapshot(const AppliedSnapshot& snapshot);
  // The host found the stored record of chosen `instance` failing its check
  // while serving a fetch: it is counted and fetched again from a peer.
  void ReportUnreadable(Instance instance);
  // A reported damaged record is still to be fetched. False once it was
  // rewritten, or given up: applied already and truncated by every peer
  // that had it (the host may drop it behind its own snapshot).
  bool Repairing(Instance instance) const { return repairs_.count(instance) != 0; }

  bool HasReady() const;
  Ready TakeReady();
  void Advance();

  Role role() const { return role_; }
  NodeId id() const { return config_.id; }
  NodeId leader() const { return leader_; }
  Instance chosen() const { return hard_.chosen; }
  const AppliedState& applied_state() const { return applied_; }
  // The membership in effect for the next instance: the last configuration
  // entry applied, else the bootstrap one.
  const Membership& membership() const { return membership_; }
  // A change assigned and not yet applied (kNoInstance: none).
  Instance change_pending() const { return change_inflight_; }
  Status status() const;

 private:
  struct Inflight {
    ValuePtr value;
    VoteSet acks;
    uint64_t sent_tick = 0;
    uint32_t resends = 0;  // each doubles the wait before the next (up to 8x)
    bool chosen = false;
  };
  struct PromiseFrom {
    Instance chosen{};
    std::vector<Entry> entries;
  };
  struct Peer {
    NodeId id{};
    Instance chosen{};
    bool heard = false;  // any message from it since this start
    uint64_t heard_tick = 0;     // its last answer to our leadership (quorum check)
    uint64_t spoke_tick = 0;     // its last message of any kind (status only)
    Instance first_retained{1};  // as it last told us
    // Ticks before a fetch to it is asked again elsewhere (0: the base,
    // fetch_timeout_ticks): doubled when one times out, up to
    // kFetchBackoffMax times the base; brought back down by a reply in time.
    uint64_t fetch_timeout = 0;
    Instance hinted{};  // the last instance whose chain hint went to it
  };
  struct Fetch {
    NodeId peer{};
    Instance first{};
    Instance last{};
    uint64_t sent_tick = 0;
  };
  enum class Rejoin : uint8_t { kNone, kProbing, kCatchingUp };

  // Handlers, one per message type (Step dispatches after the common checks).
  void OnPrepare(const Message& m);
  void OnPromise(const Message& m);
  void OnAccept(const Message& m);
  void OnAccepted(const Message& m);
  void OnReject(const Message& m);
  void OnCommit(const Message& m);
  void OnCommitReply(const Message& m);
  void OnFetch(const Message& m);
  void OnFetchReply(const Message& m);
  void OnPreVote(const Message& m);
  void OnPreVoteGrant(const Message& m);
  void OnTimeoutNow(const Message& m);

  // Membership: rebuild voters and peers from the membership in effect.
  void UseMembership(const Membership& membership);
  void OnConfigApplied(Instance instance);

  // Ignore-helpers: drop stale or misdirected messages before asserting.
  bool IgnorePromise(const Message& m) const;
  bool IgnoreAccepted(const Message& m) const;
  bool SticksToLeader(NodeId candidate) const;
  bool OwnLogReadable();
  // A stored accepted value failed its check: stop voting until caught up.
  void ForgetVotes();

  void BecomeFollower(NodeId leader, Ballot leader_ballot);
  void StartPreVote();
  void BecomeCandidate();
  void HeardLeader(NodeId leader, Ballot ballot);
  void BecomeLeader();
  void ResetElectionTimer();

  // Leader.
  void CutBatches();
  void AssignInstance(ValuePtr value);
  void SendUnsentAccepts();
  void SendAccepts(NodeId to, Instance first, Instance last);
  void Retransmit();
  void CheckQuorum();
  void BroadcastCommit();
  void CountAccept(Instance instance, size_t voter_index);
  void AttachChainHints(Message* m);

  // Learner.
  void NoteChosen(NodeId from, Instance chosen);
  void LearnFromCommit();
  void AdvanceFrontier();
  void ApplyUpTo();
  void CheckElection();
  void MaybeFetch(bool force);
  uint64_t FetchTimeoutOf(NodeId peer) const;
  void SendFetch(NodeId peer, Instance first, Instance last);
  bool SendFetch(Instance first, Instance last, bool repair);
  void TakeFetched();
  void DropFetchedAhead(std::map<Instance, Entry>::iterator it);
  void Probe();
  void CheckRejoin();
  void ApplyChosen(Instance instance, const ValuePtr& value);
  void TakeChainHints(const Message& m);

  // Storage through the staged (not yet persisted) overlay.
  StoreCode ReadEntry(Instance instance, Entry* out);
  void StageEntry(const Entry& entry);
  void DropUnappliedBelow(Instance next);
  void SetPromised(Ballot ballot);
  void SetChosen(Instance chosen);

  Message NewMessage(MessageType type, NodeId to) const;
  void Send(Message m);
  void SendAfterPersist(Message m) { msgs_after_persist_.push_back(std::move(m)); }
  std::optional<size_t> VoterIndex(NodeId id) const;
  bool IsVoter() const { return self_index_.has_value(); }
  // May promise, accept, grant pre-votes and campaign.
  bool Votes() const { return IsVoter() && !storage_failed_ && rejoin_ == Rejoin::kNone; }
  size_t Quorum() const { return QuorumSize(config_.voters.size()); }
  bool bug(int b) const;

  Config config_;  // config_.voters: the voters in effect (see UseMembership)
  const LogStore& store_;
  Rng rng_;
  std::optional<size_t> self_index_;
  std::vector<Peer> peers_;  // every voter but this node (or the seeds, when none is known)
  // Nodes outside the configuration this node knows that told it their
  // chosen frontier: sources to fetch from (a member added after the
  // configuration it knows; a node that missed its own removal hears only
  // from those), never voters.
  std::vector<Peer> others_;
  static constexpr size_t kOthersMax = 64;
  // In peers_ or others_.
  const Peer* Source(NodeId id) const;
  Peer* Source(NodeId id) { return const_cast<Peer*>(std::as_const(*this).Source(id)); }
  Membership membership_;  // in effect for the next instance
  Membership bootstrap_;   // from Config::voters and bootstrap_members
  // Learner members' chosen frontiers, as their fetches tell (promote checks).
  std::map<NodeId, Instance> learner_chosen_;
  // The highest chosen frontier a peer reported in the first message this
  // process heard: a configuration entry at or below it that makes this
  // node a voter may have been chosen before this process started (a lost
  // disk), so it rejoins as after a lost disk (probe_before_voting).
  Instance first_heard_chosen_{};
  bool heard_any_ = false;

  // Durable state, as the host will have it after the current Ready.
  HardState hard_{};
  bool hard_dirty_ = false;
  std::map<Instance, Entry> staged_;  // entries to persist in the next Ready
  // Staged entries not yet applied, kept after they are persisted: exactly
  // what the store holds for them (every write goes through StageEntry).
  struct Unapplied {
    Entry entry;
    uint64_t bytes = 0;
  };
  std::map<Instance, Unapplied> unapplied_;
  uint64_t unapplied_bytes_ = 0;
  Instance last_instance_{};

  // Volatile.
  uint64_t now_ = 0;
  Role role_ = Role::kFollower;
  NodeId leader_{};
  Ballot leader_ballot_{};
  uint64_t max_round_seen_ = 0;
  uint64_t election_elapsed_ = 0;
  uint64_t election_timeout_ = 0;
  uint64_t leader_heard_tick_ = 0;  // last tick a live leader spoke to us
  bool ready_outstanding_ = false;
  // A stored record above the chosen frontier failed its check: this node can
  // no longer vouch for what it accepted, so it stops voting until it has
  // caught up as after a lost disk (ForgetVotes); for good with no peers.
  bool storage_failed_ = false;
  bool forget_votes_pending_ = false;  // see MaybeFetch's repairs

  // Pre-vote (before phase 1; nothing persisted).
  bool prevoting_ = false;
  Ballot prevote_ballot_{};
  std::set<NodeId> prevote_grants_;

  // Candidate.
  Ballot ballot_{};  // our own ballot while candidate or leader
  std::map<NodeId, PromiseFrom> promises_;
  bool self_promise_pending_ = false;  // our own promise is in the current Ready
  bool self_promised_ = false;         // ...and is durable
  uint64_t prepare_sent_tick_ = 0;

  // Leader.
  Instance change_inflight_{};   // a configuration entry assigned, not yet applied
  Instance barrier_instance_{};  // this leadership's barrier: recovery is done once it is chosen
  Instance next_instance_{};
  Instance unsent_from_{};
  std::map<Instance, Inflight> inflight_;
  std::vector<Instance> self_accept_pending_;
  std::deque<ClientMessage> pending_;
  uint64_t pending_bytes_ = 0;
  uint64_t heartbeat_elapsed_ = 0;
  uint64_t quorum_check_tick_ = 0;
  Instance commit_sent_{};

  // Learner.
  Instance commit_hint_{};  // the leader said: chosen up to here...
  Ballot commit_ballot_{};  // ...and entries accepted at this ballot hold it
  Instance known_chosen_{};  // highest instance anyone said is chosen
  Instance apply_next_{1};            // next instance to apply, in order
  // Chosen instances whose stored record is unreadable, fetched again from
  // peers and rewritten (Ready::entries). Bounded: more wait for a reader
  // to run into them again.
  std::set<Instance> repairs_;
  static constexpr size_t kRepairsMax = 4096;
  bool NoteRepair(Instance instance);  // false when it was known or no room
  std::set<Instance> chosen_ahead_;   // bug kOutOfOrderApply only
  std::vector<FetchToServe> fetches_to_serve_;  // for the next Ready
  std::map<Instance, Fetch> fetches_;        // in flight, by first instance
  std::map<Instance, Entry> fetched_ahead_;  // chosen entries beyond a gap
  uint64_t fetched_ahead_bytes_ = 0;         // their values' ByteSize
  // fetched_ahead_ may grow past this many full replies only to fill the gap.
  static constexpr uint64_t kFetchedAheadReplies = 16;
  NodeId fetch_failed_peer_{};               // the last peer that timed out
  static constexpr uint64_t kFetchBackoffMax = 8;  // see Peer::fetch_timeout
  bool need_snapshot_ = false;
  NodeId snapshot_peer_{};
  Instance snapshot_min_{};  // the lowest snapshot instance that helps
  uint64_t snapshot_asked_tick_ = 0;
  std::optional<AppliedSnapshot> snapshot_out_;
  bool replaying_ = false;

  // Rejoin after a lost disk (Config::probe_before_voting).
  Rejoin rejoin_ = Rejoin::kNone;
  bool history_seen_ = false;
  std::set<NodeId> probe_fresh_;     // peers that said they are empty
  std::map<NodeId, Instance> probe_last_;  // peers' highest accepted instance
  Instance rejoin_target_{};

  AppliedState applied_;
  // Chain hints (Config::chain_hints): the chain across the last instances
  // this node applied that appended messages, ascending, for the accepts and
  // commits it sends as leader; and the hints it heard for instances it has
  // not applied yet.
  std::deque<ChainHint> recent_chain_;
  std::map<Instance, ChainHint> chain_hints_;
  static constexpr size_t kRecentChainMax = 256;
  static constexpr size_t kChainHintsMax = 1024;
  static constexpr size_t kChainHintsPerMessage = 64;
  std::vector<AppliedInstance> applied_out_;
  std::vector<Message> msgs_;
  std::vector<Message> msgs_after_persist_;
  bool lost_leadership_ = false;

  Status counters_{};
};

}  // namespace ordo::paxos
