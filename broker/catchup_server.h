// Serves Fetch requests (a peer or a learner catching up) from the store on a
// thread of its own.
//
// Why: a peer pulling a long log asks for megabytes per request; reading,
// checking and encoding them on the event loop held it for hundreds of ms
// per turn (measured: 6 fetches, 1.4 s), so the leader missed heartbeats and
// a large catch-up caused elections. The core decides what a reply says
// (paxos::Config::host_serves_fetch); this thread adds the stored entries
// as they are (codec's FetchReplyEncoder: one copy of the value bytes, no
// decoding) and hands the finished frame back to the loop, which sends it.
//
// Thread rules: Submit, socket and Drain run on the loop thread; the server
// reads the store only through its own LMDB read transactions.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <zmq.hpp>

#include "broker/lmdb_store.h"
#include "broker/status.h"
#include "paxos/replica.h"

namespace ordo::broker {

class CatchUpServer {
 public:
  struct Limits {
    size_t entries_max = 256;      // per reply (paxos::Config::fetch_entries_max)
    uint64_t bytes_max = 4 << 20;  // per reply, of stored records (fetch_bytes_max)
    size_t queued_max = 16;        // requests waiting; more are dropped
  };
  CatchUpServer(zmq::context_t& context, const LmdbStore& store, Limits limits);
  ~CatchUpServer();  // stops the thread; replies not yet sent are dropped
  CatchUpServer(const CatchUpServer&) = delete;
  CatchUpServer& operator=(const CatchUpServer&) = delete;

  Status Start();
  // Queues a fetch whose entries are durable (the Ready that produced it is
  // persisted). False when the queue is full: the fetch is dropped, and the
  // asker asks again after its fetch timeout.
  bool Submit(paxos::FetchToServe fetch);
  // Readable when a reply is ready for Drain.
  zmq::socket_t& socket() { return loop_side_; }
  // Hands over what is ready: each reply frame to send(to, frame), and each
  // stored record that failed its check to unreadable(instance, what).
  using SendFn = std::function<void(uint32_t to, zmq::message_t frame)>;
  using UnreadableFn = std::function<void(paxos::Instance instance, const std::string& what)>;
  void Drain(const SendFn& send, const UnreadableFn& unreadable);

  uint64_t dropped() const { return dropped_; }

 private:
  void Run();
  void Serve(const paxos::FetchToServe& fetch);

  const LmdbStore& store_;
  const Limits limits_;
  zmq::socket_t loop_side_;    // the loop thread's end of an inproc pair
  zmq::socket_t server_side_;  // the server thread's end
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<paxos::FetchToServe> queue_;  // guarded by mu_
  bool stop_ = false;                      // guarded by mu_
  std::thread thread_;
  uint64_t dropped_ = 0;  // loop thread only
};

}  // namespace ordo::broker
