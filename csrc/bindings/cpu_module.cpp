// pybind11 module s2dtw._cpu: the CPU kernels, called with raw pointers.
#include "../cpu/s2dtw_cpu.h"
#include <algorithm>

#include "problem_args.h"

namespace py = pybind11;
using s2dtw::bindings::is_float64;
using s2dtw::bindings::make_problem;

namespace {

void run(const std::string& dtype, uintptr_t cost, uintptr_t value, uintptr_t grad, int num_threads,
         uintptr_t pair_n, uintptr_t pair_m, int64_t n_pairs, int64_t pairs_per_x, int64_t stride_x,
         int64_t stride_y, int64_t stride_i, int64_t stride_j, int64_t padded_n, int64_t padded_m, double gamma,
         std::optional<double> smoothing, std::optional<double> threshold, std::optional<double> bandwidth) {
  const s2dtw::Problem pb = make_problem(pair_n, pair_m, n_pairs, pairs_per_x, stride_x, stride_y, stride_i,
                                         stride_j, padded_n, padded_m, gamma, smoothing, threshold, bandwidth);
  const bool f64 = is_float64(dtype);
  py::gil_scoped_release no_gil;
  if (f64)
    s2dtw::cpu::run(pb, reinterpret_cast<const double*>(cost), reinterpret_cast<double*>(value),
                    reinterpret_cast<double*>(grad), num_threads);
  else
    s2dtw::cpu::run(pb, reinterpret_cast<const float*>(cost), reinterpret_cast<float*>(value),
                    reinterpret_cast<float*>(grad), num_threads);
}

// The vector exp and log at an instruction set ("avx2", "avx512") on n values at x,
// float64 or float32 (the float32 lanes).
bool check_math(const std::string& level, uintptr_t x, uintptr_t exp_x, uintptr_t log_x, int64_t n,
                const std::string& dtype) {
  const auto lvl = level == "avx512" ? s2dtw::cpu::SimdLevel::avx512
                   : level == "avx2" ? s2dtw::cpu::SimdLevel::avx2
                                     : s2dtw::cpu::SimdLevel::scalar;
  if (is_float64(dtype))
    return s2dtw::cpu::check_math(lvl, reinterpret_cast<const double*>(x), reinterpret_cast<double*>(exp_x),
                                  reinterpret_cast<double*>(log_x), n);
  return s2dtw::cpu::check_math(lvl, reinterpret_cast<const float*>(x), reinterpret_cast<float*>(exp_x),
                                reinterpret_cast<float*>(log_x), n);
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "s2dtw CPU kernels (pointers in, no torch)";
  m.attr("openmp") = s2dtw::cpu::has_openmp();
  m.def("simd_level",
        [] {
          s2dtw::Problem pb;
          s2dtw::bindings::read_switches(pb);
          const auto cap = s2dtw::cpu::SimdLevel(pb.max_simd);
          return std::string(s2dtw::cpu::simd_name(std::min(cap, s2dtw::cpu::simd_level())));
        },
        "The instruction set the kernels use: 'avx512', 'avx2' or 'scalar' (lowered by $S2DTW_SIMD).");
  m.def("check_math", &check_math, "Vector exp/log at a SIMD level on n values (tests); false if absent.",
        py::arg("level"), py::arg("x"), py::arg("exp_x"), py::arg("log_x"), py::arg("n"),
        py::arg("dtype") = "float64");
  m.def("workspace_bytes", &s2dtw::cpu::cached_workspace_bytes,
        "Bytes of workspace the kernels keep cached between calls, over all threads (at most 256 MiB).");
  m.def("run", &run,
        "Values (and, when grad != 0, gradients w.r.t. the cost) of every pair; releases the GIL.",
        py::arg("dtype"), py::arg("cost"), py::arg("value"), py::arg("grad"), py::arg("num_threads"),
        S2DTW_PROBLEM_PY_ARGS);
}
