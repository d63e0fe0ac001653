#include "paxos/applied_state.h"

#include <algorithm>

#include "paxos/assert.h"

namespace ORDO_PAXOS_NAMESPACE {

const char* ToString(PublishOutcome outcome) {
  switch (outcome) {
    case PublishOutcome::kAppended: return "appended";
    case PublishOutcome::kDuplicate: return "duplicate";
    case PublishOutcome::kOutOfSequence: return "out of sequence";
    case PublishOutcome::kStaleLeader: return "stale leader";
  }
  return "?";
}

AppliedState::AppliedState(const AppliedSnapshot& snapshot)
    : applied_(snapshot.instance),
      next_offset_(snapshot.next_offset),
      barrier_(snapshot.barrier),
      membership_(snapshot.membership),
      chain_(snapshot.chain) {
  for (const ProducerSnapshot& ps : snapshot.producers) {
    Producer& p = producers_[ps.id];
    p.last_sequence = ps.last_sequence;
    for (const ProducerSnapshot::Run& r : ps.runs) {
      p.runs.push_back(Run{r.sequence_first, r.offset_first, r.count});
      p.history += r.count;
    }
  }
}

AppliedSnapshot AppliedState::Snapshot() const {
  AppliedSnapshot s;
  s.instance = applied_;
  s.next_offset = next_offset_;
  s.barrier = barrier_;
  s.membership = membership_;
  s.chain = chain_;
  s.producers.reserve(producers_.size());
  for (const auto& [id, p] : producers_) {
    ProducerSnapshot ps;
    ps.id = id;
    ps.last_sequence = p.last_sequence;
    ps.runs.reserve(p.runs.size());
    for (const Run& r : p.runs) ps.runs.push_back({r.sequence_first, r.offset_first, r.count});
    s.producers.push_back(std::move(ps));
  }
  std::sort(s.producers.begin(), s.producers.end(),
            [](const ProducerSnapshot& a, const ProducerSnapshot& b) { return a.id < b.id; });
  return s;
}

uint64_t AppliedState::LastSequence(ProducerId producer) const {
  auto it = producers_.find(producer);
  return it == producers_.end() ? 0 : it->second.last_sequence;
}

void AppliedState::Remember(Producer& p, uint64_t sequence, uint64_t offset) {
  if (!p.runs.empty()) {
    Run& r = p.runs.back();
    if (r.sequence_first + r.count == sequence && r.offset_first + r.count == offset) {
      ++r.count;
    } else {
      p.runs.push_back(Run{sequence, offset, 1});
    }
  } else {
    p.runs.push_back(Run{sequence, offset, 1});
  }
  ++p.history;
  // Forget the oldest sequences beyond the history bound.
  while (p.history > kProducerHistoryMax) {
    Run& oldest = p.runs.front();
    uint64_t drop = std::min(oldest.count, p.history - kProducerHistoryMax);
    oldest.sequence_first += drop;
    oldest.offset_first += drop;
    oldest.count -= drop;
    p.history -= drop;
    if (oldest.count == 0) p.runs.pop_front();
  }
}

bool AppliedState::Lookup(const Producer& p, uint64_t sequence, uint64_t* offset) {
  for (auto it = p.runs.rbegin(); it != p.runs.rend(); ++it) {
    if (sequence >= it->sequence_first && sequence < it->sequence_first + it->count) {
      *offset = it->offset_first + (sequence - it->sequence_first);
      return true;
    }
    if (sequence >= it->sequence_first + it->count) return false;
  }
  return false;
}

AppliedInstance AppliedState::Apply(Instance instance, const ValuePtr& value,
                                    const ChainValue* after_hint) {
  // Instances are applied strictly in order, each exactly once.
  PAXOS_ASSERT(instance == applied_.next());
  PAXOS_ASSERT(value != nullptr);
  applied_ = instance;

  AppliedInstance out;
  out.instance = instance;
  out.value = value;
  out.first_offset = next_offset_;
  out.chain_before = chain_;
  out.chain = chain_;

  switch (value->kind) {
    case ValueKind::kNoop:
      return out;
    case ValueKind::kBarrier:
      // The max, not the last: an old leader's barrier recovered late must not
      // lower the bar.
      barrier_ = std::max(barrier_, value->origin);
      return out;
    case ValueKind::kConfig:
      membership_ = value->membership;
      return out;
    case ValueKind::kBatch:
      break;
  }

  out.results.reserve(value->messages.size());
  const bool stale = value->origin < barrier_;
  for (const ClientMessage& m : value->messages) {
    MessageResult r;
    r.producer = m.producer;
    r.sequence = m.sequence;
    if (stale) {
      r.outcome = PublishOutcome::kStaleLeader;
      out.results.push_back(r);
      continue;
    }
    Producer& p = producers_[m.producer];
    if (m.sequence == p.last_sequence + 1) {
      r.outcome = PublishOutcome::kAppended;
      r.offset_known = true;
      r.offset = next_offset_;
      Remember(p, m.sequence, next_offset_.value());
      p.last_sequence = m.sequence;
      next_offset_ = next_offset_.next();
      ++out.appended;
    } else if (m.sequence <= p.last_sequence) {
      r.outcome = PublishOutcome::kDuplicate;
      uint64_t offset = 0;
      r.offset_known = Lookup(p, m.sequence, &offset);
      r.offset = Offset(offset);
    } else {
      r.outcome = PublishOutcome::kOutOfSequence;
      if (p.last_sequence == 0 && p.runs.empty()) producers_.erase(m.producer);
    }
    out.results.push_back(r);
  }
  if (out.appended > 0 && after_hint != nullptr) {
    chain_ = out.chain = *after_hint;
  } else if (out.appended > 0) {
    ChainStep step(chain_, instance.value(), out.first_offset.value(), out.appended);
    for (size_t i = 0; i < out.results.size(); ++i) {
      if (out.results[i].outcome != PublishOutcome::kAppended) continue;
      const ClientMessage& m = value->messages[i];
      step.Add(m.producer.value(), m.sequence, m.key.view(), m.payload.view());
    }
    chain_ = out.chain = step.Finish();
  }
  return out;
}

}  // namespace ordo::paxos
