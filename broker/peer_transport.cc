#include "broker/peer_transport.h"

#include <arpa/inet.h>
#include <flatbuffers/flatbuffers.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "broker/codec.h"

namespace ordo::broker {

namespace fb = flatbuffers;

namespace {
// Per link, each way. Frames beyond it are dropped (counted); consensus
// retransmits what matters. It bounds the memory a backlog can take: a
// batch frame is up to a few hundred KiB.
constexpr int kPeerQueueMessagesMax = 1000;

// Traffic that brings a lagging broker up to date rather than running the
// protocol; reported apart so an operator sees catch-up happen. (Issue 5:
// add the snapshot message types here.)
bool IsCatchUp(paxos::MessageType type) { return type == paxos::MessageType::kFetchReply; }
}  // namespace

PeerTransport::PeerTransport(zmq::context_t& context, const BrokerConfig& config,
                             const CurveKeyPair* keys)
    : config_(config), keys_(keys), context_(context), inbound_(context, zmq::socket_type::router) {}

namespace {
// Links that stop carrying anything (a partition, a dead host, a peer
// frozen by SIGSTOP) are torn down after timing.peer_link_timeout_ms and
// rebuilt as soon as a connect gets through: ZeroMQ heartbeats (a PING
// every fifth of the timeout) on both ends, and a bound of half the timeout
// on each connect attempt, so that after a partition heals the next
// attempt is that near instead of the kernel's retransmit and SYN backoff
// (1, 2, 4, ... s): without them a healed link waited seconds, up to half a
// minute, to carry traffic again (bench/results/2026-12-06-heal-ab.md).
void SetLinkLiveness(zmq::socket_t& s, uint32_t timeout_ms) {
  s.set(zmq::sockopt::tcp_keepalive, 1);
  if (timeout_ms == 0) return;
  s.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(timeout_ms / 5));
  s.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(timeout_ms));
  // What the other end waits for our next PING before dropping the link.
  s.set(zmq::sockopt::heartbeat_ttl, static_cast<int>(timeout_ms));
}
std::string HostOf(const std::string& endpoint) {
  const size_t colon = endpoint.rfind(':');
  return colon == std::string::npos ? std::string() : endpoint.substr(0, colon);
}
bool IsSpecificIpv4(const std::string& host, in_addr* address) {
  return inet_pton(AF_INET, host.c_str(), address) == 1 && address->s_addr != INADDR_ANY;
}
// Whether `address` is one of this machine's (binding a socket to it works).
bool IsLocalIpv4(const in_addr& address) {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr = address;
  const bool local = ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return local;
}
// Where this member's outgoing links leave from: the address it binds its
// peer endpoint to when that is one IPv4 address, else the address it
// advertises when that is one IPv4 address of this machine (not 0.0.0.0),
// so that peers and firewalls see a member's connections come from the
// address it is known by (and a test can cut one member off by its address
// alone). "" otherwise (a host name, every interface, an address behind
// NAT that is not this machine's): the kernel picks.
std::string SourceHost(const BrokerConfig& config) {
  const Member* self = config.Self();
  if (self == nullptr) return "";
  in_addr address{};
  if (const std::string bound = HostOf(config.PeerBindEndpoint()); bound != "0.0.0.0") {
    return IsSpecificIpv4(bound, &address) ? bound : "";
  }
  const std::string advertised = HostOf(self->peer);
  if (IsSpecificIpv4(advertised, &address) && IsLocalIpv4(address)) return advertised;
  return "";
}
}  // namespace

