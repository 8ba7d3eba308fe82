// A sorted-table search for the scale-table indexes of every y symbol (vlmc_decoder.cpp:
// scale_indexes), a few hundred thousand per Kodak image.
#pragma once
#include <cstddef>

namespace vlmc {

// The first i in [0, n) with v ≤ b[i] (b sorted ascending), n if none: std::lower_bound's answer.
// Its steps depend on n alone, each a conditional move rather than a branch: a branchy search
// mispredicts about half of its steps on scales, which vary from symbol to symbol.
inline size_t first_not_below(const double *b, size_t n, double v) {
    if (n == 0) return 0;
    const double *base = b;
    for (size_t len = n; len > 1;) {
        const size_t half = len / 2;
        base = base[half] < v ? base + half : base;
        len -= half;
    }
    return size_t(base - b) + (*base < v);
}

}  // namespace vlmc
