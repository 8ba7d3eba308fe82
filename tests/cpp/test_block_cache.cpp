// The decoder's block cache (kernels/decoder/block_cache.hpp): large buffers are 64-byte aligned
// blocks that carry their capacity; freed while a cache is current they are kept (up to its
// limit) and handed out again, the smallest that fits first; a buffer none fits sends the kept
// ones back to malloc; lowering the limit frees them; scopes nest; a pool's workers see their
// caller's cache; conv::Buffer uses it all; threads sharing one cache never get one block twice.
#include <atomic>
#include <cstdint>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#if !defined(_WIN32)
#include <csignal>
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "check.h"
#include "conv.hpp"

using namespace vlmc::conv;

namespace {

constexpr size_t MiB = size_t(1) << 20;

void check_alignment_and_system_blocks() {
    for (size_t bytes : {kLargeBlockBytes, kLargeBlockBytes + 1, 3 * MiB + 5}) {
        void *b = allocate_large(bytes);
        CHECK_NOTE(reinterpret_cast<uintptr_t>(b) % 64 == 0, "block of %zu bytes at %p", bytes, b);
        std::memset(b, 0x5a, bytes);  // the whole capacity is writable (ASan checks the bounds)
        free_large(b);                // no cache current: back to the system
    }
    CHECK_NOTE(BlockCache::current() == nullptr, "a cache is current outside any scope");
}

void check_keep_and_reuse() {
    BlockCache cache(8 * MiB);
    const BlockCache::Scope scope(&cache);
    CHECK_NOTE(BlockCache::current() == &cache, "the scope's cache is not current");
    void *a = allocate_large(MiB);
    free_large(a);
    CHECK_NOTE(cache.held() == MiB, "held %zu after freeing a 1 MiB block", cache.held());
    void *b = allocate_large(MiB / 2);  // a kept block that fits: taken
    CHECK_NOTE(b == a && cache.held() == 0, "a kept block that fits was not reused (held %zu)", cache.held());
    void *c = allocate_large(MiB / 2);  // none kept: a new one
    CHECK_NOTE(c != a && cache.held() == 0, "held %zu with both blocks out", cache.held());
    std::memset(b, 1, MiB / 2);
    free_large(b);
    free_large(c);
    CHECK_NOTE(cache.held() == MiB + MiB / 2, "held %zu after two frees", cache.held());
    void *e = allocate_large(MiB / 2);  // the smallest that fits
    CHECK_NOTE(e == c && cache.held() == MiB, "not the smallest fitting block (held %zu)", cache.held());
    free_large(e);
    // none fits: every kept block goes back to malloc before the new one is made
    void *d = allocate_large(2 * MiB);
    CHECK_NOTE(cache.held() == 0, "held %zu after a miss", cache.held());
    free_large(d);
    CHECK_NOTE(cache.held() == 2 * MiB, "held %zu after freeing the 2 MiB block", cache.held());
}

void check_limit() {
    BlockCache cache(3 * MiB);
    const BlockCache::Scope scope(&cache);
    std::vector<void *> blocks;
    for (int i = 0; i < 5; ++i) blocks.push_back(allocate_large(MiB));
    for (void *b : blocks) free_large(b);
    CHECK_NOTE(cache.held() == 3 * MiB, "held %zu with a 3 MiB limit after five 1 MiB frees", cache.held());
    void *big = allocate_large(4 * MiB);  // more than the limit: never kept
    free_large(big);
    CHECK_NOTE(cache.held() == 0, "a block over the limit was kept (held %zu)", cache.held());
    blocks.clear();
    for (int i = 0; i < 3; ++i) blocks.push_back(allocate_large(MiB));
    for (void *b : blocks) free_large(b);
    cache.set_limit(MiB + MiB / 2);
    CHECK_NOTE(cache.held() == MiB && cache.limit() == MiB + MiB / 2, "held %zu after lowering the limit",
               cache.held());
    cache.set_limit(0);
    CHECK_NOTE(cache.held() == 0, "held %zu with a 0 limit", cache.held());
    void *z = allocate_large(MiB);
    free_large(z);
    CHECK_NOTE(cache.held() == 0, "a 0 limit kept a block");
}

void check_scopes() {
    BlockCache outer(8 * MiB), inner(8 * MiB);
    {
        const BlockCache::Scope a(&outer);
        {
            const BlockCache::Scope b(&inner);
            CHECK_NOTE(BlockCache::current() == &inner, "the inner scope's cache is not current");
            free_large(allocate_large(MiB));
            const BlockCache::Scope none(nullptr);
            CHECK_NOTE(BlockCache::current() == nullptr, "a null scope left a cache current");
            free_large(allocate_large(MiB));
        }
        CHECK_NOTE(BlockCache::current() == &outer, "the outer cache is not current again");
    }
    CHECK_NOTE(BlockCache::current() == nullptr, "a cache is current after the scopes");
    CHECK_NOTE(inner.held() == MiB && outer.held() == 0, "inner held %zu, outer %zu", inner.held(), outer.held());
    // a block allocated under one cache and freed outside any goes to the system
    void *b;
    {
        const BlockCache::Scope a(&outer);
        b = allocate_large(MiB);
    }
    free_large(b);
    CHECK_NOTE(outer.held() == 0, "a block freed outside the scope was kept");
}

void check_buffers_and_pool() {
    BlockCache cache(64 * MiB);
    const BlockCache::Scope scope(&cache);
    { Buffer<float> small(100), large(MiB / sizeof(float)); }
    CHECK_NOTE(cache.held() == MiB, "held %zu after a small and a 1 MiB Buffer", cache.held());
    { Buffer<double> again(MiB / sizeof(double)); }
    CHECK_NOTE(cache.held() == MiB, "the 1 MiB block was not reused by a Buffer<double> (held %zu)", cache.held());
    Pool pool(3);
    std::atomic<int> seen{0};
    parallel_for(3, pool, [&](uint32_t, uint32_t) {
        if (BlockCache::current() == &cache) ++seen;
        Buffer<float> part(2 * MiB / sizeof(float));
        part[0] = 1;
    });
    CHECK_NOTE(seen.load() == int(pool.size()), "%d of %u threads saw the caller's cache", seen.load(), pool.size());
    CHECK_NOTE(cache.held() >= 2 * MiB, "the workers' blocks were not kept (held %zu)", cache.held());
    std::thread other([&] { CHECK_NOTE(BlockCache::current() == nullptr, "another thread sees the cache"); });
    other.join();
}

// threads sharing one cache: every block handed out is distinct while out
void check_threads() {
    BlockCache cache(32 * MiB);
    std::atomic<int> clashes{0};
    std::vector<std::thread> threads;
    std::atomic<uintptr_t> out[4 * 8] = {};
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            const BlockCache::Scope scope(&cache);
            for (int round = 0; round < 300; ++round) {
                void *b[8];
                for (int i = 0; i < 8; ++i) {
                    b[i] = allocate_large(kLargeBlockBytes * size_t(1 + (round + i) % 5));
                    out[t * 8 + i] = reinterpret_cast<uintptr_t>(b[i]);
                    for (int o = 0; o < 4 * 8; ++o)
                        if (o != t * 8 + i && out[o].load() == reinterpret_cast<uintptr_t>(b[i])) ++clashes;
                    *static_cast<volatile char *>(b[i]) = char(t);
                }
                for (int i = 0; i < 8; ++i) {
                    out[t * 8 + i] = 0;
                    free_large(b[i]);
                }
            }
        });
    for (auto &th : threads) th.join();
    CHECK_NOTE(clashes.load() == 0, "%d blocks handed to two users at once", clashes.load());
    CHECK_NOTE(cache.held() <= cache.limit(), "held %zu over the limit", cache.held());
}

