"""Bjøntegaard delta rate / delta PSNR (bench/bdrate.py) against analytically known answers and
published worked examples."""

import math

import numpy as np
import pytest

from vlmcodec.bench.bdrate import METHODS, _pchip_integral, bd_psnr, bd_rate, monotone_curve, pchip_slopes

RATE = np.array([0.12, 0.25, 0.5, 0.9, 1.6, 2.4])
PSNR = np.array([27.1, 29.8, 32.6, 35.0, 37.9, 40.2])

# VCEG-M33 worked example as distributed with the widely used Bjontegaard-metric scripts
# (MATLAB File Exchange 41749 / its Python ports): the cubic BD-rate is 31.3974 %.
M33_ANCHOR = ([686.76, 309.58, 157.11, 85.95], [40.28, 37.18, 34.24, 31.42])
M33_TEST = ([893.34, 407.8, 204.93, 112.75], [40.39, 37.21, 34.17, 31.24])
# The x265 example of the FAU-LMS `bjontegaard` package (BSD-3-Clause), whose PCHIP matches the
# JVET CTC spreadsheet to 10 decimals; values below are that package's (v1.3.0) outputs.
FAU_ANCHOR = ([9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851])
FAU_TEST = ([9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987])
PUBLISHED = [
    # (anchor, test, method, bd_rate %, bd_psnr dB)
    (M33_ANCHOR, M33_TEST, "cubic", 31.397374054908, -1.184897921770),
    (M33_ANCHOR, M33_TEST, "pchip", 31.379878202398, -1.183472404622),
    (FAU_ANCHOR, FAU_TEST, "cubic", -4.420462706026, 0.120409419115),
    (FAU_ANCHOR, FAU_TEST, "pchip", -4.417485350589, 0.119692785425),
]


@pytest.mark.parametrize("anchor,test,method,rate,psnr", PUBLISHED)
def test_published_examples(anchor, test, method, rate, psnr):
    assert bd_rate(*anchor, *test, method=method) == pytest.approx(rate, abs=1e-8)
    assert bd_psnr(*anchor, *test, method=method) == pytest.approx(psnr, abs=1e-8)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("factor", [0.5, 0.8, 1.0, 1.37, 2.0])
