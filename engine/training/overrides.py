"""``--set KEY=VALUE`` overrides of a training config (``vlmcodec train``, ``scripts/device_train.py``)."""

from __future__ import annotations

import tomllib

from ..errors import ConfigError


# the training config's text keys (TrainConfig's str fields; the CLI starts without torch): their
# value is the text given, not TOML ("out_dir=2024-01-05" was a date, "data_dir=123" a number)
TEXT_KEYS = frozenset({"data_dir", "out_dir", "device", "init_from", "teacher"})


def parse_sets(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs, VALUE read as a TOML value (``true``, ``0.5``, ``[3, 6]``, ``"s"``);
    for ``TEXT_KEYS``, the text itself unless it is a quoted TOML string."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set wants KEY=VALUE, got {item!r}")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value  # a bare string
        out[key] = value if key in TEXT_KEYS and not isinstance(parsed, str) else parsed
    return out


def merge_overrides(sets: list[str] | None, **flags) -> dict:
    """``--set`` pairs, then the dedicated flags (``--steps`` …) that were given: a flag wins over
    ``--set`` for the same key. Flags left at None are not overrides."""
    out = parse_sets(sets or [])
    out.update({k: v for k, v in flags.items() if v is not None})
    return out
