// Smoke test of build/ordo-bench: every subcommand runs very briefly against
// its own real 3-broker cluster, exits 0 and writes well-formed JSON with the
// fields bench/run-all and bench/README.md rely on. No timing is asserted.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/json.h"

namespace {

using ordo::bench::Json;

class BenchSmoke : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(std::random_device{}());
    dir_ = std::filesystem::temp_directory_path() / ("ordo-bench-smoke-" + std::to_string(rng()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Runs ordo-bench with `args` plus --json; returns the parsed file.
  Json Run(const std::string& name, const std::string& args, bool with_ceiling = true) {
    const std::string json = (dir_ / (name + ".json")).string();
    std::string cmd = std::string(ORDO_BENCH_BIN) + " " + args + " --json " + json;
    if (with_ceiling) cmd += " --ceiling " + Ceiling();
    cmd += " > " + (dir_ / (name + ".out")).string() + " 2>&1";
    const int rc = std::system(cmd.c_str());
    EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) == 0) << cmd << "\n" << Slurp(dir_ / (name + ".out"));
    const std::string text = Slurp(json);
    EXPECT_FALSE(text.empty()) << cmd << " wrote no JSON\n" << Slurp(dir_ / (name + ".out"));
    try {
      return Json::Parse(text);
    } catch (const std::exception& e) {
      ADD_FAILURE() << e.what() << " in\n" << text;
      return Json();
    }
  }
  std::string Ceiling() {
    const auto path = dir_ / "ceiling.json";
    if (!std::filesystem::exists(path)) {
      const std::string cmd = std::string(ORDO_BENCH_BIN) + " ceiling --seconds 0.05 --json " +
                              path.string() + " > /dev/null 2>&1";
      EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
    }
    return path.string();
  }
  static std::string Slurp(const std::filesystem::path& p) {
    std::ifstream f(p);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }
  static void ExpectNumbers(const Json& j, const std::vector<std::string>& paths) {
    for (const auto& p : paths) EXPECT_TRUE(j.NumberAt(p).has_value()) << "no number at " << p << " in\n" << j.Dump();
  }

  std::filesystem::path dir_;
};

TEST_F(BenchSmoke, Ceiling) {
  const Json j = Run("ceiling", "ceiling --seconds 0.05", false);
  ExpectNumbers(j, {"ceiling.zmq.single.msgs_per_s", "ceiling.zmq.batch_64k.mb_per_s",
                    "ceiling.zmq.batch_256k.mb_per_s", "ceiling.zmq.single.cpu_us_per_msg",
                    "ceiling.lmdb.single.commits_per_s", "ceiling.lmdb.batch_256k.mb_per_s",
                    "ceiling.fsync.fsyncs_per_s", "ceiling.replicated.batch_256k_msgs_per_s",
                    "ceiling.latency_floor_us", "machine.cores"});
}

TEST_F(BenchSmoke, Throughput) {
  const Json j = Run("throughput", "throughput --publishers 2 --window 16 --duration 0.5 --warmup 0.2");
  ExpectNumbers(j, {"result.msgs_per_s", "result.mb_per_s", "result.latency.p50_us",
                    "result.latency.p90_us", "result.latency.p99_us", "result.latency.p999_us",
                    "result.latency.max_us", "result.broker_cpu_s_per_million", "result.pct_of_ceiling"});
  EXPECT_GT(j.NumberAt("result.acked").value_or(0), 0);
  const Json* brokers = j.Find("result") ? j.Find("result")->Find("brokers") : nullptr;
  ASSERT_TRUE(brokers && brokers->is_array());
  ASSERT_EQ(brokers->array().size(), 3u);
  for (const Json& b : brokers->array()) ExpectNumbers(b, {"cpu_s", "rss_peak_bytes", "rss_anon_max_bytes"});
}

TEST_F(BenchSmoke, Latency) {
  const Json j = Run("latency", "latency --rates 200,400 --duration 0.4 --senders 2");
  const Json* rates = j.Find("rates");
  ASSERT_TRUE(rates && rates->is_array());
  ASSERT_EQ(rates->array().size(), 2u);
  for (const Json& r : rates->array()) {
    ExpectNumbers(r, {"offered_per_s", "achieved_per_s", "latency.p50_us", "latency.p99_us", "latency.max_us"});
  }
}

