"""Backends: interchangeable implementations of the float networks g_a, h_a, g_s.

The entropy parameters (h_s) always run on the exact fixed-point path shared by all backends,
so a stream written by one backend decodes with any other.
"""

from __future__ import annotations

from ..errors import BackendUnavailableError
from .base import Backend
from .torch_backend import TorchBackend

BACKENDS = ("torch", "triton", "onnxruntime", "tensorrt")


def create_backend(name: str, model, **options) -> Backend:
    """Instantiate backend ``name`` for ``model``; raises BackendUnavailableError with the reason."""
    if name == "torch":
        return TorchBackend(model, **options)
    if name == "triton":
        from .triton_backend import TritonBackend

        return TritonBackend(model, **options)
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, **options)
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend(model, **options)
    if name in BACKENDS:
        raise BackendUnavailableError(f"backend {name!r} is not available in this build yet")
    raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["Backend", "TorchBackend", "create_backend", "BACKENDS"]
