// CPU detection and the kernel table.
#include "rnncore/dispatch/dispatch.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace rnncore {

int NumGates(const CellSpec& cell) {
  switch (cell.kind) {
#define RNNCORE_KIND_GATES(e, name, gates, rec, type) \
  case CellKind::e:                                   \
    return gates;
    RNNCORE_CELL_KINDS(RNNCORE_KIND_GATES)
#undef RNNCORE_KIND_GATES
  }
  return 1;
}

RecWeight RecWeightOf(const CellSpec& cell) {
  switch (cell.kind) {
#define RNNCORE_KIND_REC(e, name, gates, rec, type) \
  case CellKind::e:                                 \
    return RecWeight::rec;
    RNNCORE_CELL_KINDS(RNNCORE_KIND_REC)
#undef RNNCORE_KIND_REC
  }
  return RecWeight::kMatrix;
}

int MaxDelay(const CellSpec& cell) {
  int m = 1;
  for (int i = 0; i < cell.n_delays; ++i) m = cell.delays[i] > m ? cell.delays[i] : m;
  return m;
}

namespace {

bool CpuHasAvx2Fma() {
#if defined(RNNCORE_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

bool CpuHasAvx512() {
#if defined(RNNCORE_HAVE_AVX512) && (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
  __builtin_cpu_init();
  return CpuHasAvx2Fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
#else
  return false;
#endif
}

std::vector<const KernelTable*> Runnable() {
  std::vector<const KernelTable*> v{GenericKernels()};
#ifdef RNNCORE_HAVE_AVX2
  if (CpuHasAvx2Fma()) v.push_back(Avx2Kernels());
#endif
#ifdef RNNCORE_HAVE_AVX512
  if (CpuHasAvx512()) v.push_back(Avx512Kernels());
#endif
  return v;
}

const KernelTable* Initial() {
  const auto all = Runnable();
  const char* cap = std::getenv("RNNCORE_MAX_ISA");
  const KernelTable* best = all.front();
  for (const KernelTable* t : all) {
    best = t;
    if (cap && std::strcmp(cap, t->name) == 0) break;
  }
  return best;
}

std::atomic<const KernelTable*> g_table{nullptr};

}  // namespace

const KernelTable& Kernels() {
  const KernelTable* t = g_table.load(std::memory_order_acquire);
  if (!t) {
    t = Initial();
    g_table.store(t, std::memory_order_release);
  }
  return *t;
}

std::vector<std::string> AvailableIsas() {
  std::vector<std::string> names;
  for (const KernelTable* t : Runnable()) names.emplace_back(t->name);
  return names;
}

bool SelectIsa(const std::string& name) {
  for (const KernelTable* t : Runnable())
    if (name == t->name) {
      g_table.store(t, std::memory_order_release);
      return true;
    }
  return false;
}

}  // namespace rnncore
