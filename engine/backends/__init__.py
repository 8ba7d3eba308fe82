"""Backends: interchangeable implementations of the float networks g_a, h_a, g_s.

The entropy parameters (h_s) always run on the exact fixed-point path shared by all backends,
so a stream written by one backend decodes with any other.
"""

from __future__ import annotations

import inspect

from ..errors import ConfigError
from .base import Backend
from .torch_backend import TorchBackend

BACKENDS = ("torch", "triton", "onnxruntime", "tensorrt")


def backend_class(name: str) -> type:
    """The class of backend ``name`` (importing its module); ConfigError if unknown."""
    if name == "torch":
        return TorchBackend
    if name == "triton":
        from .triton_backend import TritonBackend

        return TritonBackend
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        return TensorRTBackend
    # (a name that is no backend is a bad argument, not a backend this machine cannot run)
    raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _init_parameters(cls: type) -> list[inspect.Parameter]:
    """The parameters of a backend class's constructor after ``self`` and the model."""
    # (a class's own __init__, which mypy takes for an instance's)
    return list(inspect.signature(cls.__init__).parameters.values())[2:]  # type: ignore[misc]


def _named(params: list[inspect.Parameter]) -> tuple[str, ...]:
    return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def backend_options(name: str) -> tuple[str, ...]:
    """The keyword options backend ``name`` takes (besides the model)."""
    return _named(_init_parameters(backend_class(name)))


def create_backend(name: str, model, **options) -> Backend:
    """Instantiate backend ``name`` for ``model`` with its keyword ``options``; raises
    BackendUnavailableError with the reason, ConfigError for an option it does not take."""
    cls = backend_class(name)
    params = _init_parameters(cls)
    known = _named(params)
    unknown = sorted(set(options) - set(known))
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
        raise ConfigError(f"the {name} backend has no option {', '.join(map(repr, unknown))}; "
                          f"its options: {', '.join(known)}")
    return cls(model, **options)


__all__ = ["BACKENDS", "Backend", "TorchBackend", "backend_class", "backend_options", "create_backend"]
