// Broker configuration: a TOML file (see broker/ordo.example.toml), with
// command-line flags taking precedence. A wrong config fails fast with a
// message naming the field.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "broker/status.h"
#include "paxos/replica.h"

namespace ordo::broker {

struct Member {
  uint32_t id = 0;
  std::string peer;    // HOST:PORT of the peer (replication) endpoint
  std::string client;  // HOST:PORT of the client endpoint
  std::string public_key;  // its CurveZMQ public key (Z85); the `from` of its frames
  bool operator==(const Member&) const = default;
};

// CurveZMQ on the peer endpoint (broker/zap_handler.h). Secure unless
// `insecure` is set: then every port is plaintext, as before keys existed.
struct SecurityConfig {
  bool insecure = false;
  std::string key_file;     // this broker's key pair (ordo keygen), mode 0600
  std::string access_file;  // the learners' keys ([[learners]]), reloaded on SIGHUP
  bool operator==(const SecurityConfig&) const = default;
};

// Where this broker listens, when that is not the address others reach it
// by: [[members]] peer/client (and a learner's `client`, and `metrics`) are
// the advertised endpoints, which other brokers and clients connect to and
// which may name a host; [bind] gives what this broker binds instead: an IP
// address, `*` or 0.0.0.0 (every interface), or an interface's name, with
// a port. Each field is optional ("" = derive it, see BindEndpointFor).
// Needed behind NAT or a port forward (the advertised address is not this
// machine's), or to listen on every interface.
struct BindConfig {
  std::string peer;
  std::string client;
  std::string metrics;
  bool operator==(const BindConfig&) const = default;
};

// A voter is one of [[members]]: it votes, may lead, and serves clients. A
// learner has an id of its own outside [[members]]: it pulls the chosen log
// from the voters, serves subscribers and replays, and never votes. Voters
// need not know their learners (replies travel back over the connection the
// learner opened), so learners come and go without touching any voter's file.
enum class Role : uint8_t { kVoter, kLearner };

struct BrokerConfig {
  uint32_t node_id = 0;
  // Names the cluster; recorded in the data directory with node_id, so a
  // directory of another node or cluster is refused (broker/data_dir.h).
  std::string cluster_id = "ordo";
  Role role = Role::kVoter;
  // Joining a running cluster (docs/operations.md, "Changing membership"):
  // [[members]] then lists this broker itself (its endpoints and key) and
  // seeds, members of the running cluster to pull the log from; the core
  // bootstraps no configuration, it learns the membership from the log. It
  // votes only once a configuration entry makes it a voter (ordo members
  // add, then promote).
  bool join = false;
  std::string client;  // learners only: HOST:PORT of this broker's client endpoint
  std::string data_dir;
  std::string metrics;  // HOST:PORT of the Prometheus /metrics endpoint; "" = off
  std::string log_level = "info";
  // The bootstrap: every voting member of a new cluster (a voter included
  // itself), until the log holds a configuration entry. With `join`: this
  // broker and its seeds.
  std::vector<Member> members;
  SecurityConfig security;
  BindConfig bind;  // what this broker binds; by default what it advertises

  // Time: the core counts ticks; one tick is tick_ms of wall time.
  uint32_t tick_ms = 10;
  uint32_t election_timeout_ticks = 15;  // randomized in [t, 2t)
  uint32_t heartbeat_interval_ticks = 3;
  uint32_t retransmit_ticks = 5;
  uint32_t fetch_timeout_ticks = 10;
  // A peer link that carries nothing this long (ZeroMQ heartbeats, a PING
  // every fifth of it) is dropped and rebuilt; each connect attempt is
  // bounded by half of it, so a healed network carries traffic again within
  // about that. 0: no heartbeats, the kernel's own timeouts (minutes).
  uint32_t peer_link_timeout_ms = 1000;

  // Batching and flow control.
  uint32_t window_instances_max = 64;
  uint32_t batch_messages_max = 8192;
  uint32_t batch_bytes_max = 1 << 20;
  uint64_t pending_bytes_max = 256ull << 20;

