// CurveZMQ keys and the files that hold them, for brokers and clients alike.
//
// A key is 32 bytes, written as 40 characters of Z85 (ZeroMQ's text form).
// A key file is TOML, written by `ordo keygen` (mode 0600):
//
//   public_key = "Z85..."
//   secret_key = "Z85..."
//   # a client's credentials may also name the brokers' public keys:
//   [broker_keys]
//   "127.0.0.1:7101" = "Z85..."
//
// A file holding a secret key is refused when its group or others may read
// it (as ssh refuses such a private key): the secret would not be one.
//
// Thread rules: free functions, safe from any thread.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "base/status.h"

namespace ordo {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters
};

struct KeyFile {
  CurveKeyPair pair;
  // Broker client endpoint (HOST:PORT) -> its public key.
  std::map<std::string, std::string> broker_keys;
};

// True when `key` is 40 characters of Z85 that decode to 32 bytes.
bool IsCurveKey(std::string_view key);

// A new key pair from libsodium's random source (through libzmq).
StatusOr<CurveKeyPair> GenerateKeyPair();

// Writes a key file (mode 0600, replacing `path` atomically). Refuses to
// replace an existing file unless `overwrite`.
Status WriteKeyFile(const std::string& path, const KeyFile& file, bool overwrite);

// Reads and checks a key file: the mode, both keys, and that the secret key
// is the public key's.
StatusOr<KeyFile> LoadKeyFile(const std::string& path);

}  // namespace ordo
