"""Helpers for the Triton kernel tests (imported by path from tests/test_kernel_*.py; not a conftest
that pytest loads by itself).

Triton decides at *definition* time whether a ``@triton.jit`` kernel is compiled or interpreted
(``TRITON_INTERPRET=1``).  If something imported ``vlmcodec.kernels.gdn`` earlier in the same
process without the variable, its kernels cannot run on CPU tensors.  Instead of depending on
import order, the tests load *private copies* of the kernel modules with the mode they need:
``load_kernel_module("gdn", interpret=True)`` for CPU runs, ``interpret=False`` for compiling to
PTX/cubin and for real GPU runs.  The copies are not put in ``sys.modules``, so the engine's own
imports of ``vlmcodec.kernels.*`` are untouched, and the environment is restored afterwards.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager

import pytest
import torch

_CACHE: dict[tuple[str, bool], object] = {}

#: max |kernel - reference| / max |reference| per output dtype.  fp32 and fp16 are the project's
#: bounds; bf16 has an 8-bit significand, so even the exactly rounded result is off by up to
#: 2**-8 ≈ 3.9e-3 of the output's scale — its bound is that rounding step plus a margin.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 5e-3}


def triton_or_skip():
    """Skip the calling test module when triton cannot be imported."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"triton is not importable ({exc!r}); pip install 'vlmcodec[triton]'", allow_module_level=True)


@contextmanager
def _interpret_env(interpret: bool):
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


def load_kernel_module(name: str, *, interpret: bool):
    """A private copy of ``vlmcodec.kernels.<name>`` whose kernels were defined with
    ``TRITON_INTERPRET`` set to ``interpret``."""
    key = (name, interpret)
    if key not in _CACHE:
        full = f"vlmcodec.kernels.{name}"
        spec = importlib.util.find_spec(full)
        if spec is None:
            raise ImportError(f"cannot find {full}; is vlmcodec installed (pip install -e .)?")
        module = importlib.util.module_from_spec(spec)
        with _interpret_env(interpret):
            spec.loader.exec_module(module)
        _CACHE[key] = module
    return _CACHE[key]


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| in float64."""
    a, e = actual.double(), expected.double()
    scale = e.abs().max().clamp_min(1e-30)
    return float((a - e).abs().max() / scale)
