"""Helpers for the Triton kernel tests, loaded by path from tests/test_kernel_*.py (pytest does not
load this file by itself: it is not named conftest.py).

Interpreter mode is per process
-------------------------------
Triton decides when a function is *defined* whether it is compiled or interpreted
(``TRITON_INTERPRET=1``), and that includes its own standard library (``tl.zeros`` ...), defined
at the first ``import triton``.  So one process either interprets (CPU tests) or compiles (PTX/cubin
checks, real GPU runs) — see ``vlmcodec.kernels._utils``.  Hence:

* :func:`setup_interpreter` (called at the top of the kernel test modules, before anything here
  imports triton) asks for the interpreter when there is no CUDA device and the variable is
  unset.  Best would be ``tests/conftest.py`` doing this before collection (requested); until
  then, if triton was already imported compiled in this process, the CPU kernel tests skip and a
  single test re-runs the module in a subprocess with ``TRITON_INTERPRET=1``
  (:func:`run_pytest_interpreted`).
* Compiling to PTX/cubin always happens in a fresh subprocess without the interpreter
  (:func:`compile_in_subprocess`; this file is also that subprocess's script).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: max |kernel - reference| / max |reference| per output dtype name.  fp32 and fp16 are the
#: project's bounds; bf16 has an 8-bit significand, so even the exactly rounded result is off by
#: up to 2**-8 ≈ 3.9e-3 of the output's scale — its bound is that rounding step plus a margin.
TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 5e-3}

#: Largest dynamic shared memory per block (bytes, opt-in maximum) of the compile targets.
SHARED_LIMIT = {80: 166912, 90: 232448}  # A100: 163 KiB, H100: 227 KiB


def setup_interpreter() -> None:
    """Request Triton's interpreter for this process when there is no GPU and nobody decided."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"triton is not importable ({exc!r}); pip install 'vlmcodec[triton]'"
    return None


def interpreted() -> bool:
    from vlmcodec.kernels._utils import triton_language_interpreted

    return triton_language_interpreted()


NOT_INTERPRETED_REASON = (
    "triton was imported without TRITON_INTERPRET=1 in this process (a GPU is present, the variable "
    "was 0, or another module imported triton first); the CPU kernel tests run in a subprocess "
    "instead (test_cpu_tests_in_interpreter_subprocess)"
)


def gpu_only(test):
    """Real CUDA execution: marked ``gpu``; skipped without CUDA (that reason first, as it is the
    one that matters on a machine without a GPU) or in a process running Triton's interpreter."""
    import pytest
    import torch

    test = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")(test)
    test = pytest.mark.skipif(interpreted(), reason="this process runs Triton's interpreter (TRITON_INTERPRET=1)")(test)
    return pytest.mark.gpu(test)


def tolerance(dtype) -> float:
    return TOLERANCE[str(dtype).replace("torch.", "")]


def rel_err(actual, expected) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    a, e = actual.double().cpu(), expected.double().cpu()
    scale = e.abs().max().clamp_min(1e-30)
    return float((a - e).abs().max() / scale)


@contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update({k: v for k, v in values.items()})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_kernel_module(name: str, *, interpret: bool):
    """A private copy of ``vlmcodec.kernels.<name>`` (not put in ``sys.modules``) whose kernels
    were defined with ``TRITON_INTERPRET`` = ``interpret``.  Only useful within the process's
    mode, or to check the error raised when the modes mismatch."""
    full = f"vlmcodec.kernels.{name}"
    spec = importlib.util.find_spec(full)
    module = importlib.util.module_from_spec(spec)
    with _env(TRITON_INTERPRET="1" if interpret else "0"):
        spec.loader.exec_module(module)
    return module


