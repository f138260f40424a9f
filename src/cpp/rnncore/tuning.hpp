// The machine-dependent choices of the kernels, in one place: the cache sizes
// read at run time (sysfs, CPUID leaf 4 / 0x8000001D, sysconf, or safe
// defaults; each can be overridden) and the blocks derived from them. Code
// that blocks for a cache asks Tune() rather than writing a size down.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace rnncore {

struct CacheSizes {
  int64_t l1d = 0;  // bytes, one core's
  int64_t l2 = 0;   // bytes, one core's (or the share of one core, when shared)
  int64_t l3 = 0;   // bytes, the whole cache the core sits on (0: none)
  std::string l1d_from, l2_from, l3_from;  // "sysfs", "cpuid", "sysconf", "default", "override"
};

// Immutable once published: a retune publishes a new one.
struct Tuning {
  CacheSizes caches;
  // Tapes (gate rows of a call) larger than this are prefetched a step ahead
  // (AskTapes): past L2 they come from L3 or memory.
  int64_t tape_ask_bytes;
  // Input projection: the packed weights of one K chunk of one block stay in
  // L2 beside the panel's rows (L2 / 4), and a panel's inputs take 3/8 of it.
  int64_t proj_chunk_bytes;
  int64_t proj_panel_bytes;
  // OwnGemm: one column pair's chunk of packed B (L2 / 16): small enough
  // that it stays in L2 (and mostly L1) while the row tiles pass.
  int64_t gemm_chunk_bytes;
  // FusedProj: weights read every step fit L2 (batches of 8 or more pay), or
  // half of L3 (batches of 32 or more pay); beyond, they come from memory.
  int64_t fused_l2_bytes;
  int64_t fused_l3_bytes;
  // A direct-mode call's scratch is kept between calls up to this size.
  int64_t direct_keep_bytes;
  // Direct mode (no repacking of W_hh) for calls of at most this many batch
  // rows and rows in all: the row tile of the direct product and the steps
  // that do not pay a repack. Counts of the kernels' work, not of a cache.
  int direct_max_batch;
  int direct_max_rows;
  // Multiply-adds per thread and step under which a second thread costs more
  // in barrier time than it saves, and per product under which a large
  // product runs on one thread.
  int64_t min_work_per_thread;
  int64_t team_min_fmas;
  // How long a barrier waiter spins before it sleeps (by the clock, not by
  // pause instructions, whose latency differs tenfold between cores).
  int64_t spin_ns;
};

// The tuning in force (detected on first use).
const Tuning& Tune();
// Derive and publish a tuning for these sizes; 0 keeps the detected one.
void Retune(int64_t l1d, int64_t l2, int64_t l3);
// What the machine reports, before any override.
CacheSizes DetectCaches();

// Which implementation the backward's large products use: rnncore's own tiles
// (OwnGemm), BLAS, or whichever a short trial found faster for the shape
// class (the default).
enum class GemmPath { kAuto = 0, kOwn = 1, kBlas = 2 };
void SetGemmPath(GemmPath p);
GemmPath GetGemmPath();

// The trials so far: one line per shape class.
std::vector<std::string> GemmChoices();
void ClearGemmChoices();
// A shape class's path: 0 (own), 1 (blas), or -1 (not tried yet).
int LookupGemmChoice(const std::string& key);
// The trial's outcome (best times of each path) and the path taken.
void RecordGemmChoice(const std::string& key, double own_ns, double blas_ns);

}  // namespace rnncore
