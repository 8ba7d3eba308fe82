/* vlmcodec stream decoder (and writer) — C API for embedding (C and C++, no Python).
 *
 * Decodes the entropy layer of a .vlmc stream: container, z, the exact fixed-point h_s, the
 * scale-table indexes, y — and returns the latent ŷ that the synthesis network g_s takes. Run
 * g_s with the runtime of your choice on the graph `vlmcodec export --format onnx` writes
 * (g_s.onnx, or a TensorRT engine built from it), then clamp to [0, 1], crop to the coded size,
 * scale by 255 and round: that is the decoded image. Or let vlmc_decoder_image run g_s here, on
 * the CPU, in float32. (Streams coded at a consumer's scale, flag bit 1, are then resized to the
 * original size as vlmcodec.resample does.)
 *
 * The decoder reads a decoder-model file written from a model by
 * `vlmcodec export --format c-decoder -o DIR` (DIR/decoder_model.vlmd): the model's CDF tables,
 * the z medians, h_s in the integers the Python decoder uses, the scale table, the inverse
 * gains and g_s (float32), the encoder's gains and networks. The latents are bit for bit the Python
 * decoder's (tested), so a stream decodes here exactly as it does in `vlmcodec.decode` up to g_s.
 * It also writes streams from the encoder networks' outputs (vlmc_decoder_write_stream, below),
 * and, from a version-3 file (it holds the encoder's networks too), encodes images itself
 * (vlmc_decoder_encode_image, at the end).
 *
 *   vlmc_decoder *dec;
 *   if (vlmc_decoder_open("decoder_model.vlmd", &dec) != VLMC_DEC_OK) fail(vlmc_decoder_last_error());
 *   vlmc_stream_info info;
 *   if (vlmc_decoder_stream_info(dec, data, size, &info) != VLMC_DEC_OK) ...;
 *   size_t n = (size_t)info.channels * info.latent_height * info.latent_width;
 *   float *y_hat = malloc(n * sizeof(float));
 *   if (vlmc_decoder_latents(dec, data, size, 0, 2, y_hat, n) != VLMC_DEC_OK) ...;
 *   ... g_s(y_hat[1, channels, latent_height, latent_width]) -> [1, 3, padded_height, padded_width]
 *   vlmc_decoder_free(dec);
 *
 * Conventions as vlmc_rans.h: functions returning int return VLMC_DEC_OK (0) or a negative
 * error code, and vlmc_decoder_last_error() gives the calling thread's message. Nothing here
 * prints or aborts; a decoder may be used from several threads at once (its calls only read it;
 * its setters, vlmc_decoder_set_*, write it: call them before sharing it, never during a call).
 *
 * Threads: a call with num_threads > 1 runs on the calling thread and num_threads − 1 workers
 * that the decoder keeps asleep between calls (up to 8 idle sets; concurrent calls each get their
 * own; the most recently used are kept, and a one-thread call keeps none), so a small image does
 * not pay ~40 thread starts; vlmc_decoder_free joins them. After fork(), a child's first call
 * starts new workers (the parent's do not exist there), and the child keeps no working buffers
 * (vlmc_decoder_set_cache_bytes: its decoder's cache stays the parent's, unused; open a decoder
 * in the child for one of its own); as with any library that takes locks, fork only while no
 * other thread is inside a call.
 */
