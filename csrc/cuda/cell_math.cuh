// Per-cell arithmetic of the CUDA kernels: the call's pre-divided constants, the softmin
// with two exp and one log, the smoothed cost D and the grid cell W in float64, the tape entry.
// Included by s2dtw_cuda.cu only (one translation unit).
#pragma once

#include <cstdint>
#include <type_traits>

#include "s2dtw_cuda.h"

namespace s2dtw::cuda {
namespace {

// Two transition weights per W cell: d softmin / d R(diagonal), d softmin / d R(above).
template <typename Scalar>
struct alignas(2 * sizeof(Scalar)) Tape2 {
  Scalar diag, up;
};

// softmin_g as the kernels compute it: lo - back * L(1 + E(scale (lo - x)) + E(scale (lo - y))),
// where x, y are the two arguments other than the minimum lo (whose own term is exactly 1).
// float: E = 2^v, L = log2 (one MUFU instruction each), scale = log2(e) / g, back = g ln 2;
// double: E = e^v, L = ln (as the C++ kernel), scale = 1 / g, back = g.
template <typename M>
struct Scale {
  M scale, back;
};

// Constants of one call, pre-divided (a float64 division per cell is not free).
struct Consts {
  double smoothing;
  Scale<double> gamma_d, smooth_d;
  Scale<float> gamma_f, smooth_f;
  // gamma = 0 / smoothing = 0: that softmin is the minimum itself, no exp / log (and no 1 / 0). Only the
  // kernels built with kVariant read them (last, so that the other fields keep their offsets).
  bool hard_gamma, hard_smooth;
  template <typename M>
  __device__ __forceinline__ const Scale<M>& gamma() const {
    if constexpr (std::is_same_v<M, double>) return gamma_d;
    else return gamma_f;
  }
  template <typename M>
  __device__ __forceinline__ const Scale<M>& smooth() const {
    if constexpr (std::is_same_v<M, double>) return smooth_d;
    else return smooth_f;
  }
};

// The constants of the call `pb` (host side).
inline Consts consts_of(const Problem& pb) {
  constexpr double kLog2e = 1.4426950408889634, kLn2 = 0.6931471805599453;
  Consts k;
  k.smoothing = pb.smoothing;
  k.hard_gamma = pb.gamma == 0;
  k.hard_smooth = pb.smooth && pb.smoothing == 0;
  const double inv_g = k.hard_gamma ? 0.0 : 1.0 / pb.gamma;
  const double inv_s = pb.smooth && !k.hard_smooth ? 1.0 / pb.smoothing : 0.0;
  k.gamma_d = {inv_g, pb.gamma};
  k.smooth_d = {inv_s, pb.smoothing};
  k.gamma_f = {float(kLog2e * inv_g), float(kLn2 * pb.gamma)};
  k.smooth_f = {float(kLog2e * inv_s), float(kLn2 * pb.smoothing)};
  return k;
}

// Whether a call needs the kernels built with kVariant (gamma = 0, smoothing = 0, open_begin, open_end:
// docs/semantics.md, Variants); the others are compiled without a trace of them.
inline bool is_variant(const Problem& pb) {
  return pb.gamma == 0 || (pb.smooth && pb.smoothing == 0) || pb.open_begin || pb.open_end;
}

// The type exp/log run in: float for float32 inputs, double for float64.
template <typename Scalar>
using MathOf = std::conditional_t<std::is_same_v<Scalar, double>, double, float>;

// float32: ex2.approx / lg2.approx (~2 ulp; MUFU.EX2 / MUFU.LG2, no libm range reduction).
// Their arguments are small where it matters: 2^v with v <= 0 only carries weight for
// small |v|, and the log's argument is in [1, 3]. The emulation uses libm's exp2f / log2f.
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float exp_of(float v) {
  asm("ex2.approx.ftz.f32 %0, %0;" : "+f"(v));
  return v;
}
__device__ __forceinline__ float log_of(float v) {
  asm("lg2.approx.ftz.f32 %0, %0;" : "+f"(v));
  return v;
}
#else
__device__ __forceinline__ float exp_of(float v) { return exp2f(v); }
__device__ __forceinline__ float log_of(float v) { return log2f(v); }
#endif
__device__ __forceinline__ double exp_of(double v) { return exp(v); }
__device__ __forceinline__ double log_of(double v) { return log(v); }

// softmin of float64 arguments (+inf drops out), d softmin / d(a, b, c) into w (nullable)
// in M. For float32 only the two shifted differences are rounded to float (the minimum's
// is exactly 0), so the float rounding touches the O(g) correction, not lo. Ties: an exact
// 0 difference gives 2^0 = 1 as well, the tied arguments share the weight. kVariant && hard: the
// minimum, its weights the one-hot of the FIRST minimal argument (callers pass the formula's order).
template <bool kVariant, typename M>
__device__ __forceinline__ double softmin(double a, double b, double c, const Scale<M>& g, bool hard, M* w) {
  const double lo = lesser(a, lesser(b, c));
  if (lo == infinity<double>()) {
    if (w) w[0] = w[1] = w[2] = M(0);
    return lo;
  }
  const bool a_min = a == lo, b_min = !a_min && b == lo;
  if (kVariant && hard) {
    if (w) w[0] = M(a_min), w[1] = M(b_min), w[2] = M(!a_min && !b_min);
    return lo;
  }
  const double x = a_min ? b : a, y = a_min || b_min ? c : b;  // the two others, in order
  const M ex = exp_of(M(lo - x) * g.scale), ey = exp_of(M(lo - y) * g.scale);
  const M sum = M(1) + ex + ey;
  if (w) {
    const M inv = M(1) / sum, wx = ex * inv, wy = ey * inv;
    w[0] = a_min ? inv : wx;
    w[1] = a_min ? wx : b_min ? inv : wy;
    w[2] = a_min || b_min ? wy : inv;
  }
  return lo - double(g.back * log_of(sum));
}

// D[i, j] (see smoothed_cost in s2dtw_cell.h) as float64, with the softmin above (smoothing = 0:
// D[0, 0] = C[0, 0] - 0 ln 3 = C[0, 0] exactly).
template <bool kVariant, typename M, typename Scalar>
__device__ __forceinline__ double smoothed_acc(const Problem& pb, const CostView<double, Scalar>& cv, int64_t i,
                                               int64_t j, const Consts& k, M* w) {
  const double c = cv(i, j);
  if (!pb.smooth) return c;
  if (i == 0 && j == 0) {
    if (w) w[0] = w[1] = w[2] = M(0);
    return c - k.smoothing * kLn3;
  }
  const double inf = infinity<double>();
  const double left = j > 0 ? cv(i, j - 1) : inf;
  const double up = i > 0 ? cv(i - 1, j) : inf;
  const double diag = (i > 0 && j > 0) ? cv(i - 1, j - 1) : inf;
  return c + softmin<kVariant, M>(left, up, diag, k.smooth<M>(), k.hard_smooth, w);
}

// W[p, q] (see grid_cell in s2dtw_cell.h) as float64.
template <bool kVariant, typename M, typename Scalar>
__device__ __forceinline__ double grid_acc(const Problem& pb, const CostView<double, Scalar>& cv, int64_t p, int64_t q,
                                           const Consts& k) {
  if (!is_cost_cell(pb, p, q)) return pb.threshold;
  return smoothed_acc<kVariant, M, Scalar>(pb, cv, cost_index(pb, p), cost_index(pb, q), k, static_cast<M*>(nullptr));
}

}  // namespace
}  // namespace s2dtw::cuda
