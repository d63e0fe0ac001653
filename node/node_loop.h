// node::NodeLoop: the one Ready loop of a node, and the durability policy
// that decides what must be on disk before a message leaves. Used by the
// broker (ordo-broker), the simulator (ordo-sim) and the core's unit and
// scenario tests, so what production runs is what the simulator checks.
//
// A turn: the host feeds the core (Step, Tick, Propose through replica()),
// then calls Drain(). For each Ready, in this order:
//   1. messages that vouch for nothing unpersisted (accepts, commits, ...)
//      are sent: the leader's own write overlaps the round;
//   2. newly applied instances go to the host (publish acks: an applied
//      instance is chosen, i.e. durable on a majority, so the ack need not
//      wait for this node's write);
//   3. the durable part is written: accepted entries, a changed promise or
//      lost-disk mark, synced (kSync; kCheckpoint at a snapshot point). A
//      Ready that changes only the chosen mark and the offset index waits
//      (they are re-derived from the chosen log after a crash) and is
//      written with the next synced write, or by FlushDeferred when the
//      host is idle: one fsync per instance instead of two;
//   4. promises and accepted replies are sent (they vouch for the write);
//   5. fetches to serve are handed over once their entries are readable;
//   6. lost leadership, snapshot points and snapshot needs go to the host;
//   7. Advance.
// The loop does no I/O itself: sockets are behind Transport, files behind
// Storage, time is the host's Tick() calls.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "base/status.h"
#include "node/storage.h"
#include "paxos/namespace.h"
#include "paxos/replica.h"

namespace ORDO_NODE_NAMESPACE {

class Transport {
 public:
  virtual ~Transport() = default;
  virtual void Send(const paxos::Message& message) = 0;
};

// What the node's host does with a Ready's outputs besides sending and writing.
class Host {
 public:
  virtual ~Host() = default;
  // Every Ready, before anything of it is acted on (metrics, checks).
  virtual void OnReady(const paxos::Ready&) {}
  // Newly chosen instances, in order, before this node's write.
  virtual void OnApplied(std::span<const paxos::AppliedInstance> applied) = 0;
  // A fetch the core asked the host to serve from storage (its entries are
  // readable, see Storage::MakeReadable).
  virtual void ServeFetch(paxos::FetchToServe fetch) = 0;
  virtual void OnLostLeadership() {}
  // At a snapshot point, right after its kCheckpoint write.
  virtual void OnSnapshotPoint(const paxos::AppliedSnapshot&) {}
  virtual void OnNeedSnapshot(paxos::NodeId /*peer*/, paxos::Instance /*min*/) {}
};

class NodeLoop {
 public:
  struct Options {
    // Deferred applied instances written at once beyond this many.
    size_t deferred_instances_max = 4096;
#ifdef ORDO_PAXOS_BUGS
    paxos::Bug bug = paxos::Bug::kNone;
#endif
  };

  // The replica must have been built on `storage`; all must outlive the loop.
  NodeLoop(paxos::Replica& replica, Storage& storage, Transport& transport, Host& host,
           Options options);
  NodeLoop(paxos::Replica& replica, Storage& storage, Transport& transport, Host& host)
      : NodeLoop(replica, storage, transport, host, Options{}) {}

  paxos::Replica& replica() { return replica_; }

  // Acts on every Ready the core has. A write failure stops it at once
  // (nothing that depends on the write leaves): the host stops the node.
  Status Drain();
  // Writes what waited (kVolatile). The host calls it when it is idle, on
  // its tick, and before anything that reads the index (a rebuild, a
  // snapshot install).
  Status FlushDeferred();
  bool has_deferred() const { return has_deferred_; }

  // A stored chosen record failed its check while the host served a fetch:
  // reported to the core (once the current Ready, if any, is advanced).
  void ReportUnreadable(paxos::Instance instance);

 private:
  Status Write(const paxos::HardState& hard, std::span<const paxos::Entry> entries,
               std::span<const paxos::AppliedInstance> applied, Durability durability);
  bool bug([[maybe_unused]] paxos::Bug b) const {
#ifdef ORDO_PAXOS_BUGS
    return options_.bug == b;
#else
    return false;
#endif
  }

  paxos::Replica& replica_;
  Storage& storage_;
  Transport& transport_;
  Host& host_;
  Options options_;
  paxos::HardState written_{};  // as last handed to Write
  bool has_deferred_ = false;
  paxos::HardState deferred_hard_{};
  std::vector<paxos::AppliedInstance> deferred_applied_;
  bool in_ready_ = false;
  std::vector<paxos::Instance> unreadable_;
};

}  // namespace ordo::node
