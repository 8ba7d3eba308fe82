"""Entropy-coder benchmark: vlmcodec rANS vs constriction's ANS vs CompressAI's rANS.

Same symbols for every coder: ``n`` values drawn from quantized zero-mean Gaussians whose scale
is picked uniformly per symbol from CompressAI's 64-entry log-spaced scale table (0.11 .. 256).
vlmcodec and CompressAI use the very same quantized CDF tables (CompressAI's layout, built the
way ``GaussianConditional.update`` does); constriction uses its ``QuantizedGaussian`` with the
same per-symbol scales. Times are wall-clock per call of the coder call alone (median and best
of ``--repeats``; the coders run round-robin so load changes hit all alike): CompressAI's list
arguments and constriction's float arrays are prepared outside the timed region. Every decode
is checked against the input.

    vlmcodec bench entropy [--n 2000000] [--repeats 5] [--json PATH]

constriction and compressai are benchmark-only dependencies (``pip install constriction``,
``pip install --no-deps compressai``); a missing one is reported and skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import importlib.util
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from vlmcodec.kernels import rans
from .common import check_output_path, count_arg, positive_arg, progress_bar, write_json

SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64
TAIL_MASS = 1e-9


def scale_table(lo: float = SCALE_MIN, hi: float = SCALE_MAX, levels: int = SCALE_LEVELS) -> np.ndarray:
    """CompressAI's ``get_scale_table``: ``exp(linspace(log lo, log hi, levels))`` (float64)."""
    return np.exp(np.linspace(math.log(lo), math.log(hi), levels))


def _std_cdf(x: np.ndarray) -> np.ndarray:
    erfc = np.vectorize(math.erfc, otypes=[np.float64])
    return 0.5 * erfc(-x / math.sqrt(2.0))


def gaussian_cdf_table(scales: np.ndarray, tail_mass: float = TAIL_MASS) -> rans.CdfTable:
    """Quantized discretised-Gaussian tables as CompressAI's ``GaussianConditional.update``:
    table t covers ``-c .. c`` with ``c = ceil(scale · Φ⁻¹(1 - tail_mass/2))``, escape mass
    ``2·Φ(-(c + ½)/scale)``."""
    from statistics import NormalDist

    multiplier = -NormalDist().inv_cdf(tail_mass / 2)
    pmfs, tails, offsets = [], [], []
    for s in scales:
        center = int(math.ceil(s * multiplier))
        samples = np.abs(np.arange(-center, center + 1, dtype=np.float64))
        pmfs.append(_std_cdf((0.5 - samples) / s) - _std_cdf((-0.5 - samples) / s))
        tails.append(2 * 0.5 * math.erfc((center + 0.5) / s / math.sqrt(2.0)))
        offsets.append(-center)
    return rans.CdfTable.from_pmfs(pmfs, tails, offsets)


