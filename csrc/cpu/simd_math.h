// Vector math for the SIMD CPU kernels: a lane-parallel float64 type, exp, log and
// the softmin of three with its weights; float32 lanes (twice as many per register)
// for the transcendentals of float32 inputs.
//
// The first room of simd_per_isa.h, which is compiled once per instruction set with
// S2DTW_SIMD_NS (namespace) and S2DTW_NATIVE_DOUBLES (doubles in one register: 8 for
// AVX-512, 4 for AVX2) defined. `Vec` is kGroup native registers handled as
// one value of kLanes lanes: the independent registers give the out-of-order core
// several dependency chains to overlap (the recursions are latency-bound).
//
// Accuracy, measured against NumPy's exp / log on 131072 points
// (tests/test_cpu_precision.py::test_vector_exp_log, through `_cpu.check_math`):
//   vexp on [-708, 0]: max relative error <= 4.5e-16 (2 ulp);
//   vlog on [1, 3]:    max absolute error <= 4.5e-16 (log(sum) of softmin: sum in [1, 3]);
//   float32 (vexp_f32 / vlog_f32, same test with float32 inputs against float64 NumPy):
//   exp on [-87, 0] relative error <= 3e-7, log on [1, 3] absolute error <= 2e-7.
#pragma once

#include <cstdint>
#include <cstring>

#ifndef S2DTW_SIMD_NS
#error "define S2DTW_SIMD_NS and S2DTW_NATIVE_DOUBLES before including simd_math.h"
#endif

namespace s2dtw::cpu::S2DTW_SIMD_NS {

constexpr double kInf = __builtin_inf();
constexpr int kNative = S2DTW_NATIVE_DOUBLES;
constexpr int kGroup = 4;
constexpr int kLanes = kNative * kGroup;

typedef double NativeD __attribute__((vector_size(8 * kNative)));
typedef int64_t NativeI __attribute__((vector_size(8 * kNative)));
typedef uint64_t NativeU __attribute__((vector_size(8 * kNative)));
typedef float NativeF __attribute__((vector_size(4 * kNative)));
typedef int32_t NativeI32 __attribute__((vector_size(4 * kNative)));
// The same at any address, for loads and stores of one register. (A memcpy of a whole
// Vec is expanded by GCC 12 into 16-byte moves through the stack, and the 32-byte reads
// that follow cannot be forwarded from them: a stall of tens of cycles per access.)
typedef double NativeDU __attribute__((vector_size(8 * kNative), aligned(8), may_alias));
typedef float NativeFU __attribute__((vector_size(4 * kNative), aligned(4), may_alias));
// A full register of floats: the lanes of two NativeD.
constexpr int kWide = 2 * kNative;
typedef float WideF __attribute__((vector_size(4 * kWide)));
typedef int32_t WideI __attribute__((vector_size(4 * kWide)));
typedef float WideFU __attribute__((vector_size(4 * kWide), aligned(4), may_alias));

// float -> double of one register's worth (vcvtps2pd). GCC 12 splits
// __builtin_convertvector(float -> double) into 128-bit halves and inserts; the intrinsic is one instruction.
inline NativeD to_double(NativeF f) {
#if S2DTW_NATIVE_DOUBLES == 8
  return (NativeD)_mm512_cvtps_pd((__m256)f);
#else
  return (NativeD)_mm256_cvtps_pd((__m128)f);
#endif
}

#define S2DTW_EACH _Pragma("GCC unroll 8") for (int g = 0; g < kGroup; ++g)

struct Mask {
  NativeI v[kGroup];
  friend Mask operator&(const Mask& a, const Mask& b) {
    Mask r;
    S2DTW_EACH r.v[g] = a.v[g] & b.v[g];
    return r;
  }
  friend Mask operator~(const Mask& a) {
    Mask r;
    S2DTW_EACH r.v[g] = ~a.v[g];
    return r;
  }
};

struct Vec {
  NativeD v[kGroup];

