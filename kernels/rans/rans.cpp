// vlmcodec rANS entropy coder — implementation. See rans.hpp for the format.
#include "rans.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <limits>
#include <queue>
#include <thread>
#include <utility>

namespace vlmc::rans {
namespace {

constexpr uint32_t kStateUpper = kStateLower << 8;                            // 2^31 (exclusive)
constexpr uint32_t kBypassXMax = ((kStateLower >> kBypassBits) << 8);          // freq 1 at 4 bits
constexpr int kLutShift = kPrecision - kLutBits;
constexpr uint32_t kLutSize = (1u << kLutBits) + 1;
constexpr size_t kMaxBytesPerSymbol = 2 + 1 + kMaxBypassGroups;                // esc + count + groups
constexpr size_t kHeaderBytes = 4 * kNumStates;

std::string table_prefix(int64_t t) { return "CDF table " + std::to_string(t) + ": "; }

// ---- encoder primitives (ryg_rans byte variant, reciprocal form) ----

inline void enc_put(uint32_t &x, uint8_t *&ptr, const Tables::EncSymbol &s) {
    // At 16-bit precision, x < 2^31 and x_max >= 2^15: k = 0, 1 or 2 bytes go out. Both are
    // stored unconditionally (the caller guarantees room; a byte not kept lies below the final
    // start of the chunk or is overwritten), avoiding a data-dependent branch.
    const uint32_t k = static_cast<uint32_t>(x >= s.x_max) +
                       static_cast<uint32_t>(x >= (static_cast<uint64_t>(s.x_max) << 8));
    ptr[-1] = static_cast<uint8_t>(x);
    ptr[-2] = static_cast<uint8_t>(x >> 8);
    ptr -= k;
    x >>= 8 * k;
    const uint32_t q =
        static_cast<uint32_t>((static_cast<uint64_t>(x) * s.rcp_freq) >> 32) >> s.rcp_shift;
    x = x + s.bias + q * s.cmpl_freq;
}

inline void enc_put_bypass(uint32_t &x, uint8_t *&ptr, uint32_t bits) {
    if (x >= kBypassXMax) { // x < 2^31: one byte is enough
        *--ptr = static_cast<uint8_t>(x);
        x >>= 8;
    }
    x = (x << kBypassBits) | bits;
}

// ---- decoder primitives ----

struct DecStream {
    const uint8_t *ptr;
    const uint8_t *end;
    size_t chunk;
};

[[noreturn]] void throw_out_of_bytes(const DecStream &s) {
    throw CorruptStreamError("rANS chunk " + std::to_string(s.chunk) +
                             " is corrupt or truncated: ran out of bytes");
}

inline void dec_renorm_checked(uint32_t &x, DecStream &s) {
    while (x < kStateLower) {
        if (s.ptr == s.end) throw_out_of_bytes(s);
        x = (x << 8) | *s.ptr++;
    }
}

// After a symbol decode x >= 2^7, so at most two bytes are needed. Away from the end of the
// chunk, read both and keep k = 0, 1 or 2 of them without a data-dependent branch.
inline void dec_renorm(uint32_t &x, DecStream &s) {
    if (s.end - s.ptr < 2) return dec_renorm_checked(x, s);
    const uint32_t k = static_cast<uint32_t>(x < kStateLower) + static_cast<uint32_t>(x < (1u << 15));
    const uint32_t two = static_cast<uint32_t>(s.ptr[0]) << 8 | s.ptr[1];
    x = static_cast<uint32_t>((static_cast<uint64_t>(x) << (8 * k)) | (two >> (8 * (2 - k))));
    s.ptr += k;
}

inline uint32_t dec_get_bypass(uint32_t &x, DecStream &s) {
    const uint32_t bits = x & ((1u << kBypassBits) - 1);
    x >>= kBypassBits;
    dec_renorm(x, s);
    return bits;
}

inline uint32_t find_symbol(const uint32_t *cdf, const uint16_t *lut, uint32_t slot) {
    const uint32_t b = slot >> kLutShift;
    uint32_t s = lut[b];
    const uint32_t hi = lut[b + 1];
    // The symbol holding `slot` is in [lut[b], lut[b+1]]; usually one or two symbols, resolved
    // without a data-dependent branch (cdf[s + 1] exists: s <= esc = cdf_length - 2).
    if (hi - s <= 1) return s + static_cast<uint32_t>(cdf[s + 1] <= slot);
    if (hi - s > 8) { // binary search: largest s in [lo, hi] with cdf[s] <= slot
        uint32_t lo = s, h = hi;
        while (lo < h) {
            const uint32_t mid = (lo + h + 1) >> 1;
            if (cdf[mid] <= slot) lo = mid;
            else h = mid - 1;
        }
        return lo;
    }
    while (s < hi && cdf[s + 1] <= slot) ++s;
    return s;
}

[[noreturn]] void throw_bad_index(size_t pos, int32_t t, int64_t num_tables) {
    throw std::invalid_argument("indexes[" + std::to_string(pos) + "] = " + std::to_string(t) +
                                " is out of range [0, " + std::to_string(num_tables) + ")");
}

// Runs fn(i) for i in [0, count) on up to num_threads threads (the calling thread included).
// Every exception is captured; the one of the lowest i is rethrown. Workers stop taking new
// items after a failure; items are taken in increasing order, so every item below a failed
// one has been run and the lowest failure is the same for any thread count.
template <class Fn> void parallel_for(size_t count, int num_threads, Fn fn) {
    const size_t workers = std::min<size_t>(
        {count, static_cast<size_t>(std::max(1, num_threads)), kMaxThreads});
    if (workers <= 1) {
        for (size_t i = 0; i < count; ++i) fn(i);
        return;
    }
    std::vector<std::exception_ptr> errors(count);
    std::atomic<size_t> next{0};
    std::atomic<bool> failed{false};
    auto work = [&]() {
        for (;;) {
            if (failed.load(std::memory_order_relaxed)) return;
            const size_t i = next.fetch_add(1);
            if (i >= count) return;
            try {
                fn(i);
            } catch (...) {
                errors[i] = std::current_exception();
                failed.store(true);
            }
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    try {
        for (size_t w = 0; w + 1 < workers; ++w) pool.emplace_back(work);
    } catch (...) {
        // Could not start a thread: the calling thread finishes the work alone.
    }
    work();
    for (auto &t : pool) t.join();
    for (auto &e : errors)
        if (e) std::rethrow_exception(e);
}

EncodedChunk encode_chunk(const Tables &tables, const int32_t *symbols, const int32_t *indexes,
                          size_t begin, size_t len) {
    const Tables::Info *info = tables.info();
    const Tables::EncSymbol *enc = tables.enc();
    const uint32_t num_tables = static_cast<uint32_t>(tables.num_tables());

    EncodedChunk out;
    out.buf.resize(len + 64 + kHeaderBytes);
    uint8_t *base = out.buf.data();
    uint8_t *ptr = base + out.buf.size();

    auto ensure_room = [&]() {
        if (static_cast<size_t>(ptr - base) >= kMaxBytesPerSymbol + kHeaderBytes) return;
        const size_t used = static_cast<size_t>(base + out.buf.size() - ptr);
        std::vector<uint8_t> bigger(out.buf.size() * 2);
        std::memcpy(bigger.data() + bigger.size() - used, ptr, used);
        out.buf.swap(bigger);
        base = out.buf.data();
        ptr = base + out.buf.size() - used;
    };

    auto code = [&](uint32_t &x, size_t j) {
        ensure_room();
        const int32_t t = indexes[j];
        if (static_cast<uint32_t>(t) >= num_tables) throw_bad_index(begin + j, t, num_tables);
        const Tables::Info ti = info[t];
        const int64_t u = static_cast<int64_t>(symbols[j]) - ti.offset;
        const Tables::EncSymbol *es = enc + ti.cdf_base;
        if (u >= 0 && u < static_cast<int64_t>(ti.esc)) {
            enc_put(x, ptr, es[u]);
            return;
        }
        // Escape: distance from the range, sign-folded, in 4-bit groups (see rans.hpp).
        const uint64_t w = u < 0 ? (static_cast<uint64_t>(-u - 1) << 1) | 1u
                                 : static_cast<uint64_t>(u - static_cast<int64_t>(ti.esc)) << 1;
        int groups = 1;
        while (groups < kMaxBypassGroups && (w >> (kBypassBits * groups)) != 0) ++groups;
        for (int g = groups - 1; g >= 0; --g)
            enc_put_bypass(x, ptr, static_cast<uint32_t>(w >> (kBypassBits * g)) & 15u);
        enc_put_bypass(x, ptr, static_cast<uint32_t>(groups - 1));
        enc_put(x, ptr, es[ti.esc]);
    };

    // Symbol j uses state j % kNumStates; the encoder runs backwards, so the last symbols of
    // the chunk (an incomplete group) come first.
    uint32_t x[kNumStates];
    for (uint32_t &xi : x) xi = kStateLower;
    size_t j = len;
    while (j % kNumStates != 0) {
        --j;
        code(x[j % kNumStates], j);
    }
    while (j >= kNumStates) {
        j -= kNumStates;
        for (int k = kNumStates - 1; k >= 0; --k) code(x[k], j + static_cast<size_t>(k));
    }
    for (int k = kNumStates - 1; k >= 0; --k) { // state 0 ends up first
        ptr -= 4;
        ptr[0] = static_cast<uint8_t>(x[k]);
        ptr[1] = static_cast<uint8_t>(x[k] >> 8);
        ptr[2] = static_cast<uint8_t>(x[k] >> 16);
        ptr[3] = static_cast<uint8_t>(x[k] >> 24);
    }
    out.begin = static_cast<size_t>(ptr - base);
    return out;
}

void decode_chunk(const Tables &tables, ByteSpan bytes, size_t chunk, const int32_t *indexes,
                  size_t begin, size_t len, int32_t *out) {
    const Tables::Info *info = tables.info();
    const uint32_t *cdf_all = tables.cdf();
    const uint16_t *lut_all = tables.lut();
    const uint32_t num_tables = static_cast<uint32_t>(tables.num_tables());

    if (bytes.size < kHeaderBytes || (bytes.data == nullptr && bytes.size != 0))
        throw CorruptStreamError("rANS chunk " + std::to_string(chunk) + " has " +
                                 std::to_string(bytes.size) + " bytes, fewer than its " +
                                 std::to_string(kHeaderBytes) + "-byte header");
    DecStream s{bytes.data, bytes.data + bytes.size, chunk};
    uint32_t x[kNumStates];
    for (uint32_t &xi : x) {
        xi = static_cast<uint32_t>(s.ptr[0]) | static_cast<uint32_t>(s.ptr[1]) << 8 |
             static_cast<uint32_t>(s.ptr[2]) << 16 | static_cast<uint32_t>(s.ptr[3]) << 24;
        s.ptr += 4;
        if (xi < kStateLower || xi >= kStateUpper)
            throw CorruptStreamError("rANS chunk " + std::to_string(chunk) +
                                     " is corrupt: initial state out of range");
    }
    auto code = [&](uint32_t &x, size_t j) {
        const int32_t t = indexes[j];
        if (static_cast<uint32_t>(t) >= num_tables) throw_bad_index(begin + j, t, num_tables);
        const Tables::Info ti = info[t];
        const uint32_t *cdf = cdf_all + ti.cdf_base;
        const uint32_t slot = x & (kTotal - 1);
        const uint32_t sym = find_symbol(cdf, lut_all + ti.lut_base, slot);
        const uint32_t start = cdf[sym];
        const uint32_t freq = cdf[sym + 1] - start;
        x = freq * (x >> kPrecision) + slot - start;
        dec_renorm(x, s);
        if (sym != ti.esc) {
            out[j] = static_cast<int32_t>(ti.offset + static_cast<int64_t>(sym));
            return;
        }
        const uint32_t count = dec_get_bypass(x, s);
        if (count >= static_cast<uint32_t>(kMaxBypassGroups))
            throw CorruptStreamError("rANS chunk " + std::to_string(chunk) +
                                     " is corrupt: bad escape length");
        uint64_t w = 0;
        uint32_t g = 0;
        for (uint32_t k = 0; k <= count; ++k) {
            g = dec_get_bypass(x, s);
            w |= static_cast<uint64_t>(g) << (kBypassBits * k);
        }
        if (count > 0 && g == 0)
            throw CorruptStreamError("rANS chunk " + std::to_string(chunk) +
                                     " is corrupt: non-canonical escape payload");
        const int64_t d = static_cast<int64_t>(w >> 1);
        const int64_t v = (w & 1) ? static_cast<int64_t>(ti.offset) - 1 - d
                                  : static_cast<int64_t>(ti.offset) + ti.esc + d;
        if (v < std::numeric_limits<int32_t>::min() || v > std::numeric_limits<int32_t>::max())
            throw CorruptStreamError("rANS chunk " + std::to_string(chunk) +
                                     " is corrupt: escape value out of int32 range");
        out[j] = static_cast<int32_t>(v);
    };

    indexes += begin;
    out += begin;
    size_t j = 0;
    for (; j + kNumStates <= len; j += kNumStates)
        for (int k = 0; k < kNumStates; ++k) code(x[k], j + static_cast<size_t>(k));
    for (; j < len; ++j) code(x[j % kNumStates], j);

    for (uint32_t xi : x)
        if (xi != kStateLower)
            throw CorruptStreamError("rANS chunk " + std::to_string(chunk) +
                                     " is corrupt: final state mismatch");
    if (s.ptr != s.end)
        throw CorruptStreamError("rANS chunk " + std::to_string(chunk) + " is corrupt: " +
                                 std::to_string(s.end - s.ptr) + " bytes left over");
}

} // namespace

// ---------------------------------------------------------------------------------------------

Tables::Tables(const int32_t *cdf, const int32_t *cdf_length, const int32_t *offsets,
               int64_t num_tables, int64_t row_stride) {
    if (num_tables < 1)
        throw std::invalid_argument("CDF tables: need at least one table, got " +
                                    std::to_string(num_tables));
    if (row_stride < 2)
        throw std::invalid_argument("CDF tables: rows must hold at least 2 entries, got " +
                                    std::to_string(row_stride));
    if (cdf == nullptr || cdf_length == nullptr || offsets == nullptr)
        throw std::invalid_argument("CDF tables: null array");
    // (table t's lookup table starts at t · kLutSize, which Info holds in a uint32_t)
    constexpr int64_t kMaxTables = std::numeric_limits<uint32_t>::max() / kLutSize + 1;
    if (num_tables > kMaxTables)
        throw std::invalid_argument("CDF tables: at most " + std::to_string(kMaxTables) +
                                    " tables, got " + std::to_string(num_tables));
    uint64_t total = 0;
    for (int64_t t = 0; t < num_tables; ++t) {
        const int64_t len = cdf_length[t];
        if (len < 2 || len > row_stride || len > kMaxCdfLength)
            throw std::invalid_argument(
                table_prefix(t) + "cdf_length " + std::to_string(len) + " is out of range [2, " +
                std::to_string(std::min<int64_t>(row_stride, kMaxCdfLength)) +
                "] (row width " + std::to_string(row_stride) + ", at most 65537 at 16 bits)");
        const int32_t *row = cdf + t * row_stride;
        if (row[0] != 0)
            throw std::invalid_argument(table_prefix(t) + "cdf[0] must be 0, got " +
                                        std::to_string(row[0]));
        if (row[len - 1] != static_cast<int32_t>(kTotal))
            throw std::invalid_argument(table_prefix(t) + "cdf[" + std::to_string(len - 1) +
                                        "] (the last entry) must be 65536, got " +
                                        std::to_string(row[len - 1]));
        for (int64_t s = 0; s + 1 < len; ++s)
            if (row[s + 1] <= row[s])
                throw std::invalid_argument(
                    table_prefix(t) + "cdf must increase strictly (every symbol needs probability "
                    ">= 1/65536), but cdf[" + std::to_string(s) + "] = " + std::to_string(row[s]) +
                    " and cdf[" + std::to_string(s + 1) + "] = " + std::to_string(row[s + 1]));
        total += static_cast<uint64_t>(len);
    }
    if (total >= (1ull << 32))
        throw std::invalid_argument("CDF tables: more than 2^32 entries in total");

    info_.resize(static_cast<size_t>(num_tables));
    cdf_.resize(total);
    enc_.resize(total);
    lut_.resize(static_cast<size_t>(num_tables) * kLutSize);
    uint32_t base = 0;
    for (int64_t t = 0; t < num_tables; ++t) {
        const uint32_t len = static_cast<uint32_t>(cdf_length[t]);
        const int32_t *row = cdf + t * row_stride;
        Info &ti = info_[t];
        ti.cdf_base = base;
        ti.esc = len - 2;
        ti.offset = offsets[t];
        ti.lut_base = static_cast<uint32_t>(t) * kLutSize;
        uint32_t *c = cdf_.data() + base;
        for (uint32_t s = 0; s < len; ++s) c[s] = static_cast<uint32_t>(row[s]);
        for (uint32_t s = 0; s + 1 < len; ++s) {
            const uint32_t start = c[s], freq = c[s + 1] - c[s];
            EncSymbol &e = enc_[base + s];
            e.x_max = ((kStateLower >> kPrecision) << 8) * freq;
            e.cmpl_freq = static_cast<uint16_t>(kTotal - freq);
            if (freq < 2) {
                e.rcp_freq = ~0u;
                e.rcp_shift = 0;
                e.bias = start + kTotal - 1;
            } else {
                uint32_t shift = 0;
                while (freq > (1u << shift)) ++shift;
                e.rcp_freq = static_cast<uint32_t>(((1ull << (shift + 31)) + freq - 1) / freq);
                e.rcp_shift = static_cast<uint16_t>(shift - 1);
                e.bias = start;
            }
        }
        uint16_t *lut = lut_.data() + ti.lut_base;
        uint32_t s = 0;
        for (uint32_t b = 0; b + 1 < kLutSize; ++b) {
            const uint32_t slot = b << kLutShift;
            while (c[s + 1] <= slot) ++s;
            lut[b] = static_cast<uint16_t>(s);
        }
        lut[kLutSize - 1] = static_cast<uint16_t>(len - 2);
        base += len;
    }
}

size_t chunk_begin(size_t i, size_t n, size_t num_chunks) {
    // i·n/num_chunks without overflow: i·(q·k + r)/k = i·q + i·r/k.
    const size_t q = n / num_chunks, r = n % num_chunks;
    return i * q + static_cast<size_t>((static_cast<unsigned __int128>(i) * r) / num_chunks);
}

void check_num_chunks(size_t n, size_t num_chunks) {
    if (num_chunks < 1)
        throw std::invalid_argument("num_chunks must be >= 1, got " + std::to_string(num_chunks));
    if (n == 0 && num_chunks != 1)  // (any count was taken: 10^7 empty chunks took 1.6 GB)
        throw std::invalid_argument("num_chunks must be 1 when there are no symbols, got " +
                                    std::to_string(num_chunks));
    if (n > 0 && num_chunks > n)
        throw std::invalid_argument("num_chunks (" + std::to_string(num_chunks) +
                                    ") must not exceed the number of symbols (" +
                                    std::to_string(n) + ")");
}

std::vector<EncodedChunk> encode(const Tables &tables, const int32_t *symbols,
                                 const int32_t *indexes, size_t n, size_t num_chunks,
                                 int num_threads) {
    check_num_chunks(n, num_chunks);
    if (n > 0 && (symbols == nullptr || indexes == nullptr))
        throw std::invalid_argument("encode: null symbols or indexes");
    std::vector<EncodedChunk> chunks(num_chunks);
    parallel_for(num_chunks, num_threads, [&](size_t i) {
        const size_t b = chunk_begin(i, n, num_chunks), e = chunk_begin(i + 1, n, num_chunks);
        chunks[i] = encode_chunk(tables, symbols + b, indexes + b, b, e - b);
    });
    return chunks;
}

void decode(const Tables &tables, const ByteSpan *chunks, size_t num_chunks,
            const int32_t *indexes, size_t n, int num_threads, int32_t *out) {
    check_num_chunks(n, num_chunks);
    if (chunks == nullptr) throw std::invalid_argument("decode: null chunk list");
    if (n > 0 && (indexes == nullptr || out == nullptr))
        throw std::invalid_argument("decode: null indexes or output");
    parallel_for(num_chunks, num_threads, [&](size_t i) {
        const size_t b = chunk_begin(i, n, num_chunks), e = chunk_begin(i + 1, n, num_chunks);
        decode_chunk(tables, chunks[i], i, indexes, b, e - b, out);
    });
}

std::vector<int32_t> pmf_to_quantized_cdf(const double *pmf, size_t m, double tail_mass,
                                          int precision) {
    if (precision < 1 || precision > kPrecision)
        throw std::invalid_argument("precision must be in [1, 16], got " +
                                    std::to_string(precision));
    const int64_t target = int64_t{1} << precision;
    if (static_cast<int64_t>(m) + 1 > target)
        throw std::invalid_argument("pmf has " + std::to_string(m) +
                                    " entries; with the escape symbol at most 2^precision - 1 fit");
    if (m > 0 && pmf == nullptr) throw std::invalid_argument("pmf is null");
    std::vector<double> p(m + 1);
    for (size_t i = 0; i < m; ++i) p[i] = pmf[i];
    p[m] = tail_mass;
    double sum = 0.0;
    for (size_t i = 0; i <= m; ++i) {
        if (!std::isfinite(p[i]) || p[i] < 0.0)
            throw std::invalid_argument(
                (i < m ? "pmf[" + std::to_string(i) + "]" : std::string("tail_mass")) +
                " must be finite and >= 0");
        sum += p[i];
    }
    if (!(sum > 0.0) || !std::isfinite(sum))
        throw std::invalid_argument("pmf and tail_mass must have a positive, finite sum");

    std::vector<int64_t> f(m + 1);
    int64_t total = 0;
    for (size_t i = 0; i <= m; ++i) {
        // p_i / sum <= 1 (finite even for a subnormal sum); the power-of-two scale is exact.
        const double v = (p[i] / sum) * static_cast<double>(target); // no FMA: -ffp-contract=off
        f[i] = std::max<int64_t>(1, std::llround(v));
        total += f[i];
    }
    if (total > target) {
        // Steal one unit at a time from the largest bin (lowest index on ties), never below 1.
        std::priority_queue<std::pair<int64_t, int64_t>> heap; // (freq, -index)
        for (size_t i = 0; i <= m; ++i)
            if (f[i] > 1) heap.emplace(f[i], -static_cast<int64_t>(i));
        while (total > target) {
            auto [freq, neg_i] = heap.top();
            heap.pop();
            f[static_cast<size_t>(-neg_i)] = freq - 1;
            --total;
            if (freq - 1 > 1) heap.emplace(freq - 1, neg_i);
        }
    } else if (total < target) {
        // Give the shortfall to the largest bin (lowest index on ties).
        size_t best = 0;
        for (size_t i = 1; i <= m; ++i)
            if (f[i] > f[best]) best = i;
        f[best] += target - total;
    }
    std::vector<int32_t> cdf(m + 2);
    cdf[0] = 0;
    for (size_t i = 0; i <= m; ++i) cdf[i + 1] = cdf[i] + static_cast<int32_t>(f[i]);
    return cdf;
}

} // namespace vlmc::rans
