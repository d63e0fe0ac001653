#include "broker/client_connections.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ordo::broker {

namespace {
// Descriptors above this are not tracked (the table is indexed by them).
constexpr int kFdMax = 1 << 20;
constexpr auto kSweepInterval = std::chrono::milliseconds(100);
}  // namespace

Status ClientConnections::Attach(zmq::context_t& context, zmq::socket_t& socket,
                                 std::unique_ptr<ClientConnections>* out, const Options& options) {
  // One monitor address per monitored socket within the context.
  const std::string address =
      "inproc://ordo-client-connections-" + std::to_string(reinterpret_cast<uintptr_t>(&socket));
  if (zmq_socket_monitor(socket.handle(), address.c_str(),
                         ZMQ_EVENT_LISTENING | ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0) {
    return Status::Error(std::string("client connection monitor: ") + zmq_strerror(zmq_errno()));
  }
  try {
    zmq::socket_t events(context, zmq::socket_type::pair);
    events.set(zmq::sockopt::linger, 0);
    events.connect(address);
    out->reset(new ClientConnections(std::move(events), options));
  } catch (const zmq::error_t& e) {
    return Status::Error(std::string("client connection monitor: ") + e.what());
  }
  return Status::Ok();
}

ClientConnections::~ClientConnections() = default;

ClientConnections::Connection& ClientConnections::At(int fd) {
  if (static_cast<size_t>(fd) >= by_fd_.size()) by_fd_.resize(static_cast<size_t>(fd) + 1);
  return by_fd_[static_cast<size_t>(fd)];
}

void ClientConnections::Unbind(Connection& c) {
  if (!c.heard || c.over_limit || c.key.empty()) return;
  auto it = per_key_.find(c.key);
  if (it != per_key_.end() && --it->second == 0) per_key_.erase(it);
}

void ClientConnections::Close(int fd, Connection& c) {
  // shutdown, not close: the descriptor stays ZeroMQ's, which sees the end
  // of the stream, closes it and reports the disconnect. What it already
  // wrote (the TooManyConnections answer) still goes out before the FIN.
  if (::shutdown(fd, SHUT_RDWR) != 0 && errno != ENOTCONN) {
    spdlog::debug("client endpoint: shutdown of connection {}: {}", fd, std::strerror(errno));
  }
  c.closing = true;
}

uint64_t ClientConnections::Count() {
  try {
    for (;;) {
      // Each event is two frames: [uint16 event][uint32 value], then the endpoint.
      zmq::message_t head;
      if (!events_.recv(head, zmq::recv_flags::dontwait)) break;
      while (head.more()) {
        zmq::message_t rest;
        (void)events_.recv(rest, zmq::recv_flags::none);
        if (!rest.more()) break;
      }
      if (head.size() < 6) continue;
      uint16_t event = 0;
      uint32_t value = 0;
      std::memcpy(&event, head.data(), sizeof event);
      std::memcpy(&value, static_cast<const char*>(head.data()) + 2, sizeof value);
      const int fd = static_cast<int>(value);
      if (event == ZMQ_EVENT_LISTENING && options_.tcp_user_timeout_ms > 0) {
        // The value is the listening socket's descriptor, alive while bound.
        const unsigned int ms = static_cast<unsigned int>(options_.tcp_user_timeout_ms);
        if (setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms) != 0) {
          spdlog::warn("client endpoint: TCP_USER_TIMEOUT: {}", std::strerror(errno));
        }
        continue;
      }
      if (fd < 0 || fd > kFdMax) continue;
      Connection& c = At(fd);
      if (event == ZMQ_EVENT_ACCEPTED) {
        if (c.open) {
          Unbind(c);  // its disconnect was lost: this descriptor is a new connection
        } else {
          ++open_;
        }
        c = Connection{};
        c.open = true;
        c.accepted = Clock::now();
      } else if (event == ZMQ_EVENT_DISCONNECTED && c.open) {
        // Every accepted connection ends in exactly one disconnected event
        // (closed by the client or by us, a failed handshake, or an error).
        Unbind(c);
        c = Connection{};
        --open_;
      }
    }
  } catch (const zmq::error_t&) {
    // The monitor is gone (shutdown): report the last count.
  }
  return open_;
}

