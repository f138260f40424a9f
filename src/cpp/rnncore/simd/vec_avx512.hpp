// AVX-512 (F + DQ) vectors: 16 floats or 8 doubles, the same approximations
// as vec_avx2.hpp. Included inside an ISA namespace; only ever
// compiled in a translation unit built with the AVX-512 flags.
#pragma once
#include <immintrin.h>
#include <cstdint>

constexpr int kVecRegs = 32;

template <typename T> struct Vec;

template <> struct Vec<float> {
  static constexpr int kW = 16;
  __m512 v;
};
template <> struct Vec<double> {
  static constexpr int kW = 8;
  __m512d v;
};

inline __mmask16 MaskN16(int n) { return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u); }
inline __mmask8 MaskN8(int n) { return n >= 8 ? __mmask8(0xFF) : __mmask8((1u << n) - 1u); }

template <typename T> inline Vec<T> Zero();
template <> inline Vec<float> Zero<float>() { return {_mm512_setzero_ps()}; }
template <> inline Vec<double> Zero<double>() { return {_mm512_setzero_pd()}; }
inline Vec<float> Set1(float a) { return {_mm512_set1_ps(a)}; }
inline Vec<double> Set1(double a) { return {_mm512_set1_pd(a)}; }
inline Vec<float> Load(const float* p) { return {_mm512_loadu_ps(p)}; }
inline Vec<double> Load(const double* p) { return {_mm512_loadu_pd(p)}; }
inline Vec<float> LoadN(const float* p, int n) { return {_mm512_maskz_loadu_ps(MaskN16(n), p)}; }
inline Vec<double> LoadN(const double* p, int n) { return {_mm512_maskz_loadu_pd(MaskN8(n), p)}; }
// The 4 x 4 transpose of 128-bit lanes: lane q of v[p] <- lane p of v[q].
inline void TransposeLanes(__m512 (&v)[4]) {
  const __m512 a = _mm512_shuffle_f32x4(v[0], v[1], 0x44), b = _mm512_shuffle_f32x4(v[0], v[1], 0xEE);
  const __m512 c = _mm512_shuffle_f32x4(v[2], v[3], 0x44), d = _mm512_shuffle_f32x4(v[2], v[3], 0xEE);
  v[0] = _mm512_shuffle_f32x4(a, c, 0x88);
  v[1] = _mm512_shuffle_f32x4(a, c, 0xDD);
  v[2] = _mm512_shuffle_f32x4(b, d, 0x88);
  v[3] = _mm512_shuffle_f32x4(b, d, 0xDD);
}
// Weight packing: dst[k * ldd + l] = src[l * ld + k] for a 16 x 16 block
// (rows l, columns k): pairs of rows interleaved by 32 then 64 bits, then
// 128-bit lanes exchanged twice, 64 shuffles for 256 elements.
inline void TransposeW(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m512 r[16], t[16];
  for (int l = 0; l < 16; ++l) r[l] = _mm512_loadu_ps(src + l * ld);
  for (int i = 0; i < 16; i += 2) {  // lane q: rows i, i+1 of columns 4q, 4q+1 | 4q+2, 4q+3
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int j = 0; j < 16; j += 4) {  // r[j + c], lane q: rows j..j+3 of column 4q + c
    const __m512d a = _mm512_castps_pd(t[j]), b = _mm512_castps_pd(t[j + 1]);
    const __m512d c = _mm512_castps_pd(t[j + 2]), d = _mm512_castps_pd(t[j + 3]);
    r[j] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[j + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[j + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[j + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int c = 0; c < 4; ++c) {  // column 4q + c: lane q of r[c], r[4 + c], r[8 + c], r[12 + c]
    __m512 v[4] = {r[c], r[4 + c], r[8 + c], r[12 + c]};
    TransposeLanes(v);
    for (int q = 0; q < 4; ++q) _mm512_storeu_ps(dst + (4 * q + c) * ldd, v[q]);
  }
}
// The same for an 8 x 8 block of doubles: pairs of rows interleaved, then
// 128-bit lanes exchanged twice.
inline void TransposeW(const double* src, int64_t ld, double* dst, int64_t ldd) {
  __m512d r[8], t[8];
  for (int l = 0; l < 8; ++l) r[l] = _mm512_loadu_pd(src + l * ld);
  for (int i = 0; i < 8; i += 2) {  // lane q: rows i, i+1 of column 2q | 2q+1
    t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
  }
  for (int c = 0; c < 2; ++c) {  // column 2q + c: lane q of t[c], t[2 + c], t[4 + c], t[6 + c]
    __m512 v[4] = {_mm512_castpd_ps(t[c]), _mm512_castpd_ps(t[2 + c]), _mm512_castpd_ps(t[4 + c]),
                   _mm512_castpd_ps(t[6 + c])};
    TransposeLanes(v);
    for (int q = 0; q < 4; ++q) _mm512_storeu_pd(dst + (2 * q + c) * ldd, _mm512_castps_pd(v[q]));
  }
}
inline void Store(float* p, Vec<float> a) { _mm512_storeu_ps(p, a.v); }
inline void Store(double* p, Vec<double> a) { _mm512_storeu_pd(p, a.v); }
inline void StoreN(float* p, Vec<float> a, int n) { _mm512_mask_storeu_ps(p, MaskN16(n), a.v); }
inline void StoreN(double* p, Vec<double> a, int n) { _mm512_mask_storeu_pd(p, MaskN8(n), a.v); }

inline Vec<float> operator+(Vec<float> a, Vec<float> b) { return {_mm512_add_ps(a.v, b.v)}; }
inline Vec<float> operator-(Vec<float> a, Vec<float> b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline Vec<float> operator*(Vec<float> a, Vec<float> b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline Vec<float> operator/(Vec<float> a, Vec<float> b) { return {_mm512_div_ps(a.v, b.v)}; }
inline Vec<double> operator+(Vec<double> a, Vec<double> b) { return {_mm512_add_pd(a.v, b.v)}; }
inline Vec<double> operator-(Vec<double> a, Vec<double> b) { return {_mm512_sub_pd(a.v, b.v)}; }
inline Vec<double> operator*(Vec<double> a, Vec<double> b) { return {_mm512_mul_pd(a.v, b.v)}; }
inline Vec<double> operator/(Vec<double> a, Vec<double> b) { return {_mm512_div_pd(a.v, b.v)}; }
inline Vec<float> Fma(Vec<float> a, Vec<float> b, Vec<float> c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline Vec<double> Fma(Vec<double> a, Vec<double> b, Vec<double> c) { return {_mm512_fmadd_pd(a.v, b.v, c.v)}; }

// max(0, x) with NaN kept: VMAXPS returns its second operand when either is NaN.
inline Vec<float> Relu(Vec<float> a) { return {_mm512_max_ps(_mm512_setzero_ps(), a.v)}; }
inline Vec<double> Relu(Vec<double> a) { return {_mm512_max_pd(_mm512_setzero_pd(), a.v)}; }
inline Vec<float> Step(Vec<float> a) {
  return {_mm512_maskz_mov_ps(_mm512_cmp_ps_mask(a.v, _mm512_setzero_ps(), _CMP_GT_OQ), _mm512_set1_ps(1.f))};
}
inline Vec<double> Step(Vec<double> a) {
  return {_mm512_maskz_mov_pd(_mm512_cmp_pd_mask(a.v, _mm512_setzero_pd(), _CMP_GT_OQ), _mm512_set1_pd(1.0))};
}

// 1/d from the 14-bit estimate and one Newton step (~1 ulp), much cheaper
// than a division; d is finite and positive at every use (exp is clamped).
inline __m512 RecipPos(__m512 d) {
  __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
}

inline Vec<float> Exp(Vec<float> a) {
  __m512 x = _mm512_min_ps(_mm512_set1_ps(88.0f), a.v);
  x = _mm512_max_ps(_mm512_set1_ps(-87.3365447505531f), x);
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(5.0000001201E-1f));
  __m512 x2 = _mm512_mul_ps(x, x);
  p = _mm512_fmadd_ps(p, x2, _mm512_add_ps(x, _mm512_set1_ps(1.f)));
  __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return {_mm512_mul_ps(p, _mm512_castsi512_ps(e))};
}

inline Vec<double> Exp(Vec<double> a) {
  __m512d x = _mm512_min_pd(_mm512_set1_pd(708.0), a.v);
  x = _mm512_max_pd(_mm512_set1_pd(-708.0), x);
  __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(1.4426950408889634073599)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_pd(n, _mm512_set1_pd(6.93145751953125E-1), x);
  x = _mm512_fnmadd_pd(n, _mm512_set1_pd(1.42860682030941723212E-6), x);
  __m512d xx = _mm512_mul_pd(x, x);
  __m512d p = _mm512_set1_pd(1.26177193074810590878E-4);
  p = _mm512_fmadd_pd(p, xx, _mm512_set1_pd(3.02994407707441961300E-2));
  p = _mm512_fmadd_pd(p, xx, _mm512_set1_pd(9.99999999999999999910E-1));
  p = _mm512_mul_pd(p, x);
  __m512d q = _mm512_set1_pd(3.00198505138664455042E-6);
  q = _mm512_fmadd_pd(q, xx, _mm512_set1_pd(2.52448340349684104192E-3));
  q = _mm512_fmadd_pd(q, xx, _mm512_set1_pd(2.27265548208155028766E-1));
  q = _mm512_fmadd_pd(q, xx, _mm512_set1_pd(2.00000000000000000009E0));
  __m512d r = _mm512_div_pd(p, _mm512_sub_pd(q, p));
  r = _mm512_fmadd_pd(r, _mm512_set1_pd(2.0), _mm512_set1_pd(1.0));
  __m256i ni = _mm512_cvtpd_epi32(n);
  __m512i e = _mm512_slli_epi64(_mm512_add_epi64(_mm512_cvtepi32_epi64(ni), _mm512_set1_epi64(1023)), 52);
  return {_mm512_mul_pd(r, _mm512_castsi512_pd(e))};
}

// tanh: the rational form of tanh_rational.hpp, clamped to [-1, 1].
inline Vec<float> Tanh(Vec<float> a) {
  using R = TanhRational;
  const __m512 x = _mm512_max_ps(_mm512_set1_ps(-R::kClamp), _mm512_min_ps(_mm512_set1_ps(R::kClamp), a.v));
  const __m512 u = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(R::kP[6]);
  for (int i = 5; i >= 0; --i) p = _mm512_fmadd_ps(p, u, _mm512_set1_ps(R::kP[i]));
  __m512 q = _mm512_set1_ps(R::kQ[3]);
  for (int i = 2; i >= 0; --i) q = _mm512_fmadd_ps(q, u, _mm512_set1_ps(R::kQ[i]));
  const __m512 t = _mm512_mul_ps(_mm512_mul_ps(x, p), RecipPos(q));
  // NaN stays NaN: min/max return their second operand when either is NaN
  return {_mm512_max_ps(_mm512_set1_ps(-1.f), _mm512_min_ps(_mm512_set1_ps(1.f), t))};
}

inline Vec<double> Tanh(Vec<double> a) {
  const __m512d sign = _mm512_set1_pd(-0.0);
  __m512d ax = _mm512_andnot_pd(sign, a.v);
  __m512d z = _mm512_mul_pd(a.v, a.v);
  __m512d p = _mm512_set1_pd(-9.64399179425052238628E-1);
  p = _mm512_fmadd_pd(p, z, _mm512_set1_pd(-9.92877231001918586564E1));
  p = _mm512_fmadd_pd(p, z, _mm512_set1_pd(-1.61468768441708447952E3));
  __m512d q = _mm512_add_pd(z, _mm512_set1_pd(1.12811678491632931402E2));
  q = _mm512_fmadd_pd(q, z, _mm512_set1_pd(2.23548839060100448583E3));
  q = _mm512_fmadd_pd(q, z, _mm512_set1_pd(4.84406305325125486048E3));
  __m512d small = _mm512_fmadd_pd(_mm512_div_pd(_mm512_mul_pd(p, z), q), a.v, a.v);
  __m512d e = Exp(Vec<double>{_mm512_add_pd(ax, ax)}).v;
  __m512d big = _mm512_sub_pd(_mm512_set1_pd(1.0),
                              _mm512_div_pd(_mm512_set1_pd(2.0), _mm512_add_pd(e, _mm512_set1_pd(1.0))));
  big = _mm512_or_pd(big, _mm512_and_pd(sign, a.v));
  __mmask8 is_small = _mm512_cmp_pd_mask(ax, _mm512_set1_pd(0.625), _CMP_LT_OQ);
  return {_mm512_mask_blend_pd(is_small, big, small)};
}

inline Vec<float> Sigmoid(Vec<float> a) {
  __m512 e = Exp(Vec<float>{_mm512_xor_ps(a.v, _mm512_set1_ps(-0.f))}).v;
  return {RecipPos(_mm512_add_ps(_mm512_set1_ps(1.f), e))};
}
inline Vec<double> Sigmoid(Vec<double> a) {
  __m512d e = Exp(Vec<double>{_mm512_xor_pd(a.v, _mm512_set1_pd(-0.0))}).v;
  return {_mm512_div_pd(_mm512_set1_pd(1.0), _mm512_add_pd(_mm512_set1_pd(1.0), e))};
}

inline Vec<float> Select(Vec<float> m, Vec<float> a, Vec<float> b) {
  return {_mm512_mask_blend_ps(_mm512_cmp_ps_mask(m.v, _mm512_setzero_ps(), _CMP_NEQ_OQ), b.v, a.v)};
}
inline Vec<double> Select(Vec<double> m, Vec<double> a, Vec<double> b) {
  return {_mm512_mask_blend_pd(_mm512_cmp_pd_mask(m.v, _mm512_setzero_pd(), _CMP_NEQ_OQ), b.v, a.v)};
}

inline float ReduceAdd(Vec<float> a) { return _mm512_reduce_add_ps(a.v); }
inline double ReduceAdd(Vec<double> a) { return _mm512_reduce_add_pd(a.v); }

// Lane r of the result = the sum of the lanes of a[r], for kW vectors at once:
// a shuffle tree that halves the vector count at each level, far cheaper than
// kW separate ReduceAdd.
inline Vec<float> ReduceRows(const Vec<float>* a) {
  __m512 b[8], c[4];
  for (int i = 0; i < 4; ++i)  // 256-bit halves: b[i] holds rows i, i+4; b[i+4] rows i+8, i+12
    for (int j = 0; j < 2; ++j) {
      const __m512 u = a[i + 8 * j].v, v = a[i + 4 + 8 * j].v;
      b[i + 4 * j] = _mm512_add_ps(_mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(3, 2, 3, 2)));
    }
  for (int i = 0; i < 4; ++i) {  // 128-bit lanes: c[i] holds rows i, i+4, i+8, i+12
    const __m512 u = b[i], v = b[i + 4];
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(u, v, _MM_SHUFFLE(3, 1, 3, 1)));
  }
  const __m512 d0 = _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_ps(c[0], c[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 d1 = _mm512_add_ps(_mm512_shuffle_ps(c[2], c[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_ps(c[2], c[3], _MM_SHUFFLE(3, 2, 3, 2)));
  return {_mm512_add_ps(_mm512_shuffle_ps(d0, d1, _MM_SHUFFLE(2, 0, 2, 0)),
                        _mm512_shuffle_ps(d0, d1, _MM_SHUFFLE(3, 1, 3, 1)))};
}
inline Vec<double> ReduceRows(const Vec<double>* a) {
  alignas(64) double s[8];
  for (int r = 0; r < 8; ++r) s[r] = ReduceAdd(a[r]);
  return {_mm512_load_pd(s)};
}
