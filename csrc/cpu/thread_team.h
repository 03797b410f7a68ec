// Threads of the CPU kernels: how many to start, who is in the team OpenMP actually
// started, and waits that give the core away when the awaited thread is not running.
// Included before any #pragma GCC target (simd_per_isa.h): these inline functions are
// shared with the scalar code and must not be compiled for AVX-512.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>

#include <sched.h>
#include <unistd.h>

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

// How many of `requested` threads to start, given the time other processes took on the
// processors this one may use. libgomp's team threads spin for milliseconds after each
// region (torch's ops and ours) before they sleep, so beside another busy process there
// are more runnable threads than cores, and a call on more threads waits whole time slices
// for a preempted one (its own worker, or the caller pushed off by a spinning one); a call
// on the cores that are free runs without such waits. Other processes' share is measured
// over windows of at least kWindow: the processors' busy time (/proc/stat) less this
// process's CPU time. An idle machine keeps every requested thread (torch's awake team);
// where /proc/stat cannot be read nothing changes. The results do not depend on the count.
class CoreShare {
 public:
  int threads(int requested) {
    if (requested <= 1) return requested;
    sample();
    return std::max(1, std::min(requested, free_.load(std::memory_order_relaxed)));
  }

 private:
  static constexpr int64_t kWindow = 100'000'000;  // ns
  static int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  static int64_t own_cpu_ns() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return int64_t(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
  }
  // Busy time of this process's processors (all but idle and iowait), in ns; -1 if unknown.
  static int64_t busy_ns(int& cpus) {
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof(mask), &mask) != 0) return -1;
    FILE* f = std::fopen("/proc/stat", "r");
    if (!f) return -1;
    char line[512];
    int64_t ticks = 0;
    cpus = 0;
    while (std::fgets(line, sizeof(line), f)) {
      if (std::strncmp(line, "cpu", 3) != 0) break;  // the processor lines come first
      int cpu;
      long long v[8] = {};
      if (line[3] < '0' || line[3] > '9' ||
          std::sscanf(line, "cpu%d %lld %lld %lld %lld %lld %lld %lld %lld", &cpu, v, v + 1, v + 2, v + 3, v + 4, v + 5,
                      v + 6, v + 7) != 9 ||
          cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &mask))
        continue;
      ticks += v[0] + v[1] + v[2] + v[5] + v[6] + v[7];  // user nice system irq softirq steal
      ++cpus;
    }
    std::fclose(f);
    return cpus > 0 ? ticks * (1'000'000'000 / std::max(sysconf(_SC_CLK_TCK), 1L)) : -1;
  }
  // One thread at a time closes a window that has lasted kWindow and opens the next.
  void sample() {
    const int64_t now = now_ns();
    if (now - start_.load(std::memory_order_relaxed) < kWindow || sampling_.exchange(true)) return;
    const int64_t start = start_.load(std::memory_order_relaxed);
    if (now - start < kWindow) {  // another thread closed this window between the two loads
      sampling_.store(false);
      return;
    }
    int cpus = 0;
    const int64_t busy = busy_ns(cpus), own = own_cpu_ns();
    if (busy >= 0 && busy_ >= 0 && start > 0) {
      const double others = std::clamp(double((busy - busy_) - (own - own_)) / double(now - start), 0.0, double(cpus));
      free_.store(int(cpus - others + 0.5), std::memory_order_relaxed);
    }
    busy_ = busy;
    own_ = own;
    start_.store(now, std::memory_order_relaxed);
    sampling_.store(false);
  }
  std::atomic<int64_t> start_{0};
  std::atomic<int> free_{1 << 20};
  std::atomic<bool> sampling_{false};
  int64_t busy_ = -1, own_ = 0;  // at start_, written by the sampling thread only
};
}  // namespace s2dtw::cpu
