// vlmcodec stream decoder — C API (vlmc_decoder.h). Mirrors, operation for operation, what
// vlmcodec's Python decoder computes up to g_s: engine/bitstream/container.py (parsing and
// checks), Codec._read (z, the exact h_s, indexes, y) and engine/entropy/exact_hyper.py (the
// fixed-point h_s); and the entropy stage of its encoder (Codec.entropy_encode, container.pack)
// for vlmc_decoder_write_stream. Every float operation that decides a symbol is one the Python
// side does in the same IEEE precision, so the latents (and written streams) are bit-identical.
// No exception crosses the C boundary.
#include "vlmc_decoder.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "c_api_error.hpp"
#include "conv.hpp"
#include "encoder.hpp"
#include "reader.hpp"
#include "search.hpp"
#include "vlmc_rans.h"

namespace {

namespace conv = vlmc::conv;

constexpr uint32_t kStreamVersion = 1;           // container.FORMAT_VERSION
constexpr uint32_t kModelVersion = 3;            // export/c_decoder.py MODEL_FILE_VERSION
constexpr uint32_t kOldestModelVersion = 1;      // version 1: no gains (decodes, cannot write streams)
constexpr uint32_t kEncoderModelVersion = 3;     // from version 3 on: the encoder's networks
constexpr uint32_t kMaxDim = 1u << 14;           // container.MAX_DIM
constexpr uint32_t kMaxChunks = 4096;            // container.MAX_CHUNKS
constexpr uint64_t kMaxChunkBytes = 1ull << 30;  // container.MAX_CHUNK_BYTES
constexpr uint32_t kFlagPreEdited = 1, kFlagRescaled = 2, kKnownFlags = 3;
constexpr uint64_t kSymbolsPerChunk = 1u << 16;  // codec.SYMBOLS_PER_CHUNK
constexpr uint64_t kMaxYChunks = 64;             // codec.MAX_Y_CHUNKS
constexpr double kActScale = 4096.0;             // 2**ACT_FRAC_BITS
constexpr uint32_t kMinShortSide = 16;  // vlmcodec.resample.MIN_SHORT_SIDE
constexpr double kExactLimit = 4503599627370496.0;  // 2**52
constexpr double kLeakyNum = 655.0, kLeakyDen = 65536.0;

thread_local std::string g_last_error;

using vlmc::decoder::Error;
using vlmc::decoder::raise;
using vlmc::decoder::Reader;

int fail(int code, const char *what) { return vlmc::c_api::fail(g_last_error, code, what); }

template <class Fn> int guarded(Fn fn) {
    return vlmc::c_api::guarded(g_last_error, VLMC_DEC_OK, VLMC_DEC_ERR_NO_MEMORY, VLMC_DEC_ERR_INTERNAL, fn,
                                [](const std::exception &e) {
                                    const auto *err = dynamic_cast<const Error *>(&e);
                                    return err ? err->code : VLMC_DEC_ERR_INTERNAL;
                                });
}

// zlib's CRC-32, eight bytes a step ("slicing by 8": table k maps a byte to its contribution k
// bytes further on, so the eight lookups of a step are independent), the rest a byte at a time:
// ~6× faster than a byte a step, which took a third of opening a 15 MB model file
uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n) {
    static const std::array<std::array<uint32_t, 256>, 8> table = [] {
        std::array<std::array<uint32_t, 256>, 8> t{};
        for (uint32_t i = 0; i < 256; ++i) {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[0][i] = c;
        }
        for (int k = 1; k < 8; ++k)
            for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
        return t;
    }();
    const auto le32 = [](const uint8_t *q) {
        return uint32_t(q[0]) | uint32_t(q[1]) << 8 | uint32_t(q[2]) << 16 | uint32_t(q[3]) << 24;
    };
    crc = ~crc;
    for (; n >= 8; p += 8, n -= 8) {
        const uint32_t a = crc ^ le32(p), b = le32(p + 4);
        crc = table[7][a & 0xFF] ^ table[6][(a >> 8) & 0xFF] ^ table[5][(a >> 16) & 0xFF] ^ table[4][a >> 24] ^
              table[3][b & 0xFF] ^ table[2][(b >> 8) & 0xFF] ^ table[1][(b >> 16) & 0xFF] ^ table[0][b >> 24];
    }
    for (; n; ++p, --n) crc = table[0][(crc ^ *p) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

// -- the decoder-model file ------------------------------------------------------------------

struct Table {
    vlmc_rans_tables *native = nullptr;
    uint32_t count = 0;
    ~Table() { vlmc_rans_tables_free(native); }
};

void read_table(Reader &r, Table &t) {
    const uint32_t count = r.get<uint32_t>(), stride = r.get<uint32_t>();
    if (count == 0 || stride < 2 || stride > 1u << 16 || count > 1u << 16)
        raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: bad CDF table size");
    auto cdf = r.array<int32_t>(uint64_t(count) * stride);
    auto length = r.array<int32_t>(count);
    auto offsets = r.array<int32_t>(count);
    if (vlmc_rans_tables_create(cdf.data(), length.data(), offsets.data(), count, stride, &t.native) !=
        VLMC_RANS_OK)
        raise(VLMC_DEC_ERR_BAD_MODEL_FILE, std::string("decoder-model file: ") + vlmc_rans_last_error());
    t.count = count;
}

enum LayerKind : uint32_t { kConv = 0, kLeaky = 1, kRelu = 2 };

struct Layer {
    uint32_t kind = kConv;
    conv::Shape shape;  // stride 1
    uint32_t shuffle = 0;
    conv::Packed<double> weight;  // integer-valued, [out][in][kh][kw] packed (conv::pack_weights)
    std::vector<double> bias_half, inv_scale;
    double l1 = 0, bias_max = 0;
};

// g_s, in float32: sub-pixel convolutions (kind kConv) and folded (I)GDN (kind kGdn)
constexpr uint32_t kGdn = 3;

struct SynthesisLayer {
    uint32_t kind = kConv;
    conv::Shape shape;
    uint32_t shuffle = 0, inverse = 0;
    conv::Packed<float> weight;  // conv: [out][in][kh][kw]; GDN: γ [C][C] (conv::pack_weights)
    std::vector<float> bias;     // conv: [out]; GDN: β [C]
};

}  // namespace

struct vlmc_decoder {
    uint8_t fingerprint[8], stream_fingerprint[8];
    uint32_t N = 0, M = 0, K = 0;
    std::vector<float> medians;
    Table z, y;
    std::vector<double> bounds;  // the scale table but its last entry, widened (exact)
    double scale_bound = 0;
    std::vector<float> inv_gain;  // |inv_gain|, [K][M]
    std::vector<float> gain;      // |gain|, [K][M] (the encoder's; empty in a version-1 file)
    std::vector<Layer> layers;
    std::vector<SynthesisLayer> synthesis;
    std::unique_ptr<vlmc::encoder::Networks> encoder;  // the pre-editor, g_a, h_a (null before version 3)
    uint32_t synthesis_halo = 0;     // latent rows of context a g_s band needs (load_model)
    uint64_t max_pixels = 64000000;
    uint64_t band_pixels = 1u << 20;  // image pixels per band of g_s, g_a and the pre-editor's head (0: none)
    mutable conv::PoolCache pools;    // worker threads kept between calls (each call leases its own)
    mutable conv::BlockCache blocks{size_t(128) << 20};  // working buffers kept between uses (block_cache.hpp)
};

namespace {

// What one call works with: a pool of worker threads leased from the decoder and, current on
// them for as long, the decoder's block cache (declared first: it outlives the pool's use)
class Workers {
  public:
    Workers(const vlmc_decoder &d, int threads) : blocks_(&d.blocks), pool_(d.pools.lease(threads)) {}
    conv::Pool &operator*() const { return *pool_; }

  private:
    conv::BlockCache::Scope blocks_;
    conv::PoolCache::Lease pool_;
};

// A decoder-model file begins with this magic (and holds 16 bytes at the least)
void require_model_magic(const uint8_t *bytes, size_t size) {
    const char magic[8] = {'V', 'L', 'M', 'C', 'D', 'E', 'C', 0};
    if (size < 16 || std::memcmp(bytes, magic, 8) != 0)
        raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "not a vlmcodec decoder-model file (bad magic)");
}

// A convolution's header in the decoder-model file (out, in, kh, kw, sh, sw, ph, pw, shuffle),
// checked: it takes `channels` inputs, has stride 1, a padding that keeps its input's size (an odd
// kernel k, padding (k − 1) / 2: the models' and SubPixelConv's convolutions; h_s's output is 4×
// z and g_s's 16× y only so, and the bands' halos assume it) and, with a pixel shuffle, a multiple
// of 4 outputs; returns the channels it gives.
uint32_t read_conv(Reader &r, uint32_t channels, const char *net, uint32_t i, conv::Shape &c, uint32_t &shuffle) {
    uint32_t sh, sw;
    for (uint32_t *f : {&c.out, &c.in, &c.kh, &c.kw, &sh, &sw, &c.ph, &c.pw, &shuffle}) *f = r.get<uint32_t>();
    const std::string layer = std::string(net) + " layer " + std::to_string(i);
    if (c.in != channels || c.out == 0 || c.out > 16384 || c.kh == 0 || c.kw == 0 || c.kh > 15 || c.kw > 15 || sh != 1 ||
        sw != 1 || c.ph >= c.kh || c.pw >= c.kw || shuffle > 1 || (shuffle && c.out % 4))
        raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: bad " + layer);
    if (const std::string change = conv::size_change(c); !change.empty())
        raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: " + layer + ": " + change);
    return shuffle ? c.out / 4 : c.out;
}

void load_model(vlmc_decoder &d, const uint8_t *bytes, size_t size) {
    require_model_magic(bytes, size);
    uint32_t stored;
    std::memcpy(&stored, bytes + size - 4, 4);
    if (crc32_update(0, bytes, size - 4) != stored)
        raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: CRC-32 mismatch (damaged)");
    Reader r{bytes, size - 4, 0, VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file"};
    r.pos = 8;
    const uint32_t version = r.get<uint32_t>();
    if (version < kOldestModelVersion || version > kModelVersion)
        raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file version " + std::to_string(version) +
                                               " (this library reads " + std::to_string(kOldestModelVersion) +
                                               " to " + std::to_string(kModelVersion) + ")");
    for (auto &b : d.fingerprint) b = r.get<uint8_t>();
    for (auto &b : d.stream_fingerprint) b = r.get<uint8_t>();
    d.N = r.get<uint32_t>();
    d.M = r.get<uint32_t>();
    d.K = r.get<uint32_t>();
    if (d.N == 0 || d.M == 0 || d.K == 0 || d.N > 4096 || d.M > 4096 || d.K > 1024)
        raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: bad network sizes");
    d.medians = r.array<float>(d.N);
    read_table(r, d.z);
    read_table(r, d.y);
    if (d.z.count != d.N) raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: z tables != N");
    d.bounds = r.array<double>(d.y.count - 1);
    d.scale_bound = r.get<double>();
    // (scale_indexes searches them: a table out of order would give indexes no encoder meant;
    // the reader has refused any value not finite)
    for (size_t i = 1; i < d.bounds.size(); ++i)
        if (!(d.bounds[i - 1] < d.bounds[i]))
            raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: scale bounds not finite and increasing");
    d.inv_gain = r.array<float>(uint64_t(d.K) * d.M);
    if (version >= 2) d.gain = r.array<float>(uint64_t(d.K) * d.M);
    const uint32_t n_layers = r.get<uint32_t>();
    if (n_layers == 0 || n_layers > 64) raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: bad h_s");
    uint32_t channels = d.N;
    for (uint32_t i = 0; i < n_layers; ++i) {
        Layer l;
        l.kind = r.get<uint32_t>();
        if (l.kind == kConv) {
            const conv::Shape &c = l.shape;
            const uint32_t next = read_conv(r, channels, "h_s", i, l.shape, l.shuffle);
            auto w = r.array<int32_t>(uint64_t(c.out) * c.in * c.kh * c.kw);
            const std::vector<double> weight(w.begin(), w.end());
            l.weight = conv::pack_weights(weight.data(), c.out, c.in, c.kh * c.kw);
            l.bias_half = r.array<double>(c.out);
            l.inv_scale = r.array<double>(c.out);
            l.l1 = r.get<double>();
            l.bias_max = r.get<double>();
            channels = next;
        } else if (l.kind != kLeaky && l.kind != kRelu) {
            raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: unknown h_s layer kind");
        }
        d.layers.push_back(std::move(l));
    }
    if (channels != 2 * d.M) raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: h_s does not give 2·M");
    const uint32_t n_synthesis = r.get<uint32_t>();
    if (n_synthesis == 0 || n_synthesis > 64) raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: bad g_s");
    channels = d.M;
    for (uint32_t i = 0; i < n_synthesis; ++i) {
        SynthesisLayer l;
        l.kind = r.get<uint32_t>();
        conv::Shape &c = l.shape;
        if (l.kind == kConv) {
            const uint32_t next = read_conv(r, channels, "g_s", i, c, l.shuffle);
            const auto weight = r.array<float>(uint64_t(c.out) * c.in * c.kh * c.kw);
            l.weight = conv::pack_weights(weight.data(), c.out, c.in, c.kh * c.kw);
            l.bias = r.array<float>(c.out);
            channels = next;
        } else if (l.kind == kGdn) {
            c.in = c.out = r.get<uint32_t>();
            l.inverse = r.get<uint32_t>();
            if (c.in != channels || l.inverse > 1) raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: bad g_s GDN");
            const auto gamma = r.array<float>(uint64_t(c.in) * c.in);
            l.weight = conv::pack_weights(gamma.data(), c.in, c.in, 1);
            l.bias = r.array<float>(c.in);
        } else {
            raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: unknown g_s layer kind");
        }
        d.synthesis.push_back(std::move(l));
    }
    if (channels != 3) raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: g_s does not give 3 channels");
    // g_s's receptive field in latent rows: each convolution reaches ph rows at its resolution
    double reach = 0, per_latent_row = 1;
    for (const SynthesisLayer &l : d.synthesis) {
        if (l.kind != kConv) continue;
        reach += l.shape.ph / per_latent_row;
        if (l.shuffle) per_latent_row *= 2;
    }
    d.synthesis_halo = uint32_t(std::ceil(reach));
    if (version >= kEncoderModelVersion) {
        try {
            d.encoder = std::make_unique<vlmc::encoder::Networks>(vlmc::encoder::read_networks(r, d.M, d.N));
        } catch (const vlmc::encoder::BadModel &e) {
            raise(VLMC_DEC_ERR_BAD_MODEL_FILE, std::string("decoder-model file: ") + e.what());
        }
    }
    if (r.pos != r.n) raise(VLMC_DEC_ERR_BAD_MODEL_FILE, "decoder-model file: trailing bytes");
}

// -- the container ---------------------------------------------------------------------------

struct Parsed {
    vlmc_stream_info info{};
    uint32_t quality_x100 = 0;  // as stored: round(quality · 100)
    std::vector<size_t> z_sizes, y_sizes;
    const uint8_t *z_data = nullptr, *y_data = nullptr;
};

uint32_t varint(Reader &r, const char *what, uint64_t lo, uint64_t hi) {
    uint64_t value = 0;
    int shift = 0;
    for (int i = 0;; ++i) {
        if (i == 5) raise(VLMC_DEC_ERR_CORRUPT, std::string("corrupt stream: ") + what + " is not a valid varint");
        r.need(1);
        const uint8_t b = r.p[r.pos++];
        value |= uint64_t(b & 0x7F) << shift;
        shift += 7;
        if (!(b & 0x80)) {
            // a last byte of 0 after the first pads the number: one value, one byte form
            if (b == 0 && i > 0)
                raise(VLMC_DEC_ERR_CORRUPT, std::string("corrupt stream: ") + what +
                                                " is not a valid varint (over-long form)");
            break;
        }
    }
    if (value < lo || value > hi)
        raise(VLMC_DEC_ERR_CORRUPT, std::string("corrupt stream: ") + what + " = " + std::to_string(value) +
                                        " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return uint32_t(value);
}

uint64_t num_chunks_for(uint64_t n) {
    return std::max<uint64_t>(1, std::min<uint64_t>(kMaxYChunks, (n + kSymbolsPerChunk - 1) / kSymbolsPerChunk));
}

Parsed parse(const vlmc_decoder &d, const uint8_t *data, size_t size) {
    if (data == nullptr && size > 0) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "data is null");
    Parsed s;
    Reader r{data, size, 0, VLMC_DEC_ERR_CORRUPT, "truncated stream"};
    r.need(4);
    if (std::memcmp(data, "VLMC", 4) != 0) raise(VLMC_DEC_ERR_CORRUPT, "not a .vlmc stream (bad magic)");
    r.pos = 4;
    const uint8_t version = r.get<uint8_t>(), flags = r.get<uint8_t>();
    if (version != kStreamVersion)
        raise(VLMC_DEC_ERR_CORRUPT, "unsupported .vlmc version " + std::to_string(version) +
                                        " (this build reads " + std::to_string(kStreamVersion) + ")");
    if (flags & ~kKnownFlags) raise(VLMC_DEC_ERR_CORRUPT, "corrupt stream: unknown flags");
    vlmc_stream_info &info = s.info;
    for (auto &b : info.fingerprint) b = r.get<uint8_t>();
    info.flags = flags;
    info.width = varint(r, "width", 1, kMaxDim);
    info.height = varint(r, "height", 1, kMaxDim);
    info.coded_width = info.width;
    info.coded_height = info.height;
    if (flags & kFlagRescaled) {
        info.coded_width = varint(r, "coded width", 1, info.width);
        info.coded_height = varint(r, "coded height", 1, info.height);
        if (info.coded_width == info.width && info.coded_height == info.height)
            raise(VLMC_DEC_ERR_CORRUPT, "corrupt stream: rescaled flag set but the coded size equals the image size");
    }
    const uint16_t q = r.get<uint16_t>();
    if (q > 10000) raise(VLMC_DEC_ERR_CORRUPT, "corrupt stream: quality outside [0, 100]");
    info.quality = float(q / 100.0);
    s.quality_x100 = q;
    const uint32_t n_z = varint(r, "z chunk count", 1, kMaxChunks);
    const uint32_t n_y = varint(r, "y chunk count", 1, kMaxChunks);
    std::vector<size_t> lengths(n_z + n_y);
    uint64_t total = 0;
    for (auto &len : lengths) total += len = varint(r, "chunk length", 0, kMaxChunkBytes);
    const size_t header_end = r.pos;
    const uint32_t crc = r.get<uint32_t>();
    if (total < size - r.pos) /* (as the Python reader: two streams concatenated, bytes appended) */
        raise(VLMC_DEC_ERR_CORRUPT, "corrupt stream: " + std::to_string(size - r.pos - total) +
                                        " bytes after the stream's end (chunk table says " + std::to_string(total) +
                                        " payload bytes, file has " + std::to_string(size - r.pos) + ")");
    if (total != size - r.pos)
        raise(VLMC_DEC_ERR_CORRUPT, "corrupt or truncated stream: chunk table says " + std::to_string(total) +
                                        " payload bytes, file has " + std::to_string(size - r.pos));
    if (crc32_update(crc32_update(0, data, header_end), data + r.pos, size - r.pos) != crc)
        raise(VLMC_DEC_ERR_CORRUPT, "corrupt stream: CRC-32 mismatch");
    auto hex = [](const uint8_t *f) {
        char buf[17];
        for (int i = 0; i < 8; ++i) std::snprintf(buf + 2 * i, 3, "%02x", f[i]);
        return std::string(buf, 16);
    };
    if (std::memcmp(info.fingerprint, d.fingerprint, 8) != 0 &&
        std::memcmp(info.fingerprint, d.stream_fingerprint, 8) != 0)
        raise(VLMC_DEC_ERR_MODEL_MISMATCH, "stream was written by model " + hex(info.fingerprint) +
                                               ", this decoder holds " + hex(d.fingerprint) +
                                               "; decode it with the model that wrote it");
    if (uint64_t(info.width) * info.height > d.max_pixels)
        raise(VLMC_DEC_ERR_TOO_LARGE, "stream announces " + std::to_string(info.width) + "x" +
                                          std::to_string(info.height) + " pixels, more than max_pixels=" +
                                          std::to_string(d.max_pixels));
    info.padded_width = (info.coded_width + 63) / 64 * 64;
    info.padded_height = (info.coded_height + 63) / 64 * 64;
    info.channels = d.M;
    info.latent_height = info.padded_height / 16;
    info.latent_width = info.padded_width / 16;
    const uint64_t n_sym = uint64_t(d.M) * info.latent_height * info.latent_width;
    if (n_y != num_chunks_for(n_sym) || n_z != 1)
        raise(VLMC_DEC_ERR_CORRUPT, "corrupt stream: chunk count does not match the image size");
    s.z_sizes.assign(lengths.begin(), lengths.begin() + n_z);
    s.y_sizes.assign(lengths.begin() + n_z, lengths.end());
    s.z_data = data + r.pos;
    size_t z_bytes = 0;
    for (size_t len : s.z_sizes) z_bytes += len;
    s.y_data = s.z_data + z_bytes;
    return s;
}

// -- the exact h_s (engine/entropy/exact_hyper.py) -----------------------------------------

using conv::Planes;

// floor((acc + bias_half) · 2^-shift) per output channel, as the Python side computes it in
// float64 on integers: every sum stays below 2^52 (checked first), so it is exact in any order
Planes<double> exact_conv(const Layer &l, const Planes<double> &x, conv::Pool &pool) {
    double xmax = 0;
    for (double v : x.v) xmax = std::max(xmax, std::fabs(v));
    if (xmax * l.l1 + l.bias_max >= kExactLimit)
        raise(VLMC_DEC_ERR_CORRUPT, "corrupt stream: fixed-point h_s would exceed exact float64 range");
    return conv::conv_layer(l.shape, l.weight, x, pool, l.shuffle, [&](uint32_t o, double v) {
        return std::floor((v + l.bias_half[o]) * l.inv_scale[o]);
    });
}

// -- g_s in float32 (the torch backend's form: sub-pixel convolutions, folded GDN) ----------

Planes<float> synthesis(const vlmc_decoder &d, Planes<float> x, conv::Pool &pool) {
    for (const SynthesisLayer &l : d.synthesis) {
        if (l.kind == kConv) {
            x = conv::conv_layer(l.shape, l.weight, x, pool, l.shuffle,
                                 [&](uint32_t o, float v) { return v + l.bias[o]; });
            continue;
        }
        conv::gdn_in_place(l.shape, l.weight, l.bias, l.inverse, x, pool);  // FoldedGDN
    }
    return x;
}

// the table index of every z element: its channel
std::vector<int32_t> z_indexes(const vlmc_decoder &d, uint32_t hz, uint32_t wz) {
    const size_t plane = size_t(hz) * wz;
    std::vector<int32_t> idx(size_t(d.N) * plane);
    for (size_t k = 0; k < idx.size(); ++k) idx[k] = int32_t(k / plane);
    return idx;
}

// z symbols (around the medians) → the exact h_s's output: 2·M planes (scales ‖ means) of
// integers with 12 fractional bits. ẑ = symbol + median in float32, then its fixed-point form.
Planes<double> hyper_parameters(const vlmc_decoder &d, const int32_t *z_sym, uint32_t hz, uint32_t wz,
                                conv::Pool &pool) {
    const size_t plane = size_t(hz) * wz, n_z = size_t(d.N) * plane;
    Planes<double> x{d.N, hz, wz, conv::Buffer<double>(n_z)};
    for (size_t k = 0; k < n_z; ++k) {
        const float z_hat = float(z_sym[k]) + d.medians[k / plane];
        x.v[k] = std::nearbyint(double(z_hat) * kActScale);  // round half to even, as torch.round
    }
    for (const Layer &l : d.layers) {
        if (l.kind == kConv) {
            x = exact_conv(l, x, pool);
        } else {
            const size_t plane = size_t(x.h) * x.w;
            const bool leaky = l.kind == kLeaky;
            conv::parallel_for(x.c, pool, [&](uint32_t c0, uint32_t c1) {
                for (double *v = x.v.data() + c0 * plane, *end = x.v.data() + c1 * plane; v != end; ++v)
                    if (*v < 0) *v = leaky ? std::floor(*v * kLeakyNum / kLeakyDen) : 0.0;
            });
        }
    }
    if (x.c != 2 * d.M || x.h != 4 * hz || x.w != 4 * wz) raise(VLMC_DEC_ERR_INTERNAL, "h_s output has the wrong shape");
    return x;
}

// scales (the first M planes of h_s's output) → scale-table indexes: the first i with
// σ ≤ bounds[i], else the last (search.hpp; std::lower_bound took 3.5–5 ms of a Kodak image's
// 33–55 ms latents here), the planes in parallel
std::vector<int32_t> scale_indexes(const vlmc_decoder &d, const Planes<double> &params, conv::Pool &pool) {
    const size_t plane = size_t(params.h) * params.w;
    std::vector<int32_t> idx(size_t(d.M) * plane);
    const double *bounds = d.bounds.data();
    const size_t n = d.bounds.size();
    conv::parallel_for(d.M, pool, [&](uint32_t c0, uint32_t c1) {
        for (size_t k = size_t(c0) * plane; k < size_t(c1) * plane; ++k) {
            const double sigma = std::max(params.v[k] / kActScale, d.scale_bound);
            idx[k] = int32_t(vlmc::first_not_below(bounds, n, sigma));
        }
    });
    return idx;
}

// A (inverse) gain of the quality stored as q100 = round(quality · 100), for channel c:
// interpolated geometrically between the anchor levels in float32 (HyperpriorModel.gains), from
// the level as level_of_quality computes it in float64, then a float32 tensor
// (hyperprior.level_neighbours). Within float rounding of torch's exp/log (a float network reads
// it: g_s on decoding, the caller's h_a on encoding).
struct GainInterpolation {
    uint32_t lo = 0, hi = 0;
    float t = 0;
    GainInterpolation(uint32_t K, uint32_t q100) {
        float level = float((q100 / 100.0) / 100.0 * (K - 1));
        level = std::min(std::max(level, 0.0f), float(K - 1));
        lo = std::min<uint32_t>(uint32_t(std::floor(level)), K >= 2 ? K - 2 : 0);
        hi = std::min<uint32_t>(lo + 1, K - 1);
        t = level - float(lo);
    }
    float operator()(const std::vector<float> &table, uint32_t M, uint32_t c) const {
        return std::exp((1 - t) * std::log(table[size_t(lo) * M + c]) + t * std::log(table[size_t(hi) * M + c]));
    }
};

// dst[c][k] = src[c][k] · the (inverse) gain of quality q100 for channel c, in float32, for M
// planes of `plane` values (src may be dst)
void apply_gain(const vlmc_decoder &d, const std::vector<float> &table, uint32_t q100, size_t plane, const float *src,
                float *dst) {
    const GainInterpolation gain(d.K, q100);
    for (uint32_t c = 0; c < d.M; ++c) {
        const float g = gain(table, d.M, c);
        for (size_t k = 0; k < plane; ++k) dst[c * plane + k] = src[c * plane + k] * g;
    }
}

// y chunks whose rANS start no encoder writes fail before the exact h_s, whose cost a hostile
// stream made a decoder pay first (62 KB at 8000x8000: 3.8 s, 1.3 GB); as Codec._latents
// (rans.check_chunk_starts). Each chunk opens with 2 little-endian 4-byte states in [2^23, 2^31)
// (kernels/rans/rans.hpp: kNumStates, kStateLower); the words are the rANS decoder's own.
void check_chunk_starts(const uint8_t *data, const std::vector<size_t> &sizes) {
    constexpr size_t kStates = 2, kHeader = 4 * kStates;
    constexpr uint32_t kLower = 1u << 23, kUpper = kLower << 8;
    for (size_t i = 0; i < sizes.size(); data += sizes[i], ++i) {
        const std::string what = "corrupt stream: y payload does not decode (rANS chunk " + std::to_string(i);
        if (sizes[i] < kHeader)
            raise(VLMC_DEC_ERR_CORRUPT, what + " has " + std::to_string(sizes[i]) + " bytes, fewer than its " +
                                            std::to_string(kHeader) + "-byte header)");
        for (size_t k = 0; k < kStates; ++k) {
            const uint8_t *p = data + 4 * k;
            const uint32_t x = uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
            if (x < kLower || x >= kUpper) raise(VLMC_DEC_ERR_CORRUPT, what + " is corrupt: initial state out of range)");
        }
    }
}

void decode_latents(const vlmc_decoder &d, const Parsed &s, uint32_t flags, conv::Pool &pool, float *out) {
    const vlmc_stream_info &info = s.info;
    const uint32_t hz = info.padded_height / 64, wz = info.padded_width / 64;
    const uint32_t hy = info.latent_height, wy = info.latent_width;
    // z: one table per channel
    const size_t n_z = size_t(d.N) * hz * wz;
    const std::vector<int32_t> z_idx = z_indexes(d, hz, wz);
    std::vector<int32_t> z_sym(n_z);
    if (vlmc_rans_decode(d.z.native, s.z_data, s.z_sizes.data(), s.z_sizes.size(), z_idx.data(), n_z, 1,
                         z_sym.data()) != VLMC_RANS_OK)
        raise(VLMC_DEC_ERR_CORRUPT, std::string("corrupt stream: z payload does not decode (") +
                                        vlmc_rans_last_error() + ")");
    check_chunk_starts(s.y_data, s.y_sizes);
    const Planes<double> params = hyper_parameters(d, z_sym.data(), hz, wz, pool);
    if (params.h != hy || params.w != wy) raise(VLMC_DEC_ERR_INTERNAL, "h_s output has the wrong shape");
    const size_t n_y = size_t(d.M) * hy * wy;
    const std::vector<int32_t> y_idx = scale_indexes(d, params, pool);
    std::vector<int32_t> y_sym(n_y);
    if (vlmc_rans_decode(d.y.native, s.y_data, s.y_sizes.data(), s.y_sizes.size(), y_idx.data(), n_y, int(pool.size()),
                         y_sym.data()) != VLMC_RANS_OK)
        raise(VLMC_DEC_ERR_CORRUPT, std::string("corrupt stream: y payload does not decode (") +
                                        vlmc_rans_last_error() + ")");
    const double *means = params.v.data() + n_y;
    for (size_t k = 0; k < n_y; ++k) out[k] = float(double(y_sym[k]) + means[k] / kActScale);
    if (flags & VLMC_DEC_RAW) return;
    // the inverse gain of the stream's quality; g_s is a float network, so an ULP here is harmless
    apply_gain(d, d.inv_gain, s.quality_x100, size_t(hy) * wy, out, out);
}

// -- the consumer-scale upsampling (vlmcodec.resample.upscale: torch's bicubic, A = −0.75,
// align_corners=False, edge rows and columns repeated), clamped, × 255, rounded into HWC uint8

// v in [0, 255] rounded half to even (std::nearbyint in the default rounding mode, as
// torch.round): adding and subtracting 2^23 leaves v's integer part so rounded, without a libm
// call per pixel; exact for 0 <= v < 2^22 where float arithmetic is float (FLT_EVAL_METHOD 0)
// and not reassociated (the build has no -ffast-math). A NaN (the output of a damaged model: the
// clamps before this keep it) becomes 0, where its conversion would be undefined.
inline uint8_t to_byte(float v) {
    v = v >= 0.0f ? v : 0.0f;
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    constexpr float kShift = 8388608.0f;
    return uint8_t((v + kShift) - kShift);
#else
    return uint8_t(std::nearbyint(v));
#endif
}

// whether rows [r0, r1) of each of x's planes hold only finite values (a band's own rows: its
// halo rows are another band's own)
bool own_rows_finite(const Planes<float> &x, uint32_t r0, uint32_t r1, conv::Pool &pool) {
    std::atomic<bool> finite{true};
    conv::parallel_for(r1 - r0, pool, [&](uint32_t a, uint32_t b) {
        bool ok = true;
        for (uint32_t c = 0; c < x.c; ++c) {
            const float *row = x.v.data() + (size_t(c) * x.h + r0 + a) * x.w;
            for (size_t i = 0, n = size_t(b - a) * x.w; i < n; ++i) ok &= std::isfinite(row[i]);
        }
        if (!ok) finite.store(false, std::memory_order_relaxed);
    });
    return finite.load();
}

void cubic_weights(float t, float w[4]) {
    constexpr float A = -0.75f;
    auto near = [&](float x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };       // |x| ≤ 1
    auto far = [&](float x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };  // 1 < |x| < 2
    w[0] = far(t + 1), w[1] = near(t), w[2] = near(1 - t), w[3] = far(2 - t);
}

void upscale_bicubic(const float *src, uint32_t h, uint32_t w, uint32_t out_h, uint32_t out_w, conv::Pool &pool,
                     uint8_t *rgb) {
    const float sy = float(h) / float(out_h), sx = float(w) / float(out_w);
    auto clamp_index = [](int64_t i, uint32_t n) { return size_t(std::min<int64_t>(std::max<int64_t>(i, 0), n - 1)); };
    // per output column: its 4 source columns (clamped) and their weights
    std::vector<size_t> cols(size_t(out_w) * 4);
    std::vector<float> wx(size_t(out_w) * 4);
    for (uint32_t ox = 0; ox < out_w; ++ox) {
        const float real = sx * (ox + 0.5f) - 0.5f, base = std::floor(real);
        cubic_weights(real - base, &wx[size_t(ox) * 4]);
        for (int i = 0; i < 4; ++i) cols[size_t(ox) * 4 + i] = clamp_index(int64_t(base) - 1 + i, w);
    }
    // separable, rows first: every source row resampled to out_w once, then each output pixel is
    // the 4 rows' weighted sum; the same float operations in the same order as one 4x4 sum
    std::vector<float> across(size_t(3) * h * out_w);
    conv::parallel_for(3 * h, pool, [&](uint32_t r0, uint32_t r1) {
        for (uint32_t r = r0; r < r1; ++r) {
            const float *row = src + size_t(r) * w;
            float *dst = across.data() + size_t(r) * out_w;
            for (uint32_t ox = 0; ox < out_w; ++ox) {
                const float *wxo = &wx[size_t(ox) * 4];
                const size_t *c = &cols[size_t(ox) * 4];
                float v = 0;
                for (int i = 0; i < 4; ++i) v += wxo[i] * row[c[i]];
                dst[ox] = v;
            }
        }
    });
    conv::parallel_for(out_h, pool, [&](uint32_t r0, uint32_t r1) {
        for (uint32_t oy = r0; oy < r1; ++oy) {
            const float real = sy * (oy + 0.5f) - 0.5f, base = std::floor(real);
            float wy[4];
            cubic_weights(real - base, wy);
            for (uint32_t c = 0; c < 3; ++c) {
                const float *rows[4];
                for (int j = 0; j < 4; ++j)
                    rows[j] = across.data() + (size_t(c) * h + clamp_index(int64_t(base) - 1 + j, h)) * out_w;
                for (uint32_t ox = 0; ox < out_w; ++ox) {
                    float v = 0;
                    for (int j = 0; j < 4; ++j) v += wy[j] * rows[j][ox];
                    v = std::min(std::max(v, 0.0f), 1.0f) * 255.0f;
                    rgb[(size_t(oy) * out_w + ox) * 3 + c] = to_byte(v);
                }
            }
        }
    });
}

// -- the antialiased downscale (vlmcodec.resample.resize when shrinking: torch's bicubic with
// antialias=True, its a = −0.5 kernel stretched over the scale, taps normalised), clamped, × 255,
// rounded into HWC uint8. Widths first, then heights, each output a float sum in tap order, as
// torch's separable pass; the weights as torch computes them (float; its x86-64 build contracts
// the kernel's multiply-adds into FMAs, hence std::fma: the weights then agree exactly).

struct AATaps {
    std::vector<uint32_t> first, count;
    std::vector<float> weight;  // [out][width]
    uint32_t width = 0;
};

float aa_cubic(float x) {
    constexpr float A = -0.5f;
    x = std::fabs(x);
    if (x < 1.0f) return std::fma(std::fma(A + 2.0f, x, -(A + 3.0f)) * x, x, 1.0f);
    if (x < 2.0f) return std::fma(std::fma(std::fma(A, x, -5.0f * A), x, 8.0f * A), x, -4.0f * A);
    return 0.0f;
}

AATaps aa_taps(uint32_t in, uint32_t out) {
    const float scale = float(in) / float(out), support = scale >= 1.0f ? 2.0f * scale : 2.0f;
    const float invscale = scale >= 1.0f ? float(1.0 / double(scale)) : 1.0f;
    AATaps t;
    t.width = uint32_t(std::ceil(support)) * 2 + 1;
    t.first.resize(out), t.count.resize(out), t.weight.assign(size_t(out) * t.width, 0.0f);
    for (uint32_t i = 0; i < out; ++i) {
        const float center = float(double(scale) * (i + 0.5));
        const int64_t lo = std::max<int64_t>(int64_t(double(center - support) + 0.5), 0);
        const int64_t hi = std::min<int64_t>(int64_t(double(center + support) + 0.5), in);
        const uint32_t n = uint32_t(std::clamp<int64_t>(hi - lo, 0, t.width));
        float *w = &t.weight[size_t(i) * t.width], total = 0.0f;
        for (uint32_t j = 0; j < n; ++j) {
            w[j] = aa_cubic(float((double(float(lo + j) - center) + 0.5) * double(invscale)));
            total += w[j];
        }
        if (total != 0.0f)
            for (uint32_t j = 0; j < n; ++j) w[j] /= total;
        t.first[i] = uint32_t(lo), t.count[i] = n;
    }
    return t;
}

// The downscale in two passes: rows(c, y, row) resamples one clamped row of the coded image
// across (any order, any thread; decode_image feeds it each g_s band's rows as they come, so the
// coded image is never kept whole), finish() resamples the columns into HWC uint8
class AntialiasedDownscale {
  public:
    AntialiasedDownscale(uint32_t h, uint32_t w, uint32_t out_h, uint32_t out_w)
        : h_(h), out_h_(out_h), out_w_(out_w), tx_(aa_taps(w, out_w)), ty_(aa_taps(h, out_h)),
          across_(size_t(3) * h * out_w) {}

    void row(uint32_t c, uint32_t y, const float *src) {
        float *dst = across_.data() + (size_t(c) * h_ + y) * out_w_;
        for (uint32_t ox = 0; ox < out_w_; ++ox) {
            const float *s = src + tx_.first[ox], *wt = &tx_.weight[size_t(ox) * tx_.width];
            float v = s[0] * wt[0];
            for (uint32_t j = 1; j < tx_.count[ox]; ++j) v += s[j] * wt[j];
            dst[ox] = v;
        }
    }

    // into HWC uint8: each value clamped to [0, top], × scale, rounded (a decoder's [0, 1] floats:
    // top 1, scale 255; an encoder's 0..255 pixels: top 255, scale 1)
    void finish(conv::Pool &pool, uint8_t *rgb, float top = 1.0f, float scale = 255.0f) const {
        conv::parallel_for(out_h_, pool, [&](uint32_t r0, uint32_t r1) {
            for (uint32_t oy = r0; oy < r1; ++oy) {
                const float *wt = &ty_.weight[size_t(oy) * ty_.width];
                for (uint32_t c = 0; c < 3; ++c) {
                    const float *s = across_.data() + (size_t(c) * h_ + ty_.first[oy]) * out_w_;
                    for (uint32_t ox = 0; ox < out_w_; ++ox) {
                        float v = s[ox] * wt[0];
                        for (uint32_t j = 1; j < ty_.count[oy]; ++j) v += s[size_t(j) * out_w_ + ox] * wt[j];
                        v = std::min(std::max(v, 0.0f), top) * scale;
                        rgb[(size_t(oy) * out_w_ + ox) * 3 + c] = to_byte(v);
                    }
                }
            }
        });
    }

  private:
    uint32_t h_, out_h_, out_w_;
    AATaps tx_, ty_;
    std::vector<float> across_;  // [3][h][out_w]
};

// a consumer's short_side: 0 (the original size) or at least kMinShortSide
void check_short_side(uint32_t short_side) {
    if (short_side != 0 && short_side < kMinShortSide)
        raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "short_side must be 0 or at least " + std::to_string(kMinShortSide) +
                                                 ", got " + std::to_string(short_side));
}

