"""Markdown report of a ``bench rd`` result (``report.md``): what ran, the curves, the BD-rates,
and what is missing and why."""

from __future__ import annotations

import math
from pathlib import Path


def _f(v, nd=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}"


def _pct(v) -> str:
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:+.1f} %"


MAX_UNDEFINED = 0.05  # above this share of undefined bootstrap draws no interval is given
DAGGER = "†"          # a BD value whose curves overlap on less than bdrate.MIN_OVERLAP of their range


def interval_text(ci: dict | None, point: float | None = None) -> str:
    """A bootstrap interval as "[lo, hi]" (percent points), "" when there is none. Draws where
    the BD-rate was undefined (the resampled curves did not overlap) are left out of the
    percentiles, so their count follows: "[lo, hi] (12/1000 undefined)". Where the point estimate
    is not finite or more than ``MAX_UNDEFINED`` of the draws are undefined, the percentiles of
    the rest would describe another population than the figure's: no interval, and why
    ("interval n/a: 61 % of 1000 draws undefined")."""
    if not ci:
        return ""
    n, bad = int(ci.get("n_boot") or 0), int(ci.get("undefined") or 0)
    share = bad / n if n else 1.0
    if bad >= n and (point is None or not math.isfinite(point)):  # nothing defined: the "n/a" says it
        return ""
    if share > MAX_UNDEFINED or not math.isfinite(ci.get("lo", float("nan"))):
        return f"interval n/a: {100 * share:.0f} % of {n} draws undefined"
    if point is None or not math.isfinite(point):
        return "interval n/a: the BD-rate itself is undefined"
    return f"[{ci['lo']:+.1f}, {ci['hi']:+.1f}]" + (f" ({bad}/{n} undefined)" if bad else "")


def _interval(ci: dict | None, point: float | None = None) -> str:
    """``interval_text`` with a leading space (for "BD-rate [lo, hi]" cells), "" without an interval."""
    text = interval_text(ci, point)
    return "" if not text else f" {text}" if text.startswith("[") else f" ({text})"


INTERVAL_LEGEND = (f"Where some resamples had no BD-rate (their curves did not overlap), the interval is over the "
                   f"others and their count follows it, e.g. \"(12/1000 undefined)\"; where the BD-rate itself is "
                   f"undefined or more than {100 * MAX_UNDEFINED:.0f} % of the resamples are, no interval is given "
                   "(\"interval n/a\", with why).")


def overlap_mark(entry: dict, key: str = "overlap") -> str:
    """" †" where the entry's ``key`` overlap ("overlap": quality axis, the BD-rate's;
    "overlap_rate": log-rate axis, the BD-quality's) is below ``bdrate.MIN_OVERLAP`` and its BD
    value is defined (an undefined one reads "n/a" already), else ""."""
    from .bdrate import MIN_OVERLAP

    v, bd = entry.get(key), entry.get("bd_rate" if key == "overlap" else "bd_quality")
    if not (isinstance(v, (int, float)) and isinstance(bd, (int, float)) and math.isfinite(v) and math.isfinite(bd)):
        return ""
    return f" {DAGGER}" if v < MIN_OVERLAP else ""


def overlap_legend() -> str:
    from .bdrate import MIN_OVERLAP

    return (f"{DAGGER} the two curves overlap on less than {100 * MIN_OVERLAP:.0f} % of their combined range (on "
            "a BD-rate: of quality; on a BD-quality: of log-rate; the `bjontegaard` package's threshold): the "
            "value averages over a narrow window and does not rank the codecs over their whole ranges "
            "(`overlap` / `overlap_rate` in the JSON).")


