// The lockstep regime: many pairs. kLanes pairs (sorted by shape, so a group's shapes
// are close) run the scalar kernel's row-by-row recursion together, one pair per lane,
// over the group's largest grid; a lane's value is read on its own last row (end_value),
// and its backward starts there (cells beyond its shape get E = 0). Banded groups hold one
// shape only (the band depends on the shape). The hard forms (gamma = 0, smoothing = 0)
// are compiled copies of the recursion and of the smoothing (with_hard).
//
// A room of simd_per_isa.h, which includes it with the library headers before it.
#pragma once

namespace s2dtw::cpu::S2DTW_SIMD_NS {
namespace {

// The lockstep kernels get GCC's first instruction scheduling pass (before register
// allocation, off by default on x86): one cell's softmin is longer than the core's reorder
// window, so the order of the emitted instructions decides how much of it overlaps. About
// 10 % on float32 (benchmarks/results/cpu_profile_lockstep_2026-12-01_avx2.md), same results.
#if !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("schedule-insns", "sched-pressure")
#endif

// Buffers laid out [cell][lane]: the cost in the input dtype (widened to float64 as it
// is loaded), the smoothed cost, d value / d D and the gradient through the smoothing
// in float64, d value / d C without smoothing in the input dtype; the tape
// [grid cell][2][lane] in the input dtype; the last row's seed of E [column][lane].
template <typename Scalar>
struct LockstepWorkspace {
  Buffer<Scalar> cost, gs;
  Buffer<double> smooth, rows, g, dc, seed;
  Buffer<Scalar> tape;
  size_t bytes() const { return capacity_bytes(cost, gs, smooth, rows, g, dc, seed, tape); }
  void reserve(const Problem& pb, bool with_grad) {
    const int64_t cells = pb.padded_n * pb.padded_m * kLanes;
    const int64_t P = grid_extent(pb, pb.padded_n), Q = grid_extent(pb, pb.padded_m);
    grow(cost, cells);
    if (pb.smooth) grow(smooth, cells);
    grow(rows, 3 * (Q + 1) * kLanes);
    if (with_grad) {
      grow(seed, Q * kLanes);
      if (pb.smooth) grow(g, cells);
      else grow(gs, cells);
      if (pb.smooth) grow(dc, cells);
      grow(tape, 2 * P * Q * kLanes);
    }
  }
};

// The lanes of one group of up to kLanes pairs (members[0..count)); unused lanes
// repeat the last pair. n x m: the group's largest shape, the extent of its buffers.
// offset: each lane's region start, once per group (pair_offset divides by pairs_per_x).
struct LockstepLanes {
  int64_t pair[kLanes], n_of[kLanes], m_of[kLanes], offset[kLanes];
  int64_t n = 0, m = 0;
  int count;
  LockstepLanes(const Problem& pb, const int64_t* members, int count) : count(count) {
    for (int l = 0; l < kLanes; ++l) {
      pair[l] = members[std::min(l, count - 1)];
      n_of[l] = pb.pair_n[pair[l]];
      m_of[l] = pb.pair_m[pair[l]];
      offset[l] = pair_offset(pb, pair[l]);
      n = std::max(n, n_of[l]);
      m = std::max(m, m_of[l]);
    }
  }
  // Columns of row i inside lane l's pair (0 below its last row).
  int64_t inside(int l, int64_t i) const { return i < n_of[l] ? m_of[l] : 0; }
};

// The lanes' costs into cb ([cell][lane]), zero outside each lane's own pair (those
// cells never reach its value). Row by row (a row of every lane stays in cache), each
// lane's row read in order.
template <typename Scalar>
void gather_costs(const Problem& pb, const Scalar* cost, const LockstepLanes& lanes, Scalar* cb) {
  const int64_t n = lanes.n, m = lanes.m;
  for (int64_t i = 0; i < n; ++i) {
    if (pb.stride_j == 1) {
      const Scalar* rows[kLanes];
      int64_t inside[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        inside[l] = lanes.inside(l, i);
        rows[l] = cost + lanes.offset[l] + (i < lanes.n_of[l] ? i * pb.stride_i : 0);
      }
      gather_row(cb, rows, inside, m, i);
      continue;
    }
    for (int l = 0; l < kLanes; ++l) {
      const Scalar* row = cost + lanes.offset[l] + i * pb.stride_i;
      const int64_t inside = lanes.inside(l, i);
      for (int64_t j = 0; j < m; ++j) cb[(i * m + j) * kLanes + l] = j < inside ? row[j * pb.stride_j] : Scalar(0);
    }
  }
}

// D[i, j] of every lane from the [cell][lane] cost of an (n, m) group; w (nullable)
// receives the smoothing weights of (left, up, diagonal).
template <bool Hard, typename T>
inline Vec smooth_cell(const Problem& pb, const T* c, int64_t m, int64_t i, int64_t j, Vec* w) {
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
  return here +
         softmin3<Hard>(left, up, diag, s, Vec::splat(1.0 / pb.smoothing), w, w ? w + 1 : nullptr, w ? w + 2 : nullptr);
}

template <typename Scalar>
const double* smooth_costs(const Problem& pb, const Scalar* cb, int64_t n, int64_t m, double* out) {
  with_hard(pb.smoothing == 0, [&](auto hard) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j)
        smooth_cell<decltype(hard)::value>(pb, cb, m, i, j, nullptr).store(out + (i * m + j) * kLanes);
  });
  return out;
}

