// Hessian-vector products on the CPU (docs/semantics.md, "Second order"): per pair, the forward
// recursion of R carries its tangent dot R in the same sweep and keeps the transition weights
// on a tape; the backward sweep pushes E and dot E from every cell to its predecessors, and each
// cost cell's pair (E, dot E) goes through the smoothing's pullback and curvature into H·Z.
#include "second_order.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "s2dtw_cpu.h"
#include "s2dtw_cpu_simd.h"  // OutOfMemory
#include "thread_team.h"

namespace s2dtw::cpu {

namespace {

using Acc = double;  // as first order: float32 R loses the digits the weights are made of

// Scratch memory of one thread, sized once for the largest pair.
template <typename Scalar>
struct Workspace {
  std::vector<Acc> rows;     // two rows of R, then two rows of E and two of dot E (the last R row seeds them)
  std::vector<Scalar> tape;  // per grid cell: the weights of R (diagonal, above), as first order keeps them
  std::vector<Acc> tangent;  // dot R, indexed like R: (P+1) x (Q+1), row and column 0 the start (zero)
  std::vector<Acc> product;  // the pair's H·Z, padded_n x padded_m, summed in float64

  static size_t rows_of(const Problem& pb) { return 6 * (grid_extent(pb, pb.padded_m) + 1); }
  static size_t tape_of(const Problem& pb) { return 2 * grid_extent(pb, pb.padded_n) * grid_extent(pb, pb.padded_m); }
  static size_t tangent_of(const Problem& pb) {
    return (grid_extent(pb, pb.padded_n) + 1) * (grid_extent(pb, pb.padded_m) + 1);
  }
  static size_t bytes(const Problem& pb) {
    return (rows_of(pb) + tangent_of(pb) + pb.padded_n * pb.padded_m) * sizeof(Acc) + tape_of(pb) * sizeof(Scalar);
  }
  explicit Workspace(const Problem& pb)
      : rows(rows_of(pb)), tape(tape_of(pb)), tangent(tangent_of(pb)), product(pb.padded_n * pb.padded_m) {}
};

// One grid cell: W, dot W, and on a cost cell (i, j) the smoothing's weights on its neighbours.
struct Cell {
  bool cost = false;
  int64_t i = 0, j = 0;
  Acc value = 0, tangent = 0;  // W and dot W
  Acc w[3] = {0, 0, 0};        // (left, up, diagonal), zero without smoothing
};

// One pair's views and geometry: the rows [top, top + P) of the grid are the ones a path walks
// (an open begin / end on the weak grid drops W's null row 0 / 2n: semantics V4).
template <typename Scalar>
struct Pair {
  const Problem& pb;
  CostView<Acc, Scalar> cost, dir;
  int64_t top, P, Q, width;

  Acc z(int64_t i, int64_t j) const { return i >= 0 && j >= 0 ? dir(i, j) : Acc(0); }

