#include "broker/config.h"

#include <arpa/inet.h>
#include <net/if.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>

#include <toml++/toml.h>

#include "base/keys.h"
#include "base/toml_file.h"

namespace ordo::broker {

const Member* BrokerConfig::Find(uint32_t id) const {
  for (const Member& m : members) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

const Member* BrokerConfig::Self() const { return role == Role::kVoter ? Find(node_id) : nullptr; }

const std::string& BrokerConfig::ClientEndpoint() const {
  const Member* self = Self();
  return self ? self->client : client;
}

std::string BrokerConfig::PeerBindEndpoint() const {
  const Member* self = Self();
  return self ? BindEndpointFor(self->peer, bind.peer) : std::string();
}

std::string BrokerConfig::ClientBindEndpoint() const {
  return BindEndpointFor(ClientEndpoint(), bind.client);
}

std::string BrokerConfig::MetricsBindEndpoint() const {
  return metrics.empty() ? std::string() : BindEndpointFor(metrics, bind.metrics);
}

uint64_t BrokerConfig::PeerFrameBytesMax() const {
  const uint64_t window = uint64_t{window_instances_max} * (batch_bytes_max + (64 << 10));
  return std::max<uint64_t>(frame_bytes_max, window + (4 << 20));
}

paxos::Config BrokerConfig::CoreConfig(uint64_t seed) const {
  paxos::Config c;
  c.id = paxos::NodeId(node_id);
  // The file's [[members]] are the bootstrap configuration, for a log with
  // no configuration entry yet; once one is applied (or a snapshot carries
  // one) the log wins. A broker joining a running cluster bootstraps
  // nothing: it pulls the log from the other [[members]] (its seeds) and
  // learns the membership from it.
  for (const Member& m : members) {
    if (join) {
      if (m.id != node_id) c.seeds.push_back(paxos::NodeId(m.id));
      continue;
    }
    c.voters.push_back(paxos::NodeId(m.id));
    paxos::Member b;
    b.id = paxos::NodeId(m.id);
    b.voter = true;
    b.peer = m.peer;
    b.client = m.client;
    b.public_key = m.public_key;
    c.bootstrap_members.push_back(std::move(b));
  }
  c.election_timeout_ticks = election_timeout_ticks;
  c.heartbeat_interval_ticks = heartbeat_interval_ticks;
  c.retransmit_ticks = retransmit_ticks;
  c.fetch_timeout_ticks = fetch_timeout_ticks;
  c.window_instances_max = window_instances_max;
  c.batch_messages_max = batch_messages_max;
  c.batch_bytes_max = batch_bytes_max;
  c.pending_bytes_max = pending_bytes_max;
  // Keep an Accept within a client-sized frame where batches allow.
  c.accept_entries_max = std::max<uint32_t>(1, frame_bytes_max / 2 / batch_bytes_max);
  c.fetch_bytes_max = frame_bytes_max / 2;
  c.snapshot_interval_instances = snapshot_interval_instances;
  c.chain_check_every = chain_check_every;
  c.seed = seed;
  return c;
}

bool ParseEndpoint(const std::string& endpoint, std::string* zmq_address) {
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == endpoint.size()) return false;
  const std::string port = endpoint.substr(colon + 1);
  if (port.size() > 5) return false;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  const int p = std::stoi(port);
  if (p <= 0 || p > 65535) return false;
  if (zmq_address) *zmq_address = "tcp://" + endpoint;
  return true;
}

bool IsHostName(const std::string& host) {
  if (host.empty() || host == "*" || host.front() == '[') return false;
  in_addr address{};
  if (inet_pton(AF_INET, host.c_str(), &address) == 1) return false;
  return if_nametoindex(host.c_str()) == 0;
}

std::string BindEndpointFor(const std::string& advertised, const std::string& bind) {
  const std::string& endpoint = bind.empty() ? advertised : bind;
  const size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos) return endpoint;  // not HOST:PORT (ValidateConfig says so)
  const std::string host = endpoint.substr(0, colon);
  if (host == "*" || (bind.empty() && IsHostName(host))) {
    return "0.0.0.0" + endpoint.substr(colon);
  }
  return endpoint;
}

