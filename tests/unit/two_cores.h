// tests/unit/two_cores_test.cc: the production core and the simulator's
// copy (with the mutants) in one program. two_cores_run.cc is compiled once
// for each; this header declares both builds of it. Nothing else of the
// core is included where it is used: there, neither copy is the default.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ordo::paxos {

// What one lone voter did: elected itself, applied what it was given.
struct AloneRun {
  bool leader = false;
  uint64_t appended = 0;    // messages applied (given offsets)
  size_t config_bytes = 0;  // sizeof(Config) in that copy
};

namespace production {
AloneRun RunAlone(int messages);
}
namespace mutants {
AloneRun RunAlone(int messages);
}

}  // namespace ordo::paxos
