// build/ordo against the fake broker: documented exit codes, the
// below-retained error, --from earliest, replay's output with stderr not a
// terminal; and the progress bar's rendering as a pure function.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <pty.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/cli/cli_util.h"
#include "tests/client/fake_broker.h"

namespace ordo {
namespace {

using testing::DeliverRange;
using testing::ErrorFrame;
using testing::FakeBroker;
using testing::Request;

struct CliRun {
  int status = -1;
  std::string out;
  std::string err;
};

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs `ordo ARGS` through the shell with stdin from `input`, stdout and
// stderr to files (so neither is a terminal); `env` (VAR=VALUE ...) is set
// for it.
CliRun Ordo(const std::string& args, const std::string& input = "", const std::string& env = "") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("ordo-cli-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "in") << input; }
  // The fake brokers are plaintext; a user's `eval "$(scripts/cluster env)"`
  // must not leak in.
  const std::string command = "env -u ORDO_BROKERS -u ORDO_CREDENTIALS " + env + " " +
                              std::string(ORDO_CLI_BIN) + " " + args + " <" +
                              (dir / "in").string() + " >" + (dir / "out").string() + " 2>" +
                              (dir / "err").string();
  const int raw = std::system(command.c_str());
  CliRun run;
  run.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  run.out = ReadFile(dir / "out");
  run.err = ReadFile(dir / "err");
  std::filesystem::remove_all(dir);
  return run;
}

// Fetch and Subscribe below offset 42 are refused as compacted away; above,
// the test stream up to head 50 is served.
FakeBroker::Handler RetainingFrom42() {
  return [](const Request& request, FakeBroker& broker) {
    const bool read = request.body == wire::Body::Fetch || request.body == wire::Body::Subscribe;
    if (!read) return;
    const uint64_t from = request.from_earliest ? 42 : request.from_offset;
    if (from < 42) {
      broker.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::OffsetBelowRetained,
                                      "offset compacted away", "", 42));
      return;
    }
    const uint64_t end = request.body == wire::Body::Fetch
                             ? std::min<uint64_t>(50, from + request.max_messages)
                             : 50;
    broker.Send(request, DeliverRange(request.request_id, from, end, 50));
  };
}

