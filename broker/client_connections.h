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
  // connection goes uncounted. `socket` must outlive this object.
  static Status Attach(zmq::context_t& context, zmq::socket_t& socket,
                       std::unique_ptr<ClientConnections>* out);
  ~ClientConnections();

  // Drains waiting events and returns the connections open now.
  uint64_t Count();

 private:
  explicit ClientConnections(zmq::socket_t events) : events_(std::move(events)) {}
  zmq::socket_t events_;
  int64_t open_ = 0;
};

}  // namespace ordo::broker
