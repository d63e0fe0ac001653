#include "monitoring/metrics.h"

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <exception>

namespace ordo::monitoring {

struct BrokerMetrics::Impl {
  std::unique_ptr<prometheus::Exposer> exposer;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Gauge* is_leader = nullptr;
  prometheus::Gauge* ballot_round = nullptr;
  prometheus::Gauge* chosen = nullptr;
  prometheus::Gauge* next_offset = nullptr;
  prometheus::Gauge* subscribers = nullptr;
  prometheus::Counter* elections_started = nullptr;
  prometheus::Counter* elections_won = nullptr;
  prometheus::Counter* instances_chosen = nullptr;
  prometheus::Counter* messages_appended = nullptr;
  prometheus::Counter* messages_duplicate = nullptr;
  prometheus::Counter* checksum_failures = nullptr;
  prometheus::Counter* frames_rejected = nullptr;
  prometheus::Counter* publishes_acked = nullptr;
  prometheus::Counter* redirects = nullptr;
  prometheus::Counter* delivered = nullptr;
  prometheus::Counter* peer_bytes_out = nullptr;
  BrokerGauges last;
};

namespace {

prometheus::Gauge* G(prometheus::Registry& r, const char* name, const char* help,
                     const prometheus::Labels& labels) {
  return &prometheus::BuildGauge().Name(name).Help(help).Register(r).Add(labels);
}

prometheus::Counter* C(prometheus::Registry& r, const char* name, const char* help,
                       const prometheus::Labels& labels) {
  return &prometheus::BuildCounter().Name(name).Help(help).Register(r).Add(labels);
}

// Counters only go up: add what the mirrored value grew by since last time.
void Mirror(prometheus::Counter* c, uint64_t now, uint64_t before) {
  if (now > before) c->Increment(static_cast<double>(now - before));
}

}  // namespace

broker::Status BrokerMetrics::Start(const std::string& endpoint, uint32_t node_id,
                                    std::unique_ptr<BrokerMetrics>* out) {
  std::unique_ptr<BrokerMetrics> m(new BrokerMetrics());
  m->impl_ = std::make_unique<Impl>();
  Impl& i = *m->impl_;
  prometheus::Registry& r = *i.registry;
  const prometheus::Labels l = {{"node", std::to_string(node_id)}};
  i.is_leader = G(r, "ordo_leader", "1 when this broker is the leader", l);
  i.ballot_round = G(r, "ordo_ballot_round", "Round of the leader's ballot as known here", l);
  i.chosen = G(r, "ordo_chosen_instance", "Chosen frontier: every instance up to it is chosen", l);
  i.next_offset = G(r, "ordo_next_offset", "One past the last offset applied here", l);
  i.subscribers = G(r, "ordo_subscribers", "Subscriptions served by this broker", l);
  i.elections_started = C(r, "ordo_elections_started_total", "Elections this broker started", l);
  i.elections_won = C(r, "ordo_elections_won_total", "Elections this broker won", l);
  i.instances_chosen = C(r, "ordo_instances_chosen_total", "Log instances learned chosen", l);
  i.messages_appended = C(r, "ordo_messages_committed_total", "Messages appended to the stream", l);
  i.messages_duplicate =
      C(r, "ordo_messages_deduplicated_total", "Retried messages answered with their offset", l);
  i.checksum_failures =
      C(r, "ordo_checksum_failures_total", "Stored records that failed their CRC32C", l);
  i.frames_rejected = C(r, "ordo_frames_rejected_total", "Malformed or oversized frames", l);
  i.publishes_acked =
      C(r, "ordo_messages_acknowledged_total", "Published messages acknowledged by this broker", l);
  i.redirects = C(r, "ordo_redirects_total", "Publishes redirected to the leader", l);
  i.delivered = C(r, "ordo_messages_delivered_total", "Messages pushed to subscribers", l);
  i.peer_bytes_out = C(r, "ordo_peer_bytes_sent_total", "Bytes sent to peer brokers", l);
  try {
    i.exposer = std::make_unique<prometheus::Exposer>(endpoint, 2);
  } catch (const std::exception& e) {
    return broker::Status::Error("metrics endpoint " + endpoint + ": " + e.what());
  }
  i.exposer->RegisterCollectable(i.registry);
  *out = std::move(m);
  return broker::Status::Ok();
}

BrokerMetrics::~BrokerMetrics() = default;

void BrokerMetrics::Update(const BrokerGauges& g) {
  Impl& i = *impl_;
  i.is_leader->Set(g.core.role == paxos::Role::kLeader ? 1 : 0);
  i.ballot_round->Set(static_cast<double>(g.core.leader_ballot.round));
  i.chosen->Set(static_cast<double>(g.core.chosen.value()));
  i.next_offset->Set(static_cast<double>(g.next_offset));
  i.subscribers->Set(static_cast<double>(g.subscribers));
  Mirror(i.elections_started, g.core.elections_started, i.last.core.elections_started);
  Mirror(i.elections_won, g.core.elections_won, i.last.core.elections_won);
  Mirror(i.instances_chosen, g.core.instances_chosen, i.last.core.instances_chosen);
  Mirror(i.messages_appended, g.core.messages_appended, i.last.core.messages_appended);
  Mirror(i.messages_duplicate, g.core.messages_duplicate, i.last.core.messages_duplicate);
  Mirror(i.checksum_failures, g.storage_corruptions, i.last.storage_corruptions);
  Mirror(i.frames_rejected, g.frames_rejected, i.last.frames_rejected);
  Mirror(i.publishes_acked, g.publishes_acked, i.last.publishes_acked);
  Mirror(i.redirects, g.redirects, i.last.redirects);
  Mirror(i.delivered, g.messages_delivered, i.last.messages_delivered);
  Mirror(i.peer_bytes_out, g.peer_bytes_out, i.last.peer_bytes_out);
  i.last = g;
}

}  // namespace ordo::monitoring
