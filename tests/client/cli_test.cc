// build/ordo against the fake broker: documented exit codes, the
// below-retained error, --from earliest, replay's output with stderr not a
// terminal; and the progress bar's rendering as a pure function.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

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
// stderr to files (so neither is a terminal).
CliRun Ordo(const std::string& args, const std::string& input = "") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("ordo-cli-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "in") << input; }
  // The fake brokers are plaintext; a user's `eval "$(scripts/cluster env)"`
  // must not leak in.
  const std::string command =
      "env -u ORDO_BROKERS -u ORDO_CREDENTIALS " + std::string(ORDO_CLI_BIN) + " " + args + " <" +
      (dir / "in").string() + " >" + (dir / "out").string() + " 2>" + (dir / "err").string();
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
