/* vlmcodec stream decoder, C++17 interface: a header-only layer over vlmc_decoder.h that owns the
 * decoder, returns its outputs in std::vector and turns error codes into exceptions.
 *
 *   vlmc::Decoder dec("cdec/decoder_model.vlmd");   // or Decoder::from_memory(bytes, size)
 *   vlmc::Image full = dec.image(bytes);              // the original size, RGB (HWC)
 *   vlmc::Image small = dec.image_at(bytes, 256);     // what a consumer of 256 px sees
 *   std::vector<float> y = dec.latents(bytes);        // ŷ · inverse gain, what g_s takes
 *
 * Every method throws vlmc::DecodeError (code(): a VLMC_DEC_ERR_* value, what(): the library's
 * message). A Decoder may be shared by threads (its methods are const and the library's decoder
 * is read-only); it moves, it does not copy.
 */
#ifndef VLMC_DECODER_HPP
#define VLMC_DECODER_HPP

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
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

    void set_max_pixels(uint64_t max_pixels) { check(vlmc_decoder_set_max_pixels(handle_, max_pixels)); }
    void set_band_pixels(uint64_t band_pixels) { check(vlmc_decoder_set_band_pixels(handle_, band_pixels)); }

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

  private:
    Decoder() = default;

    static void check(int rc) {
        if (rc != VLMC_DEC_OK) throw DecodeError(rc, vlmc_decoder_last_error());
    }

    vlmc_decoder *handle_ = nullptr;
};

}  // namespace vlmc

#endif /* VLMC_DECODER_HPP */
