#include "paxos/value.h"

namespace ORDO_PAXOS_NAMESPACE {

Bytes Bytes::Copy(std::string_view s) {
  if (s.empty()) return Bytes();
  auto copy = std::make_shared<const std::string>(s);
  const std::string_view view(*copy);
  return Shared(std::move(copy), view);
}

size_t Value::ByteSize() const {
  // Fixed overhead per value and per message, roughly what FlatBuffers spends.
  size_t n = 32;
  for (const ClientMessage& m : messages) n += 32 + m.key.size() + m.payload.size();
  return n;
}

ValuePtr MakeNoop(Ballot origin) {
  auto v = std::make_shared<Value>();
  v->kind = ValueKind::kNoop;
  v->origin = origin;
  return v;
}

ValuePtr MakeBarrier(Ballot origin) {
  auto v = std::make_shared<Value>();
  v->kind = ValueKind::kBarrier;
  v->origin = origin;
  return v;
}

ValuePtr MakeBatch(Ballot origin, std::vector<ClientMessage> messages) {
  auto v = std::make_shared<Value>();
  v->kind = ValueKind::kBatch;
  v->origin = origin;
  v->messages = std::move(messages);
  return v;
}

bool SameEntry(const Entry& a, const Entry& b) {
  if (a.instance != b.instance || a.ballot != b.ballot) return false;
  if (a.value == b.value) return true;
  if (!a.value || !b.value) return false;
  return *a.value == *b.value;
}

}  // namespace ordo::paxos
