"""``vlmcodec bench compare``: BD-rates and low-rate comparisons between curves of finished
``bench rd`` runs — for ablations (one model per run) against anchors from another run.

    vlmcodec bench compare --curve default=results/rd_kodak/rd.json \\
        --curve semantic=results/semantic/full/rd.json \\
        --anchor webp=results/rd_kodak/rd.json:webp --max-bpp 0.3 --out results/semantic/compare.md

A curve is ``NAME=RD_JSON[:CODEC]`` (codec default ``vlmcodec``). For every curve and anchor the
report gives the BD-rate and BD-quality per metric (pchip, as ``bench rd``), and at each of the
curve's points with bpp ≤ ``--max-bpp`` the anchor's value at the same bpp (linear in log-bpp
between its two neighbouring points; none outside its measured range) and whether the curve is
better there. Runs must share the images (checked: their names, and their pixels where both
rd.json record ``image_digests``). Where the runs stored per-image values
(``bench rd`` does since it records ``per_image``), each BD-rate gets a 95 % interval from
``--bootstrap`` paired resamples of the images (``bench/bootstrap.py``): the spread that the
choice of these few images alone produces. The report (a line at its top) and its JSON
(``command``) record the command that reproduces them.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..files import write_whole
from .bootstrap import bd_rate_interval
from .metrics import METRIC_DIRECTIONS
from .rd import bd_table
from .report import INTERVAL_LEGEND, _g4, _interval, _num, _pct, overlap_legend, overlap_mark
from .common import check_output_path, count_arg, finite_number, strict_json

DEFAULT_METRICS = ("psnr", "teacher-sim", "effnet-top1", "effnet-kl")


@dataclass
class Curve:
    name: str
    source: str
    images: tuple[str, ...]
    points: list[dict]
    higher_is_better: dict[str, bool]  # per metric, as the rd run recorded it
    digests: tuple[str, ...] = ()      # of the images' pixels (rd.json's image_digests); () in older files

    def better(self, metric: str) -> bool:
        """Whether a higher ``metric`` is better: as the rd run recorded it, else the project's own
        table (``METRIC_DIRECTIONS``: a merged rd.json could lack a kept metric's entry, and effnet-kl
        was then taken for higher-is-better); a ConfigError for a metric known to neither."""
        if metric in self.higher_is_better:
            return bool(self.higher_is_better[metric])
        if metric in METRIC_DIRECTIONS:
            return METRIC_DIRECTIONS[metric]
        raise ConfigError(f"{self.name} ({self.source}): the rd.json does not say whether a higher {metric} is "
                          f"better, and it is none of the project's metrics ({', '.join(METRIC_DIRECTIONS)}); "
                          "add its entry to the file's \"metrics\" list or leave it out of --metrics")

    def series(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        pts = [p for p in self.points if metric in p and p[metric] is not None]
        return (np.array([p["bpp"] for p in pts], dtype=float), np.array([p[metric] for p in pts], dtype=float))


def load_curve(spec: str) -> Curve:
    """``NAME=PATH[:CODEC]`` → the codec's points in that ``bench rd`` result."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ConfigError(f"curve {spec!r}: expected NAME=RD_JSON[:CODEC]")
    path, codec = rest, "vlmcodec"
    if ":" in rest and not Path(rest).exists():
        path, codec = rest.rsplit(":", 1)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"curve {name}: cannot read {path}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("codecs"), dict):  # (an AttributeError, KeyError…)
        raise ConfigError(f"curve {name}: {path} is not a `vlmcodec bench rd` result (rd.json)")
    if codec not in data["codecs"]:
        raise ConfigError(f"curve {name}: no codec {codec!r} in {path} (has {sorted(data['codecs'])})")
    points, metrics = data["codecs"][codec].get("points") if isinstance(data["codecs"][codec], dict) else None, \
        data.get("metrics", [])
    if (not isinstance(points, list) or not all(isinstance(p, dict) and finite_number(p.get("bpp")) for p in points)
            or not isinstance(metrics, list) or not all(isinstance(m, dict) and "name" in m for m in metrics)):
        raise ConfigError(f"curve {name}: {path}'s {codec} points or metrics are not those of a `vlmcodec bench rd` "
                          "result (each point needs its bpp)")
    hib = {m["name"]: m["higher_is_better"] for m in metrics if isinstance(m.get("higher_is_better"), bool)}
    return Curve(name, f"{path}:{codec}", tuple(data.get("images", ())), points, hib,
                 tuple(data.get("image_digests") or ()))


