// Stride-1 convolutions for the stream decoder, as an implicit GEMM: each block of output pixels
// reads its taps straight from a zero-padded copy of the input rows, and a register-blocked
// product (4 output channels × 2 vectors of pixels) accumulates them. In float64 for the exact
// h_s (integer-valued operands, every partial sum below 2^52: exact in any order) and in float32
// for g_s.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace vlmc::conv {

template <class T> struct Planes {
    uint32_t c = 0, h = 0, w = 0;
    std::vector<T> v;  // [c][h][w]
};

struct Shape {
    uint32_t out = 0, in = 0, kh = 1, kw = 1, ph = 0, pw = 0;  // stride 1
};

// fn(begin, end) over [0, n) split into up to `threads` contiguous ranges, one thread each; the
// first exception any of them throws is rethrown here
template <class Fn> void parallel_for(uint32_t n, int threads, Fn fn) {
    const uint32_t t = std::max<uint32_t>(1, std::min<uint32_t>(uint32_t(std::max(threads, 1)), n));
    if (t == 1) {
        fn(0u, n);
        return;
    }
    std::vector<std::thread> pool;
    std::exception_ptr error;
    std::mutex m;
    for (uint32_t k = 0; k < t; ++k)
        pool.emplace_back([&, k] {
            try {
                fn(n * k / t, n * (k + 1) / t);
            } catch (...) {
                std::lock_guard<std::mutex> lock(m);
                if (!error) error = std::current_exception();
            }
        });
    for (auto &th : pool) th.join();
    if (error) std::rethrow_exception(error);
}

constexpr uint32_t kBo = 4;  // output channels per register block
template <class T> constexpr uint32_t pixel_block() { return 64 / sizeof(T); }  // two 32-byte vectors

// The weights [out][K] as [out / kBo][K][kBo] (channels past out zero): a step's kBo weights
// adjacent, what row_product reads.
template <class T> std::vector<T> pack_weights(const T *weight, uint32_t out, uint32_t K) {
    std::vector<T> packed(size_t((out + kBo - 1) / kBo) * K * kBo, T(0));
    for (uint32_t o = 0; o < out; ++o)
        for (uint32_t k = 0; k < K; ++k) packed[(size_t(o / kBo) * K + k) * kBo + o % kBo] = weight[size_t(o) * K + k];
    return packed;
}

// One output row: out[o·out_plane + p] = Σ_{i,ky,kx} w[o][i][ky][kx] · xp[i·xp_plane + ky·xp_row + p + kx]
// for p < w_out, o in [0, out); xp: the zero-padded input from the row under ky = 0, at least
// w_out rounded up to pixel_block plus kw − 1 wide; packed: pack_weights.
void row_product(const double *packed, uint32_t out, uint32_t in, uint32_t kh, uint32_t kw, const double *xp,
                 size_t xp_plane, size_t xp_row, uint32_t w_out, double *row, size_t out_plane);
void row_product(const float *packed, uint32_t out, uint32_t in, uint32_t kh, uint32_t kw, const float *xp,
                 size_t xp_plane, size_t xp_row, uint32_t w_out, float *row, size_t out_plane);

// A stride-1 convolution (zero padding) of x by packed weights; epilogue(o, row, n) then finishes
// each channel's n outputs of a row in place (bias, rescaling) while they are hot. Threads take
// whole output rows.
template <class T, class Epilogue>
Planes<T> conv2d(const Shape &s, const T *packed, const Planes<T> &x, int threads, Epilogue epilogue) {
    constexpr uint32_t B = pixel_block<T>();
    const int64_t ho = int64_t(x.h) + 2 * s.ph - s.kh + 1, wo = int64_t(x.w) + 2 * s.pw - s.kw + 1;
    if (ho <= 0 || wo <= 0) throw std::invalid_argument("convolution input smaller than its kernel");
    Planes<T> y{s.out, uint32_t(ho), uint32_t(wo), std::vector<T>(size_t(s.out) * ho * wo)};
    const size_t plane = size_t(y.h) * y.w;
    const uint32_t wp = (y.w + B - 1) / B * B + s.kw - 1, hp = x.h + 2 * s.ph;
    std::vector<T> xp(size_t(s.in) * hp * wp, T(0));  // input column c at c + pw, row r at r + ph
    for (uint32_t i = 0; i < s.in; ++i)
        for (uint32_t h = 0; h < x.h; ++h)
            std::memcpy(xp.data() + (size_t(i) * hp + h + s.ph) * wp + s.pw, x.v.data() + (size_t(i) * x.h + h) * x.w,
                        x.w * sizeof(T));
    parallel_for(y.h, threads, [&](uint32_t r0, uint32_t r1) {
        for (uint32_t oy = r0; oy < r1; ++oy) {
            T *row = y.v.data() + size_t(oy) * y.w;
            row_product(packed, s.out, s.in, s.kh, s.kw, xp.data() + size_t(oy) * wp, size_t(hp) * wp, wp, y.w, row,
                        plane);
            for (uint32_t o = 0; o < s.out; ++o) epilogue(o, row + o * plane, y.w);
        }
    });
    return y;
}

// Pixel shuffle ×2: [4c][h][w] → [c][2h][2w], out[c][2h+i][2w+j] = in[4c + 2i + j][h][w].
template <class T> Planes<T> pixel_shuffle2(const Planes<T> &y) {
    Planes<T> z{y.c / 4, y.h * 2, y.w * 2, std::vector<T>(y.v.size())};
    for (uint32_t c = 0; c < z.c; ++c)
        for (uint32_t i = 0; i < 2; ++i)
            for (uint32_t j = 0; j < 2; ++j) {
                const T *src = y.v.data() + (size_t(4 * c + 2 * i + j) * y.h) * y.w;
                for (uint32_t h = 0; h < y.h; ++h) {
                    T *dst = z.v.data() + (size_t(c) * z.h + 2 * h + i) * z.w + j;
                    for (uint32_t w = 0; w < y.w; ++w) dst[2 * w] = src[size_t(h) * y.w + w];
                }
            }
    return z;
}

}  // namespace vlmc::conv
