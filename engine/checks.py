"""Checks of settings given as Python values or command-line text.

Each returns the value in its canonical type or raises ``ConfigError`` naming the setting (an
argparse error for command-line text), so that a wrong value fails where it is given, in one
wording across the package — not as a TypeError from a comparison deep inside, and not taken
as something else (``True`` as 1, ``2.5`` as 2, a NaN as "no limit"). Imports no torch: the
HTTP client uses it too.
"""

from __future__ import annotations

import argparse
import math
import numbers
from typing import Callable, TypeGuard, overload

from .errors import ConfigError


def is_whole(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an integer (a NumPy one too), and not a bool. (For the type checker,
    true narrows ``value`` to int; false narrows nothing.)"""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a real number (int, float, NumPy scalar), and not a bool. (For the type
    checker, true narrows ``value`` to float; false narrows nothing.)"""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_switch(value: object) -> bool:
    """Whether ``value`` is a boolean: Python's or NumPy's (a string such as "false" is not: it
    would be true)."""
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


def check_switch(name: str, value: object) -> bool:
    """A True/False argument: ConfigError for anything else ("no" was taken as True)."""
    if not is_switch(value):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return bool(value)


@overload
def check_count(name: str, value: object, *, least: int = ..., none: None = ...) -> int: ...
@overload
def check_count(name: str, value: object, *, least: int = ..., none: str) -> int | None: ...
def check_count(name: str, value: object, *, least: int = 1, none: str | None = None) -> int | None:
    """A setting that counts something (workers, a batch, bytes): a whole number, at least
    ``least``; with ``none`` (what None means), None too."""
    if value is None and none is not None:
        return None
    if not is_whole(value) or value < least:
        alternative = f" (or None: {none})" if none is not None else ""
        # (10.0 is refused as not an int: said, as "not a whole number" would be untrue of it)
        fits = isinstance(value, float) and value.is_integer() and value >= least
        typed = " (a float: give an int)" if fits else ""
        raise ConfigError(f"{name} must be a whole number, at least {least}{alternative}, got {value!r}{typed}")
    return int(value)


DEFAULT_QUALITY = 75.0  # of an encode given neither a quality nor a byte budget


def quality_or_budget(quality: object, max_bytes: object, max_bpp: object) -> float:
    """The quality an encode asks for: ``quality`` (None: ``DEFAULT_QUALITY``). A byte budget
    (``max_bytes`` / ``max_bpp``) picks the quality itself, so a quality beside one is refused
    rather than ignored."""
    if quality is not None and (max_bytes is not None or max_bpp is not None):
        raise ConfigError("quality and max_bytes / max_bpp exclude each other (the budget picks the quality)")
    return DEFAULT_QUALITY if quality is None else quality  # type: ignore[return-value]


MAX_THREADS = 1024  # of one pool or of torch's: 100 000 crashed the process (a segfault) and starved the machine


@overload
def check_threads(name: str, value: object, *, none: None = ...) -> int: ...
@overload
def check_threads(name: str, value: object, *, none: str) -> int | None: ...
def check_threads(name: str, value: object, *, none: str | None = None) -> int | None:
    """A number of threads: ``check_count``'s rule, and at most MAX_THREADS."""
    count = check_count(name, value, none=none) if none is not None else check_count(name, value)
    if count is not None and count > MAX_THREADS:
        raise ConfigError(f"{name} must be at most {MAX_THREADS} threads, got {value!r}")
    return count


# the longest timeout or delay taken (about 116 days): a wait much longer overflows the clock
# (threading.TIMEOUT_MAX, about 9.2e9 s; 1e10 killed the engine's loop)
MAX_SECONDS = 1e7


def check_seconds(name: str, value: object, *, none: str = "no timeout") -> float | None:
    """A timeout: None (``none``) or a number of seconds above 0, at most ``MAX_SECONDS``."""
    if value is None:
        return None
    if not is_real(value) or not 0 < value <= MAX_SECONDS:
        raise ConfigError(f"{name} must be a finite number of seconds above 0 and at most {MAX_SECONDS:g} "
                          f"(or None: {none}), got {value!r}")
    return float(value)


def check_number(name: str, value: object, *, least: float = 0.0, most: float = math.inf) -> float:
    """A finite number, at least ``least`` and at most ``most`` (a delay, a cost)."""
    if not is_real(value) or not least <= value <= most or value == math.inf:
        bound = f" and at most {most:g}" if most < math.inf else ""
        raise ConfigError(f"{name} must be a finite number, at least {least:g}{bound}, got {value!r}")
    return float(value)


def check_in_range(name: str, value: object, lo: float, hi: float, *, unit: str = "") -> float:
    """A number in [``lo``, ``hi``] (a quality, a cost); ``unit`` is said after the range."""
    if not is_real(value) or not lo <= value <= hi:
        unit = f" ({unit})" if unit else ""
        raise ConfigError(f"{name} must be a number in [{lo:g}, {hi:g}]{unit}, got {value!r}")
    return float(value)


def finite_number_arg(least: float, above: bool = False, unit: str = "") -> Callable[[str], float]:
    """An argparse ``type``: a finite number, at least ``least`` (``above``: more than it)."""
    bound = f"above {least:g}" if above else f"at least {least:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and (value > least if above else value >= least)):
            raise argparse.ArgumentTypeError(f"expected a finite number{unit}, {bound}, got {text!r}")
        return value

    return parse


def whole_number_arg(least: int = 1) -> Callable[[str], int]:
    """An argparse ``type``: a whole number, at least ``least`` (``1_000`` too)."""
    def parse(text: str) -> int:
        try:
            value = int(text)  # (takes 1_000 as Python does, not 1__0 or _5)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number, at least {least}, got {text!r}")
        return value

    return parse
