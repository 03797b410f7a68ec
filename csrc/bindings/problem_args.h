// The one conversion of a call's Python description (s2dtw/_problem.py, Problem: .layout,
// .params, .switches) into the C++ Problem, by attribute name. Shared by the CPU and CUDA modules.
// It is a function, not a py::class_<Problem>: both modules can include it (a class bound in
// each would need py::module_local to load twice), and Python keeps the one definition of the
// fields, their defaults and the switches' parsing. What crosses the boundary is checked here.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../s2dtw_cell.h"

namespace s2dtw::bindings {

namespace py = pybind11;

inline int64_t int_attr(const py::handle& obj, const char* name) { return obj.attr(name).cast<int64_t>(); }

// An optional float field (None = off) into its flag and value.
inline void optional_attr(const py::handle& obj, const char* name, bool& given, double& value) {
  const py::object v = obj.attr(name);
  given = !v.is_none();
  value = given ? v.cast<double>() : 0.0;
}

inline void check(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("s2dtw: invalid problem description: " + what);
}

// The lengths and slots arrive as tensors; the kernels read n_pairs int64 from their data pointer (the extension
// never links torch), so their dtype, count and contiguity are checked here (their device by the dispatch: the
// CUDA emulation in tests/ runs the CUDA module on host tensors; the slots' values by Layout.check_fits).
inline const int64_t* lengths_attr(const py::handle& layout, const char* name, int64_t n_pairs) {
  const py::object t = layout.attr(name);
  check(py::str(t.attr("dtype")).cast<std::string>() == "torch.int64" && t.attr("numel")().cast<int64_t>() == n_pairs &&
            t.attr("is_contiguous")().cast<bool>(),
        std::string(name) + " must be a contiguous int64 tensor of n_pairs values");
  return reinterpret_cast<const int64_t*>(t.attr("data_ptr")().cast<uintptr_t>());
}

// The optional slots: None (pair b in slot b) or a tensor checked as the lengths are.
inline const int64_t* slots_attr(const py::handle& layout, int64_t n_pairs) {
  return layout.attr("slots").is_none() ? nullptr : lengths_attr(layout, "slots", n_pairs);
}

// A switch's value, checked to lie in [lo, hi] before it is narrowed to an int.
inline int switch_attr(const py::handle& switches, const char* name, int lo, int hi) {
  const int64_t v = int_attr(switches, name);
  check(v >= lo && v <= hi,
        std::string(name) + " must lie in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return int(v);
}

inline Problem problem_from(const py::handle& call) {
  const py::object layout = call.attr("layout"), params = call.attr("params"), switches = call.attr("switches");
  Problem pb;
  pb.n_pairs = int_attr(layout, "n_pairs");
  pb.pairs_per_x = int_attr(layout, "pairs_per_x");
  pb.stride_x = int_attr(layout, "stride_x");
  pb.stride_y = int_attr(layout, "stride_y");
  pb.stride_i = int_attr(layout, "stride_i");
  pb.stride_j = int_attr(layout, "stride_j");
  pb.padded_n = int_attr(layout, "padded_n");
  pb.padded_m = int_attr(layout, "padded_m");
  pb.pair_n = lengths_attr(layout, "pair_n", pb.n_pairs);
  pb.pair_m = lengths_attr(layout, "pair_m", pb.n_pairs);
  pb.slots = slots_attr(layout, pb.n_pairs);
  pb.gamma = params.attr("gamma").cast<double>();
  optional_attr(params, "smoothing", pb.smooth, pb.smoothing);
  optional_attr(params, "threshold", pb.weak, pb.threshold);
  optional_attr(params, "bandwidth", pb.banded, pb.bandwidth);
  pb.open_begin = params.attr("open_begin").cast<bool>();
  pb.open_end = params.attr("open_end").cast<bool>();
  pb.max_simd = switch_attr(switches, "max_simd", 0, 2);  // a cpu::SimdLevel
  pb.cuda_regime = switch_attr(switches, "cuda_regime", 0, 3);
  pb.cuda_strip = switch_attr(switches, "cuda_strip", 0, kMaxCudaStrip);
  pb.cuda_tape_budget = int64_t(switch_attr(switches, "cuda_tape_mib", 0, 1 << 30)) << 20;
  check(pb.n_pairs >= 0 && pb.pairs_per_x >= 1 && pb.padded_n >= 1 && pb.padded_m >= 1, "layout");
  check(pb.gamma >= 0 && (!pb.smooth || pb.smoothing >= 0) && (!pb.banded || pb.bandwidth >= 0), "params");
  check(!(pb.banded && (pb.open_begin || pb.open_end)), "open_begin / open_end with a band");
  check(pb.cuda_strip % 32 == 0, "cuda_strip must be 0 or a multiple of 32");
  return pb;
}

inline bool is_float64(const std::string& dtype) {
  if (dtype == "float64") return true;
  if (dtype == "float32") return false;
  throw std::invalid_argument("s2dtw: dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

}  // namespace s2dtw::bindings
