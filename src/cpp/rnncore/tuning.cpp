// Cache sizes at run time and the blocks derived from them (see tuning.hpp).
#include "rnncore/tuning.hpp"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace rnncore {
namespace {

// Used when the machine tells nothing: sizes most x86-64 cores of the last
// decade meet or exceed, so that blocks derived from them still fit.
constexpr int64_t kDefaultL1 = 32 << 10, kDefaultL2 = 512 << 10, kDefaultL3 = int64_t(8) << 20;

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream f(path);
  if (!f) return false;
  std::getline(f, *out);
  return true;
}

// "32K", "1024K", "32M" or a plain byte count.
int64_t ParseSize(const std::string& s) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (end == s.c_str() || v <= 0) return 0;
  switch (*end) {
    case 'K': case 'k': return v << 10;
    case 'M': case 'm': return v << 20;
    case 'G': case 'g': return static_cast<int64_t>(v) << 30;
    default: return v;
  }
}

// CPUs in a list such as "0-3,8-11".
int CountCpus(const std::string& list) {
  int n = 0;
  std::stringstream ss(list);
  std::string part;
  while (std::getline(ss, part, ',')) {
    int a = 0, b = 0;
    if (std::sscanf(part.c_str(), "%d-%d", &a, &b) == 2) n += b - a + 1;
    else if (!part.empty()) ++n;
  }
  return n;
}

// Records a level's size and where it came from, unless already known (or,
// with force, always: an override).
void SetLevel(CacheSizes* c, int level, int64_t bytes, const char* from, bool force = false) {
  int64_t* v = level == 1 ? &c->l1d : level == 2 ? &c->l2 : &c->l3;
  std::string* f = level == 1 ? &c->l1d_from : level == 2 ? &c->l2_from : &c->l3_from;
  if (bytes <= 0 || (*v && !force)) return;
  *v = bytes;
  *f = from;
}

// Linux: cpu0's caches. A level-2 cache shared by more cores than one (not
// just by one core's hardware threads) counts one core's share.
void FromSysfs(CacheSizes* c) {
  const std::string base = "/sys/devices/system/cpu/cpu0/";
  std::string smt_list;
  const int smt = ReadFile(base + "topology/thread_siblings_list", &smt_list) ? CountCpus(smt_list) : 1;
  for (int i = 0; i < 16; ++i) {
    const std::string dir = base + "cache/index" + std::to_string(i) + "/";
    std::string level, type, size, shared;
    if (!ReadFile(dir + "level", &level) || !ReadFile(dir + "type", &type) || !ReadFile(dir + "size", &size))
      continue;
    if (type == "Instruction") continue;
    int64_t bytes = ParseSize(size);
    if (bytes <= 0) continue;
    const int lv = std::atoi(level.c_str());
    if (lv == 1 && type == "Data") {
      SetLevel(c, 1, bytes, "sysfs");
    } else if (lv == 2) {
      const int sharing = ReadFile(dir + "shared_cpu_list", &shared) ? CountCpus(shared) : 1;
      const int cores = smt > 0 && sharing > smt ? sharing / smt : 1;
      SetLevel(c, 2, bytes / cores, "sysfs");
    } else if (lv == 3) {
      SetLevel(c, 3, bytes, "sysfs");
    }
  }
}

#if defined(__x86_64__) || defined(__i386__)
// Deterministic cache parameters: Intel's leaf 4, AMD's 0x8000001D (same layout).
void FromCpuidLeaf(unsigned leaf, CacheSizes* c) {
  for (unsigned sub = 0; sub < 16; ++sub) {
    unsigned a = 0, b = 0, cx = 0, d = 0;
    if (!__get_cpuid_count(leaf, sub, &a, &b, &cx, &d)) return;
    const unsigned type = a & 31u, level = (a >> 5) & 7u;
    if (type == 0) return;  // no more caches
    if (type == 2) continue;  // instructions
    const int64_t ways = ((b >> 22) & 1023u) + 1, parts = ((b >> 12) & 1023u) + 1;
    const int64_t line = (b & 4095u) + 1, sets = static_cast<int64_t>(cx) + 1;
    if (level >= 1 && level <= 3) SetLevel(c, static_cast<int>(level), ways * parts * line * sets, "cpuid");
  }
}

void FromCpuid(CacheSizes* c) {
  unsigned a = 0, b = 0, cx = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &cx, &d)) return;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &cx, 4);
  const bool amd = std::strcmp(vendor, "AuthenticAMD") == 0 || std::strcmp(vendor, "HygonGenuine") == 0;
  if (amd) {
    unsigned ext = 0;
    __get_cpuid(0x80000000u, &ext, &b, &cx, &d);
    if (ext >= 0x8000001Du) FromCpuidLeaf(0x8000001Du, c);
  } else if (a >= 4) {
    FromCpuidLeaf(4, c);
  }
}
#endif

void FromSysconf(CacheSizes* c) {
#if defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  // Plausible values only: some systems report 0, -1 or a constant here.
  const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l1 >= (4 << 10) && l1 <= (4 << 20)) SetLevel(c, 1, l1, "sysconf");
  if (l2 >= (64 << 10) && l2 <= (64 << 20)) SetLevel(c, 2, l2, "sysconf");
  if (l3 >= (256 << 10)) SetLevel(c, 3, l3, "sysconf");
#else
  (void)c;
