/* vlmc_write_stream: a .vlmc stream from the encoder networks' outputs, through the C API alone.
 *
 *   vlmc_write_stream MODEL.vlmd Y.f32 Z.f32 OUT.vlmc --size WxH --quality Q [--coded-size WxH]
 *                     [--pre-edited] [--threads N]
 *   vlmc_write_stream MODEL.vlmd --gain Q OUT.f32
 *
 * Y.f32: g_a's output × the quality's gain, raw float32 in C order [M][H/16][W/16]; Z.f32: h_a's
 * output on it, [N][H/64][W/64] (H, W: the coded size padded to a multiple of 64; see
 * vlmc_decoder.h). --size: the original image size; --coded-size: the size g_a saw, when the image
 * was coded at a consumer's scale; --pre-edited: g_a's input was the pre-editor's output. Prints
 * the stream's size as one JSON line on stdout. --gain: the gain of quality Q, M raw float32s.
 * Errors go to stderr as "vlmc_write_stream: error: …" with exit status 2. */
#define _XOPEN_SOURCE 700 /* tool_io.h's POSIX calls (realpath, mkstemp, fchmod), under -std=c99 too */
#include "vlmc_decoder.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VLMC_TOOL_NAME "vlmc_write_stream"
#include "tool_io.h"

#define USAGE                                                                                               \
    "usage: vlmc_write_stream MODEL.vlmd Y.f32 Z.f32 OUT.vlmc --size WxH --quality Q [--coded-size WxH] " \
    "[--pre-edited] [--threads N]\n       vlmc_write_stream MODEL.vlmd --gain Q OUT.f32"

/* "WxH" (whole numbers, 1 .. 2^20 each) into *w, *h; 0 otherwise. */
static int parse_size(const char *text, uint32_t *w, uint32_t *h) {
    char buf[32];
    const char *x = strchr(text, 'x');
    unsigned long long a, b;
    if (x == NULL || (size_t)(x - text) >= sizeof buf) return 0;
    memcpy(buf, text, (size_t)(x - text));
    buf[x - text] = '\0';
    if (!parse_count(buf, 1u << 20, &a) || !parse_count(x + 1, 1u << 20, &b) || a == 0 || b == 0) return 0;
    *w = (uint32_t)a, *h = (uint32_t)b;
    return 1;
}

/* The floats of a raw float32 file (malloc'd, *count of them, at most most of them); NULL with a
 * message otherwise. */
static float *read_floats(const char *path, size_t most, size_t *count, const char **why) {
    size_t size = 0;
    unsigned char *bytes = read_file(path, &size, most < SIZE_MAX / sizeof(float) ? most * sizeof(float) : 0);
    static char message[4096 + 128];
    if (bytes == NULL && errno == EFBIG)
        snprintf(message, sizeof message, "%s holds more than the %zu float32s the coded size given takes", path, most);
    else if (bytes == NULL)
        snprintf(message, sizeof message, "cannot read %s: %s", path, strerror(errno));
    if (bytes == NULL) return *why = message, NULL;
    if (size % sizeof(float) != 0) {
        free(bytes);
        return *why = "an input file's size is not a whole number of float32s", NULL;
    }
    *count = size / sizeof(float);
    return (float *)bytes; /* malloc'd, suitably aligned for float */
}

/* Whether the file at path holds more than count float32s (then said on stderr); 0 when it does not
 * or cannot be looked at (the read says why). */
static int too_large(const char *path, size_t count, const char *what) {
#if !defined(_WIN32)
    struct stat st;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (unsigned long long)st.st_size > count * sizeof(float)) {
        fprintf(stderr, VLMC_TOOL_NAME ": error: %s holds %llu bytes, more than the %zu float32s (%zu bytes) of %s "
                        "at the coded size given\n", path, (unsigned long long)st.st_size, count,
                count * sizeof(float), what);
        return 1;
    }
#else
    (void)path, (void)count, (void)what;
#endif
    return 0;
}

static int finish(vlmc_decoder *dec, int status) {
    vlmc_decoder_free(dec);
    return status;
}

