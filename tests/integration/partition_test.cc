// Issue 18's partition suite: real brokers, each in a network namespace of
// its own joined by a bridge (tests/testing/netns.h), cut apart by nftables
// rules while a client publishes without pause: the leader isolated, a 2|3
// split with the leader on the minority side, a bridge node that hears both
// halves of a split, and one-way loss both ways. After every heal:
//
//   - every broker's stream, replayed from offset 0 on that broker, is the
//     same stream;
//   - every acknowledged message is in it at the offset it was acknowledged
//     with, and no message is in it twice;
//   - a client inside an isolated namespace, that can reach only the
//     isolated side, got no acknowledgement before the heal (what it gets
//     after is held to the two rules above);
//   - the cluster makes progress again, and its leader hears every peer.
//
// Printed, and recorded as test properties, never asserted: the failover
// time (the cut to the acknowledgement of the first message sent after it:
// an acknowledgement on its way at the cut does not count) and the time from the
// heal until the leader's status shows every peer heard within 200 ms
// (issue 18's target: 1 s). Skipped, saying what is missing, where network
// namespaces cannot be made (not root, no ip or nft); but with CI=true as
// root (.ci/run) that is a failure, so that CI cannot skip it unseen.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/cluster.h"
#include "tests/testing/netns.h"

namespace ordo {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::Cluster;
using testing::NetnsLab;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Long enough for an election on a loaded machine (the election timeout is
// 150-300 ms) and for TCP's retransmit backoff to grow past a heartbeat's
// reach, so that the heal measures the link's rebuild and not luck.
constexpr auto kPartition = 3s;
// The leader "hears" a peer when its status says heard within this.
constexpr uint64_t kHeardWithinMs = 200;

struct Ack {
  uint64_t offset;
  std::string payload;
  Clock::time_point sent;  // when the Publish call began
  Clock::time_point at;    // when it returned the offset
};

// A Publisher on its own thread, sending one message after another until
// Stop(); every acknowledgement is kept with its time. With `lab` and
// `node`, the thread first moves into that broker's namespace, so that what
// it sends is subject to that broker's rules (an isolated side's client).
class Publishing {
 public:
  Publishing(ClientOptions options, std::string tag, const NetnsLab* lab = nullptr, int node = 0)
      : thread_([this, options = std::move(options), tag = std::move(tag), lab, node] {
          if (lab != nullptr) {
            std::string error;
            if (!lab->EnterNamespace(node, &error)) {
              std::lock_guard<std::mutex> lock(mu_);
              errors_.push_back(error);
              return;
            }
          }
          Publisher p(options);
          for (uint64_t i = 0; !stop_.load(); ++i) {
            const std::string payload = tag + "-" + std::to_string(i);
            const auto sent = Clock::now();
            auto r = p.Publish(payload);
            const auto now = Clock::now();
            {
              std::lock_guard<std::mutex> lock(mu_);
              if (r.ok()) {
                acks_.push_back({r.value(), payload, sent, now});
              } else {
                errors_.push_back(r.error().message);
              }
            }
            std::this_thread::sleep_for(5ms);  // a steady trickle, not a flood
          }
          // Whatever is still queued is resent by a final empty batch, so
          // that the stream's end is known: every message sent is stored.
          auto r = p.PublishBatch({});
          if (!r.ok()) {
            std::lock_guard<std::mutex> lock(mu_);
            errors_.push_back("final resend: " + r.error().message);
          }
        }) {}
  ~Publishing() { Stop(); }

  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Ack> Acks() const {
    std::lock_guard<std::mutex> lock(mu_);
    return acks_;
  }
  std::vector<std::string> Errors() const {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }
  // When the first message sent after `t` was acknowledged, if it was.
  std::optional<Clock::time_point> FirstAckSentAfter(Clock::time_point t) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Ack& a : acks_) {
      if (a.sent > t) return a.at;
    }
    return std::nullopt;
  }
  size_t AcksSoFar() const {
    std::lock_guard<std::mutex> lock(mu_);
    return acks_.size();
  }

