// node::NodeLoop: the durability policy, one rule per test, against a
// storage and a transport that record the order of what happens.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "node/memory_storage.h"
#include "node/node_loop.h"
#include "paxos/replica.h"

namespace ordo::node {
namespace {

using paxos::Ballot;
using paxos::Entry;
using paxos::Instance;
using paxos::Message;
using paxos::MessageType;
using paxos::NodeId;

// Storage that logs each write's durability; can be made to fail.
class RecordingStorage final : public Storage {
 public:
  explicit RecordingStorage(std::vector<std::string>* log) : log_(log) {}
  paxos::HardState LoadHardState() const override { return mem_.LoadHardState(); }
  Instance LastInstance() const override { return mem_.LastInstance(); }
  paxos::StoreCode Get(Instance i, Entry* out) const override { return mem_.Get(i, out); }
  Instance FirstInstance() const override { return mem_.FirstInstance(); }
  std::optional<paxos::AppliedSnapshot> LoadSnapshot() const override {
    return mem_.LoadSnapshot();
  }
  Status Write(const paxos::HardState& h, std::span<const Entry> entries,
               std::span<const paxos::AppliedInstance> applied, Durability d) override {
    if (fail) return Status::Storage("disk full");
    log_->push_back(std::string("write:") + ToString(d) + " entries=" +
                    std::to_string(entries.size()) + " applied=" + std::to_string(applied.size()));
    return mem_.Write(h, entries, applied, d);
  }
  Status MakeReadable(Instance last) override {
    log_->push_back("readable:" + std::to_string(last.value()));
    return Status::Ok();
  }
  bool fail = false;

 private:
  std::vector<std::string>* log_;
  MemoryStorage mem_;
};

struct Rig final : Host, Transport {
  explicit Rig(paxos::Config c) : storage(&log) {
    c.id = NodeId(2);
    c.voters = {NodeId(1), NodeId(2), NodeId(3)};
    replica = std::make_unique<paxos::Replica>(c, storage);
    loop = std::make_unique<NodeLoop>(*replica, storage, *this, *this);
  }
  void Send(const Message& m) override { log.push_back(std::string("send:") + ToString(m.type)); }
  void OnApplied(std::span<const paxos::AppliedInstance> applied) override {
    if (!applied.empty()) log.push_back("applied:" + std::to_string(applied.size()));
  }
  void ServeFetch(paxos::FetchToServe f) override {
    log.push_back("serve:" + std::to_string(f.last.value()));
  }
  void OnSnapshotPoint(const paxos::AppliedSnapshot& s) override {
    log.push_back("snapshot:" + std::to_string(s.instance.value()));
  }
  Status Step(const Message& m) {
    replica->Step(m);
    return loop->Drain();
  }
  size_t Index(const std::string& prefix) const {
    for (size_t k = 0; k < log.size(); ++k) {
      if (log[k].rfind(prefix, 0) == 0) return k;
    }
    return SIZE_MAX;
  }

