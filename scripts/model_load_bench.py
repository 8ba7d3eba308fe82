"""What checking a model's parameters costs at load time, side by side.

C: ``vlmc_decoder_open_memory`` on the default model's decoder-model file, this tree's library
against one built from ``--baseline REV`` (before the reader checked every floating-point value
finite), alternating arms per round. Python: ``checkpoint.not_finite`` on the default model
file's tensors (a sum per tensor first, the value-by-value check only where the sum is not
finite) against the value-by-value check alone (``torch.isfinite(t).all()`` per tensor), and a
whole ``load_model`` for scale. Medians.

    python scripts/model_load_bench.py --baseline 5d452a1 [--rounds 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from c_decoder_bench import baseline_library

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1e3, 3)


def c_open(baseline: str, rounds: int, work: Path) -> dict:
    from vlmcodec.codec import default_model_path
    from vlmcodec.export.c_decoder import CStreamDecoder, build_c_decoder, decoder_model_bytes
    from vlmcodec.models.checkpoint import load_model

    libs = {"this build": build_c_decoder(ROOT, work / "build") / "libvlmc_decoder.so",
            "baseline build": baseline_library(baseline, work)}
    blob = decoder_model_bytes(load_model(default_model_path()))
    times: dict[str, list[float]] = {k: [] for k in libs}
    for r in range(rounds):
        for k in (list(libs) if r % 2 == 0 else list(libs)[::-1]):
            t = time.perf_counter()
            CStreamDecoder(libs[k], blob).close()
            times[k].append(time.perf_counter() - t)
    med = {k: _median_ms(v) for k, v in times.items()}
    return {"model_file_bytes": len(blob), "median_ms": med,
            "ratio_this_over_baseline": round(med["this build"] / med["baseline build"], 3)}


def python_checks(rounds: int) -> dict:
    from vlmcodec.codec import default_model_path
    from vlmcodec.models.checkpoint import load_model, not_finite, read_safetensors

    tensors, _ = read_safetensors(default_model_path())

    def value_by_value() -> list[str]:
        return [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]

    arms = {"not_finite (sum first)": lambda: not_finite(tensors), "isfinite mask per tensor": value_by_value}
    times: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(rounds):
        for k in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            t = time.perf_counter()
            assert arms[k]() == []
            times[k].append(time.perf_counter() - t)
    loads = []
    for _ in range(max(3, rounds // 8)):
        t = time.perf_counter()
        load_model(default_model_path())
        loads.append(time.perf_counter() - t)
    med = {k: _median_ms(v) for k, v in times.items()}
    return {"values": sum(v.numel() for v in tensors.values()), "median_ms": med,
            "ratio_sum_first_over_mask": round(med["not_finite (sum first)"] / med["isfinite mask per tensor"], 3),
            "load_model_median_ms": _median_ms(loads)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="git revision of the C library to compare with")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--out", help="write the result as JSON here too")
    a = p.parse_args()
    from vlmcodec.bench.common import environment

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        result = {"c_open": c_open(a.baseline, a.rounds, Path(tmp)), "python": python_checks(a.rounds),
                  "baseline": a.baseline, "environment": environment()}
    print(json.dumps(result, indent=2))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
