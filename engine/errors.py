"""Exception hierarchy: every error vlmcodec raises on purpose derives from VlmcodecError."""

import warnings


class VlmcodecError(Exception):
    """Root of all vlmcodec errors."""


class BitstreamError(VlmcodecError, ValueError):
    """A .vlmc stream is corrupt, truncated, or of an unsupported version."""


class StreamTypeError(BitstreamError, TypeError):
    """What was given as a stream is no bytes-like object (a file's name, a number, None): a
    BitstreamError, and a TypeError as Python's own type errors are."""


class ConfigError(VlmcodecError, ValueError):
    """A configuration file or argument is invalid."""


class TrainingDataError(ConfigError, FileNotFoundError):
    """The training folder is missing, not a folder, or holds no usable image: a ConfigError, and
    the FileNotFoundError it was before (scripts catch that)."""


class ModelNotFoundError(VlmcodecError, FileNotFoundError):
    """A model file (or a package a model needs, such as the refinement teacher's) could not be
    found. (A model that does not match a stream: ModelMismatchError.)"""


class ModelMismatchError(VlmcodecError, ValueError):
    """A stream was written by a different model than the one decoding it."""


class BudgetError(VlmcodecError, ValueError):
    """No stream of an image fits the size asked for (``Codec.encode_to_size``), even at the lowest quality."""


class BackendUnavailableError(VlmcodecError, RuntimeError):
    """The requested backend cannot run on this machine (missing package or device)."""


class ImageError(VlmcodecError, ValueError):
    """An input image is unreadable, of the wrong type, or of absurd dimensions."""


class QueueFull(VlmcodecError, RuntimeError):
    """An ``Engine`` already holds ``max_queue`` requests and ``block=False`` (a server's 503: its
    queue or its connections full)."""


class ResourceError(VlmcodecError, MemoryError):
    """Coding an image this size would not fit in the memory left (host or GPU)."""


class MemoryBusyError(ResourceError):
    """The memory this coding needs is held by other coding of this process that did not end in
    time (its wait's deadline passed, or the waiting was called off): it may fit later."""


class TrainingDivergedError(VlmcodecError, RuntimeError):
    """A training run's loss or gradients stayed not finite (NaN, infinity) for ``max_bad_steps``
    steps in a row, or its weights became so: the run stops with its last checkpoint intact."""


class EngineDeadError(VlmcodecError, RuntimeError):
    """The runtime engine has shut down or its worker died."""


class RequestError(VlmcodecError, RuntimeError):
    """One request in the runtime failed (wraps the underlying cause)."""


class RequestTimeoutError(VlmcodecError, TimeoutError):
    """A runtime request was not done within its timeout: an ``Engine`` request still queued at
    its deadline (a server's 504), or a ``RemoteCodec`` call whose server did not answer within
    ``timeout_s``. A ``TimeoutError`` too."""


class VlmcodecWarning(UserWarning):
    """Something done with a caveat the caller should hear of (e.g. only the first frame of an
    animated image is coded); the CLI prints these as ``vlmcodec: warning: ...``."""


class RefineFallbackWarning(VlmcodecWarning):
    """``encode_to_size`` with ``refine``: no refined stream fits the budget, so the stream is the
    best one-pass one. ``warnings.simplefilter("error", RefineFallbackWarning)`` makes it an error."""


def warn_refine_fallback(message: str | None) -> None:
    """Issue a refined search's fallback ``message`` (None: there was none) as a
    ``RefineFallbackWarning`` pointing at the caller of the function that calls this."""
    if message:
        warnings.warn(message, RefineFallbackWarning, stacklevel=3)
