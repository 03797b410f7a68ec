// Test-only stand-in for <cuda_runtime.h> (never shipped, never used by the real build).
//
// With this directory first on the include path, csrc/cuda/s2dtw_cuda.cu (with the .cuh
// headers it includes) compiles as C++ (C++20) and its kernels run on the host: a launch
// runs the blocks one after the other, each as one OS thread per CUDA thread, except a launch whose
// blocks wait on each other (S2DTW_LAUNCH_RESIDENT, the multi-block regime's cooperative launch), which
// runs all its blocks at once (and fails, as a cooperative launch does, if they exceed what the device holds);
// __syncthreads is a barrier over the block's threads (a thread that returns drops out
// of it, as on the GPU); the block's dynamic shared memory is a fresh buffer filled with
// 0xFF bytes (NaN as doubles), so a read of a cell nobody wrote in this block shows up in
// the results.
// It supplies exactly what the kernels and their host code use: the CUDA keywords,
// threadIdx / blockIdx / blockDim / gridDim, __syncthreads, min / max, the runtime
// calls of the launch code (the device has 132 SMs, an H200's, so that choose_plan
// decides as it would there; $S2DTW_EMULATION_SMS and $S2DTW_EMULATION_BLOCKS_PER_SM shrink it, so that a test
// runs the multi-block regime on a few blocks), __threadfence (a sequentially consistent fence), and the seams
// of csrc/cuda: S2DTW_LAUNCH, S2DTW_LAUNCH_RESIDENT (s2dtw_cuda.h), S2DTW_DYNAMIC_SHARED and S2DTW_SPIN_PAUSE
// (block_kernel.cuh: a poll of a progress flag yields the OS thread).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace s2dtw_emulation {

// A central barrier: the last thread to arrive starts the next phase and wakes the
// others with one futex call (std::barrier's tree costs ~5x more at 1024 threads on 2 cores).
class Barrier {
 public:
  explicit Barrier(int threads) : live_(threads), waiting_(threads) {}
  void arrive_and_wait() {
    const unsigned phase = phase_.load(std::memory_order_acquire);
    if (!arrive()) {
      for (unsigned now = phase; now == phase; now = phase_.load(std::memory_order_acquire)) phase_.wait(now);
    }
  }
  void arrive_and_drop() {  // a thread that returned: counts as arrived now and in every later phase
    live_.fetch_sub(1, std::memory_order_relaxed);
    arrive();
  }

 private:
  bool arrive() {  // true for the thread that completes the phase
    if (waiting_.fetch_sub(1, std::memory_order_acq_rel) != 1) return false;
    waiting_.store(live_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    phase_.fetch_add(1, std::memory_order_release);
    phase_.notify_all();
    return true;
  }
  std::atomic<int> live_, waiting_;
  std::atomic<unsigned> phase_{0};
};

inline thread_local Barrier* block_barrier = nullptr;
inline thread_local unsigned char* block_shared = nullptr;
inline thread_local int last_error = 0;

constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kMaxSharedBytes = 227 * 1024;  // an H100/H200 block's opt-in maximum

// The emulated device: $S2DTW_EMULATION_SMS SMs (default 132), each holding $S2DTW_EMULATION_BLOCKS_PER_SM
// blocks (default: as an H200 with registers to spare, min(32, 2048 / threads)).
inline int env_int(const char* name, int fallback) {
  const char* text = std::getenv(name);
  return text && *text ? std::stoi(text) : fallback;
}
inline int sms() { return env_int("S2DTW_EMULATION_SMS", 132); }
inline int blocks_per_sm(int threads) { return env_int("S2DTW_EMULATION_BLOCKS_PER_SM", std::min(32, 2048 / threads)); }

// Starts block b (one OS thread per CUDA thread) into `pool`.
template <typename Body>
void start_block(unsigned b, unsigned blocks, unsigned threads, std::vector<double>& shared, Barrier& barrier,
                 std::vector<std::thread>& pool, const Body& body) {
  std::memset(shared.data(), 0xFF, shared.size() * sizeof(double));
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t, b] {
      threadIdx = {t, 1, 1};
      blockIdx = {b, 1, 1};
      blockDim = {threads, 1, 1};
      gridDim = {blocks, 1, 1};
      block_barrier = &barrier;
      block_shared = reinterpret_cast<unsigned char*>(shared.data());
      body();
      barrier.arrive_and_drop();
    });
}

// Runs body() as `blocks` blocks of `threads` threads with `shared_bytes` of dynamic shared memory: one block
// after the other, or (`resident`) all at once.
template <typename Body>
int launch(unsigned blocks, unsigned threads, size_t shared_bytes, const Body& body, bool resident = false) {
  if (threads == 0 || threads > kMaxThreadsPerBlock || shared_bytes > kMaxSharedBytes) {
    last_error = 9;  // cudaErrorInvalidConfiguration
    return last_error;
  }
  if (resident && int64_t(blocks) > int64_t(sms()) * blocks_per_sm(int(threads))) {
    last_error = 82;  // cudaErrorCooperativeLaunchTooLarge
    return last_error;
  }
  const size_t words = (shared_bytes + sizeof(double) - 1) / sizeof(double);
  const unsigned at_once = resident ? blocks : 1;
  for (unsigned first = 0; first < blocks; first += at_once) {
    std::vector<std::vector<double>> shared(at_once, std::vector<double>(words));
    std::deque<Barrier> barriers;  // not movable
    std::vector<std::thread> pool;
    pool.reserve(size_t(threads) * at_once);
    for (unsigned i = 0; i < at_once; ++i) {
      barriers.emplace_back(int(threads));
      start_block(first + i, blocks, threads, shared[i], barriers[i], pool, body);
    }
    for (auto& th : pool) th.join();
  }
  return 0;
}

}  // namespace s2dtw_emulation

inline void __syncthreads() { s2dtw_emulation::block_barrier->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

using std::max;
using std::min;

#define S2DTW_LAUNCH(kernel, blocks, threads, smem_bytes, stream, ...) \
  s2dtw_emulation::launch(blocks, threads, smem_bytes, [=] { kernel(__VA_ARGS__); })
#define S2DTW_LAUNCH_RESIDENT(kernel, blocks, threads, smem_bytes, stream, ...) \
  s2dtw_emulation::launch(blocks, threads, smem_bytes, [=] { kernel(__VA_ARGS__); }, true)
#define S2DTW_SPIN_PAUSE() std::this_thread::yield()
#define S2DTW_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(s2dtw_emulation::block_shared)

// The runtime API the host code calls.
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
using cudaStream_t = struct CUstream_st*;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount, cudaDevAttrCooperativeLaunch };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };

inline cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  *value = attr == cudaDevAttrCooperativeLaunch ? 1 : s2dtw_emulation::sms();
  return cudaSuccess;
}
template <typename Kernel>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel, int threads, size_t) {
  *blocks = s2dtw_emulation::blocks_per_sm(threads);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* at, int byte, size_t count, cudaStream_t) {
  std::memset(at, byte, count);
  return cudaSuccess;
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel, cudaFuncAttribute, int bytes) {
  return size_t(bytes) <= s2dtw_emulation::kMaxSharedBytes ? cudaSuccess : 1;  // 1: cudaErrorInvalidValue
}
inline cudaError_t cudaGetLastError() {
  const cudaError_t err = s2dtw_emulation::last_error;
  s2dtw_emulation::last_error = cudaSuccess;
  return err;
}
inline const char* cudaGetErrorString(cudaError_t err) {
  return err == cudaSuccess ? "no error" : "invalid launch (emulation)";
}
