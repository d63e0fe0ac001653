// A raw DEALER on a broker's peer (or client) endpoint, as a process
// outside the cluster would open one: plaintext, or CURVE with the key pair
// in a key file (base/keys.h) and the broker's public key.
#pragma once

#include <stdexcept>
#include <string>
#include <zmq.hpp>

#include "base/keys.h"

namespace ordo::testing {

// `key_file` "": plaintext. Else the client key pair; `server_key_file` is
// the broker's own key file, for its public key.
inline zmq::socket_t PeerDealer(zmq::context_t& ctx, const std::string& endpoint,
                                const std::string& key_file = "",
                                const std::string& server_key_file = "") {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  if (!key_file.empty()) {
    StatusOr<KeyFile> mine = LoadKeyFile(key_file);
    StatusOr<KeyFile> server = LoadKeyFile(server_key_file);
    if (!mine.ok()) throw std::runtime_error(mine.status().message());
    if (!server.ok()) throw std::runtime_error(server.status().message());
    s.set(zmq::sockopt::curve_serverkey, server.value().pair.public_key);
    s.set(zmq::sockopt::curve_publickey, mine.value().pair.public_key);
    s.set(zmq::sockopt::curve_secretkey, mine.value().pair.secret_key);
  }
  s.connect("tcp://" + endpoint);
  return s;
}

}  // namespace ordo::testing
