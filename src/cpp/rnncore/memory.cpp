#include "rnncore/memory.hpp"

#include <cstdlib>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace rnncore {

std::string TuneMalloc() {
#if defined(__GLIBC__)
  for (const char* name : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"})
    if (std::getenv(name)) return std::string("left as set (") + name + ")";
  // Setting one threshold turns glibc's adaptive rule off, so both are set.
  constexpr int kMmap = 32 << 20, kTrim = 64 << 20;
  if (mallopt(M_MMAP_THRESHOLD, kMmap) != 1 || mallopt(M_TRIM_THRESHOLD, kTrim) != 1)
    return "glibc defaults (mallopt refused)";
  return "glibc: heap below 32 MB, trim above 64 MB free";
#else
  return "the C library's defaults";
#endif
}

}  // namespace rnncore
