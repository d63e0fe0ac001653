// One test per protocol rule: drive paxos::Replica through Step/Tick/Propose
// and assert on what comes out in Ready.
#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <span>

#include "node/memory_storage.h"
#include "node/node_loop.h"
#include "paxos/replica.h"

namespace ordo::paxos {
namespace {

Config ThreeNodes(uint32_t self) {
  Config c;
  c.id = NodeId(self);
  c.voters = {NodeId(1), NodeId(2), NodeId(3)};
  c.election_timeout_ticks = 10;
  c.heartbeat_interval_ticks = 2;
  c.seed = 7;
  return c;
}

ClientMessage Msg(uint64_t producer, uint64_t seq, std::string payload = "x") {
  return ClientMessage{ProducerId(producer), seq, "", std::move(payload)};
}

// A replica under the node loop (node/node_loop.h), as the broker runs it,
// with a host that collects everything that came out.
struct Node final : node::Host, node::Transport {
  explicit Node(Config c) : config(std::move(c)) { Restart(); }
  void Restart() {
    loop.reset();
    replica = std::make_unique<Replica>(config, store);
    loop = std::make_unique<node::NodeLoop>(*replica, store, *this, *this);
  }

  // Runs the loop until quiet, then writes what waited (as the broker does
  // when idle); returns everything that came out.
  Ready Drain() {
    out = Ready{};
    EXPECT_TRUE(loop->Drain().ok());
    EXPECT_TRUE(loop->FlushDeferred().ok());
    return std::move(out);
  }
  void OnReady(const Ready& r) override {
    out.hard_state_changed |= r.hard_state_changed;
    out.hard_state = r.hard_state;
    for (auto& e : r.entries) out.entries.push_back(e);
    for (auto& m : r.messages) out.messages.push_back(m);
    for (auto& m : r.messages_after_persist) out.messages_after_persist.push_back(m);
    out.lost_leadership |= r.lost_leadership;
  }
  void OnApplied(std::span<const AppliedInstance> applied) override {
    for (auto& a : applied) out.applied.push_back(a);
  }
  void ServeFetch(FetchToServe f) override { out.fetches_to_serve.push_back(std::move(f)); }
  void Send(const Message&) override {}  // collected whole in OnReady

  Ready out;  // what the current Drain collects
  Ready Step(const Message& m) {
    replica->Step(m);
    return Drain();
  }
  Ready TickUntil(Role role, int max_ticks = 100) {
    Ready all;
    for (int i = 0; i < max_ticks && replica->role() != role; ++i) {
      replica->Tick();
      Ready r = Drain();
      for (auto& m : r.messages) all.messages.push_back(m);
      for (auto& m : r.messages_after_persist) all.messages_after_persist.push_back(m);
      all.hard_state = r.hard_state;
      all.hard_state_changed |= r.hard_state_changed;
    }
    return all;
  }

