// Broker-to-broker links over ZeroMQ. Each broker binds one ROUTER on its
// peer endpoint for what others send it, and keeps one DEALER per peer,
// connected to that peer's ROUTER, for what it sends. Paxos tolerates loss,
// so sends never block: a full queue (peer slow or down) drops the frame.
//
// Options we rely on are set explicitly (see Open()): bounded high-water
// marks, no linger, no queueing towards peers that are not connected, and a
// hard cap on incoming frame size so a garbage sender cannot make us
// allocate without bound.
//
// Thread rules: single-threaded (the broker's event loop).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <zmq.hpp>

#include "broker/codec.h"
#include "broker/config.h"
#include "broker/status.h"
#include "paxos/message.h"

namespace ordo::broker {

class PeerTransport {
 public:
  PeerTransport(zmq::context_t& context, const BrokerConfig& config);

  // Binds the ROUTER and connects one DEALER per peer.
  Status Open();

  // Encodes and queues `message` to message.to. Returns false when dropped.
  bool Send(const paxos::Message& message);
  // The same for a snapshot transfer message (counted as catch-up bytes).
  bool SendSnapshot(const SnapshotMessage& message);

  // The socket to poll for incoming frames.
  zmq::socket_t& inbound() { return inbound_; }

  // Receives one frame without blocking. Returns false when none is waiting.
  // *payload is the frame as sent by the peer (the ROUTER's routing frame is
  // stripped); *well_formed is false when the ZeroMQ message did not have
  // exactly the shape a peer sends (identity + one frame).
  bool SendFrame(uint32_t to, const std::string& frame);
  bool Receive(zmq::message_t* payload, bool* well_formed);

  // Counts a frame the broker decoded and accepted as `message` from its
  // sender (per-link bytes in, catch-up bytes). Frames that fail to decode
  // have no trustworthy sender and are counted as rejected instead.
  void NoteReceived(const paxos::Message& message, size_t bytes);
  void NoteReceivedSnapshot(const SnapshotMessage& message, size_t bytes);

  struct LinkCounters {
    uint64_t bytes_sent = 0;
    uint64_t bytes_received = 0;
    uint64_t frames_dropped = 0;
  };
  // By peer node id; one entry per configured peer.
  const std::map<uint32_t, LinkCounters>& links() const { return links_; }
  // Bytes of catch-up traffic (see IsCatchUp in peer_transport.cc).
  uint64_t catchup_bytes_sent() const { return catchup_bytes_sent_; }
  uint64_t catchup_bytes_received() const { return catchup_bytes_received_; }

 private:
  const BrokerConfig& config_;
  zmq::context_t& context_;
  zmq::socket_t inbound_;
  std::map<uint32_t, zmq::socket_t> outbound_;  // by peer node id
  std::map<uint32_t, LinkCounters> links_;
  uint64_t catchup_bytes_sent_ = 0;
  uint64_t catchup_bytes_received_ = 0;
};

}  // namespace ordo::broker
