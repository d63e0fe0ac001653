#include "client/internal/deliver.h"

#include "client/internal/connection.h"

namespace ordo::client_internal {

DeliverVerdict ValidateDeliver(const wire::Deliver& deliver, size_t frame_bytes,
                               const DeliverExpectation& expected) {
  DeliverVerdict verdict;
  if (!DeliverSizeIsPlausible(deliver, frame_bytes)) {
    verdict.error = DeliverError::kInflated;
    verdict.message = "a Deliver whose keys and payloads add up to more than its " +
                      std::to_string(frame_bytes) + "-byte frame";
    return verdict;
  }
  const auto* messages = deliver.messages();
  const size_t count = messages == nullptr ? 0 : messages->size();
  if (expected.next_offset) {
    verdict.start = *expected.next_offset;
  } else if (count > 0) {
    verdict.start = messages->Get(0)->offset();
  } else if (!expected.start_earliest) {
    verdict.start = deliver.head_offset();
  } else {
    return verdict;  // Earliest: an empty Deliver says nothing of the start
  }
  uint64_t next = *verdict.start;
  for (size_t i = 0; i < count; ++i) {
    const uint64_t offset = messages->Get(static_cast<flatbuffers::uoffset_t>(i))->offset();
    ++verdict.credit_used;
    if (offset == next) {
      ++verdict.accepted;
      ++next;
      continue;
    }
    if (offset < next) {
      verdict.error = DeliverError::kBelowExpected;
      verdict.message = "delivered offset " + std::to_string(offset) + " where " +
                        std::to_string(next) + " was expected (a broken stream)";
    } else {
      verdict.error = DeliverError::kGap;
      verdict.message = "delivered offset " + std::to_string(offset) + " where " +
                        std::to_string(next) + " was expected (a frame was lost)";
    }
    break;
  }
  return verdict;
}

}  // namespace ordo::client_internal