#ifndef VLMC_DECODER_H
#define VLMC_DECODER_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#if defined(VLMC_DECODER_BUILDING_SHARED)
#define VLMC_DECODER_API __declspec(dllexport)
#elif defined(VLMC_DECODER_USING_SHARED)
#define VLMC_DECODER_API __declspec(dllimport)
#else
#define VLMC_DECODER_API
#endif
#else
#define VLMC_DECODER_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum {
    VLMC_DEC_OK = 0,
    VLMC_DEC_ERR_INVALID_ARGUMENT = -1, /* null pointer, bad thread count, ... */
    VLMC_DEC_ERR_CORRUPT = -2,          /* the stream is corrupt, truncated or unsupported */
    VLMC_DEC_ERR_MODEL_MISMATCH = -3,   /* the stream was written by another model */
    VLMC_DEC_ERR_BUFFER_TOO_SMALL = -4, /* out_count (rgb_size) is smaller than the latent (image) */
    VLMC_DEC_ERR_NO_MEMORY = -5,
    VLMC_DEC_ERR_BAD_MODEL_FILE = -6,   /* the decoder-model file is unreadable or damaged */
    VLMC_DEC_ERR_TOO_LARGE = -7,        /* the stream announces more pixels than max_pixels */
    VLMC_DEC_ERR_INTERNAL = -8,
    VLMC_DEC_ERR_BUDGET = -9,           /* write_stream_within: even the lowest quality is over the budget */
    VLMC_DEC_ERR_CALLBACK = -10         /* write_stream_within: the caller's h_a returned non-zero */
};

/* flags */
#define VLMC_DEC_RAW 1u        /* latents: ŷ as the stream codes it, before the inverse gain (g_s wants it applied) */
#define VLMC_DEC_CODED_SIZE 2u /* image: a stream coded at a consumer's scale at that scale, not the original size */

typedef struct vlmc_decoder vlmc_decoder;

typedef struct vlmc_stream_info {
    uint32_t width, height;               /* the decoded (original) image size */
    uint32_t coded_width, coded_height;   /* the size the latents code (smaller: consumer scale) */
    uint32_t padded_width, padded_height; /* coded size padded to a multiple of 64: g_s's output */
    uint32_t channels;                    /* ŷ is channels × latent_height × latent_width floats */
    uint32_t latent_height, latent_width; /* padded size / 16 */
    uint32_t flags;                       /* bit 0: pre-edited; bit 1: coded at a smaller size */
    float quality;                        /* 0 .. 100, as the stream stores it */
    uint8_t fingerprint[8];               /* the model the stream names */
} vlmc_stream_info;

/* Version of the .vlmc container this library reads and writes, and of the decoder-model file it
 * encodes images with (it also reads versions 1 and 2: version 2 writes streams but does not
 * encode images, version 1 only decodes). */
VLMC_DECODER_API uint32_t vlmc_decoder_stream_version(void);
VLMC_DECODER_API uint32_t vlmc_decoder_model_version(void);

/* The vector instructions the convolutions use in this process: "avx512", "avx2" (AVX2 + FMA) or
 * "portable" — the widest the CPU has, chosen once per process; "avx2" where it has AVX-512 but
 * the environment variable VLMC_NO_AVX512 was set (not "0") at the first call. Every version gives
 * the same streams and pixels but the portable one (float32 sums may differ by an ULP). */
VLMC_DECODER_API const char *vlmc_decoder_vector_isa(void);

/* Message for the last error on this thread ("" if none). */
VLMC_DECODER_API const char *vlmc_decoder_last_error(void);

/* Loads a decoder-model file (checked: magic, version, sizes, CRC-32, every floating-point
 * parameter finite, the scale bounds increasing; VLMC_DEC_ERR_BAD_MODEL_FILE otherwise). */
VLMC_DECODER_API int vlmc_decoder_open(const char *path, vlmc_decoder **out);
/* The same from a decoder-model file's bytes in memory (embedded in a binary, fetched from a
 * store); the decoder keeps what it needs, so the buffer may be freed after the call. */
VLMC_DECODER_API int vlmc_decoder_open_memory(const uint8_t *data, size_t size, vlmc_decoder **out);
VLMC_DECODER_API void vlmc_decoder_free(vlmc_decoder *decoder);

/* The model's own fingerprint and the one its streams carry (equal unless the model shares an
 * older model's decoder); 8 bytes each. Streams naming either decode. */
