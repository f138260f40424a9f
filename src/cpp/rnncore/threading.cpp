// Team sizing for the time loop (see threading.hpp).
#include "rnncore/threading.hpp"

#include "rnncore/tuning.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>

#if defined(__linux__)
#include <fcntl.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace rnncore {
namespace {
// Below about this many multiply-adds per thread and step, a second thread
// costs more in barrier time than it saves (Tuning::min_work_per_thread; 0:
// its value). Measured at (200,16,64,64) on an AVX-512 part: GRU (196K a
// step) runs 1.2x faster on two threads than on one, skip with two delays
// (131K) 1.3x slower, Elman (65K) 1.5x slower.
std::atomic<std::int64_t> g_min_work{0};

std::int64_t MinWork() {
  const std::int64_t w = g_min_work.load(std::memory_order_relaxed);
  return w > 0 ? w : Tune().min_work_per_thread;
}

// The one-thread stretch after a contended team call (see NoteTeamCall).
constexpr int kFirstStretch = 4, kLongestStretch = 256;
std::atomic<int> g_solo_left{0};
std::atomic<int> g_stretch{0};
std::atomic<int> g_strikes{0};  // contended team calls in a row
std::atomic<int64_t> g_solo_taken{0};
std::atomic<bool> g_backoff{true};
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

}  // namespace

void StepBarrier::Wait() {
  const uint32_t gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.store(gen + 1, std::memory_order_seq_cst);
    // the wake is a system call: made only when a waiter went to sleep (it
    // counts itself before its last look at generation_, so one is never missed)
    if (sleepers_.load(std::memory_order_seq_cst) > 0) FutexWakeAll(&generation_);
    return;
  }
  // Spin for Tuning::spin_ns by the clock, looking at it every 64 pauses
  // (a pause takes 10 to 150 cycles, by core); a barrier met within the
  // first 64 reads no clock.
  int64_t until = 0;
  for (int i = 1;; ++i) {
    if (generation_.load(std::memory_order_acquire) != gen) return;
    CpuRelax();
    if ((i & 63) == 0) {
      const int64_t now = SteadyNanos();
      if (until == 0) until = now + Tune().spin_ns;
      else if (now > until) break;
    }
  }
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  while (generation_.load(std::memory_order_seq_cst) == gen) FutexWait(&generation_, gen);
  sleepers_.fetch_sub(1, std::memory_order_relaxed);
}

int ChooseTeam(int requested, int blocks, int64_t work) {
  int nt = requested < 1 ? 1 : requested;
  if (nt > blocks) nt = blocks;
  const int64_t by_work = work / MinWork();
  if (by_work < nt) nt = by_work < 1 ? 1 : static_cast<int>(by_work);
  return TeamOrSolo(nt);
}

int TeamOrSolo(int nt) {
  if (nt > 1 && g_backoff.load(std::memory_order_relaxed)) {  // in a one-thread stretch?
    int left = g_solo_left.load(std::memory_order_relaxed);
    while (left > 0 && !g_solo_left.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
    }
    if (left > 0) {
      g_solo_taken.fetch_add(1, std::memory_order_relaxed);
      return 1;
    }
  }
  return nt;
}

void NoteTeamCall(bool contended) {
  if (!contended || !g_backoff.load(std::memory_order_relaxed)) {
    g_strikes.store(0, std::memory_order_relaxed);
    g_stretch.store(0, std::memory_order_relaxed);
    g_solo_left.store(0, std::memory_order_relaxed);
    return;
  }
  if (g_strikes.fetch_add(1, std::memory_order_relaxed) < 1) return;  // once may be chance
  const int prev = g_stretch.load(std::memory_order_relaxed);
  const int next = prev < kFirstStretch ? kFirstStretch : (prev >= kLongestStretch / 2 ? kLongestStretch : 2 * prev);
  g_stretch.store(next, std::memory_order_relaxed);
  g_solo_left.store(next, std::memory_order_relaxed);
}

void SetTeamBackoff(bool on) {
  g_backoff.store(on);
  if (!on) NoteTeamCall(false);
}
bool TeamBackoff() { return g_backoff.load(); }

int SoloCallsLeft() { return g_solo_left.load(std::memory_order_relaxed); }
int64_t SoloCallsTaken() { return g_solo_taken.load(std::memory_order_relaxed); }

namespace {
#if defined(__linux__)
// The calling thread's schedstat file, opened once per thread.
struct SchedStat {
  int fd = -2;  // -2: not opened yet; -1: not available
  ~SchedStat() {
    if (fd >= 0) close(fd);
  }
};
thread_local SchedStat tls_schedstat;
#endif
}  // namespace

int64_t RunQueueWait() {
#if defined(__linux__)
  SchedStat& s = tls_schedstat;
  if (s.fd == -2) s.fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
  if (s.fd < 0) return -1;
  char buf[96];
  const ssize_t n = pread(s.fd, buf, sizeof(buf) - 1, 0);
  if (n <= 0) return -1;
  buf[n] = 0;
  // "<ns on a cpu> <ns waiting on a run queue> <time slices>"
  char* end = nullptr;
  std::strtoll(buf, &end, 10);
  if (end == buf) return -1;
  char* end2 = nullptr;
  const long long wait = std::strtoll(end, &end2, 10);
  return end2 == end ? -1 : static_cast<int64_t>(wait);
#else
  return -1;
#endif
}

int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
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

std::int64_t MinWorkPerThread() { return MinWork(); }
void SetMinWorkPerThread(std::int64_t w) { g_min_work.store(w < 1 ? 1 : w); }

}  // namespace rnncore
