// The stream decoder's worker pools (kernels/decoder/pool.hpp): every task of every step runs
// once, on as many threads as asked; exceptions reach the caller and leave the pool usable; a
// step started from inside a task runs inline instead of waiting on itself; a PoolCache lends
// idle pools again, never one pool to two calls at once, and works in a child after fork().
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#if !defined(_WIN32)
#include <csignal>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "check.h"
#include "pool.hpp"

using namespace vlmc::conv;

namespace {

// parallel_for covers [0, n) exactly once, in contiguous ranges, for many steps in a row
void check_coverage() {
    for (int threads = 1; threads <= 4; ++threads) {
        Pool pool(threads);
        CHECK_NOTE(pool.size() == unsigned(threads), "%d threads asked, %u started", threads, pool.size());
        for (int round = 0; round < 200; ++round)
            for (uint32_t n = 0; n <= 9; ++n) {
                std::vector<std::atomic<int>> hits(n);
                std::atomic<int> ranges{0};
                parallel_for(n, pool, [&](uint32_t a, uint32_t b) {
                    ++ranges;
                    for (uint32_t i = a; i < b; ++i) ++hits[i];
                });
                int wrong = 0;
                for (auto &h : hits) wrong += h.load() != 1;
                CHECK_NOTE(wrong == 0, "%d threads, n %u: %d indexes not covered once", threads, n, wrong);
                const int want = int(std::max<uint32_t>(1, std::min<uint32_t>(n, unsigned(threads))));
                CHECK_NOTE(ranges.load() == want, "%d threads, n %u: %d ranges, want %d", threads, n, ranges.load(), want);
            }
    }
}

// the tasks of one step run on distinct threads, the first on the caller's
void check_threads_used() {
    Pool pool(3);
    std::mutex m;
    std::set<std::thread::id> ids;
    std::thread::id first;
    auto task = [&](unsigned k) {
        std::lock_guard<std::mutex> lock(m);
        ids.insert(std::this_thread::get_id());
        if (k == 0) first = std::this_thread::get_id();
    };
    pool.run(3, task);
    CHECK_NOTE(ids.size() == 3, "3 tasks ran on %zu threads", ids.size());
    CHECK_NOTE(first == std::this_thread::get_id(), "task 0 did not run on the caller");
}

void check_exceptions() {
    Pool pool(3);
    for (unsigned thrower = 0; thrower < 3; ++thrower) {
        std::atomic<int> ran{0};
        bool caught = false;
        auto task = [&](unsigned k) {
            ++ran;
            if (k == thrower) throw std::runtime_error("task failed");
        };
        try {
            pool.run(3, task);
        } catch (const std::runtime_error &) {
            caught = true;
        }
        CHECK_NOTE(caught, "task %u's exception did not reach the caller", thrower);
        CHECK_NOTE(ran.load() == 3, "task %u threw: %d of 3 tasks ran", thrower, ran.load());
    }
    std::atomic<int> ran{0};
    parallel_for(30, pool, [&](uint32_t a, uint32_t b) { ran += int(b - a); });
    CHECK_NOTE(ran.load() == 30, "after exceptions the pool covered %d of 30", ran.load());
}

// a step started from inside a task runs inline (it would otherwise wait for itself)
void check_nested() {
    Pool pool(2);
    std::atomic<int> inner{0};
    parallel_for(2, pool, [&](uint32_t, uint32_t) {
        parallel_for(10, pool, [&](uint32_t a, uint32_t b) { inner += int(b - a); });
    });
    CHECK_NOTE(inner.load() == 20, "nested steps covered %d of 20", inner.load());
}

void check_cache() {
    PoolCache cache;
    std::set<Pool *> lent;
    {
        auto a = cache.lease(2);
        auto b = cache.lease(2);  // while a is out: another pool
        lent = {a.get(), b.get()};
        CHECK_NOTE(a.get() != b.get(), "one pool lent to two calls at once");
        auto c = cache.lease(3);
        CHECK_NOTE(c->size() == 3 && b->size() == 2, "sizes %u %u", c->size(), b->size());
    }
    auto again = cache.lease(2);
    CHECK_NOTE(lent.count(again.get()) == 1, "an idle pool was not lent again");
    again.reset();
    // many calls on several threads at once, each with its own pool
    std::atomic<int> bad{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 4; ++t)
        callers.emplace_back([&] {
            for (int i = 0; i < 300; ++i) {
                auto pool = cache.lease(2);
                std::atomic<int> sum{0};
                parallel_for(64, *pool, [&](uint32_t a, uint32_t b) {
                    for (uint32_t j = a; j < b; ++j) sum += int(j);
                });
                bad += sum.load() != 64 * 63 / 2;
            }
        });
    for (auto &t : callers) t.join();
    CHECK_NOTE(bad.load() == 0, "%d concurrent steps went wrong", bad.load());
}

#if !defined(_WIN32)
// a child process after fork() has none of the parent's workers: the cache must start new ones
void check_fork() {
    PoolCache cache;
    {
        auto pool = cache.lease(2);
        std::atomic<int> sum{0};
        parallel_for(10, *pool, [&](uint32_t a, uint32_t b) { sum += int(b - a); });
    }
    std::fflush(nullptr);
    const pid_t child = fork();
    if (child == 0) {
        alarm(20);  // a hang (waiting on the parent's workers) ends the child with SIGALRM
        auto pool = cache.lease(2);
        std::atomic<int> sum{0};
        parallel_for(1000, *pool, [&](uint32_t a, uint32_t b) { sum += int(b - a); });
        std::_Exit(sum.load() == 1000 ? 0 : 3);
    }
    int status = 0;
    CHECK_NOTE(child > 0 && waitpid(child, &status, 0) == child, "fork or waitpid failed");
    CHECK_NOTE(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's decode step failed (status %d%s)", status,
               WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM ? ": it hung" : "");
    auto pool = cache.lease(2);  // and the parent's pools still work
    std::atomic<int> sum{0};
    parallel_for(10, *pool, [&](uint32_t a, uint32_t b) { sum += int(b - a); });
    CHECK_NOTE(sum.load() == 10, "parent after fork covered %d of 10", sum.load());
}
#endif

}  // namespace

int main() {
    check_coverage();
    check_threads_used();
    check_exceptions();
    check_nested();
    check_cache();
#if !defined(_WIN32)
    check_fork();
#endif
    return check_report("test_pool");
}
