// pybind11 module s2dtw._cuda: the CUDA kernels, called with raw device pointers
// and the caller's stream (torch.cuda.current_stream().cuda_stream).
#include "../cuda/s2dtw_cuda.h"
#include "problem_args.h"

namespace py = pybind11;
using s2dtw::bindings::is_float64;
using s2dtw::bindings::make_problem;

namespace {

size_t workspace_bytes(const std::string& dtype, bool with_grad, uintptr_t pair_n, uintptr_t pair_m,
                       int64_t n_pairs, int64_t pairs_per_x, int64_t stride_x, int64_t stride_y, int64_t stride_i,
                       int64_t stride_j, int64_t padded_n, int64_t padded_m, double gamma,
                       std::optional<double> smoothing, std::optional<double> threshold, std::optional<double> bandwidth) {
  const s2dtw::Problem pb = make_problem(pair_n, pair_m, n_pairs, pairs_per_x, stride_x, stride_y, stride_i,
                                         stride_j, padded_n, padded_m, gamma, smoothing, threshold, bandwidth);
  return is_float64(dtype) ? s2dtw::cuda::workspace_bytes<double>(pb, with_grad)
                           : s2dtw::cuda::workspace_bytes<float>(pb, with_grad);
}

void run(const std::string& dtype, uintptr_t cost, uintptr_t value, uintptr_t grad, uintptr_t workspace,
         size_t workspace_size, uintptr_t stream, uintptr_t pair_n, uintptr_t pair_m, int64_t n_pairs,
         int64_t pairs_per_x, int64_t stride_x, int64_t stride_y, int64_t stride_i, int64_t stride_j,
         int64_t padded_n, int64_t padded_m, double gamma, std::optional<double> smoothing,
         std::optional<double> threshold, std::optional<double> bandwidth) {
  const s2dtw::Problem pb = make_problem(pair_n, pair_m, n_pairs, pairs_per_x, stride_x, stride_y, stride_i,
                                         stride_j, padded_n, padded_m, gamma, smoothing, threshold, bandwidth);
  const bool f64 = is_float64(dtype);
  auto* ws = reinterpret_cast<void*>(workspace);
  auto* st = reinterpret_cast<cudaStream_t>(stream);
  py::gil_scoped_release no_gil;
  if (f64)
    s2dtw::cuda::run(pb, reinterpret_cast<const double*>(cost), reinterpret_cast<double*>(value),
                     reinterpret_cast<double*>(grad), ws, workspace_size, st);
  else
    s2dtw::cuda::run(pb, reinterpret_cast<const float*>(cost), reinterpret_cast<float*>(value),
                     reinterpret_cast<float*>(grad), ws, workspace_size, st);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "s2dtw CUDA kernels (device pointers and a stream in, no torch)";
  m.def("workspace_bytes", &workspace_bytes, "Scratch bytes that run() needs.", py::arg("dtype"),
        py::arg("with_grad"), S2DTW_PROBLEM_PY_ARGS);
  m.def("run", &run, "Launch forward (and backward when grad != 0) on `stream`; returns without syncing.",
        py::arg("dtype"), py::arg("cost"), py::arg("value"), py::arg("grad"), py::arg("workspace"),
        py::arg("workspace_size"), py::arg("stream"), S2DTW_PROBLEM_PY_ARGS);
}
