// FRUGAL_CHECK: invariants that stay on in release builds (a failed one is a bug, not bad input).
#pragma once

#include <cstdio>
#include <cstdlib>

#define FRUGAL_CHECK(cond)                                                              \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "frugal: internal check failed: %s (%s:%d)\n", #cond, __FILE__, \
                   __LINE__);                                                           \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)