int main(int argc, char **argv) {
    const char *paths[4] = {NULL, NULL, NULL, NULL}, *gain_q = NULL;
    uint32_t width = 0, height = 0, coded_width = 0, coded_height = 0, flags = 0;
    unsigned long long threads = 0;
    double quality = -1;
    int n_paths = 0, i, rc, stream_option = 0; /* an option of the stream mode given */
    for (i = 1; i < argc; ++i) {
        const char *arg = argv[i], *value = option_value(argc, argv, i);
        if (asks_help(arg, USAGE)) return finish_stdout();
        if (strcmp(arg, "--pre-edited") == 0) flags |= VLMC_ENC_PRE_EDITED, stream_option = 1;
        else if (strcmp(arg, "--size") == 0 || strcmp(arg, "--coded-size") == 0 || strcmp(arg, "--quality") == 0 ||
                 strcmp(arg, "--threads") == 0 || strcmp(arg, "--gain") == 0) {
            if (value == NULL) {
                fprintf(stderr, "vlmc_write_stream: error: %s needs a value\n", arg);
                return 2;
            }
            ++i;
            stream_option |= strcmp(arg, "--gain") != 0;
            if (strcmp(arg, "--size") == 0 && !parse_size(value, &width, &height))
                return bad_value(arg, "WIDTHxHEIGHT", value);
            else if (strcmp(arg, "--coded-size") == 0 && !parse_size(value, &coded_width, &coded_height))
                return bad_value(arg, "WIDTHxHEIGHT", value);
            else if (strcmp(arg, "--quality") == 0 && !parse_quality(value, &quality))
                return bad_value(arg, "a number in 0..100", value);
            else if (strcmp(arg, "--threads") == 0 && !parse_count(value, 256, &threads))
                return bad_value(arg, "a whole number in 0..256; 0: up to 4", value);
            else if (strcmp(arg, "--gain") == 0) gain_q = value;
        } else if (refuses_dash(arg, USAGE)) {
            return 2;
        } else if (n_paths < 4) paths[n_paths++] = arg;
        else return error("too many arguments\n" USAGE);
    }
    if (gain_q && stream_option)
        return error("--gain takes no --size, --coded-size, --quality, --pre-edited or --threads (they write streams)");
    if (gain_q ? n_paths != 2 : (n_paths != 4 || width == 0 || quality < 0)) return error(USAGE);
    if (gain_q && !parse_quality(gain_q, &quality)) return bad_value("--gain", "a number in 0..100", gain_q);

    vlmc_decoder *dec = NULL;
    if (vlmc_decoder_open(paths[0], &dec) != VLMC_DEC_OK) return error(vlmc_decoder_last_error());
    if (gain_q) {
        size_t n_y = 0, n_z = 0;
        float *gain = NULL;
        rc = vlmc_decoder_latent_size(dec, 64, 64, &n_y, &n_z);
        if (rc == VLMC_DEC_OK && (gain = malloc(n_y / 16 * sizeof(float))) == NULL) rc = VLMC_DEC_ERR_NO_MEMORY;
        if (rc == VLMC_DEC_OK) rc = vlmc_decoder_gain(dec, quality, gain, n_y / 16);
        if (rc != VLMC_DEC_OK) {
            free(gain);
            return finish(dec, error(*vlmc_decoder_last_error() ? vlmc_decoder_last_error() : "out of memory"));
        }
        rc = write_file(paths[1], NULL, gain, n_y / 16 * sizeof(float));
        free(gain);
        if (!rc) return finish(dec, 2); /* (write_file said which path and why) */
        printf("{\"quality\": %.2f, \"channels\": %zu}\n", quality, n_y / 16);
        return finish(dec, finish_stdout());
    }
    size_t n_y = 0, n_z = 0, size = 0;
    const char *why = NULL;
    /* a file larger than the coded size's latents is refused before it is read whole (a large
     * file given by mistake was read into memory first) */
    size_t want_y = 0, want_z = 0;
    if (vlmc_decoder_latent_size(dec, coded_width ? coded_width : width, coded_height ? coded_height : height,
                                 &want_y, &want_z) != VLMC_DEC_OK)
        want_y = want_z = (size_t)-1 / sizeof(float); /* (the write below says what is wrong) */
    float *y = too_large(paths[1], want_y, "y") ? NULL : read_floats(paths[1], want_y, &n_y, &why);
    float *z = y == NULL || too_large(paths[2], want_z, "z") ? NULL : read_floats(paths[2], want_z, &n_z, &why);
    if (y == NULL && why == NULL) return finish(dec, 2); /* (too_large said which file and why) */
    if (y != NULL && z == NULL && why == NULL) {
        free(y);
        return finish(dec, 2);
    }
    uint8_t *stream = NULL;
    if (y == NULL || z == NULL) {
        free(y);
        return finish(dec, error(why));
    }
    rc = vlmc_decoder_write_stream(dec, y, n_y, z, n_z, width, height, coded_width, coded_height, quality, flags,
                                   (int)threads, &stream, &size);
    free(y);
    free(z);
    if (rc != VLMC_DEC_OK)
        return finish(dec, error(*vlmc_decoder_last_error() ? vlmc_decoder_last_error() : "out of memory"));
    rc = write_file(paths[3], NULL, stream, size);
    vlmc_decoder_free_stream(stream);
    if (!rc) return finish(dec, 2); /* (write_file said which path and why) */
    printf("{\"bytes\": %zu, \"width\": %u, \"height\": %u, \"quality\": %.2f, \"bpp\": %.6f}\n", size, width, height,
           quality, 8.0 * (double)size / ((double)width * height));
    return finish(dec, finish_stdout());
}
