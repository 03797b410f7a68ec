#include "s2dtw_cpu.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "s2dtw_cpu_simd.h"
#include "thread_team.h"

#include <pthread.h>

namespace s2dtw::cpu {

std::atomic<int64_t> kept_workspace_bytes{0};

namespace {

// The recursion always runs in float64: float32 R values grow with the path
// length and lose the digits that the transition weights (and so the gradient)
// are made of.
using Acc = double;

// Scratch memory of one thread, sized once for the largest pair.
template <typename Scalar>
struct Workspace {
  std::vector<Acc> rows;     // three rows: R (and +inf) in the forward pass, E in the backward
  std::vector<Acc> end;      // the last walked row's d value / d R (end_value's weights)
  std::vector<Scalar> tape;  // per grid cell: d softmin / d (R diagonal, R above)

  Workspace(const Problem& pb, bool with_grad)
      : rows(3 * (grid_extent(pb, pb.padded_m) + 1)),
        end(grid_extent(pb, pb.padded_m)),
        tape(with_grad ? 2 * grid_extent(pb, pb.padded_n) * grid_extent(pb, pb.padded_m) : 0) {}
  static size_t bytes(const Problem& pb, bool with_grad) {
    return 4 * (grid_extent(pb, pb.padded_m) + 1) * sizeof(Acc) +
           (with_grad ? 2 * grid_extent(pb, pb.padded_n) * grid_extent(pb, pb.padded_m) * sizeof(Scalar) : 0);
  }
};

// Backward pass of one pair: E[p,q] = d value / d W[p,q], from the last walked row
// (seeded with end_value's weights) up, using the transition weights the forward pass
// left on the tape. Each cost cell's E is then pushed through the smoothing into the
// gradient. p counts the walked rows: grid row p + top.
template <typename Scalar>
void backward_pair(const Problem& pb, const CostView<Acc, Scalar>& cost, Scalar* grad, int64_t P, int64_t Q,
                   Workspace<Scalar>& ws) {
  Acc* below = ws.rows.data();
  Acc* here = below + (Q + 1);
  const Scalar* tape = ws.tape.data();
  auto grad_at = [&](int64_t i, int64_t j) -> Scalar& { return grad[i * pb.stride_i + j * pb.stride_j]; };

  const int64_t width = band_width(pb, P, Q), top = first_walked_row(pb);
  for (int64_t p = P - 1; p >= 0; --p) {
    const Scalar* tape_here = tape + 2 * p * Q;
    const Scalar* tape_below = tape_here + 2 * Q;
    const Columns cols = band_columns(P, Q, width, p);
    const Columns next = p + 1 < P ? band_columns(P, Q, width, p + 1) : Columns{1, 0};
    for (int64_t q = cols.hi; q >= cols.lo; --q) {
      Acc e = p == P - 1 ? ws.end[q] : Acc(0);
      // The successors inside the band, each times the weight with which it came from (p, q).
      if (q >= next.lo && q <= next.hi) e += below[q] * Acc(tape_below[2 * q + 1]);                // from above
      if (q + 1 >= next.lo && q + 1 <= next.hi) e += below[q + 1] * Acc(tape_below[2 * (q + 1)]);  // diagonal
      if (q + 1 <= cols.hi) {
        const Acc from_left = Acc(1) - Acc(tape_here[2 * (q + 1)]) - Acc(tape_here[2 * (q + 1) + 1]);
        e += here[q + 1] * std::max(from_left, Acc(0));
      }
      here[q] = e;
      if (e == 0 || !is_cost_cell(pb, p + top, q)) continue;
      const int64_t i = cost_index(pb, p + top), j = cost_index(pb, q);
      grad_at(i, j) += Scalar(e);
      if (pb.smooth) {
        Acc w[3];
        smoothed_cost(pb, cost, i, j, w);
        if (j > 0) grad_at(i, j - 1) += Scalar(e * w[0]);
        if (i > 0) grad_at(i - 1, j) += Scalar(e * w[1]);
        if (i > 0 && j > 0) grad_at(i - 1, j - 1) += Scalar(e * w[2]);
      }
    }
    std::swap(below, here);
  }
}

template <typename Scalar>
void align_pair(const Problem& pb, int64_t b, const Scalar* cost, Scalar* value, Scalar* grad, Workspace<Scalar>& ws) {
  const int64_t offset = pair_offset(pb, b);
  const CostView<Acc, Scalar> view{cost + offset, pb.stride_i, pb.stride_j};
  const int64_t P = walked_rows(pb, pb.pair_n[b]), Q = grid_extent(pb, pb.pair_m[b]), top = first_walked_row(pb);
  const Acc gamma = pb.gamma, inv_gamma = Acc(1) / pb.gamma;

  // R[p+1][q+1] of walked cell (p, q) lives in a row at index q + 1; the first row
  // starts from start_row, which it enters only diagonally (its "up" is the third row,
  // +inf). Outside the band R is +inf: the rows start so, and since the band's columns
  // only move right, a row needs only the cell left of its first column reset.
  Acc* above = ws.rows.data();
  Acc* here = above + (Q + 1);
  const Acc* no_up = here + (Q + 1);
  std::fill(above, above + 3 * (Q + 1), infinity<Acc>());
  for (int64_t q = 0; q < Q; ++q) above[q] = start_row<Acc>(pb, q);
  const int64_t width = band_width(pb, P, Q);
  for (int64_t p = 0; p < P; ++p) {
    const Columns cols = band_columns(P, Q, width, p);
    here[cols.lo] = infinity<Acc>();
    const Acc* up = p == 0 ? no_up : above;
    Scalar* tape_row = grad ? ws.tape.data() + 2 * p * Q : nullptr;
    for (int64_t q = cols.lo; q <= cols.hi; ++q) {
      Acc w[3];
      const Acc soft = softmin3(above[q], up[q + 1], here[q], gamma, inv_gamma, tape_row ? w : nullptr);
      here[q + 1] = grid_cell(pb, view, p + top, q) + soft;
      if (tape_row) {
        tape_row[2 * q] = Scalar(w[0]);
        tape_row[2 * q + 1] = Scalar(w[1]);
      }
    }
    std::swap(above, here);
  }
  if (grad) std::fill(ws.end.begin(), ws.end.end(), Acc(0));
  value[b] = Scalar(end_value(pb, above + 1, Q, 1, grad ? ws.end.data() : nullptr));

  if (grad) {
    Scalar* pair_grad = grad + offset;  // padded_n x padded_m, zero outside the pair
    for (int64_t i = 0; i < pb.padded_n; ++i)
      for (int64_t j = 0; j < pb.padded_m; ++j) pair_grad[i * pb.stride_i + j * pb.stride_j] = Scalar(0);
    backward_pair(pb, view, pair_grad, P, Q, ws);
  }
}

// The scalar kernel: portable, one pair per thread.
template <typename Scalar>
void run_scalar(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads) {
  const int threads = useful_threads(num_threads, pb.n_pairs);
  // Allocated here, outside the parallel region, so that running out of memory
  // raises in the caller instead of terminating inside an OpenMP thread.
  std::vector<Workspace<Scalar>> workspaces;
  workspaces.reserve(threads);
  try {
    for (int t = 0; t < threads; ++t) workspaces.emplace_back(pb, grad != nullptr);
  } catch (const std::bad_alloc&) {
    throw OutOfMemory(threads * Workspace<Scalar>::bytes(pb, grad != nullptr));
  }

#pragma omp parallel num_threads(threads)
  {
    Workspace<Scalar>& ws = workspaces[team_rank()];
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < pb.n_pairs; ++b) align_pair(pb, b, cost, value, grad, ws);
  }
}

// The best instruction set this CPU has.
SimdLevel detect_simd() {
  SimdLevel level = SimdLevel::scalar;
#if defined(S2DTW_HAVE_SIMD)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = SimdLevel::avx2;
  if (level == SimdLevel::avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl"))
    level = SimdLevel::avx512;
#endif
  return level;
}

}  // namespace

// The kernels trust every pair to fit its padded_n x padded_m region (they index the
// buffers with the lengths), so they check it here, whoever called: the Python side's
// checks are skipped under torch.compile, and a length read from a wrong layout must
// not turn into a read or write outside the buffers.
void check_pair_lengths(const Problem& pb) {
  for (int64_t b = 0; b < pb.n_pairs; ++b) {
    const int64_t n = pb.pair_n[b], m = pb.pair_m[b];
    if (n < 1 || n > pb.padded_n || m < 1 || m > pb.padded_m)
      throw std::invalid_argument("s2dtw: pair " + std::to_string(b) + " has lengths (" + std::to_string(n) + ", " +
                                  std::to_string(m) + ") outside [1, " + std::to_string(pb.padded_n) + "] x [1, " +
                                  std::to_string(pb.padded_m) + "] (the padded lengths)");
  }
}

namespace {

// libgomp's thread pool does not survive fork(): a child (a DataLoader worker) that
// opens a parallel region of more than one thread hangs. A forked child runs on its
// calling thread only, as torch's own kernels do.
std::atomic<bool> forked_child{false};
[[maybe_unused]] const int fork_handler_registered = pthread_atfork(nullptr, nullptr, [] { forked_child = true; });

}  // namespace

bool in_forked_child() { return forked_child; }

namespace {
CoreShare core_share;
}  // namespace

SimdLevel simd_level() {
  static const SimdLevel cpu_level = detect_simd();
  return cpu_level;
}

const char* simd_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::avx512: return "avx512";
    case SimdLevel::avx2: return "avx2";
    default: return "scalar";
  }
}

