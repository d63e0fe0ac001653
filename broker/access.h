// The access file (security.access_file): the keys that may connect to this
// broker besides the members' (those are in [[members]]): learners on the
// peer port, clients on the client port with what each may do. Reloaded on
// SIGHUP, so a learner or a client is let in (or out) without a restart.
//
//   [[learners]]
//   id = 10                   # its node_id: the `from` of its frames
//   public_key = "Z85..."     # from its key file (ordo keygen)
//
//   [[clients]]
//   name = "billing"          # optional, for logs
//   public_key = "Z85..."
//   permissions = ["publish", "subscribe", "admin"]
//
// publish: Publish. subscribe: Subscribe, Credit and Fetch (replay).
// admin: Status (and, later, membership changes).
//
// Thread rules: a value; loaded on the event loop.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "base/status.h"
#include "broker/config.h"

namespace ordo::broker {

enum Permission : uint8_t {
  kPermissionPublish = 1,
  kPermissionSubscribe = 2,
  kPermissionAdmin = 4,
};
// "publish", "subscribe", "admin".
const char* PermissionName(Permission p);

struct ClientGrant {
  std::string name;         // "" when the file gives none
  uint8_t permissions = 0;  // Permission bits
};

struct AccessList {
  std::map<std::string, uint32_t> learners;                 // public key (Z85) -> learner id
  std::map<std::string, ClientGrant, std::less<>> clients;  // public key (Z85) -> what it may do
};

// Reads and checks `path`: learner ids are not members' and appear once;
// keys are keys, appear once in the file, and are not members' keys;
// permissions are known names. "" = no file: an empty list.
StatusOr<AccessList> LoadAccessFile(const std::string& path, const BrokerConfig& config);

}  // namespace ordo::broker
