// g_a in bands (kernels/decoder/encoder.hpp: analysis): each band's output is checked before its
// rows are copied out. A g_a whose convolution shrinks its input (a "valid" one, padding 0:
// read_networks refuses it, built here directly) gave bands 2 rows short, and the copy read past
// them (out of bounds under ASan; a bad stream in a Release build).
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "encoder.hpp"

using namespace vlmc;

int main() {
    // one 3x3 convolution of the image unshuffled by 16 (3 · 256 planes) to 2 planes
    encoder::Layer l;
    l.conv.unshuffle = 16;
    l.conv.shape = conv::Shape{2, 3 * 256, 3, 3, 0, 0};
    const std::vector<float> weight(size_t(2) * 3 * 256 * 9, 0.001f);
    l.conv.weight = conv::pack_weights(weight.data(), 2, 3 * 256, 9);
    l.conv.bias = {0.0f, 0.0f};
    encoder::Networks net;
    net.g_a.push_back(l);
    const uint32_t hy = 8, wy = 4;
    conv::Planes<float> x{3, 16 * hy, 16 * wy, conv::Buffer<float>(size_t(3) * 256 * hy * wy, 0.5f)};
    conv::Pool pool(2);
    // in one pass its output is 2 rows and columns short (the caller checks the shape)
    const conv::Planes<float> whole = encoder::analysis(net, x, 0, pool);
    CHECK_NOTE(whole.h == hy - 2 && whole.w == wy - 2, "%u x %u", whole.h, whole.w);
    // in bands of 4 latent rows, the first band's check refuses it (its output: 2 rows)
    std::string message;
    try {
        encoder::analysis(net, x, 256 * wy * 4, pool);
    } catch (const std::logic_error &e) {
        message = e.what();
    }
    CHECK_NOTE(message == "g_a output has the wrong shape", "'%s'", message.c_str());
    // and with padding 1 the bands give the one pass's latents
    net.g_a[0].conv.shape.ph = net.g_a[0].conv.shape.pw = 1;
    net.g_a_reach = 16;
    const conv::Planes<float> one = encoder::analysis(net, x, 0, pool);
    const conv::Planes<float> banded = encoder::analysis(net, x, 256 * wy * 2, pool);
    CHECK_NOTE(one.h == hy && one.w == wy && banded.h == hy && banded.w == wy && one.v == banded.v, "%s", "");
    return check_report("test_encoder_bands");
}
