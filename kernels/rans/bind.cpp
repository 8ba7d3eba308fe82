// nanobind binding of the rANS core: module vlmcodec.kernels.rans._rans (private; use the
// wrapper in __init__.py). Zero-copy int32 inputs, bytes out, GIL released while coding.
// std::invalid_argument -> ValueError; CorruptStreamError -> _rans.CorruptStreamError (a
// ValueError subclass).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "rans.hpp"

namespace nb = nanobind;
using namespace nb::literals;
namespace rans = vlmc::rans;

namespace {

using CI32 = nb::ndarray<const int32_t, nb::c_contig, nb::device::cpu>;
using MI32 = nb::ndarray<int32_t, nb::c_contig, nb::device::cpu>;
using CF64 = nb::ndarray<const double, nb::c_contig, nb::device::cpu>;

template <class T> nb::ndarray<nb::numpy, T> to_numpy(std::vector<T> &&v, std::vector<size_t> shape) {
    auto *p = new std::vector<T>(std::move(v));
    nb::capsule owner(p, [](void *q) noexcept { delete static_cast<std::vector<T> *>(q); });
    return nb::ndarray<nb::numpy, T>(p->data(), shape.size(), shape.data(), owner);
}

void require_ndim(size_t got, size_t want, const char *name) {
    if (got != want)
        throw std::invalid_argument(std::string(name) + " must be " + std::to_string(want) +
                                    "-D, got " + std::to_string(got) + "-D");
}

rans::Tables *make_tables(CI32 cdf, CI32 cdf_length, CI32 offsets) {
    require_ndim(cdf.ndim(), 2, "cdf");
    require_ndim(cdf_length.ndim(), 1, "cdf_length");
    require_ndim(offsets.ndim(), 1, "offsets");
    const size_t t = cdf.shape(0);
    if (cdf_length.shape(0) != t || offsets.shape(0) != t)
        throw std::invalid_argument("cdf has " + std::to_string(t) + " rows but cdf_length has " +
                                    std::to_string(cdf_length.shape(0)) + " and offsets " +
                                    std::to_string(offsets.shape(0)) + " entries");
    return new rans::Tables(cdf.data(), cdf_length.data(), offsets.data(),
                            static_cast<int64_t>(t), static_cast<int64_t>(cdf.shape(1)));
}

nb::list encode(const rans::Tables &tables, CI32 symbols, CI32 indexes, size_t num_chunks,
                int threads) {
    if (symbols.size() != indexes.size())
        throw std::invalid_argument("symbols has " + std::to_string(symbols.size()) +
                                    " elements but indexes has " +
                                    std::to_string(indexes.size()));
    std::vector<rans::EncodedChunk> chunks;
    {
        nb::gil_scoped_release release;
        chunks = rans::encode(tables, symbols.data(), indexes.data(), symbols.size(), num_chunks,
                              threads);
    }
    nb::list out;
    for (const auto &c : chunks) out.append(nb::bytes(c.data(), c.size()));
    return out;
}

void decode_into(const rans::Tables &tables, nb::sequence chunks, CI32 indexes, MI32 out,
                 int threads) {
    if (out.size() != indexes.size())
        throw std::invalid_argument("out has " + std::to_string(out.size()) +
                                    " elements but indexes has " +
                                    std::to_string(indexes.size()));
    std::vector<nb::bytes> keep; // holds the chunk objects alive while the GIL is released
    std::vector<rans::ByteSpan> spans;
    for (nb::handle h : chunks) {
        if (!nb::isinstance<nb::bytes>(h))
            throw nb::type_error(("chunks must be bytes objects, got " +
                                  nb::cast<std::string>(nb::str(nb::handle(h.type()))))
                                     .c_str());
        keep.push_back(nb::borrow<nb::bytes>(h));
        spans.push_back({reinterpret_cast<const uint8_t *>(keep.back().c_str()),
                         keep.back().size()});
    }
    nb::gil_scoped_release release;
    rans::decode(tables, spans.data(), spans.size(), indexes.data(), indexes.size(), threads,
                 out.data());
}

nb::ndarray<nb::numpy, int32_t> pmf_to_quantized_cdf(CF64 pmf, double tail_mass, int precision) {
    require_ndim(pmf.ndim(), 1, "pmf");
    auto cdf = rans::pmf_to_quantized_cdf(pmf.data(), pmf.shape(0), tail_mass, precision);
    const size_t len = cdf.size();
    return to_numpy(std::move(cdf), {len});
}

// Quantizes T pmfs (row t: pmf_lengths[t] valid entries of pmfs[t]) with their tail masses into
// a CompressAI-layout table: (cdf int32 [T, max_len + 2] zero-padded, cdf_length int32 [T]).
nb::tuple build_cdf_table(CF64 pmfs, CI32 pmf_lengths, CF64 tail_masses, int precision) {
    require_ndim(pmfs.ndim(), 2, "pmfs");
    require_ndim(pmf_lengths.ndim(), 1, "pmf_lengths");
    require_ndim(tail_masses.ndim(), 1, "tail_masses");
    const size_t t = pmfs.shape(0), m = pmfs.shape(1);
    if (pmf_lengths.shape(0) != t || tail_masses.shape(0) != t)
        throw std::invalid_argument("pmfs has " + std::to_string(t) +
                                    " rows but pmf_lengths / tail_masses have " +
                                    std::to_string(pmf_lengths.shape(0)) + " / " +
                                    std::to_string(tail_masses.shape(0)) + " entries");
    size_t max_len = 0;
    for (size_t i = 0; i < t; ++i) {
        const int32_t len = pmf_lengths.data()[i];
        if (len < 0 || static_cast<size_t>(len) > m)
            throw std::invalid_argument("pmf_lengths[" + std::to_string(i) + "] = " +
                                        std::to_string(len) + " is out of range [0, " +
                                        std::to_string(m) + "]");
        max_len = std::max(max_len, static_cast<size_t>(len));
    }
    const size_t width = max_len + 2;
    std::vector<int32_t> cdf(t * width, 0), lengths(t);
    for (size_t i = 0; i < t; ++i) {
        const size_t len = static_cast<size_t>(pmf_lengths.data()[i]);
        auto row = rans::pmf_to_quantized_cdf(pmfs.data() + i * m, len, tail_masses.data()[i],
                                              precision);
        std::copy(row.begin(), row.end(), cdf.begin() + i * width);
        lengths[i] = static_cast<int32_t>(row.size());
    }
    return nb::make_tuple(to_numpy(std::move(cdf), {t, width}), to_numpy(std::move(lengths), {t}));
}

} // namespace