// The size a consumer of short_side px sees (vlmcodec.resample.coded_size: the shorter side
// scaled to short_side, each side rounded half to even, at least 1; never above the original)
std::pair<uint32_t, uint32_t> consumer_size(uint32_t h, uint32_t w, uint32_t short_side) {
    check_short_side(short_side);
    if (short_side == 0 || std::min(h, w) <= short_side) return {h, w};
    const double s = double(short_side) / double(std::min(h, w));
    return {std::max(1u, uint32_t(std::nearbyint(h * s))), std::max(1u, uint32_t(std::nearbyint(w * s)))};
}

// A decoder loaded from a decoder-model file's bytes (load_model's checks)
vlmc_decoder *decoder_from(const uint8_t *bytes, size_t size) {
    auto d = std::make_unique<vlmc_decoder>();
    load_model(*d, bytes, size);
    return d.release();
}

// A call's num_threads: 0 → up to 4 (the machine's), else as given; 1..256
int threads_for(int num_threads) {
    if (num_threads < 0 || num_threads > 256) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "num_threads must be in 0..256");
    return num_threads ? num_threads : int(std::min(4u, std::max(1u, std::thread::hardware_concurrency())));
}

}  // namespace

extern "C" {

uint32_t vlmc_decoder_stream_version(void) { return kStreamVersion; }
uint32_t vlmc_decoder_model_version(void) { return kModelVersion; }
const char *vlmc_decoder_vector_isa(void) { return vlmc::conv::vector_isa(); }
const char *vlmc_decoder_last_error(void) { return g_last_error.c_str(); }

int vlmc_decoder_open(const char *path, vlmc_decoder **out) {
    if (out == nullptr || path == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "path or out is null");
    *out = nullptr;
    return guarded([&] { try {
        std::FILE *f = std::fopen(path, "rb");
        if (f == nullptr)  // (the reason too: "cannot open X" said nothing of a missing file or a permission)
            raise(VLMC_DEC_ERR_BAD_MODEL_FILE, std::string("cannot open ") + path + ": " + std::strerror(errno));
        std::vector<uint8_t> bytes;
        uint8_t buf[1 << 16];
        size_t got;
        bool checked = false;  // the magic first: a device such as /dev/zero is refused at once, not read for ever
        while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) {
            bytes.insert(bytes.end(), buf, buf + got);
            if (!checked && bytes.size() >= 16) {
                checked = true;
                try {
                    require_model_magic(bytes.data(), bytes.size());
                } catch (...) {
                    std::fclose(f);
                    throw;
                }
            }
        }
        const bool bad = std::ferror(f);
        std::fclose(f);
        if (bad) raise(VLMC_DEC_ERR_BAD_MODEL_FILE, std::string("cannot read ") + path);
        *out = decoder_from(bytes.data(), bytes.size());
    } catch (const Error &e) {  // what is wrong with the file, named (a host opening several could not tell)
        const std::string what = e.what();
        if (what.rfind("cannot ", 0) == 0) throw;
        raise(e.code, std::string(path) + ": " + what);
    } });
}

