// C++ tests of the rANS core (rans.hpp): round trips, escapes at the int32 limits, chunking and
// thread invariance, corrupt input, the reciprocal division, the pmf quantizer.
#include "rans.hpp"

#include <climits>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace rans = vlmc::rans;

#include "check.h"

#define CHECK(cond) CHECK_NOTE(cond, "%s", "")

template <class E> static bool throws(const std::function<void()> &fn) {
    try {
        fn();
    } catch (const E &) {
        return true;
    } catch (...) {
        return false;
    }
    return false;
}

struct TableSet {
    std::vector<int32_t> cdf, cdf_length, offsets;
    int64_t stride = 0;
    rans::Tables build() const {
        return rans::Tables(cdf.data(), cdf_length.data(), offsets.data(),
                            static_cast<int64_t>(cdf_length.size()), stride);
    }
};

// Discretised Gaussians of several scales plus degenerate tables.
static TableSet make_tables() {
    std::vector<std::vector<int32_t>> rows;
    std::vector<int32_t> offsets;
    for (double scale : {0.11, 0.5, 2.0, 10.0, 100.0}) {
        const int center = static_cast<int>(std::ceil(scale * 6.2));
        std::vector<double> pmf;
        for (int v = -center; v <= center; ++v)
            pmf.push_back(0.5 * (std::erfc(-(v + 0.5) / (scale * std::sqrt(2.0))) -
                                 std::erfc(-(v - 0.5) / (scale * std::sqrt(2.0)))));
        rows.push_back(rans::pmf_to_quantized_cdf(pmf.data(), pmf.size(), 1e-9));
        offsets.push_back(-center);
    }
    rows.push_back({0, 65536});               // escape only
    offsets.push_back(0);
    rows.push_back({0, 65535, 65536});        // one near-certain symbol
    offsets.push_back(INT32_MAX);
    rows.push_back({0, 1, 2, 65536});         // escape holds almost everything
    offsets.push_back(INT32_MIN);
    TableSet ts;
    for (auto &r : rows) ts.stride = std::max<int64_t>(ts.stride, static_cast<int64_t>(r.size()));
    for (size_t t = 0; t < rows.size(); ++t) {
        std::vector<int32_t> row = rows[t];
        row.resize(static_cast<size_t>(ts.stride), 0);
        ts.cdf.insert(ts.cdf.end(), row.begin(), row.end());
        ts.cdf_length.push_back(static_cast<int32_t>(rows[t].size()));
        ts.offsets.push_back(offsets[t]);
    }
    return ts;
}

static std::vector<uint8_t> concat(const std::vector<rans::EncodedChunk> &chunks) {
    std::vector<uint8_t> all;
    for (auto &c : chunks) all.insert(all.end(), c.data(), c.data() + c.size());
    return all;
}

static std::vector<rans::ByteSpan> spans(const std::vector<std::vector<uint8_t>> &chunks) {
    std::vector<rans::ByteSpan> s;
    for (auto &c : chunks) s.push_back({c.data(), c.size()});
    return s;
}

static std::vector<std::vector<uint8_t>> copy_chunks(const std::vector<rans::EncodedChunk> &c) {
    std::vector<std::vector<uint8_t>> out;
    for (auto &x : c) out.emplace_back(x.data(), x.data() + x.size());
    return out;
}

static void test_reciprocal() {
    // enc_put's multiply-high division must equal x / freq exactly for all states x < 2^31.
    std::mt19937 rng(1);
    for (uint32_t freq = 1; freq <= 65536; ++freq) {
        uint32_t shift = 0;
        while (freq > (1u << shift)) ++shift;
        uint32_t rcp, rshift;
        if (freq < 2) {
            continue; // handled by the bias trick, covered by the round trips
        }
        rcp = static_cast<uint32_t>(((1ull << (shift + 31)) + freq - 1) / freq);
        rshift = shift - 1;
        const uint32_t x_max = (1u << 15) * freq;
        for (uint32_t x : {rans::kStateLower, x_max - 1, x_max / 2, rans::kStateLower + freq,
                           static_cast<uint32_t>(rng() % x_max)}) {
            if (x >= x_max || x >= (1u << 31)) continue;
            const uint32_t q = static_cast<uint32_t>((static_cast<uint64_t>(x) * rcp) >> 32) >> rshift;
            if (q != x / freq) {
                CHECK(q == x / freq);
                return;
            }
        }
    }
}

