#include "broker/access.h"

#include <toml++/toml.h>

#include <set>

#include "base/keys.h"
#include "base/toml_file.h"

namespace ordo::broker {

const char* PermissionName(Permission p) {
  switch (p) {
    case kPermissionPublish:
      return "publish";
    case kPermissionSubscribe:
      return "subscribe";
    case kPermissionAdmin:
      return "admin";
  }
  return "?";
}

namespace {

// [[clients]]: each with a key no one else in the file (or in [[members]])
// uses, and known permissions.
Status LoadClients(const std::string& path, const toml::array* arr,
                   std::set<std::string>* keys_seen, AccessList* out) {
  if (!arr) return Status::Error(path + ": clients must be an array of tables ([[clients]])");
  for (size_t i = 0; i < arr->size(); ++i) {
    const std::string where = path + ": clients[" + std::to_string(i) + "]";
    const toml::table* c = (*arr)[i].as_table();
    if (!c) return Status::Error(where + ": must be a table with public_key and permissions");
    for (const auto& [k, v] : *c) {
      if (k.str() != "name" && k.str() != "public_key" && k.str() != "permissions") {
        return Status::Error(where + "." + std::string(k.str()) + ": unknown field");
      }
    }
    ClientGrant grant;
    if (auto name = (*c)["name"]) {
      if (!name.is_string()) return Status::Error(where + ".name: must be a string");
      grant.name = *name.value<std::string>();
    }
    const std::optional<std::string> pk = (*c)["public_key"].value<std::string>();
    if (!pk || !IsCurveKey(*pk)) {
      return Status::Error(where + ".public_key: must be a key of 40 Z85 characters");
    }
    if (!keys_seen->insert(*pk).second) {
      return Status::Error(where +
                           ".public_key: appears twice (or is a member's or a "
                           "learner's key): a client needs a key of its own");
    }
    const toml::array* perms = (*c)["permissions"].as_array();
    if (!perms) {
      return Status::Error(where +
                           ".permissions: must be an array of \"publish\", "
                           "\"subscribe\", \"admin\"");
    }
    for (const toml::node& p : *perms) {
      const std::optional<std::string> v = p.value<std::string>();
      uint8_t bit = 0;
      for (Permission known : {kPermissionPublish, kPermissionSubscribe, kPermissionAdmin}) {
        if (v && *v == PermissionName(known)) bit = known;
      }
      if (bit == 0) {
        return Status::Error(where + ".permissions: " + (v ? "\"" + *v + "\"" : "a non-string") +
                             " is not one of \"publish\", \"subscribe\", \"admin\"");
      }
      grant.permissions |= bit;
    }
    out->clients.emplace(*pk, std::move(grant));
  }
  return Status::Ok();
}

}  // namespace

StatusOr<AccessList> LoadAccessFile(const std::string& path, const BrokerConfig& config) {
  AccessList out;
  if (path.empty()) return out;
  toml::table t;
  if (Status s = ParseTomlFile(path, &t); !s.ok()) return s;
  for (const auto& [key, value] : t) {
    if (key.str() != "learners" && key.str() != "clients") {
      return Status::Error(path + ": " + std::string(key.str()) + ": unknown field");
    }
  }
  std::set<std::string> member_keys;
  for (const Member& m : config.members) member_keys.insert(m.public_key);
  std::set<uint32_t> ids;
  if (auto learners = t["learners"]) {
    const toml::array* arr = learners.as_array();
    if (!arr) return Status::Error(path + ": learners must be an array of tables ([[learners]])");
    for (size_t i = 0; i < arr->size(); ++i) {
      const std::string name = path + ": learners[" + std::to_string(i) + "]";
      const toml::table* l = (*arr)[i].as_table();
      if (!l) return Status::Error(name + ": must be a table with id and public_key");
      for (const auto& [k, v] : *l) {
        if (k.str() != "id" && k.str() != "public_key") {
          return Status::Error(name + "." + std::string(k.str()) + ": unknown field");
        }
      }
      const std::optional<int64_t> id = (*l)["id"].value<int64_t>();
      if (!id || !(*l)["id"].is_integer() || *id <= 0 || *id > UINT32_MAX) {
        return Status::Error(name + ".id: must be a positive integer");
      }
      const uint32_t learner = static_cast<uint32_t>(*id);
      if (config.Find(learner)) {
        return Status::Error(name + ".id: " + std::to_string(learner) +
                             " is a member's id; a learner needs an id of its own");
      }
      if (!ids.insert(learner).second) {
        return Status::Error(name + ".id: " + std::to_string(learner) + " appears twice");
      }
      const std::optional<std::string> pk = (*l)["public_key"].value<std::string>();
      if (!pk || !IsCurveKey(*pk)) {
        return Status::Error(name + ".public_key: must be a key of 40 Z85 characters");
      }
      if (member_keys.count(*pk)) {
        return Status::Error(name + ".public_key: is a member's key");
      }
      if (!out.learners.emplace(*pk, learner).second) {
        return Status::Error(name + ".public_key: appears twice");
      }
    }
  }
  if (auto clients = t["clients"]) {
    std::set<std::string> keys_seen = member_keys;
    for (const auto& [key, id] : out.learners) keys_seen.insert(key);
    if (Status s = LoadClients(path, clients.as_array(), &keys_seen, &out); !s.ok()) return s;
  }
  return out;
}

}  // namespace ordo::broker
