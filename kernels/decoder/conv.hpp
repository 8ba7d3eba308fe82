// Convolutions for the stream decoder: im2col over tiles of output pixels and a register-blocked
// product (4 output channels × 2 vectors of pixels), in float64 for the exact h_s (integer-valued
// operands, so every summation order gives the same bits) and in float32 for g_s.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace vlmc::conv {

template <class T> struct Planes {
    uint32_t c = 0, h = 0, w = 0;
    std::vector<T> v;  // [c][h][w]
};

struct Shape {
    uint32_t out = 0, in = 0, kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0;
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

constexpr uint32_t kTile = 256;  // output pixels per im2col tile
constexpr uint32_t kBo = 4;      // output channels per block
template <class T> constexpr uint32_t pixel_block() { return 64 / sizeof(T); }  // two 32-byte vectors

// out[o·plane + p0 + q + j] = Σ_k weight[o·K + k] · panels[(q / B)·K·B + k·B + j] for o in [o0, o1),
// pixels q + j < np; panels hold B = pixel_block<T>() pixels per row, zero past np.
void product_tile(const double *weight, const double *panels, uint32_t K, uint32_t np, uint32_t o0, uint32_t o1,
                  double *out, size_t plane, size_t p0);
void product_tile(const float *weight, const float *panels, uint32_t K, uint32_t np, uint32_t o0, uint32_t o1,
                  float *out, size_t plane, size_t p0);

// A convolution (zero padding) of x by weight [out][in][kh][kw]; epilogue(o, row, n) then
// finishes each channel's n outputs row[0 .. n) in place (bias, rescaling) while they are hot.
template <class T, class Epilogue>
Planes<T> conv2d(const Shape &s, const T *weight, const Planes<T> &x, int threads, Epilogue epilogue) {
    constexpr uint32_t B = pixel_block<T>();
    const int64_t ho = (int64_t(x.h) + 2 * s.ph - s.kh) / s.sh + 1, wo = (int64_t(x.w) + 2 * s.pw - s.kw) / s.sw + 1;
    Planes<T> y{s.out, uint32_t(std::max<int64_t>(ho, 0)), uint32_t(std::max<int64_t>(wo, 0)), {}};
    const size_t plane = size_t(y.h) * y.w;
    y.v.resize(size_t(s.out) * plane);
    if (plane == 0) return y;
    const uint32_t K = s.in * s.kh * s.kw;
    // each thread takes whole tiles (its own panels), at least one tile per thread where possible
    const size_t per_thread = (plane + size_t(std::max(threads, 1)) - 1) / size_t(std::max(threads, 1));
    const uint32_t tile = uint32_t(std::min<size_t>(kTile, std::max<size_t>(B, (per_thread + B - 1) / B * B)));
    const uint32_t tiles = uint32_t((plane + tile - 1) / tile);
    parallel_for(tiles, threads, [&](uint32_t t0, uint32_t t1) {
        std::vector<T> panels(size_t(K) * tile);
        for (uint32_t t = t0; t < t1; ++t) {
            const size_t p0 = size_t(t) * tile;
            const uint32_t np = uint32_t(std::min<size_t>(tile, plane - p0));
            const uint32_t padded = (np + B - 1) / B * B;
            const int64_t oy0 = int64_t(p0 / y.w), ox0 = int64_t(p0 % y.w);
            // im2col, tap by tap, run by run of pixels along an output row: panel entry
            // (p / B, k, p % B) = the input under tap k of output pixel p0 + p, 0 outside it
            uint32_t k = 0;
            for (uint32_t i = 0; i < s.in; ++i) {
                const T *src = x.v.data() + size_t(i) * x.h * x.w;
                for (uint32_t ky = 0; ky < s.kh; ++ky)
                    for (uint32_t kx = 0; kx < s.kw; ++kx, ++k) {
                        T *dst = panels.data() + size_t(k) * B;
                        int64_t oy = oy0, ox = ox0;
                        for (uint32_t p = 0; p < np;) {
                            const uint32_t run = uint32_t(std::min<int64_t>(int64_t(y.w) - ox, np - p));
                            const int64_t iy = oy * s.sh - s.ph + ky;
                            const T *row = iy >= 0 && iy < x.h ? src + iy * x.w : nullptr;
                            for (uint32_t r = 0; r < run; ++r, ++p) {
                                const int64_t ix = (ox + r) * s.sw - s.pw + kx;
                                dst[size_t(p / B) * K * B + p % B] = row && ix >= 0 && ix < x.w ? row[ix] : T(0);
                            }
                            ox = 0, ++oy;
                        }
                        for (uint32_t p = np; p < padded; ++p) dst[size_t(p / B) * K * B + p % B] = T(0);
                    }
            }
            product_tile(weight, panels.data(), K, np, 0, s.out, y.v.data(), plane, p0);
            for (uint32_t o = 0; o < s.out; ++o) epilogue(o, y.v.data() + o * plane + p0, np);
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
