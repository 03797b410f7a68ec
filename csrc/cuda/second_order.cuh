// Second order on the CUDA backend: H·Z, the Hessian-vector product of each pair's value w.r.t.
// its cost (docs/semantics.md, "Second order"). One thread per pair walks the pair's whole grid:
// the forward R with the tape and dot R, then E and dot E backwards, then the smoothing's
// pullback and curvature terms. Simple, not fast: every cell is visited, in float64.
// Included by second_order.cu only.
#pragma once

#include <cmath>
#include <cstdint>

#include "pair_cells.cuh"
#include "s2dtw_cuda.h"

namespace s2dtw::cuda {
namespace {

constexpr int kHvpBlock = 64;  // threads (pairs) per block

// Where one pair's float64 scratch keeps what: element k of pair b is scratch[k * n_pairs + b], so that a
// warp's 32 pairs touch one contiguous run (coalesced). Sized for the padded pair, indexed with the
// pair's own extents (smaller or equal).
struct HvpLayout {
  int64_t r = 0;         // R, two rolling rows of Q + 1
  int64_t dot_r = 0;     // dot R, the whole (P + 1) x (Q + 1) table (the backward reads every cell's)
  int64_t tape = 0;      // the transition weights (diag, up, left) of every cell, P x Q x 3
  int64_t e = 0;         // E, two rolling rows of Q + 1
  int64_t dot_e = 0;     // dot E, likewise
  int64_t g = 0;         // G = E on the cost cells, padded_n x padded_m (n x m used, row stride m)
  int64_t dot_g = 0;     // dot G, likewise
  int64_t per_pair = 0;  // doubles of one pair
};

// The second-order programme of one pair. Grid rows are walked from `top` (1 where an open begin
// drops W's null row 0) for P rows (without W's null last row where an open end drops it); R and
// its tangents are 1-based as in docs/semantics.md: R[p, q] belongs to grid cell (top + p - 1, q - 1).
template <typename Scalar>
struct HvpPair {
  const Problem& pb;
  const HvpLayout& L;
  CostView<double, Scalar> c, z;  // the pair's cost C and direction Z
  double* s;                      // the pair's scratch: element k at s[k * stride]
  int64_t stride;                 // n_pairs
  int64_t n, m, width;            // lengths; the band's width on the full grid
  int P, Q, top, full_rows;       // walked rows, columns, first walked grid row, rows of the full grid

  __device__ double& at(int64_t k) const { return s[k * stride]; }
  __device__ double& R(int p, int q) const { return at(L.r + (p & 1) * int64_t(Q + 1) + q); }
  __device__ double& dot_R(int p, int q) const { return at(L.dot_r + int64_t(p) * (Q + 1) + q); }
  // Transition weight k (diag, up, left) of R[p, q].
  __device__ double& pi(int p, int q, int k) const { return at(L.tape + 3 * (int64_t(p - 1) * Q + (q - 1)) + k); }
  __device__ double& E(int p, int q) const { return at(L.e + (p & 1) * int64_t(Q + 1) + q); }
  __device__ double& dot_E(int p, int q) const { return at(L.dot_e + (p & 1) * int64_t(Q + 1) + q); }
  __device__ double& G(int64_t i, int64_t j) const { return at(L.g + i * m + j); }
  __device__ double& dot_G(int64_t i, int64_t j) const { return at(L.dot_g + i * m + j); }

  // D[i, j] with its smoothing weights w (left, up, diag; 0 without smoothing) and dot D[i, j].
  __device__ double smoothed(int64_t i, int64_t j, double* w, double& dot_d) const {
    w[0] = w[1] = w[2] = 0.0;
    const double d = smoothed_cost<double, Scalar>(pb, c, i, j, w);
    dot_d = z(i, j);
    if (j > 0) dot_d += w[0] * z(i, j - 1);
    if (i > 0) dot_d += w[1] * z(i - 1, j);
    if (i > 0 && j > 0) dot_d += w[2] * z(i - 1, j - 1);
    return d;
  }

