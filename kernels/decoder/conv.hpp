// Stride-1 convolutions for the stream decoder, as an implicit GEMM: each block of output pixels
// reads its taps straight from a zero-padded copy of the input rows, and a register-blocked
// product (kBo = 6 output channels × 2 vectors of pixels; for layers of at most 3 outputs,
// kBoNarrow = 3 channels × 3 vectors) accumulates them. In float64 for the exact
// h_s (integer-valued operands, every partial sum below 2^52: exact in any order) and in float32
// for g_s.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "block_cache.hpp"
#include "pool.hpp"

// VLMC_CONV_DISPATCH: row_product has versions for AVX2 + FMA and for AVX-512 (F/VL/BW/DQ) too, and
// the encoder's element-wise helpers for AVX2, picked at run time by the CPU's features (AVX-512
// unless VLMC_NO_AVX512 is set and not "0"), where the compiler can build them (GCC ≥ 11 or
// Clang ≥ 12 on x86-64 ELF).
// VLMC_CONV_PORTABLE_ONLY: the portable version alone (a test builds it to check it on machines
// where the dispatch would never pick it).
#if !defined(VLMC_CONV_DISPATCH)
#if defined(__x86_64__) && defined(__ELF__) && !defined(VLMC_CONV_PORTABLE_ONLY) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define VLMC_CONV_DISPATCH 1
#else
#define VLMC_CONV_DISPATCH 0
#endif
#endif
#if defined(__GNUC__)
#define VLMC_ALWAYS_INLINE __attribute__((always_inline))
#else
#define VLMC_ALWAYS_INLINE
#endif
// VLMC_TARGET_AVX2 / VLMC_TARGET_AVX512: a function built for x86-64-v3 (AVX2 + FMA) or v4
// (AVX-512), to be called only where vector_level() says the CPU has it. (Not target_clones: Clang 14
// compiled such a function for x86-64-v3 alone, with no dispatch — an illegal instruction on a CPU
// without AVX2 — and, in an unnamed namespace, dispatched to the portable version everywhere.)
#if VLMC_CONV_DISPATCH
#define VLMC_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#if defined(__clang__)  // (Clang splits 64-byte vectors in two unless told the function may use them whole)
#define VLMC_TARGET_AVX512 __attribute__((target("arch=x86-64-v4"), min_vector_width(512)))
#else
#define VLMC_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#endif
#endif

