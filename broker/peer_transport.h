// Broker-to-broker links over ZeroMQ. Each voter binds one ROUTER on its
// peer endpoint for what others send it, and keeps one DEALER per peer,
// connected to that peer's ROUTER, for what it sends. Paxos tolerates loss,
// so sends never block: a full queue (peer slow or down) drops the frame.
//
// Learners (non-voting brokers, not in [[members]]) have no peer endpoint:
// the voters do not know them. A learner sends through its DEALERs like a
// voter; a voter remembers the ROUTER routing id a learner's accepted frame
// arrived with (NoteReceived) and routes its replies back over that
// connection, so the learner reads them on its DEALERs. At most
// kLearnerRoutesMax learners are remembered; the least recently heard one
// is forgotten first (it is re-learned from its next frame).
//
// Options we rely on are set explicitly (see Open()): bounded high-water
// marks, no linger, no queueing towards peers that are not connected, and a
// hard cap on incoming frame size so a garbage sender cannot make us
// allocate without bound.
//
// Security (unless security.insecure): CurveZMQ on every link. The ROUTER
// is a CURVE server that the ZAP handler (broker/zap_handler.h) lets in
// only a member's or a listed learner's key; each DEALER knows the public
// key of the member it connects to, so a frame on it is from that member.
// Receive says who sent a frame (Sender); the broker drops any frame whose
// `from` is not that sender.
//
// Thread rules: single-threaded (the broker's event loop).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "base/keys.h"
#include "broker/codec.h"
#include "broker/config.h"
#include "broker/status.h"
#include "paxos/message.h"

namespace ordo::broker {

class PeerTransport {
 public:
  // `keys`: this broker's key pair; null when security.insecure (plaintext).
  PeerTransport(zmq::context_t& context, const BrokerConfig& config, const CurveKeyPair* keys);

  // The ZAP domain of the peer endpoint's handshakes.
  static constexpr char kZapDomain[] = "ordo-peer";

  // The link counters of every learner together (metrics label
  // peer="learner"): one label however many learners come and go.
  static constexpr uint32_t kLearnersLinkId = 0;  // 0 is no node's id
  static constexpr size_t kLearnerRoutesMax = 256;

  // A voter binds the ROUTER; every broker connects one DEALER per voter
  // (but itself): at first the config file's [[members]], then SetMembers's.
  Status Open();
  // The members in effect (voters and learner members, from the log's
  // membership): a DEALER to each but this broker; links to members no
  // longer listed (or listed with another endpoint or key) are closed.
  // Bumps generation() when the set of sockets changed (poll again).
  Status SetMembers(const std::vector<Member>& members);
  uint64_t generation() const { return generation_; }

  // Encodes and queues `message` to message.to: over the DEALER to a voter,
  // or back over the ROUTER to a learner heard from. Returns false when
  // dropped (queue full, or a learner not heard from or gone).
  bool Send(const paxos::Message& message);
  // The same for a snapshot transfer message (counted as catch-up bytes).
  bool SendSnapshot(const SnapshotMessage& message);

  // Appends every socket that receives peer frames (the ROUTER, and the
  // DEALERs where learners get their replies) to `items`, for zmq::poll.
  void AddPollItems(std::vector<zmq::pollitem_t>* items);

  // Who a received frame came from, as far as the connection tells.
  struct Sender {
    // The ROUTER routing id the frame came with ("" when it came on a
    // DEALER); pass it to NoteReceived.
    std::string route;
    // On the ROUTER with CURVE: the public key (Z85) the sender's handshake
    // proved it holds. "" in plaintext.
    std::string key;
    // On a DEALER: the member it is connected to (with CURVE, the server
    // key pinned that member). 0 on the ROUTER.
    uint32_t link = 0;
  };
  // Receives one frame without blocking. Returns false when none is waiting.
  // *payload is the frame as sent by the peer (the ROUTER's routing frame is
  // stripped); *well_formed is false when the ZeroMQ message did not have
  // exactly the shape a peer sends (identity + one frame on the ROUTER, one
  // frame on a DEALER).
  bool Receive(zmq::message_t* payload, bool* well_formed, Sender* sender);

  // Counts a frame the broker decoded and accepted as `message` from its
  // sender (per-link bytes in, catch-up bytes), and for a sender that is not
  // a member (a learner) remembers `route` for the replies. Frames that fail
  // to decode have no trustworthy sender and are counted as rejected instead.
  void NoteReceived(const paxos::Message& message, size_t bytes, const std::string& route);
  void NoteReceivedSnapshot(const SnapshotMessage& message, size_t bytes, const std::string& route);
  // Sends an encoded frame to a member, or to a learner over its route.
  bool SendFrame(uint32_t to, zmq::message_t frame);
  // A FetchReply frame encoded elsewhere (broker/catchup_server.h).
  bool SendCatchUp(uint32_t to, zmq::message_t frame);

  size_t learner_routes() const { return learners_.size(); }

  // Once per tick: a DEALER whose CURVE handshake the peer refused (our key
  // is not in its config, yet) is left alone by ZeroMQ for good; it is
  // connected again a second later, so a key listed later (SIGHUP, a
  // restart) is used without restarting this broker.
  void Tick(std::chrono::steady_clock::time_point now);
  // Handshakes of ours that peers refused.
  uint64_t handshakes_refused_by_peers() const { return handshakes_refused_by_peers_; }

  struct LinkCounters {
    uint64_t bytes_sent = 0;
    uint64_t bytes_received = 0;
    uint64_t frames_dropped = 0;
  };
  // By peer node id: one entry per configured peer, and kLearnersLinkId
  // once a learner was heard from.
  const std::map<uint32_t, LinkCounters>& links() const { return links_; }
  // Bytes of catch-up traffic (see IsCatchUp in peer_transport.cc).
  uint64_t catchup_bytes_sent() const { return catchup_bytes_sent_; }
  uint64_t catchup_bytes_received() const { return catchup_bytes_received_; }

 private:
  void NoteReceivedFrom(uint32_t from, size_t bytes, const std::string& route, bool catchup);
  void Connect(const Member& member);
  void Disconnect(uint32_t id);
  std::map<uint32_t, Member> connected_;  // what each DEALER was made for
  uint64_t generation_ = 0;
  uint64_t monitors_made_ = 0;
  const BrokerConfig& config_;
  const CurveKeyPair* keys_;  // null: plaintext
  zmq::context_t& context_;
  zmq::socket_t inbound_;
  std::map<uint32_t, zmq::socket_t> outbound_;  // by peer node id
  struct Monitor {
    zmq::socket_t events;  // ZeroMQ's socket monitor of the DEALER (an inproc PAIR)
    std::string address;   // what the DEALER connects to
    std::optional<std::chrono::steady_clock::time_point> reconnect_at;
    std::chrono::steady_clock::time_point last_warned{};
  };
  std::map<uint32_t, Monitor> monitors_;  // by peer node id, with CURVE only
  uint64_t handshakes_refused_by_peers_ = 0;
  std::map<uint32_t, LinkCounters> links_;
  struct LearnerRoute {
    std::string routing_id;  // the ROUTER identity of its connection
    uint64_t heard = 0;      // frames_heard_ when last heard
  };
  std::map<uint32_t, LearnerRoute> learners_;  // by learner node id
  uint64_t frames_heard_ = 0;
  bool bound_ = false;  // a voter's ROUTER
  uint64_t catchup_bytes_sent_ = 0;
  uint64_t catchup_bytes_received_ = 0;
};

}  // namespace ordo::broker
