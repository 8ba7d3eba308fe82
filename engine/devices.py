"""Torch devices a setting names (``device=``, ``hs_device=``, a teacher's or a training run's),
checked once, in one wording: a name torch does not read or a kind the setting does not take is a
``ConfigError``; a device this machine lacks is a ``BackendUnavailableError``."""

from __future__ import annotations

import torch

from .errors import BackendUnavailableError, ConfigError

CPU_OR_CUDA = ("cpu", "cuda")


def torch_device(device: object, what: str, kinds: tuple[str, ...] | None = CPU_OR_CUDA) -> torch.device:
    """``device`` as a ``torch.device`` this process can use for ``what`` (the setting's name).
    ``kinds``: the device types it takes (None: any type a tensor can be made on here, mps...)."""
    try:
        dev = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError, ValueError) as e:
        if kinds is None:
            raise ConfigError(f"{what} {device!r}: {str(e).splitlines()[0]}") from None
        dev = None
    if kinds is not None and (dev is None or dev.type not in kinds):
        allowed = [f"'{k}'" for k in kinds] + (["'cuda:N'"] if "cuda" in kinds else [])
        raise ConfigError(f"{what} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {device!r}"
                          if len(allowed) > 1 else f"{what} must be {allowed[0]}, got {device!r}")
    assert dev is not None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"{what} {device!r} not available: torch sees no CUDA GPU "
                                          f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{what} {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        try:  # another type (mps, xpu...): usable where a tensor can be made on it
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as e:
            raise BackendUnavailableError(f"{what} {device!r} not available: {str(e).splitlines()[0]}") from None
    return dev
