// Vectorised CPU kernels, included once per instruction set by s2dtw_cpu_avx512.cpp
// and s2dtw_cpu_avx2.cpp, which define S2DTW_SIMD_NS and S2DTW_NATIVE_DOUBLES (see
// simd_math.h). Everything defined here is compiled for that instruction set
// (#pragma GCC target after the library headers, so that no inline function or
// template shared with the scalar code is compiled with it). Two regimes:
//
// - lockstep: many pairs. kLanes pairs (sorted by shape, so a group's shapes are
//   close) run the scalar kernel's row-by-row recursion together, one pair per lane,
//   over the group's largest grid; a lane's value is read at its own corner, and its
//   backward starts there (cells beyond its shape get E = 0). Banded groups hold one
//   shape only (the band depends on the shape).
// - diagonal: few large pairs. One pair, its anti-diagonals in turn; the cells of an
//   anti-diagonal are independent, so they fill the lanes. The rows are cut into
//   bands (at most kMaxBand rows) walked one after the other; a pair can be shared by
//   all threads, which take the bands in turn and run them as a pipeline (a band
//   waits only for the progress of the band above it, or below it in the backward).
//
// Both keep the recursion in float64 for float32 inputs (as the scalar kernel) and
// the transition weights on a tape in the input dtype.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <climits>
#include <memory>
#include <numeric>
#include <type_traits>
#include <vector>

#include <immintrin.h>
#include <sys/mman.h>

#include <cstdlib>
#include <new>

#include "s2dtw_cpu_simd.h"
#include "thread_team.h"

#if defined(__clang__)
#if S2DTW_NATIVE_DOUBLES == 8
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#endif
#else
#pragma GCC push_options
#if S2DTW_NATIVE_DOUBLES == 8
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#else
#pragma GCC target("avx2,fma")
#endif
#endif

#include "simd_math.h"

namespace s2dtw::cpu::S2DTW_SIMD_NS {
namespace {

constexpr double kInf = __builtin_inf();
constexpr double kLn3 = 1.0986122886681098;

// Flush subnormals to zero (FTZ, DAZ) while a kernel runs on this thread, restored
// after. Far from the likely paths the weights and E underflow below 1e-308, and
// subnormal arithmetic is tens of times slower; zero changes nothing visible.
struct FlushSubnormals {
  unsigned saved = _mm_getcsr();
  FlushSubnormals() { _mm_setcsr(saved | 0x8040); }
  ~FlushSubnormals() { _mm_setcsr(saved); }
};

// Workspaces of one calling thread, kept between calls and grown when a call needs
// more: fresh pages cost a page fault each, which for these kernels is as much as
// the work. They are allocated here, outside the parallel region, so that running
// out of memory raises in the caller instead of terminating inside OpenMP.
// What every cache keeps counts against one budget, kept_workspace_bytes (over all
// threads, dtypes, regimes and instruction sets).
template <typename Workspace>
struct WorkspaceCache {
  std::vector<Workspace> spaces;
  int64_t counted = 0;  // this cache's share of kept_workspace_bytes
  ~WorkspaceCache() { kept_workspace_bytes -= counted; }
  void release() {
    std::vector<Workspace>().swap(spaces);
    kept_workspace_bytes -= counted;
    counted = 0;
  }
};

template <typename Workspace>
WorkspaceCache<Workspace>& workspace_cache() {
  thread_local WorkspaceCache<Workspace> cache;
  return cache;
}

template <typename Workspace>
std::vector<Workspace>& cached_workspaces(const Problem& pb, const void* grad, int threads) {
  std::vector<Workspace>& cache = workspace_cache<Workspace>().spaces;
  if (int(cache.size()) < threads) cache.resize(threads);
  for (int t = 0; t < threads; ++t) cache[t].reserve(pb, grad != nullptr);
  return cache;
}

// Past this many cached bytes in all, a call frees its workspaces at the end: a one-off
// huge call must not pin its memory for the life of the process, nor many idle threads.
constexpr int64_t kKeepBytes = int64_t(256) << 20;

template <typename Workspace>
void release_if_large(std::vector<Workspace>& spaces) {
  WorkspaceCache<Workspace>& cache = workspace_cache<Workspace>();
  int64_t now = 0;
  for (const Workspace& w : spaces) now += int64_t(w.bytes());
  const int64_t total = (kept_workspace_bytes += now - cache.counted);
  cache.counted = now;
  if (total > kKeepBytes) cache.release();
}

// Allocator of the large workspaces: 2 MiB aligned and marked for transparent huge
// pages. The diagonal regime reads and writes across anti-diagonals, a 4 KiB page
// per access on a large grid; with huge pages these stay within the TLB's reach.
constexpr size_t kHugePage = size_t(2) << 20;
template <typename T>
struct HugeAllocator {
  using value_type = T;
  HugeAllocator() = default;
  template <typename U>
  HugeAllocator(const HugeAllocator<U>&) {}
  static bool huge(size_t n) { return n * sizeof(T) >= 2 * kHugePage; }
  T* allocate(size_t n) {
    if (!huge(n)) {
      void* p = ::operator new(n * sizeof(T), std::align_val_t(64), std::nothrow);  // whole cache lines
      if (!p) throw OutOfMemory(n * sizeof(T));
      return static_cast<T*>(p);
    }
    const size_t bytes = (n * sizeof(T) + kHugePage - 1) / kHugePage * kHugePage;
    void* p = std::aligned_alloc(kHugePage, bytes);
    if (!p) throw OutOfMemory(bytes);
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);  // advice only: ignored where THP is off
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) {
    if (huge(n)) std::free(p);
    else ::operator delete(p, std::align_val_t(64));
  }
  template <typename U>
  bool operator==(const HugeAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const HugeAllocator<U>&) const { return false; }
};
template <typename T>
using Buffer = std::vector<T, HugeAllocator<T>>;

template <typename... V>
size_t capacity_bytes(const V&... v) {
  return (size_t(0) + ... + (v.capacity() * sizeof(typename V::value_type)));
}

template <typename T, typename A>
void grow(std::vector<T, A>& v, int64_t size) {
  if (int64_t(v.size()) < size) {
    v.clear();
    v.shrink_to_fit();
    v.resize(size);
  }
}

// The recursion's transition weights: float32 lanes for float32 inputs (their softmin
// takes its exp / log in float32, see simd_math.h), float64 lanes otherwise.
template <typename Scalar>
using Weights = std::conditional_t<std::is_same_v<Scalar, float>, VecF, Vec>;

// ---------------------------------------------------------------- gather

// Lane indices 0..kLanes-1, one native register of them per group member.
inline NativeI lane_iota(int g) {
  NativeI r;
  for (int l = 0; l < kNative; ++l) r[l] = g * kNative + l;
  return r;
}

// Masked gather of one native register: lanes where mask is set read base[idx]
// (converted to double), the others take src and touch no memory.
inline NativeD gather(const double* base, NativeI idx, NativeI mask, NativeD src) {
#if S2DTW_NATIVE_DOUBLES == 8
  return (NativeD)_mm512_mask_i64gather_pd((__m512d)src, _mm512_movepi64_mask((__m512i)mask), (__m512i)idx, base, 8);
#else
  return (NativeD)_mm256_mask_i64gather_pd((__m256d)src, base, (__m256i)idx, (__m256d)mask, 8);
#endif
}
inline NativeD gather(const float* base, NativeI idx, NativeI mask, NativeD src) {
#if S2DTW_NATIVE_DOUBLES == 8
  const __m256 f = _mm512_mask_i64gather_ps(_mm256_setzero_ps(), _mm512_movepi64_mask((__m512i)mask), (__m512i)idx,
                                            base, 4);
#else
  typedef int32_t I32 __attribute__((vector_size(16)));
  const __m128 f = _mm256_mask_i64gather_ps(_mm_setzero_ps(), base, (__m256i)idx,
                                            (__m128)__builtin_convertvector(mask, I32), 4);
#endif
  const NativeD v = __builtin_convertvector((NativeF)f, NativeD);
  return mask ? v : src;
}

// ---------------------------------------------------------------- lane transposes

// The lockstep costs and gradients move between each pair's rows and the [cell][lane]
// layout in register blocks: 8 lanes x 8 columns (float) or 4 x 4 (double), transposed
// with unpack / shuffle / permute, instead of one scalar copy per cell and lane.
inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
inline void transpose4(__m256d* r) {
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}
// Lanes k of the mask: k < count (count clamped to [0, 8] / [0, 4]).
inline __m256i prefix_mask32(int64_t count) {
  const int c = int(std::max<int64_t>(0, std::min<int64_t>(count, 8)));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(c), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256i prefix_mask64(int64_t count) {
  const int64_t c = std::max<int64_t>(0, std::min<int64_t>(count, 4));
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(c), _mm256_setr_epi64x(0, 1, 2, 3));
}
// Masked loads (zero elsewhere) and stores of elements [a, b) of 8 floats / 4 doubles:
// AVX-512 mask registers where there are. AVX2's vmaskmov stores are microcoded on AMD
// (a dozen or more cycles each); its partial stores are 16-, 8- and 4-byte pieces instead.
#if S2DTW_NATIVE_DOUBLES == 8
inline __mmask8 range_bits(int64_t a, int64_t b, int64_t n) {
  auto prefix = [n](int64_t c) { return c <= 0 ? 0u : c >= n ? (1u << n) - 1 : (1u << c) - 1; };
  return __mmask8(prefix(b) & ~prefix(a));
}
inline __m256 load_range(const float* p, int64_t a, int64_t b) { return _mm256_maskz_loadu_ps(range_bits(a, b, 8), p); }
inline __m256d load_range(const double* p, int64_t a, int64_t b) { return _mm256_maskz_loadu_pd(range_bits(a, b, 4), p); }
inline void store_range(float* p, int64_t a, int64_t b, __m256 v) { _mm256_mask_storeu_ps(p, range_bits(a, b, 8), v); }
inline void store_range(double* p, int64_t a, int64_t b, __m256d v) { _mm256_mask_storeu_pd(p, range_bits(a, b, 4), v); }
#else
inline __m256i range32(int64_t a, int64_t b) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const auto clamp = [](int64_t c) { return int(std::max<int64_t>(-1, std::min<int64_t>(c, 8))); };
  return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(clamp(a)), iota),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(clamp(b)), iota));
}
inline __m256i range64(int64_t a, int64_t b) {
  const __m256i iota = _mm256_setr_epi64x(0, 1, 2, 3);
  const auto clamp = [](int64_t c) { return std::max<int64_t>(-1, std::min<int64_t>(c, 4)); };
  return _mm256_andnot_si256(_mm256_cmpgt_epi64(_mm256_set1_epi64x(clamp(a)), iota),
                             _mm256_cmpgt_epi64(_mm256_set1_epi64x(clamp(b)), iota));
}
inline __m256 load_range(const float* p, int64_t a, int64_t b) { return _mm256_maskload_ps(p, range32(a, b)); }
inline __m256d load_range(const double* p, int64_t a, int64_t b) { return _mm256_maskload_pd(p, range64(a, b)); }
template <typename T, typename V>
inline void store_range(T* p, int64_t a, int64_t b, V v) {
  constexpr int64_t W = sizeof(V) / sizeof(T);
  a = std::max<int64_t>(a, 0);
  b = std::min(b, W);
  if (a >= b) return;
  if (b - a == W) {
    std::memcpy(p, &v, sizeof(V));
    return;
  }
  alignas(32) T t[W];
  std::memcpy(t, &v, sizeof(V));
  const char* from = reinterpret_cast<const char*>(t + a);
  char* to = reinterpret_cast<char*>(p + a);
  const int64_t bytes = (b - a) * int64_t(sizeof(T));  // < 32
  if (bytes & 16) std::memcpy(to, from, 16), to += 16, from += 16;
  if (bytes & 8) std::memcpy(to, from, 8), to += 8, from += 8;
  if (bytes & 4) std::memcpy(to, from, 4);
}
#endif
inline __m256 zero_outside(__m256 v, int64_t b) { return _mm256_and_ps(v, _mm256_castsi256_ps(prefix_mask32(b))); }
inline __m256d zero_outside(__m256d v, int64_t b) { return _mm256_and_pd(v, _mm256_castsi256_pd(prefix_mask64(b))); }

