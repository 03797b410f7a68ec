// Vectorised CPU kernels, included once per instruction set by s2dtw_cpu_avx512.cpp
// and s2dtw_cpu_avx2.cpp, which define S2DTW_SIMD_NS and S2DTW_NATIVE_DOUBLES (see
// simd_math.h). Everything defined here is compiled for that instruction set
// (#pragma GCC target after the library headers, so that no inline function or
// template shared with the scalar code is compiled with it). Two regimes:
//
// - lockstep: many pairs. kLanes pairs (sorted by shape, so a group's shapes are
//   close) run the scalar kernel's row-by-row recursion together, one pair per lane,
//   over the group's largest grid; a lane's value is read at its own corner, and its
//   backward starts there (cells beyond its shape get E = 0). Banded groups hold one
//   shape only (the band depends on the shape).
// - diagonal: few large pairs. One pair, its anti-diagonals in turn; the cells of an
//   anti-diagonal are independent, so they fill the lanes. A pair can be shared by
//   all threads, which split every anti-diagonal and meet at a barrier after it.
//
// Both keep the recursion in float64 for float32 inputs (as the scalar kernel) and
// the transition weights on a tape in the input dtype.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <numeric>
#include <vector>

#include <xmmintrin.h>

#include "s2dtw_cpu_simd.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__clang__)
#if S2DTW_NATIVE_DOUBLES == 8
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#endif
#else
#pragma GCC push_options
#if S2DTW_NATIVE_DOUBLES == 8
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#else
#pragma GCC target("avx2,fma")
#endif
#endif

#include "simd_math.h"

