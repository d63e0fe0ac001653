// The storage contract (node/storage.h) on the real LMDB store and journal,
// with the process dying at every write point of the real files: a forked
// child runs a fixed workload on NodeStorage and reports each write it had
// acknowledged; tests/testing/write_points.h makes it die just before its
// Nth write to the directory (a process crash), halfway through it (a torn
// write), or with every byte not yet synced undone (a power loss). The
// parent opens the directory again and checks that the store opens, holds
// every write acknowledged as durable (a kSync or kCheckpoint write, a
// CommitPending, and everything before them), and holds exactly the state
// after some prefix of the writes begun: nothing that was never written,
// never a later write without an earlier one. Then it writes on, to show
// the recovered store works. N runs from 1 to past the last write point,
// found by a dry run that only counts.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "broker/lmdb_store.h"
#include "broker/node_storage.h"
#include "paxos/applied_state.h"
#include "tests/testing/write_points.h"

namespace ordo::broker {
namespace {

using node::Durability;
using paxos::Ballot;
using paxos::Entry;
using paxos::HardState;
using paxos::Instance;
using paxos::StoreCode;
using testing::WriteFault;

constexpr uint64_t kMapBytes = 64ull << 20;
constexpr int kStruck = 86;       // the child's status when the fault struck
constexpr int kChildFailed = 87;  // a step failed in the child

// One call of the workload.
struct Step {
  enum class Kind : uint8_t { kWrite, kMakeReadable, kCommitPending };
  Kind kind = Kind::kWrite;
  HardState hard_state;
  std::vector<Entry> entries;
  std::vector<paxos::AppliedInstance> applied;
  Durability durability = Durability::kSync;
  Instance readable;  // kMakeReadable
  // Once it returns, this step and every one before it are durable: the
  // contract's kSync and kCheckpoint, and LmdbStore's CommitPending.
  bool durable() const {
    return kind == Kind::kCommitPending ||
           (kind == Kind::kWrite && durability != Durability::kVolatile);
  }
};

// The workload: what a node's loop writes, with promises, accepts (one
// overwritten at a higher ballot), chosen marks with the offset index and
// keyed messages, small journaled writes, enough medium ones to pass
// NodeStorage::kPendingJournalBytesMax (the pending transaction committed,
// the journal started over), one too large for the journal (an LMDB commit
// at once), a checkpoint, MakeReadable and CommitPending.
class Workload {
 public:
  Workload() {
    const Ballot b1{1, paxos::NodeId(1)}, b2{2, paxos::NodeId(2)};
    Promise(b1, Durability::kSync);
    Accept(Durability::kSync, {E(1, b1, 2, 100, true), E(2, b1, 1, 100, false)});
    Choose(2, Durability::kVolatile);
    Accept(Durability::kSync, {E(3, b1, 1, 100, true), E(4, b1, 2, 100, true)});
    // A new leader: its promise, instance 4 again with another value, and 5.
    hard_state_.promised = b2;
    Accept(Durability::kSync, {E(4, b2, 2, 100, true), E(5, b2, 1, 300, false)});
    Choose(5, Durability::kCheckpoint);
    Readable(5);
    uint64_t i = 6;
    for (; i < 6 + 34; ++i) {  // ~48 KiB each: the journal passes 1 MiB
      // One keyed: the compacted view holds its payload, so the write that
      // applies it is too large for the journal.
      Accept(Durability::kSync, {E(i, b2, 2, 24000, i == 8)});
      if (i % 3 == 0) Choose(i - 1, Durability::kVolatile);
      if (i == 10) Readable(8);
    }
    Accept(Durability::kSync, {E(i, b2, 2, 48000, true)});  // past kJournalRecordMax
    Choose(i, Durability::kVolatile);
    ++i;
    Accept(Durability::kSync, {E(i, b2, 1, 100, true), E(i + 1, b2, 3, 100, true)});
    Choose(i, Durability::kVolatile);
    Accept(Durability::kVolatile, {E(i + 2, b2, 1, 200, false)});
    Commit();
    Accept(Durability::kSync, {E(i + 3, b2, 1, 100, true)});
    Choose(i + 2, Durability::kVolatile);
    last_instance_ = i + 3;
  }
  const std::vector<Step>& steps() const { return steps_; }
  uint64_t last_instance() const { return last_instance_; }

