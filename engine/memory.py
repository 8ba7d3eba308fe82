"""How much host memory this process may still use, and the check that refuses an image whose
coding would not fit (a clear ``ResourceError`` instead of the kernel's out-of-memory kill).

The per-pixel figures are the measured peak memory growth of the torch and onnxruntime backends
on the CPU (default model, 0.8 to 12.6 Mpx; docs/large_images.md; results/allocator/memory_probe.txt,
results/memory_onnxruntime.txt); the check is only as good as that estimate, so it refuses only
what the estimate says cannot fit."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from . import allocator
from .console import env_switch
from .errors import MemoryBusyError, ResourceError

if TYPE_CHECKING:
    from .banding import RowGeometry

# peak growth per coded (padded) pixel with every network in one pass: encoding with / without
# the pre-editor, decoding, with a margin. Measured at 3.1 and 12.6 Mpx: 279-316, 204-207 and
# 184-196 B; up to 1 Mpx, with the tuned malloc (allocator.py), which keeps freed maps that do
# not always fit the next ones: 313-465, 216-239 and 240-395 B (glibc as it comes: 314-330,
# 207-209, 223-303), the probe now trimming the heap first so that a decode cannot reuse the
# set-up encode's freed memory (scripts/memory_probe.py; results/allocator/memory_probe.txt)
ENCODE_BYTES_PER_PIXEL = {True: 500, False: 260}
DECODE_BYTES_PER_PIXEL = 430
# above the band threshold (vlmcodec.banding.NETWORK_BAND_PIXELS, PreEditor.band_pixels) g_a,
# g_s, the pre-editor's head and the entropy parameters run in row bands: the peak is at most
# the largest band at the one-pass cost above, the rest at this much per pixel. With the tuned
# malloc the peak grew by 73, 39 and 38 B per pixel between 3.1 and 12.6 Mpx, to 1.03 / 0.60 /
# 0.71 GiB (results/allocator/memory_probe.txt): 100 gives encoding the margin the others have
# (80 was within 10 % of it; beyond its 4.3 Mpx band a 16384×1024 encode grew by 67-78 B per pixel)
ENCODE_BANDED_BYTES_PER_PIXEL = {True: 100, False: 50}
DECODE_BANDED_BYTES_PER_PIXEL = 40
# the largest band is its real size, whatever the width: the pre-editor's head runs PreEditor.
# band_rows rows (256) and a halo of this many (two 3×3 convolutions), so a 16384-px-wide image
# has 4.3 Mpx bands; g_a's and g_s's bands of ~1 Mpx read their receptive field's halo (±30 image
# rows for g_a), which a band of few rows doubles (estimate / measured peak at 16384×1024 was 0.65)
PRE_EDITOR_HALO_ROWS = 4
# a first call's set-up (thread pools, kernel caches) costs a fixed amount above the per-pixel
# figures: cold 256×256 calls peaked 10-16 MiB above them (a fresh process each)
SETUP_BYTES = 32 << 20
# only the pre-editor's head in bands, g_a in one pass (a backend with no row bands): 231-238 B
ENCODE_PRE_BANDED_BYTES_PER_PIXEL = 260
# each further image of a batch: the torch backend runs the networks one image at a time on the
# CPU, so a batch adds only its inputs and outputs (measured 44 / 16 / 4-15 B per pixel, batches
# of 4; with row bands 31 / 14 / 26; decoding, once each image became uint8 before the next was
# made, 25 / 10 / 1 at 0.79 / 3.1 / 12.6 Mpx: results/memory_decode_batch.txt)
ENCODE_BATCH_BYTES_PER_PIXEL = 56
DECODE_BATCH_BYTES_PER_PIXEL = 32
# encoding with latent refinement (Codec(refine=N)): networks and teacher with gradients, the
# whole batch at once (measured 755-792 and 665-672 B at 0.8 and 3.1 Mpx, refine=2), with a margin
REFINE_BYTES_PER_PIXEL = 820
# and its teacher's forward and backward on each view, whatever the image's size: over a one-pass
# encode of a 64×64 crop, +12 / 175 / 548 / 1108 MB at one view of 224 / 448 / 672 / 896 px
# (256 / 1024 / 2304 / 4096 ViT-S/14 tokens): activations per token and attention per token
# pair; these give 1.06-2.6× those (the views' graphs are all kept until the backward: summed)
REFINE_VIEW_TOKEN_BYTES = 100_000
REFINE_VIEW_TOKEN_PAIR_BYTES = 80


def refine_view_bytes(height: int, width: int, short_sides: tuple[int, ...], patch: int = 14) -> int:
    """The refinement teacher's memory for an image of ``height``×``width`` seen at the views
    ``short_sides`` (each: its shorter side; the longer one keeps the aspect, up to 4× it)."""
    short, long = min(height, width), max(height, width)
    total = 0
    for side in short_sides:
        tokens = max(1, side // patch) * max(1, min(round(side * long / short), 4 * side) // patch)
        total += REFINE_VIEW_TOKEN_BYTES * tokens + REFINE_VIEW_TOKEN_PAIR_BYTES * tokens * tokens
    return total
# a decoded image restored to a size other than its coded one (a stream coded at a consumer's
# scale, decoded to the original's): float32 RGB (12 B), the uint8 image (3 B) and its contiguous
# copy (3 B) per output pixel, the images made before it 3 B each (measured: an 8000×8000 output
# of a stream coded 16 px high grew the process by 916 MB, 14.3 B per pixel)
RESIZE_BYTES_PER_PIXEL = 18
# downscaling an image to its coded size (Codec(short_side=N), resample.downscale), before the
# coded-size check: a float32 copy of the original (12 B per original pixel), made from a uint8
# copy (3 B) that lives until then; the interpolation's one-axis intermediate (float32: the
# original's rows at the coded width, or its columns at the coded height: 12 B per pixel) beside
# its float32 output (12 B per coded pixel); then the clamp and the rounding, float32 too, beside
# that output (36 B per coded pixel in all). Measured peak growth (torch 2.13, CPU, fresh arrays):
# 15.0 / 21.0 / 43.3 / 48.0 B per original pixel at 4000×3000 → 341×256 / 2000×1500 / 3733×2800 /
# 3999×2999, and 15.0 at 8000×6000 → 341×256: the figures below give 15.0 / 21.0 / 43.4 / 48.0
DOWNSCALE_ORIGINAL_BYTES_PER_PIXEL = 12
DOWNSCALE_COPY_BYTES_PER_PIXEL = 3
DOWNSCALE_PASS_BYTES_PER_PIXEL = 12
DOWNSCALE_CODED_BYTES_PER_PIXEL = 36
_GIB = 1 << 30
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a number near 2^63

# the onnxruntime backend on the CPU (memory pattern off): ORT's arena takes blocks in powers of
# two and keeps them, so small images cost more per pixel and a floor of 0.2-0.5 GiB comes at
# any larger size; up to 1024 px per side the pre-editor's graph attends globally. Measured
# peaks, one image at 0.07 / 0.39 / 0.79 / 3.1 / 12.6 Mpx: encode 782 / 872 / 727 / 175 / 86 B
# per pixel (1.01 GiB at 12.6 Mpx), without the pre-editor 206 / 286 / 283 / 157 / 64, decode
# 563 / 611 / 594 / 227 / 109; each further image of a batch of 4 run whole (item_by_item=False)
# at 0.79 / 3.1 / 12.6 Mpx: 698 / 114 / 75, 215 / 107 / 34 and 176 / 77 / 26 B per pixel
# (scripts/memory_probe.py --backend onnxruntime). Each estimate, with a margin: a floor of
# min(base, small-image bytes per pixel × pixels), plus bytes per pixel for the first image and
# for each further one ("small": an image below the row-band threshold; "global": the
# pre-editor's graph attends globally). Re-measured with the tuned malloc and the probe trimming
# the heap first (results/allocator/memory_probe_onnxruntime.txt): at 0.79 / 3.1 / 12.6 Mpx
# encode 759 / 182 / 102, without the pre-editor 308 / 172 / 78, decode 640 / 235 / 134 B; the
# decode figure at 12.6 Mpx (1.57 GiB) raised its bytes per pixel from 80 to 100.
# A decode in a fresh process (its first run: the arena grows from nothing) peaked above the
# 600 MiB floor's estimate at 2.5-8 Mpx, by up to 22 % (2700×1800: 1.28-1.33 GiB against 1.09;
# the probe above decoded after an encode in the same process): 1 GiB
# (python scripts/memory_fresh_decode.py).
ONNXRUNTIME_BASE_BYTES = {"encode": 600 << 20, "encode-no-pre-edit": 450 << 20, "decode": 1 << 30}
ONNXRUNTIME_SMALL_BYTES_PER_PIXEL = {"encode": 900, "encode-no-pre-edit": 320, "decode": 650}
ONNXRUNTIME_BYTES_PER_PIXEL = {"encode": 80, "encode-no-pre-edit": 50, "decode": 100}
# whole-batch decodes of 8 (a read-only audit, stop 56) peaked at 3.95 GiB at 2048×1536, where
# 100 B per further pixel estimated 3.03 (6 images: 2.35 GiB, 1.04× under that estimate: the
# arena grows in powers of two), and at 1.03× the estimate at 1024×768 (200 B): 180 / 260 give
# 4.6 / 1.9 GiB, 1.21× / 1.15× the peaks measured again with them (3.79 / 1.66 GiB)
ONNXRUNTIME_BATCH_BYTES_PER_PIXEL = {"encode-global": 760, "encode": 130, "encode-no-pre-edit-small": 240,
                                     "encode-no-pre-edit": 120, "decode-small": 260, "decode": 180}
# run item by item (the default on the CPU), a batch adds its inputs and outputs: each further
# image of a batch of 4 at 0.79 / 3.1 / 12.6 Mpx added 19 / 21 / 22 and 10 / 12 / 4 B per pixel to
# encode (the same probe, 2026-12-04), and 2 / -1 / -1 to decode once Codec.synthesize made each
# image uint8 before the next (results/memory_decode_batch.txt; 26 / 84 / 22 before); the
# figures above are for whole-batch runs (item_by_item=False). Re-measured with the tuned malloc
# (results/allocator/memory_probe_onnxruntime.txt): 39 / 19 / 24, 11 / 12 / 5 and 39 / 15 / 8
ONNXRUNTIME_ITEM_BATCH_BYTES_PER_PIXEL = {"encode": 48, "encode-no-pre-edit": 20, "decode": 48}


# the figures above were measured on N = 64 models; a wider codec's activations grow with its
# width: CompressAI's mbt2018-mean layout (N = 128, M = 192, no pre-editor) peaked at 1.66-1.84x
# the default's encoding without the pre-editor and 1.80-1.83x decoding, at 0.79 / 3.1 / 12.6 Mpx
# (scripts/memory_probe.py --model FILE, results/memory_width.txt); onnxruntime 1.56-1.95x and
# 1.08-2.02x (the most at 0.79 Mpx, where its arena's floor rules); the estimate scales by N / 64
MEASURED_WIDTH = 64


def width_scale(width: int) -> float:
    """How much more memory than the measured figures a network ``width`` channels wide takes
    (1 at or below the width they were measured at)."""
    return max(1.0, width / MEASURED_WIDTH)


def network_band_pixels(geometry: RowGeometry, height: int, width: int, band_pixels: int) -> int:
    """Full-resolution pixels of the largest row band ``vlmcodec.banding.banded`` runs a network
    of ``geometry`` in over a height×width image (g_a: its input, g_s: its output), with the rows
    its receptive field and the strided grid add."""
    scale = geometry.scale
    rows_in = height if scale <= 1 else int(height / scale)  # the network's input rows
    per_row = 1 if scale <= 1 else int(scale)  # full-resolution rows per input row
    rows_out = int(rows_in * scale)
    band_rows = max(1, (band_pixels // width) * rows_out // height)
    largest = 0
    for start in range(0, rows_out, band_rows):
        lo, hi = geometry.input_rows(start, min(start + band_rows, rows_out))
        c0, c1 = max(lo, 0) // geometry.align * geometry.align, min(rows_in, -(-hi // geometry.align) * geometry.align)
        largest = max(largest, c1 - c0)
    return largest * per_row * width


def pre_editor_band_pixels(band_rows: int, height: int, width: int) -> int:
    """Pixels of the largest band of the pre-editor's full-resolution head (halo included)."""
    return min(height, band_rows + PRE_EDITOR_HALO_ROWS) * width


