#include "tests/testing/local_cluster.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "base/keys.h"
#include "ordo/client.h"
#include "tests/testing/ports.h"

namespace ordo::testing {

LocalCluster::LocalCluster(LocalClusterOptions options) : options_(std::move(options)) {
  if (::access(options_.broker_bin.c_str(), X_OK) != 0) {
    throw std::runtime_error("broker binary " + options_.broker_bin + " is not executable");
  }
  std::mt19937_64 rng(std::random_device{}());
  dir_ = std::filesystem::temp_directory_path() / (options_.dir_prefix + std::to_string(rng()));
  std::filesystem::create_directories(dir_);
  pids_.assign(nodes() + 1, -1);
  for (int i = 0; i < nodes(); ++i) {
    const std::string host = NodeHost(i + 1);
    auto on_host = [&] { return host + ":" + std::to_string(ReservePort()); };
    if (!host.empty()) {
      peer_.push_back(on_host());
    } else {
      peer_.push_back(options_.peer_host_prefix.empty()
                          ? Advertised(ReserveEndpoint())
                          : options_.peer_host_prefix + std::to_string(i + 1) + ":" +
                                std::to_string(ReservePort()));
    }
    client_.push_back(host.empty() ? Advertised(ReserveEndpoint()) : on_host());
    if (!options_.metrics) {
      metrics_.emplace_back();
    } else {
      metrics_.push_back(host.empty() ? Advertised(ReserveEndpoint()) : on_host());
    }
  }
  if (!options_.insecure) {
    for (int i = 1; i <= nodes(); ++i) public_keys_.push_back(MakeKey("node" + std::to_string(i)));
    ordo::StatusOr<ordo::CurveKeyPair> admin = ordo::GenerateKeyPair();
    if (!admin.ok()) throw std::runtime_error(admin.status().message());
    credentials_.public_key = admin.value().public_key;
    credentials_.secret_key = admin.value().secret_key;
    for (int i = 1; i <= nodes(); ++i)
      credentials_.broker_keys[client_[i - 1]] = public_keys_[i - 1];
    WriteClientKey("admin", admin.value());
    clients_.push_back({"admin", admin.value().public_key, {"publish", "subscribe", "admin"}});
    WriteAccessAndReload();  // (nothing runs yet: only writes it)
  }
  for (int i = 1; i <= nodes(); ++i) {
    std::ofstream f(Config(i));
    f << "node_id = " << i << "\ndata_dir = \"" << DataDir(i) << "\"\nmetrics = \""
      << metrics_[i - 1] << "\"\n"
      << SecurityToml("node" + std::to_string(i))
      << BindToml({"peer", "client", "metrics"}, {peer_[i - 1], client_[i - 1], metrics_[i - 1]})
      << MembersToml() << options_.extra_toml;
  }
  for (int i = 1; i <= nodes(); ++i) Start(i);
}

LocalCluster::~LocalCluster() {
  for (int i = 1; i <= nodes(); ++i) Kill(i);
  for (size_t k = 0; k < learners_.size(); ++k) KillLearner(static_cast<int>(k));
  const char* keep = std::getenv("ORDO_TEST_KEEP_DIRS");
  if (options_.keep_dir || (keep != nullptr && *keep == '1')) {
    std::fprintf(stderr, "kept cluster directory %s\n", dir_.c_str());
    return;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::string LocalCluster::MembersToml() const {
  std::ostringstream out;
  for (int m = 1; m <= nodes(); ++m) {
    out << "[[members]]\nid = " << m << "\npeer = \"" << peer_[m - 1] << "\"\nclient = \""
        << client_[m - 1] << "\"\n";
    if (!options_.insecure) out << "public_key = \"" << public_keys_[m - 1] << "\"\n";
  }
  return out.str();
}

std::string LocalCluster::Advertised(const std::string& endpoint) const {
  if (options_.advertise_host.empty()) return endpoint;
  return options_.advertise_host + endpoint.substr(endpoint.rfind(':'));
}

std::string LocalCluster::BindToml(std::initializer_list<const char*> names,
                                   std::initializer_list<std::string> endpoints) const {
  if (options_.bind_host.empty()) return "";
  std::string out = "[bind]\n";
  auto endpoint = endpoints.begin();
  for (const char* name : names) {
    const std::string& e = *endpoint++;
    if (e.empty()) continue;
    out += std::string(name) + " = \"" + options_.bind_host + e.substr(e.rfind(':')) + "\"\n";
  }
  return out;
}

std::string LocalCluster::MakeKey(const std::string& name) const {
  ordo::StatusOr<ordo::CurveKeyPair> pair = ordo::GenerateKeyPair();
  if (!pair.ok()) throw std::runtime_error(pair.status().message());
  const ordo::Status s = ordo::WriteKeyFile(Path(name + ".key"), ordo::KeyFile{pair.value(), {}},
                                            /*overwrite=*/true);
  if (!s.ok()) throw std::runtime_error(s.message());
  return pair.value().public_key;
}

std::string LocalCluster::SecurityToml(const std::string& name) const {
  if (options_.insecure) return "[security]\ninsecure = true\n";
  return "[security]\nkey_file = \"" + Path(name + ".key") + "\"\naccess_file = \"" +
         Path("access.toml") + "\"\n";
}

void LocalCluster::WriteClientKey(const std::string& name, const CurveKeyPair& pair) const {
  const ordo::Status s =
      ordo::WriteKeyFile(Path(name + ".key"), ordo::KeyFile{pair, credentials_.broker_keys},
                         /*overwrite=*/true);
  if (!s.ok()) throw std::runtime_error(s.message());
}

void LocalCluster::WriteAccessAndReload() {
  // Each running broker says in its log when it has reread the file: until
  // then it would refuse a new key's handshake (and a socket that ZeroMQ
  // saw refused is not retried), so this returns only after.
  auto reloads = [](const std::string& log) {
    std::ifstream in(log);
    size_t n = 0;
    for (std::string line; std::getline(in, line);)
      n += line.find("SIGHUP: reloaded") != std::string::npos;
    return n;
  };
  struct Waiting {
    pid_t pid;
    std::string log;
    size_t before;
  };
  std::vector<Waiting> running;
  for (int i = 1; i <= nodes(); ++i) {
    if (Running(i)) running.push_back({pids_[i], Log(i), reloads(Log(i))});
  }
  for (const Learner& l : learners_) {
    if (l.pid > 0) running.push_back({l.pid, l.log, reloads(l.log)});
  }
  std::ofstream access(Path("access.toml"));
  access << "# Written by tests/testing/local_cluster.cc\n" << learners_toml_;
  for (const Client& c : clients_) {
    access << "[[clients]]\nname = \"" << c.name << "\"\npublic_key = \"" << c.public_key
           << "\"\npermissions = [";
    for (size_t i = 0; i < c.permissions.size(); ++i) {
      access << (i ? ", " : "") << '"' << c.permissions[i] << '"';
    }
    access << "]\n";
  }
  access.close();
  for (const Waiting& r : running) ::kill(r.pid, SIGHUP);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (const Waiting& r : running) {
    while (reloads(r.log) <= r.before && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
}

std::string LocalCluster::AllowLearner(uint32_t node_id) {
  const std::string name = "learner" + std::to_string(node_id);
  std::string public_key;
  if (ordo::StatusOr<ordo::KeyFile> existing = ordo::LoadKeyFile(Path(name + ".key"));
      existing.ok()) {
    public_key = existing.value().pair.public_key;
  } else {
    public_key = MakeKey(name);
  }
  learners_toml_ +=
      "[[learners]]\nid = " + std::to_string(node_id) + "\npublic_key = \"" + public_key + "\"\n";
  WriteAccessAndReload();
  return Path(name + ".key");
}

std::string LocalCluster::AllowClient(const std::string& name,
                                      const std::vector<std::string>& permissions) {
  ordo::StatusOr<ordo::CurveKeyPair> pair = ordo::GenerateKeyPair();
  if (!pair.ok()) throw std::runtime_error(pair.status().message());
  WriteClientKey(name, pair.value());
  clients_.push_back({name, pair.value().public_key, permissions});
  WriteAccessAndReload();
  return Path(name + ".key");
}

void LocalCluster::SetClientPermissions(const std::string& name,
                                        const std::vector<std::string>& permissions) {
  for (Client& c : clients_) {
    if (c.name == name) c.permissions = permissions;
  }
  WriteAccessAndReload();
}

std::string LocalCluster::NodeHost(int i) const {
  const size_t k = static_cast<size_t>(i - 1);
  return k < options_.node_hosts.size() ? options_.node_hosts[k] : std::string();
}

std::vector<std::string> LocalCluster::NodePrefix(int i) const {
  const size_t k = static_cast<size_t>(i - 1);
  return k < options_.node_command_prefix.size() ? options_.node_command_prefix[k]
                                                 : std::vector<std::string>();
}

pid_t LocalCluster::Spawn(const std::string& config, const std::string& log,
                          const std::vector<std::string>& prefix) const {
  // The argument vector is built before the fork: the child only execs.
  std::vector<std::string> words = prefix;
  words.insert(words.end(), {options_.broker_bin, "--config", config});
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

void LocalCluster::Start(int i) { pids_[i] = Spawn(Config(i), Log(i), NodePrefix(i)); }

void LocalCluster::Kill(int i, int sig) {
  if (pids_[i] <= 0) return;
  ::kill(pids_[i], sig);
  ::waitpid(pids_[i], nullptr, 0);
  pids_[i] = -1;
}

std::optional<int> LocalCluster::Exited(int i) {
  if (pids_[i] <= 0) return std::nullopt;
  int status = 0;
  if (::waitpid(pids_[i], &status, WNOHANG) != pids_[i]) return std::nullopt;
  pids_[i] = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int LocalCluster::WaitForExit(int i, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (pids_[i] > 0) {
    if (const std::optional<int> status = Exited(i)) return *status;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Kill(i);
  return -1;
}

std::string LocalCluster::LogTail(int i, size_t bytes) const {
  std::ifstream f(Log(i), std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(f)), {});
  if (text.size() > bytes) text = "..." + text.substr(text.size() - bytes);
  return text;
}

int LocalCluster::WaitForLeader(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int leader = 0, leaders = 0;
    for (int i = 1; i <= nodes(); ++i) {
      if (!Running(i)) continue;
      auto s = GetStatus(client_[i - 1], std::chrono::milliseconds(300), credentials_);
      if (s.ok() && s.value().role == "leader") ++leaders, leader = i;
    }
    if (leaders == 1) return leader;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return 0;
}

bool LocalCluster::WaitForHead(uint64_t offset, std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    bool all = true;
    for (int i = 1; i <= nodes(); ++i) {
      if (!Running(i)) continue;
      auto s = GetStatus(client_[i - 1], std::chrono::milliseconds(300), credentials_);
      all &= s.ok() && s.value().next_offset >= offset;
    }
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

int LocalCluster::AddJoiner(const std::vector<int>& seeds) {
  const int i = ++options_.nodes;
  peer_.push_back(options_.peer_host_prefix.empty()
                      ? ReserveEndpoint()
                      : options_.peer_host_prefix + std::to_string(i) + ":" +
                            std::to_string(ReservePort()));
  client_.push_back(ReserveEndpoint());
  metrics_.push_back(options_.metrics ? ReserveEndpoint() : std::string());
  pids_.push_back(-1);
  if (!options_.insecure) {
    public_keys_.push_back(MakeKey("node" + std::to_string(i)));
    credentials_.broker_keys[client_[i - 1]] = public_keys_[i - 1];
    WriteClientKey("admin", CurveKeyPair{credentials_.public_key, credentials_.secret_key});
  }
  std::ostringstream members;
  std::vector<int> listed = {i};
  listed.insert(listed.end(), seeds.begin(), seeds.end());
  for (int m : listed) {
    members << "[[members]]\nid = " << m << "\npeer = \"" << peer_[m - 1] << "\"\nclient = \""
            << client_[m - 1] << "\"\n";
    if (!options_.insecure) members << "public_key = \"" << public_keys_[m - 1] << "\"\n";
  }
  std::ofstream f(Config(i));
  f << "node_id = " << i << "\njoin = true\ndata_dir = \"" << DataDir(i) << "\"\nmetrics = \""
    << metrics_[i - 1] << "\"\n"
    << SecurityToml("node" + std::to_string(i)) << members.str() << options_.extra_toml;
  f.close();
  Start(i);
  return i;
}

void LocalCluster::WipeDataDir(int i) {
  std::error_code ec;
  std::filesystem::remove_all(DataDir(i), ec);
}

int LocalCluster::AddLearner(uint32_t node_id, bool metrics, bool allow) {
  Learner l;
  l.id = node_id;
  l.client = Advertised(ReserveEndpoint());
  l.metrics = metrics ? Advertised(ReserveEndpoint()) : std::string();
  const std::string name = "learner" + std::to_string(node_id);
  l.config = Path(name + ".toml");
  l.data_dir = Path(name);
  l.log = Path(name + ".log");
  if (!options_.insecure) {
    if (allow) {
      AllowLearner(node_id);
    } else {
      MakeKey(name);  // a key no voter knows yet
    }
    // The admin client may read from the learner too.
    ordo::StatusOr<ordo::KeyFile> key = ordo::LoadKeyFile(Path(name + ".key"));
    if (!key.ok()) throw std::runtime_error(key.status().message());
    credentials_.broker_keys[l.client] = key.value().pair.public_key;
    WriteClientKey("admin", CurveKeyPair{credentials_.public_key, credentials_.secret_key});
  }
  std::ofstream f(l.config);
  f << "node_id = " << node_id << "\nrole = \"learner\"\nclient = \"" << l.client
    << "\"\ndata_dir = \"" << l.data_dir << "\"\nmetrics = \"" << l.metrics << "\"\n"
    << SecurityToml(name) << BindToml({"client", "metrics"}, {l.client, l.metrics})
    << MembersToml();
  f.close();
  learners_.push_back(l);
  const int k = static_cast<int>(learners_.size()) - 1;
  StartLearner(k);
  return k;
}

void LocalCluster::StartLearner(int k) {
  learners_[k].pid = Spawn(learners_[k].config, learners_[k].log);
}

void LocalCluster::KillLearner(int k, int sig) {
  Learner& l = learners_[k];
  if (l.pid <= 0) return;
  ::kill(l.pid, sig);
  ::waitpid(l.pid, nullptr, 0);
  l.pid = -1;
}

}  // namespace ordo::testing
