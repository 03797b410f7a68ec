// Turns the Python-side description of a call into a Problem. Shared by the CPU
// and CUDA modules so that both read their arguments the same way.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "../s2dtw_cell.h"

namespace s2dtw::bindings {

namespace py = pybind11;

// Pointers arrive as integers (tensor.data_ptr()); the extension never sees torch.
inline Problem make_problem(uintptr_t pair_n, uintptr_t pair_m, int64_t n_pairs, int64_t pairs_per_x,
                            int64_t stride_x, int64_t stride_y, int64_t stride_i, int64_t stride_j,
                            int64_t block_n, int64_t block_m, double gamma, std::optional<double> smoothing,
                            std::optional<double> threshold, std::optional<double> bandwidth) {
  if (n_pairs < 0 || pairs_per_x < 1 || block_n < 1 || block_m < 1 || !(gamma > 0) ||
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
  pb.block_n = block_n;
  pb.block_m = block_m;
  pb.gamma = gamma;
  pb.smooth = smoothing.has_value();
  pb.smoothing = smoothing.value_or(0.0);
  pb.weak = threshold.has_value();
  pb.threshold = threshold.value_or(0.0);
  pb.banded = bandwidth.has_value();
  pb.bandwidth = bandwidth.value_or(0.0);
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
      py::arg("stride_y"), py::arg("stride_i"), py::arg("stride_j"), py::arg("block_n"),               \
      py::arg("block_m"), py::arg("gamma"), py::arg("smoothing"), py::arg("threshold"), py::arg("bandwidth")

}  // namespace s2dtw::bindings
