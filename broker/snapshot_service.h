// Snapshots of one broker: taking them, truncating the log behind them
// (retention), serving them to peers, and fetching one from a peer when this
// broker needs instances every peer has truncated.
//
// Taking: the core hands the applied state at every snapshot point
// (paxos::Ready::snapshot). Right after that Ready's commit, Take() opens an
// LMDB read transaction (it sees exactly that commit) and a background thread
// reads the compacted view, encodes the file (schemas/snapshot.fbs), writes
// it to snapshots/ and fsyncs it. The loop thread then records its handle
// (instance, size, CRC32C) and may truncate the log up to that instance.
// The stream never waits for a snapshot.
//
// Transfer: the fetcher asks a peer for its newest snapshot at or above the
// instance it needs; the peer answers chunk by chunk, each with its CRC32C.
// Received bytes go to snapshots/incoming-N-CRC.part, so a transfer resumes
// at the byte it reached, from the same peer or another one that has the
// same handle (snapshots at the same point are byte-identical), and even
// after a restart of this broker. The whole file is checked against the
// handle before it is installed.
//
// Thread rules: every method runs on the broker's loop thread; only the
// snapshot encoder runs on its own thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "broker/codec.h"
#include "broker/config.h"
#include "broker/lmdb_store.h"
#include "broker/peer_transport.h"
#include "paxos/applied_state.h"

namespace ordo::broker {

class SnapshotService {
 public:
  using Clock = std::chrono::steady_clock;

  struct Counters {
    uint64_t snapshots_taken = 0;
    uint64_t snapshots_installed = 0;
    uint64_t chunks_sent = 0;
    uint64_t chunks_received = 0;
    uint64_t bytes_received = 0;
    uint64_t chunks_rejected = 0;  // failed their checksum
    uint64_t instances_truncated = 0;
    double last_install_seconds = 0;
  };

  // `chosen` reads the core's chosen frontier (an install below it is moot);
  // `before_install` writes what the broker has not written yet (false:
  // it could not, and the install is not done).
  SnapshotService(const BrokerConfig& config, LmdbStore& store, PeerTransport& peers,
                  std::function<paxos::Instance()> chosen, std::function<bool()> before_install);

  // The members to fetch snapshots from (the membership in effect, this
  // broker left out); at first the config file's [[members]].
  void SetPeers(std::vector<uint32_t> ids) { peer_ids_ = std::move(ids); }
  ~SnapshotService();
  SnapshotService(const SnapshotService&) = delete;
  SnapshotService& operator=(const SnapshotService&) = delete;

  // --- taking and retention ---
  // The Ready that carried `state` is committed: snapshot it (skipped when
  // the previous snapshot is still being written).
  void Take(const paxos::AppliedSnapshot& state);
  // Once per tick: record a finished snapshot, truncate by the retention
  // limits, send deferred chunks, resume a stalled transfer.
  void Tick(Clock::time_point now, paxos::Instance applied);

  // --- transfer ---
  // The core needs a snapshot at or above `min_instance`; `hint` is a peer
  // that has one (0: any).
  void Need(uint32_t hint, uint64_t min_instance);
  void OnMessage(const SnapshotMessage& m, Clock::time_point now);
  // A snapshot installed in the store since the last call, to hand to the
  // core (Replica::InstallSnapshot).
  std::optional<paxos::AppliedSnapshot> TakeInstalled();

  const Counters& counters() const { return counters_; }
  bool fetching() const { return fetch_.active; }

 private:
  struct Built {
    bool done = false;
    Status status = Status::Ok();
    SnapshotHandle handle;
    paxos::AppliedSnapshot state;
  };
  struct Fetch {
    bool active = false;
    uint64_t min_instance = 0;
    SnapshotHandle handle;  // instance 0 until a peer offered one
    uint64_t received = 0;
    uint32_t peer = 0;
    std::set<uint32_t> tried;  // peers that do not have `handle`
    Clock::time_point asked{};
    Clock::time_point started{};
  };

  void Build(ReadTxn txn, paxos::AppliedSnapshot state);
  void Truncate(Clock::time_point now, paxos::Instance applied);
  void RemoveOldFiles();
  void Serve(const SnapshotMessage& request);
  void Ask(uint32_t peer, uint64_t offset, Clock::time_point now);
  uint32_t NextPeer();
  std::string PartPath(const SnapshotHandle& h) const;
  void Complete(Clock::time_point now);
  void Abandon(const std::string& why);

  const BrokerConfig& config_;
  std::vector<uint32_t> peer_ids_;  // where snapshots are fetched from (SetPeers)
  LmdbStore& store_;
  PeerTransport& peers_;
  std::function<paxos::Instance()> chosen_;
  std::function<bool()> before_install_;

  std::thread builder_;
  std::mutex mu_;
  Built built_;  // guarded by mu_
  bool building_ = false;
  SnapshotHandle previous_;  // kept on disk for transfers in progress

  // Retention by age: (instance, when it was applied here), one per second.
  std::deque<std::pair<paxos::Instance, Clock::time_point>> ages_;
  uint64_t age_floor_ = 0;  // newest instance older than the age limit

  // Chunks owed to peers, sent as the rate limit allows.
  std::deque<SnapshotMessage> deferred_;
  double send_tokens_ = 0;
  Clock::time_point last_refill_{};

  Fetch fetch_;
  std::optional<paxos::AppliedSnapshot> installed_;
  Counters counters_;
};

}  // namespace ordo::broker