  Config config;
  node::MemoryStorage store;
  std::unique_ptr<Replica> replica;
  std::unique_ptr<node::NodeLoop> loop;
};

Message Make(MessageType type, uint32_t from, uint32_t to, Ballot ballot) {
  Message m;
  m.type = type;
  m.from = NodeId(from);
  m.to = NodeId(to);
  m.ballot = ballot;
  return m;
}

std::vector<Message> OfType(const std::vector<Message>& ms, MessageType type) {
  std::vector<Message> out;
  for (const Message& m : ms) {
    if (m.type == type) out.push_back(m);
  }
  return out;
}

// Ticks until the node's election timeout fires and it sends pre-votes, has
// `granter` grant one, and returns what followed (the prepares).
Ready StartElection(Node& n, uint32_t granter = 2) {
  std::vector<Message> prevotes;
  for (int i = 0; i < 100 && prevotes.empty(); ++i) {
    n.replica->Tick();
    prevotes = OfType(n.Drain().messages, MessageType::kPreVote);
  }
  EXPECT_FALSE(prevotes.empty());
  Message grant = Make(MessageType::kPreVoteGrant, granter, n.config.id.value(),
                       prevotes.at(0).ballot);
  return n.Step(grant);
}

// Makes node 1 leader of a 3-node cluster with empty logs; returns its ballot.
Ballot ElectNode1(Node& n) {
  Ready r = StartElection(n);
  auto prepares = OfType(r.messages, MessageType::kPrepare);
  EXPECT_EQ(prepares.size(), 2u);
  const Ballot b = prepares.at(0).ballot;
  Message promise = Make(MessageType::kPromise, 2, 1, b);
  n.Step(promise);
  EXPECT_EQ(n.replica->role(), Role::kLeader);
  return b;
}

TEST(Ballot, OrderedByRoundThenNode) {
  EXPECT_LT((Ballot{1, NodeId(3)}), (Ballot{2, NodeId(1)}));
  EXPECT_LT((Ballot{2, NodeId(1)}), (Ballot{2, NodeId(2)}));
  EXPECT_LT(Ballot{}, (Ballot{0, NodeId(1)}));
  EXPECT_TRUE(Ballot{}.IsZero());
}

TEST(Quorum, MajorityTable) {
  const size_t want[] = {0, 1, 2, 2, 3, 3, 4, 4};
  for (size_t n = 1; n < 8; ++n) EXPECT_EQ(QuorumSize(n), want[n]) << n;
  VoteSet v;
  v.Add(0);
  v.Add(2);
  v.Add(2);
  EXPECT_EQ(v.Count(), 2u);
  EXPECT_TRUE(v.IsQuorumOf(3));
  EXPECT_FALSE(v.IsQuorumOf(5));
}

TEST(Acceptor, PromiseIsSentOnlyAfterItIsPersisted) {
  Node n(ThreeNodes(2));
  Message prepare = Make(MessageType::kPrepare, 1, 2, Ballot{5, NodeId(1)});
  prepare.instance = Instance(1);
  n.replica->Step(prepare);
  Ready r = n.replica->TakeReady();
  EXPECT_TRUE(r.hard_state_changed);
  EXPECT_EQ(r.hard_state.promised, (Ballot{5, NodeId(1)}));
  EXPECT_TRUE(OfType(r.messages, MessageType::kPromise).empty());
  ASSERT_EQ(OfType(r.messages_after_persist, MessageType::kPromise).size(), 1u);
  n.store.Save(r.hard_state, r.entries);
  n.replica->Advance();
}

TEST(Acceptor, RejectsPrepareBelowItsPromise) {
  Node n(ThreeNodes(2));
  Message high = Make(MessageType::kPrepare, 1, 2, Ballot{5, NodeId(1)});
  high.instance = Instance(1);
  n.Step(high);
  Message low = Make(MessageType::kPrepare, 3, 2, Ballot{4, NodeId(3)});
  low.instance = Instance(1);
  Ready r = n.Step(low);
  auto rejects = OfType(r.messages, MessageType::kReject);
  ASSERT_EQ(rejects.size(), 1u);
  EXPECT_EQ(rejects[0].promised, (Ballot{5, NodeId(1)}));
  EXPECT_EQ(n.store.LoadHardState().promised, (Ballot{5, NodeId(1)}));
}

TEST(Acceptor, AcceptsOnlyAtOrAbovePromise) {
  Node n(ThreeNodes(2));
  Message prepare = Make(MessageType::kPrepare, 1, 2, Ballot{5, NodeId(1)});
  prepare.instance = Instance(1);
  n.Step(prepare);

  Message stale = Make(MessageType::kAccept, 3, 2, Ballot{4, NodeId(3)});
  stale.entries.push_back(Entry{Instance(1), Ballot{4, NodeId(3)}, MakeNoop(Ballot{4, NodeId(3)})});
  Ready r = n.Step(stale);
  EXPECT_EQ(OfType(r.messages, MessageType::kReject).size(), 1u);
  EXPECT_TRUE(r.entries.empty());

  Message ok = Make(MessageType::kAccept, 1, 2, Ballot{5, NodeId(1)});
  ok.entries.push_back(Entry{Instance(1), Ballot{5, NodeId(1)}, MakeNoop(Ballot{5, NodeId(1)})});
  r = n.Step(ok);
  ASSERT_EQ(r.entries.size(), 1u);
  EXPECT_EQ(r.entries[0].ballot, (Ballot{5, NodeId(1)}));
  auto accepted = OfType(r.messages_after_persist, MessageType::kAccepted);
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_EQ(accepted[0].instance, Instance(1));
  EXPECT_TRUE(OfType(r.messages, MessageType::kAccepted).empty());  // never before persist
}

TEST(Acceptor, PromiseCarriesEveryAcceptedValueFromThePreparesInstance) {
  Node n(ThreeNodes(2));
  const Ballot b1{1, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b1);
  for (uint64_t i = 1; i <= 4; ++i) {
    accept.entries.push_back(Entry{Instance(i), b1, MakeBatch(b1, {Msg(9, i)})});
  }
  n.Step(accept);
  Message prepare = Make(MessageType::kPrepare, 3, 2, Ballot{2, NodeId(3)});
  prepare.instance = Instance(3);
  // Not sticky: the leader was heard "now", so let time pass first.
  for (int i = 0; i < 10; ++i) n.replica->Tick(), n.Drain();
  Ready r = n.Step(prepare);
  auto promises = OfType(r.messages_after_persist, MessageType::kPromise);
  ASSERT_EQ(promises.size(), 1u);
  ASSERT_EQ(promises[0].entries.size(), 2u);
  EXPECT_EQ(promises[0].entries[0].instance, Instance(3));
  EXPECT_EQ(promises[0].entries[1].instance, Instance(4));
  EXPECT_EQ(promises[0].entries[0].ballot, b1);
}

TEST(Acceptor, StaysWithALiveLeader) {
  Node n(ThreeNodes(2));
  const Ballot b1{1, NodeId(1)};
  Message commit = Make(MessageType::kCommit, 1, 2, b1);
  n.Step(commit);
  Message prepare = Make(MessageType::kPrepare, 3, 2, Ballot{2, NodeId(3)});
  prepare.instance = Instance(1);
  Ready r = n.Step(prepare);
  EXPECT_EQ(OfType(r.messages, MessageType::kReject).size(), 1u);
  EXPECT_EQ(n.store.LoadHardState().promised, Ballot{});
}

TEST(Election, TimeoutStartsPhase1WithAHigherBallot) {
  Node n(ThreeNodes(1));
  Message commit = Make(MessageType::kCommit, 2, 1, Ballot{7, NodeId(2)});
  n.Step(commit);
  Ready r = StartElection(n, 3);
  auto prepares = OfType(r.messages, MessageType::kPrepare);
  ASSERT_EQ(prepares.size(), 2u);
  EXPECT_EQ(prepares[0].ballot, (Ballot{8, NodeId(1)}));
  EXPECT_EQ(prepares[0].instance, Instance(1));
  EXPECT_EQ(n.store.LoadHardState().promised, (Ballot{8, NodeId(1)}));
}

TEST(Election, TimeoutIsRandomizedButSeeded) {
  auto ticks_to_elect = [](uint64_t seed) {
    Config c = ThreeNodes(1);
    c.seed = seed;
    Node n(c);
    int t = 0;
    bool prevoted = false;
    while (!prevoted) {
      n.replica->Tick();
      prevoted = !OfType(n.Drain().messages, MessageType::kPreVote).empty();
      ++t;
    }
    return t;
  };
  EXPECT_EQ(ticks_to_elect(1), ticks_to_elect(1));
  std::set<int> seen;
  for (uint64_t s = 0; s < 20; ++s) {
    const int t = ticks_to_elect(s);
    EXPECT_GE(t, 10);
    EXPECT_LT(t, 20);
    seen.insert(t);
  }
  EXPECT_GT(seen.size(), 2u);
}

TEST(PreVote, PersistsNothingAndRaisesNoPromise) {
  Node n(ThreeNodes(1));
  std::vector<Message> prevotes;
  bool persisted = false;
  for (int i = 0; i < 100 && prevotes.empty(); ++i) {
    n.replica->Tick();
    Ready r = n.Drain();
    persisted |= r.hard_state_changed || !r.entries.empty();
    prevotes = OfType(r.messages, MessageType::kPreVote);
  }
  ASSERT_EQ(prevotes.size(), 2u);
  EXPECT_FALSE(persisted);
  EXPECT_EQ(n.store.LoadHardState().promised, Ballot{});
  EXPECT_EQ(n.replica->role(), Role::kFollower);

  // The acceptor side: answering a pre-vote persists nothing either.
  Node a(ThreeNodes(2));
  Ready r = a.Step(prevotes[0].to == NodeId(2) ? prevotes[0] : prevotes[1]);
  EXPECT_EQ(OfType(r.messages, MessageType::kPreVoteGrant).size(), 1u);
  EXPECT_FALSE(r.hard_state_changed);
}

TEST(PreVote, RefusedWhileALiveLeaderIsHeard) {
  Node n(ThreeNodes(2));
  n.Step(Make(MessageType::kCommit, 1, 2, Ballot{5, NodeId(1)}));
  Message pv = Make(MessageType::kPreVote, 3, 2, Ballot{9, NodeId(3)});
  Ready r = n.Step(pv);
  EXPECT_TRUE(OfType(r.messages, MessageType::kPreVoteGrant).empty());
  EXPECT_EQ(OfType(r.messages, MessageType::kReject).size(), 1u);
}

TEST(PreVote, ARestartedNodeThatCannotWinNeverOutbidsTheLeader) {
  // Node 3 restarts and times out before it hears the leader; followers that
  // hear the leader refuse its pre-votes, so its promise never moves above
  // the leader's ballot and it follows the leader as soon as it hears it.
  Node n(ThreeNodes(3));
  const Ballot leader{4, NodeId(1)};
  for (int round = 0; round < 5; ++round) {
    std::vector<Message> prevotes;
    for (int i = 0; i < 100 && prevotes.empty(); ++i) {
      n.replica->Tick();
      prevotes = OfType(n.Drain().messages, MessageType::kPreVote);
    }
    ASSERT_FALSE(prevotes.empty());
    Message no = Make(MessageType::kReject, 2, 3, prevotes[0].ballot);
    no.promised = leader;
    n.Step(no);
  }
  EXPECT_EQ(n.store.LoadHardState().promised, Ballot{});
  Message commit = Make(MessageType::kCommit, 1, 3, leader);
  Ready r = n.Step(commit);
  EXPECT_TRUE(OfType(r.messages, MessageType::kReject).empty());
  EXPECT_EQ(n.replica->leader(), NodeId(1));
}

TEST(PreVote, RefusedPreVotesDoNotInflateTheBallot) {
  // A refusal echoes the hypothetical pre-vote ballot; only ballots someone
  // used (the refuser's promise) may raise the next one. Found by partition
  // testing: rounds went from 3 to 87 in six elections.
  Node n(ThreeNodes(3));
  const Ballot promised{2, NodeId(1)};
  std::vector<Ballot> asked;
  for (int round = 0; round < 6; ++round) {
    std::vector<Message> prevotes;
    for (int i = 0; i < 100 && prevotes.empty(); ++i) {
      n.replica->Tick();
      prevotes = OfType(n.Drain().messages, MessageType::kPreVote);
    }
    ASSERT_FALSE(prevotes.empty());
    asked.push_back(prevotes[0].ballot);
    Message no = Make(MessageType::kReject, 2, 3, prevotes[0].ballot);
    no.promised = promised;
    n.Step(no);
  }
  EXPECT_EQ(asked.front().round, 1u);
  for (const Ballot& b : std::vector<Ballot>(asked.begin() + 1, asked.end())) {
    EXPECT_EQ(b.round, promised.round + 1) << "a refused pre-vote raised the next ballot";
  }
}

TEST(Election, HeartbeatsKeepFollowersFromElecting) {
  Node n(ThreeNodes(2));
  for (int i = 0; i < 100; ++i) {
    if (i % 2 == 0) n.Step(Make(MessageType::kCommit, 1, 2, Ballot{1, NodeId(1)}));
    n.replica->Tick();
    n.Drain();
    ASSERT_EQ(n.replica->role(), Role::kFollower);
  }
  EXPECT_EQ(n.replica->leader(), NodeId(1));
}

TEST(Recovery, HighestBallotValueElseNoopThenBarrier) {
  Node n(ThreeNodes(1));
  n.Step(Make(MessageType::kCommit, 2, 1, Ballot{10, NodeId(2)}));  // rounds seen: 10
  Ready r = StartElection(n);
  const Ballot b = OfType(r.messages, MessageType::kPrepare).at(0).ballot;
  ASSERT_EQ(b.round, 11u);
  const Ballot old1{b.round - 2, NodeId(2)}, old2{b.round - 1, NodeId(3)};
  const ValuePtr v_old = MakeBatch(old1, {Msg(1, 1, "old")});
  const ValuePtr v_new = MakeBatch(old2, {Msg(1, 1, "new")});
  // Instance 1: two values at two ballots; instance 2: a hole; instance 3: one value.
  Message p = Make(MessageType::kPromise, 2, 1, b);
  p.entries = {Entry{Instance(1), old1, v_old}, Entry{Instance(3), old1, v_old}};
  Message q = Make(MessageType::kPromise, 3, 1, b);
  q.entries = {Entry{Instance(1), old2, v_new}};
  n.Step(p);
  ASSERT_EQ(n.replica->role(), Role::kLeader);
  r = n.Step(q);  // late promise: ignored, already leader
  Entry e;
  ASSERT_EQ(n.store.Get(Instance(1), &e), StoreCode::kOk);
  EXPECT_EQ(e.ballot, b);
  // Only node 2's promise counted (quorum 2 with ourselves): its value wins.
  EXPECT_EQ(e.value->messages.at(0).payload, "old");
  ASSERT_EQ(n.store.Get(Instance(2), &e), StoreCode::kOk);
  EXPECT_EQ(e.value->kind, ValueKind::kNoop);
  ASSERT_EQ(n.store.Get(Instance(3), &e), StoreCode::kOk);
  EXPECT_EQ(e.value->origin, old1);  // recovered values keep their origin
  ASSERT_EQ(n.store.Get(Instance(4), &e), StoreCode::kOk);
  EXPECT_EQ(e.value->kind, ValueKind::kBarrier);
  EXPECT_EQ(e.value->origin, b);
}

TEST(Recovery, PicksTheHighestBallotAmongPromises) {
  Config c = ThreeNodes(1);
  c.voters = {NodeId(1), NodeId(2), NodeId(3), NodeId(4), NodeId(5)};
  Node n(c);
  n.Step(Make(MessageType::kCommit, 4, 1, Ballot{10, NodeId(4)}));  // rounds seen: 10
  StartElection(n);
  Ready r = n.Step(Make(MessageType::kPreVoteGrant, 3, 1, Ballot{11, NodeId(1)}));  // 3 of 5
  const Ballot b = OfType(r.messages, MessageType::kPrepare).at(0).ballot;
  ASSERT_EQ(b.round, 11u);
  const Ballot low{b.round - 2, NodeId(2)}, high{b.round - 1, NodeId(3)};
  Message p = Make(MessageType::kPromise, 2, 1, b);
  p.entries = {Entry{Instance(1), low, MakeBatch(low, {Msg(1, 1, "low")})}};
  Message q = Make(MessageType::kPromise, 3, 1, b);
  q.entries = {Entry{Instance(1), high, MakeBatch(high, {Msg(1, 1, "high")})}};
  n.Step(p);
  ASSERT_EQ(n.replica->role(), Role::kCandidate);
  n.Step(q);
  ASSERT_EQ(n.replica->role(), Role::kLeader);
  Entry e;
  ASSERT_EQ(n.store.Get(Instance(1), &e), StoreCode::kOk);
  EXPECT_EQ(e.value->messages.at(0).payload, "high");
}

TEST(Recovery, InstancesAnAcceptorKnowsChosenAreFetchedBeforeItLeads) {
  // A leader must know the configuration of every instance it proposes, and
  // the chosen instances it lacks may hold a configuration entry: it
  // fetches them (never re-proposes them) and leads once it has them.
  Node n(ThreeNodes(1));
  Ready r = StartElection(n);
  const Ballot b = OfType(r.messages, MessageType::kPrepare).at(0).ballot;
  Message p = Make(MessageType::kPromise, 2, 1, b);
  p.chosen = Instance(5);  // node 2 knows 1..5 chosen
  r = n.Step(p);
  ASSERT_EQ(n.replica->role(), Role::kCandidate);
  auto fetches = OfType(r.messages, MessageType::kFetch);
  ASSERT_EQ(fetches.size(), 1u);
  EXPECT_EQ(fetches[0].instance, Instance(1));
  EXPECT_EQ(fetches[0].instance_last, Instance(5));
  Entry e;
  EXPECT_EQ(n.store.Get(Instance(1), &e), StoreCode::kNotFound);

  Message reply = Make(MessageType::kFetchReply, fetches[0].to.value(), 1, Ballot{});
  reply.instance = Instance(1);
  reply.chosen = Instance(5);
  for (uint64_t i = 1; i <= 5; ++i) {
    reply.entries.push_back(
        Entry{Instance(i), Ballot{1, NodeId(2)}, MakeNoop(Ballot{1, NodeId(2)})});
  }
  n.Step(reply);
  ASSERT_EQ(n.replica->role(), Role::kLeader);
  ASSERT_EQ(n.store.Get(Instance(6), &e), StoreCode::kOk);  // the barrier goes above
  EXPECT_EQ(e.value->kind, ValueKind::kBarrier);
}

TEST(Leader, BatchesProposalsAndAcksAfterAMajority) {
  Node n(ThreeNodes(1));
  const Ballot b = ElectNode1(n);
  // The barrier (instance 1) is chosen once node 2 accepts it.
  Message acc = Make(MessageType::kAccepted, 2, 1, b);
  acc.instance = acc.instance_last = Instance(1);
  n.Step(acc);
  EXPECT_EQ(n.replica->chosen(), Instance(1));

  ASSERT_EQ(n.replica->Propose({Msg(1, 1, "a"), Msg(1, 2, "b")}).code, ProposeResult::Code::kOk);
  Ready r = n.Drain();
  auto accepts = OfType(r.messages, MessageType::kAccept);
  ASSERT_EQ(accepts.size(), 2u);  // to nodes 2 and 3
  ASSERT_EQ(accepts[0].entries.size(), 1u);
  EXPECT_EQ(accepts[0].entries[0].value->messages.size(), 2u);  // one instance, two messages
  EXPECT_EQ(accepts[0].chosen, Instance(1));                     // piggybacked commit
  EXPECT_TRUE(r.applied.empty());

  acc.instance = acc.instance_last = Instance(2);
  r = n.Step(acc);
  ASSERT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(r.applied[0].instance, Instance(2));
  EXPECT_EQ(r.applied[0].first_offset, Offset(0));
  EXPECT_EQ(r.applied[0].appended, 2u);
  EXPECT_EQ(r.applied[0].results[1].offset, Offset(1));
}

TEST(Leader, WindowBoundsInstancesInFlight) {
  Config c = ThreeNodes(1);
  c.window_instances_max = 3;
  Node n(c);
  ElectNode1(n);  // the barrier takes one slot
  for (uint64_t s = 1; s <= 10; ++s) n.replica->Propose({Msg(1, s)});
  n.Drain();
  EXPECT_EQ(n.replica->status().inflight_instances, 3u);
  EXPECT_EQ(n.replica->status().pending_messages, 8u);  // 2 took the free slots
}

TEST(Leader, ProposalToAFollowerIsRedirected) {
  Node n(ThreeNodes(2));
  ProposeResult r = n.replica->Propose({Msg(1, 1)});
  EXPECT_EQ(r.code, ProposeResult::Code::kNotLeader);
  EXPECT_EQ(r.leader, kNoNode);
  n.Step(Make(MessageType::kCommit, 3, 2, Ballot{1, NodeId(3)}));
  r = n.replica->Propose({Msg(1, 1)});
  EXPECT_EQ(r.code, ProposeResult::Code::kNotLeader);
  EXPECT_EQ(r.leader, NodeId(3));
}

TEST(Leader, StepsDownWithoutAQuorum) {
  Node n(ThreeNodes(1));
  ElectNode1(n);
  Ready all;
  for (int i = 0; i < 25 && n.replica->role() == Role::kLeader; ++i) {
    n.replica->Tick();
    all = n.Drain();
  }
  EXPECT_NE(n.replica->role(), Role::kLeader);
  EXPECT_TRUE(all.lost_leadership);
}

TEST(Leader, StepsDownForAHigherBallotLeader) {
  Node n(ThreeNodes(1));
  ElectNode1(n);
  n.replica->Propose({Msg(1, 1)});
  n.Drain();
  Ready r = n.Step(Make(MessageType::kCommit, 2, 1, Ballot{99, NodeId(2)}));
  EXPECT_EQ(n.replica->role(), Role::kFollower);
  EXPECT_EQ(n.replica->leader(), NodeId(2));
  EXPECT_TRUE(r.lost_leadership);
}

TEST(Leader, RetransmitsUnansweredAccepts) {
  Node n(ThreeNodes(1));
  ElectNode1(n);
  Ready r;
  size_t resent = 0;
  for (int i = 0; i < 5; ++i) {
    n.replica->Tick();
    r = n.Drain();
    resent += OfType(r.messages, MessageType::kAccept).size();
  }
  EXPECT_GE(resent, 2u);  // the barrier went again to nodes 2 and 3
}

TEST(Learner, CommitMarksEntriesAtTheLeadersBallotChosenInOrder) {
  Node n(ThreeNodes(2));
  const Ballot b{1, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(1), b, MakeBarrier(b)},
                    Entry{Instance(2), b, MakeBatch(b, {Msg(5, 1, "m")})}};
  n.Step(accept);
  Message commit = Make(MessageType::kCommit, 1, 2, b);
  commit.chosen = Instance(2);
  Ready r = n.Step(commit);
  ASSERT_EQ(r.applied.size(), 2u);
  EXPECT_EQ(r.applied[0].instance, Instance(1));
  EXPECT_EQ(r.applied[1].instance, Instance(2));
  EXPECT_EQ(r.applied[1].results.at(0).offset, Offset(0));
  EXPECT_EQ(n.store.LoadHardState().chosen, Instance(2));
}

TEST(Learner, NeverAppliesPastAGapAndFetchesIt) {
  Node n(ThreeNodes(2));
  const Ballot b{1, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(2), b, MakeBatch(b, {Msg(5, 2, "second")})}};
  n.Step(accept);
  Message commit = Make(MessageType::kCommit, 1, 2, b);
  commit.chosen = Instance(2);
  Ready r = n.Step(commit);
  EXPECT_TRUE(r.applied.empty());  // instance 1 is missing: nothing applies
  auto fetches = OfType(r.messages, MessageType::kFetch);
  ASSERT_EQ(fetches.size(), 1u);
  EXPECT_EQ(fetches[0].instance, Instance(1));
  EXPECT_EQ(fetches[0].instance_last, Instance(2));

