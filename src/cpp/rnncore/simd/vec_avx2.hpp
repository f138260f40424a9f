// AVX2 + FMA vectors: 8 floats or 4 doubles, with exp/tanh/sigmoid written
// from the Cephes approximations, except the float tanh (tanh_rational.hpp).
// Included inside an ISA namespace; this header is only ever compiled in a
// translation unit built with -mavx2 -mfma.
#pragma once
#include <immintrin.h>
#include <cstdint>

constexpr int kVecRegs = 16;

template <typename T> struct Vec;

template <> struct Vec<float> {
  static constexpr int kW = 8;
  __m256 v;
};
template <> struct Vec<double> {
  static constexpr int kW = 4;
  __m256d v;
};

// Lane masks for the tail of a hidden-unit block: the first n lanes set.
inline __m256i MaskN32(int n) {
  alignas(32) static const int32_t k[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + 8 - n));
}
inline __m256i MaskN64(int n) {
  alignas(32) static const int64_t k[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + 4 - n));
}

template <typename T> inline Vec<T> Zero();
template <> inline Vec<float> Zero<float>() { return {_mm256_setzero_ps()}; }
template <> inline Vec<double> Zero<double>() { return {_mm256_setzero_pd()}; }
inline Vec<float> Set1(float a) { return {_mm256_set1_ps(a)}; }
inline Vec<double> Set1(double a) { return {_mm256_set1_pd(a)}; }
inline Vec<float> Load(const float* p) { return {_mm256_loadu_ps(p)}; }
inline Vec<double> Load(const double* p) { return {_mm256_loadu_pd(p)}; }
inline Vec<float> LoadN(const float* p, int n) {
  return {n == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, MaskN32(n))};
}
inline Vec<double> LoadN(const double* p, int n) {
  return {n == 4 ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, MaskN64(n))};
}
// Weight packing: dst[k * ldd + l] = src[l * ld + k] for an 8 x 8 block
// (rows l, columns k): pairs of rows interleaved by 32 then 64 bits, then the
// two 128-bit lanes exchanged.
inline void TransposeW(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int l = 0; l < 8; ++l) r[l] = _mm256_loadu_ps(src + l * ld);
  for (int i = 0; i < 8; i += 2) {  // lane q: rows i, i+1 of columns 4q, 4q+1 | 4q+2, 4q+3
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int j = 0; j < 8; j += 4) {  // r[j + c], lane q: rows j..j+3 of column 4q + c
    const __m256d a = _mm256_castps_pd(t[j]), b = _mm256_castps_pd(t[j + 1]);
    const __m256d c = _mm256_castps_pd(t[j + 2]), d = _mm256_castps_pd(t[j + 3]);
    r[j] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, c));
    r[j + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, c));
    r[j + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(b, d));
    r[j + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(b, d));
  }
  for (int c = 0; c < 4; ++c) {  // column 4q + c: lane q of r[c], r[4 + c]
    _mm256_storeu_ps(dst + c * ldd, _mm256_permute2f128_ps(r[c], r[4 + c], 0x20));
    _mm256_storeu_ps(dst + (4 + c) * ldd, _mm256_permute2f128_ps(r[c], r[4 + c], 0x31));
  }
}
// The same for a 4 x 4 block of doubles.
inline void TransposeW(const double* src, int64_t ld, double* dst, int64_t ldd) {
  __m256d r[4];
  for (int l = 0; l < 4; ++l) r[l] = _mm256_loadu_pd(src + l * ld);
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  _mm256_storeu_pd(dst, _mm256_permute2f128_pd(t0, t2, 0x20));
  _mm256_storeu_pd(dst + ldd, _mm256_permute2f128_pd(t1, t3, 0x20));
  _mm256_storeu_pd(dst + 2 * ldd, _mm256_permute2f128_pd(t0, t2, 0x31));
  _mm256_storeu_pd(dst + 3 * ldd, _mm256_permute2f128_pd(t1, t3, 0x31));
}
inline void Store(float* p, Vec<float> a) { _mm256_storeu_ps(p, a.v); }
inline void Store(double* p, Vec<double> a) { _mm256_storeu_pd(p, a.v); }
inline void StoreN(float* p, Vec<float> a, int n) {
  if (n == 8) _mm256_storeu_ps(p, a.v); else _mm256_maskstore_ps(p, MaskN32(n), a.v);
}
inline void StoreN(double* p, Vec<double> a, int n) {
  if (n == 4) _mm256_storeu_pd(p, a.v); else _mm256_maskstore_pd(p, MaskN64(n), a.v);
}