// One DEALER to member `m`'s ROUTER (with its CURVE server key and, with
// CURVE, a monitor for refused handshakes). Throws zmq::error_t.
void PeerTransport::Connect(const Member& m) {
  const int64_t frame_max = static_cast<int64_t>(config_.PeerFrameBytesMax());
  zmq::socket_t s(context_, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, kPeerQueueMessagesMax);
  s.set(zmq::sockopt::rcvhwm, kPeerQueueMessagesMax);  // a learner's replies arrive here
  s.set(zmq::sockopt::maxmsgsize, frame_max);
  s.set(zmq::sockopt::immediate, 1);  // do not queue for a peer that is down
  // A restarted peer hears us within 50 ms (a refused connect on
  // 127.0.0.1 or a LAN costs next to nothing); its catch-up replies and
  // the leader's heartbeats wait for this reconnect.
  s.set(zmq::sockopt::reconnect_ivl, 10);
  s.set(zmq::sockopt::reconnect_ivl_max, 50);
  if (config_.peer_link_timeout_ms != 0) {
    s.set(zmq::sockopt::connect_timeout, static_cast<int>(config_.peer_link_timeout_ms / 2));
  }
  SetLinkLiveness(s, config_.peer_link_timeout_ms);
  if (keys_) {
    s.set(zmq::sockopt::curve_serverkey, m.public_key);
    s.set(zmq::sockopt::curve_publickey, keys_->public_key);
    s.set(zmq::sockopt::curve_secretkey, keys_->secret_key);
  }
  std::string peer_address;
  ParseEndpoint(m.peer, &peer_address);
  const std::string source = SourceHost(config_);
  // ZeroMQ's "tcp://SOURCE:0;DESTINATION": any port, from that address.
  // Tick disconnects and connects this same string again.
  const std::string connect_to =
      source.empty() ? peer_address : "tcp://" + source + ":0;" + peer_address.substr(6);
  if (keys_) {
    // Refused handshakes are seen here (see Tick).
    const std::string events = "inproc://ordo-peer-monitor-" + std::to_string(config_.node_id) +
                               "-" + std::to_string(m.id) + "-" +
                               std::to_string(reinterpret_cast<uintptr_t>(this)) + "-" +
                               std::to_string(++monitors_made_);
    if (zmq_socket_monitor(s.handle(), events.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) !=
        0) {
      throw zmq::error_t();
    }
    Monitor mon{zmq::socket_t(context_, zmq::socket_type::pair), connect_to, {}, {}};
    mon.events.set(zmq::sockopt::linger, 0);
    mon.events.connect(events);
    monitors_.emplace(m.id, std::move(mon));
  }
  s.connect(connect_to);
  outbound_.emplace(m.id, std::move(s));
  links_[m.id];
  connected_[m.id] = m;
}

void PeerTransport::Disconnect(uint32_t id) {
  if (auto mon = monitors_.find(id); mon != monitors_.end()) {
    if (auto s = outbound_.find(id); s != outbound_.end()) {
      zmq_socket_monitor(s->second.handle(), nullptr, 0);  // stops the monitor
    }
    monitors_.erase(mon);
  }
  outbound_.erase(id);
  connected_.erase(id);
}

Status PeerTransport::SetMembers(const std::vector<Member>& members) {
  try {
    for (auto it = connected_.begin(); it != connected_.end();) {
      const uint32_t id = it->first;
      auto m =
          std::find_if(members.begin(), members.end(), [&](const Member& x) { return x.id == id; });
      ++it;
      // Gone, or moved to another endpoint or key: the old link goes.
      if (m == members.end() || !(*m == connected_.at(id))) {
        Disconnect(id);
        ++generation_;
      }
    }
    for (const Member& m : members) {
      if (m.id == config_.node_id || connected_.count(m.id)) continue;
      Connect(m);
      ++generation_;
    }
  } catch (const zmq::error_t& e) {
    return Status::Error(std::string("peer links: ") + e.what());
  }
  return Status::Ok();
}

Status PeerTransport::Open() {
  const Member* self = config_.Self();
  const int64_t frame_max = static_cast<int64_t>(config_.PeerFrameBytesMax());
  try {
    if (self) {
      std::string address;
      ParseEndpoint(config_.PeerBindEndpoint(), &address);
      inbound_.set(zmq::sockopt::linger, 0);
      inbound_.set(zmq::sockopt::rcvhwm, kPeerQueueMessagesMax);
      inbound_.set(zmq::sockopt::sndhwm, kPeerQueueMessagesMax);  // replies to learners
      // A reply to a learner that is gone fails (EHOSTUNREACH) rather than
      // vanishing, so its route is forgotten and the drop counted.
      inbound_.set(zmq::sockopt::router_mandatory, 1);
      // Larger frames are dropped by ZeroMQ (and the sender disconnected)
      // before they are buffered; the codec applies the exact limit.
      inbound_.set(zmq::sockopt::maxmsgsize, frame_max);
      SetLinkLiveness(inbound_, config_.peer_link_timeout_ms);
      if (keys_) {
        inbound_.set(zmq::sockopt::curve_server, true);
        inbound_.set(zmq::sockopt::curve_secretkey, keys_->secret_key);
        inbound_.set(zmq::sockopt::zap_domain, kZapDomain);
      }
      inbound_.bind(address);
      bound_ = true;
    }
    for (const Member& m : config_.members) {
      if (m.id != config_.node_id) Connect(m);
    }
  } catch (const zmq::error_t& e) {
    if (!bound_ && self) {  // binding failed
      const std::string bind = config_.PeerBindEndpoint();
      return Status::Error("peer endpoint " + self->peer +
                           (bind == self->peer ? "" : " (bound to " + bind + ")") + ": " +
                           BindErrorText(bind, e.num()));
    }
    return Status::Error("peer endpoint " + (self ? self->peer : std::string("(learner)")) + ": " +
                         e.what());
  }
  return Status::Ok();
}

