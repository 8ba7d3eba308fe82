/* vlmcodec stream decoder (and writer), C++17 interface: a header-only layer over vlmc_decoder.h that owns the
 * decoder, returns its outputs in std::vector and turns error codes into exceptions.
 *
 *   vlmc::Decoder dec("cdec/decoder_model.vlmd");   // or Decoder::from_memory(bytes, size)
 *   vlmc::Image full = dec.image(bytes);              // the original size, RGB (HWC)
 *   vlmc::Image small = dec.image_at(bytes, 256);     // what a consumer of 256 px sees
 *   std::vector<float> y = dec.latents(bytes);        // ŷ · inverse gain, what g_s takes
 *   std::vector<uint8_t> s = dec.write_stream(y, z, width, height, quality);  // from g_a·gain, h_a
 *   std::vector<uint8_t> e = dec.encode_image(full, 50.0);  // an image encoded here (model file version 3)
 *   e = dec.encode_pixels({bgra, w, h, stride, VLMC_PIXELS_BGRA8}, 50.0);  // a frame as it lies in memory
 *
 * Every method throws vlmc::DecodeError (code(): a VLMC_DEC_ERR_* value, what(): the library's
 * message). A Decoder may be shared by threads (its methods are const and the library's decoder
 * is read-only); it moves, it does not copy.
 */
#ifndef VLMC_DECODER_HPP
#define VLMC_DECODER_HPP

#include <cstddef>
#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "vlmc_decoder.h"

namespace vlmc {

class DecodeError : public std::runtime_error {
  public:
    DecodeError(int code, const std::string &message) : std::runtime_error(message), code_(code) {}
    int code() const noexcept { return code_; }

