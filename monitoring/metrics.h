// Prometheus metrics of one broker, exposed on its metrics endpoint
// (/metrics, pull). Values are copied from the core's Status and the broker's
// counters once per tick; prometheus-cpp serves them from its own threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "broker/status.h"
#include "paxos/replica.h"

namespace ordo::monitoring {

struct BrokerGauges {
  paxos::Status core;
  uint64_t next_offset = 0;
  uint64_t storage_corruptions = 0;  // read failures seen by the store
  uint64_t frames_rejected = 0;      // client and peer
  uint64_t publishes_acked = 0;
  uint64_t redirects = 0;
  uint64_t messages_delivered = 0;
  uint64_t peer_bytes_out = 0;
  uint64_t subscribers = 0;
};

class BrokerMetrics {
 public:
  // Starts the exposer on "HOST:PORT".
  static broker::Status Start(const std::string& endpoint, uint32_t node_id,
                              std::unique_ptr<BrokerMetrics>* out);
  ~BrokerMetrics();
  void Update(const BrokerGauges& g);

 private:
  BrokerMetrics() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ordo::monitoring