def run_pytest_interpreted(test_file: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``test_file``'s default selection in a subprocess whose triton is interpreted."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test_file],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


# ------------------------------------------------------------------------------------------------
# Ahead-of-time compilation to PTX / cubin (no GPU needed)
# ------------------------------------------------------------------------------------------------

ARCHS = (80, 90)

_GDN_PTRS = {
    "_gdn_fwd_kernel": {"X": "x", "Y": "x", "BETA": "fp32", "GAMMA": "fp32"},
    "_gdn_bwd_t_kernel": {"X": "x", "DY": "x", "BETA": "fp32", "GAMMA": "fp32", "T": "fp32", "S": "fp32"},
    "_gdn_bwd_dx_kernel": {"X": "x", "DY": "x", "S": "fp32", "T": "fp32", "GAMMA": "fp32", "DX": "x"},
}
_Q_PTRS = {
    "_quantize_kernel": {"Y": "x", "MU": "x", "SIGMA": "fp32", "TABLE": "fp32", "SYM": "i32", "YHAT": "x", "IDX": "i32"},
    "_dequantize_kernel": {"SYM": "i32", "MU": "x", "GAIN": "x", "YHAT": "x"},
}
_FLOAT_SCALARS = {"scale_bound"}

# kernel -> (module, configs attribute, main variant, extra variants); a variant is
# (name, element dtype, integer type of sizes/strides, extra constexprs)
_KERNELS = {
    "_gdn_fwd_kernel": ("gdn", "GDN_FWD_CONFIGS", ("fp16", "fp16", "i32", {"INVERSE": False, "DOT_PRECISION": "tf32"}), [
        ("fp32", "fp32", "i32", {"INVERSE": False, "DOT_PRECISION": "tf32x3"}),
        ("bf16-igdn", "bf16", "i32", {"INVERSE": True, "DOT_PRECISION": "tf32"}),
        ("fp32-igdn-i64", "fp32", "i64", {"INVERSE": True, "DOT_PRECISION": "tf32x3"}),
    ]),
    "_gdn_bwd_t_kernel": ("gdn", "GDN_BWD_CONFIGS", ("fp32", "fp32", "i32", {"INVERSE": False, "DOT_PRECISION": "tf32x3"}), [
        ("fp16-igdn", "fp16", "i32", {"INVERSE": True, "DOT_PRECISION": "tf32"}),
        ("bf16-i64", "bf16", "i64", {"INVERSE": False, "DOT_PRECISION": "tf32"}),
    ]),
    "_gdn_bwd_dx_kernel": ("gdn", "GDN_BWD_CONFIGS", ("fp32", "fp32", "i32", {"DOT_PRECISION": "tf32x3"}), [
        ("fp16", "fp16", "i32", {"DOT_PRECISION": "tf32"}),
        ("bf16-i64", "bf16", "i64", {"DOT_PRECISION": "tf32"}),
    ]),
    "_quantize_kernel": ("quantize", "QUANTIZE_CONFIGS", ("fp64", "fp64", "i32", {}), [  # fp64: the backend's
        ("fp32", "fp32", "i32", {}),
        ("fp16", "fp16", "i32", {}),
        ("bf16-i64", "bf16", "i64", {}),
    ]),
    "_dequantize_kernel": ("quantize", "DEQUANTIZE_CONFIGS", ("fp32-gain", "fp32", "i32", {"HAS_GAIN": True}), [
        ("fp32-nogain", "fp32", "i32", {"HAS_GAIN": False}),
        ("bf16-gain-i64", "bf16", "i64", {"HAS_GAIN": True}),
    ]),
}


def compile_jobs(full: bool = False) -> list[dict]:
    """Every (kernel, autotune config, arch) with the kernel's main variant; with ``full``, also
    the extra variants (other dtypes, IGDN, 64-bit sizes and strides) with every config."""
    import importlib

    jobs = []
    for kernel, (mod_name, cfg_attr, main, extras) in _KERNELS.items():
        configs = getattr(importlib.import_module(f"vlmcodec.kernels.{mod_name}"), cfg_attr)
        ptrs = {**_GDN_PTRS, **_Q_PTRS}[kernel]
        for i, cfg in enumerate(configs):
            for variant in [main] + (extras if full else []):
                vname, elem, itype, extra_constexprs = variant
                for arch in ARCHS:
                    jobs.append({
                        "id": f"{kernel}-cfg{i}-{vname}-sm{arch}",
                        "module": mod_name, "kernel": kernel, "config": i, "arch": arch,
                        "ptrs": {k: (elem if v == "x" else v) for k, v in ptrs.items()},
                        "itype": itype, "constexprs": {**cfg.kwargs, **extra_constexprs},
                        "num_warps": cfg.num_warps, "num_stages": cfg.num_stages,
                    })
    return jobs


def _compile_one(job: dict) -> dict:
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module = importlib.import_module(f"vlmcodec.kernels.{job['module']}")
    fn = getattr(module, job["kernel"])
    while not isinstance(fn, triton.runtime.jit.JITFunction):  # unwrap the Autotuner
        fn = fn.fn
    signature, attrs = {}, {}
    for idx, name in enumerate(fn.arg_names):
        if name in job["constexprs"]:
            signature[name] = "constexpr"
        elif name in job["ptrs"]:
            signature[name] = "*" + job["ptrs"][name]
            attrs[(idx,)] = [["tt.divisibility", 16]]  # what a launch with aligned tensors specializes
        elif name in _FLOAT_SCALARS:
            signature[name] = "fp32"
        else:
            signature[name] = job["itype"]
    t0 = time.perf_counter()
    compiled = triton.compile(
        ASTSource(fn=fn, signature=signature, constexprs=job["constexprs"], attrs=attrs),
        target=GPUTarget("cuda", job["arch"], 32),
        options={"num_warps": job["num_warps"], "num_stages": job["num_stages"]},
    )
    return {
        "ptx": len(compiled.asm.get("ptx", "")),
        "cubin": len(compiled.asm.get("cubin", b"")),
        "shared": int(compiled.metadata.shared),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _compile_main(jobs_path: str, out_path: str) -> None:
    jobs = json.loads(Path(jobs_path).read_text())
    results = {}
    for job in jobs:
        try:
            results[job["id"]] = _compile_one(job)
        except Exception as exc:  # reported per job; the test shows the message
            results[job["id"]] = {"error": f"{type(exc).__name__}: {exc}"[:4000]}
    Path(out_path).write_text(json.dumps(results))


def compile_in_subprocess(jobs: list[dict], tmp_dir: Path, timeout: float = 900, workers: int | None = None) -> dict:
    """Compile ``jobs`` in fresh processes with the interpreter off (``workers`` of them, default
    min(2, CPUs), each taking every n-th job); returns id -> result."""
    workers = max(1, min(workers or 2, os.cpu_count() or 1, len(jobs) or 1))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = []
    for w in range(workers):
        jobs_path, out_path = tmp_dir / f"jobs{w}.json", tmp_dir / f"results{w}.json"
        jobs_path.write_text(json.dumps(jobs[w::workers]))
        cmd = [sys.executable, str(Path(__file__).resolve()), "compile", str(jobs_path), str(out_path)]
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), out_path))
    results = {}
    for proc, out_path in procs:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        if proc.returncode != 0 or not out_path.exists():
            raise RuntimeError(f"compile subprocess failed (rc={proc.returncode}):\n{stdout[-4000:]}\n{stderr[-4000:]}")
        results.update(json.loads(out_path.read_text()))
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "compile":
        _compile_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: conftest_triton.py compile JOBS.json RESULTS.json")
