// The instruction set, chosen once: the best this CPU runs, capped by the
// RNNCORE_MAX_ISA environment variable ("generic", "avx2", "avx512").
#pragma once
#include <string>
#include <vector>

#include "rnncore/api.hpp"

namespace rnncore {

const KernelTable* GenericKernels();
#ifdef RNNCORE_HAVE_AVX2
const KernelTable* Avx2Kernels();
#endif
#ifdef RNNCORE_HAVE_AVX512
const KernelTable* Avx512Kernels();
#endif

// The table in use.
const KernelTable& Kernels();
// Names of the ISAs this CPU and build can run, best last.
std::vector<std::string> AvailableIsas();
// Switch the table in use (tests of every path); false if not available.
bool SelectIsa(const std::string& name);

}  // namespace rnncore
