// Network partitions on this machine, for tests and build/ordo-bench: every
// packet from or to one loopback address (a broker's peer address under
// LocalClusterOptions::peer_host_prefix) is dropped by an nftables rule
// until the partition heals. Loopback packets pass the input hook once per
// direction, so one rule on source and one on destination cut both ways:
// the member's own links and those its peers open to it.
//
// Needs root and nft (Debian's nftables, which scripts/setup installs).
// Each Partition owns an nftables table of its own (named after the process
// and a counter), removed by Heal() or the destructor.
//
// Thread rules: one object per thread.
#pragma once

#include <memory>
#include <string>

namespace ordo::testing {

class Partition {
 public:
  // Cuts `host` (an IPv4 address) off. Null, with the reason in *error,
  // when nft is missing or refuses (not root).
  static std::unique_ptr<Partition> Cut(const std::string& host, std::string* error);
  ~Partition();
  Partition(const Partition&) = delete;
  Partition& operator=(const Partition&) = delete;

  // Removes the rules (idempotent).
  void Heal();

 private:
  explicit Partition(std::string table) : table_(std::move(table)) {}
  std::string table_;
  bool cut_ = true;
};

}  // namespace ordo::testing
