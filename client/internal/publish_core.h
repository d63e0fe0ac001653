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
  // The next broker of the list (not the one just given up on, when it is
  // the next one: after a redirect the rotation goes on from where it was).
  void Next() {
    left_ = Target();
    Advance();
  }
  // NotLeader with a named leader: go there, unless it is the broker this
  // client just gave up on. A follower cut off with a leader that lost its
  // quorum still names it; going back would bounce between the two for as
  // long as the partition lasts, so the rotation goes on through the list
  // instead, towards the side that can elect a leader. Once: the next such
  // redirect is followed (the named broker may be back), and always when
  // the list holds nothing else to try.
  void RedirectTo(const std::string& leader) {
    if (brokers_->size() > 1 && !left_.empty() && ToZmqEndpoint(leader) == ToZmqEndpoint(left_)) {
      Advance();
      left_.clear();
      return;
    }
    redirect_target_ = leader;
  }

 private:
  void Advance() {
    redirect_target_.clear();
    index_ = (index_ + 1) % brokers_->size();
    if (brokers_->size() > 1 && ToZmqEndpoint((*brokers_)[index_]) == ToZmqEndpoint(left_)) {
      index_ = (index_ + 1) % brokers_->size();
    }
  }

  const std::vector<std::string>* brokers_;
  size_t index_ = 0;
  // Where a NotLeader reply sent us; it replaces brokers[index_] until the
  // next switch. Empty: none.
  std::string redirect_target_;
  std::string left_;  // the broker last given up on (silent, refused, unreachable)
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
