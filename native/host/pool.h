// Worker threads started once and kept, for the host's share of a training step (AdamW on the
// host, native/host/adamw.h). Starting threads for each parameter cost about 25 µs a thread
// (bench/host-adamw.ts): on 16 cores, a third of a 4M-element parameter's update.
#pragma once
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

namespace miniseq::host {

class Pool {
 public:
  // The process's pool: one worker per core but one (the caller works too; MINISEQ_HOST_THREADS
  // sets the number of threads instead), made on first use and never torn down (a CUDA driver
  // thread may still be inside it when the process exits).
  static Pool& shared() {
    static Pool* pool = new Pool(threads() - 1);
    return *pool;
  }

  static unsigned threads() {
    const char* given = std::getenv("MINISEQ_HOST_THREADS");
    const long n = given == nullptr ? 0 : std::strtol(given, nullptr, 10);
    return n >= 1 && n <= 1024 ? static_cast<unsigned>(n) : std::max(1u, std::thread::hardware_concurrency());
  }

  // Runs task(0), …, task(count − 1), the caller taking part, and returns when all have run.
  // Safe from several threads at once (two CUDA streams' host functions); never throws: with no
  // worker to be had, the caller runs every task itself.
  void run(long long count, const std::function<void(long long)>& task) {
    if (count <= 0) return;
    Job job{task, count};
    if (count > 1 && !workers_.empty()) {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.push_back(&job);
    }
    wake_.notify_all();
    work(job);
    {
      // No task is left to take: no worker may pick the job up from now on (it lives on this
      // stack), and those that hold it finish their task before it goes.
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.erase(std::remove(jobs_.begin(), jobs_.end(), &job), jobs_.end());
    }
    std::unique_lock<std::mutex> lock(job.mu);
    job.finished.wait(lock, [&] { return job.done == job.count && job.inside == 0; });
  }

 private:
  struct Job {
    const std::function<void(long long)>& task;
    const long long count;
    std::atomic<long long> next{0};
    long long done = 0;  // under mu
    int inside = 0;      // workers that hold this job, under mu
    std::mutex mu;
    std::condition_variable finished;
  };

  explicit Pool(unsigned n) {
    for (unsigned i = 0; i < n; i++) {
      try {
        workers_.emplace_back([this] { serve(); });
      } catch (const std::system_error&) {
        break;  // fewer workers, then
      }
    }
    for (std::thread& t : workers_) t.detach();
  }

  // Takes the job's tasks one by one until none is left.
  static void work(Job& job) {
    for (long long i; (i = job.next.fetch_add(1)) < job.count;) {
      job.task(i);
      std::lock_guard<std::mutex> lock(job.mu);
      if (++job.done == job.count) job.finished.notify_all();
    }
  }

  void serve() {
    for (;;) {
      Job* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return !jobs_.empty(); });
        job = jobs_.front();
        if (job->next.load() >= job->count) {
          jobs_.pop_front();  // all its tasks are taken: the next job
          continue;
        }
        std::lock_guard<std::mutex> inner(job->mu);
        job->inside++;  // the caller waits for this worker too before its job goes away
      }
      work(*job);
      std::lock_guard<std::mutex> lock(job->mu);
      if (--job->inside == 0 && job->done == job->count) job->finished.notify_all();
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable wake_;
  std::deque<Job*> jobs_;  // under mu_
};

}  // namespace miniseq::host
