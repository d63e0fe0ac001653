#include "broker/snapshot_service.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>

#include "base/durable_file.h"
#include "broker/crc32c.h"

namespace ordo::broker {

namespace fs = std::filesystem;

namespace {

// A transfer that hears nothing for this long moves to another peer.
constexpr auto kStallTimeout = std::chrono::seconds(2);
// Log records dropped per truncation step: bounded so a step is short.
constexpr size_t kTruncateStepMax = 4096;
// Chunks queued behind the send rate limit, at most.
constexpr size_t kDeferredMax = 64;

bool ReadAt(const std::string& path, uint64_t offset, size_t len, std::string* out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out->resize(len);
  size_t done = 0;
  while (done < len) {
    const ssize_t n = ::pread(fd, out->data() + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return done == len;
}

}  // namespace

SnapshotService::SnapshotService(const BrokerConfig& config, LmdbStore& store, PeerTransport& peers,
                                 std::function<paxos::Instance()> chosen,
                                 std::function<bool()> before_install)
    : config_(config),
      store_(store),
      peers_(peers),
      chosen_(std::move(chosen)),
      before_install_(std::move(before_install)) {
  for (const Member& m : config_.members) {
    if (m.id != config_.node_id) peer_ids_.push_back(m.id);
  }
  std::error_code ec;
  fs::create_directories(store_.SnapshotDir(), ec);
  RemoveOldFiles();
}

SnapshotService::~SnapshotService() {
  if (builder_.joinable()) builder_.join();
}

// ---------------------------------------------------------------------------
// Taking snapshots

void SnapshotService::Take(const paxos::AppliedSnapshot& state) {
  if (building_) {
    spdlog::debug("snapshot at instance {} skipped: the previous one is still being written",
                  state.instance.value());
    return;
  }
  if (builder_.joinable()) builder_.join();
  // The builder reads the compacted view in a transaction of its own, begun
  // while the loop waits here: it sees exactly the commit that applied
  // state.instance, and the loop commits again only once it is begun.
  std::promise<bool> begun;
  std::future<bool> began = begun.get_future();
  building_ = true;
  builder_ = std::thread([this, state, begun = std::move(begun)]() mutable {
    ReadTxn txn = store_.BeginRead();
    begun.set_value(static_cast<bool>(txn));
    if (txn) Build(std::move(txn), std::move(state));
  });
  if (!began.get()) {
    builder_.join();
    building_ = false;
    spdlog::warn("snapshot at instance {} skipped: cannot open a read transaction",
                 state.instance.value());
  }
}

void SnapshotService::Build(ReadTxn txn, paxos::AppliedSnapshot state) {
  std::vector<StreamMessage> keyed;
  Status s = store_.ReadKeyed(txn, &keyed);
  txn.End();
  SnapshotHandle handle;
  if (s.ok()) {
    const std::string file = EncodeSnapshotFile(state, keyed);
    handle = SnapshotHandle{state.instance.value(), file.size(), Crc32c(file.data(), file.size())};
    s = WriteFileDurably(store_.SnapshotPath(handle), file, 0644);
  }
  std::lock_guard<std::mutex> lock(mu_);
  built_ = Built{true, s, handle, std::move(state)};
}

void SnapshotService::Tick(Clock::time_point now, paxos::Instance applied) {
  Built built;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (built_.done) {
      built = std::move(built_);
      built_ = Built{};
    }
  }
  if (built.done) {
    building_ = false;
    if (builder_.joinable()) builder_.join();
    if (!built.status.ok()) {
      spdlog::warn("snapshot at instance {} failed: {}", built.state.instance.value(),
                   built.status.message());
    } else if (built.handle.instance > store_.snapshot_handle().instance) {
      const SnapshotHandle before = store_.snapshot_handle();
      if (store_.RecordSnapshot(built.handle, built.state) == paxos::StoreCode::kOk) {
        previous_ = before;
        ++counters_.snapshots_taken;
        spdlog::info("snapshot at instance {}: {} bytes, CRC32C {:08x}", built.handle.instance,
                     built.handle.size, built.handle.checksum);
        RemoveOldFiles();
      } else {
        spdlog::warn("snapshot at instance {} not recorded: {}", built.handle.instance,
                     store_.last_error());
      }
    }
  }

  if (ages_.empty() || now - ages_.back().second >= std::chrono::seconds(1)) {
    if (ages_.empty() || ages_.back().first != applied) ages_.emplace_back(applied, now);
  }
  Truncate(now, applied);

  // Chunks owed under the send rate limit.
  if (config_.snapshot_send_bytes_per_sec != 0) {
    const double rate = static_cast<double>(config_.snapshot_send_bytes_per_sec);
    if (last_refill_ != Clock::time_point{}) {
      send_tokens_ += rate * std::chrono::duration<double>(now - last_refill_).count();
    }
    send_tokens_ = std::min(send_tokens_, rate + config_.snapshot_chunk_bytes);
    last_refill_ = now;
    while (!deferred_.empty() && send_tokens_ >= static_cast<double>(deferred_.front().data.size())) {
      send_tokens_ -= static_cast<double>(deferred_.front().data.size());
      peers_.SendSnapshot(deferred_.front());
      ++counters_.chunks_sent;
      deferred_.pop_front();
    }
  }

  // A transfer whose peer went quiet resumes from another one.
  if (fetch_.active) {
    auto stall = std::chrono::duration_cast<Clock::duration>(kStallTimeout);
    if (config_.snapshot_send_bytes_per_sec != 0) {
      stall += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
          4.0 * config_.snapshot_chunk_bytes / config_.snapshot_send_bytes_per_sec));
    }
    if (now - fetch_.asked > stall) {
      fetch_.tried.insert(fetch_.peer);
      const uint32_t next = NextPeer();
      spdlog::warn("snapshot transfer: no answer from node {} at byte {} of {}; resuming from "
                   "node {}",
                   fetch_.peer, fetch_.received, fetch_.handle.size, next);
      Ask(next, fetch_.received, now);
    }
  }
}

