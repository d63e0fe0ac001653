// The ZAP handler (ZeroMQ RFC 27): decides every CurveZMQ handshake on this
// broker's sockets. libzmq asks it, over the inproc socket
// "inproc://zeromq.zap.01" of the context, whether a client key may connect
// to a socket of a given ZAP domain; the answer's user id (the key, in Z85)
// then travels with every frame of that connection ("User-Id"), so the
// broker knows who sent each frame. It must be bound before any CURVE
// socket binds: a CURVE server without a handler lets every key in.
//
// Thread rules: single-threaded (the broker's event loop polls it). A
// handshake waits for the loop's next turn (at most one tick).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "broker/status.h"

namespace ordo::broker {

class ZapHandler {
 public:
  // Whether `public_key` (Z85) may connect to a socket of `domain`.
  using Decide = std::function<bool(std::string_view domain, std::string_view public_key)>;

  static Status Start(zmq::context_t& context, Decide decide, std::unique_ptr<ZapHandler>* out);

  void AddPollItem(std::vector<zmq::pollitem_t>* items);
  // Answers every request waiting.
  void Drain();

  // Handshakes refused, by ZAP domain (malformed requests under "").
  const std::map<std::string, uint64_t>& refused() const { return refused_; }

 private:
  ZapHandler(zmq::socket_t socket, Decide decide)
      : socket_(std::move(socket)), decide_(std::move(decide)) {}
  zmq::socket_t socket_;
  Decide decide_;
  std::map<std::string, uint64_t> refused_;
};

}  // namespace ordo::broker
