// Placeholder until the CUDA kernels land: compiles, refuses to run.
#include <stdexcept>

#include "s2dtw_cuda.h"

namespace s2dtw::cuda {

template <typename Scalar>
size_t workspace_bytes(const Problem&, bool) {
  return 0;
}

template <typename Scalar>
void run(const Problem&, const Scalar*, Scalar*, Scalar*, void*, size_t, cudaStream_t) {
  throw std::runtime_error("s2dtw: the CUDA kernels are not implemented yet");
}

template size_t workspace_bytes<float>(const Problem&, bool);
template size_t workspace_bytes<double>(const Problem&, bool);
template void run<float>(const Problem&, const float*, float*, float*, void*, size_t, cudaStream_t);
template void run<double>(const Problem&, const double*, double*, double*, void*, size_t, cudaStream_t);

}  // namespace s2dtw::cuda
