// row_product of conv.hpp, built for AVX2 + FMA too where the compiler can dispatch at run time
// (GCC, Clang on x86-64 ELF). In float64 the operands are integers and every partial sum is below
// 2^52 (the exact h_s checks it), so the result is exact in any order and every variant — fused
// multiply-adds included — gives the same bits; in float32 (g_s) variants may differ by an ULP.
#include "conv.hpp"

// VLMC_CONV_PORTABLE_ONLY: the portable version alone (a test builds it to check it on machines
// where the dispatcher would always pick the AVX2 one)
#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute) && !defined(VLMC_CONV_PORTABLE_ONLY)
#if __has_attribute(target_clones)
#define VLMC_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
#endif
#ifndef VLMC_MULTIVERSION
#define VLMC_MULTIVERSION
#endif

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
inline void row_body(const T *packed, uint32_t out, uint32_t K, const int64_t *taps, const T *xp, uint32_t w_out,
                     T *row, size_t out_plane) {
    constexpr uint32_t B = pixel_block<T>(), L = B / 2;  // L lanes per 32-byte vector
    for (uint32_t q = 0; q < w_out; q += B) {
        const uint32_t n = std::min(B, w_out - q);
        const T *xq = xp + q;
        for (uint32_t o = 0; o < out; o += kBo) {
            const uint32_t bo = std::min(kBo, out - o);
            const T *w = packed + size_t(o / kBo) * K * kBo;
            T acc[kBo][B];
#if defined(__GNUC__)
            // kBo channels × 2 vectors of pixels: 12 accumulators, 2 pixel vectors and a weight
            // in 15 of AVX2's 16 registers; one tap per step, its input column from the table
            typedef T V __attribute__((vector_size(32)));
            // a broadcast as ones · w: GCC folds the product into one load-and-broadcast, where
            // V{} + w (not an identity for −0) costs an add and a shuffle per weight
            const V ones = V{} + T(1);
            V a[kBo][2] = {};
            for (uint32_t k = 0; k < K; ++k, w += kBo) {
                V x0, x1;
                std::memcpy(&x0, xq + taps[k], sizeof x0);
                std::memcpy(&x1, xq + taps[k] + L, sizeof x1);
#pragma GCC unroll 8  // the accumulators stay in registers only if unrolled (-O2 does not by itself)
                for (uint32_t r = 0; r < kBo; ++r) {
                    const V b = ones * w[r];
                    a[r][0] += b * x0;
                    a[r][1] += b * x1;
                }
            }
            std::memcpy(acc, a, sizeof acc);
#else
            std::memset(acc, 0, sizeof acc);
            for (uint32_t k = 0; k < K; ++k, w += kBo)
                for (uint32_t r = 0; r < kBo; ++r)
                    for (uint32_t j = 0; j < B; ++j) acc[r][j] += w[r] * xq[taps[k] + j];
#endif
            for (uint32_t r = 0; r < bo; ++r)
                for (uint32_t j = 0; j < n; ++j) row[(o + r) * out_plane + q + j] = acc[r][j];
        }
    }
}

}  // namespace

VLMC_MULTIVERSION void row_product(const double *packed, uint32_t out, uint32_t K, const int64_t *taps,
                                   const double *xp, uint32_t w_out, double *row, size_t out_plane) {
    row_body(packed, out, K, taps, xp, w_out, row, out_plane);
}

VLMC_MULTIVERSION void row_product(const float *packed, uint32_t out, uint32_t K, const int64_t *taps,
                                   const float *xp, uint32_t w_out, float *row, size_t out_plane) {
    row_body(packed, out, K, taps, xp, w_out, row, out_plane);
}

}  // namespace vlmc::conv