  // Any peer may answer, not only the leader.
  Message reply = Make(MessageType::kFetchReply, 3, 2, Ballot{});
  reply.to = NodeId(2);
  reply.instance = Instance(1);
  reply.chosen = Instance(2);
  reply.entries = {Entry{Instance(1), b, MakeBatch(b, {Msg(5, 1, "first")})}};
  r = n.Step(reply);
  ASSERT_EQ(r.applied.size(), 2u);
  EXPECT_EQ(r.applied[0].value->messages[0].payload, "first");
  EXPECT_EQ(r.applied[1].value->messages[0].payload, "second");
  EXPECT_EQ(r.applied[1].results[0].offset, Offset(1));
}

// Range fetches are pipelined over several peers, so replies arrive out of
// order: what arrives beyond a gap waits in memory until the gap is filled.
// A gap whose reply is slow must not let the rest pile up (a restarted
// broker once held 197 MB that way, then wrote it in one 2.4 s commit).
TEST(Learner, FetchesAheadOfAGapOnlyWhileLittleWaitsBehindIt) {
  Config c = ThreeNodes(2);
  c.fetch_bytes_max = 10000;
  c.fetch_pipeline_max = 4;
  Node n(c);
  const Ballot b{1, NodeId(1)};
  Message commit = Make(MessageType::kCommit, 1, 2, b);
  commit.chosen = Instance(1000);
  std::vector<Message> pending = OfType(n.Step(commit).messages, MessageType::kFetch);
  ASSERT_FALSE(pending.empty());
  EXPECT_EQ(pending[0].instance, Instance(1));
  auto entry = [&](uint64_t i) {
    return Entry{Instance(i), b, MakeBatch(b, {Msg(5, i, std::string(4000, 'x'))})};
  };
  const uint64_t entry_bytes = entry(1).value->ByteSize();
  // Every fetch is answered but the one for the gap at instance 1, each
  // reply cut short after 3 entries as the byte limit would.
  uint64_t ahead = 0;
  size_t replies = 0;
  while (!pending.empty() && replies < 200) {
    const Message f = pending.front();
    pending.erase(pending.begin());
    if (f.instance == Instance(1)) continue;  // the gap: its reply never comes
    Message reply = Make(MessageType::kFetchReply, f.to.value(), 2, Ballot{});
    reply.instance = f.instance;
    reply.chosen = Instance(1000);
    for (uint64_t i = f.instance.value(); i <= f.instance_last.value() && reply.entries.size() < 3;
         ++i) {
      reply.entries.push_back(entry(i));
    }
    ahead += reply.entries.size() * entry_bytes;
    ++replies;
    for (const Message& m : OfType(n.Step(reply).messages, MessageType::kFetch)) {
      pending.push_back(m);
    }
  }
  EXPECT_GE(replies, 4u);
  // At most 16 replies' worth of fetch_bytes_max waits, plus the replies
  // already asked for when that was reached.
  EXPECT_LE(ahead, 16 * 10000 + 4 * 3 * entry_bytes);
  EXPECT_EQ(n.replica->chosen(), Instance(0));  // nothing past the gap applies
}

