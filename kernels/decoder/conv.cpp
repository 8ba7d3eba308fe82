// row_product of conv.hpp, built for AVX2 + FMA and for AVX-512 too where conv.hpp's
// VLMC_CONV_DISPATCH says the compiler can (GCC ≥ 11, Clang ≥ 12 on x86-64 ELF), one of them picked
// at run time by the CPU's features. In float64 the operands are integers and every partial sum is
// below 2^52 (the exact h_s checks it), so the result is exact in any order and every variant —
// fused multiply-adds included — gives the same bits; in float32 (g_s) the portable variant may
// differ from the others by an ULP (the AVX2 and AVX-512 ones take each pixel's taps in the same
// order, with fused multiply-adds: the same bits).
#include "conv.hpp"

#include <cstdlib>
#include <cstring>

#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif

namespace vlmc::conv {
namespace {

// acc[c][j] = (fresh ? 0 : acc[c][j]) + Σ_t w[t·C + c] · xq[*t + j] over the taps [tap, tap_end):
// C channels × V vectors of VB bytes of pixels. Each pixel's sum takes the taps in the same order
// whatever V and VB, so a block's width changes no bits (the AVX-512 version's equal the AVX2 one's)
template <class T, uint32_t C, uint32_t V, uint32_t VB = 32>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline void accumulate(T *acc, bool fresh, const T *w, const int64_t *tap, const int64_t *tap_end, const T *xq) {
#if defined(__GNUC__)
    constexpr uint32_t L = VB / sizeof(T);  // lanes per vector
    // C · V accumulators, V pixel vectors and a weight in the vector registers: AVX2's 16 (6 × 2:
    // 15, 3 × 3: 13; 3 × 4 would spill an accumulator), AVX-512's 32 (6 × 4: 29, 3 × 6: 25); one
    // tap per step, its input column from the table
    typedef T Vec __attribute__((vector_size(VB)));
    // a broadcast as ones · w: GCC folds the product into one load-and-broadcast, where Vec{} + w
    // (not an identity for −0) costs an add and a shuffle per weight
    const Vec ones = Vec{} + T(1);
    Vec a[C][V];
    // (vector by vector: a memcpy or zero-fill of the whole array became rep movs / rep stos, ~6 %
    // of an encode)
#pragma GCC unroll 24
    for (uint32_t k = 0; k < C * V; ++k) {
        if (fresh)
            a[k / V][k % V] = Vec{};
        else
            std::memcpy(&a[k / V][k % V], acc + k * L, sizeof(Vec));
    }
    for (; tap != tap_end; ++tap, w += C) {
        Vec x[V];
#pragma GCC unroll 6
        for (uint32_t v = 0; v < V; ++v) std::memcpy(&x[v], xq + *tap + v * L, sizeof x[v]);
#pragma GCC unroll 8  // the accumulators stay in registers only if unrolled (-O2 does not by itself)
        for (uint32_t c = 0; c < C; ++c) {
            const Vec wc = ones * w[c];
#pragma GCC unroll 6
            for (uint32_t v = 0; v < V; ++v) a[c][v] += wc * x[v];
        }
    }
#pragma GCC unroll 24
    for (uint32_t k = 0; k < C * V; ++k) std::memcpy(acc + k * L, &a[k / V][k % V], sizeof(Vec));
#else
    constexpr uint32_t B = V * VB / sizeof(T);  // pixels per block
    if (fresh) std::fill(acc, acc + C * B, T(0));
    for (; tap != tap_end; ++tap, w += C)
        for (uint32_t c = 0; c < C; ++c)
            for (uint32_t j = 0; j < B; ++j) acc[c * B + j] += w[c] * xq[*tap + j];
#endif
}

// one output row, from column q on, with blocks of C channels × V vectors of VB bytes of pixels, as
// long as a whole block lies within the row rounded up to conv.hpp's pixel block (what a caller
// makes readable); returns the column it stopped at. With several chunks of taps (conv.hpp:
// Packed::chunks), each pixel block's products run a chunk at a time through every channel block,
// the sums kept in a per-thread scratch between chunks, so that the chunk's input under the pixel
// block is read from the L1 cache by every channel block (not from L2 by each); the taps are added
// in the same order either way (the same sums, bit for bit)
template <class T, uint32_t C, uint32_t V, uint32_t VB = 32>
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
inline uint32_t row_body(const Packed<T> &packed, const int64_t *offsets, const T *xp, uint32_t w_out, T *row,
                         size_t out_plane, uint32_t q = 0) {
    constexpr uint32_t B = V * VB / sizeof(T), unit = pixel_block<T>(C);
    static_assert(B % unit == 0, "a whole number of conv.hpp's pixel blocks");
    const uint32_t readable = (w_out + unit - 1) / unit * unit;
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
    for (; q < w_out && q + B <= readable; q += B) {
        const uint32_t n = std::min(B, w_out - q);
        const T *xq = xp + q;
        if (chunks == 1) {
            for (uint32_t b = 0; b < blocks; ++b) {
                alignas(64) T acc[C * B];
                accumulate<T, C, V, VB>(acc, true, weights + size_t(start[b]) * C, offsets + start[b],
                                        offsets + start[b + 1], xq);
                store(b, acc, q, n);
            }
            continue;
        }
        for (uint32_t k = 0; k < chunks; ++k)
            for (uint32_t b = 0; b < blocks; ++b) {
                const uint32_t t0 = chunk_start[b * (chunks + 1) + k], t1 = chunk_start[b * (chunks + 1) + k + 1];
                if (k == 0 || t0 != t1)  // (the first chunk's call zeroes the sums, taps or none)
                    accumulate<T, C, V, VB>(scratch.data() + size_t(b) * C * B, k == 0, weights + size_t(t0) * C,
                                            offsets + t0, offsets + t1, xq);
            }
        for (uint32_t b = 0; b < blocks; ++b) store(b, scratch.data() + size_t(b) * C * B, q, n);
    }
    return q;
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

#if VLMC_CONV_DISPATCH
// the same products in AVX-512's 64-byte vectors: blocks four (then two, one) times as wide as
// conv.hpp's pixel block while they fit the row, the AVX2 block for a narrow layer's last columns
template <class T>
__attribute__((always_inline)) inline void row_wide(const Packed<T> &packed, const int64_t *offsets, const T *xp,
                                                    uint32_t w_out, T *row, size_t out_plane) {
    if (packed.bo == kBoNarrow) {
        const uint32_t q = row_body<T, kBoNarrow, 6, 64>(packed, offsets, xp, w_out, row, out_plane);
        row_body<T, kBoNarrow, 3, 32>(packed, offsets, xp, w_out, row, out_plane, q);
    } else {
        uint32_t q = row_body<T, kBo, 4, 64>(packed, offsets, xp, w_out, row, out_plane);
        q = row_body<T, kBo, 2, 64>(packed, offsets, xp, w_out, row, out_plane, q);
        row_body<T, kBo, 1, 64>(packed, offsets, xp, w_out, row, out_plane, q);
    }
}

// (templates: each type's instantiation is built for the target, from the dispatcher below)
template <class T>
VLMC_TARGET_AVX512 void row_product_avx512(const Packed<T> &packed, const int64_t *offsets, const T *xp, uint32_t w_out,
                                           T *row, size_t out_plane) {
    row_wide(packed, offsets, xp, w_out, row, out_plane);
}

template <class T>
VLMC_TARGET_AVX2 void row_product_avx2(const Packed<T> &packed, const int64_t *offsets, const T *xp, uint32_t w_out,
                                       T *row, size_t out_plane) {
    row_any(packed, offsets, xp, w_out, row, out_plane);
}
#endif

template <class T>
void row_product_portable(const Packed<T> &packed, const int64_t *offsets, const T *xp, uint32_t w_out, T *row,
                          size_t out_plane) {
    row_any(packed, offsets, xp, w_out, row, out_plane);
}

}  // namespace

Level vector_level() {
#if VLMC_CONV_DISPATCH
    static const Level chosen = [] {
        __builtin_cpu_init();
        const char *off = std::getenv("VLMC_NO_AVX512");
        const bool no_avx512 = off && *off && std::strcmp(off, "0") != 0;
        if (!no_avx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
            return Level::avx512;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Level::avx2;
        return Level::portable;
    }();
    return chosen;
#else
    return Level::portable;
#endif
}

const char *vector_isa() {
    switch (vector_level()) {
    case Level::avx512: return "avx512";
    case Level::avx2: return "avx2";
    default: return "portable";
    }
}

namespace {

template <class T>
void dispatch(const Packed<T> &packed, const int64_t *offsets, const T *xp, uint32_t w_out, T *row, size_t out_plane) {
#if VLMC_CONV_DISPATCH
    switch (vector_level()) {
    case Level::avx512: return row_product_avx512(packed, offsets, xp, w_out, row, out_plane);
    case Level::avx2: return row_product_avx2(packed, offsets, xp, w_out, row, out_plane);
    default: break;
    }
#endif
    row_product_portable(packed, offsets, xp, w_out, row, out_plane);
}

}  // namespace

void row_product(const Packed<double> &packed, const int64_t *offsets, const double *xp, uint32_t w_out, double *row,
                 size_t out_plane) {
    dispatch(packed, offsets, xp, w_out, row, out_plane);
}

void row_product(const Packed<float> &packed, const int64_t *offsets, const float *xp, uint32_t w_out, float *row,
                 size_t out_plane) {
    dispatch(packed, offsets, xp, w_out, row, out_plane);
}

}  // namespace vlmc::conv
