// The body of s2dtw_cpu_avx2.cpp and s2dtw_cpu_avx512.cpp: the vectorised CPU kernels,
// compiled once per instruction set. The including file defines S2DTW_SIMD_NS (the
// namespace) and S2DTW_NATIVE_DOUBLES (doubles in one register, see simd_math.h).
// Everything after the target pragma is compiled for that instruction set; the library
// headers come before it, so that no inline function or template shared with the
// scalar code is compiled with it. The rooms, in the order they build on each other:
//
//   simd_math.h            Vec (kLanes float64 lanes), exp, log, softmin3
//   simd_memory.h          workspace cache, huge-page allocator, subnormal flush
//   simd_tiles.h           gathers, register tiles and lane transposes
//   simd_lockstep.h        the lockstep regime (many pairs, one per lane)
//   simd_diagonal_cells.h  the diagonal regime's geometry, workspace and data moves
//   simd_diagonal.h        the diagonal regime (few large pairs, by anti-diagonals)
//
// Both regimes keep the recursion in float64 for float32 inputs (as the scalar kernel)
// and the transition weights on a tape in the input dtype.
#ifndef S2DTW_SIMD_NS
#error "define S2DTW_SIMD_NS and S2DTW_NATIVE_DOUBLES before including simd_per_isa.h"
#endif

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <numeric>
#include <type_traits>
#include <vector>

#include <immintrin.h>
#include <sys/mman.h>

#include "s2dtw_cpu_simd.h"
#include "thread_team.h"

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

// clang-format off: the rooms' order matters
#include "simd_math.h"
#include "simd_memory.h"
#include "simd_tiles.h"
#include "simd_lockstep.h"
#include "simd_diagonal_cells.h"
#include "simd_diagonal.h"
// clang-format on

namespace s2dtw::cpu::S2DTW_SIMD_NS {

// The regime: lockstep for small grids or many pairs, else diagonal.
template <typename Scalar>
void run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads) {
  const int64_t P = grid_extent(pb, pb.padded_n), Q = grid_extent(pb, pb.padded_m);
  num_threads = useful_threads(num_threads, pb.n_pairs * P);
  const bool small = P * Q <= 4096;
  const bool many = pb.n_pairs >= int64_t(num_threads) * kLanes / 2 && P * Q <= 65536;
  if (small || many) run_lockstep(pb, cost, value, grad, num_threads);
  else run_diagonal(pb, cost, value, grad, num_threads);
}

void check_math(const double* x, double* exp_x, double* log_x, int64_t n) {
  for (int64_t k = 0; k + kLanes <= n; k += kLanes) {
    const Vec v = Vec::load(x + k);
    vexp(v).store(exp_x + k);
    vlog(v).store(log_x + k);
  }
}
void check_math(const float* x, float* exp_x, float* log_x, int64_t n) {
  for (int64_t k = 0; k + kWide <= n; k += kWide) {
    WideF v;
    std::memcpy(&v, x + k, sizeof(v));
    const WideF e = exp_f32(v), l = log_f32(v);
    std::memcpy(exp_x + k, &e, sizeof(e));
    std::memcpy(log_x + k, &l, sizeof(l));
  }
}

void release_workspaces() {
  workspace_cache<LockstepWorkspace<float>>().release();
  workspace_cache<LockstepWorkspace<double>>().release();
  workspace_cache<DiagonalWorkspace<float>>().release();
  workspace_cache<DiagonalWorkspace<double>>().release();
}

template void run<float>(const Problem&, const float*, float*, float*, int);
template void run<double>(const Problem&, const double*, double*, double*, int);

}  // namespace s2dtw::cpu::S2DTW_SIMD_NS

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
