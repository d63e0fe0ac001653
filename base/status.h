// ordo::Status: an expected failure as a value (bad config, bad input, a
// storage error), shared by every target above the core. Broken invariants
// are bugs and assert instead; the consensus core itself returns plain codes
// (paxos::StoreCode).
//
// One shape for every such outcome in the tree: BasicStatus<Code>, a code
// whose value-initialized state (0) means ok, and a message for the log.
// Status is the general one (its Kind decides the exit status); the codec's
// DecodeStatus (broker/codec.h) is the same with the codec's codes, so a
// caller can answer each with a typed wire error. StatusOr<T> is a value or
// a Status. The client library's public ordo::Error / ordo::Result
// (client/include/ordo/client.h) are the API's own: that header includes
// nothing of the tree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace ordo {

template <typename Code>
class [[nodiscard]] BasicStatus {
 public:
  BasicStatus() = default;  // ok
  BasicStatus(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  bool ok() const { return code_ == Code{}; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  Code code_{};
  std::string message_;
};

enum class StatusKind : uint8_t {
  kOk = 0,
  kError,    // anything else: a bad config, a port in use (exit status 1)
  kStorage,  // storage refused to run: I/O errors, a data directory that is
             // not this node's or is in use (exit status 3)
  kDamaged,  // stored state failed its checks in a way that may hide what
             // this node vouched for: it must not vote on it (see
             // broker/data_dir.h for what the broker does about it)
};

class [[nodiscard]] Status : public BasicStatus<StatusKind> {
 public:
  using Kind = StatusKind;
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(Kind::kError, std::move(message)); }
  static Status Storage(std::string message) { return Status(Kind::kStorage, std::move(message)); }
  static Status Damaged(std::string message) { return Status(Kind::kDamaged, std::move(message)); }
  Kind kind() const { return code(); }

 private:
  Status(Kind kind, std::string message) : BasicStatus(kind, std::move(message)) {}
};

// A value, or the Status that says why there is none.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  StatusOr(Status status) : v_(std::move(status)) {}  // NOLINT: must not be ok
  bool ok() const { return v_.index() == 0; }
  const T& value() const& { return std::get<0>(v_); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  // Ok when there is a value.
  Status status() const { return ok() ? Status::Ok() : std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ordo
