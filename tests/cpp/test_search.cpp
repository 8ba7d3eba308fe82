// The scale-table search (kernels/decoder/search.hpp) gives std::lower_bound's index for every
// table length up to past the scale tables' 64 and for values below, on, between, just either
// side of and above its entries, infinities included.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.h"
#include "search.hpp"

namespace {

void check_against_lower_bound() {
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> step(0.01, 2.0);
    const double inf = std::numeric_limits<double>::infinity();
    size_t checked = 0;
    for (size_t n = 0; n <= 130; ++n) {
        std::vector<double> b(n);
        double v = 0.11;
        for (double &x : b) x = v += step(rng);
        std::vector<double> probes{-inf, inf, -1.0, 0.0, 1e300};
        for (double x : b) {
            probes.push_back(x);
            probes.push_back(std::nextafter(x, -inf));
            probes.push_back(std::nextafter(x, inf));
        }
        for (size_t i = 0; i + 1 < n; ++i) probes.push_back((b[i] + b[i + 1]) / 2);
        for (double p : probes) {
            const size_t want = size_t(std::lower_bound(b.begin(), b.end(), p) - b.begin());
            const size_t got = vlmc::first_not_below(b.data(), n, p);
            CHECK_NOTE(got == want, "n %zu, v %.17g: %zu, lower_bound %zu", n, p, got, want);
            ++checked;
        }
    }
    CHECK_NOTE(checked > 20000, "only %zu probes", checked);
}

}  // namespace

int main() {
    check_against_lower_bound();
    return check_report("search");
}
