#include "broker/catchup_server.h"

#include <flatbuffers/flatbuffers.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <utility>
#include <vector>

#include "base/tsan.h"
#include "broker/codec.h"

namespace ordo::broker {

namespace {
// The first part of a reply on the pair: who it is for (u32), and the
// instance whose record failed its check (u64, 0: none), packed in 12 bytes;
// then the frame; then what failed.
struct ReplyHead {
  uint32_t to = 0;
  uint64_t unreadable = 0;
};
constexpr size_t kReplyHeadBytes = 12;

void Pack(const ReplyHead& h, uint8_t out[kReplyHeadBytes]) {
  std::memcpy(out, &h.to, 4);
  std::memcpy(out + 4, &h.unreadable, 8);
}

ReplyHead Unpack(const zmq::message_t& m) {
  ReplyHead h;
  if (m.size() != kReplyHeadBytes) return h;
  std::memcpy(&h.to, m.data(), 4);
  std::memcpy(&h.unreadable, static_cast<const uint8_t*>(m.data()) + 4, 8);
  return h;
}
std::atomic<uint64_t> next_pair_id{0};
}  // namespace

CatchUpServer::CatchUpServer(zmq::context_t& context, const LmdbStore& store, Limits limits)
    : store_(store),
      limits_(limits),
      loop_side_(context, zmq::socket_type::pair),
      server_side_(context, zmq::socket_type::pair) {}

CatchUpServer::~CatchUpServer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Status CatchUpServer::Start() {
  const std::string address = "inproc://ordo-catchup-" + std::to_string(next_pair_id++);
  try {
    for (zmq::socket_t* s : {&loop_side_, &server_side_}) {
      s->set(zmq::sockopt::linger, 0);
      // Bounded by queued_max requests anyway; never drop a finished reply.
      s->set(zmq::sockopt::sndhwm, 0);
      s->set(zmq::sockopt::rcvhwm, 0);
    }
    loop_side_.bind(address);
    server_side_.connect(address);
  } catch (const zmq::error_t& e) {
    return Status::Error(std::string("catch-up server: ") + e.what());
  }
  thread_ = std::thread([this] { Run(); });
  return Status::Ok();
}

bool CatchUpServer::Submit(paxos::FetchToServe fetch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= limits_.queued_max) {
      ++dropped_;
      return false;
    }
    queue_.push_back(std::move(fetch));
  }
  cv_.notify_one();
  return true;
}

void CatchUpServer::Drain(const SendFn& send, const UnreadableFn& unreadable) {
  while (true) {
    zmq::message_t head;
    if (!loop_side_.recv(head, zmq::recv_flags::dontwait)) return;
    OrdoTsanAcquire(this);  // the frame was built on the server thread
    zmq::message_t frame, what;
    // The three parts of a multipart message arrive together.
    (void)loop_side_.recv(frame);
    (void)loop_side_.recv(what);
    const ReplyHead h = Unpack(head);
    if (h.unreadable != 0) {
      unreadable(paxos::Instance(h.unreadable), what.to_string());
    } else if (what.size() > 0) {
      spdlog::warn("serving a fetch: {}", what.to_string());  // the reply is cut short
    }
    send(h.to, std::move(frame));
  }
}

void CatchUpServer::Run() {
  while (true) {
    paxos::FetchToServe fetch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      fetch = std::move(queue_.front());
      queue_.pop_front();
    }
    Serve(fetch);
  }
}

void CatchUpServer::Serve(const paxos::FetchToServe& fetch) {
  ReplyHead head;
  head.to = fetch.reply.to.value();
  std::string what;
  ReadTxn txn = store_.BeginRead();
  if (!txn) what = "cannot begin an LMDB read transaction";
  // The records first (valid while the transaction lives): the reply is
  // then built in a buffer of the right size. Within the limits, and never
  // past bytes_max but for a first record larger than it, so the frame stays
  // within what the asker accepts.
  std::vector<std::pair<paxos::Instance, std::span<const uint8_t>>> records;
  uint64_t bytes = 0;
  for (paxos::Instance i = fetch.reply.instance; txn && i <= fetch.last; i = i.next()) {
    if (records.size() >= limits_.entries_max) break;
    std::span<const uint8_t> record;
    const paxos::StoreCode code = store_.RawLogRecord(txn, i.value(), &record, &what);
    // Not found: truncated behind a snapshot since the core looked; the
    // asker learns the new first instance from the next reply.
    if (code == paxos::StoreCode::kNotFound) break;
    if (code != paxos::StoreCode::kOk) {
      head.unreadable = i.value();
      break;
    }
    if (!records.empty() && bytes + record.size() > limits_.bytes_max) break;
    bytes += record.size();
    records.emplace_back(i, record);
  }
  FetchReplyEncoder encoder(bytes + 64 * records.size());
  for (const auto& [instance, record] : records) {
    size_t value_bytes = 0;
    if (const DecodeStatus d = encoder.Add(record, instance, &value_bytes); !d.ok()) {
      // Never serve a record that fails its check; the core repairs it.
      head.unreadable = instance.value();
      what = "log record for instance " + std::to_string(instance.value()) + ": " + d.ToString();
      break;
    }
  }
  txn.End();  // the records were copied into the reply
  std::unique_ptr<flatbuffers::DetachedBuffer> buffer = encoder.Finish(fetch.reply);
  zmq::message_t frame(
      buffer->data(), buffer->size(),
      [](void*, void* hint) { delete static_cast<flatbuffers::DetachedBuffer*>(hint); },
      buffer.get());
  buffer.release();  // owned by `frame` now
  try {
    uint8_t packed[kReplyHeadBytes];
    Pack(head, packed);
    OrdoTsanRelease(this);
    server_side_.send(zmq::buffer(packed, sizeof packed), zmq::send_flags::sndmore);
    server_side_.send(frame, zmq::send_flags::sndmore);
    server_side_.send(zmq::buffer(what), zmq::send_flags::none);
  } catch (const zmq::error_t&) {
    // The context is terminating: the broker is shutting down.
  }
}

}  // namespace ordo::broker