def _banded(pixels: int, band: int, whole: int, banded: int) -> tuple[int, int]:
    """(bytes per pixel, base bytes) of a banded call: the largest ``band`` at the one-pass cost
    ``whole``, the other pixels at ``banded`` (a band as large as the image: one pass)."""
    band = min(band, pixels)
    return banded, band * (whole - banded)


def encode_cost(pre_edit: bool, pre_band: int | None, band: int | None, pixels: int) -> tuple[int, int]:
    """(bytes per pixel, base bytes) of encoding one image of ``pixels``: ``pre_band`` the size of
    the pre-editor head's largest band (None: it runs whole), ``band`` of g_a's (None: one pass)."""
    whole = ENCODE_BYTES_PER_PIXEL[pre_edit]
    if band is not None and (pre_band is not None or not pre_edit):
        return _banded(pixels, max(band, pre_band or 0), whole, ENCODE_BANDED_BYTES_PER_PIXEL[pre_edit])
    return (ENCODE_PRE_BANDED_BYTES_PER_PIXEL if pre_band is not None else whole), 0


def decode_cost(band: int | None, pixels: int) -> tuple[int, int]:
    """(bytes per pixel, base bytes) of decoding one image of ``pixels``; ``band``: the size of
    g_s's largest band (None: one pass)."""
    if band is None:
        return DECODE_BYTES_PER_PIXEL, 0
    return _banded(pixels, band, DECODE_BYTES_PER_PIXEL, DECODE_BANDED_BYTES_PER_PIXEL)


