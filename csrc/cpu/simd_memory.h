// The SIMD kernels' memory and floating-point environment: workspaces kept per
// calling thread between calls (within one budget), the huge-page allocator of the
// large ones, and the MXCSR guard that flushes subnormals while a kernel runs.
//
// A room of simd_per_isa.h, which includes it with the library headers before it.
#pragma once

namespace s2dtw::cpu::S2DTW_SIMD_NS {
namespace {

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
  bool operator==(const HugeAllocator<U>&) const {
    return true;
  }
  template <typename U>
  bool operator!=(const HugeAllocator<U>&) const {
    return false;
  }
};
template <typename T>
using Buffer = std::vector<T, HugeAllocator<T>>;

template <typename... V>
size_t capacity_bytes(const V&... v) {
  return (size_t(0) + ... + (v.capacity() * sizeof(typename V::value_type)));
}

// Grows v to at least `size` elements (a fresh allocation: the old contents are not kept).
template <typename T, typename A>
void grow(std::vector<T, A>& v, int64_t size) {
  if (int64_t(v.size()) < size) {
    v.clear();
    v.shrink_to_fit();
    v.resize(size);
  }
}

}  // namespace
}  // namespace s2dtw::cpu::S2DTW_SIMD_NS
