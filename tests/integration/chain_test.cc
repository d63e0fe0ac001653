// Issue 20: the stream's hash chain with real brokers. Every broker derives
// the same chain, across kills and snapshot installs; a broker whose stored
// payload was altered behind a valid CRC is caught by the subscriber
// reading it (which goes on elsewhere and returns nothing wrong) and by
// `ordo verify`, which names the first differing offset.
#include <gtest/gtest.h>
#include <lmdb.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "broker/crc32c.h"
#include "tests/integration/cluster.h"
#include "tests/testing/corrupt_lmdb.h"
#include "tests/testing/shell.h"

namespace ordo {
namespace {

using testing::Cluster;
using testing::RunShell;
using namespace std::chrono_literals;

template <typename F>
bool WaitFor(F done, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return done();
}

std::string Payload(uint64_t i) { return "rec-" + std::to_string(100000 + i); }

// Publishes [first, first + batches * per_batch), one instance per batch.
void Publish(const ClientOptions& o, uint64_t first, int batches, int per_batch) {
  Publisher p(o);
  for (int b = 0; b < batches; ++b) {
    std::vector<OutgoingMessage> batch;
    for (int i = 0; i < per_batch; ++i) {
      batch.push_back({"", Payload(first + uint64_t(b) * per_batch + i)});
    }
    auto r = p.PublishBatch(batch);
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
}

// Every broker's chain head, once all are at `head`.
std::map<int, std::string> Heads(const Cluster& c, uint64_t head) {
  std::map<int, std::string> heads;
  EXPECT_TRUE(WaitFor(
      [&] {
        heads.clear();
        for (int n = 1; n <= c.nodes(); ++n) {
          auto s = GetStatus(c.ClientEndpoint(n), 500ms, c.Credentials());
          if (!s.ok() || s.value().next_offset != head) return false;
          heads[n] = s.value().chain_head;
        }
        return true;
      },
      60s));
  return heads;
}

std::string Cli(const Cluster& c, const std::string& args) {
  return "ORDO_CREDENTIALS=" + c.CredentialsFile() + " " + std::string(ORDO_CLI_BIN) + " " + args;
}

std::string Joined(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& e : v) s += (s.empty() ? "" : ",") + e;
  return s;
}

// Replaces `from` by `to` (as long) in the stored log record holding it,
// and recomputes that record's CRC32C: damage no checksum sees (a bug, or
// a deliberate edit).
void RewritePayloadOnDisk(const std::string& dir, const std::string& from, const std::string& to) {
  ASSERT_EQ(from.size(), to.size());
  testing::EditLogRecord(
      dir,
      [&](const MDB_val&, const MDB_val& v) {
        return std::string_view(static_cast<const char*>(v.mv_data), v.mv_size).find(from) !=
               std::string_view::npos;
      },
      [&](std::string* bytes) {
        bytes->replace(bytes->find(from), to.size(), to);
        const uint32_t crc = broker::Crc32c(bytes->data() + 4, bytes->size() - 4);
        for (int i = 0; i < 4; ++i) (*bytes)[i] = static_cast<char>((crc >> (8 * i)) & 0xff);
      });
}

constexpr char kRetention[] =
    "[retention]\nsnapshot_interval_instances = 50\ninstances = 128\nage_seconds = 0\n";

TEST(Chain, EveryBrokerDerivesTheSameChainAcrossKillsAndSnapshotInstalls) {
  Cluster c(3, false, kRetention);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publish(c.Options(), 0, 10, 50);
  std::map<int, std::string> heads = Heads(c, 500);
  ASSERT_EQ(heads.size(), 3u);
  EXPECT_EQ(heads[1].size(), 64u);
  EXPECT_EQ(heads[1], heads[2]);
  EXPECT_EQ(heads[1], heads[3]);
  const std::string at_500 = heads[1];
  // A range ending inside an instance: checked to the instance's end, and
  // handed only up to `to`, which Replay returns as the end.
  std::vector<uint64_t> got;
  auto inside = Replay(c.Options(), 3, 8, [&](const Record& r, uint64_t) {
    EXPECT_EQ(r.payload, Payload(r.offset));
    got.push_back(r.offset);
  });
  ASSERT_TRUE(inside.ok()) << inside.error().message;
  EXPECT_EQ(inside.value(), 8u);
  EXPECT_EQ(got, (std::vector<uint64_t>{3, 4, 5, 6, 7}));

  // A follower killed -9 misses 200 instances; the others truncate past it,
  // so it comes back through a snapshot (which carries the chain).
  const int victim = leader % 3 + 1;
  const int other = 6 - leader - victim;
  c.Kill(victim);
  ClientOptions up = c.Options();
  up.brokers = {c.ClientEndpoint(leader), c.ClientEndpoint(other)};
  Publish(up, 500, 200, 5);
  c.Start(victim);
  heads = Heads(c, 1500);
  ASSERT_EQ(heads.size(), 3u);
  EXPECT_EQ(heads[1], heads[2]);
  EXPECT_EQ(heads[1], heads[3]);
  auto st = GetStatus(c.ClientEndpoint(victim), 1s, c.Credentials());
  ASSERT_TRUE(st.ok());
  EXPECT_GE(st.value().snapshots_installed, 1u);

  // ordo verify: every broker over what they all retain, one line each; the
  // head as --head prints it, checked with --expect (and a wrong one refused).
  const testing::ShellRun verify = RunShell(Cli(c, "verify -b " + Joined(c.Brokers())));
  EXPECT_EQ(verify.status, 0) << verify.out;
  std::set<std::string> ends;
  std::istringstream lines(verify.out);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_NE(line.find("\tok"), std::string::npos) << line;
    ends.insert(line.substr(line.find('\t')));
  }
  EXPECT_EQ(ends.size(), 1u) << verify.out;  // the same end and chain on all three
  const testing::ShellRun head = RunShell(Cli(c, "verify --head -b " + Joined(c.Brokers())));
  ASSERT_EQ(head.status, 0) << head.out;
  EXPECT_EQ(head.out, "1500\t" + heads[1] + "\n");
  const testing::ShellRun expect =
      RunShell(Cli(c, "verify --to 1500 --expect " + heads[1] + " -b " + Joined(c.Brokers())));
  EXPECT_EQ(expect.status, 0) << expect.out;
  const testing::ShellRun wrong =
      RunShell(Cli(c, "verify --to 1500 --expect " + at_500 + " -b " + Joined(c.Brokers())));
  EXPECT_EQ(wrong.status, 1) << wrong.out;
}

TEST(Chain, AnAlteredRecordWithAValidCrcIsCaughtBySubscribersAndByVerify) {
  Cluster c(3);
  const int leader = c.WaitForLeader();
  ASSERT_NE(leader, 0);
  Publish(c.Options(), 0, 10, 10);  // instances of 10 messages
  ASSERT_EQ(Heads(c, 100).size(), 3u);
  const int victim = leader % 3 + 1;
  const int other = 6 - leader - victim;
  // Offset 57's payload, under the running broker (a restart would have its
  // scrub find it, below): the CRC is recomputed, so only the chain can tell.
  RewritePayloadOnDisk(c.DataDir(victim), Payload(57), Payload(99));
  {
    ClientOptions raw = c.Options();
    raw.brokers = {c.ClientEndpoint(victim)};
    raw.verify_chain = false;  // what it serves now, unchecked
    auto served = Replay(raw, 57, 58);
    ASSERT_TRUE(served.ok()) << served.error().message;
    ASSERT_EQ(served.value().size(), 1u);
    ASSERT_EQ(served.value()[0].payload, Payload(99)) << "the edit did not reach the broker";
  }

  // A subscriber on the damaged broker alone: told, and given nothing of it.
  {
    ClientOptions alone = c.Options();
    alone.brokers = {c.ClientEndpoint(victim)};
    Subscriber s(alone, StartAt::Offset(0));
    bool told = false;
    for (int i = 0; i < 200 && !told; ++i) {
      auto r = s.Next(200ms);
      if (!r.ok()) {
        EXPECT_EQ(r.error().code, ErrorCode::kIntegrity) << r.error().message;
        told = r.error().code == ErrorCode::kIntegrity;
      } else if (r.value()) {
        EXPECT_LT(r.value()->offset, 50u) << "an offset of the altered instance was returned";
        EXPECT_EQ(r.value()->payload, Payload(r.value()->offset));
      }
    }
    EXPECT_TRUE(told);
  }
  // With another broker beside it: every record comes, none of them wrong,
  // whichever broker it starts on; starting on the damaged one, it is told
  // and goes on from the last verified offset on the other.
  int told_runs = 0;
  for (int run = 0; run < 16; ++run) {
    ClientOptions two = c.Options();
    two.brokers = {c.ClientEndpoint(victim), c.ClientEndpoint(other)};
    Subscriber s(two, StartAt::Offset(0));
    uint64_t next = 0;
    bool told = false;
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    while (next < 100 && std::chrono::steady_clock::now() < deadline) {
      auto r = s.Next(1s);
      if (!r.ok()) {
        ASSERT_EQ(r.error().code, ErrorCode::kIntegrity) << r.error().message;
        told = true;
        continue;
      }
      if (!r.value()) continue;
      ASSERT_EQ(r.value()->offset, next);
      ASSERT_EQ(r.value()->payload, Payload(next)) << "a wrong payload was returned";
      ++next;
    }
    EXPECT_EQ(next, 100u);
    told_runs += told ? 1 : 0;
    if (told_runs > 0 && run >= 3) break;
  }
  EXPECT_GE(told_runs, 1) << "no run started on the damaged broker";

  // The CLI: prints every record right, and says on stderr what it dropped.
  const testing::ShellRun sub =
      RunShell(Cli(c, "subscribe --from 0 --count 100 -b " + c.ClientEndpoint(victim) + "," +
                          c.ClientEndpoint(other) + " 2>/dev/null"));
  EXPECT_EQ(sub.status, 0) << sub.out;
  EXPECT_EQ(sub.out.find("57\t" + Payload(99)), std::string::npos) << "the altered payload";
  EXPECT_NE(sub.out.find("57\t" + Payload(57)), std::string::npos) << sub.out;
  // A replay through the library fails over too.
  ClientOptions both = c.Options();
  both.brokers = {c.ClientEndpoint(victim), c.ClientEndpoint(other)};
  auto replayed = Replay(both, 0, 100);
  ASSERT_TRUE(replayed.ok()) << replayed.error().message;
  ASSERT_EQ(replayed.value().size(), 100u);
  for (const Record& r : replayed.value()) EXPECT_EQ(r.payload, Payload(r.offset));

  // ordo verify finds the first differing offset.
  const testing::ShellRun verify = RunShell(Cli(c, "verify -b " + Joined(c.Brokers())));
  EXPECT_EQ(verify.status, 1) << verify.out;
  EXPECT_NE(verify.out.find("first differing offset: 57"), std::string::npos) << verify.out;
  EXPECT_NE(verify.out.find(c.ClientEndpoint(victim) + "\t"), std::string::npos) << verify.out;
  EXPECT_NE(verify.out.find("fails its chain"), std::string::npos) << verify.out;

  // Restarted, its scrub finds the record: it moves its state aside and
  // catches up from the others, and then serves what was agreed.
  c.Kill(victim, SIGTERM);
  c.Start(victim);
  ClientOptions up = c.Options();
  up.brokers = {c.ClientEndpoint(leader), c.ClientEndpoint(other)};
  // A rejoining broker votes again once instances past any it could have
  // voted on are chosen (the leader's window): one message per instance.
  uint64_t head = 100;
  ASSERT_TRUE(WaitFor(
      [&] {
        Publish(up, head++, 1, 1);
        auto s = GetStatus(c.ClientEndpoint(victim), 500ms, c.Credentials());
        return s.ok() && !s.value().catching_up && s.value().next_offset == head;
      },
      60s))
      << c.LogTail(victim, 20000);
  EXPECT_NE(c.LogTail(victim, 100000).find("does not hash to the stream's chain"),
            std::string::npos)
      << c.LogTail(victim);
  ClientOptions alone = c.Options();
  alone.brokers = {c.ClientEndpoint(victim)};
  auto repaired = Replay(alone, 0, head);
  ASSERT_TRUE(repaired.ok()) << repaired.error().message;
  EXPECT_EQ(repaired.value().size(), head);
  for (const Record& r : repaired.value()) EXPECT_EQ(r.payload, Payload(r.offset));
  const testing::ShellRun again = RunShell(Cli(c, "verify -b " + Joined(c.Brokers())));
  EXPECT_EQ(again.status, 0) << again.out;
}

}  // namespace
}  // namespace ordo