static void test_round_trip() {
    TableSet ts = make_tables();
    rans::Tables tables = ts.build();
    const int64_t T = tables.num_tables();
    std::mt19937 rng(42);
    for (size_t n : {size_t(0), size_t(1), size_t(2), size_t(3), size_t(17), size_t(1000), size_t(100000)}) {
        std::vector<int32_t> sym(n), idx(n), out(n, 7);
        for (size_t i = 0; i < n; ++i) {
            idx[i] = static_cast<int32_t>(rng() % T);
            const int32_t off = ts.offsets[idx[i]];
            switch (rng() % 8) {
            case 0: sym[i] = static_cast<int32_t>(rng()); break; // anything, mostly escapes
            case 1: sym[i] = (rng() & 1) ? INT32_MIN : INT32_MAX; break;
            default: {
                const int64_t v = static_cast<int64_t>(off) + static_cast<int64_t>(rng() % 9) - 2;
                sym[i] = static_cast<int32_t>(std::max<int64_t>(INT32_MIN, std::min<int64_t>(INT32_MAX, v)));
            }
            }
        }
        std::vector<uint8_t> reference;
        for (size_t chunks : {size_t(1), size_t(2), size_t(5)}) {
            if (chunks > std::max<size_t>(n, 1)) continue;
            auto enc1 = rans::encode(tables, sym.data(), idx.data(), n, chunks, 1);
            auto enc3 = rans::encode(tables, sym.data(), idx.data(), n, chunks, 3);
            CHECK(concat(enc1) == concat(enc3));
            auto bytes = copy_chunks(enc1);
            auto sp = spans(bytes);
            for (int threads : {1, 2, 4}) {
                std::fill(out.begin(), out.end(), 7);
                rans::decode(tables, sp.data(), sp.size(), idx.data(), n, threads, out.data());
                CHECK(out == sym);
            }
        }
    }
}

static void test_escape_limits() {
    TableSet ts = make_tables();
    rans::Tables tables = ts.build();
    std::vector<int32_t> sym, idx;
    for (int32_t t = 0; t < tables.num_tables(); ++t)
        for (int32_t v : {INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX}) {
            sym.push_back(v);
            idx.push_back(t);
        }
    auto bytes = copy_chunks(rans::encode(tables, sym.data(), idx.data(), sym.size(), 1));
    auto sp = spans(bytes);
    std::vector<int32_t> out(sym.size());
    rans::decode(tables, sp.data(), 1, idx.data(), sym.size(), 1, out.data());
    CHECK(out == sym);
}

