#include <fcntl.h>
#include <signal.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "bench/bench.h"
#include "tests/testing/netns.h"
#include "tests/testing/ports.h"

namespace ordo::bench {

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

namespace {

uint64_t StatusKb(const std::string& text, const std::string& field) {
  const size_t at = text.find("\n" + field + ":");
  if (at == std::string::npos) return 0;
  return std::strtoull(text.c_str() + at + field.size() + 2, nullptr, 10);
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

ProcSample SampleProc(pid_t pid) {
  ProcSample s;
  const std::string stat = ReadAll("/proc/" + std::to_string(pid) + "/stat");
  // Fields after the command name (which may hold spaces): state is field 3;
  // utime and stime are fields 14 and 15.
  const size_t close = stat.rfind(')');
  if (close == std::string::npos) return s;
  std::istringstream in(stat.substr(close + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  const double tick = static_cast<double>(sysconf(_SC_CLK_TCK));
  s.cpu_s = static_cast<double>(utime + stime) / tick;
  const std::string status = "\n" + ReadAll("/proc/" + std::to_string(pid) + "/status");
  s.rss_peak_bytes = StatusKb(status, "VmHWM") * 1024;
  s.rss_anon_bytes = StatusKb(status, "RssAnon") * 1024;
  s.ok = true;
  return s;
}

BenchCluster::BenchCluster(const CommonOptions& options, const std::string& extra_toml,
                           const std::string& peer_host_prefix, const testing::NetnsLab* lab) {
  if (!options.brokers.empty()) {
    external_ = true;
    client_ = ParseBrokerList(options.brokers);
    if (client_.empty()) {
      throw std::runtime_error("--brokers: no HOST:PORT found in '" + options.brokers +
                               "'; give the client endpoints, e.g. 127.0.0.1:7201,127.0.0.1:7202");
    }
    if (!options.credentials.empty()) {
      Result<ClientCredentials> c = LoadCredentials(options.credentials);
      if (!c.ok()) throw std::runtime_error(c.error().message);
      credentials_ = std::move(c.value());
    }
    return;
  }
  if (access(options.broker_bin.c_str(), X_OK) != 0) {
    throw std::runtime_error("broker binary " + options.broker_bin +
                             " is not executable; build it (ninja -C build) or pass --broker-bin");
  }
  testing::LocalClusterOptions o;
  o.nodes = options.nodes;
  o.broker_bin = options.broker_bin;
  o.extra_toml = extra_toml;
  o.dir_prefix = "ordo-bench-";
  o.keep_dir = options.keep_dir;
  o.insecure = options.insecure;
  o.peer_host_prefix = peer_host_prefix;
  if (lab != nullptr) {
    o.node_hosts = lab->Hosts();
    for (int i = 1; i <= lab->nodes(); ++i) o.node_command_prefix.push_back(lab->ExecPrefix(i));
  }
  local_ = std::make_unique<testing::LocalCluster>(o);
  client_ = local_->Brokers();
  credentials_ = local_->Credentials();
}

BenchCluster::~BenchCluster() = default;

ClientOptions BenchCluster::Options(std::chrono::milliseconds request_timeout,
                                    std::chrono::milliseconds call_timeout) const {
  ClientOptions o;
  o.brokers = client_;
  o.request_timeout = request_timeout;
  o.call_timeout = call_timeout;
  o.credentials = credentials_;
  return o;
}

void BenchCluster::Start(int i) {
  if (!local_) throw std::runtime_error("cannot start a broker of an external cluster");
  local_->Start(i);
}

void BenchCluster::Kill(int i, int sig) {
  if (local_) local_->Kill(i, sig);
}

void BenchCluster::CheckAlive() {
  for (int i = 1; local_ && i <= nodes(); ++i) {
    if (const std::optional<int> status = local_->Exited(i)) {
      throw std::runtime_error("broker " + std::to_string(i) + " exited (status " +
                               std::to_string(*status) + "); its log:\n" + LogTail(i));
    }
  }
}

int BenchCluster::WaitForLeader(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    CheckAlive();
    // Our own brokers: the launcher's wait, in short slices so that a
    // broker that died is reported at once.
    if (local_) {
      if (const int leader = local_->WaitForLeader(std::chrono::milliseconds(200))) return leader;
      continue;
    }
    int leader = 0, leaders = 0;
    for (int i = 1; i <= nodes(); ++i) {
      auto s = GetStatus(client_[i - 1], std::chrono::milliseconds(300), credentials_);
      if (s.ok() && s.value().role == "leader") ++leaders, leader = i;
    }
    if (leaders == 1) return leader;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("no leader elected within " + std::to_string(timeout.count()) +
                           " ms; is the cluster up? (ordo status --brokers ...)");
}

std::vector<ProcSample> BenchCluster::Sample() const {
  std::vector<ProcSample> out;
  if (!local_) return out;
  for (int i = 1; i <= nodes(); ++i) out.push_back(Running(i) ? SampleProc(Pid(i)) : ProcSample{});
  return out;
}

// --- LatencyRecorder ---

void LatencyRecorder::Add(double latency_us, uint64_t count) {
  if (count == 0) return;
  entries_.emplace_back(latency_us, count);
  count_ += count;
  sorted_ = false;
}

void LatencyRecorder::Merge(const LatencyRecorder& other) {
  entries_.insert(entries_.end(), other.entries_.begin(), other.entries_.end());
  count_ += other.count_;
  sorted_ = false;
}

double LatencyRecorder::Percentile(double q) const {
  if (count_ == 0) return 0;
  if (!sorted_) {
    std::sort(entries_.begin(), entries_.end());
    sorted_ = true;
  }
  // The smallest latency with at least q of all messages at or below it.
  const double rank = std::max(1.0, q * static_cast<double>(count_));
  uint64_t seen = 0;
  for (const auto& [lat, n] : entries_) {
    seen += n;
    if (static_cast<double>(seen) >= rank) return lat;
  }
  return entries_.back().first;
}

double LatencyRecorder::Max() const { return Percentile(1.0); }

Json LatencyRecorder::ToJson() const {
  Json j = Json::MakeObject();
  j["messages"] = count_;
  j["p50_us"] = Percentile(0.5);
  j["p90_us"] = Percentile(0.9);
  j["p99_us"] = Percentile(0.99);
  j["p999_us"] = Percentile(0.999);
  j["max_us"] = Max();
  return j;
}

// --- the synchronous batch driver ---

namespace {

class SyncBatchDriver : public PublishDriver {
 public:
  SyncBatchDriver(ClientOptions options, size_t window, AckSink& sink)
      : publisher_(std::move(options)), window_(std::max<size_t>(1, window)), sink_(sink) {
    batch_.resize(window_);
    scheduled_.resize(window_);
  }
  ~SyncBatchDriver() override = default;

  void Submit(std::string_view payload, Clock::time_point scheduled) override {
    batch_[n_].payload.assign(payload);
    scheduled_[n_] = scheduled;
    if (++n_ == window_) Send(batch_);
  }

  void Flush() override {
    if (n_ == 0) return;
    if (n_ == window_) return Send(batch_);
    std::vector<OutgoingMessage> part(batch_.begin(), batch_.begin() + static_cast<long>(n_));
    Send(part);
  }

 private:
  void Send(const std::vector<OutgoingMessage>& messages) {
    const size_t n = n_;
    n_ = 0;
    auto r = publisher_.PublishBatch(messages);
    const auto now = Clock::now();
    // Latencies are collected locally and merged under the lock once.
    LatencyRecorder local;
    uint64_t counted = 0;
    if (r.ok()) {
      for (size_t i = 0; i < n;) {
        // Runs of one scheduled time (closed loop: the whole batch) add once.
        size_t j = i + 1;
        while (j < n && scheduled_[j] == scheduled_[i]) ++j;
        if (scheduled_[i] >= sink_.window_begin && scheduled_[i] < sink_.window_end) {
          local.Add(std::chrono::duration<double, std::micro>(now - scheduled_[i]).count(), j - i);
          counted += j - i;
        }
        i = j;
      }
    }
    std::lock_guard<std::mutex> lock(sink_.mu);
    if (!r.ok()) {
      ++sink_.errors;
      sink_.last_error = r.error().message;
      return;
    }
    sink_.latency.Merge(local);
    sink_.acked += counted;
    if (sink_.keep_ack_times) sink_.ack_times.push_back(now);
  }

  Publisher publisher_;
  size_t window_;
  AckSink& sink_;
  std::vector<OutgoingMessage> batch_;
  std::vector<Clock::time_point> scheduled_;
  size_t n_ = 0;
};

class AsyncDriver : public PublishDriver {
 public:
  AsyncDriver(ClientOptions options, size_t requests_inflight, AckSink& sink)
      : sink_(sink), publisher_(std::move(options), AsyncOptions(requests_inflight)) {}
  ~AsyncDriver() override { Flush(); }

  void Submit(std::string_view payload, Clock::time_point scheduled) override {
    // The callback runs on the publisher's one I/O thread: `local_` needs no
    // lock until Flush merges it.
    auto done = [this, scheduled](const Result<uint64_t>& r) {
      if (!r.ok()) {
        ++failed_;
        return;
      }
      if (scheduled >= sink_.window_begin && scheduled < sink_.window_end) {
        local_.Add(std::chrono::duration<double, std::micro>(Clock::now() - scheduled).count(), 1);
        ++counted_;
      }
    };
    std::optional<Error> e = publisher_.Publish(payload, {}, std::move(done));
    if (e) {
      std::lock_guard<std::mutex> lock(sink_.mu);
      ++sink_.errors;
      sink_.last_error = e->message;
    }
  }

  void SendDue() override {}  // sent already; waiting would close the loop

  void Flush() override {
    if (flushed_) return;
    flushed_ = true;
    std::optional<Error> e = publisher_.Close(std::chrono::seconds(30));
    std::lock_guard<std::mutex> lock(sink_.mu);
    sink_.latency.Merge(local_);
    sink_.acked += counted_;
    sink_.errors += failed_;
    if (e) {
      ++sink_.errors;
      sink_.last_error = e->message;
    } else if (failed_ > 0) {
      sink_.last_error = "a publish callback reported an error";
    }
  }

 private:
  static AsyncPublisherOptions AsyncOptions(size_t requests_inflight) {
    AsyncPublisherOptions o;
    o.linger = std::chrono::milliseconds(0);
    o.requests_inflight_max = std::max<size_t>(1, requests_inflight);
    return o;
  }

  AckSink& sink_;
  LatencyRecorder local_;
  uint64_t counted_ = 0;
  uint64_t failed_ = 0;
  bool flushed_ = false;
  AsyncPublisher publisher_;  // last: its I/O thread stops before the rest goes
};

}  // namespace

std::unique_ptr<PublishDriver> MakeAsyncDriver(ClientOptions options, size_t requests_inflight,
                                               AckSink& sink) {
  return std::make_unique<AsyncDriver>(std::move(options), requests_inflight, sink);
}

std::unique_ptr<PublishDriver> MakeSyncBatchDriver(ClientOptions options, size_t window,
                                                   AckSink& sink) {
  return std::make_unique<SyncBatchDriver>(std::move(options), window, sink);
}

std::string Payload(size_t size) {
  std::string p(size, '\0');
  std::mt19937 rng(42);
  for (char& c : p) c = static_cast<char>('a' + rng() % 26);
  return p;
}

uint64_t Fill(const ClientOptions& options, uint64_t count, size_t size, int publishers,
              size_t window) {
  const std::string payload = Payload(size);
  std::vector<OutgoingMessage> batch(window, OutgoingMessage{"", payload});
  std::atomic<uint64_t> next{0}, head{0};
  std::mutex mu;
  std::string error;
  std::vector<std::thread> threads;
  for (int t = 0; t < publishers; ++t) {
    threads.emplace_back([&] {
      Publisher p(options);
      while (true) {
        const uint64_t start = next.fetch_add(window);
        if (start >= count) return;
        const size_t n = static_cast<size_t>(std::min<uint64_t>(window, count - start));
        auto r = n == window ? p.PublishBatch(batch)
                             : p.PublishBatch(std::vector<OutgoingMessage>(batch.begin(),
                                                                           batch.begin() + static_cast<long>(n)));
        if (!r.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          error = r.error().message;
          next.store(count);
          return;
        }
        uint64_t h = head.load();
        const uint64_t mine = r.value().back() + 1;
        while (mine > h && !head.compare_exchange_weak(h, mine)) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  if (!error.empty()) throw std::runtime_error("filling the cluster failed: " + error);
  return head.load();
}

// --- output ---

void Table::Row(const std::string& name, const std::string& value, const std::string& note) {
  rows_.push_back({name, value, note});
}

void Table::Print() const {
  size_t w0 = 0, w1 = 0;
  for (const auto& r : rows_) w0 = std::max(w0, r[0].size()), w1 = std::max(w1, r[1].size());
  std::printf("\n%s\n%s\n", title_.c_str(), std::string(title_.size(), '-').c_str());
  for (const auto& r : rows_) {
    std::printf("  %-*s  %*s  %s\n", static_cast<int>(w0), r[0].c_str(), static_cast<int>(w1),
                r[1].c_str(), r[2].c_str());
  }
  std::fflush(stdout);
}

std::string Fmt(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  const std::string s(buf);
  // Thousands separators on the integer part.
  size_t end = s.find('.');
  if (end == std::string::npos) end = s.size();
  const size_t begin = s[0] == '-' ? 1 : 0;
  std::string out = s.substr(0, begin);
  for (size_t i = begin; i < end; ++i) {
    if (i > begin && (end - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out + s.substr(end);
}

std::string Pct(std::optional<double> part, std::optional<double> whole) {
  if (!part || !whole || *whole <= 0) return "n/a";
  return Fmt(100.0 * *part / *whole, 1) + "%";
}

std::string Us(double us) {
  if (us >= 1000) return Fmt(us / 1000, 2) + " ms";
  return Fmt(us, 0) + " us";
}

void WriteJson(const CommonOptions& options, const Json& j) {
  if (options.json_path.empty()) return;
  std::ofstream f(options.json_path);
  f << j.Dump();
  if (!f) throw std::runtime_error("cannot write " + options.json_path);
}

Json MachineInfo() {
  Json m = Json::MakeObject();
  std::ifstream cpu("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpu, line)) {
    if (line.rfind("model name", 0) == 0) {
      m["cpu"] = line.substr(line.find(':') + 2);
      break;
    }
  }
  m["cores"] = static_cast<uint64_t>(std::thread::hardware_concurrency());
  const std::string meminfo = "\n" + ReadAll("/proc/meminfo");
  m["memory_bytes"] = StatusKb(meminfo, "MemTotal") * 1024;
  utsname u{};
  if (uname(&u) == 0) m["kernel"] = std::string(u.sysname) + " " + u.release;
  m["temp_dir"] = std::filesystem::temp_directory_path().string();
  // Other work on the machine skews every figure: record how busy it was.
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) == 3) m["load_average_1m"] = load[0];
  return m;
}

Json LoadOrMeasureCeiling(const CommonOptions& options, size_t message_bytes) {
  if (!options.ceiling_path.empty()) {
    const std::string text = ReadAll(options.ceiling_path);
    if (text.empty()) {
      throw std::runtime_error("--ceiling " + options.ceiling_path +
                               ": missing or empty; write one with `ordo-bench ceiling --json FILE`");
    }
    // A `ceiling --json` file, or a run-all file (its "ceiling" holds one).
    const Json* j = nullptr;
    Json whole;
    try {
      whole = Json::Parse(text);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("--ceiling " + options.ceiling_path + ": " + e.what() +
                               "; give a file written by `ordo-bench ceiling --json` or bench/run-all");
    }
    for (j = &whole; j->Find("ceiling");) j = j->Find("ceiling");
    if (!j->NumberAt("replicated.batch_256k_msgs_per_s")) {
      throw std::runtime_error("--ceiling " + options.ceiling_path +
                               ": no ceiling figures in it; write one with `ordo-bench ceiling --json FILE`");
    }
    return *j;
  }
  std::cerr << "ordo-bench: measuring a quick ceiling (pass --ceiling FILE to reuse one)\n";
  return MeasureCeiling(0.2, message_bytes, std::filesystem::temp_directory_path().string(), 2);
}

}  // namespace ordo::bench
