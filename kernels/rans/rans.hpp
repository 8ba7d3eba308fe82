// vlmcodec rANS entropy coder — pure C++ core (no Python).
//
// Coder choice (DESIGN.md, "Entropy coding"):
//   * 16-bit probability precision: every CDF runs from 0 to 65536.
//   * 32-bit state, byte-wise renormalisation (ryg_rans "byte" variant): the state x stays in
//     [L, 256·L) with L = 2^23, bytes are shifted in/out one at a time. This keeps the
//     stream byte-aligned, the state in a register, and the multiplies 32×32→64 at most.
//   * Two interleaved states per chunk: symbol j of a chunk uses state j % 2, both states share
//     one byte stream. It breaks the single-state dependency chain (measured ~1.5× decode speed
//     vs one state on an EPYC core; four states gave nothing more) and costs 4 bytes per chunk.
//   * Decoder symbol search: per table a 2^10-bucket lookup table, lut[b] = the symbol holding
//     slot 64·b, so the symbol of any slot of bucket b lies in [lut[b], lut[b+1]]; one
//     branch-free step resolves 1–2 candidates, a short linear or binary search wider ranges. Renormalisation is branch-free
//     (0, 1 or 2 bytes) in both directions.
//
// Tables use CompressAI's layout so the same arrays can be fed to CompressAI's coder: for table
// t, cdf[t][0 .. cdf_length[t]-1] rises strictly from 0 to 65536; symbol index
// s ∈ [0, cdf_length[t]-2) codes the value offsets[t] + s; index esc = cdf_length[t]-2 is the
// escape ("overflow") symbol. A value outside [offsets[t], offsets[t]+esc) is coded as the
// escape symbol followed by its distance from the range in bypass mode (see "Escape payload"
// below), so every int32 round-trips, nothing is clipped.
//
// Escape payload: d = offsets[t] - 1 - v (value below the range, sign bit 1) or
// d = v - offsets[t] - esc (above, sign bit 0); w = 2·d + sign < 2^33 is written as g-1 in one
// 4-bit bypass symbol, then g 4-bit groups of w, least significant first, where g ∈ [1, 9] is
// the smallest count that holds w. Bypass symbols are uniform rANS symbols at 4-bit precision.
//
// Chunks: n symbols are cut into num_chunks contiguous ranges; chunk i covers
// [i·n/num_chunks, (i+1)·n/num_chunks). Each chunk is an independent byte string (its own
// states), so only num_chunks and the byte lengths need storing, and decode parallelises.
// Chunk layout: state0 (4 bytes LE), state1 (4 bytes LE), then the renormalisation bytes in
// decode order. Both states end (after decoding) equal to L, which the decoder checks.
//
// Decoding never reads out of bounds and runs a bounded number of steps for any input; corrupt
// input raises CorruptStreamError (a std::runtime_error) when detected: running out of bytes,
// bytes left over, a final state other than L, an impossible escape payload.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace vlmc::rans {

inline constexpr int kPrecision = 16;                       // probability bits
inline constexpr uint32_t kTotal = 1u << kPrecision;        // 65536
inline constexpr int kMaxCdfLength = (1 << kPrecision) + 1; // 65536 symbols + the leading 0
inline constexpr uint32_t kStateLower = 1u << 23;           // L: state lives in [L, 256·L)
inline constexpr int kBypassBits = 4;                       // bits per bypass symbol
inline constexpr int kMaxBypassGroups = 9;                  // 9·4 = 36 ≥ 33 bits of payload
inline constexpr int kLutBits = 10;                         // decode lookup buckets per table
inline constexpr int kNumStates = 2;                        // interleaved states per chunk
inline constexpr uint32_t kFormatVersion = 1;               // bump on any bitstream change
inline constexpr size_t kMaxThreads = 256;                  // cap on worker threads per call

// Raised on corrupt or truncated coded data (Python: CorruptStreamError, a ValueError).
class CorruptStreamError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// Validated, prepared CDF tables: built once per model, shared read-only by any number of
// encode/decode calls and threads. Throws std::invalid_argument on a malformed table.
class Tables {
  public:
    // cdf: num_tables rows of row_stride int32 each (row t holds cdf_length[t] valid entries,
    // the rest is ignored); cdf_length, offsets: num_tables int32 each. Arrays are copied.
    Tables(const int32_t *cdf, const int32_t *cdf_length, const int32_t *offsets,
           int64_t num_tables, int64_t row_stride);