  // W at grid cell (gp, gq) and its tangent (0 on the null cells: the threshold is a constant).
  __device__ double grid(int gp, int gq, double& dot_w) const {
    dot_w = 0.0;
    if (!is_cost_cell(pb, gp, gq)) return pb.threshold;
    double w[3];
    return smoothed(cost_index(pb, gp), cost_index(pb, gq), w, dot_w);
  }

  // R, the tape and dot R[t] = dot W[t] + sum_k pi_k dot R[a_k]; cells outside the band or out of
  // reach (R = +inf) get zero weights and a zero tangent.
  __device__ void forward(double gamma, double inv_gamma) const {
    const double inf = infinity<double>();
    for (int q = 0; q <= Q; ++q) {
      R(0, q) = (q == 0 || pb.open_begin) ? 0.0 : inf;
      dot_R(0, q) = 0.0;
    }
    for (int p = 1; p <= P; ++p) {
      const int gp = top + p - 1;
      const Columns band = pb.banded ? band_columns(full_rows, Q, width, gp) : Columns{0, Q - 1};
      R(p, 0) = inf;
      dot_R(p, 0) = 0.0;
      for (int q = 1; q <= Q; ++q) {
        double w[3] = {0.0, 0.0, 0.0}, r = inf, dot_r = 0.0;
        if (within(band, q - 1)) {
          const double up = p > 1 ? R(p - 1, q) : inf;  // R's row 0 enters diagonally only
          const double soft = softmin3(R(p - 1, q - 1), up, R(p, q - 1), gamma, inv_gamma, w);
          if (soft < inf) {
            double dot_w;
            r = grid(gp, q - 1, dot_w) + soft;
            dot_r = dot_w + w[0] * dot_R(p - 1, q - 1) + w[1] * dot_R(p - 1, q) + w[2] * dot_R(p, q - 1);
          }
        }
        R(p, q) = r;
        dot_R(p, q) = dot_r;
        for (int k = 0; k < 3; ++k) pi(p, q, k) = w[k];
      }
    }
  }

  // E and dot E on the last walked row: a closed end seeds E = 1 at the corner; an open end the
  // weights u_q of softmin_gamma over the row and their tangents -(u_q / gamma)(dot R[P, q] - sum u dot R).
  __device__ void seed_end(double inv_gamma) const {
    for (int q = 0; q <= Q; ++q) E(P, q) = dot_E(P, q) = 0.0;
    if (!pb.open_end) {
      E(P, Q) = 1.0;
      return;
    }
    double lo = infinity<double>();
    for (int q = 1; q <= Q; ++q) lo = lesser(lo, R(P, q));
    if (!(lo < infinity<double>())) return;
    double sum = 0.0, mean = 0.0;
    for (int q = 1; q <= Q; ++q) sum += std::exp((lo - R(P, q)) * inv_gamma);
    for (int q = 1; q <= Q; ++q) {
      E(P, q) = std::exp((lo - R(P, q)) * inv_gamma) / sum;
      mean += E(P, q) * dot_R(P, q);
    }
    for (int q = 1; q <= Q; ++q) dot_E(P, q) = -E(P, q) * inv_gamma * (dot_R(P, q) - mean);
  }