static void test_corrupt() {
    TableSet ts = make_tables();
    rans::Tables tables = ts.build();
    std::mt19937 rng(7);
    const size_t n = 2000;
    std::vector<int32_t> sym(n), idx(n), out(n);
    for (size_t i = 0; i < n; ++i) {
        idx[i] = static_cast<int32_t>(rng() % 5); // Gaussian tables
        sym[i] = static_cast<int32_t>(rng() % 7) - 3;
    }
    auto good = copy_chunks(rans::encode(tables, sym.data(), idx.data(), n, 2));
    // Truncation and extension always fail.
    for (size_t cut = 0; cut < good[0].size(); cut += 1 + good[0].size() / 50) {
        auto bad = good;
        bad[0].resize(cut);
        auto sp = spans(bad);
        CHECK(throws<rans::CorruptStreamError>(
            [&] { rans::decode(tables, sp.data(), 2, idx.data(), n, 2, out.data()); }));
    }
    {
        auto bad = good;
        bad[1].push_back(0);
        auto sp = spans(bad);
        CHECK(throws<rans::CorruptStreamError>(
            [&] { rans::decode(tables, sp.data(), 2, idx.data(), n, 1, out.data()); }));
    }
    // Random mutations: a clean error or (rarely) a decode; never a crash or a hang.
    int detected = 0;
    for (int trial = 0; trial < 3000; ++trial) {
        auto bad = good;
        auto &c = bad[rng() % 2];
        const int edits = 1 + static_cast<int>(rng() % 3);
        for (int e = 0; e < edits; ++e) c[rng() % c.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
        auto sp = spans(bad);
        try {
            rans::decode(tables, sp.data(), 2, idx.data(), n, 1 + trial % 2, out.data());
        } catch (const rans::CorruptStreamError &) {
            ++detected;
        }
    }
    CHECK(detected > 2900);
    // Wrong chunk count / bad index are argument errors.
    auto sp = spans(good);
    CHECK(throws<std::invalid_argument>(
        [&] { rans::decode(tables, sp.data(), 0, idx.data(), n, 1, out.data()); }));
    auto bad_idx = idx;
    bad_idx[n - 1] = 99;
    CHECK(throws<std::invalid_argument>(
        [&] { rans::decode(tables, sp.data(), 2, bad_idx.data(), n, 2, out.data()); }));
    CHECK(throws<std::invalid_argument>(
        [&] { rans::encode(tables, sym.data(), bad_idx.data(), n, 2, 2); }));
    CHECK(throws<std::invalid_argument>(
        [&] { rans::encode(tables, sym.data(), idx.data(), 3, 4, 1); }));
}

static void test_garbage_input() {
    // Random bytes with a plausible header, decoded with every table (the escape-heavy ones run
    // the bypass paths on garbage): a clean CorruptStreamError or a decode, never UB.
    TableSet ts = make_tables();
    rans::Tables tables = ts.build();
    std::mt19937 rng(11);
    int ok = 0, corrupt = 0;
    for (int trial = 0; trial < 4000; ++trial) {
        std::vector<uint8_t> bytes(8 + rng() % 200);
        for (auto &b : bytes) b = static_cast<uint8_t>(rng());
        bytes[3] = static_cast<uint8_t>(0x00 + rng() % 0x80); // states in [2^23, 2^31)
        bytes[7] = static_cast<uint8_t>(0x00 + rng() % 0x80);
        if (bytes[3] == 0) bytes[2] |= 0x80;
        if (bytes[7] == 0) bytes[6] |= 0x80;
        const size_t n = 1 + rng() % 64;
        std::vector<int32_t> idx(n), out(n);
        for (auto &i : idx) i = static_cast<int32_t>(rng() % tables.num_tables());
        rans::ByteSpan sp{bytes.data(), bytes.size()};
        try {
            rans::decode(tables, &sp, 1, idx.data(), n, 1, out.data());
            ++ok;
        } catch (const rans::CorruptStreamError &) {
            ++corrupt;
        }
    }
    CHECK(ok + corrupt == 4000);
    CHECK(corrupt > 3900);
}

static void test_table_validation() {
    const int32_t off[1] = {0};
    auto make = [&](std::vector<int32_t> cdf, int32_t len) {
        const int32_t l[1] = {len};
        rans::Tables t(cdf.data(), l, off, 1, static_cast<int64_t>(cdf.size()));
    };
    CHECK(throws<std::invalid_argument>([&] { make({1, 2, 65536}, 3); }));     // no 0 start
    CHECK(throws<std::invalid_argument>([&] { make({0, 2, 65535}, 3); }));     // bad end
    CHECK(throws<std::invalid_argument>([&] { make({0, 2, 2, 65536}, 4); }));  // zero freq
    CHECK(throws<std::invalid_argument>([&] { make({0, 9, 5, 65536}, 4); }));  // decreasing
    CHECK(throws<std::invalid_argument>([&] { make({0, 65536}, 1); }));        // too short
    CHECK(throws<std::invalid_argument>([&] { make({0, 65536}, 3); }));        // > row width
    CHECK(!throws<std::invalid_argument>([&] { make({0, 65536, 0}, 2); }));    // escape only
    // table t's lookup table starts at t · 1025, a uint32_t: 4 190 213 tables would wrap it
    // (valid rows, so that only the count is refused)
    const int64_t too_many = int64_t(UINT32_MAX) / 1025 + 2;
    std::vector<int32_t> cdf(size_t(too_many) * 2), lengths(size_t(too_many), 2), offsets(size_t(too_many), 0);
    for (size_t t = 0; t < size_t(too_many); ++t) cdf[2 * t + 1] = 65536;
    std::string message;
    try {
        rans::Tables(cdf.data(), lengths.data(), offsets.data(), too_many, 2);
    } catch (const std::invalid_argument &e) {
        message = e.what();
    }
    CHECK_NOTE(message == "CDF tables: at most 4190212 tables, got 4190213", "%s", message.c_str());
}

// no symbols take one chunk: any count was taken (10^7 empty chunks took 18 s and 1.6 GB)
static void test_chunk_count() {
    rans::Tables tables = make_tables().build();
    CHECK(rans::encode(tables, nullptr, nullptr, 0, 1, 1).size() == 1);
    for (size_t chunks : {size_t(0), size_t(2), size_t(10000000)})
        CHECK(throws<std::invalid_argument>([&] { rans::encode(tables, nullptr, nullptr, 0, chunks, 1); }));
    std::vector<uint8_t> empty;
    std::vector<rans::ByteSpan> two(2, rans::ByteSpan{empty.data(), 0});
    CHECK(throws<std::invalid_argument>([&] { rans::decode(tables, two.data(), 2, nullptr, 0, 1, nullptr); }));
    const int32_t sym[3] = {0, 0, 0}, idx[3] = {0, 0, 0};
    CHECK(rans::encode(tables, sym, idx, 3, 3, 1).size() == 3);
    CHECK(throws<std::invalid_argument>([&] { rans::encode(tables, sym, idx, 3, 4, 1); }));
}

static void test_pmf_quantizer() {
    std::vector<double> pmf = {0.5, 0.0, 0.25, 1e-12, 0.25};
    auto cdf = rans::pmf_to_quantized_cdf(pmf.data(), pmf.size(), 0.0);
    CHECK(cdf.size() == 7);
    CHECK(cdf.front() == 0 && cdf.back() == 65536);
    for (size_t i = 0; i + 1 < cdf.size(); ++i) CHECK(cdf[i + 1] > cdf[i]);
    // All-zero pmf with a tail is valid; negative or NaN entries are not.
    std::vector<double> z(100, 0.0);
    auto cz = rans::pmf_to_quantized_cdf(z.data(), z.size(), 1.0);
    CHECK(cz.back() == 65536 && cz[100] == 100);
    std::vector<double> neg = {0.5, -0.1};
    CHECK(throws<std::invalid_argument>([&] { rans::pmf_to_quantized_cdf(neg.data(), 2, 0.1); }));
    std::vector<double> nan = {NAN};
    CHECK(throws<std::invalid_argument>([&] { rans::pmf_to_quantized_cdf(nan.data(), 1, 0.1); }));
    std::vector<double> big(65536, 1.0);
    CHECK(throws<std::invalid_argument>([&] { rans::pmf_to_quantized_cdf(big.data(), big.size(), 0.0); }));
    auto cb = rans::pmf_to_quantized_cdf(big.data(), 65535, 0.0); // exactly full: all ones
    CHECK(cb.size() == 65537 && cb.back() == 65536);
}

int main() {
    test_reciprocal();
    test_round_trip();
    test_escape_limits();
    test_corrupt();
    test_garbage_input();
    test_table_validation();
    test_chunk_count();
    test_pmf_quantizer();
    return check_report("test_rans_core");
}
