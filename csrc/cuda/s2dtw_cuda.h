// CUDA kernels: same semantics and Problem as the CPU ones; pair_n / pair_m
// point to device memory. Launches go to `stream`; nothing synchronises the host.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "../s2dtw_cell.h"

namespace s2dtw::cuda {

// Scratch bytes run() needs; the caller allocates them (torch's caching allocator).
template <typename Scalar>
size_t workspace_bytes(const Problem& pb, bool with_grad);

// Writes value[b] for every pair and, when `grad` is not null, d value[b] / d cost
// into `grad` (same layout as `cost`; cells outside a pair's lengths are zeroed).
template <typename Scalar>
void run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, void* workspace, size_t workspace_size,
         cudaStream_t stream);

}  // namespace s2dtw::cuda
