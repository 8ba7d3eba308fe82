/* vlmc_encode: an image to a .vlmc stream, through the C API alone (no Python, no other runtime).
 *
 *   vlmc_encode MODEL.vlmd IN.ppm OUT.vlmc [--quality Q] [--short-side N] [--no-pre-edit] [--threads N] [--max-pixels N]
 *   vlmc_encode MODEL.vlmd IN.ppm OUT.vlmc --max-bytes B [--min-quality Q] [--max-quality Q] ...
 *
 * IN.ppm: a binary PPM or PGM (P6 or P5, maxval 1..65535; read as vlmcodec's Python reader reads it: the
 * same image, so the same stream). --quality: 0..100 (default 75, vlmcodec's default); --max-bytes: the highest
 * quality whose stream fits B bytes instead (rate control); --short-side N: code at the scale a
 * consumer of N px sees; --no-pre-edit: skip the model's pre-editor; --max-pixels N: the largest
 * image taken (default 64 000 000, as vlmcodec's). MODEL.vlmd: a decoder-model
 * file of version 3 (`vlmcodec export --format c-decoder`). Prints the stream's size as one JSON
 * line on stdout. Errors go to stderr as "vlmc_encode: error: …" with exit status 2. */
#define _XOPEN_SOURCE 700 /* tool_io.h's POSIX calls (realpath, mkstemp, fchmod), under -std=c99 too */
#include "vlmc_decoder.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VLMC_TOOL_NAME "vlmc_encode"
#include "tool_io.h"

#define USAGE                                                                                           \
    "usage: vlmc_encode MODEL.vlmd IN.ppm OUT.vlmc [--quality Q | --max-bytes B [--min-quality Q] "     \
    "[--max-quality Q]] [--short-side N] [--no-pre-edit] [--threads N] [--max-pixels N]"