    int64_t num_tables() const { return static_cast<int64_t>(info_.size()); }

    // Encoder view of one symbol: ryg_rans reciprocal form (x/freq without a divide).
    struct EncSymbol {
        uint32_t x_max;     // renormalise while x >= x_max
        uint32_t rcp_freq;  // fixed-point reciprocal of freq
        uint32_t bias;      // start (or start + 2^16 - 1 when freq == 1)
        uint16_t cmpl_freq; // 2^16 - freq
        uint16_t rcp_shift; // extra shift after the 32-bit multiply-high
    };
    struct Info {
        uint32_t cdf_base; // first entry of this table in cdf_ / enc_
        uint32_t esc;      // escape symbol index = cdf_length - 2
        int32_t offset;    // value of symbol index 0
        uint32_t lut_base; // first entry of this table in lut_
    };

    const Info *info() const { return info_.data(); }
    const uint32_t *cdf() const { return cdf_.data(); }
    const EncSymbol *enc() const { return enc_.data(); }
    const uint16_t *lut() const { return lut_.data(); }

  private:
    std::vector<Info> info_;
    std::vector<uint32_t> cdf_;   // concatenated cdf rows, cdf_length[t] entries each
    std::vector<EncSymbol> enc_;  // per symbol (esc included), same base as cdf_
    std::vector<uint16_t> lut_;   // per table 2^kLutBits + 1 entries: symbol holding slot b<<shift
};

// One encoded chunk: bytes [begin, buf.size()) of buf (the encoder writes backwards).
struct EncodedChunk {
    std::vector<uint8_t> buf;
    size_t begin = 0;
    const uint8_t *data() const { return buf.data() + begin; }
    size_t size() const { return buf.size() - begin; }
};

struct ByteSpan {
    const uint8_t *data;
    size_t size;
};

// Start of chunk i of num_chunks over n symbols: i·n/num_chunks (exact in 128-bit arithmetic).
size_t chunk_begin(size_t i, size_t n, size_t num_chunks);

// Checks 1 <= num_chunks <= max(n, 1); throws std::invalid_argument.
void check_num_chunks(size_t n, size_t num_chunks);

// Encodes n symbols (raw int32 values) with table indexes[i] each into num_chunks chunks,
// on min(num_threads, num_chunks, kMaxThreads) threads. Output is identical for any num_threads.
// Throws std::invalid_argument (bad num_chunks, index out of range).
std::vector<EncodedChunk> encode(const Tables &tables, const int32_t *symbols,
                                 const int32_t *indexes, size_t n, size_t num_chunks,
                                 int num_threads = 1);

// Decodes n symbols from num_chunks chunks into out[0..n). Output is identical for any
// num_threads. Throws std::invalid_argument (bad arguments, index out of range) or
// CorruptStreamError (corrupt data; out may then hold garbage). On several failing chunks the
// error of the lowest-numbered one is reported.
void decode(const Tables &tables, const ByteSpan *chunks, size_t num_chunks,
            const int32_t *indexes, size_t n, int num_threads, int32_t *out);

// Quantizes a pmf (m probabilities, then tail_mass for the escape symbol) to a CDF of m + 2
// entries from 0 to 2^precision, every symbol (escape included) getting frequency >= 1.
// Deterministic integer logic after one rounding per entry (IEEE double, no FMA contraction):
// f_i = max(1, round(p_i / Σp · 2^precision)) (half away from zero); then while Σf > 2^precision take 1 from the
// largest bin (lowest index on ties), while Σf < 2^precision add 1 to the largest bin.
// Throws std::invalid_argument on negative / non-finite entries, a zero sum, or m + 1 > 2^precision.
std::vector<int32_t> pmf_to_quantized_cdf(const double *pmf, size_t m, double tail_mass,
                                          int precision = kPrecision);

} // namespace vlmc::rans