bool ClientConnections::Admit(const std::string& key, Clock::time_point now) {
  Count();  // disconnects first: they free places
  auto a = admitted_.find(key);
  size_t waiting = 0;
  if (a != admitted_.end()) {
    while (!a->second.empty() && now - a->second.front() > admission_ttl()) a->second.pop_front();
    // Each admission still waiting is a connection that is open and has not
    // spoken. One that went unheard (its client gave up, or ZeroMQ
    // reconnected a socket nobody used) is never claimed by a frame: trim
    // to what can still be waiting, oldest first, or such leftovers would
    // lock the key out until they expire.
    const size_t unheard = Unheard();
    while (a->second.size() > unheard) a->second.pop_front();
    waiting = a->second.size();
  }
  if (bound(key) + waiting >= 2 * static_cast<size_t>(options_.per_key_max)) return false;
  if (a == admitted_.end()) a = admitted_.emplace(key, std::deque<Clock::time_point>()).first;
  a->second.push_back(now);
  return true;
}

bool ClientConnections::OnFrame(int fd, std::string_view key) {
  if (fd < 0 || fd > kFdMax) return true;  // not a TCP connection
  if (static_cast<size_t>(fd) < by_fd_.size()) {
    const Connection& c = by_fd_[static_cast<size_t>(fd)];
    if (c.open && c.heard && c.key == key) return !c.over_limit;  // the usual case
  }
  // A connection's first frame (or a descriptor whose events lag): its
  // accept event was queued before the frame, so draining finds it.
  Count();
  const Clock::time_point now = Clock::now();
  Connection& c = At(fd);
  if (!c.open) {  // the monitor lost the event: count it from here
    c = Connection{};
    c.open = true;
    c.accepted = now;
    ++open_;
  }
  if (c.heard) {
    Unbind(c);  // another key on a reused descriptor whose events lag
    c.over_limit = false;
  }
  c.heard = true;
  c.key = std::string(key);
  if (key.empty()) return true;  // plaintext: no key, no limit
  if (auto a = admitted_.find(key); a != admitted_.end()) {
    a->second.pop_front();  // this connection's admission
    if (a->second.empty()) admitted_.erase(a);
  }
  auto n = per_key_.find(key);
  if (n != per_key_.end() && n->second >= options_.per_key_max) {
    c.over_limit = true;
    c.close_at = now + kCloseDelay;
    ++closed_over_limit_;  // (closed by us, unless the client is quicker)
    return false;
  }
  if (n == per_key_.end()) n = per_key_.emplace(std::string(key), 0).first;
  ++n->second;
  return true;
}

void ClientConnections::Sweep(Clock::time_point now) {
  if (now < next_sweep_) return;
  next_sweep_ = now + kSweepInterval;
  Count();
  for (size_t fd = 0; fd < by_fd_.size(); ++fd) {
    Connection& c = by_fd_[fd];
    if (!c.open || c.closing) continue;
    if (c.over_limit && now >= c.close_at) {
      Close(static_cast<int>(fd), c);
    } else if (!c.heard && now - c.accepted >= options_.silent_max) {
      Close(static_cast<int>(fd), c);
      ++closed_silent_;
    }
  }
  for (auto a = admitted_.begin(); a != admitted_.end();) {
    while (!a->second.empty() && now - a->second.front() > admission_ttl()) a->second.pop_front();
    a = a->second.empty() ? admitted_.erase(a) : std::next(a);
  }
}

size_t ClientConnections::Unheard() const {
  size_t n = 0;
  for (const Connection& c : by_fd_) n += c.open && !c.heard;
  return n;
}

uint32_t ClientConnections::bound(const std::string& key) const {
  auto it = per_key_.find(key);
  return it == per_key_.end() ? 0 : it->second;
}

}  // namespace ordo::broker
