// The replicated state machine every broker applies chosen instances to, in
// instance order: it assigns offsets, enforces exactly-once publishing per
// (producer, sequence), and applies the leader-barrier rule. Deterministic:
// every replica that applies the same instances reaches the same state.
#pragma once

#include <cstdint>
#include <deque>
#include <unordered_map>
#include <vector>

#include "base/chain.h"
#include "paxos/namespace.h"
#include "paxos/types.h"
#include "paxos/value.h"

namespace ORDO_PAXOS_NAMESPACE {

using ::ordo::ChainStep;
using ::ordo::ChainValue;

enum class PublishOutcome : uint8_t {
  kAppended = 0,       // stored at `offset`
  kDuplicate = 1,      // a retry of an applied message; `offset` is the original
                       // one when still remembered (offset_known)
  kOutOfSequence = 2,  // sequence skips ahead of the producer's last + 1: not
                       // stored; the producer must resend from last + 1
  kStaleLeader = 3,    // the batch came from a leader older than the latest
                       // barrier (phantom-log rule): not stored, retry
};

const char* ToString(PublishOutcome outcome);

struct MessageResult {
  ProducerId producer{};
  uint64_t sequence = 0;
  PublishOutcome outcome = PublishOutcome::kAppended;
  bool offset_known = false;
  Offset offset{};
};

// What applying one chosen instance did.
struct AppliedInstance {
  Instance instance{};
  ValuePtr value;
  Offset first_offset{};  // offset of the first appended message (next offset if none)
  uint32_t appended = 0;  // messages that got new offsets, consecutive from first_offset
  std::vector<MessageResult> results;  // one per message of a batch, in order
  // The stream's chain (paxos/chain.h) before and after this instance
  // (equal when it appended nothing).
  ChainValue chain_before;
  ChainValue chain;
};

// The applied state at one instance, in a canonical form (producers sorted
// by id): what a snapshot holds besides the broker's own per-key view. Two
// replicas that applied the same log to the same instance produce equal
// snapshots, byte for byte once encoded.
struct ProducerSnapshot {
  struct Run {
    uint64_t sequence_first = 0;
    uint64_t offset_first = 0;
    uint64_t count = 0;
    bool operator==(const Run&) const = default;
  };
  ProducerId id{};
  uint64_t last_sequence = 0;
  std::vector<Run> runs;  // oldest first
  bool operator==(const ProducerSnapshot&) const = default;
};

struct AppliedSnapshot {
  Instance instance{};  // every instance up to here is applied
  Offset next_offset{};
  Ballot barrier{};
  std::vector<ProducerSnapshot> producers;  // ascending id
  // The membership in effect after `instance` (empty: no configuration
  // entry chosen yet, the bootstrap one holds).
  Membership membership;
  ChainValue chain;  // the stream's chain at next_offset
  bool operator==(const AppliedSnapshot&) const = default;
};

class AppliedState {
 public:
  AppliedState() = default;
  // The state a snapshot describes; applying goes on at snapshot.instance + 1.
  explicit AppliedState(const AppliedSnapshot& snapshot);
  AppliedSnapshot Snapshot() const;

  // How many recent sequences per producer keep their offsets, so a late retry
  // still learns its original offset. Clients keep fewer than this in flight.
  static constexpr uint64_t kProducerHistoryMax = 1 << 16;

  // after_hint: when not null, the chain after this instance as another
  // replica derived it from this replica's chain before (the caller checked
  // that), taken instead of hashing the appended messages.
  AppliedInstance Apply(Instance instance, const ValuePtr& value,
                        const ChainValue* after_hint = nullptr);

  Instance applied() const { return applied_; }
  Offset next_offset() const { return next_offset_; }
  Ballot barrier() const { return barrier_; }
  // The last configuration entry applied (empty: none yet).
  const Membership& membership() const { return membership_; }
  // The stream's chain at next_offset() (paxos/chain.h).
  const ChainValue& chain() const { return chain_; }
  size_t producer_count() const { return producers_.size(); }
  // The producer's last applied sequence (0 if none).
  uint64_t LastSequence(ProducerId producer) const;

 private:
  // Consecutive sequences that got consecutive offsets.
  struct Run {
    uint64_t sequence_first;
    uint64_t offset_first;
    uint64_t count;
  };
  struct Producer {
    uint64_t last_sequence = 0;
    uint64_t history = 0;  // sequences covered by runs
    std::deque<Run> runs;  // oldest first
  };

  static void Remember(Producer& p, uint64_t sequence, uint64_t offset);
  static bool Lookup(const Producer& p, uint64_t sequence, uint64_t* offset);

  Instance applied_{};
  Offset next_offset_{0};
  Ballot barrier_{};
  Membership membership_;
  ChainValue chain_;
  std::unordered_map<ProducerId, Producer> producers_;
};

}  // namespace ordo::paxos
