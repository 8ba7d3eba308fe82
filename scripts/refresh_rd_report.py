"""Recompute an ``rd.json``'s BD tables from its stored curves and rewrite its ``report.md``,
without coding any image again: for results written before the tables recorded ``overlap``
(and the reports marked narrow-window values with †).

    python scripts/refresh_rd_report.py results/rd_kodak

The BD values are recomputed as ``bench rd`` computes them (``vlmcodec.bench.rd.bd_table``, intervals by
``vlmcodec.bench.bootstrap.bd_rate_interval`` with its seed); the script stops without writing anything
if any of them differs from the stored one (beyond 1e-9), so only the added fields change."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from vlmcodec.bench.bootstrap import bd_rate_interval
from vlmcodec.bench.common import strict_json, write_json
from vlmcodec.bench.rd import ANCHORED_METRICS, PSNR_ANCHOR, SEMANTIC_ANCHOR, bd_table
from vlmcodec.bench.report import write_report


def recompute(result: dict) -> dict:
    """The ``bd`` section of ``result`` (an rd.json), computed again from its curves."""
    metrics = [(m["name"], m.get("higher_is_better", True)) for m in result["metrics"]]
    codecs = result["codecs"]
    measured = {n: {"label": c["label"], "bpp": [p["bpp"] for p in c["points"]],
                    **{m: [p.get(m) for p in c["points"]] for m, _ in metrics
                       if all(p.get(m) is not None for p in c["points"])}}
                for n, c in codecs.items()}
    both = {**{f"anchor:{k}": v for k, v in result["anchors"].items()}, **measured}
    vs = f"anchor:{PSNR_ANCHOR}"
    bd = {"psnr_vs_vtm": bd_table(both, vs, "psnr"), "ms-ssim_vs_vtm": bd_table(both, vs, "ms-ssim")}
    for name, hib in metrics:
        if name in ANCHORED_METRICS or f"{name}_vs_{SEMANTIC_ANCHOR}" not in result["bd"]:
            continue
        table = bd[f"{name}_vs_{SEMANTIC_ANCHOR}"] = bd_table(measured, SEMANTIC_ANCHOR, name, hib)
        for codec, entry in table.items():
            ci = bd_rate_interval(codecs[SEMANTIC_ANCHOR]["points"], codecs[codec]["points"], name, hib)
            if ci is not None:
                entry["ci"] = ci
    return bd


def _same(a, b) -> bool:
    if a is None or b is None:
        return (a is None or (isinstance(a, float) and math.isnan(a))) and (
            b is None or (isinstance(b, float) and math.isnan(b)))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return a == b


def differences(old: dict, new: dict) -> list[str]:
    """Where the stored BD values (and intervals) are not the recomputed ones."""
    out = []
    for table, rows in old.items():
        for codec, entry in rows.items():
            again = new.get(table, {}).get(codec)
            if again is None:
                out.append(f"{table}/{codec}: not recomputed")
                continue
            for key, value in entry.items():
                if key == "ci":
                    for k, v in value.items():
                        if not _same(v, again.get("ci", {}).get(k)):
                            out.append(f"{table}/{codec}/ci/{k}: {v} vs {again.get('ci', {}).get(k)}")
                elif not _same(value, again.get(key)):
                    out.append(f"{table}/{codec}/{key}: {value} vs {again.get(key)}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a bench rd output folder (rd.json, report.md)")
    a = p.parse_args(argv)
    path = a.folder / "rd.json"
    result = json.loads(path.read_text())
    bd = recompute(result)
    wrong = differences(result["bd"], strict_json(bd))
    if wrong:
        print("refresh_rd_report: the recomputed BD values differ from the stored ones; nothing written:\n  "
              + "\n  ".join(wrong[:20]), file=sys.stderr)
        return 1
    result["bd"] = bd
    write_json(path, strict_json(result))
    write_report(result, a.folder / "report.md")
    print(f"{path} and {a.folder / 'report.md'}: BD tables recomputed, the same values, overlap added")
    return 0


if __name__ == "__main__":
    sys.exit(main())
