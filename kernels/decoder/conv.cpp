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

// one output row with blocks of C channels × V 32-byte vectors of pixels
template <class T, uint32_t C, uint32_t V>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline void row_body(const Packed<T> &packed, const int64_t *offsets, const T *xp, uint32_t w_out, T *row,
                     size_t out_plane) {
    constexpr uint32_t L = 32 / sizeof(T), B = V * L;  // L lanes per 32-byte vector, B pixels per block
    static_assert(B == pixel_block<T>(C), "conv.hpp's pixel block for this channel block");
    const T *weights = packed.weights.data();
    const uint32_t *start = packed.start.data(), *channel = packed.channel.data(), out = packed.out;
    const uint32_t blocks = (out + C - 1) / C;
    for (uint32_t q = 0; q < w_out; q += B) {
        const uint32_t n = std::min(B, w_out - q);
        const T *xq = xp + q;
        for (uint32_t b = 0; b < blocks; ++b) {
            const T *w = weights + size_t(start[b]) * C;
            const int64_t *tap = offsets + start[b], *tap_end = offsets + start[b + 1];
            T acc[C][B];
#if defined(__GNUC__)
            // C · V accumulators, V pixel vectors and a weight in AVX2's 16 registers (6 × 2: 15,
            // 3 × 3: 13; 3 × 4 would spill an accumulator); one tap per
            // step, its input column from the table
            typedef T Vec __attribute__((vector_size(32)));
            // a broadcast as ones · w: GCC folds the product into one load-and-broadcast, where
            // Vec{} + w (not an identity for −0) costs an add and a shuffle per weight
            const Vec ones = Vec{} + T(1);
            Vec a[C][V] = {};
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
            std::memcpy(acc, a, sizeof acc);
#else
            std::memset(acc, 0, sizeof acc);
            for (; tap != tap_end; ++tap, w += C)
                for (uint32_t c = 0; c < C; ++c)
                    for (uint32_t j = 0; j < B; ++j) acc[c][j] += w[c] * xq[*tap + j];
#endif
            for (uint32_t c = 0; c < C; ++c) {
                const uint32_t o = channel[b * C + c];
                if (o >= out) continue;
                if (n == B)  // a whole block: vector stores (a loop over n is not vectorised)
                    std::memcpy(row + o * out_plane + q, acc[c], sizeof acc[c]);
                else
                    for (uint32_t j = 0; j < n; ++j) row[o * out_plane + q + j] = acc[c][j];
            }
        }
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
