// The diagonal regime: few large pairs. One pair, its anti-diagonals in turn; the
// cells of an anti-diagonal are independent, so they fill the lanes. The rows are cut
// into strips (at most kMaxStrip rows) walked one after the other; a pair can be
// shared by all threads, which take the strips in turn and run them as a pipeline (a
// strip waits only for the progress of the strip above it, or below it in the
// backward).
//
// A room of simd_per_isa.h, which includes it with the library headers before it.
#pragma once

namespace s2dtw::cpu::S2DTW_SIMD_NS {
namespace {

// Rows [i, i + kChunkRows) of a row pass (smoothing) are one piece of work.
constexpr int64_t kChunkRows = 8;

// Lanes of slots [s, s + kLanes) holding cells of the diagonal (rows lo..hi); iota:
// the lane indices.
inline Mask inside_mask(const Vec& iota, const Diagonal& dg, int64_t s) {
  const Vec p = iota + Vec::splat(double(s - 1));
  return less(Vec::splat(double(dg.lo) - 1.0), p) & less(p, Vec::splat(double(dg.hi) + 1.0));
}

// One thread's part of walking pair b, which the `team` threads of the parallel region
// walk together (tid is this one); the workspace was sized for `threads` >= team threads.
// The rows are cut into strips of H rows, the next strip to the first free thread (a
// strip's thread only waits for strips taken before it: no deadlock). A strip walks its
// part of every anti-diagonal; it needs the row above it (forward) or below it
// (backward) one and two diagonals back, which its neighbour strip leaves in a boundary
// row and announces through its progress: no barrier per diagonal.
template <typename Scalar>
struct DiagonalWalk {
  const Problem& pb;
  DiagonalWorkspace<Scalar>& ws;
  const int tid, team, threads;
  const PairGrid g;
  const int64_t H, strips;
  const CostView<double, Scalar> view;
  const Scalar* const src;  // the pair's cost
  Scalar* const out;        // the pair's gradient (null: no gradient)
  double* buf[3];           // this thread's three anti-diagonals of R or E, by slot
  // Without smoothing, weak alignment or a band, a strip copies its rows of the cost
  // by diagonal (as E), a block of kSkewDiags diagonals at a time: contiguous loads
  // instead of vector gathers.
  const bool skewed;
  Scalar* const c_strip;
  Scalar* const e_strip;  // E of this thread's strip, by diagonal
  int64_t c_r0 = 0;       // the first row of the strip in c_strip
  Vec iota;
  NativeI iota_i[kGroup];
  const LaneOffsets cost_offsets, d_offsets;

  DiagonalWalk(const Problem& pb, int64_t b, const Scalar* cost, Scalar* grad, DiagonalWorkspace<Scalar>& ws, int tid,
               int team, int threads)
      : pb(pb),
        ws(ws),
        tid(tid),
        team(team),
        threads(threads),
        g(pb, b),
        H(strip_rows(g.P, threads)),
        strips((g.P + H - 1) / H),
        view{cost + pair_offset(pb, b), pb.stride_i, pb.stride_j},
        src(cost + pair_offset(pb, b)),
        out(grad ? grad + pair_offset(pb, b) : nullptr),
        skewed(!pb.smooth && !pb.weak && !pb.banded),
        c_strip(skewed ? ws.c_strip.data() + tid * ws.c_ring_size(g.P, threads) : nullptr),
        e_strip(grad ? ws.e_strip.data() + tid * ws.e_strip_size(g.P, g.Q, threads) : nullptr),
        cost_offsets(pb.stride_i, pb.stride_j),
        d_offsets(g.m, 1) {
    const int64_t stride = ws.diag_stride(g.P, threads);
    double* mine = ws.diags.data() + tid * 3 * stride;
    for (int k = 0; k < 3; ++k) buf[k] = mine + k * stride;
    double lane_index[kLanes];
    for (int l = 0; l < kLanes; ++l) lane_index[l] = l;
    iota = Vec::load(lane_index);
    S2DTW_EACH iota_i[g] = lane_iota(g);
  }

