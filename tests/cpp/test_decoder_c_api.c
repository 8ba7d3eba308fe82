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
    CHECK(vlmc_decoder_model_version() == 1);
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
    vlmc_decoder_free(NULL); /* a no-op, as free(NULL) */
    return check_report("test_decoder_c_api");
}
