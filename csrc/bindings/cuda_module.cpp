// pybind11 module s2dtw._cuda: the CUDA kernels, called with raw device pointers
// and the caller's stream (torch.cuda.current_stream().cuda_stream).
#include "../cuda/s2dtw_cuda.h"
#include "problem_args.h"

namespace py = pybind11;
using s2dtw::bindings::is_float64;
using s2dtw::bindings::problem_from;

namespace {

size_t workspace_bytes(const std::string& dtype, bool with_grad, const py::handle& problem) {
  const s2dtw::Problem pb = problem_from(problem);
  return is_float64(dtype) ? s2dtw::cuda::workspace_bytes<double>(pb, with_grad)
                           : s2dtw::cuda::workspace_bytes<float>(pb, with_grad);
}

void run(const std::string& dtype, uintptr_t cost, uintptr_t value, uintptr_t grad, uintptr_t workspace,
         size_t workspace_size, uintptr_t stream, const py::handle& problem) {
  const s2dtw::Problem pb = problem_from(problem);
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

size_t hvp_workspace_bytes(const std::string& dtype, const py::handle& problem) {
  const s2dtw::Problem pb = problem_from(problem);
  return is_float64(dtype) ? s2dtw::cuda::hvp_workspace_bytes<double>(pb) : s2dtw::cuda::hvp_workspace_bytes<float>(pb);
}

template <typename Scalar>
void hvp_as(const s2dtw::Problem& pb, uintptr_t cost, uintptr_t direction, uintptr_t out, uintptr_t workspace,
            size_t workspace_size, uintptr_t stream) {
  s2dtw::cuda::hvp(pb, reinterpret_cast<const Scalar*>(cost), reinterpret_cast<const Scalar*>(direction),
                   reinterpret_cast<Scalar*>(out), reinterpret_cast<void*>(workspace), workspace_size,
                   reinterpret_cast<cudaStream_t>(stream));
}

void hvp(const std::string& dtype, uintptr_t cost, uintptr_t direction, uintptr_t out, uintptr_t workspace,
         size_t workspace_size, uintptr_t stream, const py::handle& problem) {
  const s2dtw::Problem pb = problem_from(problem);
  const bool f64 = is_float64(dtype);
  py::gil_scoped_release no_gil;
  (f64 ? hvp_as<double> : hvp_as<float>)(pb, cost, direction, out, workspace, workspace_size, stream);
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "s2dtw CUDA kernels (device pointers and a stream in, no torch)";
  m.def("workspace_bytes", &workspace_bytes, "Scratch bytes that run() needs.", py::arg("dtype"), py::arg("with_grad"),
        py::arg("problem"));
  m.def("run", &run, "Launch forward (and backward when grad != 0) on `stream`; returns without syncing.",
        py::arg("dtype"), py::arg("cost"), py::arg("value"), py::arg("grad"), py::arg("workspace"),
        py::arg("workspace_size"), py::arg("stream"), py::arg("problem"));
  m.def("hvp_workspace_bytes", &hvp_workspace_bytes, "Scratch bytes that hvp() needs.", py::arg("dtype"),
        py::arg("problem"));
  m.def("hvp", &hvp, "Launch the Hessian-vector products H·direction into `out` on `stream`; returns without syncing.",
        py::arg("dtype"), py::arg("cost"), py::arg("direction"), py::arg("out"), py::arg("workspace"),
        py::arg("workspace_size"), py::arg("stream"), py::arg("problem"));
}
