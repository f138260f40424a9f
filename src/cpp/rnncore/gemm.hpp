// Row-major GEMM for the large products of a sequence (input projection,
// weight gradients, dx): OpenBLAS when it has been bound at run time, a plain
// loop otherwise so the core builds and runs on its own.
#pragma once
#include <string>

namespace rnncore {

// C[M,N] = alpha * op(A) op(B) + beta * C, all row-major; op(X) = X or X^T.
// Large products are split by rows of C over rnncore's own team of up to
// `threads` threads, each calling a single-threaded BLAS: one thread pool in
// the process, never OpenBLAS's spinning workers beside the time loop's team.
template <typename T>
void Gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a, int lda,
          const T* b, int ldb, T beta, T* c, int ldc, int threads = 1);

// Binds OpenBLAS from a shared library by path (symbols with the given
// prefix, e.g. "scipy_"). Returns an empty string on success, else the reason.
std::string BindBlas(const std::string& path, const std::string& prefix);
bool BlasBound();
std::string BlasInfo();

}  // namespace rnncore
