// Second order on the CUDA backend: H·Z, the Hessian-vector product of each pair's value w.r.t.
// its cost (docs/semantics.md, "Second order"). Every cell of a pair's grid is visited: the forward
// R and dot R, then E and dot E backwards (each cell pulls from its successors), then per cost cell
// the smoothing's pullback and curvature terms, all in float64. Two regimes share the per-cell code:
// one thread per pair (rows in order), or one block per pair (anti-diagonals, one barrier each).
// Included by second_order.cu only.
#pragma once

#include <cmath>
#include <cstdint>

#include "pair_cells.cuh"
#include "s2dtw_cuda.h"

namespace s2dtw::cuda {
namespace {

constexpr int kHvpThreads = 64;    // thread regime: pairs per block
constexpr int kHvpMaxBlock = 256;  // block regime: most threads per block

// One pair's float64 scratch: the whole (P + 1) x (Q + 1) tables of R, dot R, E and dot E (1-based as in
// docs/semantics.md: R[p, q] belongs to grid cell (top + p - 1, q - 1)), sized for the padded pair and
// indexed with the pair's own extents. No separate tape: the backward recomputes the transition weights
// from R, the same function of the same values, so they equal the forward's bit for bit.
struct HvpLayout {
  int64_t table = 0;     // doubles of one table
  int64_t per_pair = 0;  // 4 tables
};

template <typename Scalar>
struct HvpPair {
  const Problem& pb;
  CostView<double, Scalar> c, z;  // the pair's cost C and direction Z
  double* s;                      // the pair's scratch, element k at s[k * stride]
  int64_t stride, table;
  int64_t n, m, width;       // lengths; the band's width on the full grid
  int P, Q, top, full_rows;  // walked rows (an open begin / end drops W's null first / last row), columns,
                             // the first walked grid row, rows of the full grid
  double gamma, inv_gamma;

  __device__ double& at(int t, int p, int q) const { return s[(t * table + int64_t(p) * (Q + 1) + q) * stride]; }
  __device__ double& R(int p, int q) const { return at(0, p, q); }
  __device__ double& dot_R(int p, int q) const { return at(1, p, q); }
  __device__ double& E(int p, int q) const { return at(2, p, q); }
  __device__ double& dot_E(int p, int q) const { return at(3, p, q); }

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

  __device__ bool in_band(int p, int q) const {
    return !pb.banded || within(band_columns(full_rows, Q, width, top + p - 1), q - 1);
  }

  // The transition weights pi (diag, up, left) of R[p, q]: 0 outside the band and out of reach.
  __device__ double weights(int p, int q, double* w) const {
    w[0] = w[1] = w[2] = 0.0;
    if (!in_band(p, q)) return infinity<double>();
    const double up = p > 1 ? R(p - 1, q) : infinity<double>();  // R's row 0 enters diagonally only
    return softmin3(R(p - 1, q - 1), up, R(p, q - 1), gamma, inv_gamma, w);
  }

  // R's row 0 and column 0 (an open begin: row 0 all zero), their tangents 0; items first, first + step, ...
  __device__ void init_borders(int first, int step) const {
    for (int q = first; q <= Q; q += step) {
      R(0, q) = start_row<double>(pb, q);
      dot_R(0, q) = 0.0;
    }
    for (int p = 1 + first; p <= P; p += step) {
      R(p, 0) = infinity<double>();
      dot_R(p, 0) = 0.0;
    }
  }

  // R[t] = W[t] + softmin(R of the predecessors), dot R[t] = dot W[t] + sum_k pi_k dot R[a_k] (0 out of reach).
  __device__ void forward_cell(int p, int q) const {
    double w[3];
    const double soft = weights(p, q, w);
    double r = infinity<double>(), dot_r = 0.0;
    if (soft < infinity<double>()) {
      double dot_w;
      r = grid(top + p - 1, q - 1, dot_w) + soft;
      dot_r = dot_w + w[0] * dot_R(p - 1, q - 1) + w[1] * dot_R(p - 1, q) + w[2] * dot_R(p, q - 1);
    }
    R(p, q) = r;
    dot_R(p, q) = dot_r;
  }