/* Whitespace in a PPM header: Pillow's (space, \t, \n, \v, \f, \r) */
static int ppm_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* The next whole number of a PPM header at *p (whitespace and # comments, which end at \n or \r as
 * Pillow's do, skipped); 0 at the end. */
static int ppm_number(const unsigned char *data, size_t size, size_t *p, unsigned long *out) {
    for (;;) {
        while (*p < size && ppm_space(data[*p])) ++*p;
        if (*p < size && data[*p] == '#') {
            while (*p < size && data[*p] != '\n' && data[*p] != '\r') ++*p;
            continue;
        }
        break;
    }
    if (*p >= size || data[*p] < '0' || data[*p] > '9') return 0;
    *out = 0;
    while (*p < size && data[*p] >= '0' && data[*p] <= '9') {
        if (*out > 100000000ul) return 0;
        *out = *out * 10 + (unsigned long)(data[*p] - '0');
        ++*p;
    }
    return 1;
}

/* One sample on 0..out_max as Pillow's PPM decoder reads it (and so vlmcodec's Python reader):
 * min(out_max, round-half-even(v / maxval * out_max)) in double precision. */
static unsigned long pnm_scale(unsigned long v, unsigned long maxval, unsigned long out_max) {
    const unsigned long r = round_half_even((double)v / (double)maxval * (double)out_max);
    return r > out_max ? out_max : r;
}

/* The pixels of a binary PNM as tight 8-bit RGB and its size; NULL with a message otherwise.
 * P6 (RGB) and P5 (gray, its value in each channel), maxval 1..65535 (two big-endian bytes a
 * sample above 255), read as vlmcodec's Python reader reads them (Pillow's PPM decoder, then
 * 16-bit gray onto 8 bits by (a · 255 + 32767) / 65535): the same image, so the same stream. P6
 * with maxval 255 is a pointer into data (*owned NULL); any other is converted into a buffer that
 * *owned holds (free it). */
static const unsigned char *read_ppm(const unsigned char *data, size_t size, unsigned long long max_pixels,
                                     uint32_t *width, uint32_t *height, unsigned char **owned, const char **why) {
    size_t p = 2, i, n;
    unsigned long w, h, maxval;
    *owned = NULL;
    /* (the magic ends at whitespace: Pillow reads "P65" as another magic) */
    if (size < 3 || data[0] != 'P' || (data[1] != '6' && data[1] != '5') || !ppm_space(data[2]))
        return *why = "the input is not a binary PPM or PGM (P6 or P5)", NULL;
    if (!ppm_number(data, size, &p, &w) || !ppm_number(data, size, &p, &h) || !ppm_number(data, size, &p, &maxval) ||
        p >= size || !ppm_space(data[p]))
        return *why = "the PPM header is malformed", NULL;
    if (maxval == 0 || maxval > 65535) return *why = "the PPM's maxval is outside 1..65535", NULL;
    if (w == 0 || h == 0 || w > 65535 || h > 65535) return *why = "the PPM's size is outside 1..65535", NULL;
    if ((unsigned long long)w * h > max_pixels) { /* (from the header: not after a conversion of all of it) */
        static char message[128];
        snprintf(message, sizeof message, "image of %lux%lu pixels, more than max_pixels=%llu (--max-pixels)", w, h,
                 max_pixels);
        return *why = message, NULL;
    }
    ++p; /* the one whitespace byte after maxval */
    const size_t channels = data[1] == '6' ? 3 : 1, bytes = maxval > 255 ? 2 : 1;
    if ((size - p) / bytes / channels / w < h) return *why = "the PPM is truncated", NULL;
    *width = (uint32_t)w, *height = (uint32_t)h;
    if (channels == 3 && maxval == 255) return data + p;
    n = (size_t)w * h;
    /* each possible sample value's 8-bit value, once: not a double division per sample */
    const unsigned long levels = bytes == 2 ? 65536 : 256;
    unsigned char *rgb = malloc(n * 3), *lut = malloc(levels);
    if (rgb == NULL || lut == NULL) return free(rgb), free(lut), *why = "out of memory", NULL;
    for (i = 0; i < levels; ++i) {
        unsigned long v = (unsigned long)i;
        if (channels == 1 && maxval > 255) { /* Pillow: 16-bit gray (mode I); vlmcodec: onto 8 bits */
            if (maxval != 65535) v = pnm_scale(v, maxval, 65535);
            v = (v * 255 + 32767) / 65535;
        } else if (maxval != 255) {
            v = pnm_scale(v, maxval, 255);
        }
        lut[i] = (unsigned char)v;
    }
    const unsigned char *in = data + p;
    for (i = 0; i < n * channels; ++i) {
        const unsigned char v = lut[bytes == 2 ? (size_t)in[2 * i] << 8 | in[2 * i + 1] : in[i]];
        if (channels == 3) rgb[i] = v;
        else rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = v;
    }
    free(lut);
    *owned = rgb;
    return rgb;
}

int main(int argc, char **argv) {
    const char *paths[3] = {NULL, NULL, NULL};
    double quality = 75.0, min_quality = 0.0, max_quality = 100.0;
    unsigned long long max_pixels = 0, threads = 0, short_side = 0, max_bytes = 0;
    uint32_t flags = 0, width = 0, height = 0;
    int n_paths = 0, i, rc, quality_set = 0, bounds_set = 0;
    for (i = 1; i < argc; ++i) {
        const char *arg = argv[i], *value = option_value(argc, argv, i);
        if (asks_help(arg, USAGE)) return finish_stdout();
        if (strcmp(arg, "--no-pre-edit") == 0) flags |= VLMC_ENC_NO_PRE_EDIT;
        else if (strcmp(arg, "--quality") == 0 || strcmp(arg, "--short-side") == 0 || strcmp(arg, "--threads") == 0 ||
                 strcmp(arg, "--max-bytes") == 0 || strcmp(arg, "--min-quality") == 0 ||
                 strcmp(arg, "--max-quality") == 0 || strcmp(arg, "--max-pixels") == 0) {
            if (value == NULL) {
                fprintf(stderr, "vlmc_encode: error: %s needs a value\n", arg);
                return 2;
            }
            ++i;
            if (strcmp(arg, "--quality") == 0 && !(quality_set = parse_quality(value, &quality)))
                return bad_value(arg, "a number in 0..100", value);
            else if (strcmp(arg, "--min-quality") == 0 && !(bounds_set = parse_quality(value, &min_quality)))
                return bad_value(arg, "a number in 0..100", value);
            else if (strcmp(arg, "--max-quality") == 0 && !(bounds_set = parse_quality(value, &max_quality)))
                return bad_value(arg, "a number in 0..100", value);
            else if (strcmp(arg, "--short-side") == 0 && (!parse_count(value, 1u << 20, &short_side) ||
                                                          (short_side != 0 && short_side < 16)))
                return bad_value(arg, "a whole number (a consumer's shorter side, at least 16; 0: full size)", value);
            else if (strcmp(arg, "--threads") == 0 && !parse_count(value, 256, &threads))
                return bad_value(arg, "a whole number in 0..256; 0: up to 4", value);
            else if (strcmp(arg, "--max-bytes") == 0 && (!parse_budget(value, &max_bytes) || max_bytes == 0))
                return bad_value(arg, "a whole number of bytes, at least 1", value);
            else if (strcmp(arg, "--max-pixels") == 0 && (!parse_count(value, ~0ull, &max_pixels) || max_pixels == 0))
                return bad_value(arg, "a whole number (at least 1)", value);
        } else if (refuses_dash(arg, USAGE)) {
            return 2;
        } else if (n_paths < 3) paths[n_paths++] = arg;
        else return error("too many arguments\n" USAGE);
    }
    if (n_paths != 3) return error(USAGE);
    if (quality_set && max_bytes) return error("--quality and --max-bytes exclude each other");
    if (bounds_set && !max_bytes) return error("--min-quality and --max-quality bound --max-bytes's search: give --max-bytes");

    size_t size = 0, out_size = 0;
    int other = 0;
    const char *why = NULL;
    if (!max_pixels) max_pixels = 64000000; /* the library's default */
    /* (6 bytes a pixel at most, and a header: bounds a pipe that never ends, which no stat sizes) */
    const size_t cap = max_pixels > (SIZE_MAX >> 4) ? 0 : (size_t)max_pixels * 6 + (1u << 20);
    unsigned char *file = read_file_with_magic(paths[1], "P6P5", 2, &size, cap, &other);
    if (file == NULL && other) return error("the input is not a binary PPM or PGM (P6 or P5)");
    if (file == NULL && errno == EFBIG) return error("the input holds more bytes than a PPM of --max-pixels pixels");
    if (file == NULL) return cannot_read("the input image", paths[1]);
    unsigned char *converted = NULL;
    const unsigned char *rgb = read_ppm(file, size, max_pixels, &width, &height, &converted, &why);
    if (rgb == NULL) {
        free(file);
        return error(why);
    }
    vlmc_decoder *dec = NULL;
    uint8_t *stream = NULL;
    rc = vlmc_decoder_open(paths[0], &dec);
    if (rc == VLMC_DEC_OK) rc = vlmc_decoder_set_max_pixels(dec, max_pixels);
    if (rc == VLMC_DEC_OK && max_bytes)
        rc = vlmc_decoder_encode_image_within(dec, rgb, width, height, (uint32_t)short_side,
                                              max_bytes > SIZE_MAX ? SIZE_MAX : (size_t)max_bytes,
                                              min_quality, max_quality, flags, (int)threads, &stream, &out_size,
                                              &quality);
    else if (rc == VLMC_DEC_OK)
        rc = vlmc_decoder_encode_image(dec, rgb, width, height, quality, (uint32_t)short_side, flags, (int)threads,
                                       &stream, &out_size);
    free(converted);
    free(file);
    if (rc != VLMC_DEC_OK) {
        rc = error(*vlmc_decoder_last_error() ? vlmc_decoder_last_error() : "out of memory");
        vlmc_decoder_free(dec);
        return rc;
    }
    vlmc_decoder_free(dec);
    rc = write_file(paths[2], NULL, stream, out_size);
    vlmc_decoder_free_stream(stream);
    if (!rc) return 2; /* (write_file said which path and why) */
    printf("{\"bytes\": %zu, \"width\": %u, \"height\": %u, \"quality\": %.2f, \"bpp\": %.6f}\n", out_size, width,
           height, quality, 8.0 * (double)out_size / ((double)width * height));
    return finish_stdout();
}