  std::vector<std::string> log;
  RecordingStorage storage;
  std::unique_ptr<paxos::Replica> replica;
  std::unique_ptr<NodeLoop> loop;
};

// A message from the leader (node 1) to node 2, saying that everything up
// to `chosen` is chosen.
Message FromLeader(MessageType type, Ballot b, Instance chosen) {
  Message m;
  m.type = type;
  m.from = NodeId(1);
  m.to = NodeId(2);
  m.ballot = b;
  m.chosen = chosen;
  return m;
}

Message Commit(Ballot b, Instance chosen) { return FromLeader(MessageType::kCommit, b, chosen); }

Message Accept(Ballot b, uint64_t first, uint64_t count, Instance chosen = Instance()) {
  Message m = FromLeader(MessageType::kAccept, b, chosen);
  for (uint64_t i = first; i < first + count; ++i) {
    m.entries.push_back(Entry{Instance(i), b,
                              paxos::MakeBatch(b, {paxos::ClientMessage{paxos::ProducerId(7), i,
                                                                        "", "x"}})});
  }
  return m;
}


std::string Dump(const std::vector<std::string>& log) {
  std::string s;
  for (const std::string& e : log) s += e + "; ";
  return s;
}

TEST(NodeLoop, AnAcceptedReplyLeavesOnlyAfterASyncedWrite) {
  Rig rig(paxos::Config{});
  ASSERT_TRUE(rig.Step(Accept(Ballot{1, NodeId(1)}, 1, 2)).ok());
  const size_t write = rig.Index("write:sync entries=2");
  const size_t sent = rig.Index("send:accepted");
  ASSERT_NE(write, SIZE_MAX) << Dump(rig.log);
  ASSERT_NE(sent, SIZE_MAX) << Dump(rig.log);
  EXPECT_LT(write, sent) << Dump(rig.log);
}

TEST(NodeLoop, APromiseLeavesOnlyAfterASyncedWrite) {
  Rig rig(paxos::Config{});
  Message prepare;
  prepare.type = MessageType::kPrepare;
  prepare.from = NodeId(3);
  prepare.to = NodeId(2);
  prepare.ballot = Ballot{4, NodeId(3)};
  prepare.instance = Instance(1);
  ASSERT_TRUE(rig.Step(prepare).ok());
  EXPECT_LT(rig.Index("write:sync"), rig.Index("send:promise")) << Dump(rig.log);
  EXPECT_NE(rig.Index("send:promise"), SIZE_MAX) << Dump(rig.log);
}

TEST(NodeLoop, OnlyTheChosenMarkWaitsAndIsWrittenVolatileOnFlush) {
  Rig rig(paxos::Config{});
  const Ballot b{1, NodeId(1)};
  ASSERT_TRUE(rig.Step(Accept(b, 1, 2)).ok());
  rig.log.clear();
  // The leader says 1..2 are chosen: applied (acked) at once, nothing written.
  ASSERT_TRUE(rig.Step(Commit(b, Instance(2))).ok());
  EXPECT_NE(rig.Index("applied:2"), SIZE_MAX) << Dump(rig.log);
  EXPECT_EQ(rig.Index("write:"), SIZE_MAX) << Dump(rig.log);
  EXPECT_TRUE(rig.loop->has_deferred());
  EXPECT_EQ(rig.storage.LoadHardState().chosen, Instance());
  ASSERT_TRUE(rig.loop->FlushDeferred().ok());
  EXPECT_NE(rig.Index("write:volatile entries=0 applied=2"), SIZE_MAX) << Dump(rig.log);
  EXPECT_EQ(rig.storage.LoadHardState().chosen, Instance(2));
}

TEST(NodeLoop, WhatWaitedGoesWithTheNextSyncedWrite) {
  Rig rig(paxos::Config{});
  const Ballot b{1, NodeId(1)};
  ASSERT_TRUE(rig.Step(Accept(b, 1, 1)).ok());
  ASSERT_TRUE(rig.Step(Accept(b, 2, 1, Instance(1))).ok());  // chosen 1, accept 2
  EXPECT_NE(rig.Index("write:sync entries=1 applied=1"), SIZE_MAX) << Dump(rig.log);
  EXPECT_FALSE(rig.loop->has_deferred());
}

TEST(NodeLoop, AFailedWriteSendsNothingThatDependsOnIt) {
  Rig rig(paxos::Config{});
  rig.storage.fail = true;
  const Status s = rig.Step(Accept(Ballot{1, NodeId(1)}, 1, 1));
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(rig.Index("send:accepted"), SIZE_MAX) << Dump(rig.log);
}

TEST(NodeLoop, AFetchIsServedOnlyOnceItsEntriesAreReadable) {
  paxos::Config c;
  c.host_serves_fetch = true;
  Rig rig(c);
  const Ballot b{1, NodeId(1)};
  ASSERT_TRUE(rig.Step(Accept(b, 1, 3, Instance(3))).ok());
  rig.log.clear();
  Message fetch;
  fetch.type = MessageType::kFetch;
  fetch.from = NodeId(3);
  fetch.to = NodeId(2);
  fetch.instance = Instance(1);
  fetch.instance_last = Instance(3);
  ASSERT_TRUE(rig.Step(fetch).ok());
  ASSERT_NE(rig.Index("serve:"), SIZE_MAX) << Dump(rig.log);
  EXPECT_LT(rig.Index("readable:"), rig.Index("serve:")) << Dump(rig.log);
}

TEST(NodeLoop, ASnapshotPointIsACheckpointWrittenBeforeTheSnapshot) {
  paxos::Config c;
  c.snapshot_interval_instances = 2;
  Rig rig(c);
  ASSERT_TRUE(rig.Step(Accept(Ballot{1, NodeId(1)}, 1, 2)).ok());
  rig.log.clear();
  ASSERT_TRUE(rig.Step(Commit(Ballot{1, NodeId(1)}, Instance(2))).ok());
  ASSERT_NE(rig.Index("snapshot:2"), SIZE_MAX) << Dump(rig.log);
  EXPECT_LT(rig.Index("write:checkpoint"), rig.Index("snapshot:2")) << Dump(rig.log);
}

}  // namespace
}  // namespace ordo::node
