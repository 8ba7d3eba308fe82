"""Rate control: the highest quality whose stream fits a size budget (``Codec.encode_to_size``).

A stream's size grows with the quality, smoothly and nearly monotonically (one variable-rate
model: the quality only moves the gain on the latents), so the search brackets the budget between
a quality that fits and one that does not, and narrows the bracket by interpolating the budget
in log-size (inverse quadratic interpolation through the nearest probes, with a bisection
step whenever interpolation creeps up on the budget from one side), until the bracket is 0.1
quality wide or a stream fills the budget to within 1 %. Qualities are searched on the grid a
stream can carry (steps of 0.01). Whatever the local wiggles of size against quality, the result
is a stream that fits, of the highest quality among those tried. For a slow coder (refinement),
the search runs on a fast proxy whose sizes it tracks, and the slow coder corrects it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from .checks import check_count, is_real
from .errors import BudgetError, ConfigError

GRID = 100  # qualities in hundredths: what the container stores
DEFAULT_TOLERANCE = 0.1  # stop once the bracket is this narrow (quality units) ...
DEFAULT_SLACK = 0.01  # ... or a stream fits within this fraction of the budget
MAX_PROBES = 16


def budget_bytes(width: int, height: int, max_bytes: int | None, max_bpp: float | None) -> int:
    """The size budget in bytes from ``max_bytes`` or ``max_bpp`` (bits per pixel of the image as
    given, the original size, as every bpp figure here is counted), exactly one of them."""
    if (max_bytes is None) == (max_bpp is None):
        raise ConfigError("give one of max_bytes and max_bpp")
    if max_bytes is not None:  # (capped as max_bpp's: 10**400 overflowed a float division with refine)
        return min(check_count("max_bytes", max_bytes), 2**62)
    if not is_real(max_bpp):  # ("0.1" was float()ed; [] a TypeError)
        raise ConfigError(f"max_bpp must be a positive number, got {max_bpp!r}")
    bpp = float(max_bpp)
    if not math.isfinite(bpp) or bpp <= 0:
        raise ConfigError(f"max_bpp must be a positive number, got {max_bpp!r}")
    budget = bpp * width * height / 8
    # (1e308 bpp overflowed to infinity, an OverflowError: any budget this large fits every stream)
    return max(1, math.floor(budget)) if budget < 2**62 else 2**62


def largest_fitting(stream_at: Callable[[float], bytes], budget: int, lo: float = 0.0, hi: float = 100.0,
                    tolerance: float = DEFAULT_TOLERANCE, slack: float = DEFAULT_SLACK,
                    max_probes: int = MAX_PROBES) -> tuple[bytes, list]:
    """The stream of the highest quality in [lo, hi] (as far as the search tells) whose size is at
    most ``budget``, and the probes made [(quality, size)]. ``stream_at(q)`` codes at quality q
    (a multiple of 0.01). The search stops when the fitting and the failing quality are at most
    ``tolerance`` apart, or a stream fills the budget to within ``slack`` (a fraction).
    BudgetError when even ``lo`` does not fit."""
    data, _, probes = _search(stream_at, budget, lo, hi, tolerance, slack, max_probes)
    return data, probes


def largest_fitting_via_proxy(stream_at: Callable[[float], bytes], proxy_at: Callable[[float], bytes], budget: int,
                              lo: float = 0.0, hi: float = 100.0, tries: int = 3,
                              slack: float = DEFAULT_SLACK) -> tuple[bytes, list]:
    """``largest_fitting`` for a slow coder (``stream_at``: a refined encode) whose sizes follow a
    fast one's (``proxy_at``: the one-pass encode) up to a slowly varying ratio. Each round searches
    the proxy for the budget scaled by the last real/proxy size ratio and codes for real once at
    the quality found, up to ``tries`` rounds, until a stream fills the budget to within ``slack``;
    failing that, the plain search on the slow coder finishes, in the bracket the rounds left.
    Returns the stream and the real codings made [(quality, size)]."""
    real: list[tuple[float, int]] = []
    coded: dict[float, bytes] = {}

    def real_at(q: float) -> bytes:  # each quality coded for real once
        if q not in coded:
            coded[q] = stream_at(q)
            real.append((q, len(coded[q])))
        return coded[q]

    best, best_q, ratio = None, -1.0, 1.0
    for _ in range(tries):
        try:
            proxy, q, _ = _search(proxy_at, max(1, math.floor(budget / ratio)), lo, hi, slack=slack)
        except BudgetError:
            if not real:  # even the proxy's lowest quality is over: one slow coding there, not at hi first
                data = real_at(round(lo * GRID) / GRID)
                if len(data) > budget:
                    raise BudgetError(over_budget(lo, len(data), budget)) from None
                best, best_q = data, lo
            break
        if q in coded:
            break  # the same quality again: the ratio has settled
        data = real_at(q)
        ratio = len(data) / len(proxy)
        if len(data) <= budget and q > best_q:
            best, best_q = data, q
            if len(data) >= budget * (1.0 - slack) or q >= hi:
                return best, real
    # not settled within the budget: the plain search on the real coder, in the bracket the
    # rounds left (its first probes, at qualities already coded, cost nothing)
    failing = [q for q, size in real if size > budget and q > best_q]
    top = min(failing) if failing else hi
    data, _, _ = _search(real_at, budget, max(lo, best_q), top, slack=slack)
    return data, real


def over_budget(quality: float, size: int, budget: int) -> str:
    """BudgetError's message: the lowest quality allowed does not fit (the caller, who knows the
    image, may add what would make a smaller stream)."""
    return f"even quality {quality:g} needs {size} bytes, over the budget of {budget} bytes"


def _search(stream_at: Callable[[float], bytes], budget: int, lo: float = 0.0, hi: float = 100.0,
            tolerance: float = DEFAULT_TOLERANCE, slack: float = DEFAULT_SLACK,
            max_probes: int = MAX_PROBES) -> tuple[bytes, float, list]:
    """``largest_fitting``, also returning the quality of the stream it returns."""
    if not 0.0 <= lo <= hi <= 100.0:
        raise ConfigError(f"quality bounds must satisfy 0 <= lo <= hi <= 100, got {lo}, {hi}")
    probes: list[tuple[float, int]] = []

    def probe(k: int) -> bytes:
        data = stream_at(k / GRID)
        probes.append((k / GRID, len(data)))
        return data

    k_lo, k_hi = round(lo * GRID), round(hi * GRID)
    best = probe(k_hi)
    if len(best) <= budget:
        return best, k_hi / GRID, probes
    size_hi = len(best)
    best = probe(k_lo)
    size_lo = len(best)
    if size_lo > budget:
        raise BudgetError(over_budget(k_lo / GRID, size_lo, budget))
    step = max(1, round(tolerance * GRID))
    full = budget * (1.0 - slack)
    target = math.log(budget * (1.0 - slack / 2))  # aimed inside the window [full, budget]
    bisect = False
    while k_hi - k_lo > step and size_lo < full and len(probes) < max_probes:
        width = k_hi - k_lo
        guess = None if bisect or size_hi <= size_lo else _interpolate(probes, target, (k_lo, size_lo), (k_hi, size_hi))
        k = (k_lo + k_hi) // 2 if guess is None else round(guess * GRID)
        k = min(max(k, k_lo + 1), k_hi - 1)
        data = probe(k)
        if len(data) <= budget:
            k_lo, size_lo, best = k, len(data), data
        else:
            k_hi, size_hi = k, len(data)
        # an interpolation that did not halve the bracket and landed on the same side as the
        # probe before (creeping up on the target from one side) is followed by a bisection
        same_side = (probes[-1][1] <= budget) == (probes[-2][1] <= budget)
        bisect = not bisect and same_side and k_hi - k_lo > width / 2
    return best, k_lo / GRID, probes


def _interpolate(probes: list, target: float, lo: tuple[int, int], hi: tuple[int, int]) -> float | None:
    """The quality where log-size reaches ``target``: inverse quadratic interpolation through the
    three probes nearest the target in log-size (size bends against quality, so a straight line
    through the bracket overshoots), else linear through the bracket; None when neither lands
    strictly inside the bracket."""
    (k_lo, size_lo), (k_hi, size_hi) = lo, hi
    q_lo, q_hi = k_lo / GRID, k_hi / GRID
    points = sorted({(math.log(size), q) for q, size in probes}, key=lambda p: abs(p[0] - target))[:3]
    if len(points) == 3 and len({p[0] for p in points}) == 3:
        (a, qa), (b, qb), (c, qc) = points
        guess = (qa * (target - b) * (target - c) / ((a - b) * (a - c))
                 + qb * (target - a) * (target - c) / ((b - a) * (b - c))
                 + qc * (target - a) * (target - b) / ((c - a) * (c - b)))
        if q_lo < guess < q_hi:
            return guess
    t = (target - math.log(size_lo)) / (math.log(size_hi) - math.log(size_lo))
    guess = q_lo + t * (q_hi - q_lo)
    return guess if q_lo < guess < q_hi else None
