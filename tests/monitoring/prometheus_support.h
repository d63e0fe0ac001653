// Helpers for the monitoring tests: plain HTTP GET over a loopback socket,
// running a program and capturing its output, finding promtool/prometheus,
// and a real Prometheus server process that is always stopped.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace ordo::testing {

// GET http://`host_port``target` (HTTP/1.0, so no chunked body). Returns the
// status code (0 when the connection failed) and fills *body.
inline int HttpGet(const std::string& host_port, const std::string& target, std::string* body) {
  body->clear();
  const size_t colon = host_port.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(host_port.substr(colon + 1))));
  inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &a.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return 0;
  }
  const std::string request = "GET " + target + " HTTP/1.0\r\nHost: " + host_port +
                              "\r\nAccept: */*\r\nConnection: close\r\n\r\n";
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return 0;
  }
  std::string response;
  char buf[65536];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  const size_t end = response.find("\r\n\r\n");
  if (response.compare(0, 5, "HTTP/") != 0 || end == std::string::npos) return 0;
  *body = response.substr(end + 4);
  return std::atoi(response.c_str() + response.find(' ') + 1);
}

inline std::string UrlEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// The program's path in PATH, or "" when it is not installed.
inline std::string Which(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const std::string p = dir + "/" + name;
    if (access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

inline std::string MissingTool(const std::string& name) {
  return name +
         " is not installed (not found in PATH). It comes with Debian's `prometheus` "
         "package, which scripts/setup installs: run scripts/setup as root.";
}

// Runs `command` through the shell; returns its exit status and fills
// *output with its stdout and stderr.
inline int RunCommand(const std::string& command, std::string* output) {
  output->clear();
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) output->append(buf, n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Sample names in Prometheus text exposition (`name{labels} value`).
inline std::set<std::string> SampleNames(const std::string& exposition) {
  std::set<std::string> names;
  std::stringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    names.insert(line.substr(0, line.find_first_of("{ ")));
  }
  return names;
}

// Every distinct match of group 1 of `re` in `text`.
inline std::vector<std::string> Matches(const std::string& text, const std::string& re) {
  std::vector<std::string> out;
  const std::regex r(re);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), r); it != std::sregex_iterator();
       ++it) {
    out.push_back((*it)[1].str());
  }
  return out;
}

// A real Prometheus server on 127.0.0.1:`port` with its own storage under
// `dir`, scraping what `config_yaml` says. Stopped (and reaped) by the
// destructor, so a failing test leaves no process behind.
class PrometheusServer {
 public:
  PrometheusServer(const std::string& binary, const std::filesystem::path& dir, int port,
                   const std::string& config_yaml)
      : dir_(dir), address_("127.0.0.1:" + std::to_string(port)) {
    std::filesystem::create_directories(dir_);
    const std::string config = (dir_ / "prometheus.yml").string();
    std::ofstream(config) << config_yaml;
    const std::string args[] = {
        binary,
        "--config.file=" + config,
        "--storage.tsdb.path=" + (dir_ / "data").string(),
        "--web.listen-address=" + address_,
        "--log.level=info",
    };
    pid_ = fork();
    if (pid_ == 0) {
      const int fd = open(log().c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
  }
  ~PrometheusServer() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    // A clean shutdown takes well under a second; do not hang the suite on it.
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  PrometheusServer(const PrometheusServer&) = delete;
  PrometheusServer& operator=(const PrometheusServer&) = delete;

  std::string log() const { return (dir_ / "prometheus.log").string(); }
  const std::string& address() const { return address_; }
  bool Running() {
    if (pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == pid_) pid_ = -1;  // exited: reaped
    return pid_ > 0;
  }

  // GET /api/v1/query?query=`promql`; returns the JSON body ("" when unreachable).
  std::string Query(const std::string& promql) const {
    std::string body;
    // Errors (400, 422) come with a JSON body saying what was wrong.
    if (HttpGet(address_, "/api/v1/query?query=" + UrlEncode(promql), &body) == 0) return "";
    return body;
  }

 private:
  std::filesystem::path dir_;
  std::string address_;
  pid_t pid_ = -1;
};

// The string values of an instant-vector query's result ("value":[t,"v"]).
inline std::vector<double> ResultValues(const std::string& json) {
  std::vector<double> out;
  for (const std::string& v : Matches(json, R"re("value":\[[0-9.e+]+,"([^"]*)"\])re")) {
    out.push_back(std::strtod(v.c_str(), nullptr));
  }
  return out;
}

// The value of the first sample of `metric` whose labels contain `label`
// (e.g. peer="learner"); -1 when there is none.
inline double Sample(const std::string& metrics_endpoint, const std::string& metric,
              const std::string& label = "") {
  std::string body;
  if (HttpGet(metrics_endpoint, "/metrics", &body) != 200) return -1;
  std::istringstream lines(body);
  for (std::string line; std::getline(lines, line);) {
    // NAME{LABELS} VALUE
    if (line.rfind(metric + "{", 0) != 0) continue;
    const size_t close = line.find("} ");
    if (close == std::string::npos || line.substr(0, close).find(label) == std::string::npos) {
      continue;
    }
    return std::stod(line.substr(close + 2));
  }
  return -1;
}

}  // namespace ordo::testing
