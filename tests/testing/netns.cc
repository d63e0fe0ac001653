#include "tests/testing/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "tests/testing/shell.h"

namespace ordo::testing {

namespace {

constexpr const char* kLockDir = "/tmp/ordo-test-netns";
constexpr const char* kTable = "ordo_lab";
// Subnets 10.77.X.0/24 with X in [kSubnetMin, kSubnetMax]: clear of
// 10.77.0.0/24, which an operator trying Ordo by hand (issue 18) may use.
constexpr int kSubnetMin = 100;
constexpr int kSubnetMax = 250;

// Runs `command` through the shell; its output (both streams) into *out.
int Run(const std::string& command, std::string* out) {
  ShellRun ran = RunShell(command);
  out->append(ran.out);
  return ran.status;
}

// Runs every command in order; stops at the first failure, described in *error.
bool RunAll(const std::vector<std::string>& commands, std::string* error) {
  for (const std::string& c : commands) {
    std::string out;
    const int status = Run(c, &out);
    if (status != 0) {
      *error = "'" + c + "' failed (exit " + std::to_string(status) + "): " + out;
      return false;
    }
  }
  return true;
}

bool OnPath(const std::string& tool) {
  std::string out;
  return Run("command -v " + tool, &out) == 0;
}

// The pid in a lab namespace's name ("ordo-<pid>-<lab>-..."), or 0.
pid_t LabPid(const std::string& name) {
  if (name.rfind("ordo-", 0) != 0) return 0;
  size_t i = 5, j = i;
  while (j < name.size() && name[j] >= '0' && name[j] <= '9') ++j;
  if (j == i || j >= name.size() || name[j] != '-') return 0;
  return static_cast<pid_t>(std::stol(name.substr(i, j - i)));
}

std::vector<std::string> NamespaceNames() {
  std::string out;
  std::vector<std::string> names;
  if (Run("ip netns list", &out) != 0) return names;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    const std::string name = line.substr(0, line.find(' '));
    if (!name.empty()) names.push_back(name);
  }
  return names;
}

// Locks a free subnet for this process: its X, or -1.
int LockSubnet(int* lock_fd) {
  ::mkdir(kLockDir, 0777);
  const int span = kSubnetMax - kSubnetMin + 1;
  const int start = static_cast<int>(getpid()) % span;
  for (int k = 0; k < span; ++k) {
    const int x = kSubnetMin + (start + k) % span;
    const std::string path = std::string(kLockDir) + "/subnet-" + std::to_string(x) + ".lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) continue;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      continue;
    }
    // Someone else (not of this scheme) routes it already: leave it alone.
    std::string routes;
    if (Run("ip -4 route show 10.77." + std::to_string(x) + ".0/24", &routes) != 0 ||
        !routes.empty()) {
      ::close(fd);
      continue;
    }
    *lock_fd = fd;
    return x;
  }
  return -1;
}

}  // namespace

void NetnsLab::SweepStale() {
  for (const std::string& name : NamespaceNames()) {
    const pid_t owner = LabPid(name);
    if (owner <= 0 || ::kill(owner, 0) == 0 || errno != ESRCH) continue;
    // Its test died: stop what it left running there (brokers), then remove it.
    std::string pids;
    (void)Run("ip netns pids " + name, &pids);
    std::istringstream in(pids);
    for (pid_t pid; in >> pid;) ::kill(pid, SIGKILL);
    std::string out;
    (void)Run("ip netns del " + name, &out);
  }
}

std::unique_ptr<NetnsLab> NetnsLab::Create(int nodes, std::string* error) {
  if (::geteuid() != 0) {
    *error = "network namespaces need root (this runs as uid " + std::to_string(::geteuid()) + ")";
    return nullptr;
  }
  for (const char* tool : {"ip", "nft"}) {
    if (!OnPath(tool)) {
      *error =
          std::string("no '") + tool + "' on PATH (install iproute2 and nftables: scripts/setup)";
      return nullptr;
    }
  }
  SweepStale();
  static std::atomic<int> labs{0};
  const int lab = ++labs;
  std::unique_ptr<NetnsLab> l(new NetnsLab());
  const int x = LockSubnet(&l->lock_fd_);
  if (x < 0) {
    *error = "no free subnet 10.77.X.0/24 (X in " + std::to_string(kSubnetMin) + ".." +
             std::to_string(kSubnetMax) + ")";
    return nullptr;
  }
  const std::string net = "10.77." + std::to_string(x) + ".";
  const std::string prefix = "ordo-" + std::to_string(getpid()) + "-" + std::to_string(lab) + "-";
  l->hub_ = prefix + "hub";
  // At most 15 characters (IFNAMSIZ): "ordo" + 7-digit pid + "x" + lab.
  l->root_veth_ = "ordo" + std::to_string(getpid()) + "x" + std::to_string(lab);
  l->root_host_ = net + "1";
  std::vector<std::string> setup = {
      "ip netns add " + l->hub_,
      "ip -n " + l->hub_ + " link set lo up",
      "ip -n " + l->hub_ + " link add br0 type bridge forward_delay 0",
      "ip -n " + l->hub_ + " link set br0 up",
  };
  for (int i = 1; i <= nodes; ++i) {
    const std::string ns = prefix + std::to_string(i);
    const std::string port = "n" + std::to_string(i);
    l->namespaces_.push_back(ns);
    l->hosts_.push_back(net + std::to_string(10 + i));
    l->blocked_.emplace_back();
    setup.insert(setup.end(), {"ip netns add " + ns, "ip -n " + ns + " link set lo up",
                               "ip -n " + l->hub_ + " link add " + port +
                                   " type veth peer name eth0 netns " + ns,
                               "ip -n " + l->hub_ + " link set " + port + " master br0 up",
                               "ip -n " + ns + " addr add " + l->hosts_.back() + "/24 dev eth0",
                               "ip -n " + ns + " link set eth0 up"});
  }
  setup.insert(setup.end(),
               {"ip link add " + l->root_veth_ + " type veth peer name root netns " + l->hub_,
                "ip -n " + l->hub_ + " link set root master br0 up",
                "ip addr add " + l->root_host_ + "/24 dev " + l->root_veth_,
                "ip link set " + l->root_veth_ + " up"});
  if (!RunAll(setup, error)) {
    *error = "cannot build the network namespaces: " + *error;
    return nullptr;  // (the destructor removes what was made)
  }
  // nft must work inside a namespace too (the partitions).
  if (!l->Apply({1}, error)) {
    *error = "nft refused a rule inside a namespace: " + *error;
    return nullptr;
  }
  return l;
}

