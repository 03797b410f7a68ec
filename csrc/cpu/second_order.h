// Second order on the CPU: Hessian-vector products of the value with respect to the cost,
// by the second dynamic programme of docs/semantics.md ("Second order"). Scalar code, one
// pair per thread; the recursion runs in float64 for both dtypes, as first order does.
#pragma once

#include <cstddef>

#include "../s2dtw_cell.h"

namespace s2dtw::cpu {

// Writes H·Z into `out` (same layout as `cost`): for each pair, the directional derivative
// along `direction` (Z, same layout) of d value / d cost, over the pair's padded region
// (zero outside its lengths). Recomputes the forward pass and its tape itself. Throws
// std::invalid_argument for gamma == 0 or smoothing == 0 (the hard forms: piecewise linear,
// Hessian zero or undefined), bad lengths, or a pair no monotone path reaches the end of.
template <typename Scalar>
void hvp(const Problem& pb, const Scalar* cost, const Scalar* direction, Scalar* out, int num_threads);

// The bytes of workspace hvp allocates for `pb` on `num_threads` threads (its own accounting).
template <typename Scalar>
size_t hvp_workspace_bytes(const Problem& pb, int num_threads);

}  // namespace s2dtw::cpu
