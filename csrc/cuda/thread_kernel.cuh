// The thread regime: one CUDA thread per pair walks the pair's whole grid row by row, as the
// CPU's scalar kernel does; forward, then (kGrad) backward. Included by s2dtw_cuda.cu only.
#pragma once

#include <cstdint>
#include <limits>

#include "cell_math.cuh"
#include "pair_cells.cuh"

namespace s2dtw::cuda {
namespace {

constexpr int kThreadBlock = 128;  // threads per block in the thread regime

// One pair of the thread regime. Its scratch S holds the forward's R row at [1, Q] and then
// the backward's row buffers (see backward), an open end's seeds at [4 Qpad, 5 Qpad); its tape entry
// of cell (p, q) is at p * Qpad + q, with Qpad the grid extent of the padded pair (the same layout for
// every pair). kVariant: the kernel also computes gamma = 0, smoothing = 0 and the open ends (their
// runtime flags are uniform over the call); without it none of that is compiled in.
template <typename Scalar, bool kGrad, bool kVariant>
struct ThreadPair {
  using M = MathOf<Scalar>;
  const Problem& pb;
  const Consts& k;
  CostView<double, Scalar> cv;
  Interleaved<double> S;
  Interleaved<Tape2<Scalar>> tape;
  Scalar* g;  // the pair's gradient (kGrad)
  int64_t m, width;
  int P, Q, Qpad;
  int row0;  // W's row of walked row 0 (first_walked_row; 0 without kVariant)

  __device__ __forceinline__ int64_t seeds() const { return 4 * int64_t(Qpad); }

  // The pair's value: R of its last cell (or an open end's softmin over the last row). Row p
  // runs over its band [lo, hi] only. S(q + 1) holds R of cell (p - 1, q) for q >= lo(p - 1) - 1
  // (+inf outside the band); the cells left of that are stale but never read again, since the
  // band's columns only move right.
  __device__ __forceinline__ double forward() const {
    const double inf = infinity<double>();
    for (int q = 1; q <= Q; ++q) S(q) = inf;  // R[0, q]
    for (int p = 0; p < P; ++p) {
      const Columns band = columns(P, Q, width, p);
      const int lo = int(band.lo), hi = int(band.hi);
      const bool open_row = kVariant && pb.open_begin && p == 0;  // entered from R's zero row, diagonally only
      // R[p, lo] (R is 1-based here, R[p+1, q+1] is cell (p, q)), then cell (p, lo - 1) := +inf.
      double diag = lo == 0 ? (p == 0 ? 0.0 : inf) : S(lo);
      if (lo > 0) S(lo) = inf;
      double left = inf;  // R[p+1, lo]
      for (int q = lo; q <= hi; ++q) {
        const double up = S(q + 1);
        M w[3] = {M(0), M(0), M(0)};
        const double soft =
            softmin<kVariant, M>(diag, up, left, k.gamma<M>(), k.hard_gamma, kGrad ? w : static_cast<M*>(nullptr));
        const double r = grid_acc<kVariant, M, Scalar>(pb, cv, row0 + p, q, k) + soft;
        if constexpr (kGrad) tape(int64_t(p) * Qpad + q) = Tape2<Scalar>{Scalar(w[0]), Scalar(w[1])};
        S(q + 1) = r;
        diag = open_row ? 0.0 : up;
        left = r;
      }
    }
    if (kVariant && pb.open_end) {  // end_value writes only the non-zero seeds
      if constexpr (kGrad)
        for (int q = 0; q < Q; ++q) S(seeds() + q) = 0.0;
      return end_value(pb, &S(1), Q, S.n_pairs, kGrad ? &S(seeds()) : static_cast<double*>(nullptr));
    }
    return S(Q);  // the last row's band always ends at the corner
  }

  // The gradient, rows bottom-up. What row p + 1 hands to row p lies in S at AU + q, AD + q
  // (E w_up, E w_diag of its cell in column q) and SU + l, SD + l (G w_up, G w_diag of D in
  // cost column l); offsets computed once here, not per access, keep sm_90's register count.
  // The buffers hold row p + 1's values (0 outside its band) for the columns up to the end of
  // its visit + 1; left of its visit they were never written (0).
  __device__ __forceinline__ void backward() const {
    const int64_t AU = 0, AD = Qpad, SU = 2 * int64_t(Qpad), SD = 2 * int64_t(Qpad) + pb.padded_m;
    for (int q = 0; q < Q; ++q) S(AU + q) = S(AD + q) = 0.0;
    if (pb.smooth)
      for (int64_t l = 0; l < m; ++l) S(SU + l) = S(SD + l) = 0.0;
    for (int p = P - 1; p >= 0; --p) backward_row(p, AD, SU, SD);
  }

