// The encoder's networks in float32 for vlmc_decoder_encode_image: the semantic pre-editor
// (vlmcodec.models.pre_editor.PreEditor), g_a and h_a (vlmcodec.models.hyperprior), read from
// the encoder section of a decoder-model file (version 3, export/c_decoder.py). The same
// functions as the torch backend's, in float32 within rounding (sums in another order), so
// streams match the Python encoder's but for the rare symbol a rounding flips — every one a
// valid stream.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "conv.hpp"
#include "reader.hpp"

namespace vlmc::encoder {

// a malformed encoder section
struct BadModel : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A convolution of stride 1 on its input pixel-unshuffled by `unshuffle` (channel c·s² + a·s + b
// holds pixels (s·i + a, s·j + b) of channel c): a strided one as space_to_depth rewrote it
struct Conv {
    conv::Shape shape;
    uint32_t unshuffle = 1;
    conv::Packed<float> weight;
    std::vector<float> bias;
};

struct Norm {  // LayerNorm over the channels of each token
    float eps = 1e-5f;
    std::vector<float> weight, bias;
};

struct Block {  // pre-norm transformer block
    Norm norm1, norm2;
    Conv qkv, proj, fc1, fc2;  // Linear layers as 1×1 convolutions of the token grid
};

struct PreEditor {
    uint32_t dim = 0, depth = 0, heads = 0, hidden = 0, patch = 0, mlp = 0, window = 0, global_tokens = 0;
    Conv full, quarter, embed, pos;
    std::vector<Block> blocks;
    Norm norm;
    Conv to_hidden, mid, out;
};

enum LayerKind : uint32_t { kConv = 0, kLeaky = 1, kGdn = 3 };

struct Layer {
    uint32_t kind = kConv;
    Conv conv;  // a GDN: γ as a 1×1 convolution's weights, β as its bias
    float slope = 0;
    bool inverse = false;
};

struct Networks {
    std::unique_ptr<PreEditor> pre;  // null: the model has none
    std::vector<Layer> g_a, h_a;
    uint32_t g_a_reach = 0;  // the image rows on either side of its own that a g_a output row reads
};

// The encoder section from r on, r advanced past it; M, N: the codec's channels (BadModel when the
// section is malformed or its networks do not give them; r's error when it is truncated)
Networks read_networks(decoder::Reader &r, uint32_t M, uint32_t N);

// x (3 planes, sides multiples of 64, values in [0, 1]) → clamp(x + Δ(x), 0, 1); the
// full-resolution head in bands of about band_pixels pixels, and at most a cache-sized 36 864
// (0: one pass; the same values either way)
conv::Planes<float> pre_edit(const PreEditor &p, const conv::Planes<float> &x, uint64_t band_pixels, conv::Pool &pool);

// g_a on x in bands of about band_pixels image pixels (0: one pass), each with its receptive
// field's rows of context, so that every output row is computed from the same values as in one
// pass: the same latents, bit for bit, in a fraction of the memory
conv::Planes<float> analysis(const Networks &net, const conv::Planes<float> &x, uint64_t band_pixels, conv::Pool &pool);

// the element-wise passes (encoder.cpp): GELU of n values in place; softmax over the m rows (stride
// apart) of n columns of scores but for its division (s = e^(s − column max), total = column sums)
void gelu_in_place(float *v, size_t n);
// dst[j] = gelu(sums[j] + bias) + (h0 · a[j] + h1 · b[j]) for j < n
void gelu_add_blend(const float *sums, float bias, const float *a, const float *b, float h0, float h1, float *dst,
                    uint32_t n);
void softmax_columns(float *s, size_t stride, uint32_t m, uint32_t n, float *top, float *total);

// g_a or h_a on x
conv::Planes<float> run(const std::vector<Layer> &net, conv::Planes<float> x, conv::Pool &pool);

}  // namespace vlmc::encoder
