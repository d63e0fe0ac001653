// A small network of network namespaces, for partition tests and
// build/ordo-bench heal --netns: one namespace per broker, each with one
// address on a /24 of its own, joined by a Linux bridge in a hub namespace,
// and one more veth from the namespace this process runs in (the "root"
// side: the test and its client library) into the bridge, so that the test
// reaches every broker. Partitions are nftables rules inside the broker
// namespaces, on what each receives: a packet from a blocked sender is
// dropped as it arrives, as a lossy or cut network would lose it (the sender's
// stack sees nothing, unlike an output rule, which fails its send at once).
//
//   root ns: 10.77.X.1 (ordo<pid>x<lab>) --+
//                                          | veth
//   ordo-<pid>-<lab>-hub: bridge br0 ------+---- n1 -- veth -- eth0 10.77.X.11 (ordo-<pid>-<lab>-1)
//                                          +---- n2 -- veth -- eth0 10.77.X.12 (ordo-<pid>-<lab>-2)
//                                          ...
//
// X is picked per lab so that parallel test processes never share a subnet:
// an exclusive flock on /tmp/ordo-test-netns/subnet-X.lock for the lab's
// life, and no route to 10.77.X.0/24 in this namespace already. Names carry
// this process's pid; Create() first removes the namespaces of dead
// processes with the same prefix (killing, by pid, the brokers still in them).
// The destructor removes every namespace the lab made (the veths go with
// them); stop the processes in them first (LocalCluster's destructor does).
//
// Needs root, iproute2 (ip) and nftables (nft): scripts/setup installs both.
//
// Thread rules: one object per thread, but EnterNamespace() may be called
// from any thread (it moves only that thread).
#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

namespace ordo::testing {

class NetnsLab {
 public:
  // Makes the namespaces of `nodes` brokers. Null, with what is missing (not
  // root, no ip or nft, namespaces refused) in *error.
  static std::unique_ptr<NetnsLab> Create(int nodes, std::string* error);
  ~NetnsLab();
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  int nodes() const { return static_cast<int>(hosts_.size()); }
  // Broker i (1-based): its namespace, and its address there.
  const std::string& Namespace(int i) const { return namespaces_[static_cast<size_t>(i - 1)]; }
  const std::string& Host(int i) const { return hosts_[static_cast<size_t>(i - 1)]; }
  const std::vector<std::string>& Hosts() const { return hosts_; }
  // This namespace's address on the lab's subnet.
  const std::string& RootHost() const { return root_host_; }
  // What runs a program in broker i's namespace in place (the pid stays the
  // program's): {"ip", "netns", "exec", NAMESPACE}.
  std::vector<std::string> ExecPrefix(int i) const;

  // From now on, packets from any broker of `from` to any of `to` are lost
  // (one way); the rules add up until Heal(). Every namespace's rules change
  // at once (concurrent nft runs), so a partition takes effect within one
  // nft run. False, with nft's words in *error, if a rule could not be
  // applied.
  bool Drop(const std::vector<int>& from, const std::vector<int>& to, std::string* error);
  // Both ways between `a` and `b`.
  bool Cut(const std::vector<int>& a, const std::vector<int>& b, std::string* error);
  // Removes every rule (the network is whole again).
  bool Heal(std::string* error);

  // Moves the calling thread into broker i's namespace (setns): sockets it
  // (and threads it starts, such as a ZeroMQ context's) opens from now on
  // live there, subject to that broker's rules. Use a thread of its own.
  bool EnterNamespace(int i, std::string* error) const;

  // Removes the namespaces (and their processes) of dead processes' labs.
  static void SweepStale();

 private:
  NetnsLab() = default;
  // Adds the drops of packets from `from` to `to`; the receivers whose
  // rules change into *changed.
  void Block(const std::vector<int>& from, const std::vector<int>& to, std::set<int>* changed);
  // The shell command that rewrites broker i's rules to drop what
  // blocked_[i - 1] lists (as one nft transaction).
  std::string RulesCommand(int i) const;
  // Rewrites the rules of every broker of `nodes`, all at once.
  bool Apply(const std::set<int>& nodes, std::string* error);
  void Teardown();

  std::string hub_;
  std::string root_veth_;
  std::string root_host_;
  std::vector<std::string> namespaces_;
  std::vector<std::string> hosts_;
  std::vector<std::set<int>> blocked_;  // per receiver (index i-1): senders it drops
  int lock_fd_ = -1;                    // the subnet's flock
};

}  // namespace ordo::testing
