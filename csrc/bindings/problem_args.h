// Turns the Python-side description of a call into a Problem. Shared by the CPU
// and CUDA modules so that both read their arguments the same way.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>

#include "../s2dtw_cell.h"

namespace s2dtw::bindings {

namespace py = pybind11;

// The environment's switches ($S2DTW_SIMD, $S2DTW_CUDA_REGIME, $S2DTW_CUDA_STRIP), read at every call.
inline void read_switches(Problem& pb) {
  const auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  const std::string simd = env("S2DTW_SIMD"), regime = env("S2DTW_CUDA_REGIME"), strip = env("S2DTW_CUDA_STRIP");
  pb.max_simd = simd == "scalar" ? 0 : simd == "avx2" ? 1 : 2;
  if (regime == "thread") pb.cuda_regime = 1;
  else if (regime == "block") pb.cuda_regime = 2;
  else if (!regime.empty() && regime != "auto")
    throw std::invalid_argument("s2dtw (cuda): S2DTW_CUDA_REGIME must be auto, thread or block, got " + regime);
  if (!strip.empty()) {
    pb.cuda_strip = std::atoi(strip.c_str());
    if (pb.cuda_strip < 32 || pb.cuda_strip > 1024 || pb.cuda_strip % 32 != 0)
      throw std::invalid_argument("s2dtw (cuda): S2DTW_CUDA_STRIP must be a multiple of 32 in [32, 1024]");
  }
}

// Pointers arrive as integers (tensor.data_ptr()); the extension never sees torch.
inline Problem make_problem(uintptr_t pair_n, uintptr_t pair_m, int64_t n_pairs, int64_t pairs_per_x,
                            int64_t stride_x, int64_t stride_y, int64_t stride_i, int64_t stride_j,
                            int64_t padded_n, int64_t padded_m, double gamma, std::optional<double> smoothing,
                            std::optional<double> threshold, std::optional<double> bandwidth) {
  if (n_pairs < 0 || pairs_per_x < 1 || padded_n < 1 || padded_m < 1 || !(gamma > 0) ||
      (bandwidth && !(*bandwidth >= 0)))
    throw std::invalid_argument("s2dtw: invalid problem description");
  Problem pb;
  pb.n_pairs = n_pairs;
  pb.pairs_per_x = pairs_per_x;
  pb.stride_x = stride_x;
  pb.stride_y = stride_y;
  pb.stride_i = stride_i;
  pb.stride_j = stride_j;
  pb.pair_n = reinterpret_cast<const int64_t*>(pair_n);
  pb.pair_m = reinterpret_cast<const int64_t*>(pair_m);
  pb.padded_n = padded_n;
  pb.padded_m = padded_m;
  pb.gamma = gamma;
  pb.smooth = smoothing.has_value();
  pb.smoothing = smoothing.value_or(0.0);
  pb.weak = threshold.has_value();
  pb.threshold = threshold.value_or(0.0);
  pb.banded = bandwidth.has_value();
  pb.bandwidth = bandwidth.value_or(0.0);
  read_switches(pb);
  return pb;
}

inline bool is_float64(const std::string& dtype) {
  if (dtype == "float64") return true;
  if (dtype == "float32") return false;
  throw std::invalid_argument("s2dtw: dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

// The keyword arguments of make_problem, in order, for module.def(...).
#define S2DTW_PROBLEM_PY_ARGS                                                                       \
  py::arg("pair_n"), py::arg("pair_m"), py::arg("n_pairs"), py::arg("pairs_per_x"), py::arg("stride_x"), \
      py::arg("stride_y"), py::arg("stride_i"), py::arg("stride_j"), py::arg("padded_n"),               \
      py::arg("padded_m"), py::arg("gamma"), py::arg("smoothing"), py::arg("threshold"), py::arg("bandwidth")

}  // namespace s2dtw::bindings
