// Membership changes through the log, end to end with real ordo-broker
// processes and the `ordo members` commands: growing 3 -> 5 -> 3 (the
// leader removed too) under continuous publishing, replacing a voter with a
// wiped disk by a new id, the typed errors and their exit statuses, the
// JSON listing, and a dynamically added broker restarted on its store.
// Every wait is for an event, bounded by a deadline; no test asserts on
// timing.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "tests/integration/cluster.h"
#include "tests/testing/shell.h"

namespace ordo {
namespace {

using testing::Cluster;
using namespace std::chrono_literals;

// Runs `command` through the shell: its exit status and what it printed.
using testing::RunShell;
using Ran = testing::ShellRun;

std::string Joined(const std::vector<std::string>& brokers) {
  std::string out;
  for (const std::string& b : brokers) out += (out.empty() ? "" : ",") + b;
  return out;
}

// `ordo members ARGS` against the running brokers of `c`.
Ran Members(const Cluster& c, const std::string& args) {
  std::vector<std::string> brokers;
  for (int i = 1; i <= c.nodes(); ++i) {
    if (c.Running(i)) brokers.push_back(c.ClientEndpoint(i));
  }
  std::string command =
      std::string(ORDO_CLI_BIN) + " members " + args + " --brokers " + Joined(brokers);
  if (!c.CredentialsFile().empty()) command += " --credentials " + c.CredentialsFile();
  return RunShell(command);
}

Ran Add(const Cluster& c, int i, const std::string& extra = "") {
  std::string args = "add --id " + std::to_string(i) + " --peer " + c.PeerEndpoint(i) +
                     " --client " + c.ClientEndpoint(i);
  if (!c.PublicKey(i).empty()) args += " --key-file " + c.KeyFile(i);
  return Members(c, args + extra);
}

// The voters broker `i` has in effect.
std::set<uint32_t> VotersAt(const Cluster& c, int i) {
  std::set<uint32_t> out;
  auto m = MembersAt(c.ClientEndpoint(i), 500ms, c.Credentials());
  if (!m.ok()) return out;
  for (const MemberInfo& x : m.value().members) {
    if (x.voter) out.insert(x.id);
  }
  return out;
}

bool WaitForVoters(const Cluster& c, int i, const std::set<uint32_t>& voters) {
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (VotersAt(c, i) == voters) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// Reads [0, count) from one broker only.
std::vector<Record> ReadAll(const Cluster& c, int i, uint64_t count) {
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(i)};
  auto r = Replay(o, 0, count);
  if (!r.ok()) {
    ADD_FAILURE() << "replay from node " << i << ": " << r.error().message;
    return {};
  }
  return r.value();
}

// Publishes "m-N" one at a time until stopped, recording each
// acknowledged offset, with a pause of 1 ms between publishes (a promote
// needs the learner within a window of instances of the leader, as the
// leader last heard it; a pause keeps that from depending on how the
// machine's load spaces the learner's fetches).
class Load {
 public:
  explicit Load(const Cluster& c) : publisher_(c.Options()) {
    thread_ = std::thread([this] {
      for (uint64_t n = 0; !stop_.load(); ++n) {
        const std::string payload = "m-" + std::to_string(n);
        auto r = publisher_.Publish(payload);
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (r.ok()) {
            acked_[payload] = r.value();
          } else {
            ++failed_;
            last_error_ = r.error().message;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
  }
  ~Load() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  size_t acked() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_.size();
  }
  // Waits until `more` further messages are acknowledged (bounded).
  bool Progress(size_t more) {
    const size_t target = acked() + more;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (acked() < target && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(10ms);
    }
    return acked() >= target;
  }
  std::map<std::string, uint64_t> Acked() {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  uint64_t failed() {
    std::lock_guard<std::mutex> lock(mu_);
    return failed_;
  }
  std::string last_error() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_error_;
  }

 private:
  Publisher publisher_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::map<std::string, uint64_t> acked_;
  uint64_t failed_ = 0;
  std::string last_error_;
};

// Every acknowledged message is in every running broker's stream exactly
// once, at its acknowledged offset, and the streams are identical.
void ExpectStreams(const Cluster& c, const std::map<std::string, uint64_t>& acked) {
  uint64_t head = 0;
  for (const auto& [payload, offset] : acked) head = std::max(head, offset + 1);
  ASSERT_TRUE(c.WaitForHead(head, 60s));
  std::vector<Record> first;
  int first_node = 0;
  for (int i = 1; i <= c.nodes(); ++i) {
    if (!c.Running(i)) continue;
    std::vector<Record> got = ReadAll(c, i, head);
    ASSERT_EQ(got.size(), head) << "node " << i;
    std::map<std::string, int> seen;
    for (const Record& r : got) ++seen[r.payload];
    for (const auto& [payload, offset] : acked) {
      EXPECT_EQ(seen[payload], 1) << payload << " on node " << i;
      EXPECT_EQ(got[offset].payload, payload) << "offset " << offset << " on node " << i;
    }
    if (first_node == 0) {
      first = got;
      first_node = i;
      continue;
    }
    for (size_t k = 0; k < head; ++k) {
      ASSERT_EQ(got[k].payload, first[k].payload)
          << "offset " << k << ": node " << i << " vs node " << first_node;
    }
  }
}

TEST(Membership, GrowThreeToFiveAndBackUnderLoadLeaderRemovedToo) {
  Cluster c(3);
  ASSERT_NE(c.WaitForLeader(), 0);
  // The new brokers run before the publisher is made, so its credentials
  // know their keys (a redirect may name one of them).
  const int four = c.AddJoiner({1, 2, 3});
  const int five = c.AddJoiner({1, 2, 3});
  Load load(c);
  ASSERT_TRUE(load.Progress(50)) << load.last_error();

  for (int n : {four, five}) {
    Ran add = Add(c, n);
    ASSERT_EQ(add.status, 0) << add.out << c.LogTail(n);
    EXPECT_NE(add.out.find("added as a learner"), std::string::npos) << add.out;
    Ran promote = Members(c, "promote --id " + std::to_string(n) + " --timeout-ms 60000");
    ASSERT_EQ(promote.status, 0) << promote.out << c.LogTail(n);
    ASSERT_TRUE(load.Progress(50)) << load.last_error();
  }
  ASSERT_TRUE(WaitForVoters(c, 1, {1, 2, 3, 4, 5}));
  ASSERT_TRUE(WaitForVoters(c, five, {1, 2, 3, 4, 5}));

  // Back to three: the leader first (it hands over), then another one.
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Ran remove_leader = Members(c, "remove --id " + std::to_string(leader));
  ASSERT_EQ(remove_leader.status, 0) << remove_leader.out << c.LogTail(leader);
  ASSERT_TRUE(load.Progress(50)) << load.last_error();
  const int other = leader == 1 ? 2 : 1;
  Ran remove_other = Members(c, "remove --id " + std::to_string(other));
  ASSERT_EQ(remove_other.status, 0) << remove_other.out;
  ASSERT_TRUE(load.Progress(50)) << load.last_error();
  load.Stop();

  std::set<uint32_t> voters = {1, 2, 3, 4, 5};
  voters.erase(leader);
  voters.erase(other);
  for (int n = 1; n <= c.nodes(); ++n) {
    if (n == leader || n == other) continue;
    EXPECT_TRUE(WaitForVoters(c, n, voters)) << "node " << n;
  }
  // The removed ones say so in their logs, then are stopped.
  EXPECT_NE(c.LogTail(leader, 1 << 20).find("was removed from the cluster at instance"),
            std::string::npos);
  c.Kill(leader);
  c.Kill(other);
  ExpectStreams(c, load.Acked());
  // Still serving with the three.
  Publisher p(c.Options());
  EXPECT_TRUE(p.Publish("after").ok());
}

TEST(Membership, ReplaceAVoterWithAWipedDiskAndRestartTheNewOne) {
  Cluster c(3);
  ASSERT_NE(c.WaitForLeader(), 0);
  Publisher p(c.Options());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(p.Publish("before-" + std::to_string(i)).ok());

  Ran remove = Members(c, "remove --id 3");
  ASSERT_EQ(remove.status, 0) << remove.out;
  c.Kill(3);
  c.WipeDataDir(3);  // its disk is gone; its id is never reused
  const int four = c.AddJoiner({1, 2});
  Ran add = Add(c, four);
  ASSERT_EQ(add.status, 0) << add.out;
  Ran promote = Members(c, "promote --id 4 --timeout-ms 60000");
  ASSERT_EQ(promote.status, 0) << promote.out << c.LogTail(four);
  ASSERT_TRUE(WaitForVoters(c, four, {1, 2, 4}));

  // Node 4 counts in the quorum: with node 1 down, {2, 4} still commit.
  c.Kill(1);
  ClientOptions o = c.Options();
  o.brokers = {c.ClientEndpoint(2), c.ClientEndpoint(four)};
  Publisher after(o);
  auto r = after.Publish("with-1-down");
  ASSERT_TRUE(r.ok()) << r.error().message << c.LogTail(2) << c.LogTail(four);
  EXPECT_EQ(r.value(), 100u);

  // A restarted dynamically added broker comes back with the membership in
  // its store (its file names only seeds), and serves.
  c.Start(1);
  c.Kill(four);
  c.Start(four);
  ASSERT_TRUE(WaitForVoters(c, four, {1, 2, 4}));
  EXPECT_NE(c.LogTail(four, 1 << 20).find("membership (from the log): voters 1,2,4"),
            std::string::npos)
      << c.LogTail(four);
  c.Kill(2);  // now {1, 4}
  ClientOptions o2 = c.Options();
  o2.brokers = {c.ClientEndpoint(1), c.ClientEndpoint(four)};
  Publisher again(o2);
  auto r2 = again.Publish("with-2-down");
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  EXPECT_EQ(r2.value(), 101u);
  std::vector<Record> got = ReadAll(c, four, 102);
  ASSERT_EQ(got.size(), 102u);
  EXPECT_EQ(got[0].payload, "before-0");
  EXPECT_EQ(got[100].payload, "with-1-down");
  EXPECT_EQ(got[101].payload, "with-2-down");
}

TEST(Membership, TypedErrorsAndJsonThroughTheCli) {
  Cluster c(1);
  ASSERT_EQ(c.WaitForLeader(), 1);

  Ran json = Members(c, "--json");
  ASSERT_EQ(json.status, 0) << json.out;
  EXPECT_NE(json.out.find("\"leader_id\":1"), std::string::npos) << json.out;
  EXPECT_NE(json.out.find("\"bootstrap\":true"), std::string::npos) << json.out;
  EXPECT_NE(json.out.find("{\"id\":1,\"voter\":true,\"peer\":\"" + c.PeerEndpoint(1) +
                          "\",\"client\":\"" + c.ClientEndpoint(1) + "\""),
            std::string::npos)
      << json.out;
  EXPECT_NE(json.out.find("\"state\":\"leader\""), std::string::npos) << json.out;

  Ran last = Members(c, "remove --id 1");
  EXPECT_EQ(last.status, 8) << last.out;
  EXPECT_NE(last.out.find("LastVoter"), std::string::npos) << last.out;
  Ran unknown = Members(c, "remove --id 9");
  EXPECT_EQ(unknown.status, 6) << unknown.out;
  Ran promote_unknown = Members(c, "promote --id 9");
  EXPECT_EQ(promote_unknown.status, 6) << promote_unknown.out;
  // An id that is taken (node 1's endpoints would do as well as any).
  Ran taken = Members(
      c, "add --id 1 --peer 127.0.0.1:1 --client 127.0.0.1:2" +
             std::string(c.PublicKey(1).empty() ? "" : " --public-key '" + c.PublicKey(1) + "'"));
  EXPECT_EQ(taken.status, 7) << taken.out;
  Ran usage = Members(c, "add --id 5 --peer nowhere --client 127.0.0.1:2");
  EXPECT_EQ(usage.status, 2) << usage.out;

  // A learner that never runs never catches up: promote gives up.
  const int two = c.AddJoiner({1});
  c.Kill(two);
  Ran add = Add(c, two);
  ASSERT_EQ(add.status, 0) << add.out;
  Ran behind = Members(c, "promote --id 2 --timeout-ms 1500");
  EXPECT_EQ(behind.status, 9) << behind.out;
  EXPECT_NE(behind.out.find("NotCaughtUp"), std::string::npos) << behind.out;
  Ran again = Add(c, two);
  EXPECT_EQ(again.status, 7) << again.out;

  Ran listed = Members(c, "");
  ASSERT_EQ(listed.status, 0) << listed.out;
  EXPECT_NE(listed.out.find("learner"), std::string::npos) << listed.out;
  Ran listed_json = Members(c, "--json");
  EXPECT_NE(listed_json.out.find("\"bootstrap\":false"), std::string::npos) << listed_json.out;
  EXPECT_NE(listed_json.out.find("{\"id\":2,\"voter\":false"), std::string::npos)
      << listed_json.out;
  // The learner can be removed again.
  Ran remove = Members(c, "remove --id 2");
  EXPECT_EQ(remove.status, 0) << remove.out;
}

}  // namespace
}  // namespace ordo
