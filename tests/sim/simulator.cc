#include "tests/sim/simulator.h"

#include <algorithm>
#include <map>
#include <memory>
#include <ostream>
#include <set>
#include <span>
#include <sstream>
#include <utility>
#include <vector>

#include "node/node_loop.h"
#include "paxos/log_store.h"
#include "paxos/rng.h"
#include "tests/sim/sim_disk.h"

namespace ordo::sim {

using ordo::ChainStep;
using paxos::Ballot;
using paxos::ClientMessage;
using paxos::Instance;
using paxos::Message;
using paxos::NodeId;
using paxos::Offset;
using paxos::ProducerId;
using paxos::PublishOutcome;
using paxos::Replica;
using paxos::Rng;

namespace {

// Simulated time: a replica ticks every kTickUnits; messages take 1..max_delay
// units, so a message may be overtaken by a later one (reordering).
constexpr uint64_t kTickUnits = 10;
constexpr uint32_t kClients = 3;
constexpr uint32_t kClientWindow = 4;            // messages in flight per client
constexpr uint64_t kClientRetryUnits = 40 * kTickUnits;
constexpr uint64_t kLivenessTicks = 400;         // (5) leader + commit after heal
constexpr uint64_t kSettleTicks = 1500;          // (4) everything acked delivered everywhere

using MsgKey = std::pair<uint64_t, uint64_t>;  // (producer, sequence)

struct Event {
  enum class Kind : uint8_t { kDeliver, kTick, kClient, kFault, kAck, kServe, kReconfigure };
  uint64_t time = 0;
  uint64_t seq = 0;  // tie-break, keeps the order deterministic
  Kind kind = Kind::kTick;
  uint32_t target = 0;  // node index (deliver, tick) or client index (client, ack)
  Message message;      // kDeliver
  // kAck: the outcome a broker reports to a client.
  MsgKey key{};
  PublishOutcome outcome = PublishOutcome::kAppended;
  bool offset_known = false;
  uint64_t offset = 0;
  // kServe: a fetch the host serves later (a broker's catch-up thread), by
  // this incarnation of the node (a crash loses it).
  paxos::FetchToServe fetch;
  uint64_t incarnation = 0;
};

struct EventLater {
  bool operator()(const std::unique_ptr<Event>& a, const std::unique_ptr<Event>& b) const {
    return a->time != b->time ? a->time > b->time : a->seq > b->seq;
  }
};

class Simulation;

// The node's host, as the broker is: where the node loop's outputs go.
class SimHost final : public node::Host, public node::Transport {
 public:
  SimHost(Simulation* sim, uint32_t index) : sim_(sim), index_(index) {}
  void Send(const Message& m) override;
  void OnReady(const paxos::Ready& r) override;
  void OnApplied(std::span<const paxos::AppliedInstance> applied) override;
  void ServeFetch(paxos::FetchToServe f) override;
  void OnLostLeadership() override;
  void OnSnapshotPoint(const paxos::AppliedSnapshot& s) override;
  void OnNeedSnapshot(NodeId peer, Instance) override {
    need_snapshot = true;
    snapshot_peer = peer;
  }

  bool need_snapshot = false;
  NodeId snapshot_peer{};
  std::vector<paxos::Entry> written;  // entries of the Readies drained, for the checker

 private:
  Simulation* sim_;
  uint32_t index_;
};

struct Node {
  NodeId id{};
  bool learner = false;              // a non-voting member
  bool spare = false;                // starts outside the cluster, with only a seed list
  bool wiped = false;                // restarts with an empty disk: probes before voting
  bool faulty = false;               // its disk has faults (a minority of nodes per seed)
  bool history_lost = false;         // quarantined once: it had a history (see data_dir.h)
  // Lost its disk when the cluster had chosen up to here: recovering until
  // it has applied past it and votes again (or, not a voter, has caught up).
  Instance recovering_past{};
  SimDisk disk;                      // survives crashes: what was synced, and more
  std::unique_ptr<Replica> replica;  // volatile: gone on crash
  std::unique_ptr<SimHost> host;
  std::unique_ptr<node::NodeLoop> loop;
  bool up = true;
  uint64_t paused_until = 0;  // a stalled process (GC, swap, SIGSTOP): it hears nothing until then
  uint64_t incarnation = 0;  // counts crashes
  std::map<MsgKey, uint32_t> waiting;        // publish -> client awaiting the answer
  // What this node vouched for since its disk was last emptied: the highest
  // ballot promised or accepted, and each accepted (instance -> ballot). A
  // disk that opens without them, with nothing reported damaged, lost a vote.
  Ballot vouched_ballot{};
  Ballot max_promised{};  // (8) a promise never goes down (until the disk is emptied)
  std::map<Instance, Ballot> vouched;
  std::vector<MsgKey> stream;                // this node's delivered stream, by offset
};

struct Client {
  ProducerId producer{};
  uint64_t next_sequence = 1;
  uint64_t budget = 0;                         // new messages still to publish
  std::map<uint64_t, std::string> unacked;     // sequence -> payload
  uint32_t target = 0;                         // node it believes is the leader
  uint64_t last_send = 0;
  bool resend = false;                         // resend every unacked message
  uint64_t heal_sequence = 0;                  // first sequence published after healing
};

class Simulation {
 public:
  explicit Simulation(const SimOptions& o) : opt_(o), rng_(o.seed * 0x2545F4914F6CDD1Dull + 7) {}
  SimResult Run();

 private:
  friend class SimHost;
  // --- world ---
  void Schedule(Event e);
  void StartNode(uint32_t i);
  void CrashNode(uint32_t i);
  void HandleReady(uint32_t i);
  void CheckVotes(uint32_t i, const paxos::Ready& r);
  void CheckSend(uint32_t i, const Message& m);
  void ServeOrLater(uint32_t i, paxos::FetchToServe f);
  void ServeFetch(Node& n, paxos::FetchToServe f);
  bool Blocked(uint32_t from, uint32_t to) const { return blocked_[from][to]; }
  void Partition();
  void InjectDiskFault(uint32_t i);
  void ReadHistory();
  void SendPeer(const Message& m, uint64_t now);
  void DeliverMessage(const Event& e);
  void ClientAct(uint32_t c);
  void ClientAck(const Event& e);
  void InjectFault();
  void InstallSnapshot(uint32_t i, NodeId suggested);
  void OnSnapshot(uint32_t i, const paxos::AppliedSnapshot& snapshot);
  void HealAll();
  void Reconfigure();
  bool ProposeChange(uint32_t leader);
  uint32_t IndexOf(NodeId id) const { return id.value() - 1; }

  // --- invariants ---
  void OnApplied(uint32_t i, const paxos::AppliedInstance& a);
  void CheckChosen(Instance instance, const paxos::ValuePtr& value, const std::string& how);
  void OnSaved(const paxos::Entry& e);
  // The voter sets an instance may be governed by, as far as the checker
  // knows: the configuration of the last configuration entry known chosen
  // below it, and of every configuration entry proposed between that one
  // and it (one of which may turn out chosen). "Chosen" needs a majority of
  // each: never a false alarm, whatever the checker does not know yet.
  std::vector<std::vector<NodeId>> VoterSetsFor(Instance instance) const;
  void Violation(const std::string& what);
  void CheckEnd();
  bool AllDelivered() const;

  void Trace(const std::string& s) {
    if (opt_.trace) *opt_.trace << "t=" << now_ << " " << s << "\n";
  }

