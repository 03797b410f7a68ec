// Which cells of a pair the CUDA kernels visit: the pair's checked lengths, the Sakoe-Chiba
// band's columns per grid row (forward) and the wider ones that get a gradient (backward),
// and the zeroing of the gradient everywhere else. Included by s2dtw_cuda.cu only.
#pragma once

#include <cstdint>

#include "cell_math.cuh"
#include "s2dtw_cuda.h"

namespace s2dtw::cuda {
namespace {

// Element idx of pair b at base[idx * n_pairs + b]: the thread regime interleaves its pairs' buffers so
// that a warp's 32 pairs touch one contiguous run of 32 elements (every access coalesced).
template <typename T>
struct Interleaved {
  T* base;
  int64_t n_pairs, b;
  __device__ __forceinline__ T& operator()(int64_t idx) const { return base[idx * n_pairs + b]; }
};

// Pair b's lengths, read from device memory: false (and n = m = 0, so that zero_padding
// clears the pair's whole padded region) unless 1 <= n <= padded_n and 1 <= m <= padded_m.
__device__ __forceinline__ bool pair_lengths(const Problem& pb, int64_t b, int64_t& n, int64_t& m) {
  n = pb.pair_n[b];
  m = pb.pair_m[b];
  const bool ok = n >= 1 && n <= pb.padded_n && m >= 1 && m <= pb.padded_m;
  if (!ok) n = m = 0;
  return ok;
}

// Zero the part of a pair's padded_n x padded_m gradient region outside its n x m
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
__device__ void zero_off_band(const Problem& pb, Scalar* g, int64_t n, int64_t m, int64_t P, int64_t Q, int64_t width,
                              int64_t first, int64_t step) {
  for (int64_t i = 0; i < n; ++i) {
    const Columns js = cost_columns(pb, grad_columns(pb, P, Q, width, pb.weak ? 2 * i + 1 : i));
    const int64_t left_end = js.lo < m ? js.lo : m, right = js.hi + 1 > js.lo ? js.hi + 1 : js.lo;
    Scalar* row = g + i * pb.stride_i;
    for (int64_t j = first; j < left_end; j += step) row[j * pb.stride_j] = Scalar(0);
    for (int64_t j = right + first; j < m; j += step) row[j * pb.stride_j] = Scalar(0);
  }
}

}  // namespace
}  // namespace s2dtw::cuda
