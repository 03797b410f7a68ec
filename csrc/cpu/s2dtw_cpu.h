// CPU kernels: OpenMP over pairs, one pair per thread at a time.
#pragma once

#include "../s2dtw_cell.h"

namespace s2dtw::cpu {

// Writes value[b] for every pair and, when `grad` is not null, d value[b] / d cost
// into `grad` (same layout as `cost`; cells outside a pair's lengths are zeroed).
template <typename Scalar>
void run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads);

bool has_openmp();

}  // namespace s2dtw::cpu