  SimOptions opt_;
  Rng rng_;
  paxos::Config base_config_;
  std::vector<Node> nodes_;
  std::vector<Client> clients_;
  std::vector<std::unique_ptr<Event>> events_;  // a min-heap on (time, seq)
  uint64_t now_ = 0;
  uint64_t event_seq_ = 0;
  bool faults_on_ = true;
  bool stop_ = false;
  bool probe_acked_ = false;  // (5) a message published after healing was acked

  // Seeded network and fault mix (swarm testing: each seed draws its own).
  double loss_ = 0, duplicate_ = 0, crash_mid_persist_ = 0;
  uint64_t delay_max_ = 1;
  uint64_t fault_every_ = 0;
  std::vector<uint64_t> tick_units_;           // per node: clock-rate skew
  std::vector<std::vector<bool>> blocked_;     // [from][to]: the link drops everything
  bool disk_faults_ = false;
  DiskFaults disk_mix_{};
  double rot_ = 0;                              // share of faults that damage a faulty disk
  double pause_ = 0;                            // share of faults that pause a node

  // Checker state.
  std::map<Instance, paxos::ValuePtr> chosen_;          // (1)
  std::map<Instance, Ballot> chosen_ballot_;            // (1) the lowest ballot it was chosen at
  std::vector<MsgKey> canonical_;                       // (2) the agreed stream
  std::map<MsgKey, uint64_t> canonical_offset_;         // (3) no duplicates
  // (2) the stream's chain after each instance, as the first node to apply
  // it computed it: every other node must compute the same.
  std::map<paxos::Instance, ChainValue> chain_after_;
  std::map<MsgKey, std::string> published_;             // (3) every delivered was published
  std::map<MsgKey, uint64_t> acked_;                    // (4) acked -> offset
  std::map<Instance, paxos::AppliedSnapshot> snapshots_; // (6) equal at equal points
  uint64_t keep_after_snapshot_ = 0;                     // instances kept behind one
  uint32_t voters_ = 0;
  bool wipes_ = false;
  // Membership changes (a swarm choice per seed): spare nodes join, learners
  // are promoted, voters (the leader too) are removed, during the faults.
  bool reconfigure_ = false;
  uint64_t reconfigure_every_ = 0;
  uint64_t changes_ = 0;  // configuration entries chosen
  paxos::Membership bootstrap_;
  std::map<Instance, paxos::Membership> configs_;  // chosen configuration entries
  std::multimap<Instance, paxos::Membership> proposed_configs_;
  std::set<NodeId> ever_member_;  // ids are never reused
  // (1) every write of an entry, by instance and ballot: who accepted it
  // (kept across lost disks: a vote once cast counted).
  std::map<Instance, std::map<Ballot, std::set<NodeId>>> votes_;
  SimResult result_;
};

void Simulation::Schedule(Event e) {
  e.seq = event_seq_++;
  events_.push_back(std::make_unique<Event>(std::move(e)));
  std::push_heap(events_.begin(), events_.end(), EventLater{});
}

void SimHost::Send(const Message& m) {
  sim_->CheckSend(index_, m);
  sim_->SendPeer(m, sim_->now_);
}
void SimHost::OnReady(const paxos::Ready& r) {
  sim_->CheckVotes(index_, r);
  written.insert(written.end(), r.entries.begin(), r.entries.end());
}
void SimHost::OnApplied(std::span<const paxos::AppliedInstance> applied) {
  for (const paxos::AppliedInstance& a : applied) sim_->OnApplied(index_, a);
}
void SimHost::ServeFetch(paxos::FetchToServe f) { sim_->ServeOrLater(index_, std::move(f)); }
void SimHost::OnLostLeadership() { sim_->nodes_[index_].waiting.clear(); }
void SimHost::OnSnapshotPoint(const paxos::AppliedSnapshot& s) { sim_->OnSnapshot(index_, s); }

void Simulation::StartNode(uint32_t i) {
  Node& n = nodes_[i];
  // As the broker does (broker/data_dir.h): a disk whose state fails its
  // checks at open is quarantined, and the node rejoins as after a lost
  // disk, knowing it had a history.
  const std::string damage = n.disk.Open();
  if (!damage.empty()) {
    Trace("node " + std::to_string(n.id.value()) + " quarantines its disk: " + damage);
    n.disk.Wipe();
    n.wiped = true;
    n.history_lost = true;
    n.stream.clear();
    n.vouched_ballot = Ballot{};
    n.max_promised = Ballot{};
    n.vouched.clear();
  } else {
    // (8) nothing a node was told is durable is lost unless its disk says so.
    if (!n.disk.lost_at_crash().empty()) {
      Violation("node " + std::to_string(n.id.value()) + " reopened its disk without " +
                n.disk.lost_at_crash() + ", and nothing said so");
    }
    const paxos::HardState h = n.disk.LoadHardState();
    if (h.promised < n.vouched_ballot) {
      Violation("node " + std::to_string(n.id.value()) + " reopened with promise " +
                paxos::ToString(h.promised) + " after vouching for ballot " +
                paxos::ToString(n.vouched_ballot));
    }
    for (const auto& [instance, ballot] : n.vouched) {
      if (!n.disk.Holds(instance, ballot)) {
        Violation("node " + std::to_string(n.id.value()) + " reopened without instance " +
                  std::to_string(instance.value()) + " it accepted at " +
                  paxos::ToString(ballot));
        break;
      }
    }
  }
  paxos::Config c = base_config_;
  c.id = n.id;
  c.seed = rng_.Next();
  if (n.spare) {
    // Joins a running cluster: it knows only where to pull the log from.
    c.seeds = c.voters;
    c.voters.clear();
  }
  // A disk that is still empty probes. A wiped node that crashed before its
  // first write restarts empty and probes again.
  if (n.wiped && !n.disk.Empty()) n.wiped = false;
  c.probe_before_voting = n.wiped;
  c.history_lost = n.history_lost;
  n.replica = std::make_unique<Replica>(c, n.disk);
  n.host = std::make_unique<SimHost>(this, i);
  node::NodeLoop::Options lo;
  lo.bug = opt_.bug;
  n.loop = std::make_unique<node::NodeLoop>(*n.replica, n.disk, *n.host, *n.host, lo);
  n.up = true;
  n.paused_until = 0;
  n.waiting.clear();
  // A restarted replica rebuilt its applied state from the durable log; what
  // it delivered before the crash must be exactly that prefix.
  const uint64_t restored = n.replica->applied_state().next_offset().value();
  if (restored > n.stream.size()) {
    Violation("node " + std::to_string(n.id.value()) + " restored " + std::to_string(restored) +
              " offsets but had delivered only " + std::to_string(n.stream.size()));
  }
  n.stream.resize(std::min<uint64_t>(restored, n.stream.size()));
}

void Simulation::CrashNode(uint32_t i) {
  Node& n = nodes_[i];
  n.up = false;
  ++n.incarnation;
  n.loop.reset();
  n.replica.reset();
  n.host.reset();
  n.disk.Crash();
  n.waiting.clear();
  ++result_.faults;
  Trace("crash node " + std::to_string(n.id.value()));
}

void Simulation::SendPeer(const Message& m, uint64_t now) {
  ++result_.messages_sent;
  if (faults_on_ && rng_.Chance(loss_)) return;
  const int copies = faults_on_ && rng_.Chance(duplicate_) ? 2 : 1;
  for (int k = 0; k < copies; ++k) {
    Event e;
    e.kind = Event::Kind::kDeliver;
    e.time = now + 1 + rng_.Uniform(delay_max_);
    e.target = IndexOf(m.to);
    e.message = m;
    Schedule(std::move(e));
  }
}

void Simulation::HandleReady(uint32_t i) {
  Node& n = nodes_[i];
  if (!n.up) return;
  // The broker's own loop and durability policy (node/node_loop.h), on a
  // disk that loses what was not synced at a crash.
  n.host->written.clear();
  const Status s = n.loop->Drain();
  if (!s.ok()) {
    // A crash in the middle of a write: nothing that depends on it left.
    Trace("node " + std::to_string(n.id.value()) + ": " + s.message());
    CrashNode(i);
    return;
  }
  for (const paxos::Entry& e : std::exchange(n.host->written, {})) {
    votes_[e.instance][e.ballot].insert(n.id);
    OnSaved(e);
  }
  n.max_promised = std::max(n.max_promised, n.disk.ClaimedHardState().promised);
  // (8) the lost-disk mark is durable as soon as it is set: after a crash
  // the node must still know it may not vote.
  if (n.replica->status().catching_up &&
      n.disk.ClaimedHardState().catch_up_until == paxos::kNoInstance) {
    Violation("node " + std::to_string(n.id.value()) +
              " is catching up after a lost disk, but its disk does not say so");
  }
  if (n.host->need_snapshot) {
    n.host->need_snapshot = false;
    InstallSnapshot(i, n.host->snapshot_peer);
  }
}

void Simulation::CheckVotes(uint32_t i, const paxos::Ready& r) {
  Node& n = nodes_[i];
  // (8) P1a: a promise only rises.
  if (r.hard_state.promised < n.max_promised) {
    Violation("node " + std::to_string(n.id.value()) + " lowered its promise from " +
              paxos::ToString(n.max_promised) + " to " + paxos::ToString(r.hard_state.promised));
  }
  // (7) a learner, a node the membership it knows does not make a voter,
  // or a voter catching up after a lost disk, never votes.
  const bool voter = n.replica->status().voter;
  if (!n.learner && voter && !n.replica->status().catching_up) return;
  for (const auto* list : {&r.messages, &r.messages_after_persist}) {
    for (const Message& m : *list) {
      if (!n.learner && !voter && m.type == paxos::MessageType::kAccepted) {
        // Accepted as a voter of the instances' configuration, then applied
        // the entry that removed it, in the same step: a vote it could cast.
        bool member = false;
        for (Instance x = m.instance; x <= m.instance_last && !member; x = x.next()) {
          for (const std::vector<NodeId>& set : VoterSetsFor(x)) {
            member |= std::find(set.begin(), set.end(), n.id) != set.end();
          }
        }
        if (member && !n.replica->status().catching_up) continue;
      }
      if (m.type == paxos::MessageType::kPromise || m.type == paxos::MessageType::kAccepted ||
          m.type == paxos::MessageType::kPreVoteGrant || m.type == paxos::MessageType::kPrepare) {
        Violation("node " + std::to_string(n.id.value()) + " voted (" + paxos::ToString(m.type) +
                  ") while " +
                  (n.learner || !voter ? "not a voter" : "catching up after a lost disk"));
      }
    }
  }
}

void Simulation::CheckSend(uint32_t i, const Message& m) {
  Node& n = nodes_[i];
  const std::string who = "node " + std::to_string(n.id.value());
  if (m.type == paxos::MessageType::kPromise || m.type == paxos::MessageType::kAccepted) {
    // (8) a vote leaves only when the disk (as far as it told the node)
    // holds what it vouches for.
    const bool accepted = m.type == paxos::MessageType::kAccepted;
    // P1a: an acceptor accepts nothing below its promise.
    if (accepted && m.ballot < n.replica->status().promised) {
      Violation(who + " accepted at " + paxos::ToString(m.ballot) + " below its promise " +
                paxos::ToString(n.replica->status().promised));
    }
    if (!n.disk.Backs(m.ballot, accepted ? m.instance : paxos::kNoInstance,
                      accepted ? m.instance_last : paxos::kNoInstance, n.replica->chosen())) {
      Violation(who + " sent " + paxos::ToString(m.type) + " at " + paxos::ToString(m.ballot) +
                " for instances " + std::to_string(m.instance.value()) + ".." +
                std::to_string(m.instance_last.value()) + " (chosen " +
                std::to_string(n.replica->chosen().value()) + ", durable promise " +
                paxos::ToString(n.disk.ClaimedHardState().promised) +
                ") that its disk does not hold durably");
    }
    n.vouched_ballot = std::max(n.vouched_ballot, m.ballot);
    if (accepted) {
      for (Instance x = m.instance; x <= m.instance_last; x = x.next()) {
        Ballot& b = n.vouched[x];
        b = std::max(b, m.ballot);
      }
    }
  }
  if (m.type == paxos::MessageType::kFetchReply || m.type == paxos::MessageType::kPromise) {
    // (1) what a node serves as chosen is the chosen value (a promise's
    // entries up to its chosen frontier are chosen values too).
    for (const paxos::Entry& e : m.entries) {
      if (m.type == paxos::MessageType::kPromise && e.instance > m.chosen) continue;
      auto c = chosen_.find(e.instance);
      if (c != chosen_.end() && !(*c->second == *e.value)) {
        Violation(who + " served a value other than the chosen one for instance " +
                  std::to_string(e.instance.value()));
      }
    }
  }
  if (m.type == paxos::MessageType::kAccept) {
    for (const paxos::Entry& e : m.entries) {
      if (e.value->kind != paxos::ValueKind::kConfig) continue;
      auto [lo, hi] = proposed_configs_.equal_range(e.instance);
      bool known = false;
      for (auto it = lo; it != hi; ++it) known |= it->second == e.value->membership;
      if (!known) proposed_configs_.emplace(e.instance, e.value->membership);
    }
    // (1) a leader proposes for a chosen instance only its chosen value.
    // (P2b: at a ballot above the one it was chosen at; an older leader
    // may still propose anything, and fail.)
    for (const paxos::Entry& e : m.entries) {
      auto c = chosen_.find(e.instance);
      auto at = chosen_ballot_.find(e.instance);
      if (c != chosen_.end() && at != chosen_ballot_.end() && m.ballot > at->second &&
          !(*c->second == *e.value)) {
        Violation(who + " proposed a value other than the chosen one for instance " +
                  std::to_string(e.instance.value()));
      }
    }
  }
}

void Simulation::ServeOrLater(uint32_t i, paxos::FetchToServe f) {
  Node& n = nodes_[i];
  if (rng_.Chance(0.5)) {
    ServeFetch(n, std::move(f));
    return;
  }
  // Later, as a broker's catch-up thread does: the store may have been
  // truncated meanwhile, and the reply overtaken by later messages.
  Event later;
  later.kind = Event::Kind::kServe;
  later.target = i;
  later.time = now_ + 1 + rng_.Uniform(3 * kTickUnits);
  later.fetch = std::move(f);
  later.incarnation = n.incarnation;
  Schedule(std::move(later));
}

// What a broker's catch-up server does (broker/catchup_server.h): the stored
// entries the core named, within the reply limits, up to the first one that
// cannot be read (reported to the core).
void Simulation::ServeFetch(Node& n, paxos::FetchToServe f) {
  uint64_t bytes = 0;
  for (Instance x = f.reply.instance; x <= f.last; x = x.next()) {
    if (f.reply.entries.size() >= base_config_.fetch_entries_max ||
        bytes >= base_config_.fetch_bytes_max) {
      break;
    }
    paxos::Entry e;
    const paxos::StoreCode code = n.disk.Get(x, &e);
    if (code == paxos::StoreCode::kNotFound) break;
    if (code != paxos::StoreCode::kOk) {
      n.loop->ReportUnreadable(x);
      break;
    }
    bytes += e.value->ByteSize();
    f.reply.entries.push_back(std::move(e));
  }
  SendPeer(f.reply, now_);
}

void Simulation::OnSnapshot(uint32_t i, const paxos::AppliedSnapshot& snapshot) {
  Node& n = nodes_[i];
  // (6) snapshots at the same point are identical on every replica, which
  // is what lets a transfer resume from another peer.
  auto [it, fresh] = snapshots_.try_emplace(snapshot.instance, snapshot);
  if (!fresh && !(it->second == snapshot)) {
    Violation("node " + std::to_string(n.id.value()) + " took a different snapshot at instance " +
              std::to_string(snapshot.instance.value()));
  }
  n.disk.SaveSnapshot(snapshot);
  const uint64_t first =
      snapshot.instance.value() + 1 - std::min(snapshot.instance.value(), keep_after_snapshot_);
  n.disk.Truncate(Instance(std::max<uint64_t>(first, 1)));
}

void Simulation::InstallSnapshot(uint32_t i, NodeId suggested) {
  // The host's transfer, done at once: the newest snapshot of a reachable
  // peer (the suggested one first) that is ahead of this node.
  Node& n = nodes_[i];
  std::optional<paxos::AppliedSnapshot> best;
  for (uint32_t k = 0; k < nodes_.size(); ++k) {
    const Node& p = nodes_[k];
    if (k == i || !p.up || Blocked(k, i) || Blocked(i, k)) continue;
    std::optional<paxos::AppliedSnapshot> s = p.disk.LoadSnapshot();
    if (!s || s->instance <= n.replica->applied_state().applied()) continue;
    if (!best || p.id == suggested || s->instance > best->instance) best = s;
  }
  if (!best) {
    Trace("node " + std::to_string(n.id.value()) + " needs a snapshot: no reachable peer has one");
    return;
  }
  Trace("node " + std::to_string(n.id.value()) + " installs snapshot at instance " +
        std::to_string(best->instance.value()));
  const uint64_t next = best->next_offset.value();
  if (next > canonical_.size()) {
    Violation("a snapshot holds offsets nobody delivered");
    return;
  }
  for (uint64_t o = 0; o < std::min<uint64_t>(next, n.stream.size()); ++o) {
    if (n.stream[o] != canonical_[o]) Violation("stream differs before a snapshot install");
  }
  if (n.stream.size() < next) n.stream.assign(canonical_.begin(), canonical_.begin() + next);
  n.disk.InstallSnapshot(*best);
  n.replica->InstallSnapshot(*best);
  HandleReady(i);
}

void Simulation::DeliverMessage(const Event& e) {
  Node& n = nodes_[e.target];
  if (!n.up || Blocked(IndexOf(e.message.from), e.target)) return;
  if (opt_.trace) {
    Trace("deliver " + std::string(paxos::ToString(e.message.type)) + " " +
          std::to_string(e.message.from.value()) + "->" + std::to_string(e.message.to.value()) +
          " b=" + paxos::ToString(e.message.ballot) +
          (e.message.promised.IsZero() ? "" : " p=" + paxos::ToString(e.message.promised)) +
          " i=" + std::to_string(e.message.instance.value()) + ".." +
          std::to_string(e.message.instance_last.value()) +
          " c=" + std::to_string(e.message.chosen.value()) +
          " n=" + std::to_string(e.message.entries.size()));
  }
  n.replica->Step(e.message);
  HandleReady(e.target);
}

void Simulation::CheckChosen(Instance instance, const paxos::ValuePtr& value,
                             const std::string& how) {
  auto [it, fresh] = chosen_.try_emplace(instance, value);
  if (!fresh && !(*it->second == *value)) {
    Violation(how + " a different value for instance " + std::to_string(instance.value()) +
              " than the one chosen before");
  }
}

void Simulation::OnSaved(const paxos::Entry& e) {
  // (1) The Paxos definition of chosen: a majority of acceptors durably
  // accepted one value at one ballot. Checked on the stores themselves, so a
  // value chosen but never learned still counts.
  std::set<NodeId> accepted;
  for (const Node& n : nodes_) {
    paxos::Entry stored;
    if (n.disk.Peek(e.instance, &stored) != paxos::StoreCode::kOk) continue;
    if (stored.ballot != e.ballot) continue;
    if (!(*stored.value == *e.value)) {
      Violation("two values accepted at ballot " + paxos::ToString(e.ballot) + " for instance " +
                std::to_string(e.instance.value()));
      return;
    }
    accepted.insert(n.id);
  }
  bool majority = true;
  for (const std::vector<NodeId>& voters : VoterSetsFor(e.instance)) {
    size_t votes = 0;
    for (NodeId v : voters) votes += accepted.count(v);
    majority &= votes >= paxos::QuorumSize(voters.size());
  }
  if (majority) {
    CheckChosen(e.instance, e.value, "a majority accepted");
    auto [at, fresh] = chosen_ballot_.try_emplace(e.instance, e.ballot);
    if (!fresh) at->second = std::min(at->second, e.ballot);
  }
}

std::vector<std::vector<NodeId>> Simulation::VoterSetsFor(Instance instance) const {
  std::vector<std::vector<NodeId>> sets;
  Instance base{};
  auto known = configs_.lower_bound(instance);
  if (known == configs_.begin()) {
    sets.push_back(bootstrap_.Voters());
  } else {
    --known;
    base = known->first;
    sets.push_back(known->second.Voters());
  }
  for (auto it = proposed_configs_.upper_bound(base);
       it != proposed_configs_.end() && it->first < instance; ++it) {
    sets.push_back(it->second.Voters());
  }
  return sets;
}

void Simulation::OnApplied(uint32_t i, const paxos::AppliedInstance& a) {
  Node& n = nodes_[i];
  const std::string who = "node " + std::to_string(n.id.value());
  // (1) one value per instance, whoever learns it; and the first node to
  // learn it learns what a majority of the voters of the instance's own
  // configuration (the log before it decides it) accepted at one ballot.
  if (!chosen_.count(a.instance)) {
    auto known = configs_.lower_bound(a.instance);
    const std::vector<NodeId> voters =
        known == configs_.begin() ? bootstrap_.Voters() : std::prev(known)->second.Voters();
    bool majority = false;
    for (const auto& [ballot, nodes] : votes_[a.instance]) {
      size_t count = 0;
      for (NodeId v : voters) count += nodes.count(v);
      majority |= count >= paxos::QuorumSize(voters.size());
    }
    if (!majority) {
      Violation(who + " learned instance " + std::to_string(a.instance.value()) +
                " chosen without a majority of its configuration's " +
                std::to_string(voters.size()) + " voters accepting it");
    }
  }
  CheckChosen(a.instance, a.value, who + " learned");
  if (a.value->kind == paxos::ValueKind::kConfig) {
    if (configs_.emplace(a.instance, a.value->membership).second) {
      ++changes_;
      for (const paxos::Member& m : a.value->membership.members) ever_member_.insert(m.id);
      Trace("configuration at instance " + std::to_string(a.instance.value()) + ": " +
            std::to_string(a.value->membership.Voters().size()) + " voters, " +
            std::to_string(a.value->membership.members.size()) + " members");
    }
    // (1) the core's membership is the one the log decides.
    if (!n.replica->membership().empty() && a.instance == n.replica->applied_state().applied() &&
        !(n.replica->membership() == a.value->membership)) {
      Violation(who + " did not take up the configuration it applied at instance " +
                std::to_string(a.instance.value()));
    }
  }
  // (2) the stream's hash chain is part of the applied state: the same on
  // every node after the same instance, and what the instance's appended
  // messages hash to (recomputed here: a node may have taken a chain hint).
  if (auto [c, first] = chain_after_.try_emplace(a.instance, a.chain);
      !first && c->second != a.chain) {
    Violation(who + " computed another chain after instance " + std::to_string(a.instance.value()) +
              ": " + a.chain.Hex() + " against " + c->second.Hex());
  }
  if (a.appended > 0) {
    ChainStep step(a.chain_before, a.instance.value(), a.first_offset.value(), a.appended);
    for (size_t k = 0; k < a.results.size(); ++k) {
      if (a.results[k].outcome != PublishOutcome::kAppended) continue;
      const ClientMessage& m = a.value->messages[k];
      step.Add(m.producer.value(), m.sequence, m.key.view(), m.payload.view());
    }
    if (step.Finish() != a.chain) {
      Violation(who + " holds a chain after instance " + std::to_string(a.instance.value()) +
                " that its messages do not hash to");
    }
  }
  if (n.replica->status().chain_hint_mismatches != 0) {
    Violation(who + " heard a chain hint that disagrees with its own hash");
  }
  if (a.value->kind != paxos::ValueKind::kBatch) return;
  for (size_t k = 0; k < a.results.size(); ++k) {
    const paxos::MessageResult& r = a.results[k];
    const ClientMessage& m = a.value->messages[k];
    const MsgKey key{r.producer.value(), r.sequence};
    if (r.outcome == PublishOutcome::kAppended) {
      // (2) streams are prefixes of one another: same offset, same message.
      if (r.offset.value() != n.stream.size()) {
        Violation(who + " appended offset " + std::to_string(r.offset.value()) +
                  " after delivering " + std::to_string(n.stream.size()));
        return;
      }
      n.stream.push_back(key);
      const uint64_t o = r.offset.value();
      if (o < canonical_.size()) {
        if (canonical_[o] != key) {
          Violation(who + " delivered a different message at offset " + std::to_string(o));
        }
      } else {
        // (3) never delivered twice; and only what was published.
        auto [c, inserted] = canonical_offset_.try_emplace(key, o);
        if (!inserted) {
          Violation("message " + std::to_string(key.first) + "/" + std::to_string(key.second) +
                    " delivered twice, at offsets " + std::to_string(c->second) + " and " +
                    std::to_string(o));
        }
        auto p = published_.find(key);
        if (p == published_.end() || p->second != m.payload) {
          Violation("offset " + std::to_string(o) + " holds a message nobody published");
        }
        canonical_.push_back(key);
      }
    }
    // Answer the client waiting on this node, over the (lossy) network.
    auto w = n.waiting.find(key);
    if (w != n.waiting.end()) {
      Event e;
      e.kind = Event::Kind::kAck;
      e.time = now_ + 1 + rng_.Uniform(delay_max_);
      e.target = w->second;
      e.key = key;
      e.outcome = r.outcome;
      e.offset_known = r.offset_known;
      e.offset = r.offset.value();
      n.waiting.erase(w);
      if (!(faults_on_ && rng_.Chance(loss_))) Schedule(std::move(e));
    }
  }
}

void Simulation::ClientAck(const Event& e) {
  Client& c = clients_[e.target];
  if (opt_.trace) {
    Trace("client " + std::to_string(e.target) + " answer " + std::to_string(e.key.second) + " " +
          paxos::ToString(e.outcome) + " offset " + std::to_string(e.offset));
  }
  if (e.outcome == PublishOutcome::kAppended || e.outcome == PublishOutcome::kDuplicate) {
    if (!e.offset_known) return;  // a duplicate too old to remember: keep retrying
    auto [it, fresh] = acked_.try_emplace(e.key, e.offset);
    if (!fresh && it->second != e.offset) {
      Violation("message " + std::to_string(e.key.first) + "/" + std::to_string(e.key.second) +
                " acknowledged at offsets " + std::to_string(it->second) + " and " +
                std::to_string(e.offset));
    }
    auto o = canonical_offset_.find(e.key);
    if (o == canonical_offset_.end() || o->second != e.offset) {
      Violation("acknowledged offset " + std::to_string(e.offset) + " does not hold the message");
    }
    if (c.unacked.erase(e.key.second)) ++result_.acknowledged;
    if (!faults_on_ && e.key.second >= c.heal_sequence) probe_acked_ = true;
  } else {
    // Out of sequence or from a deposed leader: resend everything unacked,
    // in order, so sequences arrive contiguous.
    c.resend = true;
  }
}

void Simulation::ClientAct(uint32_t ci) {
  Client& c = clients_[ci];
  Event next;
  next.kind = Event::Kind::kClient;
  next.target = ci;
  next.time = now_ + kTickUnits;
  Schedule(std::move(next));

  std::vector<ClientMessage> batch;
  if (c.resend || (!c.unacked.empty() && now_ - c.last_send >= kClientRetryUnits)) {
    if (!c.resend) c.target = static_cast<uint32_t>(rng_.Uniform(nodes_.size()));
    for (const auto& [seq, payload] : c.unacked) {
      batch.push_back(ClientMessage{c.producer, seq, "", payload});
    }
  }
  // New messages, up to the window.
  while (c.budget > 0 && c.unacked.size() < kClientWindow && batch.size() < kClientWindow) {
    const uint64_t seq = c.next_sequence++;
    std::string payload = "p" + std::to_string(c.producer.value()) + "-" + std::to_string(seq) +
                          "-" + std::to_string(rng_.Uniform(1000000));
    published_[{c.producer.value(), seq}] = payload;
    c.unacked[seq] = payload;
    batch.push_back(ClientMessage{c.producer, seq, "", std::move(payload)});
    --c.budget;
    ++result_.published;
  }
  if (batch.empty()) return;
  const uint32_t ni = c.target;
  Node& n = nodes_[ni];
  if (!n.up || n.paused_until > now_) {
    c.target = static_cast<uint32_t>(rng_.Uniform(nodes_.size()));
    c.resend = true;
    return;
  }
  std::vector<MsgKey> keys;
  for (const ClientMessage& m : batch) keys.push_back({m.producer.value(), m.sequence});
  if (opt_.trace) {
    Trace("client " + std::to_string(ci) + " publishes " + std::to_string(keys.front().second) +
          ".." + std::to_string(keys.back().second) + " to node " + std::to_string(ni + 1));
  }
  const paxos::ProposeResult r = n.replica->Propose(std::move(batch));
  switch (r.code) {
    case paxos::ProposeResult::Code::kOk:
      for (const MsgKey& k : keys) n.waiting[k] = ci;
      c.resend = false;
      c.last_send = now_;
      break;
    case paxos::ProposeResult::Code::kNotLeader:
      // Redirect: next time, go where the broker pointed.
      c.target = r.leader != paxos::kNoNode ? IndexOf(r.leader)
                                            : static_cast<uint32_t>(rng_.Uniform(nodes_.size()));
      c.resend = true;
      break;
    case paxos::ProposeResult::Code::kBusy:
      c.resend = true;
      break;
  }
  HandleReady(ni);
}

// A subscriber replaying history from every running node: what a broker
// serves from its store up to its chosen mark must be the chosen value (a
// record that fails its check is not served; the node repairs it). No
// randomness, so no seed's schedule changes.
void Simulation::ReadHistory() {
  for (Node& n : nodes_) {
    if (!n.up) continue;
    const Instance chosen = n.replica->chosen();
    if (chosen == paxos::kNoInstance) continue;
    const uint64_t newest = chosen.value() > 16 ? chosen.value() - 16 : 1;
    const uint64_t from = std::max<uint64_t>(n.disk.FirstInstance().value(), newest);
    for (Instance x(from); x <= chosen; x = x.next()) {
      paxos::Entry e;
      if (n.disk.Get(x, &e) != paxos::StoreCode::kOk) continue;
      auto c = chosen_.find(x);
      if (c != chosen_.end() && !(*c->second == *e.value)) {
        Violation("node " + std::to_string(n.id.value()) + " read back a value other than the " +
                  "chosen one for instance " + std::to_string(x.value()) + " from its store");
        return;
      }
    }
  }
}

void Simulation::InjectFault() {
  ReadHistory();
  Event next;
  next.kind = Event::Kind::kFault;
  next.time = now_ + fault_every_ / 2 + rng_.Uniform(fault_every_);
  Schedule(std::move(next));
  if (!faults_on_) return;
  uint32_t i = static_cast<uint32_t>(rng_.Uniform(nodes_.size()));
  // Faults favour the nodes with faulty disks: what they lost shows at a
  // restart.
  if (disk_faults_ && !nodes_[i].faulty && rng_.Chance(0.3)) {
    for (uint32_t k = 0; k < nodes_.size(); ++k) {
      if (nodes_[k].faulty) i = k;
    }
  }
  if (nodes_[i].faulty && rng_.Chance(rot_)) {
    InjectDiskFault(i);
    return;
  }
  if (rng_.Chance(pause_)) {
    // Pause a node, the leader more often than not: it comes back a stale
    // leader, with accepts and proposals from before.
    for (uint32_t k = 0; k < nodes_.size() && rng_.Chance(0.6); ++k) {
      if (nodes_[k].up && nodes_[k].replica->role() == paxos::Role::kLeader) i = k;
    }
    nodes_[i].paused_until =
        now_ + (1 + rng_.Uniform(5)) * base_config_.election_timeout_ticks * kTickUnits;
    ++result_.faults;
    Trace("pause node " + std::to_string(i + 1) + " until t=" +
          std::to_string(nodes_[i].paused_until));
    return;
  }
  switch (rng_.Uniform(wipes_ ? 5 : 4)) {
    case 0:  // crash
      if (nodes_[i].up) CrashNode(i);
      break;
    case 4: {  // lose the disk: crash, wipe, restart empty (one node at a time)
      bool other_wiped = false;
      for (Node& o : nodes_) {
        // Lost and not yet caught up, or lost and nothing written yet.
        other_wiped |= o.disk.LoadHardState().catch_up_until != paxos::kNoInstance ||
                       (o.wiped && o.disk.Empty());
        // A node that joined as a spare knows it is a voter only once it has
        // fetched the entry that made it one: until it has caught up past
        // where it lost its disk, it may still have to rejoin.
        if (o.recovering_past != paxos::kNoInstance) {
          if (o.up && !o.replica->status().catching_up && o.replica->chosen() > o.recovering_past) {
            o.recovering_past = paxos::kNoInstance;
          } else {
            other_wiped = true;
          }
        }
      }
      // With disk faults, only a faulty node loses its disk: the faults
      // stay on a minority.
      if (other_wiped || nodes_[i].learner || (disk_faults_ && !nodes_[i].faulty)) break;
      if (nodes_[i].up) CrashNode(i);
      Trace("wipe node " + std::to_string(i + 1));
      for (const Node& o : nodes_) {
        if (o.up)
          nodes_[i].recovering_past = std::max(nodes_[i].recovering_past, o.replica->chosen());
      }
      nodes_[i].disk.Wipe();
      nodes_[i].stream.clear();
      nodes_[i].vouched_ballot = Ballot{};
      nodes_[i].max_promised = Ballot{};
      nodes_[i].vouched.clear();
      nodes_[i].wiped = true;
      StartNode(i);
      break;
    }
    case 1:  // restart
      if (!nodes_[i].up) {
        StartNode(i);
        ++result_.faults;
        Trace("restart node " + std::to_string(i + 1));
      }
      break;
    case 2:
      Partition();
      ++result_.faults;
      break;
    case 3:  // heal the partition
      for (auto& row : blocked_) row.assign(row.size(), false);
      Trace("heal partition");
      break;
  }
}

void Simulation::InjectDiskFault(uint32_t i) {
  Node& n = nodes_[i];
  ++result_.faults;
  if (rng_.Chance(0.5)) {
    // Bit rot in a stored record, found when it is read.
    Trace("disk fault on node " + std::to_string(n.id.value()) + ": a record rots");
    n.disk.RotRecord(rng_.Next());
    return;
  }
  // Rot in the hard state: found at the next open.
  if (n.up) CrashNode(i);
  Trace("disk fault on node " + std::to_string(n.id.value()) + ": the hard state rots");
  n.disk.RotMeta();
}

void Simulation::Partition() {
  // Shapes that make duelling candidates and stale leaders common.
  const uint32_t count = static_cast<uint32_t>(nodes_.size());
  for (auto& row : blocked_) row.assign(count, false);
  std::vector<uint32_t> side(count);
  std::string shape;
  switch (rng_.Uniform(4)) {
    case 0:  // two random sides
      for (uint32_t k = 0; k < count; ++k) side[k] = static_cast<uint32_t>(rng_.Uniform(2));
      shape = "two sides";
      break;
    case 1: {  // isolate the leader (or anyone, when none leads)
      uint32_t leader = static_cast<uint32_t>(rng_.Uniform(count));
      for (uint32_t k = 0; k < count; ++k) {
        if (nodes_[k].up && nodes_[k].replica->role() == paxos::Role::kLeader) leader = k;
      }
      side[leader] = 1;
      shape = "leader " + std::to_string(leader + 1) + " isolated";
      break;
    }
    case 2: {  // a bridge: two sides that only one node hears both of
      const uint32_t bridge = static_cast<uint32_t>(rng_.Uniform(count));
      for (uint32_t k = 0; k < count; ++k) side[k] = k % 2;
      for (uint32_t a = 0; a < count; ++a) {
        for (uint32_t b = 0; b < count; ++b) {
          blocked_[a][b] = a != bridge && b != bridge && side[a] != side[b];
        }
      }
      Trace("partition: node " + std::to_string(bridge + 1) + " bridges two sides");
      return;
    }
    case 3: {  // one-way links
      for (uint32_t a = 0; a < count; ++a) {
        for (uint32_t b = 0; b < count; ++b) blocked_[a][b] = a != b && rng_.Chance(0.25);
      }
      Trace("partition: one-way links");
      return;
    }
  }
  for (uint32_t a = 0; a < count; ++a) {
    for (uint32_t b = 0; b < count; ++b) blocked_[a][b] = side[a] != side[b];
  }
  Trace("partition: " + shape);
}

// The operator's membership commands, sent to the leader during the faults:
// add a spare as a learner, promote a learner, remove a voter (the leader
// too), one at a time (the core refuses a change while one is running);
// often several at once, to try that rule.
void Simulation::Reconfigure() {
  Event next;
  next.kind = Event::Kind::kReconfigure;
  next.time = now_ + reconfigure_every_ / 2 + rng_.Uniform(reconfigure_every_);
  Schedule(std::move(next));
  if (!faults_on_) return;
  for (uint32_t k = 0; k < nodes_.size(); ++k) {
    Node& n = nodes_[k];
    if (!n.up || n.paused_until > now_ || n.replica->role() != paxos::Role::kLeader) continue;
    while (ProposeChange(k) && rng_.Chance(0.5)) {
    }
    HandleReady(k);
    return;
  }
}

bool Simulation::ProposeChange(uint32_t leader) {
  Replica& r = *nodes_[leader].replica;
  const paxos::Membership& m = r.membership();
  std::vector<paxos::MembershipChange> options;
  for (const Node& n : nodes_) {
    if (n.spare && !ever_member_.count(n.id) && m.Find(n.id) == nullptr) {
      paxos::MembershipChange c;
      c.kind = paxos::MembershipChange::Kind::kAddLearner;
      c.member.id = n.id;
      c.member.peer = "sim:" + std::to_string(n.id.value());
      options.push_back(c);
    }
  }
  const std::vector<NodeId> voters = m.Voters();
  size_t faulty_voters = 0;
  for (NodeId v : voters) faulty_voters += nodes_[IndexOf(v)].faulty;
  for (const paxos::Member& member : m.members) {
    paxos::MembershipChange c;
    c.member.id = member.id;
    if (!member.voter && voters.size() < opt_.nodes + 2) {
      c.kind = paxos::MembershipChange::Kind::kPromote;
      options.push_back(c);
    } else if (member.voter && voters.size() > 3 &&
               2 * (faulty_voters + (nodes_[IndexOf(member.id)].faulty ? 0 : 1)) < voters.size()) {
      // At least three voters, and the faulty disks stay on a minority of
      // them: a voter that loses its disk rejoins through a quorum of the
      // others.
      c.kind = paxos::MembershipChange::Kind::kRemove;
      options.push_back(c);
    }
  }
  if (options.empty()) return false;
  const paxos::MembershipChange c = options[rng_.Uniform(options.size())];
  const paxos::ChangeResult res = r.ProposeChange(c);
  const char* kinds[] = {"add learner", "promote", "remove"};
  Trace(std::string("leader ") + std::to_string(leader + 1) + " " +
        kinds[static_cast<int>(c.kind)] + " " + std::to_string(c.member.id.value()) + ": " +
        paxos::ToString(res.code) +
        (res.code == paxos::ChangeResult::Code::kOk
             ? " at instance " + std::to_string(res.instance.value())
             : ""));
  return res.code == paxos::ChangeResult::Code::kOk;
}

void Simulation::HealAll() {
  faults_on_ = false;
  for (auto& row : blocked_) row.assign(row.size(), false);
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    nodes_[i].paused_until = 0;
    if (!nodes_[i].up) StartNode(i);
    // The fault model is off from here: the disk stops lying and crashing.
    nodes_[i].disk.Configure(&rng_, DiskFaults{}, opt_.bug);
  }
  Trace("heal all");
}

bool Simulation::AllDelivered() const {
  for (const Client& c : clients_) {
    if (!c.unacked.empty() || c.budget > 0) return false;
  }
  for (const Node& n : nodes_) {
    if (n.stream.size() != canonical_.size()) return false;
  }
  return true;
}

void Simulation::Violation(const std::string& what) {
  ++result_.violations;
  if (result_.first_violation.empty()) {
    result_.first_violation = "t=" + std::to_string(now_) + " step " +
                              std::to_string(result_.steps) + ": " + what;
  }
  Trace("VIOLATION " + what);
  stop_ = true;
}

void Simulation::CheckEnd() {
  // (4) every acknowledged publish is in the agreed stream, at its offset,
  // at every broker.
  for (const auto& [key, offset] : acked_) {
    if (offset >= canonical_.size() || canonical_[offset] != key) {
      Violation("acknowledged message " + std::to_string(key.first) + "/" +
                std::to_string(key.second) + " is not delivered at offset " +
                std::to_string(offset));
      return;
    }
  }
  for (const Node& n : nodes_) {
    if (n.stream.size() != canonical_.size()) {
      Violation("node " + std::to_string(n.id.value()) + " delivered " +
                std::to_string(n.stream.size()) + " of " + std::to_string(canonical_.size()) +
                " messages after healing");
      return;
    }
  }
}

SimResult Simulation::Run() {
  // The seed picks the network and the fault mix.
  const double losses[] = {0, 0.01, 0.05, 0.15};
  const double dups[] = {0, 0.02, 0.1};
  const uint64_t fault_periods[] = {20, 60, 200, 600};
  const double mid_persist[] = {0, 0.0005, 0.002};
  loss_ = losses[rng_.Uniform(4)];
  duplicate_ = dups[rng_.Uniform(3)];
  fault_every_ = fault_periods[rng_.Uniform(4)] * kTickUnits;
  crash_mid_persist_ = mid_persist[rng_.Uniform(3)];
  const uint64_t snapshot_intervals[] = {0, 8, 24};
  base_config_.snapshot_interval_instances = snapshot_intervals[rng_.Uniform(3)];
  keep_after_snapshot_ = rng_.Uniform(12);
  // Off, a bound small enough to overflow (some entries cached, some read
  // back from the store), and the broker's default.
  const uint64_t cache_bounds[] = {0, 400, 64 << 20};
  // (From the seed itself, not rng_: the other choices of a seed stay as they were.)
  base_config_.unapplied_cache_bytes_max = cache_bounds[(opt_.seed / 7) % 3];
  // Fetch replies of one entry each, so the bound on what waits behind a
  // catch-up gap (16 replies' worth) is reached; or the broker's default.
  const uint64_t fetch_bytes[] = {100, 4 << 20};
  base_config_.fetch_bytes_max = fetch_bytes[(opt_.seed / 11) % 2];
  // Fetches served by the core, or by the host from its store (as brokers do).
  base_config_.host_serves_fetch = (opt_.seed / 13) % 2 == 1;
  // Followers take every chain hint, check one in three, or the default.
  const uint32_t chain_checks[] = {0, 3, 32};
  base_config_.chain_check_every = chain_checks[(opt_.seed / 17) % 3];
  const bool learner = rng_.Chance(0.5);
  wipes_ = rng_.Chance(0.5);
  // Swarm testing: timeouts, clock skew and delays relative to the election
  // timeout, so duelling candidates and stale leaders are common.
  const uint32_t election_timeouts[] = {6, 10, 16};
  base_config_.election_timeout_ticks = election_timeouts[rng_.Uniform(3)];
  base_config_.heartbeat_interval_ticks =
      std::max<uint32_t>(1, base_config_.election_timeout_ticks / (3 + rng_.Uniform(3)));
  base_config_.retransmit_ticks = 2 + static_cast<uint32_t>(rng_.Uniform(5));
  base_config_.fetch_timeout_ticks = 2 + static_cast<uint32_t>(rng_.Uniform(5));
  const double delay_share[] = {0.02, 0.1, 0.25, 0.6};
  delay_max_ = std::max<uint64_t>(
      2, static_cast<uint64_t>(delay_share[rng_.Uniform(4)] *
                               static_cast<double>(base_config_.election_timeout_ticks * kTickUnits)));
  const uint64_t skew = rng_.Uniform(4);  // up to +-skew*10% per node
  // Disk faults on a minority of nodes.
  disk_faults_ = rng_.Chance(0.67);
  const double lies[] = {0.01, 0.05};
  const double misdirects[] = {0, 0.003, 0.02};
  const double rots[] = {0.3, 0.6};
  const double pauses[] = {0, 0.1, 0.3};
  pause_ = pauses[rng_.Uniform(3)];
  disk_mix_.lie_on_sync = lies[rng_.Uniform(2)];
  disk_mix_.misdirect = misdirects[rng_.Uniform(3)];
  rot_ = rots[rng_.Uniform(2)];
  const uint32_t faulty = disk_faults_ ? 1 + static_cast<uint32_t>(rng_.Uniform((opt_.nodes - 1) / 2))
                                       : 0;
  std::ostringstream mix;
  mix << "loss=" << loss_ << " dup=" << duplicate_ << " delay<=" << delay_max_
      << "u fault-every~" << fault_every_ / kTickUnits << "t mid-persist=" << crash_mid_persist_
      << " snapshot-every=" << base_config_.snapshot_interval_instances
      << " keep=" << keep_after_snapshot_ << " learner=" << learner << " wipes=" << wipes_
      << " apply-cache=" << base_config_.unapplied_cache_bytes_max
      << " fetch-bytes=" << base_config_.fetch_bytes_max
      << " host-serves-fetch=" << base_config_.host_serves_fetch
      << " election=" << base_config_.election_timeout_ticks
      << "t heartbeat=" << base_config_.heartbeat_interval_ticks
      << "t retransmit=" << base_config_.retransmit_ticks << "t skew=" << skew * 10 << "%"
      << " pauses=" << pause_ << " faulty-disks=" << faulty;
  if (faulty > 0) {
    mix << " (lie=" << disk_mix_.lie_on_sync << " misdirect=" << disk_mix_.misdirect
        << " rot=" << rot_ << ")";
  }
  result_.fault_mix = mix.str();

  base_config_.window_instances_max = 8;
  base_config_.batch_messages_max = 4;  // small, so many instances are exercised
  base_config_.accept_entries_max = 4;
  base_config_.fetch_entries_max = 8;
  base_config_.bug = opt_.bug;
  for (uint32_t i = 1; i <= opt_.nodes; ++i) base_config_.voters.push_back(NodeId(i));

  voters_ = opt_.nodes;
  for (NodeId v : base_config_.voters) {
    paxos::Member m;
    m.id = v;
    m.voter = true;
    bootstrap_.members.push_back(m);
    ever_member_.insert(v);
  }
  // (From the seed itself, not rng_: the other choices of a seed stay as they were.)
  reconfigure_ = opt_.seed % 3 != 0;
  const uint32_t spares = reconfigure_ ? 2 : 0;
  reconfigure_every_ = (50 + (opt_.seed / 3) % 200) * kTickUnits;
  if (reconfigure_) {
    result_.fault_mix +=
        " reconfigure-every~" + std::to_string(reconfigure_every_ / kTickUnits) + "t";
  }
  nodes_.resize(opt_.nodes + (learner ? 1 : 0) + spares);
  blocked_.assign(nodes_.size(), std::vector<bool>(nodes_.size(), false));
  for (uint32_t k = 0; k < faulty; ++k) {
    uint32_t pick = static_cast<uint32_t>(rng_.Uniform(opt_.nodes));
    while (nodes_[pick].faulty) pick = (pick + 1) % opt_.nodes;
    nodes_[pick].faulty = true;
  }
  for (uint32_t i = 0; i < nodes_.size(); ++i) {
    nodes_[i].id = NodeId(i + 1);
    nodes_[i].learner = i == opt_.nodes && learner;
    nodes_[i].spare = i >= opt_.nodes + (learner ? 1 : 0);
    DiskFaults df;
    df.crash_in_write = crash_mid_persist_;
    if (nodes_[i].faulty) {
      df.lie_on_sync = disk_mix_.lie_on_sync;
      df.misdirect = disk_mix_.misdirect;
    }
    nodes_[i].disk.Configure(&rng_, df, opt_.bug);
    tick_units_.push_back(kTickUnits - skew + rng_.Uniform(2 * skew + 1));
    StartNode(i);
    Event t;
    t.kind = Event::Kind::kTick;
    t.target = i;
    t.time = 1 + rng_.Uniform(kTickUnits);
    Schedule(std::move(t));
  }
  clients_.resize(kClients);
  for (uint32_t c = 0; c < kClients; ++c) {
    clients_[c].producer = ProducerId(1000 + c);
    clients_[c].budget = 30 + opt_.steps / 400;
    clients_[c].target = static_cast<uint32_t>(rng_.Uniform(opt_.nodes));
    Event e;
    e.kind = Event::Kind::kClient;
    e.target = c;
    e.time = 1 + rng_.Uniform(kTickUnits);
    Schedule(std::move(e));
  }
  Event f;
  f.kind = Event::Kind::kFault;
  f.time = fault_every_;
  Schedule(std::move(f));
  if (reconfigure_) {
    Event rc;
    rc.kind = Event::Kind::kReconfigure;
    rc.time = reconfigure_every_;
    Schedule(std::move(rc));
  }

  // Phase 1: faults for opt_.steps events. Phase 2: heal, then require a
  // leader and progress (5), and full delivery (4), within bounds.
  uint64_t heal_time = 0;
  while (!stop_ && !events_.empty()) {
    std::pop_heap(events_.begin(), events_.end(), EventLater{});
    std::unique_ptr<Event> e = std::move(events_.back());
    events_.pop_back();
    now_ = e->time;
    ++result_.steps;
    if (faults_on_ && result_.steps >= opt_.steps) {
      HealAll();
      heal_time = now_;
      // Fresh publishes after the heal: a liveness probe.
      // The unpublished rest of the budget is dropped, so the probe is not
      // queued behind it.
      for (Client& c : clients_) {
        c.heal_sequence = c.next_sequence;
        c.budget = 2;
      }
    }
    switch (e->kind) {
      case Event::Kind::kDeliver:
      if (nodes_[e->target].paused_until > now_) {
        // A paused process reads its socket when it resumes, in order.
        Event later = std::move(*e);
        later.time = nodes_[later.target].paused_until;
        Schedule(std::move(later));
        break;
      }
      DeliverMessage(*e);
      break;
      case Event::Kind::kTick: {
        Node& n = nodes_[e->target];
        if (n.up && n.paused_until <= now_) {
          n.replica->Tick();
          HandleReady(e->target);
        }
        // The broker writes what waited at every tick (and when idle).
        if (n.up && n.paused_until <= now_ && !n.loop->FlushDeferred().ok()) CrashNode(e->target);
        Event t;
        t.kind = Event::Kind::kTick;
        t.target = e->target;
        t.time = now_ + tick_units_[e->target];
        Schedule(std::move(t));
        break;
      }
      case Event::Kind::kClient: ClientAct(e->target); break;
      case Event::Kind::kAck: ClientAck(*e); break;
      case Event::Kind::kFault: InjectFault(); break;
      case Event::Kind::kReconfigure:
        Reconfigure();
        break;
      case Event::Kind::kServe: {
        Node& n = nodes_[e->target];
        if (!n.up || n.incarnation != e->incarnation) break;
        ServeFetch(n, std::move(e->fetch));
        HandleReady(e->target);
        break;
      }
    }
    if (!faults_on_ && !stop_) {
      if (!probe_acked_ && now_ - heal_time > kLivenessTicks * kTickUnits) {
        Violation("no leader committed a new publish within " + std::to_string(kLivenessTicks) +
                  " ticks of the last fault healing");
        break;
      }
      if (probe_acked_ && AllDelivered()) break;
      if (now_ - heal_time > kSettleTicks * kTickUnits) {
        CheckEnd();
        if (!stop_) Violation("clients still had unacknowledged messages after healing");
        break;
      }
    }
  }
  if (!stop_) CheckEnd();
  result_.delivered = canonical_.size();
  result_.changes = changes_;
  return result_;
}

}  // namespace

SimResult RunSimulation(const SimOptions& options) {
  Simulation sim(options);
  return sim.Run();
}

std::string ReplayCommand(const SimOptions& o) {
  std::string cmd = "build/ordo-sim --nodes " + std::to_string(o.nodes) + " --seed " +
                    std::to_string(o.seed) + " --steps " + std::to_string(o.steps);
  if (o.bug != paxos::Bug::kNone) cmd += std::string(" --bug ") + paxos::ToString(o.bug);
  return cmd;
}

}  // namespace ordo::sim
