"""Runtime: an Engine that batches encode/decode requests and pipelines networks with entropy coding."""

from .engine import Engine, QueueFull
from .scheduler import Scheduler
from .server import CodecServer, serve_in_thread

__all__ = ["CodecServer", "Engine", "QueueFull", "Scheduler", "serve_in_thread"]
