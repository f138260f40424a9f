// Team sizing for the time loop (see threading.hpp).
#include "rnncore/threading.hpp"

#include <atomic>
#include <thread>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace rnncore {
namespace {
// Below about this many multiply-adds per thread and step, a second thread
// costs more in barrier time than it saves (measured on AVX2 parts).
std::atomic<std::int64_t> g_min_work{1 << 17};
}  // namespace

namespace detail {
thread_local StepBarrier* tls_barrier = nullptr;
}

namespace {
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

void FutexWait(std::atomic<uint32_t>* addr, uint32_t expected) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAIT_PRIVATE, expected, nullptr, nullptr, 0);
#else
  (void)addr;
  (void)expected;
  std::this_thread::yield();
#endif
}

void FutexWakeAll(std::atomic<uint32_t>* addr) {
#if defined(__linux__)
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr, 0);
#else
  (void)addr;
#endif
}

// Spin iterations before sleeping: a few microseconds.
constexpr int kSpins = 4000;
}  // namespace

void StepBarrier::Wait() {
  const uint32_t gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.store(gen + 1, std::memory_order_release);
    FutexWakeAll(&generation_);
    return;
  }
  for (int i = 0; i < kSpins; ++i) {
    if (generation_.load(std::memory_order_acquire) != gen) return;
    CpuRelax();
  }
  while (generation_.load(std::memory_order_acquire) == gen) FutexWait(&generation_, gen);
}

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
