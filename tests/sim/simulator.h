// A deterministic simulator: N nodes in one process, each the real
// consensus core under the broker's node loop (node/node_loop.h) on a
// simulated disk with faults (sim_disk.h); a simulated network (loss,
// duplication, reordering, delay, partitions of several shapes, paused
// processes), crash-restarts that keep what the disk kept, and clients that
// publish with retries. Every random choice is drawn from one seed (each
// seed also draws its own fault mix: swarm testing), so a failing seed
// replays exactly. An invariant checker runs after every step (README).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "paxos/replica.h"

namespace ordo::sim {

struct SimOptions {
  uint32_t nodes = 3;
  uint64_t seed = 1;
  uint64_t steps = 20000;  // events in the fault phase; then faults heal
  paxos::Bug bug = paxos::Bug::kNone;
  std::ostream* trace = nullptr;  // when set, every event is printed
};

struct SimResult {
  uint64_t steps = 0;           // events processed, fault and heal phases together
  uint64_t faults = 0;          // crashes, restarts, partitions, crashes mid-persist
  uint64_t messages_sent = 0;   // peer messages put on the simulated network
  uint64_t published = 0;       // distinct client messages published
  uint64_t acknowledged = 0;    // of those, acknowledged with an offset
  uint64_t delivered = 0;       // length of the agreed stream at the end
  uint64_t changes = 0;         // membership changes chosen
  uint64_t violations = 0;
  std::string first_violation;  // empty when none
  std::string fault_mix;        // the seed's network and fault parameters
};

SimResult RunSimulation(const SimOptions& options);

// The command line that replays one seed.
std::string ReplayCommand(const SimOptions& options);

}  // namespace ordo::sim
