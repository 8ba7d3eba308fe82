"""Speed of the fused Triton kernels against their torch references, on a CUDA GPU.

Two ways to run it (both need CUDA; on a CPU-only machine every case skips with the reason):

    pytest bench/kernels.py --benchmark-only -m gpu          # pytest-benchmark suite
    vlmcodec bench kernels [--quick]                          # a plain table

Each case reports the median time (``triton.testing.do_bench``: CUDA events, L2 flushed between
runs, median with 20/80 % quantiles), the achieved bandwidth ``(bytes read + bytes written) /
time`` and the fraction of the device's peak HBM bandwidth (table below; unknown devices get no
fraction).  The byte count is the *minimum* traffic of the op (each input read once, each output
written once) for both the fused kernel and the reference, so the two GB/s figures compare the
same work; the reference really moves more (x², the conv output and the rsqrt are round trips).
In the pytest-benchmark suite these numbers are stored in each benchmark's ``extra_info``.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

pytest: Any  # (None without it)
try:
    import pytest
except ImportError:  # a test extra: the table (main) runs without it, the pytest-benchmark suite is not defined
    pytest = None

from vlmcodec.kernels.gdn import gdn, gdn_ref
from vlmcodec.kernels.quantize import dequantize, dequantize_ref, quantize, quantize_ref

#: Peak HBM bandwidth in GB/s (1e9 B/s), by a substring of ``torch.cuda.get_device_name()``;
#: the first match wins, so the more specific names come first.
PEAK_BANDWIDTH_GBPS = (
    ("H200", 4800.0),  # H200 SXM / NVL: 4.8 TB/s HBM3e
    ("H100 PCIe", 2000.0),
    ("H100 NVL", 3900.0),
    ("H100", 3350.0),  # H100 SXM5 80GB HBM3: 3.35 TB/s
    ("A100-SXM4-80GB", 2039.0),
    ("A100 80GB PCIe", 1935.0),
    ("A100", 1555.0),  # 40 GB
)

GDN_SHAPES = ((8, 192, 64, 96), (1, 128, 512, 768))
QUANT_SHAPES = ((8, 192, 64, 96),)
DTYPES = (torch.float16, torch.float32)
SCALE_TABLE_SIZE = 64


def peak_bandwidth_gbps(device_name: str) -> float | None:
    for key, gbps in PEAK_BANDWIDTH_GBPS:
        if key in device_name:
            return gbps
    return None


def cuda_unavailable_reason() -> str | None:
    """Why the benchmarks cannot run here, or None."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    try:
        import triton  # noqa: F401
    except Exception as exc:
        return f"triton is not importable ({exc!r})"
    from vlmcodec.kernels._utils import triton_language_interpreted

    if triton_language_interpreted():
        return "TRITON_INTERPRET=1 is set: the kernels would run in the CPU interpreter, not on the GPU"
    return None


# ------------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str  # e.g. "gdn/triton"
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int  # minimum bytes read + written
    fn: Callable[[], object]


def _gdn_inputs(shape, dtype, device):
    n, c, h, w = shape
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(shape, device=device, generator=g).mul_(3).to(dtype)
    beta = torch.rand(c, device=device, generator=g) + 0.5
    gamma = 0.1 * torch.eye(c, device=device) + torch.rand(c, c, device=device, generator=g) * (0.2 / c)
    return x, beta, gamma


def gdn_cases(shape, dtype, device="cuda") -> list[Case]:
    x, beta, gamma = _gdn_inputs(shape, dtype, device)
    c = shape[1]
    nbytes = 2 * x.numel() * x.element_size() + (c * c + c) * 4
    cases = []
    for inverse, op in ((False, "gdn"), (True, "igdn")):
        cases.append(Case(f"{op}/triton", shape, dtype, nbytes,
                          functools.partial(gdn, x, beta, gamma, inverse, impl="triton")))
        cases.append(Case(f"{op}/torch", shape, dtype, nbytes, functools.partial(gdn_ref, x, beta, gamma, inverse)))
    return cases


def _quant_inputs(shape, dtype, device):
    g = torch.Generator(device=device).manual_seed(0)
    y = (torch.randn(shape, device=device, generator=g) * 8).to(dtype)
    mu = torch.randn(shape, device=device, generator=g).to(dtype)
    sigma = torch.exp(torch.rand(shape, device=device, generator=g) * 7 - 2.5)
    table = torch.exp(torch.linspace(math.log(0.11), math.log(256.0), SCALE_TABLE_SIZE, device=device))
    gain = torch.rand(shape[1], device=device, generator=g).to(dtype) + 0.5
    return y, mu, sigma, table, gain


def quantize_cases(shape, dtype, device="cuda") -> list[Case]:
    y, mu, sigma, table, gain = _quant_inputs(shape, dtype, device)
    n, es = y.numel(), y.element_size()
    q_bytes = n * (2 * es + sigma.element_size()) + n * (4 + es + 4)  # y, mu, sigma -> s, y_hat, k
    d_bytes = n * (4 + es) + n * es  # s, mu -> y_hat
    symbols = quantize_ref(y, mu, sigma, table)[0]
    return [
        Case("quantize/triton", shape, dtype, q_bytes, lambda: quantize(y, mu, sigma, table, impl="triton")),
        Case("quantize/torch", shape, dtype, q_bytes, lambda: quantize_ref(y, mu, sigma, table)),
        Case("dequantize/triton", shape, dtype, d_bytes, lambda: dequantize(symbols, mu, gain, impl="triton")),
        Case("dequantize/torch", shape, dtype, d_bytes, lambda: dequantize_ref(symbols, mu, gain)),
    ]


