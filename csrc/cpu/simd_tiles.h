// Moving data between each pair's rows and the kernels' lane layouts: masked
// gathers of one register, register tiles (8 floats / 4 doubles) transposed with
// unpack / shuffle / permute, masked partial loads and stores, and the lockstep
// regime's row gather / scatter between a pair's rows and [cell][lane].
//
// A room of simd_per_isa.h, which includes it with the library headers before it.
#pragma once

namespace s2dtw::cpu::S2DTW_SIMD_NS {
namespace {

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
  const __m256 f =
      _mm512_mask_i64gather_ps(_mm256_setzero_ps(), _mm512_movepi64_mask((__m512i)mask), (__m512i)idx, base, 4);
#else
  typedef int32_t I32 __attribute__((vector_size(16)));
  const __m128 f =
      _mm256_mask_i64gather_ps(_mm_setzero_ps(), base, (__m256i)idx, (__m128) __builtin_convertvector(mask, I32), 4);
#endif
  const NativeD v = to_double((NativeF)f);
  return mask ? v : src;
}

// ---------------------------------------------------------------- lane transposes

// The lockstep costs and gradients move between each pair's rows and the [cell][lane]
// layout in register tiles: 8 lanes x 8 columns (float) or 4 x 4 (double), transposed
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
inline __m256d load_range(const double* p, int64_t a, int64_t b) {
  return _mm256_maskz_loadu_pd(range_bits(a, b, 4), p);
}
inline void store_range(float* p, int64_t a, int64_t b, __m256 v) { _mm256_mask_storeu_ps(p, range_bits(a, b, 8), v); }
inline void store_range(double* p, int64_t a, int64_t b, __m256d v) {
  _mm256_mask_storeu_pd(p, range_bits(a, b, 4), v);
}
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

inline __m256 load8d(const double* p) {
#if S2DTW_NATIVE_DOUBLES == 8
  return _mm512_cvtpd_ps(_mm512_loadu_pd(p));
#else
  return _mm256_set_m128(_mm256_cvtpd_ps(_mm256_loadu_pd(p + 4)), _mm256_cvtpd_ps(_mm256_loadu_pd(p)));
#endif
}

// A register tile of 8 floats or 4 doubles, the unit of the lane transposes.
template <typename T>
struct Tile;
template <>
struct Tile<float> {
  static constexpr int W = 8;
  using V = __m256;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const double* p) { return load8d(p); }  // narrowed to float
  static V zero() { return _mm256_setzero_ps(); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void transpose(V* r) { transpose8(r); }
};
template <>
struct Tile<double> {
  static constexpr int W = 4;
  using V = __m256d;
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V zero() { return _mm256_setzero_pd(); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static void transpose(V* r) { transpose4(r); }
};

// ---------------------------------------------------------------- lockstep rows <-> [cell][lane]

// The last one or two columns of a float row go one element at a time: a tile's loads,
// transpose and partial stores for the single column left of a 17-column pair cost as much
// as a full tile (3 % less time on (a) float32; for double tiles of 4 it measured 3 % more,
// benchmarks/results/cpu_profile_2026-12-02_avx512_avx2.md).
template <typename T>
constexpr int64_t scalar_tail(int64_t columns) {
  return Tile<T>::W == 8 && columns % 8 <= 2 ? columns % 8 : 0;
}

// Row i of the lanes' costs into cb ([cell][lane], m columns), zero outside each
// lane's pair. Rows are contiguous (stride_j == 1).
template <typename T>
inline void gather_row(T* cb, const T* const* rows, const int64_t* inside, int64_t m, int64_t i) {
  using B = Tile<T>;
  constexpr int W = B::W;
  const int64_t tiled = m - scalar_tail<T>(m);
  for (int l0 = 0; l0 < kLanes; l0 += W) {
    for (int64_t j = tiled; j < m; ++j)
      for (int k = 0; k < W; ++k) cb[(i * m + j) * kLanes + l0 + k] = j < inside[l0 + k] ? rows[l0 + k][j] : T(0);
    const int64_t common = *std::min_element(inside + l0, inside + l0 + W);
    for (int64_t j0 = 0; j0 < tiled; j0 += W) {
      typename B::V r[W];
      if (j0 + W <= common)
        for (int k = 0; k < W; ++k) r[k] = B::load(rows[l0 + k] + j0);
      else
        for (int k = 0; k < W; ++k) r[k] = load_range(rows[l0 + k] + j0, 0, inside[l0 + k] - j0);
      B::transpose(r);
      const int jn = int(std::min<int64_t>(W, m - j0));
      T* at = cb + (i * m + j0) * kLanes + l0;
      for (int k = 0; k < jn; ++k) B::store(at + k * kLanes, r[k]);
    }
  }
}

// Row i of the gradient of lanes [0, count) from dc ([cell][lane], rows < n and m
// columns valid), padded_m columns, zero outside each lane's pair.
template <typename T, typename Src>
inline void scatter_row(T* const* rows, const Src* dc, const int64_t* inside, int count, int64_t n, int64_t m,
                        int64_t padded_m, int64_t i) {
  using B = Tile<T>;
  constexpr int W = B::W;
  const int64_t tiled = padded_m - scalar_tail<T>(padded_m);
  for (int l0 = 0; l0 < count; l0 += W) {
    const int lanes = std::min(W, count - l0);
    for (int k = 0; k < lanes; ++k)
      for (int64_t j = tiled; j < padded_m; ++j)
        rows[l0 + k][j] = j < inside[l0 + k] ? T(dc[(i * m + j) * kLanes + l0 + k]) : T(0);
    const int64_t common = std::min(*std::min_element(inside + l0, inside + l0 + lanes), padded_m);
    for (int64_t j0 = 0; j0 < tiled; j0 += W) {
      typename B::V r[W];
      const int jn = i < n ? int(std::max<int64_t>(0, std::min<int64_t>(W, m - j0))) : 0;
      const Src* at = dc + (i * m + j0) * kLanes + l0;
      for (int k = 0; k < W; ++k) r[k] = k < jn ? B::load(at + k * kLanes) : B::zero();
      B::transpose(r);
      if (j0 + W <= common) {
        for (int k = 0; k < lanes; ++k) B::store(rows[l0 + k] + j0, r[k]);
        continue;
      }
      for (int k = 0; k < lanes; ++k)
        store_range(rows[l0 + k] + j0, 0, padded_m - j0, zero_outside(r[k], inside[l0 + k] - j0));
    }
  }
}

}  // namespace
}  // namespace s2dtw::cpu::S2DTW_SIMD_NS