  // Limits on what clients and peers may send.
  uint32_t frame_bytes_max = 16 << 20;
  uint32_t message_bytes_max = 1 << 20;
  uint32_t subscriber_credit_max = 100000;
  // Memory a subscriber may hold on this broker: Deliver bytes handed to
  // ZeroMQ and not yet written to its TCP connection, per connection and
  // for all of them. A connection at its bound gets nothing more until it
  // reads; one with bytes queued and none of them read for
  // slow_consumer_timeout_ms loses its subscription (a slow consumer), and
  // the kernel closes a connection nothing was acknowledged on for twice
  // that (TCP_USER_TIMEOUT), which frees what was queued to it.
  uint64_t subscriber_queued_bytes_max = 4ull << 20;
  uint64_t subscribers_queued_bytes_max = 64ull << 20;
  uint32_t slow_consumer_timeout_ms = 10000;
  // CurveZMQ connections one client key may hold open to this broker (a
  // handshake past it is refused with ZAP status 300, a request on one
  // that got in anyway answered TooManyConnections and the connection
  // closed). Plaintext connections have no key and no such limit.
  uint32_t client_connections_per_key_max = 100;

  // Storage.
  uint64_t map_size_bytes = 64ull << 30;  // LMDB map: an upper bound, not an allocation

  // Retention: the log is truncated behind the latest snapshot down to the
  // tightest of these limits (0 = no limit). Snapshots are taken at every
  // multiple of snapshot_interval_instances (0 = never, then nothing is
  // truncated) and sent to peers that need them in checksummed chunks.
  uint64_t retention_instances = 0;
  uint64_t retention_bytes = 0;
  uint64_t retention_age_seconds = 7 * 24 * 3600;
  uint64_t snapshot_interval_instances = 10000;
  uint32_t snapshot_chunk_bytes = 1 << 20;
  uint64_t snapshot_send_bytes_per_sec = 0;  // 0 = unlimited

  // The stream's chain: a follower takes the leader's chain values and
  // hashes one instance in check_every itself to compare (1: every one, so
  // this broker derives the whole chain on its own; 0: none). See
  // paxos::Config::chain_check_every.
  uint32_t chain_check_every = 32;

  // Peer frames carry whole batches (a promise may carry a window of them),
  // so their limit derives from the batching settings.
  uint64_t PeerFrameBytesMax() const;

  // This node's [[members]] entry; null for a learner.
  const Member* Self() const;
  // Where this broker serves clients: its [[members]] entry, or `client` for a learner.
  const std::string& ClientEndpoint() const;
  const Member* Find(uint32_t id) const;
  // What this broker binds: BindEndpointFor(advertised, bind.X) for its
  // [[members]] peer endpoint ("" for a learner: it has none), its client
  // endpoint, and metrics ("" when metrics is off; bind.metrics is then
  // ignored, so --metrics '' turns it off whatever the file binds).
  std::string PeerBindEndpoint() const;
  std::string ClientBindEndpoint() const;
  std::string MetricsBindEndpoint() const;
  paxos::Config CoreConfig(uint64_t seed) const;

  bool operator==(const BrokerConfig&) const = default;
};

// Reads `path` into *out (fields not in the file keep their defaults).
Status LoadConfigFile(const std::string& path, BrokerConfig* out);

// The same for a file's text; `source` names it in error messages
// ("SOURCE:LINE: ..."). Any text gives ok or an error naming the field or
// the line, never an exception. The text must be ASCII (base/toml_file.h
// says why); other characters go in strings as \uXXXX escapes.
Status ParseConfig(std::string_view text, const std::string& source, BrokerConfig* out);

// Checks every field and the relations between them.
Status ValidateConfig(const BrokerConfig& config);

// "HOST:PORT" -> "tcp://HOST:PORT"; false when malformed.
bool ParseEndpoint(const std::string& endpoint, std::string* zmq_address);

// The endpoint to bind for `advertised` (HOST:PORT): `bind` when set
// (with a host `*` spelled 0.0.0.0, which ZeroMQ and the metrics server
// both take); else `advertised` itself, unless its host is a host name
// (neither an IP address, `*`, nor a network interface of this machine):
// then 0.0.0.0:PORT, every interface, as ZeroMQ binds no host name. A name
// that the operator gave this machine's address is so taken at its word,
// rather than resolved to what may be a loopback alias (127.0.1.1 in a
// Debian /etc/hosts) or another host's address.
std::string BindEndpointFor(const std::string& advertised, const std::string& bind);

// Whether `host` is a host name in the sense above (false for an IPv4
// address, a bracketed IPv6 address, `*`, and this machine's interfaces).
bool IsHostName(const std::string& host);

// Why binding `endpoint` ("HOST:PORT") failed with errno `error`, for an
// operator: what it means for the host or port, with the system's text
// (ZeroMQ says only "No such device" for a host that is no IP address or
// interface name: it binds to no host name).
std::string BindErrorText(const std::string& endpoint, int error);

}  // namespace ordo::broker
