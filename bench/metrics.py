"""Image-quality metrics of the rate–distortion bench, as small pluggable objects.

A metric is any object with

    name: str                      the column name ("psnr", "ms-ssim", "recall@1", ...)
    higher_is_better: bool
    compute(original, decoded) -> float       both uint8 H×W×3 numpy arrays

and optionally

    compute_batch(originals, decodeds) -> list[float]     (model-based metrics batch here)
    prepare(originals) -> None                             (set-level state, e.g. a gallery)
    cache_key: str                                          (key in the result cache; defaults to
                                                             name; changes when the state does)

``build_metrics(names, originals)`` returns the metrics asked for plus a ``{name: reason}`` dict
of those that could not be built (e.g. the semantic ones when ``vlmcodec.bench.semantic`` does
not import) — missing metrics are reported, never dropped silently.

PSNR is over the RGB channels together (10 log10(255² / MSE)), capped at ``PSNR_CEILING`` = 100 dB:
a losslessly coded image scores 100 dB rather than inf (which made a whole point's mean inf and
its BD-rates and bootstrap intervals undefined); 100 dB is an error of one level in one sample of
every ~150 000, above any lossy point. MS-SSIM follows Wang, Simoncelli
& Bovik (2003): 11-tap Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, five scales with weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2×2 average pooling between scales, contrast–structure
at the first four scales and full SSIM at the last, computed per RGB channel and averaged — the
convention of CompressAI's "ms-ssim-rgb" anchors (pytorch_msssim with data_range 1).
"""

from __future__ import annotations

import hashlib
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

PSNR_CEILING = 100.0  # dB: the PSNR of identical images (and of any closer than that)
MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WIN_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)


@runtime_checkable
class Metric(Protocol):
    name: str
    higher_is_better: bool

    def compute(self, original: np.ndarray, decoded: np.ndarray) -> float: ...


def metric_key(metric) -> str:
    """The key a metric's values are cached under."""
    return getattr(metric, "cache_key", metric.name)


def compute_all(metric, originals: Sequence[np.ndarray], decodeds: Sequence[np.ndarray]) -> list[float]:
    """Values of one metric for pairs of images, batched when the metric supports it."""
    if hasattr(metric, "compute_batch"):
        return [float(v) for v in metric.compute_batch(list(originals), list(decodeds))]
    return [float(metric.compute(o, d)) for o, d in zip(originals, decodeds)]


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected H×W×3 images, got {a.shape}")


# --------------------------------------------------------------------------- PSNR

def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB over all RGB samples, at most ``PSNR_CEILING`` (identical images: exactly that)."""
    from vlmcodec.image_io import psnr as _psnr

    _check_pair(a, b)
    return min(_psnr(a, b, data_range), PSNR_CEILING)


class PSNR:
    name = "psnr"
    higher_is_better = True

    def compute(self, original, decoded) -> float:
        return psnr(original, decoded)


# --------------------------------------------------------------------------- MS-SSIM

def _gaussian_window(size: int = SSIM_WIN_SIZE, sigma: float = SSIM_SIGMA) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian over axes 0 and 1 of H×W×C, 'valid' region only (no padding)."""
    try:
        from scipy.ndimage import correlate1d
    except ImportError:  # numpy only: same values, about twice slower
        x = np.lib.stride_tricks.sliding_window_view(x, len(g), axis=0) @ g
        return np.lib.stride_tricks.sliding_window_view(x, len(g), axis=1) @ g
    r = len(g) // 2
    x = correlate1d(x, g, axis=0, mode="constant")[r:-r]
    return correlate1d(x, g, axis=1, mode="constant")[:, r:-r]


