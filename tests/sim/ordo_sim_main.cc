// build/ordo-sim: runs seeded simulations of the consensus core and checks its
// invariants after every step. Exit status 0 when no seed found a violation.
//
//   ordo-sim --nodes 3 --seeds 1000          # seeds 1..1000
//   ordo-sim --nodes 5 --seed 42 --trace     # one seed, every event printed
//   ordo-sim --bug list                      # the mutants (broken core or loop)
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "tests/sim/simulator.h"

int main(int argc, char** argv) {
  using ordo::paxos::Bug;
  CLI::App app{"Deterministic simulator for the Ordo consensus core"};
  uint32_t nodes = 3;
  uint64_t seeds = 0;
  uint64_t seed = 0;
  uint64_t first_seed = 1;
  uint64_t steps = 20000;
  std::string bug_name = "none";
  bool trace = false;
  app.add_option("--nodes", nodes, "Cluster size")->check(CLI::IsMember({3, 5}));
  auto* seeds_opt = app.add_option("--seeds", seeds, "Run N seeds (first-seed .. first-seed+N-1)");
  auto* seed_opt = app.add_option("--seed", seed, "Run one seed")->excludes(seeds_opt);
  app.add_option("--first-seed", first_seed, "First seed of a --seeds run");
  app.add_option("--steps", steps, "Events in the fault phase of each seed")
      ->check(CLI::Range(uint64_t{100}, uint64_t{100000000}));
  app.add_option("--bug", bug_name, "Run a deliberately broken core or node loop ('list' names them)");
  app.add_flag("--trace", trace, "Print every event (use with --seed)");
  CLI11_PARSE(app, argc, argv);

  if (bug_name == "list") {
    for (const ordo::paxos::BugInfo& b : ordo::paxos::AllBugs()) {
      std::printf("%-24s %s\n", b.name, b.what);
    }
    return 0;
  }
  Bug bug = Bug::kNone;
  if (!ordo::paxos::ParseBug(bug_name.c_str(), &bug)) {
    std::fprintf(stderr, "ordo-sim: unknown --bug '%s' (see --bug list)\n", bug_name.c_str());
    return 2;
  }
  if (*seed_opt) {
    first_seed = seed;
    seeds = 1;
  } else if (seeds == 0) {
    seeds = 100;
  }

  uint64_t total_steps = 0, total_faults = 0, violations = 0, failed_seeds = 0;
  uint64_t published = 0, acknowledged = 0, delivered = 0, messages = 0, changes = 0;
  const auto start = std::chrono::steady_clock::now();
  for (uint64_t s = first_seed; s < first_seed + seeds; ++s) {
    ordo::sim::SimOptions o;
    o.nodes = nodes;
    o.seed = s;
    o.steps = steps;
    o.bug = bug;
    o.trace = trace ? &std::cout : nullptr;
    const ordo::sim::SimResult r = ordo::sim::RunSimulation(o);
    total_steps += r.steps;
    total_faults += r.faults;
    violations += r.violations;
    published += r.published;
    acknowledged += r.acknowledged;
    delivered += r.delivered;
    changes += r.changes;
    messages += r.messages_sent;
    if (r.violations > 0) {
      ++failed_seeds;
      std::printf("VIOLATION seed %lu (%s): %s\n  replay: %s\n", static_cast<unsigned long>(s),
                  r.fault_mix.c_str(), r.first_violation.c_str(),
                  ordo::sim::ReplayCommand(o).c_str());
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "ordo-sim: nodes=%u bug=%s seeds=%lu steps=%lu faults=%lu messages=%lu published=%lu "
      "acknowledged=%lu delivered=%lu membership_changes=%lu violations=%lu failed_seeds=%lu "
      "steps_per_sec=%.0f\n",
      nodes, bug_name.c_str(), static_cast<unsigned long>(seeds),
      static_cast<unsigned long>(total_steps), static_cast<unsigned long>(total_faults),
      static_cast<unsigned long>(messages), static_cast<unsigned long>(published),
      static_cast<unsigned long>(acknowledged), static_cast<unsigned long>(delivered),
      static_cast<unsigned long>(changes), static_cast<unsigned long>(violations),
      static_cast<unsigned long>(failed_seeds),
      secs > 0 ? static_cast<double>(total_steps) / secs : 0.0);
  return violations == 0 ? 0 : 1;
}
