"""Bjøntegaard delta rate and delta quality between two rate–distortion curves.

    bd_rate(anchor_rate, anchor_q, test_rate, test_q, method="pchip") -> percent
    bd_quality(anchor_rate, anchor_q, test_rate, test_q, method="pchip") -> quality units (dB for PSNR)

BD-rate (Bjøntegaard, VCEG-M33, 2001): log-rate is interpolated as a function of quality for
both curves, each interpolant is integrated over the overlapping quality interval, and the mean
difference d of the natural-log rates gives (exp(d) − 1)·100 %: the average extra rate the test
codec needs for the same quality (negative = the test codec saves bits). BD-quality swaps the
axes: quality as a function of log-rate over the overlapping log-rate interval.

Methods:
- ``"pchip"`` (default): piecewise cubic Hermite interpolation through the points (Fritsch–
  Carlson slopes, the non-centred three-point end rule), integrated exactly (numpy only) — the method of the
  JCT-VC/JVET common-test-conditions spreadsheets, and of the ``bjontegaard`` package's
  ``method="pchip"``.
- ``"cubic"``: the original VCEG-M33 least-squares cubic polynomial fit, integrated exactly.

Quality must grow with rate along a curve: ``monotone_curve`` keeps the points of a measured
curve that are not dominated (sorted by rate, each kept point better than all kept before), and
the functions here apply it; a curve with fewer than 2 (pchip) or 4 (cubic) such points, or two
curves whose intervals do not overlap, gives NaN rather than an extrapolated number.

``overlap`` gives the share of the two curves' combined range that the integral covers (the
``bjontegaard`` package's definition; it warns below ``MIN_OVERLAP`` = 75 %): a BD value over a
narrow overlap averages over a window that may say little about either curve as a whole.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

METHODS = ("pchip", "cubic")
MIN_OVERLAP = 0.75  # the ``bjontegaard`` package's default ``min_overlap``: below it, it warns


def monotone_curve(rate: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by rate, the points whose quality exceeds that of every lower-rate point kept;
    non-finite points and non-positive rates dropped."""
    r = np.asarray(rate, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1:
        raise ValueError(f"rate and quality must be 1-D of equal length, got {r.shape} and {q.shape}")
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.lexsort((-q, r))  # by rate, best quality first among equal rates
    keep_r: list[float] = []
    keep_q: list[float] = []
    for ri, qi in zip(r[order], q[order]):
        if not keep_q or (qi > keep_q[-1] and ri > keep_r[-1]):
            keep_r.append(ri)
            keep_q.append(qi)
    return np.array(keep_r), np.array(keep_q)


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivatives of the shape-preserving piecewise cubic Hermite interpolant (Fritsch–Carlson
    weighted harmonic mean inside, the three-point non-centred rule at the ends), as in MATLAB's
    ``pchip``, SciPy's ``PchipInterpolator`` and the JVET spreadsheet."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    if n == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros(n)
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])

    def end(h0, h1, d0, d1):
        e = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if np.sign(e) != np.sign(d0):
            return 0.0
        if np.sign(d0) != np.sign(d1) and abs(e) > abs(3 * d0):
            return 3 * d0
        return e

    d[0] = end(h[0], h[1], delta[0], delta[1])
    d[-1] = end(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact ∫_lo^hi of the PCHIP interpolant of (x, y), lo and hi inside [x0, x_end]."""
    d = pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        slope = (y[k + 1] - y[k]) / h
        c2 = (3 * slope - 2 * d[k] - d[k + 1]) / h
        c3 = (d[k] + d[k + 1] - 2 * slope) / h**2
        ta, tb = a - x[k], b - x[k]
        total += sum(c * (tb**p - ta**p) / p for c, p in ((y[k], 1), (d[k], 2), (c2, 3), (c3, 4)))
    return float(total)


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: str) -> float:
    """∫_lo^hi f where f interpolates (x, y) (x strictly increasing)."""
    if method == "pchip":
        return _pchip_integral(x, y, lo, hi)
    if method == "cubic":
        p = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(p, hi) - np.polyval(p, lo))
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def _min_points(method: str) -> int:
    return 4 if method == "cubic" else 2


def _prepare(anchor_rate, anchor_q, test_rate, test_q, method):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    ra, qa = monotone_curve(anchor_rate, anchor_q)
    rt, qt = monotone_curve(test_rate, test_q)
    if min(len(ra), len(rt)) < _min_points(method):
        return None
    return ra, qa, rt, qt


def bd_rate(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
            test_rate: Sequence[float], test_quality: Sequence[float], method: str = "pchip") -> float:
    """Average rate difference of the test curve against the anchor at equal quality, in percent."""
    curves = _prepare(anchor_rate, anchor_quality, test_rate, test_quality, method)
    if curves is None:
        return float("nan")
    ra, qa, rt, qt = curves
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not hi > lo:
        return float("nan")
    ia = _integral(qa, np.log(ra), lo, hi, method)
    it = _integral(qt, np.log(rt), lo, hi, method)
    return float((np.exp((it - ia) / (hi - lo)) - 1) * 100)


def bd_quality(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
               test_rate: Sequence[float], test_quality: Sequence[float], method: str = "pchip") -> float:
    """Average quality difference (test − anchor) at equal rate (BD-PSNR in dB for PSNR)."""
    curves = _prepare(anchor_rate, anchor_quality, test_rate, test_quality, method)
    if curves is None:
        return float("nan")
    ra, qa, rt, qt = curves
    la, lt = np.log(ra), np.log(rt)
    lo, hi = max(la[0], lt[0]), min(la[-1], lt[-1])
    if not hi > lo:
        return float("nan")
    ia = _integral(la, qa, lo, hi, method)
    it = _integral(lt, qt, lo, hi, method)
    return float((it - ia) / (hi - lo))


bd_psnr = bd_quality


def overlap(anchor_rate: Sequence[float], anchor_quality: Sequence[float],
            test_rate: Sequence[float], test_quality: Sequence[float], axis: str = "quality") -> float:
    """The length of the interval a BD value integrates over, as a fraction of the two curves'
    combined range (0 when they do not overlap), as the ``bjontegaard`` package defines it:
    ``max(overlap_max - overlap_min, 0) / (total_max - total_min)``. ``axis="quality"`` is the
    BD-rate's (the quality axis), ``"rate"`` the BD-quality's (log-rate). Measured on the
    curves the BD functions integrate (``monotone_curve``'s points); NaN for a curve of fewer
    than 2 such points."""
    if axis not in ("quality", "rate"):
        raise ValueError(f"axis must be 'quality' or 'rate', got {axis!r}")
    ra, qa = monotone_curve(anchor_rate, anchor_quality)
    rt, qt = monotone_curve(test_rate, test_quality)
    if min(len(ra), len(rt)) < 2:
        return float("nan")
    a, t = (qa, qt) if axis == "quality" else (np.log(ra), np.log(rt))
    total = max(a[-1], t[-1]) - min(a[0], t[0])
    return float(max(min(a[-1], t[-1]) - max(a[0], t[0]), 0.0) / total)
