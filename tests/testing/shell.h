// Running a command line from a test: through /bin/sh, with what it printed.
#pragma once

#include <string>

namespace ordo::testing {

struct ShellRun {
  int status = -1;  // its exit status; -1 when it did not exit (a signal) or could not start
  std::string out;  // what it wrote to stdout and stderr, interleaved
};

ShellRun RunShell(const std::string& command);

}  // namespace ordo::testing