#if !defined(_WIN32)
// fork() while another thread of the parent is inside the cache (its lock held now and then): the
// child neither waits on that lock nor touches the parent's blocks; it allocates and frees on its
// own, and the parent's cache still works
void check_fork() {
    BlockCache cache(16 * MiB);
    std::atomic<bool> stop{false};
    std::thread busy([&] {
        const BlockCache::Scope scope(&cache);
        while (!stop) free_large(allocate_large(MiB));
    });
    int hung = 0, failed = 0;
    for (int i = 0; i < 40; ++i) {
        const pid_t child = fork();
        if (child == 0) {
            alarm(2);  // a hang on the parent's lock ends the child with SIGALRM
            const BlockCache::Scope scope(&cache);
            for (int k = 0; k < 4; ++k) free_large(allocate_large(MiB));
            cache.set_limit(0);
            std::_Exit(cache.held() == 0 ? 0 : 3);
        }
        int status = 0;
        if (child < 0 || waitpid(child, &status, 0) != child) {
            ++failed;
            continue;
        }
        hung += WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM;
        failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop = true;
    busy.join();
    CHECK_NOTE(hung == 0 && failed == 0, "%d of 40 children hung, %d failed", hung, failed);
    CHECK_NOTE(cache.held() == MiB, "the parent's cache holds %zu after the forks", cache.held());
}
#endif

}  // namespace

int main() {
    check_alignment_and_system_blocks();
    check_keep_and_reuse();
    check_limit();
    check_scopes();
    check_buffers_and_pool();
    check_threads();
#if !defined(_WIN32)
    check_fork();
#endif
    return check_report("test_block_cache");
}
