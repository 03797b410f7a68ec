// Per-cell math of S2DTW and soft-DTW, shared by the CPU and CUDA kernels.
//
// Notation (docs/semantics.md): C is the (n, m) cost of one pair, D the locally
// smoothed cost, W the weak-alignment grid ((2n+1) x (2m+1), D on its odd/odd
// cells, `threshold` elsewhere), R the soft-DTW table over W. W is never stored:
// `grid_cell` computes any of its cells from C on demand.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define S2DTW_HD __host__ __device__ __forceinline__
#else
#define S2DTW_HD inline
#endif

namespace s2dtw {

constexpr double kLn3 = 1.0986122886681098;  // softmin_s(0, 0, 0) = -s ln 3: the smoothing at the origin
constexpr int kMaxCudaStrip = 1024;          // CUDA: most rows per block strip (= threads per block)

// One call's work: many (n_b, m_b) pairs whose costs live in one buffer.
// Pair b lies in slot s = slots[b] (s = b when slots is null) and reads
// cost[(s / pairs_per_x) * stride_x + (s % pairs_per_x) * stride_y + i * stride_i + j * stride_j];
// a batch of (B, N, M) costs has pairs_per_x = 1, stride_x = N * M; the all-pairs
// layout (Bx * N, By * M) has pairs_per_x = By; slots pick some of its regions (pairwise(x):
// the pairs i <= j). The gradient uses the same layout.
// Its Python twin is s2dtw/_problem.py's Problem; csrc/bindings/problem_args.h (problem_from)
// is the one conversion, field by field: a new field goes in both and there.
struct Problem {
  int64_t n_pairs = 0;
  int64_t pairs_per_x = 1;
  int64_t stride_x = 0, stride_y = 0, stride_i = 0, stride_j = 1;
  const int64_t* pair_n = nullptr;     // rows of pair b (length n_pairs), <= padded_n
  const int64_t* pair_m = nullptr;     // columns of pair b (length n_pairs), <= padded_m
  const int64_t* slots = nullptr;      // slot of pair b (length n_pairs, distinct), or null: slot b
  int64_t padded_n = 0, padded_m = 0;  // padded extent of every pair's block of the cost
  double gamma = 1.0;
  bool smooth = false;
  double smoothing = 0.0;
  bool weak = false;
  double threshold = 0.0;
  bool banded = false;
  double bandwidth = 0.0;   // Sakoe-Chiba half-width, in sequence elements
  bool open_begin = false;  // a path may start in any column of the first (cost) row
  bool open_end = false;    // ... and end in any column of the last: value = softmin over that row
  // How to run it (pinned by tests and benchmarks, else chosen per call).
  int max_simd = 2;  // CPU: highest instruction set, a cpu::SimdLevel (0 scalar, 1 avx2, 2 avx512)
  int cuda_regime =
      0;  // CUDA: 0 chosen by the cost model, 1 one thread per pair, 2 one block, 3 several blocks per pair
  int cuda_strip = 0;  // CUDA: rows per block strip (a multiple of 32 up to kMaxCudaStrip), 0 = chosen
  // CUDA: most bytes of tape (all pairs) the block regime keeps for the backward; above, it keeps one
  // strip's per pair and recomputes each strip in the backward (docs/architecture.md, CUDA kernels).
  int64_t cuda_tape_budget = int64_t(1) << 30;
};

// Where pair b's region starts: the one place every kernel computes it.
S2DTW_HD int64_t pair_offset(const Problem& pb, int64_t b) {
  const int64_t s = pb.slots ? pb.slots[b] : b;
  return (s / pb.pairs_per_x) * pb.stride_x + (s % pb.pairs_per_x) * pb.stride_y;
}

// Rows/columns of the grid the soft-DTW recursion walks for an (n, m) pair.
S2DTW_HD int64_t grid_extent(const Problem& pb, int64_t len) { return pb.weak ? 2 * len + 1 : len; }

template <typename T>
S2DTW_HD T infinity() {
  return std::numeric_limits<T>::infinity();
}

template <typename T>
S2DTW_HD T lesser(T a, T b) {
  return b < a ? b : a;
}

// softmin_g(a, b, c) = -g log(e^{-a/g} + e^{-b/g} + e^{-c/g}), shifted by the
// minimum so it never overflows; +inf arguments drop out. When `weights` is
// given it receives d softmin / d(a, b, c), which sum to one. g = 0 is the hard
// minimum, its weights the one-hot of the FIRST minimal argument (the tie rule of
// docs/semantics.md, Variants V1/V2: callers pass the arguments in the formula's order).
template <typename T>
S2DTW_HD T softmin3(T a, T b, T c, T gamma, T inv_gamma, T* weights) {
  const T lo = lesser(a, lesser(b, c));
  if (lo == infinity<T>() || gamma == T(0)) {
    if (weights) {
      const bool first = lo != infinity<T>() && a == lo, second = lo != infinity<T>() && !first && b == lo;
      weights[0] = T(first);
      weights[1] = T(second);
      weights[2] = T(lo != infinity<T>() && !first && !second);
    }
    return lo;
  }
  const T ea = std::exp((lo - a) * inv_gamma);
  const T eb = std::exp((lo - b) * inv_gamma);
  const T ec = std::exp((lo - c) * inv_gamma);
  const T sum = ea + eb + ec;
  if (weights) {
    const T inv = T(1) / sum;
    weights[0] = ea * inv;
    weights[1] = eb * inv;
    weights[2] = ec * inv;
  }
  return lo - gamma * std::log(sum);
}

// Read-only view of one pair's cost, converting to the accumulation type T.
template <typename T, typename Scalar>
struct CostView {
  const Scalar* base;
  int64_t stride_i, stride_j;
  S2DTW_HD T operator()(int64_t i, int64_t j) const { return T(base[i * stride_i + j * stride_j]); }
};

// Local neighbourhood smoothing:
// D[i,j] = C[i,j] + softmin_s(C[i,j-1], C[i-1,j], C[i-1,j-1]), neighbours out of
// range are +inf, and at (0,0) all three are 0 (as the VT-TWINS code does).
// `weights` (nullable) receives dD[i,j]/d(C[i,j-1], C[i-1,j], C[i-1,j-1]).
template <typename T, typename Scalar>
S2DTW_HD T smoothed_cost(const Problem& pb, const CostView<T, Scalar>& cost, int64_t i, int64_t j, T* weights) {
  const T c = cost(i, j);
  if (!pb.smooth) return c;
  const T s = T(pb.smoothing);
  if (i == 0 && j == 0) {
    if (weights) weights[0] = weights[1] = weights[2] = T(0);  // constants, no gradient
    return c - s * T(kLn3);
  }
  const T inf = infinity<T>();
  const T left = j > 0 ? cost(i, j - 1) : inf;
  const T up = i > 0 ? cost(i - 1, j) : inf;
  const T diag = (i > 0 && j > 0) ? cost(i - 1, j - 1) : inf;
  return c + softmin3(left, up, diag, s, T(1) / s, weights);
}

S2DTW_HD int64_t floor_div(int64_t a, int64_t d) { return a >= 0 ? a / d : -((d - 1 - a) / d); }

// The Sakoe-Chiba band on a P x Q grid keeps the cells with
// |p (Q-1) - q (P-1)| <= width: it follows the diagonal from (0, 0) to (P-1, Q-1),
// and width = floor(bandwidth * min(P-1, Q-1)) makes `bandwidth` a distance in cells
// of the longer side (two grid cells per sequence element on the weak grid).
S2DTW_HD int64_t band_width(const Problem& pb, int64_t P, int64_t Q) {
  const int64_t full = (P - 1) * (Q - 1);
  if (!pb.banded) return full;
  const double raw = (pb.weak ? 2.0 : 1.0) * pb.bandwidth * double(lesser(P - 1, Q - 1));
  return raw >= double(full) ? full : int64_t(floor(raw));
}

struct Columns {
  int64_t lo, hi;  // inclusive; lo > hi is empty
};

// The columns of grid row p inside the band (every column when there is none).
S2DTW_HD Columns band_columns(int64_t P, int64_t Q, int64_t width, int64_t p) {
  if (P == 1) return {0, Q - 1};
  const int64_t centre = p * (Q - 1);
  const int64_t lo = -floor_div(width - centre, P - 1);  // ceil((centre - width) / (P-1))
  const int64_t hi = floor_div(centre + width, P - 1);
  return {lo < 0 ? 0 : lo, hi > Q - 1 ? Q - 1 : hi};
}

// Whether grid cell (p, q) (0-based) carries a smoothed cost D[p/2, q/2]
// rather than the weak-alignment null cost.
S2DTW_HD bool is_cost_cell(const Problem& pb, int64_t p, int64_t q) { return !pb.weak || ((p & 1) && (q & 1)); }

S2DTW_HD int64_t cost_index(const Problem& pb, int64_t p) { return pb.weak ? p >> 1 : p; }

// Subsequence alignment (docs/semantics.md, Variants V4). The rows a path walks: the
// whole grid, except that on the weak grid an open begin drops W's null row 0 and an
// open end its null row 2n (the first / last walked rows are the first / last cost
// rows). Walked row p is grid row p + first_walked_row(pb).
S2DTW_HD int64_t first_walked_row(const Problem& pb) { return pb.weak && pb.open_begin ? 1 : 0; }
S2DTW_HD int64_t walked_rows(const Problem& pb, int64_t n) {
  return grid_extent(pb, n) - first_walked_row(pb) - (pb.weak && pb.open_end ? 1 : 0);
}

// R[0, q], the row before the first walked row: 0 at q = 0 and, with an open begin, at
// every q (+inf otherwise). It enters the first walked row only diagonally: the kernels
// give that row's cells +inf as their "up" predecessor.
template <typename T>
S2DTW_HD T start_row(const Problem& pb, int64_t q) {
  return q == 0 || pb.open_begin ? T(0) : infinity<T>();
}

// The value from R's last walked row, row[k * stride] = R[P, k + 1] (k < Q): R[P, Q], or
// with an open end softmin_gamma over the row (gamma = 0: the first minimum, the
// earliest end). `weights` (nullable, same stride, holding zeros) receives d value /
// d row[k], the seed of the backward pass on that row: only its non-zero entries are
// written (closed: the last one). The CPU and CUDA kernels' one rule (CUDA: once per
// pair, by one thread, in float64).
template <typename T>
S2DTW_HD T end_value(const Problem& pb, const T* row, int64_t Q, int64_t stride, T* weights) {
  if (!pb.open_end) {
    if (weights) weights[(Q - 1) * stride] = T(1);
    return row[(Q - 1) * stride];
  }
  int64_t first = 0;
  for (int64_t k = 1; k < Q; ++k)
    if (row[k * stride] < row[first * stride]) first = k;
  const T lo = row[first * stride], gamma = T(pb.gamma);
  if (lo == infinity<T>() || gamma == T(0)) {
    if (weights && lo != infinity<T>()) weights[first * stride] = T(1);
    return lo;
  }
  T sum = 0;
  for (int64_t k = 0; k < Q; ++k) sum += std::exp((lo - row[k * stride]) / gamma);
  if (weights)
    for (int64_t k = 0; k < Q; ++k) weights[k * stride] = std::exp((lo - row[k * stride]) / gamma) / sum;
  return lo - gamma * std::log(sum);
}

// Cell (p, q) of the grid W (0-based).
template <typename T, typename Scalar>
S2DTW_HD T grid_cell(const Problem& pb, const CostView<T, Scalar>& cost, int64_t p, int64_t q) {
  if (!is_cost_cell(pb, p, q)) return T(pb.threshold);
  return smoothed_cost<T, Scalar>(pb, cost, cost_index(pb, p), cost_index(pb, q), nullptr);
}

}  // namespace s2dtw