VLMC_DECODER_API int vlmc_decoder_fingerprints(const vlmc_decoder *decoder, uint8_t fingerprint[8],
                                               uint8_t stream_fingerprint[8]);

/* Largest width × height a stream may announce (default 64 000 000, as vlmcodec's). */
VLMC_DECODER_API int vlmc_decoder_set_max_pixels(vlmc_decoder *decoder, uint64_t max_pixels);

/* Image pixels per band of vlmc_decoder_image's g_s, and of the encoder's g_a and pre-editor head
 * (default 1 048 576; 0: the whole image at once). Bands give the same pixels and streams, bit for
 * bit; smaller ones use less memory. */
VLMC_DECODER_API int vlmc_decoder_set_band_pixels(vlmc_decoder *decoder, uint64_t band_pixels);

/* Bytes of working buffers the decoder keeps between uses (default 134 217 728; 0: none). Buffers
 * of 64 KiB or more that a call frees are kept, up to this many bytes, for the next buffer it or a
 * later call needs, instead of going back to the system and being faulted in again page by page
 * (a full-size Kodak encode took 0.84×, a decode 0.79× the time with it, in a C++ host; the peak
 * resident size grew by ~24 MB). Calls on several threads share the decoder's cache. In a child
 * process after fork() a decoder opened in the parent keeps none (this call does nothing there).
 * Lowering the limit frees kept buffers at once; vlmc_decoder_cached_bytes says how many are kept. */
VLMC_DECODER_API int vlmc_decoder_set_cache_bytes(vlmc_decoder *decoder, uint64_t cache_bytes);
VLMC_DECODER_API int vlmc_decoder_cached_bytes(const vlmc_decoder *decoder, uint64_t *cached_bytes);

/* Parses and verifies a stream's container (CRC-32, limits, chunk counts, the model it names)
 * and fills *info; decodes nothing. */
VLMC_DECODER_API int vlmc_decoder_stream_info(const vlmc_decoder *decoder, const uint8_t *data,
                                              size_t size, vlmc_stream_info *info);

/* Decodes a stream's latent into out[0 .. channels·latent_height·latent_width) (C-order,
 * channel-major), using up to num_threads threads (0: up to 4); flags 0: ŷ·inverse gain, what
 * g_s takes; VLMC_DEC_RAW: ŷ as coded. */
VLMC_DECODER_API int vlmc_decoder_latents(const vlmc_decoder *decoder, const uint8_t *data,
                                          size_t size, uint32_t flags, int num_threads, float *out,
                                          size_t out_count);

/* Decodes a stream to pixels, as vlmcodec.decode does: the latents, then g_s in float32 (as the
 * torch backend computes it: sub-pixel convolutions, folded inverse GDN), clamped to [0, 1] and
 * cropped; a stream coded at a consumer's scale (flags bit 1) upsampled to its original size
 * (bicubic, as vlmcodec.resample) unless VLMC_DEC_CODED_SIZE; × 255 and rounded into rgb (HWC:
 * height · width · 3 bytes, or coded_height · coded_width · 3). g_s runs in bands of rows
 * (vlmc_decoder_set_band_pixels), so memory stays bounded at any image size. Latents that drive g_s
 * to values that are not finite (symbols far beyond an encoder's) give VLMC_DEC_ERR_CORRUPT. */
VLMC_DECODER_API int vlmc_decoder_image(const vlmc_decoder *decoder, const uint8_t *data, size_t size,
                                        uint32_t flags, int num_threads, uint8_t *rgb, size_t rgb_size);

/* The size, width × height, of the image a consumer of short_side pixels sees of this stream
 * (vlmcodec's decode(short_side=N)): the original size with its shorter side scaled to
 * short_side, each side rounded half to even, never above the original; short_side 0: the
 * original size. short_side must be 0 or at least 16. */
VLMC_DECODER_API int vlmc_decoder_consumer_size(const vlmc_stream_info *info, uint32_t short_side,
                                                uint32_t *width, uint32_t *height);

