// Threads of the CPU kernels: how many to use, a pool of our own that hands out a
// call's pieces of work, and waits that give the core away when the awaited thread is
// not running. Included before any #pragma GCC target (simd_per_isa.h): these inline
// functions are shared with the scalar code and must not be compiled for AVX-512.
#pragma once

#include <algorithm>
#include <cstdint>
#include <ctime>
#include <type_traits>
#include <utility>

#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace s2dtw::cpu {

// Whether this process is a forked child: the pool's threads do not survive fork(), so a
// child (a DataLoader worker) runs on its calling thread only, as torch's own kernels do.
bool in_forked_child();

// Processors this process may run on (its affinity mask), at least 1.
int usable_processors();

// Threads worth using for `items` independent pieces of work: never more than the
// pieces, nor than the processors this process may run on (more threads than cores
// only take turns, and a waiting one then holds a core that the awaited one needs).
inline int useful_threads(int requested, int64_t items) {
  int64_t t = std::min<int64_t>(std::max(requested, 1), std::max<int64_t>(items, 1));
  return int(std::min<int64_t>(t, usable_processors()));
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

// One piece of a call: body(piece, worker) with worker in [0, threads).
using PieceFn = void (*)(void* body, int64_t piece, int worker);

// Runs fn(body, piece, worker) for every piece in [0, pieces) on the calling thread
// (worker 0) and up to threads - 1 pool threads (workers 1, 2, ...), whichever is free
// taking the next piece, in increasing order. Returns when every piece is done: it
// never waits for a pool thread that took no piece (one the scheduler has not run yet
// finds the pieces gone and goes back to sleep). On the calling thread alone, in
// order, in a forked child (the pool's threads are not there), inside a piece, or when
// another call holds the pool. A piece must not throw.
void run_pieces(int threads, int64_t pieces, PieceFn fn, void* body);

// run_pieces for a callable body(int64_t piece, int worker). What a piece computes must
// not depend on which worker ran it (per-worker scratch only): results are then the
// same whichever thread took which piece.
template <typename Body>
void parallel_pieces(int threads, int64_t pieces, Body&& body) {
  using B = std::remove_reference_t<Body>;
  run_pieces(
      threads, pieces, [](void* b, int64_t piece, int worker) { (*static_cast<B*>(b))(piece, worker); },
      static_cast<void*>(&body));
}

}  // namespace s2dtw::cpu