  private:
    int code_;
};

// A decoded image: height rows of width RGB pixels, 3 bytes each
struct Image {
    uint32_t width = 0, height = 0;
    std::vector<uint8_t> rgb;
};

class Decoder {
  public:
    explicit Decoder(const std::string &model_path) { check(vlmc_decoder_open(model_path.c_str(), &handle_)); }
    // from a decoder-model file's bytes in memory (the buffer may be freed afterwards)
    static Decoder from_memory(const uint8_t *data, size_t size) {
        Decoder d;
        check(vlmc_decoder_open_memory(data, size, &d.handle_));
        return d;
    }
    static Decoder from_memory(const std::vector<uint8_t> &model) { return from_memory(model.data(), model.size()); }
    Decoder(Decoder &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Decoder &operator=(Decoder &&other) noexcept {
        if (this != &other) {
            vlmc_decoder_free(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }
    Decoder(const Decoder &) = delete;
    Decoder &operator=(const Decoder &) = delete;
    ~Decoder() { vlmc_decoder_free(handle_); }

    // the underlying C handle (owned by this object)
    const vlmc_decoder *get() const noexcept { return handle_; }

    // the vector instructions the convolutions use in this process: "avx512", "avx2" or "portable"
    static std::string vector_isa() { return vlmc_decoder_vector_isa(); }

    void set_max_pixels(uint64_t max_pixels) { check(vlmc_decoder_set_max_pixels(handle_, max_pixels)); }
    void set_band_pixels(uint64_t band_pixels) { check(vlmc_decoder_set_band_pixels(handle_, band_pixels)); }
    // working buffers kept between calls (vlmc_decoder_set_cache_bytes), and those kept now
    void set_cache_bytes(uint64_t cache_bytes) { check(vlmc_decoder_set_cache_bytes(handle_, cache_bytes)); }
    uint64_t cached_bytes() const {
        uint64_t out = 0;
        check(vlmc_decoder_cached_bytes(handle_, &out));
        return out;
    }

    // the stream's header, checked (CRC-32, limits, the model it names); decodes nothing
    vlmc_stream_info info(const uint8_t *data, size_t size) const {
        vlmc_stream_info out{};
        check(vlmc_decoder_stream_info(handle_, data, size, &out));
        return out;
    }

    // ŷ · inverse gain (raw: ŷ as coded), channels × latent_height × latent_width floats
    std::vector<float> latents(const uint8_t *data, size_t size, bool raw = false, int threads = 0) const {
        const vlmc_stream_info i = info(data, size);
        std::vector<float> out(size_t(i.channels) * i.latent_height * i.latent_width);
        check(vlmc_decoder_latents(handle_, data, size, raw ? VLMC_DEC_RAW : 0u, threads, out.data(), out.size()));
        return out;
    }

    // the image at its original size, or (coded_size) at the size the stream codes
    Image image(const uint8_t *data, size_t size, int threads = 0, bool coded_size = false) const {
        const vlmc_stream_info i = info(data, size);
        Image out{coded_size ? i.coded_width : i.width, coded_size ? i.coded_height : i.height, {}};
        out.rgb.resize(size_t(out.width) * out.height * 3);
        check(vlmc_decoder_image(handle_, data, size, coded_size ? VLMC_DEC_CODED_SIZE : 0u, threads, out.rgb.data(),
                                 out.rgb.size()));
        return out;
    }

    // the image a consumer of short_side pixels sees (as vlmcodec's decode(short_side=N))
    Image image_at(const uint8_t *data, size_t size, uint32_t short_side, int threads = 0) const {
        const vlmc_stream_info i = info(data, size);
        Image out;
        check(vlmc_decoder_consumer_size(&i, short_side, &out.width, &out.height));
        out.rgb.resize(size_t(out.width) * out.height * 3);
        check(vlmc_decoder_image_at(handle_, data, size, short_side, threads, out.rgb.data(), out.rgb.size()));
        return out;
    }

    // the same, for a stream held in a byte vector
    vlmc_stream_info info(const std::vector<uint8_t> &s) const { return info(s.data(), s.size()); }
    std::vector<float> latents(const std::vector<uint8_t> &s, bool raw = false, int threads = 0) const {
        return latents(s.data(), s.size(), raw, threads);
    }
    Image image(const std::vector<uint8_t> &s, int threads = 0, bool coded_size = false) const {
        return image(s.data(), s.size(), threads, coded_size);
    }
    Image image_at(const std::vector<uint8_t> &s, uint32_t short_side, int threads = 0) const {
        return image_at(s.data(), s.size(), short_side, threads);
    }

    // -- writing streams (vlmc_decoder_write_stream; the model file must be of version 2) --------

    // whether this model file can write streams (it holds the encoder's gains)
    bool can_write() const noexcept { return vlmc_decoder_can_write(handle_) == VLMC_DEC_OK; }

    // the float counts of y and z for an image coded at coded_width × coded_height
    std::pair<size_t, size_t> latent_size(uint32_t coded_width, uint32_t coded_height) const {
        size_t y = 0, z = 0;
        check(vlmc_decoder_latent_size(handle_, coded_width, coded_height, &y, &z));
        return {y, z};
    }

    // the gain g_a's output is multiplied by at quality, one float per channel
    std::vector<float> gain(double quality) const {
        std::vector<float> out(latent_size(64, 64).first / 16);  // a 64×64 block: 4×4 latent positions
        check(vlmc_decoder_gain(handle_, quality, out.data(), out.size()));
        return out;
    }

    // the .vlmc stream of y (g_a output · gain) and z (h_a(y)) for a width × height image coded at
    // coded_width × coded_height (0 × 0: the same); flags: VLMC_ENC_PRE_EDITED or 0
    std::vector<uint8_t> write_stream(const std::vector<float> &y, const std::vector<float> &z, uint32_t width,
                                      uint32_t height, double quality, uint32_t flags = 0, uint32_t coded_width = 0,
                                      uint32_t coded_height = 0, int threads = 0) const {
        uint8_t *bytes = nullptr;
        size_t size = 0;
        check(vlmc_decoder_write_stream(handle_, y.data(), y.size(), z.data(), z.size(), width, height, coded_width,
                                        coded_height, quality, flags, threads, &bytes, &size));
        return take_stream(bytes, size);
    }

    // rate control (vlmc_decoder_write_stream_within): the stream of the highest quality in
    // [min_quality, max_quality] that fits max_bytes, and that quality; y_raw: g_a's output before
    // the gain; h_a(const float *y, size_t y_count, float *z, size_t z_count) runs the caller's
    // h_a for each quality tried (an exception from it stops the search and propagates)
    struct SizedStream {
        std::vector<uint8_t> bytes;
        double quality = 0;
    };
    template <class HyperAnalysis>
    SizedStream write_stream_within(const std::vector<float> &y_raw, size_t z_count, HyperAnalysis &&h_a,
                                    uint32_t width, uint32_t height, size_t max_bytes, double min_quality = 0,
                                    double max_quality = 100, uint32_t flags = 0, uint32_t coded_width = 0,
                                    uint32_t coded_height = 0, int threads = 0) const {
        using Fn = std::remove_reference_t<HyperAnalysis>;
        struct Context {
            Fn *fn;
            std::exception_ptr error;
        } context{&h_a, nullptr};
        auto trampoline = [](void *user, const float *y, size_t y_count, float *z, size_t n_z) -> int {
            auto *c = static_cast<Context *>(user);
            try {
                (*c->fn)(y, y_count, z, n_z);
                return 0;
            } catch (...) {  // no exception crosses the C library
                c->error = std::current_exception();
                return 1;
            }
        };
        uint8_t *bytes = nullptr;
        size_t size = 0;
        SizedStream out;
        const int rc = vlmc_decoder_write_stream_within(handle_, y_raw.data(), y_raw.size(), z_count, trampoline,
                                                        &context, width, height, coded_width, coded_height, max_bytes,
                                                        min_quality, max_quality, flags, threads, &bytes, &size,
                                                        &out.quality);
        if (context.error) std::rethrow_exception(context.error);
        check(rc);
        out.bytes = take_stream(bytes, size);
        return out;
    }

    // -- encoding images (vlmc_decoder_encode_image; the model file must be of version 3) ------

    // whether this model file can encode images (it holds the encoder's networks)
    bool can_encode() const noexcept { return vlmc_decoder_can_encode(handle_) == VLMC_DEC_OK; }

    // the .vlmc stream of an RGB image (HWC, height · width · 3 bytes) at quality; short_side 0:
    // the full size, N ≥ 16: a consumer's scale; flags: 0 or VLMC_ENC_NO_PRE_EDIT
    std::vector<uint8_t> encode_image(const uint8_t *rgb, uint32_t width, uint32_t height, double quality,
                                      uint32_t short_side = 0, uint32_t flags = 0, int threads = 0) const {
        uint8_t *bytes = nullptr;
        size_t size = 0;
        check(vlmc_decoder_encode_image(handle_, rgb, width, height, quality, short_side, flags, threads, &bytes,
                                        &size));
        return take_stream(bytes, size);
    }
    std::vector<uint8_t> encode_image(const Image &im, double quality, uint32_t short_side = 0, uint32_t flags = 0,
                                      int threads = 0) const {
        check_image(im);
        return encode_image(im.rgb.data(), im.width, im.height, quality, short_side, flags, threads);
    }

    // rate control on an image: the stream of the highest quality that fits max_bytes, and that quality
    SizedStream encode_image_within(const Image &im, size_t max_bytes, double min_quality = 0,
                                    double max_quality = 100, uint32_t short_side = 0, uint32_t flags = 0,
                                    int threads = 0) const {
        check_image(im);
        uint8_t *bytes = nullptr;
        size_t size = 0;
        SizedStream out;
        check(vlmc_decoder_encode_image_within(handle_, im.rgb.data(), im.width, im.height, short_side, max_bytes,
                                               min_quality, max_quality, flags, threads, &bytes, &size, &out.quality));
        out.bytes = take_stream(bytes, size);
        return out;
    }

    // the same from pixels in another layout (BGR, RGBA, BGRA; padded or bottom-up rows): vlmc_pixels
    std::vector<uint8_t> encode_pixels(const vlmc_pixels &pixels, double quality, uint32_t short_side = 0,
                                       uint32_t flags = 0, int threads = 0) const {
        uint8_t *bytes = nullptr;
        size_t size = 0;
        check(vlmc_decoder_encode_pixels(handle_, &pixels, quality, short_side, flags, threads, &bytes, &size));
        return take_stream(bytes, size);
    }
    SizedStream encode_pixels_within(const vlmc_pixels &pixels, size_t max_bytes, double min_quality = 0,
                                     double max_quality = 100, uint32_t short_side = 0, uint32_t flags = 0,
                                     int threads = 0) const {
        uint8_t *bytes = nullptr;
        size_t size = 0;
        SizedStream out;
        check(vlmc_decoder_encode_pixels_within(handle_, &pixels, short_side, max_bytes, min_quality, max_quality,
                                                flags, threads, &bytes, &size, &out.quality));
        out.bytes = take_stream(bytes, size);
        return out;
    }

  private:
    Decoder() = default;

    static void check_image(const Image &im) {
        if (im.rgb.size() != size_t(im.width) * im.height * 3)
            throw DecodeError(VLMC_DEC_ERR_INVALID_ARGUMENT, "the image holds " + std::to_string(im.rgb.size()) +
                                                                 " bytes, not width · height · 3");
    }

    // a stream the library allocated, copied into a vector and freed (also when the copy throws)
    static std::vector<uint8_t> take_stream(uint8_t *bytes, size_t size) {
        std::vector<uint8_t> out;
        try {
            out.assign(bytes, bytes + size);
        } catch (...) {
            vlmc_decoder_free_stream(bytes);
            throw;
        }
        vlmc_decoder_free_stream(bytes);
        return out;
    }

    static void check(int rc) {
        if (rc != VLMC_DEC_OK) throw DecodeError(rc, vlmc_decoder_last_error());
    }

    vlmc_decoder *handle_ = nullptr;
};

}  // namespace vlmc

#endif /* VLMC_DECODER_HPP */
