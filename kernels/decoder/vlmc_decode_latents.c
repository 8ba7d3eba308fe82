/* vlmc_decode_latents: a .vlmc stream's latent ŷ as raw float32, through the C API alone.
 *
 *   vlmc_decode_latents MODEL.vlmd STREAM.vlmc OUT.f32 [--raw] [--threads N] [--max-pixels N]
 *   vlmc_decode_latents MODEL.vlmd STREAM.vlmc --info
 *   vlmc_decode_latents MODEL.vlmd STREAM.vlmc --image OUT.ppm [--coded-size] [--threads N] [--band-pixels N]
 *
 * Prints the stream's fields as one JSON line on stdout (with --image, the image's own size too:
 * image_width, image_height); OUT.f32 holds channels × latent_height × latent_width floats (C
 * order), g_s's input (--raw: before the inverse gain); --image: the decoded
 * image as a binary PPM (a name of another image format, .png or .jpg, is refused), at the
 * original size (--coded-size: at a consumer's scale, where the stream was coded at one). Errors
 * go to stderr as "vlmc_decode_latents: error: …" with exit status 2. */
#define _XOPEN_SOURCE 700 /* tool_io.h's POSIX calls (realpath, mkstemp, fchmod), under -std=c99 too */
#include "vlmc_decoder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>

#define VLMC_TOOL_NAME "vlmc_decode_latents"
#include "tool_io.h"

#define USAGE                                                                                         \
    "usage: vlmc_decode_latents MODEL.vlmd STREAM.vlmc (OUT.f32 [--raw] | --image OUT.ppm [--coded-size | " \
    "--short-side N] | --info) [--threads N] [--max-pixels N] [--band-pixels N]"

/* The file name's extension where it names an image format other than PPM (the tool writes PPM
 * only; PPM bytes in a .png would mislead every reader that trusts the name), else NULL. */