TEST(CliTest, ReplayBelowTheRetainedRangeNamesTheEarliestOffsetAndExits4) {
  FakeBroker broker(RetainingFrom42());
  const CliRun run = Ordo("replay --brokers " + broker.endpoint() + " --from 5");
  EXPECT_EQ(run.status, cli::kExitBelowRetained);
  EXPECT_NE(run.err.find("earliest available offset is 42"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("--from earliest"), std::string::npos) << run.err;
  EXPECT_EQ(run.out, "");
}

TEST(CliTest, SubscribeBelowTheRetainedRangeNamesTheEarliestOffsetAndExits4) {
  FakeBroker broker(RetainingFrom42());
  const CliRun run = Ordo("subscribe --brokers " + broker.endpoint() + " --from 5 --count 1");
  EXPECT_EQ(run.status, cli::kExitBelowRetained);
  EXPECT_NE(run.err.find("earliest available offset is 42"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("--from earliest"), std::string::npos) << run.err;
}

TEST(CliTest, FromEarliestStartsAtTheEarliestRetainedOffset) {
  FakeBroker broker(RetainingFrom42());
  const CliRun replay = Ordo("replay --brokers " + broker.endpoint() + " --from earliest --to 45");
  EXPECT_EQ(replay.status, 0) << replay.err;
  EXPECT_EQ(replay.out, "42\tm42\n43\tm43\n44\tm44\n");
  const CliRun subscribe =
      Ordo("subscribe --brokers " + broker.endpoint() + " --from earliest --count 2");
  EXPECT_EQ(subscribe.status, 0) << subscribe.err;
  EXPECT_EQ(subscribe.out, "42\tm42\n43\tm43\n");
  const auto subscribes = broker.requests(wire::Body::Subscribe);
  ASSERT_FALSE(subscribes.empty());
  EXPECT_TRUE(subscribes.front().from_earliest);
}

TEST(CliTest, ReplayToAPipeWritesNoProgressBar) {
  FakeBroker broker(RetainingFrom42());
  const CliRun run = Ordo("replay --brokers " + broker.endpoint() + " --from 42");
  EXPECT_EQ(run.status, 0) << run.err;
  std::string expected;
  for (int i = 42; i < 50; ++i) expected += std::to_string(i) + "\tm" + std::to_string(i) + "\n";
  EXPECT_EQ(run.out, expected);
  EXPECT_EQ(run.err, "");  // stderr is a file, not a terminal: clean
}

TEST(CliTest, PublishPrintsOffsetsInInputOrder) {
  uint64_t next = 7;
  FakeBroker broker([&](const Request& request, FakeBroker& b) {
    if (request.body != wire::Body::Publish) return;
    b.Send(request, testing::AckAll(request, next));
    next += request.messages.size();
  });
  std::string input;
  std::string expected;
  for (int i = 0; i < 1000; ++i) {
    input += "line " + std::to_string(i) + "\n";
    expected += std::to_string(7 + i) + "\n";
  }
  const CliRun run = Ordo("publish --brokers " + broker.endpoint() + " --batch-messages 64", input);
  EXPECT_EQ(run.status, 0) << run.err;
  EXPECT_EQ(run.out, expected);
}

TEST(CliTest, PublishToNoBrokerExits3WithWhatToDo) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  const CliRun run = Ordo("publish --brokers " + silent.endpoint() +
                           " --timeout-ms 300 --request-timeout-ms 100 a b",
                       "");
  EXPECT_EQ(run.status, cli::kExitUnavailable);
  EXPECT_EQ(run.out, "");
  EXPECT_NE(run.err.find("2 message(s) not acknowledged"), std::string::npos) << run.err;
}

TEST(CliTest, UsageErrorsExit2AndEveryHelpDocumentsExitCodes) {
  EXPECT_EQ(Ordo("replay --brokers 127.0.0.1:1 --from x").status, cli::kExitUsage);
  EXPECT_EQ(Ordo("replay --from 1").status, cli::kExitUsage);  // --brokers missing
  EXPECT_EQ(Ordo("subscribe --brokers 127.0.0.1:1 --format xml").status, cli::kExitUsage);
  EXPECT_EQ(Ordo("frobnicate").status, cli::kExitUsage);
  for (const std::string command : {"", "publish", "subscribe", "replay", "status"}) {
    const CliRun help = Ordo(command + " --help");
    EXPECT_EQ(help.status, 0) << command;
    EXPECT_NE(help.out.find("Exit status: 0 ok"), std::string::npos) << command << help.out;
    EXPECT_NE(help.out.find("4 --from is below"), std::string::npos) << command;
    EXPECT_NE(help.out.find("5 authentication or permission refused"), std::string::npos)
        << command;
  }
  // A broker key needs HOST:PORT=KEY, and a key of this client to go with it.
  EXPECT_EQ(Ordo("status --brokers 127.0.0.1:1 --broker-key 127.0.0.1:1=short").status,
            cli::kExitUsage);
  EXPECT_EQ(Ordo("status --brokers 127.0.0.1:1 --broker-key "
                 "127.0.0.1:1=rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7")
                .status,
            cli::kExitUsage);
}

TEST(CliTest, APermissionDeniedPublishExits5AndSaysWhichPermission) {
  FakeBroker broker([](const Request& request, FakeBroker& b) {
    b.Send(request, ErrorFrame(request.request_id, wire::ErrorCode::PermissionDenied,
                               "permission denied: this client's key lacks the \"publish\" "
                               "permission"));
  });
  const CliRun run = Ordo("publish --brokers " + broker.endpoint() + " --timeout-ms 5000 a");
  EXPECT_EQ(run.status, cli::kExitRefused) << run.err;
  EXPECT_NE(run.err.find("\"publish\" permission"), std::string::npos) << run.err;
}

// --- Issue 19: the CLI as users of kcat, nats and etcdctl expect it ---

// Acknowledges every Publish, the first message at offset `first`.
FakeBroker::Handler AckFrom(uint64_t first) {
  auto next = std::make_shared<uint64_t>(first);
  return [next](const Request& request, FakeBroker& b) {
    if (request.body != wire::Body::Publish) return;
    b.Send(request, testing::AckAll(request, *next));
    *next += request.messages.size();
  };
}

// No C++ name of the library reaches a user of the CLI.
void ExpectNoCppNames(const std::string& text) {
  for (const char* name : {"call_timeout", "request_timeout", "AsyncPublisher", "Options::", "Next",
                           "StartAt", "Subscriber", "Pass to", "to = 0"}) {
    EXPECT_EQ(text.find(name), std::string::npos) << "'" << name << "' in: " << text;
  }
}

double SecondsOf(const std::function<void()>& f) {
  const auto start = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(CliTest, BrokersComeFromDashBOrOrdoBrokersAndAFlagWins) {
  FakeBroker broker(AckFrom(7));
  const CliRun b = Ordo("publish -b " + broker.endpoint() + " a");
  EXPECT_EQ(b.status, 0) << b.err;
  EXPECT_EQ(b.out, "7\n");
  // As `eval "$(scripts/cluster env)"` exports it: a list, here with a dead broker first.
  const CliRun env = Ordo("publish --request-timeout-ms 200 b", "",
                          "ORDO_BROKERS=127.0.0.1:1," + broker.endpoint());
  EXPECT_EQ(env.status, 0) << env.err;
  EXPECT_EQ(env.out, "8\n");
  const CliRun flag =
      Ordo("publish --brokers " + broker.endpoint() + " c", "", "ORDO_BROKERS=127.0.0.1:1");
  EXPECT_EQ(flag.status, 0) << flag.err;
  EXPECT_EQ(flag.out, "9\n");
  FakeBroker retaining(RetainingFrom42());
  const std::string at = "ORDO_BROKERS=" + retaining.endpoint();
  EXPECT_EQ(Ordo("replay --from 42 --to 43", "", at).out, "42\tm42\n");
  EXPECT_EQ(Ordo("subscribe --from 42 --count 1", "", at).out, "42\tm42\n");
  for (const std::string command :
       {"publish a", "subscribe", "replay --from 0", "status", "health"}) {
    const CliRun none = Ordo(command);
    EXPECT_EQ(none.status, cli::kExitUsage) << command;
    EXPECT_NE(none.err.find("--brokers"), std::string::npos) << command << ": " << none.err;
  }
}

TEST(CliTest, VersionAndTheClosestCommandOrFlagForATypo) {
  const CliRun flag = Ordo("--version");
  EXPECT_EQ(flag.status, 0) << flag.err;
  EXPECT_EQ(flag.out, std::string("ordo ") + ORDO_VERSION + "\n");
  const CliRun command = Ordo("version");  // no brokers: the client's alone
  EXPECT_EQ(command.status, 0) << command.err;
  EXPECT_EQ(command.out, std::string("client: ordo ") + ORDO_VERSION + "\n");
  const CliRun typo = Ordo("publsh a");
  EXPECT_EQ(typo.status, cli::kExitUsage);
  EXPECT_NE(typo.err.find("did you mean 'publish'?"), std::string::npos) << typo.err;
  const CliRun unknown = Ordo("frobnicate");
  EXPECT_EQ(unknown.status, cli::kExitUsage);
  EXPECT_NE(unknown.err.find("commands: publish, subscribe"), std::string::npos) << unknown.err;
  const CliRun form = Ordo("replay --brokers 127.0.0.1:1 --form 3");
  EXPECT_EQ(form.status, cli::kExitUsage);
  EXPECT_NE(form.err.find("did you mean --from?"), std::string::npos) << form.err;
  const CliRun count = Ordo("subscribe --brokers 127.0.0.1:1 --cuont 3");
  EXPECT_EQ(count.status, cli::kExitUsage);
  EXPECT_NE(count.err.find("did you mean --count?"), std::string::npos) << count.err;
  for (const std::string c : {"health", "version"}) {
    const CliRun help = Ordo(c + " --help");
    EXPECT_EQ(help.status, 0) << c;
    EXPECT_NE(help.out.find("Exit status: 0 ok"), std::string::npos) << c << help.out;
  }
}

TEST(CliTest, ReplayToIsOnePastTheLastOffsetAndStopsAtTheHeadWithAMessage) {
  FakeBroker broker(RetainingFrom42());
  const std::string replay = "replay --brokers " + broker.endpoint();
  const CliRun zero = Ordo(replay + " --from 0 --to 0");
  EXPECT_EQ(zero.status, 0) << zero.err;
  EXPECT_EQ(zero.out, "");
  const CliRun earliest_zero = Ordo(replay + " --from earliest --to 0");
  EXPECT_EQ(earliest_zero.status, 0) << earliest_zero.err;
  EXPECT_EQ(earliest_zero.out, "");
  EXPECT_EQ(Ordo(replay + " --from 45 --to 45").out, "");
  EXPECT_EQ(Ordo(replay + " --from 45 --to 47").out, "45\tm45\n46\tm46\n");
  EXPECT_EQ(Ordo(replay + " --from 45 --to 44").status, cli::kExitUsage);
  const CliRun past = Ordo(replay + " --from 45 --to 60");
  EXPECT_EQ(past.status, 0) << past.err;
  EXPECT_EQ(past.out, "45\tm45\n46\tm46\n47\tm47\n48\tm48\n49\tm49\n");
  EXPECT_NE(past.err.find("stopped at the head of the stream, offset 50: --to 60 is past it"),
            std::string::npos)
      << past.err;
  ExpectNoCppNames(past.err);
  // --follow reads the live stream up to --to.
  const CliRun follow = Ordo(replay + " --from 45 --to 48 --follow");
  EXPECT_EQ(follow.status, 0) << follow.err;
  EXPECT_EQ(follow.out, "45\tm45\n46\tm46\n47\tm47\n");
}

TEST(CliTest, StatusTakesFormatJsonAndHonoursTheRequestTimeout) {
  FakeBroker broker([](const Request& request, FakeBroker& b) {
    if (request.body != wire::Body::StatusRequest) return;
    testing::StatusSpec spec;
    spec.node_id = 2;
    spec.role = "leader";
    spec.leader_id = 2;
    spec.next_offset = 9;
    b.Send(request, testing::StatusReplyFrame(request.request_id, spec));
  });
  const CliRun json = Ordo("status --brokers " + broker.endpoint() + " --json");
  const CliRun format = Ordo("status --brokers " + broker.endpoint() + " --format json");
  EXPECT_EQ(json.status, 0) << json.err;
  EXPECT_EQ(format.status, 0) << format.err;
  EXPECT_NE(json.out.find("\"role\":\"leader\""), std::string::npos) << json.out;
  EXPECT_EQ(format.out, json.out);
  EXPECT_EQ(Ordo("status --brokers " + broker.endpoint() + " --format xml").status,
            cli::kExitUsage);

  FakeBroker silent([](const Request&, FakeBroker&) {});
  CliRun quick;
  const double short_wait = SecondsOf(
      [&] { quick = Ordo("status --brokers " + silent.endpoint() + " --request-timeout-ms 100"); });
  EXPECT_EQ(quick.status, cli::kExitUnavailable);
  // The flag is honoured: no absolute bound (tests never pass or fail on
  // the machine's speed), but the long timeout is waited out and the short
  // one is not.
  CliRun slow;
  const double long_wait = SecondsOf(
      [&] { slow = Ordo("status --brokers " + silent.endpoint() + " --request-timeout-ms 1500"); });
  EXPECT_EQ(slow.status, cli::kExitUnavailable);
  EXPECT_GE(long_wait, 1.4);
  EXPECT_LT(short_wait, long_wait);
}

TEST(CliTest, ABadEndpointFailsAtOnceWithExit2) {
  const std::pair<std::string, std::string> bad[] = {
      {"no-such-host.invalid:7201", "cannot resolve the host 'no-such-host.invalid'"},
      {"127.0.0.1", "has no port"},
      {"127.0.0.1:99999", "is not a number from 1 to 65535"},
      {"localhost:x", "is not a number from 1 to 65535"},
      {"127.0.0.1:7201,nohost.invalid:7202", "cannot resolve"},
  };
  for (const auto& [endpoint, why] : bad) {
    for (const std::string command :
         {"publish a", "subscribe --count 1", "replay --from 0", "status"}) {
      CliRun run;
      // (Exit 2 before any connection: a wait for a broker would end in 3.)
      run = Ordo(command + " --brokers " + endpoint);
      EXPECT_EQ(run.status, cli::kExitUsage) << command << " " << endpoint << ": " << run.err;
      EXPECT_NE(run.err.find(why), std::string::npos) << run.err;
    }
  }
}

TEST(CliTest, SubscribeGivesUpAfterTheTimeoutWhenNoBrokerAnswers) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  const std::string subscribe = "subscribe --brokers " + silent.endpoint() +
                                " --request-timeout-ms 100 --timeout-ms 500 --from earliest";
  for (const std::string count : {" --count 1", ""}) {
    CliRun run;
    run = Ordo(subscribe + count);  // (one that never gave up would hang the test)
    EXPECT_EQ(run.status, cli::kExitUnavailable) << run.err;
    EXPECT_NE(run.err.find("--retry-forever"), std::string::npos) << run.err;
    ExpectNoCppNames(run.err);
  }
  // --retry-forever keeps trying: still running after the timeout.
  const std::string forever = "env -u ORDO_BROKERS -u ORDO_CREDENTIALS timeout 2 " +
                              std::string(ORDO_CLI_BIN) + " subscribe --brokers " +
                              silent.endpoint() +
                              " --request-timeout-ms 100 --timeout-ms 300 --retry-forever "
                              "--count 1 >/dev/null 2>&1";
  const int raw = std::system(forever.c_str());
  EXPECT_TRUE(WIFEXITED(raw) && WEXITSTATUS(raw) == 124) << raw;  // timeout(1) stopped it
}

TEST(CliTest, AnOversizedMessageIsReportedByLineAndStopsOrIsSkipped) {
  const std::string input = "a\n" + std::string(20, 'b') + "\nc\n";
  {
    FakeBroker broker(AckFrom(7));
    const CliRun stop =
        Ordo("publish --brokers " + broker.endpoint() + " --message-bytes-max 10", input);
    EXPECT_EQ(stop.status, cli::kExitFailed) << stop.err;
    EXPECT_EQ(stop.out, "7\n");
    EXPECT_NE(stop.err.find("line 2 is 20 bytes"), std::string::npos) << stop.err;
    EXPECT_NE(stop.err.find("--on-oversize skip"), std::string::npos) << stop.err;
    ExpectNoCppNames(stop.err);
  }
  {
    FakeBroker broker(AckFrom(7));
    const CliRun skip = Ordo(
        "publish --brokers " + broker.endpoint() + " --message-bytes-max 10 --on-oversize skip",
        input);
    EXPECT_EQ(skip.status, cli::kExitFailed) << skip.err;
    EXPECT_EQ(skip.out, "7\n8\n");
    EXPECT_NE(skip.err.find("line 2 is 20 bytes"), std::string::npos) << skip.err;
    EXPECT_NE(skip.err.find("1 oversized message(s) skipped"), std::string::npos) << skip.err;
    ExpectNoCppNames(skip.err);
  }
  {
    // The default limit, 1 MiB, as the brokers'.
    FakeBroker broker(AckFrom(7));
    const CliRun big =
        Ordo("publish --brokers " + broker.endpoint(), std::string((1 << 20) + 1, 'x') + "\n");
    EXPECT_EQ(big.status, cli::kExitFailed) << big.err;
    EXPECT_NE(big.err.find("line 1 is 1048577 bytes"), std::string::npos) << big.err;
    ExpectNoCppNames(big.err);
  }
}

TEST(CliTest, UnacknowledgedMessagesAreReportedWithoutCppNames) {
  FakeBroker silent([](const Request&, FakeBroker&) {});
  const CliRun run = Ordo("publish --brokers " + silent.endpoint() +
                          " --timeout-ms 300 --request-timeout-ms 100 a b");
  EXPECT_EQ(run.status, cli::kExitUnavailable);
  EXPECT_NE(run.err.find("2 message(s) not acknowledged"), std::string::npos) << run.err;
  ExpectNoCppNames(run.err);
}

TEST(CliTest, SigintDuringPublishPrintsTheOffsetsStoredAndExits130) {
  FakeBroker broker(AckFrom(7));
  const auto dir = std::filesystem::temp_directory_path() /
                   ("ordo-cli-int-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  const std::string out = (dir / "out").string();
  const std::string err = (dir / "err").string();
  int in[2];
  ASSERT_EQ(pipe(in), 0);
  const std::string endpoint = broker.endpoint();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(in[0], STDIN_FILENO);
    close(in[0]);
    close(in[1]);
    dup2(open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600), STDOUT_FILENO);
    dup2(open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600), STDERR_FILENO);
    unsetenv("ORDO_CREDENTIALS");
    unsetenv("ORDO_BROKERS");
    execl(ORDO_CLI_BIN, ORDO_CLI_BIN, "publish", "--brokers", endpoint.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in[0]);
  ASSERT_EQ(write(in[1], "a\nb\nc\n", 6), 6);
  // The input stays open: ordo waits for more when the signal comes.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  auto published = [&] {
    size_t n = 0;
    for (const Request& r : broker.requests(wire::Body::Publish)) n += r.messages.size();
    return n;
  };
  while (published() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(published(), 3u);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  close(in[1]);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  EXPECT_EQ(ReadFile(out), "7\n8\n9\n");
  const std::string errors = ReadFile(err);
  EXPECT_NE(errors.find("interrupted"), std::string::npos) << errors;
  EXPECT_NE(errors.find("3 message(s) stored"), std::string::npos) << errors;
  std::filesystem::remove_all(dir);
}

