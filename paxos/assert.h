// Assertions that stay on in release builds: a broken invariant in the
// consensus core is a bug, and continuing would risk an unsafe vote.
#pragma once

#include <cstdio>
#include <cstdlib>

#define PAXOS_ASSERT(cond)                                                          \
  do {                                                                              \
    if (!(cond)) [[unlikely]] {                                                     \
      std::fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                 \
    }                                                                               \
  } while (0)

// Expensive checks: only in debug builds.
#ifdef NDEBUG
#define PAXOS_DASSERT(cond) \
  do {                      \
  } while (0)
#else
#define PAXOS_DASSERT(cond) PAXOS_ASSERT(cond)
#endif
