// Internal to the client library (not API): the pieces of exactly-once
// publishing (docs/protocol.md, "Publishing") that the synchronous Publisher
// and the AsyncPublisher share: where the next request goes (round robin and
// NotLeader redirects) and how a Publish request is laid out.
#pragma once

#include <flatbuffers/flatbuffers.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "client/internal/connection.h"

namespace ordo::client_internal {

// One request may hold at most this many key and payload bytes. Far above
// any broker's frame limit (16 MiB by default; the broker answers TooLarge
// above its own), but below FlatBuffers' 2 GiB buffer limit, which the
// builder would otherwise hit with an assertion instead of an error.
inline constexpr uint64_t kRequestBytesMax = uint64_t{1} << 30;
// Builder bytes per message beyond key and payload (table, vtable, vector
// headers), to reserve the builder once.
inline constexpr size_t kMessageOverheadBytes = 64;

// `requested`, or for 0 ("pick one") a random non-zero id: a random id makes
// two producers colliding (and so deduplicating each other's messages)
// vanishingly unlikely.
inline uint64_t ProducerIdOrRandom(uint64_t requested) {
  uint64_t id = requested;
  while (id == 0) id = RandomU64();
  return id;
}

// The broker the next publish attempt goes to: round robin over the list,
// except that a NotLeader reply naming a leader sends it there, even when
// that endpoint is not in the list.
class BrokerRotation {
 public:
  // `brokers` must outlive this object and not be empty when Target() is
  // called.
  explicit BrokerRotation(const std::vector<std::string>* brokers) : brokers_(brokers) {}

  const std::string& Target() const {
    return redirect_target_.empty() ? (*brokers_)[index_] : redirect_target_;
  }
  // The next broker of the list.
  void Next() {
    redirect_target_.clear();
    index_ = (index_ + 1) % brokers_->size();
  }
  // NotLeader with a named leader: go there. Keeps the rotation going from
  // the leader's place when it is in the list.
  void RedirectTo(const std::string& leader) {
    redirect_target_ = leader;
    const std::string wanted = ToZmqEndpoint(leader);
    for (size_t i = 0; i < brokers_->size(); ++i) {
      if (ToZmqEndpoint((*brokers_)[i]) == wanted) {
        index_ = i;
        redirect_target_.clear();
        return;
      }
    }
  }

 private:
  const std::vector<std::string>* brokers_;
  size_t index_ = 0;
  // Where a NotLeader reply sent us, when that endpoint is not in the list;
  // it replaces brokers[index_] until the next switch. Empty: none.
  std::string redirect_target_;
};

// Builds one Publish request of the messages `include` accepts among
// [first, last), each with .sequence, .key and .payload. An empty key is sent
// absent: the schema's "unkeyed".
template <typename Iterator, typename Include>
void BuildPublishRequest(flatbuffers::FlatBufferBuilder& builder, uint64_t request_id,
                         uint64_t producer_id, Iterator first, Iterator last, Include include,
                         std::vector<flatbuffers::Offset<wire::ClientMessage>>& scratch) {
  BuildEnvelope(builder, request_id, wire::Body::Publish, [&](auto& b) {
    scratch.clear();
    for (Iterator it = first; it != last; ++it) {
      if (!include(*it)) continue;
      flatbuffers::Offset<flatbuffers::Vector<uint8_t>> key = 0;
      if (!it->key.empty()) {
        key = b.CreateVector(reinterpret_cast<const uint8_t*>(it->key.data()), it->key.size());
      }
      const auto payload =
          b.CreateVector(reinterpret_cast<const uint8_t*>(it->payload.data()), it->payload.size());
      scratch.push_back(wire::CreateClientMessage(b, producer_id, it->sequence, key, payload));
    }
    return wire::CreatePublish(b, b.CreateVector(scratch)).Union();
  });
}

}  // namespace ordo::client_internal