TEST(Learner, EntryAcceptedAtAnotherBallotIsNotTakenAsChosen) {
  Node n(ThreeNodes(2));
  const Ballot old{1, NodeId(3)}, b{2, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 3, 2, old);
  accept.entries = {Entry{Instance(1), old, MakeBatch(old, {Msg(5, 1, "old")})}};
  n.Step(accept);
  Message commit = Make(MessageType::kCommit, 1, 2, b);
  commit.chosen = Instance(1);
  Ready r = n.Step(commit);
  EXPECT_TRUE(r.applied.empty());
  EXPECT_EQ(OfType(r.messages, MessageType::kFetch).size(), 1u);
}

TEST(Learner, ServesOnlyChosenEntries) {
  Node n(ThreeNodes(2));
  const Ballot b{1, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(1), b, MakeNoop(b)}, Entry{Instance(2), b, MakeNoop(b)}};
  accept.chosen = Instance(1);
  n.Step(accept);
  Message fetch = Make(MessageType::kFetch, 3, 2, Ballot{});
  fetch.instance = Instance(1);
  fetch.instance_last = Instance(5);
  Ready r = n.Step(fetch);
  auto replies = OfType(r.messages, MessageType::kFetchReply);
  ASSERT_EQ(replies.size(), 1u);
  ASSERT_EQ(replies[0].entries.size(), 1u);
  EXPECT_EQ(replies[0].chosen, Instance(1));
}

