/* The single-core float32 multiply-add ceiling: twelve independent chains of
 * 512-bit FMAs (enough to cover the latency of both FMA pipes), no memory.
 * It gives the roof that docs/benchmarks.md compares rnncore's GFLOP/s with.
 *
 *   cc -O2 -mavx512f -mfma benchmarks/fma_peak.c -o fma_peak && ./fma_peak
 *   cc -O2 -mavx2 -mfma -DYMM benchmarks/fma_peak.c -o fma_peak && ./fma_peak
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#ifdef YMM
typedef __m256 vec;
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define LANES 8
#else
typedef __m512 vec;
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define LANES 16
#endif

#define CHAINS 12

int main(void) {
  vec acc[CHAINS];
  const vec a = SET1(1.0000001f), b = SET1(-0.0000001f);
  for (int i = 0; i < CHAINS; ++i) acc[i] = SET1((float)i);
  const long iters = 200000000L;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (long k = 0; k < iters; ++k) {
#pragma GCC unroll 12
    for (int i = 0; i < CHAINS; ++i) acc[i] = FMA(acc[i], a, b);  /* unrolled: in registers */
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  /* use the results, so that the loop stays (only the sum's address is taken,
   * so that the chains themselves stay in registers) */
  vec sum = acc[0];
  for (int i = 1; i < CHAINS; ++i) sum = sum + acc[i];
  float lanes[LANES];
  __builtin_memcpy(lanes, &sum, sizeof(lanes));
  const float keep = lanes[0];
  printf("%.1f GFLOP/s float32 (%d-lane FMA, one thread)  [%g]\n",
         2.0 * LANES * CHAINS * (double)iters / s / 1e9, LANES, keep);
  return 0;
}