int vlmc_decoder_open_memory(const uint8_t *data, size_t size, vlmc_decoder **out) {
    if (out == nullptr || (data == nullptr && size > 0)) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "data or out is null");
    *out = nullptr;
    return guarded([&] { *out = decoder_from(data, size); });
}

void vlmc_decoder_free(vlmc_decoder *decoder) { delete decoder; }

int vlmc_decoder_fingerprints(const vlmc_decoder *decoder, uint8_t fingerprint[8], uint8_t stream_fingerprint[8]) {
    if (decoder == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder is null");
    if (fingerprint) std::memcpy(fingerprint, decoder->fingerprint, 8);
    if (stream_fingerprint) std::memcpy(stream_fingerprint, decoder->stream_fingerprint, 8);
    g_last_error.clear();
    return VLMC_DEC_OK;
}

int vlmc_decoder_set_max_pixels(vlmc_decoder *decoder, uint64_t max_pixels) {
    if (decoder == nullptr || max_pixels == 0)
        return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder is null or max_pixels is 0");
    decoder->max_pixels = max_pixels;
    g_last_error.clear();
    return VLMC_DEC_OK;
}

int vlmc_decoder_set_band_pixels(vlmc_decoder *decoder, uint64_t band_pixels) {
    if (decoder == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder is null");
    decoder->band_pixels = band_pixels;
    g_last_error.clear();
    return VLMC_DEC_OK;
}

int vlmc_decoder_set_cache_bytes(vlmc_decoder *decoder, uint64_t cache_bytes) {
    if (decoder == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder is null");
    decoder->blocks.set_limit(size_t(std::min<uint64_t>(cache_bytes, SIZE_MAX)));
    g_last_error.clear();
    return VLMC_DEC_OK;
}

int vlmc_decoder_cached_bytes(const vlmc_decoder *decoder, uint64_t *cached_bytes) {
    if (decoder == nullptr || cached_bytes == nullptr)
        return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder or cached_bytes is null");
    *cached_bytes = decoder->blocks.held();
    g_last_error.clear();
    return VLMC_DEC_OK;
}

int vlmc_decoder_stream_info(const vlmc_decoder *decoder, const uint8_t *data, size_t size, vlmc_stream_info *info) {
    if (decoder == nullptr || info == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder or info is null");
    return guarded([&] { *info = parse(*decoder, data, size).info; });
}

int vlmc_decoder_latents(const vlmc_decoder *decoder, const uint8_t *data, size_t size, uint32_t flags,
                         int num_threads, float *out, size_t out_count) {
    if (decoder == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder is null");
    return guarded([&] {
        const int threads = threads_for(num_threads);  // the arguments first, then the stream
        if (flags & ~VLMC_DEC_RAW) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "unknown flags");
        const Parsed s = parse(*decoder, data, size);
        const size_t need = size_t(s.info.channels) * s.info.latent_height * s.info.latent_width;
        if (out == nullptr) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "out is null");
        if (out_count < need)
            raise(VLMC_DEC_ERR_BUFFER_TOO_SMALL, "out holds " + std::to_string(out_count) + " floats, the latent needs " +
                                                     std::to_string(need));
        decode_latents(*decoder, s, flags, *Workers(*decoder, threads), out);
    });
}

}  // extern "C"

namespace {

// A stream's image at out_h × out_w: at the coded size as g_s makes it, else resized from its
// clamped float reconstruction as vlmcodec.resample.resize does (bicubic where either side
// grows, antialiased bicubic where both shrink)
void decode_image(const vlmc_decoder *decoder, const Parsed &s, uint32_t out_h, uint32_t out_w, int threads,
                  uint8_t *rgb, size_t rgb_size) {
    const vlmc_stream_info &info = s.info;
    const bool resized = out_h != info.coded_height || out_w != info.coded_width;
    const bool upscale = resized && (out_h > info.coded_height || out_w > info.coded_width);
    const size_t need = size_t(out_w) * out_h * 3;
    if (rgb == nullptr) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "rgb is null");
    if (rgb_size < need)
        raise(VLMC_DEC_ERR_BUFFER_TOO_SMALL, "rgb holds " + std::to_string(rgb_size) + " bytes, the image needs " +
                                                 std::to_string(need));
    const uint32_t hy = info.latent_height, wy = info.latent_width, M = info.channels;
    // not zero-filled: decode_latents writes every value, and a stream whose z fails to decode
    // (a few hundred bytes announcing 8000×8000) then touches none of it (116 MB were filled)
    const std::unique_ptr<float[]> latent(new float[size_t(M) * hy * wy]);
    const Workers pool(*decoder, threads);
    decode_latents(*decoder, s, 0, *pool, latent.get());
    // the coded image, clamped to [0, 1], kept in float when it is still to be upsampled; when
    // it is to be downscaled, its rows are resampled across band by band instead
    std::vector<float> coded(upscale ? size_t(3) * info.coded_height * info.coded_width : 0);
    std::unique_ptr<AntialiasedDownscale> down;
    if (resized && !upscale)
        down = std::make_unique<AntialiasedDownscale>(info.coded_height, info.coded_width, out_h, out_w);
    // g_s in bands of latent rows, each with `halo` rows of context on either side (its
    // receptive field), so that its own rows are computed from the same values as without
    // bands: the same pixels, bit for bit, in a fraction of the memory
    const uint32_t scale = info.padded_height / hy;  // image rows per latent row
    const uint64_t band_pixels = decoder->band_pixels;
    const uint32_t rows = band_pixels == 0 ? hy
                          : uint32_t(std::clamp<uint64_t>(band_pixels / (uint64_t(scale) * scale * wy), 1, hy));
    const uint32_t halo = rows >= hy ? 0 : decoder->synthesis_halo;
    // (a band starting at or below the coded height covers only the padding: none of its rows is
    // kept, so g_s stops there; its row count, last - first, would wrap below zero)
    for (uint32_t b0 = 0; b0 < hy && uint64_t(b0) * scale < info.coded_height; b0 += rows) {
        const uint32_t b1 = std::min(hy, b0 + rows), lo = b0 >= halo ? b0 - halo : 0, hi = std::min(hy, b1 + halo);
        Planes<float> x{M, hi - lo, wy, conv::Buffer<float>(size_t(M) * (hi - lo) * wy)};
        for (uint32_t c = 0; c < M; ++c)
            std::memcpy(x.v.data() + size_t(c) * x.h * wy, latent.get() + (size_t(c) * hy + lo) * wy,
                        size_t(x.h) * wy * sizeof(float));
        x = synthesis(*decoder, std::move(x), *pool);
        if (x.c != 3 || x.h != (hi - lo) * scale || x.w != info.padded_width)
            raise(VLMC_DEC_ERR_INTERNAL, "g_s output has the wrong shape");
        // symbols far beyond an encoder's drive g_s past float32's range: refused as corrupt (as
        // the Python decoder does), where the clamps below made NaN 0 (an all-black image)
        if (!own_rows_finite(x, (b0 - lo) * scale, (b1 - lo) * scale, *pool))
            raise(VLMC_DEC_ERR_CORRUPT, "corrupt stream: its latents drive the synthesis to values that are not "
                                        "finite (symbols far outside what an encoder writes)");
        // this band's rows, clamped and cropped; then × 255 and rounded half to even (as
        // torch.round) into HWC uint8, unless they are still to be resized
        const uint32_t first = b0 * scale, last = std::min(b1 * scale, info.coded_height);
        conv::parallel_for(last - first, *pool, [&](uint32_t r0, uint32_t r1) {
            std::vector<float> clamped(down ? info.coded_width : 0);
            for (uint32_t h = first + r0; h < first + r1; ++h)
                for (uint32_t c = 0; c < 3; ++c) {
                    const float *src = x.v.data() + (size_t(c) * x.h + (h - lo * scale)) * x.w;
                    if (resized) {
                        float *dst = down ? clamped.data()
                                          : coded.data() + (size_t(c) * info.coded_height + h) * info.coded_width;
                        for (uint32_t w = 0; w < info.coded_width; ++w)
                            dst[w] = std::min(std::max(src[w], 0.0f), 1.0f);
                        if (down) down->row(c, h, dst);
                        continue;
                    }
                    uint8_t *dst = rgb + size_t(h) * info.coded_width * 3 + c;
                    for (uint32_t w = 0; w < info.coded_width; ++w)
                        dst[size_t(w) * 3] = to_byte(std::min(std::max(src[w], 0.0f), 1.0f) * 255.0f);
                }
        });
    }
    if (upscale) upscale_bicubic(coded.data(), info.coded_height, info.coded_width, out_h, out_w, *pool, rgb);
    else if (down) down->finish(*pool, rgb);
}

}  // namespace

extern "C" {

int vlmc_decoder_image(const vlmc_decoder *decoder, const uint8_t *data, size_t size, uint32_t flags, int num_threads,
                       uint8_t *rgb, size_t rgb_size) {
    if (decoder == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder is null");
    return guarded([&] {
        const int threads = threads_for(num_threads);  // the arguments first, then the stream
        if (flags & ~VLMC_DEC_CODED_SIZE) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "unknown flags");
        const Parsed s = parse(*decoder, data, size);
        const bool coded = flags & VLMC_DEC_CODED_SIZE;
        decode_image(decoder, s, coded ? s.info.coded_height : s.info.height, coded ? s.info.coded_width : s.info.width,
                     threads, rgb, rgb_size);
    });
}

int vlmc_decoder_consumer_size(const vlmc_stream_info *info, uint32_t short_side, uint32_t *width, uint32_t *height) {
    if (info == nullptr || width == nullptr || height == nullptr)
        return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "info, width or height is null");
    return guarded([&] {
        const auto size = consumer_size(info->height, info->width, short_side);
        *height = size.first, *width = size.second;
    });
}

int vlmc_decoder_image_at(const vlmc_decoder *decoder, const uint8_t *data, size_t size, uint32_t short_side,
                          int num_threads, uint8_t *rgb, size_t rgb_size) {
    if (decoder == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder is null");
    return guarded([&] {
        const int threads = threads_for(num_threads);  // the arguments first, then the stream
        check_short_side(short_side);
        const Parsed s = parse(*decoder, data, size);
        const auto out = consumer_size(s.info.height, s.info.width, short_side);
        decode_image(decoder, s, out.first, out.second, threads, rgb, rgb_size);
    });
}

}  // extern "C"

// -- writing a stream: the entropy stage of Codec.entropy_encode, and container.pack ------------

namespace {

void put_varint(std::vector<uint8_t> &out, uint64_t n) {
    while (n >= 0x80) {
        out.push_back(uint8_t(n & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push_back(uint8_t(n));
}

// quality in [0, 100] as a stream stores it: round(quality · 100), half to even (Python's round)
uint32_t quality_x100(double quality) {
    if (!(quality >= 0.0 && quality <= 100.0))
        raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "quality must be a number in [0, 100]");
    return uint32_t(std::nearbyint(quality * 100.0));
}

// rANS-codes symbols with their tables into num_chunks chunks (appended to payload; their
// lengths to sizes)
void entropy_code(const Table &t, const std::vector<int32_t> &sym, const std::vector<int32_t> &idx, size_t num_chunks,
                  int threads, std::vector<uint8_t> &payload, std::vector<size_t> &sizes) {
    const size_t at = payload.size(), first = sizes.size();
    sizes.resize(first + num_chunks);
    payload.resize(at + vlmc_rans_encode_bound(sym.size(), num_chunks));
    if (vlmc_rans_encode(t.native, sym.data(), idx.data(), sym.size(), num_chunks, threads, payload.data() + at,
                         payload.size() - at, sizes.data() + first) != VLMC_RANS_OK)
        raise(VLMC_DEC_ERR_INTERNAL, std::string("rANS encoding failed: ") + vlmc_rans_last_error());
    size_t total = 0;
    for (size_t c = first; c < sizes.size(); ++c) {
        if (sizes[c] > kMaxChunkBytes) raise(VLMC_DEC_ERR_TOO_LARGE, "a coded chunk exceeds the container's 1 GiB");
        total += sizes[c];
    }
    payload.resize(at + total);
}

struct StreamGeometry {
    uint32_t width, height, coded_width, coded_height, hz, wz, hy, wy;
    size_t n_y, n_z;  // the floats of y (M·hy·wy) and z (N·hz·wz)
};

StreamGeometry check_geometry(const vlmc_decoder &d, uint32_t width, uint32_t height, uint32_t coded_width,
                              uint32_t coded_height) {
    if (width < 1 || height < 1 || width > kMaxDim || height > kMaxDim)
        raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "image size " + std::to_string(width) + "x" + std::to_string(height) +
                                                 " outside 1.." + std::to_string(kMaxDim));
    if (uint64_t(width) * height > d.max_pixels)
        raise(VLMC_DEC_ERR_TOO_LARGE, "image of " + std::to_string(width) + "x" + std::to_string(height) +
                                          " pixels, more than max_pixels=" + std::to_string(d.max_pixels));
    if (coded_width == 0 && coded_height == 0) coded_width = width, coded_height = height;
    if (coded_width < 1 || coded_height < 1 || coded_width > width || coded_height > height)
        raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "coded size " + std::to_string(coded_width) + "x" +
                                                 std::to_string(coded_height) + " must be within 1x1 .. " +
                                                 std::to_string(width) + "x" + std::to_string(height));
    const uint32_t ph = (coded_height + 63) / 64 * 64, pw = (coded_width + 63) / 64 * 64;
    const uint32_t hz = ph / 64, wz = pw / 64, hy = ph / 16, wy = pw / 16;
    return {width, height, coded_width, coded_height, hz, wz, hy, wy, size_t(d.M) * hy * wy, size_t(d.N) * hz * wz};
}

// y_count and z_count checked against what an image coded at g's size has
void check_latent_counts(const vlmc_decoder &d, const StreamGeometry &g, size_t y_count, size_t z_count) {
    if (y_count != g.n_y || z_count != g.n_z)
        raise(VLMC_DEC_ERR_INVALID_ARGUMENT,
              "y holds " + std::to_string(y_count) + " and z " + std::to_string(z_count) + " floats; a " +
                  std::to_string(g.coded_width) + "x" + std::to_string(g.coded_height) + " coded image needs " +
                  std::to_string(g.n_y) + " (" + std::to_string(d.M) + "x" + std::to_string(g.hy) + "x" +
                  std::to_string(g.wy) + ") and " + std::to_string(g.n_z) + " (" + std::to_string(d.N) + "x" +
                  std::to_string(g.hz) + "x" + std::to_string(g.wz) + ")");
}

// What each call handing out a stream does first: clears *out and *out_size (either may be null:
// the caller's argument check names it), then asks `ready` (vlmc_decoder_can_write or
// vlmc_decoder_can_encode) whether this decoder's model file can do it
int start_stream(const vlmc_decoder *decoder, int (*ready)(const vlmc_decoder *), uint8_t **out, size_t *out_size) {
    if (out != nullptr) *out = nullptr;
    if (out_size != nullptr) *out_size = 0;
    return ready(decoder);
}

// A written stream handed to the caller in a malloc'd buffer (vlmc_decoder_free_stream frees it)
void hand_out(const std::vector<uint8_t> &stream, uint8_t **out, size_t *out_size) {
    auto *buf = static_cast<uint8_t *>(std::malloc(stream.size()));
    if (buf == nullptr) raise(VLMC_DEC_ERR_NO_MEMORY, "out of memory");
    std::memcpy(buf, stream.data(), stream.size());
    *out = buf;
    *out_size = stream.size();
}

// The inputs are the caller's network outputs: a non-finite or absurd value is refused, where a
// cast to int32 would otherwise be undefined
constexpr double kMaxSymbol = 1073741824.0;  // 2^30
constexpr double kMaxZSymbol = 16777216.0;  // 2^24: ẑ = symbol + median stays what float32 torch computes

int32_t symbol_of(double v, const char *what, size_t k, double limit = kMaxSymbol) {
    const double r = std::nearbyint(v);  // round half to even, as torch.round
    if (!(std::fabs(r) <= limit))
        raise(VLMC_DEC_ERR_INVALID_ARGUMENT, std::string(what) + "[" + std::to_string(k) + "] is " +
                                                 (std::isfinite(v) ? "too large to code" : "not finite"));
    return int32_t(r);
}

std::vector<uint8_t> write_stream(const vlmc_decoder &d, const float *y, const float *z, const StreamGeometry &g,
                                  uint32_t q100, uint32_t flags, conv::Pool &pool) {
    // z symbols around the medians: round(z − median) in float32, as torch computes it
    const size_t z_plane = size_t(g.hz) * g.wz;
    std::vector<int32_t> z_sym(g.n_z);
    for (size_t k = 0; k < g.n_z; ++k) {
        const float diff = z[k] - d.medians[k / z_plane];
        z_sym[k] = symbol_of(diff, "z", k, kMaxZSymbol);
    }
    std::vector<uint8_t> payload;
    std::vector<size_t> sizes;
    entropy_code(d.z, z_sym, z_indexes(d, g.hz, g.wz), 1, 1, payload, sizes);
    Planes<double> params;
    try {
        params = hyper_parameters(d, z_sym.data(), g.hz, g.wz, pool);
    } catch (const Error &e) {  // the exact-range check speaks of streams; here z is the caller's
        if (e.code != VLMC_DEC_ERR_CORRUPT) throw;
        raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "z is too large for the exact h_s (fixed-point range exceeded)");
    }
    // y symbols: round(y − μ) in float64 (Codec._y_symbols)
    const double *means = params.v.data() + g.n_y;
    std::vector<int32_t> y_sym(g.n_y);
    for (size_t k = 0; k < g.n_y; ++k) y_sym[k] = symbol_of(double(y[k]) - means[k] / kActScale, "y", k);
    entropy_code(d.y, y_sym, scale_indexes(d, params, pool), size_t(num_chunks_for(g.n_y)), int(pool.size()), payload, sizes);
    // the container (container.pack): the rescaled bit follows the coded size
    const bool rescaled = g.coded_width != g.width || g.coded_height != g.height;
    std::vector<uint8_t> out;
    out.reserve(48 + 5 * sizes.size() + payload.size());
    for (const uint8_t b : {uint8_t('V'), uint8_t('L'), uint8_t('M'), uint8_t('C'), uint8_t(kStreamVersion),
                            uint8_t((flags & kFlagPreEdited) | (rescaled ? kFlagRescaled : 0))})
        out.push_back(b);
    for (const uint8_t b : d.stream_fingerprint) out.push_back(b);
    put_varint(out, g.width);
    put_varint(out, g.height);
    if (rescaled) {
        put_varint(out, g.coded_width);
        put_varint(out, g.coded_height);
    }
    out.push_back(uint8_t(q100 & 0xFF));
    out.push_back(uint8_t(q100 >> 8));
    put_varint(out, 1);
    put_varint(out, sizes.size() - 1);
    for (size_t len : sizes) put_varint(out, len);
    const uint32_t crc = crc32_update(crc32_update(0, out.data(), out.size()), payload.data(), payload.size());
    for (int i = 0; i < 4; ++i) out.push_back(uint8_t(crc >> (8 * i)));
    out.insert(out.end(), payload.begin(), payload.end());
    return out;
}

}  // namespace