def onnxruntime_cost(kind: str, pixels: int, global_attention: bool = False,
                     banded: bool = False, item_by_item: bool = True) -> tuple[int, int, int]:
    """(bytes per pixel of the first image, of each further one, base bytes) for the onnxruntime
    backend on the CPU and images of ``pixels``; ``kind`` "encode", "encode-no-pre-edit" or
    "decode"; ``banded`` when g_a / g_s run in row bands; ``item_by_item`` as the backend runs
    a batch (False: whole, in one graph run)."""
    if item_by_item:
        more = ONNXRUNTIME_ITEM_BATCH_BYTES_PER_PIXEL[kind]
    elif kind == "encode":
        more = ONNXRUNTIME_BATCH_BYTES_PER_PIXEL["encode-global" if global_attention else "encode"]
    else:
        more = ONNXRUNTIME_BATCH_BYTES_PER_PIXEL[kind if banded else f"{kind}-small"]
    base = min(ONNXRUNTIME_BASE_BYTES[kind], ONNXRUNTIME_SMALL_BYTES_PER_PIXEL[kind] * pixels)
    return ONNXRUNTIME_BYTES_PER_PIXEL[kind], more, base


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path, *keys: str) -> int:
    """The first of ``keys`` found in a cgroup's memory.stat (0: none)."""
    try:
        fields = dict(line.split()[:2] for line in path.read_text().splitlines() if len(line.split()) >= 2)
    except OSError:
        return 0
    return next((int(fields[k]) for k in keys if fields.get(k, "").isdigit()), 0)


