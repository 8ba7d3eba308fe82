/* vlmcodec rANS entropy coder — C API for embedding (C and C++, no Python).
 *
 * Format and table layout: see rans.hpp (16-bit probabilities, 32-bit state, byte-wise
 * renormalisation, CompressAI-compatible CDF tables with an escape symbol, independent chunks).
 *
 * Conventions: every function returning int returns VLMC_RANS_OK (0) or a negative error code;
 * on error, vlmc_rans_last_error() returns a message for the calling thread (valid until the
 * next call into this library from that thread). Nothing here prints or aborts.
 *
 *   vlmc_rans_tables *tables;
 *   if (vlmc_rans_tables_create(cdf, cdf_length, offsets, T, L, &tables) != VLMC_RANS_OK) ...
 *   size_t sizes[4]; uint8_t *bytes;
 *   vlmc_rans_encode_alloc(tables, symbols, indexes, n, 4, 1, &bytes, sizes);
 *   vlmc_rans_decode(tables, bytes, sizes, 4, indexes, n, 2, decoded);
 *   vlmc_rans_free(bytes); vlmc_rans_tables_free(tables);
 */
#ifndef VLMC_RANS_H
#define VLMC_RANS_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#if defined(VLMC_RANS_BUILDING_SHARED)
#define VLMC_RANS_API __declspec(dllexport)
#elif defined(VLMC_RANS_USING_SHARED)
#define VLMC_RANS_API __declspec(dllimport)
#else
#define VLMC_RANS_API
#endif
#else
#define VLMC_RANS_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum {
    VLMC_RANS_OK = 0,
    VLMC_RANS_ERR_INVALID_ARGUMENT = -1, /* bad table, index out of range, bad num_chunks, ... */
    VLMC_RANS_ERR_CORRUPT = -2,          /* coded data is corrupt or truncated */
    VLMC_RANS_ERR_BUFFER_TOO_SMALL = -3, /* out_capacity too small (see vlmc_rans_encode_bound) */
    VLMC_RANS_ERR_NO_MEMORY = -4,
    VLMC_RANS_ERR_INTERNAL = -5
};

typedef struct vlmc_rans_tables vlmc_rans_tables;

/* Bitstream format version of the chunks this library writes and reads. */
VLMC_RANS_API uint32_t vlmc_rans_format_version(void);

/* Message for the last error on this thread ("" if none). */
VLMC_RANS_API const char *vlmc_rans_last_error(void);

/* Validates and prepares num_tables CDF tables. cdf: num_tables rows of row_stride int32;
 * row t: cdf_length[t] entries rising strictly from 0 to 65536 (escape = index cdf_length-2);
 * offsets[t]: the value of symbol index 0. The arrays are copied. Free with
 * vlmc_rans_tables_free. Returns VLMC_RANS_ERR_INVALID_ARGUMENT on a malformed table. */
VLMC_RANS_API int vlmc_rans_tables_create(const int32_t *cdf, const int32_t *cdf_length,
                                          const int32_t *offsets, int64_t num_tables,
                                          int64_t row_stride, vlmc_rans_tables **out);
VLMC_RANS_API void vlmc_rans_tables_free(vlmc_rans_tables *tables);

/* An upper bound on the total encoded size of n symbols in num_chunks chunks. */
VLMC_RANS_API size_t vlmc_rans_encode_bound(size_t n, size_t num_chunks);

/* Encodes symbols[i] with table indexes[i] (i < n) into num_chunks chunks (1 <= num_chunks,
 * and num_chunks <= n when n > 0, num_chunks = 1 when n = 0), using up to num_threads threads
 * (result independent of it). The chunks are written back to back into out[0 .. out_capacity)
 * (out not null: VLMC_RANS_ERR_INVALID_ARGUMENT); chunk_sizes[c] receives the byte length of
 * chunk c. */
VLMC_RANS_API int vlmc_rans_encode(const vlmc_rans_tables *tables, const int32_t *symbols,
                                   const int32_t *indexes, size_t n, size_t num_chunks,
                                   int num_threads, uint8_t *out, size_t out_capacity,
                                   size_t *chunk_sizes);

/* As vlmc_rans_encode, into a buffer the library allocates (*out; free with vlmc_rans_free).
 * The total size is the sum of chunk_sizes. */
VLMC_RANS_API int vlmc_rans_encode_alloc(const vlmc_rans_tables *tables, const int32_t *symbols,
                                         const int32_t *indexes, size_t n, size_t num_chunks,
                                         int num_threads, uint8_t **out, size_t *chunk_sizes);

VLMC_RANS_API void vlmc_rans_free(void *p);

/* Decodes n symbols into out_symbols from num_chunks chunks (a count vlmc_rans_encode takes)
 * stored back to back in data (chunk c has chunk_sizes[c] bytes), with table indexes[i] for
 * symbol i, on up to num_threads threads. Never reads outside data[0 .. sum(chunk_sizes)).
 * Returns VLMC_RANS_ERR_CORRUPT on corrupt data (out_symbols then holds unspecified values). */
VLMC_RANS_API int vlmc_rans_decode(const vlmc_rans_tables *tables, const uint8_t *data,
                                   const size_t *chunk_sizes, size_t num_chunks,
                                   const int32_t *indexes, size_t n, int num_threads,
                                   int32_t *out_symbols);

#ifdef __cplusplus
}
#endif

#endif /* VLMC_RANS_H */
