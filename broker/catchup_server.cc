#include "broker/catchup_server.h"

#include <flatbuffers/flatbuffers.h>

#include <algorithm>
#include <cstring>

#include "broker/codec.h"

namespace ordo::broker {

namespace {
// The first part of a reply on the pair: who it is for, and the instance
// whose record failed its check (0: none); then the frame; then what failed.
struct ReplyHead {
  uint32_t to = 0;
  uint64_t unreadable = 0;
};
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
    zmq::message_t frame, what;
    // The three parts of a multipart message arrive together.
    (void)loop_side_.recv(frame);
    (void)loop_side_.recv(what);
    ReplyHead h;
    std::memcpy(&h, head.data(), std::min(head.size(), sizeof h));
    if (h.unreadable != 0) unreadable(paxos::Instance(h.unreadable), what.to_string());
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
  FetchReplyEncoder encoder(std::min<uint64_t>(limits_.bytes_max, 64 << 20));
  ReplyHead head{fetch.reply.to.value(), 0};
  std::string what;
  MDB_txn* txn = store_.BeginRead();
  uint64_t bytes = 0;
  for (paxos::Instance i = fetch.reply.instance; txn != nullptr && i <= fetch.last; i = i.next()) {
    if (encoder.entries() >= limits_.entries_max || bytes >= limits_.bytes_max) break;
    std::span<const uint8_t> record;
    const paxos::StoreCode code = store_.RawLogRecord(txn, i.value(), &record, &what);
    // Not found: truncated behind a snapshot since the core looked; the
    // asker learns the new first instance from the next reply.
    if (code == paxos::StoreCode::kNotFound) break;
    if (code != paxos::StoreCode::kOk) {
      head.unreadable = i.value();
      break;
    }
    size_t value_bytes = 0;
    if (const DecodeStatus d = encoder.Add(record, i, &value_bytes); !d.ok()) {
      // Never serve a record that fails its check; the core repairs it.
      head.unreadable = i.value();
      what = "log record for instance " + std::to_string(i.value()) + ": " + d.ToString();
      break;
    }
    bytes += value_bytes;
  }
  LmdbStore::EndRead(txn);
  std::unique_ptr<flatbuffers::DetachedBuffer> buffer = encoder.Finish(fetch.reply);
  zmq::message_t frame(
      buffer->data(), buffer->size(),
      [](void*, void* hint) { delete static_cast<flatbuffers::DetachedBuffer*>(hint); },
      buffer.get());
  buffer.release();  // owned by `frame` now
  try {
    server_side_.send(zmq::buffer(&head, sizeof head), zmq::send_flags::sndmore);
    server_side_.send(frame, zmq::send_flags::sndmore);
    server_side_.send(zmq::buffer(what), zmq::send_flags::none);
  } catch (const zmq::error_t&) {
    // The context is terminating: the broker is shutting down.
  }
}

}  // namespace ordo::broker