# the own cgroups that have a memory limit, listed again after this long: a process rarely moves
# and limits are rarely set, and listing them took ~2/3 of a memory check (~100 µs here, where
# four cgroups have none); the limited ones' limit and use are read at every check
_CGROUPS_TTL_S = 5.0
_limited_seen: dict[Path, tuple[float, list[tuple[Path, str]]]] = {}


def _limited_cgroups(root: Path) -> list[tuple[Path, str]]:
    """The (folder, version) of ``_own_cgroups`` that have a memory limit, kept ``_CGROUPS_TTL_S``."""
    now = time.monotonic()
    seen = _limited_seen.get(root)
    if seen is None or now - seen[0] > _CGROUPS_TTL_S:
        limited = [(f, v) for f, v in _own_cgroups(root) if _cgroup_limit(f, v) is not None]
        seen = _limited_seen[root] = (now, limited)
    return seen[1]


def _own_cgroups(root: Path) -> list[tuple[Path, str]]:
    """(cgroup folder, version) from this process's own cgroups (/proc/self/cgroup: v2's "0::/path",
    v1's memory controller) up to the mount's root, which always counts: a container without its
    own cgroup namespace names a path its mount does not hold, and its root is its own cgroup."""
    cg = root / "sys/fs/cgroup"
    found: list[tuple[Path, str]] = [(cg, "v2"), (cg / "memory", "v1")]
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            mount, version = cg, "v2"
        elif "memory" in parts[1].split(","):
            mount, version = cg / "memory", "v1"
        else:
            continue
        rel = Path(parts[2].strip().lstrip("/"))
        for part in (rel, *rel.parents):
            if part != Path("."):
                found.append((mount / part, version))
    return list(dict.fromkeys(found))