inline Vec<float> operator+(Vec<float> a, Vec<float> b) { return {_mm256_add_ps(a.v, b.v)}; }
inline Vec<float> operator-(Vec<float> a, Vec<float> b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline Vec<float> operator*(Vec<float> a, Vec<float> b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline Vec<float> operator/(Vec<float> a, Vec<float> b) { return {_mm256_div_ps(a.v, b.v)}; }
inline Vec<double> operator+(Vec<double> a, Vec<double> b) { return {_mm256_add_pd(a.v, b.v)}; }
inline Vec<double> operator-(Vec<double> a, Vec<double> b) { return {_mm256_sub_pd(a.v, b.v)}; }
inline Vec<double> operator*(Vec<double> a, Vec<double> b) { return {_mm256_mul_pd(a.v, b.v)}; }
inline Vec<double> operator/(Vec<double> a, Vec<double> b) { return {_mm256_div_pd(a.v, b.v)}; }
inline Vec<float> Fma(Vec<float> a, Vec<float> b, Vec<float> c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec<double> Fma(Vec<double> a, Vec<double> b, Vec<double> c) { return {_mm256_fmadd_pd(a.v, b.v, c.v)}; }

// max(0, x) with NaN kept: MAXPS returns its second operand when either is NaN.
inline Vec<float> Relu(Vec<float> a) { return {_mm256_max_ps(_mm256_setzero_ps(), a.v)}; }
inline Vec<double> Relu(Vec<double> a) { return {_mm256_max_pd(_mm256_setzero_pd(), a.v)}; }
inline Vec<float> Step(Vec<float> a) {
  return {_mm256_and_ps(_mm256_cmp_ps(a.v, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_set1_ps(1.f))};
}
inline Vec<double> Step(Vec<double> a) {
  return {_mm256_and_pd(_mm256_cmp_pd(a.v, _mm256_setzero_pd(), _CMP_GT_OQ), _mm256_set1_pd(1.0))};
}

// 1/d from the 12-bit estimate and one Newton step (~2 ulp), much cheaper
// than a division; d is finite and positive at every use (exp is clamped).
inline __m256 RecipPos(__m256 d) {
  __m256 r = _mm256_rcp_ps(d);
  return _mm256_mul_ps(r, _mm256_fnmadd_ps(d, r, _mm256_set1_ps(2.f)));
}

// exp(x) = 2^n * exp(r), r = x - n ln2 in [-ln2/2, ln2/2]; degree-5 polynomial
// (Cephes expf), about 1 ulp. The clamp keeps NaN (second operand of MIN/MAX).
inline Vec<float> Exp(Vec<float> a) {
  __m256 x = _mm256_min_ps(_mm256_set1_ps(88.0f), a.v);
  x = _mm256_max_ps(_mm256_set1_ps(-87.3365447505531f), x);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(5.0000001201E-1f));
  __m256 x2 = _mm256_mul_ps(x, x);
  p = _mm256_fmadd_ps(p, x2, _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  // n is in [-126, 127] after the clamp, so 2^n is a normal float
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return {_mm256_mul_ps(p, _mm256_castsi256_ps(e))};
}

// exp(x) for doubles: 2^n times the Cephes Pade form 1 + 2 P / (Q - P), ~1 ulp.
inline Vec<double> Exp(Vec<double> a) {
  __m256d x = _mm256_min_pd(_mm256_set1_pd(708.0), a.v);
  x = _mm256_max_pd(_mm256_set1_pd(-708.0), x);
  __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634073599)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93145751953125E-1), x);
  x = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.42860682030941723212E-6), x);
  __m256d xx = _mm256_mul_pd(x, x);
  __m256d p = _mm256_set1_pd(1.26177193074810590878E-4);
  p = _mm256_fmadd_pd(p, xx, _mm256_set1_pd(3.02994407707441961300E-2));
  p = _mm256_fmadd_pd(p, xx, _mm256_set1_pd(9.99999999999999999910E-1));
  p = _mm256_mul_pd(p, x);
  __m256d q = _mm256_set1_pd(3.00198505138664455042E-6);
  q = _mm256_fmadd_pd(q, xx, _mm256_set1_pd(2.52448340349684104192E-3));
  q = _mm256_fmadd_pd(q, xx, _mm256_set1_pd(2.27265548208155028766E-1));
  q = _mm256_fmadd_pd(q, xx, _mm256_set1_pd(2.00000000000000000009E0));
  __m256d r = _mm256_div_pd(p, _mm256_sub_pd(q, p));
  r = _mm256_fmadd_pd(r, _mm256_set1_pd(2.0), _mm256_set1_pd(1.0));
  __m128i ni = _mm256_cvtpd_epi32(n);
  __m256i e = _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(ni), _mm256_set1_epi64x(1023)), 52);
  return {_mm256_mul_pd(r, _mm256_castsi256_pd(e))};
}

// tanh: the rational form of tanh_rational.hpp, clamped to [-1, 1].
inline Vec<float> Tanh(Vec<float> a) {
  using R = TanhRational;
  const __m256 x = _mm256_max_ps(_mm256_set1_ps(-R::kClamp), _mm256_min_ps(_mm256_set1_ps(R::kClamp), a.v));
  const __m256 u = _mm256_mul_ps(x, x);
  __m256 p = _mm256_set1_ps(R::kP[6]);
  for (int i = 5; i >= 0; --i) p = _mm256_fmadd_ps(p, u, _mm256_set1_ps(R::kP[i]));
  __m256 q = _mm256_set1_ps(R::kQ[3]);
  for (int i = 2; i >= 0; --i) q = _mm256_fmadd_ps(q, u, _mm256_set1_ps(R::kQ[i]));
  const __m256 t = _mm256_mul_ps(_mm256_mul_ps(x, p), RecipPos(q));
  // NaN stays NaN: min/max return their second operand when either is NaN
  return {_mm256_max_ps(_mm256_set1_ps(-1.f), _mm256_min_ps(_mm256_set1_ps(1.f), t))};
}

