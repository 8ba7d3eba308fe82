"""The malloc tuning: it takes effect (page faults of repeated large allocations), it can be
turned off, it is harmless where malloc is not glibc's, and the memory check hands the kept
memory back before refusing an image."""

import json
import os
import subprocess
import sys

import pytest

from vlmcodec import allocator, memory
from vlmcodec.errors import ResourceError

needs_glibc = pytest.mark.skipif(allocator._glibc() is None, reason="not available: malloc is not glibc's here")

# 30 allocations of a 48 MiB block, each written through and freed: how many page faults
PROBE = r"""
import json, resource, sys
import torch
from vlmcodec import allocator
tuned = allocator.tune_allocator()
torch.ones(12 << 20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(30):
    a = torch.ones(12 << 20)  # 48 MiB of float32, as a full-resolution feature map
    a.sum()
    del a
print(json.dumps({"tuned": tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(env_value: str) -> dict:
    env = dict(os.environ, VLMCODEC_TUNE_MALLOC=env_value)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_glibc
def test_tuned_malloc_reuses_freed_blocks():
    """Untuned, glibc maps every 48 MiB block afresh (12k page faults each: above its dynamic
    ceiling of 32 MiB); tuned, the freed block is reused: after a few rounds of heap growth
    (~4 blocks' worth here) no more faults."""
    plain, tuned = _probe("0"), _probe("1")
    assert plain["tuned"] is False and tuned["tuned"] is True
    assert plain["faults"] > 30 * 6000, plain          # ~12k 4-KiB pages per block
    assert tuned["faults"] < plain["faults"] / 5, (plain, tuned)


def test_tuning_off_and_not_glibc_leave_malloc_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_state", {"tuned": None})
    monkeypatch.setenv("VLMCODEC_TUNE_MALLOC", "off")
    assert allocator.tuning_enabled() is False
    assert allocator.tune_allocator() is False and allocator.is_tuned() is False
    monkeypatch.setattr(allocator, "_state", {"tuned": None})
    monkeypatch.setenv("VLMCODEC_TUNE_MALLOC", "1")
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.tune_allocator() is False and allocator.tune_allocator() is False
    assert allocator.release_free_memory() is False


@needs_glibc
def test_codec_tunes_malloc_on_construction(tiny_codec):
    if not allocator.tuning_enabled():
        pytest.skip("VLMCODEC_TUNE_MALLOC=0 in this environment")
    assert allocator.is_tuned()


def test_memory_check_hands_kept_memory_back_before_refusing(monkeypatch):
    """With the tuned allocator, memory the process keeps counts as used; the check releases it
    and looks again before raising — and raises when that does not make room."""
    reads = iter([1000, memory.SETUP_BYTES + 5000])
    monkeypatch.setattr(memory, "available_memory", lambda: next(reads))
    monkeypatch.setattr(allocator, "is_tuned", lambda: True)
    released = []
    monkeypatch.setattr(allocator, "release_free_memory", lambda: released.append(1) or True)
    memory.check_fits("encoding", pixels=10, bytes_per_pixel=400)   # needs 4000: fits after release
    assert released == [1]
    reads = iter([1000, memory.SETUP_BYTES + 2000])
    with pytest.raises(ResourceError, match="needs about"):
        memory.check_fits("encoding", pixels=10, bytes_per_pixel=400)
    monkeypatch.setattr(allocator, "is_tuned", lambda: False)   # untuned: nothing to release
    reads = iter([1000])
    with pytest.raises(ResourceError):
        memory.check_fits("encoding", pixels=10, bytes_per_pixel=400)
    assert len(released) == 2
    with pytest.raises(ResourceError):   # an explicit figure is the caller's: no release
        memory.check_fits("encoding", pixels=10, bytes_per_pixel=400, available=1000)
    assert len(released) == 2


def test_allocator_is_an_attribute_of_the_package():
    """``vlmcodec.allocator.release_free_memory()`` works right after ``import vlmcodec``."""
    out = subprocess.run([sys.executable, "-c", "import vlmcodec; print(vlmcodec.allocator.__name__)"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "vlmcodec.allocator"


# which arenas malloc has after a thread started later allocates a feature map (glibc's
# malloc_stats prints one "Arena N:" block per arena to stderr)
ARENA_PROBE = r"""
import sys, threading
import torch
from vlmcodec import allocator
allocator.tune_allocator()
if sys.argv[1] == "1":
    assert allocator.share_main_arena()
def work():
    a = torch.ones(12 << 20)  # a 48 MiB map, allocated by this thread
    allocator._glibc().malloc_stats()
t = threading.Thread(target=work)
t.start(); t.join()
"""


@needs_glibc
def test_threads_started_after_share_main_arena_allocate_from_it():
    """Without it a new thread gets an arena of its own ("Arena 1", 64 MiB heaps, where freed
    maps go back to the kernel with their heaps); after it, only the main arena exists. The
    speed this buys the Engine is measured by scripts/engine_malloc_arenas.py."""
    if not allocator.tuning_enabled():
        pytest.skip("VLMCODEC_TUNE_MALLOC=0 in this environment")

    def arenas(share: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
        return subprocess.run([sys.executable, "-c", ARENA_PROBE, share], capture_output=True, text=True,
                              timeout=120, check=True, env=env).stderr

    own, shared = arenas("0"), arenas("1")
    assert "Arena 0:" in own and "Arena 1:" in own, own
    assert "Arena 0:" in shared and "Arena 1:" not in shared, shared


def test_release_free_memory_says_whether_any_was_returned(monkeypatch):
    """``release_free_memory`` is malloc_trim's answer: False when nothing went back to the kernel
    (the memory check then does not read the memory again for nothing), True when some did, False
    without glibc."""
    class FakeGlibc:
        def __init__(self, trimmed: int):
            self.trimmed = trimmed

        def malloc_trim(self, pad: int) -> int:
            return self.trimmed

    for trimmed, said in ((0, False), (1, True)):
        monkeypatch.setattr(allocator, "_glibc", lambda: FakeGlibc(trimmed))
        assert allocator.release_free_memory() is said
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.release_free_memory() is False


def test_the_tuning_is_applied_once_and_later_calls_give_its_result(monkeypatch):
    """``tune_allocator``: the first call's result holds for the process; mallopt is not called
    again (VLMCODEC_TUNE_MALLOC=0 set afterwards changes nothing, as the doc says)."""
    calls: list[tuple[int, int]] = []

    class FakeGlibc:
        def mallopt(self, param: int, value: int) -> int:
            calls.append((param, value))
            return 1

    monkeypatch.setattr(allocator, "_state", {"tuned": None, "one_arena": None})
    monkeypatch.setattr(allocator, "_glibc", FakeGlibc)
    monkeypatch.delenv("VLMCODEC_TUNE_MALLOC", raising=False)
    assert allocator.tune_allocator() is True and len(calls) == 2
    monkeypatch.setenv("VLMCODEC_TUNE_MALLOC", "0")
    assert allocator.tune_allocator() is True and len(calls) == 2
