// The vectorised CPU kernels' entry points, compiled once per instruction set
// (simd_per_isa.h, included by s2dtw_cpu_avx512.cpp / s2dtw_cpu_avx2.cpp with
// S2DTW_SIMD_NS = avx512 / avx2). s2dtw_cpu.cpp picks one at run time.
#pragma once

#include <atomic>
#include <cstddef>
#include <new>
#include <string>

#include "../s2dtw_cell.h"
#include "s2dtw_cpu.h"

namespace s2dtw::cpu {

// Bytes the SIMD kernels keep cached between calls, over every thread, dtype, regime and
// instruction set (bounded by kKeepBytes in simd_memory.h).
extern std::atomic<int64_t> kept_workspace_bytes;

// A std::bad_alloc (MemoryError in Python) that says how much could not be allocated.
class OutOfMemory : public std::bad_alloc {
 public:
  explicit OutOfMemory(size_t bytes)
      : message_("s2dtw: out of memory allocating a workspace of " + std::to_string(bytes) + " bytes (" +
                 std::to_string(bytes >> 20) + " MiB)") {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

#define S2DTW_DECLARE_SIMD(ns)                                                                     \
  namespace ns {                                                                                   \
  /* Same contract as cpu::run (every call: lockstep or diagonal regime). */                       \
  template <typename Scalar>                                                                       \
  void run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads);   \
  /* exp and log of the vector math on n values (for the accuracy tests). */                       \
  void check_math(const double* x, double* exp_x, double* log_x, int64_t n);                       \
  void check_math(const float* x, float* exp_x, float* log_x, int64_t n);                          \
  /* Frees this thread's cached workspaces (after running out of memory: nothing stays pinned). */ \
  void release_workspaces();                                                                       \
  }

S2DTW_DECLARE_SIMD(avx512)
S2DTW_DECLARE_SIMD(avx2)
#undef S2DTW_DECLARE_SIMD

}  // namespace s2dtw::cpu