// Forward: R rows at index q + 1 (two rows of `rows`, the third +inf: the first row's
// "up"), as the scalar kernel; the grid cells from the smoothed cost sb, else the cost
// cb; the weights onto `tape` (nullable) and the last row's end_value weights onto
// `seed` (with the tape). Walked row p is grid row p + top.
template <bool Hard, typename Scalar>
void lockstep_forward(const Problem& pb, const LockstepLanes& lanes, const Scalar* cb, const double* sb, double* rows,
                      Scalar* tape, double* seed, Scalar* value) {
  const int64_t m = lanes.m;
  const int64_t P = walked_rows(pb, lanes.n), Q = grid_extent(pb, m), top = first_walked_row(pb);
  const int64_t width = band_width(pb, P, Q);  // banded groups hold a single shape
  const Vec gamma = Vec::splat(pb.gamma), inv_gamma = Vec::splat(1.0 / pb.gamma);
  const Vec null_cost = Vec::splat(pb.threshold);
  double* above = rows;
  double* here = above + (Q + 1) * kLanes;
  const double* no_up = here + (Q + 1) * kLanes;
  std::fill(above, above + 3 * (Q + 1) * kLanes, kInf);
  for (int64_t q = 0; q < Q; ++q) Vec::splat(start_row<double>(pb, q)).store(above + q * kLanes);
  if (seed) std::fill(seed, seed + Q * kLanes, 0.0);
  int64_t end_row[kLanes];  // each lane's last walked row
  for (int l = 0; l < kLanes; ++l) end_row[l] = walked_rows(pb, lanes.n_of[l]) - 1;
  const int64_t first_end = *std::min_element(end_row, end_row + kLanes);
  for (int64_t p = 0; p < P; ++p) {
    const Columns cols = band_columns(P, Q, width, p);
    Vec::splat(kInf).store(here + cols.lo * kLanes);
    const double* up = p == 0 ? no_up : above;
    for (int64_t q = cols.lo; q <= cols.hi; ++q) {
      Weights<Scalar> w[2];
      const Vec soft =
          softmin3<Hard>(Vec::load(above + q * kLanes), Vec::load(up + (q + 1) * kLanes), Vec::load(here + q * kLanes),
                         gamma, inv_gamma, tape ? w : nullptr, w + 1, nullptr);
      Vec cell = null_cost;
      if (is_cost_cell(pb, p + top, q)) {
        const int64_t at = (cost_index(pb, p + top) * m + cost_index(pb, q)) * kLanes;
        cell = sb ? Vec::load(sb + at) : Vec::load(cb + at);
      }
      (soft + cell).store(here + (q + 1) * kLanes);
      if (tape) {
        w[0].store(tape + (p * Q + q) * 2 * kLanes);
        w[1].store(tape + ((p * Q + q) * 2 + 1) * kLanes);
      }
    }
    // On a lane's last row: every lane's seed (unused lanes repeat a pair), the used lanes' values.
    for (int l = 0; p >= first_end && l < kLanes; ++l)
      if (end_row[l] == p) {
        const double v =
            end_value(pb, here + kLanes + l, grid_extent(pb, lanes.m_of[l]), kLanes, seed ? seed + l : nullptr);
        if (l < lanes.count) value[lanes.pair[l]] = Scalar(v);
      }
    std::swap(above, here);
  }
}

