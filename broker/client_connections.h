// Counts the TCP connections open on the client endpoint, for the
// ordo_client_connections metric.
//
// Why a ZeroMQ socket monitor rather than counting client identities seen in
// a time window: the ROUTER learns of a connection from ZeroMQ's own accept
// and disconnect events, so the count is exact (idle subscribers and
// connected-but-silent clients count; a client that reconnects with a fresh
// identity does not count twice) and needs no window to tune. The events
// arrive on an inproc PAIR socket that is drained without blocking, once per
// tick, off the request path.
//
// Thread rules: single-threaded (the broker's event loop).
#pragma once

#include <cstdint>
#include <memory>

#include <zmq.hpp>

#include "broker/status.h"

namespace ordo::broker {

class ClientConnections {
 public:
  // Starts monitoring `socket`. Call before it binds, so that no accepted
  // connection goes uncounted. `socket` must outlive this object. With
  // `tcp_user_timeout_ms` > 0, the listening socket gets TCP_USER_TIMEOUT
  // (at the first Count() after the bind), which every accepted connection
  // inherits: a connection whose sent data stays unacknowledged that long
  // (a dead host, or a client that stopped reading: zero-window probes
  // count too) is closed by the kernel, and ZeroMQ frees what it queued.
  static Status Attach(zmq::context_t& context, zmq::socket_t& socket,
                       std::unique_ptr<ClientConnections>* out, int tcp_user_timeout_ms = 0);
  ~ClientConnections();

  // Drains waiting events and returns the connections open now.
  uint64_t Count();

 private:
  ClientConnections(zmq::socket_t events, int tcp_user_timeout_ms)
      : events_(std::move(events)), tcp_user_timeout_ms_(tcp_user_timeout_ms) {}
  zmq::socket_t events_;
  int tcp_user_timeout_ms_ = 0;
  int64_t open_ = 0;
};

}  // namespace ordo::broker