extern "C" {

int vlmc_decoder_can_write(const vlmc_decoder *decoder) {
    if (decoder == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder is null");
    if (decoder->gain.empty())
        return fail(VLMC_DEC_ERR_BAD_MODEL_FILE, "this decoder-model file (version 1) has no gains: re-export it "
                                                 "with `vlmcodec export --format c-decoder` to write streams");
    g_last_error.clear();
    return VLMC_DEC_OK;
}

int vlmc_decoder_gain(const vlmc_decoder *decoder, double quality, float *gain, size_t count) {
    const int rc = vlmc_decoder_can_write(decoder);
    if (rc != VLMC_DEC_OK) return rc;
    return guarded([&] {
        const uint32_t q100 = quality_x100(quality);
        if (gain == nullptr || count < decoder->M)
            raise(VLMC_DEC_ERR_BUFFER_TOO_SMALL, "gain holds " + std::to_string(gain ? count : 0) + " floats, the model has " +
                                                     std::to_string(decoder->M) + " channels");
        const GainInterpolation at(decoder->K, q100);
        for (uint32_t c = 0; c < decoder->M; ++c) gain[c] = at(decoder->gain, decoder->M, c);
    });
}

int vlmc_decoder_latent_size(const vlmc_decoder *decoder, uint32_t coded_width, uint32_t coded_height,
                             size_t *y_count, size_t *z_count) {
    if (decoder == nullptr || y_count == nullptr || z_count == nullptr)
        return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder, y_count or z_count is null");
    return guarded([&] {
        const StreamGeometry g = check_geometry(*decoder, coded_width, coded_height, coded_width, coded_height);
        *y_count = g.n_y;
        *z_count = g.n_z;
    });
}

int vlmc_decoder_write_stream(const vlmc_decoder *decoder, const float *y, size_t y_count, const float *z,
                              size_t z_count, uint32_t width, uint32_t height, uint32_t coded_width,
                              uint32_t coded_height, double quality, uint32_t flags, int num_threads, uint8_t **out,
                              size_t *out_size) {
    const int rc = start_stream(decoder, vlmc_decoder_can_write, out, out_size);
    if (rc != VLMC_DEC_OK) return rc;
    if (y == nullptr || z == nullptr || out == nullptr || out_size == nullptr)
        return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "y, z, out or out_size is null");
    return guarded([&] {
        const int threads = threads_for(num_threads);
        if (flags & ~VLMC_ENC_PRE_EDITED) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "unknown flags");
        const uint32_t q100 = quality_x100(quality);
        const StreamGeometry g = check_geometry(*decoder, width, height, coded_width, coded_height);
        check_latent_counts(*decoder, g, y_count, z_count);
        hand_out(write_stream(*decoder, y, z, g, q100, flags, *Workers(*decoder, threads)), out, out_size);
    });
}