 private:
  Entry E(uint64_t instance, Ballot b, int messages, size_t bytes, bool keyed) {
    std::vector<paxos::ClientMessage> ms;
    for (int m = 0; m < messages; ++m) {
      ++sequence_;
      std::string payload =
          "message " + std::to_string(sequence_) + " at ballot " + std::to_string(b.round) + ":";
      while (payload.size() < bytes) payload.push_back(static_cast<char>('a' + rng_() % 26));
      ms.push_back(paxos::ClientMessage{paxos::ProducerId(1 + sequence_ % 2), sequence_ / 2 + 1,
                                        keyed ? "key-" + std::to_string(sequence_ % 3) : "",
                                        std::move(payload)});
    }
    Entry e{Instance(instance), b, paxos::MakeBatch(b, std::move(ms))};
    accepted_[instance] = e;
    return e;
  }
  void Promise(Ballot b, Durability d) {
    hard_state_.promised = b;
    Write({}, {}, d);
  }
  void Accept(Durability d, std::vector<Entry> entries) { Write(std::move(entries), {}, d); }
  void Choose(uint64_t chosen, Durability d) {
    hard_state_.chosen = Instance(chosen);
    std::vector<paxos::AppliedInstance> applied;
    while (state_.applied().value() < chosen) {
      const Instance next = state_.applied().next();
      applied.push_back(state_.Apply(next, accepted_.at(next.value()).value));
    }
    Write({}, std::move(applied), d);
  }
  void Write(std::vector<Entry> entries, std::vector<paxos::AppliedInstance> applied,
             Durability d) {
    Step s;
    s.hard_state = hard_state_;
    s.entries = std::move(entries);
    s.applied = std::move(applied);
    s.durability = d;
    steps_.push_back(std::move(s));
  }
  void Readable(uint64_t last) {
    Step s;
    s.kind = Step::Kind::kMakeReadable;
    s.readable = Instance(last);
    steps_.push_back(std::move(s));
  }
  void Commit() {
    Step s;
    s.kind = Step::Kind::kCommitPending;
    steps_.push_back(std::move(s));
  }

  std::vector<Step> steps_;
  HardState hard_state_;
  std::map<uint64_t, Entry> accepted_;
  paxos::AppliedState state_;
  uint64_t sequence_ = 0;
  uint64_t last_instance_ = 0;
  std::mt19937_64 rng_{1};
};

// What a store holds, as the contract and the stream read it.
struct Picture {
  HardState hard_state;
  std::map<uint64_t, Entry> log;
  uint64_t next_offset = 0;
  std::vector<StreamMessage> stream;
  std::vector<StreamMessage> compacted;  // ascending offset