// What `ordo publish ARGS` sent with `input` on stdin: (key, payload) pairs.
struct Published {
  CliRun run;
  std::vector<std::pair<std::string, std::string>> messages;
};
Published PublishThrough(const std::string& args, const std::string& input) {
  FakeBroker broker(AckFrom(0));
  Published p;
  p.run = Ordo("publish --brokers " + broker.endpoint() + " " + args, input);
  for (const Request& r : broker.requests(wire::Body::Publish)) {
    for (const auto& m : r.messages) p.messages.emplace_back(m.key, m.payload);
  }
  return p;
}

using Pairs = std::vector<std::pair<std::string, std::string>>;

TEST(CliTest, PublishReadsNulDelimitedDelimitedLengthPrefixedWholeAndKeyedInput) {
  using namespace std::string_literals;
  Published nul = PublishThrough("-0", "a\0b\nc\0d"s);
  EXPECT_EQ(nul.run.status, 0) << nul.run.err;
  EXPECT_EQ(nul.messages, (Pairs{{"", "a"}, {"", "b\nc"}, {"", "d"}}));
  Published delimited = PublishThrough("--delimiter '\\x1e'",
                                       "a\x1e"
                                       "b\n\x1e");
  EXPECT_EQ(delimited.run.status, 0) << delimited.run.err;
  EXPECT_EQ(delimited.messages, (Pairs{{"", "a"}, {"", "b\n"}}));
  Published multi = PublishThrough("--delimiter '::'", "a::b:::c");
  EXPECT_EQ(multi.messages, (Pairs{{"", "a"}, {"", "b"}, {"", ":c"}}));
  Published framed = PublishThrough("--length-prefixed", "\0\0\0\3a\nb\0\0\0\0\0\0\0\1\xff"s);
  EXPECT_EQ(framed.run.status, 0) << framed.run.err;
  EXPECT_EQ(framed.messages, (Pairs{{"", "a\nb"}, {"", ""}, {"", "\xff"}}));
  Published truncated = PublishThrough("--length-prefixed", "\0\0\0\1a\0\0\0\5ab"s);
  EXPECT_EQ(truncated.run.status, cli::kExitFailed);
  EXPECT_EQ(truncated.messages, (Pairs{{"", "a"}}));
  EXPECT_NE(truncated.run.err.find("ends inside a frame"), std::string::npos) << truncated.run.err;
  Published whole = PublishThrough("--file -", "p\nq\0\n"s);
  EXPECT_EQ(whole.run.status, 0) << whole.run.err;
  EXPECT_EQ(whole.messages, (Pairs{{"", "p\nq\0\n"s}}));
  const auto file = std::filesystem::temp_directory_path() /
                    ("ordo-cli-file-" + std::to_string(std::random_device{}()));
  { std::ofstream(file, std::ios::binary) << "\x01\x02\nbinary"; }
  Published from_file = PublishThrough("--file " + file.string() + " --key f", "ignored");
  std::filesystem::remove(file);
  EXPECT_EQ(from_file.run.status, 0) << from_file.run.err;
  EXPECT_EQ(from_file.messages, (Pairs{{"f", "\x01\x02\nbinary"}}));
  Published keyed = PublishThrough("--key-delimiter : --key d", "k1:v1:x\nnokey\n:empty\n");
  EXPECT_EQ(keyed.run.status, 0) << keyed.run.err;
  EXPECT_EQ(keyed.messages, (Pairs{{"k1", "v1:x"}, {"d", "nokey"}, {"", "empty"}}));
  Published args = PublishThrough("--key-delimiter = a=1 b=2", "");
  EXPECT_EQ(args.messages, (Pairs{{"a", "1"}, {"b", "2"}}));
  EXPECT_EQ(PublishThrough("-0 --length-prefixed", "").run.status, cli::kExitUsage);
  EXPECT_EQ(PublishThrough("--file - a", "").run.status, cli::kExitUsage);
  EXPECT_EQ(PublishThrough("--delimiter '\\q'", "").run.status, cli::kExitUsage);
}

