// The TCP connections open on the client endpoint: counted for the
// ordo_client_connections metric, and limited per client key.
//
// Why a ZeroMQ socket monitor rather than counting client identities seen in
// a time window: the ROUTER learns of a connection from ZeroMQ's own accept
// and disconnect events, so the count is exact (idle subscribers and
// connected-but-silent clients count; a client that reconnects with a fresh
// identity does not count twice) and needs no window to tune. The events
// arrive on an inproc PAIR socket that is drained without blocking, once per
// tick, off the request path.
//
// The limit per key. Each event names the connection's descriptor, and so
// does every frame (ZMQ_SRCFD), beside the key the ZAP handler let in
// ("User-Id"): a connection is bound to its key by its first frame and
// unbound by its disconnect event. A first frame past the key's limit is
// answered TooManyConnections (by ClientService), which tells the client
// to go elsewhere, and its connection is closed kCloseDelay later, once
// the answer has left. The handshake comes first and names the key but not
// the descriptor, so the ZAP handler asks Admit(), which counts the key's
// bound connections plus those admitted and not yet heard from: past twice
// the limit, the handshake itself is refused (the client is told its key
// was refused). Admitted connections that never send are closed after
// Options::silent_max, and an admission not bound within 5 s more is
// forgotten, so silent connections cannot pile up either.
//
// Thread rules: single-threaded (the broker's event loop).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "broker/status.h"

namespace ordo::broker {

class ClientConnections {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kCloseDelay = std::chrono::milliseconds(200);

  struct Options {
    // With > 0, the listening socket gets TCP_USER_TIMEOUT (at the first
    // Count() after the bind), which every accepted connection inherits: a
    // connection whose sent data stays unacknowledged that long (a dead
    // host, or a client that stopped reading: zero-window probes count
    // too) is closed by the kernel, and ZeroMQ frees what it queued.
    int tcp_user_timeout_ms = 0;
    // Connections one client key may hold (CurveZMQ only).
    uint32_t per_key_max = 100;
    // A connection that sent nothing this long after it was accepted is closed.
    Clock::duration silent_max = std::chrono::seconds(30);
  };
  // Starts monitoring `socket`. Call before it binds, so that no accepted
  // connection goes uncounted. `socket` must outlive this object.
  static Status Attach(zmq::context_t& context, zmq::socket_t& socket,
                       std::unique_ptr<ClientConnections>* out, const Options& options);
  ~ClientConnections();

  // Drains waiting events and returns the connections open now.
  uint64_t Count();

  // The ZAP handler's question: may one more connection with `key` be let
  // in? (It may up to twice the limit: those past the limit are then told
  // so in answer to their first request.)
  bool Admit(const std::string& key, Clock::time_point now);

  // A frame arrived on connection `fd` (ZMQ_SRCFD) from `key` ("" in
  // plaintext). False when the connection is past its key's limit: answer
  // TooManyConnections and handle nothing (it is closed soon).
  bool OnFrame(int fd, std::string_view key);

  // Closes the connections past their key's limit (kCloseDelay after
  // their first frame) and those silent since they were accepted
  // (Options::silent_max); forgets stale admissions. Once a tick is enough.
  void Sweep(Clock::time_point now);

  // Connections this object closed, ever: past the limit, and silent.
  uint64_t closed_over_limit() const { return closed_over_limit_; }
  uint64_t closed_silent() const { return closed_silent_; }
  // Bound connections of `key` now (for tests and status).
  uint32_t bound(const std::string& key) const;

 private:
  struct Connection {
    bool open = false;
    bool heard = false;       // sent a frame
    bool over_limit = false;  // its first frame came past the key's limit
    bool closing = false;     // shut down by us; its disconnect will follow
    Clock::time_point accepted{};
    Clock::time_point close_at{};
    std::string key;  // bound to (counted in per_key_) when heard && !over_limit
  };
  ClientConnections(zmq::socket_t events, const Options& options)
      : events_(std::move(events)), options_(options) {}
  // An admission is forgotten a while after its connection would have been
  // closed for silence, or sooner when fewer connections are open unheard
  // than admissions wait (Admit).
  Clock::duration admission_ttl() const { return options_.silent_max + std::chrono::seconds(5); }
  Connection& At(int fd);
  // Open connections that have not sent a frame yet, of any key.
  size_t Unheard() const;
  void Unbind(Connection& c);
  void Close(int fd, Connection& c);

  zmq::socket_t events_;
  Options options_;
  uint64_t open_ = 0;
  std::vector<Connection> by_fd_;
  std::map<std::string, uint32_t, std::less<>> per_key_;
  // Handshakes admitted and not yet bound, by key: when each was admitted.
  std::map<std::string, std::deque<Clock::time_point>, std::less<>> admitted_;
  uint64_t closed_over_limit_ = 0;
  uint64_t closed_silent_ = 0;
  Clock::time_point next_sweep_{};
};

}  // namespace ordo::broker
