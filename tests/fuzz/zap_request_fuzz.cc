// Fuzz target: the broker's reading of a ZAP request (ZeroMQ RFC 27), the
// message libzmq sends its ZAP handler for every CurveZMQ handshake on the
// peer and client endpoints (broker/zap_handler.h: ParseZapRequest, which
// ZapHandler::Drain calls on each request), and the replies it makes of
// the answer (MakeZapReply, MalformedZapReply).
//
// Input: the request's parts (ZeroMQ frames), each as one length byte N
// followed by N bytes; a last part with fewer than N bytes left is what
// remains. So "\x031.0\x011" is the two parts "1.0" and "1", and an empty
// input is a request of no parts. (Parts are short in a ZAP request: the
// key is 32 bytes; a longer part is reachable as the last one.)
//
// Properties: a request parses exactly when it has 7 parts, version "1.0",
// mechanism "CURVE" and a 32-byte key, and a refusal has a message; a
// parsed request keeps its request id, domain and address as they were
// sent, and its key is 40 characters of Z85 that decode (zmq_z85_decode)
// back to the 32 bytes of the request. Every reply has a status of 3 digits
// among 200, 300, 400 and 500, a text, and a user id only with 200 (the
// key); a malformed request gets 500.
#include <zmq.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "broker/zap_handler.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

using broker::ZapAnswer;
using broker::ZapReply;
using broker::ZapRequest;

constexpr size_t kKeyBytes = 32;
constexpr size_t kPartBytesMax = 255;  // one length byte

// The input's parts (see the header comment), as views into it.
std::vector<std::string_view> SplitParts(std::string_view input) {
  std::vector<std::string_view> parts;
  while (!input.empty()) {
    const size_t n = static_cast<uint8_t>(input[0]);
    input.remove_prefix(1);
    const size_t taken = std::min(n, input.size());
    parts.push_back(input.substr(0, taken));
    input.remove_prefix(taken);
  }
  return parts;
}

// Parts in the input's encoding; each at most kPartBytesMax bytes.
std::string JoinParts(const std::vector<std::string>& parts) {
  std::string out;
  for (const std::string& part : parts) {
    ORDO_FUZZ_CHECK(part.size() <= kPartBytesMax);
    out.push_back(static_cast<char>(part.size()));
    out += part;
  }
  return out;
}

void CheckReply(const ZapReply& reply, std::string_view key) {
  ORDO_FUZZ_CHECK(reply.status == "200" || reply.status == "300" || reply.status == "400" ||
                  reply.status == "500");
  ORDO_FUZZ_CHECK(!reply.text.empty());
  if (reply.status == "200") {
    ORDO_FUZZ_CHECK(reply.user_id == key);
  } else {
    ORDO_FUZZ_CHECK(reply.user_id.empty());
  }
}

void CheckRequest(const ZapRequest& request, std::span<const std::string_view> parts) {
  ORDO_FUZZ_CHECK(request.request_id == parts[1]);
  ORDO_FUZZ_CHECK(request.domain == parts[2]);
  ORDO_FUZZ_CHECK(request.address == parts[3]);
  // Z85: 5 characters per 4 bytes, nothing past the 40th (zmq_z85_decode
  // reads up to the terminator).
  ORDO_FUZZ_CHECK(request.public_key.size() == 40);
  ORDO_FUZZ_CHECK(std::strlen(request.public_key.c_str()) == 40);
  uint8_t decoded[kKeyBytes];
  ORDO_FUZZ_CHECK(zmq_z85_decode(decoded, request.public_key.c_str()) != nullptr);
  ORDO_FUZZ_CHECK(std::memcmp(decoded, parts[6].data(), kKeyBytes) == 0);

  const ZapReply allow = broker::MakeZapReply(ZapAnswer::kAllow, request.public_key);
  CheckReply(allow, request.public_key);
  ORDO_FUZZ_CHECK(allow.status == "200");
  const ZapReply unknown = broker::MakeZapReply(ZapAnswer::kUnknownKey, request.public_key);
  CheckReply(unknown, request.public_key);
  ORDO_FUZZ_CHECK(unknown.status == "400");
  const ZapReply busy = broker::MakeZapReply(ZapAnswer::kTooManyConnections, request.public_key);
  CheckReply(busy, request.public_key);
  ORDO_FUZZ_CHECK(busy.status == "400");  // (zap_handler.h says why not 300)
}

// A client's public key (32 bytes) from its Z85 text.
std::string Key(const char* z85) {
  std::string key(kKeyBytes, '\0');
  ORDO_FUZZ_CHECK(zmq_z85_decode(reinterpret_cast<uint8_t*>(key.data()), z85) != nullptr);
  return key;
}

// A request as libzmq's ZAP client lays it out (zap_client_t::
// send_zap_request): version, request id (libzmq sends "1"), domain (the
// socket's ZMQ_ZAP_DOMAIN), the peer's IP address, its routing id (empty
// unless it set one), mechanism, then the mechanism's credentials.
std::string Request(std::string_view domain, std::string_view address, std::string_view routing_id,
                    const std::string& key, std::string_view mechanism = "CURVE",
                    std::string_view version = "1.0") {
  return JoinParts({std::string(version), "1", std::string(domain), std::string(address),
                    std::string(routing_id), std::string(mechanism), key});
}

}  // namespace

std::vector<Seed> Seeds() {
  // Public keys as a key file holds them (Z85): two peers' and a client's.
  const std::string peer = Key("Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID");
  const std::string learner = Key("rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7");
  const std::string client = Key("oaU}vlG&Lz&]Z9zpp<+h^ky(lTBQY7!4rJyhk)SF");
  std::string all_bytes(kKeyBytes, '\0');
  for (size_t i = 0; i < kKeyBytes; ++i) all_bytes[i] = static_cast<char>(0xff - i * 7);
  return {
      {"peer", Request("ordo-peer", "10.0.0.2", "", peer)},
      {"peer-learner-ipv6", Request("ordo-peer", "::1", "", learner)},
      {"client", Request("ordo-client", "127.0.0.1", "", client)},
      {"client-routing-id", Request("ordo-client", "192.168.1.20", "worker-7", all_bytes)},
      {"malformed-plain",
       JoinParts({"1.0", "1", "ordo-client", "127.0.0.1", "", "PLAIN", "admin", "secret"})},
      {"malformed-version", Request("ordo-peer", "10.0.0.2", "", peer, "CURVE", "2.0")},
      {"malformed-short-key", Request("ordo-client", "127.0.0.1", "", client.substr(0, 31))},
      {"malformed-missing-key", JoinParts({"1.0", "1", "ordo-peer", "10.0.0.2", "", "CURVE"})},
  };
}

}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ordo;
  const std::vector<std::string_view> parts =
      fuzz::SplitParts({reinterpret_cast<const char*>(data), size});
  const StatusOr<broker::ZapRequest> request = broker::ParseZapRequest(parts);
  const bool well_formed = parts.size() == 7 && parts[0] == "1.0" && parts[5] == "CURVE" &&
                           parts[6].size() == fuzz::kKeyBytes;
  ORDO_FUZZ_CHECK(request.ok() == well_formed);
  if (request.ok()) {
    fuzz::CheckRequest(request.value(), parts);
  } else {
    const std::string why = request.status().message();  // status() is a copy
    ORDO_FUZZ_CHECK(!why.empty());
    const broker::ZapReply reply = broker::MalformedZapReply(why);
    fuzz::CheckReply(reply, "");
    ORDO_FUZZ_CHECK(reply.status == "500");
  }
  return 0;
}
