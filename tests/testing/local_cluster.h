// A real Ordo cluster on this machine, for the tests and for build/ordo-bench
// (the one launcher both use): N ordo-broker processes on 127.0.0.1 with
// ports reserved for this process (tests/testing/ports.h), each with its
// config, data directory and log in one temporary directory. The destructor
// stops every process it started, by pid (kill -9), and removes the
// directory, unless it is kept (`keep_dir`, or ORDO_TEST_KEEP_DIRS=1 in the
// environment) for a post-mortem.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "base/keys.h"
#include "ordo/client.h"

namespace ordo::testing {

struct LocalClusterOptions {
  int nodes = 3;
  std::string broker_bin;          // the ordo-broker to run
  bool metrics = false;            // every broker serves /metrics on a free port
  std::string extra_toml;          // appended to every broker's config (e.g. [retention])
  std::string dir_prefix = "ordo-cluster-";  // of the directory under $TMPDIR
  bool keep_dir = false;
  // Plaintext ports (security.insecure). Otherwise every broker gets a key
  // pair (nodeN.key), [[members]] their public keys, learners are let in
  // through access.toml, and so is one client with every permission, whose
  // credentials (admin.key: its key pair and the brokers' public keys) are
  // Credentials().
  bool insecure = false;
  // With a prefix such as "127.77.5.", node i's peer endpoint is on
  // PREFIX + i (every 127.x.y.z is this machine's loopback), and its
  // outgoing peer links leave from that address too: a test cuts node i off
  // from its peers with a firewall rule on that address alone (tests/
  // testing/partition.h), while its client port stays on 127.0.0.1.
  std::string peer_host_prefix;
  // Advertised and bound apart ([bind], broker/config.h): with
  // `advertise_host` (a host name such as "localhost", or another loopback
  // address), every broker's [[members]] peer and client, a learner's
  // client and metrics name that host, which is what the brokers and this
  // class's clients connect to; with `bind_host` (say "0.0.0.0"), each
  // broker's [bind] table binds that host with the same ports. Either may
  // be empty: 127.0.0.1 advertised, and no [bind] (bind what is advertised).
  std::string advertise_host;
  std::string bind_host;
  // Per node (entry i-1 for node i; an empty list or entry: the defaults
  // above). `node_hosts`: the address of node i's peer, client and metrics
  // endpoints, e.g. its address inside a network namespace (tests/testing/
  // netns.h). `node_command_prefix`: words run before the broker's command
  // line, e.g. {"ip", "netns", "exec", NS}; the prefix must exec the broker
  // in place, so that the pid this launcher stops is the broker's.
  std::vector<std::string> node_hosts;
  std::vector<std::vector<std::string>> node_command_prefix;
};

class LocalCluster {
 public:
  // Writes the configs and starts every broker.
  explicit LocalCluster(LocalClusterOptions options);
  ~LocalCluster();
  LocalCluster(const LocalCluster&) = delete;
  LocalCluster& operator=(const LocalCluster&) = delete;

  int nodes() const { return options_.nodes; }
  const std::filesystem::path& dir() const { return dir_; }
  // Broker i, 1-based.
  std::string Config(int i) const { return Path("node" + std::to_string(i) + ".toml"); }
  std::string DataDir(int i) const { return Path("node" + std::to_string(i)); }
  std::string Log(int i) const { return Path("node" + std::to_string(i) + ".log"); }
  const std::string& ClientEndpoint(int i) const { return client_[i - 1]; }
  const std::string& PeerEndpoint(int i) const { return peer_[i - 1]; }
  const std::string& MetricsEndpoint(int i) const { return metrics_[i - 1]; }
  // Secure mode: broker i's key file (its key pair, base/keys.h).
  std::string KeyFile(int i) const { return Path("node" + std::to_string(i) + ".key"); }
  // Secure mode: lets learner `node_id` in. Its key pair (made if its key
  // file, returned, does not exist yet) is listed in access.toml, which the
  // running voters reread (SIGHUP): until they have, its handshakes are
  // refused (ZeroMQ retries them).
  std::string AllowLearner(uint32_t node_id);
  // The client endpoints, in node order.
  const std::vector<std::string>& Brokers() const { return client_; }
  // Secure mode: the credentials of a client with every permission (empty
  // in plaintext), and the file that holds them ("" in plaintext), for
  // `ordo --credentials`. Learners' endpoints are added as they are.
  const ClientCredentials& Credentials() const { return credentials_; }
  std::string CredentialsFile() const { return options_.insecure ? "" : Path("admin.key"); }
  // Secure mode: a new client key allowed `permissions` ("publish",
  // "subscribe", "admin"; none is fine) through access.toml, which the
  // running brokers reread before this returns. Returns its credentials
  // file (`name`.key, with the brokers' public keys).
  std::string AllowClient(const std::string& name, const std::vector<std::string>& permissions);
  // Changes what client `name` (admin, or one AllowClient made) may do,
  // then reloads access.toml as AllowClient does.
  void SetClientPermissions(const std::string& name, const std::vector<std::string>& permissions);