  // E and dot E of the last walked row before the backward: a closed end E = 1 at the corner; an open end
  // the weights u_q of softmin_gamma over the row and their tangents -(u_q / gamma)(dot R[P, q] - sum u dot R).
  // Not s2dtw_cell.h's end_value (the same u_q): its float64 divisions cost the block kernel 40 B of spills.
  __device__ void seed_end() const {
    for (int q = 1; q <= Q; ++q) E(P, q) = dot_E(P, q) = 0.0;
    if (!pb.open_end) {
      E(P, Q) = 1.0;
      return;
    }
    double lo = infinity<double>(), sum = 0.0, mean = 0.0;
    for (int q = 1; q <= Q; ++q) lo = lesser(lo, R(P, q));
    if (!(lo < infinity<double>())) return;
    for (int q = 1; q <= Q; ++q) sum += std::exp((lo - R(P, q)) * inv_gamma);
    for (int q = 1; q <= Q; ++q) {
      E(P, q) = std::exp((lo - R(P, q)) * inv_gamma) / sum;
      mean += E(P, q) * dot_R(P, q);
    }
    for (int q = 1; q <= Q; ++q) dot_E(P, q) = -E(P, q) * inv_gamma * (dot_R(P, q) - mean);
  }

  // E[s] and dot E[s] pulled from the successors t of s = (p, q), s in slot k of t's predecessors:
  // E[s] = sum_t pi_k(t) E[t], dot E[s] = sum_t pi_k(t) dot E[t] + dot pi_k(t) E[t], with
  // dot pi_k(t) = -(pi_k(t) / gamma)(dot R[s] - sum_l pi_l(t) dot R[a_l(t)]). Row P adds to its seed.
  __device__ void backward_cell(int p, int q) const {
    double e = p == P ? E(p, q) : 0.0, dot_e = p == P ? dot_E(p, q) : 0.0;
    const int tp[3] = {p + 1, p + 1, p}, tq[3] = {q + 1, q, q + 1};  // s is t's diag, up, left
    for (int k = 0; k < 3; ++k) {
      if (tp[k] > P || tq[k] > Q) continue;
      double w[3];
      weights(tp[k], tq[k], w);
      if (w[k] == 0.0) continue;
      const double mean =
          w[0] * dot_R(tp[k] - 1, tq[k] - 1) + w[1] * dot_R(tp[k] - 1, tq[k]) + w[2] * dot_R(tp[k], tq[k] - 1);
      const double e_t = E(tp[k], tq[k]);
      e += w[k] * e_t;
      dot_e += w[k] * dot_E(tp[k], tq[k]) - w[k] * inv_gamma * (dot_R(p, q) - mean) * e_t;
    }
    E(p, q) = e;
    dot_E(p, q) = dot_e;
  }

  // E (G) and dot E (dot G) of the cost cell (i, j), from its grid cell.
  __device__ int row_of(int64_t i) const { return int(pb.weak ? 2 * i + 1 : i) - top + 1; }
  __device__ int col_of(int64_t j) const { return int(pb.weak ? 2 * j + 1 : j) + 1; }

