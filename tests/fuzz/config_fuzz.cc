// Fuzz target: every TOML file a broker reads, toml++ included: its config
// (broker/config.h: ParseConfig, the text LoadConfigFile reads, then
// ValidateConfig), its access file (broker/access.h: LoadAccessFile,
// reloaded on SIGHUP) and a key file (base/keys.h: LoadKeyFile). Each input
// is read as all three. This program compiles those readers and
// base/toml_file.cc with toml++ header-only (CMakeLists.txt), so the TOML
// parser is instrumented and sanitized too.
//
// Properties: any text gives ok or an error with a message (no exception
// escapes, no crash); parsing is deterministic; a config that validates
// yields the core's config and the limits the broker derives from it; an
// access file that loads lets in only well-formed keys of non-members; a
// key file that loads holds a key pair.
#include <unistd.h>
#include <zmq.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "base/keys.h"
#include "broker/access.h"
#include "broker/config.h"
#include "tests/fuzz/fuzz.h"

namespace ordo::fuzz {
namespace {

// Valid CurveZMQ keys (Z85), as in broker/ordo.example.toml.
constexpr const char* kKeys[] = {"oaU}vlG&Lz&]Z9zpp<+h^ky(lTBQY7!4rJyhk)SF",
                                 "T=Z/4YXyvSwajF=+6(+]D*v@x}/JeIvrsC<V}DV>",
                                 "HQxNzNFoZs0Y5AQ>-(VM<ru<<^F#P$f-)PZjG0Nb"};

// [[members]] as tests/testing/local_cluster.cc and scripts/cluster write it.
std::string Members() {
  std::string out;
  for (int m = 1; m <= 3; ++m) {
    const std::string n = std::to_string(m);
    out += "[[members]]\nid = " + n + "\npeer = \"127.0.0.1:710" + n +
           "\"\nclient = \"127.0.0.1:720" + n + "\"\npublic_key = \"" + kKeys[m - 1] + "\"\n";
  }
  return out;
}

std::string VoterConfig() {
  return "node_id = 2\ndata_dir = \"data/node2\"\nmetrics = \"127.0.0.1:7302\"\n"
         "[security]\nkey_file = \"keys/node2.key\"\naccess_file = \"keys/access.toml\"\n" +
         Members();
}

// A key file as `ordo keygen` writes it: the real writer, a fixed pair.
std::string KeyFileText() {
  KeyFile file;
  file.pair.secret_key = kKeys[0];  // any 32 bytes are a Curve25519 secret
  char public_key[41] = {};
  ORDO_FUZZ_CHECK(zmq_curve_public(public_key, file.pair.secret_key.c_str()) == 0);
  file.pair.public_key = public_key;
  file.broker_keys["127.0.0.1:7201"] = kKeys[1];
  char dir_template[] = "/tmp/ordo-fuzz-keys-XXXXXX";
  const char* dir = ::mkdtemp(dir_template);
  ORDO_FUZZ_CHECK(dir != nullptr);
  const std::string path = std::string(dir) + "/client.key";
  ORDO_FUZZ_CHECK_OK(WriteKeyFile(path, file, /*overwrite=*/false));
  ORDO_FUZZ_CHECK_OK(LoadKeyFile(path).status());
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  std::remove(path.c_str());
  ::rmdir(dir);
  return text;
}

void CheckConfig(std::string_view text) {
  broker::BrokerConfig config;
  const Status s = broker::ParseConfig(text, "fuzz.toml", &config);
  ORDO_FUZZ_CHECK(s.ok() || !s.message().empty());
  broker::BrokerConfig again;
  const Status s2 = broker::ParseConfig(text, "fuzz.toml", &again);
  ORDO_FUZZ_CHECK(s2.ok() == s.ok() && s2.message() == s.message());
  if (!s.ok()) return;
  ORDO_FUZZ_CHECK(config == again);
  const Status valid = broker::ValidateConfig(config);
  ORDO_FUZZ_CHECK(valid.ok() || !valid.message().empty());
  if (!valid.ok()) return;
  // What the broker derives from a valid config.
  const paxos::Config core = config.CoreConfig(1);
  ORDO_FUZZ_CHECK(core.voters.size() == config.members.size());
  ORDO_FUZZ_CHECK(core.accept_entries_max >= 1);
  ORDO_FUZZ_CHECK(config.PeerFrameBytesMax() >= config.frame_bytes_max);
  std::string address;
  ORDO_FUZZ_CHECK(broker::ParseEndpoint(config.ClientEndpoint(), &address));
}

void CheckAccessFile(std::span<const uint8_t> text) {
  static const broker::BrokerConfig kConfig = [] {
    broker::BrokerConfig c;
    ORDO_FUZZ_CHECK_OK(broker::ParseConfig(VoterConfig(), "voter.toml", &c));
    ORDO_FUZZ_CHECK_OK(broker::ValidateConfig(c));
    return c;
  }();
  static MemoryFile file("ordo-fuzz-access");
  const StatusOr<broker::AccessList> access = broker::LoadAccessFile(file.Write(text), kConfig);
  if (!access.ok()) {
    ORDO_FUZZ_CHECK(!access.status().message().empty());
    return;
  }
  for (const auto& [key, id] : access.value().learners) {
    ORDO_FUZZ_CHECK(IsCurveKey(key));
    ORDO_FUZZ_CHECK(id != 0 && kConfig.Find(id) == nullptr);
  }
  for (const auto& [key, grant] : access.value().clients) {
    ORDO_FUZZ_CHECK(IsCurveKey(key));
    ORDO_FUZZ_CHECK(access.value().learners.count(key) == 0);
    for (const broker::Member& m : kConfig.members) ORDO_FUZZ_CHECK(m.public_key != key);
    ORDO_FUZZ_CHECK((grant.permissions & ~7) == 0);
  }
}

void CheckKeyFile(std::span<const uint8_t> text) {
  static MemoryFile file("ordo-fuzz-key", 0600);  // a key file others may read is refused
  const StatusOr<KeyFile> keys = LoadKeyFile(file.Write(text));
  if (!keys.ok()) {
    ORDO_FUZZ_CHECK(!keys.status().message().empty());
    return;
  }
  ORDO_FUZZ_CHECK(IsCurveKey(keys.value().pair.public_key));
  ORDO_FUZZ_CHECK(IsCurveKey(keys.value().pair.secret_key));
  for (const auto& [endpoint, key] : keys.value().broker_keys) ORDO_FUZZ_CHECK(IsCurveKey(key));
}

}  // namespace

std::vector<Seed> Seeds() {
  // A learner's key (the CurveZMQ documentation's example server key).
  static constexpr char kLearnerKey[] = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
  ORDO_FUZZ_CHECK(IsCurveKey(kLearnerKey));
  std::ifstream example(std::string(ORDO_SOURCE_DIR) + "/broker/ordo.example.toml");
  ORDO_FUZZ_CHECK(example.good());
  const std::string example_text((std::istreambuf_iterator<char>(example)), {});
  return {
      {"example", example_text},
      {"voter", VoterConfig()},
      {"learner",
       "node_id = 4\nrole = \"learner\"\nclient = \"127.0.0.1:7204\"\n"
       "data_dir = \"data/learner4\"\nmetrics = \"\"\n[security]\n"
       "key_file = \"keys/learner4.key\"\n" +
           Members()},
      {"insecure-sections",
       "node_id = 1\ncluster_id = \"c-1.x\"\ndata_dir = \"d\"\nlog_level = \"warn\"\n"
       "[security]\ninsecure = true\n"
       "[timing]\ntick_ms = 5\nelection_timeout_ticks = 20\n"
       "heartbeat_interval_ticks = 4\nretransmit_ticks = 6\nfetch_timeout_ticks = 9\n"
       "[batching]\nwindow_instances_max = 32\nbatch_messages_max = 100\n"
       "batch_bytes_max = 65536\npending_bytes_max = 1048576\n"
       "[limits]\nframe_bytes_max = 1048576\nmessage_bytes_max = 4096\n"
       "subscriber_credit_max = 1000\n[storage]\nmap_size_bytes = 1073741824\n"
       "[retention]\ninstances = 1000\nbytes = 0\nage_seconds = 60\n"
       "snapshot_interval_instances = 100\nsnapshot_chunk_bytes = 4096\n"
       "snapshot_send_bytes_per_sec = 1000000\n"
       "[[members]]\nid = 1\npeer = \"127.0.0.1:7101\"\nclient = \"127.0.0.1:7201\"\n"},
      // As scripts/cluster config writes it: host names advertised, every
      // interface bound.
      {"hosts-bind",
       "node_id = 2\ndata_dir = \"/var/lib/ordo\"\nmetrics = \"db2:7302\"\n"
       "[bind]\npeer = \"0.0.0.0:7102\"\nclient = \"*:7202\"\nmetrics = \"0.0.0.0:7302\"\n"
       "[security]\ninsecure = true\n"
       "[[members]]\nid = 1\npeer = \"db1:7101\"\nclient = \"db1:7201\"\n"
       "[[members]]\nid = 2\npeer = \"db2:7102\"\nclient = \"db2:7202\"\n"
       "[[members]]\nid = 3\npeer = \"10.0.0.3:7103\"\nclient = \"10.0.0.3:7203\"\n"},
      {"access", std::string("[[learners]]\nid = 4\npublic_key = \"") + kLearnerKey + "\"\n"},
      {"access-clients", std::string("[[clients]]\nname = \"admin\"\npublic_key = \"") +
                             kLearnerKey +
                             "\"\npermissions = [\"publish\", \"subscribe\", \"admin\"]\n"},
      {"key-file", KeyFileText()},
  };
}

}  // namespace ordo::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> text(data, size);
  ordo::fuzz::CheckConfig({reinterpret_cast<const char*>(data), size});
  ordo::fuzz::CheckAccessFile(text);
  ordo::fuzz::CheckKeyFile(text);
  return 0;
}
