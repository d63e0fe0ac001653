#include "broker/client_connections.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace ordo::broker {

Status ClientConnections::Attach(zmq::context_t& context, zmq::socket_t& socket,
                                 std::unique_ptr<ClientConnections>* out, int tcp_user_timeout_ms) {
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
    out->reset(new ClientConnections(std::move(events), tcp_user_timeout_ms));
  } catch (const zmq::error_t& e) {
    return Status::Error(std::string("client connection monitor: ") + e.what());
  }
  return Status::Ok();
}

ClientConnections::~ClientConnections() = default;

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
      if (head.size() < sizeof(uint16_t)) continue;
      uint16_t event = 0;
      std::memcpy(&event, head.data(), sizeof event);
      if (event == ZMQ_EVENT_LISTENING && tcp_user_timeout_ms_ > 0 && head.size() >= 6) {
        // The value is the listening socket's descriptor, alive while bound.
        uint32_t fd = 0;
        std::memcpy(&fd, static_cast<const char*>(head.data()) + 2, sizeof fd);
        const unsigned int ms = static_cast<unsigned int>(tcp_user_timeout_ms_);
        if (setsockopt(static_cast<int>(fd), IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms) != 0) {
          spdlog::warn("client endpoint: TCP_USER_TIMEOUT: {}", std::strerror(errno));
        }
      }
      if (event == ZMQ_EVENT_ACCEPTED) ++open_;
      // Every accepted connection ends in exactly one disconnected event
      // (closed by the client, a failed handshake, or an error).
      if (event == ZMQ_EVENT_DISCONNECTED && open_ > 0) --open_;
    }
  } catch (const zmq::error_t&) {
    // The monitor is gone (shutdown): report the last count.
  }
  return static_cast<uint64_t>(open_);
}

}  // namespace ordo::broker