static const char *other_image_extension(const char *path) {
    static const char *const others[] = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"};
    const char *base = strrchr(path, '/'), *dot;
    size_t k, c;
    dot = strrchr(base ? base + 1 : path, '.');
    if (dot == NULL) return NULL;
    for (k = 0; k < sizeof others / sizeof others[0]; ++k) {
        for (c = 0; dot[c] && tolower((unsigned char)dot[c]) == others[k][c]; ++c) {}
        if (dot[c] == '\0' && others[k][c] == '\0') return dot;
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *model = NULL, *stream = NULL, *out_path = NULL, *image_path = NULL;
    unsigned flags = 0;
    int info_only = 0, coded_size = 0, band_set = 0, i, rc;
    unsigned long long threads = 0, max_pixels = 0, band_pixels = 0, short_side = 0;
    for (i = 1; i < argc; ++i) {
        const char *arg = argv[i], *value = option_value(argc, argv, i);
        if (asks_help(arg, USAGE)) return finish_stdout();
        if (strcmp(arg, "--raw") == 0) flags |= VLMC_DEC_RAW;
        else if (strcmp(arg, "--info") == 0) info_only = 1;
        else if (strcmp(arg, "--coded-size") == 0) coded_size = 1;
        else if (strcmp(arg, "--image") == 0 || strcmp(arg, "--threads") == 0 || strcmp(arg, "--max-pixels") == 0 ||
                 strcmp(arg, "--band-pixels") == 0 || strcmp(arg, "--short-side") == 0) {
            if (value == NULL) {
                fprintf(stderr, "vlmc_decode_latents: error: %s needs a value\n", arg);
                return 2;
            }
            ++i;
            if (strcmp(arg, "--image") == 0 && refuses_dash(value, USAGE)) return 2; /* (a path, as the others) */
            if (strcmp(arg, "--image") == 0) image_path = value;
            else if (strcmp(arg, "--threads") == 0 && !parse_count(value, 256, &threads))
                return bad_value(arg, "a whole number (0..256; 0: up to 4)", value);
            else if (strcmp(arg, "--max-pixels") == 0 && (!parse_count(value, ~0ull, &max_pixels) || max_pixels == 0))
                return bad_value(arg, "a whole number (at least 1)", value);
            else if (strcmp(arg, "--band-pixels") == 0 && !(band_set = parse_count(value, ~0ull, &band_pixels)))
                return bad_value(arg, "a whole number (g_s's pixels per band; 0: one pass)", value);
            else if (strcmp(arg, "--short-side") == 0 &&
                     (!parse_count(value, 1u << 30, &short_side) || (short_side != 0 && short_side < 16)))
                return bad_value(arg, "a whole number (a consumer's shorter side, at least 16; 0: the original size)",
                                 value);
        } else if (refuses_dash(arg, USAGE)) {
            return 2;
        } else if (!model) model = arg;
        else if (!stream) stream = arg;
        else if (!out_path) out_path = arg;
        else return error("too many arguments\n" USAGE);
    }
    if (!model || !stream || (!out_path && !info_only && !image_path)) return error(USAGE);
    if (info_only && (out_path || image_path)) return error("--info writes nothing: give it without OUT.f32 or --image");
    if (coded_size && short_side) return error("--coded-size and --short-side exclude each other\n" USAGE);
    if ((coded_size || short_side) && !image_path) return error("--coded-size and --short-side size --image's output");
    if ((flags & VLMC_DEC_RAW) && !out_path) return error("--raw is of the latents OUT.f32: give it one");
    const char *other_format = image_path ? other_image_extension(image_path) : NULL;
    if (other_format) {
        fprintf(stderr, VLMC_TOOL_NAME ": error: --image writes a binary PPM, not %s: name it .ppm (vlmcodec decode "
                "writes other formats)\n", other_format);
        return 2;
    }

    vlmc_decoder *dec = NULL;
    if (vlmc_decoder_open(model, &dec) != VLMC_DEC_OK) return error(vlmc_decoder_last_error());
    if ((max_pixels && vlmc_decoder_set_max_pixels(dec, max_pixels) != VLMC_DEC_OK) ||
        (band_set && vlmc_decoder_set_band_pixels(dec, band_pixels) != VLMC_DEC_OK)) {
        vlmc_decoder_free(dec);
        return error(vlmc_decoder_last_error());
    }
    size_t size = 0;
    int other = 0;
    /* (64 bits a pixel, past any stream's; bounds a pipe that never ends, which no stat sizes) */
    const unsigned long long most = max_pixels ? max_pixels : 64000000ull;
    const size_t cap = most > (SIZE_MAX >> 4) ? 0 : (size_t)most * 8 + (1u << 20);
    unsigned char *data = read_file_with_magic(stream, "VLMC", 4, &size, cap, &other);
    if (data == NULL) {
        rc = other ? error("not a .vlmc stream (bad magic)")
             : errno == EFBIG ? error("the stream file holds more bytes than a stream of --max-pixels pixels can")
                              : cannot_read("the stream file", stream);
        vlmc_decoder_free(dec);
        return rc;
    }
    vlmc_stream_info info;
    rc = vlmc_decoder_stream_info(dec, data, size, &info);
    int unwritten = 0; /* an output could not be written (write_file said which and why) */
    uint32_t out_w = 0, out_h = 0; /* the written image's size (--image) */
    if (rc == VLMC_DEC_OK && image_path) {
        out_w = coded_size ? info.coded_width : info.width, out_h = coded_size ? info.coded_height : info.height;
        if (short_side) rc = vlmc_decoder_consumer_size(&info, (uint32_t)short_side, &out_w, &out_h);
    }
    if (rc == VLMC_DEC_OK && image_path) {
        size_t n = (size_t)out_w * out_h * 3;
        unsigned char *rgb = malloc(n);
        char header[64];
        rc = rgb == NULL  ? VLMC_DEC_ERR_NO_MEMORY
             : short_side ? vlmc_decoder_image_at(dec, data, size, (uint32_t)short_side, (int)threads, rgb, n)
                          : vlmc_decoder_image(dec, data, size, coded_size ? VLMC_DEC_CODED_SIZE : 0, (int)threads, rgb, n);
        snprintf(header, sizeof header, "P6\n%u %u\n255\n", (unsigned)out_w, (unsigned)out_h);
        if (rc == VLMC_DEC_OK && !write_file(image_path, header, rgb, n)) unwritten = 1;
        free(rgb);
    }
    if (rc == VLMC_DEC_OK && !unwritten && out_path) {
        size_t n = (size_t)info.channels * info.latent_height * info.latent_width;
        float *y = malloc(n * sizeof(float));
        rc = y == NULL ? VLMC_DEC_ERR_NO_MEMORY : vlmc_decoder_latents(dec, data, size, flags, (int)threads, y, n);
        if (rc == VLMC_DEC_OK && !write_file(out_path, NULL, y, n * sizeof(float))) unwritten = 1;
        free(y);
    }
    if (unwritten) {
        free(data);
        vlmc_decoder_free(dec);
        return 2;
    }
    if (rc != VLMC_DEC_OK) {
        int status = error(rc == VLMC_DEC_ERR_NO_MEMORY && !*vlmc_decoder_last_error() ? "out of memory"
                                                                                     : vlmc_decoder_last_error());
        free(data);
        vlmc_decoder_free(dec);
        return status;
    }
    printf("{\"width\": %u, \"height\": %u, \"coded_width\": %u, \"coded_height\": %u, \"padded_width\": %u, "
           "\"padded_height\": %u, \"channels\": %u, \"latent_height\": %u, \"latent_width\": %u, \"flags\": %u, "
           "\"quality\": %.2f, \"fingerprint\": \"",
           info.width, info.height, info.coded_width, info.coded_height, info.padded_width, info.padded_height,
           info.channels, info.latent_height, info.latent_width, info.flags, info.quality);
    for (i = 0; i < 8; ++i) printf("%02x", info.fingerprint[i]);
    if (image_path) /* (a consumer's size or the coded one: not the stream's width and height) */
        printf("\", \"image_width\": %u, \"image_height\": %u}\n", (unsigned)out_w, (unsigned)out_h);
    else
        printf("\"}\n");
    free(data);
    vlmc_decoder_free(dec);
    return finish_stdout();
}
