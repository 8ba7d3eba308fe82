"""vlmcodec: a learned image codec engine for vision-language-model pipelines."""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import (
    BackendUnavailableError,
    BitstreamError,
    BudgetError,
    ConfigError,
    EngineDeadError,
    ImageError,
    MemoryBusyError,
    ModelMismatchError,
    ModelNotFoundError,
    QueueFull,
    RefineFallbackWarning,
    RequestError,
    RequestTimeoutError,
    ResourceError,
    TrainingDivergedError,
    VlmcodecError,
    VlmcodecWarning,
)
from .forks import fork_safe_lock

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and IDEs (py.typed)
    import numpy as np

    from . import allocator  # noqa: F401  (the module __getattr__ below imports it on first use)
    from .bitstream.container import Stream
    from .codec import Codec
    from .codec_set import CodecSet
    from .image_io import ImageInput
    from .runtime.rate_limit import RateLimited

_codecs: dict = {}
_codecs_lock = fork_safe_lock()  # guards _codecs and _making, never held while a codec is made
_making: dict = {}  # key → the lock its one construction holds (callers of that key wait on it)


def default_model_path() -> Path:
    """The bundled default model file (here, not in ``codec``, so that it needs no torch)."""
    return Path(__file__).parent / "weights" / "default.safetensors"


def __getattr__(name: str):
    # Lazy so that the training and kernel modules import without the compiled rANS extension
    # (e.g. from a source tree on a bare GPU machine); the codec itself needs it.
    if name == "Codec":
        from . import codec

        return getattr(codec, name)
    if name == "CodecSet":
        from .codec_set import CodecSet

        return CodecSet
    if name == "ImageInput":  # (lazy: vlmcodec.image_io imports numpy and Pillow)
        from .image_io import ImageInput

        return ImageInput
    if name == "RateLimited":  # (lazy: vlmcodec.runtime imports numpy; the CLI starts without it)
        from .runtime.rate_limit import RateLimited

        return RateLimited
    if name == "allocator":
        import importlib

        return importlib.import_module(f"{__name__}.allocator")
    raise AttributeError(f"module 'vlmcodec' has no attribute {name!r}")


def _shared_codec(model=None, backend: str = "torch"):
    from .codec import Codec

    if not isinstance(backend, str):  # (the cache's key: a list was a TypeError "unhashable")
        raise ConfigError(f"backend must be a backend's name (torch, onnxruntime, ...), got {backend!r}")
    key = (str(model) if model is not None else None, backend)
    with _codecs_lock:
        if key in _codecs:
            return _codecs[key]
        making = _making.setdefault(key, fork_safe_lock())
    # made outside _codecs_lock, which a slow first codec (an ONNX export) held from the callers
    # of codecs already made; threads asking for this one at once make one, not one each
    with making:
        with _codecs_lock:
            if key in _codecs:
                return _codecs[key]
        try:
            codec = Codec(model, backend=backend)
            with _codecs_lock:
                return _codecs.setdefault(key, codec)
        finally:
            with _codecs_lock:
                if _making.get(key) is making:
                    del _making[key]


def encode(image: ImageInput, quality: float | None = None, model=None, backend: str = "torch", short_side: int | None = None, *,
           max_bytes: int | None = None, max_bpp: float | None = None, refine: int = 0) -> bytes:
    """Compress one image (uint8 H×W×3 numpy, PIL, or a file path) to .vlmc bytes with a cached ``Codec``.

    ``quality``: 0–100 (None: 75). ``short_side=N`` codes at the consumer's scale (``Codec.encode``); ``max_bytes`` or ``max_bpp``
    picks the highest quality that fits instead of ``quality`` (``Codec.encode_to_size``);
    ``refine=K``: K steps of encoder-side latent refinement (slower, better; ``vlmcodec.refine``). ``model``: a
    model file's path (None: the default model); ``backend``: ``Codec``'s (the codec is made once per pair)."""
    from .checks import quality_or_budget

    quality = quality_or_budget(quality, max_bytes, max_bpp)
    codec = _shared_codec(model, backend)
    if max_bytes is not None or max_bpp is not None:
        return codec.encode_to_size(image, max_bytes, max_bpp=max_bpp, short_side=short_side, refine=refine)
    return codec.encode(image, quality, short_side, refine=refine)


def decode(data: Stream, model=None, backend: str = "torch", short_side: int | None = None) -> np.ndarray:
    """Decompress .vlmc bytes to a uint8 H×W×3 numpy array with a cached ``Codec`` (``short_side``:
    at a consumer's size, ``Codec.decode``). ``model``: the stream's model file (None: the default model);
    ``backend``: ``Codec``'s (the codec is made once per pair)."""
    return _shared_codec(model, backend).decode(data, short_side)


__all__ = [
    "Codec", "CodecSet", "encode", "decode", "default_model_path", "VlmcodecError", "BitstreamError", "BudgetError",
    "ConfigError",
    "ModelNotFoundError", "ModelMismatchError", "BackendUnavailableError", "ImageError", "EngineDeadError",
    "RequestError", "RequestTimeoutError", "ResourceError", "MemoryBusyError", "TrainingDivergedError",
    "QueueFull", "RateLimited", "VlmcodecWarning", "RefineFallbackWarning", "ImageInput",
]


def __dir__() -> list[str]:
    """The lazy names too (help(vlmcodec) and tab completion missed Codec and CodecSet)."""
    return sorted({*globals(), *__all__, "allocator"})
