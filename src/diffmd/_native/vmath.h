// Vectorisable elementary functions for the generated pair kernels.
//
// libm's exp and log are calls the compiler cannot vectorise, so a loop over a row's pairs that
// calls them runs one pair at a time. These are branch-free (selects only) and inline, so a
// `#pragma omp simd` loop keeps all 16 (float) or 8 (double) lanes busy. Accuracy: a few ulp of
// the correctly rounded result for normal inputs (tests/test_kernels.py compares them with
// numpy over wide ranges and special values); subnormal results flush to zero, as XLA's CPU
// code does. Measured: exp 0.9 ulp, log 1.9, logistic 2.3, expm1 and log1p 3.5, tanh 4.5 (XLA's
// own tanh: 4.2), pow within 2.5·(1 + |y ln x|).
//
//   exp(x)   = 2^k · p(r),  k = round(x / ln 2),  r = x − k ln 2 (Cody–Waite, two parts),
//              p the Taylor polynomial of e^r on |r| ≤ ln 2 / 2 (degree 13 double, 7 float).
//   log(x)   = e ln 2 + 2 atanh(f),  x = 2^e m with m in [√½, √2),  f = (m − 1)/(m + 1),
//              atanh by its odd series in f (|f| ≤ 0.1716: 11 terms double, 5 float).
//   pow, expm1, log1p, tanh, logistic are built on them (see each).
//
// Branch-free throughout: selects on single comparisons (`&&`, `||`, and even `&` of two
// comparisons can come out as branches, which stop the loop around them from vectorising). No standard headers: a generated kernel includes only this, compact.h and pair_rows.h
// (<cmath> and <vector> alone took most of its compile time). The scalar helpers below are the
// compilers' builtins (the intrinsics the standard functions wrap; sqrt, rounding and min/max
// vectorise, the others are calls).
#pragma once