inline Vec<double> Tanh(Vec<double> a) {
  const __m256d sign = _mm256_set1_pd(-0.0);
  __m256d ax = _mm256_andnot_pd(sign, a.v);
  __m256d z = _mm256_mul_pd(a.v, a.v);
  __m256d p = _mm256_set1_pd(-9.64399179425052238628E-1);
  p = _mm256_fmadd_pd(p, z, _mm256_set1_pd(-9.92877231001918586564E1));
  p = _mm256_fmadd_pd(p, z, _mm256_set1_pd(-1.61468768441708447952E3));
  __m256d q = _mm256_add_pd(z, _mm256_set1_pd(1.12811678491632931402E2));
  q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(2.23548839060100448583E3));
  q = _mm256_fmadd_pd(q, z, _mm256_set1_pd(4.84406305325125486048E3));
  __m256d small = _mm256_fmadd_pd(_mm256_div_pd(_mm256_mul_pd(p, z), q), a.v, a.v);
  __m256d e = Exp(Vec<double>{_mm256_add_pd(ax, ax)}).v;
  __m256d big = _mm256_sub_pd(_mm256_set1_pd(1.0),
                              _mm256_div_pd(_mm256_set1_pd(2.0), _mm256_add_pd(e, _mm256_set1_pd(1.0))));
  big = _mm256_or_pd(big, _mm256_and_pd(sign, a.v));
  __m256d is_small = _mm256_cmp_pd(ax, _mm256_set1_pd(0.625), _CMP_LT_OQ);
  return {_mm256_blendv_pd(big, small, is_small)};
}

// sigma(x) = 1 / (1 + exp(-x))
inline Vec<float> Sigmoid(Vec<float> a) {
  __m256 e = Exp(Vec<float>{_mm256_xor_ps(a.v, _mm256_set1_ps(-0.f))}).v;
  return {RecipPos(_mm256_add_ps(_mm256_set1_ps(1.f), e))};
}
inline Vec<double> Sigmoid(Vec<double> a) {
  __m256d e = Exp(Vec<double>{_mm256_xor_pd(a.v, _mm256_set1_pd(-0.0))}).v;
  return {_mm256_div_pd(_mm256_set1_pd(1.0), _mm256_add_pd(_mm256_set1_pd(1.0), e))};
}

// m ? a : b lane by lane, m holding 1 or 0 (exact: no arithmetic on a, b)
inline Vec<float> Select(Vec<float> m, Vec<float> a, Vec<float> b) {
  return {_mm256_blendv_ps(b.v, a.v, _mm256_cmp_ps(m.v, _mm256_setzero_ps(), _CMP_NEQ_OQ))};
}
inline Vec<double> Select(Vec<double> m, Vec<double> a, Vec<double> b) {
  return {_mm256_blendv_pd(b.v, a.v, _mm256_cmp_pd(m.v, _mm256_setzero_pd(), _CMP_NEQ_OQ))};
}

inline float ReduceAdd(Vec<float> a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline double ReduceAdd(Vec<double> a) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a.v), _mm256_extractf128_pd(a.v, 1));
  s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
  return _mm_cvtsd_f64(s);
}

// Lane r of the result = the sum of the lanes of a[r], for kW vectors at once
// (a shuffle tree, far cheaper than kW separate ReduceAdd).
inline Vec<float> ReduceRows(const Vec<float>* a) {
  __m256 b[4];
  for (int i = 0; i < 4; ++i)  // 128-bit halves: b[i] holds rows i, i+4
    b[i] = _mm256_add_ps(_mm256_permute2f128_ps(a[i].v, a[i + 4].v, 0x20),
                         _mm256_permute2f128_ps(a[i].v, a[i + 4].v, 0x31));
  const __m256 c0 = _mm256_add_ps(_mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm256_shuffle_ps(b[0], b[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m256 c1 = _mm256_add_ps(_mm256_shuffle_ps(b[2], b[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm256_shuffle_ps(b[2], b[3], _MM_SHUFFLE(3, 2, 3, 2)));
  return {_mm256_add_ps(_mm256_shuffle_ps(c0, c1, _MM_SHUFFLE(2, 0, 2, 0)),
                        _mm256_shuffle_ps(c0, c1, _MM_SHUFFLE(3, 1, 3, 1)))};
}
inline Vec<double> ReduceRows(const Vec<double>* a) {
  const __m256d u = _mm256_hadd_pd(a[0].v, a[1].v), v = _mm256_hadd_pd(a[2].v, a[3].v);
  return {_mm256_add_pd(_mm256_permute2f128_pd(u, v, 0x20), _mm256_permute2f128_pd(u, v, 0x31))};
}
