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
#include <span>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

#include "base/status.h"
#include "broker/status.h"

namespace ordo::broker {

// One ZAP request, as libzmq sends it: version "1.0", request id, domain,
// address, routing id, mechanism "CURVE", then the client's 32-byte public
// key. Anything else (another version or mechanism, a part missing or
// extra, a key of another size) is malformed.
struct ZapRequest {
  std::string request_id;
  std::string domain;
  std::string address;     // the peer's IP address, as libzmq gives it
  std::string public_key;  // Z85, 40 characters
};
StatusOr<ZapRequest> ParseZapRequest(std::span<const std::string_view> parts);

// What the broker answers a handshake.
enum class ZapAnswer : uint8_t {
  kAllow,
  kUnknownKey,          // status 400: a key the access file does not list
  kTooManyConnections,  // status 400 too: a key far past its connection limit
};
// (Not 300, ZAP's "temporary failure": libzmq 4.3 answers it by leaving the
// client's handshake hanging until handshake_ivl, 30 s, with no event on
// either side; 400 ends it at once and the client is told.)

// The three answer frames after the version and the request id: status
// code, status text and user id (the key when allowed, else empty).
struct ZapReply {
  std::string status;
  std::string text;
  std::string user_id;
};
ZapReply MakeZapReply(ZapAnswer answer, std::string_view public_key);
// The reply to a request that could not be parsed (status 500).
ZapReply MalformedZapReply(std::string_view why);

class ZapHandler {
 public:
  // Whether `public_key` (Z85) may connect to a socket of `domain`.
  using Decide = std::function<ZapAnswer(const ZapRequest& request)>;

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
