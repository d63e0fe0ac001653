// A small subscriber to copy: prints the stream from an offset, in order,
// as OFFSET<TAB>PAYLOAD. Built as build/ordo-example-subscriber.
//
//   build/ordo-example-subscriber 127.0.0.1:7201,127.0.0.1:7202 0 10
//
// The client's CurveZMQ key file comes from ORDO_CREDENTIALS, as for
// build/ordo (`eval "$(scripts/cluster env)"` sets it).
#include <cstdio>
#include <cstdlib>

#include "ordo/client.h"

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s BROKERS FROM_OFFSET COUNT\n", argv[0]);
    return 2;
  }
  ordo::ClientOptions options;
  options.brokers = ordo::ParseBrokerList(argv[1]);  // any broker serves, followers included
  if (const char* file = std::getenv("ORDO_CREDENTIALS"); file && *file) {
    ordo::Result<ordo::ClientCredentials> credentials = ordo::LoadCredentials(file);
    if (!credentials.ok()) {
      std::fprintf(stderr, "%s\n", credentials.error().message.c_str());
      return 2;
    }
    options.credentials = credentials.value();
  }
  ordo::Subscriber subscriber(options, ordo::StartAt::Offset(std::strtoull(argv[2], nullptr, 10)));
  for (long n = std::strtol(argv[3], nullptr, 10); n > 0;) {
    auto record = subscriber.Next(std::chrono::seconds(1));
    if (!record.ok()) {
      std::fprintf(stderr, "subscribe: %s\n", record.error().message.c_str());
      if (record.error().code != ordo::ErrorCode::kTimeout) return 1;
      continue;  // every broker unreachable for now: keep trying
    }
    if (!record.value()) continue;  // nothing new within a second
    std::printf("%lu\t%s\n", static_cast<unsigned long>(record.value()->offset),
                record.value()->payload.c_str());
    --n;
  }
  return 0;
}