void vlmc_decoder_free_stream(uint8_t *stream) { std::free(stream); }

}  // extern "C"

// -- rate control: the highest quality whose stream fits a budget (engine/rate_control.py) ------

namespace {

constexpr int kGrid = 100;               // rate_control.GRID: qualities in hundredths
constexpr double kTolerance = 0.1;       // rate_control.DEFAULT_TOLERANCE
constexpr double kSlack = 0.01;          // rate_control.DEFAULT_SLACK
constexpr size_t kMaxProbes = 16;        // rate_control.MAX_PROBES

struct Probe {
    double quality;
    size_t size;
};

// rate_control._interpolate: the quality where log-size reaches target, by inverse quadratic
// interpolation through the three probes nearest the target in log-size, else linearly through
// the bracket; NaN when neither lands strictly inside it
double interpolate(const std::vector<Probe> &probes, double target, int k_lo, size_t size_lo, int k_hi,
                   size_t size_hi) {
    const double q_lo = double(k_lo) / kGrid, q_hi = double(k_hi) / kGrid;
    std::vector<std::pair<double, double>> points;  // (log size, quality), distinct pairs
    for (const Probe &p : probes) {
        const std::pair<double, double> pt{std::log(double(p.size)), p.quality};
        if (std::find(points.begin(), points.end(), pt) == points.end()) points.push_back(pt);
    }
    std::stable_sort(points.begin(), points.end(), [&](const auto &a, const auto &b) {
        return std::fabs(a.first - target) < std::fabs(b.first - target);
    });
    if (points.size() >= 3 && points[0].first != points[1].first && points[0].first != points[2].first &&
        points[1].first != points[2].first) {
        const double a = points[0].first, qa = points[0].second, b = points[1].first, qb = points[1].second,
                     c = points[2].first, qc = points[2].second;
        const double guess = qa * (target - b) * (target - c) / ((a - b) * (a - c)) +
                             qb * (target - a) * (target - c) / ((b - a) * (b - c)) +
                             qc * (target - a) * (target - b) / ((c - a) * (c - b));
        if (q_lo < guess && guess < q_hi) return guess;
    }
    const double t = (target - std::log(double(size_lo))) / (std::log(double(size_hi)) - std::log(double(size_lo)));
    const double guess = q_lo + t * (q_hi - q_lo);
    return q_lo < guess && guess < q_hi ? guess : std::nan("");
}

// What would make a smaller stream than quality k_lo gives at this coded size (the budget error's
// second half, as codec._smaller_stream_hint): a lower quality bound, a lower resolution, or nothing
std::string smaller_stream_hint(int k_lo, const StreamGeometry &g) {
    if (k_lo > 0) {
        char q[32];
        std::snprintf(q, sizeof q, "%g", double(k_lo) / kGrid);
        return std::string("a min_quality below ") + q + " makes smaller streams";
    }
    if (std::min(g.coded_width, g.coded_height) > kMinShortSide)
        return "a smaller coded size (a consumer's scale) makes smaller streams";
    return "this model makes no smaller stream of this image";
}

// rate_control._search over stream_at(k) (the stream at quality k / 100): the stream of the
// highest quality in [k_lo, k_hi] found to fit budget, and its k
template <class StreamAt>
std::pair<std::vector<uint8_t>, int> largest_fitting(StreamAt stream_at, size_t budget, int k_lo, int k_hi,
                                                     const StreamGeometry &g) {
    std::vector<Probe> probes;
    auto probe = [&](int k) {
        std::vector<uint8_t> data = stream_at(k);
        probes.push_back({double(k) / kGrid, data.size()});
        return data;
    };
    std::vector<uint8_t> best = probe(k_hi);
    if (best.size() <= budget) return {std::move(best), k_hi};
    size_t size_hi = best.size();
    best = probe(k_lo);
    size_t size_lo = best.size();
    if (size_lo > budget) {
        char q[32];
        std::snprintf(q, sizeof q, "%g", double(k_lo) / kGrid);
        raise(VLMC_DEC_ERR_BUDGET, std::string("even quality ") + q + " needs " + std::to_string(size_lo) +
                                       " bytes, over the budget of " + std::to_string(budget) + " bytes; " +
                                       smaller_stream_hint(k_lo, g));
    }
    const int step = std::max(1, int(std::nearbyint(kTolerance * kGrid)));
    const double full = double(budget) * (1.0 - kSlack);
    const double target = std::log(double(budget) * (1.0 - kSlack / 2));  // inside the window [full, budget]
    bool bisect = false;
    while (k_hi - k_lo > step && double(size_lo) < full && probes.size() < kMaxProbes) {
        const int width = k_hi - k_lo;
        const double guess = bisect || size_hi <= size_lo ? std::nan("")
                                                           : interpolate(probes, target, k_lo, size_lo, k_hi, size_hi);
        int k = std::isnan(guess) ? (k_lo + k_hi) / 2 : int(std::nearbyint(guess * kGrid));
        k = std::min(std::max(k, k_lo + 1), k_hi - 1);
        std::vector<uint8_t> data = probe(k);
        if (data.size() <= budget) {
            k_lo = k, size_lo = data.size(), best = std::move(data);
        } else {
            k_hi = k, size_hi = data.size();
        }
        // an interpolation that did not halve the bracket and landed on the same side as the
        // probe before (creeping up on the target from one side) is followed by a bisection
        const bool same_side = (probes.back().size <= budget) == (probes[probes.size() - 2].size <= budget);
        bisect = !bisect && same_side && double(k_hi - k_lo) > width / 2.0;
    }
    return {std::move(best), k_lo};
}

// A rate-control call's arguments checked: the budget, and the quality bounds in hundredths
std::pair<int, int> search_bounds(size_t max_bytes, double min_quality, double max_quality) {
    if (max_bytes == 0) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "max_bytes must be at least 1");
    const uint32_t lo = quality_x100(min_quality), hi = quality_x100(max_quality);
    if (lo > hi) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "min_quality is above max_quality");
    return {int(lo), int(hi)};
}

}  // namespace

