// vlmcodec rANS — C API (vlmc_rans.h) over the C++ core. No exception crosses this boundary.
#include "vlmc_rans.h"

#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "c_api_error.hpp"
#include "rans.hpp"

struct vlmc_rans_tables {
    vlmc::rans::Tables tables;
};

namespace {

thread_local std::string g_last_error;

int fail(int code, const char *what) { return vlmc::c_api::fail(g_last_error, code, what); }

// Runs fn, mapping C++ exceptions to error codes and the thread-local message.
template <class Fn> int guarded(Fn fn) {
    return vlmc::c_api::guarded(g_last_error, VLMC_RANS_OK, VLMC_RANS_ERR_NO_MEMORY, VLMC_RANS_ERR_INTERNAL, fn,
                                [](const std::exception &e) {
                                    if (dynamic_cast<const vlmc::rans::CorruptStreamError *>(&e))
                                        return VLMC_RANS_ERR_CORRUPT;
                                    if (dynamic_cast<const std::invalid_argument *>(&e))
                                        return VLMC_RANS_ERR_INVALID_ARGUMENT;
                                    return VLMC_RANS_ERR_INTERNAL;
                                });
}

} // namespace

extern "C" {

uint32_t vlmc_rans_format_version(void) { return vlmc::rans::kFormatVersion; }

const char *vlmc_rans_last_error(void) { return g_last_error.c_str(); }

int vlmc_rans_tables_create(const int32_t *cdf, const int32_t *cdf_length, const int32_t *offsets,
                            int64_t num_tables, int64_t row_stride, vlmc_rans_tables **out) {
    if (out == nullptr) return fail(VLMC_RANS_ERR_INVALID_ARGUMENT, "out is null");
    *out = nullptr;
    return guarded([&] {
        *out = new vlmc_rans_tables{
            vlmc::rans::Tables(cdf, cdf_length, offsets, num_tables, row_stride)};
    });
}

void vlmc_rans_tables_free(vlmc_rans_tables *tables) { delete tables; }

size_t vlmc_rans_encode_bound(size_t n, size_t num_chunks) {
    // Per symbol at most 2 bytes, 12 with an escape; per chunk the 8-byte state header.
    return 12 * n + 8 * num_chunks;
}

int vlmc_rans_encode(const vlmc_rans_tables *tables, const int32_t *symbols,
                     const int32_t *indexes, size_t n, size_t num_chunks, int num_threads,
                     uint8_t *out, size_t out_capacity, size_t *chunk_sizes) {
    if (tables == nullptr || chunk_sizes == nullptr)
        return fail(VLMC_RANS_ERR_INVALID_ARGUMENT, "tables or chunk_sizes is null");
    if (out == nullptr) return fail(VLMC_RANS_ERR_INVALID_ARGUMENT, "out is null");
    int rc = VLMC_RANS_OK;
    const int g = guarded([&] {
        auto chunks =
            vlmc::rans::encode(tables->tables, symbols, indexes, n, num_chunks, num_threads);
        size_t total = 0;
        for (const auto &c : chunks) total += c.size();
        if (total > out_capacity) {
            rc = fail(VLMC_RANS_ERR_BUFFER_TOO_SMALL,
                      ("output buffer too small: need " + std::to_string(total) + " bytes, have " +
                       std::to_string(out_capacity))
                          .c_str());
            return;
        }
        size_t pos = 0;
        for (size_t i = 0; i < chunks.size(); ++i) {
            if (chunks[i].size()) std::memcpy(out + pos, chunks[i].data(), chunks[i].size());
            chunk_sizes[i] = chunks[i].size();
            pos += chunks[i].size();
        }
    });
    return g != VLMC_RANS_OK ? g : rc;
}

int vlmc_rans_encode_alloc(const vlmc_rans_tables *tables, const int32_t *symbols,
                           const int32_t *indexes, size_t n, size_t num_chunks, int num_threads,
                           uint8_t **out, size_t *chunk_sizes) {
    if (tables == nullptr || chunk_sizes == nullptr || out == nullptr)
        return fail(VLMC_RANS_ERR_INVALID_ARGUMENT, "tables, out or chunk_sizes is null");
    *out = nullptr;
    return guarded([&] {
        auto chunks =
            vlmc::rans::encode(tables->tables, symbols, indexes, n, num_chunks, num_threads);
        size_t total = 0;
        for (const auto &c : chunks) total += c.size();
        auto *buf = static_cast<uint8_t *>(std::malloc(total > 0 ? total : 1));
        if (buf == nullptr) throw std::bad_alloc();
        size_t pos = 0;
        for (size_t i = 0; i < chunks.size(); ++i) {
            if (chunks[i].size()) std::memcpy(buf + pos, chunks[i].data(), chunks[i].size());
            chunk_sizes[i] = chunks[i].size();
            pos += chunks[i].size();
        }
        *out = buf;
    });
}

void vlmc_rans_free(void *p) { std::free(p); }

int vlmc_rans_decode(const vlmc_rans_tables *tables, const uint8_t *data,
                     const size_t *chunk_sizes, size_t num_chunks, const int32_t *indexes,
                     size_t n, int num_threads, int32_t *out_symbols) {
    if (tables == nullptr || (num_chunks > 0 && chunk_sizes == nullptr))
        return fail(VLMC_RANS_ERR_INVALID_ARGUMENT, "tables or chunk_sizes is null");
    return guarded([&] {
        std::vector<vlmc::rans::ByteSpan> spans(num_chunks);
        size_t pos = 0;
        for (size_t i = 0; i < num_chunks; ++i) {
            if (chunk_sizes[i] > 0 && data == nullptr)
                throw std::invalid_argument("data is null");
            spans[i] = {data == nullptr ? nullptr : data + pos, chunk_sizes[i]};
            pos += chunk_sizes[i];
        }
        vlmc::rans::decode(tables->tables, spans.data(), num_chunks, indexes, n, num_threads,
                           out_symbols);
    });
}

} // extern "C"
