// The CPU kernels' own thread pool (run_pieces in thread_team.h). A call ends when its
// last piece is done, not when every thread has arrived: an OpenMP region's closing
// barrier waits for every team thread, also for one that the scheduler has not run
// during the call (it wakes on a busy core up to a time slice later).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <memory>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include <pthread.h>

#include "thread_team.h"

namespace s2dtw::cpu {

int usable_processors() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(CPU_COUNT(&set), 1);
  return std::max(int(std::thread::hardware_concurrency()), 1);  // more than CPU_SETSIZE processors
}

namespace {

// One call's pieces, shared by reference count: a pool thread that wakes late keeps the
// Call alive, finds next past the pieces and drops it, never touching `body` (which
// lives only until the last piece is done) nor the next call's pieces.
struct Call {
  PieceFn fn;
  void* body;
  int64_t pieces;
  int threads;
  alignas(64) std::atomic<int64_t> next{0};
  alignas(64) std::atomic<int64_t> done{0};
  Call(PieceFn fn, void* body, int64_t pieces, int threads) : fn(fn), body(body), pieces(pieces), threads(threads) {}
};

thread_local bool in_pool = false;  // a pool thread, or a caller inside its call

void take_pieces(Call& call, int worker) {
  for (int64_t p; (p = call.next.fetch_add(1, std::memory_order_relaxed)) < call.pieces;) {
    call.fn(call.body, p, worker);
    call.done.fetch_add(1, std::memory_order_release);
  }
}

void run_inline(int64_t pieces, PieceFn fn, void* body) {
  for (int64_t p = 0; p < pieces; ++p) fn(body, p, 0);
}

class Pool {
 public:
  // false: another call holds the pool.
  bool run(int threads, int64_t pieces, PieceFn fn, void* body) {
    std::unique_lock<std::mutex> mine(calls_, std::try_to_lock);
    if (!mine) return false;
    grow(threads - 1);
    const auto call = std::make_shared<Call>(fn, body, pieces, threads);
    {
      std::lock_guard<std::mutex> lock(m_);
      current_ = call;
      ++seq_;
    }
    wake_.notify_all();
    in_pool = true;
    take_pieces(*call, 0);
    in_pool = false;
    wait_until([&] { return call->done.load(std::memory_order_acquire) == pieces; });
    std::lock_guard<std::mutex> lock(m_);
    current_.reset();
    return true;
  }

 private:
  std::mutex calls_;  // one call at a time
  std::mutex m_;      // guards current_ and seq_
  std::condition_variable wake_;
  std::shared_ptr<Call> current_;
  uint64_t seq_ = 0;
  int workers_ = 0;  // started pool threads (under calls_)

  // Pool threads up to `count`; one that cannot be started leaves its pieces to the others.
  void grow(int count) {
    if (workers_ >= count) return;
    sigset_t all, saved;  // the pool threads take no signals: Python's handlers belong to its threads
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    try {
      for (; workers_ < count; ++workers_) std::thread([this, id = workers_ + 1] { serve(id); }).detach();
    } catch (const std::system_error&) {
    }
    pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  }

  [[noreturn]] void serve(int id) {
    in_pool = true;
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Call> call;
      {
        std::unique_lock<std::mutex> lock(m_);
        wake_.wait(lock, [&] { return seq_ != seen; });
        seen = seq_;
        call = current_;
      }
      if (call && id < call->threads) take_pieces(*call, id);
    }
  }
};

std::atomic<bool> forked{false};
[[maybe_unused]] const int fork_handler = pthread_atfork(nullptr, nullptr, [] { forked = true; });

}  // namespace

bool in_forked_child() { return forked; }

void run_pieces(int threads, int64_t pieces, PieceFn fn, void* body) {
  if (threads <= 1 || pieces <= 1 || in_pool || forked) return run_inline(pieces, fn, body);
  static Pool* const pool = new Pool;  // never destroyed: its threads sleep in it until the process ends
  if (!pool->run(threads, pieces, fn, body)) run_inline(pieces, fn, body);
}

}  // namespace s2dtw::cpu
