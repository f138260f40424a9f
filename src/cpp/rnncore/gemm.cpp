// BLAS binding by dlopen/dlsym: the extension links no BLAS at build time and
// uses the OpenBLAS that the scipy-openblas32 wheel ships, found by Python.
#include "rnncore/gemm.hpp"

#include "rnncore/threading.hpp"
#include "rnncore/tuning.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <type_traits>
#include <mutex>
#include <vector>

namespace rnncore {
namespace {

constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
using SgemmFn = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                         float, float*, int);
using DgemmFn = void (*)(int, int, int, int, int, int, double, const double*, int, const double*,
                         int, double, double*, int);
using SetThreadsFn = void (*)(int);
using GetConfigFn = char* (*)();

struct Blas {
  SgemmFn sgemm = nullptr;
  DgemmFn dgemm = nullptr;
  SetThreadsFn set_threads = nullptr;
  GetConfigFn get_config = nullptr;
  std::string path;
};
Blas g_blas;
std::mutex g_blas_mu;

// The fallback: a cache-blocked triple loop. Only used without OpenBLAS.
template <typename T>
void GemmLoop(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b,
              int ldb, T beta, T* c, int ldc) {
  for (int i = 0; i < m; ++i) {
    T* ci = c + static_cast<int64_t>(i) * ldc;
    if (beta == T(0)) std::fill(ci, ci + n, T(0));
    else if (beta != T(1)) for (int j = 0; j < n; ++j) ci[j] *= beta;
  }
  constexpr int kb = 64;
  for (int p0 = 0; p0 < k; p0 += kb) {
    const int p1 = std::min(k, p0 + kb);
    for (int i = 0; i < m; ++i) {
      T* ci = c + static_cast<int64_t>(i) * ldc;
      for (int p = p0; p < p1; ++p) {
        const T av = alpha * (ta ? a[static_cast<int64_t>(p) * lda + i] : a[static_cast<int64_t>(i) * lda + p]);
        if (av == T(0)) continue;
        if (!tb) {
          const T* bp = b + static_cast<int64_t>(p) * ldb;
          for (int j = 0; j < n; ++j) ci[j] += av * bp[j];
        } else {
          for (int j = 0; j < n; ++j) ci[j] += av * b[static_cast<int64_t>(j) * ldb + p];
        }
      }
    }
  }
}

template <typename T>
void GemmSerial(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b,
                int ldb, T beta, T* c, int ldc) {
  if (m <= 0 || n <= 0) return;
  if constexpr (std::is_same<T, float>::value) {
    if (g_blas.sgemm && k > 0) {
      g_blas.sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, alpha, a,
                   lda, b, ldb, beta, c, ldc);
      return;
    }
  } else {
    if (g_blas.dgemm && k > 0) {
      g_blas.dgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, m, n, k, alpha, a,
                   lda, b, ldb, beta, c, ldc);
      return;
    }
  }
  GemmLoop(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace

template <typename T>
void Gemm(bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb,
          T beta, T* c, int ldc, int threads) {
  if (m <= 0 || n <= 0) return;
  // rows of C per thread in multiples of 16, and enough work to pay for a team
  const int64_t work = static_cast<int64_t>(m) * n * (k > 0 ? k : 1);
  int nt = threads < 1 ? 1 : threads;
  if (nt > m / 16) nt = m / 16;
  if (work < Tune().team_min_fmas) nt = 1;  // under ~0.1 ms of work a team costs more than it saves
  nt = TeamOrSolo(nt);
  if (nt <= 1) {
    GemmSerial(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  RunTeam(nt, [&](int tid, int team) {
    const int m0 = static_cast<int>(static_cast<int64_t>(m) * tid / team / 16 * 16);
    const int m1 = tid + 1 == team ? m : static_cast<int>(static_cast<int64_t>(m) * (tid + 1) / team / 16 * 16);
    if (m1 <= m0) return;
    const T* as = ta ? a + m0 : a + static_cast<int64_t>(m0) * lda;
    GemmSerial(ta, tb, m1 - m0, n, k, alpha, as, lda, b, ldb, beta, c + static_cast<int64_t>(m0) * ldc, ldc);
  });
}

template void Gemm<float>(bool, bool, int, int, int, float, const float*, int, const float*, int,
                          float, float*, int, int);
template void Gemm<double>(bool, bool, int, int, int, double, const double*, int, const double*, int,
                           double, double*, int, int);

std::string BindBlas(const std::string& path, const std::string& prefix) {
  std::lock_guard<std::mutex> lock(g_blas_mu);
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    return std::string("dlopen failed: ") + (e ? e : "unknown error");
  }
  Blas b;
  b.sgemm = reinterpret_cast<SgemmFn>(dlsym(h, (prefix + "cblas_sgemm").c_str()));
  b.dgemm = reinterpret_cast<DgemmFn>(dlsym(h, (prefix + "cblas_dgemm").c_str()));
  b.set_threads = reinterpret_cast<SetThreadsFn>(dlsym(h, (prefix + "openblas_set_num_threads").c_str()));
  b.get_config = reinterpret_cast<GetConfigFn>(dlsym(h, (prefix + "openblas_get_config").c_str()));
  if (!b.sgemm || !b.dgemm) return "no " + prefix + "cblas_sgemm/dgemm in " + path;
  b.path = path;
  g_blas = b;  // the handle stays open for the life of the process
  if (g_blas.set_threads) g_blas.set_threads(1);
  return "";
}

bool BlasBound() { return g_blas.sgemm != nullptr; }

std::string BlasInfo() {
  if (!g_blas.sgemm) return "built-in loops (no BLAS bound)";
  std::string s = g_blas.get_config ? std::string(g_blas.get_config()) : std::string("BLAS");
  return s + " (" + g_blas.path + ")";
}

}  // namespace rnncore
