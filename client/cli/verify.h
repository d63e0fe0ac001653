// `ordo verify`: the stream's hash chain checked on every broker and
// compared across them (docs/operations.md, "Verifying the stream").
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "ordo/client.h"

namespace ordo::cli {

struct VerifyFlags {
  std::optional<uint64_t> from;  // default: the highest earliest offset of the brokers
  std::optional<uint64_t> to;    // default: the lowest head of the brokers
  bool head = false;             // print the current head (OFFSET<TAB>CHAIN) and stop
  std::string expect;            // with to: the chain value every broker must have there
};

// Reads [from, to) from each broker in options.brokers alone, checking its
// chain, and prints ENDPOINT<TAB>END<TAB>CHAIN<TAB>VERDICT per broker (END:
// where the chain value holds, the end of the instance holding to - 1).
// 0: every broker agrees (and has `expect`); 1: they differ, or one fails
// its own chain (the first differing offset is printed); 3 when a broker
// did not answer or holds less than the range; 2 for bad flags.
int Verify(const ClientOptions& options, const VerifyFlags& flags);

}  // namespace ordo::cli