namespace {

template <typename Scalar>
void run_kernel(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads) {
  const SimdLevel level = std::min(SimdLevel(std::clamp(pb.max_simd, 0, 2)), simd_level());
#ifdef S2DTW_HAVE_SIMD
  try {
    if (level == SimdLevel::avx512) return avx512::run(pb, cost, value, grad, num_threads);
    if (level == SimdLevel::avx2) return avx2::run(pb, cost, value, grad, num_threads);
  } catch (const std::bad_alloc&) {  // what was grown before the failure must not stay pinned
    avx512::release_workspaces();
    avx2::release_workspaces();
    throw;
  }
#endif
  run_scalar(pb, cost, value, grad, num_threads);
}

}  // namespace

template <typename Scalar>
void run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads) {
  check_pair_lengths(pb);
  // The kernels' band follows the diagonal from the first to the last cell, which an open path need not touch.
  if (pb.banded && (pb.open_begin || pb.open_end))
    throw std::invalid_argument("s2dtw: open_begin / open_end cannot be combined with a band");
  run_kernel(pb, cost, value, grad, forked_child ? 1 : core_share.threads(num_threads));
}

namespace {

// Threads for an elementwise pass over n values: the kernels' decision, and none beyond one per
// kMinPerThread values (torch's own grain size: a smaller pass costs less than waking a thread).
int pass_threads(int requested, int64_t n) {
  constexpr int64_t kMinPerThread = 32768;
  const int allowed = forked_child ? 1 : core_share.threads(requested);
  return useful_threads(allowed, n / kMinPerThread);
}

// The exponent bits of a float32 / float64: all set for inf and NaN only (std::isfinite, branch-free
// on the bits so that the loop vectorises).
template <typename Scalar>
struct ExponentBits;
template <>
struct ExponentBits<float> {
  using Bits = uint32_t;
  static constexpr Bits mask = 0x7f800000u;
};
template <>
struct ExponentBits<double> {
  using Bits = uint64_t;
  static constexpr Bits mask = 0x7ff0000000000000ull;
};

}  // namespace

