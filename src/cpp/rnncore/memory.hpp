// How the process's allocator treats the large per-call buffers (tapes,
// gradients, packed weights) that every forward and backward call allocates
// and frees.
#pragma once
#include <string>

namespace rnncore {

// With glibc, fixes the allocator's thresholds at the values its own
// adaptive rule reaches at most (blocks below 32 MB from the heap, up to
// 64 MB of free heap kept): otherwise, depending on the process's heap
// layout, the heap can be trimmed after every call and the next call touches
// all its memory afresh through page faults (a training step at
// (200,16,64,64) then took 2x as long). Does nothing when the user has set
// MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or MALLOC_TOP_PAD_, or on
// other C libraries. Returns what it did, for runtime_info.
std::string TuneMalloc();

}  // namespace rnncore