std::string BindErrorText(const std::string& endpoint, int error) {
  const std::string host = endpoint.substr(0, endpoint.rfind(':'));
  const std::string text = std::strerror(error);
  switch (error) {
    case ENODEV:
      // ZeroMQ binds to an IP address, a network interface's name or *,
      // and looks no host name up.
      return "cannot bind: host '" + host + "' is not an IP address or a network interface of " +
             "this machine (" + text + "); a broker binds its own endpoints by IP address " +
             "(e.g. 127.0.0.1), not by host name";
    case EADDRNOTAVAIL:
      // Typically an advertised address behind NAT or a port forward.
      return "cannot bind: host '" + host + "' is not an address of this machine (" + text +
             "); when others reach this broker at an address that is not its own (NAT, a port " +
             "forward), say what to bind in [bind] (e.g. peer = \"0.0.0.0:PORT\")";
    case EADDRINUSE:
      return "cannot bind: the port is in use (" + text + "): another program (or broker) holds it";
    case EACCES:
      return "cannot bind: permission denied (" + text + "): ports below 1024 need privileges";
    default:
      return text;
  }
}

namespace {

// Reads an integer field, checking its type and range; `name` is the field's
// full path for the error message.
template <typename T>
Status ReadInt(const toml::node_view<const toml::node>& node, const std::string& name, T* out) {
  if (!node) return Status::Ok();
  const auto v = node.value<int64_t>();
  if (!v || !node.is_integer()) return Status::Error(name + ": must be an integer");
  if (*v < 0 || static_cast<uint64_t>(*v) > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
    return Status::Error(name + ": " + std::to_string(*v) + " is out of range");
  }
  *out = static_cast<T>(*v);
  return Status::Ok();
}

Status ReadString(const toml::node_view<const toml::node>& node, const std::string& name,
                  std::string* out) {
  if (!node) return Status::Ok();
  const auto v = node.value<std::string>();
  if (!v || !node.is_string()) return Status::Error(name + ": must be a string");
  *out = *v;
  return Status::Ok();
}

// The fields of a parsed config file, checked one by one.
Status FromTable(const toml::table& t, BrokerConfig* out) {
  static const std::set<std::string> kKnown = {
      "node_id", "cluster_id", "role",     "join",   "client",   "data_dir",
      "metrics", "log_level",  "members",  "timing", "batching", "limits",
      "storage", "retention",  "security", "bind",   "chain"};
  for (const auto& [key, value] : t) {
    if (!kKnown.count(std::string(key.str()))) {
      return Status::Error(std::string(key.str()) + ": unknown field");
    }
  }
  const toml::node_view<const toml::node> root{t};
  Status s;
#define ORDO_READ(expr) \
  if (!(s = (expr)).ok()) return s
  ORDO_READ(ReadInt(root["node_id"], "node_id", &out->node_id));
  ORDO_READ(ReadString(root["cluster_id"], "cluster_id", &out->cluster_id));
  std::string role;
  ORDO_READ(ReadString(root["role"], "role", &role));
  if (role == "voter") {
    out->role = Role::kVoter;
  } else if (role == "learner") {
    out->role = Role::kLearner;
  } else if (root["role"]) {
    return Status::Error("role: '" + role + "' is not \"voter\" or \"learner\"");
  }
  if (auto join = root["join"]) {
    if (!join.is_boolean()) return Status::Error("join: must be true or false");
    out->join = join.value_or(false);
  }
  ORDO_READ(ReadString(root["client"], "client", &out->client));
  ORDO_READ(ReadString(root["data_dir"], "data_dir", &out->data_dir));
  ORDO_READ(ReadString(root["metrics"], "metrics", &out->metrics));
  ORDO_READ(ReadString(root["log_level"], "log_level", &out->log_level));
  if (auto members = root["members"]) {
    const toml::array* arr = members.as_array();
    if (!arr) return Status::Error("members: must be an array of tables ([[members]])");
    out->members.clear();
    for (size_t i = 0; i < arr->size(); ++i) {
      const std::string name = "members[" + std::to_string(i) + "]";
      const toml::table* m = (*arr)[i].as_table();
      if (!m) return Status::Error(name + ": must be a table with id, peer and client");
      for (const auto& [key, value] : *m) {
        const std::string k(key.str());
        if (k != "id" && k != "peer" && k != "client" && k != "public_key") {
          return Status::Error(name + "." + k + ": unknown field");
        }
      }
      const toml::node_view<const toml::node> mv{*m};
      Member member;
      ORDO_READ(ReadInt(mv["id"], name + ".id", &member.id));
      ORDO_READ(ReadString(mv["peer"], name + ".peer", &member.peer));
      ORDO_READ(ReadString(mv["client"], name + ".client", &member.client));
      ORDO_READ(ReadString(mv["public_key"], name + ".public_key", &member.public_key));
      out->members.push_back(member);
    }
  }
  auto section = [&](const char* sec, std::initializer_list<const char*> keys) -> Status {
    auto node = root[sec];
    if (!node) return Status::Ok();
    const toml::table* tb = node.as_table();
    if (!tb) return Status::Error(std::string(sec) + ": must be a table");
    for (const auto& [key, value] : *tb) {
      bool known = false;
      for (const char* k : keys) known |= key.str() == k;
      if (!known) return Status::Error(std::string(sec) + "." + std::string(key.str()) + ": unknown field");
    }
    return Status::Ok();
  };
  ORDO_READ(section("timing", {"tick_ms", "election_timeout_ticks", "heartbeat_interval_ticks",
                               "retransmit_ticks", "fetch_timeout_ticks", "peer_link_timeout_ms"}));
  ORDO_READ(section("batching", {"window_instances_max", "batch_messages_max", "batch_bytes_max",
                                 "pending_bytes_max"}));
  ORDO_READ(section("limits", {"frame_bytes_max", "message_bytes_max", "subscriber_credit_max",
                               "subscriber_queued_bytes_max", "subscribers_queued_bytes_max",
                               "slow_consumer_timeout_ms", "client_connections_per_key_max"}));
  ORDO_READ(section("storage", {"map_size_bytes"}));
  ORDO_READ(section("chain", {"check_every"}));
  ORDO_READ(ReadInt(root["chain"]["check_every"], "chain.check_every", &out->chain_check_every));
  ORDO_READ(section("security", {"insecure", "key_file", "access_file"}));
  if (auto insecure = root["security"]["insecure"]) {
    if (!insecure.is_boolean()) return Status::Error("security.insecure: must be true or false");
    out->security.insecure = *insecure.value<bool>();
  }
  ORDO_READ(ReadString(root["security"]["key_file"], "security.key_file", &out->security.key_file));
  ORDO_READ(ReadString(root["security"]["access_file"], "security.access_file",
                       &out->security.access_file));
  ORDO_READ(section("bind", {"peer", "client", "metrics"}));
  ORDO_READ(ReadString(root["bind"]["peer"], "bind.peer", &out->bind.peer));
  ORDO_READ(ReadString(root["bind"]["client"], "bind.client", &out->bind.client));
  ORDO_READ(ReadString(root["bind"]["metrics"], "bind.metrics", &out->bind.metrics));
  ORDO_READ(section("retention", {"instances", "bytes", "age_seconds", "snapshot_interval_instances",
                                  "snapshot_chunk_bytes", "snapshot_send_bytes_per_sec"}));
  ORDO_READ(ReadInt(root["retention"]["instances"], "retention.instances", &out->retention_instances));
  ORDO_READ(ReadInt(root["retention"]["bytes"], "retention.bytes", &out->retention_bytes));
  ORDO_READ(ReadInt(root["retention"]["age_seconds"], "retention.age_seconds",
                    &out->retention_age_seconds));
  ORDO_READ(ReadInt(root["retention"]["snapshot_interval_instances"],
                    "retention.snapshot_interval_instances", &out->snapshot_interval_instances));
  ORDO_READ(ReadInt(root["retention"]["snapshot_chunk_bytes"], "retention.snapshot_chunk_bytes",
                    &out->snapshot_chunk_bytes));
  ORDO_READ(ReadInt(root["retention"]["snapshot_send_bytes_per_sec"],
                    "retention.snapshot_send_bytes_per_sec", &out->snapshot_send_bytes_per_sec));
  ORDO_READ(ReadInt(root["timing"]["tick_ms"], "timing.tick_ms", &out->tick_ms));
  ORDO_READ(ReadInt(root["timing"]["election_timeout_ticks"], "timing.election_timeout_ticks",
                    &out->election_timeout_ticks));
  ORDO_READ(ReadInt(root["timing"]["heartbeat_interval_ticks"], "timing.heartbeat_interval_ticks",
                    &out->heartbeat_interval_ticks));
  ORDO_READ(ReadInt(root["timing"]["retransmit_ticks"], "timing.retransmit_ticks",
                    &out->retransmit_ticks));
  ORDO_READ(ReadInt(root["timing"]["fetch_timeout_ticks"], "timing.fetch_timeout_ticks",
                    &out->fetch_timeout_ticks));
  ORDO_READ(ReadInt(root["timing"]["peer_link_timeout_ms"], "timing.peer_link_timeout_ms",
                    &out->peer_link_timeout_ms));
  ORDO_READ(ReadInt(root["batching"]["window_instances_max"], "batching.window_instances_max",
                    &out->window_instances_max));
  ORDO_READ(ReadInt(root["batching"]["batch_messages_max"], "batching.batch_messages_max",
                    &out->batch_messages_max));
  ORDO_READ(ReadInt(root["batching"]["batch_bytes_max"], "batching.batch_bytes_max",
                    &out->batch_bytes_max));
  ORDO_READ(ReadInt(root["batching"]["pending_bytes_max"], "batching.pending_bytes_max",
                    &out->pending_bytes_max));
  ORDO_READ(ReadInt(root["limits"]["frame_bytes_max"], "limits.frame_bytes_max",
                    &out->frame_bytes_max));
  ORDO_READ(ReadInt(root["limits"]["message_bytes_max"], "limits.message_bytes_max",
                    &out->message_bytes_max));
  ORDO_READ(ReadInt(root["limits"]["subscriber_credit_max"], "limits.subscriber_credit_max",
                    &out->subscriber_credit_max));
  ORDO_READ(ReadInt(root["limits"]["subscriber_queued_bytes_max"],
                    "limits.subscriber_queued_bytes_max", &out->subscriber_queued_bytes_max));
  ORDO_READ(ReadInt(root["limits"]["subscribers_queued_bytes_max"],
                    "limits.subscribers_queued_bytes_max", &out->subscribers_queued_bytes_max));
  ORDO_READ(ReadInt(root["limits"]["slow_consumer_timeout_ms"], "limits.slow_consumer_timeout_ms",
                    &out->slow_consumer_timeout_ms));
  ORDO_READ(ReadInt(root["limits"]["client_connections_per_key_max"],
                    "limits.client_connections_per_key_max", &out->client_connections_per_key_max));
  ORDO_READ(ReadInt(root["storage"]["map_size_bytes"], "storage.map_size_bytes",
                    &out->map_size_bytes));
#undef ORDO_READ
  return Status::Ok();
}

}  // namespace

