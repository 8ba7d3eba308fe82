// row_product of conv.hpp, built for AVX2 + FMA too where the compiler can dispatch at run time
// (GCC, Clang on x86-64 ELF). In float64 the operands are integers and every partial sum is below
// 2^52 (the exact h_s checks it), so the result is exact in any order and every variant — fused
// multiply-adds included — gives the same bits; in float32 (g_s) variants may differ by an ULP.
#include "conv.hpp"

#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif

namespace vlmc::conv {
namespace {

// acc[c][j] = (fresh ? 0 : acc[c][j]) + Σ_t w[t·C + c] · xq[*t + j] over the taps [tap, tap_end):
// C channels × V 32-byte vectors of pixels
template <class T, uint32_t C, uint32_t V>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline void accumulate(T *acc, bool fresh, const T *w, const int64_t *tap, const int64_t *tap_end, const T *xq) {
#if defined(__GNUC__)
    constexpr uint32_t L = 32 / sizeof(T);  // lanes per 32-byte vector
    // C · V accumulators, V pixel vectors and a weight in AVX2's 16 registers (6 × 2: 15, 3 × 3:
    // 13; 3 × 4 would spill an accumulator); one tap per step, its input column from the table
    typedef T Vec __attribute__((vector_size(32)));
    // a broadcast as ones · w: GCC folds the product into one load-and-broadcast, where Vec{} + w
    // (not an identity for −0) costs an add and a shuffle per weight
    const Vec ones = Vec{} + T(1);
    Vec a[C][V];
    // (vector by vector: a memcpy or zero-fill of the whole array became rep movs / rep stos, ~6 %
    // of an encode)
#pragma GCC unroll 12
    for (uint32_t k = 0; k < C * V; ++k) {
        if (fresh)
            a[k / V][k % V] = Vec{};
        else
            std::memcpy(&a[k / V][k % V], acc + k * L, sizeof(Vec));
    }
    for (; tap != tap_end; ++tap, w += C) {
        Vec x[V];
#pragma GCC unroll 4
        for (uint32_t v = 0; v < V; ++v) std::memcpy(&x[v], xq + *tap + v * L, sizeof x[v]);
#pragma GCC unroll 8  // the accumulators stay in registers only if unrolled (-O2 does not by itself)
        for (uint32_t c = 0; c < C; ++c) {
            const Vec wc = ones * w[c];
#pragma GCC unroll 4
            for (uint32_t v = 0; v < V; ++v) a[c][v] += wc * x[v];
        }
    }
#pragma GCC unroll 12
    for (uint32_t k = 0; k < C * V; ++k) std::memcpy(acc + k * L, &a[k / V][k % V], sizeof(Vec));
#else
    constexpr uint32_t B = V * 32 / sizeof(T);  // pixels per block
    if (fresh) std::fill(acc, acc + C * B, T(0));
    for (; tap != tap_end; ++tap, w += C)
        for (uint32_t c = 0; c < C; ++c)
            for (uint32_t j = 0; j < B; ++j) acc[c * B + j] += w[c] * xq[*tap + j];
#endif
}

// one output row with blocks of C channels × V 32-byte vectors of pixels. With several chunks of
// taps (conv.hpp: Packed::chunks), each pixel block's products run a chunk at a time through every
// channel block, the sums kept in a per-thread scratch between chunks, so that the chunk's input
// under the pixel block is read from the L1 cache by every channel block (not from L2 by each);
// the taps are added in the same order either way (the same sums, bit for bit)
template <class T, uint32_t C, uint32_t V>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline void row_body(const Packed<T> &packed, const int64_t *offsets, const T *xp, uint32_t w_out, T *row,
                     size_t out_plane) {
    constexpr uint32_t L = 32 / sizeof(T), B = V * L;
    static_assert(B == pixel_block<T>(C), "conv.hpp's pixel block for this channel block");
    const T *weights = packed.weights.data();
    const uint32_t *start = packed.start.data(), *channel = packed.channel.data(), out = packed.out;
    const uint32_t blocks = (out + C - 1) / C, chunks = packed.chunks;
    const uint32_t *chunk_start = packed.chunk_start.data();
    thread_local std::vector<T> scratch;
    if (chunks > 1 && scratch.size() < size_t(blocks) * C * B) scratch.resize(size_t(blocks) * C * B);
    // block b's sums into the row
    const auto store = [&](uint32_t b, const T *acc, uint32_t q, uint32_t n) {
        for (uint32_t c = 0; c < C; ++c) {
            const uint32_t o = channel[b * C + c];
            if (o >= out) continue;
            if (n == B)  // a whole block: vector stores (a loop over n is not vectorised)
                std::memcpy(row + o * out_plane + q, acc + c * B, sizeof(T) * B);
            else
                for (uint32_t j = 0; j < n; ++j) row[o * out_plane + q + j] = acc[c * B + j];
        }
    };
    for (uint32_t q = 0; q < w_out; q += B) {
        const uint32_t n = std::min(B, w_out - q);
        const T *xq = xp + q;
        if (chunks == 1) {
            for (uint32_t b = 0; b < blocks; ++b) {
                alignas(32) T acc[C * B];
                accumulate<T, C, V>(acc, true, weights + size_t(start[b]) * C, offsets + start[b], offsets + start[b + 1],
                                    xq);
                store(b, acc, q, n);
            }
            continue;
        }
        for (uint32_t k = 0; k < chunks; ++k)
            for (uint32_t b = 0; b < blocks; ++b) {
                const uint32_t t0 = chunk_start[b * (chunks + 1) + k], t1 = chunk_start[b * (chunks + 1) + k + 1];
                if (k == 0 || t0 != t1)  // (the first chunk's call zeroes the sums, taps or none)
                    accumulate<T, C, V>(scratch.data() + size_t(b) * C * B, k == 0, weights + size_t(t0) * C,
                                        offsets + t0, offsets + t1, xq);
            }
        for (uint32_t b = 0; b < blocks; ++b) store(b, scratch.data() + size_t(b) * C * B, q, n);
    }
}

template <class T>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline void row_any(const Packed<T> &packed, const int64_t *offsets, const T *xp, uint32_t w_out, T *row,
                    size_t out_plane) {
    if (packed.bo == kBoNarrow)
        row_body<T, kBoNarrow, 3>(packed, offsets, xp, w_out, row, out_plane);
    else
        row_body<T, kBo, 2>(packed, offsets, xp, w_out, row, out_plane);
}

}  // namespace

VLMC_MULTIVERSION void row_product(const Packed<double> &packed, const int64_t *offsets, const double *xp,
                                   uint32_t w_out, double *row, size_t out_plane) {
    row_any(packed, offsets, xp, w_out, row, out_plane);
}

VLMC_MULTIVERSION void row_product(const Packed<float> &packed, const int64_t *offsets, const float *xp, uint32_t w_out,
                                   float *row, size_t out_plane) {
    row_any(packed, offsets, xp, w_out, row, out_plane);
}

}  // namespace vlmc::conv
