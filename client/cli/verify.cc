#include "client/cli/verify.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <vector>

#include "client/cli/cli_util.h"

namespace ordo::cli {
namespace {

// What one broker served over the range.
struct BrokerChain {
  std::string endpoint;
  std::optional<Error> error;  // it could not be read, or failed its chain
  bool integrity = false;      // error is a failed check of its chain
  std::vector<ChainInstance> instances;
  uint64_t end = 0;   // where the last instance checked ends
  std::string chain;  // the chain value at `end`; "" if none was checked
};

ClientOptions Alone(const ClientOptions& options, const std::string& endpoint) {
  ClientOptions one = options;
  one.brokers = {endpoint};
  return one;
}

bool SameStep(const ChainInstance& a, const ChainInstance& b) {
  return a.instance == b.instance && a.first_offset == b.first_offset && a.count == b.count &&
         a.before == b.before && a.after == b.after;
}

// The first offset in [from, from + count) where the brokers' messages
// differ (read without the chain check, to compare what each serves), or
// `from` when they serve the same messages (then their chain values
// differ, not the messages).
uint64_t FirstDifferingMessage(const ClientOptions& options, const std::vector<BrokerChain>& all,
                               uint64_t from, uint64_t count) {
  std::vector<std::vector<Record>> served;
  for (const BrokerChain& b : all) {
    ClientOptions one = Alone(options, b.endpoint);
    one.verify_chain = false;
    std::vector<Record> records;
    Result<uint64_t> r = Replay(one, from, from + count,
                                [&](const Record& record, uint64_t) { records.push_back(record); });
    served.push_back(std::move(records));
  }
  for (uint64_t i = 0; i < count; ++i) {
    const Record* first = nullptr;
    for (const std::vector<Record>& records : served) {
      const Record* r = i < records.size() ? &records[i] : nullptr;
      if (r == nullptr) return from + i;
      if (first == nullptr) {
        first = r;
      } else if (r->offset != first->offset || r->producer != first->producer ||
                 r->sequence != first->sequence || r->key != first->key ||
                 r->payload != first->payload) {
        return from + i;
      }
    }
  }
  return from;
}

int Head(const ClientOptions& options) {
  // The leader's head when it answers (it is the furthest along), else the
  // furthest one that answers.
  std::optional<BrokerStatus> best;
  for (const std::string& b : options.brokers) {
    Result<BrokerStatus> s = GetStatus(b, options.request_timeout, options.credentials);
    if (!s.ok() || s.value().chain_head.empty()) continue;
    const bool leader = s.value().role == "leader";
    if (!best || (leader && best->role != "leader") ||
        (best->role != "leader" && s.value().next_offset > best->next_offset)) {
      best = s.value();
    }
  }
  if (!best) {
    std::fprintf(stderr, "ordo: verify --head: no broker told its chain head\n");
    return kExitUnavailable;
  }
  std::printf("%llu\t%s\n", static_cast<unsigned long long>(best->next_offset),
              best->chain_head.c_str());
  return kExitOk;
}

}  // namespace

int Verify(const ClientOptions& options, const VerifyFlags& flags) {
  if (flags.head) return Head(options);
  if (!flags.expect.empty() && !flags.to) {
    std::fprintf(stderr,
                 "ordo: verify --expect needs --to (the offset the chain value holds at)\n");
    return kExitUsage;
  }
  // The range every broker holds, unless the flags say otherwise.
  uint64_t earliest_max = 0, head_min = UINT64_MAX;
  for (const std::string& b : options.brokers) {
    Result<BrokerStatus> s = GetStatus(b, options.request_timeout, options.credentials);
    if (!s.ok()) {
      std::fprintf(stderr, "ordo: verify: %s\n", ForUsers(s.error().message).c_str());
      return ExitCodeFor(s.error().code);
    }
    earliest_max = std::max(earliest_max, s.value().earliest_offset);
    head_min = std::min(head_min, s.value().next_offset);
  }
  const uint64_t from = flags.from.value_or(earliest_max);
  const uint64_t to = flags.to.value_or(head_min);
  if (to < from) {
    std::fprintf(stderr, "ordo: verify: --to (%llu) is below --from (%llu)\n",
                 static_cast<unsigned long long>(to), static_cast<unsigned long long>(from));
    return kExitUsage;
  }

  std::vector<BrokerChain> all;
  for (const std::string& endpoint : options.brokers) {
    BrokerChain b;
    b.endpoint = endpoint;
    b.end = from;
    if (to > from) {
      Result<uint64_t> end = ReplayVerified(
          Alone(options, endpoint), from, to, [](const Record&, uint64_t) {},
          [&](const ChainInstance& i) { b.instances.push_back(i); });
      if (end.ok()) {
        b.end = end.value();
      } else {
        b.error = end.error();
        b.integrity = end.error().code == ErrorCode::kIntegrity;
      }
      if (!b.instances.empty()) {
        b.chain = b.instances.back().after;
        if (!end.ok()) b.end = b.instances.back().first_offset + b.instances.back().count;
      }
    }
    all.push_back(std::move(b));
  }

  // The reference: the chain most brokers end with (the first broker's on a tie).
  std::map<std::string, size_t> votes;
  for (const BrokerChain& b : all) {
    if (!b.error) ++votes[b.chain];
  }
  std::string reference;
  size_t best = 0;
  for (const BrokerChain& b : all) {
    if (!b.error && votes[b.chain] > best) {
      best = votes[b.chain];
      reference = b.chain;
    }
  }
  const BrokerChain* ref = nullptr;
  for (const BrokerChain& b : all) {
    if (!b.error && b.chain == reference) {
      ref = &b;
      break;
    }
  }

  // The first offset where a broker departs from the reference: its first
  // instance that differs, or where its own chain fails.
  std::optional<uint64_t> first_diff;
  uint64_t diff_count = 1;
  bool unreachable = false;
  auto note = [&](uint64_t offset, uint64_t count) {
    if (!first_diff || offset < *first_diff) {
      first_diff = offset;
      diff_count = std::max<uint64_t>(count, 1);
    }
  };
  for (const BrokerChain& b : all) {
    if (b.error && !b.integrity) {
      unreachable = true;
      continue;
    }
    if (ref == nullptr || &b == ref) continue;
    const size_t n = std::min(b.instances.size(), ref->instances.size());
    size_t k = 0;
    while (k < n && SameStep(b.instances[k], ref->instances[k])) ++k;
    if (k < n) {
      note(std::min(b.instances[k].first_offset, ref->instances[k].first_offset),
           std::max(b.instances[k].count, ref->instances[k].count));
    } else if (b.integrity) {
      // Its own chain failed in the instance after the last one it checked.
      const uint64_t at = k < ref->instances.size() ? ref->instances[k].first_offset : b.end;
      note(at, k < ref->instances.size() ? ref->instances[k].count : 1);
    } else if (b.instances.size() != ref->instances.size() || b.chain != ref->chain) {
      note(b.end, 1);
    }
  }
  if (ref == nullptr) {
    // Every broker failed: nothing to compare with.
    for (const BrokerChain& b : all) {
      if (b.integrity) note(b.end, 1);
    }
  }
  if (first_diff) {
    first_diff = FirstDifferingMessage(options, all, *first_diff, diff_count);
  }

  bool expect_failed = false;
  for (const BrokerChain& b : all) {
    std::string verdict;
    if (b.error) {
      const char* what = b.integrity ? "fails its chain: "
                         : b.error->code == ErrorCode::kInvalidArgument ? "short of the range: "
                                                                         : "unreachable: ";
      verdict = what + ForUsers(b.error->message);
    } else if (!flags.expect.empty() && b.chain != flags.expect) {
      verdict = "differs from --expect";
      expect_failed = true;
    } else if (ref != nullptr && b.chain != ref->chain) {
      verdict = "differs";
    } else {
      verdict = "ok";
    }
    std::printf("%s\t%llu\t%s\t%s\n", b.endpoint.c_str(), static_cast<unsigned long long>(b.end),
                b.chain.empty() ? "-" : b.chain.c_str(), verdict.c_str());
  }
  if (first_diff) {
    std::printf("first differing offset: %llu\n", static_cast<unsigned long long>(*first_diff));
    return kExitFailed;
  }
  if (expect_failed) return kExitFailed;
  if (unreachable) return kExitUnavailable;
  return kExitOk;
}

}  // namespace ordo::cli