  // (H·Z)[k, l] = dot G[k, l] + sum over the cells t having (k, l) as smoothing neighbour r of
  // dot G[t] w_r(t) + G[t] dot w_r(t), dot w_r(t) = -(w_r(t) / s)(Z[k, l] - (dot D[t] - Z[t])).
  __device__ double product(int64_t k, int64_t l) const {
    double h = dot_E(row_of(k), col_of(l));
    if (!pb.smooth) return h;
    const double inv_s = 1.0 / pb.smoothing;
    const int64_t ti[3] = {k, k + 1, k + 1}, tj[3] = {l + 1, l, l + 1};  // (left, up, diag) of t
    for (int r = 0; r < 3; ++r) {
      if (ti[r] >= n || tj[r] >= m) continue;
      double w[3], dot_d;
      smoothed(ti[r], tj[r], w, dot_d);
      const double mean = dot_d - z(ti[r], tj[r]);
      const int p = row_of(ti[r]), q = col_of(tj[r]);
      h += w[r] * dot_E(p, q) - E(p, q) * w[r] * inv_s * (z(k, l) - mean);
    }
    return h;
  }
};

// The programme of the pair at `offset` of the buffers with lengths n x m (checked by the caller), its
// scratch element k at s[k * stride].
template <typename Scalar>
__device__ HvpPair<Scalar> make_pair(const Problem& pb, const HvpLayout& L, const Scalar* cost, const Scalar* direction,
                                     int64_t offset, double* s, int64_t stride, int64_t n, int64_t m) {
  const int full_rows = int(grid_extent(pb, n)), Q = int(grid_extent(pb, m));
  const int top = int(first_walked_row(pb)), P = int(walked_rows(pb, n));
  return {pb,
          {cost + offset, pb.stride_i, pb.stride_j},
          {direction + offset, pb.stride_i, pb.stride_j},
          s,
          stride,
          L.table,
          n,
          m,
          band_width(pb, full_rows, Q),
          P,
          Q,
          top,
          full_rows,
          pb.gamma,
          1.0 / pb.gamma};
}

// Thread regime: one thread per pair; its scratch is interleaved across pairs (element k of pair b at
// scratch[k * n_pairs + b]), so that a warp's 32 pairs touch one contiguous run (coalesced).
template <typename Scalar>
__global__ void __launch_bounds__(kHvpThreads)
    hvp_thread_kernel(const Problem pb, const HvpLayout L, const Scalar* __restrict__ cost,
                      const Scalar* __restrict__ direction, Scalar* __restrict__ out, double* __restrict__ scratch) {
  const int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= pb.n_pairs) return;
  int64_t n, m;
  const bool ok = pair_lengths(pb, b, n, m);
  const int64_t offset = pair_offset(pb, b);
  zero_padding(pb, out + offset, n, m, 0, 1);  // the whole padded region for bad lengths
  if (!ok) return;
  const HvpPair<Scalar> pair = make_pair(pb, L, cost, direction, offset, scratch + b, pb.n_pairs, n, m);
  pair.init_borders(0, 1);
  for (int p = 1; p <= pair.P; ++p)
    for (int q = 1; q <= pair.Q; ++q) pair.forward_cell(p, q);
  pair.seed_end();
  for (int p = pair.P; p >= 1; --p)
    for (int q = pair.Q; q >= 1; --q) pair.backward_cell(p, q);
  Scalar* o = out + offset;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) o[i * pb.stride_i + j * pb.stride_j] = Scalar(pair.product(i, j));
}

// Block regime: one block per pair; anti-diagonal d = p + q holds cells that depend only on the
// diagonals d - 1 and d - 2 (forward) or d + 1 and d + 2 (backward): its cells are shared among the
// threads, one barrier per diagonal. The pair's scratch is contiguous.
template <typename Scalar>
__global__ void __launch_bounds__(kHvpMaxBlock)
    hvp_block_kernel(const Problem pb, const HvpLayout L, const Scalar* __restrict__ cost,
                     const Scalar* __restrict__ direction, Scalar* __restrict__ out, double* __restrict__ scratch) {
  const int64_t b = blockIdx.x;
  const int t = int(threadIdx.x), T = int(blockDim.x);
  int64_t n, m;
  const bool ok = pair_lengths(pb, b, n, m);
  const int64_t offset = pair_offset(pb, b);
  zero_padding(pb, out + offset, n, m, t, T);
  if (!ok) return;  // the whole block: no barrier is left waiting
  const HvpPair<Scalar> pair = make_pair(pb, L, cost, direction, offset, scratch + b * L.per_pair, 1, n, m);
  const int P = pair.P, Q = pair.Q;
  pair.init_borders(t, T);
  __syncthreads();
  for (int d = 2; d <= P + Q; ++d) {
    for (int p = max(1, d - Q) + t; p <= min(P, d - 1); p += T) pair.forward_cell(p, d - p);
    __syncthreads();
  }
  if (t == 0) pair.seed_end();
  __syncthreads();
  for (int d = P + Q; d >= 2; --d) {
    for (int p = max(1, d - Q) + t; p <= min(P, d - 1); p += T) pair.backward_cell(p, d - p);
    __syncthreads();
  }
  Scalar* o = out + offset;
  for (int64_t idx = t; idx < n * m; idx += T) {
    const int64_t i = idx / m, j = idx % m;
    o[i * pb.stride_i + j * pb.stride_j] = Scalar(pair.product(i, j));
  }
}

}  // namespace
}  // namespace s2dtw::cuda