def test_scaled_rate_gives_factor_minus_one(method, factor):
    # Same qualities at `factor` times the rate: log-rate shifts by log(factor) everywhere.
    assert bd_rate(RATE, PSNR, RATE * factor, PSNR, method) == pytest.approx((factor - 1) * 100, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shift", [-1.5, 0.25, 2.0])
def test_psnr_shift_on_log_linear_curve(method, shift):
    # PSNR = a + b·ln(rate) is reproduced exactly by both interpolants, so a +shift dB curve has
    # BD-PSNR = shift and BD-rate = exp(−shift / b) − 1.
    a, b = 33.0, 4.0
    rate = np.geomspace(0.1, 2.0, 6)
    psnr = a + b * np.log(rate)
    assert bd_psnr(rate, psnr, rate, psnr + shift, method) == pytest.approx(shift, abs=1e-9)
    assert bd_rate(rate, psnr, rate, psnr + shift, method) == pytest.approx(
        (math.exp(-shift / b) - 1) * 100, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_and_antisymmetry(method):
    assert bd_rate(RATE, PSNR, RATE, PSNR, method) == pytest.approx(0, abs=1e-12)
    assert bd_psnr(RATE, PSNR, RATE, PSNR, method) == pytest.approx(0, abs=1e-12)
    r2, p2 = RATE * np.linspace(0.8, 1.1, 6), PSNR + np.linspace(0.3, -0.2, 6)
    x, y = bd_rate(RATE, PSNR, r2, p2, method), bd_rate(r2, p2, RATE, PSNR, method)
    assert (1 + x / 100) * (1 + y / 100) == pytest.approx(1, abs=1e-12)
    assert bd_psnr(RATE, PSNR, r2, p2, method) == pytest.approx(-bd_psnr(r2, p2, RATE, PSNR, method), abs=1e-12)


def test_point_order_does_not_matter():
    perm = [3, 0, 5, 1, 4, 2]
    r2 = RATE * 1.2
    assert bd_rate(RATE[perm], PSNR[perm], r2[::-1], PSNR[::-1]) == pytest.approx(bd_rate(RATE, PSNR, r2, PSNR))


@pytest.mark.parametrize("method", ["pchip"])
def test_only_the_overlap_counts(method):
    # The test curve covers only the middle of a log-linear anchor (which PCHIP reproduces from
    # any subset of its points); the result is the factor there, not an extrapolation.
    rate = np.geomspace(0.1, 2.0, 7)
    psnr = 33.0 + 4.0 * np.log(rate)
    assert bd_rate(rate, psnr, rate[2:5] * 1.5, psnr[2:5], method) == pytest.approx(50.0, abs=1e-9)


def test_no_overlap_or_too_few_points_is_nan():
    assert math.isnan(bd_rate(RATE[:3], PSNR[:3], RATE[3:], PSNR[3:] + 5))
    assert math.isnan(bd_rate(RATE, PSNR, RATE[:1], PSNR[:1]))
    assert math.isnan(bd_rate(RATE, PSNR, RATE[:3], PSNR[:3], method="cubic"))  # cubic needs 4


def test_dominated_points_are_dropped():
    r, q = monotone_curve([0.1, 0.2, 0.3, 0.4, 0.5], [20.0, 22.0, 21.5, 23.0, 23.0])
    assert r.tolist() == [0.1, 0.2, 0.4] and q.tolist() == [20.0, 22.0, 23.0]
    r, q = monotone_curve([0.1, float("nan"), 0.3, -1.0], [20.0, 21.0, 22.0, 23.0])
    assert r.tolist() == [0.1, 0.3]


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown method"):
        bd_rate(RATE, PSNR, RATE, PSNR, method="akima2")


def test_matches_bjontegaard_package_on_random_curves():
    bd = pytest.importorskip("bjontegaard")
    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(60):
        r1 = np.sort(rng.uniform(0.05, 3, 5))
        q1 = np.sort(rng.uniform(25, 42, 5))
        r2 = r1 * rng.uniform(0.7, 1.4, 5)
        q2 = np.sort(q1 + rng.uniform(-1, 1, 5))
        if np.any(np.diff(r2) <= 0):
            continue
        compared += 1
        for m in METHODS:
            assert bd_rate(r1, q1, r2, q2, m) == pytest.approx(bd.bd_rate(r1, q1, r2, q2, method=m), rel=1e-9, abs=1e-9)
            assert bd_psnr(r1, q1, r2, q2, m) == pytest.approx(bd.bd_psnr(r1, q1, r2, q2, method=m), abs=1e-9)
    assert compared >= 10, compared  # (the draws that are no rate curve are skipped: not most of them)


def test_pchip_matches_scipy():
    # the end rules' limits: an end slope against the next one's sign clamped to 3 · the secant
    # (51.5 → 3 here), one against its own secant's sign set to 0
    x = np.array([0.0, 1.0, 2.0])
    ends = [(x, np.array([0.0, 1.0, -99.0])), (x, np.array([0.0, 1.0, 10.0]))]
    assert pchip_slopes(*ends[0])[0] == 3.0 and pchip_slopes(*ends[1])[0] == 0.0
    interpolate = pytest.importorskip("scipy.interpolate")
    rng = np.random.default_rng(1)
    curves = [(np.sort(rng.uniform(0, 10, n)), rng.normal(size=n).cumsum() if n % 2 else np.sort(rng.normal(size=n)))
              for n in (2, 3, 4, 7)]
    for x, y in curves + ends:
        ref = interpolate.PchipInterpolator(x, y)
        np.testing.assert_allclose(pchip_slopes(x, y), ref.derivative()(x), rtol=1e-10, atol=1e-12)
        lo, hi = x[0] + 0.3 * (x[-1] - x[0]), x[-1] - 0.1 * (x[-1] - x[0])
        assert _pchip_integral(x, y, lo, hi) == pytest.approx(ref.integrate(lo, hi), rel=1e-10, abs=1e-12)
