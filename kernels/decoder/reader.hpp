// Bounds-checked reading of the decoder-model file and of .vlmc streams (vlmc_decoder.cpp; the
// model file's encoder section in encoder.cpp): a read past the end raises an Error carrying the
// C API code the caller chose. Not installed.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

namespace vlmc::decoder {

// an error with its VLMC_DEC_ERR_* code (the C API returns the code, the message per thread)
struct Error : std::runtime_error {
    int code;
    Error(int c, const std::string &what) : std::runtime_error(what), code(c) {}
};

[[noreturn]] inline void raise(int code, const std::string &what) { throw Error(code, what); }

struct Reader {
    const uint8_t *p;
    size_t n, pos = 0;
    int code;  // the error code a short read raises
    const char *what;
    void need(size_t k) {
        if (k > n - pos) raise(code, std::string(what) + ": truncated at offset " + std::to_string(pos));
    }
    template <class T> T get() {
        need(sizeof(T));
        T v;
        std::memcpy(&v, p + pos, sizeof(T));  // the files are little-endian, as is every target here
        if constexpr (std::is_floating_point_v<T>) check_finite(&v, 1);
        pos += sizeof(T);
        return v;
    }
    template <class T> std::vector<T> array(uint64_t count) {
        if (count > (n - pos) / sizeof(T)) need(n);  // reports the truncation
        std::vector<T> v(count);
        if (count) std::memcpy(v.data(), p + pos, count * sizeof(T));
        if constexpr (std::is_floating_point_v<T>) check_finite(v.data(), count);
        pos += count * sizeof(T);
        return v;
    }

    // Every floating-point value read is a parameter of a network or of an entropy model: a NaN
    // or an infinity there (a diverged training, a damaged file behind a recomputed CRC) would
    // make every pixel garbage, so the file is refused where the value is.
    // (A first pass ORs a flag per value, the exponent all ones: integer operations the compiler
    // vectorises, where std::isfinite's branch per value took ~1.5 ms of a 15 MB model's open.)
    template <class T> void check_finite(const T *v, uint64_t count) const {
        using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
        static_assert(sizeof(T) == sizeof(Bits) && std::numeric_limits<T>::is_iec559, "IEEE 754 binary32/64");
        constexpr Bits exponent = sizeof(T) == 4 ? Bits(0x7f800000u) : Bits(0x7ff0000000000000ull);
        Bits any = 0;
        for (uint64_t i = 0; i < count; ++i) {
            Bits b;
            std::memcpy(&b, v + i, sizeof b);
            any |= Bits((b & exponent) == exponent);
        }
        if (any == 0) return;
        for (uint64_t i = 0; i < count; ++i)
            if (!std::isfinite(v[i]))
                raise(code, std::string(what) + ": a parameter is not finite (offset " +
                                std::to_string(pos + i * sizeof(T)) + ")");
    }
};

}  // namespace vlmc::decoder