  // Starts broker i (its log is appended to).
  void Start(int i);
  // Sends `sig` (kill -9 by default) and reaps.
  void Kill(int i, int sig = SIGKILL);
  bool Running(int i) const { return i >= 1 && i <= nodes() && pids_[i] > 0; }
  pid_t Pid(int i) const { return pids_[i]; }
  // Reaps broker i if it exited by itself: its exit status (128 + signal
  // when killed); nullopt while it runs.
  std::optional<int> Exited(int i);
  // Waits for broker i to exit by itself: its exit status, or -1 if it
  // still runs after `timeout` (then it is killed).
  int WaitForExit(int i, std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // The end of broker i's log.
  std::string LogTail(int i, size_t bytes = 2000) const;

  // The node id of the leader once exactly one running broker says so; 0
  // if none did within `timeout`.
  int WaitForLeader(std::chrono::milliseconds timeout = std::chrono::seconds(20)) const;
  // Whether every running broker applied up to `offset` (exclusive) within
  // `timeout`.
  bool WaitForHead(uint64_t offset, std::chrono::milliseconds timeout = std::chrono::seconds(30)) const;

  // A broker for the running cluster (join = true, docs/operations.md,
  // "Changing membership"): node id nodes() + 1 (nodes() grows by one),
  // its own endpoints and, in secure mode, key (its public key:
  // PublicKey()), and the running members `seeds` as its [[members]] seed
  // list. It starts at once, a non-member pulling nothing until `ordo
  // members add` lets it in. The admin credentials learn its client key.
  int AddJoiner(const std::vector<int>& seeds);
  // Broker i's public key ("" in plaintext).
  std::string PublicKey(int i) const {
    return options_.insecure ? std::string() : public_keys_[i - 1];
  }
  // Broker i's data directory is emptied (a wiped disk); it must not run.
  void WipeDataDir(int i);

  // Learner brokers (role = "learner"): an id outside the members, the
  // members' list unchanged, a client endpoint of its own. Returns the
  // learner's index k for the Learner*() methods; the process starts at once.
  int AddLearner(uint32_t node_id, bool metrics = false, bool allow = true);
  void StartLearner(int k);
  void KillLearner(int k, int sig = SIGKILL);
  const std::string& LearnerEndpoint(int k) const { return learners_[k].client; }
  const std::string& LearnerMetricsEndpoint(int k) const { return learners_[k].metrics; }
  const std::string& LearnerLog(int k) const { return learners_[k].log; }

 private:
  struct Learner {
    uint32_t id = 0;
    std::string client, metrics, config, data_dir, log;
    pid_t pid = -1;
  };
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  std::string MembersToml() const;
  // `endpoint` (127.0.0.1:PORT) on options_.advertise_host, when set.
  std::string Advertised(const std::string& endpoint) const;
  // The [bind] table for these advertised endpoints ("" for none, or no bind_host).
  std::string BindToml(std::initializer_list<const char*> names,
                       std::initializer_list<std::string> endpoints) const;
  // A new key pair in `name`.key; its public key.
  std::string MakeKey(const std::string& name) const;
  // The [security] table of broker `name` (its key: `name`.key).
  std::string SecurityToml(const std::string& name) const;
  // Runs the broker on `config` (after `prefix`, see node_command_prefix).
  pid_t Spawn(const std::string& config, const std::string& log,
              const std::vector<std::string>& prefix = {}) const;
  // Node i's entry of a per-node option, or "" / {}.
  std::string NodeHost(int i) const;
  std::vector<std::string> NodePrefix(int i) const;
  // Writes access.toml and waits until every running broker has reread it.
  void WriteAccessAndReload();
  // Writes `name`.key for a client: `pair` and every broker's public key.
  void WriteClientKey(const std::string& name, const CurveKeyPair& pair) const;

  LocalClusterOptions options_;
  std::filesystem::path dir_;
  std::vector<std::string> peer_, client_, metrics_;
  std::vector<std::string> public_keys_;  // the members', in node order (secure mode)
  std::string learners_toml_;             // access.toml's [[learners]]
  struct Client {
    std::string name, public_key;
    std::vector<std::string> permissions;
  };
  std::vector<Client> clients_;    // access.toml's [[clients]]
  ClientCredentials credentials_;  // admin.key's
  std::vector<pid_t> pids_;  // index 1..n
  std::vector<Learner> learners_;
};

}  // namespace ordo::testing