def _cgroup_limit(folder: Path, version: str) -> int | None:
    """One cgroup's memory limit in bytes; None: no limit, or none readable."""
    limit = _read_int(folder / ("memory.max" if version == "v2" else "memory.limit_in_bytes"))
    return None if limit is None or limit >= _NO_LIMIT else limit


def _cgroup_room(folder: Path, version: str) -> int | None:
    """Bytes left under one cgroup's limit, its inactive page cache (which the kernel reclaims
    before it kills) counting as free; None: no limit, or none readable."""
    v2 = version == "v2"
    # the limit first: most cgroups have none, and memory.stat (a long file) is then not read
    limit = _cgroup_limit(folder, version)
    if limit is None:
        return None
    usage = _read_int(folder / ("memory.current" if v2 else "memory.usage_in_bytes"))
    if usage is None:
        return None
    cache = _stat(folder / "memory.stat", *(("inactive_file",) if v2 else ("total_inactive_file", "inactive_file")))
    return max(0, limit - max(0, usage - cache))


def available_memory(root: str | Path = "/") -> int | None:
    """Bytes this process can still allocate: /proc/meminfo's MemAvailable, lowered to the room
    left under the tightest cgroup (v2 or v1) limit of its own cgroup and their ancestors; None
    where neither can be read. ``root``: where /proc and /sys are (a fake tree, for tests)."""
    root = Path(root)
    found: list[int] = []
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    for folder, version in _limited_cgroups(root):
        room = _cgroup_room(folder, version)
        if room is not None:
            found.append(room)
    return min(found) if found else None


def memory_check_enabled() -> bool:
    """False when the environment says ``VLMCODEC_CHECK_MEMORY=0`` (for the CLI; the API has
    ``Codec(check_memory=False)``)."""
    return env_switch("VLMCODEC_CHECK_MEMORY")


def resize_bytes(out_pixels: list[int]) -> int:
    """The growth of resizing decoded images of ``out_pixels`` each to their output size, one
    after the other (``RESIZE_BYTES_PER_PIXEL``)."""
    return max(out_pixels) * (RESIZE_BYTES_PER_PIXEL - 3) + 3 * sum(out_pixels) if out_pixels else 0


def downscale_bytes(original: tuple[int, int], coded: tuple[int, int]) -> int:
    """The growth of downscaling an image of ``original`` (rows, columns) to ``coded`` (0: the
    same size, which copies nothing): the float copy of the original, then the larger of its uint8
    source, the interpolation's intermediate and output, and the rounding's copies (``DOWNSCALE_*``)."""
    (h, w), (ch, cw) = original, coded
    if (h, w) == (ch, cw):
        return 0
    rest = max(DOWNSCALE_COPY_BYTES_PER_PIXEL * h * w,
               DOWNSCALE_PASS_BYTES_PER_PIXEL * (max(h * cw, ch * w) + ch * cw),
               DOWNSCALE_CODED_BYTES_PER_PIXEL * ch * cw)
    return DOWNSCALE_ORIGINAL_BYTES_PER_PIXEL * h * w + rest


def needed(pixels: int, bytes_per_pixel: int, count: int = 1, batch_bytes_per_pixel: int = 0,
           base_bytes: int = 0) -> int:
    """The estimated peak growth in bytes of coding ``count`` images of ``pixels`` each:
    ``SETUP_BYTES`` and ``base_bytes``, plus the first at ``bytes_per_pixel``, each further one
    at ``batch_bytes_per_pixel``."""
    return SETUP_BYTES + base_bytes + pixels * (bytes_per_pixel + (count - 1) * batch_bytes_per_pixel)


def _hint(what: str) -> str:
    """What the user can do about a refusal: a stream is decoded at the size it was coded at."""
    skip = "Codec(check_memory=False) or VLMCODEC_CHECK_MEMORY=0 skips this check"
    if what.startswith("downscaling"):
        return f"downscale it beforehand, or free memory ({skip})"
    if what.startswith("decoding"):
        return f"free memory or raise this process's memory limit ({skip})"
    if what.startswith("reading"):
        return f"send it smaller (or as raw pixels), or free memory ({skip})"
    return (f"code it at the consumer's scale (short_side / --short-side), downscale it, or free memory "
            f"({skip})")