void SnapshotService::Truncate(Clock::time_point now, paxos::Instance applied) {
  const SnapshotHandle& snap = store_.snapshot_handle();
  if (snap.instance == 0) return;
  const uint64_t first = store_.FirstInstance().value();
  uint64_t target = first;
  if (config_.retention_instances != 0 && applied.value() + 1 > config_.retention_instances) {
    target = std::max(target, applied.value() + 1 - config_.retention_instances);
  }
  if (config_.retention_age_seconds != 0) {
    const auto cutoff = now - std::chrono::seconds(config_.retention_age_seconds);
    while (!ages_.empty() && ages_.front().second < cutoff) {
      age_floor_ = std::max(age_floor_, ages_.front().first.value());
      ages_.pop_front();
    }
    if (age_floor_ != 0) target = std::max(target, age_floor_ + 1);
  }
  if (config_.retention_bytes != 0 && store_.log_bytes() > config_.retention_bytes) {
    const uint64_t last = std::max(store_.LastInstance().value(), first);
    const uint64_t average = std::max<uint64_t>(1, store_.log_bytes() / (last - first + 1));
    target = std::max(target, first + (store_.log_bytes() - config_.retention_bytes) / average + 1);
  }
  target = std::min(target, snap.instance + 1);
  if (target <= first) return;
  size_t deleted = 0;
  if (store_.Truncate(paxos::Instance(target), kTruncateStepMax, &deleted) != paxos::StoreCode::kOk) {
    spdlog::warn("truncating the log failed: {}", store_.last_error());
    return;
  }
  counters_.instances_truncated += deleted;
}

void SnapshotService::RemoveOldFiles() {
  std::error_code ec;
  const std::string current = store_.SnapshotPath(store_.snapshot_handle());
  const std::string previous = store_.SnapshotPath(previous_);
  const std::string part = fetch_.active ? PartPath(fetch_.handle) : std::string();
  for (const auto& entry : fs::directory_iterator(store_.SnapshotDir(), ec)) {
    const std::string path = entry.path().string();
    const std::string name = entry.path().filename().string();
    if (path == current || path == previous) continue;
    if (name.ends_with(".part")) {
      // Kept for a resume after a restart until another transfer starts.
      if (!fetch_.active || path == part) continue;
    }
    if (name.ends_with(".tmp") && building_) continue;
    fs::remove(entry.path(), ec);
  }
}

// ---------------------------------------------------------------------------
// Serving

