// What the store's reads found damaged, each record once: the broker takes
// new damage each loop turn (a log record is fetched again from a peer; an
// index or compacted-view record is rebuilt from the log), and a record
// written again counts as repaired. One thread, the broker's event loop.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "paxos/log_store.h"

namespace ordo::broker {

// A record a read found damaged: it returned kCorrupt and served nothing
// of it.
struct StorageDamage {
  enum class Kind : uint8_t { kLogRecord, kIndexRecord, kCompactedView };
  Kind kind = Kind::kLogRecord;
  uint64_t instance = 0;  // kLogRecord
  uint64_t offset = 0;    // kIndexRecord, kCompactedView: the first offset affected
  std::string what;       // for the log: the record and what is wrong with it
};

class DamageRegistry {
 public:
  // `last_error` (the store's) is set to each damage's description.
  explicit DamageRegistry(std::string* last_error) : last_error_(last_error) {}

  // Records `damage`, counted and handed on once per record however often
  // readers run into it before it is repaired. Returns kCorrupt.
  paxos::StoreCode Note(StorageDamage damage) {
    *last_error_ = damage.what;
    const auto id = std::make_pair(damage.kind, damage.kind == StorageDamage::Kind::kLogRecord
                                                    ? damage.instance
                                                    : damage.offset);
    if (known_.size() < kKnownMax && known_.insert(id).second) {
      ++corruptions_;
      new_.push_back(std::move(damage));
    }
    return paxos::StoreCode::kCorrupt;
  }
  // Damage found since the last call.
  std::vector<StorageDamage> TakeNew() { return std::exchange(new_, {}); }
  // The record was written again: new damage there is news again, and a
  // damaged log record counts as repaired.
  void Forget(StorageDamage::Kind kind, uint64_t at) {
    if (known_.empty() || known_.erase({kind, at}) == 0) return;
    if (kind == StorageDamage::Kind::kLogRecord) {
      ++repairs_;
      repaired_.push_back(at);
    }
  }
  // The index and the compacted view were rebuilt: their damage is gone.
  void ForgetDerived() {
    std::erase_if(known_, [](const auto& d) { return d.first != StorageDamage::Kind::kLogRecord; });
  }
  uint64_t corruptions() const { return corruptions_; }
  uint64_t repairs() const { return repairs_; }
  std::vector<uint64_t> TakeRepaired() { return std::exchange(repaired_, {}); }

 private:
  static constexpr size_t kKnownMax = 65536;
  std::string* last_error_;
  std::set<std::pair<StorageDamage::Kind, uint64_t>> known_;
  std::vector<StorageDamage> new_;
  uint64_t corruptions_ = 0;
  uint64_t repairs_ = 0;
  std::vector<uint64_t> repaired_;
};

}  // namespace ordo::broker
