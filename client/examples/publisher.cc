// A small publisher to copy: publishes each command-line argument without
// waiting, then prints the offsets in order once they are durable on a
// majority. Build: it is built as build/ordo-example-publisher.
//
//   build/ordo-example-publisher 127.0.0.1:7201,127.0.0.1:7202 hello world
//
// The client's CurveZMQ key file comes from ORDO_CREDENTIALS, as for
// build/ordo (`eval "$(scripts/cluster env)"` sets it).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <vector>

#include "ordo/client.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s BROKERS MESSAGE...\n", argv[0]);
    return 2;
  }
  ordo::ClientOptions options;
  options.brokers = ordo::ParseBrokerList(argv[1]);  // any broker finds the leader
  if (const char* file = std::getenv("ORDO_CREDENTIALS"); file && *file) {
    ordo::Result<ordo::ClientCredentials> credentials = ordo::LoadCredentials(file);
    if (!credentials.ok()) {
      std::fprintf(stderr, "%s\n", credentials.error().message.c_str());
      return 2;
    }
    options.credentials = credentials.value();
  }
  // Batches, pipelines and retries with the same sequences: exactly-once.
  ordo::AsyncPublisher publisher(options);
  std::vector<std::future<ordo::Result<uint64_t>>> offsets;
  for (int i = 2; i < argc; ++i) offsets.push_back(publisher.Publish(argv[i]));
  int rc = 0;
  for (auto& offset : offsets) {
    const ordo::Result<uint64_t> r = offset.get();  // resolves once acknowledged (or failed)
    if (r.ok()) {
      std::printf("%lu\n", static_cast<unsigned long>(r.value()));
    } else {
      std::fprintf(stderr, "publish failed: %s\n", r.error().message.c_str());
      rc = 1;
    }
  }
  return rc;
}
