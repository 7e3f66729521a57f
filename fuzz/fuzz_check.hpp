// Shared by the fuzz targets: a check that stays on in every build type, so that the fuzzer sees a broken
// invariant as a crash.
#pragma once

#include <cstdio>
#include <cstdlib>

#define KWS_FUZZ_CHECK(cond)                                                            \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (0)
