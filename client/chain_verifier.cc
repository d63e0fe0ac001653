#include "client/internal/chain_verifier.h"

#include <cstring>

namespace ordo::client_internal {
namespace {

bool ReadValue(const flatbuffers::Vector<uint8_t>* bytes, ChainValue* out) {
  if (bytes == nullptr || bytes->size() != ChainValue::kBytes) return false;
  std::memcpy(out->bytes.data(), bytes->data(), ChainValue::kBytes);
  return true;
}

std::string Range(uint64_t first, uint32_t count) {
  return "offsets " + std::to_string(first) + " to " + std::to_string(first + count - 1);
}

std::string_view ViewOf(const flatbuffers::Vector<uint8_t>* v) {
  return v == nullptr ? std::string_view()
                      : std::string_view(reinterpret_cast<const char*>(v->data()), v->size());
}

}  // namespace

uint64_t ChainVerifier::current_end() const {
  return current_ ? current_->point.first_offset + current_->point.count : 0;
}

void ChainVerifier::Anchor(uint64_t offset, const ChainValue& value) {
  verified_offset_ = offset;
  verified_chain_ = value;
  current_.reset();
}

ChainVerifier::Step ChainVerifier::Fail(std::string why) {
  error_ = std::move(why);
  current_.reset();
  return Step::kFailed;
}

ChainVerifier::Step ChainVerifier::BeginFrame(const wire::Deliver& deliver) {
  points_.clear();
  next_point_ = 0;
  const auto* messages = deliver.messages();
  if (messages == nullptr || messages->size() == 0) return Step::kPending;
  const auto* points = deliver.chain();
  if (points == nullptr || points->size() == 0) {
    return Fail("messages from offset " + std::to_string(messages->Get(0)->offset()) +
                " came without their chain points (a broker older than the chain), so they "
                "cannot be verified");
  }
  points_.reserve(points->size());
  for (const wire::ChainPoint* p : *points) {
    Point point{p->instance(), p->first_offset(), p->count(), {}, {}};
    if (!ReadValue(p->before(), &point.before) || !ReadValue(p->after(), &point.after)) {
      return Fail("the chain point of instance " + std::to_string(point.instance) +
                  " has no 32-byte chain values (its broker's record predates the chain)");
    }
    if (point.count == 0 || point.first_offset + point.count < point.first_offset) {
      return Fail("the chain point of instance " + std::to_string(point.instance) +
                  " covers no offsets");
    }
    if (!points_.empty()) {
      const Point& prev = points_.back();
      if (point.instance <= prev.instance || point.first_offset != prev.first_offset + prev.count ||
          point.before != prev.after) {
        return Fail("the chain point of instance " + std::to_string(point.instance) +
                    " does not go on from the one of instance " + std::to_string(prev.instance) +
                    " before it");
      }
    }
    points_.push_back(point);
  }
  const Point& first = points_.front();
  if (current_) {
    // The rest of the instance under way: the same point as before.
    if (!(first == current_->point)) {
      return Fail("instance " + std::to_string(current_->point.instance) + " (" +
                  Range(current_->point.first_offset, current_->point.count) +
                  "): this frame's chain point differs from the one it started with");
    }
    next_point_ = 1;
  } else if (verified_offset_ &&
             (first.first_offset != *verified_offset_ || first.before != verified_chain_)) {
    return Fail("at offset " + std::to_string(*verified_offset_) +
                " the broker's chain does not go on from the verified one (" +
                verified_chain_.Hex() + "): it starts instance " + std::to_string(first.instance) +
                " at offset " + std::to_string(first.first_offset) + " from " + first.before.Hex());
  }
  return Step::kPending;
}

ChainVerifier::Step ChainVerifier::Add(const wire::StreamMessage& m) {
  if (!current_) {
    if (next_point_ >= points_.size()) {
      return Fail("the message at offset " + std::to_string(m.offset()) +
                  " is outside the frame's chain points");
    }
    const Point& point = points_[next_point_++];
    if (m.offset() != point.first_offset) {
      return Fail("the message at offset " + std::to_string(m.offset()) + " is not the first of " +
                  "instance " + std::to_string(point.instance) + " (" +
                  Range(point.first_offset, point.count) + "), so it cannot be verified");
    }
    current_.emplace(point);
  }
  Current& c = *current_;
  if (m.offset() != c.point.first_offset + c.fed) {
    return Fail("the message at offset " + std::to_string(m.offset()) + " where offset " +
                std::to_string(c.point.first_offset + c.fed) + " of instance " +
                std::to_string(c.point.instance) + " was due");
  }
  c.step.Add(m.producer(), m.sequence(), ViewOf(m.key()), ViewOf(m.payload()));
  if (++c.fed < c.point.count) return Step::kPending;
  const ChainValue got = c.step.Finish();
  if (got != c.point.after) {
    return Fail("instance " + std::to_string(c.point.instance) + " (" +
                Range(c.point.first_offset, c.point.count) + "): its messages hash to " +
                got.Hex() + ", the broker's chain says " + c.point.after.Hex() +
                ": what it served is not what was agreed");
  }
  verified_offset_ = c.point.first_offset + c.point.count;
  verified_chain_ = got;
  last_verified_ = c.point;
  current_.reset();
  return Step::kVerified;
}

}  // namespace ordo::client_internal
