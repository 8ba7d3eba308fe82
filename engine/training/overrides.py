"""``--set KEY=VALUE`` overrides of a training config (``vlmcodec train``, ``scripts/device_train.py``)."""

from __future__ import annotations

import tomllib

from ..errors import ConfigError


def parse_sets(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs, VALUE read as a TOML value (``true``, ``0.5``, ``[3, 6]``, ``"s"``)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value  # a bare string
    return out


def merge_overrides(sets: list[str] | None, **flags) -> dict:
    """``--set`` pairs, then the dedicated flags (``--steps`` …) that were given: a flag wins over
    ``--set`` for the same key. Flags left at None are not overrides."""
    out = parse_sets(sets or [])
    out.update({k: v for k, v in flags.items() if v is not None})
    return out