TEST_F(BenchSmoke, Failover) {
  const Json j = Run("failover", "failover --rounds 1 --steady 0.3 --window 8", false);
  ExpectNumbers(j, {"failover_ms_p50", "failover_ms_max", "ack_gap_ms_p50", "ack_gap_ms_max"});
  const Json* rounds = j.Find("rounds");
  ASSERT_TRUE(rounds && rounds->is_array());
  EXPECT_EQ(rounds->array().size(), 1u);
}

// Brokers in network namespaces (tests/testing/netns.h): root, ip and nft.
TEST_F(BenchSmoke, HealInNetworkNamespaces) {
  if (::geteuid() != 0 ||
      std::system("command -v ip >/dev/null && command -v nft >/dev/null") != 0) {
    // As the partition suite: CI here runs as root with both installed
    // (scripts/setup), so there it must run; elsewhere it says what is missing.
    const char* ci = std::getenv("CI");
    if (ci != nullptr && std::string(ci) == "true" && ::geteuid() == 0) {
      FAIL() << "CI=true as root, yet ip or nft is missing (scripts/setup installs both)";
    }
    GTEST_SKIP() << "heal --netns needs root, ip (iproute2) and nft (nftables)";
  }
  const Json j = Run("heal_netns", "heal --netns --rounds 1 --partition 0.5", false);
  ExpectNumbers(j, {"failover_ms_p50", "failover_ms_max", "full_quorum_ms_p50",
                    "full_quorum_ms_max", "heal_ms_p50", "heal_ms_max"});
  const Json* rounds = j.Find("rounds");
  ASSERT_TRUE(rounds && rounds->is_array());
  EXPECT_EQ(rounds->array().size(), 1u);
}

TEST_F(BenchSmoke, CatchupRange) {
  const Json j = Run("catchup", "catchup --messages 2000");
  ExpectNumbers(j, {"msgs_per_s", "mb_per_s", "total_s", "head"});
}

TEST_F(BenchSmoke, CatchupSnapshotInstallsASnapshot) {
  const Json j = Run("catchup_snapshot", "catchup --mode snapshot --messages 2000");
  ExpectNumbers(j, {"msgs_per_s", "mb_per_s"});
  EXPECT_GE(j.NumberAt("snapshots_installed").value_or(0), 1);
}

TEST_F(BenchSmoke, Replay) {
  const Json j = Run("replay", "replay --messages 2000");
  ExpectNumbers(j, {"msgs_per_s", "mb_per_s", "seconds"});
  EXPECT_EQ(j.NumberAt("messages").value_or(0), 2000);
}

TEST_F(BenchSmoke, BadArgumentsFailWithAMessage) {
  const std::string out = (dir_ / "bad.out").string();
  const std::string cmd = std::string(ORDO_BENCH_BIN) + " throughput --publishers 0 > " + out + " 2>&1";
  const int rc = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(rc) && WEXITSTATUS(rc) != 0);
  EXPECT_NE(Slurp(out).find("--publishers"), std::string::npos) << Slurp(out);
}

TEST(BenchJson, ParsesWhatItDumpsAndRejectsGarbage) {
  Json j = Json::MakeObject();
  j["a"] = 1.5;
  j["s"] = "x\"y\n";
  j["n"] = Json();
  j["list"] = Json::Array{Json(1), Json(true)};
  const Json back = Json::Parse(j.Dump());
  EXPECT_EQ(back.NumberAt("a").value_or(0), 1.5);
  EXPECT_EQ(back.Find("s")->string(), "x\"y\n");
  EXPECT_TRUE(back.Find("n")->is_null());
  EXPECT_EQ(back.Find("list")->array().size(), 2u);
  EXPECT_EQ(Json::Parse("\"\\u00e9\"").string(), "\xc3\xa9");
  for (const char* bad : {"", "{", "{\"a\":}", "[1,]", "{\"a\":1}x", "nul", "\"\\uzz00\""}) {
    EXPECT_THROW(Json::Parse(bad), std::runtime_error) << bad;
  }
}

}  // namespace
