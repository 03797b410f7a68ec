// s2dtw CUDA kernels: S2DTW / soft-DTW forward and backward for many pairs at once.
//
// Same semantics as csrc/cpu/s2dtw_cpu.cpp (docs/semantics.md); the per-cell math
// comes from csrc/s2dtw_cell.h. One fused kernel per call does, for each pair,
// the forward recursion, then (with a gradient) the backward recursion, the
// gather through the local smoothing, and the zeroing of the block's padding.
//
// Two regimes, picked on the host in `choose_plan` from n_pairs, padded_n and
// padded_m only (pair_n / pair_m are device memory and are never read here):
//
//  * "thread": one thread per pair walks its whole (P x Q) grid row by row, like
//    the CPU kernel. Its row buffers and tape are interleaved across pairs
//    (element k of pair b at [k * n_pairs + b]) so that a warp's 32 pairs touch
//    one contiguous 32-element run: every access is coalesced. No barriers, every
//    lane busy. Wins when there are many small grids (VT-TWINS: 65,536 pairs of
//    8x8 costs -> 17x17 weak grids): the GPU is full of pairs anyway, and a
//    wavefront would leave most lanes idle on the triangles of a 17x17 grid.
//
//  * "block": one thread block per pair, a tiled anti-diagonal wavefront. The
//    grid is cut into strips of T rows (T = blockDim.x <= 1024); thread t owns row
//    b0 + t of the current strip and, at step s, computes column q = s - t. R of
//    the row above comes from thread t - 1 through a double-buffered shared array
//    (one __syncthreads per step); the strip's last row is written to a per-pair
//    row buffer in the workspace that the next strip's first thread reads. So the
//    length is limited by memory only, not by the block size (8192 x 8192 and
//    the 16385 x 16385 weak grid of 8192 x 8192 costs run with T = 1024). The
//    backward walks the strips bottom-up and the steps in reverse with the same
//    scheme. Wins for a few long pairs, where it has P + Q steps instead of P * Q.
//    Limitation: a pair never uses more than one SM, so B = 1 runs on one SM.
//
//  `choose_plan` compares a cycle model of both (dependent-chain latency vs. the SM's
//  issue, with sm_90's per-cell instruction counts and the band's real work; waves) and, for the block
//  regime, picks T among 32..1024. $S2DTW_CUDA_REGIME=thread|block and
//  $S2DTW_CUDA_STRIP=T (a multiple of 32 up to 1024) override it: for tests and
//  benchmarks; results are identical up to rounding either way.
//
// Precision. R (forward) and E (backward) are float64 in both dtypes: float32 R
// (~5000 on a 512 x 512 pair with costs ~10) loses the digits that the transition
// weights are made of at small gamma. For float32 inputs, the transcendentals run
// in float32 on shifted, small arguments: softmin(a, b, c) = lo + softmin(a - lo,
// b - lo, c - lo) with lo = min(a, b, c) and the differences taken in float64, so
// exp/log see small numbers and the float32 rounding only touches the O(gamma)
// correction (|error| ~ 1e-7 * gamma), not R itself. The smoothed cost D is formed
// the same way (C in float64, its softmin correction in float32). float64 inputs
// use the header's float64 softmin3 / smoothed_cost throughout, like the CPU.
//
// What the backward keeps (the tape, only when a gradient is asked for): per W
// cell the two transition weights (from the diagonal, from above) in the scalar
// type, as the CPU kernel does: 8 bytes per W cell in float32, 16 in float64. Plus
// O(Q) per pair of wavefront buffers (float64: Q + 1 values in the forward, 4 Q in
// the backward, i.e. 32 / P bytes per W cell). The Maghoumi baseline keeps R of
// the full (P + 2) x (Q + 2) grid plus the expanded cost (2 scalars per W cell,
// 8 bytes in float32) and, in its backward, E of the full grid as well (12 bytes);
// so this is equal per cell to its forward state and less than its backward peak.
// The forward without a gradient keeps no tape: only the wavefront buffers.
// Everything is deterministic: no atomics, fixed summation order.
//
// Sakoe-Chiba band (Problem::banded): the band makes the DP cheaper, not only
// masked. Cells outside band_columns() have R = +inf, zero weights and E = 0
// exactly, as in the CPU kernel, but are not computed:
//  * thread regime: the forward walks row p over its band [lo(p), hi(p)] only, the
//    backward over grad_columns(p) = [lo(p) - d, hi(p + d)] (the band widened by
//    the smoothing's reach d = 0, 1 or 2 grid cells, so that the cost cells next to
//    the band get their share of the gradient);
//  * block regime: each strip runs only the steps where one of its rows has such a
//    column: lo(first row) .. hi(last row) + rows - 1 in the forward, similarly
//    (with grad_columns) in the backward; the other steps, and their barriers, go.
// Both read a neighbour's value from a buffer (row buffer, shared memory, column
// buffer) only where that neighbour lies in the region that was computed, and take
// +inf / 0 otherwise: the buffers there may hold another row's, strip's or pair's
// values, and the tape is not written outside the band. The cost cells that no band
// cell reaches get a zero gradient from zero_off_band(). The cost of a pair is then
// ~ its band's cells (thread regime) or ~ P / T strips of (band width + 2 T) steps
// (block regime) instead of P x Q cells / P / T strips of (Q + T) steps. The tape
// keeps its full-grid layout (memory is unchanged, only work is skipped). Results
// are bit-identical to masking the full grid (checked in emulation), and the cost
// outside the reach of the band has no influence at all (not even a NaN).
//
// Lengths are never trusted: pair_n / pair_m are device memory, so each kernel checks
// 1 <= pair_n[b] <= padded_n and 1 <= pair_m[b] <= padded_m itself (pair_lengths) and
// gives a pair that breaks it a NaN value and an all-zero gradient block, touching no
// memory outside the pair's block.
//
// Validation without a GPU: this file, unchanged, is compiled as C++ for the host by
// tests/cuda_emulation (one OS thread per CUDA thread, a barrier for __syncthreads)
// and every CI run checks both regimes against the CPU kernel (tests/test_cuda_emulation.py).
// The two macros below are the only CUDA syntax that is not C++; the emulation's
// cuda_runtime.h defines them first.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "s2dtw_cuda.h"

