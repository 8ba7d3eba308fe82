// The stream decoder's convolutions (kernels/decoder/conv.hpp) against a direct one: stride-1
// convolutions with zero padding, 1x1 ones (each input row copied alone), pixel shuffles and an
// in-place finish, odd sizes, 1-3 threads, float64 and float32. The operands are small integers,
// so every sum is exact in any order and the results must be equal, not close. Built twice:
// with the run-time dispatch (the AVX-512 or AVX2 + FMA version on such machines; run a second
// time with VLMC_NO_AVX512=1, the AVX2 one) and with the portable version alone
// (VLMC_CONV_PORTABLE_ONLY).
#include <cstdio>
#include <cstdlib>
#include <random>

#include "check.h"
#include "conv.hpp"

using namespace vlmc::conv;

namespace {

template <class T> struct Case {
    Shape s;
    Planes<T> x;
    std::vector<T> weight, bias;
};

template <class T> Case<T> make_case(std::mt19937 &rng, uint32_t in, uint32_t out, uint32_t k, uint32_t h, uint32_t w) {
    std::uniform_int_distribution<int> u(-20, 20);
    Case<T> c{Shape{out, in, k, k, k / 2, k / 2}, Planes<T>{in, h, w, Buffer<T>(size_t(in) * h * w)}, {}, {}};
    for (T &v : c.x.v) v = T(u(rng));
    c.weight.resize(size_t(out) * in * k * k);
    for (T &v : c.weight) v = T(u(rng) | 1);  // odd: none 0 (zeros are placed by check_layer's cases)
    for (uint32_t o = 0; o < out; ++o) c.bias.push_back(T(u(rng)));
    return c;
}

// the convolution by definition: out[o][y][x] = b[o] + Σ w[o][i][ky][kx] · in[i][y + ky − ph][x + kx − pw]
template <class T> std::vector<T> direct(const Case<T> &c) {
    const Shape &s = c.s;
    const uint32_t ho = c.x.h + 2 * s.ph - s.kh + 1, wo = c.x.w + 2 * s.pw - s.kw + 1;
    std::vector<T> y(size_t(s.out) * ho * wo);
    for (uint32_t o = 0; o < s.out; ++o)
        for (uint32_t oy = 0; oy < ho; ++oy)
            for (uint32_t ox = 0; ox < wo; ++ox) {
                T acc = 0;
                for (uint32_t i = 0; i < s.in; ++i)
                    for (uint32_t ky = 0; ky < s.kh; ++ky)
                        for (uint32_t kx = 0; kx < s.kw; ++kx) {
                            const int64_t iy = int64_t(oy) + ky - s.ph, ix = int64_t(ox) + kx - s.pw;
                            if (iy < 0 || ix < 0 || iy >= c.x.h || ix >= c.x.w) continue;
                            acc += c.weight[((size_t(o) * s.in + i) * s.kh + ky) * s.kw + kx] *
                                   c.x.v[(size_t(i) * c.x.h + iy) * c.x.w + ix];
                        }
                y[(size_t(o) * ho + oy) * wo + ox] = acc + c.bias[o];
            }
    return y;
}

// zeros: 0 none; 1 a sub-pixel convolution's (k = 3, out a multiple of 4: subpixel_tap_unused,
// channel 4c + 2i + j's weights at ky = 0 are 0 when i = 1, at kx = 0 when j = 1); 2 a third of
// the weights at random and every weight of channel 1
template <class T>
void check_layer(std::mt19937 &rng, uint32_t in, uint32_t out, uint32_t k, uint32_t h, uint32_t w, int zeros = 0,
                 bool chunked = false) {
    Case<T> c = make_case<T>(rng, in, out, k, h, w);
    std::uniform_int_distribution<int> third(0, 2);
    for (uint32_t o = 0; o < out; ++o)
        for (uint32_t i = 0; i < in; ++i)
            for (uint32_t ky = 0; ky < k; ++ky)
                for (uint32_t kx = 0; kx < k; ++kx) {
                    T &v = c.weight[((size_t(o) * in + i) * k + ky) * k + kx];
                    if ((zeros == 1 && subpixel_tap_unused(o, ky, kx)) ||
                        (zeros == 2 && (third(rng) == 0 || o == 1)))
                        v = T(0);
                }
    const auto packed = pack_weights(c.weight.data(), out, in, k * k);
    if (zeros == 1 && k == 3 && out % (4 * kBo) == 0) {  // whole blocks of one phase: 9, 6, 6, 4 taps of 9
        CHECK_NOTE(packed.tap.size() == size_t(out / kBo / 4) * in * 25, "sub-pixel: %zu packed taps", packed.tap.size());
    }
    if (zeros == 0)
        CHECK_NOTE(packed.tap.size() == size_t((out + packed.bo - 1) / packed.bo) * in * k * k, "dense: taps skipped");
    CHECK_NOTE(packed.bo == (out <= kBoNarrow ? kBoNarrow : kBo), "out %u: blocks of %u channels", out, packed.bo);
    CHECK_NOTE((packed.chunks > 1) == chunked, "in %u out %u k %u: %u chunks", in, out, k, packed.chunks);
    const std::vector<T> want = direct(c);
    const uint32_t ho = h + 2 * (k / 2) - k + 1, wo = w + 2 * (k / 2) - k + 1;
    for (int threads = 1; threads <= 3; ++threads) {
        const auto op = [&](uint32_t o, T v) { return v + c.bias[o]; };
        Pool pool(threads);
        const Planes<T> y = conv_layer(c.s, packed, c.x, pool, false, op);
        CHECK_NOTE(y.c == out && y.h == ho && y.w == wo, "shape %u %u %u", y.c, y.h, y.w);
        size_t bad = 0;
        for (size_t i = 0; i < want.size(); ++i) bad += y.v[i] != want[i];
        CHECK_NOTE(bad == 0, "in %u out %u k %u %ux%u, %d threads: %zu of %zu outputs differ", in, out, k, h, w, threads, bad,
              want.size());
        if (out % 4 == 0) {  // the shuffled layout: channel 4c + 2i + j's (y, x) at (c, 2y + i, 2x + j)
            const Planes<T> z = conv_layer(c.s, packed, c.x, pool, true, op);
            CHECK_NOTE(z.c == out / 4 && z.h == 2 * ho && z.w == 2 * wo, "shuffled shape");
            size_t wrong = 0;
            for (uint32_t o = 0; o < out; ++o)
                for (uint32_t oy = 0; oy < ho; ++oy)
                    for (uint32_t ox = 0; ox < wo; ++ox)
                        wrong += z.v[(size_t(o / 4) * z.h + 2 * oy + (o / 2) % 2) * z.w + 2 * ox + o % 2] !=
                                 want[(size_t(o) * ho + oy) * wo + ox];
            CHECK_NOTE(wrong == 0, "shuffle: in %u out %u %ux%u: %zu differ", in, out, h, w, wrong);
        }
    }
}

// conv_rows with a load (x²) and a finish that overwrites its input row in place, as the GDN does
void check_in_place_1x1(std::mt19937 &rng) {
    Case<float> c = make_case<float>(rng, 11, 11, 1, 7, 37);
    const auto packed = pack_weights(c.weight.data(), 11, 11, 1);
    Case<float> squared = c;
    for (float &v : squared.x.v) v = v * v;
    const std::vector<float> norm = direct(squared);
    for (int threads = 1; threads <= 3; ++threads) {
        Planes<float> x = c.x;
        Pool pool(threads);
        conv_rows(c.s, packed, x, pool, [](float v) { return v * v; },
                  [&](uint32_t oy, const float *rows, uint32_t n) {
                      for (uint32_t o = 0; o < x.c; ++o) {
                          float *v = x.v.data() + (size_t(o) * x.h + oy) * x.w;
                          for (uint32_t j = 0; j < n; ++j) v[j] = (rows[size_t(o) * n + j] + c.bias[o]) - v[j];
                      }
                  });
        size_t bad = 0;
        for (size_t i = 0; i < x.v.size(); ++i) bad += x.v[i] != norm[i] - c.x.v[i];
        CHECK_NOTE(bad == 0, "in-place 1x1, %d threads: %zu differ", threads, bad);
    }
}

}  // namespace

