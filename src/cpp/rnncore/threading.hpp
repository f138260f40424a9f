// The only place that talks to OpenMP: team size by work per step, the team
// itself, and the per-step barrier. Builds without OpenMP (one thread).
#pragma once
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnncore {

// Threads to use for a time loop whose step costs `work` multiply-adds spread
// over `blocks` unit blocks, given at most `requested` threads. A step too
// small to share is run by one thread: a barrier costs more than it saves and
// a spinning one stalls on a busy machine.
int ChooseTeam(int requested, int blocks, int64_t work);

// Hardware threads available to OpenMP (1 without OpenMP).
int MaxThreads();
bool HaveOpenMP();
std::int64_t MinWorkPerThread();
void SetMinWorkPerThread(std::int64_t w);

// body(tid, team_size) on a team of nt threads; nt == 1 runs inline.
template <class F>
void RunTeam(int nt, F&& body) {
#ifdef _OPENMP
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    body(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  (void)nt;
  body(0, 1);
}

inline void Barrier(int nt) {
#ifdef _OPENMP
  if (nt > 1) {
#pragma omp barrier
  }
#else
  (void)nt;
#endif
}

}  // namespace rnncore