inline void store8d(double* p, __m256 x) {
#if S2DTW_NATIVE_DOUBLES == 8
  _mm512_storeu_pd(p, _mm512_cvtps_pd(x));
#else
  _mm256_storeu_pd(p, _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
  _mm256_storeu_pd(p + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
#endif
}
inline __m256 load8d(const double* p) {
#if S2DTW_NATIVE_DOUBLES == 8
  return _mm512_cvtpd_ps(_mm512_loadu_pd(p));
#else
  return _mm256_set_m128(_mm256_cvtpd_ps(_mm256_loadu_pd(p + 4)), _mm256_cvtpd_ps(_mm256_loadu_pd(p)));
#endif
}

// Row i of the lanes' costs into cb ([cell][lane], m columns), zero outside each
// lane's pair. Rows are contiguous (stride_j == 1).
inline void gather_row(float* cb, const float* const* rows, const int64_t* inside, int64_t m, int64_t i) {
  for (int l0 = 0; l0 < kLanes; l0 += 8) {
    const int64_t common = *std::min_element(inside + l0, inside + l0 + 8);
    for (int64_t j0 = 0; j0 < m; j0 += 8) {
      __m256 r[8];
      if (j0 + 8 <= common)
        for (int k = 0; k < 8; ++k) r[k] = _mm256_loadu_ps(rows[l0 + k] + j0);
      else
        for (int k = 0; k < 8; ++k) r[k] = load_range(rows[l0 + k] + j0, 0, inside[l0 + k] - j0);
      transpose8(r);
      const int jn = int(std::min<int64_t>(8, m - j0));
      float* at = cb + (i * m + j0) * kLanes + l0;
      for (int k = 0; k < jn; ++k) _mm256_storeu_ps(at + k * kLanes, r[k]);
    }
  }
}
inline void gather_row(double* cb, const double* const* rows, const int64_t* inside, int64_t m, int64_t i) {
  for (int l0 = 0; l0 < kLanes; l0 += 4) {
    const int64_t common = *std::min_element(inside + l0, inside + l0 + 4);
    for (int64_t j0 = 0; j0 < m; j0 += 4) {
      __m256d r[4];
      if (j0 + 4 <= common)
        for (int k = 0; k < 4; ++k) r[k] = _mm256_loadu_pd(rows[l0 + k] + j0);
      else
        for (int k = 0; k < 4; ++k) r[k] = load_range(rows[l0 + k] + j0, 0, inside[l0 + k] - j0);
      transpose4(r);
      const int jn = int(std::min<int64_t>(4, m - j0));
      double* at = cb + (i * m + j0) * kLanes + l0;
      for (int k = 0; k < jn; ++k) _mm256_storeu_pd(at + k * kLanes, r[k]);
    }
  }
}
// A register block of 8 floats or 4 doubles, for the blocked transposes.
template <typename T>
struct Block;
template <>
struct Block<float> {
  static constexpr int W = 8;
  using V = __m256;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const double* p) { return load8d(p); }  // narrowed to float
  static V zero() { return _mm256_setzero_ps(); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void transpose(V* r) { transpose8(r); }
};
template <>
struct Block<double> {
  static constexpr int W = 4;
  using V = __m256d;
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V zero() { return _mm256_setzero_pd(); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static void transpose(V* r) { transpose4(r); }
};

// Row i of the gradient of lanes [0, count) from dc ([cell][lane], rows < n and m
// columns valid), padded_m columns, zero outside each lane's pair.
template <typename T, typename Src>
inline void scatter_row(T* const* rows, const Src* dc, const int64_t* inside, int count, int64_t n, int64_t m,
                        int64_t padded_m, int64_t i) {
  using B = Block<T>;
  constexpr int W = B::W;
  for (int l0 = 0; l0 < count; l0 += W) {
    const int lanes = std::min(W, count - l0);
    const int64_t common = std::min(*std::min_element(inside + l0, inside + l0 + lanes), padded_m);
    for (int64_t j0 = 0; j0 < padded_m; j0 += W) {
      typename B::V r[W];
      const int jn = i < n ? int(std::max<int64_t>(0, std::min<int64_t>(W, m - j0))) : 0;
      const Src* at = dc + (i * m + j0) * kLanes + l0;
      for (int k = 0; k < W; ++k) r[k] = k < jn ? B::load(at + k * kLanes) : B::zero();
      B::transpose(r);
      if (j0 + W <= common) {
        for (int k = 0; k < lanes; ++k) B::store(rows[l0 + k] + j0, r[k]);
        continue;
      }
      for (int k = 0; k < lanes; ++k) store_range(rows[l0 + k] + j0, 0, padded_m - j0, zero_outside(r[k], inside[l0 + k] - j0));
    }
  }
}

// ---------------------------------------------------------------- lockstep

// Buffers laid out [cell][lane]: the cost in the input dtype (widened to float64 as it
// is loaded), the smoothed cost, d value / d D and the gradient through the smoothing
// in float64, d value / d C without smoothing in the input dtype; the tape
// [grid cell][2][lane] in the input dtype.
template <typename Scalar>
struct LockstepWorkspace {
  Buffer<Scalar> cost, gs;
  Buffer<double> smooth, rows, g, dc;
  Buffer<Scalar> tape;
  size_t bytes() const { return capacity_bytes(cost, gs, smooth, rows, g, dc, tape); }
  void reserve(const Problem& pb, bool with_grad) {
    const int64_t cells = pb.padded_n * pb.padded_m * kLanes;
    const int64_t P = grid_extent(pb, pb.padded_n), Q = grid_extent(pb, pb.padded_m);
    grow(cost, cells);
    if (pb.smooth) grow(smooth, cells);
    grow(rows, 2 * (Q + 1) * kLanes);
    if (with_grad) {
      if (pb.smooth) grow(g, cells);
      else grow(gs, cells);
      if (pb.smooth) grow(dc, cells);
      grow(tape, 2 * P * Q * kLanes);
    }
  }
};

// D[i, j] of every lane from the [cell][lane] cost of an (n, m) block; w (nullable)
// receives the smoothing weights of (left, up, diagonal).
template <typename T>
inline Vec smooth_cell(const Problem& pb, const T* c, int64_t m, int64_t i, int64_t j, Vec* w) {
  const Vec here = Vec::load(c + (i * m + j) * kLanes);
  const Vec s = Vec::splat(pb.smoothing);
  if (i == 0 && j == 0) {
    if (w) w[0] = w[1] = w[2] = Vec::splat(0.0);
    return here - s * Vec::splat(kLn3);
  }
  const Vec inf = Vec::splat(kInf);
  const Vec left = j > 0 ? Vec::load(c + (i * m + j - 1) * kLanes) : inf;
  const Vec up = i > 0 ? Vec::load(c + ((i - 1) * m + j) * kLanes) : inf;
  const Vec diag = i > 0 && j > 0 ? Vec::load(c + ((i - 1) * m + j - 1) * kLanes) : inf;
  return here + softmin3(left, up, diag, s, Vec::splat(1.0 / pb.smoothing), w, w ? w + 1 : nullptr,
                         w ? w + 2 : nullptr);
}

// One group of up to kLanes pairs (members[0..count)); unused lanes repeat the last pair.
template <typename Scalar>
void lockstep_group(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, const int64_t* members,
                    int count, LockstepWorkspace<Scalar>& ws) {
  int64_t lane_pair[kLanes], lane_n[kLanes], lane_m[kLanes];
  int64_t n = 0, m = 0;
  for (int l = 0; l < kLanes; ++l) {
    lane_pair[l] = members[std::min(l, count - 1)];
    lane_n[l] = pb.pair_n[lane_pair[l]];
    lane_m[l] = pb.pair_m[lane_pair[l]];
    n = std::max(n, lane_n[l]);
    m = std::max(m, lane_m[l]);
  }
  // Gather the costs, zero outside each lane's own pair (those cells never reach its value).
  // Row by row (a row of every lane stays in cache), each lane's row read in order.
  Scalar* cb = ws.cost.data();
  for (int64_t i = 0; i < n; ++i) {
    if (pb.stride_j == 1) {
      const Scalar* rows[kLanes];
      int64_t inside[kLanes];
      for (int l = 0; l < kLanes; ++l) {
        inside[l] = i < lane_n[l] ? lane_m[l] : 0;
        rows[l] = cost + pair_offset(pb, lane_pair[l]) + (i < lane_n[l] ? i * pb.stride_i : 0);
      }
      gather_row(cb, rows, inside, m, i);
      continue;
    }
    for (int l = 0; l < kLanes; ++l) {
      const Scalar* row = cost + pair_offset(pb, lane_pair[l]) + i * pb.stride_i;
      const int64_t inside = i < lane_n[l] ? lane_m[l] : 0;
      for (int64_t j = 0; j < m; ++j) cb[(i * m + j) * kLanes + l] = j < inside ? row[j * pb.stride_j] : Scalar(0);
    }
  }
  const double* sb = nullptr;  // the smoothed cost, else the cost cb
  if (pb.smooth) {
    double* out = ws.smooth.data();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) smooth_cell(pb, cb, m, i, j, nullptr).store(out + (i * m + j) * kLanes);
    sb = out;
  }

  const int64_t P = grid_extent(pb, n), Q = grid_extent(pb, m);
  const int64_t width = band_width(pb, P, Q);  // banded groups hold a single shape
  const Vec gamma = Vec::splat(pb.gamma), inv_gamma = Vec::splat(1.0 / pb.gamma);
  const Vec null_cost = Vec::splat(pb.threshold);
  Scalar* tape = grad ? ws.tape.data() : nullptr;

  // Forward: R rows at index q + 1, as the scalar kernel.
  double* above = ws.rows.data();
  double* here = above + (Q + 1) * kLanes;
  std::fill(above, above + 2 * (Q + 1) * kLanes, kInf);
  std::fill(above, above + kLanes, 0.0);
  for (int64_t p = 0; p < P; ++p) {
    const Columns cols = band_columns(P, Q, width, p);
    Vec::splat(kInf).store(here + cols.lo * kLanes);
    for (int64_t q = cols.lo; q <= cols.hi; ++q) {
      Weights<Scalar> w[2];
      const Vec soft = softmin3(Vec::load(above + q * kLanes), Vec::load(above + (q + 1) * kLanes),
                                Vec::load(here + q * kLanes), gamma, inv_gamma, tape ? w : nullptr, w + 1, nullptr);
      Vec cell = null_cost;
      if (is_cost_cell(pb, p, q)) {
        const int64_t at = (cost_index(pb, p) * m + cost_index(pb, q)) * kLanes;
        cell = sb ? Vec::load(sb + at) : Vec::load(cb + at);
      }
      (soft + cell).store(here + (q + 1) * kLanes);
      if (tape) {
        w[0].store(tape + (p * Q + q) * 2 * kLanes);
        w[1].store(tape + ((p * Q + q) * 2 + 1) * kLanes);
      }
    }
    for (int l = 0; l < count; ++l)
      if (grid_extent(pb, lane_n[l]) - 1 == p) value[lane_pair[l]] = Scalar(here[grid_extent(pb, lane_m[l]) * kLanes + l]);
    std::swap(above, here);
  }
  if (!grad) return;

  // Backward: E rows; a lane's E is 1 at its own corner and 0 beyond its grid.
  double lane_last_p[kLanes], lane_last_q[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    lane_last_p[l] = double(grid_extent(pb, lane_n[l]) - 1);
    lane_last_q[l] = double(grid_extent(pb, lane_m[l]) - 1);
  }
  const Vec last_p = Vec::load(lane_last_p), last_q = Vec::load(lane_last_q);
  const Vec zero = Vec::splat(0.0), one = Vec::splat(1.0);
  // d value / d D (float64, with smoothing) or d value / d C (input dtype); without
  // weak alignment or a band every cell is written below.
  double* gb = pb.smooth ? ws.g.data() : nullptr;
  Scalar* gsb = pb.smooth ? nullptr : ws.gs.data();
  if (pb.weak || pb.banded) {
    if (gb) std::fill(gb, gb + n * m * kLanes, 0.0);
    else std::fill(gsb, gsb + n * m * kLanes, Scalar(0));
  }
  double* below = ws.rows.data();
  here = below + (Q + 1) * kLanes;
  for (int64_t p = P - 1; p >= 0; --p) {
    const Scalar* tape_here = tape + p * Q * 2 * kLanes;
    const Scalar* tape_below = tape_here + Q * 2 * kLanes;
    const Columns cols = band_columns(P, Q, width, p);
    const Columns next = p + 1 < P ? band_columns(P, Q, width, p + 1) : Columns{1, 0};
    const Vec pv = Vec::splat(double(p));
    const Mask row_in = less(pv, last_p + one), row_last = equal(pv, last_p);
    for (int64_t q = cols.hi; q >= cols.lo; --q) {
      Vec e = zero;
      if (q >= next.lo && q <= next.hi)
        e = e + Vec::load(below + q * kLanes) * Vec::load(tape_below + (2 * q + 1) * kLanes);
      if (q + 1 >= next.lo && q + 1 <= next.hi)
        e = e + Vec::load(below + (q + 1) * kLanes) * Vec::load(tape_below + 2 * (q + 1) * kLanes);
      if (q + 1 <= cols.hi) {
        const Vec from_left = one - Vec::load(tape_here + 2 * (q + 1) * kLanes) -
                              Vec::load(tape_here + (2 * (q + 1) + 1) * kLanes);
        e = e + Vec::load(here + (q + 1) * kLanes) * vmax(from_left, zero);
      }
      const Vec qv = Vec::splat(double(q));
      e = select(row_last & equal(qv, last_q), one, e);
      e = select(row_in & less(qv, last_q + one), e, zero);
      e.store(here + q * kLanes);
      if (is_cost_cell(pb, p, q)) {
        const int64_t at = (cost_index(pb, p) * m + cost_index(pb, q)) * kLanes;
        if (gb) e.store(gb + at);
        else e.store(gsb + at);
      }
    }
    std::swap(below, here);
  }

  // Through the smoothing: dC[k, l] collects G[i, j] times d D[i, j] / d C[k, l].
  const double* dc = nullptr;
  if (pb.smooth) {
    double* out = ws.dc.data();
    std::fill(out, out + n * m * kLanes, 0.0);
    auto add = [&](int64_t i, int64_t j, const Vec& v) {
      double* at = out + (i * m + j) * kLanes;
      (Vec::load(at) + v).store(at);
    };
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) {
        const Vec gij = Vec::load(gb + (i * m + j) * kLanes);
        Vec w[3];
        smooth_cell(pb, cb, m, i, j, w);
        add(i, j, gij);
        if (j > 0) add(i, j - 1, gij * w[0]);
        if (i > 0) add(i - 1, j, gij * w[1]);
        if (i > 0 && j > 0) add(i - 1, j - 1, gij * w[2]);
      }
    dc = out;
  }
  auto write_back = [&](const auto* dc) {
  for (int64_t i = 0; i < pb.padded_n; ++i) {
    if (pb.stride_j == 1) {
      Scalar* rows[kLanes];
      int64_t inside[kLanes];
      for (int l = 0; l < count; ++l) {
        inside[l] = i < lane_n[l] ? lane_m[l] : 0;
        rows[l] = grad + pair_offset(pb, lane_pair[l]) + i * pb.stride_i;
      }
      scatter_row(rows, dc, inside, count, n, m, pb.padded_m, i);
      continue;
    }
    for (int l = 0; l < count; ++l) {
      Scalar* row = grad + pair_offset(pb, lane_pair[l]) + i * pb.stride_i;
      const int64_t inside = i < lane_n[l] ? lane_m[l] : 0;
      for (int64_t j = 0; j < pb.padded_m; ++j)
        row[j * pb.stride_j] = j < inside ? Scalar(dc[(i * m + j) * kLanes + l]) : Scalar(0);
    }
  }
  };
  if (dc) write_back(dc);
  else write_back(static_cast<const Scalar*>(gsb));
}

// Pairs sorted by shape, cut into groups of kLanes (banded: one shape per group).
std::vector<int64_t> lockstep_groups(const Problem& pb, std::vector<int64_t>& order) {
  order.resize(pb.n_pairs);
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return pb.pair_n[a] != pb.pair_n[b] ? pb.pair_n[a] < pb.pair_n[b] : pb.pair_m[a] < pb.pair_m[b];
  });
  std::vector<int64_t> starts;
  for (int64_t k = 0; k < pb.n_pairs; ++k) {
    const bool new_shape = k > 0 && (pb.pair_n[order[k]] != pb.pair_n[order[k - 1]] ||
                                     pb.pair_m[order[k]] != pb.pair_m[order[k - 1]]);
    if (starts.empty() || k - starts.back() == kLanes || (pb.banded && new_shape)) starts.push_back(k);
  }
  starts.push_back(pb.n_pairs);
  return starts;
}

