// Broker configuration: a good file loads; every wrong field fails with its name.
#include "broker/config.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <random>

#include "broker/access.h"

namespace ordo::broker {
namespace {

const char kGood[] = R"(
node_id = 2
data_dir = "/tmp/x"
metrics = "127.0.0.1:9302"
[security]
key_file = "/tmp/x/node2.key"
[[members]]
id = 1
peer = "127.0.0.1:9101"
client = "127.0.0.1:9201"
public_key = "oaU}vlG&Lz&]Z9zpp<+h^ky(lTBQY7!4rJyhk)SF"
[[members]]
id = 2
peer = "127.0.0.1:9102"
client = "127.0.0.1:9202"
public_key = "T=Z/4YXyvSwajF=+6(+]D*v@x}/JeIvrsC<V}DV>"
[[members]]
id = 3
peer = "127.0.0.1:9103"
client = "127.0.0.1:9203"
public_key = "HQxNzNFoZs0Y5AQ>-(VM<ru<<^F#P$f-)PZjG0Nb"
[timing]
tick_ms = 5
)";

// Writes `text` to a temporary file and loads + validates it.
Status Load(const std::string& text, BrokerConfig* out) {
  static std::mt19937_64 rng(std::random_device{}());
  const auto path =
      std::filesystem::temp_directory_path() / ("ordo-config-" + std::to_string(rng()) + ".toml");
  std::ofstream(path) << text;
  Status s = LoadConfigFile(path.string(), out);
  std::filesystem::remove(path);
  return s.ok() ? ValidateConfig(*out) : s;
}

std::string Error(const std::string& text) {
  BrokerConfig c;
  const Status s = Load(text, &c);
  EXPECT_FALSE(s.ok()) << text;
  return s.message();
}

std::string Replace(std::string s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

TEST(Config, TheExampleShapeLoads) {
  BrokerConfig c;
  const Status s = Load(kGood, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.node_id, 2u);
  EXPECT_EQ(c.members.size(), 3u);
  EXPECT_EQ(c.Self()->client, "127.0.0.1:9202");
  EXPECT_EQ(c.tick_ms, 5u);
  EXPECT_EQ(c.election_timeout_ticks, 15u);  // default kept
  const paxos::Config core = c.CoreConfig(1);
  EXPECT_EQ(core.voters.size(), 3u);
  EXPECT_EQ(core.id, paxos::NodeId(2));
}

TEST(Config, TheShippedExampleFileIsValid) {
  BrokerConfig c;
  Status s = LoadConfigFile(std::string(ORDO_SOURCE_DIR) + "/broker/ordo.example.toml", &c);
  ASSERT_TRUE(s.ok()) << s.message();
  s = ValidateConfig(c);
  EXPECT_TRUE(s.ok()) << s.message();
}

TEST(Config, ErrorsNameTheField) {
  EXPECT_NE(Error(Replace(kGood, "node_id = 2", "node_id = 9")).find("node_id"), std::string::npos);
  EXPECT_NE(Error(Replace(kGood, "node_id = 2", "node_id = \"two\"")).find("node_id"),
            std::string::npos);
  EXPECT_NE(Error(Replace(kGood, "peer = \"127.0.0.1:9102\"", "peer = \"nowhere\"")).find(
                "members[1].peer"),
            std::string::npos);
  EXPECT_NE(Error(Replace(kGood, "id = 3", "id = 1")).find("members[2].id"), std::string::npos);
  EXPECT_NE(Error(Replace(kGood, "data_dir = \"/tmp/x\"\n", "")).find("data_dir"),
            std::string::npos);
  EXPECT_NE(Error(Replace(kGood, "tick_ms = 5", "tick_ms = 0")).find("timing.tick_ms"),
            std::string::npos);
  EXPECT_NE(Error(Replace(kGood, "tick_ms = 5", "tick_msec = 5")).find("timing.tick_msec"),
            std::string::npos);
  EXPECT_NE(Error(std::string(kGood) + "bogus = 1\n").find("bogus"), std::string::npos);
  EXPECT_NE(Error(Replace(kGood, "metrics = \"127.0.0.1:9302\"", "metrics = \"x:99999\"")).find(
                "metrics"),
            std::string::npos);
  EXPECT_NE(Error("node_id = [").find(":1"), std::string::npos);  // TOML syntax: line number
  EXPECT_NE(Error(std::string(kGood) + "[timing]\nheartbeat_interval_ticks = 40\n").size(), 0u);
}

// The members' public keys in kGood.
const std::string kKeys[] = {"oaU}vlG&Lz&]Z9zpp<+h^ky(lTBQY7!4rJyhk)SF", "T=Z/4YXyvSwajF=+6(+]D*v@x}/JeIvrsC<V}DV>", "HQxNzNFoZs0Y5AQ>-(VM<ru<<^F#P$f-)PZjG0Nb"};
std::string KeyLine(int i) { return "public_key = \"" + kKeys[i] + "\"\n"; }

TEST(Config, SecurityIsOnUnlessInsecureIsSaid) {
  const std::string key_file = "key_file = \"/tmp/x/node2.key\"\n";
  EXPECT_NE(Error(Replace(kGood, key_file, "")).find("security.key_file"), std::string::npos);
  EXPECT_NE(Error(Replace(kGood, KeyLine(1), "")).find("members[1].public_key"), std::string::npos);
  EXPECT_NE(Error(Replace(kGood, kKeys[2], "not-a-key")).find("members[2].public_key"),
            std::string::npos);
  EXPECT_NE(Error(Replace(kGood, kKeys[2], kKeys[0])).find("same key"), std::string::npos);
  EXPECT_NE(Error(Replace(kGood, "[security]\n", "[security]\ninsecure = 1\n"))
                .find("security.insecure"),
            std::string::npos);
  // Plaintext, said so: no keys needed.
  std::string plain = Replace(kGood, key_file, "insecure = true\n");
  for (int i = 0; i < 3; ++i) plain = Replace(plain, KeyLine(i), "");
  BrokerConfig c;
  const Status s = Load(plain, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(c.security.insecure);
}

// A learner: same [[members]] as the voters' files, an id of its own, its own
// client endpoint.
std::string Learner() {
  return Replace(kGood, "node_id = 2\n",
                 "node_id = 4\nrole = \"learner\"\nclient = \"127.0.0.1:9204\"\n");
}

TEST(Config, ALearnerLoadsAndIsNotAVoterOfTheCore) {
  BrokerConfig c;
  const Status s = Load(Learner(), &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.role, Role::kLearner);
  EXPECT_EQ(c.Self(), nullptr);
  EXPECT_EQ(c.ClientEndpoint(), "127.0.0.1:9204");
  const paxos::Config core = c.CoreConfig(1);
  EXPECT_EQ(core.id, paxos::NodeId(4));
  ASSERT_EQ(core.voters.size(), 3u);  // the members, and only them
  for (paxos::NodeId v : core.voters) EXPECT_NE(v, core.id);
  // role = "voter" is the default, and may be spelled out.
  BrokerConfig v;
  ASSERT_TRUE(Load(Replace(kGood, "node_id = 2\n", "node_id = 2\nrole = \"voter\"\n"), &v).ok());
  EXPECT_EQ(v.role, Role::kVoter);
  EXPECT_EQ(v.ClientEndpoint(), "127.0.0.1:9202");
}

TEST(Config, TheMembersAreTheBootstrapOfTheCore) {
  BrokerConfig c;
  ASSERT_TRUE(Load(kGood, &c).ok());
  const paxos::Config core = c.CoreConfig(1);
  ASSERT_EQ(core.voters.size(), 3u);
  ASSERT_EQ(core.bootstrap_members.size(), 3u);
  EXPECT_EQ(core.bootstrap_members[1].id, paxos::NodeId(2));
  EXPECT_TRUE(core.bootstrap_members[1].voter);
  EXPECT_EQ(core.bootstrap_members[1].peer, "127.0.0.1:9102");
  EXPECT_EQ(core.bootstrap_members[1].client, "127.0.0.1:9202");
  EXPECT_EQ(core.bootstrap_members[1].public_key, "T=Z/4YXyvSwajF=+6(+]D*v@x}/JeIvrsC<V}DV>");
  EXPECT_TRUE(core.seeds.empty());
}

TEST(Config, TheChainCheckIntervalReachesTheCore) {
  BrokerConfig c;
  ASSERT_TRUE(Load(kGood, &c).ok());
  EXPECT_EQ(c.CoreConfig(1).chain_check_every, 32u);
  ASSERT_TRUE(Load(std::string(kGood) + "[chain]\ncheck_every = 1\n", &c).ok());
  EXPECT_EQ(c.CoreConfig(1).chain_check_every, 1u);
  EXPECT_NE(Error(std::string(kGood) + "[chain]\ncheck_every = -1\n").find("chain.check_every"),
            std::string::npos);
  EXPECT_NE(Error(std::string(kGood) + "[chain]\nhints = false\n").find("chain.hints"),
            std::string::npos);
}

TEST(Config, AJoiningBrokerHasSeedsAndNoBootstrap) {
  // Itself (node 2) and two seeds; it bootstraps no configuration.
  BrokerConfig c;
  const Status s = Load(Replace(kGood, "node_id = 2\n", "node_id = 2\njoin = true\n"), &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(c.join);
  ASSERT_NE(c.Self(), nullptr);
  const paxos::Config core = c.CoreConfig(1);
  EXPECT_TRUE(core.voters.empty());
  EXPECT_TRUE(core.bootstrap_members.empty());
  EXPECT_EQ(core.seeds, (std::vector<paxos::NodeId>{paxos::NodeId(1), paxos::NodeId(3)}));
  // Alone, it has no one to pull the log from.
  const std::string alone = R"(
node_id = 2
join = true
data_dir = "/tmp/x"
[security]
insecure = true
[[members]]
id = 2
peer = "127.0.0.1:9102"
client = "127.0.0.1:9202"
)";
  EXPECT_NE(Error(alone).find("join: [[members]] must list this broker"), std::string::npos);
  EXPECT_NE(Error(Replace(Learner(), "role = ", "join = true\nrole = ")).find("join: a learner"),
            std::string::npos);
  EXPECT_NE(Error(Replace(kGood, "node_id = 2\n", "node_id = 2\njoin = 1\n")).find("join:"),
            std::string::npos);
}

TEST(Config, LearnerAndRoleErrorsSayWhatToDo) {
  // A learner whose id is a member's.
  EXPECT_NE(Error(Replace(Learner(), "node_id = 4", "node_id = 3"))
                .find("node_id: 3 is a voting member's id; a learner needs an id of its own"),
            std::string::npos);
  // A voter whose id is not a member's.
  EXPECT_NE(Error(Replace(kGood, "node_id = 2", "node_id = 7"))
                .find("is not the id of any [[members]] entry (a broker outside [[members]] needs "
                      "role = \"learner\")"),
            std::string::npos);
  // A learner without, or with a bad, client endpoint.
  EXPECT_NE(Error(Replace(Learner(), "client = \"127.0.0.1:9204\"\n", ""))
                .find("client: required for a learner"),
            std::string::npos);
  EXPECT_NE(
      Error(Replace(Learner(), "\"127.0.0.1:9204\"", "\"nowhere\"")).find("client: 'nowhere'"),
      std::string::npos);
  EXPECT_NE(Error(Replace(Learner(), "\"127.0.0.1:9204\"", "\"127.0.0.1:9201\""))
                .find("client: '127.0.0.1:9201' is a voting member's endpoint"),
            std::string::npos);
  // A voter with a top-level client endpoint.
  EXPECT_NE(Error(Replace(kGood, "node_id = 2\n", "node_id = 2\nclient = \"127.0.0.1:9204\"\n"))
                .find("client: only a learner sets it"),
            std::string::npos);
  // Unknown roles, and a role that is not a string.
  EXPECT_NE(Error(Replace(Learner(), "\"learner\"", "\"observer\""))
                .find("role: 'observer' is not \"voter\" or \"learner\""),
            std::string::npos);
  EXPECT_NE(Error(Replace(Learner(), "\"learner\"", "1")).find("role: must be a string"),
            std::string::npos);
}

// Found by tests/fuzz (config): toml++ 3.3.0 reaches undefined behaviour on
// some non-ASCII characters where it expects whitespace. A file must be
// ASCII; the error names the line and column, and escapes still work.
TEST(Config, NonAsciiIsRefusedWithItsPlace) {
  BrokerConfig c;
  Status s = ParseConfig("node_id = 2\n\xc3\xa9 = 1\n", "f.toml", &c);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.message(),
            "f.toml:2: byte 0xC3 at column 1 is not ASCII; write other characters "
            "as \\uXXXX in a string");
  EXPECT_FALSE(ParseConfig("# caf\xc3\xa9\n", "f.toml", &c).ok());
  s = ParseConfig(Replace(kGood, "/tmp/x", "/tmp/\\u00e9t\\u00e9"), "f.toml", &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.data_dir, "/tmp/\xc3\xa9t\xc3\xa9");
}

TEST(Config, AMissingFileIsNamed) {
  BrokerConfig c;
  const Status s = LoadConfigFile("/nonexistent/ordo.toml", &c);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("/nonexistent/ordo.toml: cannot be read"), std::string::npos)
      << s.message();
}

TEST(Config, EndpointsParse) {
  std::string z;
  EXPECT_TRUE(ParseEndpoint("127.0.0.1:7201", &z));
  EXPECT_EQ(z, "tcp://127.0.0.1:7201");
  EXPECT_FALSE(ParseEndpoint("127.0.0.1", nullptr));
  EXPECT_FALSE(ParseEndpoint(":80", nullptr));
  EXPECT_FALSE(ParseEndpoint("h:0", nullptr));
  EXPECT_FALSE(ParseEndpoint("h:65536", nullptr));
  EXPECT_FALSE(ParseEndpoint("h:8o", nullptr));
}

// [[members]] (and metrics) are what others connect to; [bind] is what this
// broker binds. Without [bind] it binds what it advertises, and a host name
// (which ZeroMQ cannot bind) binds every interface.
TEST(Config, BindDefaultsToTheAdvertisedEndpointAndAHostNameBindsEveryInterface) {
  BrokerConfig c;
  ASSERT_TRUE(Load(kGood, &c).ok());
  EXPECT_EQ(c.PeerBindEndpoint(), "127.0.0.1:9102");
  EXPECT_EQ(c.ClientBindEndpoint(), "127.0.0.1:9202");
  EXPECT_EQ(c.MetricsBindEndpoint(), "127.0.0.1:9302");

  std::string named =
      Replace(kGood, "peer = \"127.0.0.1:9102\"", "peer = \"db2.example.net:9102\"");
  named = Replace(named, "client = \"127.0.0.1:9202\"", "client = \"localhost:9202\"");
  named = Replace(named, "metrics = \"127.0.0.1:9302\"", "metrics = \"db2:9302\"");
  ASSERT_TRUE(Load(named, &c).ok());
  EXPECT_EQ(c.Self()->peer, "db2.example.net:9102");  // advertised as written
  EXPECT_EQ(c.PeerBindEndpoint(), "0.0.0.0:9102");
  EXPECT_EQ(c.ClientBindEndpoint(), "0.0.0.0:9202");
  EXPECT_EQ(c.MetricsBindEndpoint(), "0.0.0.0:9302");

  const std::string bound = named +
                            "[bind]\npeer = \"10.1.2.3:7000\"\nclient = \"*:9202\"\n"
                            "metrics = \"127.0.0.1:9302\"\n";
  const Status s = Load(bound, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.bind.peer, "10.1.2.3:7000");
  EXPECT_EQ(c.PeerBindEndpoint(), "10.1.2.3:7000");   // a port forward may change the port
  EXPECT_EQ(c.ClientBindEndpoint(), "0.0.0.0:9202");  // `*` spelled so the metrics server takes it
  EXPECT_EQ(c.MetricsBindEndpoint(), "127.0.0.1:9302");
  EXPECT_EQ(c.Self()->client, "localhost:9202");  // what redirects and status report
  // Metrics off: nothing to bind, whatever [bind] says (--metrics '').
  c.metrics.clear();
  EXPECT_EQ(c.MetricsBindEndpoint(), "");
  EXPECT_TRUE(ValidateConfig(c).ok());

  EXPECT_EQ(BindEndpointFor("lo:7101", ""), "lo:7101");  // an interface's name binds as it is
  EXPECT_EQ(BindEndpointFor("*:7101", ""), "0.0.0.0:7101");
  EXPECT_FALSE(IsHostName("127.0.0.1"));
  EXPECT_FALSE(IsHostName("[::1]"));
  EXPECT_FALSE(IsHostName("lo"));
  EXPECT_TRUE(IsHostName("localhost"));
}

TEST(Config, BindErrorsNameTheField) {
  EXPECT_NE(Error(std::string(kGood) + "[bind]\npeer = \"0.0.0.0\"\n")
                .find("bind.peer: '0.0.0.0' is not HOST:PORT"),
            std::string::npos);
  EXPECT_NE(Error(std::string(kGood) + "[bind]\nclient = \"db2:9202\"\n")
                .find("bind.client: 'db2' is a host name"),
            std::string::npos);
  EXPECT_NE(
      Error(std::string(kGood) + "[bind]\nmetrics = 9302\n").find("bind.metrics: must be a string"),
      std::string::npos);
  EXPECT_NE(
      Error(std::string(kGood) + "[bind]\nport = \"0.0.0.0:1\"\n").find("bind.port: unknown field"),
      std::string::npos);
  EXPECT_NE(Error("bind = \"0.0.0.0\"\n" + std::string(kGood)).find("bind: must be a table"),
            std::string::npos);
  EXPECT_NE(Error(Learner() + "[bind]\npeer = \"0.0.0.0:9102\"\n").find("bind.peer: a learner"),
            std::string::npos);
  // Two endpoints of this broker on one port, one of them on every interface.
  EXPECT_NE(Error(std::string(kGood) + "[bind]\nclient = \"0.0.0.0:9102\"\n")
                .find("peer endpoint (127.0.0.1:9102) and its client endpoint (0.0.0.0:9102)"),
            std::string::npos);
  EXPECT_NE(Error(std::string(kGood) + "[bind]\nmetrics = \"127.0.0.1:9202\"\n")
                .find("would bind the same port"),
            std::string::npos);
  // An advertised address that is not this machine's (NAT) points at [bind].
  EXPECT_NE(BindErrorText("192.0.2.1:7101", EADDRNOTAVAIL).find("[bind]"), std::string::npos);
  // The same port on two addresses is fine.
  BrokerConfig c;
  const Status s = Load(std::string(kGood) + "[bind]\nmetrics = \"127.0.0.2:9202\"\n", &c);
  EXPECT_TRUE(s.ok()) << s.message();
}

TEST(Config, ALearnerBindsItsClientEndpoint) {
  BrokerConfig c;
  ASSERT_TRUE(
      Load(Replace(Learner(), "client = \"127.0.0.1:9204\"", "client = \"reader4:9204\""), &c)
          .ok());
  EXPECT_EQ(c.ClientEndpoint(), "reader4:9204");
  EXPECT_EQ(c.ClientBindEndpoint(), "0.0.0.0:9204");
  EXPECT_EQ(c.PeerBindEndpoint(), "");
  ASSERT_TRUE(Load(Learner() + "[bind]\nclient = \"0.0.0.0:9999\"\n", &c).ok());
  EXPECT_EQ(c.ClientBindEndpoint(), "0.0.0.0:9999");
}

// The access file's [[clients]]: keys with known permissions, each key once
// and no member's or learner's.
TEST(Config, AccessFileClientsLoadWithTheirPermissionsAndErrorsNameTheEntry) {
  BrokerConfig c;
  ASSERT_TRUE(Load(kGood, &c).ok());
  static std::mt19937_64 rng(std::random_device{}());
  const auto path =
      std::filesystem::temp_directory_path() / ("ordo-access-" + std::to_string(rng()) + ".toml");
  auto load = [&](const std::string& text) {
    std::ofstream(path) << text;
    StatusOr<AccessList> a = LoadAccessFile(path.string(), c);
    std::filesystem::remove(path);
    return a;
  };
  const std::string kClient = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  const std::string kOther = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID";
  StatusOr<AccessList> ok = load("[[clients]]\nname = \"reader\"\npublic_key = \"" + kClient +
                                 "\"\npermissions = [\"subscribe\"]\n[[clients]]\npublic_key = \"" +
                                 kOther + "\"\npermissions = [\"publish\", \"admin\"]\n");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  ASSERT_EQ(ok.value().clients.size(), 2u);
  EXPECT_EQ(ok.value().clients.at(kClient).name, "reader");
  EXPECT_EQ(ok.value().clients.at(kClient).permissions, kPermissionSubscribe);
  EXPECT_EQ(ok.value().clients.at(kOther).permissions, kPermissionPublish | kPermissionAdmin);

  auto error = [&](const std::string& text) {
    StatusOr<AccessList> a = load(text);
    EXPECT_FALSE(a.ok()) << text;
    return a.ok() ? std::string() : a.status().message();
  };
  EXPECT_NE(error("[[clients]]\npublic_key = \"" + kClient + "\"\npermissions = [\"write\"]\n")
                .find("clients[0].permissions: \"write\" is not one of"),
            std::string::npos);
  EXPECT_NE(error("[[clients]]\npublic_key = \"" + kClient + "\"\n").find("clients[0].permissions"),
            std::string::npos);
  EXPECT_NE(error("[[clients]]\npublic_key = \"short\"\npermissions = []\n")
                .find("clients[0].public_key"),
            std::string::npos);
  const std::string twice = "[[clients]]\npublic_key = \"" + kClient + "\"\npermissions = []\n";
  EXPECT_NE(error(twice + twice).find("clients[1].public_key: appears twice"), std::string::npos);
  EXPECT_NE(
      error("[[clients]]\npublic_key = \"" + c.members[0].public_key + "\"\npermissions = []\n")
          .find("clients[0].public_key"),
      std::string::npos);
  EXPECT_NE(error("[[clients]]\npublic_key = \"" + kClient + "\"\npermissions = []\nrole = 1\n")
                .find("clients[0].role: unknown field"),
            std::string::npos);
}

}  // namespace
}  // namespace ordo::broker
