// The simulator under CTest: thousands of seeds of 3- and 5-node clusters
// must pass every invariant, and every deliberately broken core must be
// caught within a few seeds (proof that the checker can fail).
#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "tests/sim/simulator.h"

namespace ordo::sim {
namespace {

struct Sweep {
  uint32_t nodes;
  uint64_t first_seed;
  uint64_t seeds;
  uint64_t steps;
};

void PrintTo(const Sweep& s, std::ostream* os) {
  *os << s.nodes << " nodes, seeds " << s.first_seed << ".." << s.first_seed + s.seeds - 1 << ", "
      << s.steps << " steps";
}

std::string SweepName(const testing::TestParamInfo<Sweep>& info) {
  return "nodes" + std::to_string(info.param.nodes) + "_seeds" +
         std::to_string(info.param.first_seed) + "_" +
         std::to_string(info.param.first_seed + info.param.seeds - 1) + "_steps" +
         std::to_string(info.param.steps);
}

class SimSweep : public testing::TestWithParam<Sweep> {};

TEST_P(SimSweep, EveryInvariantHoldsForEverySeed) {
  const Sweep& p = GetParam();
  uint64_t acknowledged = 0, faults = 0;
  for (uint64_t s = p.first_seed; s < p.first_seed + p.seeds; ++s) {
    SimOptions o;
    o.nodes = p.nodes;
    o.seed = s;
    o.steps = p.steps;
    const SimResult r = RunSimulation(o);
    ASSERT_EQ(r.violations, 0u) << r.first_violation << "\n  (" << r.fault_mix
                                << ")\n  replay: " << ReplayCommand(o);
    // The run did real work: messages were published, acknowledged and agreed.
    ASSERT_GT(r.acknowledged, 0u) << ReplayCommand(o);
    ASSERT_EQ(r.acknowledged, r.published) << ReplayCommand(o);
    ASSERT_GE(r.delivered, r.acknowledged) << ReplayCommand(o);
    acknowledged += r.acknowledged;
    faults += r.faults;
  }
  EXPECT_GT(faults, p.seeds) << "the fault mix injected too little";
  RecordProperty("acknowledged", static_cast<int>(acknowledged));
}

// 5,000 seeds per cluster size, in chunks so CTest runs them in parallel.
INSTANTIATE_TEST_SUITE_P(
    Seeds, SimSweep,
    testing::Values(Sweep{3, 1, 1250, 20000}, Sweep{3, 1251, 1250, 20000},
                    Sweep{3, 2501, 1250, 20000}, Sweep{3, 3751, 1250, 20000},
                    Sweep{5, 1, 1250, 20000}, Sweep{5, 1251, 1250, 20000},
                    Sweep{5, 2501, 1250, 20000}, Sweep{5, 3751, 1250, 20000},
                    // Fewer, longer runs: many leader changes within one seed.
                    Sweep{3, 100001, 40, 400000}, Sweep{5, 100001, 40, 400000}),
    SweepName);

struct BugCase {
  paxos::Bug bug;
  uint32_t nodes;
};

void PrintTo(const BugCase& b, std::ostream* os) {
  *os << paxos::ToString(b.bug) << " on " << b.nodes << " nodes";
}

class SimBug : public testing::TestWithParam<BugCase> {};

TEST_P(SimBug, CheckerCatchesEveryMutantWithin20Seeds) {
  const BugCase& p = GetParam();
  // Seeds 1..20: the checker must fail every mutant (a broken core, node
  // loop or disk) on both cluster sizes. Printed: the first seed that does.
  constexpr uint64_t kSeedsMax = 20;
  uint64_t caught_at = 0;
  std::string what;
  for (uint64_t s = 1; s <= kSeedsMax && caught_at == 0; ++s) {
    SimOptions o;
    o.nodes = p.nodes;
    o.seed = s;
    o.bug = p.bug;
    const SimResult r = RunSimulation(o);
    if (r.violations > 0) {
      caught_at = s;
      what = r.first_violation;
    }
  }
  ASSERT_NE(caught_at, 0u) << "mutant " << paxos::ToString(p.bug) << " survived " << kSeedsMax
                           << " seeds on " << p.nodes << " nodes: the checker is blind to it";
  RecordProperty("caught_at_seed", static_cast<int>(caught_at));
  std::printf("mutant %s on %u nodes caught at seed %lu: %s\n", paxos::ToString(p.bug), p.nodes,
              static_cast<unsigned long>(caught_at), what.c_str());
}

std::vector<BugCase> EveryMutant() {
  std::vector<BugCase> cases;
  for (const paxos::BugInfo& b : paxos::AllBugs()) {
    for (uint32_t nodes : {3u, 5u}) cases.push_back(BugCase{b.bug, nodes});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(
    Bugs, SimBug, testing::ValuesIn(EveryMutant()),
    [](const testing::TestParamInfo<BugCase>& bug_info) {
      std::string name = paxos::ToString(bug_info.param.bug);
      for (char& c : name) {
        if (c == '-') c = '_';
      }
      return name + "_nodes" + std::to_string(bug_info.param.nodes);
    });

TEST(SimBug, AtLeastTenMutants) { EXPECT_GE(paxos::AllBugs().size(), 10u); }

TEST(SimReplay, SameSeedSameRun) {
  SimOptions o;
  o.seed = 4242;
  o.nodes = 5;
  const SimResult a = RunSimulation(o);
  const SimResult b = RunSimulation(o);
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.messages_sent, b.messages_sent);
  EXPECT_EQ(a.faults, b.faults);
  EXPECT_EQ(a.delivered, b.delivered);
}

}  // namespace
}  // namespace ordo::sim
