#include "tests/sim/sim_disk.h"

#include <iterator>

namespace ordo::sim {

using paxos::Entry;
using paxos::Instance;
using paxos::StoreCode;

paxos::Instance SimDisk::LastInstance() const {
  return live_.entries.empty() ? paxos::kNoInstance : live_.entries.rbegin()->first;
}

StoreCode SimDisk::Get(Instance instance, Entry* out) const {
  if (instance < live_.first) return StoreCode::kNotFound;
  auto it = live_.entries.find(instance);
  if (it == live_.entries.end()) return StoreCode::kNotFound;
  if (live_.rotten.count(instance)) {
    if (bug_ != paxos::Bug::kServeUnverifiedRecord) return StoreCode::kCorrupt;
    // Broken on purpose: the rotten bytes are decoded and trusted.
    paxos::Value v = *it->second.value;
    if (v.kind == paxos::ValueKind::kBatch && !v.messages.empty()) {
      std::string payload = v.messages.front().payload.str();
      payload += "?";
      v.messages.front().payload = paxos::Bytes(payload);
    } else {
      v.origin.round += 1;
    }
    *out = Entry{instance, it->second.ballot, std::make_shared<const paxos::Value>(std::move(v))};
    return StoreCode::kOk;
  }
  *out = it->second;
  return StoreCode::kOk;
}

StoreCode SimDisk::Peek(Instance instance, Entry* out) const {
  if (instance < live_.first) return StoreCode::kNotFound;
  auto it = live_.entries.find(instance);
  if (it == live_.entries.end()) return StoreCode::kNotFound;
  if (live_.rotten.count(instance)) return StoreCode::kCorrupt;
  *out = it->second;
  return StoreCode::kOk;
}

paxos::HardState SimDisk::ClaimedHardState() const { return claimed_.hard; }

bool SimDisk::Backs(paxos::Ballot ballot, Instance first, Instance last, Instance chosen) const {
  const State& claimed = claimed_;
  if (claimed.hard.promised < ballot) return false;
  if (first == paxos::kNoInstance) return true;
  for (Instance i = first; i <= last; i = i.next()) {
    if (i < claimed.first || i <= claimed.hard.chosen) continue;
    auto it = claimed.entries.find(i);
    if (it == claimed.entries.end()) return false;
    if (it->second.ballot < ballot && i > chosen) return false;
  }
  return true;
}

bool SimDisk::Holds(Instance instance, paxos::Ballot ballot) const {
  if (instance < live_.first) return true;  // behind a snapshot
  auto it = live_.entries.find(instance);
  if (it == live_.entries.end()) return false;
  // A chosen record is kept at the ballot it was learned at.
  return instance <= live_.hard.chosen || it->second.ballot >= ballot;
}

void SimDisk::Apply(const Record& r, State* s) {
  s->hard = r.hard;
  s->meta_rotten = false;  // the hard state was rewritten
  for (const Entry& e : r.entries) {
    if (e.instance < s->first) continue;  // behind the snapshot: not kept
    s->entries[e.instance] = e;
    s->rotten.erase(e.instance);
  }
  if (r.misdirected_onto && s->entries.count(*r.misdirected_onto)) {
    s->rotten.insert(*r.misdirected_onto);
  }
}

Status SimDisk::Write(const paxos::HardState& hard_state, std::span<const Entry> entries,
                      std::span<const paxos::AppliedInstance>, node::Durability durability) {
  ++writes_;
  const bool synced = durability != node::Durability::kVolatile;
  if (synced && rng_ && rng_->Chance(faults_.crash_in_write)) {
    ++faults_injected_;
    return Status::Storage("simulated crash in the middle of a write");
  }
  Record r;
  r.hard = hard_state;
  r.entries.assign(entries.begin(), entries.end());
  if (!entries.empty() && !live_.entries.empty() && rng_ && rng_->Chance(faults_.misdirect)) {
    auto it = std::next(live_.entries.begin(),
                        static_cast<long>(rng_->Uniform(live_.entries.size())));
    bool in_write = false;
    for (const Entry& e : entries) in_write |= e.instance == it->first;
    if (!in_write) {
      r.misdirected_onto = it->first;
      ++faults_injected_;
    }
  }
  Apply(r, &live_);
  r.synced = synced;
  r.lied = synced && rng_ && rng_->Chance(faults_.lie_on_sync);
  if (r.lied) ++faults_injected_;
  unsynced_.push_back(std::move(r));
  if (synced) {
    // The node takes everything written so far as durable now.
    for (size_t k = claimed_upto_; k < unsynced_.size(); ++k) Apply(unsynced_[k], &claimed_);
    claimed_upto_ = unsynced_.size();
    if (!unsynced_.back().lied) Sync();
  }
  return Status::Ok();
}

void SimDisk::Sync() {
  for (const Record& r : unsynced_) {
    if (r.lied) {
      journal_gap_ = true;  // lost, and the records after it say so
      continue;
    }
    Apply(r, &durable_);
  }
  unsynced_.clear();
  claimed_upto_ = 0;
}

void SimDisk::Crash() {
  // The writes since the last sync: a prefix survives. A write the disk
  // said it synced survives unless a later sync exposed it as lost.
  size_t keep_min = 0;
  for (size_t k = 0; k < unsynced_.size(); ++k) {
    if (unsynced_[k].synced) keep_min = k + 1;
  }
  const size_t keep =
      keep_min + (rng_ ? rng_->Uniform(unsynced_.size() - keep_min + 1) : unsynced_.size() - keep_min);
  for (size_t k = 0; k < keep; ++k) Apply(unsynced_[k], &durable_);
  unsynced_.clear();
  claimed_upto_ = 0;
  lost_at_crash_.clear();
  if (durable_.hard.promised < claimed_.hard.promised) {
    lost_at_crash_ = "the promise " + paxos::ToString(claimed_.hard.promised);
  }
  for (const auto& [instance, e] : claimed_.entries) {
    if (!lost_at_crash_.empty()) break;
    if (instance < durable_.first) continue;
    auto it = durable_.entries.find(instance);
    if (it == durable_.entries.end() ||
        (it->second.ballot < e.ballot && instance > durable_.hard.chosen)) {
      lost_at_crash_ = "the accepted entry of instance " + std::to_string(instance.value()) +
                       " at " + paxos::ToString(e.ballot);
    }
  }
  live_ = durable_;
  claimed_ = durable_;
}

std::string SimDisk::Open() {
  live_ = durable_;
  claimed_ = durable_;
  if (journal_gap_) {
    if (bug_ == paxos::Bug::kTrustTruncatedJournal) {
      journal_gap_ = false;  // broken on purpose: replays what is left
      return "";
    }
    return "the journal lost records it had synced (a later record follows the gap)";
  }
  if (durable_.meta_rotten) return "the hard state fails its check";
  return "";
}

void SimDisk::Wipe() {
  live_ = State{};
  durable_ = State{};
  claimed_ = State{};
  unsynced_.clear();
  claimed_upto_ = 0;
  journal_gap_ = false;
  lost_at_crash_.clear();
}

bool SimDisk::Empty() const {
  return live_.hard == paxos::HardState{} && live_.entries.empty() && !live_.snapshot;
}

void SimDisk::SaveSnapshot(const paxos::AppliedSnapshot& snapshot) {
  Sync();
  for (State* s : {&live_, &durable_, &claimed_}) {
    if (!s->snapshot || s->snapshot->instance < snapshot.instance) s->snapshot = snapshot;
  }
}

void SimDisk::Truncate(Instance first) {
  Sync();
  for (State* s : {&live_, &durable_, &claimed_}) {
    if (!s->snapshot || first <= s->first) continue;
    const Instance f = std::min(first, s->snapshot->instance.next());
    s->entries.erase(s->entries.begin(), s->entries.lower_bound(f));
    s->rotten.erase(s->rotten.begin(), s->rotten.lower_bound(f));
    s->first = f;
  }
}

void SimDisk::InstallSnapshot(const paxos::AppliedSnapshot& snapshot) {
  Sync();
  for (State* s : {&live_, &durable_, &claimed_}) {
    if (s->snapshot && s->snapshot->instance >= snapshot.instance) continue;
    s->snapshot = snapshot;
    const Instance first = snapshot.instance.next();
    s->entries.erase(s->entries.begin(), s->entries.lower_bound(first));
    s->rotten.erase(s->rotten.begin(), s->rotten.lower_bound(first));
    s->first = std::max(s->first, first);
    s->hard.chosen = std::max(s->hard.chosen, snapshot.instance);
  }
}

void SimDisk::RotRecord(uint64_t pick) {
  if (live_.entries.empty()) return;
  // Among the newest records: the ones a replay, a lagging peer or a
  // recovery reads next.
  const size_t recent = std::min<size_t>(live_.entries.size(), 16);
  const Instance victim =
      std::prev(live_.entries.end(), static_cast<long>(1 + pick % recent))->first;
  live_.rotten.insert(victim);
  if (durable_.entries.count(victim)) durable_.rotten.insert(victim);
  ++faults_injected_;
}

void SimDisk::RotMeta() {
  durable_.meta_rotten = true;
  ++faults_injected_;
}

}  // namespace ordo::sim