def make_symbols(n: int, scales: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    indexes = rng.integers(0, len(scales), size=n, dtype=np.int32)
    symbols = np.rint(rng.normal(size=n) * scales[indexes]).astype(np.int32)
    return symbols, indexes


def model_bits(symbols: np.ndarray, indexes: np.ndarray, table: rans.CdfTable) -> float:
    """Ideal code length (bits) of the symbols under the quantized tables (escapes: symbol only)."""
    esc = table.cdf_length[indexes].astype(np.int64) - 2
    u = symbols.astype(np.int64) - table.offsets[indexes]
    u = np.where((u < 0) | (u >= esc), esc, u)
    freq = table.cdf[indexes, u + 1].astype(np.int64) - table.cdf[indexes, u]
    return float(np.sum(rans.PRECISION - np.log2(freq)))


def _load_compressai_ans():
    """CompressAI's compiled coder, loaded directly (``import compressai`` pulls in torchvision)."""
    spec = importlib.util.find_spec("compressai")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("compressai is not installed (pip install --no-deps compressai==1.2.8)")
    folder = Path(list(spec.submodule_search_locations)[0])
    candidates = sorted(folder.glob("ans*.so")) + sorted(folder.glob("ans*.pyd"))
    if not candidates:
        raise ImportError(f"no compiled ans module in {folder}")
    loader = importlib.machinery.ExtensionFileLoader("compressai.ans", str(candidates[0]))
    mod_spec = importlib.util.spec_from_file_location("compressai.ans", candidates[0], loader=loader)
    module = importlib.util.module_from_spec(mod_spec)
    loader.exec_module(module)
    return module


class _Case:
    """One coder configuration: ``encode()`` returns the coded data, ``decode(data)`` symbols."""

    def __init__(self, coder: str, threads: int, chunks: int, encode, decode, size):
        self.coder, self.threads, self.chunks = coder, threads, chunks
        self.encode, self.decode, self.size = encode, decode, size
        self.enc_times: list[float] = []
        self.dec_times: list[float] = []
        self.nbytes = 0

    def run_once(self, symbols: np.ndarray) -> None:
        t0 = time.perf_counter()
        data = self.encode()
        t1 = time.perf_counter()
        decoded = self.decode(data)
        t2 = time.perf_counter()
        if not np.array_equal(np.asarray(decoded, dtype=np.int32), symbols):
            raise RuntimeError(f"{self.coder}: round trip failed")
        self.enc_times.append(t1 - t0)
        self.dec_times.append(t2 - t1)
        self.nbytes = self.size(data)

    def row(self, n: int) -> dict:
        enc_med, dec_med = statistics.median(self.enc_times), statistics.median(self.dec_times)
        return {
            "coder": self.coder,
            "threads": self.threads,
            "chunks": self.chunks,
            "bytes": int(self.nbytes),
            "bits_per_symbol": 8.0 * self.nbytes / n,
            "encode_s_median": enc_med,
            "encode_s_best": min(self.enc_times),
            "decode_s_median": dec_med,
            "decode_s_best": min(self.dec_times),
            "encode_msym_s": n / enc_med / 1e6,
            "decode_msym_s": n / dec_med / 1e6,
        }


def case_vlmcodec(symbols, indexes, table, threads, chunks) -> _Case:
    return _Case(
        "vlmcodec rANS", threads, chunks,
        lambda: rans.encode(symbols, indexes, table, chunks, threads=threads),
        lambda data: rans.decode(data, indexes, table, threads=threads),
        lambda data: sum(map(len, data)),
    )


def case_compressai(symbols, indexes, table) -> _Case:
    ans = _load_compressai_ans()
    sym_l, idx_l = symbols.tolist(), indexes.tolist()
    cdf_l, len_l, off_l = table.cdf.tolist(), table.cdf_length.tolist(), table.offsets.tolist()
    enc, dec = ans.RansEncoder(), ans.RansDecoder()
    return _Case(
        "CompressAI 1.2.8 rANS", 1, 1,
        lambda: enc.encode_with_indexes(sym_l, idx_l, cdf_l, len_l, off_l),
        lambda data: dec.decode_with_indexes(data, idx_l, cdf_l, len_l, off_l),
        len,
    )


def case_constriction(symbols, indexes, scales) -> _Case:
    import constriction

    lo, hi = int(symbols.min()), int(symbols.max())
    # its support must hold two values at least (all symbols equal was a Rust panic, no exception)
    model = constriction.stream.model.QuantizedGaussian(lo, max(hi, lo + 1))
    means = np.zeros(symbols.size, dtype=np.float64)
    stds = scales[indexes].astype(np.float64)

    def encode():
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(symbols, model, means, stds)
        return coder.get_compressed()

    return _Case(
        "constriction ANS", 1, 1, encode,
        lambda data: constriction.stream.stack.AnsCoder(data).decode(model, means, stds),
        lambda data: data.nbytes,
    )


def _versions() -> dict:
    out: dict[str, str | int | None] = {"python": platform.python_version(), "numpy": np.__version__}
    from importlib import metadata

    for dist in ("vlmcodec", "constriction", "compressai"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["rans_format_version"] = rans.FORMAT_VERSION
    return out


def _device() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "system": platform.system(), "loadavg_at_start": load}


def run(n: int = 2_000_000, repeats: int = 5, chunks: int = 8, seed: int = 0, progress: bool = True) -> dict:
    scales = scale_table()
    table = gaussian_cdf_table(scales)
    symbols, indexes = make_symbols(n, scales, seed)
    config = {"n": n, "repeats": repeats, "chunks": chunks, "seed": seed, "scales": "0.11..256 x64",
              "tail_mass": TAIL_MASS}
    cases, skipped = [
        case_vlmcodec(symbols, indexes, table, threads=1, chunks=1),
        case_vlmcodec(symbols, indexes, table, threads=1, chunks=chunks),
        case_vlmcodec(symbols, indexes, table, threads=2, chunks=chunks),
    ], {}
    for name, make in (("constriction", lambda: case_constriction(symbols, indexes, scales)),
                       ("compressai", lambda: case_compressai(symbols, indexes, table))):
        try:
            cases.append(make())
        except ImportError as exc:
            skipped[name] = str(exc)
    # Round-robin: every repeat runs every coder once, so a load change on a shared machine
    # hits all of them alike.
    with progress_bar(repeats * len(cases), "coder runs", progress) as bar:
        for _ in range(repeats):
            for case in cases:
                case.run_once(symbols)
                bar.update()
    rows = [case.row(n) for case in cases]
    ours = rows[0]
    ratios = {
        "encode_2threads_vs_1thread_same_chunks": rows[2]["encode_msym_s"] / rows[1]["encode_msym_s"],
        "decode_2threads_vs_1thread_same_chunks": rows[2]["decode_msym_s"] / rows[1]["decode_msym_s"],
    }
    for r in rows[3:]:
        key = r["coder"].split()[0].lower()
        ratios[f"encode_vs_{key}_1thread"] = ours["encode_msym_s"] / r["encode_msym_s"]
        ratios[f"decode_vs_{key}_1thread"] = ours["decode_msym_s"] / r["decode_msym_s"]
        ratios[f"decode_vs_{key}_2threads"] = rows[2]["decode_msym_s"] / r["decode_msym_s"]
    return {
        "benchmark": "entropy",
        "config": config,
        "config_hash": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16],
        "device": _device(),
        "versions": _versions(),
        "model_bits_per_symbol": model_bits(symbols, indexes, table) / n,
        "results": rows,
        "ratios": ratios,
        "skipped": skipped,
    }


