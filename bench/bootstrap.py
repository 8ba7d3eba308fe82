"""Confidence intervals for BD figures by resampling the images (paired bootstrap).

A BD-rate on 24 images carries the noise of those 24 images: a top-1 agreement moves in steps
of 1/24, so one image flipping its class moves a curve's point by 4 %. Redrawing the image set
with replacement — the same draw for both curves, since they coded the same images — and
recomputing both curves' means and the BD-rate each time gives the spread that noise alone
produces. The interval is the percentile interval of those BD-rates (Efron's percentile method).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .rd import bd_table


def per_image_matrix(points: Sequence[dict], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(bpp, metric) as arrays [points, images] from the points' ``per_image`` records, for the
    points that have the metric; None when any of them lacks per-image values (older rd.json)."""
    pts = [p for p in points if p.get(metric) is not None]
    if len(pts) < 2:
        return None
    rows_r, rows_q = [], []
    for p in pts:
        per = p.get("per_image") or {}
        if "bpp" not in per or metric not in per or len(per["bpp"]) != len(per[metric]):
            return None
        rows_r.append(per["bpp"])
        rows_q.append(per[metric])
    if len({len(r) for r in rows_r}) != 1:
        return None
    return np.asarray(rows_r, dtype=np.float64), np.asarray(rows_q, dtype=np.float64)


def bd_rate_interval(anchor_points: Sequence[dict], test_points: Sequence[dict], metric: str,
                     higher_is_better: bool = True, n_boot: int = 1000, level: float = 0.95,
                     seed: int = 0) -> dict | None:
    """Percentile interval of the BD-rate of ``test`` against ``anchor`` over ``n_boot`` paired
    resamples of the images: {"lo", "hi", "level", "n_boot", "undefined"} (``undefined`` counts
    draws where the curves did not overlap), or None without per-image values on both sides."""
    if n_boot < 1:
        return None
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a, t = per_image_matrix(anchor_points, metric), per_image_matrix(test_points, metric)
    if a is None or t is None or a[0].shape[1] != t[0].shape[1]:
        return None
    n_img = a[0].shape[1]
    idx = np.random.default_rng(seed).integers(0, n_img, size=(n_boot, n_img))
    # [points, draws]: each curve's means over the drawn images
    ar, aq = (m[:, idx].mean(axis=2) for m in a)
    tr, tq = (m[:, idx].mean(axis=2) for m in t)
    rates = np.empty(n_boot)
    for b in range(n_boot):
        curves = {"anchor": {"bpp": ar[:, b], metric: aq[:, b]}, "test": {"bpp": tr[:, b], metric: tq[:, b]}}
        rates[b] = bd_table(curves, "anchor", metric, higher_is_better)["test"]["bd_rate"]
    ok = rates[np.isfinite(rates)]
    out = {"level": level, "n_boot": n_boot, "undefined": int(n_boot - len(ok))}
    if len(ok) == 0:
        return {**out, "lo": float("nan"), "hi": float("nan")}
    lo, hi = np.percentile(ok, [50 * (1 - level), 50 * (1 + level)])
    return {**out, "lo": float(lo), "hi": float(hi)}


def mean_interval(diffs: Sequence[float], n_boot: int = 1000, level: float = 0.95,
                  seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (one per image); a
    ValueError for a non-finite difference (its draws' means would be inf or NaN)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or not len(d):
        raise ValueError("mean_interval needs a non-empty 1-D array of differences")
    bad = np.flatnonzero(~np.isfinite(d))
    if len(bad):
        raise ValueError(f"mean_interval: {len(bad)} of {len(d)} differences are not finite "
                         f"(first: {d[bad[0]]} at index {bad[0]})")
    draws = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    lo, hi = np.percentile(d[draws].mean(axis=1), [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
