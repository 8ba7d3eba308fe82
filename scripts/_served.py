"""Shared by the client-side serving benches (remote_upload_bench.py, tls_overhead_bench.py):
their common options, and a `vlmcodec serve` process to drive; ``report`` (print and write a
result as JSON) by other benches too (c_decoder_bench.py)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from vlmcodec.bench.common import positive_arg

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"


def client_bench_args(doc: str, rounds: int) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--images", default=str(KODAK))
    ap.add_argument("--rounds", type=positive_arg, default=rounds)
    ap.add_argument("--concurrency", type=positive_arg, default=4)
    ap.add_argument("--quality", type=float, default=50.0)
    ap.add_argument("--out", help="write the results as JSON here")
    return ap.parse_args()


def start_server(extra: list[str] = ()) -> tuple[subprocess.Popen, str]:
    """`vlmcodec serve` on a free port in its own process, and its URL (from its banner)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from vlmcodec.cli import main; sys.exit(main())",
                             "serve", "--port", "0", "--quiet", "--max-queue", "1024", *extra],
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    line = proc.stderr.readline()
    if " on " not in line:
        proc.kill()
        raise RuntimeError(f"vlmcodec serve did not start: {line.strip()}")
    return proc, line.split(" on ")[1].split(": POST")[0]


def report(result: dict, out: str | None) -> int:
    """Print ``result`` as JSON, and write it to ``out`` when given."""
    import json

    print(json.dumps(result, indent=1))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")
    return 0