def format_table(report: dict) -> str:
    lines = [
        f"{report['config']['n']:,} symbols, quantized Gaussians, 64 scales 0.11..256; "
        f"model entropy {report['model_bits_per_symbol']:.4f} bits/symbol; median of "
        f"{report['config']['repeats']}; {report['device']['cpu']}, {report['device']['logical_cpus']} logical "
        f"CPUs, load average {report['device']['loadavg_at_start']}",
        f"{'coder':<24}{'thr':>4}{'chunks':>7}{'enc Msym/s':>12}{'dec Msym/s':>12}{'bits/sym':>10}",
    ]
    for r in report["results"]:
        lines.append(
            f"{r['coder']:<24}{r['threads']:>4}{r['chunks']:>7}{r['encode_msym_s']:>12.1f}"
            f"{r['decode_msym_s']:>12.1f}{r['bits_per_symbol']:>10.4f}"
        )
    for k, v in report["ratios"].items():
        lines.append(f"  {k}: {v:.2f}x")
    for k, v in report["skipped"].items():
        lines.append(f"  skipped {k}: {v}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmcodec bench entropy", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=positive_arg, default=2_000_000, help="number of symbols")
    parser.add_argument("--repeats", type=positive_arg, default=5)
    parser.add_argument("--chunks", type=positive_arg, default=8, help="chunks for the multi-chunk rows")
    parser.add_argument("--seed", type=count_arg, default=0, help="seed of the symbols drawn (0 or more)")
    parser.add_argument("--json", type=Path, default=Path("out/bench/entropy.json"), help="where to write the JSON")
    args = parser.parse_args(argv)
    if args.n < max(2, args.chunks):  # (fewer symbols than chunks failed in the coder, not naming --chunks)
        from vlmcodec.errors import ConfigError

        raise ConfigError(f"--n {args.n}: too few symbols; give at least {max(2, args.chunks)} (2, and no fewer "
                          f"than --chunks {args.chunks})")
    check_output_path(args.json, "--json")
    report = run(args.n, args.repeats, args.chunks, args.seed)
    print(format_table(report))
    write_json(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    from vlmcodec.bench.cli import main_of_module

    raise SystemExit(main_of_module("entropy"))