  // Reverse row-major order: a cell's successors have all pushed to it before it pushes
  // E[a_k] += pi_k E[t] and dot E[a_k] += dot pi_k E[t] + pi_k dot E[t] to its predecessors,
  // dot pi_k = -(pi_k / gamma)(dot R[a_k] - sum_l pi_l dot R[a_l]). The cost cells' E, dot E go to G, dot G.
  __device__ void backward(double inv_gamma) const {
    seed_end(inv_gamma);
    for (int p = P; p >= 1; --p) {
      for (int q = 0; q <= Q; ++q) E(p - 1, q) = dot_E(p - 1, q) = 0.0;  // it held row p + 1 (done)
      for (int q = Q; q >= 1; --q) {
        const double e = E(p, q), dot_e = dot_E(p, q);
        const int gp = top + p - 1;
        if (is_cost_cell(pb, gp, q - 1)) {
          G(cost_index(pb, gp), cost_index(pb, q - 1)) = e;
          dot_G(cost_index(pb, gp), cost_index(pb, q - 1)) = dot_e;
        }
        const double w[3] = {pi(p, q, 0), pi(p, q, 1), pi(p, q, 2)};
        const double a[3] = {dot_R(p - 1, q - 1), dot_R(p - 1, q), dot_R(p, q - 1)};
        const double mean = w[0] * a[0] + w[1] * a[1] + w[2] * a[2];
        double* to_e[3] = {&E(p - 1, q - 1), &E(p - 1, q), &E(p, q - 1)};
        double* to_dot_e[3] = {&dot_E(p - 1, q - 1), &dot_E(p - 1, q), &dot_E(p, q - 1)};
        for (int k = 0; k < 3; ++k) {
          *to_e[k] += w[k] * e;
          *to_dot_e[k] += -w[k] * inv_gamma * (a[k] - mean) * e + w[k] * dot_e;
        }
      }
    }
  }

  // (H·Z)[k, l] = dot G[k, l] + sum over the cells t having (k, l) as smoothing neighbour r of
  // dot G[t] w_r(t) + G[t] dot w_r(t), dot w_r(t) = -(w_r(t) / s)(Z[k, l] - (dot D[t] - Z[t])).
  __device__ double product(int64_t k, int64_t l) const {
    double h = dot_G(k, l);
    if (!pb.smooth) return h;
    const double inv_s = 1.0 / pb.smoothing;
    const int64_t ti[3] = {k, k + 1, k + 1}, tj[3] = {l + 1, l, l + 1};  // (left, up, diag) of t
    for (int r = 0; r < 3; ++r) {
      if (ti[r] >= n || tj[r] >= m) continue;
      double w[3], dot_d;
      smoothed(ti[r], tj[r], w, dot_d);
      const double mean = dot_d - z(ti[r], tj[r]);
      h += w[r] * dot_G(ti[r], tj[r]) - G(ti[r], tj[r]) * w[r] * inv_s * (z(k, l) - mean);
    }
    return h;
  }
};

// One thread per pair; out's padded region of the pair is written whole (zeros outside the pair,
// and everywhere for a pair whose lengths are out of range, as the first-order kernels do).
template <typename Scalar>
__global__ void __launch_bounds__(kHvpBlock)
    hvp_kernel(const Problem pb, const HvpLayout L, const Scalar* __restrict__ cost,
               const Scalar* __restrict__ direction, Scalar* __restrict__ out, double* __restrict__ scratch) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= pb.n_pairs) return;
  int64_t n, m;
  const bool ok = pair_lengths(pb, b, n, m);
  const int64_t offset = pair_offset(pb, b);
  Scalar* o = out + offset;
  zero_padding(pb, o, n, m, 0, 1);
  if (!ok) return;
  const int full_rows = int(grid_extent(pb, n)), Q = int(grid_extent(pb, m));
  const int top = pb.weak && pb.open_begin, bottom = full_rows - int(pb.weak && pb.open_end);
  const HvpPair<Scalar> pair{pb,
                             L,
                             {cost + offset, pb.stride_i, pb.stride_j},
                             {direction + offset, pb.stride_i, pb.stride_j},
                             scratch + b,
                             pb.n_pairs,
                             n,
                             m,
                             band_width(pb, full_rows, Q),
                             bottom - top,
                             Q,
                             top,
                             full_rows};
  const double gamma = pb.gamma, inv_gamma = 1.0 / pb.gamma;
  pair.forward(gamma, inv_gamma);
  pair.backward(inv_gamma);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) o[i * pb.stride_i + j * pb.stride_j] = Scalar(pair.product(i, j));
}

}  // namespace
}  // namespace s2dtw::cuda
