"""Shared helpers for the Triton kernels: availability, interpreter detection, block sizes, checks.

Nothing here imports from the engine, and nothing queries a device at import time.

Interpreter detection
---------------------
Triton decides *when a function is defined* (``@triton.jit`` runs) whether it becomes a compiled
``JITFunction`` or an ``InterpretedFunction`` that runs on the CPU with NumPy: the switch is the
environment variable ``TRITON_INTERPRET=1`` (``triton.knobs.runtime.interpret``).  That includes
Triton's own standard library (``tl.zeros``, ``tl.cdiv``, ... are ``@jit`` functions defined when
``triton.language`` is first imported), so the mode is in effect fixed per process by the first
``import triton``: set the variable before anything imports triton.  Setting it later has no
effect on functions already defined, and mixing the modes fails (an interpreted kernel calling a
compiled ``tl.zeros`` raises "Cannot call @triton.jit'd outside of the scope of a kernel"; a
compiled kernel cannot call an interpreted one).

So "can this kernel run on CPU tensors?" is answered by :func:`kernel_is_interpreted` (the
kernel *and* triton's language were defined under the interpreter), not by reading the
environment now; :func:`interpreter_requested` only reports what the environment asks for
functions defined from now on; :func:`triton_language_interpreted` reports the process's mode.
"""

from __future__ import annotations

import functools
import os
from typing import Iterable

import torch

__all__ = [
    "TritonUnavailableError",
    "is_triton_available",
    "interpreter_requested",
    "kernel_is_interpreted",
    "triton_language_interpreted",
    "next_power_of_2",
    "channel_block",
    "check_channels",
    "check_impl",
    "check_float_dtype",
    "check_launchable",
    "auto_selects_triton",
    "MAX_GDN_CHANNELS",
    "MAX_SCALE_TABLE",
    "FLOAT_DTYPES",
    "MIN_DOT_BLOCK",
    "IMPLS",
]

#: Implementations a functional entry point accepts through its ``impl=`` argument.
IMPLS = ("auto", "triton", "torch")

#: ``tl.dot`` on NVIDIA GPUs needs every block dimension to be at least this.
MIN_DOT_BLOCK = 16

#: Largest channel count the GDN kernels accept (the C×C mix is looped over channel blocks, so
#: this bounds the work per pixel block rather than register use; raise it with care).
MAX_GDN_CHANNELS = 4096

#: Largest scale table the quantization kernel searches (a linear scan per element).
MAX_SCALE_TABLE = 256

#: Floating dtypes the kernels read and write.
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class TritonUnavailableError(RuntimeError):
    """``impl="triton"`` was asked for where the Triton kernels cannot run.

    The engine maps this onto its own ``BackendUnavailableError``; ``kernels/`` does not import
    the engine.
    """