void PeerTransport::Tick(std::chrono::steady_clock::time_point now) {
  std::vector<uint32_t> refused;
  for (auto& [id, mon] : monitors_) {
    try {
      zmq::message_t event, endpoint;
      while (mon.events.recv(event, zmq::recv_flags::dontwait)) {
        if (event.more()) (void)mon.events.recv(endpoint);
        uint16_t what = 0;
        if (event.size() >= 2) std::memcpy(&what, event.data(), 2);
        if (what != ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && what != ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
          continue;
        }
        ++handshakes_refused_by_peers_;
        if (!mon.reconnect_at) mon.reconnect_at = now + std::chrono::seconds(1);
        if (now - mon.last_warned > std::chrono::seconds(30)) {
          mon.last_warned = now;
          spdlog::warn("node {} refused our CurveZMQ handshake: is this broker's public key in "
                       "its [[members]] (or, for a learner, its access file)? Trying again "
                       "every second",
                       id);
        }
      }
      if (mon.reconnect_at && now >= *mon.reconnect_at) {
        mon.reconnect_at.reset();
        refused.push_back(id);
      }
    } catch (const zmq::error_t&) {
      // The context is terminating: the broker is stopping.
    }
  }
  // A new socket rather than a disconnect and connect of the old one:
  // ZeroMQ does not find a "SOURCE:0;DESTINATION" endpoint again by its
  // string, so the old socket would stay refused for good.
  for (uint32_t id : refused) {
    try {
      const Member m = connected_.at(id);
      const auto warned = monitors_.at(id).last_warned;  // (warned every 30 s, not each time)
      Disconnect(id);
      Connect(m);
      if (auto mon = monitors_.find(id); mon != monitors_.end()) mon->second.last_warned = warned;
      ++generation_;
    } catch (const zmq::error_t&) {
      // The context is terminating: the broker is stopping.
    }
  }
}

void PeerTransport::AddPollItems(std::vector<zmq::pollitem_t>* items) {
  if (bound_) items->push_back({inbound_.handle(), 0, ZMQ_POLLIN, 0});
  for (auto& [id, socket] : outbound_) items->push_back({socket.handle(), 0, ZMQ_POLLIN, 0});
}

bool PeerTransport::Send(const paxos::Message& message) {
  // The encoder's buffer goes to ZeroMQ as it is (a batch is not copied
  // again); ZeroMQ frees it once sent, possibly on its I/O thread.
  std::unique_ptr<fb::DetachedBuffer> buffer = EncodePeerFrame(message);
  const size_t size = buffer->size();
  zmq::message_t frame(
      buffer->data(), size,
      [](void*, void* hint) { delete static_cast<fb::DetachedBuffer*>(hint); }, buffer.get());
  buffer.release();  // owned by `frame` now
  if (!SendFrame(message.to.value(), std::move(frame))) return false;
  if (IsCatchUp(message.type)) catchup_bytes_sent_ += size;
  return true;
}

bool PeerTransport::SendCatchUp(uint32_t to, zmq::message_t frame) {
  const size_t size = frame.size();
  if (!SendFrame(to, std::move(frame))) return false;
  catchup_bytes_sent_ += size;
  return true;
}

bool PeerTransport::SendSnapshot(const SnapshotMessage& message) {
  const std::string encoded = EncodeSnapshotMessage(message);
  if (!SendFrame(message.to, zmq::message_t(encoded.data(), encoded.size()))) return false;
  catchup_bytes_sent_ += encoded.size();
  return true;
}

