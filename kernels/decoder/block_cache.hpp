// Large buffers kept between uses. Every buffer of at least kLargeBlockBytes (conv::Buffer's
// allocator) is a block that records its capacity, so whichever thread frees it can hand it to a
// BlockCache instead of the system: freed memory there goes back to the kernel (glibc returns
// large blocks with munmap), and the next buffer's first touch of each page is a page fault —
// 16 260 of them per full-size Kodak encode and 13 105 per decode in a C++ host before this cache,
// which takes them to none: 0.85× and 0.80× the time on one thread (scripts/c_host_bench.py).
// A decoder owns one cache; a call makes it current on its thread (and its pool's workers, for
// each task) with a Scope, and blocks freed while a cache is current go to it, up to its limit in
// bytes. In a child after fork() a cache the parent made is not touched (its lock may have been
// held by another of the parent's threads): it keeps nothing there and hands nothing out, its
// blocks left as they are.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>

#if !defined(_WIN32)
#include <unistd.h>
#endif

namespace vlmc::conv {

// this process (after fork(): the child's), so that what a parent's threads may hold is left alone
inline long process_id() {
#if defined(_WIN32)
    return 0;
#else
    return long(getpid());
#endif
}

constexpr size_t kLargeBlockBytes = size_t(1) << 16;

// a block of at least `bytes` (≥ kLargeBlockBytes), 64-byte aligned: the current cache's smallest
// that fits, else a new one (and the cache's kept blocks, all smaller, go back to malloc first,
// which can join them to make it: a first call then faults in about as many pages as it would
// without the cache); throws std::bad_alloc
void *allocate_large(size_t bytes);
// a block of allocate_large: to the current cache if there is one and it has room, else freed
void free_large(void *block) noexcept;

class BlockCache {
  public:
    explicit BlockCache(size_t limit) : limit_(limit) {}
    BlockCache(const BlockCache &) = delete;
    BlockCache &operator=(const BlockCache &) = delete;
    ~BlockCache();

    // the most bytes of blocks kept (0: none); lowering it frees blocks now
    void set_limit(size_t limit);
    size_t limit() const;
    size_t held() const;  // bytes of blocks kept now

    // the cache current on the calling thread (null: none)
    static BlockCache *current() noexcept;

    // makes a cache current on this thread for the Scope's life (null: none), then the previous one
    class Scope {
      public:
        explicit Scope(BlockCache *cache) noexcept;
        ~Scope();
        Scope(const Scope &) = delete;
        Scope &operator=(const Scope &) = delete;

      private:
        BlockCache *previous_;
    };

  private:
    friend void *allocate_large(size_t);
    friend void free_large(void *) noexcept;

    void *take(size_t bytes);                   // the smallest kept block of ≥ bytes, removed, or null (see above)
    bool keep(void *block, size_t capacity);    // false: no room (the caller frees it)
    void trim(size_t limit);                    // frees blocks until at most `limit` bytes are kept

    mutable std::mutex m_;
    std::multimap<size_t, void *> blocks_;  // capacity → block
    size_t held_ = 0, limit_;
    const long owner_ = process_id();
};

}  // namespace vlmc::conv
