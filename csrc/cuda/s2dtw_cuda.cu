// s2dtw's CUDA module: S2DTW / soft-DTW forward and backward for many pairs at once, one fused
// kernel per call. This is its one translation unit: the kernels and the plan are in the
// .cuh files beside it; docs/architecture.md ("CUDA kernels") has the design.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "block_kernel.cuh"
#include "cell_math.cuh"
#include "plan.cuh"
#include "s2dtw_cuda.h"
#include "thread_kernel.cuh"

namespace s2dtw::cuda {
namespace {

// The smallest __launch_bounds__ that fits the strip: more registers per thread. The multi-block regime's strips
// (up to kMaxMultiStrip rows) have one instantiation.
template <typename Scalar, bool kGrad, bool kVariant>
auto block_kernel_for(int T, bool multi) {
  return multi      ? block_kernel<Scalar, kGrad, kVariant, kMaxMultiStrip, true>
         : T <= 256 ? block_kernel<Scalar, kGrad, kVariant, 256, false>
         : T <= 512 ? block_kernel<Scalar, kGrad, kVariant, 512, false>
                    : block_kernel<Scalar, kGrad, kVariant, kMaxStrip, false>;
}

template <typename Kernel>
void allow_shared(Kernel kernel, size_t smem) {
  if (smem > 48 * 1024)
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "cudaFuncSetAttribute(block_kernel)");
}

// The SMs and, per strip height, the blocks of the multi-block kernel an SM holds at once (none where the
// device cannot launch cooperatively: the plan then never picks it, and forcing it raises).
template <typename Scalar, bool kGrad, bool kVariant>
Device device_of() {
  Device dev;
  dev.sms = sm_count();
  int id = 0, cooperative = 0;
  check(cudaGetDevice(&id), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, id), "cudaDeviceGetAttribute");
  for (int i = 0; cooperative && (32 << i) <= kMaxMultiStrip; ++i) {
    const int T = 32 << i;
    const auto kernel = block_kernel_for<Scalar, kGrad, kVariant>(T, true);
    allow_shared(kernel, block_shared_bytes(kGrad, T));
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&dev.per_sm[i], kernel, T, block_shared_bytes(kGrad, T)),
          "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  }
  return dev;
}

template <typename Scalar>
Device device_for(const Problem& pb, bool with_grad) {
  return is_variant(pb) ? (with_grad ? device_of<Scalar, true, true>() : device_of<Scalar, false, true>())
                        : (with_grad ? device_of<Scalar, true, false>() : device_of<Scalar, false, false>());
}

template <typename Scalar, bool kGrad, bool kVariant>
void launch(const Problem& pb, const Consts& k, const Sizes& z, const Scalar* cost, Scalar* value, Scalar* grad,
            Tape2<Scalar>* tape, double* scratch, int* flags, cudaStream_t stream) {
  const Plan& plan = z.plan;
  if (plan.block_regime) {
    if (pb.n_pairs * plan.blocks > INT_MAX) throw std::runtime_error("s2dtw (cuda): more than 2^31 - 1 blocks");
    const int T = plan.strip;
    const size_t smem = block_shared_bytes(kGrad, T);
    auto kernel = block_kernel_for<Scalar, kGrad, kVariant>(T, plan.blocks > 1);
    allow_shared(kernel, smem);
    const int64_t flags_stride = z.flags_bytes ? 2 * ((z.P + T - 1) / T) : 0;
    const unsigned blocks = unsigned(pb.n_pairs * plan.blocks);
    if (plan.blocks == 1) {
      S2DTW_LAUNCH(kernel, blocks, T, smem, stream, pb, k, cost, value, grad, scratch, z.scratch_per_pair, tape,
                   z.tape_per_pair, z.ckpt_offset, z.ring_offset, flags, flags_stride, plan.blocks, plan.recompute);
    } else {  // the flags start at 0; a cooperative launch fails rather than leave a block waiting for a slot
      check(cudaMemsetAsync(flags, 0, z.flags_bytes, stream), "cudaMemsetAsync(progress flags)");
      check(S2DTW_LAUNCH_RESIDENT(kernel, blocks, T, smem, stream, pb, k, cost, value, grad, scratch,
                                  z.scratch_per_pair, tape, z.tape_per_pair, z.ckpt_offset, z.ring_offset, flags,
                                  flags_stride, plan.blocks, plan.recompute),
            "launching block_kernel (cooperative)");
    }
    check(cudaGetLastError(), "launching block_kernel");
  } else {
    const int64_t blocks = (pb.n_pairs + kThreadBlock - 1) / kThreadBlock;
    auto kernel = thread_kernel<Scalar, kGrad, kVariant>;
    S2DTW_LAUNCH(kernel, unsigned(blocks), kThreadBlock, 0, stream, pb, k, cost, value, grad, scratch, tape, int(z.Q));
    check(cudaGetLastError(), "launching thread_kernel");
  }
}

}  // namespace

template <typename Scalar>
size_t workspace_bytes(const Problem& pb, bool with_grad) {
  return sizes<Scalar>(pb, with_grad, device_for<Scalar>(pb, with_grad)).total;
}

template <typename Scalar>
void run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, void* workspace, size_t workspace_size,
         cudaStream_t stream) {
  const bool with_grad = grad != nullptr;
  const Sizes z = sizes<Scalar>(pb, with_grad, device_for<Scalar>(pb, with_grad));
  if (pb.n_pairs == 0) return;
  if (!cost || !value || !pb.pair_n || !pb.pair_m)
    throw std::invalid_argument("s2dtw (cuda): null cost, value, pair_n or pair_m pointer");
  if (!(pb.gamma >= 0) || (pb.smooth && !(pb.smoothing >= 0)))
    throw std::invalid_argument("s2dtw (cuda): gamma and smoothing must be >= 0");
  if (pb.banded && (pb.open_begin || pb.open_end))  // the kernels' band assumes the closed grid
    throw std::invalid_argument("s2dtw (cuda): open_begin / open_end cannot be combined with a band");
  if (workspace_size < z.total || workspace == nullptr)
    throw std::runtime_error("s2dtw (cuda): workspace too small: got " + std::to_string(workspace_size) +
                             " bytes, need " + std::to_string(z.total) + " (workspace_bytes)");
  auto* base = reinterpret_cast<unsigned char*>(align_up(reinterpret_cast<uintptr_t>(workspace)));
  auto* tape = with_grad ? reinterpret_cast<Tape2<Scalar>*>(base) : nullptr;
  auto* scratch = reinterpret_cast<double*>(base + z.tape_bytes);
  auto* flags = reinterpret_cast<int*>(base + z.tape_bytes + z.scratch_bytes);
  const Consts k = consts_of(pb);
  // The variants get their own instantiation, so that the default kernels carry none of their code.
  auto go = is_variant(pb) ? (with_grad ? launch<Scalar, true, true> : launch<Scalar, false, true>)
                           : (with_grad ? launch<Scalar, true, false> : launch<Scalar, false, false>);
  go(pb, k, z, cost, value, grad, tape, scratch, flags, stream);
}

template size_t workspace_bytes<float>(const Problem&, bool);
template size_t workspace_bytes<double>(const Problem&, bool);
template void run<float>(const Problem&, const float*, float*, float*, void*, size_t, cudaStream_t);
template void run<double>(const Problem&, const double*, double*, double*, void*, size_t, cudaStream_t);

}  // namespace s2dtw::cuda