@functools.lru_cache(maxsize=None)
def is_triton_available() -> bool:
    """True when ``import triton`` works (it does not say a GPU is present)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising something else
        return False
    return True


def interpreter_requested() -> bool:
    """True when kernels defined *from now on* will be interpreted (``TRITON_INTERPRET=1``)."""
    if is_triton_available():
        import triton

        return bool(triton.knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_language_interpreted() -> bool:
    """True when ``triton.language`` was imported under ``TRITON_INTERPRET=1`` in this process
    (its ``@jit`` standard library is interpreted); False when compiled or triton is missing."""
    if not is_triton_available():
        return False
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.zeros, InterpretedFunction)


def kernel_is_interpreted(kernel) -> bool:
    """True when ``kernel`` (a ``@triton.jit`` function, possibly autotuned) was defined under the
    interpreter, in a process whose ``triton.language`` is interpreted too, so that it can run on
    CPU tensors."""
    from triton.runtime.interpreter import InterpretedFunction

    fn = kernel
    while hasattr(fn, "fn") and not isinstance(fn, InterpretedFunction):  # unwrap Autotuner/Heuristics
        fn = fn.fn
    return isinstance(fn, InterpretedFunction) and triton_language_interpreted()


def next_power_of_2(n: int) -> int:
    """Smallest power of two ≥ ``n`` (1 for n ≤ 1)."""
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def check_channels(channels: int, *, what: str) -> None:
    """``ValueError`` naming ``what`` when ``channels`` is not positive (the kernels' check, which
    the reference paths share so that every ``impl`` refuses ``C = 0`` alike)."""
    if channels <= 0:
        raise ValueError(f"{what}: channel count must be positive, got {channels}")


def channel_block(channels: int, *, limit: int, what: str) -> int:
    """Padded channel block for ``channels`` (a power of two, at least :data:`MIN_DOT_BLOCK`).

    Raises ``ValueError`` naming ``what`` when ``channels`` is not positive or exceeds ``limit``.
    """
    check_channels(channels, what=what)
    if channels > limit:
        raise ValueError(
            f"{what}: {channels} channels is more than the kernel supports ({limit}); "
            f"use impl='torch' for this shape"
        )
    return max(MIN_DOT_BLOCK, next_power_of_2(channels))


def check_impl(impl: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def check_float_dtype(t: torch.Tensor, name: str, allowed: Iterable[torch.dtype] = FLOAT_DTYPES) -> None:
    allowed = tuple(allowed)
    if t.dtype not in allowed:
        names = ", ".join(str(d).replace("torch.", "") for d in allowed)
        raise ValueError(f"{name} must have dtype in ({names}), got {str(t.dtype).replace('torch.', '')}")


def check_launchable(kernel, *tensors: torch.Tensor, op: str) -> None:
    """Raise :class:`TritonUnavailableError` with a fix when ``kernel`` cannot run on ``tensors``."""
    if kernel is None or not is_triton_available():
        raise TritonUnavailableError(
            f"{op}: impl='triton' needs the triton package (pip install 'vlmcodec[triton]'); "
            f"use impl='torch' or impl='auto'"
        )
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if device.type == "cuda":
        return
    if device.type == "cpu":
        if kernel_is_interpreted(kernel):
            return
        raise TritonUnavailableError(
            f"{op}: impl='triton' on CPU tensors needs Triton's interpreter, and these kernels (or "
            f"triton itself) were defined without it. Set TRITON_INTERPRET=1 in the environment "
            f"before the process imports triton or vlmcodec.kernels, move the tensors to CUDA, "
            f"or use impl='torch'"
        )
    raise TritonUnavailableError(f"{op}: the Triton kernels run on CUDA (or CPU via the interpreter), not {device.type}")


def _compiled_kernel_for(kernel, t: torch.Tensor) -> bool:
    """``t`` is a CUDA tensor, triton is installed and ``kernel`` is compiled (the device part of
    :func:`auto_selects_triton`; the tests replace it to simulate a GPU)."""
    return t.is_cuda and kernel is not None and is_triton_available() and not kernel_is_interpreted(kernel)


def auto_selects_triton(
    kernel,
    t: torch.Tensor,
    *,
    dtypes: Iterable[torch.dtype] = FLOAT_DTYPES,
    max_channels: int | None = None,
) -> bool:
    """What ``impl="auto"`` picks: the Triton kernel for CUDA tensors when triton is installed and
    the kernel is compiled (not interpreted — the interpreter on GPU tensors is only for tests),
    and only for inputs the kernel accepts: ``t.dtype`` in ``dtypes`` and, when ``max_channels``
    is given, ``t.shape[1]`` at most that.  Anything else goes to the torch reference, so that
    "auto" never raises a kernel-only refusal where ``impl="torch"`` (or "auto" on CPU) works."""
    if not _compiled_kernel_for(kernel, t):
        return False
    if t.dtype not in tuple(dtypes):
        return False
    if max_channels is not None and (t.dim() < 2 or t.shape[1] > max_channels):
        return False
    return True