namespace diffmd::vmath {

// Everything is forced inline: a call the inliner declines (Pow holds an Exp and a Log) stays a
// call inside the row loop, and the loop does not vectorise.
#define DIFFMD_INLINE inline __attribute__((always_inline))

// ---- scalar helpers (builtins), float and double ------------------------------------------

#define DIFFMD_UNARY(NAME, BUILTIN)                                        \
  DIFFMD_INLINE float NAME(float x) { return __builtin_##BUILTIN##f(x); }         \
  DIFFMD_INLINE double NAME(double x) { return __builtin_##BUILTIN(x); }
#define DIFFMD_BINARY(NAME, BUILTIN)                                                  \
  DIFFMD_INLINE float NAME(float x, float y) { return __builtin_##BUILTIN##f(x, y); }        \
  DIFFMD_INLINE double NAME(double x, double y) { return __builtin_##BUILTIN(x, y); }
DIFFMD_UNARY(Sqrt, sqrt)
DIFFMD_UNARY(NearbyInt, nearbyint)
DIFFMD_UNARY(Fabs, fabs)
DIFFMD_UNARY(Floor, floor)
DIFFMD_UNARY(Ceil, ceil)
DIFFMD_UNARY(Round, round)
DIFFMD_UNARY(Cbrt, cbrt)
DIFFMD_UNARY(Sin, sin)
DIFFMD_UNARY(Cos, cos)
DIFFMD_UNARY(Tan, tan)
DIFFMD_UNARY(Asin, asin)
DIFFMD_UNARY(Acos, acos)
DIFFMD_UNARY(Atan, atan)
DIFFMD_UNARY(Sinh, sinh)
DIFFMD_UNARY(Cosh, cosh)
DIFFMD_UNARY(Asinh, asinh)
DIFFMD_UNARY(Acosh, acosh)
DIFFMD_UNARY(Atanh, atanh)
DIFFMD_UNARY(Erf, erf)
DIFFMD_UNARY(Erfc, erfc)
DIFFMD_UNARY(Lgamma, lgamma)
DIFFMD_BINARY(Fmin, fmin)
DIFFMD_BINARY(Fmax, fmax)
DIFFMD_BINARY(Fmod, fmod)
DIFFMD_BINARY(Atan2, atan2)
DIFFMD_BINARY(NextAfter, nextafter)
DIFFMD_BINARY(CopySign, copysign)
#undef DIFFMD_UNARY
#undef DIFFMD_BINARY

template <typename T>
DIFFMD_INLINE bool IsNan(T x) { return x != x; }
template <typename T>
constexpr T Inf() { return T(__builtin_inf()); }
// Classification by comparisons (the classification builtins can lower to branches).
template <typename T>
DIFFMD_INLINE bool IsInf(T x) { return Fabs(x) == Inf<T>(); }
template <typename T>
DIFFMD_INLINE bool IsFinite(T x) { return Fabs(x) < Inf<T>(); }
template <typename T>
constexpr T NaN() { return T(__builtin_nan("")); }
template <typename T>
constexpr T Epsilon() { return sizeof(T) == 8 ? T(2.220446049250313e-16) : T(1.1920929e-07f); }
template <typename T>
constexpr T MinNormal() { return sizeof(T) == 8 ? T(2.2250738585072014e-308) : T(1.17549435e-38f); }

template <typename T>
struct Bits;
template <>
struct Bits<float> {
  using Int = int;
  static constexpr int kMantissa = 23, kBias = 127;
};
template <>
struct Bits<double> {
  using Int = long long;
  static constexpr int kMantissa = 52, kBias = 1023;
};

template <typename T>
DIFFMD_INLINE typename Bits<T>::Int AsInt(T x) {
  typename Bits<T>::Int i;
  __builtin_memcpy(&i, &x, sizeof(T));
  return i;
}

template <typename T>
DIFFMD_INLINE T AsFloat(typename Bits<T>::Int i) {
  T x;
  __builtin_memcpy(&x, &i, sizeof(T));
  return x;
}

// 2^k for integral k in the normal range (the caller clamps k).
template <typename T>
DIFFMD_INLINE T Pow2(T k) {
  using Int = typename Bits<T>::Int;
  return AsFloat<T>(Int(Int(k) + Bits<T>::kBias) << Bits<T>::kMantissa);
}

template <typename T>
DIFFMD_INLINE T Exp(T x) {
  constexpr bool kDouble = sizeof(T) == 8;
  const T log2e = T(1.4426950408889634);
  const T ln2_hi = kDouble ? T(6.93147180369123816490e-01) : T(0.693145751953125);
  const T ln2_lo = kDouble ? T(1.90821492927058770002e-10) : T(1.428606765330187045e-06);
  const T hi = kDouble ? T(709.782712893384) : T(88.72283935546875);
  const T lo = kDouble ? T(-708.3964185322641) : T(-87.33654022216797);
  const T xc = Fmin(Fmax(x, lo), hi);
  const T k = NearbyInt(xc * log2e);
  const T r = (xc - k * ln2_hi) - k * ln2_lo;
  T p;
  if (kDouble) {
    p = T(1.0 / 6227020800.0);  // 1/13!
    p = p * r + T(1.0 / 479001600.0);
    p = p * r + T(1.0 / 39916800.0);
    p = p * r + T(1.0 / 3628800.0);
    p = p * r + T(1.0 / 362880.0);
    p = p * r + T(1.0 / 40320.0);
    p = p * r + T(1.0 / 5040.0);
    p = p * r + T(1.0 / 720.0);
    p = p * r + T(1.0 / 120.0);
    p = p * r + T(1.0 / 24.0);
    p = p * r + T(1.0 / 6.0);
    p = p * r + T(0.5);
    p = p * r + T(1);
    p = p * r + T(1);
  } else {
    p = T(1.0 / 5040.0);
    p = p * r + T(1.0 / 720.0);
    p = p * r + T(1.0 / 120.0);
    p = p * r + T(1.0 / 24.0);
    p = p * r + T(1.0 / 6.0);
    p = p * r + T(0.5);
    p = p * r + T(1);
    p = p * r + T(1);
  }
  // k spans the whole exponent range, whose ends Pow2 cannot form: 2^k = 2^k1 · 2^(k − k1).
  const T k1 = Floor(k * T(0.5));
  T result = p * Pow2<T>(k1) * Pow2<T>(k - k1);
  result = x > hi ? Inf<T>() : result;
  result = x < lo ? T(0) : result;
  return x != x ? x : result;
}

template <typename T>
DIFFMD_INLINE T Log(T x) {
  using Int = typename Bits<T>::Int;
  constexpr bool kDouble = sizeof(T) == 8;
  constexpr int kM = Bits<T>::kMantissa;
  const T min_normal = MinNormal<T>();
  const bool subnormal = x < min_normal;
  const T scaled = subnormal ? x * T(kDouble ? 18014398509481984.0 : 16777216.0) : x;  // 2^54, 2^24
  const Int bits = AsInt(scaled);
  const Int exponent = ((bits >> kM) & Int((1 << (kDouble ? 11 : 8)) - 1)) - Bits<T>::kBias;
  const Int mantissa_bits = (bits & ((Int(1) << kM) - 1)) | (Int(Bits<T>::kBias) << kM);
  T m = AsFloat<T>(mantissa_bits);  // [1, 2)
  T e = T(exponent) - (subnormal ? T(kDouble ? 54 : 24) : T(0));
  const bool big = m > T(1.4142135623730951);
  m = big ? m * T(0.5) : m;
  e = big ? e + T(1) : e;
  const T f = (m - T(1)) / (m + T(1));
  const T s = f * f;
  T q;
  if (kDouble) {
    q = T(1.0 / 23.0);
    q = q * s + T(1.0 / 21.0);
    q = q * s + T(1.0 / 19.0);
    q = q * s + T(1.0 / 17.0);
    q = q * s + T(1.0 / 15.0);
    q = q * s + T(1.0 / 13.0);
    q = q * s + T(1.0 / 11.0);
    q = q * s + T(1.0 / 9.0);
    q = q * s + T(1.0 / 7.0);
    q = q * s + T(1.0 / 5.0);
    q = q * s + T(1.0 / 3.0);
  } else {
    q = T(1.0 / 11.0);
    q = q * s + T(1.0 / 9.0);
    q = q * s + T(1.0 / 7.0);
    q = q * s + T(1.0 / 5.0);
    q = q * s + T(1.0 / 3.0);
  }
  const T ln2_hi = kDouble ? T(6.93147180369123816490e-01) : T(0.693145751953125);
  const T ln2_lo = kDouble ? T(1.90821492927058770002e-10) : T(1.428606765330187045e-06);
  const T two_f = f + f;
  T result = e * ln2_hi + (two_f + (two_f * s * q + e * ln2_lo));
  result = x == T(0) ? -Inf<T>() : result;
  result = x < T(0) ? NaN<T>() : result;
  result = x == Inf<T>() ? x : result;
  return x != x ? x : result;
}

// x^y as exp(y log|x|), with the special values of jax.lax.pow (C's pow): x^0 = 1, 1^y = 1, a
// negative x gives ±|x|^y for integral y and NaN otherwise, ±0 and ±inf follow the sign rules.
template <typename T>
DIFFMD_INLINE T Pow(T x, T y) {
  // Nested selects on single comparisons: `a & b` of two comparisons can come out as a branch,
  // which stops the loop around it from vectorising.
  const T ax = Fabs(x), ay = Fabs(y);
  T result = Exp(y * Log(ax));
  const bool integral = y - NearbyInt(y) == T(0);  // false for ±inf and NaN
  const T half = y * T(0.5);
  const bool odd = Fabs(half - NearbyInt(half)) == T(0.5);  // odd integers only
  const bool negative = AsInt(x) < 0;  // the sign bit (−0 included)
  result = odd ? (negative ? -result : result) : result;
  // a finite negative base and a finite non-integral exponent: NaN
  result = x < T(0) ? (ax < Inf<T>() ? (ay < Inf<T>() ? (integral ? result : NaN<T>()) : result) : result) : result;
  result = x == T(1) ? T(1) : (x == T(-1) ? (ay == Inf<T>() ? T(1) : result) : result);  // 1^y = (−1)^±inf = 1
  return y == T(0) ? T(1) : result;
}

// e^x − 1 without cancellation near 0 (Kahan: with u = e^x, (u − 1)·x / log u).
template <typename T>
DIFFMD_INLINE T Expm1(T x) {
  const T u = Exp(x);
  const T um1 = u - T(1);
  const T lu = Log(u);
  const T safe = um1 == T(0) ? T(1) : (lu == T(0) ? T(1) : lu);
  T result = um1 * (x / safe);  // (x / log u) first: um1·x overflows before the result does
  result = um1 == T(0) ? x : result;
  result = u == Inf<T>() ? u : result;
  return um1 == T(-1) ? T(-1) : result;
}

// log(1 + x) without cancellation near 0 (with u = 1 + x: log(u)·x / (u − 1)).
template <typename T>
DIFFMD_INLINE T Log1p(T x) {
  const T u = T(1) + x;
  const T um1 = u - T(1);
  const T safe = um1 == T(0) ? T(1) : um1;
  T result = Log(u) * (x / safe);
  result = um1 == T(0) ? x : result;
  return u == Inf<T>() ? u : result;
}

template <typename T>
DIFFMD_INLINE T Tanh(T x) {
  const T ax = Fmin(Fabs(x), T(sizeof(T) == 8 ? 20.0 : 10.0));  // tanh = ±1 beyond
  const T e = Expm1(T(2) * ax);
  const T t = e / (e + T(2));
  return x != x ? x : CopySign(t, x);
}

template <typename To, typename From>
DIFFMD_INLINE To BitCast(From x) {
  static_assert(sizeof(To) == sizeof(From), "BitCast between types of different sizes");
  To out;
  __builtin_memcpy(&out, &x, sizeof(To));
  return out;
}

template <typename T>
DIFFMD_INLINE T Logistic(T x) {
  return T(1) / (T(1) + Exp(-x));
}

}  // namespace diffmd::vmath