template <typename Scalar>
void run_lockstep(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int threads) {
  std::vector<int64_t> order;
  const std::vector<int64_t> starts = lockstep_groups(pb, order);
  const int64_t groups = int64_t(starts.size()) - 1;
  threads = useful_threads(threads, groups);
  std::vector<LockstepWorkspace<Scalar>>& workspaces = cached_workspaces<LockstepWorkspace<Scalar>>(pb, grad, threads);
#pragma omp parallel num_threads(threads)
  {
    LockstepWorkspace<Scalar>& ws = workspaces[team_rank()];
    const FlushSubnormals flush;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < groups; ++k)
      lockstep_group(pb, cost, value, grad, order.data() + starts[k], int(starts[k + 1] - starts[k]), ws);
  }
  release_if_large(workspaces);
}

// ---------------------------------------------------------------- diagonal

// Anti-diagonal d = p + q of a P x Q grid: cells p in [lo, hi] (inside the band).
// Arrays over a diagonal are indexed by slot s = p + 1 (slot 0: row -1).
struct Diagonal {
  int64_t lo, hi;
};
inline Diagonal diagonal(int64_t P, int64_t Q, int64_t width, int64_t d) {
  int64_t lo = std::max<int64_t>(0, d - Q + 1), hi = std::min<int64_t>(d, P - 1);
  if (P > 1 || Q > 1) {  // |p (Q-1) - q (P-1)| <= width with q = d - p, as band_columns
    const int64_t span = P + Q - 2, centre = d * (P - 1);
    lo = std::max(lo, -floor_div(width - centre, span));
    hi = std::min(hi, floor_div(centre + width, span));
  }
  return {lo, hi};
}