/* vlmc_decoder_image at vlmc_decoder_consumer_size's size (rgb: height · width · 3 bytes), as
 * vlmcodec's decode(short_side=N): a stream coded at that scale as g_s makes it, any other
 * resized once from its float reconstruction — bicubic where a side grows, antialiased bicubic
 * (torch's, a = −0.5) where both shrink — no full-size image in between. */
VLMC_DECODER_API int vlmc_decoder_image_at(const vlmc_decoder *decoder, const uint8_t *data, size_t size,
                                           uint32_t short_side, int num_threads, uint8_t *rgb,
                                           size_t rgb_size);

/* -- Writing streams (encoding without Python) ------------------------------------------------
 *
 * The networks of encoding are the caller's: run the graphs `vlmcodec export --format onnx`
 * writes (ONNX Runtime, TensorRT, ...) on the image (RGB / 255, float32, [1, 3, H, W], its
 * edges repeated to a multiple of 64 in each side: H = 64·ceil(coded_height / 64)):
 *   [pre_editor.onnx, for models with one: x → x_edit, clamped to [0, 1], then]
 *   g_a.onnx → y_raw [1, M, H/16, W/16];  y = y_raw · gain (vlmc_decoder_gain, per channel);
 *   h_a.onnx on y → z [1, N, H/64, W/64];
 * then vlmc_decoder_write_stream codes (y, z) into a .vlmc stream as vlmcodec's
 * Codec.entropy_encode does: the z symbols, the exact fixed-point h_s, the y symbols, rANS and the
 * container. Given the same y and z, the stream is vlmcodec's, byte for byte (tested); any
 * vlmcodec decoder reads it. This needs a decoder-model file of version 2 (it holds the gains);
 * one of version 1 decodes but refuses to write (VLMC_DEC_ERR_BAD_MODEL_FILE: re-export it). */

#define VLMC_ENC_PRE_EDITED 1u /* write_stream: g_a's input was the pre-editor's output */

/* VLMC_DEC_OK when this decoder can write streams (its model file holds the gains). */
VLMC_DECODER_API int vlmc_decoder_can_write(const vlmc_decoder *decoder);

/* The gain g_a's output is multiplied by at quality (0 .. 100, stored in steps of 0.01):
 * gain[0 .. channels), float32, interpolated geometrically between the model's anchor levels
 * (HyperpriorModel.gains, to within float rounding of torch's exp and log). */
VLMC_DECODER_API int vlmc_decoder_gain(const vlmc_decoder *decoder, double quality, float *gain, size_t count);

/* The float counts of y (channels × H/16 × W/16) and z (N × H/64 × W/64) for an image coded at
 * coded_width × coded_height (H, W: that size padded to a multiple of 64). */
VLMC_DECODER_API int vlmc_decoder_latent_size(const vlmc_decoder *decoder, uint32_t coded_width,
                                              uint32_t coded_height, size_t *y_count, size_t *z_count);

/* Codes y (= g_a output · gain, C-order [channels][H/16][W/16]) and z (= h_a(y), [N][H/64][W/64])
 * into a .vlmc stream, allocated into *out (*out_size bytes; free with vlmc_decoder_free_stream).
 * width × height: the original image size a decoder restores; coded_width × coded_height: the
 * size g_a saw (before padding), equal to it or smaller (an image coded at a consumer's scale);
 * 0 × 0: the same as width × height. quality: the one the gain was taken at (the stream records
 * it; decoders take their inverse gain from it). flags: VLMC_ENC_PRE_EDITED or 0. num_threads as
 * vlmc_decoder_latents (the stream does not depend on it). A non-finite value or one too large
 * to code in y or z is refused (VLMC_DEC_ERR_INVALID_ARGUMENT), as are counts that do not match
 * the coded size and an image above max_pixels (VLMC_DEC_ERR_TOO_LARGE). */
