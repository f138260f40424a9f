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
// nt, or 1 in a one-thread stretch after contention (see NoteTeamCall): for
// every team that sizes itself another way (the large products).
int TeamOrSolo(int nt);

// What a team call saw: `contended` if one of its threads waited for a core
// for a good part of the call (Preempted below), which on a machine whose
// cores are taken by other work stalls every step's barrier. After two such
// calls in a row ChooseTeam runs the next team calls on one thread, for a
// stretch that doubles (4 .. 256 calls) while contention lasts; an
// uncontended team call ends it. RunTeam reports every team call here.
void NoteTeamCall(bool contended);
// Team calls still to run on one thread (for tests and runtime_info).
int SoloCallsLeft();
// Team calls run on one thread by such a stretch since the process began
// (a benchmark tells by it which timings were not of the whole team).
int64_t SoloCallsTaken();
// Off: every call gets the team ChooseTeam sizes by work (tests of the team
// paths turn it off so that a busy machine cannot take their team away).
void SetTeamBackoff(bool on);
bool TeamBackoff();

// Nanoseconds the calling thread has so far spent runnable but waiting for a
// core (Linux schedstat), or -1 where the system does not tell.
int64_t RunQueueWait();
// Whether a thread whose body ran from (wait0, start) to (wait1, end), waits
// by RunQueueWait and times by SteadyNanos, lost a good part of it waiting
// for a core: more than 100 us and more than a quarter of the body. (A core
// shared with one busy process costs about half; an idle machine's odd
// interruption rarely a quarter.)
inline bool Preempted(int64_t wait0, int64_t wait1, int64_t start, int64_t end) {
  if (wait0 < 0 || wait1 < 0) return false;
  const int64_t lost = wait1 - wait0, span = end - start;
  return lost > 100000 && lost * 4 > span;
}
int64_t SteadyNanos();

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
  std::atomic<int> sleepers_{0};
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
    std::atomic<bool> contended{false};
#pragma omp parallel num_threads(nt)
    {
      const int team = omp_get_num_threads();
      StepBarrier solo(1);
      detail::tls_barrier = team == nt ? &barrier : &solo;  // a short team runs alone
      const int64_t wait0 = RunQueueWait(), start = SteadyNanos();
      if (team == nt) body(omp_get_thread_num(), team);
      else if (omp_get_thread_num() == 0) body(0, 1);
      if (Preempted(wait0, RunQueueWait(), start, SteadyNanos()))
        contended.store(true, std::memory_order_relaxed);
      detail::tls_barrier = nullptr;
    }
    NoteTeamCall(contended.load());
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
