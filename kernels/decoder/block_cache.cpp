#include "block_cache.hpp"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>

// Under AddressSanitizer a kept block is poisoned, so a use after its buffer was freed is reported
// as it would be without the cache; in debug builds every block handed out is filled with 0xff
// bytes (NaN as floats), so code that reads a buffer before writing it shows in its results
#if defined(__SANITIZE_ADDRESS__)
#define VLMC_BLOCKS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VLMC_BLOCKS_ASAN 1
#endif
#endif
#if defined(VLMC_BLOCKS_ASAN)
#include <sanitizer/asan_interface.h>
#define VLMC_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define VLMC_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define VLMC_POISON(p, n) ((void)(p), (void)(n))
#define VLMC_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace vlmc::conv {
namespace {

// in front of each block: where malloc's allocation starts and the bytes the block holds
struct Header {
    void *base;
    size_t capacity;
};
constexpr size_t kAlign = 64;

Header &header_of(void *block) { return *(static_cast<Header *>(block) - 1); }

BlockCache *&current_cache() noexcept {
    thread_local BlockCache *cache = nullptr;
    return cache;
}

void release(void *block) noexcept {
    VLMC_UNPOISON(block, header_of(block).capacity);
    std::free(header_of(block).base);
}

void *handed_out(void *block, size_t bytes) {
#if !defined(NDEBUG)
    std::memset(block, 0xff, bytes);
#else
    (void)bytes;
#endif
    return block;
}

}  // namespace

void *allocate_large(size_t bytes) {
    if (BlockCache *cache = current_cache())
        if (void *block = cache->take(bytes)) return handed_out(block, bytes);
    if (bytes > SIZE_MAX - kAlign - sizeof(Header)) throw std::bad_alloc();
    const size_t total = bytes + kAlign + sizeof(Header);
    char *base = static_cast<char *>(std::malloc(total));
    if (base == nullptr) throw std::bad_alloc();
    const uintptr_t at = (reinterpret_cast<uintptr_t>(base) + sizeof(Header) + kAlign - 1) & ~uintptr_t(kAlign - 1);
    char *block = reinterpret_cast<char *>(at);
    header_of(block) = Header{base, bytes};
    VLMC_POISON(block + bytes, size_t(base + total - (block + bytes)));  // the slack after it
    return handed_out(block, bytes);
}

void free_large(void *block) noexcept {
    if (block == nullptr) return;
    BlockCache *cache = current_cache();
    if (cache == nullptr || !cache->keep(block, header_of(block).capacity)) release(block);
}

BlockCache::~BlockCache() { trim(0); }

void BlockCache::set_limit(size_t limit) {
    if (owner_ != process_id()) return;
    {
        std::lock_guard<std::mutex> lock(m_);
        limit_ = limit;
    }
    trim(limit);
}

size_t BlockCache::limit() const {
    if (owner_ != process_id()) return 0;
    std::lock_guard<std::mutex> lock(m_);
    return limit_;
}

size_t BlockCache::held() const {
    if (owner_ != process_id()) return 0;
    std::lock_guard<std::mutex> lock(m_);
    return held_;
}

BlockCache *BlockCache::current() noexcept { return current_cache(); }

BlockCache::Scope::Scope(BlockCache *cache) noexcept : previous_(current_cache()) { current_cache() = cache; }
BlockCache::Scope::~Scope() { current_cache() = previous_; }

void *BlockCache::take(size_t bytes) {
    if (owner_ != process_id()) return nullptr;
    std::lock_guard<std::mutex> lock(m_);
    const auto it = blocks_.lower_bound(bytes);  // the smallest that fits
    if (it == blocks_.end()) {
        // none fits: the smaller ones go back to malloc, which may join them into this one
        for (auto &b : blocks_) release(b.second);
        blocks_.clear();
        held_ = 0;
        return nullptr;
    }
    void *block = it->second;
    VLMC_UNPOISON(block, bytes);  // the rest of its capacity stays poisoned: beyond the buffer
    held_ -= it->first;
    blocks_.erase(it);
    return block;
}

bool BlockCache::keep(void *block, size_t capacity) {
    if (owner_ != process_id()) return false;
    std::lock_guard<std::mutex> lock(m_);
    if (capacity > limit_ || held_ > limit_ - capacity) return false;
    try {
        blocks_.emplace(capacity, block);
    } catch (...) {  // no memory for the map's node: the block is freed instead
        return false;
    }
    VLMC_POISON(block, capacity);
    held_ += capacity;
    return true;
}

void BlockCache::trim(size_t limit) {
    if (owner_ != process_id()) return;
    std::lock_guard<std::mutex> lock(m_);
    // the largest first: the most memory back for the fewest blocks
    while (held_ > limit && !blocks_.empty()) {
        const auto last = std::prev(blocks_.end());
        held_ -= last->first;
        release(last->second);
        blocks_.erase(last);
    }
}

}  // namespace vlmc::conv