void SnapshotService::Serve(const SnapshotMessage& request) {
  const SnapshotHandle have = store_.snapshot_handle();
  SnapshotHandle use;
  if (request.handle.instance == 0) {
    if (have.instance != 0 && have.instance >= request.min_instance) use = have;
  } else if (request.handle == have || (request.handle == previous_ && previous_.instance != 0)) {
    use = request.handle;
  }
  SnapshotMessage reply;
  reply.from = config_.node_id;
  reply.to = request.from;
  if (use.instance != 0 && request.offset <= use.size) {
    const size_t len = static_cast<size_t>(
        std::min<uint64_t>(config_.snapshot_chunk_bytes, use.size - request.offset));
    if (ReadAt(store_.SnapshotPath(use), request.offset, len, &reply.data)) {
      reply.op = SnapshotMessage::kChunk;
      reply.handle = use;
      reply.offset = request.offset;
      reply.data_checksum = Crc32c(reply.data.data(), reply.data.size());
      if (config_.snapshot_send_bytes_per_sec != 0) {
        if (deferred_.size() >= kDeferredMax) deferred_.pop_front();
        deferred_.push_back(std::move(reply));
        return;
      }
      peers_.SendSnapshot(reply);
      ++counters_.chunks_sent;
      return;
    }
  }
  reply.op = SnapshotMessage::kUnavailable;
  reply.handle = have;
  reply.data.clear();
  peers_.SendSnapshot(reply);
}

// ---------------------------------------------------------------------------
// Fetching

std::string SnapshotService::PartPath(const SnapshotHandle& h) const {
  return store_.SnapshotDir() + "/incoming-" + std::to_string(h.instance) + "-" +
         std::to_string(h.checksum) + "-" + std::to_string(h.size) + ".part";
}

uint32_t SnapshotService::NextPeer() {
  const std::vector<uint32_t>& ids = peer_ids_;
  if (ids.empty()) return 0;
  auto after = std::find(ids.begin(), ids.end(), fetch_.peer);
  const size_t start = after == ids.end() ? 0 : static_cast<size_t>(after - ids.begin()) + 1;
  for (size_t k = 0; k < ids.size(); ++k) {
    const uint32_t id = ids[(start + k) % ids.size()];
    if (!fetch_.tried.count(id)) return id;
  }
  fetch_.tried.clear();  // every peer failed us once: go round again
  return ids[start % ids.size()];
}

void SnapshotService::Ask(uint32_t peer, uint64_t offset, Clock::time_point now) {
  SnapshotMessage m;
  m.op = SnapshotMessage::kRequest;
  m.from = config_.node_id;
  m.to = peer;
  m.handle = fetch_.handle;
  m.offset = offset;
  m.min_instance = fetch_.min_instance;
  peers_.SendSnapshot(m);
  fetch_.peer = peer;
  fetch_.asked = now;
}

void SnapshotService::Need(uint32_t hint, uint64_t min_instance) {
  if (fetch_.active) return;
  const auto now = Clock::now();
  fetch_ = Fetch{};
  fetch_.active = true;
  fetch_.min_instance = min_instance;
  fetch_.started = now;
  // A transfer this broker began before a restart resumes where it stopped.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(store_.SnapshotDir(), ec)) {
    unsigned long long instance = 0, checksum = 0, size = 0;
    const std::string name = entry.path().filename().string();
    if (std::sscanf(name.c_str(), "incoming-%llu-%llu-%llu.part", &instance, &checksum, &size) == 3 &&
        instance >= min_instance) {
      fetch_.handle = SnapshotHandle{instance, size, static_cast<uint32_t>(checksum)};
      fetch_.received = std::min<uint64_t>(fs::file_size(entry.path(), ec), size);
      break;
    }
  }
  const uint32_t peer = hint != 0 ? hint : NextPeer();
  spdlog::info("the peers have truncated instance {}: fetching a snapshot from node {}{}",
               min_instance, peer,
               fetch_.handle.instance != 0
                   ? " (resuming snapshot " + std::to_string(fetch_.handle.instance) +
                         " at byte " + std::to_string(fetch_.received) + ")"
                   : "");
  Ask(peer, fetch_.received, now);
}

