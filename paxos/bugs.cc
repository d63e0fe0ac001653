#include "paxos/bugs.h"

#ifdef ORDO_PAXOS_BUGS
#include <cstring>
#include <iterator>

namespace ORDO_PAXOS_NAMESPACE {
namespace {
constexpr BugInfo kBugs[] = {
    {Bug::kForgetPromise, "forget-promise",
     "an acceptor forgets its promise on every new prepare or accept"},
    {Bug::kOwnValue, "own-value", "recovery re-proposes its own value, ignoring the promises"},
    {Bug::kOutOfOrderApply, "out-of-order-apply",
     "a learner applies instances as soon as they are chosen, not in order"},
    {Bug::kMinorityCommit, "minority-commit",
     "the leader counts an instance chosen on its own vote"},
    {Bug::kAcceptBelowPromise, "accept-below-promise",
     "an acceptor accepts at a ballot below its promise"},
    {Bug::kAckBeforeQuorumSync, "ack-before-quorum-sync",
     "the leader counts its own accept (and acks) before its write is durable"},
    {Bug::kConfigBeforeChosen, "config-before-chosen",
     "a configuration takes effect when the leader assigns it (or an acceptor accepts it), "
     "not once it is chosen: no drain, and the next change may follow at once"},
    {Bug::kStaleChainHint, "stale-chain-hint",
     "the leader's chain hint for an instance gives the chain before it as the one after"},
    {Bug::kVoteBeforePersist, "vote-before-persist",
     "promises and accepted replies are sent before the write that backs them"},
    {Bug::kSkipJournalSync, "skip-journal-sync",
     "the journal record behind a vote is written but not synced"},
    {Bug::kForgetDeferredChosen, "forget-deferred-chosen",
     "the lost-disk mark waits with the chosen mark (not re-derivable: lost at a crash)"},
    {Bug::kServeUnverifiedRecord, "serve-unverified-record",
     "a stored record that fails its checksum is read and served as good"},
    {Bug::kTrustTruncatedJournal, "trust-truncated-journal",
     "a journal that lost records it had synced is replayed as if whole"},
};
}  // namespace

std::span<const BugInfo> AllBugs() { return kBugs; }

const char* ToString(Bug bug) {
  if (bug == Bug::kNone) return "none";
  for (const BugInfo& b : kBugs) {
    if (b.bug == bug) return b.name;
  }
  return "?";
}

bool ParseBug(const char* name, Bug* out) {
  if (std::strcmp(name, "none") == 0) {
    *out = Bug::kNone;
    return true;
  }
  for (const BugInfo& b : kBugs) {
    if (std::strcmp(b.name, name) == 0) {
      *out = b.bug;
      return true;
    }
  }
  return false;
}

}  // namespace ordo::paxos
#endif
