/* vlmc_decode_latents: a .vlmc stream's latent ŷ as raw float32, through the C API alone.
 *
 *   vlmc_decode_latents MODEL.vlmd STREAM.vlmc OUT.f32 [--raw] [--threads N] [--max-pixels N]
 *   vlmc_decode_latents MODEL.vlmd STREAM.vlmc --info
 *   vlmc_decode_latents MODEL.vlmd STREAM.vlmc --image OUT.ppm [--coded-size] [--threads N]
 *
 * Prints the stream's fields as one JSON line on stdout; OUT.f32 holds channels × latent_height ×
 * latent_width floats (C order), g_s's input (--raw: before the inverse gain); --image: the decoded
 * image as a binary PPM, at the original size (--coded-size: at a consumer's scale, where the
 * stream was coded at one). Errors go to
 * stderr as "vlmc_decode_latents: error: …" with exit status 2. */
#include "vlmc_decoder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int error(const char *what) {
    fprintf(stderr, "vlmc_decode_latents: error: %s\n", what);
    return 2;
}

static unsigned char *read_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0, got;
    if (f == NULL) return NULL;
    do {
        if (n == cap) {
            unsigned char *more = realloc(buf, cap ? 2 * cap : 1 << 16);
            if (more == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = more;
            cap = cap ? 2 * cap : 1 << 16;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got > 0);
    if (ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = n;
    return buf ? buf : malloc(1);
}

/* Writes header (may be NULL) then n bytes of buf to path; 1 on success. */
static int write_file(const char *path, const char *header, const void *buf, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok = f != NULL && (header == NULL || fputs(header, f) >= 0) && fwrite(buf, 1, n, f) == n;
    if (f != NULL && fclose(f) != 0) ok = 0;
    return ok;
}

int main(int argc, char **argv) {
    const char *model = NULL, *stream = NULL, *out_path = NULL, *image_path = NULL;
    unsigned flags = 0;
    int threads = 0, info_only = 0, coded_size = 0, i, rc;
    unsigned long long max_pixels = 0;
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--raw") == 0) flags |= VLMC_DEC_RAW;
        else if (strcmp(argv[i], "--info") == 0) info_only = 1;
        else if (strcmp(argv[i], "--coded-size") == 0) coded_size = 1;
        else if (strcmp(argv[i], "--image") == 0 && i + 1 < argc) image_path = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--max-pixels") == 0 && i + 1 < argc) max_pixels = strtoull(argv[++i], NULL, 10);
        else if (argv[i][0] == '-' && argv[i][1] == '-') return error("unknown option (see the usage in the source)");
        else if (!model) model = argv[i];
        else if (!stream) stream = argv[i];
        else if (!out_path) out_path = argv[i];
        else return error("too many arguments");
    }
    if (!model || !stream || (!out_path && !info_only && !image_path))
        return error("usage: vlmc_decode_latents MODEL.vlmd STREAM.vlmc (OUT.f32 [--raw] | --image OUT.ppm "
                     "[--coded-size] | --info) "
                     "[--threads N] [--max-pixels N]");

    vlmc_decoder *dec = NULL;
    if (vlmc_decoder_open(model, &dec) != VLMC_DEC_OK) return error(vlmc_decoder_last_error());
    if (max_pixels && vlmc_decoder_set_max_pixels(dec, max_pixels) != VLMC_DEC_OK) {
        vlmc_decoder_free(dec);
        return error(vlmc_decoder_last_error());
    }
    size_t size = 0;
    unsigned char *data = read_file(stream, &size);
    if (data == NULL) {
        vlmc_decoder_free(dec);
        return error("cannot read the stream file");
    }
    vlmc_stream_info info;
    rc = vlmc_decoder_stream_info(dec, data, size, &info);
    const char *unwritten = NULL; /* the file that could not be written */
    if (rc == VLMC_DEC_OK && image_path) {
        unsigned out_w = coded_size ? info.coded_width : info.width, out_h = coded_size ? info.coded_height : info.height;
        size_t n = (size_t)out_w * out_h * 3;
        unsigned char *rgb = malloc(n);
        char header[64];
        rc = rgb == NULL ? VLMC_DEC_ERR_NO_MEMORY
                         : vlmc_decoder_image(dec, data, size, coded_size ? VLMC_DEC_CODED_SIZE : 0, threads, rgb, n);
        snprintf(header, sizeof header, "P6\n%u %u\n255\n", out_w, out_h);
        if (rc == VLMC_DEC_OK && !write_file(image_path, header, rgb, n)) unwritten = "the image file";
        free(rgb);
    }
    if (rc == VLMC_DEC_OK && !unwritten && out_path) {
        size_t n = (size_t)info.channels * info.latent_height * info.latent_width;
        float *y = malloc(n * sizeof(float));
        rc = y == NULL ? VLMC_DEC_ERR_NO_MEMORY : vlmc_decoder_latents(dec, data, size, flags, threads, y, n);
        if (rc == VLMC_DEC_OK && !write_file(out_path, NULL, y, n * sizeof(float))) unwritten = "the output file";
        free(y);
    }
    if (unwritten) {
        char what[64];
        snprintf(what, sizeof what, "cannot write %s", unwritten);
        free(data);
        vlmc_decoder_free(dec);
        return error(what);
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
    printf("\"}\n");
    free(data);
    vlmc_decoder_free(dec);
    return 0;
}
