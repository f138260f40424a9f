// Portable "vector" of one lane: the path every CPU can run and the reference
// the wide paths are tested against. Included inside an ISA namespace.
#pragma once
#include <cmath>
#include <cstdint>

constexpr int kVecRegs = 16;

template <typename T>
struct Vec {
  static constexpr int kW = 1;
  T v;
};

template <typename T> inline Vec<T> Zero() { return {T(0)}; }
template <typename T> inline Vec<T> Set1(T a) { return {a}; }
template <typename T> inline Vec<T> Load(const T* p) { return {*p}; }
template <typename T> inline Vec<T> LoadN(const T* p, int) { return {*p}; }
// Weight packing: dst[k * ldd + l] = src[l * ld + k] for a kW x kW block.
template <typename T> inline void TransposeW(const T* src, int64_t, T* dst, int64_t) { *dst = *src; }
template <typename T> inline void Store(T* p, Vec<T> a) { *p = a.v; }
template <typename T> inline void StoreN(T* p, Vec<T> a, int) { *p = a.v; }
template <typename T> inline Vec<T> operator+(Vec<T> a, Vec<T> b) { return {a.v + b.v}; }
template <typename T> inline Vec<T> operator-(Vec<T> a, Vec<T> b) { return {a.v - b.v}; }
template <typename T> inline Vec<T> operator*(Vec<T> a, Vec<T> b) { return {a.v * b.v}; }
template <typename T> inline Vec<T> operator/(Vec<T> a, Vec<T> b) { return {a.v / b.v}; }
// a*b + c
template <typename T> inline Vec<T> Fma(Vec<T> a, Vec<T> b, Vec<T> c) { return {a.v * b.v + c.v}; }
// relu that lets NaN through, as numpy's maximum(x, 0) does
template <typename T> inline Vec<T> Relu(Vec<T> a) { return {(a.v < T(0)) ? T(0) : a.v}; }
template <typename T> inline Vec<T> Step(Vec<T> a) { return {(a.v > T(0)) ? T(1) : T(0)}; }
template <typename T> inline Vec<T> Exp(Vec<T> a) { return {std::exp(a.v)}; }
template <typename T> inline Vec<T> Tanh(Vec<T> a) { return {std::tanh(a.v)}; }
template <typename T> inline Vec<T> Sigmoid(Vec<T> a) { return {T(1) / (T(1) + std::exp(-a.v))}; }
// m ? a : b lane by lane, m holding 1 or 0 (exact: no arithmetic on a, b)
template <typename T> inline Vec<T> Select(Vec<T> m, Vec<T> a, Vec<T> b) { return {m.v != T(0) ? a.v : b.v}; }
template <typename T> inline T ReduceAdd(Vec<T> a) { return a.v; }
// Lane r of the result = the sum of the lanes of a[r] (one lane here).
template <typename T> inline Vec<T> ReduceRows(const Vec<T>* a) { return a[0]; }