namespace vlmc::conv {

// std::allocator but for value-initialisation, which it skips: a Buffer's elements start
// indeterminate, for buffers every element of which is written before it is read (zero-filling
// them first would be one more pass over memory, and the pages' first touch); and buffers of
// kLargeBlockBytes or more are blocks a BlockCache can keep (block_cache.hpp)
template <class T> struct UninitAllocator : std::allocator<T> {
    template <class U> struct rebind {
        using other = UninitAllocator<U>;
    };
    UninitAllocator() = default;
    template <class U> UninitAllocator(const UninitAllocator<U> &) noexcept {}
    T *allocate(size_t n) {
        if (n >= kLargeBlockBytes / sizeof(T)) {
            if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
            return static_cast<T *>(allocate_large(n * sizeof(T)));
        }
        return std::allocator<T>::allocate(n);
    }
    void deallocate(T *p, size_t n) noexcept {
        if (n >= kLargeBlockBytes / sizeof(T))
            free_large(p);
        else
            std::allocator<T>::deallocate(p, n);
    }
    template <class U> void construct(U *p) noexcept { ::new (static_cast<void *>(p)) U; }
    template <class U, class... A> void construct(U *p, A &&...args) {
        ::new (static_cast<void *>(p)) U(std::forward<A>(args)...);
    }
};
template <class T> using Buffer = std::vector<T, UninitAllocator<T>>;

template <class T> struct Planes {
    uint32_t c = 0, h = 0, w = 0;
    Buffer<T> v;  // [c][h][w]
};

struct Shape {
    uint32_t out = 0, in = 0, kh = 1, kw = 1, ph = 0, pw = 0;  // stride 1
};

// Why a convolution of this shape does not keep its input's size (an odd kernel k with padding
// (k − 1) / 2, as every convolution of the models is), or "" when it does: the networks' output
// sizes and their bands' halos assume it (a "valid" one, padding 0, was read past in band mode).
// The model readers refuse a file holding another (BAD_MODEL_FILE).
inline std::string size_change(const Shape &s) {
    if (2 * s.ph + 1 == s.kh && 2 * s.pw + 1 == s.kw) return "";
    return "padding " + std::to_string(s.ph) + "x" + std::to_string(s.pw) + " of a " + std::to_string(s.kh) + "x" +
           std::to_string(s.kw) + " kernel does not keep the size (an odd kernel k, padding (k - 1) / 2)";
}

constexpr uint32_t kBo = 6;        // output channels per register block
constexpr uint32_t kBoNarrow = 3;  // ... of a layer of at most 3 (the pre-editor's RGB output: a 6-channel
                                   // block would compute 3 channels of zeros)
// pixels per register block: two 32-byte vectors for kBo channels, three for kBoNarrow
template <class T> constexpr uint32_t pixel_block(uint32_t bo = kBo) { return (bo == kBo ? 64 : 96) / sizeof(T); }

// Whether a sub-pixel convolution (a stride-2 5×5 transposed one as a 3×3 one; output channel
// 4c + 2·ay + ax is phase (ay, ax) of channel c, as vlmcodec.layers.SubPixelConv.from_deconv lays
// it out) has no kernel tap at (ky, kx) for output channel o: phase ay = 1 reads none at ky = 0,
// ax = 1 none at kx = 0. Those weights are 0 for every input channel (what pack_weights skips).
constexpr bool subpixel_tap_unused(uint32_t o, uint32_t ky, uint32_t kx) {
    return (ky == 0 && (o / 2) % 2) || (kx == 0 && o % 2);
}

// A layer's weights [out][in][window] (window = kh · kw) for row_product: in blocks of kBo output
// channels, each block's weights of one tap adjacent, and only the taps where some channel of the
// block has a weight other than 0. A sub-pixel convolution (a stride-2 5×5 transposed one as a
// 3×3 one giving the 4 output phases) has zero weights at 11 of each 36 (phase, kernel position)
// pairs, for every input channel: channels are ordered by the kernel positions they use (zero
// for every input channel: the phase, not an integer weight that rounded to 0), so that a block
// holds one phase and skips its zero taps. Skipping a zero product leaves every sum's bits as
// they were (a finite x: w · x = ±0, and a + (±0) = a for a ≠ 0 and for a = +0, where sums start).
template <class T> struct Packed {
    uint32_t out = 0, K = 0;
    uint32_t bo = kBo;             // channels per block: kBo, or kBoNarrow for out ≤ kBoNarrow
    std::vector<T> weights;        // block b: (start[b + 1] − start[b]) taps × bo channels
    std::vector<uint32_t> start;   // [blocks + 1], in taps
    std::vector<uint32_t> tap;     // each block entry's tap index k in [0, K)
    std::vector<uint32_t> channel;  // [blocks · bo]: a block position's output channel (≥ out: none)
    // the taps in chunks of input channels whose rows under a pixel block fit the L1 cache, each
    // chunk's products for every block before the next chunk's (row_product): block b's taps of
    // chunk c are [chunk_start[b·(chunks + 1) + c], … + 1)
    uint32_t chunks = 1;
    std::vector<uint32_t> chunk_start;
};

// Input bytes a chunk of taps reads under one pixel block (row_product), at most: half a 32 KiB L1
// data cache, the other half for the weights and the accumulators' spills
#ifndef VLMC_CONV_CHUNK_BYTES
#define VLMC_CONV_CHUNK_BYTES 16384
#endif

template <class T> Packed<T> pack_weights(const T *weight, uint32_t out, uint32_t in, uint32_t window) {
    Packed<T> p;
    p.out = out;
    p.K = in * window;
    p.bo = out <= kBoNarrow ? kBoNarrow : kBo;
    const uint32_t K = p.K, bo = p.bo;
    std::vector<std::vector<bool>> used(out, std::vector<bool>(window));  // kernel positions a channel uses
    for (uint32_t o = 0; o < out; ++o)
        for (uint32_t k = 0; k < K; ++k)
            if (weight[size_t(o) * K + k] != T(0)) used[o][k % window] = true;
    std::vector<uint32_t> order(out);
    for (uint32_t o = 0; o < out; ++o) order[o] = o;
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return used[a] > used[b]; });
    const uint32_t blocks = (out + bo - 1) / bo;
    p.channel.assign(size_t(blocks) * bo, out);
    std::copy(order.begin(), order.end(), p.channel.begin());
    p.start.push_back(0);
    for (uint32_t b = 0; b < blocks; ++b) {
        const uint32_t *ch = p.channel.data() + size_t(b) * bo;
        for (uint32_t k = 0; k < K; ++k) {
            bool any = false;
            for (uint32_t c = 0; c < bo; ++c) any = any || (ch[c] < out && weight[size_t(ch[c]) * K + k] != T(0));
            if (!any) continue;
            p.tap.push_back(k);
            for (uint32_t c = 0; c < bo; ++c) p.weights.push_back(ch[c] < out ? weight[size_t(ch[c]) * K + k] : T(0));
        }
        p.start.push_back(uint32_t(p.tap.size()));
    }
    // chunks of input channels: a channel's rows under a pixel block are about √window rows of
    // two cache lines; only for 4 blocks or more (with fewer, the scratch's traffic costs more
    // than the reuse saves)
    uint32_t side = 1;
    while (side * side < window) ++side;
    const uint32_t chunk_in = std::max<uint32_t>(1, VLMC_CONV_CHUNK_BYTES / (side * 128));
    p.chunks = blocks >= 4 ? (in + chunk_in - 1) / chunk_in : 1;
    for (uint32_t b = 0; b < blocks; ++b) {
        uint32_t t = p.start[b];
        for (uint32_t c = 0; c < p.chunks; ++c) {
            p.chunk_start.push_back(t);
            while (t < p.start[b + 1] && p.tap[t] / window < (c + 1) * chunk_in) ++t;
        }
        p.chunk_start.push_back(p.start[b + 1]);
    }
    return p;
}