  // Chunks of kChunkRows rows of [0, rows) to whichever thread is free.
  template <typename Body>
  void for_rows(Phase phase, int64_t rows, Body body) {
    for (int64_t i0; (i0 = ws.work[phase].take() * kChunkRows) < rows;)
      for (int64_t i = i0; i < std::min(rows, i0 + kChunkRows); ++i) body(i);
  }

  template <typename Done>
  void wait_for_strip(int64_t strip, Done done, int64_t& seen) {
    if (done(seen)) return;
    wait_until([&] { return done(seen = ws.progress[strip].d.load(std::memory_order_acquire)); });
  }

  // Where diagonal d of the strip from row r0 is in c_strip and e_strip: skewed, a
  // ring of kSkewDiags diagonals (move_block); else the strip's own.
  int64_t e_slot(int64_t d, int64_t r0) const { return skewed ? (d - r0) % kSkewDiags : d - r0; }

  // The grid cells of slots [s, s + kLanes) of diagonal d (the null cost off the cost cells).
  Vec load_cells(int64_t d, const Diagonal& dg, int64_t s) const {
    Vec r;
    if (skewed) return Vec::load(c_strip + e_slot(d, c_r0) * H + (s - 1 - c_r0));
    const NativeD null_cost = NativeD{} + pb.threshold;
    if (pb.smooth) {
      const CellIndex ci = cell_index(pb.weak, g.top, iota_i, d, dg, s, d_offsets);
      S2DTW_EACH r.v[g] = gather(ws.d.data(), ci.idx[g], ci.mask[g], null_cost);
    } else {
      const CellIndex ci = cell_index(pb.weak, g.top, iota_i, d, dg, s, cost_offsets);
      S2DTW_EACH r.v[g] = gather(src, ci.idx[g], ci.mask[g], null_cost);
    }
    return r;
  }

  // Set-up by thread 0 (work counters, tape offsets, boundary rows, progress), then,
  // with smoothing, D computed once, row-major (without, the grid cells are read
  // straight from the cost).
  void prepare() {
    if (tid == 0) {
      for (WorkCounter& w : ws.work) w.next.store(0, std::memory_order_relaxed);
      int64_t at = 0;
      for (int64_t d = 0; d <= g.last_d; ++d) {
        const Diagonal dg = diagonal(g.P, g.Q, g.width, d);
        ws.offset[d] = at + kLanes - dg.lo;  // slot s of diagonal d at offset[d] + s
        at += std::max<int64_t>(dg.hi - dg.lo + 1, 0) + 2 + 2 * kLanes;
      }
      std::fill(ws.rows.begin(), ws.rows.begin() + (strips + 1) * (g.Q + 2), kInf);
      for (int64_t k = 0; k < strips; ++k) ws.progress[k].d.store(-1, std::memory_order_relaxed);
    }
    ws.barrier.wait(team);
    if (pb.smooth) {
      double* D = ws.d.data();
      const int64_t m = g.m;
      for_rows(kSmoothCost, g.n, [&](int64_t i) {
        for (int64_t j = 0; j < m; ++j) D[i * m + j] = smoothed_cost(pb, view, i, j, (double*)nullptr);
      });
      ws.barrier.wait(team);
    }
  }

