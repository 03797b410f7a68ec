// CUDA kernels: same semantics and Problem as the CPU ones; pair_n / pair_m
// point to device memory. Launches go to `stream`; nothing synchronises the host.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "../s2dtw_cell.h"

// A kernel launch; the emulation's cuda_runtime.h defines it first (tests/cuda_emulation).
#ifndef S2DTW_LAUNCH
#define S2DTW_LAUNCH(kernel, blocks, threads, smem_bytes, stream, ...) \
  kernel<<<blocks, threads, smem_bytes, stream>>>(__VA_ARGS__)
#endif

namespace s2dtw::cuda {

// Scratch bytes run() needs; the caller allocates them (torch's caching allocator).
template <typename Scalar>
size_t workspace_bytes(const Problem& pb, bool with_grad);

// Writes value[b] for every pair and, when `grad` is not null, d value[b] / d cost
// into `grad` (same layout as `cost`; cells outside a pair's lengths are zeroed).
template <typename Scalar>
void run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, void* workspace, size_t workspace_size,
         cudaStream_t stream);

// Second order (second_order.cu): scratch bytes of hvp(), and H·Z, each pair's Hessian-vector product
// of its value w.r.t. its cost in the direction `direction` (cost's layout), into `out` (zero outside
// each pair's lengths). Needs gamma > 0 and, with smoothing, smoothing > 0 (std::invalid_argument).
template <typename Scalar>
size_t hvp_workspace_bytes(const Problem& pb);
template <typename Scalar>
void hvp(const Problem& pb, const Scalar* cost, const Scalar* direction, Scalar* out, void* workspace,
         size_t workspace_size, cudaStream_t stream);

}  // namespace s2dtw::cuda