def _bd(anchor: Curve, test: Curve, metric: str) -> dict:
    """BD-rate and BD-quality of ``test`` against ``anchor``, on the axis ``bench rd`` uses."""
    curves = {}
    for key, c in (("anchor", anchor), ("test", test)):
        r, q = c.series(metric)
        curves[key] = {"bpp": r, metric: q}
    return bd_table(curves, "anchor", metric, anchor.better(metric)).get(
        "test", {"bd_rate": float("nan"), "bd_quality": float("nan"), "overlap": float("nan"),
                 "overlap_rate": float("nan")})


def anchor_value_at(anchor: Curve, metric: str, bpp: float) -> float:
    """The anchor's metric at ``bpp``, linear in log-bpp between its neighbouring points; NaN outside."""
    r, q = anchor.series(metric)
    order = np.argsort(r)
    r, q = r[order], q[order]
    if len(r) < 2 or not r[0] <= bpp <= r[-1]:
        return float("nan")
    return float(np.interp(math.log(bpp), np.log(r), q))


def check_unique_names(curves: list[Curve]) -> None:
    """Every curve and anchor named once: the results are kept by name (a name given twice showed
    the second's figures in both rows, or a second "vs NAME" table against the wrong curve)."""
    names = [c.name for c in curves]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"--curve/--anchor names must differ: {', '.join(repeated)} given more than once "
                          "(each names a row and a table of the report)")


def compare(curves: list[Curve], anchors: list[Curve], metrics=DEFAULT_METRICS, max_bpp: float = 0.3,
            n_boot: int = 1000, seed: int = 0) -> dict:
    """BD figures of every curve against every anchor and against the first curve (with a
    bootstrap interval where both have per-image values and ``n_boot`` > 0), plus the low-rate
    point-by-point comparison against the anchors."""
    check_unique_names(curves + anchors)
    for c in curves + anchors:  # every metric's direction known before any figure (a ConfigError if not)
        for m in metrics:
            c.better(m)
    notes: list[str] = []
    # every run that lists its images against the first that does (a first curve without a list,
    # an older rd.json, let two others on different images be compared without a word)
    listed = [c for c in curves + anchors if c.images]
    for c in listed[1:]:
        if c.images != listed[0].images:
            raise ConfigError(f"{c.name} ({c.source}) was measured on other images than {listed[0].name}")
    digested = [c for c in curves + anchors if c.digests]
    for c in digested[1:]:
        if c.digests != digested[0].digests:
            raise ConfigError(f"{c.name} ({c.source}) was measured on other images than {digested[0].name}, of "
                              "the same names (their pixels differ)")
    undigested = [c.name for c in curves + anchors if not c.digests]
    if undigested and len({c.source.rsplit(":", 1)[0] for c in curves + anchors}) > 1:  # runs of several files
        notes.append(f"{', '.join(undigested)}: an rd.json without image digests (older `bench rd`): its images "
                     "are matched to the others' by file name only")
    out: dict = {"metrics": list(metrics), "max_bpp": max_bpp, "bootstrap": n_boot, "bd": {}, "low_rate": {},
                 **({"notes": notes} if notes else {})}
    for c in curves:
        bd = out["bd"][c.name] = {}
        for a in anchors + ([curves[0]] if c is not curves[0] else []):
            bd[a.name] = {m: _bd(a, c, m) for m in metrics}
            if n_boot > 0 and a.images and a.images == c.images:
                for m in metrics:
                    ci = bd_rate_interval(a.points, c.points, m, a.better(m), n_boot, seed=seed)
                    if ci is not None:
                        bd[a.name][m]["ci"] = ci
        rows = []
        for p in sorted(c.points, key=lambda p: p["bpp"]):
            if p["bpp"] > max_bpp:
                continue
            row = {"quality": p.get("quality"), "bpp": p["bpp"], **{m: p.get(m) for m in metrics}, "vs": {}}
            for a in anchors:
                row["vs"][a.name] = {}
                for m in metrics:
                    v = anchor_value_at(a, m, p["bpp"])
                    # (None: not measured, or equal — "equal" says which: a tie was counted a loss)
                    equal = not math.isnan(v) and p.get(m) is not None and p[m] == v
                    better = None if math.isnan(v) or p.get(m) is None or equal else (
                        p[m] > v if a.better(m) else p[m] < v)
                    row["vs"][a.name][m] = {"anchor": v, "better": better, **({"equal": True} if equal else {})}
            rows.append(row)
        out["low_rate"][c.name] = rows
    return out