namespace s2dtw::cpu::S2DTW_SIMD_NS {
namespace {

constexpr double kInf = __builtin_inf();
constexpr double kLn3 = 1.0986122886681098;

// Flush subnormals to zero (FTZ, DAZ) while a kernel runs on this thread, restored
// after. Far from the likely paths the weights and E underflow below 1e-308, and
// subnormal arithmetic is tens of times slower; zero changes nothing visible.
struct FlushSubnormals {
  unsigned saved = _mm_getcsr();
  FlushSubnormals() { _mm_setcsr(saved | 0x8040); }
  ~FlushSubnormals() { _mm_setcsr(saved); }
};

// Workspaces of one calling thread, kept between calls and grown when a call needs
// more: fresh pages cost a page fault each, which for these kernels is as much as
// the work. They are allocated here, outside the parallel region, so that running
// out of memory raises in the caller instead of terminating inside OpenMP.
template <typename Workspace>
std::vector<Workspace>& cached_workspaces(const Problem& pb, const void* grad, int threads) {
  thread_local std::vector<Workspace> cache;
  if (int(cache.size()) < threads) cache.resize(threads);
  for (int t = 0; t < threads; ++t) cache[t].reserve(pb, grad != nullptr);
  return cache;
}

// Past this many cached bytes per calling thread, a call frees its workspaces at the
// end: a one-off huge call must not pin its memory for the life of the process.
constexpr size_t kKeepBytes = size_t(256) << 20;

template <typename Workspace>
void release_if_large(std::vector<Workspace>& cache) {
  size_t total = 0;
  for (const Workspace& w : cache) total += w.bytes();
  if (total > kKeepBytes) cache.clear();
}

template <typename... V>
size_t capacity_bytes(const V&... v) {
  return (size_t(0) + ... + (v.capacity() * sizeof(typename V::value_type)));
}

template <typename T>
void grow(std::vector<T>& v, int64_t size) {
  if (int64_t(v.size()) < size) {
    v.clear();
    v.shrink_to_fit();
    v.resize(size);
  }
}

// ---------------------------------------------------------------- lockstep

// Buffers laid out [cell][lane] in float64 (cost, smoothed cost, d value / d D,
// gradient) and the tape [grid cell][2][lane] in the input dtype.
template <typename Scalar>
struct LockstepWorkspace {
  std::vector<double> cost, smooth, rows, g, dc;
  std::vector<Scalar> tape;
  size_t bytes() const { return capacity_bytes(cost, smooth, rows, g, dc, tape); }
  void reserve(const Problem& pb, bool with_grad) {
    const int64_t cells = pb.block_n * pb.block_m * kLanes;
    const int64_t P = grid_extent(pb, pb.block_n), Q = grid_extent(pb, pb.block_m);
    grow(cost, cells);
    if (pb.smooth) grow(smooth, cells);
    grow(rows, 2 * (Q + 1) * kLanes);
    if (with_grad) {
      grow(g, cells);
      if (pb.smooth) grow(dc, cells);
      grow(tape, 2 * P * Q * kLanes);
    }
  }
};

// D[i, j] of every lane from the [cell][lane] cost of an (n, m) block; w (nullable)
// receives the smoothing weights of (left, up, diagonal).
inline Vec smooth_cell(const Problem& pb, const double* c, int64_t m, int64_t i, int64_t j, Vec* w) {
  const Vec here = Vec::load(c + (i * m + j) * kLanes);
  const Vec s = Vec::splat(pb.smoothing);
  if (i == 0 && j == 0) {
    if (w) w[0] = w[1] = w[2] = Vec::splat(0.0);
    return here - s * Vec::splat(kLn3);
  }
  const Vec inf = Vec::splat(kInf);
  const Vec left = j > 0 ? Vec::load(c + (i * m + j - 1) * kLanes) : inf;
  const Vec up = i > 0 ? Vec::load(c + ((i - 1) * m + j) * kLanes) : inf;
  const Vec diag = i > 0 && j > 0 ? Vec::load(c + ((i - 1) * m + j - 1) * kLanes) : inf;
  return here + softmin3(left, up, diag, s, Vec::splat(1.0 / pb.smoothing), w, w ? w + 1 : nullptr,
                         w ? w + 2 : nullptr);
}

// One group of up to kLanes pairs (members[0..count)); unused lanes repeat the last pair.
template <typename Scalar>
void lockstep_group(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, const int64_t* members,
                    int count, LockstepWorkspace<Scalar>& ws) {
  int64_t lane_pair[kLanes], lane_n[kLanes], lane_m[kLanes];
  int64_t n = 0, m = 0;
  for (int l = 0; l < kLanes; ++l) {
    lane_pair[l] = members[std::min(l, count - 1)];
    lane_n[l] = pb.pair_n[lane_pair[l]];
    lane_m[l] = pb.pair_m[lane_pair[l]];
    n = std::max(n, lane_n[l]);
    m = std::max(m, lane_m[l]);
  }
  // Gather the costs, zero outside each lane's own pair (those cells never reach its value).
  // Row by row (a row of every lane stays in cache), each lane's row read in order.
  double* cb = ws.cost.data();
  for (int64_t i = 0; i < n; ++i)
    for (int l = 0; l < kLanes; ++l) {
      const Scalar* row = cost + pair_offset(pb, lane_pair[l]) + i * pb.stride_i;
      const int64_t inside = i < lane_n[l] ? lane_m[l] : 0;
      for (int64_t j = 0; j < m; ++j) cb[(i * m + j) * kLanes + l] = j < inside ? double(row[j * pb.stride_j]) : 0.0;
    }
  const double* db = cb;
  if (pb.smooth) {
    double* out = ws.smooth.data();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) smooth_cell(pb, cb, m, i, j, nullptr).store(out + (i * m + j) * kLanes);
    db = out;
  }

  const int64_t P = grid_extent(pb, n), Q = grid_extent(pb, m);
  const int64_t width = band_width(pb, P, Q);  // banded groups hold a single shape
  const Vec gamma = Vec::splat(pb.gamma), inv_gamma = Vec::splat(1.0 / pb.gamma);
  const Vec null_cost = Vec::splat(pb.threshold);
  Scalar* tape = grad ? ws.tape.data() : nullptr;