// One output row: row[o·out_plane + p] = Σ_k w[o][k] · xp[taps[k] + p] for p < w_out, o in
// [0, out); tap k = (i, ky, kx) reads the zero-padded input at taps[k] = i·plane + ky·row + kx from
// the row under ky = 0, which is at least w_out rounded up to pixel_block(packed.bo) plus kw − 1
// wide; offsets[j] = taps[packed.tap[j]] (its entries' input offsets).
void row_product(const Packed<double> &packed, const int64_t *offsets, const double *xp, uint32_t w_out, double *row,
                 size_t out_plane);
void row_product(const Packed<float> &packed, const int64_t *offsets, const float *xp, uint32_t w_out, float *row,
                 size_t out_plane);

// The widest vectors the functions built for several targets use, decided once per process by the
// CPU's features: AVX-512 (F/VL/BW/DQ) unless VLMC_NO_AVX512 is set (and not "0"), else AVX2 + FMA,
// else the portable code (always, where VLMC_CONV_DISPATCH is 0)
enum class Level { portable, avx2, avx512 };
Level vector_level();
// ... as "avx512", "avx2" or "portable": the version row_product runs
const char *vector_isa();

// A stride between planes (or rows) of at least n values: an odd number of cache lines, as a tap
// reads the same columns of every plane and a stride of many lines × 2^k would map those reads onto
// a few cache sets (the 1x1 convolutions at 384 px: 8 of 64, half their speed)
template <class T> size_t odd_lines(size_t n) {
    constexpr size_t kLine = 64 / sizeof(T);
    return ((n + kLine - 1) / kLine | 1) * kLine;
}

// The output size of a stride-1 convolution of x (zero padding)
inline std::pair<uint32_t, uint32_t> output_size(const Shape &s, uint32_t h, uint32_t w) {
    const int64_t ho = int64_t(h) + 2 * s.ph - s.kh + 1, wo = int64_t(w) + 2 * s.pw - s.kw + 1;
    if (ho <= 0 || wo <= 0) throw std::invalid_argument("convolution input smaller than its kernel");
    return {uint32_t(ho), uint32_t(wo)};
}

