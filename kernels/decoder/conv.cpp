// The register-blocked products of conv.hpp, built for AVX2 + FMA too where the compiler can
// dispatch at run time (GCC, Clang on x86-64 ELF). In float64 the operands are integers and every
// partial sum is below 2^52 (the exact h_s checks it), so the result is exact in any order and
// every variant — fused multiply-adds included — gives the same bits.
#include "conv.hpp"

#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute)
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
inline void product_body(const T *weight, const T *panels, uint32_t K, uint32_t np, uint32_t o0, uint32_t o1, T *out,
                         size_t plane, size_t p0) {
    constexpr uint32_t B = pixel_block<T>(), L = B / 2;  // L lanes per 32-byte vector
    // pixel blocks outermost: a block's panel (K × B) stays in cache while every channel block
    // passes over it, and only the weights stream from the next level
    for (uint32_t q = 0; q < np; q += B) {
        const T *panel = panels + size_t(q / B) * K * B;
        const uint32_t n = std::min(B, np - q);
        for (uint32_t o = o0; o < o1; o += kBo) {
            const uint32_t bo = std::min(kBo, o1 - o);
            const T *w0 = weight + size_t(o) * K;
            const T *w1 = weight + size_t(o + std::min(1u, bo - 1)) * K;
            const T *w2 = weight + size_t(o + std::min(2u, bo - 1)) * K;
            const T *w3 = weight + size_t(o + std::min(3u, bo - 1)) * K;
            T acc[kBo][B];
            const T *x = panel;
#if defined(__GNUC__)
            // 4 channels × B pixels of accumulators: 8 vectors of L (two registers each on SSE2)
            typedef T V __attribute__((vector_size(32)));
            V a00 = {}, a01 = {}, a10 = {}, a11 = {}, a20 = {}, a21 = {}, a30 = {}, a31 = {};
            for (uint32_t k = 0; k < K; ++k, x += B) {
                V x0, x1;
                std::memcpy(&x0, x, sizeof x0);
                std::memcpy(&x1, x + L, sizeof x1);
                const V b0 = V{} + w0[k], b1 = V{} + w1[k], b2 = V{} + w2[k], b3 = V{} + w3[k];
                a00 += b0 * x0, a01 += b0 * x1, a10 += b1 * x0, a11 += b1 * x1;
                a20 += b2 * x0, a21 += b2 * x1, a30 += b3 * x0, a31 += b3 * x1;
            }
            const V parts[kBo][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            std::memcpy(acc, parts, sizeof acc);
#else
            std::memset(acc, 0, sizeof acc);
            const T *ws[kBo] = {w0, w1, w2, w3};
            for (uint32_t k = 0; k < K; ++k, x += B)
                for (uint32_t i = 0; i < kBo; ++i)
                    for (uint32_t j = 0; j < B; ++j) acc[i][j] += ws[i][k] * x[j];
#endif
            for (uint32_t i = 0; i < bo; ++i)
                for (uint32_t j = 0; j < n; ++j) out[(o + i) * plane + p0 + q + j] = acc[i][j];
        }
    }
}

}  // namespace

VLMC_MULTIVERSION void product_tile(const double *weight, const double *panels, uint32_t K, uint32_t np, uint32_t o0,
                                    uint32_t o1, double *out, size_t plane, size_t p0) {
    product_body(weight, panels, K, np, o0, o1, out, plane, p0);
}

VLMC_MULTIVERSION void product_tile(const float *weight, const float *panels, uint32_t K, uint32_t np, uint32_t o0,
                                    uint32_t o1, float *out, size_t plane, size_t p0) {
    product_body(weight, panels, K, np, o0, o1, out, plane, p0);
}

}  // namespace vlmc::conv
