#include "tests/testing/ports.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <mutex>
#include <random>
#include <stdexcept>
#include <vector>

namespace ordo::testing {
namespace {

// Below this are ports that services on a developer's machine tend to use
// (and scripts/cluster's default 7100-7399).
constexpr int kLowestPort = 10240;
static_assert(kLowestPort % kBlockPorts == 0);

// The first port of the kernel's ephemeral range (outgoing connections'
// source ports, and port-0 binds), where no reserved port may lie.
int EphemeralLow() {
  std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 0, high = 0;
  if (f >> low >> high && low > kLowestPort + kBlockPorts) return low;
  return 32768;  // Linux's default
}

bool Bindable(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  // As ZeroMQ and civetweb bind: a port in TIME_WAIT is usable.
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

struct Reservations {
  std::mutex mutex;
  std::vector<int> lock_fds;  // held until the process exits
  int next = 0;               // the next port of the current block
  int end = 0;                // one past its last
  std::mt19937 rng{std::random_device{}()};

  // Locks block `b` for this process; false when another process holds it.
  bool Lock(int b) {
    ::mkdir(kPortLockDir, 0777);
    const std::string path = std::string(kPortLockDir) + "/block-" + std::to_string(b) + ".lock";
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) return false;
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);
      return false;
    }
    lock_fds.push_back(fd);
    return true;
  }
};

Reservations& State() {
  static Reservations* r = new Reservations();  // never destroyed: the locks last
  return *r;
}

}  // namespace

int ReservePort() {
  Reservations& r = State();
  std::lock_guard<std::mutex> lock(r.mutex);
  while (true) {
    while (r.next < r.end) {
      const int port = r.next++;
      if (Bindable(port)) return port;  // else another program has it: skip
    }
    const int first_block = kLowestPort / kBlockPorts;
    const int blocks = EphemeralLow() / kBlockPorts - first_block;
    // Start anywhere, so concurrent processes rarely contend for one lock.
    const int start = static_cast<int>(r.rng() % static_cast<unsigned>(blocks));
    bool locked = false;
    for (int i = 0; i < blocks && !locked; ++i) {
      const int b = first_block + (start + i) % blocks;
      if (r.Lock(b)) {
        r.next = b * kBlockPorts;
        r.end = r.next + kBlockPorts;
        locked = true;
      }
    }
    if (!locked) throw std::runtime_error("no free block of test ports in " + std::string(kPortLockDir));
  }
}

std::string ReserveEndpoint() { return "127.0.0.1:" + std::to_string(ReservePort()); }

}  // namespace ordo::testing
