// Worker threads that outlive one parallel step: a decode runs some forty of them (every
// convolution's padding and rows, the output's rounding, the upsampling), and starting a thread
// for each costs ~30 us plus its start-up delay (11–17 % of a 256-px decode). A Pool
// keeps its workers asleep between steps; a PoolCache gives each decode call one for its
// duration, so calls on several threads at once never share one.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "block_cache.hpp"

namespace vlmc::conv {

class Pool {
  public:
    // the calling thread and up to threads − 1 workers (fewer if the system refuses to start them)
    explicit Pool(int threads) : requested_(threads) {
        for (int k = 1; k < threads; ++k) {
            try {
                workers_.emplace_back([this, k] { work(unsigned(k)); });
            } catch (...) {
                break;  // could not start a thread: run with those there are
            }
        }
    }
    Pool(const Pool &) = delete;
    Pool &operator=(const Pool &) = delete;
    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(m_);
            stop_ = true;
        }
        start_.notify_all();
        for (auto &t : workers_) t.join();
    }

    // threads that run tasks: the caller and the workers
    unsigned size() const { return unsigned(workers_.size()) + 1; }
    // the threads asked for (size() may be fewer)
    int requested() const { return requested_; }

    // task(k) for every k in [0, n), n ≤ size(): k = 0 on the calling thread, the others on
    // workers; returns when all have, rethrowing the first exception any threw. Called from
    // inside a task (of any pool), it runs the tasks one after another on the calling thread.
    template <class Fn> void run(unsigned n, Fn &task) {
        n = std::min(n, size());
        if (n <= 1 || inside_task()) {
            for (unsigned k = 0; k < n; ++k) task(k);
            return;
        }
        const Job job{&task, [](void *f, unsigned k) { (*static_cast<Fn *>(f))(k); }, n, BlockCache::current()};
        {
            std::lock_guard<std::mutex> lock(m_);
            job_ = job;
            pending_ = n - 1;
            error_ = nullptr;
            ++generation_;
        }
        start_.notify_all();
        attempt(job, 0);
        std::unique_lock<std::mutex> lock(m_);
        done_.wait(lock, [&] { return pending_ == 0; });
        if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    }

  private:
    struct Job {
        void *arg = nullptr;
        void (*fn)(void *, unsigned) = nullptr;
        unsigned tasks = 0;
        BlockCache *cache = nullptr;  // the caller's, current in the workers too while they run its tasks
    };

    static bool &inside_task() {
        thread_local bool inside = false;
        return inside;
    }

    void attempt(const Job &job, unsigned k) {
        inside_task() = true;
        try {
            const BlockCache::Scope scope(job.cache);
            job.fn(job.arg, k);
        } catch (...) {
            std::lock_guard<std::mutex> lock(m_);
            if (!error_) error_ = std::current_exception();
        }
        inside_task() = false;
    }

    void work(unsigned k) {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> lock(m_);
        for (;;) {
            start_.wait(lock, [&] { return stop_ || generation_ != seen; });
            if (stop_) return;
            seen = generation_;
            if (k >= job_.tasks) continue;  // a step with fewer tasks than workers
            const Job job = job_;
            lock.unlock();
            attempt(job, k);
            lock.lock();
            if (--pending_ == 0) done_.notify_one();
        }
    }

    const int requested_;
    std::vector<std::thread> workers_;
    std::mutex m_;
    std::condition_variable start_, done_;
    Job job_;
    uint64_t generation_ = 0;  // one per run; a worker runs each generation's task once
    unsigned pending_ = 0;     // workers yet to finish this generation's task
    bool stop_ = false;
    std::exception_ptr error_;
};

// fn(begin, end) over [0, n) split into up to pool.size() contiguous ranges, one per thread; the
// first exception any of them throws is rethrown here
template <class Fn> void parallel_for(uint32_t n, Pool &pool, Fn fn) {
    const uint32_t t = std::max<uint32_t>(1, std::min<uint32_t>(pool.size(), n));
    if (t == 1) {
        fn(0u, n);
        return;
    }
    auto task = [&](unsigned k) { fn(uint32_t(uint64_t(n) * k / t), uint32_t(uint64_t(n) * (k + 1) / t)); };
    pool.run(t, task);
}

// Pools kept between a decoder's calls: lease(threads) lends one of that many threads to one
// call (an idle one, or a new one), and it comes back when the lease ends; up to kIdle idle pools
// with workers are kept, the most recently used (a pool of one thread has none: not kept, so
// one-thread calls do not fill the places; past kIdle the least recently returned is ended, so a
// process that mixes thread counts keeps the ones it uses: it ended the one coming back, and each
// call started its workers anew). In a child process after fork() the parent's workers do not
// exist: its pools are abandoned there (never joined: their memory is left) and new ones started.
class PoolCache {
  public:
    struct Return {
        PoolCache *cache;
        void operator()(Pool *p) const { cache->give_back(p); }
    };
    using Lease = std::unique_ptr<Pool, Return>;

    PoolCache() = default;
    PoolCache(const PoolCache &) = delete;
    PoolCache &operator=(const PoolCache &) = delete;
    ~PoolCache() {
        if (owner_ != process_id()) abandon();
    }

    Lease lease(int threads) {
        {
            std::lock_guard<std::mutex> lock(m_);
            if (owner_ != process_id()) {
                abandon();
                owner_ = process_id();
            }
            for (auto it = idle_.begin(); it != idle_.end(); ++it)
                if ((*it)->requested() == threads) {
                    Pool *p = it->release();
                    idle_.erase(it);
                    return Lease(p, Return{this});
                }
        }
        return Lease(new Pool(threads), Return{this});
    }

  private:
    static constexpr size_t kIdle = 8;

    void abandon() {
        for (auto &p : idle_) (void)p.release();
        idle_.clear();
    }

    void give_back(Pool *p) {
        std::unique_ptr<Pool> owned(p);
        if (owned->size() <= 1) return;  // no workers to keep
        {
            std::lock_guard<std::mutex> lock(m_);
            if (owner_ != process_id()) {  // leased before a fork: its workers are not here
                (void)owned.release();
                return;
            }
            idle_.push_back(std::move(owned));
            if (idle_.size() <= kIdle) return;
            owned = std::move(idle_.front());  // the least recently returned
            idle_.erase(idle_.begin());
        }
        // one too many: destroyed here, its workers joined, outside the lock
    }

    std::mutex m_;
    std::vector<std::unique_ptr<Pool>> idle_;
    long owner_ = process_id();
};

}  // namespace vlmc::conv
