"""Keep freed feature maps in the process heap instead of handing them back to the kernel.

glibc's malloc serves every block above its mmap threshold (at most 32 MiB, however it adapts)
with a fresh ``mmap`` and unmaps it on ``free``. A full-resolution feature map of a Kodak image
is ~50 MB (32 channels × 768×512 floats), so each one is new memory to the kernel: every page
faults and is zeroed on first touch, for every map of every call. On this project's VM that was
0.7-0.95 M page faults and 1.5-2 s of system time for 18 encodes and decodes of Kodak images.
Raising the mmap and trim thresholds lets freed maps be reused by the next call — what jemalloc
or tcmalloc would give via ``LD_PRELOAD``, without one: ``scripts/allocator_bench.py`` measures it
(encode 0.59×, decode 0.74× the time; the same streams and pixels).

The setting is process-wide. ``Codec`` applies it on construction (the CLI, ``Engine`` and
benchmarks through it); :func:`share_main_arena` sends later threads to the main arena too;
``VLMCODEC_TUNE_MALLOC=0`` in the environment leaves malloc alone. The cost is memory: freed maps that do not fit the next request stay with the process (its peak
grew by 13-17 % in that benchmark) and up to ``TRIM_THRESHOLD`` of free memory is kept after a
call. :func:`release_free_memory` hands it back (the memory check does before refusing an
image). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

from .console import env_switch
from .forks import fork_safe_lock

# blocks up to this size come from the heap: the feature maps of images up to ~1.5-2 Mpx (the
# pre-editor's 32-channel full-resolution map of a 768×512 image is 50 MB). Larger blocks are
# still mmapped afresh, as before: with 256 MiB (and the trim threshold at 1 GiB) a 2048×1536
# encode peaked at 0.66-0.71 GiB instead of 0.41, freed blocks not fitting the next ones; with
# these values at 0.42, at the same speed on Kodak (scripts/memory_probe.py, allocator_bench.py)
MMAP_THRESHOLD = 64 << 20
# free memory at the top of a heap is returned to the kernel only above this
TRIM_THRESHOLD = 256 << 20

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_lock = fork_safe_lock()
_state: dict[str, bool | None] = {"tuned": None, "one_arena": None}  # None: not tried yet


def tuning_enabled() -> bool:
    """False when the environment says ``VLMCODEC_TUNE_MALLOC=0``."""
    return env_switch("VLMCODEC_TUNE_MALLOC")


@functools.cache
def _glibc():
    """glibc's handle, or None (another C library, another system)."""
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        return libc
    except (OSError, AttributeError):
        return None


def _mallopt_once(key: str, *settings: tuple[int, int]) -> bool:
    """Apply glibc ``mallopt`` (parameter, value) ``settings`` once per process under ``key``;
    later calls return the first call's result. False when tuning is off or malloc is not glibc's."""
    with _lock:
        if _state[key] is None:
            libc = _glibc() if tuning_enabled() else None
            _state[key] = libc is not None and all(libc.mallopt(p, v) == 1 for p, v in settings)
        return bool(_state[key])


def tune_allocator() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls return the
    first call's result). True when applied; False under ``VLMCODEC_TUNE_MALLOC=0`` or where
    malloc is not glibc's."""
    return _mallopt_once("tuned", (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def share_main_arena() -> bool:
    """Send the threads that allocate for the first time from now on to glibc's main arena
    (``mallopt(M_ARENA_MAX, 1)``, what ``MALLOC_ARENA_MAX=1`` does from start-up), once per
    process; True when applied.

    A thread other than the main one otherwise gets an arena of 64 MiB heaps, where a freed
    feature map is handed back to the kernel with its emptied heap and the next one is faulted
    in afresh: the raised thresholds above do not help it. Call it before creating an ``Engine``
    (threads already running keep their arenas). Not called by default: it cuts an Engine's page
    faults (decode: 2-28 against 50-140k per 16 Kodak decodes) but the speed it buys was not
    told apart from this machine's noise (``scripts/engine_malloc_arenas.py``). Off with
    ``VLMCODEC_TUNE_MALLOC=0``; nothing where malloc is not glibc's. The cost: every such thread
    then takes the main arena's lock for its allocations."""
    return _mallopt_once("one_arena", (_M_ARENA_MAX, 1))


def shares_main_arena() -> bool:
    """Whether :func:`share_main_arena` has applied the setting in this process."""
    return bool(_state["one_arena"])


def is_tuned() -> bool:
    """Whether :func:`tune_allocator` has applied the setting in this process."""
    return bool(_state["tuned"])


def release_free_memory() -> bool:
    """Return the heap's free memory to the kernel (glibc ``malloc_trim``); True if any was."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