// Backward: E rows (two rows of `rows`); a lane's E starts on its own last row from
// `seed` and is 0 beyond its grid. E of the cost cells goes to `out` ([cell][lane]):
// d value / d D (float64, with smoothing) or d value / d C (input dtype).
template <typename Scalar, typename G>
void lockstep_backward(const Problem& pb, const LockstepLanes& lanes, const Scalar* tape, const double* seed,
                       double* rows, G* out) {
  const int64_t n = lanes.n, m = lanes.m;
  const int64_t P = walked_rows(pb, n), Q = grid_extent(pb, m), top = first_walked_row(pb);
  const int64_t width = band_width(pb, P, Q);
  double lane_last_p[kLanes], lane_last_q[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    lane_last_p[l] = double(walked_rows(pb, lanes.n_of[l]) - 1);
    lane_last_q[l] = double(grid_extent(pb, lanes.m_of[l]) - 1);
  }
  const Vec last_p = Vec::load(lane_last_p), last_q = Vec::load(lane_last_q);
  const double first_last_p = *std::min_element(lane_last_p, lane_last_p + kLanes);
  const double last_last_p = *std::max_element(lane_last_p, lane_last_p + kLanes);
  const Vec zero = Vec::splat(0.0), one = Vec::splat(1.0);
  // Without weak alignment or a band every cell is written below.
  if (pb.weak || pb.banded) std::fill(out, out + n * m * kLanes, G(0));
  double* below = rows;
  double* here = below + (Q + 1) * kLanes;
  for (int64_t p = P - 1; p >= 0; --p) {
    const Scalar* tape_here = tape + p * Q * 2 * kLanes;
    const Scalar* tape_below = tape_here + Q * 2 * kLanes;
    const Columns cols = band_columns(P, Q, width, p);
    const Columns next = p + 1 < P ? band_columns(P, Q, width, p + 1) : Columns{1, 0};
    const Vec pv = Vec::splat(double(p));
    const Mask row_in = less(pv, last_p + one), row_last = equal(pv, last_p);
    const bool some_last = double(p) >= first_last_p && double(p) <= last_last_p;  // (row_last picks the lanes)
    for (int64_t q = cols.hi; q >= cols.lo; --q) {
      Vec e = zero;
      if (q >= next.lo && q <= next.hi)
        e = e + Vec::load(below + q * kLanes) * Vec::load(tape_below + (2 * q + 1) * kLanes);
      if (q + 1 >= next.lo && q + 1 <= next.hi)
        e = e + Vec::load(below + (q + 1) * kLanes) * Vec::load(tape_below + 2 * (q + 1) * kLanes);
      if (q + 1 <= cols.hi) {
        const Vec from_left =
            one - Vec::load(tape_here + 2 * (q + 1) * kLanes) - Vec::load(tape_here + (2 * (q + 1) + 1) * kLanes);
        e = e + Vec::load(here + (q + 1) * kLanes) * vmax(from_left, zero);
      }
      if (some_last) e = select(row_last, e + Vec::load(seed + q * kLanes), e);
      e = select(row_in & less(Vec::splat(double(q)), last_q + one), e, zero);
      e.store(here + q * kLanes);
      if (is_cost_cell(pb, p + top, q)) e.store(out + (cost_index(pb, p + top) * m + cost_index(pb, q)) * kLanes);
    }
    std::swap(below, here);
  }
}

// Through the smoothing: dC[k, l] (into out) collects G[i, j] times d D[i, j] / d C[k, l].
template <typename Scalar>
const double* smooth_gradient(const Problem& pb, const Scalar* cb, const double* gb, int64_t n, int64_t m,
                              double* out) {
  std::fill(out, out + n * m * kLanes, 0.0);
  auto add = [&](int64_t i, int64_t j, const Vec& v) {
    double* at = out + (i * m + j) * kLanes;
    (Vec::load(at) + v).store(at);
  };
  with_hard(pb.smoothing == 0, [&](auto hard) {
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) {
        const Vec gij = Vec::load(gb + (i * m + j) * kLanes);
        Vec w[3];
        smooth_cell<decltype(hard)::value>(pb, cb, m, i, j, w);
        add(i, j, gij);
        if (j > 0) add(i, j - 1, gij * w[0]);
        if (i > 0) add(i - 1, j, gij * w[1]);
        if (i > 0 && j > 0) add(i - 1, j - 1, gij * w[2]);
      }
  });
  return out;
}

