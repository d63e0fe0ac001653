// The broker process's composition root: it owns the LMDB store, the
// consensus core, the peer transport, the client service and the metrics,
// and runs the single-threaded event loop that drives them.
//
// One loop turn: wait for frames or the next tick; feed every waiting peer
// frame and client request to the core; tick if due; then drain the core's
// Ready batches — each is one LMDB transaction (group commit of everything
// the turn produced), and promises/accepted replies leave only after it.
// Two jobs that read the store at length run on threads of their own:
// serving peers' fetches (CatchUpServer) and encoding snapshots.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "base/keys.h"
#include "broker/access.h"
#include "broker/catchup_server.h"
#include "broker/client_connections.h"
#include "broker/client_service.h"
#include "broker/config.h"
#include "broker/data_dir.h"
#include "broker/lmdb_store.h"
#include "broker/node_storage.h"
#include "broker/peer_transport.h"
#include "broker/snapshot_service.h"
#include "broker/status.h"
#include "broker/zap_handler.h"
#include "monitoring/metrics.h"
#include "node/node_loop.h"
#include "paxos/replica.h"

namespace ordo::broker {

class Broker final : public node::Host, public node::Transport {
 public:
  explicit Broker(BrokerConfig config);
  ~Broker();

  // Opens storage, binds every endpoint. Fails with a readable message;
  // kStorage when storage refused (exit status 3).
  Status Start();
  // Runs until `stop` is set (SIGTERM/SIGINT) or storage fails. Whenever
  // `reload` is set (SIGHUP) it is cleared and the access file reloaded.
  Status Run(const std::atomic<bool>& stop, std::atomic<bool>* reload = nullptr);

 private:
  // Locks and checks the data directory and opens the store; damaged
  // state is quarantined (see data_dir.h) when peers can restore it.
  Status OpenStorage();
  void HandlePeerFrames(size_t max, size_t max_bytes);
  // Loads the key pair and the access file and starts the ZAP handler
  // (nothing in plaintext mode).
  Status StartSecurity();
  // Re-reads the access file; a bad file keeps the current list.
  void ReloadAccess();
  // Whether a peer frame claiming `from` came from that node; *why when not.
  // `timeout_now`: a TimeoutNow from a member the last change removed
  // (its key still counts for that one message).
  bool SentBy(const PeerTransport::Sender& sender, uint32_t from, bool timeout_now,
              std::string* why) const;
  // Sends the catch-up replies the server finished; reports bad records.
  void SendCatchUpReplies();
  // The node loop's turn (node/node_loop.h), then a snapshot it installed.
  Status DrainReady();
  void ReportRoleChanges();
  // Acts on what the store's reads found damaged (each record once).
  void HandleStorageDamage();
  // Logs the damaged log records rewritten this turn (one line).
  void ReportRepairs();
  Status RepairDerived();

  // node::Transport and node::Host: where the node loop's outputs go.
  void Send(const paxos::Message& message) override;
  void OnReady(const paxos::Ready& ready) override;
  void OnApplied(std::span<const paxos::AppliedInstance> applied) override;
  void ServeFetch(paxos::FetchToServe fetch) override;
  void OnLostLeadership() override;
  void OnSnapshotPoint(const paxos::AppliedSnapshot& snapshot) override;
  void OnNeedSnapshot(paxos::NodeId peer, paxos::Instance min) override;
  void UpdateMetrics();
  // Follows the membership in effect (replica_->membership(); the file's
  // [[members]] while none is known): peer links, the peer keys allowed in,
  // the members frames are accepted from, the snapshot peers. At start,
  // after the applied configuration entries of a Ready, after a snapshot
  // install.
  Status FollowMembership();
  // One line per applied configuration entry (and one when this broker
  // was added, promoted or removed by it).
  void LogMembershipChange(paxos::Instance instance, const paxos::Membership& membership);
  // A learner member tells the leader its chosen frontier (see broker.cc).
  void ReportFrontierToLeader();
  static constexpr uint64_t kFrontierReportMs = 500;
  uint64_t frontier_ticks_ = 0;

  BrokerConfig config_;
  zmq::context_t context_{1};
  std::unique_ptr<DataDir> data_dir_;  // held (locked) for the broker's lifetime
  bool quarantined_ = false;
  LmdbStore::ScrubReport scrub_;
  std::unique_ptr<LmdbStore> store_;
  std::unique_ptr<NodeStorage> node_storage_;
  std::unique_ptr<paxos::Replica> replica_;
  std::unique_ptr<node::NodeLoop> loop_;
  std::optional<CurveKeyPair> keys_;                // none in plaintext mode
  std::map<std::string, uint32_t> member_by_key_;   // public key -> member id (in effect)
  std::set<uint32_t> member_ids_;                   // the members in effect
  std::set<uint32_t> removed_ids_;                  // removed by the last change
  std::map<std::string, uint32_t> removed_by_key_;
  int self_state_ = -1;           // 0 not a member, 1 learner, 2 voter
  std::string membership_error_;  // a link to a new member failed
  AccessList access_;
  std::unique_ptr<ZapHandler> zap_;
  std::unique_ptr<PeerTransport> peers_;
  std::unique_ptr<SnapshotService> snapshots_;
  std::unique_ptr<CatchUpServer> catchup_;
  std::unique_ptr<ClientService> clients_;
  std::unique_ptr<ClientConnections> connections_;  // only with metrics on
  std::unique_ptr<monitoring::BrokerMetrics> metrics_;
  uint64_t peer_frames_rejected_ = 0;
  uint64_t peer_rejects_since_log_ = 0;
  std::chrono::steady_clock::time_point last_peer_reject_log_{};
  paxos::Role last_role_ = paxos::Role::kFollower;
  paxos::NodeId last_leader_{};
  // Records the catch-up server found damaged (each logged once).
  static constexpr size_t kCatchUpDamagedMax = 65536;
  std::set<uint64_t> catchup_damaged_;
  uint64_t catchup_damage_count_ = 0;
  // An index or compacted-view record failed its checks: they are rebuilt
  // (RepairDerived), a bounded number of instances per tick.
  bool derived_damage_ = false;
  static constexpr size_t kRebuildInstancesPerTick = 4096;
  static constexpr size_t kRebuildCutStepMax = 4096;  // log records deleted per tick
  std::string rebuild_error_;
  // The damaged log record the rebuild waited for at the last tick.
  paxos::Instance rebuild_blocked_at_ = paxos::kNoInstance;
  bool rebuild_cut_logged_ = false;
  uint64_t derived_rebuilds_ = 0;
  uint64_t votes_while_catching_up_ = 0;
  std::string deferred_error_;  // a flush the snapshot service asked for failed
  bool last_catching_up_ = false;
  paxos::Instance last_rejoin_target_{};
  // Journaled writes are committed to LMDB after this long at the latest
  // (also after NodeStorage::kPendingJournalBytesMax): time bounds what a
  // restart replays.
  static constexpr uint64_t kPendingMs = 5000;
  uint64_t pending_ticks_ = 0;
};

}  // namespace ordo::broker