  // Forward: R rows at index q + 1, as the scalar kernel.
  double* above = ws.rows.data();
  double* here = above + (Q + 1) * kLanes;
  std::fill(above, above + 2 * (Q + 1) * kLanes, kInf);
  std::fill(above, above + kLanes, 0.0);
  for (int64_t p = 0; p < P; ++p) {
    const Columns cols = band_columns(P, Q, width, p);
    Vec::splat(kInf).store(here + cols.lo * kLanes);
    for (int64_t q = cols.lo; q <= cols.hi; ++q) {
      Vec w[2];
      const Vec soft = softmin3(Vec::load(above + q * kLanes), Vec::load(above + (q + 1) * kLanes),
                                Vec::load(here + q * kLanes), gamma, inv_gamma, tape ? w : nullptr, w + 1, nullptr);
      const Vec cell = is_cost_cell(pb, p, q)
                           ? Vec::load(db + (cost_index(pb, p) * m + cost_index(pb, q)) * kLanes)
                           : null_cost;
      (soft + cell).store(here + (q + 1) * kLanes);
      if (tape) {
        w[0].store(tape + (p * Q + q) * 2 * kLanes);
        w[1].store(tape + ((p * Q + q) * 2 + 1) * kLanes);
      }
    }
    for (int l = 0; l < count; ++l)
      if (grid_extent(pb, lane_n[l]) - 1 == p) value[lane_pair[l]] = Scalar(here[grid_extent(pb, lane_m[l]) * kLanes + l]);
    std::swap(above, here);
  }
  if (!grad) return;

  // Backward: E rows; a lane's E is 1 at its own corner and 0 beyond its grid.
  double lane_last_p[kLanes], lane_last_q[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    lane_last_p[l] = double(grid_extent(pb, lane_n[l]) - 1);
    lane_last_q[l] = double(grid_extent(pb, lane_m[l]) - 1);
  }
  const Vec last_p = Vec::load(lane_last_p), last_q = Vec::load(lane_last_q);
  const Vec zero = Vec::splat(0.0), one = Vec::splat(1.0);
  double* gb = ws.g.data();
  std::fill(gb, gb + n * m * kLanes, 0.0);
  double* below = ws.rows.data();
  here = below + (Q + 1) * kLanes;
  for (int64_t p = P - 1; p >= 0; --p) {
    const Scalar* tape_here = tape + p * Q * 2 * kLanes;
    const Scalar* tape_below = tape_here + Q * 2 * kLanes;
    const Columns cols = band_columns(P, Q, width, p);
    const Columns next = p + 1 < P ? band_columns(P, Q, width, p + 1) : Columns{1, 0};
    const Vec pv = Vec::splat(double(p));
    const Mask row_in = less(pv, last_p + one), row_last = equal(pv, last_p);
    for (int64_t q = cols.hi; q >= cols.lo; --q) {
      Vec e = zero;
      if (q >= next.lo && q <= next.hi)
        e = e + Vec::load(below + q * kLanes) * Vec::load(tape_below + (2 * q + 1) * kLanes);
      if (q + 1 >= next.lo && q + 1 <= next.hi)
        e = e + Vec::load(below + (q + 1) * kLanes) * Vec::load(tape_below + 2 * (q + 1) * kLanes);
      if (q + 1 <= cols.hi) {
        const Vec from_left = one - Vec::load(tape_here + 2 * (q + 1) * kLanes) -
                              Vec::load(tape_here + (2 * (q + 1) + 1) * kLanes);
        e = e + Vec::load(here + (q + 1) * kLanes) * vmax(from_left, zero);
      }
      const Vec qv = Vec::splat(double(q));
      e = select(row_last & equal(qv, last_q), one, e);
      e = select(row_in & less(qv, last_q + one), e, zero);
      e.store(here + q * kLanes);
      if (is_cost_cell(pb, p, q)) e.store(gb + (cost_index(pb, p) * m + cost_index(pb, q)) * kLanes);
    }
    std::swap(below, here);
  }

  // Through the smoothing: dC[k, l] collects G[i, j] times d D[i, j] / d C[k, l].
  const double* dc = gb;
  if (pb.smooth) {
    double* out = ws.dc.data();
    std::fill(out, out + n * m * kLanes, 0.0);
    auto add = [&](int64_t i, int64_t j, const Vec& v) {
      double* at = out + (i * m + j) * kLanes;
      (Vec::load(at) + v).store(at);
    };
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) {
        const Vec gij = Vec::load(gb + (i * m + j) * kLanes);
        Vec w[3];
        smooth_cell(pb, cb, m, i, j, w);
        add(i, j, gij);
        if (j > 0) add(i, j - 1, gij * w[0]);
        if (i > 0) add(i - 1, j, gij * w[1]);
        if (i > 0 && j > 0) add(i - 1, j - 1, gij * w[2]);
      }
    dc = out;
  }
  for (int64_t i = 0; i < pb.block_n; ++i)
    for (int l = 0; l < count; ++l) {
      Scalar* row = grad + pair_offset(pb, lane_pair[l]) + i * pb.stride_i;
      const int64_t inside = i < lane_n[l] ? lane_m[l] : 0;
      for (int64_t j = 0; j < pb.block_m; ++j)
        row[j * pb.stride_j] = j < inside ? Scalar(dc[(i * m + j) * kLanes + l]) : Scalar(0);
    }
}