VLMC_DECODER_API int vlmc_decoder_write_stream(const vlmc_decoder *decoder, const float *y, size_t y_count,
                                               const float *z, size_t z_count, uint32_t width, uint32_t height,
                                               uint32_t coded_width, uint32_t coded_height, double quality,
                                               uint32_t flags, int num_threads, uint8_t **out, size_t *out_size);
VLMC_DECODER_API void vlmc_decoder_free_stream(uint8_t *stream);

/* Rate control: the stream of the highest quality in [min_quality, max_quality] whose size is at
 * most max_bytes, as vlmcodec's Codec.encode_to_size searches it (engine/rate_control.py: the
 * budget bracketed and narrowed by interpolating in log-size, on the 0.01 grid, until the bracket
 * is 0.1 wide or a stream fills the budget to within 1 %; typically 3-6 qualities tried). y_raw is
 * g_a's output before the gain (y_count floats, as write_stream's y); for each quality tried the
 * library scales it by the gain and calls h_a(user, y, y_count, z, z_count), the caller's runtime
 * of h_a.onnx, which fills z (z_count floats) and returns 0 (non-zero stops the search:
 * VLMC_DEC_ERR_CALLBACK). *quality receives the quality found (may be NULL). When even
 * min_quality does not fit: VLMC_DEC_ERR_BUDGET, its message naming the smallest size. */
typedef int (*vlmc_hyper_analysis)(void *user, const float *y, size_t y_count, float *z, size_t z_count);
VLMC_DECODER_API int vlmc_decoder_write_stream_within(const vlmc_decoder *decoder, const float *y_raw, size_t y_count,
                                                      size_t z_count, vlmc_hyper_analysis h_a, void *user,
                                                      uint32_t width, uint32_t height, uint32_t coded_width,
                                                      uint32_t coded_height, size_t max_bytes, double min_quality,
                                                      double max_quality, uint32_t flags, int num_threads,
                                                      uint8_t **out, size_t *out_size, double *quality);

/* -- Encoding images (no Python, no other runtime) ---------------------------------------------
 *
 * A decoder-model file of version 3 also holds the encoder's networks (the pre-editor, g_a, h_a)
 * in float32, and the library runs them on the CPU: RGB pixels in, a .vlmc stream out, as
 * vlmcodec's Codec.encode (torch backend) computes it — resized to a consumer's scale when asked
 * (antialiased bicubic, as vlmcodec.resample.downscale), edges repeated to a multiple of 64,
 * pre-edited, g_a, gain, h_a, then vlmc_decoder_write_stream's coding. The networks' sums run in
 * another order than torch's, so a symbol now and then rounds the other way: the stream is not
 * always byte for byte the Python encoder's, but every one is valid and decodes to the same
 * image within that rounding (measured: README "Encoding images in C"). Files of versions 1 and
 * 2 cannot encode images (VLMC_DEC_ERR_BAD_MODEL_FILE: re-export them). */

#define VLMC_ENC_NO_PRE_EDIT 2u /* encode_image: skip the model's pre-editor (faster; vlmcodec's pre_edit=False) */

/* VLMC_DEC_OK when this decoder can encode images (its model file holds the encoder's networks). */
VLMC_DECODER_API int vlmc_decoder_can_encode(const vlmc_decoder *decoder);

/* Encodes rgb (HWC uint8: height rows of width · 3 bytes) at quality (0 .. 100, stored in steps
 * of 0.01) into a .vlmc stream, allocated into *out (*out_size bytes; free with
 * vlmc_decoder_free_stream). short_side: 0 codes the full size; N ≥ 16 codes the image at the
 * size a consumer of N px sees (vlmc_decoder_consumer_size), the decoder restoring the original
 * size. flags: 0 or VLMC_ENC_NO_PRE_EDIT. num_threads as vlmc_decoder_latents. An image above
 * max_pixels is refused (VLMC_DEC_ERR_TOO_LARGE), as are sides outside 1 .. 16384. */
