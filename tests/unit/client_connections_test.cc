// ClientConnections with real ZeroMQ sockets on 127.0.0.1: the per-key
// limit binds each connection (its descriptor, ZMQ_SRCFD) to the key of its
// first frame and frees the place at its disconnect; a connection past the
// limit, and one that never sends, are closed by the broker side.
#include "broker/client_connections.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/testing/ports.h"

namespace ordo::broker {
namespace {

using namespace std::chrono_literals;
using Clock = ClientConnections::Clock;

// Waits (generously) until `done`, sweeping meanwhile.
bool Eventually(ClientConnections& c, const std::function<bool()>& done) {
  for (const auto deadline = Clock::now() + 20s; Clock::now() < deadline;) {
    c.Sweep(Clock::now());
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

struct Endpoint {
  zmq::context_t ctx;
  zmq::socket_t router{ctx, zmq::socket_type::router};
  std::unique_ptr<ClientConnections> connections;
  std::string address = "tcp://" + ordo::testing::ReserveEndpoint();

  explicit Endpoint(const ClientConnections::Options& options) {
    router.set(zmq::sockopt::linger, 0);
    EXPECT_TRUE(ClientConnections::Attach(ctx, router, &connections, options).ok());
    router.bind(address);
  }
  std::vector<zmq::socket_t> silent;  // connected, never sending

  zmq::socket_t Dealer() {
    zmq::socket_t d(ctx, zmq::socket_type::dealer);
    d.set(zmq::sockopt::linger, 0);
    d.connect(address);
    return d;
  }
  // Receives one [identity][frame] and returns whether the connection it
  // came on may go on under key `key` (as ClientService does for each frame).
  bool Frame(std::string_view key) {
    zmq::message_t identity, frame;
    for (const auto deadline = Clock::now() + 20s; Clock::now() < deadline;) {
      connections->Sweep(Clock::now());
      if (router.recv(identity, zmq::recv_flags::dontwait)) {
        (void)router.recv(frame, zmq::recv_flags::none);
        return connections->OnFrame(zmq_msg_get(frame.handle(), ZMQ_SRCFD), key);
      }
      std::this_thread::sleep_for(2ms);
    }
    ADD_FAILURE() << "no frame arrived";
    return false;
  }
};

// A new connection that has not spoken, asked about at its handshake as the
// ZAP handler does; the dealer stays open (in `e.silent`).
bool AdmitNew(Endpoint& e, const char* key) {
  const uint64_t before = e.connections->Count();
  e.silent.push_back(e.Dealer());
  EXPECT_TRUE(Eventually(*e.connections, [&] { return e.connections->Count() > before; }));
  return e.connections->Admit(key, Clock::now());
}

TEST(ClientConnections, AKeyHoldsAtMostItsLimitAndAClosedConnectionFreesItsPlace) {
  ClientConnections::Options options;
  options.per_key_max = 2;
  Endpoint e(options);
  zmq::socket_t a = e.Dealer(), b = e.Dealer(), c = e.Dealer();
  a.send(zmq::str_buffer("a"));
  EXPECT_TRUE(e.Frame("K"));
  b.send(zmq::str_buffer("b"));
  EXPECT_TRUE(e.Frame("K"));
  EXPECT_EQ(e.connections->bound("K"), 2u);
  // Another key has places of its own.
  zmq::socket_t other = e.Dealer();
  other.send(zmq::str_buffer("o"));
  EXPECT_TRUE(e.Frame("L"));
  // The third with K is past the limit: refused, then closed by us.
  zmq_socket_monitor(c.handle(), "inproc://c-events", ZMQ_EVENT_DISCONNECTED);
  zmq::socket_t c_events(e.ctx, zmq::socket_type::pair);
  c_events.connect("inproc://c-events");
  c.send(zmq::str_buffer("c"));
  EXPECT_FALSE(e.Frame("K"));
  EXPECT_EQ(e.connections->closed_over_limit(), 1u);
  zmq::message_t disconnected;
  const bool closed = Eventually(*e.connections, [&] {
    return c_events.recv(disconnected, zmq::recv_flags::dontwait).has_value();
  });
  ASSERT_TRUE(closed) << "the connection past the limit was never closed";
  EXPECT_EQ(e.connections->bound("K"), 2u);
  // Handshakes are let in up to twice the limit (bound + admitted and not
  // yet heard from), so that those past it hear why at their first request.
  // ZAP asks during a connection's handshake: each admission is of a
  // connection that is open and has not spoken yet.
  EXPECT_TRUE(AdmitNew(e, "K"));
  EXPECT_TRUE(AdmitNew(e, "K"));
  EXPECT_FALSE(AdmitNew(e, "K"));
  EXPECT_TRUE(AdmitNew(e, "L"));
  // One of K's connections goes: its place is free once its disconnect is seen.
  a.close();
  ASSERT_TRUE(Eventually(*e.connections, [&] { return e.connections->bound("K") == 1; }));
  EXPECT_TRUE(AdmitNew(e, "K"));
  EXPECT_FALSE(AdmitNew(e, "K"));
  zmq::socket_t d = e.Dealer();
  d.send(zmq::str_buffer("d"));
  EXPECT_TRUE(e.Frame("K"));
  EXPECT_EQ(e.connections->bound("K"), 2u);
  zmq::socket_t f = e.Dealer();
  f.send(zmq::str_buffer("f"));
  EXPECT_FALSE(e.Frame("K"));
}

// A client that goes before its first request (it gave up, or ZeroMQ
// reconnected a socket it no longer used) leaves an admission no frame will
// ever claim. Such admissions must not add up and lock the key out of a
// broker where it holds no connection at all.
TEST(ClientConnections, AdmittedConnectionsThatCloseUnheardDoNotLockTheKeyOut) {
  ClientConnections::Options options;
  options.per_key_max = 1;  // handshakes admitted while bound + waiting < 2
  Endpoint e(options);
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(AdmitNew(e, "K")) << "admission " << i;
    e.silent.clear();  // closed before it sent anything
    ASSERT_TRUE(Eventually(*e.connections, [&] { return e.connections->Count() == 0; }));
  }
  // The key still gets in, and is bound at its first frame.
  zmq::socket_t d = e.Dealer();
  d.send(zmq::str_buffer("d"));
  EXPECT_TRUE(e.Frame("K"));
  EXPECT_EQ(e.connections->bound("K"), 1u);
}

TEST(ClientConnections, AConnectionThatNeverSendsIsClosedAndPlaintextHasNoLimit) {
  ClientConnections::Options options;
  options.per_key_max = 1;
  options.silent_max = 300ms;
  Endpoint e(options);
  zmq::socket_t silent = e.Dealer();
  ASSERT_TRUE(Eventually(*e.connections, [&] { return e.connections->closed_silent() >= 1; }));
  // Plaintext (no key): any number of connections, none closed.
  zmq::socket_t p1 = e.Dealer(), p2 = e.Dealer();
  p1.send(zmq::str_buffer("1"));
  EXPECT_TRUE(e.Frame(""));
  p2.send(zmq::str_buffer("2"));
  EXPECT_TRUE(e.Frame(""));
  EXPECT_EQ(e.connections->closed_over_limit(), 0u);
  // The silent one is still closed each time ZeroMQ reconnects it; the
  // two that spoke stay open.
  const uint64_t silent_closed = e.connections->closed_silent();
  ASSERT_TRUE(
      Eventually(*e.connections, [&] { return e.connections->closed_silent() > silent_closed; }));
  EXPECT_GE(e.connections->Count(), 2u);
  p1.send(zmq::str_buffer("3"));
  EXPECT_TRUE(e.Frame(""));
}

}  // namespace
}  // namespace ordo::broker