// Pairs sorted by shape, cut into groups of kLanes (banded: one shape per group).
std::vector<int64_t> lockstep_groups(const Problem& pb, std::vector<int64_t>& order) {
  order.resize(pb.n_pairs);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return pb.pair_n[a] != pb.pair_n[b] ? pb.pair_n[a] < pb.pair_n[b] : pb.pair_m[a] < pb.pair_m[b];
  });
  std::vector<int64_t> starts;
  for (int64_t k = 0; k < pb.n_pairs; ++k) {
    const bool new_shape = k > 0 && (pb.pair_n[order[k]] != pb.pair_n[order[k - 1]] ||
                                     pb.pair_m[order[k]] != pb.pair_m[order[k - 1]]);
    if (starts.empty() || k - starts.back() == kLanes || (pb.banded && new_shape)) starts.push_back(k);
  }
  starts.push_back(pb.n_pairs);
  return starts;
}

template <typename Scalar>
void run_lockstep(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int threads) {
  std::vector<int64_t> order;
  const std::vector<int64_t> starts = lockstep_groups(pb, order);
  const int64_t groups = int64_t(starts.size()) - 1;
  threads = int(std::max<int64_t>(1, std::min<int64_t>(threads, groups)));
  std::vector<LockstepWorkspace<Scalar>>& workspaces = cached_workspaces<LockstepWorkspace<Scalar>>(pb, grad, threads);
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    LockstepWorkspace<Scalar>& ws = workspaces[omp_get_thread_num()];
#else
    LockstepWorkspace<Scalar>& ws = workspaces[0];
#endif
    const FlushSubnormals flush;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < groups; ++k)
      lockstep_group(pb, cost, value, grad, order.data() + starts[k], int(starts[k + 1] - starts[k]), ws);
  }
  release_if_large(workspaces);
}

// ---------------------------------------------------------------- diagonal

// Threads sharing one pair meet here after every anti-diagonal.
struct SpinBarrier {
  std::atomic<int> arrived{0}, phase{0};
  int threads = 1;
  void wait() {
    if (threads == 1) return;
    const int ph = phase.load(std::memory_order_acquire);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) == threads - 1) {
      arrived.store(0, std::memory_order_relaxed);
      phase.store(ph + 1, std::memory_order_release);
    } else {
      while (phase.load(std::memory_order_acquire) == ph) _mm_pause();
    }
  }
};

// Anti-diagonal d = p + q of a P x Q grid: cells p in [lo, hi] (inside the band).
// Arrays over a diagonal are indexed by slot s = p + 1 (slot 0: row -1).
struct Diagonal {
  int64_t lo, hi;
};
inline Diagonal diagonal(int64_t P, int64_t Q, int64_t width, int64_t d) {
  int64_t lo = std::max<int64_t>(0, d - Q + 1), hi = std::min<int64_t>(d, P - 1);
  if (P > 1 || Q > 1) {  // |p (Q-1) - q (P-1)| <= width with q = d - p, as band_columns
    const int64_t span = P + Q - 2, centre = d * (P - 1);
    lo = std::max(lo, -floor_div(width - centre, span));
    hi = std::min(hi, floor_div(centre + width, span));
  }
  return {lo, hi};
}