  static Vec splat(double x) {
    Vec r;
    S2DTW_EACH r.v[g] = NativeD{} + x;
    return r;
  }
  static Vec load(const double* p) {
    Vec r;
    S2DTW_EACH r.v[g] = *reinterpret_cast<const NativeDU*>(p + g * kNative);
    return r;
  }
  static Vec load(const float* p) {
    Vec r;
    S2DTW_EACH r.v[g] = to_double(*reinterpret_cast<const NativeFU*>(p + g * kNative));
    return r;
  }
  void store(double* p) const { S2DTW_EACH* reinterpret_cast<NativeDU*>(p + g * kNative) = v[g]; }
  void store(float* p) const {
    S2DTW_EACH* reinterpret_cast<NativeFU*>(p + g * kNative) = __builtin_convertvector(v[g], NativeF);
  }
  double operator[](int lane) const { return v[lane / kNative][lane % kNative]; }
};

#define S2DTW_VEC_OP(op)                               \
  inline Vec operator op(const Vec& a, const Vec& b) { \
    Vec r;                                             \
    S2DTW_EACH r.v[g] = a.v[g] op b.v[g];              \
    return r;                                          \
  }
S2DTW_VEC_OP(+)
S2DTW_VEC_OP(-)
S2DTW_VEC_OP(*)
S2DTW_VEC_OP(/)
#undef S2DTW_VEC_OP
#define S2DTW_CMP_OP(name, op)                   \
  inline Mask name(const Vec& a, const Vec& b) { \
    Mask r;                                      \
    S2DTW_EACH r.v[g] = a.v[g] op b.v[g];        \
    return r;                                    \
  }
S2DTW_CMP_OP(less, <)
S2DTW_CMP_OP(equal, ==)
#undef S2DTW_CMP_OP

inline Vec select(const Mask& m, const Vec& a, const Vec& b) {
  Vec r;
  S2DTW_EACH r.v[g] = m.v[g] ? a.v[g] : b.v[g];
  return r;
}
inline Vec vmax(const Vec& a, const Vec& b) { return select(less(a, b), b, a); }

// kLanes float lanes in kGroup / 2 full registers, lane order as Vec's.
struct VecF {
  WideF v[kGroup / 2];
  void store(float* p) const {
    for (int h = 0; h < kGroup / 2; ++h) *reinterpret_cast<WideFU*>(p + h * kWide) = v[h];
  }
};

// Two registers of doubles (or 64-bit masks) as one of floats (32-bit masks), and back.
template <typename Half, typename Wide>
inline Wide join(Half lo, Half hi) {
#if S2DTW_NATIVE_DOUBLES == 8
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
#endif
}
inline WideF narrow(NativeD lo, NativeD hi) {
  return join<NativeF, WideF>(__builtin_convertvector(lo, NativeF), __builtin_convertvector(hi, NativeF));
}
inline WideI narrow(NativeI lo, NativeI hi) {
  return join<NativeI32, WideI>(__builtin_convertvector(lo, NativeI32), __builtin_convertvector(hi, NativeI32));
}
inline NativeD widen(WideF x, int half) {
#if S2DTW_NATIVE_DOUBLES == 8
  const NativeF h = half ? __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15)
                         : __builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7);
#else
  const NativeF h = half ? __builtin_shufflevector(x, x, 4, 5, 6, 7) : __builtin_shufflevector(x, x, 0, 1, 2, 3);
#endif
  return to_double(h);
}
inline VecF select(const Mask& m, const VecF& a, const VecF& b) {
  VecF r;
  for (int h = 0; h < kGroup / 2; ++h) r.v[h] = narrow(m.v[2 * h], m.v[2 * h + 1]) ? a.v[h] : b.v[h];
  return r;
}

// p(r) = c[0] r^(N-1) + ... + c[N-1] by Horner's rule (c: highest degree first), in
// lanes of V. The polynomials of exp and log below differ only in these coefficients.
template <typename V, typename T, int N>
__attribute__((always_inline)) inline V horner(V r, const T (&c)[N]) {
  V p = V{} + c[0];
  _Pragma("GCC unroll 32") for (int k = 1; k < N; ++k) p = p * r + c[k];
  return p;
}

// Taylor coefficients 1/k! of e^r: degree 13 in float64 (truncation < 1e-17 on
// [-ln2/2, ln2/2]), 7 in float32 (< 1e-8).
constexpr double kExpF64[] = {1.0 / 6227020800.0,
                              1.0 / 479001600.0,
                              1.0 / 39916800.0,
                              1.0 / 3628800.0,
                              1.0 / 362880.0,
                              1.0 / 40320.0,
                              1.0 / 5040.0,
                              1.0 / 720.0,
                              1.0 / 120.0,
                              1.0 / 24.0,
                              1.0 / 6.0,
                              0.5,
                              1.0,
                              1.0};
