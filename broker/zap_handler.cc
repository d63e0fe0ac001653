#include "broker/zap_handler.h"

#include <spdlog/spdlog.h>

namespace ordo::broker {

namespace {
constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
constexpr size_t kRequestParts = 7;
constexpr size_t kCurveKeyBytes = 32;
}  // namespace

StatusOr<ZapRequest> ParseZapRequest(std::span<const std::string_view> parts) {
  if (parts.size() != kRequestParts) {
    return Status::Error("a ZAP request has " + std::to_string(kRequestParts) + " parts, not " +
                         std::to_string(parts.size()));
  }
  if (parts[0] != "1.0") return Status::Error("not ZAP version 1.0");
  if (parts[5] != "CURVE") return Status::Error("not the CURVE mechanism");
  if (parts[6].size() != kCurveKeyBytes) return Status::Error("a CURVE key is 32 bytes");
  ZapRequest request;
  request.request_id = std::string(parts[1]);
  request.domain = std::string(parts[2]);
  request.address = std::string(parts[3]);
  char key[41] = {};
  zmq_z85_encode(key, reinterpret_cast<const uint8_t*>(parts[6].data()), kCurveKeyBytes);
  request.public_key = key;
  return request;
}

ZapReply MakeZapReply(ZapAnswer answer, std::string_view public_key) {
  switch (answer) {
    case ZapAnswer::kAllow:
      return {"200", "OK", std::string(public_key)};
    case ZapAnswer::kTooManyConnections:
      return {"400", "too many connections with this key", ""};
    case ZapAnswer::kUnknownKey:
      break;
  }
  return {"400", "not a known key", ""};
}

ZapReply MalformedZapReply(std::string_view why) {
  return {"500", "malformed ZAP request: " + std::string(why), ""};
}

Status ZapHandler::Start(zmq::context_t& context, Decide decide, std::unique_ptr<ZapHandler>* out) {
  try {
    zmq::socket_t socket(context, zmq::socket_type::rep);
    socket.set(zmq::sockopt::linger, 0);
    socket.bind(kZapEndpoint);
    out->reset(new ZapHandler(std::move(socket), std::move(decide)));
  } catch (const zmq::error_t& e) {
    return Status::Error(std::string("starting the ZAP handler: ") + e.what());
  }
  return Status::Ok();
}

void ZapHandler::AddPollItem(std::vector<zmq::pollitem_t>* items) {
  items->push_back({socket_.handle(), 0, ZMQ_POLLIN, 0});
}

void ZapHandler::Drain() {
  while (true) {
    std::vector<zmq::message_t> frames;
    try {
      zmq::message_t frame;
      if (!socket_.recv(frame, zmq::recv_flags::dontwait)) return;
      frames.push_back(std::move(frame));
      while (frames.back().more()) {
        zmq::message_t next;
        (void)socket_.recv(next, zmq::recv_flags::none);
        frames.push_back(std::move(next));
      }
    } catch (const zmq::error_t&) {
      return;  // the context is terminating
    }
    std::vector<std::string_view> parts;
    parts.reserve(frames.size());
    for (const zmq::message_t& f : frames) parts.push_back(f.to_string_view());
    // A REP socket must answer every request it took, or it takes no more.
    const StatusOr<ZapRequest> request = ParseZapRequest(parts);
    ZapReply reply;
    std::string domain;
    if (request.ok()) {
      domain = request.value().domain;
      reply = MakeZapReply(decide_(request.value()), request.value().public_key);
    } else {
      reply = MalformedZapReply(request.status().message());
    }
    if (reply.status != "200") {
      ++refused_[domain];
      spdlog::debug("handshake refused ({}): domain '{}'", reply.text, domain);
    }
    const std::string request_id = parts.size() > 1 ? std::string(parts[1]) : std::string();
    try {
      socket_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(reply.status), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(reply.text), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(reply.user_id), zmq::send_flags::sndmore);
      socket_.send(zmq::str_buffer(""), zmq::send_flags::none);  // no metadata
    } catch (const zmq::error_t&) {
      return;
    }
  }
}

}  // namespace ordo::broker