extern "C" {

int vlmc_decoder_write_stream_within(const vlmc_decoder *decoder, const float *y_raw, size_t y_count, size_t z_count,
                                     vlmc_hyper_analysis h_a, void *user, uint32_t width, uint32_t height,
                                     uint32_t coded_width, uint32_t coded_height, size_t max_bytes,
                                     double min_quality, double max_quality, uint32_t flags, int num_threads,
                                     uint8_t **out, size_t *out_size, double *quality) {
    const int rc = start_stream(decoder, vlmc_decoder_can_write, out, out_size);
    if (rc != VLMC_DEC_OK) return rc;
    if (y_raw == nullptr || h_a == nullptr || out == nullptr || out_size == nullptr)
        return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "y_raw, h_a, out or out_size is null");
    return guarded([&] {
        const int threads = threads_for(num_threads);
        if (flags & ~VLMC_ENC_PRE_EDITED) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "unknown flags");
        const auto bounds = search_bounds(max_bytes, min_quality, max_quality);
        const StreamGeometry g = check_geometry(*decoder, width, height, coded_width, coded_height);
        check_latent_counts(*decoder, g, y_count, z_count);
        const Workers pool(*decoder, threads);
        std::vector<float> y(y_count), z(z_count);
        auto stream_at = [&](int k) {
            // y = g_a output · gain(k / 100) in float32, z = the caller's h_a(y), then the stream
            apply_gain(*decoder, decoder->gain, uint32_t(k), size_t(g.hy) * g.wy, y_raw, y.data());
            const int status = h_a(user, y.data(), y_count, z.data(), z_count);
            if (status != 0)
                raise(VLMC_DEC_ERR_CALLBACK, "the h_a callback failed (returned " + std::to_string(status) + ")");
            return write_stream(*decoder, y.data(), z.data(), g, uint32_t(k), flags, *pool);
        };
        const auto found = largest_fitting(stream_at, max_bytes, bounds.first, bounds.second, g);
        hand_out(found.first, out, out_size);
        if (quality != nullptr) *quality = found.second / 100.0;
    });
}

}  // extern "C"