def markdown(res: dict, anchors: list[Curve], curves: list[Curve]) -> str:
    ms = res["metrics"]
    lines = ["# Curve comparison", ""] + ([f"Command: `{res['command']}`", ""] if res.get("command") else [])
    lines += ["Sources: " + "; ".join(f"**{c.name}** `{c.source}`" for c in curves + anchors),
             "", "BD-rate (pchip, as `bench rd`: MS-SSIM in dB, lower-is-better metrics negated; negative = "
             "fewer bits for the same value), with BD-quality in parentheses.", ""]
    lines += [f"_Note: {n}._" for n in res.get("notes", [])] + ([""] if res.get("notes") else [])
    if res.get("bootstrap"):
        lines += [f"In square brackets: the 95 % interval of the BD-rate over {res['bootstrap']} paired bootstrap "
                  "resamples of the images (where both runs stored per-image values): the spread the choice of "
                  "images alone produces. An interval that spans 0 does not separate the two curves. "
                  + INTERVAL_LEGEND, ""]
    for a_name in [a.name for a in anchors] + [curves[0].name]:
        rows = []
        for c in curves:
            bd = res["bd"][c.name].get(a_name)
            if bd is None:
                continue
            cells = [f"{_pct(_num(bd[m]['bd_rate']))}{overlap_mark(bd[m])}"
                     f"{_interval(bd[m].get('ci'), _num(bd[m]['bd_rate']))} "
                     f"({_g4(_num(bd[m]['bd_quality']))}{overlap_mark(bd[m], 'overlap_rate')})"
                     + (f" ({bd[m]['note']})" if bd[m].get("note") else "") for m in ms]
            rows.append(f"| {c.name} | " + " | ".join(cells) + " |")
        if rows:  # (a single curve's section against itself was a header and no row)
            lines += [f"## vs {a_name}", "", "| curve | " + " | ".join(ms) + " |", "| --- |" + " ---: |" * len(ms),
                      *rows, ""]
    if any(overlap_mark(e) or overlap_mark(e, "overlap_rate")
           for per in res["bd"].values() for vs in per.values() for e in vs.values()):
        lines += [overlap_legend(), ""]
    lines += [f"## Points at ≤ {res['max_bpp']} bpp against the anchors at the same bpp", "",
              "Each cell: the curve's value / the anchor's (interpolated in log-bpp); ✓ = the curve is better, "
              "✗ = worse, = = equal, – = the anchor was not measured at that rate.", ""]
    for a in anchors:
        lines += [f"### vs {a.name}", "", "| curve | quality | bpp | " + " | ".join(ms) + " |",
                  "| --- | ---: | ---: |" + " ---: |" * len(ms)]
        for c in curves:
            for row in res["low_rate"][c.name]:
                cells = []
                for m in ms:
                    vs = row["vs"][a.name][m]
                    mine = "n/a" if row[m] is None else f"{row[m]:.4g}"
                    mark = "=" if vs.get("equal") else "✓" if vs["better"] else "✗"
                    cells.append(f"{mine} / –" if vs["better"] is None and not vs.get("equal") else
                                 f"{mine} / {vs['anchor']:.4g} {mark}")
                lines.append(f"| {c.name} | {row['quality']:g} | {row['bpp']:.3f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vlmcodec bench compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--curve", action="append", required=True, metavar="NAME=RD_JSON[:CODEC]",
                   help="a curve to compare (repeatable; the first is also the reference for the others)")
    p.add_argument("--anchor", action="append", default=[], metavar="NAME=RD_JSON[:CODEC]",
                   help="an anchor curve (repeatable), e.g. webp=results/rd_kodak/rd.json:webp")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS))
    p.add_argument("--max-bpp", type=float, default=0.3)
    p.add_argument("--bootstrap", type=count_arg, default=1000, metavar="N",
                   help="paired bootstrap resamples of the images for the BD-rate intervals (0 = none)")
    p.add_argument("--seed", type=count_arg, default=0, help="seed of the bootstrap draws (0 or more)")
    p.add_argument("--out", type=Path, help="write the Markdown report here (and the figures as .json beside it)")
    args = p.parse_args(argv)
    try:
        if not (finite_number(args.max_bpp) and args.max_bpp > 0):  # (NaN listed every point "at ≤ nan bpp")
            raise ConfigError(f"--max-bpp must be a number above 0, got {args.max_bpp}")
        if args.out is not None and args.out.suffix.lower() == ".json":  # (the figures replaced the report)
            raise ConfigError(f"--out {args.out}: name the Markdown report (e.g. compare.md); its figures go "
                              "beside it as .json")
        if args.out is not None:  # before the run (a folder given failed after it)
            check_output_path(args.out, example="compare.md")  # (it suggested result.json, which compare refuses)
            check_output_path(args.out.with_suffix(".json"), "--out's figures")
        curves = [load_curve(s) for s in args.curve]
        anchors = [load_curve(s) for s in args.anchor]
        if len(curves) == 1 and not anchors:  # (a report of headers alone, exit 0)
            raise ConfigError("one --curve and no --anchor: nothing to compare it with (give another --curve "
                              "or an --anchor)")
        check_unique_names(curves + anchors)
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        measured = {k for c in curves + anchors for pt in c.points for k in pt}
        if args.metrics == ",".join(DEFAULT_METRICS):  # the defaults: those these curves have
            metrics = [m for m in metrics if m in measured]
        unknown = [m for m in metrics if m not in measured]
        if unknown or not metrics:  # (a misspelt metric gave tables of "n/a (+nan)" and exit 0)
            raise ConfigError(f"--metrics: {unknown or 'none given'} not measured in these curves (they have "
                              f"{sorted(measured - {'bpp', 'quality', 'bytes', 'images', 'per_image', 'enc_s', 'dec_s'})})")
        res = compare(curves, anchors, metrics, args.max_bpp, args.bootstrap, args.seed)
    except ConfigError as e:
        print(f"vlmcodec bench compare: error: {e}", file=sys.stderr)
        return 2
    # the command that reproduces the report, as rd.json records its own
    res = {"command": "vlmcodec bench compare " + shlex.join(sys.argv[1:] if argv is None else argv), **res}
    md = markdown(res, anchors, curves)
    print(md)
    if args.out:  # each written whole or not at all (a Ctrl-C left half a report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_whole(args.out, (md + "\n").encode())
        # strict JSON, as rd.json: an undefined BD value is null (NaN was written as a bare token)
        write_whole(args.out.with_suffix(".json"),
                    (json.dumps(strict_json(res), indent=1, default=float) + "\n").encode())
    return 0


if __name__ == "__main__":
    from vlmcodec.bench.cli import main_of_module

    raise SystemExit(main_of_module("compare"))