constexpr float kExpF32[] = {1.0f / 5040.0f, 1.0f / 720.0f, 1.0f / 120.0f, 1.0f / 24.0f, 1.0f / 6.0f, 0.5f, 1.0f, 1.0f};
// log m = 2 atanh(f) = 2 f (1 + f^2 / 3 + f^4 / 5 + ...): the coefficients 1/(2k+1) of
// the series in f^2 after its first term, to f^21 (float64) or f^9 (float32).
constexpr double kLogF64[] = {1.0 / 21.0, 1.0 / 19.0, 1.0 / 17.0, 1.0 / 15.0, 1.0 / 13.0,
                              1.0 / 11.0, 1.0 / 9.0,  1.0 / 7.0,  1.0 / 5.0,  1.0 / 3.0};
constexpr float kLogF32[] = {1.0f / 9.0f, 1.0f / 7.0f, 1.0f / 5.0f, 1.0f / 3.0f};

// e^x as 2^k e^r, r = x - k ln 2 in [-ln2/2, ln2/2], e^r by its Taylor polynomial.
// 2^k is built in the exponent bits from the low bits of x log2(e) + 1.5 * 2^52.
// x < -708 (and -inf) gives 0; x <= 709 expected.
inline NativeD exp_native(NativeD x) {
  const NativeD floor_x = NativeD{} - 708.0;
  const NativeI tiny = x < floor_x;
  x = tiny ? floor_x : x;
  const NativeD shifter = NativeD{} + 0x1.8p52;
  const NativeD kd = x * 1.4426950408889634 + shifter;  // round(x / ln2) in the low mantissa bits
  const NativeD k = kd - shifter;
  NativeD r = x - k * 0x1.62e42fefa39efp-1;  // ln2, split in two for an exact reduction
  r = r - k * 0x1.abc9e3b39803fp-56;
  const NativeD p = horner(r, kExpF64);
  const NativeI scale = (((NativeI)kd) << 52) + (int64_t(1023) << 52);
  const NativeD result = p * (NativeD)scale;
  return tiny ? NativeD{} : result;
}

// log(s) for positive normal s: s = 2^e m with m in [sqrt(1/2), sqrt(2)),
// log m = 2 atanh(f), f = (m - 1) / (m + 1), |f| < 0.172.
inline NativeD log_native(NativeD s) {
  const NativeI bits = (NativeI)s;
  NativeD m = (NativeD)((bits & int64_t(0x000fffffffffffff)) | (int64_t(1023) << 52));
  const NativeI big = m > 1.4142135623730951;  // -1 where true
  m = big ? m * 0.5 : m;
  // The biased exponent (+1 where m was halved) as a double, without an int64 -> double
  // conversion (AVX2 has none): 2^52 + e' has e' in its low mantissa bits.
  // (s > 0: a logical shift, which AVX2 has; an arithmetic one on int64 lanes it has not)
  const NativeI biased = ((NativeI)((NativeU)bits >> 52) - big) | int64_t(0x4330000000000000);
  const NativeD ed = (NativeD)biased - (0x1p52 + 1023.0);
  const NativeD f = (m - 1.0) / (m + 1.0);
  const NativeD f2 = f * f;
  const NativeD p = horner(f2, kLogF64);
  const NativeD two_f = f + f;
  return ed * 0x1.62e42fefa39efp-1 + (ed * 0x1.abc9e3b39803fp-56 + (two_f + two_f * f2 * p));
}

// The same two in float32 lanes, for float32 inputs. e^x, x in [-87, 0]; below -87
// (and -inf) gives 0. 2^k from int32 lanes (AVX2 has every 32-bit operation this needs).
inline WideF exp_f32(WideF x) {
  const WideI tiny = x < -87.0f;
  x = tiny ? WideF{} : x;
  const WideF shifter = WideF{} + 0x1.8p23f;
  const WideF kf = x * 1.44269504f + shifter;
  const WideF k = kf - shifter;
  WideF r = x - k * 0x1.62e400p-1f;  // ln2 in two parts: k * hi is exact
  r = r - k * 0x1.7f7d1cp-20f;
  const WideF p = horner(r, kExpF32);
  const WideI scale = (((WideI)kf) << 23) + (127 << 23);
  return tiny ? WideF{} : p * (WideF)scale;
}
// log(s) for positive normal float s: m in [sqrt(1/2), sqrt(2)), 2 atanh(f).
inline WideF log_f32(WideF s) {
  const WideI bits = (WideI)s;
  WideF m = (WideF)((bits & 0x007fffff) | 0x3f800000);
  const WideI big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  const WideF e = __builtin_convertvector((bits >> 23) - 127 - big, WideF);
  const WideF f = (m - 1.0f) / (m + 1.0f);
  const WideF f2 = f * f;
  const WideF p = horner(f2, kLogF32);
  const WideF two_f = f + f;
  return e * 0x1.62e400p-1f + (e * 0x1.7f7d1cp-20f + (two_f + two_f * f2 * p));
}

