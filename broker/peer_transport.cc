#include "broker/peer_transport.h"

#include "broker/codec.h"

namespace ordo::broker {

namespace {
constexpr int kPeerQueueMessagesMax = 10000;  // per link, each way

// Traffic that brings a lagging broker up to date rather than running the
// protocol; reported apart so an operator sees catch-up happen. (Issue 5:
// add the snapshot message types here.)
bool IsCatchUp(paxos::MessageType type) { return type == paxos::MessageType::kFetchReply; }
}  // namespace

PeerTransport::PeerTransport(zmq::context_t& context, const BrokerConfig& config)
    : config_(config), context_(context), inbound_(context, zmq::socket_type::router) {}

Status PeerTransport::Open() {
  std::string address;
  ParseEndpoint(config_.Self()->peer, &address);
  try {
    inbound_.set(zmq::sockopt::linger, 0);
    inbound_.set(zmq::sockopt::rcvhwm, kPeerQueueMessagesMax);
    // Larger frames are dropped by ZeroMQ (and the sender disconnected)
    // before they are buffered; the codec applies the exact limit.
    inbound_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(config_.PeerFrameBytesMax()));
    inbound_.bind(address);
    for (const Member& m : config_.members) {
      if (m.id == config_.node_id) continue;
      zmq::socket_t s(context_, zmq::socket_type::dealer);
      s.set(zmq::sockopt::linger, 0);
      s.set(zmq::sockopt::sndhwm, kPeerQueueMessagesMax);
      s.set(zmq::sockopt::immediate, 1);  // do not queue for a peer that is down
      s.set(zmq::sockopt::reconnect_ivl, 100);
      s.set(zmq::sockopt::reconnect_ivl_max, 250);  // a restarted peer hears us soon
      std::string peer_address;
      ParseEndpoint(m.peer, &peer_address);
      s.connect(peer_address);
      outbound_.emplace(m.id, std::move(s));
      links_[m.id];
    }
  } catch (const zmq::error_t& e) {
    return Status::Error("peer endpoint " + config_.Self()->peer + ": " + e.what());
  }
  return Status::Ok();
}

bool PeerTransport::Send(const paxos::Message& message) {
  const std::string frame = EncodePeerMessage(message);
  if (!SendFrame(message.to.value(), frame)) return false;
  if (IsCatchUp(message.type)) catchup_bytes_sent_ += frame.size();
  return true;
}

bool PeerTransport::SendSnapshot(const SnapshotMessage& message) {
  const std::string frame = EncodeSnapshotMessage(message);
  if (!SendFrame(message.to, frame)) return false;
  catchup_bytes_sent_ += frame.size();
  return true;
}

bool PeerTransport::SendFrame(uint32_t to, const std::string& frame) {
  auto it = outbound_.find(to);
  if (it == outbound_.end()) return false;
  LinkCounters& link = links_[to];
  try {
    auto sent = it->second.send(zmq::buffer(frame), zmq::send_flags::dontwait);
    if (!sent) {
      ++link.frames_dropped;
      return false;
    }
  } catch (const zmq::error_t&) {
    ++link.frames_dropped;
    return false;
  }
  link.bytes_sent += frame.size();
  return true;
}

void PeerTransport::NoteReceivedSnapshot(const SnapshotMessage& message, size_t bytes) {
  auto it = links_.find(message.from);
  if (it == links_.end()) return;
  it->second.bytes_received += bytes;
  catchup_bytes_received_ += bytes;
}

void PeerTransport::NoteReceived(const paxos::Message& message, size_t bytes) {
  auto it = links_.find(message.from.value());
  if (it == links_.end()) return;  // not a configured peer
  it->second.bytes_received += bytes;
  if (IsCatchUp(message.type)) catchup_bytes_received_ += bytes;
}

bool PeerTransport::Receive(zmq::message_t* payload, bool* well_formed) {
  zmq::message_t identity;
  try {
    if (!inbound_.recv(identity, zmq::recv_flags::dontwait)) return false;
    *well_formed = identity.more();
    if (!*well_formed) return true;
    (void)inbound_.recv(*payload, zmq::recv_flags::none);
    // Anything beyond one payload frame is not from a broker: drain it.
    while (payload->more()) {
      *well_formed = false;
      zmq::message_t extra;
      (void)inbound_.recv(extra, zmq::recv_flags::none);
      if (!extra.more()) break;
    }
  } catch (const zmq::error_t&) {
    return false;
  }
  return true;
}

}  // namespace ordo::broker