// A broker reads and sends the entries itself, off its event loop: the core
// says what the reply says and which chosen range it carries.
TEST(Learner, AHostServedFetchNamesTheChosenRangeAndTheReplysHeader) {
  Config c = ThreeNodes(2);
  c.host_serves_fetch = true;
  Node n(c);
  const Ballot b{1, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(1), b, MakeNoop(b)}, Entry{Instance(2), b, MakeNoop(b)},
                    Entry{Instance(3), b, MakeNoop(b)}};
  accept.chosen = Instance(2);
  n.Step(accept);
  Message fetch = Make(MessageType::kFetch, 3, 2, Ballot{});
  fetch.instance = Instance(1);
  fetch.instance_last = Instance(5);
  Ready r = n.Step(fetch);
  EXPECT_TRUE(OfType(r.messages, MessageType::kFetchReply).empty());  // the host sends it
  ASSERT_EQ(r.fetches_to_serve.size(), 1u);
  const FetchToServe& f = r.fetches_to_serve[0];
  EXPECT_EQ(f.reply.type, MessageType::kFetchReply);
  EXPECT_EQ(f.reply.to, NodeId(3));
  EXPECT_EQ(f.reply.instance, Instance(1));
  EXPECT_EQ(f.last, Instance(2));  // chosen only, never the accepted instance 3
  EXPECT_EQ(f.reply.chosen, Instance(2));
  EXPECT_EQ(f.reply.instance_last, Instance(3));
  EXPECT_EQ(f.reply.ballot, b);  // the leader, for a learner to redirect to
  EXPECT_TRUE(f.reply.entries.empty());

  // Nothing chosen to serve: the core answers at once, as before.
  fetch.instance = Instance(3);
  r = n.Step(fetch);
  EXPECT_TRUE(r.fetches_to_serve.empty());
  auto replies = OfType(r.messages, MessageType::kFetchReply);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_TRUE(replies[0].entries.empty());
}

