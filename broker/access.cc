#include "broker/access.h"

#include <toml++/toml.h>

#include <set>

#include "base/keys.h"
#include "base/toml_file.h"

namespace ordo::broker {

StatusOr<AccessList> LoadAccessFile(const std::string& path, const BrokerConfig& config) {
  AccessList out;
  if (path.empty()) return out;
  toml::table t;
  if (Status s = ParseTomlFile(path, &t); !s.ok()) return s;
  for (const auto& [key, value] : t) {
    if (key.str() != "learners") {
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
  return out;
}

}  // namespace ordo::broker
