/* C API test of the stream decoder without a model: versions, argument checks, model-file errors.
 * (Decoding real streams, bit for bit against the Python decoder: tests/test_c_decoder.py.) */
#include "vlmc_decoder.h"

#include <stdio.h>
#include <string.h>

#include "check.h"

#define CHECK(cond) CHECK_NOTE(cond, "last error: %s", vlmc_decoder_last_error())

int main(int argc, char **argv) {
    vlmc_decoder *dec = (vlmc_decoder *)1;
    vlmc_stream_info info;
    float out[4];
    const char *junk_path = argc > 1 ? argv[1] : "vlmc_decoder_junk.vlmd";
    FILE *f;

    CHECK(vlmc_decoder_stream_version() == 1);
    CHECK(vlmc_decoder_model_version() == 3);
    CHECK(vlmc_decoder_open(NULL, &dec) == VLMC_DEC_ERR_INVALID_ARGUMENT);
    CHECK(strlen(vlmc_decoder_last_error()) > 0);
    CHECK(vlmc_decoder_open("/nonexistent/decoder_model.vlmd", &dec) == VLMC_DEC_ERR_BAD_MODEL_FILE);
    CHECK(dec == NULL);
    CHECK(strstr(vlmc_decoder_last_error(), "cannot open") != NULL);

    f = fopen(junk_path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        fputs("this is not an decoder-model file at all", f);
        fclose(f);
        CHECK(vlmc_decoder_open(junk_path, &dec) == VLMC_DEC_ERR_BAD_MODEL_FILE);
        CHECK(strstr(vlmc_decoder_last_error(), "bad magic") != NULL);
        remove(junk_path);
    }
    CHECK(vlmc_decoder_stream_info(NULL, (const uint8_t *)"VLMC", 4, &info) == VLMC_DEC_ERR_INVALID_ARGUMENT);
    CHECK(vlmc_decoder_latents(NULL, (const uint8_t *)"VLMC", 4, 0, 1, out, 4) == VLMC_DEC_ERR_INVALID_ARGUMENT);
    CHECK(vlmc_decoder_set_max_pixels(NULL, 10) == VLMC_DEC_ERR_INVALID_ARGUMENT);
    CHECK(vlmc_decoder_set_band_pixels(NULL, 10) == VLMC_DEC_ERR_INVALID_ARGUMENT);
    {
        uint64_t held = 7;
        CHECK(vlmc_decoder_set_cache_bytes(NULL, 10) == VLMC_DEC_ERR_INVALID_ARGUMENT);
        CHECK(vlmc_decoder_cached_bytes(NULL, &held) == VLMC_DEC_ERR_INVALID_ARGUMENT && held == 7);
    }
    vlmc_decoder_free(NULL); /* a no-op, as free(NULL) */
    /* the stream writer's argument checks without a model (with one: tests/test_c_stream_writer.py) */
    {
        uint8_t *stream = (uint8_t *)1;
        size_t n = 7, ny = 0, nz = 0;
        float gain[4];
        CHECK(vlmc_decoder_can_write(NULL) == VLMC_DEC_ERR_INVALID_ARGUMENT);
        CHECK(vlmc_decoder_gain(NULL, 50.0, gain, 4) == VLMC_DEC_ERR_INVALID_ARGUMENT);
        CHECK(vlmc_decoder_latent_size(NULL, 64, 64, &ny, &nz) == VLMC_DEC_ERR_INVALID_ARGUMENT);
        CHECK(vlmc_decoder_write_stream(NULL, out, 4, out, 4, 64, 64, 0, 0, 50.0, 0, 1, &stream, &n) ==
              VLMC_DEC_ERR_INVALID_ARGUMENT);
        CHECK(stream == NULL && n == 0); /* cleared on failure */
        vlmc_decoder_free_stream(NULL);  /* a no-op */
        /* and the image encoder's (with a model: tests/test_c_encoder.py) */
        {
            const uint8_t rgb[3] = {1, 2, 3};
            double q = -1;
            CHECK(vlmc_decoder_can_encode(NULL) == VLMC_DEC_ERR_INVALID_ARGUMENT);
            stream = (uint8_t *)1, n = 7;
            CHECK(vlmc_decoder_encode_image(NULL, rgb, 1, 1, 50.0, 0, 0, 1, &stream, &n) == VLMC_DEC_ERR_INVALID_ARGUMENT);
            CHECK(stream == NULL && n == 0);
            {
                const vlmc_pixels px = {rgb, 1, 1, 0, VLMC_PIXELS_RGB8};
                stream = (uint8_t *)1, n = 7;
                CHECK(vlmc_decoder_encode_pixels(NULL, &px, 50.0, 0, 0, 1, &stream, &n) == VLMC_DEC_ERR_INVALID_ARGUMENT);
                CHECK(stream == NULL && n == 0);
                stream = (uint8_t *)1, n = 7;
                CHECK(vlmc_decoder_encode_pixels_within(NULL, &px, 0, 100, 0.0, 100.0, 0, 1, &stream, &n, &q) ==
                      VLMC_DEC_ERR_INVALID_ARGUMENT);
                CHECK(stream == NULL && n == 0);
            }
            stream = (uint8_t *)1, n = 7;
            CHECK(vlmc_decoder_encode_image_within(NULL, rgb, 1, 1, 0, 1000, 0.0, 100.0, 0, 1, &stream, &n, &q) ==
                  VLMC_DEC_ERR_INVALID_ARGUMENT);
            CHECK(stream == NULL && n == 0);
            CHECK(vlmc_decoder_analyse_image(NULL, rgb, 1, 1, 50.0, 0, 0, 1, out, 4, out, 4) ==
                  VLMC_DEC_ERR_INVALID_ARGUMENT);
        }
    }
    /* from memory: the same checks as from a file */
    CHECK(vlmc_decoder_open_memory(NULL, 0, &dec) == VLMC_DEC_ERR_BAD_MODEL_FILE && dec == NULL);
    CHECK(strstr(vlmc_decoder_last_error(), "bad magic") != NULL);
    CHECK(vlmc_decoder_open_memory((const uint8_t *)"VLMCDEC\0 not really a model", 28, &dec) ==
          VLMC_DEC_ERR_BAD_MODEL_FILE);
    CHECK(strstr(vlmc_decoder_last_error(), "CRC-32") != NULL);
    CHECK(vlmc_decoder_open_memory(NULL, 10, &dec) == VLMC_DEC_ERR_INVALID_ARGUMENT);
    CHECK(vlmc_decoder_open_memory((const uint8_t *)"x", 1, NULL) == VLMC_DEC_ERR_INVALID_ARGUMENT);

    /* a consumer's size: the shorter side scaled, each side rounded half to even (Python's round),
     * never above the original; 0 = the original; below 16 refused */
    {
        static const uint32_t cases[][5] = {
            /* width, height, short_side → width, height */
            {768, 512, 256, 384, 256}, {512, 768, 224, 224, 336}, {768, 512, 512, 768, 512},
            {768, 512, 4000, 768, 512}, {768, 512, 0, 768, 512}, {32, 33, 16, 16, 16}, /* 16.5 → 16 */
            {32, 35, 16, 16, 18},                                                      /* 17.5 → 18 */
            {5000, 20, 16, 4000, 16},
        };
        size_t k;
        for (k = 0; k < sizeof cases / sizeof cases[0]; ++k) {
            uint32_t w = 0, h = 0;
            memset(&info, 0, sizeof info);
            info.width = cases[k][0], info.height = cases[k][1];
            CHECK(vlmc_decoder_consumer_size(&info, cases[k][2], &w, &h) == VLMC_DEC_OK);
            CHECK_NOTE(w == cases[k][3] && h == cases[k][4], "%ux%u at %u: %ux%u, want %ux%u", cases[k][0], cases[k][1],
                       cases[k][2], w, h, cases[k][3], cases[k][4]);
        }
        uint32_t w, h;
        CHECK(vlmc_decoder_consumer_size(&info, 15, &w, &h) == VLMC_DEC_ERR_INVALID_ARGUMENT);
        CHECK(strstr(vlmc_decoder_last_error(), "short_side must be 0 or at least 16") != NULL);
        CHECK(vlmc_decoder_consumer_size(NULL, 256, &w, &h) == VLMC_DEC_ERR_INVALID_ARGUMENT);
        CHECK(vlmc_decoder_image_at(NULL, (const uint8_t *)"VLMC", 4, 256, 1, NULL, 0) == VLMC_DEC_ERR_INVALID_ARGUMENT);
    }
    return check_report("test_decoder_c_api");
}
