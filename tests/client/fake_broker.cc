#include "tests/client/fake_broker.h"

#include <flatbuffers/flatbuffers.h>

#include <mutex>
#include <utility>

#include "base/chain.h"

namespace ordo::testing {
namespace {

namespace fb = flatbuffers;

// How long the serving thread waits for a frame before checking stop_.
constexpr long kPollMs = 5;

std::string Finish(fb::FlatBufferBuilder& builder, uint64_t request_id, wire::Body type,
                   fb::Offset<void> body, uint16_t version = 1) {
  const auto envelope = wire::CreateClientEnvelope(builder, version, request_id, type, body);
  wire::FinishClientEnvelopeBuffer(builder, envelope);
  return std::string(reinterpret_cast<const char*>(builder.GetBufferPointer()), builder.GetSize());
}

fb::Offset<fb::Vector<uint8_t>> Bytes(fb::FlatBufferBuilder& builder, const std::string& s) {
  return builder.CreateVector(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

// Decodes a request frame into *request. False if it is not a valid
// ClientEnvelope.
bool Decode(const zmq::message_t& frame, Request* request) {
  // Copy: zmq may hand out unaligned data, FlatBuffers needs it aligned.
  std::vector<uint8_t> bytes(static_cast<const uint8_t*>(frame.data()),
                             static_cast<const uint8_t*>(frame.data()) + frame.size());
  fb::Verifier verifier(bytes.data(), bytes.size());
  if (!wire::VerifyClientEnvelopeBuffer(verifier)) return false;
  const wire::ClientEnvelope* envelope = wire::GetClientEnvelope(bytes.data());
  request->request_id = envelope->request_id();
  request->body = envelope->body_type();
  if (const auto* publish = envelope->body_as_Publish()) {
    if (publish->messages() != nullptr) {
      for (const wire::ClientMessage* m : *publish->messages()) {
        Request::Message message;
        message.producer = m->producer();
        message.sequence = m->sequence();
        message.has_key = m->key() != nullptr;
        if (m->key() != nullptr) {
          message.key.assign(reinterpret_cast<const char*>(m->key()->data()), m->key()->size());
        }
        if (m->payload() != nullptr) {
          message.payload.assign(reinterpret_cast<const char*>(m->payload()->data()),
                                 m->payload()->size());
        }
        request->messages.push_back(std::move(message));
      }
    }
  } else if (const auto* subscribe = envelope->body_as_Subscribe()) {
    request->from_offset = subscribe->from_offset();
    request->from_latest = subscribe->from_latest();
    request->from_earliest = subscribe->from_earliest();
    request->credit = subscribe->credit();
  } else if (const auto* credit = envelope->body_as_Credit()) {
    request->credit = credit->credit();
  } else if (const auto* fetch = envelope->body_as_Fetch()) {
    request->from_offset = fetch->from_offset();
    request->max_messages = fetch->max_messages();
  }
  return true;
}

}  // namespace

std::vector<uint64_t> Request::Sequences() const {
  std::vector<uint64_t> sequences;
  for (const Message& message : messages) sequences.push_back(message.sequence);
  return sequences;
}

FakeBroker::FakeBroker(Handler handler)
    : handler_(std::move(handler)), context_(1), socket_(context_, zmq::socket_type::router) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::sndhwm, 0);
  socket_.set(zmq::sockopt::rcvhwm, 0);
  socket_.bind("tcp://127.0.0.1:*");
  const std::string bound = socket_.get(zmq::sockopt::last_endpoint);  // "tcp://127.0.0.1:N"
  endpoint_ = bound.substr(bound.find("://") + 3);
  thread_ = std::thread([this] { Run(); });
}

FakeBroker::~FakeBroker() {
  stop_.store(true);
  thread_.join();
}

void FakeBroker::Run() {
  while (!stop_.load()) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(kPollMs));
    if ((item.revents & ZMQ_POLLIN) == 0) continue;
    std::vector<zmq::message_t> parts;
    while (true) {
      zmq::message_t part;
      if (!socket_.recv(part, zmq::recv_flags::dontwait)) break;
      const bool more = part.more();
      parts.push_back(std::move(part));
      if (!more) break;
    }
    Request request;
    if (parts.size() != 2 || !Decode(parts[1], &request)) {
      ++undecodable_;
      continue;
    }
    request.routing_id = parts[0].to_string();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      requests_.push_back(request);
    }
    if (handler_) handler_(request, *this);
  }
}

void FakeBroker::Send(const Request& to, const std::string& frame) { SendMultipart(to, {frame}); }

void FakeBroker::SendMultipart(const Request& to, const std::vector<std::string>& parts) {
  socket_.send(zmq::buffer(to.routing_id), zmq::send_flags::sndmore);
  for (size_t i = 0; i < parts.size(); ++i) {
    socket_.send(zmq::buffer(parts[i]),
                 i + 1 < parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
  }
}

std::vector<Request> FakeBroker::requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return requests_;
}

std::vector<Request> FakeBroker::requests(wire::Body body) const {
  std::vector<Request> matching;
  for (Request& request : requests()) {
    if (request.body == body) matching.push_back(std::move(request));
  }
  return matching;
}

std::string PublishReplyFrame(uint64_t request_id, const std::vector<ResultSpec>& results) {
  fb::FlatBufferBuilder builder;
  std::vector<fb::Offset<wire::PublishResult>> offsets;
  for (const ResultSpec& r : results) {
    offsets.push_back(wire::CreatePublishResult(builder, r.sequence, r.offset, r.error));
  }
  const auto reply = wire::CreatePublishReply(builder, builder.CreateVector(offsets));
  return Finish(builder, request_id, wire::Body::PublishReply, reply.Union());
}

