// CUDA kernels: same semantics and Problem as the CPU ones; pair_n / pair_m
// point to device memory. Launches go to `stream`; nothing synchronises the host.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <tuple>
#include <type_traits>

#include "../s2dtw_cell.h"

// A kernel launch; the emulation's cuda_runtime.h defines it first (tests/cuda_emulation).
#ifndef S2DTW_LAUNCH
#define S2DTW_LAUNCH(kernel, blocks, threads, smem_bytes, stream, ...) \
  kernel<<<blocks, threads, smem_bytes, stream>>>(__VA_ARGS__)
#endif

// A launch whose blocks must all be resident at once (they wait on each other's progress flags): a cooperative
// launch, which fails (cudaErrorCooperativeLaunchTooLarge) instead of leaving a block waiting for an SM.
#ifndef S2DTW_LAUNCH_RESIDENT
#define S2DTW_LAUNCH_RESIDENT(kernel, blocks, threads, smem_bytes, stream, ...) \
  s2dtw::cuda::launch_cooperative(kernel, blocks, threads, smem_bytes, stream, __VA_ARGS__)
namespace s2dtw::cuda {
template <typename... Params, typename... Args>
cudaError_t launch_cooperative(void (*kernel)(Params...), unsigned blocks, unsigned threads, size_t smem,
                               cudaStream_t stream, const Args&... args) {
  std::tuple<std::remove_cv_t<Params>...> held{args...};  // the kernel's own parameter types, addressable
  return std::apply(
      [&](auto&... held_args) {
        void* pointers[] = {static_cast<void*>(&held_args)...};
        return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), dim3(blocks), dim3(threads), pointers,
                                           smem, stream);
      },
      held);
}
}  // namespace s2dtw::cuda
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
