// The encoder's networks (encoder.hpp): the pre-editor, g_a and h_a in float32 on the
// convolutions of conv.hpp. Planes are [channels][rows][columns]; the pre-editor's tokens are the
// planes of its 1/patch grid, so its Linear layers are 1×1 convolutions and its LayerNorms run
// across the planes.
#include "encoder.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <utility>

namespace vlmc::encoder {

// -- element-wise math in vectorised passes, in a portable and an AVX2 version picked at run time
// (conv.hpp: VLMC_TARGET_AVX2; not target_clones, whose dispatch ran while the library was
// relocated, before a sanitizer's runtime had started, and which Clang 14 did not dispatch) -------

// GELU, x·Φ(x) = x/2 · (1 + erf(x/√2)) (nn.GELU's exact form), with erf on [−4, 4] (beyond, it is
// ±1 in float32) as z·N(z²)/D(z²), a rational function fitted to it here (numpy, reweighted least
// squares; degrees 5 and 6 in z², D ≥ 1): within 2·10⁻⁸ of erf in float64, 4·10⁻⁷ evaluated in
// float32. Branch-free, so the loops that apply it vectorise (12.6 million values in a Kodak
// image's full-resolution head; a libm erf per value took 7 % of an encode)
VLMC_ALWAYS_INLINE inline float gelu(float v) {
    float z = v * 0.70710678118654752f;
    z = z < -4.0f ? -4.0f : z;  // (not std::min/max: these ternaries become vector min/max)
    z = z > 4.0f ? 4.0f : z;
    const float z2 = z * z;
    const float num = ((((6.267518638e-06f * z2 + 3.969474082e-04f) * z2 + 4.152239430e-03f) * z2 + 5.534339759e-02f) *
                           z2 + 1.920249747e-01f) * z2 + 1.128379170e+00f;
    const float den = (((((2.311948457e-07f * z2 + 6.877827848e-05f) * z2 + 1.387423095e-03f) * z2 + 1.610052683e-02f) *
                            z2 + 1.168833977e-01f) * z2 + 5.035111084e-01f) * z2 + 1.0f;
    return 0.5f * v * (1.0f + z * num / den);
}

// e^x for x ≤ 0 (softmax's shifted scores): x = n·ln 2 + r, |r| ≤ ln 2 / 2, e^r by its Taylor
// polynomial to r⁷ (relative error below 2·10⁻⁸ there), times 2^n built in the exponent bits;
// 0 below −87 (where e^x leaves float32's normal range) and for a NaN (scores of a damaged model:
// taken as −87, so that the int conversion below is defined; its NaN then shows in the outputs'
// checks). Branch-free, so its loop vectorises, where a libm expf per score does not
VLMC_ALWAYS_INLINE inline float exp_nonpositive(float x) {
    x = !(x >= -87.0f) ? -87.0f : x;
    const float n = std::nearbyint(x * 1.44269504088896341f);
    const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;  // ln 2 in two parts
    const float p = ((((((1.98412698e-4f * r + 1.38888889e-3f) * r + 8.33333333e-3f) * r + 4.16666667e-2f) * r +
                       1.66666667e-1f) * r + 0.5f) * r + 1.0f) * r + 1.0f;
    const int32_t bits = (int32_t(n) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return x <= -87.0f ? 0.0f : p * scale;
}

// softmax over the m rows (stride apart) of each of n columns of scores but for its division:
// s[j][i] = e^(s[j][i] − top[i]), top[i] = max_j s[j][i], total[i] = Σ_j s[j][i] (the max as a
// ternary, and top and total passed in, so that both passes vectorise)
VLMC_ALWAYS_INLINE inline void softmax_columns_body(float *s, size_t stride, uint32_t m, uint32_t n, float *top,
                                                    float *total) {
    for (uint32_t i = 0; i < n; ++i) top[i] = -INFINITY, total[i] = 0.0f;
    for (uint32_t j = 0; j < m; ++j) {
        const float *row = s + j * stride;
        for (uint32_t i = 0; i < n; ++i) top[i] = top[i] < row[i] ? row[i] : top[i];
    }
    for (uint32_t j = 0; j < m; ++j) {
        float *row = s + j * stride;
        for (uint32_t i = 0; i < n; ++i) {
            const float e = exp_nonpositive(row[i] - top[i]);
            row[i] = e;
            total[i] += e;
        }
    }
}

// GELU of n values in place, in one vectorised pass
VLMC_ALWAYS_INLINE inline void gelu_in_place_body(float *v, size_t n) {
    for (size_t k = 0; k < n; ++k) v[k] = gelu(v[k]);
}

// the pre-editor's full-resolution activation of one row of one channel: a convolution's sums
// plus its bias, GELU, plus the quarter-resolution features upsampled (h0 · a + h1 · b, a and b
// the two source rows already upsampled across)
VLMC_ALWAYS_INLINE inline void gelu_add_blend_body(const float *sums, float bias, const float *a, const float *b,
                                                   float h0, float h1, float *dst, uint32_t n) {
    for (uint32_t j = 0; j < n; ++j) dst[j] = gelu(sums[j] + bias) + (h0 * a[j] + h1 * b[j]);
}

// each in an AVX2 version too (the same bits: no fused multiply-adds in this file, and each value's
// operations the same in any vector width), taken where conv::vector_level() allows
#if VLMC_CONV_DISPATCH
VLMC_TARGET_AVX2 void softmax_columns_avx2(float *s, size_t stride, uint32_t m, uint32_t n, float *top, float *total) {
    softmax_columns_body(s, stride, m, n, top, total);
}
VLMC_TARGET_AVX2 void gelu_in_place_avx2(float *v, size_t n) { gelu_in_place_body(v, n); }
VLMC_TARGET_AVX2 void gelu_add_blend_avx2(const float *sums, float bias, const float *a, const float *b, float h0,
                                          float h1, float *dst, uint32_t n) {
    gelu_add_blend_body(sums, bias, a, b, h0, h1, dst, n);
}
#endif

inline bool avx2() { return conv::vector_level() != conv::Level::portable; }

void softmax_columns(float *s, size_t stride, uint32_t m, uint32_t n, float *top, float *total) {
#if VLMC_CONV_DISPATCH
    if (avx2()) return softmax_columns_avx2(s, stride, m, n, top, total);
#endif
    softmax_columns_body(s, stride, m, n, top, total);
}

void gelu_in_place(float *v, size_t n) {
#if VLMC_CONV_DISPATCH
    if (avx2()) return gelu_in_place_avx2(v, n);
#endif
    gelu_in_place_body(v, n);
}

void gelu_add_blend(const float *sums, float bias, const float *a, const float *b, float h0, float h1, float *dst,
                    uint32_t n) {
#if VLMC_CONV_DISPATCH
    if (avx2()) return gelu_add_blend_avx2(sums, bias, a, b, h0, h1, dst, n);
#endif
    gelu_add_blend_body(sums, bias, a, b, h0, h1, dst, n);
}

namespace {

using conv::Planes;

// -- reading the section (a short read raises the model file's error: reader.hpp) -------------

using decoder::Reader;

// A convolution record (u32 out, in, kh, kw, ph, pw, unshuffle · f32 weight · f32 bias) taking
// `channels` planes before the unshuffle and giving `out` (any, when 0), checked; each keeps the
// size of its unshuffled input (conv::size_change: space_to_depth of the models' convolutions,
// padding k // 2): g_a's output is 1/16 of the image only so
Conv read_conv(Reader &r, uint32_t channels, uint32_t out, const std::string &what) {
    Conv c;
    conv::Shape &s = c.shape;
    for (uint32_t *f : {&s.out, &s.in, &s.kh, &s.kw, &s.ph, &s.pw, &c.unshuffle}) *f = r.get<uint32_t>();
    const uint64_t unshuffled = uint64_t(channels) * c.unshuffle * c.unshuffle;
    if (c.unshuffle == 0 || c.unshuffle > 64 || s.in != unshuffled || s.out == 0 || s.out > 16384 ||
        (out && s.out != out) || s.kh == 0 || s.kw == 0 || s.kh > 15 || s.kw > 15 || s.ph >= s.kh || s.pw >= s.kw)
        throw BadModel("bad " + what + " convolution");
    if (const std::string change = conv::size_change(s); !change.empty())
        throw BadModel(what + " convolution: " + change);
    const auto weight = r.array<float>(uint64_t(s.out) * s.in * s.kh * s.kw);
    c.weight = conv::pack_weights(weight.data(), s.out, s.in, s.kh * s.kw);
    c.bias = r.array<float>(s.out);
    return c;
}

Norm read_norm(Reader &r, uint32_t dim) {
    Norm n;
    n.eps = r.get<float>();
    if (!(n.eps > 0.0f && n.eps < 1.0f)) throw BadModel("bad LayerNorm epsilon");
    n.weight = r.array<float>(dim);
    n.bias = r.array<float>(dim);
    return n;
}

std::unique_ptr<PreEditor> read_pre_editor(Reader &r) {
    auto p = std::make_unique<PreEditor>();
    for (uint32_t *f : {&p->dim, &p->depth, &p->heads, &p->hidden, &p->patch, &p->mlp, &p->window, &p->global_tokens})
        *f = r.get<uint32_t>();
    if (p->dim == 0 || p->dim > 4096 || p->heads == 0 || p->dim % p->heads || p->depth > 64 || p->hidden == 0 ||
        p->hidden > 4096 || p->mlp > 16384 || (p->depth && p->mlp == 0) || p->patch < 4 || p->patch % 4 ||
        64 % p->patch)
        throw BadModel("bad pre-editor sizes");
    p->full = read_conv(r, 3, p->hidden, "pre-editor full");
    p->quarter = read_conv(r, 3, p->hidden, "pre-editor quarter");
    p->embed = read_conv(r, 3, p->dim, "pre-editor embed");
    p->pos = read_conv(r, p->dim, p->dim, "pre-editor pos");
    if (p->quarter.unshuffle != 4 || p->embed.unshuffle != p->patch || p->full.unshuffle != 1 || p->pos.unshuffle != 1)
        throw BadModel("bad pre-editor strides");
    for (uint32_t i = 0; i < p->depth; ++i) {
        Block b;
        b.norm1 = read_norm(r, p->dim);
        b.qkv = read_conv(r, p->dim, 3 * p->dim, "pre-editor qkv");
        b.proj = read_conv(r, p->dim, p->dim, "pre-editor proj");
        b.norm2 = read_norm(r, p->dim);
        b.fc1 = read_conv(r, p->dim, p->mlp, "pre-editor mlp");
        b.fc2 = read_conv(r, p->mlp, p->dim, "pre-editor mlp");
        for (const Conv *c : {&b.qkv, &b.proj, &b.fc1, &b.fc2})
            if (c->shape.kh != 1 || c->shape.kw != 1 || c->unshuffle != 1) throw BadModel("bad pre-editor linear layer");
        p->blocks.push_back(std::move(b));
    }
    p->norm = read_norm(r, p->dim);
    p->to_hidden = read_conv(r, p->dim, p->hidden, "pre-editor to_hidden");
    p->mid = read_conv(r, p->hidden, p->hidden, "pre-editor mid");
    p->out = read_conv(r, p->hidden, 3, "pre-editor out");
    // the full-resolution head is computed in row bands with a 2-row halo: two 3×3 convolutions
    for (const Conv *c : {&p->full, &p->mid, &p->out, &p->pos})
        if (c->shape.kh != 3 || c->shape.kw != 3 || c->shape.ph != 1 || c->shape.pw != 1 || c->unshuffle != 1)
            throw BadModel("bad pre-editor 3x3 convolution");
    for (const Conv *c : {&p->quarter, &p->embed, &p->to_hidden})
        if (c->shape.kh != 1 || c->shape.kw != 1) throw BadModel("bad pre-editor 1x1 convolution");
    return p;
}

// g_a (3 → M planes) or h_a (M → N): convolutions, LeakyReLUs, folded GDNs
std::vector<Layer> read_net(Reader &r, uint32_t channels, uint32_t out, const char *name) {
    const uint32_t count = r.get<uint32_t>();
    if (count == 0 || count > 64) throw BadModel(std::string("bad ") + name);
    std::vector<Layer> net;
    for (uint32_t i = 0; i < count; ++i) {
        Layer l;
        l.kind = r.get<uint32_t>();
        if (l.kind == kConv) {
            l.conv = read_conv(r, channels, 0, std::string(name) + " layer " + std::to_string(i));
            channels = l.conv.shape.out;
        } else if (l.kind == kLeaky) {
            l.slope = r.get<float>();
            if (!std::isfinite(l.slope)) throw BadModel(std::string("bad ") + name + " LeakyReLU");
        } else if (l.kind == kGdn) {
            const uint32_t c = r.get<uint32_t>(), inverse = r.get<uint32_t>();
            if (c != channels || inverse > 1) throw BadModel(std::string("bad ") + name + " GDN");
            l.inverse = inverse;
            l.conv.shape.in = l.conv.shape.out = c;
            const auto gamma = r.array<float>(uint64_t(c) * c);
            l.conv.weight = conv::pack_weights(gamma.data(), c, c, 1);
            l.conv.bias = r.array<float>(c);
        } else {
            throw BadModel(std::string("unknown ") + name + " layer kind");
        }
        net.push_back(std::move(l));
    }
    if (channels != out) throw BadModel(std::string(name) + " does not give " + std::to_string(out) + " planes");
    return net;
}

// -- operations ------------------------------------------------------------------------------

// a convolution, its input unshuffled as its padded copy is made
template <class Op> Planes<float> apply(const Conv &c, const Planes<float> &x, conv::Pool &pool, Op op) {
    return conv::conv_layer(c.shape, c.weight, x, pool, false, op, c.unshuffle);
}

Planes<float> apply(const Conv &c, const Planes<float> &x, conv::Pool &pool) {
    return apply(c, x, pool, [&](uint32_t o, float v) { return v + c.bias[o]; });
}

// How many of an h × w grid's rows a 1×1 convolution may run as one: the planes' layout is the same
// whichever the row length, and each output pixel reads only the input pixel at its place, so the
// sums are the same (each pixel's taps in the same order) — but rows of whole pixel blocks leave no
// block part empty: a token grid 24 wide (256-px images) ran in blocks of 16, the second one half
// empty. The fewest rows that make whole blocks, keeping two rows per thread at least; 1 if none.
uint32_t rows_to_join(uint32_t h, uint32_t w, unsigned threads) {
    constexpr uint32_t B = conv::pixel_block<float>();
    if (w % B == 0) return 1;
    for (uint32_t k = 2; k <= h && h / k >= 2 * threads; ++k)
        if (h % k == 0 && uint64_t(w) * k % B == 0) return k;
    return 1;
}

// apply(c, x) where c is a 1×1 convolution (no padding, no unshuffle), x's rows joined as
// rows_to_join says
Planes<float> apply_1x1(const Conv &c, Planes<float> x, conv::Pool &pool) {
    const conv::Shape &s = c.shape;
    const bool pointwise = s.kh == 1 && s.kw == 1 && s.ph == 0 && s.pw == 0 && c.unshuffle == 1;
    const uint32_t h = x.h, w = x.w, k = pointwise ? rows_to_join(h, w, pool.size()) : 1;
    x.h /= k, x.w *= k;
    Planes<float> y = apply(c, x, pool);
    y.h = h, y.w = w;
    return y;
}

// GELU in place over every plane
Planes<float> gelu_of(Planes<float> y, conv::Pool &pool) {
    conv::parallel_for(y.c, pool, [&](uint32_t c0, uint32_t c1) {
        gelu_in_place(y.v.data() + size_t(c0) * y.h * y.w, size_t(c1 - c0) * y.h * y.w);
    });
    return y;
}

Planes<float> apply_gelu(const Conv &c, const Planes<float> &x, conv::Pool &pool) { return gelu_of(apply(c, x, pool), pool); }

Planes<float> apply_1x1_gelu(const Conv &c, Planes<float> x, conv::Pool &pool) {
    return gelu_of(apply_1x1(c, std::move(x), pool), pool);
}

// LayerNorm of each token (a column across the planes) of t [dim][n]
Planes<float> layer_norm(const Norm &norm, const Planes<float> &t, conv::Pool &pool) {
    const size_t n = size_t(t.h) * t.w;
    Planes<float> out{t.c, t.h, t.w, conv::Buffer<float>(t.v.size())};
    conv::parallel_for(uint32_t((n + 63) / 64), pool, [&](uint32_t b0, uint32_t b1) {
        const size_t j0 = size_t(b0) * 64, j1 = std::min(n, size_t(b1) * 64);
        std::vector<double> mean(j1 - j0), var(j1 - j0);
        for (uint32_t c = 0; c < t.c; ++c)
            for (size_t j = j0; j < j1; ++j) mean[j - j0] += t.v[c * n + j];
        for (double &m : mean) m /= t.c;
        for (uint32_t c = 0; c < t.c; ++c)
            for (size_t j = j0; j < j1; ++j) {
                const double d = t.v[c * n + j] - mean[j - j0];
                var[j - j0] += d * d;
            }
        for (size_t j = j0; j < j1; ++j) var[j - j0] = 1.0 / std::sqrt(var[j - j0] / t.c + norm.eps);
        for (uint32_t c = 0; c < t.c; ++c)
            for (size_t j = j0; j < j1; ++j)
                out.v[c * n + j] =
                    float((t.v[c * n + j] - mean[j - j0]) * var[j - j0]) * norm.weight[c] + norm.bias[c];
    });
    return out;
}

// [start, stop) spans covering [0, size) (PreEditor's window_spans)
std::vector<std::pair<uint32_t, uint32_t>> window_spans(uint32_t size, uint32_t window, bool shift) {
    if (size <= window) return {{0, size}};
    const uint32_t n = (size + window - 1) / window;
    std::vector<uint32_t> cuts;
    for (uint32_t i = 1; i < n; ++i) cuts.push_back(uint32_t(uint64_t(i) * size / n));
    const uint32_t half = size / n / 2;
    if (shift && half) {
        for (uint32_t &c : cuts) c -= half;
        cuts.push_back(size - half);
    }
    std::vector<std::pair<uint32_t, uint32_t>> spans;
    uint32_t start = 0;
    for (uint32_t c : cuts) spans.emplace_back(start, c), start = c;
    spans.emplace_back(start, size);
    return spans;
}

// softmax(q kᵀ / sqrt(hd)) v for the tokens of one window and one head, each a plane [hd][rows][cols],
// as two 1×1 convolutions (conv.hpp's GEMM) a row of queries at a time, while its scores are in
// cache (the window's whole score planes, 9.4 MB for a Kodak image's 1536 tokens, went to memory and
// back three times): the scores s[j][i] = Σ_e k[e][j]·(q[e][i] / sqrt(hd)) (key j, query i) are the
// convolution of q's row by the keys, e^(s − max) runs over the keys of each query (across the
// planes), the output row is the convolution of those by v, divided by their sums
Planes<float> attend(const Planes<float> &q, const Planes<float> &k, const Planes<float> &v, conv::Pool &pool) {
    const uint32_t hd = q.c, m = q.h * q.w, w = q.w;
    const float scale = 1.0f / std::sqrt(float(hd));
    std::vector<float> keys(size_t(m) * hd);  // [key][e]
    for (uint32_t e = 0; e < hd; ++e)
        for (uint32_t j = 0; j < m; ++j) keys[size_t(j) * hd + e] = k.v[size_t(e) * m + j];
    const conv::Packed<float> by_keys = conv::pack_weights(keys.data(), m, hd, 1);
    const conv::Packed<float> by_values = conv::pack_weights(v.v.data(), hd, m, 1);
    // row strides of a query row's planes and of its scores: whole pixel blocks of either product
    const auto blocks_of = [&](uint32_t b) { return (w + b - 1) / b * b; };
    const size_t stride = conv::odd_lines<float>(std::max(blocks_of(conv::pixel_block<float>(by_keys.bo)),
                                                    blocks_of(conv::pixel_block<float>(by_values.bo))));
    std::vector<int64_t> at_query(by_keys.tap.size()), at_score(by_values.tap.size());
    for (size_t t = 0; t < at_query.size(); ++t) at_query[t] = int64_t(by_keys.tap[t] * stride);
    for (size_t t = 0; t < at_score.size(); ++t) at_score[t] = int64_t(by_values.tap[t] * stride);
    Planes<float> out{hd, q.h, w, conv::Buffer<float>(size_t(hd) * m)};
    conv::parallel_for(q.h, pool, [&](uint32_t r0, uint32_t r1) {
        // the columns past w: zeros, read by whole blocks and their results dropped
        std::vector<float> query(size_t(hd) * stride), score(size_t(m) * stride), top(w), total(w);
        for (uint32_t r = r0; r < r1; ++r) {
            for (uint32_t e = 0; e < hd; ++e) {
                const float *src = q.v.data() + (size_t(e) * q.h + r) * w;
                for (uint32_t i = 0; i < w; ++i) query[e * stride + i] = src[i] * scale;
            }
            conv::row_product(by_keys, at_query.data(), query.data(), w, score.data(), stride);
            softmax_columns(score.data(), stride, m, w, top.data(), total.data());
            float *o = out.v.data() + size_t(r) * w;
            conv::row_product(by_values, at_score.data(), score.data(), w, o, size_t(m));
            for (uint32_t e = 0; e < hd; ++e)  // the softmax's division, after the sum over the keys
                for (uint32_t i = 0; i < w; ++i) o[size_t(e) * m + i] /= total[i];
        }
    });
    return out;
}

// multi-head attention of the tokens qkv [3·dim][gh][gw] (channel s·dim + head·hd + e) → [dim][gh][gw],
// inside windows of `window` tokens per side (0: globally), shifted by half a window when `shift`
Planes<float> attention(const Planes<float> &qkv, uint32_t heads, uint32_t window, bool shift, conv::Pool &pool) {
    const uint32_t dim = qkv.c / 3, hd = dim / heads, gh = qkv.h, gw = qkv.w;
    const size_t n = size_t(gh) * gw;
    Planes<float> out{dim, gh, gw, conv::Buffer<float>(size_t(dim) * n)};
    const auto rows = window ? window_spans(gh, window, shift) : std::vector<std::pair<uint32_t, uint32_t>>{{0, gh}};
    const auto cols = window ? window_spans(gw, window, shift) : std::vector<std::pair<uint32_t, uint32_t>>{{0, gw}};
    for (const auto &r : rows)
        for (const auto &c : cols) {
            const uint32_t wh = r.second - r.first, ww = c.second - c.first;
            for (uint32_t h = 0; h < heads; ++h) {
                // this head's q, k, v over the window, as planes [hd][wh][ww]
                Planes<float> part[3];
                for (uint32_t s = 0; s < 3; ++s) {
                    part[s] = Planes<float>{hd, wh, ww, conv::Buffer<float>(size_t(hd) * wh * ww)};
                    for (uint32_t e = 0; e < hd; ++e)
                        for (uint32_t y = 0; y < wh; ++y)
                            std::memcpy(part[s].v.data() + (size_t(e) * wh + y) * ww,
                                        qkv.v.data() + (size_t(s) * dim + size_t(h) * hd + e) * n +
                                            size_t(r.first + y) * gw + c.first,
                                        sizeof(float) * ww);
                }
                const Planes<float> o = attend(part[0], part[1], part[2], pool);
                for (uint32_t e = 0; e < hd; ++e)
                    for (uint32_t y = 0; y < wh; ++y)
                        std::memcpy(out.v.data() + (size_t(h) * hd + e) * n + size_t(r.first + y) * gw + c.first,
                                    o.v.data() + (size_t(e) * wh + y) * ww, sizeof(float) * ww);
            }
        }
    return out;
}

void add_into(Planes<float> &dst, const Planes<float> &src) {
    for (size_t k = 0; k < dst.v.size(); ++k) dst.v[k] += src.v[k];
}

// F.interpolate(scale_factor=s, mode="bilinear", align_corners=False) along one axis: output i
// reads source first[i] and first[i] + step[i] with weights (w0[i], w1[i])
struct Bilinear {
    std::vector<uint32_t> first, step;
    std::vector<float> w0, w1;
    Bilinear(uint32_t in, uint32_t s) {
        const float inv = 1.0f / float(s);
        for (uint32_t i = 0; i < in * s; ++i) {
            const float real = std::max(inv * (float(i) + 0.5f) - 0.5f, 0.0f);
            const uint32_t i0 = uint32_t(real);
            const float l1 = std::min(std::max(real - float(i0), 0.0f), 1.0f);
            first.push_back(i0), step.push_back(i0 + 1 < in ? 1 : 0), w0.push_back(1.0f - l1), w1.push_back(l1);
        }
    }
    // output i from the source src
    float at(const float *src, uint32_t i) const { return w0[i] * src[first[i]] + w1[i] * src[first[i] + step[i]]; }
};

// dst += src upsampled ×s (bilinear)
void add_upsampled(Planes<float> &dst, const Planes<float> &src, uint32_t s, conv::Pool &pool) {
    const Bilinear across(src.w, s), down(src.h, s);
    conv::parallel_for(dst.c, pool, [&](uint32_t c0, uint32_t c1) {
        for (uint32_t c = c0; c < c1; ++c)
            for (uint32_t y = 0; y < dst.h; ++y) {
                const float *a = src.v.data() + (size_t(c) * src.h + down.first[y]) * src.w;
                const float *b = a + size_t(down.step[y]) * src.w;
                const float h0 = down.w0[y], h1 = down.w1[y];
                float *d = dst.v.data() + (size_t(c) * dst.h + y) * dst.w;
                for (uint32_t x = 0; x < dst.w; ++x) d[x] += h0 * across.at(a, x) + h1 * across.at(b, x);
            }
    });
}

Planes<float> rows_of(const Planes<float> &x, uint32_t r0, uint32_t r1) {
    Planes<float> y{x.c, r1 - r0, x.w, conv::Buffer<float>(size_t(x.c) * (r1 - r0) * x.w)};
    for (uint32_t c = 0; c < x.c; ++c)
        std::memcpy(y.v.data() + size_t(c) * y.h * y.w, x.v.data() + (size_t(c) * x.h + r0) * x.w,
                    sizeof(float) * y.h * y.w);
    return y;
}

}  // namespace

Networks read_networks(decoder::Reader &r, uint32_t M, uint32_t N) {
    Networks net;
    const uint32_t has_pre = r.get<uint32_t>();
    if (has_pre > 1) throw BadModel("bad pre-editor flag");
    if (has_pre) net.pre = read_pre_editor(r);
    net.g_a = read_net(r, 3, M, "g_a");
    net.h_a = read_net(r, M, N, "h_a");
    // g_a's reach: each convolution reads `ph` rows of its (unshuffled) input on either side
    uint64_t scale = 1, reach = 0;
    for (const Layer &l : net.g_a) {
        if (l.kind != kConv) continue;
        reach += uint64_t(l.conv.shape.ph) * l.conv.unshuffle * scale;
        scale *= l.conv.unshuffle;
    }
    if (scale != 16) throw BadModel("g_a does not reduce the image 16 times");
    net.g_a_reach = uint32_t(reach);
    return net;
}

Planes<float> run(const std::vector<Layer> &net, Planes<float> x, conv::Pool &pool) {
    for (const Layer &l : net) {
        if (l.kind == kConv) {
            x = apply(l.conv, x, pool);
        } else if (l.kind == kGdn) {
            conv::gdn_in_place(l.conv.shape, l.conv.weight, l.conv.bias, l.inverse, x, pool);
        } else {
            for (float &v : x.v) v = v > 0.0f ? v : v * l.slope;
        }
    }
    return x;
}

Planes<float> analysis(const Networks &net, const Planes<float> &x, uint64_t band_pixels, conv::Pool &pool) {
    const uint32_t hy = x.h / 16, wy = x.w / 16;
    const uint32_t rows = band_pixels == 0 ? hy : uint32_t(std::clamp<uint64_t>(band_pixels / (256ull * wy), 1, hy));
    if (rows >= hy) return run(net.g_a, x, pool);
    const uint32_t halo = (net.g_a_reach + 15) / 16;  // in latent rows
    Planes<float> y;
    for (uint32_t b0 = 0; b0 < hy; b0 += rows) {
        const uint32_t b1 = std::min(hy, b0 + rows), lo = b0 >= halo ? b0 - halo : 0, hi = std::min(hy, b1 + halo);
        const Planes<float> part = run(net.g_a, rows_of(x, 16 * lo, 16 * hi), pool);
        if (part.h != hi - lo || part.w != wy || (!y.v.empty() && part.c != y.c))
            throw std::logic_error("g_a output has the wrong shape");
        if (y.v.empty()) y = Planes<float>{part.c, hy, wy, conv::Buffer<float>(size_t(part.c) * hy * wy)};
        for (uint32_t c = 0; c < part.c; ++c)
            std::memcpy(y.v.data() + (size_t(c) * hy + b0) * wy, part.v.data() + (size_t(c) * part.h + (b0 - lo)) * wy,
                        sizeof(float) * (b1 - b0) * wy);
    }
    return y;
}

namespace {

// Image pixels per band of the full-resolution head at most: its hidden planes for a band (32 of
// 36 864 pixels: 4.7 MB) stay in the last-level cache between the two convolutions, where the
// whole image's (50 MB at 768×512) went to memory and back (a Kodak image's head took about twice
// as long on one thread)
constexpr uint64_t kHeadBandPixels = 36864;

// clamp(x + out(gelu(full(x)) + up×4(q)), 0, 1) in row bands (PreEditor._full_head_in_bands): each
// band reads x with a 2-row halo, so its rows are computed from the same values as without bands;
// the activation and upsampling are applied to each row of full's products as they come, and the
// residual and clamp to out's
Planes<float> full_head(const PreEditor &p, const Planes<float> &x, const Planes<float> &q, uint64_t band_pixels,
                        conv::Pool &pool) {
    Planes<float> out{3, x.h, x.w, conv::Buffer<float>(x.v.size())};
    const uint64_t most = band_pixels == 0 ? uint64_t(x.h) * x.w : std::min(band_pixels, kHeadBandPixels);
    const uint32_t band = uint32_t(std::clamp<uint64_t>(most / x.w, 16, x.h));
    const Bilinear across(q.w, 4), down(q.h, 4);
    const uint32_t hidden = p.full.shape.out;
    for (uint32_t r0 = 0; r0 < x.h; r0 += band) {
        const uint32_t r1 = std::min(x.h, r0 + band), a0 = r0 >= 2 ? r0 - 2 : 0, a1 = std::min(x.h, r1 + 2);
        // q's rows under image rows [a0, a1), upsampled across
        const uint32_t k0 = down.first[a0], k1 = down.first[a1 - 1] + down.step[a1 - 1] + 1;
        Planes<float> wide{q.c, k1 - k0, x.w, conv::Buffer<float>(size_t(q.c) * (k1 - k0) * x.w)};
        conv::parallel_for(wide.c * wide.h, pool, [&](uint32_t i0, uint32_t i1) {
            for (uint32_t i = i0; i < i1; ++i) {
                const float *src = q.v.data() + (size_t(i / wide.h) * q.h + k0 + i % wide.h) * q.w;
                float *dst = wide.v.data() + size_t(i) * x.w;
                for (uint32_t j = 0; j < x.w; ++j) dst[j] = across.at(src, j);
            }
        });
        Planes<float> f{hidden, a1 - a0, x.w, conv::Buffer<float>(size_t(hidden) * (a1 - a0) * x.w)};
        conv::conv_rows(p.full.shape, p.full.weight, rows_of(x, a0, a1), pool, conv::Identity{},
                        [&](uint32_t oy, const float *sums, uint32_t n) {
                            const uint32_t y = a0 + oy, k = down.first[y] - k0;
                            for (uint32_t c = 0; c < hidden; ++c) {
                                const float *a = wide.v.data() + (size_t(c) * wide.h + k) * x.w;
                                gelu_add_blend(sums + size_t(c) * n, p.full.bias[c], a, a + size_t(down.step[y]) * x.w,
                                               down.w0[y], down.w1[y], f.v.data() + (size_t(c) * f.h + oy) * x.w, n);
                            }
                        });
        conv::conv_rows(p.out.shape, p.out.weight, f, pool, conv::Identity{}, [&](uint32_t oy, const float *sums, uint32_t n) {
            const uint32_t y = a0 + oy;
            if (y < r0 || y >= r1) return;  // the halo's rows: the neighbouring band's
            for (uint32_t c = 0; c < 3; ++c) {
                const float *src = x.v.data() + (size_t(c) * x.h + y) * x.w, *d = sums + size_t(c) * n;
                const float bias = p.out.bias[c];
                float *dst = out.v.data() + (size_t(c) * x.h + y) * x.w;
                for (uint32_t j = 0; j < n; ++j) dst[j] = std::min(std::max(src[j] + (d[j] + bias), 0.0f), 1.0f);
            }
        });
    }
    return out;
}

}  // namespace

Planes<float> pre_edit(const PreEditor &p, const Planes<float> &x, uint64_t band_pixels, conv::Pool &pool) {
    // the tokens: patch embedding and its position encoding, then the blocks, attending globally
    // while the grid fits global_tokens per side (0: the window), else in shifted windows
    Planes<float> t = apply(p.embed, x, pool);
    add_into(t, apply(p.pos, t, pool));
    const uint32_t fits = p.global_tokens ? std::max(p.global_tokens, p.window) : p.window;
    const uint32_t window = p.window > 0 && std::max(t.h, t.w) > fits ? p.window : 0;
    for (size_t i = 0; i < p.blocks.size(); ++i) {
        const Block &b = p.blocks[i];
        Planes<float> a = attention(apply_1x1(b.qkv, layer_norm(b.norm1, t, pool), pool), p.heads, window, i % 2 == 1, pool);
        add_into(t, apply_1x1(b.proj, std::move(a), pool));
        add_into(t, apply_1x1(b.fc2, apply_1x1_gelu(b.fc1, layer_norm(b.norm2, t, pool), pool), pool));
    }
    const Planes<float> tokens = apply_1x1(p.to_hidden, layer_norm(p.norm, t, pool), pool);
    // the quarter-resolution head: gelu(mid(gelu(quarter(x)) + up(tokens)))
    Planes<float> q = apply_gelu(p.quarter, x, pool);
    add_upsampled(q, tokens, p.patch / 4, pool);
    q = apply_gelu(p.mid, q, pool);
    return full_head(p, x, q, band_pixels, pool);
}

}  // namespace vlmc::encoder