std::string AckAll(const Request& publish, uint64_t first_offset) {
  std::vector<ResultSpec> results;
  for (size_t i = 0; i < publish.messages.size(); ++i) {
    results.push_back({publish.messages[i].sequence, first_offset + i, wire::ErrorCode::None});
  }
  return PublishReplyFrame(publish.request_id, results);
}

std::string ErrorFrame(uint64_t request_id, wire::ErrorCode code, const std::string& message,
                       const std::string& leader_endpoint, uint64_t earliest_offset) {
  fb::FlatBufferBuilder builder;
  const auto error = wire::CreateError(
      builder, code, builder.CreateString(message),
      leader_endpoint.empty() ? 0 : builder.CreateString(leader_endpoint), earliest_offset);
  return Finish(builder, request_id, wire::Body::Error, error.Union());
}

StreamRecord TestRecord(uint64_t offset) {
  return StreamRecord{offset, 7, offset + 1, "k" + std::to_string(offset),
                      "m" + std::to_string(offset)};
}

ChainValue ChainStepOf(const ChainValue& before, const StreamRecord& r) {
  ChainStep step(before, r.offset + 1, r.offset, 1);
  step.Add(r.producer, r.sequence, r.key, r.payload);
  return step.Finish();
}

ChainValue TestChainAt(uint64_t offset) {
  static std::mutex mu;
  static std::vector<ChainValue> chain{ChainValue{}};  // chain[o]: the chain at offset o
  std::lock_guard<std::mutex> lock(mu);
  while (chain.size() <= offset) {
    const uint64_t o = chain.size() - 1;
    chain.push_back(ChainStepOf(chain.back(), TestRecord(o)));
  }
  return chain[offset];
}

std::string DeliverFrame(uint64_t request_id, const std::vector<StreamRecord>& records,
                         uint64_t head_offset) {
  fb::FlatBufferBuilder builder;
  std::vector<fb::Offset<wire::StreamMessage>> messages;
  std::vector<fb::Offset<wire::ChainPoint>> points;
  for (const StreamRecord& r : records) {
    messages.push_back(wire::CreateStreamMessage(builder, r.offset, r.producer, r.sequence,
                                                 r.key.empty() ? 0 : Bytes(builder, r.key),
                                                 Bytes(builder, r.payload)));
    // The test stream's chain: one instance per offset (instance offset + 1),
    // each step from the chain of the test records before it, so a record
    // other than TestRecord(offset) breaks the chain.
    const ChainValue before = TestChainAt(r.offset);
    const ChainValue after = ChainStepOf(before, r);
    points.push_back(wire::CreateChainPoint(builder, r.offset + 1, r.offset, 1,
                                            builder.CreateVector(before.bytes.data(), 32),
                                            builder.CreateVector(after.bytes.data(), 32)));
  }
  const auto deliver = wire::CreateDeliver(builder, builder.CreateVector(messages), head_offset,
                                           records.empty() ? 0 : builder.CreateVector(points));
  return Finish(builder, request_id, wire::Body::Deliver, deliver.Union());
}

std::string DeliverRange(uint64_t request_id, uint64_t first, uint64_t end, uint64_t head_offset) {
  std::vector<StreamRecord> records;
  for (uint64_t offset = first; offset < end; ++offset) records.push_back(TestRecord(offset));
  return DeliverFrame(request_id, records, head_offset);
}

std::string SharedPayloadDeliverFrame(uint64_t request_id, uint64_t first, size_t count,
                                      size_t payload_bytes, uint64_t head_offset) {
  fb::FlatBufferBuilder builder;
  const auto payload = Bytes(builder, std::string(payload_bytes, 'p'));
  std::vector<fb::Offset<wire::StreamMessage>> messages;
  for (size_t i = 0; i < count; ++i) {
    messages.push_back(wire::CreateStreamMessage(builder, first + i, 7, first + i + 1, 0, payload));
  }
  const auto deliver = wire::CreateDeliver(builder, builder.CreateVector(messages), head_offset);
  return Finish(builder, request_id, wire::Body::Deliver, deliver.Union());
}

std::string StatusReplyFrame(uint64_t request_id, const StatusSpec& s) {
  fb::FlatBufferBuilder builder;
  std::vector<fb::Offset<wire::PeerStatus>> peers;
  for (const StatusSpec::Peer& p : s.peers) {
    peers.push_back(
        wire::CreatePeerStatus(builder, p.node_id, p.chosen, p.lag_instances, p.last_heard_ms));
  }
  const wire::Ballot ballot(s.ballot_round, s.ballot_node);
  const wire::Ballot promised(s.ballot_round + 1, s.ballot_node);
  const auto reply = wire::CreateStatusReply(
      builder, s.node_id, builder.CreateString(s.role), s.leader_id,
      builder.CreateString(s.leader_endpoint), &ballot, &promised, s.chosen, s.last_instance,
      s.next_offset, s.earliest_offset, builder.CreateVector(peers), s.storage_corruptions,
      s.frames_rejected);
  return Finish(builder, request_id, wire::Body::StatusReply, reply.Union());
}

std::string EnvelopeFrame(uint64_t request_id, uint16_t version) {
  fb::FlatBufferBuilder builder;
  const auto reply = wire::CreatePublishReply(builder);
  return Finish(builder, request_id, wire::Body::PublishReply, reply.Union(), version);
}

}  // namespace ordo::testing