// The host found a stored record failing its check while serving it: it is
// counted and fetched again from a peer, which rewrites it.
TEST(Restart, AnUnreadableRecordTheHostReportsIsRepairedFromAPeer) {
  Config c = ThreeNodes(2);
  c.host_serves_fetch = true;
  Node n(c);
  const Ballot b{1, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(1), b, MakeBatch(b, {Msg(5, 1, "a")})}};
  accept.chosen = Instance(1);
  n.Step(accept);
  n.replica->ReportUnreadable(Instance(1));
  EXPECT_EQ(n.replica->status().storage_corruptions, 1u);
  Ready r = n.Drain();
  auto repairs = OfType(r.messages, MessageType::kFetch);
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0].instance, Instance(1));
  EXPECT_EQ(repairs[0].instance_last, Instance(1));
  Message reply = Make(MessageType::kFetchReply, repairs[0].to.value(), 2, Ballot{});
  reply.instance = Instance(1);
  reply.chosen = Instance(1);
  reply.entries = {Entry{Instance(1), b, MakeBatch(b, {Msg(5, 1, "a")})}};
  r = n.Step(reply);
  ASSERT_EQ(r.entries.size(), 1u);  // rewritten
  EXPECT_EQ(r.entries[0].instance, Instance(1));
}

// A fetch that times out is asked again elsewhere, but each time after
// twice as long (up to 8 times the configured timeout): a reply that is only
// slow still comes, and asking at the same pace once had the whole log sent
// 11 times over. A reply in time brings the timeout back down.
TEST(Learner, FetchTimeoutsBackOffAndComeBackDown) {
  Config c = ThreeNodes(2);
  c.fetch_timeout_ticks = 3;
  c.election_timeout_ticks = 1000;  // only the fetches move here
  c.heartbeat_interval_ticks = 2;
  Node n(c);
  const Ballot b{1, NodeId(1)};
  Message commit = Make(MessageType::kCommit, 1, 2, b);
  commit.chosen = Instance(1);
  auto fetches_for_1 = [](const Ready& r) {
    std::vector<Message> out;
    for (const Message& m : OfType(r.messages, MessageType::kFetch)) {
      if (m.instance == Instance(1)) out.push_back(m);
    }
    return out;
  };
  ASSERT_EQ(fetches_for_1(n.Step(commit)).size(), 1u);  // at tick 0
  std::vector<int> asked_at;
  for (int t = 1; t <= 70; ++t) {
    n.replica->Tick();
    if (!fetches_for_1(n.Drain()).empty()) asked_at.push_back(t);
  }
  EXPECT_EQ(asked_at, (std::vector<int>{3, 9, 21, 45, 69}));  // waits 3, 6, 12, 24, 24

  // Answered 2 ticks after it was last asked (tick 69): the timeout comes
  // down to 2 * 2 + 3 ticks.
  n.replica->Tick();  // tick 71
  n.Drain();
  std::vector<Message> next;
  for (int peer : {1, 3}) {  // whichever was asked; the other one's is used too
    Message reply = Make(MessageType::kFetchReply, peer, 2, Ballot{});
    reply.instance = Instance(1);
    reply.chosen = Instance(2);
    reply.entries = {Entry{Instance(1), b, MakeNoop(b)}};
    for (const Message& m : OfType(n.Step(reply).messages, MessageType::kFetch)) {
      if (m.instance == Instance(2)) next.push_back(m);
    }
  }
  EXPECT_EQ(n.replica->chosen(), Instance(1));
  ASSERT_EQ(next.size(), 1u);  // instance 2, asked at tick 71
  asked_at.clear();
  for (int t = 72; t <= 100 && asked_at.empty(); ++t) {
    n.replica->Tick();
    for (const Message& m : OfType(n.Drain().messages, MessageType::kFetch)) {
      if (m.instance == Instance(2)) asked_at.push_back(t);
    }
  }
  EXPECT_EQ(asked_at, (std::vector<int>{71 + 7}));
}

// The backoff is each peer's own: a slow or dead peer does not slow down
// fetches from the others.
TEST(Learner, FetchTimeoutsBackOffPerPeer) {
  Config c = ThreeNodes(2);
  c.fetch_timeout_ticks = 3;
  c.election_timeout_ticks = 1000;
  Node n(c);
  Message hello = Make(MessageType::kFetch, 3, 2, Ballot{});  // peer 3: "1 is chosen"
  hello.chosen = Instance(1);
  hello.instance = hello.instance_last = Instance(100);
  n.Step(hello);
  Message commit = Make(MessageType::kCommit, 1, 2, Ballot{1, NodeId(1)});
  commit.chosen = Instance(1);  // the leader, too
  n.Step(commit);
  std::vector<std::pair<int, uint32_t>> asked;  // (tick, peer); never answered
  for (int t = 1; t <= 40; ++t) {
    n.replica->Tick();
    for (const Message& m : OfType(n.Drain().messages, MessageType::kFetch)) {
      if (m.instance == Instance(1)) asked.push_back({t, m.to.value()});
    }
  }
  // Alternating between the two, each waiting twice as long as its own last
  // wait: 3 ticks for each first, then 6 each, then 12.
  ASSERT_EQ(asked.size(), 5u);
  const std::vector<int> ticks = {3, 6, 12, 18, 30};
  for (size_t i = 0; i < asked.size(); ++i) {
    EXPECT_EQ(asked[i].first, ticks[i]) << i;
    if (i > 0) {
      EXPECT_NE(asked[i].second, asked[i - 1].second) << i;
    }
  }
}