def _avg_pool2(x: np.ndarray) -> np.ndarray:
    """2×2 average pooling; an odd side is zero-padded by one on each end first, counted in the
    mean (torch avg_pool2d(padding=side % 2), as pytorch_msssim does)."""
    ph, pw = x.shape[0] % 2, x.shape[1] % 2
    if ph or pw:
        x = np.pad(x, ((ph, ph), (pw, pw), (0, 0)))
        x = x[: x.shape[0] // 2 * 2, : x.shape[1] // 2 * 2]
    h, w = x.shape[0] // 2, x.shape[1] // 2
    return x.reshape(h, 2, w, 2, -1).mean(axis=(1, 3))


def _ssim_terms(x: np.ndarray, y: np.ndarray, g: np.ndarray, data_range: float):
    """Per-channel mean SSIM and mean contrast–structure term, each of shape (C,)."""
    c1 = (SSIM_K[0] * data_range) ** 2
    c2 = (SSIM_K[1] * data_range) ** 2
    mu_x, mu_y = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mu_x**2
    syy = _filter(y * y, g) - mu_y**2
    sxy = _filter(x * y, g) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (lum * cs).mean(axis=(0, 1)), cs.mean(axis=(0, 1))


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0,
            weights: Sequence[float] = MSSSIM_WEIGHTS) -> float:
    """MS-SSIM of two H×W×C images (uint8 or float in [0, data_range]), averaged over channels.

    The smaller side must exceed (win_size − 1)·2^(scales − 1) = 160 pixels for 5 scales.
    """
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    levels = len(weights)
    min_side = (SSIM_WIN_SIZE - 1) * 2 ** (levels - 1)
    if min(a.shape[:2]) <= min_side:
        raise ValueError(f"MS-SSIM with {levels} scales needs sides > {min_side} pixels, got {a.shape[:2]}")
    x = np.asarray(a, dtype=np.float64).reshape(*a.shape[:2], -1)
    y = np.asarray(b, dtype=np.float64).reshape(*b.shape[:2], -1)
    g = _gaussian_window()
    mcs = []
    for level in range(levels):
        ssim, cs = _ssim_terms(x, y, g, data_range)
        if level < levels - 1:
            mcs.append(np.maximum(cs, 0))
            x, y = _avg_pool2(x), _avg_pool2(y)
    vals = np.stack(mcs + [np.maximum(ssim, 0)])                       # (levels, C)
    per_channel = np.prod(vals ** np.asarray(weights, dtype=np.float64)[:, None], axis=0)
    return float(per_channel.mean())


class MSSSIM:
    name = "ms-ssim"
    higher_is_better = True

    def prepare(self, originals: Sequence[np.ndarray]) -> None:
        """ConfigError for an image too small for its five scales, before any is coded (``ms_ssim``
        raised it only when the first decoded image was scored)."""
        from vlmcodec.errors import ConfigError

        min_side = (SSIM_WIN_SIZE - 1) * 2 ** (len(MSSSIM_WEIGHTS) - 1)
        small = [o.shape[:2] for o in originals if min(o.shape[:2]) <= min_side]
        if small:
            h, w = min(small, key=min)
            raise ConfigError(f"ms-ssim needs images with both sides over {min_side} px; {len(small)} of "
                              f"{len(originals)} are not (the smallest {w}x{h}): leave ms-ssim out of --metrics "
                              "or use larger images")

    def compute(self, original, decoded) -> float:
        _check_pair(original, decoded)
        return ms_ssim(original, decoded)


# --------------------------------------------------------------------------- retrieval

def retrieval_descriptor(img: np.ndarray) -> np.ndarray:
    """A deterministic, model-free global descriptor (L2-normalised, float64).

    Two halves of equal weight: (1) the 8×8 lowest-frequency 2-D DCT coefficients (DC dropped) of
    the luma resampled to 64×64 — layout and coarse structure; (2) a joint RGB colour histogram,
    4 bins per channel, square-rooted (Hellinger). Independent of every codec and model here.
    """
    from PIL import Image

    y = np.asarray(Image.fromarray(img).convert("L").resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float64)
    n = 64
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))  # DCT-II rows
    coeff = (basis[:8] @ y @ basis[:8].T).ravel()[1:]
    coeff /= np.linalg.norm(coeff) + 1e-12
    q = (img.reshape(-1, 3) // 64).astype(np.int64)
    hist = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64).astype(np.float64)
    hist = np.sqrt(hist / hist.sum())
    d = np.concatenate([coeff, hist])
    return d / np.linalg.norm(d)


class RetrievalRecall1:
    """Image-to-image retrieval recall@1: the decoded image as the query against a gallery of all
    originals of the run; 1 when its nearest gallery item (cosine, ``retrieval_descriptor``) is
    its own original, else 0. The mean over images is the recall@1 of the codec at that point."""

    name = "recall@1"
    higher_is_better = True

    def __init__(self, descriptor=retrieval_descriptor):
        self.descriptor = descriptor
        self._gallery: np.ndarray | None = None
        self.cache_key = self.name

    def prepare(self, originals: Sequence[np.ndarray]) -> None:
        self._gallery = np.stack([self.descriptor(o) for o in originals])
        digest = hashlib.sha256(self._gallery.round(6).tobytes()).hexdigest()[:10]
        self.cache_key = f"{self.name}:{len(originals)}:{digest}"

    def compute(self, original, decoded) -> float:
        if self._gallery is None:
            raise RuntimeError("RetrievalRecall1.prepare(originals) must be called first")
        own = int(np.argmax(self._gallery @ self.descriptor(original)))
        hit = int(np.argmax(self._gallery @ self.descriptor(decoded)))
        return float(hit == own)