bool PeerTransport::SendFrame(uint32_t to, zmq::message_t frame) {
  const size_t frame_size = frame.size();
  auto it = outbound_.find(to);
  auto route = it == outbound_.end() ? learners_.find(to) : learners_.end();
  if (it == outbound_.end() && route == learners_.end()) return false;  // unknown node
  LinkCounters& link = links_[it != outbound_.end() ? to : kLearnersLinkId];
  try {
    bool sent = false;
    if (it != outbound_.end()) {
      sent = it->second.send(frame, zmq::send_flags::dontwait).has_value();
    } else {
      // To a learner: back over the connection it opened to our ROUTER.
      sent = inbound_
                 .send(zmq::buffer(route->second.routing_id),
                       zmq::send_flags::sndmore | zmq::send_flags::dontwait)
                 .has_value();
      if (sent) (void)inbound_.send(frame, zmq::send_flags::dontwait);
    }
    if (!sent) {
      ++link.frames_dropped;
      return false;
    }
  } catch (const zmq::error_t& e) {
    // EHOSTUNREACH: the learner disconnected; it is re-learned from its next frame.
    if (it == outbound_.end() && e.num() == EHOSTUNREACH) learners_.erase(route);
    ++link.frames_dropped;
    return false;
  }
  link.bytes_sent += frame_size;
  return true;
}

void PeerTransport::NoteReceived(const paxos::Message& message, size_t bytes,
                                 const std::string& route) {
  NoteReceivedFrom(message.from.value(), bytes, route, IsCatchUp(message.type));
}

void PeerTransport::NoteReceivedSnapshot(const SnapshotMessage& message, size_t bytes,
                                         const std::string& route) {
  NoteReceivedFrom(message.from, bytes, route, true);
}

void PeerTransport::NoteReceivedFrom(uint32_t from, size_t bytes, const std::string& route,
                                     bool catchup) {
  ++frames_heard_;
  uint32_t link_id = from;
  if (!outbound_.count(from)) {
    // A learner. Only a frame on our ROUTER gives a route back to it.
    link_id = kLearnersLinkId;
    if (bound_ && !route.empty()) {
      auto it = learners_.find(from);
      if (it == learners_.end() && learners_.size() >= kLearnerRoutesMax) {
        auto oldest = learners_.begin();
        for (auto l = learners_.begin(); l != learners_.end(); ++l) {
          if (l->second.heard < oldest->second.heard) oldest = l;
        }
        learners_.erase(oldest);
      }
      LearnerRoute& r = learners_[from];
      r.routing_id = route;  // a reconnect brings a new routing id
      r.heard = frames_heard_;
    }
  }
  LinkCounters& link = links_[link_id];
  link.bytes_received += bytes;
  if (catchup) catchup_bytes_received_ += bytes;
}

namespace {
// One frame from a DEALER (exactly one part, no routing id), drained whole.
bool ReceiveFromDealer(zmq::socket_t& socket, zmq::message_t* payload, bool* well_formed) {
  if (!socket.recv(*payload, zmq::recv_flags::dontwait)) return false;
  *well_formed = !payload->more();
  while (payload->more()) {
    zmq::message_t extra;
    (void)socket.recv(extra, zmq::recv_flags::none);
    if (!extra.more()) break;
  }
  return true;
}
}  // namespace

bool PeerTransport::Receive(zmq::message_t* payload, bool* well_formed, Sender* sender) {
  *sender = Sender{};
  try {
    // The ROUTER first: on a voter it carries nearly everything; on a
    // learner (no ROUTER) the DEALERs carry the voters' replies.
    zmq::message_t identity;
    if (!bound_ || !inbound_.recv(identity, zmq::recv_flags::dontwait)) {
      for (auto& [id, socket] : outbound_) {
        if (ReceiveFromDealer(socket, payload, well_formed)) {
          sender->link = id;
          return true;
        }
      }
      return false;
    }
    *well_formed = identity.more();
    if (!*well_formed) return true;
    sender->route.assign(static_cast<const char*>(identity.data()), identity.size());
    (void)inbound_.recv(*payload, zmq::recv_flags::none);
    // The user id the ZAP handler gave this connection: its public key.
    if (const char* key = zmq_msg_gets(payload->handle(), "User-Id")) sender->key = key;
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