// One pair's buffers: smoothed cost D and d value / d D (n x m, row-major), three
// anti-diagonals of R (forward) or E (backward), the tape: weights of (diagonal, up)
// predecessors per diagonal slot, diagonal d's segment covering slots [lo, hi + 2 + kLanes).
template <typename Scalar>
struct DiagonalWorkspace {
  std::vector<double> d, g, diags;
  std::vector<Scalar> tape_diag, tape_up;
  std::vector<int64_t> offset;
  SpinBarrier barrier;
  size_t bytes() const { return capacity_bytes(d, g, diags, tape_diag, tape_up, offset); }
  DiagonalWorkspace() = default;
  DiagonalWorkspace(DiagonalWorkspace&&) noexcept {}
  void reserve(const Problem& pb, bool with_grad) {
    const int64_t P = grid_extent(pb, pb.block_n), Q = grid_extent(pb, pb.block_m);
    grow(d, pb.block_n * pb.block_m);
    grow(diags, 3 * (P + 3 + kLanes));
    grow(offset, P + Q + 1);
    if (with_grad) {
      grow(g, pb.block_n * pb.block_m);
      grow(tape_diag, P * Q + (P + Q) * (kLanes + 3));
      grow(tape_up, P * Q + (P + Q) * (kLanes + 3));
    }
  }
};

// This thread's share [first, last) of the slots [lo + 1, hi + 2) in whole vectors.
inline void share(const Diagonal& dg, int tid, int threads, int64_t* first, int64_t* last) {
  const int64_t chunks = dg.hi >= dg.lo ? (dg.hi - dg.lo + kLanes) / kLanes : 0;
  *first = dg.lo + 1 + chunks * tid / threads * kLanes;
  *last = dg.lo + 1 + chunks * (tid + 1) / threads * kLanes;
}

