#include "base/keys.h"

#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "base/durable_file.h"
#include "base/toml_file.h"

namespace ordo {

namespace {
constexpr size_t kZ85KeyChars = 40;

std::string Errno(const std::string& what) { return what + ": " + std::strerror(errno); }
}  // namespace

bool IsCurveKey(std::string_view key) {
  if (key.size() != kZ85KeyChars) return false;
  const std::string text(key);
  uint8_t bytes[32];
  return zmq_z85_decode(bytes, text.c_str()) != nullptr;
}

StatusOr<CurveKeyPair> GenerateKeyPair() {
  char public_key[kZ85KeyChars + 1] = {};
  char secret_key[kZ85KeyChars + 1] = {};
  if (zmq_curve_keypair(public_key, secret_key) != 0) {
    return Status::Error(std::string("generating a CURVE key pair: ") + zmq_strerror(zmq_errno()) +
                         " (is libzmq built with libsodium?)");
  }
  return CurveKeyPair{public_key, secret_key};
}

Status WriteKeyFile(const std::string& path, const KeyFile& file, bool overwrite) {
  if (!overwrite && ::access(path.c_str(), F_OK) == 0) {
    return Status::Error(path + " exists (keys are never replaced by accident)");
  }
  std::ostringstream text;
  text << "# An Ordo key pair (CurveZMQ, Z85), written by `ordo keygen`.\n"
       << "# The secret key stays in this file: keep it mode 0600. Give out the public key.\n"
       << "public_key = \"" << file.pair.public_key << "\"\n"
       << "secret_key = \"" << file.pair.secret_key << "\"\n";
  if (!file.broker_keys.empty()) {
    text << "\n# The brokers' public keys, by client endpoint.\n[broker_keys]\n";
    for (const auto& [endpoint, key] : file.broker_keys) {
      text << '"' << endpoint << "\" = \"" << key << "\"\n";
    }
  }
  return WriteFileDurably(path, text.str(), 0600);
}

StatusOr<KeyFile> LoadKeyFile(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return Status::Error(Errno("key file " + path));
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::Error("key file " + path + " may be read by others (mode " + mode +
                         "): its secret key is not secret. Run chmod 600 " + path +
                         " (and make a new key pair if others did read it)");
  }
  toml::table t;
  if (Status s = ParseTomlFile(path, &t); !s.ok()) return s;
  KeyFile out;
  for (const auto& [key, value] : t) {
    const std::string k(key.str());
    if (k == "public_key" || k == "secret_key") {
      const std::optional<std::string> v = value.value<std::string>();
      if (!v || !value.is_string() || !IsCurveKey(*v)) {
        return Status::Error(path + ": " + k + " must be a key of 40 Z85 characters");
      }
      (k == "public_key" ? out.pair.public_key : out.pair.secret_key) = *v;
    } else if (k == "broker_keys") {
      const toml::table* brokers = value.as_table();
      if (!brokers) return Status::Error(path + ": broker_keys must be a table");
      for (const auto& [endpoint, bk] : *brokers) {
        const std::optional<std::string> v = bk.value<std::string>();
        if (!v || !bk.is_string() || !IsCurveKey(*v)) {
          return Status::Error(path + ": broker_keys.\"" + std::string(endpoint.str()) +
                               "\" must be a key of 40 Z85 characters");
        }
        out.broker_keys[std::string(endpoint.str())] = *v;
      }
    } else {
      return Status::Error(path + ": " + k + ": unknown field");
    }
  }
  if (out.pair.public_key.empty() || out.pair.secret_key.empty()) {
    return Status::Error(path + ": needs public_key and secret_key (ordo keygen --out FILE)");
  }
  char derived[kZ85KeyChars + 1] = {};
  if (zmq_curve_public(derived, out.pair.secret_key.c_str()) != 0 ||
      out.pair.public_key != derived) {
    return Status::Error(path + ": secret_key is not public_key's secret key");
  }
  return out;
}

}  // namespace ordo
