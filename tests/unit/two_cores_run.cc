// Compiled twice (see two_cores.h): once against the production core, once
// against the simulator's copy (ORDO_PAXOS_BUGS).
#include <memory>

#include "node/memory_storage.h"
#include "node/node_loop.h"
#include "paxos/replica.h"
#include "tests/unit/two_cores.h"

namespace ORDO_PAXOS_NAMESPACE {
namespace {

struct Host final : node::Host, node::Transport {
  void OnReady(const Ready&) override {}
  void OnApplied(std::span<const AppliedInstance> applied) override {
    for (const AppliedInstance& a : applied) appended += a.appended;
  }
  void ServeFetch(FetchToServe) override {}
  void Send(const Message&) override {}
  uint64_t appended = 0;
};

}  // namespace

AloneRun RunAlone(int messages) {
  Config c;
  c.id = NodeId(1);
  c.voters = {NodeId(1)};
  c.seed = 7;
  node::MemoryStorage storage;
  Replica replica(c, storage);
  Host host;
  node::NodeLoop loop(replica, storage, host, host);
  AloneRun run;
  for (int i = 0; i < 100 && replica.role() != Role::kLeader; ++i) {
    replica.Tick();
    if (!loop.Drain().ok()) return run;
  }
  run.leader = replica.role() == Role::kLeader;
  for (int m = 0; m < messages; ++m) {
    replica.Propose({ClientMessage{ProducerId(9), static_cast<uint64_t>(m + 1), "", "x"}});
    if (!loop.Drain().ok()) return run;
  }
  if (!loop.FlushDeferred().ok()) return run;
  run.appended = host.appended;
  run.config_bytes = sizeof(Config);
  return run;
}

}  // namespace ORDO_PAXOS_NAMESPACE