void SnapshotService::OnMessage(const SnapshotMessage& m, Clock::time_point now) {
  if (m.op == SnapshotMessage::kRequest) {
    Serve(m);
    return;
  }
  if (!fetch_.active) return;
  if (m.op == SnapshotMessage::kUnavailable) {
    if (m.from != fetch_.peer) return;
    fetch_.tried.insert(m.from);
    bool all_tried = true;
    for (uint32_t p : peer_ids_) {
      if (!fetch_.tried.count(p)) all_tried = false;
    }
    if (all_tried && fetch_.handle.instance != 0 && m.handle.instance >= fetch_.min_instance) {
      // Nobody has ours any more: start over with what this peer has.
      Abandon("no peer has snapshot " + std::to_string(fetch_.handle.instance) + " any more");
      fetch_.tried.clear();
      Ask(m.from, 0, now);
      return;
    }
    Ask(NextPeer(), fetch_.received, now);
    return;
  }
  // A chunk.
  if (fetch_.handle.instance == 0) {
    if (m.handle.instance < fetch_.min_instance) return;
    fetch_.handle = m.handle;
    fetch_.received = 0;
  }
  if (m.handle != fetch_.handle || m.offset != fetch_.received) return;  // late or duplicate
  if (Crc32c(m.data.data(), m.data.size()) != m.data_checksum ||
      m.offset + m.data.size() > fetch_.handle.size || m.data.empty()) {
    ++counters_.chunks_rejected;
    spdlog::warn("snapshot chunk at byte {} from node {} fails its checksum; asking another peer",
                 m.offset, m.from);
    fetch_.tried.insert(m.from);
    Ask(NextPeer(), fetch_.received, now);
    return;
  }
  {
    std::ofstream part(PartPath(fetch_.handle), std::ios::binary | std::ios::app);
    part.write(m.data.data(), static_cast<std::streamsize>(m.data.size()));
    if (!part) {
      Abandon("cannot write " + PartPath(fetch_.handle));
      return;
    }
  }
  fetch_.received += m.data.size();
  ++counters_.chunks_received;
  counters_.bytes_received += m.data.size();
  if (fetch_.received == fetch_.handle.size) {
    Complete(now);
  } else {
    Ask(m.from, fetch_.received, now);
  }
}

void SnapshotService::Abandon(const std::string& why) {
  spdlog::warn("snapshot transfer: {}; starting over", why);
  std::error_code ec;
  fs::remove(PartPath(fetch_.handle), ec);
  fetch_.handle = SnapshotHandle{};
  fetch_.received = 0;
}

void SnapshotService::Complete(Clock::time_point now) {
  const SnapshotHandle h = fetch_.handle;
  std::string file;
  Status s = LmdbStore::ReadSnapshotFile(PartPath(h), h, &file);
  paxos::AppliedSnapshot state;
  std::vector<StreamMessage> keyed;
  DecodeStatus d;
  if (s.ok()) d = DecodeSnapshotFile(AsBytes(file), &state, &keyed);
  if (!s.ok() || !d.ok() || state.instance.value() != h.instance) {
    ++counters_.chunks_rejected;
    Abandon("snapshot " + std::to_string(h.instance) + " fails its check (" +
            (s.ok() ? d.ToString() : s.message()) + ")");
    Ask(NextPeer(), 0, now);
    return;
  }
  std::error_code ec;
  if (state.instance <= chosen_()) {
    spdlog::info("snapshot {} no longer needed: this broker caught up by itself", h.instance);
    fs::remove(PartPath(h), ec);
    fetch_.active = false;
    return;
  }
  fs::rename(PartPath(h), store_.SnapshotPath(h), ec);
  if (ec) {
    Abandon("cannot rename the received snapshot: " + ec.message());
    return;
  }
  if (!before_install_() || store_.InstallSnapshot(h, state, keyed) != paxos::StoreCode::kOk) {
    spdlog::error("installing snapshot {} failed: {}", h.instance, store_.last_error());
    fetch_.active = false;
    return;
  }
  fetch_.active = false;
  ++counters_.snapshots_installed;
  counters_.last_install_seconds = std::chrono::duration<double>(now - fetch_.started).count();
  spdlog::info("installed snapshot at instance {} ({} bytes, {} keys) from node {} in {:.2f} s",
               h.instance, h.size, keyed.size(), fetch_.peer, counters_.last_install_seconds);
  installed_ = std::move(state);
  RemoveOldFiles();
}

std::optional<paxos::AppliedSnapshot> SnapshotService::TakeInstalled() {
  std::optional<paxos::AppliedSnapshot> out = std::move(installed_);
  installed_.reset();
  return out;
}

}  // namespace ordo::broker
