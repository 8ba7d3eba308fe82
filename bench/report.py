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


def _interval(ci: dict | None) -> str:
    """A bootstrap interval as " [lo, hi]" (percent points), or "" when there is none."""
    if not ci or not math.isfinite(ci["lo"]):
        return ""
    return f" [{ci['lo']:+.1f}, {ci['hi']:+.1f}]"


def bd_cell(anchor_points, test_points, metric: str, higher_is_better: bool = True) -> str:
    """The BD-rate of ``test`` against ``anchor`` on ``metric`` (over the points' means) with its
    paired-bootstrap interval, as a table cell: "+1.2 % [-0.3, +2.8]" ("n/a" where the curves do
    not overlap; no interval without per-image values)."""
    from .bootstrap import bd_rate_interval
    from .rd import bd_table

    curves = {name: {"bpp": [p["bpp"] for p in pts], metric: [p[metric] for p in pts]}
              for name, pts in (("anchor", anchor_points), ("test", test_points))}
    bd = bd_table(curves, "anchor", metric, higher_is_better)["test"]["bd_rate"]
    return _pct(bd) + _interval(bd_rate_interval(anchor_points, test_points, metric, higher_is_better))


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
    rows = sorted(table.items(), key=lambda kv: (not math.isfinite(kv[1]["bd_rate"]), kv[1]["bd_rate"]))
    for name, v in rows:
        ci = _interval(v.get("ci"))
        ci_cell = (f"{ci} % |" if ci else " – |") if with_ci else ""
        lines.append(f"| {labels.get(name, name)} | {_pct(v['bd_rate'])} |{ci_cell} {_f(v['bd_quality'], 3)} "
                     f"| {v.get('note', '')} |")
    return lines + [""]


def render(result: dict) -> str:
    metrics = [m["name"] for m in result["metrics"]]
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
          f"bpp from the real encoded files",
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