// -- encoding images: the encoder's networks here (encoder.hpp), then write_stream --------------

namespace {

// The geometry of a width × height image coded at a consumer's short_side (0: its own size): its
// size and max_pixels checked before any resizing
StreamGeometry image_geometry(const vlmc_decoder &d, uint32_t width, uint32_t height, uint32_t short_side) {
    check_geometry(d, width, height, width, height);
    const auto coded = consumer_size(height, width, short_side);
    return check_geometry(d, width, height, coded.second, coded.first);
}

// An image's quality-independent part of encoding (Codec.prepare, analyse_unscaled): its
// geometry, whether the pre-editor ran, and g_a's output before the gain
struct Analysed {
    StreamGeometry g;
    bool pre_edited = false;
    Planes<float> y_raw;
};

// Where an image's pixels are: row y's first byte at top + y · stride, a pixel every `step` bytes,
// its red, green and blue at offset[0 .. 2]
struct Source {
    const uint8_t *top = nullptr;
    ptrdiff_t stride = 0;
    uint32_t width = 0, height = 0, step = 3, offset[3] = {0, 1, 2};

    const uint8_t *row(uint32_t y) const { return top + ptrdiff_t(y) * stride; }
    static Source tight_rgb(const uint8_t *rgb, uint32_t width, uint32_t height) {
        if (rgb == nullptr) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "rgb is null");
        return Source{rgb, ptrdiff_t(width) * 3, width, height, 3, {0, 1, 2}};
    }
};