// One pair by anti-diagonals, run by `threads` threads (tid is this one) together.
template <typename Scalar>
void diagonal_pair(const Problem& pb, int64_t b, const Scalar* cost, Scalar* value, Scalar* grad,
                   DiagonalWorkspace<Scalar>& ws, int tid, int threads) {
  const int64_t n = pb.pair_n[b], m = pb.pair_m[b];
  const int64_t P = grid_extent(pb, n), Q = grid_extent(pb, m), last_d = P + Q - 2;
  const int64_t width = band_width(pb, P, Q);
  const CostView<double, Scalar> view{cost + pair_offset(pb, b), pb.stride_i, pb.stride_j};
  double* D = ws.d.data();
  for (int64_t i = tid; i < n; i += threads)
    for (int64_t j = 0; j < m; ++j) D[i * m + j] = smoothed_cost(pb, view, i, j, (double*)nullptr);
  if (tid == 0) {
    int64_t at = 0;
    for (int64_t d = 0; d <= last_d; ++d) {
      const Diagonal dg = diagonal(P, Q, width, d);
      ws.offset[d] = at - dg.lo;  // slot s of diagonal d at offset[d] + s
      at += std::max<int64_t>(dg.hi - dg.lo + 1, 0) + 2 + kLanes;
    }
  }
  ws.barrier.wait();

  const int64_t stride = P + 3 + kLanes;
  double* buf[3] = {ws.diags.data(), ws.diags.data() + stride, ws.diags.data() + 2 * stride};
  Scalar* tape_a = grad ? ws.tape_diag.data() : nullptr;
  Scalar* tape_b = grad ? ws.tape_up.data() : nullptr;
  const Vec gamma = Vec::splat(pb.gamma), inv_gamma = Vec::splat(1.0 / pb.gamma);
  const Vec inf = Vec::splat(kInf), zero = Vec::splat(0.0), one = Vec::splat(1.0);
  double lane_index[kLanes];
  for (int l = 0; l < kLanes; ++l) lane_index[l] = l;
  const Vec iota = Vec::load(lane_index);
  alignas(64) double cell[kLanes];

  // The grid cells of slots [s, s + kLanes) of diagonal d (0 outside [lo, hi]).
  auto load_cells = [&](int64_t d, const Diagonal& dg, int64_t s) {
    for (int l = 0; l < kLanes; ++l) {
      const int64_t p = s - 1 + l, q = d - p;
      cell[l] = p > dg.hi ? 0.0
                : is_cost_cell(pb, p, q) ? D[cost_index(pb, p) * m + cost_index(pb, q)]
                                         : pb.threshold;
    }
    return Vec::load(cell);
  };

  // Forward. Diagonals -2 and -1: R[-1][-1] = 0, every other boundary cell +inf.
  if (tid == 0) {
    std::fill(ws.diags.begin(), ws.diags.begin() + 3 * stride, kInf);
    buf[0][0] = 0.0;
  }
  ws.barrier.wait();
  for (int64_t d = 0; d <= last_d; ++d) {
    const double* prev2 = buf[d % 3];
    const double* prev1 = buf[(d + 1) % 3];
    double* cur = buf[(d + 2) % 3];
    const Diagonal dg = diagonal(P, Q, width, d);
    int64_t first, last;
    share(dg, tid, threads, &first, &last);
    const Vec hi_slot = Vec::splat(double(dg.hi + 1));
    for (int64_t s = first; s < last; s += kLanes) {
      Vec w[2];
      const Vec soft = softmin3(Vec::load(prev2 + s - 1), Vec::load(prev1 + s - 1), Vec::load(prev1 + s), gamma,
                                inv_gamma, tape_a ? w : nullptr, w + 1, nullptr);
      const Mask inside = less(iota + Vec::splat(double(s)), hi_slot + one);
      select(inside, soft + load_cells(d, dg, s), inf).store(cur + s);
      if (tape_a) {
        select(inside, w[0], zero).store(tape_a + ws.offset[d] + s);
        select(inside, w[1], zero).store(tape_b + ws.offset[d] + s);
      }
    }
    if (tid == 0) {
      // Slots the next two diagonals read outside this one's cells are +inf (the
      // band edges, row -1, column -1); the tape is 0 around the cells.
      const Diagonal n1 = diagonal(P, Q, width, d + 1), n2 = diagonal(P, Q, width, d + 2);
      const int64_t end = dg.hi >= dg.lo ? dg.lo + 1 + (dg.hi - dg.lo + kLanes) / kLanes * kLanes : dg.lo + 1;
      for (int64_t s = std::min(n1.lo, n2.lo); s < dg.lo + 1; ++s) cur[s] = kInf;
      for (int64_t s = end; s <= std::max(n1.hi + 1, n2.hi); ++s) cur[s] = kInf;
      if (tape_a) {
        tape_a[ws.offset[d] + dg.lo] = tape_b[ws.offset[d] + dg.lo] = Scalar(0);
        for (int64_t s = end; s <= dg.hi + 2; ++s) tape_a[ws.offset[d] + s] = tape_b[ws.offset[d] + s] = Scalar(0);
      }
    }
    ws.barrier.wait();
  }
  if (tid == 0) value[b] = Scalar(buf[(last_d + 2) % 3][P]);
  if (!grad) return;

  // Backward: E by diagonals from the corner; E = 0 outside the cells.
  double* G = ws.g.data();
  for (int64_t i = tid; i < n; i += threads) std::fill(G + i * m, G + (i + 1) * m, 0.0);
  if (tid == 0) std::fill(ws.diags.begin(), ws.diags.begin() + 3 * stride, 0.0);
  ws.barrier.wait();
  for (int64_t d = last_d; d >= 0; --d) {
    const double* next2 = buf[(d + 2) % 3];  // diagonal d + 2
    const double* next1 = buf[(d + 1) % 3];  // diagonal d + 1
    double* cur = buf[d % 3];
    const Diagonal dg = diagonal(P, Q, width, d);
    const Scalar* a2 = d + 2 <= last_d ? tape_a + ws.offset[d + 2] : nullptr;
    const Scalar* a1 = d + 1 <= last_d ? tape_a + ws.offset[d + 1] : nullptr;
    const Scalar* b1 = d + 1 <= last_d ? tape_b + ws.offset[d + 1] : nullptr;
    int64_t first, last;
    share(dg, tid, threads, &first, &last);
    const Vec hi_slot = Vec::splat(double(dg.hi + 1));
    for (int64_t s = first; s < last; s += kLanes) {
      Vec e = zero;
      if (b1) {
        const Vec from_left = vmax(one - Vec::load(a1 + s) - Vec::load(b1 + s), zero);
        e = Vec::load(next1 + s + 1) * Vec::load(b1 + s + 1) + Vec::load(next1 + s) * from_left;
      }
      if (a2) e = e + Vec::load(next2 + s + 1) * Vec::load(a2 + s + 1);
      if (d == last_d) e = one;
      const Mask inside = less(iota + Vec::splat(double(s)), hi_slot + one);
      e = select(inside, e, zero);
      e.store(cur + s);
      for (int l = 0; l < kLanes; ++l) {
        const int64_t p = s - 1 + l, q = d - p;
        if (p <= dg.hi && is_cost_cell(pb, p, q)) G[cost_index(pb, p) * m + cost_index(pb, q)] = e[l];
      }
    }
    if (tid == 0 && d > 0) {
      const Diagonal p1 = diagonal(P, Q, width, d - 1), p2 = d > 1 ? diagonal(P, Q, width, d - 2) : p1;
      const int64_t end = dg.hi >= dg.lo ? dg.lo + 1 + (dg.hi - dg.lo + kLanes) / kLanes * kLanes : dg.lo + 1;
      for (int64_t s = std::min(p1.lo + 1, p2.lo + 2); s < dg.lo + 1; ++s) cur[s] = 0.0;
      for (int64_t s = end; s <= std::max(p1.hi + 2, p2.hi + 2); ++s) cur[s] = 0.0;
    }
    ws.barrier.wait();
  }

  // Through the smoothing into the gradient, rows split between the threads: row i
  // of dC collects G of rows i and i + 1 (see docs/semantics.md, Gradient).
  Scalar* out = grad + pair_offset(pb, b);
  for (int64_t i = tid; i < pb.block_n; i += threads)
    for (int64_t j = 0; j < pb.block_m; ++j) {
      double v = 0.0;
      if (i < n && j < m) {
        v = G[i * m + j];
        if (pb.smooth) {
          double w[3];
          if (j + 1 < m) v += G[i * m + j + 1] * (smoothed_cost(pb, view, i, j + 1, w), w[0]);
          if (i + 1 < n) v += G[(i + 1) * m + j] * (smoothed_cost(pb, view, i + 1, j, w), w[1]);
          if (i + 1 < n && j + 1 < m) v += G[(i + 1) * m + j + 1] * (smoothed_cost(pb, view, i + 1, j + 1, w), w[2]);
        }
      }
      out[i * pb.stride_i + j * pb.stride_j] = Scalar(v);
    }
  ws.barrier.wait();
}