inline Vec vexp(const Vec& x) {
  Vec r;
  S2DTW_EACH r.v[g] = exp_native(x.v[g]);
  return r;
}
inline Vec vlog(const Vec& x) {
  Vec r;
  S2DTW_EACH r.v[g] = log_native(x.v[g]);
  return r;
}

// softmin_g(a, b, c) lane by lane, as s2dtw::softmin3 (csrc/s2dtw_cell.h): shifted by
// the minimum, +inf arguments drop out, all three +inf gives +inf and zero weights.
// When wa is given, (wa, wb, wc) receive the weights of (a, b, c); wc may be null.
// The minimum's term is exp(0) = 1, so only the middle and the largest argument need an
// exp: each argument's term is 1, e_mid or e_hi by which of (lo, mid, hi) it equals
// (ties share the same term, +inf gives exp(-inf) = 0).
__attribute__((always_inline)) inline Vec softmin3(const Vec& a, const Vec& b, const Vec& c, const Vec& gamma,
                                                   const Vec& inv_gamma, Vec* wa, Vec* wb, Vec* wc) {
  const Vec one = Vec::splat(1.0);
  Vec lo, mid, hi, e_mid, e_hi;
  Mask none;
  S2DTW_EACH {
    const NativeD ab_lo = a.v[g] < b.v[g] ? a.v[g] : b.v[g];
    const NativeD ab_hi = a.v[g] < b.v[g] ? b.v[g] : a.v[g];
    lo.v[g] = c.v[g] < ab_lo ? c.v[g] : ab_lo;
    hi.v[g] = ab_hi < c.v[g] ? c.v[g] : ab_hi;
    const NativeD hc = c.v[g] < ab_hi ? c.v[g] : ab_hi;  // min(max(a, b), c)
    mid.v[g] = ab_lo < hc ? hc : ab_lo;
    none.v[g] = lo.v[g] == __builtin_inf();
    e_mid.v[g] = exp_native((lo.v[g] - mid.v[g]) * inv_gamma.v[g]);
    e_hi.v[g] = exp_native((lo.v[g] - hi.v[g]) * inv_gamma.v[g]);
  }
  const Vec sum = one + e_mid + e_hi;
  if (wa) {
    const Vec inv = one / sum;
    const Vec zero = Vec::splat(0.0);
    auto weight = [&](const Vec& x) {
      Vec w;
      S2DTW_EACH {
        const NativeD t = x.v[g] == lo.v[g] ? one.v[g] : x.v[g] == mid.v[g] ? e_mid.v[g] : e_hi.v[g];
        w.v[g] = none.v[g] ? zero.v[g] : t * inv.v[g];
      }
      return w;
    };
    *wa = weight(a);
    *wb = weight(b);
    if (wc) *wc = weight(c);
  }
  return select(none, lo, lo - gamma * vlog(sum));
}

