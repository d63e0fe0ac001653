// ordo::Status: an expected failure as a value (bad config, bad input, a
// storage error), shared by every target above the core. Broken invariants
// are bugs and assert instead; the consensus core itself returns plain codes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace ordo {

class [[nodiscard]] Status {
 public:
  enum class Kind : uint8_t {
    kOk = 0,
    kError,    // anything else: a bad config, a port in use (exit status 1)
    kStorage,  // storage refused to run: I/O errors, a data directory that is
               // not this node's or is in use (exit status 3)
    kDamaged,  // stored state failed its checks in a way that may hide what
               // this node vouched for: it must not vote on it (see
               // broker/data_dir.h for what the broker does about it)
  };

  Status() = default;
  static Status Ok() { return Status(); }
  static Status Error(std::string message) { return Status(Kind::kError, std::move(message)); }
  static Status Storage(std::string message) { return Status(Kind::kStorage, std::move(message)); }
  static Status Damaged(std::string message) { return Status(Kind::kDamaged, std::move(message)); }
  bool ok() const { return kind_ == Kind::kOk; }
  Kind kind() const { return kind_; }
  const std::string& message() const { return message_; }

 private:
  Status(Kind kind, std::string message) : kind_(kind), message_(std::move(message)) {}
  Kind kind_ = Kind::kOk;
  std::string message_;
};

}  // namespace ordo
