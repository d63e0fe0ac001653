// Messages between replicas, as plain structs. The broker converts them to and
// from FlatBuffers (schemas/peer.fbs) at the edge; the core never sees bytes.
#pragma once

#include <cstdint>
#include <vector>

#include "base/chain.h"
#include "paxos/namespace.h"
#include "paxos/types.h"
#include "paxos/value.h"

namespace ORDO_PAXOS_NAMESPACE {

enum class MessageType : uint8_t {
  // Phase 1. ballot: the candidate's; instance: its first instance not known
  // chosen (one prepare covers every instance from there on).
  kPrepare = 0,
  // Answer to kPrepare, sent only once the promise is durable. ballot: the
  // promised one; entries: every value accepted at or above max(instance of
  // the prepare, chosen + 1); chosen: the acceptor's chosen frontier.
  kPromise = 1,
  // Phase 2. ballot: the leader's; entries: instances to accept (ascending);
  // chosen: piggybacked commit (see kCommit); chain: chain hints.
  kAccept = 2,
  // Answer to kAccept, sent only once the entries are durable. ballot: the
  // accepted one; [instance, instance_last]: the instances accepted.
  kAccepted = 3,
  // A prepare or accept refused by P1a. ballot: the refused ballot;
  // promised: the acceptor's promise (so the proposer can jump ahead).
  kReject = 4,
  // Heartbeat and commit notification from the leader: "every instance up to
  // `chosen` is chosen, and those you accepted at `ballot` hold the chosen
  // value"; chain: chain hints.
  kCommit = 5,
  // A follower's answer to kCommit: its chosen frontier in `chosen`, so the
  // leader knows it is alive and how far it lags.
  kCommitReply = 6,
  // A learner asks any peer for chosen instances [instance, instance_last].
  kFetch = 7,
  // Chosen entries from `instance` on (possibly fewer than asked, possibly
  // none); chosen: the sender's frontier; promised: its promise;
  // first_retained: its first instance still in the log (below it, only its
  // snapshot has the state: a node needing those installs a snapshot);
  // ballot: the leader's ballot as the sender knows it (zero: none known),
  // which tells a learner whom to redirect publishes to; instance_last: the
  // highest instance the sender accepted (how far a voter that lost its disk
  // must catch up before it votes again).
  kFetchReply = 8,
  // Pre-vote, before phase 1: "would you promise `ballot`?" Nothing is
  // persisted on either side, so a node that cannot win (cut off, or just
  // restarted before it heard the leader) never raises anyone's promise and
  // cannot disrupt a healthy leader.
  kPreVote = 9,
  // Yes to kPreVote: no live leader is heard here and `ballot` is above the
  // promise. A no is a kReject.
  kPreVoteGrant = 10,
  // From a leader that a configuration entry just removed (or made a
  // learner): "campaign now", to the most caught-up voter of the new
  // configuration, so the handover costs no election timeout. ballot: the
  // sender's leadership ballot.
  kTimeoutNow = 11,
};

const char* ToString(MessageType type);

// The stream's chain (paxos/applied_state.h) across one instance that
// appended messages, as the sender derived it when it applied the instance:
// a receiver whose chain before `instance` is `before` may take `after`
// instead of hashing the instance's messages again (Config::chain_hints).
struct ChainHint {
  Instance instance{};
  ::ordo::ChainValue before;
  ::ordo::ChainValue after;
  bool operator==(const ChainHint&) const = default;
};

struct Message {
  MessageType type = MessageType::kCommit;
  NodeId from{};
  NodeId to{};
  Ballot ballot{};
  Ballot promised{};
  Instance instance{};
  Instance instance_last{};
  Instance chosen{};
  Instance first_retained{};  // kFetchReply only
  std::vector<Entry> entries;
  std::vector<ChainHint> chain;  // kAccept, kCommit: ascending instances
};

}  // namespace ordo::paxos