  // Forward of strip k. Slot r0 of a strip (row r0 - 1) comes from the strip above;
  // above strip 0 is row -1, entered only diagonally: start_row as the diagonal
  // predecessor, +inf as "up". Slots a strip reads outside the diagonal's cells are +inf
  // (masked lanes, and the two set after each diagonal). Each strip leaves its last row
  // in the boundary row below it; the strip holding the last row writes value[b] and
  // the end's weights (seed). Hard: gamma = 0.
  template <bool Hard>
  void forward_strip(int64_t k, Scalar* value, int64_t b) {
    const int64_t P = g.P, Q = g.Q;
    const int64_t r0 = k * H, r1 = std::min(P, r0 + H);
    const double* above = ws.rows.data() + k * (Q + 2);  // R[r0 - 1][q] at q + 1
    double* below = ws.rows.data() + (k + 1) * (Q + 2);  // R[r1 - 1][q] at q + 1
    Scalar* tape_a = out ? ws.tape_diag.data() : nullptr;
    Scalar* tape_b = out ? ws.tape_up.data() : nullptr;
    const Vec gamma = Vec::splat(pb.gamma), inv_gamma = Vec::splat(1.0 / pb.gamma), inf = Vec::splat(kInf);
    for (double* bb : buf) std::fill(bb + r0, bb + r0 + H + 2, kInf);
    c_r0 = r0;
    int64_t seen = -1;
    for (int64_t d = r0; d <= r1 - 1 + Q - 1; ++d) {
      double* prev2 = buf[d % 3];
      double* prev1 = buf[(d + 1) % 3];
      double* cur = buf[(d + 2) % 3];
      const int64_t q = d - r0;  // row r0 - 1: column q on diagonal d - 1, q - 1 on d - 2
      if (k == 0) {
        prev1[0] = kInf;
        prev2[0] = start_row<double>(pb, d);
      } else {
        wait_for_strip(k - 1, [&](int64_t v) { return v >= d - 1; }, seen);
        prev1[r0] = q < Q ? above[q + 1] : kInf;
        prev2[r0] = q - 1 < Q ? above[q] : kInf;
      }
      if (skewed && (d - r0) % kSkewDiags == 0)
        move_block<true, Scalar>(src, pb.stride_i, pb.stride_j, g.m, H, r0, r1, d, c_strip);
      const Diagonal dg = diagonal(P, Q, g.width, d);
      const int64_t first = std::max(dg.lo, r0), last = std::min(dg.hi, r1 - 1);
      if (first <= last)
        for (int64_t s = r0 + 1 + (first - r0) / kLanes * kLanes; s - 1 <= last; s += kLanes) {
          Weights<Scalar> w[2];
          const Vec soft = softmin3<Hard>(Vec::load(prev2 + s - 1), Vec::load(prev1 + s - 1), Vec::load(prev1 + s),
                                          gamma, inv_gamma, tape_a ? w : nullptr, w + 1, nullptr);
          const Mask inside = inside_mask(iota, dg, s);
          select(inside, soft + load_cells(d, dg, s), inf).store(cur + s);
          if (tape_a) {
            select(inside, w[0], Weights<Scalar>{}).store(tape_a + ws.offset[d] + s);
            select(inside, w[1], Weights<Scalar>{}).store(tape_b + ws.offset[d] + s);
          }
        }
      if (dg.lo - 1 >= r0 && dg.lo - 1 < r1) cur[dg.lo] = kInf;
      if (dg.hi + 1 >= r0 && dg.hi + 1 < r1) cur[dg.hi + 2] = kInf;
      if (r1 - 1 >= dg.lo && r1 - 1 <= dg.hi) below[d - (r1 - 1) + 1] = cur[r1];
      ws.progress[k].d.store(d, std::memory_order_release);
    }
    ws.progress[k].d.store(INT64_MAX, std::memory_order_release);
    if (r1 != P) return;
    if (out) std::fill(ws.seed.data(), ws.seed.data() + Q, 0.0);
    value[b] = Scalar(end_value(pb, below + 1, Q, 1, out ? ws.seed.data() : nullptr));
  }

  // Between the passes: the boundary rows hold E (0) and every strip's progress
  // starts past the last diagonal; without smoothing, the padding rows of the gradient
  // get zeros (the strips' unskew writes rows < n).
  void prepare_backward() {
    if (tid == 0) {
      std::fill(ws.rows.begin(), ws.rows.begin() + strips * (g.Q + 2), 0.0);
      for (int64_t k = 0; k < strips; ++k) ws.progress[k].d.store(g.last_d + 1, std::memory_order_relaxed);
    }
    if (!pb.smooth)
      for (int64_t i = g.n + tid; i < pb.padded_n; i += team)
        for (int64_t j = 0; j < pb.padded_m; ++j) out[i * pb.stride_i + j * pb.stride_j] = Scalar(0);
    ws.barrier.wait(team);
  }