// The lanes' gradients from dc ([cell][lane]) into their pairs' regions of `grad`,
// padded_n x padded_m each, zero outside each lane's pair.
template <typename Scalar, typename Src>
void write_back(const Problem& pb, Scalar* grad, const LockstepLanes& lanes, const Src* dc) {
  const int64_t n = lanes.n, m = lanes.m;
  for (int64_t i = 0; i < pb.padded_n; ++i) {
    if (pb.stride_j == 1) {
      Scalar* rows[kLanes];
      int64_t inside[kLanes];
      for (int l = 0; l < lanes.count; ++l) {
        inside[l] = lanes.inside(l, i);
        rows[l] = grad + lanes.offset[l] + i * pb.stride_i;
      }
      scatter_row(rows, dc, inside, lanes.count, n, m, pb.padded_m, i);
      continue;
    }
    for (int l = 0; l < lanes.count; ++l) {
      Scalar* row = grad + lanes.offset[l] + i * pb.stride_i;
      const int64_t inside = lanes.inside(l, i);
      for (int64_t j = 0; j < pb.padded_m; ++j)
        row[j * pb.stride_j] = j < inside ? Scalar(dc[(i * m + j) * kLanes + l]) : Scalar(0);
    }
  }
}

// One group of up to kLanes pairs (members[0..count)).
template <typename Scalar>
void lockstep_group(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, const int64_t* members,
                    int count, LockstepWorkspace<Scalar>& ws) {
  const LockstepLanes lanes(pb, members, count);
  const int64_t n = lanes.n, m = lanes.m;
  Scalar* cb = ws.cost.data();
  gather_costs(pb, cost, lanes, cb);
  const double* sb = pb.smooth ? smooth_costs(pb, cb, n, m, ws.smooth.data()) : nullptr;
  Scalar* tape = grad ? ws.tape.data() : nullptr;
  double* seed = grad ? ws.seed.data() : nullptr;
  with_hard(pb.gamma == 0, [&](auto hard) {
    lockstep_forward<decltype(hard)::value>(pb, lanes, cb, sb, ws.rows.data(), tape, seed, value);
  });
  if (!grad) return;
  if (pb.smooth) {
    lockstep_backward(pb, lanes, tape, seed, ws.rows.data(), ws.g.data());
    write_back(pb, grad, lanes, smooth_gradient(pb, cb, ws.g.data(), n, m, ws.dc.data()));
  } else {
    lockstep_backward(pb, lanes, tape, seed, ws.rows.data(), ws.gs.data());
    write_back(pb, grad, lanes, static_cast<const Scalar*>(ws.gs.data()));
  }
}

#if !defined(__clang__)
#pragma GCC pop_options
#endif

// Pairs sorted by shape, cut into groups of kLanes (banded: one shape per group).
std::vector<int64_t> lockstep_groups(const Problem& pb, std::vector<int64_t>& order) {
  order.resize(pb.n_pairs);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return pb.pair_n[a] != pb.pair_n[b] ? pb.pair_n[a] < pb.pair_n[b] : pb.pair_m[a] < pb.pair_m[b];
  });
  std::vector<int64_t> starts;
  for (int64_t k = 0; k < pb.n_pairs; ++k) {
    const bool new_shape =
        k > 0 && (pb.pair_n[order[k]] != pb.pair_n[order[k - 1]] || pb.pair_m[order[k]] != pb.pair_m[order[k - 1]]);
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
  threads = useful_threads(threads, groups);
  std::vector<LockstepWorkspace<Scalar>>& workspaces = cached_workspaces<LockstepWorkspace<Scalar>>(pb, grad, threads);
#pragma omp parallel num_threads(threads)
  {
    LockstepWorkspace<Scalar>& ws = workspaces[team_rank()];
    const FlushSubnormals flush;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < groups; ++k)
      lockstep_group(pb, cost, value, grad, order.data() + starts[k], int(starts[k + 1] - starts[k]), ws);
  }
  release_if_large(workspaces);
}

}  // namespace
}  // namespace s2dtw::cpu::S2DTW_SIMD_NS
