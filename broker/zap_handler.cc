#include "broker/zap_handler.h"

#include <spdlog/spdlog.h>

namespace ordo::broker {

namespace {
constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
// A request: version, request id, domain, address, routing id, mechanism,
// then the mechanism's credentials (CURVE: the client's 32-byte public key).
constexpr size_t kRequestParts = 7;
}  // namespace

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
    std::vector<zmq::message_t> parts;
    try {
      zmq::message_t part;
      if (!socket_.recv(part, zmq::recv_flags::dontwait)) return;
      parts.push_back(std::move(part));
      while (parts.back().more()) {
        zmq::message_t next;
        (void)socket_.recv(next, zmq::recv_flags::none);
        parts.push_back(std::move(next));
      }
    } catch (const zmq::error_t&) {
      return;  // the context is terminating
    }
    // A REP socket must answer every request it took, or it takes no more.
    std::string status = "500";
    std::string text = "malformed ZAP request";
    std::string user_id;
    std::string domain;
    if (parts.size() == kRequestParts && parts[0].to_string_view() == "1.0" &&
        parts[5].to_string_view() == "CURVE" && parts[6].size() == 32) {
      domain = parts[2].to_string();
      char key[41] = {};
      zmq_z85_encode(key, static_cast<const uint8_t*>(parts[6].data()), 32);
      if (decide_(domain, key)) {
        status = "200";
        text = "OK";
        user_id = key;
      } else {
        status = "400";
        text = "not a known key";
      }
    }
    if (status != "200") {
      ++refused_[domain];
      spdlog::debug("handshake refused ({}): domain '{}'", text, domain);
    }
    const std::string request_id = parts.size() > 1 ? parts[1].to_string() : std::string();
    try {
      socket_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(status), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(text), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(user_id), zmq::send_flags::sndmore);
      socket_.send(zmq::str_buffer(""), zmq::send_flags::none);  // no metadata
    } catch (const zmq::error_t&) {
      return;
    }
  }
}

}  // namespace ordo::broker
