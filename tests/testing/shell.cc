#include "tests/testing/shell.h"

#include <sys/wait.h>

#include <cstdio>

namespace ordo::testing {

ShellRun RunShell(const std::string& command) {
  ShellRun ran;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return ran;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof buf, pipe)) ran.out.append(buf, n);
  const int status = pclose(pipe);
  ran.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return ran;
}

}  // namespace ordo::testing
