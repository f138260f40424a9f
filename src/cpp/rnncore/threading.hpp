// The only place that talks to OpenMP: team size by work per step, the team
// itself, and the per-step barrier. Builds without OpenMP (one thread).
#pragma once
#include <atomic>
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

// The per-step barrier of a team. It spins briefly (a step's barrier is
// usually met within microseconds), then sleeps on a futex: on a busy machine
// a spinning waiter would hold a core that its preempted team mate needs.
class StepBarrier {
 public:
  explicit StepBarrier(int n) : n_(n) {}
  void Wait();

 private:
  const int n_;
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> generation_{0};
};

namespace detail {
extern thread_local StepBarrier* tls_barrier;
}

// body(tid, team_size) on a team of nt threads; nt == 1 runs inline.
template <class F>
void RunTeam(int nt, F&& body) {
#ifdef _OPENMP
  if (nt > 1) {
    StepBarrier barrier(nt);
#pragma omp parallel num_threads(nt)
    {
      const int team = omp_get_num_threads();
      StepBarrier solo(1);
      detail::tls_barrier = team == nt ? &barrier : &solo;  // a short team runs alone
      if (team == nt) body(omp_get_thread_num(), team);
      else if (omp_get_thread_num() == 0) body(0, 1);
      detail::tls_barrier = nullptr;
    }
    return;
  }
#endif
  (void)nt;
  body(0, 1);
}

inline void Barrier(int nt) {
  if (nt > 1 && detail::tls_barrier) detail::tls_barrier->Wait();
}

}  // namespace rnncore
