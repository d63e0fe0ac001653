// The access file (security.access_file): the keys that may connect to this
// broker besides the members' (those are in [[members]]). Reloaded on
// SIGHUP, so a learner is let in without restarting a voter.
//
//   [[learners]]
//   id = 10                   # its node_id: the `from` of its frames
//   public_key = "Z85..."     # from its key file (ordo keygen)
//
// Thread rules: a value; loaded on the event loop.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "base/status.h"
#include "broker/config.h"

namespace ordo::broker {

struct AccessList {
  std::map<std::string, uint32_t> learners;  // public key (Z85) -> learner id
};

// Reads and checks `path`: learner ids are not members' and appear once;
// keys are keys, appear once, and are not members' keys. "" = no file: an
// empty list.
StatusOr<AccessList> LoadAccessFile(const std::string& path, const BrokerConfig& config);

}  // namespace ordo::broker