template <typename Scalar>
bool all_finite(const Scalar* x, int64_t n, int num_threads) {
  using Bits = typename ExponentBits<Scalar>::Bits;
  constexpr Bits mask = ExponentBits<Scalar>::mask;
  int bad = 0;
#pragma omp parallel for num_threads(pass_threads(num_threads, n)) schedule(static) reduction(| : bad)
  for (int64_t k = 0; k < n; ++k) {
    Bits bits;
    std::memcpy(&bits, x + k, sizeof(bits));
    bad |= int((bits & mask) == mask);
  }
  return !bad;
}

template <typename Scalar>
void scale_regions(const Scalar* grad, const Scalar* factor, int64_t factor_stride, Scalar* out, int64_t regions,
                   int64_t padded_n, int64_t pairs_per_x, int64_t padded_m, int num_threads) {
  // Runs of one factor each: a whole region when regions are not side by side, else a region's row.
  const int64_t run = pairs_per_x == 1 ? padded_n * padded_m : padded_m, runs = regions * padded_n * padded_m / run;
#pragma omp parallel for num_threads(pass_threads(num_threads, runs* run)) schedule(static)
  for (int64_t k = 0; k < runs; ++k) {
    const int64_t region = pairs_per_x == 1 ? k : k / (pairs_per_x * padded_n) * pairs_per_x + k % pairs_per_x;
    const Scalar f = factor[region * factor_stride];
    const Scalar* __restrict in = grad + k * run;
    Scalar* __restrict to = out + k * run;
    for (int64_t j = 0; j < run; ++j) to[j] = in[j] * f;
  }
}

int64_t cached_workspace_bytes() { return kept_workspace_bytes; }

template <typename T>
bool check_math(SimdLevel level, const T* x, T* exp_x, T* log_x, int64_t n) {
  level = std::min(level, simd_level());
#ifdef S2DTW_HAVE_SIMD
  if (level == SimdLevel::avx512) return avx512::check_math(x, exp_x, log_x, n), true;
  if (level == SimdLevel::avx2) return avx2::check_math(x, exp_x, log_x, n), true;
#endif
  return false;
}

bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

template bool check_math<float>(SimdLevel, const float*, float*, float*, int64_t);
template bool check_math<double>(SimdLevel, const double*, double*, double*, int64_t);
template void run<float>(const Problem&, const float*, float*, float*, int);
template void run<double>(const Problem&, const double*, double*, double*, int);
template bool all_finite<float>(const float*, int64_t, int);
template bool all_finite<double>(const double*, int64_t, int);
template void scale_regions<float>(const float*, const float*, int64_t, float*, int64_t, int64_t, int64_t, int64_t,
                                   int);
template void scale_regions<double>(const double*, const double*, int64_t, double*, int64_t, int64_t, int64_t, int64_t,
                                    int);

}  // namespace s2dtw::cpu
