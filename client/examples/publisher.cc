// A small publisher to copy: publishes each command-line argument and prints
// its offset. Build: it is built as build/ordo-example-publisher.
//
//   build/ordo-example-publisher 127.0.0.1:7201,127.0.0.1:7202 hello world
#include <cstdio>

#include "ordo/client.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s BROKERS MESSAGE...\n", argv[0]);
    return 2;
  }
  ordo::ClientOptions options;
  options.brokers = ordo::ParseBrokerList(argv[1]);  // any broker finds the leader
  ordo::Publisher publisher(options);                // random producer id: exactly-once retries
  std::vector<ordo::OutgoingMessage> batch;
  for (int i = 2; i < argc; ++i) batch.push_back({/*key=*/"", argv[i]});
  auto offsets = publisher.PublishBatch(batch);     // returns once durable on a majority
  if (!offsets.ok()) {
    std::fprintf(stderr, "publish failed: %s\n", offsets.error().message.c_str());
    return 1;
  }
  for (uint64_t o : offsets.value()) std::printf("%lu\n", static_cast<unsigned long>(o));
  return 0;
}