#endif
}

// A block derived from a cache, rounded down to whole 64-byte lines and kept
// within [lo, hi] so that a misreported size cannot make it absurd.
int64_t Share(int64_t bytes, int64_t num, int64_t den, int64_t lo, int64_t hi) {
  int64_t v = bytes / den * num / 64 * 64;
  return v < lo ? lo : (v > hi ? hi : v);
}

Tuning Derive(const CacheSizes& cs) {
  Tuning t{};
  t.caches = cs;
  const int64_t l2 = cs.l2, l3 = cs.l3 > 0 ? cs.l3 : cs.l2;
  t.tape_ask_bytes = l2;
  t.proj_chunk_bytes = Share(l2, 1, 4, 16 << 10, 4 << 20);
  t.proj_panel_bytes = Share(l2, 3, 8, 24 << 10, 6 << 20);
  t.gemm_chunk_bytes = Share(l2, 1, 16, 8 << 10, 1 << 20);
  t.fused_l2_bytes = l2;
  t.fused_l3_bytes = l3 / 2 > l2 ? l3 / 2 : l2;
  t.direct_keep_bytes = l2;
  t.direct_max_batch = 4;
  t.direct_max_rows = 32;
  // About a microsecond of one core's multiply-adds: a barrier's cost, met
  // on Zen 3 to Zen 5 and Xeon alike within a factor of two.
  t.min_work_per_thread = 3 << 15;
  t.team_min_fmas = int64_t(8) << 20;  // ~0.1 ms: a team's start-up is ~10 us
  t.spin_ns = 100000;  // what 4000 pauses took on Zen, where the barrier was tuned
  return t;
}

std::mutex g_mu;
std::deque<Tuning> g_published;  // every tuning stays alive: readers hold references
std::atomic<const Tuning*> g_tuning{nullptr};
CacheSizes g_detected;
bool g_have_detected = false;

const CacheSizes& DetectedLocked() {
  if (!g_have_detected) {
    g_detected = DetectCaches();
    g_have_detected = true;
  }
  return g_detected;
}

void PublishLocked(const CacheSizes& cs) {
  g_published.push_back(Derive(cs));
  g_tuning.store(&g_published.back(), std::memory_order_release);
}

std::atomic<int> g_gemm_path{static_cast<int>(GemmPath::kAuto)};
std::mutex g_choice_mu;
struct Choice {
  int path = 0;
  double own_ns = 0, blas_ns = 0;
};
std::map<std::string, Choice> g_choices;

}  // namespace

CacheSizes DetectCaches() {
  CacheSizes c;
#if defined(__linux__)
  FromSysfs(&c);
#endif
#if defined(__x86_64__) || defined(__i386__)
  if (!c.l1d || !c.l2 || !c.l3) FromCpuid(&c);
#endif
  if (!c.l1d || !c.l2 || !c.l3) FromSysconf(&c);
  SetLevel(&c, 1, kDefaultL1, "default");
  SetLevel(&c, 2, kDefaultL2, "default");
  SetLevel(&c, 3, kDefaultL3, "default");
  return c;
}

const Tuning& Tune() {
  const Tuning* t = g_tuning.load(std::memory_order_acquire);
  if (t) return *t;
  std::lock_guard<std::mutex> lock(g_mu);
  t = g_tuning.load(std::memory_order_acquire);
  if (!t) {
    PublishLocked(DetectedLocked());
    t = g_tuning.load(std::memory_order_acquire);
  }
  return *t;
}

void Retune(int64_t l1d, int64_t l2, int64_t l3) {
  std::lock_guard<std::mutex> lock(g_mu);
  CacheSizes cs = DetectedLocked();
  SetLevel(&cs, 1, l1d, "override", true);
  SetLevel(&cs, 2, l2, "override", true);
  SetLevel(&cs, 3, l3, "override", true);
  PublishLocked(cs);
  ClearGemmChoices();  // trials under other blocks do not carry over
}

void SetGemmPath(GemmPath p) { g_gemm_path.store(static_cast<int>(p)); }
GemmPath GetGemmPath() { return static_cast<GemmPath>(g_gemm_path.load()); }

std::vector<std::string> GemmChoices() {
  std::lock_guard<std::mutex> lock(g_choice_mu);
  std::vector<std::string> out;
  for (const auto& kv : g_choices) {
    const Choice& c = kv.second;
    char buf[128];
    std::snprintf(buf, sizeof(buf), ": %s (trial: own %.3f ms, blas %.3f ms)", c.path ? "blas" : "own",
                  c.own_ns * 1e-6, c.blas_ns * 1e-6);
    out.push_back(kv.first + buf);
  }
  return out;
}

void ClearGemmChoices() {
  std::lock_guard<std::mutex> lock(g_choice_mu);
  g_choices.clear();
}

int LookupGemmChoice(const std::string& key) {
  std::lock_guard<std::mutex> lock(g_choice_mu);
  auto it = g_choices.find(key);
  return it == g_choices.end() ? -1 : it->second.path;
}

void RecordGemmChoice(const std::string& key, double own_ns, double blas_ns) {
  std::lock_guard<std::mutex> lock(g_choice_mu);
  // a class tried by two threads at once keeps the first outcome
  g_choices.emplace(key, Choice{own_ns <= blas_ns ? 0 : 1, own_ns, blas_ns});
}

}  // namespace rnncore
