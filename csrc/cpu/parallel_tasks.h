// Tasks spread over ATen's threads with work stealing.
//
// at::parallel_for hands each thread a fixed run of tasks, so a region lasts as long as its slowest thread.
// On this shared 2-vCPU VM a thread is now and then held up for tens of microseconds, and most regions of a
// batch-1 model last 50-300 us: the other thread waited at the end of a region in a fifth to a quarter of its
// samples (mobilenet_v2, perf). Here each thread runs its own run of consecutive tasks front to back (a strip
// still follows the one before it, so it can keep the halo rows that one computed), then takes tasks from
// the back of runs not yet finished.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>

namespace fastzoo {
bool simulated_stealing();  // tests: fastzoo._C.set_simulated_stealing

namespace cpu {

// How many consecutive items of n make one task: at least grain, and about eight tasks per thread, so that work
// stealing can even out a thread that was held up.
inline int64_t items_per_task(int64_t n, int64_t grain) {
  const int64_t tasks = 8 * at::get_num_threads();
  return std::max(grain, (n + tasks - 1) / tasks);
}

// make_worker() is called once per thread taking part and returns that thread's task function, run(t) for
// some of the tasks t in [0, n); every task is run exactly once. A worker may keep state between its tasks
// (buffers, what the previous task left), but results must not depend on which thread ran a task.
template <typename MakeWorker>
void parallel_tasks(int64_t n, const MakeWorker& make_worker) {
  if (n <= 0) return;
  TORCH_CHECK(n < (int64_t{1} << 31), "parallel_tasks: ", n, " tasks, at most 2^31 - 1");
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), n);
  if (threads <= 1 || at::in_parallel_region()) {
    auto run = make_worker();
    if (simulated_stealing()) {  // its own run, then the run of a second thread taken from the back
      for (int64_t t = 0; t < n / 2; ++t) run(t);
      for (int64_t t = n - 1; t >= n / 2; --t) run(t);
      return;
    }
    for (int64_t t = 0; t < n; ++t) run(t);
    return;
  }
  // Run i holds the tasks [lo, hi), both in one word (lo the low half) so that its owner, taking from the
  // front, and a thief, taking from the back, claim a task with one compare-exchange. Own cache line each.
  struct alignas(64) Run {
    std::atomic<uint64_t> lohi;
  };
  static_assert(sizeof(Run) == 64);
  const std::unique_ptr<Run[]> runs(new Run[threads]);
  for (int64_t i = 0; i < threads; ++i)
    runs[i].lohi.store(static_cast<uint64_t>(n * i / threads) | static_cast<uint64_t>(n * (i + 1) / threads) << 32,
                       std::memory_order_relaxed);
  // claim the first (front) or last task of run i; -1 when it is empty
  auto claim = [&](int64_t i, bool front) -> int64_t {
    std::atomic<uint64_t>& a = runs[i].lohi;
    uint64_t v = a.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t lo = v & 0xffffffffu, hi = v >> 32;
      if (lo >= hi) return -1;
      const uint64_t next = front ? (lo + 1) | hi << 32 : lo | (hi - 1) << 32;
      if (a.compare_exchange_weak(v, next, std::memory_order_acq_rel, std::memory_order_relaxed))
        return static_cast<int64_t>(front ? lo : hi - 1);
    }
  };
  at::parallel_for(0, threads, 1, [&](int64_t b, int64_t e) {
    auto run = make_worker();
    for (int64_t i = b; i < e; ++i)
      for (int64_t t; (t = claim(i, true)) >= 0;) run(t);
    for (int64_t k = 1; k < threads; ++k)
      for (int64_t t; (t = claim((b + k) % threads, false)) >= 0;) run(t);
  });
}

}  // namespace cpu
}  // namespace fastzoo