def measure(case: Case, device_name: str) -> dict:
    """Median time and bandwidth of ``case`` (autotuning happens in the warm-up call)."""
    from triton.testing import do_bench

    with torch.inference_mode():
        case.fn()  # compile + autotune outside the timing
        torch.cuda.synchronize()
        ms, ms_lo, ms_hi = do_bench(case.fn, quantiles=[0.5, 0.2, 0.8])
    gbps = case.nbytes / (ms * 1e-3) / 1e9
    peak = peak_bandwidth_gbps(device_name)
    return {
        "device": device_name,
        "bytes": case.nbytes,
        "ms_median": ms,
        "ms_p20": ms_lo,
        "ms_p80": ms_hi,
        "gbps": gbps,
        "peak_gbps": peak,
        "fraction_of_peak": (gbps / peak) if peak else None,
    }


# ------------------------------------------------------------------------------------------------
# pytest-benchmark suite
# ------------------------------------------------------------------------------------------------

def _dtype_id(d):
    return str(d).replace("torch.", "")


if pytest is not None:
    pytestmark = pytest.mark.gpu

    @pytest.fixture(scope="module")
    def device_name():
        reason = cuda_unavailable_reason()
        if reason:
            pytest.skip(reason)
        return torch.cuda.get_device_name()

    def _run_benchmark(benchmark, case: Case, device_name: str):
        info = measure(case, device_name)
        benchmark.extra_info.update(
            info | {"op": case.name, "shape": list(case.shape), "dtype": str(case.dtype).replace("torch.", "")}
        )

        def run_synchronized():
            case.fn()
            torch.cuda.synchronize()

        with torch.inference_mode():
            benchmark.pedantic(run_synchronized, rounds=30, iterations=1, warmup_rounds=3)

    def _run_op(benchmark, device_name, op, cases, shape, dtype):
        benchmark.group = f"{op.split('/')[0]} {'x'.join(map(str, shape))} {_dtype_id(dtype)}"
        (case,) = [c for c in cases if c.name == op]
        _run_benchmark(benchmark, case, device_name)

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("shape", GDN_SHAPES, ids=lambda s: "x".join(map(str, s)))
    @pytest.mark.parametrize("op", ["gdn/triton", "gdn/torch", "igdn/triton", "igdn/torch"])
    def test_gdn(benchmark, device_name, op, shape, dtype):
        _run_op(benchmark, device_name, op, gdn_cases(shape, dtype), shape, dtype)

    @pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
    @pytest.mark.parametrize("shape", QUANT_SHAPES, ids=lambda s: "x".join(map(str, s)))
    @pytest.mark.parametrize("op", ["quantize/triton", "quantize/torch", "dequantize/triton", "dequantize/torch"])
    def test_quantize(benchmark, device_name, op, shape, dtype):
        _run_op(benchmark, device_name, op, quantize_cases(shape, dtype), shape, dtype)


# ------------------------------------------------------------------------------------------------
# vlmcodec bench kernels
# ------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vlmcodec bench kernels", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="only the first GDN shape and fp16")
    args = parser.parse_args(argv)
    reason = cuda_unavailable_reason()
    if reason:  # exit 0: a GPU-only bench, run along with the others on a machine without one
        print(f"vlmcodec bench kernels: nothing measured: {reason}", file=sys.stderr)
        return 0
    device_name = torch.cuda.get_device_name()
    peak = peak_bandwidth_gbps(device_name)
    print(f"device: {device_name}  peak: {f'{peak:.0f} GB/s' if peak else 'unknown'}  torch {torch.__version__}")
    gdn_shapes = GDN_SHAPES[:1] if args.quick else GDN_SHAPES
    dtypes = DTYPES[:1] if args.quick else DTYPES
    header = f"{'op':<20} {'shape':<18} {'dtype':<8} {'ms':>9} {'GB/s':>9} {'% peak':>7}"
    print(header)
    print("-" * len(header))
    cases = [c for s in gdn_shapes for d in dtypes for c in gdn_cases(s, d)]
    cases += [c for s in QUANT_SHAPES for d in dtypes for c in quantize_cases(s, d)]
    for case in cases:
        r = measure(case, device_name)
        frac = f"{100 * r['fraction_of_peak']:6.1f}%" if r["fraction_of_peak"] is not None else "      -"
        shape = "x".join(map(str, case.shape))
        print(f"{case.name:<20} {shape:<18} {_dtype_id(case.dtype):<8} {r['ms_median']:9.4f} {r['gbps']:9.1f} {frac:>7}")
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    from vlmcodec.bench.cli import main_of_module

    raise SystemExit(main_of_module("kernels"))
