"""Torch's CPU threads as a codec sets them, and what ``fork()`` does to them.

PyTorch's CPU builds run their intra-op parallel work on GNU OpenMP, whose thread pool does not
survive ``fork()``: a process forked from one that has run a parallel region hangs in its own
first one, for good (multiprocessing's default start method on Linux before Python 3.14,
``gunicorn --preload``, a bare ``os.fork()``). Once this process has run torch work for vlmcodec
(a model loaded, whatever the backend) on more than one thread, a child forked from it runs torch
on one thread, which is safe, and a codec made in that child asking for more gets one, with a
warning. Children started by the ``spawn`` or ``forkserver`` method start clean and are not
touched.

Torch keeps its thread count per thread (one set in a thread holds there and in threads started
after it, not in threads that already ran torch work), so a codec applies its own count to the
calling thread at each of its torch stages (``use_torch_threads``), and the count each stage ran
on is what is recorded: a thread that ran a codec on several threads and lowered its count later
still marks the process.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

from .checks import check_threads
from .errors import VlmcodecWarning

# this process (or one it was forked from) had torch on several OpenMP threads for a codec
_threads_started = False
# this process has run torch work for vlmcodec (a model loaded)
_used = False
# this process was forked after that: torch's OpenMP threads cannot start here
_forked_after = False
# that was said here already (a codec sets the threads before its model loads and its backend again)
_warned = False


@functools.lru_cache(maxsize=None)
def _on_openmp() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def set_torch_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (process-wide; None: leave them as they are). In a process
    forked after a codec had torch on several threads, one thread, with a warning (once) when
    more were asked for."""
    global _warned
    if threads and threads > 1 and _forked_after:
        if not _warned:
            _warned = True
            warnings.warn(f"this process was forked from one whose torch ran on several OpenMP threads, which "
                          f"cannot start again here (they would hang): torch runs on 1 thread, not {threads}; start "
                          "worker processes with multiprocessing's 'spawn' or 'forkserver' method to use more",
                          VlmcodecWarning, stacklevel=3)
        threads = 1
    if threads:
        torch.set_num_threads(int(check_threads("threads", threads)))
    note_torch_use()


def use_torch_threads(threads: int | None) -> None:
    """Before a codec's torch work in the calling thread: torch's threads there as the codec's
    (``threads``; None: as they are), set where they differ and recorded (``note_torch_use``).
    Left so after the call, as ``Codec()`` leaves those of the thread that makes it."""
    if threads and torch.get_num_threads() != (1 if _forked_after else threads):
        set_torch_threads(threads)
    else:
        note_torch_use()


def note_torch_use() -> None:
    """Record that this process runs torch work for vlmcodec (loading a model, a codec's stage, any
    backend) on the calling thread's present torch threads: a child forked later then keeps torch
    on one."""
    global _threads_started, _used
    _used = True
    if not _forked_after and torch.get_num_threads() > 1 and _on_openmp():
        _threads_started = True


def _before_fork() -> None:
    # again at fork time: the application may have raised torch's threads after its codecs were
    # made (Codec(threads=1), then torch.set_num_threads(2)) and run them so; the child hung
    if _used:
        note_torch_use()


def _after_fork_in_child() -> None:
    global _forked_after, _warned
    _warned = False
    if _threads_started:
        _forked_after = True
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