template <typename Scalar>
void run_diagonal(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int threads) {
  threads = std::max(1, threads);
  const bool shared = pb.n_pairs < threads;  // every thread on every pair
  std::vector<DiagonalWorkspace<Scalar>>& workspaces =
      cached_workspaces<DiagonalWorkspace<Scalar>>(pb, grad, shared ? 1 : threads);
  workspaces[0].barrier.threads = shared ? threads : 1;
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    const FlushSubnormals flush;
    if (shared) {
      for (int64_t b = 0; b < pb.n_pairs; ++b) diagonal_pair(pb, b, cost, value, grad, workspaces[0], tid, threads);
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < pb.n_pairs; ++b) diagonal_pair(pb, b, cost, value, grad, workspaces[tid], 0, 1);
    }
  }
  release_if_large(workspaces);
}

}  // namespace

template <typename Scalar>
bool run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads) {
  const int64_t P = grid_extent(pb, pb.block_n), Q = grid_extent(pb, pb.block_m);
  const bool small = P * Q <= 4096;
  const bool many = pb.n_pairs >= int64_t(num_threads) * kLanes / 2 && P * Q <= 65536;
  if (small || many)
    run_lockstep(pb, cost, value, grad, num_threads);
  else
    run_diagonal(pb, cost, value, grad, num_threads);
  return true;
}

void check_math(const double* x, double* exp_x, double* log_x, int64_t n) {
  for (int64_t k = 0; k + kLanes <= n; k += kLanes) {
    const Vec v = Vec::load(x + k);
    vexp(v).store(exp_x + k);
    vlog(v).store(log_x + k);
  }
}

template bool run<float>(const Problem&, const float*, float*, float*, int);
template bool run<double>(const Problem&, const double*, double*, double*, int);

}  // namespace s2dtw::cpu::S2DTW_SIMD_NS

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
