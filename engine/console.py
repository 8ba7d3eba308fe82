"""Terminal, command-line and environment helpers shared by the CLI, the benchmarks, the
trainer and the library's process-wide switches."""

from __future__ import annotations

import argparse
import os


_OFF, _ON = ("0", "false", "no", "off"), ("", "1", "true", "yes", "on")


def env_switch(name: str) -> bool:
    """An on-by-default switch in the environment: False when ``name`` is 0, false, no or off;
    True unset or 1, true, yes, on (or empty). Anything else is taken as on with a
    VlmcodecWarning naming it ("disable" or "n" were on without a word)."""
    value = os.environ.get(name, "1").strip().lower()
    if value in _OFF:
        return False
    if value not in _ON:
        import warnings

        from .errors import VlmcodecWarning

        warnings.warn(f"{name}={os.environ[name]!r} is neither on (1, true, yes, on) nor off (0, false, no, off): "
                      "taken as on", VlmcodecWarning, stacklevel=2)
    return True


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal; False for files, pipes, and replaced or
    closed streams (where ``isatty`` is missing or raises)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class OptionInt(int):
    """An int read from a ``--backend-option`` value, which keeps the text it was read from
    (``text``): an option that takes a folder takes that (``graphs=007`` is the folder 007)."""

    text: str


class OptionFloat(float):
    """``OptionInt``'s twin for a value read as a float (``graphs=2024.06``, ``graphs=inf``)."""

    text: str


def backend_option(text: str) -> tuple[str, object]:
    """argparse type of ``--backend-option``: KEY=VALUE → (key, value), the value read as
    true/false/none, else an int, a float (each keeping its text), else the text itself."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    low = raw.strip().lower()
    if low in ("true", "false"):
        return key.strip(), low == "true"
    if low == "none":
        return key.strip(), None
    for kind in (OptionInt, OptionFloat):
        try:
            value = kind(raw)
        except ValueError:
            continue
        value.text = raw
        return key.strip(), value
    return key.strip(), raw
