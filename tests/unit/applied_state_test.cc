// The applied state: offsets, exactly-once per (producer, sequence), and the
// leader-barrier rule.
#include <gtest/gtest.h>

#include "paxos/applied_state.h"

namespace ordo::paxos {
namespace {

ClientMessage Msg(uint64_t producer, uint64_t seq) {
  return ClientMessage{ProducerId(producer), seq, "", "p" + std::to_string(seq)};
}

const Ballot kB1{1, NodeId(1)};
const Ballot kB2{2, NodeId(2)};

TEST(AppliedState, AssignsConsecutiveOffsetsAcrossInstances) {
  AppliedState s;
  AppliedInstance a = s.Apply(Instance(1), MakeBatch(kB1, {Msg(1, 1), Msg(2, 1)}));
  AppliedInstance b = s.Apply(Instance(2), MakeNoop(kB1));
  AppliedInstance c = s.Apply(Instance(3), MakeBatch(kB1, {Msg(1, 2)}));
  EXPECT_EQ(a.first_offset, Offset(0));
  EXPECT_EQ(a.appended, 2u);
  EXPECT_EQ(a.results[1].offset, Offset(1));
  EXPECT_EQ(b.appended, 0u);
  EXPECT_EQ(c.first_offset, Offset(2));
  EXPECT_EQ(s.next_offset(), Offset(3));
  EXPECT_EQ(s.applied(), Instance(3));
}

TEST(AppliedState, RetryReturnsTheOriginalOffsetAndIsNotStoredTwice) {
  AppliedState s;
  s.Apply(Instance(1), MakeBatch(kB1, {Msg(1, 1), Msg(1, 2)}));
  AppliedInstance retry = s.Apply(Instance(2), MakeBatch(kB1, {Msg(1, 1), Msg(1, 2), Msg(1, 3)}));
  ASSERT_EQ(retry.results.size(), 3u);
  EXPECT_EQ(retry.results[0].outcome, PublishOutcome::kDuplicate);
  EXPECT_TRUE(retry.results[0].offset_known);
  EXPECT_EQ(retry.results[0].offset, Offset(0));
  EXPECT_EQ(retry.results[1].offset, Offset(1));
  EXPECT_EQ(retry.results[2].outcome, PublishOutcome::kAppended);
  EXPECT_EQ(retry.results[2].offset, Offset(2));
  EXPECT_EQ(retry.appended, 1u);
  EXPECT_EQ(s.next_offset(), Offset(3));
}

TEST(AppliedState, SequenceGapIsRejectedNotStored) {
  AppliedState s;
  s.Apply(Instance(1), MakeBatch(kB1, {Msg(1, 1)}));
  AppliedInstance gap = s.Apply(Instance(2), MakeBatch(kB1, {Msg(1, 3)}));
  EXPECT_EQ(gap.results[0].outcome, PublishOutcome::kOutOfSequence);
  EXPECT_EQ(gap.appended, 0u);
  EXPECT_EQ(s.LastSequence(ProducerId(1)), 1u);
  // A new producer must start at 1.
  AppliedInstance fresh = s.Apply(Instance(3), MakeBatch(kB1, {Msg(7, 2)}));
  EXPECT_EQ(fresh.results[0].outcome, PublishOutcome::kOutOfSequence);
  EXPECT_EQ(s.producer_count(), 1u);
}

TEST(AppliedState, BatchFromBeforeTheLatestBarrierIsSkipped) {
  AppliedState s;
  s.Apply(Instance(1), MakeBarrier(kB2));
  AppliedInstance phantom = s.Apply(Instance(2), MakeBatch(kB1, {Msg(1, 1)}));
  EXPECT_EQ(phantom.results[0].outcome, PublishOutcome::kStaleLeader);
  EXPECT_EQ(phantom.appended, 0u);
  EXPECT_EQ(s.LastSequence(ProducerId(1)), 0u);  // the retry will be appended
  AppliedInstance current = s.Apply(Instance(3), MakeBatch(kB2, {Msg(1, 1)}));
  EXPECT_EQ(current.results[0].outcome, PublishOutcome::kAppended);
}

TEST(AppliedState, AnOldBarrierRecoveredLateDoesNotLowerTheBar) {
  AppliedState s;
  s.Apply(Instance(1), MakeBarrier(kB2));
  s.Apply(Instance(2), MakeBarrier(kB1));
  EXPECT_EQ(s.barrier(), kB2);
  AppliedInstance phantom = s.Apply(Instance(3), MakeBatch(kB1, {Msg(1, 1)}));
  EXPECT_EQ(phantom.results[0].outcome, PublishOutcome::kStaleLeader);
}

TEST(AppliedState, RemembersOffsetsOfRecentSequencesOnly) {
  AppliedState s;
  const uint64_t n = AppliedState::kProducerHistoryMax + 10;
  std::vector<ClientMessage> batch;
  for (uint64_t seq = 1; seq <= n; ++seq) batch.push_back(Msg(1, seq));
  s.Apply(Instance(1), MakeBatch(kB1, std::move(batch)));
  AppliedInstance retry = s.Apply(Instance(2), MakeBatch(kB1, {Msg(1, 5), Msg(1, n)}));
  EXPECT_EQ(retry.results[0].outcome, PublishOutcome::kDuplicate);
  EXPECT_FALSE(retry.results[0].offset_known);  // too old to remember
  EXPECT_TRUE(retry.results[1].offset_known);
  EXPECT_EQ(retry.results[1].offset, Offset(n - 1));
}

TEST(AppliedState, InterleavedProducersKeepTheirOwnOffsets) {
  AppliedState s;
  s.Apply(Instance(1), MakeBatch(kB1, {Msg(1, 1), Msg(2, 1), Msg(1, 2), Msg(2, 2)}));
  AppliedInstance retry = s.Apply(Instance(2), MakeBatch(kB1, {Msg(2, 1), Msg(1, 2)}));
  EXPECT_EQ(retry.results[0].offset, Offset(1));
  EXPECT_EQ(retry.results[1].offset, Offset(2));
}

}  // namespace
}  // namespace ordo::paxos

