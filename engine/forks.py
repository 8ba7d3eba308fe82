"""Locks that a process forked from their owner gets free.

A thread of the parent may hold a lock when the process forks; the child has no such thread, so
there the lock would never be released and the child's first use of it would wait for ever
(multiprocessing's default start method on Linux before Python 3.14, ``gunicorn --preload``).

Locks inside torch cannot be reset so: a module's random weight initialisation holds torch's CPU
generator mutex, and a child forked meanwhile hung in its own first one (a ``Codec()`` there).
Work that may hold such a lock runs inside ``fork_waits()``, which a ``fork()`` in another thread
waits for.
"""

from __future__ import annotations

import os
import threading
import weakref
from contextlib import contextmanager

_locks: weakref.WeakSet = weakref.WeakSet()

# fork_waits(): how long a fork waits for the blocks under way in other threads before it goes on
# regardless (a block waiting on a lock the forking thread holds would otherwise never end)
FORK_WAIT_S = 60.0
_quiet = threading.Condition(threading.Lock())
_busy = 0  # fork_waits() blocks under way, in all threads
_forking = 0  # forks waiting for them: no new block starts meanwhile
_depth = threading.local()  # this thread's blocks under way (a fork from inside one does not wait for it)


def fork_safe_lock() -> threading.Lock:
    """A ``threading.Lock``, free again in every process forked from this one."""
    lock = threading.Lock()
    _locks.add(lock)
    return lock


@contextmanager
def fork_waits():
    """A block that ``os.fork()`` in another thread of this process waits for (up to
    ``FORK_WAIT_S``): for work that holds a lock of torch's while it runs (a module's random
    initialisation), which no child may inherit held."""
    global _busy
    mine = getattr(_depth, "n", 0)
    with _quiet:
        if not mine:  # (a thread already inside one goes on: the fork waits for it)
            _quiet.wait_for(lambda: not _forking)
        _busy += 1
    _depth.n = mine + 1
    try:
        yield
    finally:
        _depth.n = mine
        with _quiet:
            _busy -= 1
            _quiet.notify_all()


def _before_fork() -> None:
    global _forking
    _quiet.acquire()  # held until the fork is done: no block starts in between
    _forking += 1
    _quiet.wait_for(lambda: _busy <= getattr(_depth, "n", 0), timeout=FORK_WAIT_S)


def _after_fork_in_parent() -> None:
    global _forking
    _forking -= 1
    _quiet.notify_all()
    _quiet.release()


def _free_in_child() -> None:
    global _busy, _forking
    _quiet._at_fork_reinit()  # type: ignore[attr-defined]  # (CPython's, not in typeshed)
    _busy, _forking = getattr(_depth, "n", 0), 0  # the other threads' blocks are not in the child
    for lock in list(_locks):
        lock._at_fork_reinit()  # CPython's own reset of a lock after fork (threading and logging use it)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_free_in_child)
