// row_product of conv.hpp, built for AVX2 + FMA too where the compiler can dispatch at run time
// (GCC, Clang on x86-64 ELF). In float64 the operands are integers and every partial sum is below
// 2^52 (the exact h_s checks it), so the result is exact in any order and every variant — fused
// multiply-adds included — gives the same bits; in float32 (g_s) variants may differ by an ULP.
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
inline void row_body(const T *packed, uint32_t out, uint32_t in, uint32_t kh, uint32_t kw, const T *xp,
                     size_t xp_plane, size_t xp_row, uint32_t w_out, T *row, size_t out_plane) {
    constexpr uint32_t B = pixel_block<T>(), L = B / 2;  // L lanes per 32-byte vector
    const uint32_t K = in * kh * kw;
    for (uint32_t q = 0; q < w_out; q += B) {
        const uint32_t n = std::min(B, w_out - q);
        for (uint32_t o = 0; o < out; o += kBo) {
            const uint32_t bo = std::min(kBo, out - o);
            const T *w = packed + size_t(o / kBo) * K * kBo;
            T acc[kBo][B];
#if defined(__GNUC__)
            // 4 channels × B pixels of accumulators: 8 vectors of L (two registers each on SSE2)
            typedef T V __attribute__((vector_size(32)));
            V a00 = {}, a01 = {}, a10 = {}, a11 = {}, a20 = {}, a21 = {}, a30 = {}, a31 = {};
            for (uint32_t i = 0; i < in; ++i)
                for (uint32_t ky = 0; ky < kh; ++ky) {
                    const T *x = xp + i * xp_plane + ky * xp_row + q;
                    for (uint32_t kx = 0; kx < kw; ++kx, w += kBo) {
                        V x0, x1;
                        std::memcpy(&x0, x + kx, sizeof x0);
                        std::memcpy(&x1, x + kx + L, sizeof x1);
                        const V b0 = V{} + w[0], b1 = V{} + w[1], b2 = V{} + w[2], b3 = V{} + w[3];
                        a00 += b0 * x0, a01 += b0 * x1, a10 += b1 * x0, a11 += b1 * x1;
                        a20 += b2 * x0, a21 += b2 * x1, a30 += b3 * x0, a31 += b3 * x1;
                    }
                }
            const V parts[kBo][2] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};
            std::memcpy(acc, parts, sizeof acc);
#else
            std::memset(acc, 0, sizeof acc);
            for (uint32_t i = 0; i < in; ++i)
                for (uint32_t ky = 0; ky < kh; ++ky)
                    for (uint32_t kx = 0; kx < kw; ++kx, w += kBo)
                        for (uint32_t r = 0; r < kBo; ++r)
                            for (uint32_t j = 0; j < B; ++j)
                                acc[r][j] += w[r] * xp[i * xp_plane + ky * xp_row + q + kx + j];
#endif
            for (uint32_t r = 0; r < bo; ++r)
                for (uint32_t j = 0; j < n; ++j) row[(o + r) * out_plane + q + j] = acc[r][j];
        }
    }
}

}  // namespace

VLMC_MULTIVERSION void row_product(const double *packed, uint32_t out, uint32_t in, uint32_t kh, uint32_t kw,
                                   const double *xp, size_t xp_plane, size_t xp_row, uint32_t w_out, double *row,
                                   size_t out_plane) {
    row_body(packed, out, in, kh, kw, xp, xp_plane, xp_row, w_out, row, out_plane);
}

VLMC_MULTIVERSION void row_product(const float *packed, uint32_t out, uint32_t in, uint32_t kh, uint32_t kw,
                                   const float *xp, size_t xp_plane, size_t xp_row, uint32_t w_out, float *row,
                                   size_t out_plane) {
    row_body(packed, out, in, kh, kw, xp, xp_plane, xp_row, w_out, row, out_plane);
}

}  // namespace vlmc::conv
