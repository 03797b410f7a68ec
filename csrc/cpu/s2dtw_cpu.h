// CPU kernels: OpenMP over pairs; vectorised (AVX2 / AVX-512, chosen at run time)
// or scalar.
#pragma once

#include "../s2dtw_cell.h"

namespace s2dtw::cpu {

enum class SimdLevel { scalar = 0, avx2 = 1, avx512 = 2 };

// The best instruction set this CPU has (a call uses at most Problem::max_simd).
SimdLevel simd_level();
const char* simd_name(SimdLevel level);

// Writes value[b] for every pair and, when `grad` is not null, d value[b] / d cost
// into `grad` (same layout as `cost`; cells outside a pair's lengths are zeroed).
// The instruction set is the lower of Problem::max_simd and simd_level().
template <typename Scalar>
void run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads);

// exp and log of the vector math at `level` on n values (n a multiple of 32; float:
// the float32 lanes of float32 inputs); false when that level is not available.
template <typename T>
bool check_math(SimdLevel level, const T* x, T* exp_x, T* log_x, int64_t n);

bool has_openmp();

// Shared with the second-order kernel (second_order.cpp): the check of every pair's lengths against
// its padded region (throws std::invalid_argument), and whether this process is a forked child
// (libgomp's pool does not survive fork(): run on the calling thread only).
void check_pair_lengths(const Problem& pb);
bool in_forked_child();

// The operations of a call around its kernel, on the kernels' threads (the same CoreShare decision):
// whether all n values at x are finite (the input check), and out = grad * factor[region] (the backward's
// scaling by d loss / d value) over `regions` regions of padded_n x (pairs_per_x x padded_m), region
// r * pairs_per_x + s holding rows i of columns s * padded_m .. (s + 1) * padded_m - 1 of row block r;
// factor read with a stride (an expanded upstream gradient has stride 0).
template <typename Scalar>
bool all_finite(const Scalar* x, int64_t n, int num_threads);
template <typename Scalar>
void scale_regions(const Scalar* grad, const Scalar* factor, int64_t factor_stride, Scalar* out, int64_t regions,
                   int64_t padded_n, int64_t pairs_per_x, int64_t padded_m, int num_threads);

// Bytes the kernels keep cached between calls, in all (at most 256 MiB once calls return).
int64_t cached_workspace_bytes();

}  // namespace s2dtw::cpu
