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

template <class T>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline void row_body(const T *weights, const uint32_t *start, const int64_t *offsets, const uint32_t *channel,
                     uint32_t out, const T *xp, uint32_t w_out, T *row, size_t out_plane) {
    constexpr uint32_t B = pixel_block<T>(), L = B / 2;  // L lanes per 32-byte vector
    const uint32_t blocks = (out + kBo - 1) / kBo;
    for (uint32_t q = 0; q < w_out; q += B) {
        const uint32_t n = std::min(B, w_out - q);
        const T *xq = xp + q;
        for (uint32_t b = 0; b < blocks; ++b) {
            const T *w = weights + size_t(start[b]) * kBo;
            const int64_t *tap = offsets + start[b], *tap_end = offsets + start[b + 1];
            T acc[kBo][B];
#if defined(__GNUC__)
            // kBo channels × 2 vectors of pixels: 12 accumulators, 2 pixel vectors and a weight
            // in 15 of AVX2's 16 registers; one tap per step, its input column from the table
            typedef T V __attribute__((vector_size(32)));
            // a broadcast as ones · w: GCC folds the product into one load-and-broadcast, where
            // V{} + w (not an identity for −0) costs an add and a shuffle per weight
            const V ones = V{} + T(1);
            V a[kBo][2] = {};
            for (; tap != tap_end; ++tap, w += kBo) {
                V x0, x1;
                std::memcpy(&x0, xq + *tap, sizeof x0);
                std::memcpy(&x1, xq + *tap + L, sizeof x1);
#pragma GCC unroll 8  // the accumulators stay in registers only if unrolled (-O2 does not by itself)
                for (uint32_t c = 0; c < kBo; ++c) {
                    const V v = ones * w[c];
                    a[c][0] += v * x0;
                    a[c][1] += v * x1;
                }
            }
            std::memcpy(acc, a, sizeof acc);
#else
            std::memset(acc, 0, sizeof acc);
            for (; tap != tap_end; ++tap, w += kBo)
                for (uint32_t c = 0; c < kBo; ++c)
                    for (uint32_t j = 0; j < B; ++j) acc[c][j] += w[c] * xq[*tap + j];
#endif
            for (uint32_t c = 0; c < kBo; ++c) {
                const uint32_t o = channel[b * kBo + c];
                if (o >= out) continue;
                if (n == B)  // a whole block: two vector stores (a loop over n is not vectorised)
                    std::memcpy(row + o * out_plane + q, acc[c], sizeof acc[c]);
                else
                    for (uint32_t j = 0; j < n; ++j) row[o * out_plane + q + j] = acc[c][j];
            }
        }
    }
}

}  // namespace

VLMC_MULTIVERSION void row_product(const double *weights, const uint32_t *start, const int64_t *offsets,
                                   const uint32_t *channel, uint32_t out, const double *xp, uint32_t w_out, double *row,
                                   size_t out_plane) {
    row_body(weights, start, offsets, channel, out, xp, w_out, row, out_plane);
}

VLMC_MULTIVERSION void row_product(const float *weights, const uint32_t *start, const int64_t *offsets,
                                   const uint32_t *channel, uint32_t out, const float *xp, uint32_t w_out, float *row,
                                   size_t out_plane) {
    row_body(weights, start, offsets, channel, out, xp, w_out, row, out_plane);
}

}  // namespace vlmc::conv
