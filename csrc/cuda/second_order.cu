// s2dtw's CUDA module, second translation unit: hvp(), the Hessian-vector products of every
// pair's value w.r.t. its cost (docs/semantics.md, "Second order"); the kernel is second_order.cuh.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "s2dtw_cuda.h"
#include "second_order.cuh"

namespace s2dtw::cuda {
namespace {

constexpr size_t kHvpAlign = 256;
constexpr int64_t kHvpBlockRegimePairs = 132 * 32;

int64_t checked(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw std::runtime_error("s2dtw (cuda): problem too large (size overflow)");
  return r;
}

// The per-pair scratch of a padded pair: four float64 (P + 1) x (Q + 1) tables (second_order.cuh).
HvpLayout hvp_layout(const Problem& pb) {
  if (pb.n_pairs < 0 || pb.padded_n < 1 || pb.padded_m < 1)
    throw std::invalid_argument("s2dtw (cuda): invalid problem (n_pairs < 0 or empty padded pairs)");
  const int64_t P = grid_extent(pb, pb.padded_n), Q = grid_extent(pb, pb.padded_m);
  if (P > INT_MAX / 2 || Q > INT_MAX / 2)
    throw std::runtime_error("s2dtw (cuda): sequences longer than 2^29 are not supported");
  HvpLayout L;
  L.table = checked(P + 1, Q + 1);
  L.per_pair = checked(4, L.table);
  return L;
}

size_t hvp_total(const Problem& pb, const HvpLayout& L) {
  return size_t(checked(checked(pb.n_pairs, L.per_pair), sizeof(double))) + kHvpAlign;  // slack to align
}

// One block per pair when there are too few pairs to give every SM a warp of them (132 SMs x 32 lanes on
// an H100 / H200): a guess, not measured. Problem::cuda_regime (1 thread, 2 block) overrides it.
bool block_regime(const Problem& pb) {
  if (pb.cuda_regime) return pb.cuda_regime == 2;
  return pb.n_pairs < kHvpBlockRegimePairs;
}

// Threads of the block regime: the longest anti-diagonal of a padded pair, in whole warps.
int block_threads(const Problem& pb) {
  const int64_t diagonal = std::min(grid_extent(pb, pb.padded_n), grid_extent(pb, pb.padded_m));
  return int(std::min<int64_t>(kHvpMaxBlock, (diagonal + 31) / 32 * 32));
}

}  // namespace

template <typename Scalar>
size_t hvp_workspace_bytes(const Problem& pb) {
  return hvp_total(pb, hvp_layout(pb));
}

template <typename Scalar>
void hvp(const Problem& pb, const Scalar* cost, const Scalar* direction, Scalar* out, void* workspace,
         size_t workspace_size, cudaStream_t stream) {
  const HvpLayout L = hvp_layout(pb);
  const size_t total = hvp_total(pb, L);
  if (!(pb.gamma > 0) || (pb.smooth && !(pb.smoothing > 0)))
    throw std::invalid_argument(
        "s2dtw (cuda): second order needs gamma > 0 and smoothing > 0 (the hard forms are piecewise linear)");
  if (pb.banded && (pb.open_begin || pb.open_end))
    throw std::invalid_argument("s2dtw (cuda): open_begin / open_end with a band");
  if (pb.n_pairs == 0) return;
  if (!cost || !direction || !out || !pb.pair_n || !pb.pair_m)
    throw std::invalid_argument("s2dtw (cuda): null cost, direction, out, pair_n or pair_m pointer");
  if (workspace_size < total || workspace == nullptr)
    throw std::runtime_error("s2dtw (cuda): workspace too small: got " + std::to_string(workspace_size) +
                             " bytes, need " + std::to_string(total) + " (hvp_workspace_bytes)");
  const uintptr_t raw = reinterpret_cast<uintptr_t>(workspace);
  auto* scratch = reinterpret_cast<double*>((raw + kHvpAlign - 1) / kHvpAlign * kHvpAlign);
  if (pb.n_pairs > INT_MAX) throw std::runtime_error("s2dtw (cuda): more than 2^31 - 1 pairs");
  if (block_regime(pb)) {
    auto kernel = hvp_block_kernel<Scalar>;
    S2DTW_LAUNCH(kernel, unsigned(pb.n_pairs), block_threads(pb), 0, stream, pb, L, cost, direction, out, scratch);
  } else {
    auto kernel = hvp_thread_kernel<Scalar>;
    const int64_t blocks = (pb.n_pairs + kHvpThreads - 1) / kHvpThreads;
    S2DTW_LAUNCH(kernel, unsigned(blocks), kHvpThreads, 0, stream, pb, L, cost, direction, out, scratch);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("s2dtw (cuda): launching hvp_kernel: ") + cudaGetErrorString(err));
}

template size_t hvp_workspace_bytes<float>(const Problem&);
template size_t hvp_workspace_bytes<double>(const Problem&);
template void hvp<float>(const Problem&, const float*, const float*, float*, void*, size_t, cudaStream_t);
template void hvp<double>(const Problem&, const double*, const double*, double*, void*, size_t, cudaStream_t);

}  // namespace s2dtw::cuda