#ifndef S2DTW_LAUNCH
#define S2DTW_LAUNCH(kernel, blocks, threads, smem_bytes, stream, ...) \
  kernel<<<blocks, threads, smem_bytes, stream>>>(__VA_ARGS__)
#endif
#ifndef S2DTW_DYNAMIC_SHARED
#define S2DTW_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

namespace s2dtw::cuda {
namespace {

constexpr int kThreadBlock = 128;  // threads per block in the thread regime
constexpr int kMaxStrip = 1024;    // rows per strip (= threads per block) in the block regime
constexpr size_t kAlign = 256;

// Two transition weights per W cell: d softmin / d R(diagonal), d softmin / d R(above).
template <typename Scalar>
struct alignas(2 * sizeof(Scalar)) Tape2 {
  Scalar diag, up;
};

// What a thread hands to the row above it in the backward, for one column q:
// au = E(p,q) w_up(p,q) (goes to (p-1, q)), ad = E(p,q) w_diag(p,q) (to (p-1, q-1)),
// su / sd = the same through the smoothing: G(k,l) w_up / w_diag of D[k,l]
// (to C[k-1,l] / C[k-1,l-1]); rows that carry no cost relay su / sd upwards.
struct Pub {
  double au, ad, su, sd;
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
  template <typename M>
  __device__ __forceinline__ const Scale<M>& gamma() const {
    if constexpr (std::is_same_v<M, double>) return gamma_d; else return gamma_f;
  }
  template <typename M>
  __device__ __forceinline__ const Scale<M>& smooth() const {
    if constexpr (std::is_same_v<M, double>) return smooth_d; else return smooth_f;
  }
};

// The type exp/log run in: float for float32 inputs, double for float64.
template <typename Scalar>
using MathOf = std::conditional_t<std::is_same_v<Scalar, double>, double, float>;

// float32: ex2.approx / lg2.approx (~2 ulp; MUFU.EX2 / MUFU.LG2, no libm range reduction).
// Their arguments are small where it matters: 2^v with v <= 0 only carries weight for
// small |v|, and the log's argument is in [1, 3]. The emulation uses libm's exp2f / log2f.
#ifdef __CUDA_ARCH__
__device__ __forceinline__ float exp_of(float v) { asm("ex2.approx.ftz.f32 %0, %0;" : "+f"(v)); return v; }
__device__ __forceinline__ float log_of(float v) { asm("lg2.approx.ftz.f32 %0, %0;" : "+f"(v)); return v; }
#else
__device__ __forceinline__ float exp_of(float v) { return exp2f(v); }
__device__ __forceinline__ float log_of(float v) { return log2f(v); }
#endif
__device__ __forceinline__ double exp_of(double v) { return exp(v); }
__device__ __forceinline__ double log_of(double v) { return log(v); }

// softmin of float64 arguments (+inf drops out), d softmin / d(a, b, c) into w (nullable)
// in M. For float32 only the two shifted differences are rounded to float (the minimum's
// is exactly 0), so the float rounding touches the O(g) correction, not lo. Ties: an exact
// 0 difference gives 2^0 = 1 as well, the tied arguments share the weight.
template <typename M>
__device__ __forceinline__ double softmin(double a, double b, double c, const Scale<M>& g, M* w) {
  const double lo = lesser(a, lesser(b, c));
  if (lo == infinity<double>()) {
    if (w) w[0] = w[1] = w[2] = M(0);
    return lo;
  }
  const bool a_min = a == lo, b_min = !a_min && b == lo;
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

// D[i, j] (see smoothed_cost in s2dtw_cell.h) as float64, with the softmin above.
template <typename M, typename Scalar>
__device__ __forceinline__ double smoothed_acc(const Problem& pb, const CostView<double, Scalar>& cv, int64_t i,
                                               int64_t j, const Consts& k, M* w) {
  const double c = cv(i, j);
  if (!pb.smooth) return c;
  if (i == 0 && j == 0) {
    if (w) w[0] = w[1] = w[2] = M(0);
    return c - k.smoothing * 1.0986122886681098;  // softmin_s(0, 0, 0) = -s ln 3, as the header
  }
  const double inf = infinity<double>();
  const double left = j > 0 ? cv(i, j - 1) : inf;
  const double up = i > 0 ? cv(i - 1, j) : inf;
  const double diag = (i > 0 && j > 0) ? cv(i - 1, j - 1) : inf;
  return c + softmin<M>(left, up, diag, k.smooth<M>(), w);
}

// W[p, q] (see grid_cell in s2dtw_cell.h) as float64.
template <typename M, typename Scalar>
__device__ __forceinline__ double grid_acc(const Problem& pb, const CostView<double, Scalar>& cv, int64_t p,
                                           int64_t q, const Consts& k) {
  if (!is_cost_cell(pb, p, q)) return pb.threshold;
  return smoothed_acc<M, Scalar>(pb, cv, cost_index(pb, p), cost_index(pb, q), k, static_cast<M*>(nullptr));
}

// Pair b's lengths, read from device memory: false (and n = m = 0, so that zero_padding
// clears the whole block) unless 1 <= n <= padded_n and 1 <= m <= padded_m.
__device__ __forceinline__ bool pair_lengths(const Problem& pb, int64_t b, int64_t& n, int64_t& m) {
  n = pb.pair_n[b];
  m = pb.pair_m[b];
  const bool ok = n >= 1 && n <= pb.padded_n && m >= 1 && m <= pb.padded_m;
  if (!ok) n = m = 0;
  return ok;
}

// Zero the part of a pair's padded_n x padded_m gradient block outside its n x m
// cells, threads `first`, `first + step`, ... of the caller sharing the work.
template <typename Scalar>
__device__ void zero_padding(const Problem& pb, Scalar* g, int64_t n, int64_t m, int64_t first, int64_t step) {
  const int64_t right = pb.padded_m - m;  // rows [0, n), columns [m, padded_m)
  for (int64_t idx = first; idx < n * right; idx += step) {
    const int64_t i = idx / right, j = m + idx % right;
    g[i * pb.stride_i + j * pb.stride_j] = Scalar(0);
  }
  for (int64_t idx = first; idx < (pb.padded_n - n) * pb.padded_m; idx += step) {  // rows [n, padded_n)
    const int64_t i = n + idx / pb.padded_m, j = idx % pb.padded_m;
    g[i * pb.stride_i + j * pb.stride_j] = Scalar(0);
  }
}

// The Sakoe-Chiba band only changes which cells are visited. R outside the band
// is +inf and E is 0; a visited cell reads those values from its neighbours'
// buffers only where the neighbour lies inside the region that was computed, and
// the constants otherwise (the buffers there may hold another row's, strip's or
// pair's values).
__device__ __forceinline__ bool within(const Columns& c, int64_t q) { return q >= c.lo && q <= c.hi; }

// The same in 32 bits (grid extents are < 2^30), to spare the block kernel's registers.
struct Span {
  int lo, hi;
};
__device__ __forceinline__ Span span(const Columns& c) { return {int(c.lo), int(c.hi)}; }
__device__ __forceinline__ bool within(const Span& c, int q) { return q >= c.lo && q <= c.hi; }

// band_columns(), without its two 64-bit divisions where there is no band (width covers
// every cell: then every row is [0, Q)); the thread regime calls it once per row.
__host__ __device__ __forceinline__ Columns columns(int64_t P, int64_t Q, int64_t width, int64_t p) {
  if (width >= (P - 1) * (Q - 1)) return {0, Q - 1};
  return band_columns(P, Q, width, p);
}

// Grid columns of row p whose cost cell can get a nonzero gradient: the band,
// widened by what the smoothing spreads (the cost cell (i, j) also takes the
// gradient of D[i, j+1], D[i+1, j] and D[i+1, j+1]): [lo(p) - d, hi(p + d)], where
// d is the grid distance between neighbouring cost cells (0 without smoothing).
// The backward visits them; the cost cells outside get a zero gradient.
__device__ __forceinline__ Columns grad_columns(const Problem& pb, int64_t P, int64_t Q, int64_t width, int64_t p) {
  const int64_t d = pb.smooth ? (pb.weak ? 2 : 1) : 0;
  const int64_t lo = columns(P, Q, width, p).lo - d;
  return {lo < 0 ? 0 : lo, columns(P, Q, width, p + d < P ? p + d : P - 1).hi};
}

// The cost columns j whose grid column (2 j + 1 on the weak grid) lies in `c`.
__device__ __forceinline__ Columns cost_columns(const Problem& pb, const Columns& c) {
  if (!pb.weak) return c;
  return {c.lo / 2, floor_div(c.hi - 1, 2)};  // ceil((lo - 1) / 2), floor((hi - 1) / 2)
}

// With a band: zero the gradient of the pair's cost cells outside grad_columns(),
// threads `first`, `first + step`, ... of the caller sharing each cost row (the
// backward writes the others).
template <typename Scalar>
__device__ void zero_off_band(const Problem& pb, Scalar* g, int64_t n, int64_t m, int64_t P, int64_t Q,
                              int64_t width, int64_t first, int64_t step) {
  for (int64_t i = 0; i < n; ++i) {
    const Columns js = cost_columns(pb, grad_columns(pb, P, Q, width, pb.weak ? 2 * i + 1 : i));
    const int64_t left_end = js.lo < m ? js.lo : m, right = js.hi + 1 > js.lo ? js.hi + 1 : js.lo;
    Scalar* row = g + i * pb.stride_i;
    for (int64_t j = first; j < left_end; j += step) row[j * pb.stride_j] = Scalar(0);
    for (int64_t j = right + first; j < m; j += step) row[j * pb.stride_j] = Scalar(0);
  }
}

// ---------------------------------------------------------------------------
// Thread regime: one thread per pair. Scratch element k of pair b lives at
// scratch[k * n_pairs + b]: forward R row at k in [1, Q]; backward au at k = q,
// ad at Qb + q, su at 2 Qb + l, sd at 2 Qb + padded_m + l. Tape entry of cell
// (p, q) at tape[(p * Qb + q) * n_pairs + b].
template <typename Scalar, bool kGrad>
__global__ void __launch_bounds__(kThreadBlock)
    thread_kernel(const Problem pb, const Consts k, const Scalar* __restrict__ cost, Scalar* __restrict__ value,
                  Scalar* __restrict__ grad, double* __restrict__ scratch, Tape2<Scalar>* __restrict__ tape, int Qb) {
  using M = MathOf<Scalar>;
  const int64_t NP = pb.n_pairs;
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= NP) return;
  int64_t n, m;
  const bool ok = pair_lengths(pb, b, n, m);
  const int P = int(grid_extent(pb, n)), Q = int(grid_extent(pb, m));
  const int64_t offset = pair_offset(pb, b);
  const CostView<double, Scalar> cv{cost + offset, pb.stride_i, pb.stride_j};
  Scalar* g = kGrad ? grad + offset : nullptr;
  if constexpr (kGrad) zero_padding(pb, g, n, m, 0, 1);
  if (!ok) {  // the padding above covered the whole block
    value[b] = Scalar(std::numeric_limits<double>::quiet_NaN());
    return;
  }
  auto S = [&](int64_t idx) -> double& { return scratch[idx * NP + b]; };
  const double inf = infinity<double>();
  const int64_t width = band_width(pb, P, Q);
  if constexpr (kGrad)
    if (pb.banded) zero_off_band(pb, g, n, m, P, Q, width, 0, 1);

  // Forward, row p over its band [lo, hi] only. S(q + 1) holds R of cell (p - 1, q)
  // for q >= lo(p - 1) - 1 (+inf outside the band); the cells left of that are stale
  // but never read again, since the band's columns only move right.
  for (int q = 1; q <= Q; ++q) S(q) = inf;  // R[0, q]
  for (int p = 0; p < P; ++p) {
    const Columns band = columns(P, Q, width, p);
    const int lo = int(band.lo), hi = int(band.hi);
    // R[p, lo] (R is 1-based here, R[p+1, q+1] is cell (p, q)), then cell (p, lo - 1) := +inf.
    double diag = lo == 0 ? (p == 0 ? 0.0 : inf) : S(lo);
    if (lo > 0) S(lo) = inf;
    double left = inf;  // R[p+1, lo]
    for (int q = lo; q <= hi; ++q) {
      const double up = S(q + 1);
      M w[3] = {M(0), M(0), M(0)};
      const double soft = softmin<M>(diag, up, left, k.gamma<M>(), kGrad ? w : static_cast<M*>(nullptr));
      const double r = grid_acc<M, Scalar>(pb, cv, p, q, k) + soft;
      if constexpr (kGrad) tape[(int64_t(p) * Qb + q) * NP + b] = Tape2<Scalar>{Scalar(w[0]), Scalar(w[1])};
      S(q + 1) = r;
      diag = up;
      left = r;
    }
  }
  value[b] = Scalar(S(Q));  // the last row's band always ends at the corner

  if constexpr (kGrad) {
    // Backward, row p over grad_columns(p) (the band, widened for the smoothing).
    // The buffers hold row p + 1's values (0 outside its band) for the columns up
    // to the end of its visit + 1; left of its visit they were never written (0).
    // The tape is only read inside the band (outside it holds stale values).
    const int64_t AU = 0, AD = Qb, SU = 2 * int64_t(Qb), SD = 2 * int64_t(Qb) + pb.padded_m;
    for (int q = 0; q < Q; ++q) S(AU + q) = S(AD + q) = 0.0;
    if (pb.smooth)
      for (int64_t l = 0; l < m; ++l) S(SU + l) = S(SD + l) = 0.0;
    for (int p = P - 1; p >= 0; --p) {
      const Columns band = columns(P, Q, width, p);
      const Columns visit = pb.banded ? grad_columns(pb, P, Q, width, p) : Columns{0, Q - 1};
      const int qlo = int(visit.lo), qhi = int(visit.hi);
      double ad_next = 0.0;    // E w_diag of (p+1, q+1), read one column ahead
      double left_prod = 0.0;  // E w_left of (p, q+1)
      double sd_next = 0.0;    // smoothing: G w_diag of (k+1, l+1)
      double s_left = 0.0;     // smoothing: G w_left of (k, l+1)
      if (qhi + 1 < Q) {  // row p's value right of its visit is 0
        ad_next = S(AD + qhi + 1);
        S(AU + qhi + 1) = S(AD + qhi + 1) = 0.0;
      }
      if (pb.smooth && (!pb.weak || (p & 1))) {
        const int64_t l = cost_columns(pb, visit).hi + 1;
        if (l < m) {
          sd_next = S(SD + l);
          S(SU + l) = S(SD + l) = 0.0;
        }
      }
      for (int q = qhi; q >= qlo; --q) {
        const double diag_prod = ad_next;
        ad_next = S(AD + q);
        const bool in_band = within(band, q);
        // Outside the band E is 0 exactly (the sum would be 0 up to rounding of 1 - w_d - w_u).
        const double e = (p == P - 1 && q == Q - 1) ? 1.0 : !in_band ? 0.0 : S(AU + q) + diag_prod + left_prod;
        const Tape2<Scalar> tw = in_band ? tape[(int64_t(p) * Qb + q) * NP + b] : Tape2<Scalar>{Scalar(0), Scalar(0)};
        const double wd = double(tw.diag), wu = double(tw.up);
        S(AU + q) = e * wu;
        S(AD + q) = e * wd;
        left_prod = e * fmax(1.0 - wd - wu, 0.0);
        if (!is_cost_cell(pb, p, q)) continue;
        const int64_t i = cost_index(pb, p), j = cost_index(pb, q);
        double dc = e;
        if (pb.smooth) {
          dc += s_left + S(SU + j) + sd_next;
          sd_next = S(SD + j);
          if (in_band) {
            M w[3];
            smoothed_acc<M, Scalar>(pb, cv, i, j, k, w);
            S(SU + j) = e * double(w[1]);
            S(SD + j) = e * double(w[2]);
            s_left = e * double(w[0]);
          } else {  // E = 0: nothing to spread
            S(SU + j) = S(SD + j) = 0.0;
            s_left = 0.0;
          }
        }
        g[i * pb.stride_i + j * pb.stride_j] = Scalar(dc);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Block regime: one block per pair, strips of blockDim.x rows. Per pair:
// `scratch + b * scratch_stride` holds the forward's row buffer (R[b0, q + 1] at
// [q + 1]) and then the backward's column buffer (one Pub per column), and
// `tape + b * tape_stride` the tape: strip by strip, the cell (b0 + t, q) of a
// strip of `rows` rows at [b0 * Q + ((q + t) mod Q) * rows + t], so that the
// cells of one step (q + t = s) are contiguous (coalesced stores and loads).
template <typename Scalar, bool kGrad, int kMaxThreads>
__global__ void __launch_bounds__(kMaxThreads)
    block_kernel(const Problem pb, const Consts k, const Scalar* __restrict__ cost, Scalar* __restrict__ value,
                 Scalar* __restrict__ grad, double* scratch, int64_t scratch_stride, Tape2<Scalar>* tape,
                 int64_t tape_stride) {
  using M = MathOf<Scalar>;
  S2DTW_DYNAMIC_SHARED(double, smem);  // forward: 2 T doubles; backward: 2 T Pubs
  const int64_t b = blockIdx.x;
  const int t = threadIdx.x, T = blockDim.x;
  int64_t n, m;
  const bool ok = pair_lengths(pb, b, n, m);
  const int P = int(grid_extent(pb, n)), Q = int(grid_extent(pb, m));
  const int64_t offset = pair_offset(pb, b);
  const CostView<double, Scalar> cv{cost + offset, pb.stride_i, pb.stride_j};
  Scalar* g = kGrad ? grad + offset : nullptr;
  if constexpr (kGrad) zero_padding(pb, g, n, m, t, T);
  if (!ok) {  // uniform over the block: nobody reaches a barrier
    if (t == 0) value[b] = Scalar(std::numeric_limits<double>::quiet_NaN());
    return;
  }
  const double inf = infinity<double>();
  const int64_t width = band_width(pb, P, Q);
  if constexpr (kGrad)
    if (pb.banded) zero_off_band(pb, g, n, m, P, Q, width, t, T);
  double* rowbuf = scratch + b * scratch_stride;
  Tape2<Scalar>* tp = kGrad ? tape + b * tape_stride : nullptr;

  // Forward. Thread t of the strip at b0 computes cell (p, q) = (b0 + t, s - t) at step s.
  // Only the steps where some row of the strip has a band column run: from
  // lo(b0) (thread 0's first band cell) to hi(b0 + rows - 1) + rows - 1 (the last
  // thread's last); the band's ends only move right, so none is missed. A cell reads
  // R of the row above from thread t - 1 / the row buffer only inside that row's band,
  // where it was computed; elsewhere R is +inf.
  auto sbuf = [&](int s) { return (s & 1) ? smem + T : smem; };
  for (int b0 = 0; b0 < P; b0 += T) {
    const int rows = min(T, P - b0);
    const int p = b0 + t;
    const bool active = t < rows;
    const bool feeds_next = t == rows - 1 && b0 + rows < P;  // last row of a strip with one below
    const Span band = span(columns(P, Q, width, active ? p : 0));
    const Span above = p > 0 && active ? span(columns(P, Q, width, p - 1)) : Span{1, 0};
    const int s_first = int(columns(P, Q, width, b0).lo);
    const int s_end = int(columns(P, Q, width, b0 + rows - 1).hi) + rows;
    Tape2<Scalar>* ts = kGrad ? tp + int64_t(b0) * Q : nullptr;
    // The thread's first cell is q0; left of it R is +inf in rows b0 + 1.. of the
    // strip (q0 - 1 < lo(b0) <= their lo), and row b0 reads R[p, q0] from the buffer.
    const int q0 = max(s_first - t, 0);
    double diag = q0 == 0 ? (p == 0 ? 0.0 : inf) : (t == 0 && within(above, q0 - 1)) ? rowbuf[q0] : inf;  // R[p, q]
    double left = inf;                                                                                      // R[p+1, q]
    double w_cell = active && within(band, q0) ? grid_acc<M, Scalar>(pb, cv, p, q0, k) : 0.0;  // W[p, q], a step ahead
    int srow = s_first % Q;  // s mod Q
    // Before anyone writes the row buffer: with 2 rows, the last thread's first cell
    // (b0 + 1, q0 - 1) goes to rowbuf[q0], which thread 0 has just read.
    __syncthreads();
    for (int s = s_first; s < s_end; ++s) {
      const int q = s - t;
      if (active && q >= 0 && q < Q) {
        // R[p, q+1]: from the row above, computed at step s - 1 (or in the strip above).
        const double up = !within(above, q) ? inf : t == 0 ? rowbuf[q + 1] : sbuf(s + 1)[t - 1];
        M w[3] = {M(0), M(0), M(0)};
        double r = inf;  // outside the band: no path, zero weights
        if (within(band, q))
          r = w_cell + softmin<M>(diag, up, left, k.gamma<M>(), kGrad ? w : static_cast<M*>(nullptr));
        if (within(band, q + 1)) w_cell = grid_acc<M, Scalar>(pb, cv, p, q + 1, k);
        if constexpr (kGrad) ts[int64_t(srow) * rows + t] = Tape2<Scalar>{Scalar(w[0]), Scalar(w[1])};
        // In place: thread 0 read rowbuf[q + 1] at step q <= this step (same thread when rows == 1).
        if (feeds_next) rowbuf[q + 1] = r;
        if (p == P - 1 && q == Q - 1) value[b] = Scalar(r);
        sbuf(s)[t] = r;
        diag = up;
        left = r;
      }
      __syncthreads();
      if (++srow == Q) srow = 0;
    }
  }

  if constexpr (kGrad) {
    // Backward: strips bottom-up, steps in reverse. Thread t at step s does cell
    // (b0 + t, s - t) and needs what thread t + 1 published at steps s + 1 (its
    // cell (p+1, q)) and s + 2 (cell (p+1, q+1), kept from the previous step).
    // With a band, row p needs the cells grad_columns(p) (and, for the last row of
    // the strip, those that feed it: up to hi(p + 1)); the steps run over those
    // of all rows of the strip. What a row publishes is nonzero only in its band,
    // and, for a weak grid's threshold row relaying the smoothing terms, in the band
    // of the row below: `below` is that range of row p + 1, read as zeros outside.
    // The tape is read inside the band only (it is stale elsewhere).
    auto pbuf = [&](int s) { return reinterpret_cast<Pub*>(smem) + ((s & 1) ? T : 0); };
    Pub* colbuf = reinterpret_cast<Pub*>(rowbuf);  // what the first row of the strip below published
    const int reach = pb.smooth ? (pb.weak ? 2 : 1) : 1;
    const int relay = pb.smooth && pb.weak ? 1 : 0;
    for (int b0 = ((P - 1) / T) * T; b0 >= 0; b0 -= T) {
      const int rows = min(T, P - b0);
      const int p = b0 + t;
      const bool active = t < rows;
      const bool cost_row = !pb.weak || (p & 1);
      const Span band = span(columns(P, Q, width, active ? p : 0));
      const Span below = active && p + 1 < P ? Span{int(columns(P, Q, width, p + 1).lo),
                                                    int(columns(P, Q, width, min(p + 1 + relay, P - 1)).hi)}
                                             : Span{1, 0};
      const Span gcols = span(grad_columns(pb, P, Q, width, active ? p : 0));  // where this row writes the gradient
      const int s_first = int(grad_columns(pb, P, Q, width, b0).lo);
      const int s_last = int(columns(P, Q, width, min(b0 + rows - 1 + reach, P - 1)).hi) + rows - 1;
      const Tape2<Scalar>* ts = tp + int64_t(b0) * Q;
      double ad_next = 0.0, left_prod = 0.0, sd_next = 0.0, s_left = 0.0;  // as in thread_kernel
      int srow = s_last % Q;
      for (int s = s_last; s >= s_first; --s) {
        const int q = s - t;
        if (active && q >= 0 && q < Q) {
          Pub in{0.0, 0.0, 0.0, 0.0};
          if (within(below, q)) in = t == rows - 1 ? colbuf[q] : pbuf(s + 1)[t + 1];
          const double diag_prod = ad_next;
          ad_next = in.ad;
          const bool in_band = within(band, q);
          const double e = (p == P - 1 && q == Q - 1) ? 1.0
                           : !in_band                 ? 0.0  // outside the band, exactly
                                                      : in.au + diag_prod + left_prod;
          const Tape2<Scalar> tw = in_band ? ts[int64_t(srow) * rows + t] : Tape2<Scalar>{Scalar(0), Scalar(0)};
          const double wd = double(tw.diag), wu = double(tw.up);
          Pub out{e * wu, e * wd, 0.0, 0.0};
          left_prod = e * fmax(1.0 - wd - wu, 0.0);
          if (is_cost_cell(pb, p, q)) {
            const int64_t i = cost_index(pb, p), j = cost_index(pb, q);
            double dc = e;
            if (pb.smooth) {
              dc += s_left + in.su + sd_next;
              sd_next = in.sd;
              if (in_band) {
                M w[3];
                smoothed_acc<M, Scalar>(pb, cv, i, j, k, w);
                out.su = e * double(w[1]);
                out.sd = e * double(w[2]);
                s_left = e * double(w[0]);
              } else {  // E = 0: nothing to spread
                s_left = 0.0;
              }
            }
            if (within(gcols, q)) g[i * pb.stride_i + j * pb.stride_j] = Scalar(dc);
          } else if (!cost_row) {  // a weak grid's threshold row: pass the smoothing terms up
            out.su = in.su;
            out.sd = in.sd;
          }
          pbuf(s)[t] = out;
          // In place: the strip's last thread read colbuf[q] at step q + rows - 1 >= this one.
          if (t == 0 && b0 > 0) colbuf[q] = out;
        }
        __syncthreads();
        srow = srow == 0 ? Q - 1 : srow - 1;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Host side.

struct Sizes {
  int64_t P = 0, Q = 0;      // grid extents of a full block
  size_t tape_bytes = 0;     // 0 without a gradient
  size_t scratch_bytes = 0;  // float64 wavefront buffers
  int64_t scratch_per_pair = 0;
  size_t total = 0;
};

size_t checked_mul(size_t a, size_t b) {
  size_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw std::runtime_error("s2dtw (cuda): problem too large (size overflow)");
  return r;
}

size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

template <typename Scalar>
Sizes sizes(const Problem& pb, bool with_grad) {
  if (pb.n_pairs < 0 || pb.padded_n < 1 || pb.padded_m < 1)
    throw std::invalid_argument("s2dtw (cuda): invalid problem (n_pairs < 0 or empty blocks)");
  Sizes z;
  z.P = grid_extent(pb, pb.padded_n);
  z.Q = grid_extent(pb, pb.padded_m);
  if (z.P > INT_MAX / 2 || z.Q > INT_MAX / 2)
    throw std::runtime_error("s2dtw (cuda): sequences longer than 2^29 are not supported");
  const size_t np = size_t(pb.n_pairs);
  if (with_grad)
    z.tape_bytes = align_up(checked_mul(checked_mul(np, checked_mul(size_t(z.P), size_t(z.Q))),
                                        sizeof(Tape2<Scalar>)));
  // Regime-independent: thread regime needs Q + 1 (forward) / 2 Q + 2 padded_m
  // (backward) doubles per pair, block regime Q + 1 / 4 Q (one Pub per column).
  z.scratch_per_pair = with_grad ? 4 * z.Q : z.Q + 1;
  z.scratch_bytes = align_up(checked_mul(checked_mul(np, size_t(z.scratch_per_pair)), sizeof(double)));
  z.total = z.tape_bytes + z.scratch_bytes + kAlign;  // slack to align the caller's pointer
  return z;
}

struct Plan {
  bool block = true;
  int strip = 32;  // threads per block (block regime)
};

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("s2dtw (cuda): ") + what + ": " + cudaGetErrorString(err));
}

int sm_count() {
  int dev = 0, sms = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
  return std::max(sms, 1);
}

// A cycle model of an H100/H200 SM (4 schedulers). A cell costs kCellIns warp-instructions
// of issue (the static SASS of the cell loops for sm_90, forward + backward, as
// benchmarks/cuda_predict.py reports them) and, on the dependent chain, ~kChain cycles per
// instruction (about half of them, ~6 cycles each), plus a barrier and shared-memory hand-over
// per step in the block regime. Work follows the band: only band cells are issued, only
// band steps run. Each regime's estimate is waves x max(chain latency, the SM's issue).
Plan choose_plan(const Problem& pb, int64_t P, int64_t Q, int sms, bool grad, bool f64) {
  const double ins = f64 ? (grad ? 985.0 : 560.0) : (grad ? 513.0 : 230.0);
  constexpr double kChain = 3.0, kStepSync = 80.0, kThreadResident = 640.0;
  const double np = double(pb.n_pairs), s = double(sms);
  const int64_t width = band_width(pb, P, Q);
  double band_cells = 0;  // of a full block
  for (int64_t p = 0; p < P; ++p) band_cells += double(columns(P, Q, width, p).hi - columns(P, Q, width, p).lo + 1);
  // Thread regime: one chain of band_cells cells per thread, 32 threads per warp.
  const double warps_per_sm = std::min(kThreadResident / 32.0, std::ceil(np / (32.0 * s)));
  const double thread_est = std::ceil(np / (kThreadResident * s)) * band_cells * ins *
                            std::max(kChain, warps_per_sm / 4.0);
  Plan best{true, 32};
  double best_est = -1;
  for (int T = 32; T <= kMaxStrip; T *= 2) {
    if (T > 32 && T / 2 >= P) break;  // taller strips than the grid only add idle threads
    const double per_sm = std::min({32.0, 2048.0 / T, std::ceil(np / s)});
    double steps = 0, warp_cells = 0;  // per block: steps run, warp-cells issued
    for (int64_t b0 = 0; b0 < P; b0 += T) {
      const int64_t rows = std::min<int64_t>(T, P - b0);
      const int64_t span = columns(P, Q, width, b0 + rows - 1).hi - columns(P, Q, width, b0).lo + 1;
      steps += double(span + rows - 1);
      warp_cells += std::ceil(rows / 32.0) * (double(span) + 31.0);
    }
    const double est = std::ceil(np / (per_sm * s)) *
                       std::max(steps * (ins * kChain + kStepSync), per_sm * warp_cells * ins / 4.0);
    if (best_est < 0 || est < best_est) best_est = est, best.strip = T;
  }
  best.block = !(thread_est < best_est);
  if (pb.cuda_regime) best.block = pb.cuda_regime == 2;
  if (pb.cuda_strip) {
    if (pb.cuda_strip < 32 || pb.cuda_strip > kMaxStrip || pb.cuda_strip % 32 != 0)
      throw std::invalid_argument("s2dtw (cuda): the strip must be a multiple of 32 in [32, 1024]");
    best.strip = pb.cuda_strip;
  }
  return best;
}

template <typename Scalar, bool kGrad>
void launch(const Problem& pb, const Consts& k, const Plan& plan, const Sizes& z, const Scalar* cost,
            Scalar* value, Scalar* grad, Tape2<Scalar>* tape, double* scratch, cudaStream_t stream) {
  if (plan.block) {
    if (pb.n_pairs > INT_MAX) throw std::runtime_error("s2dtw (cuda): more than 2^31 - 1 pairs");
    const int T = plan.strip;
    const size_t smem = kGrad ? 2 * size_t(T) * sizeof(Pub) : 2 * size_t(T) * sizeof(double);
    auto kernel = T <= 256 ? block_kernel<Scalar, kGrad, 256>
                  : T <= 512 ? block_kernel<Scalar, kGrad, 512> : block_kernel<Scalar, kGrad, kMaxStrip>;
    if (smem > 48 * 1024)
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
            "cudaFuncSetAttribute(block_kernel)");
    S2DTW_LAUNCH(kernel, unsigned(pb.n_pairs), T, smem, stream, pb, k, cost, value, grad, scratch,
                 z.scratch_per_pair, tape, z.P * z.Q);
    check(cudaGetLastError(), "launching block_kernel");
  } else {
    const int64_t blocks = (pb.n_pairs + kThreadBlock - 1) / kThreadBlock;
    auto kernel = thread_kernel<Scalar, kGrad>;
    S2DTW_LAUNCH(kernel, unsigned(blocks), kThreadBlock, 0, stream, pb, k, cost, value, grad, scratch, tape, int(z.Q));
    check(cudaGetLastError(), "launching thread_kernel");
  }
}

}  // namespace

template <typename Scalar>
size_t workspace_bytes(const Problem& pb, bool with_grad) {
  return sizes<Scalar>(pb, with_grad).total;
}

template <typename Scalar>
void run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, void* workspace,
         size_t workspace_size, cudaStream_t stream) {
  const bool with_grad = grad != nullptr;
  const Sizes z = sizes<Scalar>(pb, with_grad);
  if (pb.n_pairs == 0) return;
  if (!cost || !value || !pb.pair_n || !pb.pair_m)
    throw std::invalid_argument("s2dtw (cuda): null cost, value, pair_n or pair_m pointer");
  if (!(pb.gamma > 0)) throw std::invalid_argument("s2dtw (cuda): gamma must be > 0");
  if (workspace_size < z.total || workspace == nullptr)
    throw std::runtime_error("s2dtw (cuda): workspace too small: got " + std::to_string(workspace_size) +
                             " bytes, need " + std::to_string(z.total) + " (workspace_bytes)");
  auto* base = reinterpret_cast<unsigned char*>(align_up(reinterpret_cast<uintptr_t>(workspace)));
  auto* tape = with_grad ? reinterpret_cast<Tape2<Scalar>*>(base) : nullptr;
  auto* scratch = reinterpret_cast<double*>(base + z.tape_bytes);

  constexpr double kLog2e = 1.4426950408889634, kLn2 = 0.6931471805599453;
  Consts k;
  k.smoothing = pb.smoothing;
  const double inv_s = pb.smooth ? 1.0 / pb.smoothing : 0.0;
  k.gamma_d = {1.0 / pb.gamma, pb.gamma};
  k.smooth_d = {inv_s, pb.smoothing};
  k.gamma_f = {float(kLog2e / pb.gamma), float(kLn2 * pb.gamma)};
  k.smooth_f = {float(kLog2e * inv_s), float(kLn2 * pb.smoothing)};

  const Plan plan = choose_plan(pb, z.P, z.Q, sm_count(), with_grad, std::is_same_v<Scalar, double>);
  if (with_grad)
    launch<Scalar, true>(pb, k, plan, z, cost, value, grad, tape, scratch, stream);
  else
    launch<Scalar, false>(pb, k, plan, z, cost, value, grad, tape, scratch, stream);
}

template size_t workspace_bytes<float>(const Problem&, bool);
template size_t workspace_bytes<double>(const Problem&, bool);
template void run<float>(const Problem&, const float*, float*, float*, void*, size_t, cudaStream_t);
template void run<double>(const Problem&, const double*, double*, double*, void*, size_t, cudaStream_t);

}  // namespace s2dtw::cuda
