"""Terminal helpers shared by the CLI and the trainer."""

from __future__ import annotations


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal; False for files, pipes, and replaced or
    closed streams (where ``isatty`` is missing or raises)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