NetnsLab::~NetnsLab() { Teardown(); }

void NetnsLab::Teardown() {
  std::string out;
  if (!root_veth_.empty()) (void)Run("ip link del " + root_veth_, &out);
  for (const std::string& ns : namespaces_) (void)Run("ip netns del " + ns, &out);
  if (!hub_.empty()) (void)Run("ip netns del " + hub_, &out);
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
}

std::vector<std::string> NetnsLab::ExecPrefix(int i) const {
  return {"ip", "netns", "exec", Namespace(i)};
}

std::string NetnsLab::RulesCommand(int i) const {
  // One nft transaction: the table made if missing, then replaced whole.
  std::string script = std::string("table inet ") + kTable + " {}\ndelete table inet " + kTable +
                       "\ntable inet " + kTable +
                       " {\n chain input {\n  type filter hook input priority 0; policy accept;\n";
  const std::set<int>& from = blocked_[static_cast<size_t>(i - 1)];
  if (!from.empty()) {
    script += "  ip saddr {";
    for (int s : from) script += " " + Host(s) + (s == *from.rbegin() ? "" : ",");
    script += " } drop\n";
  }
  script += " }\n}\n";
  return "printf '%s' '" + script + "' | ip netns exec " + Namespace(i) + " nft -f - 2>&1";
}

bool NetnsLab::Apply(const std::set<int>& nodes, std::string* error) {
  // Every namespace's rules at once, not one after another: on a loaded
  // machine each nft run can take tens of milliseconds, and a partition
  // that takes effect piecemeal starts an election before it is complete.
  std::vector<std::pair<int, FILE*>> runs;
  for (int i : nodes) runs.emplace_back(i, popen(RulesCommand(i).c_str(), "r"));
  bool ok = true;
  for (auto& [i, pipe] : runs) {
    if (pipe == nullptr) {
      *error = "cannot run nft for " + Namespace(i);
      ok = false;
      continue;
    }
    std::string out;
    char buf[512];
    while (size_t n = fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
    const int status = pclose(pipe);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      *error = "nft in " + Namespace(i) + " refused the rules: " + out;
      ok = false;
    }
  }
  return ok;
}

void NetnsLab::Block(const std::vector<int>& from, const std::vector<int>& to,
                     std::set<int>* changed) {
  for (int r : to) {
    for (int s : from) {
      if (s != r && blocked_[static_cast<size_t>(r - 1)].insert(s).second) changed->insert(r);
    }
  }
}

bool NetnsLab::Drop(const std::vector<int>& from, const std::vector<int>& to, std::string* error) {
  std::set<int> changed;
  Block(from, to, &changed);
  return Apply(changed, error);
}

bool NetnsLab::Cut(const std::vector<int>& a, const std::vector<int>& b, std::string* error) {
  std::set<int> changed;
  Block(a, b, &changed);
  Block(b, a, &changed);
  return Apply(changed, error);
}

bool NetnsLab::Heal(std::string* error) {
  std::set<int> changed;
  for (int i = 1; i <= nodes(); ++i) {
    if (blocked_[static_cast<size_t>(i - 1)].empty()) continue;
    blocked_[static_cast<size_t>(i - 1)].clear();
    changed.insert(i);
  }
  return Apply(changed, error);
}

bool NetnsLab::EnterNamespace(int i, std::string* error) const {
  const std::string path = "/run/netns/" + Namespace(i);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot open " + path + ": " + std::strerror(errno);
    return false;
  }
  const int rc = ::setns(fd, CLONE_NEWNET);
  const int saved = errno;
  ::close(fd);
  if (rc != 0) {
    *error = "setns into " + Namespace(i) + ": " + std::strerror(saved);
    return false;
  }
  return true;
}

}  // namespace ordo::testing
