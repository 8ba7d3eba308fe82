"""Runtime: an Engine that batches encode/decode requests and pipelines networks with entropy coding."""

from .engine import Engine, QueueFull
from .client import AsyncRemoteCodec, RemoteCodec
from .rate_limit import RateLimited
from .scheduler import Scheduler
from .server import CodecServer, running_server, serve_in_thread

__all__ = ["AsyncRemoteCodec", "CodecServer", "Engine", "QueueFull", "RateLimited", "RemoteCodec", "Scheduler",
           "running_server", "serve_in_thread"]
