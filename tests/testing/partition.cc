#include "tests/testing/partition.h"

#include <arpa/inet.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "tests/testing/shell.h"

namespace ordo::testing {

namespace {

// Runs `command` through the shell; its output (both streams) into *out.
int Run(const std::string& command, std::string* out) {
  ShellRun ran = RunShell(command);
  out->append(ran.out);
  return ran.status;
}

}  // namespace

std::unique_ptr<Partition> Partition::Cut(const std::string& host, std::string* error) {
  in_addr address{};
  if (inet_pton(AF_INET, host.c_str(), &address) != 1) {
    *error = "not an IPv4 address: " + host;
    return nullptr;
  }
  static std::atomic<int> tables{0};
  const std::string table =
      "ordo_partition_" + std::to_string(getpid()) + "_" + std::to_string(++tables);
  // One nft run (-f -): the table, its input chain and the two rules appear at once.
  const std::string script = "table ip " + table +
                             " {\n chain input {\n  type filter hook input priority 0;\n"
                             "  ip saddr " +
                             host + " drop\n  ip daddr " + host + " drop\n }\n}\n";
  std::string out;
  const int status = Run("printf '%s' '" + script + "' | nft -f -", &out);
  if (status != 0) {
    *error = "nft refused the partition rules (exit " + std::to_string(status) +
             "; partitions need root and Debian's nftables, which scripts/setup installs): " + out;
    return nullptr;
  }
  return std::unique_ptr<Partition>(new Partition(table));
}

void Partition::Heal() {
  if (!cut_) return;
  std::string out;
  (void)Run("nft delete table ip " + table_, &out);
  cut_ = false;
}

Partition::~Partition() { Heal(); }

}  // namespace ordo::testing