VLMC_DECODER_API int vlmc_decoder_encode_image(const vlmc_decoder *decoder, const uint8_t *rgb, uint32_t width,
                                               uint32_t height, double quality, uint32_t short_side, uint32_t flags,
                                               int num_threads, uint8_t **out, size_t *out_size);

/* Rate control on an image: the stream of the highest quality in [min_quality, max_quality]
 * whose size is at most max_bytes (vlmc_decoder_write_stream_within's search; the pre-editor and
 * g_a run once, h_a and the coding once per quality tried). *quality receives the quality found
 * (may be NULL); VLMC_DEC_ERR_BUDGET when even min_quality does not fit. */
VLMC_DECODER_API int vlmc_decoder_encode_image_within(const vlmc_decoder *decoder, const uint8_t *rgb,
                                                      uint32_t width, uint32_t height, uint32_t short_side,
                                                      size_t max_bytes, double min_quality, double max_quality,
                                                      uint32_t flags, int num_threads, uint8_t **out,
                                                      size_t *out_size, double *quality);

/* Pixels as a frame source lays them out: the channel order and bytes per pixel (alpha, where
 * there is one, is ignored: the stream codes RGB; Python shows transparent pixels over white
 * instead, so composite frames with real alpha first) and the distance from one row to the next, which
 * may be larger than a row's pixels (padded rows, a view into a larger frame) or negative (rows
 * bottom-up: data points at the top row, the last in memory). */
#define VLMC_PIXELS_RGB8 0u  /* R, G, B */
#define VLMC_PIXELS_BGR8 1u  /* B, G, R (OpenCV's order) */
#define VLMC_PIXELS_RGBA8 2u /* R, G, B, A */
#define VLMC_PIXELS_BGRA8 3u /* B, G, R, A (many video and Windows frame buffers) */

typedef struct vlmc_pixels {
    const uint8_t *data;    /* the top row's first pixel */
    uint32_t width, height; /* 1 .. 16384 each */
    ptrdiff_t row_stride;   /* bytes from the start of one row to the next; 0: width · bytes per pixel */
    uint32_t format;        /* VLMC_PIXELS_* */
} vlmc_pixels;

/* vlmc_decoder_encode_image and vlmc_decoder_encode_image_within on pixels laid out as *pixels
 * says: the same stream as for the same image's tight RGB bytes. A null data, an unknown format or
 * a |row_stride| shorter than a row's pixels is refused (VLMC_DEC_ERR_INVALID_ARGUMENT). */
VLMC_DECODER_API int vlmc_decoder_encode_pixels(const vlmc_decoder *decoder, const vlmc_pixels *pixels,
                                                double quality, uint32_t short_side, uint32_t flags,
                                                int num_threads, uint8_t **out, size_t *out_size);
VLMC_DECODER_API int vlmc_decoder_encode_pixels_within(const vlmc_decoder *decoder, const vlmc_pixels *pixels,
                                                       uint32_t short_side, size_t max_bytes, double min_quality,
                                                       double max_quality, uint32_t flags, int num_threads,
                                                       uint8_t **out, size_t *out_size, double *quality);

/* The encoder's latents of rgb at quality, what encode_image codes: y = g_a output · gain
 * ([channels][H/16][W/16], y_count floats) and z = h_a(y) ([N][H/64][W/64]) with H × W the coded
 * size padded to a multiple of 64 (vlmc_decoder_latent_size gives the counts). */
VLMC_DECODER_API int vlmc_decoder_analyse_image(const vlmc_decoder *decoder, const uint8_t *rgb, uint32_t width,
                                                uint32_t height, double quality, uint32_t short_side,
                                                uint32_t flags, int num_threads, float *y, size_t y_count,
                                                float *z, size_t z_count);

#ifdef __cplusplus
}
#endif

#endif /* VLMC_DECODER_H */
