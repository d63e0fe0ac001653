// What the targets of the broker's decoders share: checks of a decoded
// message, value or journal body, and the values their seeds carry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "paxos/message.h"
#include "paxos/value.h"

namespace ordo::fuzz {

// Deep equality of two consensus messages (values by content).
bool SameMessage(const paxos::Message& a, const paxos::Message& b);

// The key and payload bytes of a value, and of a message's entries: what
// codec.h's step 6 bounds by the input's size.
size_t ContentBytes(const paxos::Value& value);
size_t ContentBytes(const paxos::Message& message);

// `record` with its 4-byte little-endian CRC32C prefix rewritten to match
// the rest, the CRC extending `initial` (a key's CRC, for records whose
// checksum covers their key): so that mutations reach the checks behind
// the checksum. Shorter than the prefix: returned as it is.
std::vector<uint8_t> WithMatchingChecksum(std::span<const uint8_t> record, uint32_t initial = 0);

// Parses a journal record's body operation by operation, as LmdbStore
// replays it (ParseJournalOp), checking that each operation lies within the
// body, moves forward and is the writer's encoding of itself, until the end
// of the body or a typed refusal. Returns how many operations it parsed.
size_t CheckJournalOps(std::span<const uint8_t> body);

// One entry of every value kind: a batch with binary keys and payloads
// (empty ones, zero bytes, extreme producer and sequence), a no-op, a
// barrier and an empty batch. Small: seeds stay far below libFuzzer's
// default input size.
std::vector<paxos::Entry> SampleEntries();
// A membership of two voters and a learner (with keys), and a
// configuration entry carrying it.
paxos::Membership SampleMembership();
paxos::Entry SampleConfigEntry();

}  // namespace ordo::fuzz
