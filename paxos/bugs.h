// Mutants: deliberately broken variants of the core and of the node loop
// around it, compiled only into the simulator's copies (targets paxos_sim
// and ordo_node_sim, which define ORDO_PAXOS_BUGS), to prove that the
// simulator's checker catches real bugs. `build/ordo-sim --bug list` lists
// them; tests/sim/sim_test.cc requires each to be caught within 20 seeds on
// 3 and on 5 nodes. The production build has none of this: only the enum
// is declared there, and every check of it is a constant false.
#pragma once

#include <cstdint>
#include <span>

#include "paxos/namespace.h"

namespace ORDO_PAXOS_NAMESPACE {

enum class Bug : uint8_t {
  kNone = 0,
  // In the core.
  kForgetPromise,        // acceptor forgets its promise on every new prepare/accept (P1a)
  kOwnValue,             // recovery re-proposes its own value, ignoring the promises
  kOutOfOrderApply,      // learner applies instances as soon as they are chosen
  kMinorityCommit,       // leader counts an instance chosen on its own vote
  kAcceptBelowPromise,   // acceptor accepts at a ballot below its promise (phase 2 only)
  kAckBeforeQuorumSync,  // leader counts its own accept before it is durable
  kConfigBeforeChosen,   // a configuration takes effect when assigned or accepted, not chosen
  kStaleChainHint,       // the leader hints an instance's chain before it as the chain after
  // In the node loop and the storage under it (node/, tests/sim/sim_disk).
  kVoteBeforePersist,      // promises and accepted replies leave before the write
  kSkipJournalSync,        // the write before a vote is not synced (lost at a crash)
  kForgetDeferredChosen,   // the lost-disk mark is deferred like the chosen mark
  kServeUnverifiedRecord,  // a record that fails its check is read as if good
  kTrustTruncatedJournal,  // a journal that lost synced records is replayed as if whole
};

#ifdef ORDO_PAXOS_BUGS
struct BugInfo {
  Bug bug;
  const char* name;
  const char* what;
};
// Every mutant but kNone, in enum order.
std::span<const BugInfo> AllBugs();
const char* ToString(Bug bug);
bool ParseBug(const char* name, Bug* out);
#endif

}  // namespace ordo::paxos
