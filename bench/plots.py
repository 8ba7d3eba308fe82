"""Rate–distortion plots of a ``bench rd`` result: one PNG and one SVG per metric.

Measured curves are solid with markers; published anchors (PSNR and MS-SSIM only) are dashed
and thinner, labelled "(published)". MS-SSIM is drawn in dB, −10·log10(1 − MS-SSIM).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..files import write_whole

MAX_BPP = 2.5   # the x axis stops here at most; higher-rate points exist in rd.json


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def x_limit(drawn_bpp: list[float]) -> float:
    """The x axis ends just past the highest drawn rate, at MAX_BPP at most (a low-rate study
    is not squeezed into a corner of the plot)."""
    return min(MAX_BPP, 1.05 * max(drawn_bpp)) if drawn_bpp else MAX_BPP


def unavailable() -> str:
    """Why the plots cannot be drawn here ("" when they can): matplotlib, of the ``bench`` extra, missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:  # (a broken install: the module it lacks)
        what = "is not installed" if e.name == "matplotlib" else f"cannot be imported ({e})"
        return f"matplotlib {what}: pip install 'vlmcodec[bench]'"
    return ""


def plot_metric(result: dict, metric: str, out: Path, with_anchors: bool) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .rd import msssim_db

    tr = (lambda v: msssim_db(v)) if metric == "ms-ssim" else (lambda v: np.asarray(v, dtype=float))
    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=120)
    drawn_bpp: list[float] = []
    if with_anchors:
        cmap = plt.get_cmap("Dark2")
        styles = ("--", ":", "-.")
        for i, (stem, a) in enumerate(result.get("anchors", {}).items()):
            if metric not in a:
                continue
            drawn_bpp += list(a["bpp"])
            ax.plot(a["bpp"], tr(a[metric]), styles[i % 3], lw=1.2, color=cmap(i % 8), alpha=0.9,
                    label=f"{a['label']} (published)")
    cmap = plt.get_cmap("tab10")
    for i, (name, c) in enumerate(result["codecs"].items()):
        pts = [p for p in c["points"] if metric in p]
        if not pts:
            continue
        bpp = [p["bpp"] for p in pts]
        drawn_bpp += bpp
        ax.plot(bpp, tr([p[metric] for p in pts]), "-o", ms=3.5, lw=2 if name == "vlmcodec" else 1.5,
                color=cmap(i % 10), label=c["label"])
    ylabel = {"psnr": "PSNR (RGB) [dB]", "ms-ssim": "MS-SSIM (RGB) [dB]"}.get(metric, metric)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, x_limit(drawn_bpp))
    n = len(result.get("images", []))
    ax.set_title(f"{metric} vs rate, {n} images ({Path(result.get('images_dir', '')).name})")
    ax.grid(alpha=0.3)
    labels = ax.get_legend_handles_labels()[1]
    ax.legend(fontsize=7, loc="lower right", ncol=1 if max(map(len, labels), default=0) > 40 else 2)
    fig.tight_layout()
    paths = []
    try:
        for ext in ("png", "svg"):  # rendered whole, then written whole (an interrupted re-run left a truncated plot)
            p = Path(out) / f"rd_{_slug(metric)}.{ext}"
            buf = io.BytesIO()
            fig.savefig(buf, format=ext)
            write_whole(p, buf.getvalue())
            paths.append(p.name)
    finally:
        plt.close(fig)
    return paths


def plot_all(result: dict, out: Path) -> dict:
    """Every metric of the result → {metric: [file names]}."""
    files = {}
    for m in result["metrics"]:
        name = m["name"]
        files[name] = plot_metric(result, name, out, with_anchors=name in ("psnr", "ms-ssim"))
    return files