namespace ordo::paxos {
namespace {

TEST(AppliedState, AConfigurationEntryIsTheMembershipAndTheSnapshotCarriesIt) {
  AppliedState s;
  EXPECT_TRUE(s.membership().empty());  // the bootstrap holds until an entry is applied
  Membership m;
  m.members = {Member{NodeId(3), true, "h3:1", "h3:2", "k3"},
               Member{NodeId(1), false, "h1:1", "", ""}};
  AppliedInstance a = s.Apply(Instance(1), MakeConfig(Ballot{1, NodeId(1)}, m));
  EXPECT_EQ(a.appended, 0u);
  ASSERT_EQ(s.membership().members.size(), 2u);
  EXPECT_EQ(s.membership().members[0].id, NodeId(1));  // kept in ascending id
  EXPECT_EQ(s.membership().Voters(), std::vector<NodeId>{NodeId(3)});
  const AppliedSnapshot snap = s.Snapshot();
  EXPECT_EQ(snap.membership, s.membership());
  AppliedState restored(snap);
  EXPECT_EQ(restored.membership(), s.membership());
}

}  // namespace
}  // namespace ordo::paxos

namespace ordo::paxos {
namespace {

// Known vectors of the chain (docs/protocol.md, "The chain"), computed
// from the byte layout with Python's hashlib.blake2b(digest_size=32):
// an independent implementation, so a change to the layout fails here.
TEST(Chain, KnownVectors) {
  ChainStep first(ChainValue{}, 2, 0, 2);
  first.Add(7, 1, "", "hello");
  first.Add(7, 2, "key", "world");
  const ChainValue c1 = first.Finish();
  EXPECT_EQ(c1.Hex(), "23a8639295749e4f4984032d832bc7a7551e8d144ea31cc0d834040aaad72f22");
  // A key longer than the one-update fast path, and zero bytes in a payload.
  ChainStep second(c1, 5, 2, 1);
  second.Add(9, 1, std::string(100, 'k'), std::string(300, '\0'));
  EXPECT_EQ(second.Finish().Hex(),
            "76690f5e2c1bde1591ae58ee939fbf7dea1d4510bb488cdee013f93adebca3a3");
  ChainValue parsed;
  ASSERT_TRUE(ChainValue::FromHex(c1.Hex(), &parsed));
  EXPECT_EQ(parsed, c1);
  EXPECT_FALSE(ChainValue::FromHex("abc", &parsed));
  EXPECT_FALSE(ChainValue::FromHex(std::string(64, 'g'), &parsed));
  EXPECT_TRUE(ChainValue{}.zero());
}

TEST(AppliedState, TheChainCoversAppendedMessagesOnly) {
  AppliedState s;
  const AppliedInstance a = s.Apply(Instance(1), MakeBatch(kB1, {Msg(1, 1), Msg(1, 2)}));
  EXPECT_TRUE(a.chain_before.zero());
  ChainStep expected(ChainValue{}, 1, 0, 2);
  expected.Add(1, 1, "", "p1");
  expected.Add(1, 2, "", "p2");
  EXPECT_EQ(a.chain, expected.Finish());
  EXPECT_EQ(s.chain(), a.chain);
  // A no-op, a barrier and a batch of duplicates leave it as it was.
  EXPECT_EQ(s.Apply(Instance(2), MakeNoop(kB1)).chain, a.chain);
  EXPECT_EQ(s.Apply(Instance(3), MakeBarrier(kB1)).chain, a.chain);
  const AppliedInstance dup = s.Apply(Instance(4), MakeBatch(kB1, {Msg(1, 2)}));
  EXPECT_EQ(dup.appended, 0u);
  EXPECT_EQ(dup.chain, a.chain);
  // A batch with a duplicate and a new message chains only the new one.
  const AppliedInstance mixed = s.Apply(Instance(5), MakeBatch(kB1, {Msg(1, 2), Msg(1, 3)}));
  EXPECT_EQ(mixed.chain_before, a.chain);
  ChainStep step(a.chain, 5, 2, 1);
  step.Add(1, 3, "", "p3");
  EXPECT_EQ(mixed.chain, step.Finish());
  // A snapshot carries it; a replica started from it goes on the same way.
  AppliedState restored(s.Snapshot());
  EXPECT_EQ(restored.chain(), s.chain());
  EXPECT_EQ(restored.Apply(Instance(6), MakeBatch(kB1, {Msg(2, 1)})).chain,
            s.Apply(Instance(6), MakeBatch(kB1, {Msg(2, 1)})).chain);
}

}  // namespace
}  // namespace ordo::paxos
