// Ports for brokers (and Prometheus servers) that tests and benchmarks start,
// free of races with each other under `ctest -j`.
//
// Why not "bind port 0, read the number, close, hand it on": between the
// close and the broker's own bind the kernel may hand the same number to
// another test doing the same, or use it as the source port of any outgoing
// TCP connection (those come from the ephemeral range, which is where port
// 0 binds come from too). Both happened: a learner's metrics endpoint found
// its port taken.
//
// Instead, ports come from below the kernel's ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range), so no outgoing connection ever
// takes one, in aligned blocks of kBlockPorts, each reserved by an exclusive
// flock on /tmp/ordo-test-ports/block-B.lock (B = first port / kBlockPorts)
// for as long as the reserving process lives: the kernel releases the lock
// when it exits, however it exits. A block whose ports another program
// holds is skipped (each port is test-bound first). tests/integration/
// cluster_script_test.sh takes the same locks with flock(1).
//
// Thread rules: ReservePort may be called from any thread.
#pragma once

#include <string>

namespace ordo::testing {

inline constexpr int kBlockPorts = 16;
inline constexpr const char* kPortLockDir = "/tmp/ordo-test-ports";

// A port on 127.0.0.1 that no other user of this scheme will get while this
// process lives, and that was bindable when reserved. Throws
// std::runtime_error when every block is taken.
int ReservePort();

// "127.0.0.1:PORT" for a fresh ReservePort().
std::string ReserveEndpoint();

}  // namespace ordo::testing