int main() {
    std::mt19937 rng(2026);
    // h_s-like (float64, 3x3 with 4x the outputs for a shuffle) and g_s-like (float32) shapes,
    // widths around the 8- and 16-pixel blocks and channel counts around the 6-channel block
    check_layer<double>(rng, 16, 24, 3, 5, 7);
    check_layer<double>(rng, 9, 40, 3, 4, 17);
    check_layer<double>(rng, 7, 5, 5, 6, 9);
    check_layer<float>(rng, 12, 16, 3, 9, 33);
    check_layer<float>(rng, 5, 12, 3, 3, 16);
    check_layer<float>(rng, 16, 16, 1, 6, 15);
    check_layer<float>(rng, 3, 7, 1, 1, 1);
    check_layer<float>(rng, 8, 4, 3, 1, 40);
    // at most 3 outputs: blocks of 3 channels × 3 vectors (24 float or 12 double pixels)
    check_layer<float>(rng, 32, 3, 3, 5, 70);
    check_layer<float>(rng, 5, 1, 3, 4, 31);
    check_layer<float>(rng, 4, 2, 1, 2, 64);
    check_layer<double>(rng, 6, 3, 3, 3, 17);
    check_layer<double>(rng, 3, 2, 5, 4, 40);
    // zero weights skipped: a sub-pixel layer's phases (whole blocks of one phase, and blocks
    // across two), random zeros and a channel of zeros
    check_layer<double>(rng, 7, 48, 3, 5, 19, 1);
    check_layer<float>(rng, 6, 24, 3, 7, 21, 1);
    check_layer<float>(rng, 5, 20, 3, 4, 17, 1);
    check_layer<double>(rng, 9, 13, 3, 6, 9, 2);
    check_layer<float>(rng, 4, 17, 3, 5, 33, 2);
    check_layer<float>(rng, 9, 3, 3, 6, 35, 2);
    // many input channels: the taps in chunks (VLMC_CONV_CHUNK_BYTES), some of them empty for a block
    check_layer<float>(rng, 100, 30, 3, 3, 20, 0, true);
    check_layer<double>(rng, 90, 26, 3, 2, 9, 0, true);
    check_layer<float>(rng, 300, 24, 1, 2, 33, 0, true);
    check_layer<float>(rng, 130, 25, 3, 3, 17, 2, true);
    // rows wide enough for the AVX-512 version's blocks of 4, 2 and 1 pixel blocks and a partial
    // one (float 64 + 32 + 16 + 5 pixels, double 32 + 16 + 8 + 3), and of a narrow layer's 6
    // vectors then 3-vector blocks (float 96 + 24 + 11, double 48 + 12 + 10), chunked or not
    check_layer<float>(rng, 6, 13, 3, 3, 117);
    check_layer<double>(rng, 5, 8, 3, 3, 59);
    check_layer<float>(rng, 7, 3, 3, 2, 131);
    check_layer<double>(rng, 4, 2, 3, 3, 70);
    check_layer<float>(rng, 120, 25, 3, 2, 117, 2, true);
    check_layer<float>(rng, 5, 24, 3, 3, 197, 1);
    check_in_place_1x1(rng);
    std::printf("test_conv: the %s version\n", vector_isa());
    return check_report("test_conv");
}