class Kept:
    """Memory a backend keeps after a run and reuses in the next ones: onnxruntime's arenas (its
    sessions' blocks stay in the process, counted as used by the memory left, so a warm codec's
    next run needs little more: measured 544 MiB for a first 1024×768 encode, 576 for four). The
    largest run's estimate (set-up aside) is what a kind of run keeps; a check counts as taken the
    part of it no running block has taken already (``holding`` lends it for the block's time)."""

    def __init__(self) -> None:
        self.kept = 0  # bytes
        self.lent = 0
        _all_kept.add(self)

    def credit(self, need: int) -> int:
        """What a run needing ``need`` bytes may count as already taken (not below a floor: the
        set-up and an eighth of the rest stay charged)."""
        body = max(0, need - SETUP_BYTES)
        return max(0, min(self.kept - self.lent, body - body // 8))


def check_fits(what: str, pixels: int, bytes_per_pixel: int, available: int | None = None, count: int = 1,
               batch_bytes_per_pixel: int = 0, base_bytes: int = 0, kept: Kept | None = None) -> None:
    """Raise ``ResourceError`` when coding ``count`` images of ``pixels`` each — ``base_bytes``
    plus the first at ``bytes_per_pixel``, each further one at ``batch_bytes_per_pixel`` —
    exceeds the memory left (what other threads' ``holding`` blocks hold aside: an early check of
    whether it can fit at all; ``holding`` checks again as the work starts; ``kept``: the memory
    the backend keeps for such runs, counted as taken)."""
    avail = available_memory() if available is None else available
    need = needed(pixels, bytes_per_pixel, count, batch_bytes_per_pixel, base_bytes)
    if kept is not None:
        with _held_changed:
            need -= kept.credit(need)
    if avail is None or need <= avail:
        return
    if available is None and allocator.is_tuned() and allocator.release_free_memory():
        # freed maps the tuned allocator kept count as used until they are handed back
        avail = available_memory()
        if avail is None or need <= avail:
            return
    raise _refusal(what, pixels, count, need, avail)


def _images(pixels: int, count: int) -> str:
    return f"{count} images of {pixels / 1e6:.1f} Mpx" if count > 1 else f"{pixels / 1e6:.1f} Mpx"


def _refusal(what: str, pixels: int, count: int, need: int, avail: int, held: int = 0) -> ResourceError:
    # two decimals where one would print the need and the memory left alike ("0.2 GiB ... 0.2 GiB")
    digits = 2 if f"{need / _GIB:.1f}" == f"{avail / _GIB:.1f}" else 1
    others = f" ({held / _GIB:.{digits}f} GiB more are held by other coding running in this process)" if held else ""
    return ResourceError(f"{what} of {_images(pixels, count)} needs about {need / _GIB:.{digits}f} GiB of memory "
                         f"and {avail / _GIB:.{digits}f} GiB are available{others}: {_hint(what)}")


# The estimates of the coding running on this process's threads (``holding``): the memory check
# of another thread counts the part of them not in use yet as taken, so that concurrent batches
# (an Engine's network_workers, an application's own threads) cannot each pass a check of the same
# free memory and together outgrow it. A check that fits only once they end waits for them (up to
# HOLD_WAIT_S, or a deadline of the thread's ``waiting`` block), so memory pressure serialises the
# coding instead of failing it.
HOLD_WAIT_S = 120.0
_WAIT_SLICE_S = 0.25  # (a waiting block looks at its abort switch this often)
_held = 0
_held_base: int | None = None  # the memory left as the first of the blocks now held began
_held_changed = threading.Condition()
# this thread's holding depth (a nested block is the outer one's), its outer block, and its
# ``waiting`` deadline and abort switch
_holding_here = threading.local()
_all_kept: weakref.WeakSet[Kept] = weakref.WeakSet()


def _reset_in_child() -> None:
    """In a forked process the other threads' blocks never end: what they held is free there, and
    the condition (its lock possibly held at the fork) is new; the forking thread's own block stays."""
    global _held, _held_base, _held_changed
    _held_changed = threading.Condition()
    mine = getattr(_holding_here, "block", None) if getattr(_holding_here, "depth", 0) else None
    _held = mine._held if mine is not None else 0
    _held_base = mine._base if mine is not None else None
    for kept in list(_all_kept):
        kept.lent = mine._lent if mine is not None and mine.kept is kept else 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_in_child)


def held_bytes() -> int:
    """The bytes ``holding`` blocks of this process hold aside now."""
    return _held


@contextmanager
def waiting(deadline: float | None = None, abort: Callable[[], bool] | None = None) -> Iterator[None]:
    """The ``holding`` blocks this thread starts inside wait for other threads' memory at most until
    ``deadline`` (``time.monotonic()``; None: HOLD_WAIT_S) and give up once ``abort()`` is true,
    raising ``MemoryBusyError`` (the runtime Engine: its requests' deadlines, its shutdown)."""
    before = getattr(_holding_here, "deadline", None), getattr(_holding_here, "abort", None)
    _holding_here.deadline, _holding_here.abort = deadline, abort
    try:
        yield
    finally:
        _holding_here.deadline, _holding_here.abort = before


def _unseen(avail: int) -> int:
    """(Under the condition.) The part of the held estimates not yet in use: the memory left has
    already dropped by what the blocks use (counting that twice serialised batches that fit)."""
    if not _held or _held_base is None:
        return _held
    return _held - min(_held, max(0, _held_base - avail))


class holding:
    """``with holding(what, pixels, ...)``: ``check_fits``'s check, made as the block starts,
    against the memory left less what other threads' blocks hold and do not use yet — waiting for
    them to end where it fits only then (``wait``; else the check ignores them, as ``check_fits``)
    — and its estimate held aside until the block ends. A block inside another on the same thread
    is covered by the outer one (no second check)."""

    def __init__(self, what: str, pixels: int, bytes_per_pixel: int, count: int = 1,
                 batch_bytes_per_pixel: int = 0, base_bytes: int = 0, kept: Kept | None = None,
                 wait: bool = True):
        self.what, self.pixels, self.count, self.kept, self.wait = what, pixels, count, kept, wait
        self.need = needed(pixels, bytes_per_pixel, count, batch_bytes_per_pixel, base_bytes)
        self._held = self._lent = 0
        self._base: int | None = None

    def __enter__(self) -> holding:
        depth = getattr(_holding_here, "depth", 0)
        _holding_here.depth = depth + 1
        if depth:
            return self
        try:
            self._enter()
        except BaseException:
            _holding_here.depth = depth
            raise
        return self

    def _enter(self) -> None:
        global _held, _held_base
        limit = getattr(_holding_here, "deadline", None)
        abort = getattr(_holding_here, "abort", None)
        deadline = time.monotonic() + HOLD_WAIT_S if limit is None else limit
        trimmed_at: int | None = None  # _held when the tuned allocator was last trimmed
        with _held_changed:
            while True:
                avail = available_memory()
                lent = self.kept.credit(self.need) if self.kept is not None else 0
                charged = self.need - lent
                others = _unseen(avail) if avail is not None and self.wait else 0
                if avail is None or charged <= avail - others:
                    break
                if trimmed_at is None or _held < trimmed_at:  # (again once others have ended)
                    trimmed_at = _held
                    if allocator.is_tuned() and allocator.release_free_memory():
                        continue  # freed maps the tuned allocator kept count as used until handed back
                left = deadline - time.monotonic()
                # not waiting, nothing held to wait for, or too large even with all that is held
                # given back: refused as check_fits would
                if not self.wait or not _held or charged > avail + _held:
                    raise _refusal(self.what, self.pixels, self.count, charged, max(0, avail - others), others)
                if left <= 0 or (abort is not None and abort()):
                    why = "the wait was called off" if left > 0 else "its deadline passed while waiting"
                    raise MemoryBusyError(f"{self.what} of {_images(self.pixels, self.count)} needs about "
                                          f"{charged / _GIB:.1f} GiB of memory, held by other coding of this "
                                          f"process: {why} ({max(0, avail - others) / _GIB:.1f} GiB free beside it)")
                _held_changed.wait(min(left, _WAIT_SLICE_S))
            if not _held:
                _held_base = avail
            self._held, self._lent, self._base = charged, lent, _held_base
            _holding_here.block = self
            _held += charged
            if self.kept is not None:
                self.kept.lent += lent

    def __exit__(self, exc_type, *exc) -> None:
        global _held, _held_base
        _holding_here.depth -= 1
        if _holding_here.depth:
            return
        _holding_here.block = None
        with _held_changed:
            _held -= self._held
            if not _held:
                _held_base = None
            if self.kept is not None:
                self.kept.lent -= self._lent
                if exc_type is None:  # (its runs' blocks stay in the arenas; a failed block may not have run)
                    self.kept.kept = max(self.kept.kept, self.need - SETUP_BYTES)
            self._held = self._lent = 0
            _held_changed.notify_all()