TEST(Learner, ANonVoterLearnsTheLeaderFromFetchRepliesToRedirectPublishes) {
  // A follower that heard leader 1 names its ballot when it serves a fetch...
  Node voter(ThreeNodes(2));
  const Ballot b{4, NodeId(1)};
  Message commit = Make(MessageType::kCommit, 1, 2, b);
  voter.Step(commit);
  Message fetch = Make(MessageType::kFetch, 9, 2, Ballot{});  // from a learner
  fetch.instance = Instance(1);
  fetch.instance_last = Instance(5);
  auto replies = OfType(voter.Step(fetch).messages, MessageType::kFetchReply);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].to, NodeId(9));
  EXPECT_EQ(replies[0].ballot, b);

  // ...and a learner (id outside the voters) takes it, never a lower one.
  Config c = ThreeNodes(9);
  Node learner(c);
  EXPECT_FALSE(learner.replica->status().voter);
  replies[0].to = NodeId(9);
  learner.Step(replies[0]);
  EXPECT_EQ(learner.replica->leader(), NodeId(1));
  const ProposeResult r = learner.replica->Propose({Msg(5, 1)});
  EXPECT_EQ(r.code, ProposeResult::Code::kNotLeader);
  EXPECT_EQ(r.leader, NodeId(1));
  Message stale = replies[0];
  stale.ballot = Ballot{3, NodeId(3)};
  learner.Step(stale);
  EXPECT_EQ(learner.replica->leader(), NodeId(1));
  Message newer = replies[0];
  newer.ballot = Ballot{5, NodeId(3)};
  learner.Step(newer);
  EXPECT_EQ(learner.replica->leader(), NodeId(3));
  // A learner never campaigns, however long it waits.
  Ready all = learner.TickUntil(Role::kLeader, 200);
  EXPECT_EQ(learner.replica->role(), Role::kFollower);
  for (const auto* list : {&all.messages, &all.messages_after_persist}) {
    for (const Message& m : *list) EXPECT_EQ(m.type, MessageType::kFetch);
  }
}

TEST(Restart, RecoversPromiseFrontierAndAppliedStateWithoutReplayingOutput) {
  Node n(ThreeNodes(2));
  const Ballot b{3, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(1), b, MakeBatch(b, {Msg(5, 1), Msg(5, 2)})},
                    Entry{Instance(2), b, MakeBatch(b, {Msg(6, 1)})}};
  n.Step(accept);
  Message commit = Make(MessageType::kCommit, 1, 2, b);
  commit.chosen = Instance(2);
  n.Step(commit);
  n.Restart();
  EXPECT_FALSE(n.replica->HasReady());
  EXPECT_EQ(n.replica->chosen(), Instance(2));
  EXPECT_EQ(n.replica->status().promised, b);
  EXPECT_EQ(n.replica->applied_state().next_offset(), Offset(3));
  EXPECT_EQ(n.replica->applied_state().LastSequence(ProducerId(5)), 2u);
}

TEST(Restart, ACorruptChosenRecordIsRepairedFromAPeerAndNeverServed) {
  Node n(ThreeNodes(2));
  const Ballot b{3, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(1), b, MakeBatch(b, {Msg(5, 1, "a")})},
                    Entry{Instance(2), b, MakeBatch(b, {Msg(5, 2, "b")})}};
  accept.chosen = Instance(2);
  n.Step(accept);
  n.store.CorruptForTest(Instance(1));
  n.Restart();
  EXPECT_EQ(n.replica->applied_state().next_offset(), Offset(0));  // stopped at the bad record
  EXPECT_EQ(n.replica->status().storage_corruptions, 1u);

  Message fetch = Make(MessageType::kFetch, 3, 2, Ballot{});
  fetch.instance = Instance(1);
  fetch.instance_last = Instance(2);
  Ready r = n.Step(fetch);
  auto replies = OfType(r.messages, MessageType::kFetchReply);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_TRUE(replies[0].entries.empty());  // never serve what fails its check
  auto repairs = OfType(r.messages, MessageType::kFetch);
  ASSERT_EQ(repairs.size(), 1u);
  EXPECT_EQ(repairs[0].instance, Instance(1));

  Message reply = Make(MessageType::kFetchReply, repairs[0].to.value(), 2, Ballot{});
  reply.instance = Instance(1);
  reply.chosen = Instance(2);
  reply.entries = {Entry{Instance(1), b, MakeBatch(b, {Msg(5, 1, "a")})}};
  r = n.Step(reply);
  ASSERT_EQ(r.applied.size(), 2u);
  Entry e;
  EXPECT_EQ(n.store.Get(Instance(1), &e), StoreCode::kOk);  // rewritten
  EXPECT_EQ(n.replica->applied_state().next_offset(), Offset(2));
}

TEST(Restart, AChosenRecordNoPeerHoldsStopsTheVoteUntilCaughtUp) {
  // This node's copy of a chosen value failed its check, and no peer says
  // it has the instance chosen (they lost their lazily written chosen
  // marks): the value lives on only as the others' accepted votes. The node
  // must not lead or vote as if it knew it, or a quorum could recover the
  // instance without it; it stops voting, as after a lost disk.
  Node n(ThreeNodes(2));
  const Ballot b{3, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(1), b, MakeBatch(b, {Msg(5, 1, "a")})},
                    Entry{Instance(2), b, MakeBatch(b, {Msg(5, 2, "b")})}};
  accept.chosen = Instance(2);
  n.Step(accept);
  n.store.CorruptForTest(Instance(1));
  n.Restart();
  EXPECT_FALSE(n.replica->status().catching_up);
  // Both peers speak; neither has anything chosen.
  Message commit = Make(MessageType::kCommit, 1, 2, b);
  n.Step(commit);
  Message fetch = Make(MessageType::kFetch, 3, 2, Ballot{});
  fetch.instance = Instance(1);
  fetch.instance_last = Instance(1);
  n.Step(fetch);
  EXPECT_TRUE(n.replica->status().catching_up);
  Ready r = n.Step(Make(MessageType::kPrepare, 3, 2, Ballot{9, NodeId(3)}));
  EXPECT_TRUE(OfType(r.messages_after_persist, MessageType::kPromise).empty());
  EXPECT_TRUE(OfType(r.messages, MessageType::kPromise).empty());
}