  // Row p over grad_columns(p) (the band, widened for the smoothing). The tape is only read
  // inside the band (outside it holds stale values).
  __device__ __forceinline__ void backward_row(int p, int64_t AD, int64_t SU, int64_t SD) const {
    const int64_t AU = 0;
    const Columns band = columns(P, Q, width, p);
    const Columns visit = pb.banded ? grad_columns(pb, P, Q, width, p) : Columns{0, Q - 1};
    const int qlo = int(visit.lo), qhi = int(visit.hi);
    double ad_next = 0.0;    // E w_diag of (p+1, q+1), read one column ahead
    double left_prod = 0.0;  // E w_left of (p, q+1)
    double sd_next = 0.0;    // smoothing: G w_diag of (i+1, j+1)
    double s_left = 0.0;     // smoothing: G w_left of (i, j+1)
    if (qhi + 1 < Q) {       // row p's value right of its visit is 0
      ad_next = S(AD + qhi + 1);
      S(AU + qhi + 1) = S(AD + qhi + 1) = 0.0;
    }
    const int wp = row0 + p;  // W's row
    if (pb.smooth && (!pb.weak || (wp & 1))) {
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
      const bool corner = !(kVariant && pb.open_end) && p == P - 1 && q == Q - 1;
      double e = corner ? 1.0 : !in_band ? 0.0 : S(AU + q) + diag_prod + left_prod;
      if (kVariant && pb.open_end && p == P - 1) e += S(seeds() + q);  // the end softmin's weight
      const Tape2<Scalar> tw = in_band ? tape(int64_t(p) * Qpad + q) : Tape2<Scalar>{Scalar(0), Scalar(0)};
      const double wd = double(tw.diag), wu = double(tw.up);
      S(AU + q) = e * wu;
      S(AD + q) = e * wd;
      left_prod = e * fmax(1.0 - wd - wu, 0.0);
      if (!is_cost_cell(pb, wp, q)) continue;
      const int64_t i = cost_index(pb, wp), j = cost_index(pb, q);
      double dc = e;
      if (pb.smooth) {
        dc += s_left + S(SU + j) + sd_next;
        sd_next = S(SD + j);
        if (in_band) {
          M w[3];
          smoothed_acc<kVariant, M, Scalar>(pb, cv, i, j, k, w);
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
};

template <typename Scalar, bool kGrad, bool kVariant>
__global__ void __launch_bounds__(kThreadBlock)
    thread_kernel(const Problem pb, const Consts k, const Scalar* __restrict__ cost, Scalar* __restrict__ value,
                  Scalar* __restrict__ grad, double* __restrict__ scratch, Tape2<Scalar>* __restrict__ tape, int Qpad) {
  const int64_t NP = pb.n_pairs;
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= NP) return;
  int64_t n, m;
  const bool ok = pair_lengths(pb, b, n, m);
  const int P = int(kVariant ? walked_rows(pb, n) : grid_extent(pb, n)), Q = int(grid_extent(pb, m));
  const int row0 = kVariant ? int(first_walked_row(pb)) : 0;
  const int64_t offset = pair_offset(pb, b);
  Scalar* g = kGrad ? grad + offset : nullptr;
  if constexpr (kGrad) zero_padding(pb, g, n, m, 0, 1);
  if (!ok) {  // the padding above covered the whole padded region
    value[b] = Scalar(std::numeric_limits<double>::quiet_NaN());
    return;
  }
  const int64_t width = band_width(pb, P, Q);
  if constexpr (kGrad)
    if (pb.banded) zero_off_band(pb, g, n, m, P, Q, width, 0, 1);
  const ThreadPair<Scalar, kGrad, kVariant> pair{
      pb, k, {cost + offset, pb.stride_i, pb.stride_j}, {scratch, NP, b}, {tape, NP, b}, g, m, width, P, Q, Qpad, row0};
  value[b] = Scalar(pair.forward());
  if constexpr (kGrad) pair.backward();
}

}  // namespace
}  // namespace s2dtw::cuda
