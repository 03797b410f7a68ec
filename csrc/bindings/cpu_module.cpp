// pybind11 module s2dtw._cpu: the CPU kernels, called with raw pointers.
#include <algorithm>
#include "../cpu/s2dtw_cpu.h"
#include "../cpu/second_order.h"

#include "problem_args.h"

namespace py = pybind11;
using s2dtw::bindings::is_float64;
using s2dtw::bindings::problem_from;

namespace {

void run(const std::string& dtype, uintptr_t cost, uintptr_t value, uintptr_t grad, int num_threads,
         const py::handle& problem) {
  const s2dtw::Problem pb = problem_from(problem);
  const bool f64 = is_float64(dtype);
  py::gil_scoped_release no_gil;
  if (f64)
    s2dtw::cpu::run(pb, reinterpret_cast<const double*>(cost), reinterpret_cast<double*>(value),
                    reinterpret_cast<double*>(grad), num_threads);
  else
    s2dtw::cpu::run(pb, reinterpret_cast<const float*>(cost), reinterpret_cast<float*>(value),
                    reinterpret_cast<float*>(grad), num_threads);
}

// H·Z of every pair (docs/semantics.md, "Second order"): `out` laid out like `cost` and `direction`.
void hvp(const std::string& dtype, uintptr_t cost, uintptr_t direction, uintptr_t out, int num_threads,
         const py::handle& problem) {
  const s2dtw::Problem pb = problem_from(problem);
  const bool f64 = is_float64(dtype);
  py::gil_scoped_release no_gil;
  if (f64)
    s2dtw::cpu::hvp(pb, reinterpret_cast<const double*>(cost), reinterpret_cast<const double*>(direction),
                    reinterpret_cast<double*>(out), num_threads);
  else
    s2dtw::cpu::hvp(pb, reinterpret_cast<const float*>(cost), reinterpret_cast<const float*>(direction),
                    reinterpret_cast<float*>(out), num_threads);
}

// Whether all n values at x are finite (the input check of s2dtw/_validation.py).
bool all_finite(const std::string& dtype, uintptr_t x, int64_t n, int num_threads) {
  s2dtw::bindings::check(n >= 0, "n must be >= 0");
  const bool f64 = is_float64(dtype);
  py::gil_scoped_release no_gil;
  return f64 ? s2dtw::cpu::all_finite(reinterpret_cast<const double*>(x), n, num_threads)
             : s2dtw::cpu::all_finite(reinterpret_cast<const float*>(x), n, num_threads);
}

// out = grad * factor[region] (s2dtw/_problem.py, Layout.scale_grad) over `regions` regions.
void scale_grad(const std::string& dtype, uintptr_t grad, uintptr_t factor, int64_t factor_stride, uintptr_t out,
                int64_t regions, int64_t padded_n, int64_t pairs_per_x, int64_t padded_m, int num_threads) {
  s2dtw::bindings::check(regions >= 0 && padded_n >= 1 && padded_m >= 1 && pairs_per_x >= 1 &&
                             regions % pairs_per_x == 0 && factor_stride >= 0,
                         "scale_grad's regions");
  const bool f64 = is_float64(dtype);
  py::gil_scoped_release no_gil;
  if (f64)
    s2dtw::cpu::scale_regions(reinterpret_cast<const double*>(grad), reinterpret_cast<const double*>(factor),
                              factor_stride, reinterpret_cast<double*>(out), regions, padded_n, pairs_per_x, padded_m,
                              num_threads);
  else
    s2dtw::cpu::scale_regions(reinterpret_cast<const float*>(grad), reinterpret_cast<const float*>(factor),
                              factor_stride, reinterpret_cast<float*>(out), regions, padded_n, pairs_per_x, padded_m,
                              num_threads);
}

size_t hvp_workspace_bytes(const std::string& dtype, int num_threads, const py::handle& problem) {
  const s2dtw::Problem pb = problem_from(problem);
  return is_float64(dtype) ? s2dtw::cpu::hvp_workspace_bytes<double>(pb, num_threads)
                           : s2dtw::cpu::hvp_workspace_bytes<float>(pb, num_threads);
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
  m.def(
      "best_simd_level", [] { return std::string(s2dtw::cpu::simd_name(s2dtw::cpu::simd_level())); },
      "The best instruction set this CPU has: 'avx512', 'avx2' or 'scalar' (a call runs at most at "
      "its Problem's max_simd: s2dtw.backends()['simd'] is the level after $S2DTW_SIMD).");
  m.def("check_math", &check_math, "Vector exp/log at a SIMD level on n values (tests); false if absent.",
        py::arg("level"), py::arg("x"), py::arg("exp_x"), py::arg("log_x"), py::arg("n"), py::arg("dtype") = "float64");
  m.def("workspace_bytes", &s2dtw::cpu::cached_workspace_bytes,
        "Bytes of workspace the kernels keep cached between calls, over all threads (at most 256 MiB).");
  m.def("run", &run, "Values (and, when grad != 0, gradients w.r.t. the cost) of every pair; releases the GIL.",
        py::arg("dtype"), py::arg("cost"), py::arg("value"), py::arg("grad"), py::arg("num_threads"),
        py::arg("problem"));
  m.def("hvp", &hvp,
        "Hessian-vector products H·Z of every pair's value w.r.t. the cost (Z = direction, laid out like the "
        "cost); releases the GIL.",
        py::arg("dtype"), py::arg("cost"), py::arg("direction"), py::arg("out"), py::arg("num_threads"),
        py::arg("problem"));
  m.def("all_finite", &all_finite, "Whether all n values at x are finite; releases the GIL.", py::arg("dtype"),
        py::arg("x"), py::arg("n"), py::arg("num_threads"));
  m.def("scale_grad", &scale_grad,
        "out = grad * factor[region * factor_stride] over regions of padded_n x (pairs_per_x x padded_m); releases "
        "the GIL.",
        py::arg("dtype"), py::arg("grad"), py::arg("factor"), py::arg("factor_stride"), py::arg("out"),
        py::arg("regions"), py::arg("padded_n"), py::arg("pairs_per_x"), py::arg("padded_m"), py::arg("num_threads"));
  m.def("hvp_workspace_bytes", &hvp_workspace_bytes,
        "Bytes of workspace hvp allocates for this problem on num_threads threads (freed when it returns).",
        py::arg("dtype"), py::arg("num_threads"), py::arg("problem"));
}