// The same softmin for float32 inputs: the arguments shifted by the minimum and scaled
// in float64 (lo - x is exact enough however large R grows), exp and log of those
// in float32 lanes, the result lo - gamma log(sum) in float64 again: the float32
// rounding enters R only through gamma log(sum), a bounded term. Each argument gets its
// own exp (the minimum's is exactly 1, ties share it), so no sorting is needed. wc is
// not computed (the callers recompute the third weight from the other two).
__attribute__((always_inline)) inline Vec softmin3(const Vec& a, const Vec& b, const Vec& c, const Vec& gamma,
                                                   const Vec& inv_gamma, VecF* wa, VecF* wb, VecF*) {
  Vec lo, xa, xb, xc;
  S2DTW_EACH {
    const NativeD ab = a.v[g] < b.v[g] ? a.v[g] : b.v[g];
    lo.v[g] = c.v[g] < ab ? c.v[g] : ab;
    // all three +inf: lo - x with lo = 0 gives -inf everywhere, exp 0, weights 0
    const NativeD base = lo.v[g] == __builtin_inf() ? NativeD{} : lo.v[g];
    xa.v[g] = (base - a.v[g]) * inv_gamma.v[g];
    xb.v[g] = (base - b.v[g]) * inv_gamma.v[g];
    xc.v[g] = (base - c.v[g]) * inv_gamma.v[g];
  }
  Vec out;
  _Pragma("GCC unroll 4") for (int h = 0; h < kGroup / 2; ++h) {
    const WideF ea = exp_f32(narrow(xa.v[2 * h], xa.v[2 * h + 1]));
    const WideF eb = exp_f32(narrow(xb.v[2 * h], xb.v[2 * h + 1]));
    const WideF ec = exp_f32(narrow(xc.v[2 * h], xc.v[2 * h + 1]));
    WideF sum = ea + eb + ec;
    sum = sum < 0x1p-126f ? WideF{} + 0x1p-126f : sum;  // all +inf: log of a tiny normal, lo stays +inf
    if (wa) {
      const WideF inv = 1.0f / sum;
      wa->v[h] = ea * inv;
      wb->v[h] = eb * inv;
    }
    const WideF lg = log_f32(sum);
    for (int k = 0; k < 2; ++k) out.v[2 * h + k] = lo.v[2 * h + k] - gamma.v[2 * h + k] * widen(lg, k);
  }
  return out;
}

// The recursion's transition weights: float32 lanes for float32 inputs (their softmin
// takes its exp / log in float32), float64 lanes otherwise.
template <typename Scalar>
using Weights = std::conditional_t<std::is_same_v<Scalar, float>, VecF, Vec>;

// 1 where m is set, else 0, as weights of either kind.
inline void indicator(const Mask& m, Vec* w) { *w = select(m, Vec::splat(1.0), Vec::splat(0.0)); }
inline void indicator(const Mask& m, VecF* w) {
  VecF one, zero;
  for (int h = 0; h < kGroup / 2; ++h) {
    one.v[h] = WideF{} + 1.0f;
    zero.v[h] = WideF{};
  }
  *w = select(m, one, zero);
}

// softmin_0 (gamma = 0, docs/semantics.md Variants V1/V2), lane by lane, as s2dtw::softmin3
// at gamma 0: the minimum, and as weights the one-hot of the FIRST minimal argument of
// (a, b, c); all three +inf gives +inf and zero weights. Compares and selects only. WC is
// W* or std::nullptr_t (no third weight).
template <typename W, typename WC>
__attribute__((always_inline)) inline Vec hardmin3(const Vec& a, const Vec& b, const Vec& c, W* wa, W* wb, WC wc) {
  Vec lo;
  S2DTW_EACH {
    const NativeD ab = a.v[g] < b.v[g] ? a.v[g] : b.v[g];
    lo.v[g] = c.v[g] < ab ? c.v[g] : ab;
  }
  if (wa) {
    const Mask reached = less(lo, Vec::splat(kInf));
    const Mask first = reached & equal(a, lo), second = reached & ~first & equal(b, lo);
    indicator(first, wa);
    indicator(second, wb);
    if constexpr (!std::is_null_pointer_v<WC>)
      if (wc) indicator(reached & ~first & ~second, wc);
  }
  return lo;
}

// The softmin of a kernel compiled for one form: Hard (gamma = 0) or soft. A kernel is
// compiled once per form and picked once per call (with_hard), not per cell.
template <bool Hard, typename W, typename WC>
__attribute__((always_inline)) inline Vec softmin3(const Vec& a, const Vec& b, const Vec& c, const Vec& gamma,
                                                   const Vec& inv_gamma, W* wa, W* wb, WC wc) {
  if constexpr (Hard) return hardmin3(a, b, c, wa, wb, wc);
  else return softmin3(a, b, c, gamma, inv_gamma, wa, wb, wc);
}

// body(std::true_type{}) when hard, else body(std::false_type{}): the form as a compile-time switch.
template <typename Body>
inline decltype(auto) with_hard(bool hard, Body&& body) {
  return hard ? body(std::true_type{}) : body(std::false_type{});
}

}  // namespace s2dtw::cpu::S2DTW_SIMD_NS
