"""Runtime: an Engine that batches encode/decode requests and pipelines networks with entropy coding."""

from .engine import Engine, QueueFull
from .scheduler import Scheduler

__all__ = ["Engine", "QueueFull", "Scheduler"]
