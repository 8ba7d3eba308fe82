"""A process's first ``Codec()`` (the default model, ``threads=2``), this tree against an earlier
commit, in fresh processes, the arms alternating; medians.

    python scripts/codec_cold_start_ab.py --baseline REV [--rounds 8] [--out FILE]

The baseline runs from a copy of REV's ``engine/``, ``kernels/`` and ``export/`` (``git archive``)
laid out as the package, with this install's compiled rANS extension, and the editable install's
import redirect taken out of that process.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import vlmcodec.kernels.rans as rans

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import sys, time
if {baseline!r}:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                        and "redirect" not in type(f).__name__.lower()]
    sys.path.insert(0, {baseline!r})
import torch
import vlmcodec
from vlmcodec import codec as _codec
t = time.perf_counter()
vlmcodec.Codec(threads=2)
print(f"{{(time.perf_counter() - t) * 1000:.1f}} ms", vlmcodec.__file__, "torch._dynamo" in sys.modules)
"""


def baseline_package(rev: str, into: Path) -> Path:
    src = into / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "engine", "kernels", "export"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    pkg = into / "pkg" / "vlmcodec"
    shutil.copytree(src / "engine", pkg)
    shutil.copytree(src / "kernels", pkg / "kernels")
    shutil.copytree(src / "export", pkg / "export")
    shutil.copy(rans._rans.__file__, pkg / "kernels" / "rans")  # (the installed build, beside the sources)
    return into / "pkg"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the commit to compare with")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        arms = {"this tree": "", args.baseline: str(baseline_package(args.baseline, Path(tmp)))}
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for r in range(args.rounds):
            for arm in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                out = subprocess.run([sys.executable, "-c", PROBE.format(baseline=arms[arm])], capture_output=True,
                                     text=True, check=True, cwd=tmp).stdout
                times[arm].append(float(re.match(r"([\d.]+) ms", out).group(1)))
    med = {arm: statistics.median(t) for arm, t in times.items()}
    ratio = med["this tree"] / med[args.baseline]
    print(f"Codec(): {med['this tree']:.0f} ms vs {med[args.baseline]:.0f} ms at {args.baseline} ({ratio:.2f}x), "
          f"medians of {args.rounds} fresh processes each, alternating")
    if args.out:
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "baseline": args.baseline,
                                        "times_ms": times, "median_ms": med, "ratio": ratio}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