TEST(CliTest, FormatTemplateRawJsonAndCompactedKeys) {
  FakeBroker broker(RetainingFrom42());
  const std::string replay = "replay --brokers " + broker.endpoint() + " --from 42 --to 44";
  const CliRun templ = Ordo(replay + " --format '%o|%k|%K|%s|%S|%p|%q|%%\\n'");
  EXPECT_EQ(templ.status, 0) << templ.err;
  EXPECT_EQ(templ.out, "42|k42|3|m42|3|7|43|%\n43|k43|3|m43|3|7|44|%\n");
  const CliRun raw = Ordo(replay + " --format raw");
  EXPECT_EQ(raw.out, "m42m43");
  const CliRun compacted = Ordo(replay + " --compacted");
  EXPECT_EQ(compacted.status, 0) << compacted.err;
  EXPECT_EQ(compacted.out, "42\tm42\n43\tm43\n");  // OFFSET<TAB>PAYLOAD, as always
  EXPECT_EQ(Ordo(replay + " --format '%x'").status, cli::kExitUsage);
  const CliRun xml = Ordo(replay + " --format jsn");
  EXPECT_EQ(xml.status, cli::kExitUsage);
  EXPECT_NE(xml.err.find("did you mean json?"), std::string::npos) << xml.err;

  // JSON stays JSON: bytes that are not UTF-8 in base64, the producer id a string.
  FakeBroker binary([](const Request& request, FakeBroker& b) {
    if (request.body != wire::Body::Fetch) return;
    testing::StreamRecord r{0, UINT64_MAX, 1, "cl\xc3\xa9",
                            std::string("\xff\x00"
                                        "a\x7f",
                                        4)};
    b.Send(request, testing::DeliverFrame(request.request_id, {r}, 1));
  });
  const CliRun json =
      Ordo("replay --brokers " + binary.endpoint() + " --from 0 --to 1 --format json");
  EXPECT_EQ(json.status, 0) << json.err;
  EXPECT_EQ(json.out,
            "{\"offset\":0,\"key\":\"cl\xc3\xa9\",\"payload\":\"/wBhfw==\","
            "\"payload_encoding\":\"base64\",\"producer\":\"18446744073709551615\","
            "\"sequence\":1}\n");
}