  // Backward of strip k: E by diagonals from the corner, strips from the bottom, the last
  // row's cells seeded with the end's weights; slot r1 + 1 of a strip (row r1) comes from
  // the strip below. E = 0 outside the cells. A
  // strip keeps its E by diagonal (contiguous stores; a scatter into the row-major
  // gradient is slow) and hands it, once done and still in cache, to G (with
  // smoothing) or straight to the gradient.
  void backward_strip(int64_t k) {
    const int64_t P = g.P, Q = g.Q, last_d = g.last_d;
    const int64_t r0 = k * H, r1 = std::min(P, r0 + H);
    const double* erow = ws.rows.data() + k * (Q + 2);                       // E[r1][q] at q
    double* erow_up = k > 0 ? ws.rows.data() + (k - 1) * (Q + 2) : nullptr;  // E[r0][q] at q
    const Scalar* tape_a = ws.tape_diag.data();
    const Scalar* tape_b = ws.tape_up.data();
    const Vec zero = Vec::splat(0.0), one = Vec::splat(1.0);
    for (double* bb : buf) std::fill(bb + r0, bb + r0 + H + 2, 0.0);
    int64_t seen = last_d + 1;
    for (int64_t d = std::min(last_d, r1 - 1 + Q - 1); d >= r0; --d) {
      double* next2 = buf[(d + 2) % 3];  // diagonal d + 2
      double* next1 = buf[(d + 1) % 3];  // diagonal d + 1
      double* cur = buf[d % 3];
      if (r1 < P) {
        wait_for_strip(k + 1, [&](int64_t v) { return v <= d + 1; }, seen);
        const int64_t q = d + 1 - r1;  // row r1: column q on diagonal d + 1, q + 1 on d + 2
        next1[r1 + 1] = q >= 0 && q < Q ? erow[q] : 0.0;
        next2[r1 + 1] = q + 1 >= 0 && q + 1 < Q ? erow[q + 1] : 0.0;
      }
      const Diagonal dg = diagonal(P, Q, g.width, d);
      const Scalar* a2 = d + 2 <= last_d ? tape_a + ws.offset[d + 2] : nullptr;
      const Scalar* a1 = d + 1 <= last_d ? tape_a + ws.offset[d + 1] : nullptr;
      const Scalar* b1 = d + 1 <= last_d ? tape_b + ws.offset[d + 1] : nullptr;
      const int64_t first = std::max(dg.lo, r0), last = std::min(dg.hi, r1 - 1);
      if (first <= last)
        for (int64_t s = r0 + 1 + (first - r0) / kLanes * kLanes; s - 1 <= last; s += kLanes) {
          Vec e = zero;
          if (b1) {
            const Vec from_left = vmax(one - Vec::load(a1 + s) - Vec::load(b1 + s), zero);
            e = Vec::load(next1 + s + 1) * Vec::load(b1 + s + 1) + Vec::load(next1 + s) * from_left;
          }
          if (a2) e = e + Vec::load(next2 + s + 1) * Vec::load(a2 + s + 1);
          e = select(inside_mask(iota, dg, s), e, zero);
          e.store(cur + s);
          e.store(e_strip + e_slot(d, r0) * H + (s - 1 - r0));
        }
      if (r1 == P && P - 1 >= dg.lo && P - 1 <= dg.hi) {  // the last row's cell: + its seed
        cur[P] += ws.seed[d - (P - 1)];
        e_strip[e_slot(d, r0) * H + (P - 1 - r0)] = Scalar(cur[P]);
      }
      if (skewed && (d - r0) % kSkewDiags == 0)
        move_block<false, Scalar>(out, pb.stride_i, pb.stride_j, g.m, H, r0, std::min(r1, g.n), d, e_strip);
      if (dg.lo - 1 >= r0 && dg.lo - 1 < r1) cur[dg.lo] = 0.0;
      if (dg.hi + 1 >= r0 && dg.hi + 1 < r1) cur[dg.hi + 2] = 0.0;
      if (erow_up && r0 >= dg.lo && r0 <= dg.hi) erow_up[d - r0] = cur[r0 + 1];
      ws.progress[k].d.store(d, std::memory_order_release);
    }
    ws.progress[k].d.store(INT64_MIN, std::memory_order_release);
    if (skewed) {  // (the blocks wrote columns < m)
      for (int64_t i = r0; i < std::min(r1, g.n); ++i)
        for (int64_t j = g.m; j < pb.padded_m; ++j) out[i * pb.stride_i + j * pb.stride_j] = Scalar(0);
    } else if (pb.smooth) {
      unskew(pb, g, e_strip, H, ws.g.data(), g.m, int64_t(1), g.m, r0, r1);
    } else {
      unskew(pb, g, e_strip, H, out, pb.stride_i, pb.stride_j, pb.padded_m, r0, r1);
    }
  }

