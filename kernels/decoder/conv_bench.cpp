// Times the decoder's convolutions (conv.hpp) on given shapes and prints GMAC/s as JSON lines:
//   vlmc_conv_bench THREADS REPEATS DTYPE(f32|f64|f32sp|f64sp|f32s2) IN OUT K H W [DTYPE IN OUT K H W ...]
// Each shape: random weights and input, one warm-up, then the fastest of REPEATS runs of
// conv_layer (padding K/2, bias added in the finish step as g_s does). f32sp/f64sp: the weights
// of a sub-pixel convolution (K 3, OUT a multiple of 4), 0 where a phase reads no kernel tap, as
// the decoder's are; GMAC/s counts every tap of the dense shape either way. f32s2 (K 5): a 5×5
// stride-2 layer (padding 2) to an H × W output as the encoder runs it, a 3×3 convolution of its
// 2H × 2W input unshuffled by 2 (4·IN channels, 0 at the 11 of 36 taps no 5×5 tap maps to); GMAC/s
// counts the 5×5 layer's products (25 per input channel). Not installed; used by
// scripts/c_decoder_bench.py --kernels beside torch's convolutions on the same shapes.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "conv.hpp"

namespace {

template <class T>
double time_shape(uint32_t in, uint32_t out, uint32_t k, uint32_t h, uint32_t w, int threads, int repeats, bool subpixel,
                  bool strided = false) {
    const uint32_t macs_per_pixel = out * in * k * k;  // of the layer timed (5×5 when strided)
    if (strided) in *= 4, k = 3;  // the unshuffled 3×3 convolution it runs as
    std::mt19937 rng(1234);
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    std::vector<T> weight(size_t(out) * in * k * k), bias(out);
    for (T &v : weight) v = T(u(rng) * 0.05);
    if (subpixel)  // the phases' structural zeros (conv.hpp: subpixel_tap_unused)
        for (size_t idx = 0; idx < weight.size(); ++idx) {
            const size_t o = idx / (size_t(in) * k * k), ky = idx / k % k, kx = idx % k;
            if (vlmc::conv::subpixel_tap_unused(uint32_t(o), uint32_t(ky), uint32_t(kx))) weight[idx] = T(0);
        }
    if (strided)  // unshuffled channel 4c + 2a + b at kernel row ky reads input row 2(ky − 1) + a: 3 is past the 5×5's reach
        for (size_t idx = 0; idx < weight.size(); ++idx) {
            const size_t i = idx / (k * k) % in, ky = idx / k % k, kx = idx % k;
            if ((ky == 2 && i / 2 % 2) || (kx == 2 && i % 2)) weight[idx] = T(0);
        }
    for (T &v : bias) v = T(u(rng));
    const auto packed = vlmc::conv::pack_weights(weight.data(), out, in, k * k);
    const uint32_t us = strided ? 2 : 1;
    vlmc::conv::Planes<T> x{in / (us * us), h * us, w * us, vlmc::conv::Buffer<T>(size_t(in) * h * w)};
    for (T &v : x.v) v = T(u(rng));
    const vlmc::conv::Shape shape{out, in, k, k, k / 2, k / 2};
    vlmc::conv::Pool pool(threads);
    double best = 1e30, checksum = 0;
    for (int r = 0; r <= repeats; ++r) {
        const auto t0 = std::chrono::steady_clock::now();
        const auto y = vlmc::conv::conv_layer(shape, packed, x, pool, false,
                                              [&](uint32_t o, T v) { return v + bias[o]; }, us);
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        checksum = double(y.v[y.v.size() / 2]);
        if (r > 0) best = std::min(best, s);  // r = 0: warm-up
    }
    if (checksum != checksum) std::fprintf(stderr, "NaN output\n");
    return double(macs_per_pixel) * h * w / best / 1e9;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 9 || (argc - 3) % 6 != 0) {
        std::fprintf(stderr, "usage: %s THREADS REPEATS (f32|f64 IN OUT K H W)...\n", argv[0]);
        return 2;
    }
    const int threads = std::atoi(argv[1]), repeats = std::atoi(argv[2]);
    if (threads < 1 || repeats < 1) {
        std::fprintf(stderr, "THREADS and REPEATS must be positive\n");
        return 2;
    }
    for (int a = 3; a < argc; a += 6) {
        const std::string dtype = argv[a];
        uint32_t v[5];
        for (int i = 0; i < 5; ++i) {
            const long n = std::atol(argv[a + 1 + i]);
            if (n < 1 || n > 1 << 16) {
                std::fprintf(stderr, "shape values must be in 1..65536\n");
                return 2;
            }
            v[i] = uint32_t(n);
        }
        const bool subpixel = dtype == "f32sp" || dtype == "f64sp", strided = dtype == "f32s2";
        if (strided && v[2] != 5) {
            std::fprintf(stderr, "a strided (f32s2) shape has K 5\n");
            return 2;
        }
        if (subpixel && (v[2] != 3 || v[1] % 4)) {
            std::fprintf(stderr, "a sub-pixel shape has K 3 and OUT a multiple of 4\n");
            return 2;
        }
        double g;
        if (dtype == "f32" || dtype == "f32sp" || strided)
            g = time_shape<float>(v[0], v[1], v[2], v[3], v[4], threads, repeats, subpixel, strided);
        else if (dtype == "f64" || dtype == "f64sp")
            g = time_shape<double>(v[0], v[1], v[2], v[3], v[4], threads, repeats, subpixel);
        else {
            std::fprintf(stderr, "dtype must be f32, f64, f32sp, f64sp or f32s2\n");
            return 2;
        }
        std::printf("{\"dtype\": \"%s\", \"in\": %u, \"out\": %u, \"k\": %u, \"h\": %u, \"w\": %u, \"gmac_s\": %.3f}\n",
                    dtype.c_str(), v[0], v[1], v[2], v[3], v[4], g);
    }
    return 0;
}