  bool operator==(const Picture& o) const {
    if (!(hard_state == o.hard_state) || next_offset != o.next_offset || stream != o.stream ||
        compacted != o.compacted || log.size() != o.log.size()) {
      return false;
    }
    for (const auto& [i, e] : log) {
      auto it = o.log.find(i);
      if (it == o.log.end() || !paxos::SameEntry(e, it->second)) return false;
    }
    return true;
  }
  std::string ToString() const {
    std::ostringstream s;
    s << "promised " << hard_state.promised.round << "." << hard_state.promised.node.value()
      << ", chosen " << hard_state.chosen.value() << "; log";
    for (const auto& [i, e] : log) s << " " << i << "@" << e.ballot.round;
    s << "; next offset " << next_offset << ", " << stream.size() << " messages, "
      << compacted.size() << " keys";
    return s.str();
  }
};

// The picture after each prefix of the workload: [k] after k steps.
std::vector<Picture> Expected(const std::vector<Step>& steps) {
  std::vector<Picture> out(1);
  std::map<std::string, StreamMessage> keys;
  for (const Step& step : steps) {
    Picture p = out.back();
    if (step.kind == Step::Kind::kWrite) {
      p.hard_state = step.hard_state;
      for (const Entry& e : step.entries) p.log[e.instance.value()] = e;
      for (const paxos::AppliedInstance& a : step.applied) {
        const auto& msgs = a.value->messages;
        for (size_t m = 0; m < a.results.size() && m < msgs.size(); ++m) {
          if (a.results[m].outcome != paxos::PublishOutcome::kAppended) continue;
          const StreamMessage sm{a.results[m].offset.value(), msgs[m].producer.value(),
                                 msgs[m].sequence, msgs[m].key.str(), msgs[m].payload.str()};
          p.stream.push_back(sm);
          if (!sm.key.empty()) keys[sm.key] = sm;
        }
        if (a.appended > 0) p.next_offset = a.first_offset.value() + a.appended;
      }
      p.compacted.clear();
      for (const auto& [k, m] : keys) p.compacted.push_back(m);
      std::sort(p.compacted.begin(), p.compacted.end(),
                [](const StreamMessage& a, const StreamMessage& b) { return a.offset < b.offset; });
    }
    out.push_back(std::move(p));
  }
  return out;
}

// What the store in `dir` holds; empty with *error when a read fails.
Picture Observe(LmdbStore& store, uint64_t last_instance, std::string* error) {
  Picture p;
  p.hard_state = store.LoadHardState();
  for (uint64_t i = 1; i <= last_instance + 2; ++i) {
    Entry e;
    const StoreCode code = store.Get(Instance(i), &e);
    if (code == StoreCode::kOk) p.log[i] = e;
    if (code != StoreCode::kOk && code != StoreCode::kNotFound) {
      *error = "reading instance " + std::to_string(i) + ": " + store.last_error();
    }
  }
  const uint64_t last = p.log.empty() ? 0 : p.log.rbegin()->first;
  if (store.LastInstance().value() != last) {
    *error = "LastInstance() is " + std::to_string(store.LastInstance().value()) +
             ", the log ends at " + std::to_string(last);
  }
  p.next_offset = store.next_offset();
  if (store.ReadStream(0, 1 << 20, 1 << 30, &p.stream) != StoreCode::kOk ||
      store.ReadCompacted(0, 0, 1 << 20, 1 << 30, &p.compacted) != StoreCode::kOk) {
    *error = "reading the stream: " + store.last_error();
  }
  return p;
}

void Report(int fd, const std::string& line) {
  const std::string l = line + "\n";
  for (size_t done = 0; done < l.size();) {
    const ssize_t n = ::write(fd, l.data() + done, l.size() - done);
    if (n <= 0) ::_exit(kChildFailed);
    done += static_cast<size_t>(n);
  }
}

// The child: the workload on a store in plan.dir, reporting on `fd`
// ("begin K", "done K JOURNAL_BYTES", "points P UNMODELLED", "error ...").
[[noreturn]] void RunChild(const std::vector<Step>& steps, const testing::WritePointPlan& plan,
                           int fd) {
  testing::ArmWritePoints(plan);
  auto fail = [&](const std::string& what) {
    Report(fd, "error " + what);
    ::_exit(kChildFailed);
  };
  std::unique_ptr<LmdbStore> lmdb;
  if (Status s = LmdbStore::Open(plan.dir, kMapBytes, &lmdb); !s.ok()) fail("open: " + s.message());
  NodeStorage node(*lmdb);
  for (size_t k = 1; k <= steps.size(); ++k) {
    const Step& step = steps[k - 1];
    Report(fd, "begin " + std::to_string(k));
    Status s = Status::Ok();
    switch (step.kind) {
      case Step::Kind::kWrite:
        s = node.Write(step.hard_state, step.entries, step.applied, step.durability);
        break;
      case Step::Kind::kMakeReadable:
        s = node.MakeReadable(step.readable);
        break;
      case Step::Kind::kCommitPending:
        s = node.CommitPending();
        break;
    }
    if (!s.ok()) fail("step " + std::to_string(k) + ": " + s.message());
    Report(fd, "done " + std::to_string(k) + " " + std::to_string(lmdb->journal_bytes()));
  }
  if (plan.at == 0) {
    Report(fd, "points " + std::to_string(testing::WritePointsSoFar()) + " " +
                   std::to_string(testing::UnmodelledWriteCalls()));
    ::_exit(0);
  }
  testing::StrikeNow();  // past the last write point
}

struct ChildRun {
  int status = -1;
  uint64_t begun = 0, done = 0;         // steps
  std::vector<uint64_t> journal_bytes;  // after each step done
  uint64_t points = 0, unmodelled = 0;  // a dry run's
  std::string error;
};

// Runs the child on plan.dir, made empty first when `fresh` (else the
// child opens what is there: a recovery).
ChildRun Fork(const std::vector<Step>& steps, const testing::WritePointPlan& plan,
              bool fresh = true) {
  if (fresh) {
    std::filesystem::remove_all(plan.dir);
    std::filesystem::create_directories(plan.dir);
  }
  int fds[2];
  if (::pipe(fds) != 0) {
    ChildRun failed;
    failed.error = "pipe failed";
    return failed;
  }
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    RunChild(steps, plan, fds[1]);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof(buf))) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  ChildRun run;
  int status = 0;
  ::waitpid(pid, &status, 0);
  run.status = WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + status;
  std::istringstream lines(text);
  for (std::string word; lines >> word;) {
    if (word == "begin") {
      lines >> run.begun;
    } else if (word == "done") {
      uint64_t bytes = 0;
      lines >> run.done >> bytes;
      run.journal_bytes.push_back(bytes);
    } else if (word == "points") {
      lines >> run.points >> run.unmodelled;
    } else if (word == "error") {
      std::getline(lines, run.error);
    }
  }
  return run;
}