TEST(CliTest, TheProgressBarHidesWhenStdoutIsTheSameTerminal) {
  FakeBroker broker(RetainingFrom42());
  // Runs replay with stderr on a pseudo-terminal and stdout on the same one
  // or on a file; returns what the terminal showed.
  auto on_terminal = [&](bool stdout_too) {
    int master = -1;
    int slave = -1;
    EXPECT_EQ(openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
    const std::string endpoint = broker.endpoint();
    const pid_t pid = fork();
    if (pid == 0) {
      close(master);
      dup2(slave, STDERR_FILENO);
      dup2(stdout_too ? slave : open("/dev/null", O_WRONLY), STDOUT_FILENO);
      unsetenv("ORDO_CREDENTIALS");
      unsetenv("ORDO_BROKERS");
      execl(ORDO_CLI_BIN, ORDO_CLI_BIN, "replay", "--brokers", endpoint.c_str(), "--from", "42",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    close(slave);
    std::string shown;
    char buf[4096];
    for (ssize_t n; (n = read(master, buf, sizeof buf)) > 0;) shown.append(buf, n);
    int status = 0;
    waitpid(pid, &status, 0);
    close(master);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << shown;
    return shown;
  };
  const std::string both = on_terminal(true);
  EXPECT_NE(both.find("49\tm49"), std::string::npos) << both;
  EXPECT_EQ(both.find("msg/s"), std::string::npos) << both;
  const std::string bar = on_terminal(false);
  EXPECT_NE(bar.find("100% 8/8"), std::string::npos) << bar;
}

TEST(CliUtilTest, ForUsersNamesFlagsNotCppIdentifiers) {
  EXPECT_EQ(cli::ForUsers("publish not acknowledged within call_timeout (300 ms): x"),
            "publish not acknowledged within --timeout-ms (300 ms): x");
  EXPECT_EQ(cli::ForUsers("no broker answered. Check it; calling Next again keeps trying."),
            "no broker answered. Check it.");
  ExpectNoCppNames(cli::ForUsers(
      "a message of 5 bytes (key + payload) exceeds AsyncPublisherOptions::message_bytes_max "
      "(4); split it, or raise both that option and the brokers' limits.message_bytes_max"));
  EXPECT_EQ(cli::ForUsers("the earliest offset available is 42. Start a new Subscriber at "
                          "StartAt::Offset(42) to read what remains."),
            "the earliest offset available is 42. Use --from 42, or --from earliest.");
}

TEST(CliUtilTest, ClosestSuggestsTyposOnly) {
  const std::vector<std::string> commands = {"publish", "subscribe", "replay", "status",
                                             "health",  "version",   "keygen"};
  EXPECT_EQ(cli::Closest("publsh", commands), "publish");
  EXPECT_EQ(cli::Closest("stauts", commands), "status");
  EXPECT_EQ(cli::Closest("sub", commands), "subscribe");
  EXPECT_EQ(cli::Closest("frobnicate", commands), "");
  EXPECT_EQ(cli::EditDistance("kitten", "sitting"), 3u);
}

TEST(CliUtilTest, Utf8AndBase64) {
  EXPECT_TRUE(cli::IsUtf8("plain"));
  EXPECT_TRUE(cli::IsUtf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"));
  EXPECT_FALSE(cli::IsUtf8("\xff"));
  EXPECT_FALSE(cli::IsUtf8("\xc3"));          // truncated
  EXPECT_FALSE(cli::IsUtf8("\xc0\xaf"));      // overlong
  EXPECT_FALSE(cli::IsUtf8("\xed\xa0\x80"));  // a surrogate
  EXPECT_EQ(cli::Base64(""), "");
  EXPECT_EQ(cli::Base64("f"), "Zg==");
  EXPECT_EQ(cli::Base64("fo"), "Zm8=");
  EXPECT_EQ(cli::Base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(cli::JsonString(std::string("a\"\\\n\x01\x7f", 6)), "\"a\\\"\\\\\\n\\u0001\\u007f\"");
}

TEST(RenderProgressTest, FillsTheBarInProportionAndFitsTheWidth) {
  const std::string half = cli::RenderProgress(500, 1000, 2.0, 60);
  EXPECT_EQ(half.size(), 60u);
  EXPECT_EQ(half.front(), '[');
  EXPECT_NE(half.find("  50% 500/1000 250 msg/s"), std::string::npos) << half;
  const size_t bar = half.find(']') - 1;
  EXPECT_EQ(std::count(half.begin(), half.end(), '='), static_cast<long>(bar / 2));
  EXPECT_NE(half.find('>'), std::string::npos);

  const std::string done = cli::RenderProgress(1000, 1000, 0.5, 60);
  EXPECT_NE(done.find("100% 1000/1000 2.0k msg/s"), std::string::npos) << done;
  EXPECT_EQ(done.find('>'), std::string::npos);
  EXPECT_EQ(done.find(' '), done.find(']') + 1);  // a full bar has no gap

  EXPECT_NE(cli::RenderProgress(0, 0, 0, 60).find("100% 0/0"), std::string::npos);
  EXPECT_NE(cli::RenderProgress(3000000, 4000000, 1.0, 80).find("3.0M msg/s"), std::string::npos);
  // Too narrow for a bar: just the numbers, cut to the width.
  EXPECT_EQ(cli::RenderProgress(5, 10, 1.0, 30), "[=====>    ]  50% 5/10 5 msg/s");
  EXPECT_EQ(cli::RenderProgress(5, 10, 1.0, 25), "50% 5/10 5 msg/s");
  EXPECT_EQ(cli::RenderProgress(5, 10, 1.0, 4).size(), 4u);
}

TEST(ExitCodeTest, EachErrorHasItsDocumentedStatus) {
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kTimeout), 3);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kUnavailable), 3);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kClosed), 3);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kOffsetBelowRetained), 4);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kInvalidArgument), 2);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kRejected), 1);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kProtocol), 1);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kAuthenticationFailed), 5);
  EXPECT_EQ(cli::ExitCodeFor(ErrorCode::kPermissionDenied), 5);
}

}  // namespace
}  // namespace ordo