// Progress of one band of rows through its anti-diagonals, on its own cache line.
struct alignas(64) Progress {
  std::atomic<int64_t> d{0};
};

// Rows per band of a P-row grid shared by `threads` threads: about four bands per
// thread, whole vectors, at most kMaxBand rows: the rows a band walks (cost reads,
// gradient writes across its anti-diagonals) then stay in L1 and in the TLB's reach.
constexpr int64_t kMaxBand = (256 + kLanes - 1) / kLanes * kLanes;
inline int64_t band_rows(int64_t P, int threads) {
  const int64_t round = (P + kLanes - 1) / kLanes * kLanes;
  const int64_t h = threads == 1 ? round : (P / (4 * threads) + kLanes - 1) / kLanes * kLanes;
  return std::min({round, kMaxBand, std::max<int64_t>(2 * kLanes, h)});
}

// One pair's buffers: smoothed cost D and d value / d D (n x m, row-major); per
// thread, three anti-diagonals of R (forward) or E (backward) indexed by slot; per
// band, the boundary row it shares with its neighbour and its progress; the tape
// (weights of the (diagonal, up) predecessors) by diagonal slot, diagonal d's
// segment covering slots [lo - kLanes, hi + 2 + kLanes); per thread, E of the band
// it is on, by diagonal. The threads sharing a pair take its pieces of work (bands
// of rows, chunks of rows of the smoothing) from work counters, and meet at the
// barrier between the phases (set-up, forward, backward, gradient).
enum Phase { kSmoothCost, kForward, kBackward, kSmoothGrad, kPhases };
template <typename Scalar>
struct DiagonalWorkspace {
  Buffer<double> d, g, diags, rows;
  Buffer<Scalar> tape_diag, tape_up, e_band, c_band;
  std::vector<int64_t> offset;
  std::unique_ptr<Progress[]> progress;
  int64_t progress_size = 0;
  SpinBarrier barrier;
  WorkCounter work[kPhases];
  size_t bytes() const { return capacity_bytes(d, g, diags, rows, tape_diag, tape_up, e_band, c_band, offset); }
  DiagonalWorkspace() = default;
  DiagonalWorkspace(DiagonalWorkspace&&) noexcept {}
  static int64_t diag_stride(int64_t P, int threads) { return P + band_rows(P, threads) + 2 * kLanes + 4; }
  // E of one band, by diagonal: H slots for each of its H + Q - 1 diagonals.
  static int64_t e_band_size(int64_t P, int64_t Q, int threads) {
    const int64_t H = band_rows(P, threads);
    return H * (H + Q);
  }
  void reserve(const Problem& pb, bool with_grad, int threads = 1) {
    const int64_t P = grid_extent(pb, pb.padded_n), Q = grid_extent(pb, pb.padded_m);
    if (pb.smooth) grow(d, pb.padded_n * pb.padded_m);
    const int64_t bands = P / (2 * kLanes) + 2;  // band_rows >= 2 kLanes (or one band)
    grow(diags, int64_t(threads) * 3 * diag_stride(P, threads));
    grow(rows, bands * (Q + 2));
    if (progress_size < bands) {
      progress.reset(new Progress[bands]);
      progress_size = bands;
    }
    grow(offset, P + Q + 1);
    if (!pb.smooth && !pb.weak && !pb.banded) grow(c_band, int64_t(threads) * e_band_size(P, Q, threads));
    if (with_grad) {
      if (pb.smooth) grow(g, pb.padded_n * pb.padded_m);
      const int64_t tape = P * Q + (P + Q) * (2 * kLanes + 3);
      grow(tape_diag, tape);
      grow(tape_up, tape);
      grow(e_band, int64_t(threads) * e_band_size(P, Q, threads) + 16 * band_rows(P, threads));  // + slack of unskew8
    }
  }
};

