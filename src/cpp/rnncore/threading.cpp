// Team sizing for the time loop (see threading.hpp).
#include "rnncore/threading.hpp"

#include <atomic>

namespace rnncore {
namespace {
// Below about this many multiply-adds per thread and step, a second thread
// costs more in barrier time than it saves (measured on AVX2 parts).
std::atomic<std::int64_t> g_min_work{1 << 17};
}  // namespace

int ChooseTeam(int requested, int blocks, int64_t work) {
  int nt = requested < 1 ? 1 : requested;
  if (nt > blocks) nt = blocks;
  const int64_t by_work = work / g_min_work.load();
  if (by_work < nt) nt = by_work < 1 ? 1 : static_cast<int>(by_work);
  return nt;
}

int MaxThreads() {
#ifdef _OPENMP
  return omp_get_num_procs();
#else
  return 1;
#endif
}

bool HaveOpenMP() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

std::int64_t MinWorkPerThread() { return g_min_work.load(); }
void SetMinWorkPerThread(std::int64_t w) { g_min_work.store(w < 1 ? 1 : w); }

}  // namespace rnncore