 private:
  mutable std::mutex mu_;
  std::vector<Ack> acks_;
  std::vector<std::string> errors_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class Partition : public ::testing::Test {
 protected:
  // Makes the namespaces and starts `nodes` brokers in them; false (with
  // skip_ saying why) when namespaces cannot be made here.
  bool Start(int nodes) {
    std::string error;
    lab_ = NetnsLab::Create(nodes, &error);
    if (!lab_) {
      skip_ = "network namespaces unavailable, partition suite skipped: " + error;
      // CI here runs as root and must run the suite, not skip it.
      const char* ci = std::getenv("CI");
      if (ci != nullptr && std::string(ci) == "true" && ::geteuid() == 0) {
        ADD_FAILURE() << "CI=true as root, yet " << skip_;
      }
      return false;
    }
    testing::LocalClusterOptions o;
    o.nodes = nodes;
    o.node_hosts = lab_->Hosts();
    for (int i = 1; i <= nodes; ++i) o.node_command_prefix.push_back(lab_->ExecPrefix(i));
    cluster_ = std::make_unique<Cluster>(o);
    std::printf("lab: %d brokers on %s..%s, this process on %s\n", nodes, lab_->Host(1).c_str(),
                lab_->Host(nodes).c_str(), lab_->RootHost().c_str());
    return true;
  }
  void TearDown() override {
    cluster_.reset();  // the brokers stop before their namespaces go
    lab_.reset();
  }

  std::vector<int> Others(const std::vector<int>& side) const {
    std::vector<int> out;
    for (int i = 1; i <= cluster_->nodes(); ++i) {
      if (std::find(side.begin(), side.end(), i) == side.end()) out.push_back(i);
    }
    return out;
  }
  ClientOptions OptionsFor(const std::vector<int>& nodes) const {
    ClientOptions o = cluster_->Options();
    o.brokers.clear();
    for (int i : nodes) o.brokers.push_back(cluster_->ClientEndpoint(i));
    return o;
  }

  // The leader, once it is beyond doubt: every broker answers, it says it
  // leads, no broker knows a higher ballot, and a majority follow it (a
  // broker that did not answer in time may lead at a higher ballot, and a
  // scenario built around a stale leader would measure nothing). 0 if that
  // did not happen within `timeout`.
  int Leader(std::chrono::milliseconds timeout = 30s) const {
    const int n = cluster_->nodes();
    for (const auto deadline = Clock::now() + timeout; Clock::now() < deadline;
         std::this_thread::sleep_for(20ms)) {
      std::vector<BrokerStatus> all;
      for (int i = 1; i <= n; ++i) {
        auto s = GetStatus(cluster_->ClientEndpoint(i), 500ms, cluster_->Credentials());
        if (!s.ok()) break;
        all.push_back(s.value());
      }
      if (all.size() != static_cast<size_t>(n)) continue;
      auto ballot = [](const BrokerStatus& s) {
        return std::pair<uint64_t, uint32_t>{s.ballot_round, s.ballot_node};
      };
      // The highest ballot any broker knows, and a leader at it (its
      // followers know the same ballot: ties go to the one that leads).
      const auto top = std::max_element(all.begin(), all.end(), [&](const auto& a, const auto& b) {
        return std::pair{ballot(a), a.role == "leader"} < std::pair{ballot(b), b.role == "leader"};
      });
      if (top->role != "leader") continue;
      const int followers =
          static_cast<int>(std::count_if(all.begin(), all.end(), [&](const auto& s) {
            return s.node_id == top->node_id || s.leader_id == top->node_id;
          }));
      if (2 * followers > n) return static_cast<int>(top->node_id);
    }
    return 0;
  }

  // Milliseconds from `healed` until the leader (the one at the highest
  // ballot: an isolated old leader may not know yet that it was replaced)
  // shows every peer heard within kHeardWithinMs in its status; nullopt if
  // that did not happen within 30 s.
  std::optional<double> FullQuorumAfter(Clock::time_point healed) const {
    for (const auto deadline = healed + 30s; Clock::now() < deadline;
         std::this_thread::sleep_for(10ms)) {
      std::optional<BrokerStatus> leader;
      std::pair<uint64_t, uint32_t> highest{0, 0};
      for (int i = 1; i <= cluster_->nodes(); ++i) {
        auto s = GetStatus(cluster_->ClientEndpoint(i), 200ms, cluster_->Credentials());
        if (!s.ok()) continue;
        const std::pair<uint64_t, uint32_t> ballot{s.value().ballot_round, s.value().ballot_node};
        highest = std::max(highest, ballot);
        if (s.value().role == "leader" &&
            (!leader ||
             ballot > std::pair<uint64_t, uint32_t>{leader->ballot_round, leader->ballot_node})) {
          leader = s.value();
        }
      }
      if (!leader ||
          std::pair<uint64_t, uint32_t>{leader->ballot_round, leader->ballot_node} != highest) {
        continue;
      }
      if (leader->peers.size() + 1 != static_cast<size_t>(cluster_->nodes())) continue;
      bool all = true;
      for (const PeerInfo& p : leader->peers) all &= p.last_heard_ms <= kHeardWithinMs;
      if (all) return Ms(Clock::now() - healed);
    }
    return std::nullopt;
  }

  // What a scenario does, given the leader of the moment: the cut, and the
  // isolated side (empty: none).
  struct Scenario {
    std::function<bool(std::string*)> cut;
    std::vector<int> isolated;
  };

  // Runs one scenario: publishing from this namespace throughout, the cut
  // applied for kPartition, and, when the scenario isolates a side, a second
  // client inside the first isolated broker's namespace that reaches only
  // the isolated brokers. Then heals and checks.
  //
  // The first client knows every broker, as a user's does: it must find the
  // side that elects a leader by itself, past an isolated leader and an
  // isolated follower that still names it (docs/operations.md, "The
  // partition suite").
  void Run(const char* name, const std::function<Scenario(int leader)>& make) {
    // The sides follow from the leader, and a cluster just started may still
    // change leaders: pick them again until the leader holds across the
    // warm-up. Retired publishers' acknowledgements are checked as well.
    std::vector<std::unique_ptr<Publishing>> retired;
    std::unique_ptr<Publishing> main_owned;
    Scenario scenario;
    for (int attempt = 1;; ++attempt) {
      const int leader = Leader();
      ASSERT_NE(leader, 0) << "no leader";
      scenario = make(leader);
      if (main_owned) {
        main_owned->Stop();
        retired.push_back(std::move(main_owned));
      }
      main_owned = std::make_unique<Publishing>(
          OptionsFor(Others({})), std::string(name) + "-main" + std::to_string(attempt));
      // Some history before the cut.
      for (const auto deadline = Clock::now() + 30s;
           main_owned->AcksSoFar() < 20 && Clock::now() < deadline;) {
        std::this_thread::sleep_for(10ms);
      }
      ASSERT_GE(main_owned->AcksSoFar(), 20u) << "no progress before the partition";
      if (Leader() == leader || attempt == 5) {
        std::printf("%s: leader %d%s\n", name, leader,
                    attempt > 1 ? (", after " + std::to_string(attempt - 1) +
                                   " leader change(s) in the warm-up")
                                      .c_str()
                                : "");
        break;
      }
    }
    Publishing& main = *main_owned;
    const std::vector<int>& isolated = scenario.isolated;
    const auto& cut = scenario.cut;
    std::string error;
    // The failover: from the moment the first rule may take effect to the
    // acknowledgement of the first message sent once all are in place.
    const auto cut_begin = Clock::now();
    ASSERT_TRUE(cut(&error)) << error;
    const auto cut_at = Clock::now();
    std::unique_ptr<Publishing> side;
    if (!isolated.empty()) {
      side = std::make_unique<Publishing>(OptionsFor(isolated), std::string(name) + "-isolated",
                                          lab_.get(), isolated.front());
    }
    const size_t acks_before = main.AcksSoFar();
    std::this_thread::sleep_until(cut_at + kPartition);
    // The side with a majority serves while the partition lasts: if it has
    // not yet, the partition stays until it does (30 s bound a hang only).
    for (const auto deadline = cut_at + 30s;
         !main.FirstAckSentAfter(cut_at) && Clock::now() < deadline;) {
      std::this_thread::sleep_for(10ms);
    }
    const size_t acks_in_partition = main.AcksSoFar() - acks_before;
    const auto first_after = main.FirstAckSentAfter(cut_at);
    EXPECT_TRUE(first_after) << "the majority side acknowledged nothing in 30 s of partition";
    const auto heal_begin = Clock::now();
    ASSERT_TRUE(lab_->Heal(&error)) << error;
    const auto healed_at = Clock::now();
    const std::optional<double> full_quorum = FullQuorumAfter(healed_at);

    // The isolated side acknowledged nothing until the heal.
    if (side) {
      for (const Ack& a : side->Acks()) {
        EXPECT_GE(a.at, heal_begin) << a.payload << " acknowledged at offset " << a.offset << ", "
                                    << Ms(heal_begin - a.at) << " ms before the heal, by a broker "
                                    << "on the isolated side";
      }
      // ...and gets its acknowledgements once healed.
      for (const auto deadline = Clock::now() + 60s;
           side->AcksSoFar() < 3 && Clock::now() < deadline;) {
        std::this_thread::sleep_for(10ms);
      }
      EXPECT_GE(side->AcksSoFar(), 3u)
          << "the isolated side's client made no progress after the heal";
    }
    // Progress after the heal.
    const size_t before = main.AcksSoFar();
    for (const auto deadline = Clock::now() + 60s;
         main.AcksSoFar() < before + 20 && Clock::now() < deadline;) {
      std::this_thread::sleep_for(10ms);
    }
    EXPECT_GE(main.AcksSoFar(), before + 20) << "no progress after the heal";
    main.Stop();
    if (side) side->Stop();

    // Figures: printed and recorded, never asserted.
    const double failover_ms = first_after ? Ms(*first_after - cut_begin) : -1;
    std::printf(
        "%s: failover %.1f ms (the cut to the ack of the first message sent after it), %zu acks "
        "in the partition; "
        "heal to the leader hearing every peer within %llu ms: %s\n",
        name, failover_ms, acks_in_partition, static_cast<unsigned long long>(kHeardWithinMs),
        full_quorum ? (std::to_string(static_cast<long long>(*full_quorum)) + " ms").c_str()
                    : "not within 30 s");
    RecordProperty("failover_ms", static_cast<int>(failover_ms));
    RecordProperty("acks_in_partition", static_cast<int>(acks_in_partition));
    RecordProperty("heal_to_full_quorum_ms", full_quorum ? static_cast<int>(*full_quorum) : -1);
    EXPECT_TRUE(full_quorum) << "the leader did not hear every peer within 30 s of the heal";

    // One stream on every broker; every ack at its offset; nothing twice.
    std::vector<Ack> acked = main.Acks();
    for (const auto& r : retired) {
      const std::vector<Ack> more = r->Acks();
      acked.insert(acked.end(), more.begin(), more.end());
      for (const std::string& e : r->Errors()) ADD_FAILURE() << "publisher: " << e;
    }
    if (side) {
      const std::vector<Ack> more = side->Acks();
      acked.insert(acked.end(), more.begin(), more.end());
    }
    for (const std::string& e : main.Errors()) ADD_FAILURE() << "publisher: " << e;
    if (side) {
      for (const std::string& e : side->Errors()) ADD_FAILURE() << "isolated publisher: " << e;
    }
    uint64_t head = 0;
    for (const Ack& a : acked) head = std::max(head, a.offset + 1);
    ASSERT_TRUE(cluster_->WaitForHead(head, 60s)) << "not every broker reached offset " << head;
    std::vector<Record> reference;
    for (int i = 1; i <= cluster_->nodes(); ++i) {
      auto s = GetStatus(cluster_->ClientEndpoint(i), 1000ms, cluster_->Credentials());
      ASSERT_TRUE(s.ok()) << s.error().message;
      head = std::max(head, s.value().next_offset);
    }
    ASSERT_TRUE(cluster_->WaitForHead(head, 60s)) << "not every broker reached offset " << head;
    for (int i = 1; i <= cluster_->nodes(); ++i) {
      auto r = Replay(OptionsFor({i}), 0, head);
      ASSERT_TRUE(r.ok()) << "replay from broker " << i << ": " << r.error().message;
      const std::vector<Record>& got = r.value();
      ASSERT_EQ(got.size(), head) << "broker " << i;
      if (i == 1) {
        reference = got;
        continue;
      }
      for (uint64_t k = 0; k < head; ++k) {
        ASSERT_EQ(got[k].offset, k) << "broker " << i;
        ASSERT_EQ(got[k].payload, reference[k].payload) << "broker " << i << " offset " << k;
        ASSERT_EQ(got[k].producer, reference[k].producer) << "broker " << i << " offset " << k;
        ASSERT_EQ(got[k].sequence, reference[k].sequence) << "broker " << i << " offset " << k;
      }
    }
    std::set<std::string> seen;
    for (const Record& rec : reference) {
      EXPECT_TRUE(seen.insert(rec.payload).second)
          << rec.payload << " is in the stream twice (again at offset " << rec.offset << ")";
    }
    for (const Ack& a : acked) {
      ASSERT_LT(a.offset, reference.size());
      EXPECT_EQ(reference[a.offset].payload, a.payload)
          << "acknowledged at offset " << a.offset << ", the stream holds something else there";
    }
    std::printf("%s: %zu messages acknowledged, %llu in the stream, identical on %d brokers\n",
                name, acked.size(), static_cast<unsigned long long>(head), cluster_->nodes());
  }

  std::unique_ptr<NetnsLab> lab_;
  std::unique_ptr<Cluster> cluster_;
  std::string skip_;
};

TEST_F(Partition, TheLeaderIsolatedIsReplacedAndCatchesUp) {
  if (!Start(3)) GTEST_SKIP() << skip_;
  Run("leader-isolated", [&](int leader) {
    return Scenario{[=, this](std::string* e) { return lab_->Cut({leader}, Others({leader}), e); },
                    {leader}};
  });
}

TEST_F(Partition, ATwoThreeSplitServesOnTheMajorityOnly) {
  if (!Start(5)) GTEST_SKIP() << skip_;
  Run("split-2-3", [&](int leader) {
    // The leader and one follower on the minority side.
    const std::vector<int> minority = {leader, leader % 5 + 1};
    return Scenario{[=, this](std::string* e) { return lab_->Cut(minority, Others(minority), e); },
                    minority};
  });
}

TEST_F(Partition, ABridgeNodeHearsBothHalvesThatCannotHearEachOther) {
  if (!Start(5)) GTEST_SKIP() << skip_;
  Run("bridge", [&](int leader) {
    // {leader, a} | bridge | {c, d}: each half with the bridge is a majority.
    auto n = [=](int k) { return (leader - 1 + k) % 5 + 1; };
    const std::vector<int> left = {leader, n(1)}, right = {n(3), n(4)};
    std::printf("bridge: node %d between {%d, %d} and {%d, %d}\n", n(2), left[0], left[1], right[0],
                right[1]);
    return Scenario{[=, this](std::string* e) { return lab_->Cut(left, right, e); }, {}};
  });
}

TEST_F(Partition, TheLeadersOutgoingPacketsLostItIsReplaced) {
  if (!Start(3)) GTEST_SKIP() << skip_;
  Run("one-way-from-leader", [&](int leader) {
    // It hears its peers; nobody hears it (nor its namespace's client).
    return Scenario{[=, this](std::string* e) { return lab_->Drop({leader}, Others({leader}), e); },
                    {leader}};
  });
}

TEST_F(Partition, AFollowersIncomingPacketsLost) {
  if (!Start(3)) GTEST_SKIP() << skip_;
  Run("one-way-to-follower", [&](int leader) {
    // It is heard but hears nothing: its elections must not stop the
    // cluster for good, and its own client gets no acknowledgement.
    const int deaf = leader % 3 + 1;
    return Scenario{[=, this](std::string* e) { return lab_->Drop(Others({deaf}), {deaf}, e); },
                    {deaf}};
  });
}

}  // namespace
}  // namespace ordo