// Rows [i, i + kChunkRows) of a row pass (smoothing) are one piece of work.
constexpr int64_t kChunkRows = 8;

// One pair by anti-diagonals, run together by the `team` threads of the parallel
// region (tid is this one); the workspace was sized for `threads` >= team threads.
template <typename Scalar>
void diagonal_pair(const Problem& pb, int64_t b, const Scalar* cost, Scalar* value, Scalar* grad,
                   DiagonalWorkspace<Scalar>& ws, int tid, int team, int threads) {
  const int64_t n = pb.pair_n[b], m = pb.pair_m[b];
  const int64_t P = grid_extent(pb, n), Q = grid_extent(pb, m), last_d = P + Q - 2;
  const int64_t width = band_width(pb, P, Q);
  const CostView<double, Scalar> view{cost + pair_offset(pb, b), pb.stride_i, pb.stride_j};
  Scalar* out = grad ? grad + pair_offset(pb, b) : nullptr;
  const Scalar* src = cost + pair_offset(pb, b);
  const int64_t H = band_rows(P, threads), bands = (P + H - 1) / H;
  // Chunks of kChunkRows rows of [0, rows) to whichever thread is free.
  auto for_rows = [&](Phase phase, int64_t rows, auto body) {
    for (int64_t i0; (i0 = ws.work[phase].take() * kChunkRows) < rows;)
      for (int64_t i = i0; i < std::min(rows, i0 + kChunkRows); ++i) body(i);
  };
  if (tid == 0) {
    for (WorkCounter& w : ws.work) w.next.store(0, std::memory_order_relaxed);
    int64_t at = 0;
    for (int64_t d = 0; d <= last_d; ++d) {
      const Diagonal dg = diagonal(P, Q, width, d);
      ws.offset[d] = at + kLanes - dg.lo;  // slot s of diagonal d at offset[d] + s
      at += std::max<int64_t>(dg.hi - dg.lo + 1, 0) + 2 + 2 * kLanes;
    }
    std::fill(ws.rows.begin(), ws.rows.begin() + bands * (Q + 2), kInf);
    for (int64_t k = 0; k < bands; ++k) ws.progress[k].d.store(-1, std::memory_order_relaxed);
  }
  ws.barrier.wait(team);
  // Without smoothing the grid cells are read straight from the cost; with it, D is
  // computed once, row-major.
  double* D = ws.d.data();
  if (pb.smooth) {
    for_rows(kSmoothCost, n, [&](int64_t i) {
      for (int64_t j = 0; j < m; ++j) D[i * m + j] = smoothed_cost(pb, view, i, j, (double*)nullptr);
    });
    ws.barrier.wait(team);
  }

  // The rows are cut into bands of H rows, the next band to the first free thread
  // (a band's thread only waits for bands taken before it: no deadlock). A band
  // walks its part of every anti-diagonal; it needs the row above it (forward) or
  // below it (backward) one and two diagonals back, which its neighbour band leaves
  // in a boundary row and announces through its progress: no barrier per diagonal.
  const int64_t stride = ws.diag_stride(P, threads);
  double* mine = ws.diags.data() + tid * 3 * stride;
  double* buf[3] = {mine, mine + stride, mine + 2 * stride};
  Scalar* tape_a = grad ? ws.tape_diag.data() : nullptr;
  Scalar* tape_b = grad ? ws.tape_up.data() : nullptr;
  const Vec gamma = Vec::splat(pb.gamma), inv_gamma = Vec::splat(1.0 / pb.gamma);
  const Vec inf = Vec::splat(kInf), zero = Vec::splat(0.0), one = Vec::splat(1.0);
  double lane_index[kLanes];
  for (int l = 0; l < kLanes; ++l) lane_index[l] = l;
  const Vec iota = Vec::load(lane_index);
  NativeI iota_i[kGroup];
  S2DTW_EACH iota_i[g] = lane_iota(g);
  // Lanes of slots [s, s + kLanes) holding cells of the diagonal (rows lo..hi).
  auto inside_mask = [&](const Diagonal& dg, int64_t s) {
    const Vec p = iota + Vec::splat(double(s - 1));
    return less(Vec::splat(double(dg.lo) - 1.0), p) & less(p, Vec::splat(double(dg.hi) + 1.0));
  };

  // Slots [s, s + kLanes) of diagonal d: which lanes hold a cost cell inside the
  // diagonal (row p = slot - 1 in [lo, hi]), and that cell's index i * si + j * sj.
  // Lane l has p = s - 1 + l, q = d - p: the index is a scalar plus a per-lane offset
  // from a table (AVX2 has no 64-bit vector multiply; it would be emulated). With the
  // weak grid, i = p >> 1 and j = q >> 1, whose lane offsets depend on the parities of
  // s - 1 and of d - s + 1 only (p >> 1 = ((s-1) >> 1) + ((l + (s-1) & 1) >> 1),
  // q >> 1 = ((d-s+1) >> 1) - ((l + 1 - (d-s+1) & 1) >> 1)).
  struct CellIndex {
    NativeI idx[kGroup], mask[kGroup];
  };
  struct LaneOffsets {
    NativeI step[kGroup], i_half[2][kGroup], j_half[2][kGroup];
  };
  auto lane_offsets = [&](int64_t si, int64_t sj) {
    LaneOffsets o;
    int64_t step[kLanes], ih[2][kLanes], jh[2][kLanes];
    for (int l = 0; l < kLanes; ++l) {
      step[l] = l * (si - sj);
      for (int par = 0; par < 2; ++par) {
        ih[par][l] = ((l + par) >> 1) * si;
        jh[par][l] = ((l + 1 - par) >> 1) * sj;
      }
    }
    std::memcpy(o.step, step, sizeof(step));
    std::memcpy(o.i_half, ih, sizeof(ih));
    std::memcpy(o.j_half, jh, sizeof(jh));
    return o;
  };
  const LaneOffsets cost_offsets = lane_offsets(pb.stride_i, pb.stride_j), d_offsets = lane_offsets(m, 1);
  auto cell_index = [&](int64_t d, const Diagonal& dg, int64_t s, int64_t si, int64_t sj, const LaneOffsets& o) {
    CellIndex r;
    const int64_t a = s - 1, c = d - s + 1;  // p and q of lane 0
    const int64_t base = pb.weak ? (a >> 1) * si + (c >> 1) * sj : a * si + c * sj;
    S2DTW_EACH {
      const NativeI p = iota_i[g] + a;
      const NativeI inside = (p >= (NativeI{} + dg.lo)) & (p <= (NativeI{} + dg.hi));
      if (!pb.weak) {
        r.idx[g] = o.step[g] + base;
        r.mask[g] = inside;
      } else {
        const NativeI q = (NativeI{} + d) - p;
        r.mask[g] = inside & (((p & q) & 1) != 0);
        r.idx[g] = o.i_half[a & 1][g] - o.j_half[c & 1][g] + base;
      }
    }
    return r;
  };
  // The grid cells of slots [s, s + kLanes) of diagonal d (the null cost off the cost cells).
  const NativeD null_cost = NativeD{} + pb.threshold;
  // Without smoothing, weak alignment or a band, each band first copies its rows of
  // the cost by diagonal (as e_band): contiguous loads instead of vector gathers.
  const bool skewed = !pb.smooth && !pb.weak && !pb.banded;
  Scalar* c_band = skewed ? ws.c_band.data() + tid * ws.e_band_size(P, Q, threads) : nullptr;
  int64_t c_r0 = 0;
  auto skew = [&](int64_t r0, int64_t r1) {
    constexpr int64_t kRows = 16;
    const int64_t H = band_rows(P, threads);
    int64_t i_first = r0;
    // W rows at a time (contiguous rows): row t's W columns from c - ib - t, transposed,
    // are W slots of diagonals c .. c + W - 1 (the mirror of unskew's blocks).
    using B = Block<Scalar>;
    constexpr int W = B::W;
    if (pb.stride_j == 1)
      for (; i_first + W <= r1; i_first += W) {
        const int64_t ib = i_first, c_end = ib + W - 1 + m - 1;
        for (int64_t c = ib; c <= c_end; c += W) {
          typename B::V r[W];
          for (int t = 0; t < W; ++t) {
            const int64_t j = c - ib - t;  // the column of row ib + t on diagonal c
            const Scalar* row = src + (ib + t) * pb.stride_i;
            r[t] = j >= 0 && j + W <= m ? B::load(row + j) : load_range(row + j, -j, m - j);
          }
          B::transpose(r);
          for (int u = 0; u < W && c + u <= c_end; ++u) B::store(c_band + (c + u - r0) * H + (ib - r0), r[u]);
        }
      }
    for (int64_t i0 = i_first; i0 < r1; i0 += kRows) {
      const int64_t rows = std::min(kRows, r1 - i0);
      for (int64_t c = i0; c < i0 + rows - 1 + m; ++c) {
        const int64_t k_lo = std::max<int64_t>(0, c - i0 - (m - 1)), k_hi = std::min(rows - 1, c - i0);
        Scalar* dst = c_band + (c - r0) * H + (i0 - r0);
        const Scalar* from = src + i0 * pb.stride_i + (c - i0) * pb.stride_j;
        for (int64_t k = k_lo; k <= k_hi; ++k) dst[k] = from[k * (pb.stride_i - pb.stride_j)];
      }
    }
    c_r0 = r0;
  };
  auto load_cells = [&](int64_t d, const Diagonal& dg, int64_t s) {
    Vec r;
    if (skewed) return Vec::load(c_band + (d - c_r0) * band_rows(P, threads) + (s - 1 - c_r0));
    if (pb.smooth) {
      const CellIndex ci = cell_index(d, dg, s, m, 1, d_offsets);
      S2DTW_EACH r.v[g] = gather(D, ci.idx[g], ci.mask[g], null_cost);
    } else {
      const CellIndex ci = cell_index(d, dg, s, pb.stride_i, pb.stride_j, cost_offsets);
      S2DTW_EACH r.v[g] = gather(src, ci.idx[g], ci.mask[g], null_cost);
    }
    return r;
  };
  auto wait_for_band = [&](int64_t band, auto done, int64_t& seen) {
    if (done(seen)) return;
    wait_until([&] { return done(seen = ws.progress[band].d.load(std::memory_order_acquire)); });
  };

  // Forward. Slot r0 of a band (row r0 - 1) comes from the band above; above band 0
  // is row -1: R[-1][-1] = 0, +inf elsewhere. Slots a band reads outside the
  // diagonal's cells are +inf (masked lanes, and the two set after each diagonal).
  for (int64_t k; (k = ws.work[kForward].take()) < bands;) {
    const int64_t r0 = k * H, r1 = std::min(P, r0 + H);
    const double* above = ws.rows.data() + k * (Q + 2);  // R[r0 - 1][q] at q + 1
    double* below = ws.rows.data() + (k + 1) * (Q + 2);  // R[r1 - 1][q] at q + 1
    for (double* bb : buf) std::fill(bb + r0, bb + r0 + H + 2, kInf);
    if (skewed) skew(r0, r1);
    int64_t seen = -1;
    const int64_t d_end = r1 - 1 + Q - 1;
    for (int64_t d = r0; d <= d_end; ++d) {
      double* prev2 = buf[d % 3];
      double* prev1 = buf[(d + 1) % 3];
      double* cur = buf[(d + 2) % 3];
      const int64_t q = d - r0;  // row r0 - 1: column q on diagonal d - 1, q - 1 on d - 2
      if (k == 0) {
        prev1[0] = kInf;
        prev2[0] = d == 0 ? 0.0 : kInf;
      } else {
        wait_for_band(k - 1, [&](int64_t v) { return v >= d - 1; }, seen);
        prev1[r0] = q < Q ? above[q + 1] : kInf;
        prev2[r0] = q - 1 < Q ? above[q] : kInf;
      }
      const Diagonal dg = diagonal(P, Q, width, d);
      const int64_t first = std::max(dg.lo, r0), last = std::min(dg.hi, r1 - 1);
      if (first <= last)
        for (int64_t s = r0 + 1 + (first - r0) / kLanes * kLanes; s - 1 <= last; s += kLanes) {
          Weights<Scalar> w[2];
          const Vec soft = softmin3(Vec::load(prev2 + s - 1), Vec::load(prev1 + s - 1), Vec::load(prev1 + s), gamma,
                                    inv_gamma, tape_a ? w : nullptr, w + 1, nullptr);
          const Mask inside = inside_mask(dg, s);
          select(inside, soft + load_cells(d, dg, s), inf).store(cur + s);
          if (tape_a) {
            select(inside, w[0], Weights<Scalar>{}).store(tape_a + ws.offset[d] + s);
            select(inside, w[1], Weights<Scalar>{}).store(tape_b + ws.offset[d] + s);
          }
        }
      if (dg.lo - 1 >= r0 && dg.lo - 1 < r1) cur[dg.lo] = kInf;
      if (dg.hi + 1 >= r0 && dg.hi + 1 < r1) cur[dg.hi + 2] = kInf;
      if (k + 1 < bands && r1 - 1 >= dg.lo && r1 - 1 <= dg.hi) below[d - (r1 - 1) + 1] = cur[r1];
      ws.progress[k].d.store(d, std::memory_order_release);
    }
    ws.progress[k].d.store(INT64_MAX, std::memory_order_release);
    if (r1 == P) value[b] = Scalar(buf[(last_d + 2) % 3][P]);
  }
  ws.barrier.wait(team);
  if (!grad) return;  // (the barrier above: the next pair reuses the workspace)
  if (tid == 0) {
    std::fill(ws.rows.begin(), ws.rows.begin() + bands * (Q + 2), 0.0);
    for (int64_t k = 0; k < bands; ++k) ws.progress[k].d.store(last_d + 1, std::memory_order_relaxed);
  }
  // Each band's E goes, once the band is done, to G (with smoothing) or straight to
  // the gradient, rows [i_first, i_last) of the cost; the padding rows get zeros.
  double* G = ws.g.data();
  Scalar* e_band = ws.e_band.data() + tid * ws.e_band_size(P, Q, threads);
  if (!pb.smooth)
    for (int64_t i = n + tid; i < pb.padded_n; i += team)
      for (int64_t j = 0; j < pb.padded_m; ++j) out[i * pb.stride_i + j * pb.stride_j] = Scalar(0);
  // E of cost cell (i, j) in the band of rows [r0, r1) (0 outside the Sakoe-Chiba
  // band), rows of kRows filled diagonal by diagonal: each diagonal's run of slots
  // is a cache line or two, while the kRows rows written stay in L1.
  constexpr int64_t kRows = 16;
  auto unskew = [&](auto* dst, int64_t dst_si, int64_t dst_sj, int64_t cols, int64_t r0, int64_t r1) {
    using T = std::remove_pointer_t<decltype(dst)>;
    const int64_t i_first = pb.weak ? r0 / 2 : r0, i_last = std::min(n, pb.weak ? (r1 - 2) / 2 + 1 : r1);
    const int64_t H = band_rows(P, threads);
    for (int64_t i0 = i_first; i0 < i_last; i0 += kRows) {
      const int64_t rows = std::min(kRows, i_last - i0);
      int64_t lo[kRows], hi[kRows];  // cost columns of each row inside the Sakoe-Chiba band
      int64_t c_lo = INT64_MAX, c_hi = INT64_MIN;
      for (int64_t k = 0; k < rows; ++k) {
        const int64_t i = i0 + k;
        const Columns c = band_columns(P, Q, width, pb.weak ? 2 * i + 1 : i);
        lo[k] = pb.weak ? c.lo / 2 : c.lo;  // 2j + 1 >= c.lo
        hi[k] = std::min(pb.weak ? (c.hi - 1) >> 1 : c.hi, m - 1);
        T* row = dst + i * dst_si;
        for (int64_t j = 0; j < std::min(lo[k], cols); ++j) row[j * dst_sj] = T(0);
        for (int64_t j = std::max<int64_t>(hi[k] + 1, 0); j < cols; ++j) row[j * dst_sj] = T(0);
        if (lo[k] <= hi[k]) {
          c_lo = std::min(c_lo, i + lo[k]);
          c_hi = std::max(c_hi, i + hi[k]);
        }
      }
      int64_t k_first = 0;
      if constexpr (std::is_same_v<T, Scalar>) {
        // W rows at a time: W diagonals of W slots, transposed, are W columns of each
        // row (row t from column c - i - t): one vector store per row instead of W.
        using B = Block<T>;
        constexpr int W = B::W;
        if (!pb.weak && dst_sj == 1)
          for (; k_first + W <= rows; k_first += W) {
            const int64_t ib = i0 + k_first;
            int64_t cs = INT64_MAX, ce = INT64_MIN;
            for (int t = 0; t < W; ++t)
              if (lo[k_first + t] <= hi[k_first + t]) {
                cs = std::min(cs, ib + t + lo[k_first + t]);
                ce = std::max(ce, ib + t + hi[k_first + t]);
              }
            for (int64_t c = cs; c <= ce; c += W) {
              typename B::V r[W];
              const T* from = e_band + (c - r0) * H + (ib - r0);
              for (int u = 0; u < W; ++u) r[u] = B::load(from + u * H);
              B::transpose(r);
              for (int t = 0; t < W; ++t) {
                const int64_t j = c - ib - t, l = lo[k_first + t], h = hi[k_first + t];
                if (j + W - 1 < l || j > h) continue;
                T* at = dst + (ib + t) * dst_si + j;
                if (j >= l && j + W - 1 <= h) {
                  B::store(at, r[t]);
                } else {
                  store_range(at, l - j, h + 1 - j, r[t]);
                }
              }
            }
          }
      }
      for (int64_t c = c_lo; c <= c_hi; ++c)  // cost cells (i, j) with i + j = c
        for (int64_t k = k_first; k < rows; ++k) {
          const int64_t i = i0 + k, j = c - i;
          if (j < lo[k] || j > hi[k]) continue;
          const int64_t p = pb.weak ? 2 * i + 1 : i, q = pb.weak ? 2 * j + 1 : j;
          dst[i * dst_si + j * dst_sj] = T(e_band[(p + q - r0) * H + (p - r0)]);
        }
    }
  };
  ws.barrier.wait(team);

  // Backward: E by diagonals from the corner, bands from the bottom; slot r1 + 1 of a
  // band (row r1) comes from the band below. E = 0 outside the cells. A band keeps
  // its E by diagonal (contiguous stores; a scatter into the row-major gradient is
  // slow) and hands it to the gradient when done, while it is still in cache.
  for (int64_t k; (k = bands - 1 - ws.work[kBackward].take()) >= 0;) {
    const int64_t r0 = k * H, r1 = std::min(P, r0 + H);
    const double* erow = ws.rows.data() + k * (Q + 2);                        // E[r1][q] at q
    double* erow_up = k > 0 ? ws.rows.data() + (k - 1) * (Q + 2) : nullptr;  // E[r0][q] at q
    for (double* bb : buf) std::fill(bb + r0, bb + r0 + H + 2, 0.0);
    int64_t seen = last_d + 1;
    for (int64_t d = std::min(last_d, r1 - 1 + Q - 1); d >= r0; --d) {
      double* next2 = buf[(d + 2) % 3];  // diagonal d + 2
      double* next1 = buf[(d + 1) % 3];  // diagonal d + 1
      double* cur = buf[d % 3];
      if (r1 < P) {
        wait_for_band(k + 1, [&](int64_t v) { return v <= d + 1; }, seen);
        const int64_t q = d + 1 - r1;  // row r1: column q on diagonal d + 1, q + 1 on d + 2
        next1[r1 + 1] = q >= 0 && q < Q ? erow[q] : 0.0;
        next2[r1 + 1] = q + 1 >= 0 && q + 1 < Q ? erow[q + 1] : 0.0;
      }
      const Diagonal dg = diagonal(P, Q, width, d);
      const Scalar* a2 = d + 2 <= last_d ? tape_a + ws.offset[d + 2] : nullptr;
      const Scalar* a1 = d + 1 <= last_d ? tape_a + ws.offset[d + 1] : nullptr;
      const Scalar* b1 = d + 1 <= last_d ? tape_b + ws.offset[d + 1] : nullptr;
      const int64_t first = std::max(dg.lo, r0), last = std::min(dg.hi, r1 - 1);
      if (first <= last)
        for (int64_t s = r0 + 1 + (first - r0) / kLanes * kLanes; s - 1 <= last; s += kLanes) {
          Vec e = zero;
          if (b1) {
            const Vec from_left = vmax(one - Vec::load(a1 + s) - Vec::load(b1 + s), zero);
            e = Vec::load(next1 + s + 1) * Vec::load(b1 + s + 1) + Vec::load(next1 + s) * from_left;
          }
          if (a2) e = e + Vec::load(next2 + s + 1) * Vec::load(a2 + s + 1);
          if (d == last_d) e = one;
          e = select(inside_mask(dg, s), e, zero);
          e.store(cur + s);
          e.store(e_band + (d - r0) * H + (s - 1 - r0));
        }
      if (dg.lo - 1 >= r0 && dg.lo - 1 < r1) cur[dg.lo] = 0.0;
      if (dg.hi + 1 >= r0 && dg.hi + 1 < r1) cur[dg.hi + 2] = 0.0;
      if (erow_up && r0 >= dg.lo && r0 <= dg.hi) erow_up[d - r0] = cur[r0 + 1];
      ws.progress[k].d.store(d, std::memory_order_release);
    }
    ws.progress[k].d.store(INT64_MIN, std::memory_order_release);
    if (pb.smooth) unskew(G, m, int64_t(1), m, r0, r1);
    else unskew(out, pb.stride_i, pb.stride_j, pb.padded_m, r0, r1);
  }
  ws.barrier.wait(team);

  if (pb.smooth) {
    // Through the smoothing into the gradient: row i of dC collects G of rows i and
    // i + 1 (see docs/semantics.md, Gradient).
    for_rows(kSmoothGrad, pb.padded_n, [&](int64_t i) {
      for (int64_t j = 0; j < pb.padded_m; ++j) {
        double v = 0.0;
        if (i < n && j < m) {
          v = G[i * m + j];
          double w[3];
          if (j + 1 < m) v += G[i * m + j + 1] * (smoothed_cost(pb, view, i, j + 1, w), w[0]);
          if (i + 1 < n) v += G[(i + 1) * m + j] * (smoothed_cost(pb, view, i + 1, j, w), w[1]);
          if (i + 1 < n && j + 1 < m) v += G[(i + 1) * m + j + 1] * (smoothed_cost(pb, view, i + 1, j + 1, w), w[2]);
        }
        out[i * pb.stride_i + j * pb.stride_j] = Scalar(v);
      }
    });
  }
  ws.barrier.wait(team);
}