# --------------------------------------------------------------------------- registry

BASE_METRICS = {"psnr": PSNR, "ms-ssim": MSSSIM, "recall@1": RetrievalRecall1}
# The semantic metrics the issue asks for; they come from vlmcodec.bench.semantic.
SEMANTIC_METRIC_NAMES = ("teacher-sim", "effnet-top1", "effnet-kl")
# Run only when asked for by name (they cost more, and older result files do not have them).
OPTIONAL_SEMANTIC_METRIC_NAMES = ("effnet-top1-10crop",)
# Whether a higher value is better, for every metric the project measures (its metric classes'
# ``higher_is_better``, kept here without importing the semantic models): ``bench compare`` goes
# by it where an rd.json does not record a metric's direction (tests check it against the classes).
METRIC_DIRECTIONS = {"psnr": True, "ms-ssim": True, "recall@1": True, "teacher-sim": True,
                     "effnet-top1": True, "effnet-top1-10crop": True, "effnet-kl": False}


def semantic_metrics(optional: bool = False) -> tuple[list, dict[str, str]]:
    """Metric objects from ``vlmcodec.bench.semantic``, and ``{name: reason}`` for the missing.

    Accepted shapes of that module, in order: a ``rd_metrics()`` / ``metrics()`` factory or a
    ``METRICS`` list of metric objects (``name``, ``higher_is_better``, ``compute`` or
    ``compute_batch``). With ``optional`` the factory is called as ``rd_metrics(optional=True)``
    and the optional metrics count among the missing when it fails.
    """
    names = SEMANTIC_METRIC_NAMES + (OPTIONAL_SEMANTIC_METRIC_NAMES if optional else ())
    try:
        from vlmcodec.bench import semantic
    except Exception as e:  # noqa: BLE001 — any import failure means "not available", with its reason
        reason = f"vlmcodec.bench.semantic does not import ({type(e).__name__}: {e})"
        return [], {n: reason for n in names}
    found = None
    try:
        for attr in ("rd_metrics", "metrics"):
            if callable(getattr(semantic, attr, None)):
                factory = getattr(semantic, attr)
                found = list(factory(optional=True) if optional else factory())
                break
        else:
            table = getattr(semantic, "METRICS", None)
            if isinstance(table, (list, tuple)):
                found = list(table)
    except Exception as e:  # noqa: BLE001 — e.g. model weights not present
        reason = f"vlmcodec.bench.semantic failed to build its metrics ({type(e).__name__}: {e})"
        return [], {n: reason for n in names}
    if found is None:
        reason = "vlmcodec.bench.semantic exposes no rd_metrics()/metrics()/METRICS"
        return [], {n: reason for n in names}
    good = [m for m in found if hasattr(m, "name") and (hasattr(m, "compute") or hasattr(m, "compute_batch"))]
    return good, {}


def build_metrics(names: Sequence[str] | None, originals: Sequence[np.ndarray],
                  semantic: bool = True) -> tuple[list, dict[str, str]]:
    """Metrics to run (base ones, then semantic when importable) and the missing ones with why.

    ``names`` None means all available but the optional ones (``OPTIONAL_SEMANTIC_METRIC_NAMES``);
    otherwise only those names (unknown names raise)."""
    metrics = [cls() for key, cls in BASE_METRICS.items() if names is None or key in names]
    missing: dict[str, str] = {}
    sem: list = []
    if semantic:
        sem, missing = semantic_metrics(optional=names is not None
                                        and any(n in OPTIONAL_SEMANTIC_METRIC_NAMES for n in names))
        metrics += [m for m in sem if names is None or m.name in names]
    if names is not None:
        known = set(BASE_METRICS) | {m.name for m in sem} | set(missing)
        if semantic:  # (the optional ones were built only when asked for: "available" left them out)
            known |= set(SEMANTIC_METRIC_NAMES + OPTIONAL_SEMANTIC_METRIC_NAMES)
        unknown = [n for n in names if n not in known]
        if unknown:
            off = "" if semantic else (" (semantic metrics off; with them: "
                                       f"{', '.join(SEMANTIC_METRIC_NAMES + OPTIONAL_SEMANTIC_METRIC_NAMES)})")
            raise ValueError(f"unknown metric(s) {unknown}; available: {', '.join(sorted(known))}{off}")
        missing = {k: v for k, v in missing.items() if k in names}
    for m in metrics:
        if hasattr(m, "prepare"):
            m.prepare(originals)
    return metrics, missing