Status LoadConfigFile(const std::string& path, BrokerConfig* out) {
  toml::table t;
  if (Status s = ParseTomlFile(path, &t); !s.ok()) return s;
  return FromTable(t, out);
}

Status ParseConfig(std::string_view text, const std::string& source, BrokerConfig* out) {
  toml::table t;
  if (Status s = ParseToml(text, source, &t); !s.ok()) return s;
  return FromTable(t, out);
}

namespace {

// [bind] and the endpoints this broker binds (after the members, client
// and metrics are known good).
Status ValidateBind(const BrokerConfig& c) {
  struct Field {
    const char* name;
    const std::string* value;
  };
  for (const Field& f : {Field{"bind.peer", &c.bind.peer}, Field{"bind.client", &c.bind.client},
                         Field{"bind.metrics", &c.bind.metrics}}) {
    if (f.value->empty()) continue;
    const std::string name = f.name;
    if (!ParseEndpoint(*f.value, nullptr)) {
      return Status::Error(name + ": '" + *f.value + "' is not HOST:PORT");
    }
    const std::string host = f.value->substr(0, f.value->rfind(':'));
    if (IsHostName(host)) {
      return Status::Error(name + ": '" + host +
                           "' is a host name; bind an IP address of this machine, 0.0.0.0 or * "
                           "(every interface), or an interface's name (ZeroMQ binds no host "
                           "name; [[members]] and metrics may name hosts: they are what others "
                           "connect to)");
    }
  }
  if (c.role == Role::kLearner && !c.bind.peer.empty()) {
    return Status::Error(
        "bind.peer: a learner has no peer endpoint (it connects to the voters, "
        "and they answer over that connection)");
  }
  // Two of this broker's endpoints on one port, where one of them binds
  // every interface or both the same host, would fail at the second bind.
  struct Bound {
    const char* what;
    std::string endpoint;
  };
  std::vector<Bound> bound = {{"peer", c.PeerBindEndpoint()},
                              {"client", c.ClientBindEndpoint()},
                              {"metrics", c.MetricsBindEndpoint()}};
  for (size_t i = 0; i < bound.size(); ++i) {
    for (size_t j = i + 1; j < bound.size(); ++j) {
      const std::string& a = bound[i].endpoint;
      const std::string& b = bound[j].endpoint;
      if (a.empty() || b.empty()) continue;
      const size_t ca = a.rfind(':'), cb = b.rfind(':');
      const std::string ha = a.substr(0, ca), hb = b.substr(0, cb);
      if (a.substr(ca) != b.substr(cb)) continue;
      if (ha == hb || ha == "0.0.0.0" || hb == "0.0.0.0") {
        return Status::Error(std::string("bind: this broker's ") + bound[i].what + " endpoint (" +
                             a + ") and its " + bound[j].what + " endpoint (" + b +
                             ") would bind the same port");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status ValidateConfig(const BrokerConfig& c) {
  if (c.snapshot_interval_instances == 0 &&
      (c.retention_instances != 0 || c.retention_bytes != 0 || c.retention_age_seconds != 0)) {
    return Status::Error("retention.snapshot_interval_instances: must be at least 1 when a "
                         "retention limit is set (the log is truncated only behind a snapshot)");
  }
  if (c.retention_instances != 0 && c.retention_instances < 2ull * c.window_instances_max) {
    return Status::Error("retention.instances: must be 0 (no limit) or at least twice "
                         "batching.window_instances_max (" +
                         std::to_string(2ull * c.window_instances_max) + ")");
  }
  if (c.snapshot_chunk_bytes < 1024 || c.snapshot_chunk_bytes > c.frame_bytes_max / 2) {
    return Status::Error("retention.snapshot_chunk_bytes: must be between 1024 and half of "
                         "limits.frame_bytes_max (" + std::to_string(c.frame_bytes_max / 2) + ")");
  }
  if (c.members.empty()) return Status::Error("members: at least one [[members]] entry is required");
  if (c.members.size() > paxos::VoteSet::kVotersMax) {
    return Status::Error("members: at most 64 voting members");
  }
  std::set<uint32_t> ids;
  std::set<std::string> endpoints;
  std::set<std::string> keys;
  for (size_t i = 0; i < c.members.size(); ++i) {
    const Member& m = c.members[i];
    const std::string name = "members[" + std::to_string(i) + "]";
    if (m.id == 0) return Status::Error(name + ".id: must be a positive integer");
    if (!ids.insert(m.id).second) {
      return Status::Error(name + ".id: " + std::to_string(m.id) + " appears twice");
    }
    if (!ParseEndpoint(m.peer, nullptr)) {
      return Status::Error(name + ".peer: '" + m.peer + "' is not HOST:PORT");
    }
    if (!ParseEndpoint(m.client, nullptr)) {
      return Status::Error(name + ".client: '" + m.client + "' is not HOST:PORT");
    }
    if (!c.security.insecure && !IsCurveKey(m.public_key)) {
      return Status::Error(name + ".public_key: " +
                           (m.public_key.empty() ? std::string("required")
                                                 : "'" + m.public_key + "' is not") +
                           " (the member's CurveZMQ public key, 40 Z85 characters, from ordo "
                           "keygen; or set security.insecure = true)");
    }
    if (!c.security.insecure && !keys.insert(m.public_key).second) {
      return Status::Error(name + ".public_key: another member has the same key");
    }
    for (const std::string* e : {&m.peer, &m.client}) {
      if (!endpoints.insert(*e).second) {
        return Status::Error(name + ": endpoint '" + *e + "' is used twice");
      }
    }
  }
  if (c.node_id == 0) return Status::Error("node_id: must be a positive integer");
  if (c.join) {
    if (c.role != Role::kVoter) {
      return Status::Error(
          "join: a learner broker (role = \"learner\") does not join: it is "
          "never a member; leave join out");
    }
    if (c.members.size() < 2) {
      return Status::Error("join: [[members]] must list this broker (node_id " +
                           std::to_string(c.node_id) +
                           ", its own peer and client endpoints and key) and at least one "
                           "member of the running cluster to pull the log from (a seed)");
    }
  }
  if (c.role == Role::kVoter) {
    if (!c.Find(c.node_id)) {
      return Status::Error("node_id: " + std::to_string(c.node_id) +
                           " is not the id of any [[members]] entry (a broker outside "
                           "[[members]] needs role = \"learner\")");
    }
    if (!c.client.empty()) {
      return Status::Error(
          "client: only a learner sets it; a voter's client endpoint is in its [[members]] entry");
    }
  } else {
    if (c.Find(c.node_id)) {
      return Status::Error("node_id: " + std::to_string(c.node_id) +
                           " is a voting member's id; a learner needs an id of its own, not in "
                           "[[members]]");
    }
    if (c.client.empty()) {
      return Status::Error("client: required for a learner (HOST:PORT where it serves clients)");
    }
    if (!ParseEndpoint(c.client, nullptr)) {
      return Status::Error("client: '" + c.client + "' is not HOST:PORT");
    }
    if (endpoints.count(c.client)) {
      return Status::Error("client: '" + c.client + "' is a voting member's endpoint");
    }
  }
  if (!c.security.insecure && c.security.key_file.empty()) {
    return Status::Error(
        "security.key_file: required (this broker's key pair: ordo keygen --out FILE), or set "
        "security.insecure = true for plaintext ports that anyone who reaches them can use");
  }
  if (c.data_dir.empty()) return Status::Error("data_dir: required");
  if (c.cluster_id.empty() || c.cluster_id.size() > 64 ||
      c.cluster_id.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                     "0123456789._-") != std::string::npos) {
    return Status::Error("cluster_id: '" + c.cluster_id +
                         "' must be 1-64 letters, digits, '.', '_' or '-'");
  }
  if (!c.metrics.empty() && !ParseEndpoint(c.metrics, nullptr)) {
    return Status::Error("metrics: '" + c.metrics + "' is not HOST:PORT");
  }
  if (Status s = ValidateBind(c); !s.ok()) return s;
  static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "off"};
  if (!kLevels.count(c.log_level)) {
    return Status::Error("log_level: '" + c.log_level +
                         "' is not one of trace, debug, info, warn, error, off");
  }
  if (c.tick_ms == 0 || c.tick_ms > 10000) return Status::Error("timing.tick_ms: must be 1..10000");
  if (c.election_timeout_ticks < 2) {
    return Status::Error("timing.election_timeout_ticks: must be at least 2");
  }
  if (c.heartbeat_interval_ticks == 0 || c.heartbeat_interval_ticks >= c.election_timeout_ticks) {
    return Status::Error(
        "timing.heartbeat_interval_ticks: must be at least 1 and below "
        "timing.election_timeout_ticks");
  }
  if (c.retransmit_ticks == 0) return Status::Error("timing.retransmit_ticks: must be at least 1");
  if (c.fetch_timeout_ticks == 0) {
    return Status::Error("timing.fetch_timeout_ticks: must be at least 1");
  }
  if (c.peer_link_timeout_ms != 0 && c.peer_link_timeout_ms < 100) {
    return Status::Error("timing.peer_link_timeout_ms: must be 0 (off) or at least 100");
  }
  if (c.window_instances_max == 0) {
    return Status::Error("batching.window_instances_max: must be at least 1");
  }
  if (c.batch_messages_max == 0) return Status::Error("batching.batch_messages_max: must be at least 1");
  if (c.batch_bytes_max < 1024) return Status::Error("batching.batch_bytes_max: must be at least 1024");
  if (c.message_bytes_max == 0) return Status::Error("limits.message_bytes_max: must be at least 1");
  if (c.frame_bytes_max < c.message_bytes_max + 4096) {
    return Status::Error(
        "limits.frame_bytes_max: must exceed limits.message_bytes_max by at least 4096");
  }
  if (c.batch_bytes_max + 65536 > c.frame_bytes_max) {
    return Status::Error(
        "batching.batch_bytes_max: must stay 64 KiB below limits.frame_bytes_max (a batch "
        "travels in one frame)");
  }
  if (c.pending_bytes_max < c.message_bytes_max) {
    return Status::Error("batching.pending_bytes_max: must be at least limits.message_bytes_max");
  }
  if (c.subscriber_credit_max == 0) {
    return Status::Error("limits.subscriber_credit_max: must be at least 1");
  }
  // One Deliver frame (about 1 MiB) must fit, or a large message could never go.
  if (c.subscriber_queued_bytes_max < (1ull << 20) + c.message_bytes_max) {
    return Status::Error(
        "limits.subscriber_queued_bytes_max: must be at least 1 MiB + limits.message_bytes_max "
        "(one Deliver frame)");
  }
  if (c.subscribers_queued_bytes_max < c.subscriber_queued_bytes_max) {
    return Status::Error(
        "limits.subscribers_queued_bytes_max: must be at least limits.subscriber_queued_bytes_max");
  }
  if (c.slow_consumer_timeout_ms < 100) {
    return Status::Error("limits.slow_consumer_timeout_ms: must be at least 100");
  }
  if (c.client_connections_per_key_max < 1) {
    return Status::Error("limits.client_connections_per_key_max: must be at least 1");
  }
  if (c.map_size_bytes < (64ull << 20)) {
    return Status::Error("storage.map_size_bytes: must be at least 64 MiB");
  }
  return Status::Ok();
}

}  // namespace ordo::broker