std::string BaseDir() {
  // Durability here is the interposer's model, not the device's: tmpfs
  // serves, and its syncs cost nothing.
  std::error_code ec;
  const std::filesystem::path shm = "/dev/shm";
  const std::filesystem::path base =
      std::filesystem::is_directory(shm, ec) ? shm : std::filesystem::temp_directory_path();
  static std::mt19937_64 rng(std::random_device{}());
  return (base / ("ordo-write-points-" + std::to_string(rng()))).string();
}

class LmdbWritePoints : public ::testing::Test {
 protected:
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The dry run: how many write points the workload has.
  uint64_t CountWritePoints() {
    const ChildRun run = Fork(workload_.steps(), {dir_, WriteFault::kNone, 0, kStruck});
    EXPECT_EQ(run.status, 0) << run.error;
    EXPECT_EQ(run.done, workload_.steps().size());
    EXPECT_EQ(run.unmodelled, 0u) << "msync was called: the power-loss model does not hold";
    return run.points;
  }

  // The fault at every write point (and once past the last); each
  // recovered store is checked.
  void EveryWritePoint(WriteFault fault, bool past_the_last, uint64_t seeds = 1) {
    const auto start = std::chrono::steady_clock::now();
    const uint64_t total = CountWritePoints();
    ASSERT_GT(total, 50u);
    const std::vector<Picture> expected = Expected(workload_.steps());
    const uint64_t last = past_the_last ? total + 1 : total;
    uint64_t failures = 0;
    for (uint64_t at = 1; at <= last && failures < 5; ++at) {
      for (uint64_t seed = 0; seed < seeds; ++seed) {
        if (!CheckOne({dir_, fault, at, kStruck, at * 1000 + seed}, expected)) ++failures;
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const std::string each = seeds > 1 ? ", " + std::to_string(seeds) + " seeds each" : "";
    std::printf("[ write points ] %s at each of %llu write points%s%s: %.1f s\n", ToString(fault),
                static_cast<unsigned long long>(total), past_the_last ? " and past the last" : "",
                each.c_str(), seconds);
    std::printf(
        "[ write points ] volatile writes that had returned lost in %llu runs, the write "
        "in progress kept in %llu\n",
        static_cast<unsigned long long>(lost_returned_),
        static_cast<unsigned long long>(kept_in_progress_));
    // A process crash keeps everything that reached the kernel; a power
    // loss must lose some (else the model undid nothing).
    if (fault == WriteFault::kPowerLoss || fault == WriteFault::kPartialPowerLoss) {
      EXPECT_GT(lost_returned_, 0u);
    } else {
      EXPECT_EQ(lost_returned_, 0u);
    }
  }

  bool CheckOne(const testing::WritePointPlan& plan, const std::vector<Picture>& expected) {
    const std::vector<Step>& steps = workload_.steps();
    const WriteFault fault = plan.fault;
    const ChildRun run = Fork(steps, plan);
    const std::string where =
        std::string(ToString(fault)) + " at write point " + std::to_string(plan.at) +
        (fault == WriteFault::kPartialPowerLoss ? " (seed " + std::to_string(plan.seed) + ")"
                                                : std::string()) +
        " (in step " + std::to_string(run.begun) + ", " + std::to_string(run.done) + " steps done)";
    if (run.status != kStruck) {
      ADD_FAILURE() << where << ": the child exited with " << run.status << " " << run.error;
      return false;
    }
    return Verify(where, run, expected);
  }

  // What must be there: up to the last durable step done.
  uint64_t Must(const ChildRun& run) const {
    uint64_t must = 0;
    for (uint64_t k = 1; k <= run.done; ++k) {
      if (workload_.steps()[k - 1].durable()) must = k;
    }
    return must;
  }

  // The store in dir_ after `run` struck: it opens, holds the state after a
  // prefix of the steps from Must(run) to the step begun, and works.
  bool Verify(const std::string& where, const ChildRun& run,
              const std::vector<Picture>& expected) {
    const uint64_t must = Must(run);
    std::unique_ptr<LmdbStore> lmdb;
    const Status s = LmdbStore::Open(dir_, kMapBytes, &lmdb);
    if (!s.ok()) {
      ADD_FAILURE() << where << ": the store does not open: " << s.message();
      return false;
    }
    std::string error;
    const Picture got = Observe(*lmdb, workload_.last_instance(), &error);
    if (!error.empty()) {
      ADD_FAILURE() << where << ": " << error;
      return false;
    }
    uint64_t matched = 0;
    bool found = false;
    // The latest such prefix (steps that write nothing leave it as it was).
    for (uint64_t k = run.begun + 1; k-- > must && !found;) {
      if (got == expected[k]) {
        matched = k;
        found = true;
      }
    }
    if (!found) {
      std::ostringstream msg;
      msg << where << ": the store holds the state after no prefix of " << must << " to "
          << run.begun << " steps\n  holds:    " << got.ToString();
      for (uint64_t k = must; k <= run.begun; ++k) {
        msg << "\n  after " << k << ": " << expected[k].ToString();
      }
      for (uint64_t k = 0; k < must; ++k) {
        if (got == expected[k]) msg << "\n  it holds the state after step " << k;
      }
      ADD_FAILURE() << msg.str();
      return false;
    }
    if (matched < run.done) ++lost_returned_;
    if (matched > run.done) ++kept_in_progress_;
    // The recovered store works: a synced write on top of it is kept.
    NodeStorage node(*lmdb);
    HardState next = got.hard_state;
    next.promised = Ballot{next.promised.round + 100, paxos::NodeId(3)};
    const Ballot b = next.promised;
    const uint64_t i = workload_.last_instance() + 1;
    const Entry e{Instance(i), b,
                  paxos::MakeBatch(
                      b, {paxos::ClientMessage{paxos::ProducerId(9), 1, "", "after the crash"}})};
    if (Status w = node.Write(next, std::vector<Entry>{e}, {}, Durability::kSync); !w.ok()) {
      ADD_FAILURE() << where << ", matched step " << matched
                    << ": a write after it fails: " << w.message();
      return false;
    }
    lmdb.reset();
    if (Status r = LmdbStore::Open(dir_, kMapBytes, &lmdb); !r.ok()) {
      ADD_FAILURE() << where << ": the store does not open after a write on top: " << r.message();
      return false;
    }
    Entry read;
    if (!(lmdb->LoadHardState() == next) || lmdb->Get(Instance(i), &read) != StoreCode::kOk ||
        !paxos::SameEntry(read, e)) {
      ADD_FAILURE() << where << ": the write after it was lost";
      return false;
    }
    return true;
  }

  std::string dir_ = BaseDir();
  Workload workload_;
  uint64_t lost_returned_ = 0;     // runs whose store lost volatile writes that had returned
  uint64_t kept_in_progress_ = 0;  // runs whose store kept the write the fault cut
};

TEST_F(LmdbWritePoints, TheWorkloadIsDeterministicAndReachesEveryKindOfWrite) {
  const ChildRun a = Fork(workload_.steps(), {dir_, WriteFault::kNone, 0, kStruck});
  const ChildRun b = Fork(workload_.steps(), {dir_, WriteFault::kNone, 0, kStruck});
  ASSERT_EQ(a.status, 0) << a.error;
  EXPECT_EQ(a.points, b.points) << "the write points differ from run to run";
  EXPECT_EQ(a.unmodelled, 0u);
  // The journal started over (bytes went down) after the LMDB commits: the
  // checkpoint, MakeReadable, the 1 MiB pass, the large write, CommitPending.
  const std::vector<Step>& steps = workload_.steps();
  ASSERT_EQ(a.journal_bytes.size(), steps.size());
  int rollovers = 0;
  bool passed_1mib = false;
  for (size_t k = 1; k < steps.size(); ++k) {
    if (a.journal_bytes[k] < a.journal_bytes[k - 1]) ++rollovers;
    if (steps[k].kind == Step::Kind::kWrite && steps[k].durability == Durability::kSync &&
        a.journal_bytes[k - 1] >= NodeStorage::kPendingJournalBytesMax / 2 &&
        a.journal_bytes[k] < a.journal_bytes[k - 1] && steps[k].entries.size() == 1 &&
        steps[k].entries[0].value->ByteSize() < LmdbStore::kJournalRecordMax) {
      passed_1mib = true;
    }
  }
  EXPECT_GE(rollovers, 5);
  EXPECT_TRUE(passed_1mib) << "no journaled write reached kPendingJournalBytesMax";
  std::printf("[ write points ] %llu write points in %zu steps\n",
              static_cast<unsigned long long>(a.points), steps.size());
}

TEST_F(LmdbWritePoints, TheWritesOfLmdbAndTheJournalAreCounted) {
  // liblmdb writes through libc's PLT: its commits are write points too. A
  // kSync write is one journal record (one point); a checkpoint is LMDB's
  // pages and its meta page (at least two).
  const std::vector<Step>& all = workload_.steps();
  const std::vector<Step> first(all.begin(), all.begin() + 2);  // a promise, two accepts
  const ChildRun opened = Fork({}, {dir_, WriteFault::kNone, 0, kStruck});
  const ChildRun synced = Fork(first, {dir_, WriteFault::kNone, 0, kStruck});
  Step checkpoint = all[1];
  checkpoint.durability = Durability::kCheckpoint;
  const ChildRun committed = Fork({all[0], checkpoint}, {dir_, WriteFault::kNone, 0, kStruck});
  ASSERT_EQ(opened.status, 0) << opened.error;
  EXPECT_GE(opened.points, 2u) << "LMDB's writes at creation were not seen";
  EXPECT_EQ(synced.points, opened.points + 2) << "two kSync writes: two journal records";
  EXPECT_GE(committed.points, opened.points + 1 + 2);
}

TEST_F(LmdbWritePoints, AProcessCrashAtEveryWritePointKeepsEveryAcknowledgedWrite) {
  EveryWritePoint(WriteFault::kCrash, /*past_the_last=*/true);
}

TEST_F(LmdbWritePoints, ATornWriteAtEveryWritePointKeepsEveryAcknowledgedWrite) {
  EveryWritePoint(WriteFault::kTornCrash, /*past_the_last=*/false);
}

TEST_F(LmdbWritePoints, APowerLossAtEveryWritePointKeepsEveryAcknowledgedWrite) {
  EveryWritePoint(WriteFault::kPowerLoss, /*past_the_last=*/true);
}

TEST_F(LmdbWritePoints,
       APowerLossAtEveryWritePointOfTheRecoveryAfterAPowerLossKeepsEveryAcknowledgedWrite) {
  // Recovery writes too: Open replays the journal into LMDB and commits
  // the next generation. After a power loss at write point N of the
  // workload, the first Open loses power at each of its own write points;
  // the second Open must find what the first had to.
  const auto start = std::chrono::steady_clock::now();
  const uint64_t total = CountWritePoints();
  const std::vector<Picture> expected = Expected(workload_.steps());
  const std::string saved = dir_ + ".saved";
  uint64_t runs = 0, failures = 0;
  for (uint64_t at = 1; at <= total + 1 && failures < 5; ++at) {
    const ChildRun first = Fork(workload_.steps(), {dir_, WriteFault::kPowerLoss, at, kStruck});
    ASSERT_EQ(first.status, kStruck) << first.error;
    std::filesystem::remove_all(saved);
    std::filesystem::copy(dir_, saved, std::filesystem::copy_options::recursive);
    const ChildRun count = Fork({}, {dir_, WriteFault::kNone, 0, kStruck}, /*fresh=*/false);
    ASSERT_EQ(count.status, 0) << "power loss at write point " << at << ": " << count.error;
    for (uint64_t m = 1; m <= count.points; ++m) {
      std::filesystem::remove_all(dir_);
      std::filesystem::copy(saved, dir_, std::filesystem::copy_options::recursive);
      const ChildRun again = Fork({}, {dir_, WriteFault::kPowerLoss, m, kStruck}, /*fresh=*/false);
      const std::string where = "power loss at write point " + std::to_string(at) + " (in step " +
                                std::to_string(first.begun) + "), then at write point " +
                                std::to_string(m) + " of the recovery";
      ++runs;
      if (again.status != kStruck) {
        ADD_FAILURE() << where << ": the recovery exited with " << again.status << " "
                      << again.error;
        ++failures;
      } else if (!Verify(where, first, expected)) {
        ++failures;
      }
    }
  }
  std::filesystem::remove_all(saved);
  std::printf(
      "[ write points ] power loss at each of %llu write points, then at each write point "
      "of the recovery: %llu runs, %.1f s\n",
      static_cast<unsigned long long>(total), static_cast<unsigned long long>(runs),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

TEST_F(LmdbWritePoints,
       APowerLossKeepingSomeUnsyncedSectorsAtEveryWritePointKeepsEveryAcknowledgedWrite) {
  // What no sync covered may survive in any mix, sector by sector: the
  // journal's unsynced tail torn, absent or intact, LMDB's unreferenced
  // pages half written.
  // ORDO_WRITE_POINT_SEEDS=N draws N per point (2 by default).
  const char* seeds = std::getenv("ORDO_WRITE_POINT_SEEDS");
  EveryWritePoint(WriteFault::kPartialPowerLoss, /*past_the_last=*/true,
                  seeds ? std::strtoull(seeds, nullptr, 10) : 2);
}

}  // namespace
}  // namespace ordo::broker