Source source_of(const vlmc_pixels *p) {
    if (p == nullptr || p->data == nullptr) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "pixels or pixels->data is null");
    if (p->format > VLMC_PIXELS_BGRA8)
        raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "unknown pixel format " + std::to_string(p->format));
    const uint32_t step = p->format == VLMC_PIXELS_RGBA8 || p->format == VLMC_PIXELS_BGRA8 ? 4 : 3;
    const bool bgr = p->format == VLMC_PIXELS_BGR8 || p->format == VLMC_PIXELS_BGRA8;
    const ptrdiff_t tight = ptrdiff_t(p->width) * step;
    const ptrdiff_t stride = p->row_stride ? p->row_stride : tight;
    if (stride > -tight && stride < tight)  // (not |stride| < tight: −PTRDIFF_MIN overflows)
        raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "row_stride " + std::to_string(p->row_stride) + " is shorter than a row (" +
                                                 std::to_string(tight) + " bytes)");
    return Source{p->data, stride, p->width, p->height, step, {bgr ? 2u : 0u, 1u, bgr ? 0u : 2u}};
}

Analysed analyse(const vlmc_decoder &d, const Source &image, uint32_t short_side, uint32_t flags, conv::Pool &pool) {
    if (flags & ~VLMC_ENC_NO_PRE_EDIT) raise(VLMC_DEC_ERR_INVALID_ARGUMENT, "unknown flags");
    const uint32_t width = image.width, height = image.height;
    Analysed a;
    a.g = image_geometry(d, width, height, short_side);
    const uint32_t ch = a.g.coded_height, cw = a.g.coded_width;
    // at a consumer's scale: resample.downscale (antialiased bicubic on 0..255, clamped, rounded)
    std::vector<uint8_t> small;
    Source src = image;
    if (ch != height || cw != width) {
        AntialiasedDownscale down(height, width, ch, cw);
        conv::parallel_for(3 * height, pool, [&](uint32_t k0, uint32_t k1) {
            std::vector<float> row(width);
            for (uint32_t k = k0; k < k1; ++k) {
                const uint32_t c = k / height, y = k % height;
                const uint8_t *p = image.row(y) + image.offset[c];
                for (uint32_t x = 0; x < width; ++x) row[x] = float(p[size_t(x) * image.step]);
                down.row(c, y, row.data());
            }
        });
        small.resize(size_t(ch) * cw * 3);
        down.finish(pool, small.data(), 255.0f, 1.0f);
        src = Source::tight_rgb(small.data(), cw, ch);
    }
    // [3][ph][pw] in [0, 1], the edges repeated (image_io.pad_edge), / 255 as torch divides
    const uint32_t ph = a.g.hz * 64, pw = a.g.wz * 64;
    Planes<float> x{3, ph, pw, conv::Buffer<float>(size_t(3) * ph * pw)};
    conv::parallel_for(3 * ph, pool, [&](uint32_t k0, uint32_t k1) {
        for (uint32_t k = k0; k < k1; ++k) {
            const uint32_t c = k / ph, y = k % ph;
            const uint8_t *row = src.row(std::min(y, ch - 1)) + src.offset[c];
            float *dst = x.v.data() + size_t(k) * pw;
            for (uint32_t j = 0; j < pw; ++j) dst[j] = float(row[size_t(std::min(j, cw - 1)) * src.step]) / 255.0f;
        }
    });
    const vlmc::encoder::Networks &net = *d.encoder;
    a.pre_edited = net.pre != nullptr && !(flags & VLMC_ENC_NO_PRE_EDIT);
    if (a.pre_edited) x = vlmc::encoder::pre_edit(*net.pre, x, d.band_pixels, pool);
    a.y_raw = vlmc::encoder::analysis(net, x, d.band_pixels, pool);
    if (a.y_raw.c != d.M || a.y_raw.h != a.g.hy || a.y_raw.w != a.g.wy)
        raise(VLMC_DEC_ERR_INTERNAL, "g_a output has the wrong shape");
    return a;
}

// (y = y_raw · gain(q100), z = h_a(y)) into y and z
void scaled_latents(const vlmc_decoder &d, const Analysed &a, uint32_t q100, conv::Pool &pool, float *y, float *z) {
    Planes<float> yp{d.M, a.g.hy, a.g.wy, conv::Buffer<float>(a.g.n_y)};
    apply_gain(d, d.gain, q100, size_t(a.g.hy) * a.g.wy, a.y_raw.v.data(), yp.v.data());
    std::memcpy(y, yp.v.data(), a.g.n_y * sizeof(float));
    const Planes<float> zp = vlmc::encoder::run(d.encoder->h_a, std::move(yp), pool);
    if (zp.v.size() != a.g.n_z) raise(VLMC_DEC_ERR_INTERNAL, "h_a output has the wrong shape");
    std::memcpy(z, zp.v.data(), a.g.n_z * sizeof(float));
}

// An analysed image's stream at q100 (y and z: scratch of the latents' sizes)
std::vector<uint8_t> stream_of(const vlmc_decoder &d, const Analysed &a, uint32_t q100, conv::Pool &pool,
                               std::vector<float> &y, std::vector<float> &z) {
    y.resize(a.g.n_y), z.resize(a.g.n_z);
    scaled_latents(d, a, q100, pool, y.data(), z.data());
    return write_stream(d, y.data(), z.data(), a.g, q100, a.pre_edited ? VLMC_ENC_PRE_EDITED : 0, pool);
}

// What each image-encoding call does first: clears its outputs, checks the decoder and them
int start_encoding(const vlmc_decoder *decoder, uint8_t **out, size_t *out_size) {
    const int rc = start_stream(decoder, vlmc_decoder_can_encode, out, out_size);
    if (rc != VLMC_DEC_OK) return rc;
    if (out == nullptr || out_size == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "out or out_size is null");
    return VLMC_DEC_OK;
}

// encode_image / encode_pixels: the image of source() (its arguments checked inside the guard)
template <class GetSource>
int encode(const vlmc_decoder *decoder, GetSource source, double quality, uint32_t short_side, uint32_t flags,
           int num_threads, uint8_t **out, size_t *out_size) {
    const int rc = start_encoding(decoder, out, out_size);
    if (rc != VLMC_DEC_OK) return rc;
    return guarded([&] {
        const int threads = threads_for(num_threads);
        const uint32_t q100 = quality_x100(quality);
        const Source image = source();
        const Workers pool(*decoder, threads);
        const Analysed a = analyse(*decoder, image, short_side, flags, *pool);
        std::vector<float> y, z;
        hand_out(stream_of(*decoder, a, q100, *pool, y, z), out, out_size);
    });
}

// encode_image_within / encode_pixels_within
template <class GetSource>
int encode_within(const vlmc_decoder *decoder, GetSource source, uint32_t short_side, size_t max_bytes,
                  double min_quality, double max_quality, uint32_t flags, int num_threads, uint8_t **out,
                  size_t *out_size, double *quality) {
    const int rc = start_encoding(decoder, out, out_size);
    if (rc != VLMC_DEC_OK) return rc;
    return guarded([&] {
        const int threads = threads_for(num_threads);
        const auto bounds = search_bounds(max_bytes, min_quality, max_quality);
        const Source image = source();
        const Workers pool(*decoder, threads);
        const Analysed a = analyse(*decoder, image, short_side, flags, *pool);
        std::vector<float> y, z;
        const auto found = largest_fitting([&](int k) { return stream_of(*decoder, a, uint32_t(k), *pool, y, z); },
                                           max_bytes, bounds.first, bounds.second, a.g);
        hand_out(found.first, out, out_size);
        if (quality != nullptr) *quality = found.second / 100.0;
    });
}

}  // namespace

extern "C" {

int vlmc_decoder_can_encode(const vlmc_decoder *decoder) {
    if (decoder == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "decoder is null");
    if (!decoder->encoder)
        return fail(VLMC_DEC_ERR_BAD_MODEL_FILE, "this decoder-model file (before version 3) has no encoder networks: "
                                                 "re-export it with `vlmcodec export --format c-decoder` to encode images");
    g_last_error.clear();
    return VLMC_DEC_OK;
}

int vlmc_decoder_analyse_image(const vlmc_decoder *decoder, const uint8_t *rgb, uint32_t width, uint32_t height,
                               double quality, uint32_t short_side, uint32_t flags, int num_threads, float *y,
                               size_t y_count, float *z, size_t z_count) {
    const int rc = vlmc_decoder_can_encode(decoder);
    if (rc != VLMC_DEC_OK) return rc;
    if (y == nullptr || z == nullptr) return fail(VLMC_DEC_ERR_INVALID_ARGUMENT, "y or z is null");
    return guarded([&] {
        const int threads = threads_for(num_threads);
        const uint32_t q100 = quality_x100(quality);
        check_latent_counts(*decoder, image_geometry(*decoder, width, height, short_side), y_count, z_count);
        const Workers pool(*decoder, threads);
        const Analysed a = analyse(*decoder, Source::tight_rgb(rgb, width, height), short_side, flags, *pool);
        scaled_latents(*decoder, a, q100, *pool, y, z);
    });
}

int vlmc_decoder_encode_image(const vlmc_decoder *decoder, const uint8_t *rgb, uint32_t width, uint32_t height,
                              double quality, uint32_t short_side, uint32_t flags, int num_threads, uint8_t **out,
                              size_t *out_size) {
    return encode(decoder, [&] { return Source::tight_rgb(rgb, width, height); }, quality, short_side, flags,
                  num_threads, out, out_size);
}

int vlmc_decoder_encode_pixels(const vlmc_decoder *decoder, const vlmc_pixels *pixels, double quality,
                               uint32_t short_side, uint32_t flags, int num_threads, uint8_t **out, size_t *out_size) {
    return encode(decoder, [&] { return source_of(pixels); }, quality, short_side, flags, num_threads, out, out_size);
}

int vlmc_decoder_encode_image_within(const vlmc_decoder *decoder, const uint8_t *rgb, uint32_t width, uint32_t height,
                                     uint32_t short_side, size_t max_bytes, double min_quality, double max_quality,
                                     uint32_t flags, int num_threads, uint8_t **out, size_t *out_size,
                                     double *quality) {
    return encode_within(decoder, [&] { return Source::tight_rgb(rgb, width, height); }, short_side, max_bytes,
                         min_quality, max_quality, flags, num_threads, out, out_size, quality);
}

int vlmc_decoder_encode_pixels_within(const vlmc_decoder *decoder, const vlmc_pixels *pixels, uint32_t short_side,
                                      size_t max_bytes, double min_quality, double max_quality, uint32_t flags,
                                      int num_threads, uint8_t **out, size_t *out_size, double *quality) {
    return encode_within(decoder, [&] { return source_of(pixels); }, short_side, max_bytes, min_quality, max_quality,
                         flags, num_threads, out, out_size, quality);
}

}  // extern "C"