TEST(Acceptor, CorruptRecordAboveTheFrontierStopsVoting) {
  Node n(ThreeNodes(2));
  const Ballot b{1, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(1), b, MakeNoop(b)}};
  n.Step(accept);
  n.store.CorruptForTest(Instance(1));
  n.Restart();
  Message prepare = Make(MessageType::kPrepare, 3, 2, Ballot{5, NodeId(3)});
  prepare.instance = Instance(1);
  Ready r = n.Step(prepare);
  EXPECT_TRUE(OfType(r.messages_after_persist, MessageType::kPromise).empty());
  EXPECT_TRUE(n.replica->status().storage_failed);
  // It rejoins as a lost disk does: non-voting, durably (a restart keeps it
  // so), asking the peers how far the history goes.
  EXPECT_TRUE(n.replica->status().catching_up);
  EXPECT_EQ(n.store.LoadHardState().catch_up_until, HardState::kProbing);
  for (int i = 0; i < 50; ++i) n.replica->Tick(), n.Drain();
  EXPECT_EQ(n.replica->role(), Role::kFollower);  // never campaigns either
  n.Restart();
  EXPECT_TRUE(n.replica->status().catching_up);
  Ready again = n.Step(prepare);
  EXPECT_TRUE(OfType(again.messages_after_persist, MessageType::kPromise).empty());
}

// Once caught up past everything it could have voted on, it votes again:
// the chosen values fetched from the peers replaced what it could not read.
TEST(Acceptor, ANodeThatCouldNotReadAnAcceptedValueVotesAgainOnceCaughtUp) {
  Config c = ThreeNodes(2);
  c.window_instances_max = 2;
  Node n(c);
  const Ballot b{1, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  accept.entries = {Entry{Instance(1), b, MakeNoop(b)}};
  n.Step(accept);
  n.store.CorruptForTest(Instance(1));
  n.Restart();
  Message prepare = Make(MessageType::kPrepare, 3, 2, Ballot{5, NodeId(3)});
  prepare.instance = Instance(1);
  n.Step(prepare);
  ASSERT_TRUE(n.replica->status().catching_up);
  // Both peers answer the probe: they accepted up to instance 1.
  for (uint32_t peer : {1u, 3u}) {
    Message reply = Make(MessageType::kFetchReply, peer, 2, Ballot{});
    reply.instance = Instance(1);
    reply.instance_last = Instance(1);
    reply.chosen = Instance(1);
    n.Step(reply);
  }
  // The chosen log up to past the target (1 + window 2 + 1 = 4) arrives.
  Message fetched = Make(MessageType::kFetchReply, 1, 2, Ballot{});
  fetched.instance = Instance(1);
  fetched.chosen = Instance(5);
  for (uint64_t i = 1; i <= 5; ++i) fetched.entries.push_back(Entry{Instance(i), b, MakeNoop(b)});
  n.Step(fetched);
  EXPECT_EQ(n.replica->chosen(), Instance(5));
  EXPECT_FALSE(n.replica->status().catching_up);
  EXPECT_FALSE(n.replica->status().storage_failed);
  Message prepare2 = Make(MessageType::kPrepare, 3, 2, Ballot{6, NodeId(3)});
  prepare2.instance = Instance(6);
  Ready r = n.Step(prepare2);
  EXPECT_EQ(OfType(r.messages_after_persist, MessageType::kPromise).size(), 1u);
}

// Several damaged chosen records are repaired at once (a damaged page holds
// many), each fetched again.
TEST(Restart, SeveralUnreadableRecordsAreAllRepaired) {
  Config c = ThreeNodes(2);
  c.host_serves_fetch = true;
  Node n(c);
  const Ballot b{1, NodeId(1)};
  Message accept = Make(MessageType::kAccept, 1, 2, b);
  for (uint64_t i = 1; i <= 6; ++i) {
    accept.entries.push_back(Entry{Instance(i), b, MakeBatch(b, {Msg(5, i, "m")})});
  }
  accept.chosen = Instance(6);
  n.Step(accept);
  for (uint64_t i : {2u, 3u, 5u}) n.replica->ReportUnreadable(Instance(i));
  Ready r = n.Drain();
  std::set<uint64_t> asked, rewritten;
  for (int round = 0; round < 5; ++round) {
    auto fetches = OfType(r.messages, MessageType::kFetch);
    if (fetches.empty()) break;
    Ready next;
    for (const Message& f : fetches) {
      Message reply = Make(MessageType::kFetchReply, f.to.value(), 2, Ballot{});
      reply.instance = f.instance;
      reply.chosen = Instance(6);
      for (Instance i = f.instance; i <= f.instance_last; i = i.next()) {
        asked.insert(i.value());
        reply.entries.push_back(Entry{i, b, MakeBatch(b, {Msg(5, i.value(), "m")})});
      }
      Ready got = n.Step(reply);
      for (const Entry& e : got.entries) rewritten.insert(e.instance.value());
      for (auto& m : got.messages) next.messages.push_back(m);
    }
    r = std::move(next);
  }
  EXPECT_EQ(rewritten, (std::set<uint64_t>{2, 3, 5}));
  EXPECT_TRUE(asked.count(2) && asked.count(3) && asked.count(5));
  // Nothing more is asked for.
  for (int i = 0; i < 30; ++i) {
    n.replica->Tick();
    for (const Message& f : OfType(n.Drain().messages, MessageType::kFetch)) {
      EXPECT_GT(f.instance, Instance(6)) << "asked again for a repaired instance";
    }
  }
}

TEST(SingleNode, ElectsItselfAndCommitsAlone) {
  Config c;
  c.id = NodeId(1);
  c.voters = {NodeId(1)};
  Node n(c);
  n.TickUntil(Role::kLeader);
  ASSERT_EQ(n.replica->role(), Role::kLeader);
  n.replica->Propose({Msg(1, 1, "solo")});
  Ready r = n.Drain();
  ASSERT_EQ(r.applied.size(), 1u);
  EXPECT_EQ(r.applied[0].results.at(0).offset, Offset(0));
}

}  // namespace
}  // namespace ordo::paxos