NB_MODULE(_rans, m) {
    m.doc() = "vlmcodec rANS entropy coder (private binding; use vlmcodec.kernels.rans)";
    // objects still referenced at exit (a module-level Codec while another daemon thread lives) are
    // no leak of ours: nanobind's ten lines of "leaked ..." were only noise on a clean exit
    nb::set_leak_warnings(false);
    nb::exception<rans::CorruptStreamError>(m, "CorruptStreamError", PyExc_ValueError);

    m.attr("PRECISION") = rans::kPrecision;
    m.attr("FORMAT_VERSION") = rans::kFormatVersion;
    m.attr("MAX_CDF_LENGTH") = rans::kMaxCdfLength;
    m.attr("STATE_LOWER") = rans::kStateLower; // a chunk's initial states lie in [L, 256·L)
    m.attr("NUM_STATES") = rans::kNumStates;   // ... one 4-byte state each, at its start

    nb::class_<rans::Tables>(m, "Tables", "Validated, prepared CDF tables (immutable).")
        .def("__init__",
             [](rans::Tables *self, CI32 cdf, CI32 cdf_length, CI32 offsets) {
                 std::unique_ptr<rans::Tables> t(make_tables(cdf, cdf_length, offsets));
                 new (self) rans::Tables(std::move(*t));
             },
             "cdf"_a.noconvert(), "cdf_length"_a.noconvert(), "offsets"_a.noconvert())
        .def_prop_ro("num_tables", &rans::Tables::num_tables);

    m.def("encode", &encode, "tables"_a, "symbols"_a.noconvert(), "indexes"_a.noconvert(),
          "num_chunks"_a, "threads"_a);
    m.def("decode_into", &decode_into, "tables"_a, "chunks"_a, "indexes"_a.noconvert(),
          "out"_a.noconvert(), "threads"_a);
    m.def("pmf_to_quantized_cdf", &pmf_to_quantized_cdf, "pmf"_a.noconvert(), "tail_mass"_a,
          "precision"_a);
    m.def("build_cdf_table", &build_cdf_table, "pmfs"_a.noconvert(), "pmf_lengths"_a.noconvert(),
          "tail_masses"_a.noconvert(), "precision"_a);
}