template <typename Scalar>
void run_diagonal(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int threads) {
  // The pieces of work: pairs, or the bands of rows of a pair shared by all threads.
  threads = useful_threads(threads, std::max<int64_t>(pb.n_pairs, grid_extent(pb, pb.padded_n) / (2 * kLanes)));
  const bool shared = pb.n_pairs < threads;  // every thread on every pair
  std::vector<DiagonalWorkspace<Scalar>>& workspaces =
      cached_workspaces<DiagonalWorkspace<Scalar>>(pb, grad, shared ? 1 : threads);
  if (shared) workspaces[0].reserve(pb, grad != nullptr, threads);
#pragma omp parallel num_threads(threads)
  {
    const int tid = team_rank(), team = team_size();
    const FlushSubnormals flush;
    if (shared) {
      for (int64_t b = 0; b < pb.n_pairs; ++b)
        diagonal_pair(pb, b, cost, value, grad, workspaces[0], tid, team, threads);
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < pb.n_pairs; ++b) diagonal_pair(pb, b, cost, value, grad, workspaces[tid], 0, 1, 1);
    }
  }
  release_if_large(workspaces);
}

}  // namespace

template <typename Scalar>
bool run(const Problem& pb, const Scalar* cost, Scalar* value, Scalar* grad, int num_threads) {
  const int64_t P = grid_extent(pb, pb.padded_n), Q = grid_extent(pb, pb.padded_m);
  num_threads = useful_threads(num_threads, pb.n_pairs * P);
  const bool small = P * Q <= 4096;
  const bool many = pb.n_pairs >= int64_t(num_threads) * kLanes / 2 && P * Q <= 65536;
  if (small || many)
    run_lockstep(pb, cost, value, grad, num_threads);
  else
    run_diagonal(pb, cost, value, grad, num_threads);
  return true;
}

void check_math(const double* x, double* exp_x, double* log_x, int64_t n) {
  for (int64_t k = 0; k + kLanes <= n; k += kLanes) {
    const Vec v = Vec::load(x + k);
    vexp(v).store(exp_x + k);
    vlog(v).store(log_x + k);
  }
}
void check_math(const float* x, float* exp_x, float* log_x, int64_t n) {
  for (int64_t k = 0; k + kWide <= n; k += kWide) {
    WideF v;
    std::memcpy(&v, x + k, sizeof(v));
    const WideF e = exp_f32(v), l = log_f32(v);
    std::memcpy(exp_x + k, &e, sizeof(e));
    std::memcpy(log_x + k, &l, sizeof(l));
  }
}

void release_workspaces() {
  workspace_cache<LockstepWorkspace<float>>().release();
  workspace_cache<LockstepWorkspace<double>>().release();
  workspace_cache<DiagonalWorkspace<float>>().release();
  workspace_cache<DiagonalWorkspace<double>>().release();
}

template bool run<float>(const Problem&, const float*, float*, float*, int);
template bool run<double>(const Problem&, const double*, double*, double*, int);

}  // namespace s2dtw::cpu::S2DTW_SIMD_NS

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
