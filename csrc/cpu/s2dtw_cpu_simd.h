// The vectorised CPU kernels, compiled once per instruction set (s2dtw_cpu_simd.cpp
// with S2DTW_SIMD_NS = avx512 / avx2). s2dtw_cpu.cpp picks one at run time.
#pragma once

#include "../s2dtw_cell.h"
#include "s2dtw_cpu.h"

namespace s2dtw::cpu {

#define S2DTW_DECLARE_SIMD(ns)                                                                            \
  namespace ns {                                                                                          \
  /* Same contract as cpu::run; returns false (doing nothing) for a call it leaves to the scalar path. */ \
  template <typename Scalar>                                                                              \
  bool run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads);          \
  /* exp and log of the vector math on n values (for the accuracy tests). */                              \
  void check_math(const double* x, double* exp_x, double* log_x, int64_t n);                              \
  void check_math(const float* x, float* exp_x, float* log_x, int64_t n);                                 \
  }

S2DTW_DECLARE_SIMD(avx512)
S2DTW_DECLARE_SIMD(avx2)
#undef S2DTW_DECLARE_SIMD

}  // namespace s2dtw::cpu
