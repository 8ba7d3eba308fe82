"""Locks that a process forked from their owner gets free.

A thread of the parent may hold a lock when the process forks; the child has no such thread, so
there the lock would never be released and the child's first use of it would wait for ever
(multiprocessing's default start method on Linux before Python 3.14, ``gunicorn --preload``).
"""

from __future__ import annotations

import os
import threading
import weakref

_locks: weakref.WeakSet = weakref.WeakSet()


def fork_safe_lock() -> threading.Lock:
    """A ``threading.Lock``, free again in every process forked from this one."""
    lock = threading.Lock()
    _locks.add(lock)
    return lock


def _free_in_child() -> None:
    for lock in list(_locks):
        lock._at_fork_reinit()  # CPython's own reset of a lock after fork (threading and logging use it)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_free_in_child)
