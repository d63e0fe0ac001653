#include "paxos/value.h"

#include <algorithm>

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
  for (const Member& m : membership.members) {
    n += 32 + m.peer.size() + m.client.size() + m.public_key.size();
  }
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

ValuePtr MakeConfig(Ballot origin, Membership membership) {
  auto v = std::make_shared<Value>();
  v->kind = ValueKind::kConfig;
  v->origin = origin;
  std::sort(membership.members.begin(), membership.members.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
  v->membership = std::move(membership);
  return v;
}

const Member* Membership::Find(NodeId id) const {
  for (const Member& m : members) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

bool Membership::IsVoter(NodeId id) const {
  const Member* m = Find(id);
  return m != nullptr && m->voter;
}

std::vector<NodeId> Membership::Voters() const {
  std::vector<NodeId> out;
  for (const Member& m : members) {
    if (m.voter) out.push_back(m.id);
  }
  return out;
}

bool SameEntry(const Entry& a, const Entry& b) {
  if (a.instance != b.instance || a.ballot != b.ballot) return false;
  if (a.value == b.value) return true;
  if (!a.value || !b.value) return false;
  return *a.value == *b.value;
}

}  // namespace ordo::paxos
