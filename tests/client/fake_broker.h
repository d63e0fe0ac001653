// A scripted stand-in for a broker's client endpoint, for unit tests of the
// client library: a ZeroMQ ROUTER on 127.0.0.1 (ephemeral port) served by
// one thread that decodes every request, records it, and hands it to the
// test's handler, which answers with frames built by the helpers below (or
// with garbage, or not at all).
//
// Thread rules: the handler runs on the broker's thread, and Send must only
// be called from the handler. requests() may be called from any thread.
// The destructor stops and joins the thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "base/chain.h"
#include "schemas/client_generated.h"

namespace ordo::testing {

// One decoded request, copied out of its frame.
struct Request {
  std::string routing_id;  // the ROUTER's id of the sending DEALER
  uint64_t request_id = 0;
  wire::Body body = wire::Body::NONE;
  // Publish
  struct Message {
    uint64_t producer = 0;
    uint64_t sequence = 0;
    bool has_key = false;
    std::string key;
    std::string payload;
  };
  std::vector<Message> messages;
  // Subscribe, Credit (credit), Fetch (from_offset, max_messages)
  uint64_t from_offset = 0;
  bool from_latest = false;
  bool from_earliest = false;
  uint32_t credit = 0;
  uint32_t max_messages = 0;

  std::vector<uint64_t> Sequences() const;
};

class FakeBroker {
 public:
  using Handler = std::function<void(const Request&, FakeBroker&)>;

  explicit FakeBroker(Handler handler);
  ~FakeBroker();
  FakeBroker(const FakeBroker&) = delete;
  FakeBroker& operator=(const FakeBroker&) = delete;

  // "127.0.0.1:PORT", the form ClientOptions::brokers takes.
  const std::string& endpoint() const { return endpoint_; }

  // Sends one single-part frame to the client that sent `to`.
  void Send(const Request& to, const std::string& frame);
  // Sends a message of several parts (the protocol allows one).
  void SendMultipart(const Request& to, const std::vector<std::string>& parts);

  // Every request received so far, in arrival order.
  std::vector<Request> requests() const;
  // Those of one body type.
  std::vector<Request> requests(wire::Body body) const;
  // Frames the broker could not decode (the client never sends any).
  int undecodable() const { return undecodable_.load(); }

 private:
  void Run();

  Handler handler_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> undecodable_{0};
  mutable std::mutex mutex_;
  std::vector<Request> requests_;  // guarded by mutex_
  std::thread thread_;
};

// --- Frames a broker sends (each one ClientEnvelope buffer, "ORDC") ---

struct ResultSpec {
  uint64_t sequence = 0;
  uint64_t offset = 0;
  wire::ErrorCode error = wire::ErrorCode::None;
};
std::string PublishReplyFrame(uint64_t request_id, const std::vector<ResultSpec>& results);
// Acknowledges every message of a Publish, message i at `first_offset + i`.
std::string AckAll(const Request& publish, uint64_t first_offset);

std::string ErrorFrame(uint64_t request_id, wire::ErrorCode code, const std::string& message,
                       const std::string& leader_endpoint = "", uint64_t earliest_offset = 0);

struct StreamRecord {
  uint64_t offset = 0;
  uint64_t producer = 7;
  uint64_t sequence = 0;
  std::string key;
  std::string payload;
};
// Record `offset` of the test stream: payload "m<offset>", key "k<offset>".
StreamRecord TestRecord(uint64_t offset);
// A Deliver of `records`, with the chain point of each: the fake's stream
// has one instance per offset, and its chain is that of the test records
// (TestChainAt), so a record other than TestRecord(offset) fails the chain.
std::string DeliverFrame(uint64_t request_id, const std::vector<StreamRecord>& records,
                         uint64_t head_offset);
// The fake stream's chain at `offset` (over TestRecord(0 .. offset - 1)).
ChainValue TestChainAt(uint64_t offset);
// Records [first, end) of the test stream.
std::string DeliverRange(uint64_t request_id, uint64_t first, uint64_t end, uint64_t head_offset);
// A hostile Deliver: `count` messages at first, first + 1, ... that all
// point at one payload of `payload_bytes` (FlatBuffers lets offsets share
// it), so that they add up to far more than the frame.
std::string SharedPayloadDeliverFrame(uint64_t request_id, uint64_t first, size_t count,
                                      size_t payload_bytes, uint64_t head_offset);

struct StatusSpec {
  uint32_t node_id = 0;
  std::string role;
  uint32_t leader_id = 0;
  std::string leader_endpoint;
  uint64_t ballot_round = 0;
  uint32_t ballot_node = 0;
  uint64_t chosen = 0;
  uint64_t last_instance = 0;
  uint64_t next_offset = 0;
  uint64_t earliest_offset = 0;
  struct Peer {
    uint32_t node_id = 0;
    uint64_t chosen = 0;
    uint64_t lag_instances = 0;
    uint64_t last_heard_ms = 0;
  };
  std::vector<Peer> peers;
  uint64_t storage_corruptions = 0;
  uint64_t frames_rejected = 0;
};
std::string StatusReplyFrame(uint64_t request_id, const StatusSpec& status);

// An envelope with any version and body, for malformed-but-verifiable frames.
std::string EnvelopeFrame(uint64_t request_id, uint16_t version);

}  // namespace ordo::testing
