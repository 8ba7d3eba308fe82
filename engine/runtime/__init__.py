"""Runtime: an Engine that batches encode/decode requests and pipelines networks with entropy coding,
the HTTP server in front of it, and the clients of that server.

The clients (``RemoteCodec``, ``AsyncRemoteCodec``) import without torch: a process that only
talks to a server does not pay torch's import (~1.3 s, ~190 MiB); the rest is imported on first use.
"""

from typing import TYPE_CHECKING

from ..errors import QueueFull
from .client import AsyncRemoteCodec, RemoteCodec
from .rate_limit import RateLimited

if TYPE_CHECKING:  # (type checkers see them as they are; at run time __getattr__ imports them)
    from .engine import Engine
    from .scheduler import Scheduler
    from .server import CodecServer, running_server, serve_in_thread

_LAZY = {"Engine": "engine", "Scheduler": "scheduler", "CodecServer": "server", "running_server": "server",
         "serve_in_thread": "server"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AsyncRemoteCodec", "CodecServer", "Engine", "QueueFull", "RateLimited", "RemoteCodec", "Scheduler",
           "running_server", "serve_in_thread"]


def __dir__() -> list[str]:
    """The lazy names too (dir() and tab completion missed Engine and the server)."""
    return sorted({*globals(), *__all__})
