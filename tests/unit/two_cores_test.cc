// The production core and the simulator's copy link into one program:
// each is in an inline namespace of its own (paxos/namespace.h), so their
// different layouts (Config::bug) never meet under one name.
#include <gtest/gtest.h>

#include "tests/unit/two_cores.h"

namespace ordo::paxos {
namespace {

TEST(TwoCores, TheProductionCoreAndTheSimulatorsCopyRunInOneProgram) {
  const AloneRun production = production::RunAlone(3);
  const AloneRun mutants = mutants::RunAlone(3);
  EXPECT_TRUE(production.leader);
  EXPECT_TRUE(mutants.leader);
  EXPECT_EQ(production.appended, 3u);
  EXPECT_EQ(mutants.appended, 3u);
  // The layouts differ: one name for both would break the one-definition rule.
  EXPECT_LT(production.config_bytes, mutants.config_bytes);
}

}  // namespace
}  // namespace ordo::paxos