struct Identity {
    template <class T> T operator()(T v) const { return v; }
};

// A stride-1 convolution (zero padding) of load(x) by packed weights, a row at a time: each output
// row's products, all channels of it ([out][w_out] in a per-thread scratch), go to
// finish(oy, rows, w_out), which adds the bias, rescales and stores them where the caller wants
// (a pixel shuffle's places, a GDN's product with its input) while they are hot. Threads take
// whole output rows; load is applied once per input value, as the zero-padded copy is made: of
// the whole input, or, for a kernel one row high without row padding (1x1), of the input row
// alone, in a per-thread scratch, before the products; so there finish(oy) may overwrite input
// row oy in place (no other output row reads it). With unshuffle u > 1 the convolution reads x
// pixel-unshuffled by u (F.pixel_unshuffle: channel c·u² + a·u + b, row h, column w is x's
// channel c at (u·h + a, u·w + b)) as its padded copy is made, without the unshuffled planes.
template <class T, class Load, class Finish>
void conv_rows(const Shape &s, const Packed<T> &packed, const Planes<T> &x, Pool &pool, Load load, Finish finish,
               uint32_t unshuffle = 1) {
    const uint32_t B = pixel_block<T>(packed.bo);
    const uint32_t u = unshuffle;
    if (u == 0 || x.h % u || x.w % u || (u > 1 && size_t(x.c) * u * u != s.in))
        throw std::invalid_argument("unshuffle of a size or channel count that does not divide");
    const uint32_t xh = x.h / u, xw = x.w / u;  // the input as the convolution sees it
    const auto size = output_size(s, xh, xw);  // not a structured binding: C++17 lambdas cannot capture one
    const uint32_t ho = size.first, wo = size.second;
    const bool row_local = s.kh == 1 && s.ph == 0;
    const uint32_t wp = (wo + B - 1) / B * B + s.kw - 1, hp = row_local ? 1 : xh + 2 * s.ph;
    // channel i's input row h, load applied, into dst from column pw on, zeros before and after (to wp)
    auto pad_row = [&](T *dst, uint32_t i, uint32_t h) {
        std::fill(dst, dst + s.pw, T(0));
        if (u == 1) {
            const T *src = x.v.data() + (size_t(i) * x.h + h) * x.w;
            for (uint32_t c = 0; c < xw; ++c) dst[s.pw + c] = load(src[c]);
        } else {
            const uint32_t a = i / u % u, b = i % u;
            const T *src = x.v.data() + (size_t(i / (u * u)) * x.h + size_t(h) * u + a) * x.w + b;
            for (uint32_t c = 0; c < xw; ++c) dst[s.pw + c] = load(src[size_t(c) * u]);
        }
        std::fill(dst + s.pw + xw, dst + wp, T(0));
    };
    const size_t cs = odd_lines<T>(size_t(hp) * wp);  // channel i's padded input from i · cs
    Buffer<T> xp(row_local ? 0 : size_t(s.in) * cs);  // input column c at c + pw, row r at r + ph
    if (!row_local)
        parallel_for(s.in, pool, [&](uint32_t i0, uint32_t i1) {
            for (uint32_t i = i0; i < i1; ++i) {
                T *plane = xp.data() + size_t(i) * cs;
                std::fill(plane, plane + size_t(s.ph) * wp, T(0));
                std::fill(plane + size_t(s.ph + xh) * wp, plane + size_t(hp) * wp, T(0));
                for (uint32_t h = 0; h < xh; ++h) pad_row(plane + size_t(h + s.ph) * wp, i, h);
            }
        });
    const uint32_t K = s.in * s.kh * s.kw;
    if (packed.K != K || packed.out != s.out) throw std::invalid_argument("packed weights do not match the shape");
    std::vector<int64_t> taps(K), offsets(packed.tap.size());
    for (uint32_t i = 0, k = 0; i < s.in; ++i)
        for (uint32_t ky = 0; ky < s.kh; ++ky)
            for (uint32_t kx = 0; kx < s.kw; ++kx) taps[k++] = int64_t(size_t(i) * cs + size_t(ky) * wp + kx);
    for (size_t j = 0; j < offsets.size(); ++j) offsets[j] = taps[packed.tap[j]];
    parallel_for(ho, pool, [&](uint32_t r0, uint32_t r1) {
        Buffer<T> rows(size_t(s.out) * wo), local(row_local ? size_t(s.in) * cs : 0);
        for (uint32_t oy = r0; oy < r1; ++oy) {
            const T *in = xp.data() + size_t(oy) * wp;
            if (row_local) {
                for (uint32_t i = 0; i < s.in; ++i) pad_row(local.data() + size_t(i) * cs, i, oy);
                in = local.data();
            }
            row_product(packed, offsets.data(), in, wo, rows.data(), wo);
            finish(oy, static_cast<const T *>(rows.data()), wo);
        }
    });
}