  // Cell (top + p, q): dot D[i, j] = Z[i, j] + sum_l w_l Z[n_l], dot W = 0 on null cells.
  Cell cell(int64_t p, int64_t q) const {
    Cell c;
    p += top;
    if (!is_cost_cell(pb, p, q)) {
      c.value = Acc(pb.threshold);
      return c;
    }
    c.cost = true;
    c.i = cost_index(pb, p);
    c.j = cost_index(pb, q);
    c.value = smoothed_cost(pb, cost, c.i, c.j, c.w);
    if (!pb.smooth) c.w[0] = c.w[1] = c.w[2] = 0;
    c.tangent = z(c.i, c.j) + c.w[0] * z(c.i, c.j - 1) + c.w[1] * z(c.i - 1, c.j) + c.w[2] * z(c.i - 1, c.j - 1);
    return c;
  }
};

struct Weights {
  Acc diag, up, left;
};

template <typename Scalar>
Weights tape_weights(const Scalar* tape) {
  const Acc diag = Acc(tape[0]), up = Acc(tape[1]);
  return {diag, up, std::max(Acc(1) - diag - up, Acc(0))};
}

// Forward: R (two rows) and dot R (whole table) over the walked grid, the tape of weights. Returns
// the last row of R (R[P, 1..Q] at index 1..Q).
template <typename Scalar>
const Acc* forward(const Pair<Scalar>& pr, Workspace<Scalar>& ws) {
  const Problem& pb = pr.pb;
  const int64_t Q = pr.Q, stride = Q + 1;
  Acc* above = ws.rows.data();
  Acc* here = above + stride;
  Acc* tangent = ws.tangent.data();
  std::fill(above, above + 2 * stride, infinity<Acc>());
  std::fill(tangent, tangent + (pr.P + 1) * stride, Acc(0));
  for (int64_t q = 0; q <= Q; ++q) above[q] = start_row<Acc>(pb, q);  // R's row 0: the start(s)
  for (int64_t p = 0; p < pr.P; ++p) {
    const Columns cols = band_columns(pr.P, Q, pr.width, p);
    here[cols.lo] = infinity<Acc>();
    Scalar* tape = ws.tape.data() + 2 * p * Q;
    const Acc* t_above = tangent + p * stride;
    Acc* t_here = tangent + (p + 1) * stride;
    for (int64_t q = cols.lo; q <= cols.hi; ++q) {
      Acc w[3];
      // R's row 0 enters the first grid row diagonally only (its "up" is +inf, semantics V4)
      const Acc soft = softmin3(above[q], p == 0 ? infinity<Acc>() : above[q + 1], here[q], Acc(pb.gamma),
                                Acc(1) / Acc(pb.gamma), w);
      const Cell c = pr.cell(p, q);
      here[q + 1] = c.value + soft;
      tape[2 * q] = Scalar(w[0]);
      tape[2 * q + 1] = Scalar(w[1]);
      const Weights pi = tape_weights(tape + 2 * q);  // the rounded weights the backward reads
      t_here[q + 1] = soft == infinity<Acc>()
                          ? Acc(0)
                          : c.tangent + pi.diag * t_above[q] + pi.up * t_above[q + 1] + pi.left * t_here[q];
    }
    std::swap(above, here);
  }
  return above;
}

// E and dot E of the last row: E holds end_value's weights (a closed end: E[P, Q] = 1; an open
// end: its softmin's), dot E their tangents. False when no path reaches the end.
bool seed_end(const Problem& pb, const Acc* last, const Acc* t_last, int64_t Q, Acc* e, Acc* de) {
  std::fill(e, e + Q, Acc(0));
  std::fill(de, de + Q, Acc(0));
  if (end_value(pb, last + 1, Q, 1, e) == infinity<Acc>()) return false;
  if (!pb.open_end) return true;
  Acc mean = 0;
  for (int64_t q = 0; q < Q; ++q) mean += e[q] * t_last[q + 1];
  for (int64_t q = 0; q < Q; ++q) de[q] = -e[q] / pb.gamma * (t_last[q + 1] - mean);
  return true;
}

// A cost cell's (G, dot G) into H·Z: dot G, plus through the smoothing (left, up, diagonal)
// dot G w_l + G dot w_l at neighbour l, dot w_l = -(w_l / s)(Z[n_l] - (dot D - Z)).
template <typename Scalar>
void add_product(const Pair<Scalar>& pr, const Cell& c, Acc e, Acc de, Acc* product) {
  const int64_t m = pr.pb.padded_m;
  product[c.i * m + c.j] += de;
  if (!pr.pb.smooth) return;
  const Acc mean = c.tangent - pr.z(c.i, c.j), s = pr.pb.smoothing;
  const int64_t ni[3] = {c.i, c.i - 1, c.i - 1}, nj[3] = {c.j - 1, c.j, c.j - 1};
  for (int l = 0; l < 3; ++l) {
    if (ni[l] < 0 || nj[l] < 0) continue;
    const Acc w_dot = -c.w[l] / s * (pr.z(ni[l], nj[l]) - mean);
    product[ni[l] * m + nj[l]] += de * c.w[l] + e * w_dot;
  }
}

// Backward: each cell t, once its successors have pushed, pushes to its predecessors a_k
// E[a_k] += pi_k E[t] and dot E[a_k] += dot pi_k E[t] + pi_k dot E[t], with
// dot pi_k = -(pi_k / gamma)(dot R[a_k] - mean(t)), mean(t) = dot R[t] - dot W[t].
template <typename Scalar>
bool backward(const Pair<Scalar>& pr, const Acc* last, Workspace<Scalar>& ws) {
  const int64_t Q = pr.Q, stride = Q + 1;
  Acc* e_here = ws.rows.data() + 2 * stride;
  Acc* e_above = e_here + stride;
  Acc* d_here = e_above + stride;
  Acc* d_above = d_here + stride;
  const Acc* tangent = ws.tangent.data();
  const Acc inv_gamma = Acc(1) / pr.pb.gamma;
  Acc* product = ws.product.data();
  std::fill(product, product + pr.pb.padded_n * pr.pb.padded_m, Acc(0));
  if (!seed_end(pr.pb, last, tangent + pr.P * stride, Q, e_here, d_here)) return false;
  for (int64_t p = pr.P - 1; p >= 0; --p) {
    std::fill(e_above, e_above + Q, Acc(0));
    std::fill(d_above, d_above + Q, Acc(0));
    const Columns cols = band_columns(pr.P, Q, pr.width, p);
    const Acc* t_above = tangent + p * stride;  // dot R of grid row p-1, at index q + 1
    const Acc* t_here = t_above + stride;
    for (int64_t q = cols.hi; q >= cols.lo; --q) {
      const Acc e = e_here[q], de = d_here[q];
      if (e == 0 && de == 0) continue;
      const Cell c = pr.cell(p, q);
      if (c.cost) add_product(pr, c, e, de, product);
      const Weights pi = tape_weights(ws.tape.data() + 2 * (p * Q + q));
      const Acc mean = t_here[q + 1] - c.tangent;
      auto push = [&](Acc weight, Acc pred_tangent, Acc& to_e, Acc& to_de) {
        to_e += weight * e;
        to_de += -weight * inv_gamma * (pred_tangent - mean) * e + weight * de;
      };
      if (q > 0) push(pi.left, t_here[q], e_here[q - 1], d_here[q - 1]);
      if (p > 0) {  // grid row 0's predecessors are the start row: nothing to push to
        if (q > 0) push(pi.diag, t_above[q], e_above[q - 1], d_above[q - 1]);
        push(pi.up, t_above[q + 1], e_above[q], d_above[q]);
      }
    }
    std::swap(e_here, e_above);
    std::swap(d_here, d_above);
  }
  return true;
}

// H·Z of pair b into its padded region of `out`; false when no monotone path reaches its end.
template <typename Scalar>
bool hvp_pair(const Problem& pb, int64_t b, const Scalar* cost, const Scalar* direction, Scalar* out,
              Workspace<Scalar>& ws) {
  const int64_t offset = pair_offset(pb, b), n = pb.pair_n[b], m = pb.pair_m[b];
  const int64_t top = first_walked_row(pb), P = walked_rows(pb, n), Q = grid_extent(pb, m);
  const Pair<Scalar> pr{pb,
                        {cost + offset, pb.stride_i, pb.stride_j},
                        {direction + offset, pb.stride_i, pb.stride_j},
                        top,
                        P,
                        Q,
                        band_width(pb, P, Q)};
  const bool reached = backward(pr, forward(pr, ws), ws);
  for (int64_t i = 0; i < pb.padded_n; ++i)
    for (int64_t j = 0; j < pb.padded_m; ++j)
      out[offset + i * pb.stride_i + j * pb.stride_j] =
          i < n && j < m ? Scalar(ws.product[i * pb.padded_m + j]) : Scalar(0);
  return reached;
}

void check_second_order(const Problem& pb) {
  if (!(pb.gamma > 0) || (pb.smooth && !(pb.smoothing > 0)))
    throw std::invalid_argument(
        "s2dtw: second order needs gamma > 0 and smoothing None or > 0 (the hard minima are piecewise linear: "
        "their Hessian is zero or undefined), got gamma " +
        std::to_string(pb.gamma) + (pb.smooth ? " and smoothing " + std::to_string(pb.smoothing) : ""));
}

}  // namespace

template <typename Scalar>
size_t hvp_workspace_bytes(const Problem& pb, int num_threads) {
  return size_t(useful_threads(in_forked_child() ? 1 : num_threads, pb.n_pairs)) * Workspace<Scalar>::bytes(pb);
}

template <typename Scalar>
void hvp(const Problem& pb, const Scalar* cost, const Scalar* direction, Scalar* out, int num_threads) {
  check_second_order(pb);
  check_pair_lengths(pb);
  const int threads = useful_threads(in_forked_child() ? 1 : num_threads, pb.n_pairs);
  // Allocated here, outside the parallel region: running out of memory raises in the caller.
  std::vector<Workspace<Scalar>> workspaces;
  workspaces.reserve(threads);
  try {
    for (int t = 0; t < threads; ++t) workspaces.emplace_back(pb);
  } catch (const std::bad_alloc&) {
    throw OutOfMemory(hvp_workspace_bytes<Scalar>(pb, num_threads));
  }
  std::atomic<int64_t> unreached{-1};  // an exception must not leave an OpenMP region
#pragma omp parallel num_threads(threads)
  {
    Workspace<Scalar>& ws = workspaces[team_rank()];
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < pb.n_pairs; ++b)
      if (!hvp_pair(pb, b, cost, direction, out, ws)) unreached = b;
  }
  if (unreached >= 0)
    throw std::invalid_argument("s2dtw: second order: no monotone path reaches the last cell of pair " +
                                std::to_string(int64_t(unreached)) + " inside the band");
}

template void hvp<float>(const Problem&, const float*, const float*, float*, int);
template void hvp<double>(const Problem&, const double*, const double*, double*, int);
template size_t hvp_workspace_bytes<float>(const Problem&, int);
template size_t hvp_workspace_bytes<double>(const Problem&, int);

}  // namespace s2dtw::cpu
