// Threads of the CPU kernels: how many to start, who is in the team OpenMP actually
// started, and waits that give the core away when the awaited thread is not running.
// Included before any #pragma GCC target (simd_per_isa.h): these inline functions are
// shared with the scalar code and must not be compiled for AVX-512.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <ctime>

#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace s2dtw::cpu {

// Threads worth starting for `items` independent pieces of work: never more than the
// pieces, nor than the processors this process may run on (more threads than cores
// only take turns, and a waiting one then holds a core that the awaited one needs).
inline int useful_threads(int requested, int64_t items) {
  int64_t t = std::min<int64_t>(std::max(requested, 1), std::max<int64_t>(items, 1));
#ifdef _OPENMP
  t = std::min<int64_t>(t, std::max(omp_get_num_procs(), 1));
#endif
  return int(t);
}

// This thread's number and the size of the team inside a parallel region: OpenMP may
// start fewer threads than num_threads asked for (OMP_THREAD_LIMIT, OMP_DYNAMIC,
// nesting), so work and barriers count the team, never the request.
inline int team_rank() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}
inline int team_size() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Waits until done(): spins briefly (the awaited thread usually runs on another core
// and is microseconds away), then yields, then sleeps in short naps, so that a thread
// waiting for a descheduled one (other processes, more threads than free cores) hands
// its core over instead of burning its time slice.
template <typename Done>
inline void wait_until(Done done) {
  constexpr int kSpins = 2000, kYields = 50;
  for (int k = 0; !done(); ++k) {
    if (k < kSpins) {
      cpu_relax();
    } else if (k < kSpins + kYields) {
      sched_yield();
    } else {
      const timespec nap{0, 20000};  // 20 us
      nanosleep(&nap, nullptr);
    }
  }
}

// A barrier for the `team` threads of one parallel region (the caller passes
// team_size()), with the backing-off wait.
struct SpinBarrier {
  std::atomic<int> arrived{0}, phase{0};
  void wait(int team) {
    if (team <= 1) return;
    const int ph = phase.load(std::memory_order_acquire);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) == team - 1) {
      arrived.store(0, std::memory_order_relaxed);
      phase.store(ph + 1, std::memory_order_release);
    } else {
      wait_until([&] { return phase.load(std::memory_order_acquire) != ph; });
    }
  }
};

// A work counter handing out pieces 0, 1, 2, ... to whichever thread asks first, on its
// own cache line.
struct alignas(64) WorkCounter {
  std::atomic<int64_t> next{0};
  int64_t take() { return next.fetch_add(1, std::memory_order_relaxed); }
};

}  // namespace s2dtw::cpu
