// The diagonal regime's geometry and data: which cells an anti-diagonal holds, the
// strips of rows the threads take, the workspace, where a diagonal's cells are in the
// cost (vector gathers) and the moves of a strip's data between row-major and
// by-diagonal order (skew: the cost in; unskew: E out), in register tiles.
//
// A room of simd_per_isa.h, which includes it with the library headers before it.
#pragma once

namespace s2dtw::cpu::S2DTW_SIMD_NS {
namespace {

// The grid of pair b: n x m cost cells, P x Q walked grid cells (walked row p is grid
// row p + top), anti-diagonals 0..last_d, the Sakoe-Chiba band's width (band_width).
struct PairGrid {
  int64_t n, m, P, Q, top, last_d, width;
  PairGrid(const Problem& pb, int64_t b)
      : n(pb.pair_n[b]),
        m(pb.pair_m[b]),
        P(walked_rows(pb, n)),
        Q(grid_extent(pb, m)),
        top(first_walked_row(pb)),
        last_d(P + Q - 2),
        width(band_width(pb, P, Q)) {}
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

// Progress of one strip of rows through its anti-diagonals, on its own cache line.
struct alignas(64) Progress {
  std::atomic<int64_t> d{0};
};

// Rows per strip of a P-row grid shared by `threads` threads: about four strips per
// thread, whole vectors, at most kMaxStrip rows: the rows a strip walks (cost reads,
// gradient writes across its anti-diagonals) then stay in L1 and in the TLB's reach.
constexpr int64_t kMaxStrip = (256 + kLanes - 1) / kLanes * kLanes;
inline int64_t strip_rows(int64_t P, int threads) {
  const int64_t round = (P + kLanes - 1) / kLanes * kLanes;
  const int64_t h = threads == 1 ? round : (P / (4 * threads) + kLanes - 1) / kLanes * kLanes;
  return std::min({round, kMaxStrip, std::max<int64_t>(2 * kLanes, h)});
}

// Rows per group in unskew and in the skew's scalar part.
constexpr int64_t kSkewRows = 16;

// Diagonals per block of a strip's skewed cost and E (no smoothing, weak alignment or
// band): the forward skews a block just before its diagonals, the backward unskews one
// as soon as it is done, through a ring of one block that stays in L2 (a whole strip
// by diagonal, H x (H + Q), is megabytes on a large grid: out to L3 and back). 256:
// each row's run of a block is 1-2 KiB, long enough for the prefetchers (64 and 128
// measured slower; benchmarks/results/cpu_profile_2026-12-02_skew.md).
constexpr int64_t kSkewDiags = 256;

// One pair's buffers: smoothed cost D and d value / d D (n x m, row-major); per
// thread, three anti-diagonals of R (forward) or E (backward) indexed by slot; per
// strip, the boundary row it shares with its neighbour and its progress; the tape
// (weights of the (diagonal, up) predecessors) by diagonal slot, diagonal d's
// segment covering slots [lo - kLanes, hi + 2 + kLanes); per thread, E of the strip it
// is on, by diagonal (when skewed, E and the cost in rings of kSkewDiags diagonals). The threads sharing a pair take
// its pieces of work (strips, chunks of rows of the smoothing) from work counters, and meet at the barrier between the
// phases (set-up, forward, backward, gradient).
enum Phase { kSmoothCost, kForward, kBackward, kSmoothGrad, kPhases };
template <typename Scalar>
struct DiagonalWorkspace {
  Buffer<double> d, g, diags, rows, seed;
  Buffer<Scalar> tape_diag, tape_up, e_strip, c_strip;
  std::vector<int64_t> offset;
  std::unique_ptr<Progress[]> progress;
  int64_t progress_size = 0;
  SpinBarrier barrier;
  WorkCounter work[kPhases];
  size_t bytes() const { return capacity_bytes(d, g, diags, rows, seed, tape_diag, tape_up, e_strip, c_strip, offset); }
  DiagonalWorkspace() = default;
  DiagonalWorkspace(DiagonalWorkspace&&) noexcept {}
  static int64_t diag_stride(int64_t P, int threads) { return P + strip_rows(P, threads) + 2 * kLanes + 4; }
  // E of one strip, by diagonal: H slots for each of its H + Q - 1 diagonals.
  static int64_t e_strip_size(int64_t P, int64_t Q, int threads) {
    const int64_t H = strip_rows(P, threads);
    return H * (H + Q);
  }
  // The skewed cost of one strip's block of kSkewDiags diagonals.
  static int64_t c_ring_size(int64_t P, int threads) { return kSkewDiags * strip_rows(P, threads); }
  void reserve(const Problem& pb, bool with_grad, int threads = 1) {
    const int64_t P = grid_extent(pb, pb.padded_n), Q = grid_extent(pb, pb.padded_m);
    if (pb.smooth) grow(d, pb.padded_n * pb.padded_m);
    const int64_t strips = P / (2 * kLanes) + 2;  // strip_rows >= 2 kLanes (or one strip)
    grow(diags, int64_t(threads) * 3 * diag_stride(P, threads));
    grow(rows, strips * (Q + 2));
    if (progress_size < strips) {
      progress.reset(new Progress[strips]);
      progress_size = strips;
    }
    grow(offset, P + Q + 1);
    if (!pb.smooth && !pb.weak && !pb.banded) grow(c_strip, int64_t(threads) * c_ring_size(P, threads));
    if (with_grad) {
      grow(seed, Q);
      if (pb.smooth) grow(g, pb.padded_n * pb.padded_m);
      const int64_t tape = P * Q + (P + Q) * (2 * kLanes + 3);
      grow(tape_diag, tape);
      grow(tape_up, tape);
      // + slack: unskew's tiles read up to kSkewRows slots past a strip's last row
      grow(e_strip, int64_t(threads) * e_strip_size(P, Q, threads) + kSkewRows * strip_rows(P, threads));
    }
  }
};

// Slots [s, s + kLanes) of diagonal d: which lanes hold a cost cell inside the
// diagonal (walked row p = slot - 1 in [lo, hi], grid row p + top), and that cell's
// index i * si + j * sj.
// Lane l has p = s - 1 + l, q = d - p: the index is a scalar plus a per-lane offset
// from a table (AVX2 has no 64-bit vector multiply; it would be emulated). With the
// weak grid (grid row p and column q of lane l: a + l and c - l, a = s - 1 + top,
// c = d - s + 1), i = p >> 1 and j = q >> 1, whose lane offsets depend on the parities
// of a and c only (p >> 1 = (a >> 1) + ((l + a & 1) >> 1), q >> 1 = (c >> 1) - ((l + 1 - c & 1) >> 1)).
struct CellIndex {
  NativeI idx[kGroup], mask[kGroup];
};
struct LaneOffsets {
  int64_t si, sj;
  NativeI step[kGroup], i_half[2][kGroup], j_half[2][kGroup];
  LaneOffsets(int64_t si, int64_t sj) : si(si), sj(sj) {
    int64_t st[kLanes], ih[2][kLanes], jh[2][kLanes];
    for (int l = 0; l < kLanes; ++l) {
      st[l] = l * (si - sj);
      for (int par = 0; par < 2; ++par) {
        ih[par][l] = ((l + par) >> 1) * si;
        jh[par][l] = ((l + 1 - par) >> 1) * sj;
      }
    }
    std::memcpy(step, st, sizeof(st));
    std::memcpy(i_half, ih, sizeof(ih));
    std::memcpy(j_half, jh, sizeof(jh));
  }
};
// iota_i: the lane indices (lane_iota), one native register per group member.
inline CellIndex cell_index(bool weak, int64_t top, const NativeI* iota_i, int64_t d, const Diagonal& dg, int64_t s,
                            const LaneOffsets& o) {
  CellIndex r;
  const int64_t a = s - 1 + top, c = d - s + 1;  // grid row and column of lane 0
  const int64_t base = weak ? (a >> 1) * o.si + (c >> 1) * o.sj : a * o.si + c * o.sj;
  S2DTW_EACH {
    const NativeI p = iota_i[g] + a;
    const NativeI inside = (p >= (NativeI{} + (dg.lo + top))) & (p <= (NativeI{} + (dg.hi + top)));
    if (!weak) {
      r.idx[g] = o.step[g] + base;
      r.mask[g] = inside;
    } else {
      const NativeI q = (NativeI{} + (d + top)) - p;
      r.mask[g] = inside & (((p & q) & 1) != 0);
      r.idx[g] = o.i_half[a & 1][g] - o.j_half[c & 1][g] + base;
    }
  }
  return r;
}

// Diagonals [c0, c0 + kSkewDiags) of strip rows [r0, r1) between a row-major matrix
// (m columns, strides si, sj) and a ring by diagonal, as E is kept:
// ring[(c - c0) * H + (i - r0)] is mat[i][c - i]; c0 - r0 is a multiple of kSkewDiags.
// Skew (ToRing: the cost, just before the forward's block) or unskew (E into the
// gradient, as soon as the backward's block is done). Contiguous rows go W at a time:
// row t's W columns from c - ib - t, transposed, are W slots of diagonals c .. c + W - 1.
template <bool ToRing, typename Scalar>
void move_block(std::conditional_t<ToRing, const Scalar*, Scalar*> mat, int64_t si, int64_t sj, int64_t m, int64_t H,
                int64_t r0, int64_t r1, int64_t c0, std::conditional_t<ToRing, Scalar*, const Scalar*> ring) {
  int64_t i_first = r0;
  using B = Tile<Scalar>;
  constexpr int W = B::W;
  static_assert(kSkewDiags % W == 0, "a block is whole tiles (c stays ib mod W)");
  const int64_t c1 = c0 + kSkewDiags;
  if (sj == 1)
    for (; i_first + W <= r1; i_first += W) {
      const int64_t ib = i_first, c_end = std::min(ib + W - 1 + m - 1, c1 - 1);
      for (int64_t c = std::max(ib, c0); c <= c_end; c += W) {
        typename B::V r[W];
        const auto at = ring + (c - c0) * H + (ib - r0);
        if constexpr (ToRing) {
          for (int t = 0; t < W; ++t) {
            const int64_t j = c - ib - t;  // the column of row ib + t on diagonal c
            const Scalar* row = mat + (ib + t) * si;
            r[t] = j >= 0 && j + W <= m ? B::load(row + j) : load_range(row + j, -j, m - j);
          }
        } else {
          for (int u = 0; u < W; ++u) r[u] = B::load(at + u * H);
        }
        B::transpose(r);
        if constexpr (ToRing) {
          for (int u = 0; u < W && c + u <= c_end; ++u) B::store(at + u * H, r[u]);
        } else {
          for (int t = 0; t < W; ++t) {
            const int64_t j = c - ib - t;
            Scalar* row = mat + (ib + t) * si;
            if (j >= 0 && j + W <= m) B::store(row + j, r[t]);
            else if (j + W > 0 && j < m) store_range(row + j, -j, m - j, r[t]);
          }
        }
      }
    }
  for (int64_t i0 = i_first; i0 < r1; i0 += kSkewRows) {
    const int64_t rows = std::min(kSkewRows, r1 - i0);
    for (int64_t c = std::max(i0, c0); c < std::min(i0 + rows - 1 + m, c1); ++c) {
      const int64_t k_lo = std::max<int64_t>(0, c - i0 - (m - 1)), k_hi = std::min(rows - 1, c - i0);
      const auto at = ring + (c - c0) * H + (i0 - r0);
      const auto cell = mat + i0 * si + (c - i0) * sj;
      for (int64_t k = k_lo; k <= k_hi; ++k)
        if constexpr (ToRing) at[k] = cell[k * (si - sj)];
        else cell[k * (si - sj)] = at[k];
    }
  }
}

// Cost columns [lo[k], hi[k]] of rows i0 + k (k < rows) inside the Sakoe-Chiba band, and
// the range [c_lo, c_hi] of i + j over them; the destination's columns [0, cols) outside
// them are zeroed.
struct RowSpans {
  int64_t lo[kSkewRows], hi[kSkewRows];
  int64_t c_lo = INT64_MAX, c_hi = INT64_MIN;
};
template <typename T>
RowSpans band_spans(const Problem& pb, const PairGrid& g, int64_t i0, int64_t rows, T* dst, int64_t dst_si,
                    int64_t dst_sj, int64_t cols) {
  RowSpans sp;
  for (int64_t k = 0; k < rows; ++k) {
    const int64_t i = i0 + k;
    const Columns c = band_columns(g.P, g.Q, g.width, pb.weak ? 2 * i + 1 - g.top : i);
    sp.lo[k] = pb.weak ? c.lo / 2 : c.lo;  // 2j + 1 >= c.lo
    sp.hi[k] = std::min(pb.weak ? (c.hi - 1) >> 1 : c.hi, g.m - 1);
    T* row = dst + i * dst_si;
    for (int64_t j = 0; j < std::min(sp.lo[k], cols); ++j) row[j * dst_sj] = T(0);
    for (int64_t j = std::max<int64_t>(sp.hi[k] + 1, 0); j < cols; ++j) row[j * dst_sj] = T(0);
    if (sp.lo[k] <= sp.hi[k]) {
      sp.c_lo = std::min(sp.c_lo, i + sp.lo[k]);
      sp.c_hi = std::max(sp.c_hi, i + sp.hi[k]);
    }
  }
  return sp;
}

// Rows i0 .. i0 + rows of E from e_strip into contiguous dst rows, W rows at a time: W
// diagonals of W slots, transposed, are W columns of each row (row t from column
// c - i - t): one vector store per row instead of W. Returns the rows done (a multiple
// of W; the caller does the rest).
template <typename T>
int64_t unskew_tiles(const T* e_strip, int64_t H, int64_t r0, int64_t i0, int64_t rows, const RowSpans& sp, T* dst,
                     int64_t dst_si) {
  using B = Tile<T>;
  constexpr int W = B::W;
  int64_t k_first = 0;
  for (; k_first + W <= rows; k_first += W) {
    const int64_t ib = i0 + k_first;
    int64_t cs = INT64_MAX, ce = INT64_MIN;
    for (int t = 0; t < W; ++t)
      if (sp.lo[k_first + t] <= sp.hi[k_first + t]) {
        cs = std::min(cs, ib + t + sp.lo[k_first + t]);
        ce = std::max(ce, ib + t + sp.hi[k_first + t]);
      }
    for (int64_t c = cs; c <= ce; c += W) {
      typename B::V r[W];
      const T* from = e_strip + (c - r0) * H + (ib - r0);
      for (int u = 0; u < W; ++u) r[u] = B::load(from + u * H);
      B::transpose(r);
      for (int t = 0; t < W; ++t) {
        const int64_t j = c - ib - t, l = sp.lo[k_first + t], h = sp.hi[k_first + t];
        if (j + W - 1 < l || j > h) continue;
        T* at = dst + (ib + t) * dst_si + j;
        if (j >= l && j + W - 1 <= h) {
          B::store(at, r[t]);
        } else {
          store_range(at, l - j, h + 1 - j, r[t]);
        }
      }
    }
  }
  return k_first;
}

// E of the cost cells (i, j) of walked strip rows [r0, r1) (0 outside the Sakoe-Chiba band)
// from e_strip (by diagonal, H slots each) into dst (strides dst_si, dst_sj; columns
// [0, cols)), rows [i_first, i_last) of the cost. Groups of kSkewRows rows filled
// diagonal by diagonal: each diagonal's run of slots is a cache line or two, while the
// rows written stay in L1.
template <typename Scalar, typename T>
void unskew(const Problem& pb, const PairGrid& g, const Scalar* e_strip, int64_t H, T* dst, int64_t dst_si,
            int64_t dst_sj, int64_t cols, int64_t r0, int64_t r1) {
  // weak: the cost rows i whose grid row 2i + 1 is walked row 2i + 1 - top in [r0, r1)
  const int64_t i_first = pb.weak ? (r0 + g.top) / 2 : r0;
  const int64_t i_last = std::min(g.n, pb.weak ? floor_div(r1 + g.top - 2, 2) + 1 : r1);
  for (int64_t i0 = i_first; i0 < i_last; i0 += kSkewRows) {
    const int64_t rows = std::min(kSkewRows, i_last - i0);
    const RowSpans sp = band_spans(pb, g, i0, rows, dst, dst_si, dst_sj, cols);
    int64_t k_first = 0;
    if constexpr (std::is_same_v<T, Scalar>)
      if (!pb.weak && dst_sj == 1) k_first = unskew_tiles(e_strip, H, r0, i0, rows, sp, dst, dst_si);
    for (int64_t c = sp.c_lo; c <= sp.c_hi; ++c)  // cost cells (i, j) with i + j = c
      for (int64_t k = k_first; k < rows; ++k) {
        const int64_t i = i0 + k, j = c - i;
        if (j < sp.lo[k] || j > sp.hi[k]) continue;
        const int64_t p = pb.weak ? 2 * i + 1 - g.top : i, q = pb.weak ? 2 * j + 1 : j;
        dst[i * dst_si + j * dst_sj] = T(e_strip[(p + q - r0) * H + (p - r0)]);
      }
  }
}

}  // namespace
}  // namespace s2dtw::cpu::S2DTW_SIMD_NS