def _g4(v) -> str:
    """A BD-quality to 4 significant digits, signed ("n/a" when undefined): token-similarity
    differences are ~1e-3, which 3 decimals rounded to noise."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:+.4g}"


def bd_cell(anchor_points, test_points, metric: str, higher_is_better: bool = True) -> str:
    """The BD-rate of ``test`` against ``anchor`` on ``metric`` (over the points' means) with its
    paired-bootstrap interval, as a table cell: "+1.2 % [-0.3, +2.8]" ("n/a" where the curves do
    not overlap; no interval without per-image values; ``interval_text``'s count of undefined
    draws, or why there is no interval; a dagger where the curves overlap on less than
    ``bdrate.MIN_OVERLAP`` of their quality range)."""
    from .bootstrap import bd_rate_interval
    from .rd import bd_table

    curves = {name: {"bpp": [p["bpp"] for p in pts], metric: [p[metric] for p in pts]}
              for name, pts in (("anchor", anchor_points), ("test", test_points))}
    entry = bd_table(curves, "anchor", metric, higher_is_better)["test"]
    bd = entry["bd_rate"]
    ci = bd_rate_interval(anchor_points, test_points, metric, higher_is_better)
    return _pct(bd) + overlap_mark(entry) + _interval(ci, bd)


def bd_markdown(result: dict, key: str) -> list[str]:
    table = result["bd"].get(key, {})
    if not table:
        return [f"_{key}: no anchor curve for this table._", ""]
    metric, anchor = key.split("_vs_")
    unit = " dB" if metric in ("psnr", "ms-ssim") else ""
    labels = {**{f"anchor:{k}": f"{a['label']} (published)" for k, a in result.get("anchors", {}).items()},
              **{k: c["label"] for k, c in result["codecs"].items()}}
    with_ci = any("ci" in v for v in table.values())
    ci_head, ci_rule = (" 95 % interval (bootstrap over images) |", " ---: |") if with_ci else ("", "")
    lines = [f"| codec | BD-rate vs {anchor.upper()} ({metric}) |{ci_head} BD-{metric}{unit} | note |",
             f"| --- | ---: |{ci_rule} ---: | --- |"]
    rows = sorted(table.items(), key=lambda kv: (not _finite(kv[1]["bd_rate"]), _num(kv[1]["bd_rate"])))
    for name, v in rows:
        ci = interval_text(v.get("ci"), _num(v["bd_rate"]))
        ci_cell = ((f" {ci.replace(']', '] %', 1)} |" if ci.startswith("[") else f" {ci} |") if ci else " – |") \
            if with_ci else ""
        note = "; ".join(x for x in (v.get("note", ""), _overlap_note(v)) if x)
        lines.append(f"| {labels.get(name, name)} | {_pct(_num(v['bd_rate']))}{overlap_mark(v)} |{ci_cell} "
                     f"{_g4(v['bd_quality'])}{overlap_mark(v, 'overlap_rate')} | {note} |")
    lines.append("")
    if any(overlap_mark(v) or overlap_mark(v, "overlap_rate") for v in table.values()):
        lines += [overlap_legend(), ""]
    if with_ci:
        lines += [INTERVAL_LEGEND, ""]
    return lines


def _num(v) -> float:
    """A stored BD value as a float (null in rd.json, for an undefined one, is NaN)."""
    return float("nan") if v is None else float(v)


def _finite(v) -> bool:
    return math.isfinite(_num(v))


def _overlap_note(v: dict) -> str:
    """The overlaps of a marked entry, e.g. "overlap 15 % (quality), 62 % (log-rate)"."""
    parts = [f"{100 * v[k]:.0f} % ({axis})" for k, axis in (("overlap", "quality"), ("overlap_rate", "log-rate"))
             if overlap_mark(v, k)]
    return "overlap " + ", ".join(parts) if parts else ""


def render(result: dict) -> str:
    metrics = [m["name"] for m in result["metrics"]]
    kept_only = [m["name"] for m in result["metrics"] if m.get("kept_codecs_only")]
    env = result.get("env", {})
    L = ["# Rate–distortion benchmark", ""]
    if result.get("command"):
        L += ["Command:", "", "```", result["command"], "```", ""]
    if result.get("anchors_note"):
        L += [f"_{result['anchors_note']}._", ""]
    if result.get("earlier_commands"):  # codecs kept from earlier runs by --merge
        L += ["Codecs kept (`--merge`) from the earlier runs of:", "", "```", *result["earlier_commands"], "```", ""]
    L += [f"- images: {len(result['images'])} from `{result['images_dir']}`",
          f"- run: {env.get('time', '?')} on {env.get('cpu', '?')}, torch {env.get('torch', '?')}",
          f"- metrics: {', '.join(metrics)}; per image, averaged over the images at each quality; "
          f"bpp from the real encoded files"
          + (f" ({', '.join(kept_only)}: of the codecs kept by `--merge` only, not measured by this run)"
             if kept_only else ""),
          f"- BD method: {result.get('bd_method', 'pchip')} (Bjøntegaard, piecewise cubic), over the overlapping "
          "quality interval; MS-SSIM BD on −10·log10(1 − MS-SSIM); negative BD-rate = fewer bits than the anchor",
          ""]
    lower = [m["name"] for m in result["metrics"] if not m.get("higher_is_better", True)]
    if lower:
        L += [f"- lower is better for {', '.join(lower)}: its BD values are computed on the negated metric, "
              "so a negative BD-quality there means a larger value (worse) than the anchor", ""]
    L += ["## Missing", ""]
    for k, why in result.get("missing_codecs", {}).items():
        L.append(f"- codec **{k}**: {why}")
    for k, why in result.get("missing_metrics", {}).items():
        L.append(f"- metric **{k}**: {why}")
    if not result.get("missing_codecs") and not result.get("missing_metrics"):
        L.append("- none: every codec and metric asked for ran")
    for m in metrics:
        values = {p.get(m) for c in result["codecs"].values() for p in c["points"]}
        if values == {None}:
            L.append(f"- note: **{m}** has no value at any point (every measurement of it failed)")
        elif len(values) == 1:
            L.append(f"- note: **{m}** is {values.pop():g} at every point: it does not separate the codecs on this set")
    L.append("")
    plots = result.get("plots", {})
    if plots:
        L += ["## Plots", ""]
        for m, files in plots.items():
            png = next((f for f in files if f.endswith(".png")), None)
            if png:
                L.append(f"![{m}]({png})")
        L.append("")
    L += ["## BD-rates", ""]
    for key in result["bd"]:
        L += [f"### {key.replace('_vs_', ' vs ')}", ""] + bd_markdown(result, key)
    L += ["## Measured points", ""]
    head = ["codec", "quality", "bpp"] + metrics + ["enc s", "dec s"]
    L += ["| " + " | ".join(head) + " |", "|" + " --- |" * 2 + " ---: |" * (len(head) - 2)]
    for name, c in result["codecs"].items():
        for p in c["points"]:
            vals = [_f(p.get(m), 4 if m in ("ms-ssim",) or "kl" in m or "sim" in m else 2) for m in metrics]
            L.append(f"| {name} | {c['quality_name']} {p['quality']:g} | {p['bpp']:.4f} | " + " | ".join(vals)
                     + f" | {p['enc_s']:.3f} | {p['dec_s']:.3f} |")
    for k, why in result.get("missing_codecs", {}).items():
        L.append(f"| {k} | missing | — |" + " — |" * (len(metrics) + 2))
    L += ["", "## Codec versions and settings", ""]
    for name, c in result["codecs"].items():
        s = {k: v for k, v in c["settings"].items() if k not in ("codec", "version")}
        L.append(f"- **{name}**: {c['version']}; {s}")
    L.append("")
    return "\n".join(L)


def write_report(result: dict, path: Path) -> None:
    """report.md, written whole or not at all (an interrupted re-run left a truncated report)."""
    from ..files import write_whole

    write_whole(path, render(result).encode("utf-8"))
