// A real Ordo cluster for tests: ordo-broker processes on 127.0.0.1 with
// ports reserved for this test process (tests/testing/ports.h), temporary data directories, and every process
// stopped (kill -9) and every directory removed by the destructor.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "ordo/client.h"
#include "tests/testing/ports.h"

namespace ordo::testing {

class Cluster {
 public:
  // With `metrics`, every broker also serves /metrics on a free port.
  // `extra_toml` is appended to every broker's config (e.g. a [retention] table).
  explicit Cluster(int nodes, bool metrics = false, const std::string& extra_toml = "")
      : n_(nodes) {
    std::mt19937_64 rng(std::random_device{}());
    dir_ = std::filesystem::temp_directory_path() / ("ordo-it-" + std::to_string(rng()));
    std::filesystem::create_directories(dir_);
    for (int i = 0; i < n_; ++i) {
      peer_.push_back(ReserveEndpoint());
      client_.push_back(ReserveEndpoint());
      metrics_.push_back(metrics ? ReserveEndpoint() : std::string());
    }
    for (int i = 1; i <= n_; ++i) {
      std::ofstream f(Config(i));
      f << "node_id = " << i << "\ndata_dir = \"" << (dir_ / ("node" + std::to_string(i))).string()
        << "\"\nmetrics = \"" << metrics_[i - 1] << "\"\n";
      for (int m = 1; m <= n_; ++m) {
        f << "[[members]]\nid = " << m << "\npeer = \"" << peer_[m - 1] << "\"\nclient = \""
          << client_[m - 1] << "\"\n";
      }
      f << extra_toml;
    }
    pids_.assign(n_ + 1, -1);
    for (int i = 1; i <= n_; ++i) Start(i);
  }
  ~Cluster() {
    for (int i = 1; i <= n_; ++i) Kill(i);
    for (size_t k = 0; k < learners_.size(); ++k) KillLearner(static_cast<int>(k));
    // ORDO_TEST_KEEP_DIRS=1 keeps configs, data and broker logs for a post-mortem.
    if (const char* keep = std::getenv("ORDO_TEST_KEEP_DIRS"); keep && *keep == '1') {
      std::fprintf(stderr, "kept cluster directory %s\n", dir_.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string Config(int i) const { return (dir_ / ("node" + std::to_string(i) + ".toml")).string(); }
  std::string DataDir(int i) const { return (dir_ / ("node" + std::to_string(i))).string(); }
  std::string Log(int i) const { return (dir_ / ("node" + std::to_string(i) + ".log")).string(); }
  const std::string& ClientEndpoint(int i) const { return client_[i - 1]; }
  const std::string& PeerEndpoint(int i) const { return peer_[i - 1]; }
  const std::string& MetricsEndpoint(int i) const { return metrics_[i - 1]; }
  std::vector<std::string> Brokers() const { return client_; }
  ClientOptions Options() const {
    ClientOptions o;
    o.brokers = client_;
    o.request_timeout = std::chrono::milliseconds(500);
    o.call_timeout = std::chrono::milliseconds(60000);
    return o;
  }

  void Start(int i) {
    const pid_t pid = fork();
    if (pid == 0) {
      const int fd = open(Log(i).c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(ORDO_BROKER_BIN, ORDO_BROKER_BIN, "--config", Config(i).c_str(), nullptr);
      _exit(127);
    }
    pids_[i] = pid;
  }
  // kill -9 (or another signal) and reap.
  void Kill(int i, int sig = SIGKILL) {
    if (pids_[i] <= 0) return;
    kill(pids_[i], sig);
    waitpid(pids_[i], nullptr, 0);
    pids_[i] = -1;
  }
  bool Running(int i) const { return pids_[i] > 0; }
  // Waits for broker i to exit by itself; its exit status, or -1 if it still
  // runs after `timeout` (then it is killed).
  int WaitForExit(int i, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (pids_[i] > 0) {
      int status = 0;
      const pid_t r = waitpid(pids_[i], &status, WNOHANG);
      if (r == pids_[i]) {
        pids_[i] = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    Kill(i);
    return -1;
  }

  // The node id of the leader, once exactly one running broker says so.
  int WaitForLeader(std::chrono::milliseconds timeout = std::chrono::seconds(20)) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int leader = 0, leaders = 0;
      for (int i = 1; i <= n_; ++i) {
        if (!Running(i)) continue;
        auto s = GetStatus(client_[i - 1], std::chrono::milliseconds(300));
        if (s.ok() && s.value().role == "leader") ++leaders, leader = i;
      }
      if (leaders == 1) return leader;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return 0;
  }

  // Waits until every running broker has applied up to `offset` (exclusive).
  bool WaitForHead(uint64_t offset, std::chrono::milliseconds timeout = std::chrono::seconds(30)) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      bool all = true;
      for (int i = 1; i <= n_; ++i) {
        if (!Running(i)) continue;
        auto s = GetStatus(client_[i - 1], std::chrono::milliseconds(300));
        all &= s.ok() && s.value().next_offset >= offset;
      }
      if (all) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }

  // Learner brokers (role = "learner"): an id outside the members, the
  // members' list unchanged, a client endpoint of its own. The voters'
  // files are not touched. Returns the learner's index k for the
  // Learner*() methods; the process starts at once.
  int AddLearner(uint32_t node_id, bool metrics = false) {
    Learner l;
    l.id = node_id;
    l.client = ReserveEndpoint();
    l.metrics = metrics ? ReserveEndpoint() : std::string();
    const std::string name = "learner" + std::to_string(node_id);
    l.config = (dir_ / (name + ".toml")).string();
    l.data_dir = (dir_ / name).string();
    l.log = (dir_ / (name + ".log")).string();
    std::ofstream f(l.config);
    f << "node_id = " << node_id << "\nrole = \"learner\"\nclient = \"" << l.client
      << "\"\ndata_dir = \"" << l.data_dir << "\"\nmetrics = \"" << l.metrics << "\"\n";
    for (int m = 1; m <= n_; ++m) {
      f << "[[members]]\nid = " << m << "\npeer = \"" << peer_[m - 1] << "\"\nclient = \""
        << client_[m - 1] << "\"\n";
    }
    f.close();
    learners_.push_back(l);
    const int k = static_cast<int>(learners_.size()) - 1;
    StartLearner(k);
    return k;
  }
  void StartLearner(int k) {
    Learner& l = learners_[k];
    const pid_t pid = fork();
    if (pid == 0) {
      const int fd = open(l.log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execl(ORDO_BROKER_BIN, ORDO_BROKER_BIN, "--config", l.config.c_str(), nullptr);
      _exit(127);
    }
    l.pid = pid;
  }
  void KillLearner(int k, int sig = SIGKILL) {
    Learner& l = learners_[k];
    if (l.pid <= 0) return;
    kill(l.pid, sig);
    waitpid(l.pid, nullptr, 0);
    l.pid = -1;
  }
  const std::string& LearnerEndpoint(int k) const { return learners_[k].client; }
  const std::string& LearnerMetricsEndpoint(int k) const { return learners_[k].metrics; }
  const std::string& LearnerLog(int k) const { return learners_[k].log; }

 private:
  struct Learner {
    uint32_t id = 0;
    std::string client, metrics, config, data_dir, log;
    pid_t pid = -1;
  };
  std::vector<Learner> learners_;
  int n_;
  std::filesystem::path dir_;
  std::vector<std::string> peer_, client_, metrics_;
  std::vector<pid_t> pids_;
};

}  // namespace ordo::testing