  // Through the smoothing into the gradient: row i of dC collects G of rows i and
  // i + 1 (see docs/semantics.md, Gradient).
  void smooth_gradient() {
    const int64_t n = g.n, m = g.m;
    const double* G = ws.g.data();
    for_rows(kSmoothGrad, pb.padded_n, [&](int64_t i) {
      for (int64_t j = 0; j < pb.padded_m; ++j) {
        double v = 0.0;
        if (i < n && j < m) {
          v = G[i * m + j];
          double w[3];
          if (j + 1 < m) v += G[i * m + j + 1] * (smoothed_cost(pb, view, i, j + 1, w), w[0]);
          if (i + 1 < n) v += G[(i + 1) * m + j] * (smoothed_cost(pb, view, i + 1, j, w), w[1]);
          if (i + 1 < n && j + 1 < m) v += G[(i + 1) * m + j + 1] * (smoothed_cost(pb, view, i + 1, j + 1, w), w[2]);
        }
        out[i * pb.stride_i + j * pb.stride_j] = Scalar(v);
      }
    });
  }
};

// One pair by anti-diagonals, run together by the `team` threads of the parallel
// region (tid is this one): the phases set-up, forward, backward, gradient, with a
// barrier between them.
template <typename Scalar>
void diagonal_pair(const Problem& pb, int64_t b, const Scalar* cost, Scalar* value, Scalar* grad,
                   DiagonalWorkspace<Scalar>& ws, int tid, int team, int threads) {
  DiagonalWalk<Scalar> walk(pb, b, cost, grad, ws, tid, team, threads);
  walk.prepare();
  with_hard(pb.gamma == 0, [&](auto hard) {
    for (int64_t k; (k = ws.work[kForward].take()) < walk.strips;)
      walk.template forward_strip<decltype(hard)::value>(k, value, b);
  });
  ws.barrier.wait(team);
  if (!grad) return;  // (the barrier above: the next pair reuses the workspace)
  walk.prepare_backward();
  for (int64_t k; (k = walk.strips - 1 - ws.work[kBackward].take()) >= 0;) walk.backward_strip(k);
  ws.barrier.wait(team);
  if (pb.smooth) walk.smooth_gradient();
  ws.barrier.wait(team);
}

template <typename Scalar>
void run_diagonal(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int threads) {
  // The pieces of work: pairs, or the strips of a pair shared by all threads.
  threads = useful_threads(threads, std::max<int64_t>(pb.n_pairs, grid_extent(pb, pb.padded_n) / (2 * kLanes)));
  const bool shared = pb.n_pairs < threads;  // every thread on every pair
  std::vector<DiagonalWorkspace<Scalar>>& workspaces =
      cached_workspaces<DiagonalWorkspace<Scalar>>(pb, grad, shared ? 1 : threads);
  if (shared) workspaces[0].reserve(pb, grad != nullptr, threads);
#pragma omp parallel num_threads(threads)
  {
    const int tid = team_rank(), team = team_size();
    const FlushSubnormals flush;
    if (shared) {
      for (int64_t b = 0; b < pb.n_pairs; ++b)
        diagonal_pair(pb, b, cost, value, grad, workspaces[0], tid, team, threads);
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < pb.n_pairs; ++b) diagonal_pair(pb, b, cost, value, grad, workspaces[tid], 0, 1, 1);
    }
  }
  release_if_large(workspaces);
}

}  // namespace
}  // namespace s2dtw::cpu::S2DTW_SIMD_NS
