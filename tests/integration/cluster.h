// A real Ordo cluster for the integration tests: the shared launcher
// (tests/testing/local_cluster.h) running this build's ordo-broker, with
// client options suited to tests.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "ordo/client.h"
#include "tests/testing/local_cluster.h"
#include "tests/testing/ports.h"

namespace ordo::testing {

class Cluster : public LocalCluster {
 public:
  // With `metrics`, every broker also serves /metrics on a free port.
  // `extra_toml` is appended to every broker's config (e.g. a [retention] table).
  explicit Cluster(int nodes, bool metrics = false, const std::string& extra_toml = "")
      : LocalCluster(WithTestBinary(Defaults(nodes, metrics, extra_toml))) {}
  // Any options; the broker binary and the directory prefix are the tests'.
  explicit Cluster(LocalClusterOptions options)
      : LocalCluster(WithTestBinary(std::move(options))) {}

  std::vector<std::string> Brokers() const { return LocalCluster::Brokers(); }
  ClientOptions Options() const {
    ClientOptions o;
    o.brokers = Brokers();
    o.request_timeout = std::chrono::milliseconds(500);
    o.call_timeout = std::chrono::milliseconds(60000);
    o.credentials = Credentials();
    return o;
  }

 private:
  static LocalClusterOptions Defaults(int nodes, bool metrics, const std::string& extra_toml) {
    LocalClusterOptions o;
    o.nodes = nodes;
    o.metrics = metrics;
    o.extra_toml = extra_toml;
    return o;
  }
  static LocalClusterOptions WithTestBinary(LocalClusterOptions o) {
    o.broker_bin = ORDO_BROKER_BIN;
    o.dir_prefix = "ordo-it-";
    return o;
  }
};

}  // namespace ordo::testing