// A convolution layer: conv_rows, then out = op(o, product) for channel o, stored as [out][h][w]
// or, with shuffle, pixel-shuffled ×2 to [out / 4][2h][2w] (channel 4c + 2i + j's pixel (h, w)
// at (c, 2h + i, 2w + j)) without the unshuffled planes; unshuffle: as conv_rows
template <class T, class Op>
Planes<T> conv_layer(const Shape &s, const Packed<T> &packed, const Planes<T> &x, Pool &pool, bool shuffle, Op op,
                     uint32_t unshuffle = 1) {
    if (unshuffle == 0 || x.h % unshuffle || x.w % unshuffle)
        throw std::invalid_argument("unshuffle of a size that does not divide");
    const auto size = output_size(s, x.h / unshuffle, x.w / unshuffle);  // (no structured binding: captured below)
    const uint32_t ho = size.first, wo = size.second;
    if (shuffle && s.out % 4) throw std::invalid_argument("pixel shuffle of a channel count not a multiple of 4");
    Planes<T> y = shuffle ? Planes<T>{s.out / 4, ho * 2, wo * 2, {}} : Planes<T>{s.out, ho, wo, {}};
    y.v.resize(size_t(s.out) * ho * wo);
    conv_rows(s, packed, x, pool, Identity{}, [&](uint32_t oy, const T *rows, uint32_t n) {
        if (!shuffle) {
            for (uint32_t o = 0; o < s.out; ++o) {
                const T *src = rows + size_t(o) * n;
                T *dst = y.v.data() + (size_t(o) * ho + oy) * wo;
                for (uint32_t j = 0; j < n; ++j) dst[j] = op(o, src[j]);
            }
            return;
        }
        for (uint32_t o = 0; o < s.out; o += 2) {  // channels o, o + 1 interleave into one output row
            const T *even = rows + size_t(o) * n, *odd = even + n;
            T *dst = y.v.data() + (size_t(o / 4) * y.h + 2 * oy + (o / 2) % 2) * y.w;
            for (uint32_t j = 0; j < n; ++j) {
                dst[2 * j] = op(o, even[j]);
                dst[2 * j + 1] = op(o + 1, odd[j]);
            }
        }
    }, unshuffle);
    return y;
}

// A folded (I)GDN in place: x · sqrt(β + γ x²) (inverse) or x / sqrt(…), the 1×1 convolution by γ
// (packed [C][C]) of x² finished against x's rows as they come (conv_rows copies each input row
// before its products)
inline void gdn_in_place(const Shape &s, const Packed<float> &gamma, const std::vector<float> &beta, bool inverse,
                         Planes<float> &x, Pool &pool) {
    conv_rows(s, gamma, x, pool, [](float v) { return v * v; }, [&](uint32_t oy, const float *rows, uint32_t n) {
        for (uint32_t o = 0; o < x.c; ++o) {
            const float b = beta[o];
            float *v = x.v.data() + (size_t(o) * x.h + oy) * x.w;
            for (uint32_t j = 0; j < n; ++j) {
                const float norm = rows[size_t(o) * n + j] + b;
                v[j] = (inverse ? std::sqrt(norm) : 1.0f / std::sqrt(norm)) * v[j];
            }
        }
    });
}

}  // namespace vlmc::conv
