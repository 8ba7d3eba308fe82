/* C API test: uses only vlmc_rans.h. Round trip with escapes, chunks, threads; errors. */
#include "vlmc_rans.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define CHECK(cond) CHECK_NOTE(cond, "last error: %s", vlmc_rans_last_error())

int main(void) {
    /* Two tables: [0, 40000, 65000, 65536] (2 symbols + escape, offset -1) and
     * [0, 1, 65536] (1 near-certain symbol + escape, offset 1000000). */
    const int32_t cdf[2][4] = {{0, 40000, 65000, 65536}, {0, 65535, 65536, 0}};
    const int32_t cdf_length[2] = {4, 3};
    const int32_t offsets[2] = {-1, 1000000};
    vlmc_rans_tables *tables = NULL;
    CHECK(vlmc_rans_tables_create(&cdf[0][0], cdf_length, offsets, 2, 4, &tables) ==
          VLMC_RANS_OK);
    CHECK(tables != NULL);
    CHECK(vlmc_rans_format_version() >= 1);

    enum { N = 1000, CHUNKS = 7 };
    int32_t symbols[N], indexes[N], decoded[N];
    uint32_t rng = 12345u;
    for (int i = 0; i < N; ++i) {
        rng = rng * 1664525u + 1013904223u;
        indexes[i] = (int32_t)((rng >> 16) & 1u);
        if (indexes[i] == 0)
            symbols[i] = (int32_t)((rng >> 20) % 3u) - 1; /* -1, 0 (normal) or 1 (escape) */
        else
            symbols[i] = 1000000;
    }
    symbols[3] = INT32_MIN;
    symbols[4] = INT32_MAX;
    indexes[5] = 1;
    symbols[5] = INT32_MIN;

    /* Library-allocated buffer. */
    uint8_t *bytes = NULL;
    size_t sizes[CHUNKS];
    CHECK(vlmc_rans_encode_alloc(tables, symbols, indexes, N, CHUNKS, 2, &bytes, sizes) ==
          VLMC_RANS_OK);
    size_t total = 0;
    for (int c = 0; c < CHUNKS; ++c) total += sizes[c];
    CHECK(total <= vlmc_rans_encode_bound(N, CHUNKS));
    memset(decoded, 0, sizeof decoded);
    CHECK(vlmc_rans_decode(tables, bytes, sizes, CHUNKS, indexes, N, 3, decoded) ==
          VLMC_RANS_OK);
    CHECK(memcmp(decoded, symbols, sizeof decoded) == 0);

    /* Caller buffer: same bytes; too small a buffer is reported. */
    size_t cap = vlmc_rans_encode_bound(N, CHUNKS);
    uint8_t *buf = (uint8_t *)malloc(cap);
    size_t sizes2[CHUNKS];
    CHECK(vlmc_rans_encode(tables, symbols, indexes, N, CHUNKS, 1, buf, cap, sizes2) ==
          VLMC_RANS_OK);
    CHECK(memcmp(sizes, sizes2, sizeof sizes) == 0);
    CHECK(memcmp(buf, bytes, total) == 0);
    CHECK(vlmc_rans_encode(tables, symbols, indexes, N, CHUNKS, 1, buf, 10, sizes2) ==
          VLMC_RANS_ERR_BUFFER_TOO_SMALL);
    CHECK(strlen(vlmc_rans_last_error()) > 0);
    /* a null out is a bad argument, whatever capacity comes with it (it was "too small") */
    CHECK(vlmc_rans_encode(tables, symbols, indexes, N, CHUNKS, 1, NULL, cap, sizes2) ==
          VLMC_RANS_ERR_INVALID_ARGUMENT);
    CHECK(strcmp(vlmc_rans_last_error(), "out is null") == 0);

    /* Corrupt input: truncated last chunk, flipped byte. */
    size_t bad_sizes[CHUNKS];
    memcpy(bad_sizes, sizes, sizeof sizes);
    bad_sizes[CHUNKS - 1] -= 1;
    CHECK(vlmc_rans_decode(tables, bytes, bad_sizes, CHUNKS, indexes, N, 1, decoded) ==
          VLMC_RANS_ERR_CORRUPT);
    buf[sizes[0] / 2] ^= 0x5a;
    CHECK(vlmc_rans_decode(tables, buf, sizes, CHUNKS, indexes, N, 1, decoded) ==
          VLMC_RANS_ERR_CORRUPT);

    /* Bad arguments. */
    indexes[10] = 2;
    CHECK(vlmc_rans_encode(tables, symbols, indexes, N, CHUNKS, 1, buf, cap, sizes2) ==
          VLMC_RANS_ERR_INVALID_ARGUMENT);
    indexes[10] = 0;
    CHECK(vlmc_rans_encode(tables, symbols, indexes, N, 0, 1, buf, cap, sizes2) ==
          VLMC_RANS_ERR_INVALID_ARGUMENT);
    vlmc_rans_tables *bad = NULL;
    const int32_t bad_cdf[4] = {0, 100, 100, 65536}; /* zero-probability symbol */
    CHECK(vlmc_rans_tables_create(bad_cdf, cdf_length, offsets, 1, 4, &bad) ==
          VLMC_RANS_ERR_INVALID_ARGUMENT);
    CHECK(bad == NULL);
    CHECK(strstr(vlmc_rans_last_error(), "increase") != NULL);

    /* Empty input. */
    size_t empty_size = 0;
    uint8_t *empty = NULL;
    CHECK(vlmc_rans_encode_alloc(tables, NULL, NULL, 0, 1, 1, &empty, &empty_size) ==
          VLMC_RANS_OK);
    CHECK(vlmc_rans_decode(tables, empty, &empty_size, 1, NULL, 0, 1, NULL) == VLMC_RANS_OK);
    /* (and in one chunk only) */
    size_t empty_sizes[2];
    CHECK(vlmc_rans_encode(tables, NULL, NULL, 0, 2, 1, buf, cap, empty_sizes) ==
          VLMC_RANS_ERR_INVALID_ARGUMENT);
    CHECK(strstr(vlmc_rans_last_error(), "num_chunks must be 1 when there are no symbols") != NULL);

    vlmc_rans_free(empty);
    vlmc_rans_free(bytes);
    free(buf);
    vlmc_rans_tables_free(tables);
    return check_report("test_c_api");
}
