"""``Codec``: a loaded model on one backend, encoding images to .vlmc bytes and back.

Encode: pad → g_a → ·gain(q) → h_a → z symbols around the medians →
exact h_s(ẑ) → (μ, σ, k) → y symbols s = round(y − μ) → rANS in chunks → container.
Decode runs the same steps backwards; μ and k come from the exact h_s, so they match the
encoder's bit for bit on any backend and device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vlmcodec.kernels import rans

from . import allocator, default_model_path, memory, rate_control, resample  # default_model_path: re-exported
from .backends import backend_options as backend_options_of, create_backend
from .backends.base import FusedQuantizer
from .banding import NETWORK_BAND_PIXELS, banded, bands_at, row_geometry
from .bitstream import container
from .checks import DEFAULT_QUALITY, check_count, check_in_range, check_switch, check_threads, is_real, is_switch
from .devices import torch_device
from .entropy.exact_hyper import ACT_FRAC_BITS, ExactHyperSynthesis
from .errors import (BitstreamError, BudgetError, ConfigError, ImageError, ModelMismatchError,
                     ResourceError, warn_refine_fallback)
from .forks import fork_safe_lock, fork_waits
from .image_io import ImageInput, as_rgb_array, pad_edge, padded_size
from .models.checkpoint import LoadedModel, load_model
from .refine import check_refine_steps, check_refine_views, check_views_fit_teacher, refining_teacher
from .torch_threads import set_torch_threads, use_torch_threads

# Bounds the memory one request may take (the float64 entropy parameters alone need ~2 kB per
# 16×16 block); a stream announcing more is refused before anything is allocated.
DEFAULT_MAX_PIXELS = 64_000_000
# above this many coded pixels the entropy parameters (exact h_s, scale indexes) are computed in
# bands of y rows of about this many pixels' worth: integer arithmetic, so the same bits, but
# without the whole image's float64 hidden maps (~70 B per pixel at once)
ENTROPY_BAND_PIXELS = 4 * NETWORK_BAND_PIXELS
SYMBOLS_PER_CHUNK = 1 << 16  # y is cut into ceil(n / this) chunks, for parallel decode
MAX_Y_CHUNKS = 64


def num_chunks_for(n: int) -> int:
    return max(1, min(MAX_Y_CHUNKS, -(-n // SYMBOLS_PER_CHUNK)))


class PreparedImage(NamedTuple):
    """A validated encode request: the pixels the networks code and what the stream records."""

    pixels: np.ndarray             # uint8 h×w×3 at the coded size (consumer scale, or the original)
    quality: float                 # as the stream stores it (steps of 0.01)
    size: tuple[int, int]          # (H, W) of the original: what the decoder restores


@dataclass(frozen=True)
class DecodedLatent:
    """A parsed, entropy-decoded stream waiting for the synthesis network."""

    header: container.Header
    y_hat: Tensor          # float32 (M, H/16, W/16), before the inverse gain
    out_hw: tuple[int, int]  # the decoded image's size: the original's, or a consumer's (decode's short_side)


def _broadcast(qualities, n: int) -> list:
    if is_real(qualities):
        return [qualities] * n
    if not isinstance(qualities, Iterable) or isinstance(qualities, (str, bytes)):  # (None, True: not iterable)
        raise ConfigError(f"qualities must be a number or one per image, got {qualities!r}")
    qualities = list(qualities)
    if len(qualities) != n:
        raise ConfigError(f"got {n} images but {len(qualities)} qualities")
    return qualities


def _need(block: AbstractContextManager) -> int:
    """A memory block's held bytes (0: an unchecked block)."""
    return getattr(block, "need", 0)


def _group_by(items, key) -> dict:
    groups: dict = {}
    for i, item in enumerate(items):
        groups.setdefault(key(item), []).append(i)
    return groups


def _cost_at_width(cost: tuple[int, int, int], width: int) -> tuple[int, int, int]:
    """A memory estimate measured on the default's width, for networks ``width`` channels wide."""
    scale = memory.width_scale(width)
    return cast(tuple[int, int, int], tuple(round(v * scale) for v in cost))


# what a batch call must not take as its batch: one image, one stream, one path
NOT_IMAGES = (str, Path, bytes, np.ndarray)
NOT_STREAMS = (bytes, bytearray, memoryview, str, Path, np.ndarray)  # (an array: one stream, as decode takes)


def check_batch(items, call: str, single: str) -> None:
    """A batch call's items are a sequence: one image or stream would be iterated over (an H×W×3
    array as H images of W×3 pixels, a path or stream as its characters or bytes). An N×H×W×C
    array of images is a sequence of N. ``call``: the batch call ("encode_batch"...), whose name
    says images or streams; ``single``: the call for one item."""
    images = call.startswith("encode")
    if isinstance(items, np.ndarray) and items.ndim == 4 and images:
        return
    one = isinstance(items, NOT_IMAGES if images else NOT_STREAMS) or isinstance(items, Image.Image)
    if one or not isinstance(items, Iterable):  # (None or a number: "not iterable" from inside)
        what = f"an array of shape {items.shape}" if isinstance(items, np.ndarray) else type(items).__name__
        kind = "images (a list, or an N×H×W×C array)" if images else "streams (a list)"
        error = ImageError if images else BitstreamError
        hint = f": for one, use {single}()" if one else ""
        raise error(f"{call} takes a sequence of {kind}, got {what}{hint}")


def _smaller_stream_hint(prep: PreparedImage, lo: float) -> str:
    """What would make a smaller stream of ``prep`` than quality ``lo`` gives (BudgetError's
    second half): a lower quality bound, a lower resolution, or nothing this model can do."""
    if lo > 0:
        return f"a min_quality below {lo:g} makes smaller streams"
    if min(prep.pixels.shape[:2]) > resample.MIN_SHORT_SIDE:
        return "a smaller short_side (--short-side: coding at a lower resolution) makes smaller streams"
    return "this model makes no smaller stream of this image"


def _torch_device(device, name: str) -> torch.device:
    """``device`` as torch reads it; ConfigError naming the setting where it cannot (torch's own
    message listed twenty device types vlmcodec does not run on)."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{name} must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None


def _check_hs_device(device: str | None) -> str:
    """The device of the exact h_s: "cpu" (None) or an available CUDA device."""
    if device is None or str(device) == "cpu":
        return "cpu"
    return str(torch_device(device, "hs_device"))


def _unpickled_codec(recipe: dict, fingerprint: bytes) -> "Codec":
    """A pickled Codec made again (``Codec.__reduce__``), from a model file still the same."""
    codec = Codec(**recipe)
    if codec.fingerprint != fingerprint:
        raise ModelMismatchError(f"model file {recipe['model'] or default_model_path()} changed since the codec "
                                 f"was pickled: model {codec.fingerprint.hex()}, not {fingerprint.hex()}")
    return codec


class Codec:
    """A model ready to encode and decode.

    >>> codec = Codec()                       # the default model, torch backend
    >>> data = codec.encode(image, quality=75)  # image: uint8 H×W×3 numpy, PIL, or a file path
    >>> restored = codec.decode(data)         # uint8 H×W×3 numpy

    Parameters (README, "Python API"):

    - ``model``: a model file's path, or a ``LoadedModel`` (None: the default model)
    - ``backend``: "torch", "triton", "onnxruntime" or "tensorrt"
    - ``device``: "cpu", "cuda" or "cuda:i" (None: the backend's default)
    - ``threads``: the networks' CPU threads (None: the backend's default)
    - ``max_pixels``: larger images are refused (ImageError)
    - ``pre_edit``: run the model's pre-editor before encoding (False: faster, some rate–quality cost)
    - ``short_side``: code images with their shorter side downscaled to this (None or 0: full size)
    - ``refine``: steps of encoder-side latent refinement (0: one pass)
    - ``refine_views``: the refinement teacher's views (short sides, px; None: (224,))
    - ``refine_bf16``: run the refinement's teacher in bfloat16
    - ``check_memory``: refuse (ResourceError) an image whose coding would not fit in memory
    - ``backend_options``: the backend's own keyword options (``backends.backend_options(name)``)
    - ``hs_device``: where the exact entropy parameters run ("cpu", or "cuda": bit-identical)
    """

    def __init__(self, model: str | Path | LoadedModel | None = None, backend: str = "torch",
                 device: str | None = None, threads: int | None = None, max_pixels: float = DEFAULT_MAX_PIXELS,
                 pre_edit: bool = True, short_side: int | None = None, refine: int = 0,
                 refine_views: tuple[int, ...] | None = None, refine_bf16: bool = False, check_memory: bool = True,
                 backend_options: Mapping[str, Any] | None = None, hs_device: str | None = None):
        allocator.tune_allocator()  # process-wide, once: freed feature maps are reused (allocator.py)
        threads = check_threads("threads", threads, none="the default")
        if threads:
            # before the model is loaded (torch work too): Codec(threads=1) never runs torch on
            # more, so a process that only makes such codecs forks children free to use several
            # (whatever the backend: the exact h_s, and an ONNX Runtime codec's windowed pre-editor,
            # are torch work)
            set_torch_threads(threads)
        default = model is None or model == ""
        # (a model that is not a path: ConfigError from load_model; 0 or False were the default model)
        # (not default: model is a path, as far as types go)
        loaded = (model if isinstance(model, LoadedModel)
                  else load_model(default_model_path() if default else cast("str | Path", model)))
        # how to make this codec again in another process (pickling: __reduce__): the model file's
        # absolute path and the settings as given; none for a model held in memory only
        self._recipe = None if isinstance(model, LoadedModel) else {
            "model": None if default else str(Path(cast("str | Path", model)).resolve()), "backend": backend,
            "device": device,
            "threads": threads, "max_pixels": max_pixels, "pre_edit": pre_edit, "short_side": short_side,
            "refine": refine, "refine_views": refine_views, "refine_bf16": refine_bf16, "check_memory": check_memory,
            "backend_options": dict(backend_options) if isinstance(backend_options, Mapping) else backend_options,
            "hs_device": hs_device}
        self.loaded = loaded
        self.model = loaded.model
        self.fingerprint = loaded.fingerprint[:8]
        # what its streams carry: the fingerprint, or that of the model whose decoder it shares
        self.stream_fingerprint = loaded.stream_fingerprint[:8]
        self.tables = loaded.tables
        # (1e6 is taken, 1.5 is not: it was floored to 1)
        if not (is_real(max_pixels) and math.isfinite(max_pixels) and 1 <= max_pixels == int(max_pixels)):
            raise ConfigError(f"max_pixels must be a number of pixels, at least 1 and whole, got {max_pixels!r}")
        if not is_switch(check_memory):  # ("false" would be True, None False)
            raise ConfigError(f"check_memory must be True or False, got {check_memory!r}")
        if device is not None:
            _torch_device(device, "device")
        # device None: the backend's own default (torch, onnxruntime: cpu; triton, tensorrt: cuda)
        if backend_options is not None and not isinstance(backend_options, Mapping):
            raise ConfigError(f"backend_options must be a mapping of option names to values, got {backend_options!r}")
        options = {"threads": threads} if device is None else {"threads": threads, "device": device}
        clash = sorted(set(options) & set(backend_options or {}))
        if clash:
            cli = " (--threads on the command line)" if "threads" in clash else ""
            raise ConfigError(f"{' and '.join(clash)}: Codec's own argument{cli}, not a backend option")
        unknown = sorted(set(backend_options or {}) - set(backend_options_of(backend)))
        if unknown:  # (named here: the backend's own message listed threads, which is always Codec's)
            takes = [o for o in backend_options_of(backend) if o not in options]
            raise ConfigError(f"the {backend} backend has no option {', '.join(map(repr, unknown))}; its options: "
                              f"{', '.join(takes) or 'none'} (threads: Codec's own argument)")
        options.update(backend_options or {})
        # hs_device="cuda": the exact entropy parameters on a GPU (bit-identical; README, Backends);
        # checked before the backend is made (a bad one came after a whole ONNX export)
        self.hs_device = _check_hs_device(hs_device)
        # the torch threads its calls run on, in whichever thread (torch keeps a count per thread:
        # one set here is not that of a thread that already ran torch); None: the calling thread's
        self._torch_threads = threads
        self._index_table: Tensor | None = None  # _exact_scale_index's, made at its first use
        self.backend = create_backend(backend, self.model, **options)
        self.exact_hs = ExactHyperSynthesis.from_module(self.model.h_s)
        if self.hs_device != "cpu":
            self.exact_hs = self.exact_hs.to(self.hs_device)
        self._hs_rows = row_geometry(self.model.h_s)
        self.medians = self.model.entropy_bottleneck.medians().detach().float().cpu()
        self.scale_table64 = self.model.gaussian_conditional.scale_table.detach().double().cpu()
        self.scale_bound = float(self.model.gaussian_conditional.scale_bound)  # σ's clamp, as build_indexes
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.stage_times: dict[str, float] | None = None  # set to {} to profile the stages
        self.max_pixels = int(max_pixels)
        # refuse (ResourceError) an image whose coding would not fit in the memory left, instead
        # of being killed by the kernel; estimated for the torch and onnxruntime backends on the CPU
        self.check_memory = bool(check_memory) and memory.memory_check_enabled()
        # pre_edit=False skips a model's pre-editor at encode time: faster encoding, valid streams
        # (the decoder never runs it), at some rate–quality cost (README, "Default model")
        if not is_switch(pre_edit):  # ("no" would be True)
            raise ConfigError(f"pre_edit must be True or False, got {pre_edit!r}")
        self.pre_edit = bool(pre_edit) and self.model.pre_editor is not None
        # short_side=N codes images at the consumer's scale (vlmcodec.resample): the shorter side
        # downscaled to N before encoding, the decoder upsamples back to the original size
        self.short_side = resample.call_short_side(short_side)  # (0: full size, as a call's 0 and --short-side 0)
        # refine=N: N steps of encoder-side latent refinement (vlmcodec.refine) — slower encoding,
        # smaller / better streams, decoded by any decoder unchanged; 0 = one pass of g_a
        self.refine = check_refine_steps(refine)
        # the teacher views (short sides, px, multiples of its patch) the token term averages over;
        # None: (224,), the evaluator's. Several views transfer better to unseen ones, at their cost
        self.refine_views = check_refine_views(refine_views)
        check_views_fit_teacher(self.refine_views, loaded.metadata)
        if self._recipe is not None:  # (as checked: a one-shot iterable given was used up by then)
            self._recipe["refine_views"] = self.refine_views
        # the refinement's teacher in bfloat16 (autocast): ~0.8x the time on a CPU with AVX512-BF16
        # (~20x on one without bfloat16 instructions: LatentRefiner warns), the same token
        # similarity per bit, Lite0 KL within noise (README); other bytes than float32's
        if not is_switch(refine_bf16):
            raise ConfigError(f"refine_bf16 must be True or False, got {refine_bf16!r}")
        self.refine_bf16 = bool(refine_bf16)
        self._refiner = None
        self._refiner_lock = fork_safe_lock()  # runtime network workers may share this codec
        # what onnxruntime's arenas keep, by kind of run (counted only on that backend: _kept)
        self._kept_memory = {kind: memory.Kept() for kind in ("encode", "encode-no-pre-edit", "decode")}

    # -- public API ----------------------------------------------------------------------
    @property
    def N(self) -> int:
        return self.model.N

    @property
    def M(self) -> int:
        return self.model.M

    def __repr__(self) -> str:
        """The model and the settings that change what it does (for logs and bug reports)."""
        if not hasattr(self, "refine"):  # (in a traceback of a failed __init__)
            return object.__repr__(self)
        # threads=None: torch runs on the calling thread's count; self.threads is entropy coding's then
        threads = self._torch_threads or f"None (torch: the caller's; entropy coding: {self.threads})"
        options = [f"model={self.fingerprint.hex()}", f"backend={self.backend.name}", f"threads={threads}"]
        options += [f"short_side={self.short_side}"] if self.short_side else []
        options += [f"refine={self.refine}"] if self.refine else []
        options += ["pre_edit=False"] if self.model.pre_editor is not None and not self.pre_edit else []
        options += [f"hs_device={self.hs_device}"] if self.hs_device != "cpu" else []
        return f"Codec({', '.join(options)})"

    def __reduce__(self):
        """Pickled as how to make it (its model file and settings), so that worker processes
        (multiprocessing's spawn and forkserver, a DataLoader's workers) get an equal codec: each
        loads the model file again and refuses it if it changed since (ModelMismatchError)."""
        if self._recipe is None:
            raise TypeError("a Codec made from a model held in memory (LoadedModel) cannot be pickled: "
                            "make it from its model file (Codec(path)) to send it to other processes")
        return (_unpickled_codec, (self._recipe, self.fingerprint))

    def encode(self, image: ImageInput, quality: float | None = DEFAULT_QUALITY, short_side: int | None = None, *,
               refine: int | None = None) -> bytes:
        """Compress one image (uint8 H×W×3 numpy, PIL, or a file path) to .vlmc bytes; quality in
        [0, 100] (None: the default, 75, as ``vlmcodec.encode`` and the Engine take it; a
        RemoteCodec's None is its server's ``-q``).

        ``short_side``: code at the consumer's scale (the shorter side resized to that many pixels;
        the decoder restores the original size); None uses the codec's setting, 0 the full size.
        ``refine``: this encode's refinement steps (None: the codec's ``refine``; 0: none)."""
        return self.encode_batch([image], [DEFAULT_QUALITY if quality is None else quality], short_side,
                                 refine=refine)[0]

    def decode(self, data: container.Stream, short_side: int | None = None) -> np.ndarray:
        """Decompress .vlmc bytes to a uint8 H×W×3 array, at the original size; ``short_side=N``:
        at the size a consumer of N px sees instead (the shorter side N, never above the original),
        resized once from the float reconstruction — no full-size image is made when the stream
        was coded at that scale."""
        return self.decode_batch([data], short_side)[0]

    def encode_batch(self, images: Iterable[ImageInput], qualities: float | Iterable[float], short_side: int | None = None, *,
                     refine: int | None = None) -> list[bytes]:
        """Encode images; those sharing a padded (coded) size go through the networks as one batch."""
        check_batch(images, "encode_batch", "encode")
        if not isinstance(images, (list, tuple, np.ndarray)):  # a generator, map(...): counted below
            images = list(images)
        steps = self.refine_steps(refine)
        prepared = [self.prepare(im, q, short_side) for im, q in zip(images, _broadcast(qualities, len(images)))]
        out: list[bytes | None] = [None] * len(prepared)
        for idx in _group_by(prepared, lambda p: padded_size(*p.pixels.shape[:2])).values():
            y, z = self.analyse([prepared[i].pixels for i in idx], [prepared[i].quality for i in idx], refine=steps)
            for j, i in enumerate(idx):
                out[i] = self.entropy_encode(y[j], z[j], prepared[i])
        return out  # type: ignore[return-value]

    def decode_batch(self, streams, short_side: int | None = None) -> list[np.ndarray]:
        """Decode streams; those sharing a padded size run the synthesis as one batch
        (``short_side`` as in ``decode``)."""
        check_batch(streams, "decode_batch", "decode")
        side = resample.call_short_side(short_side)  # 0: the original size, as None
        parsed = [self._parse(s) for s in streams]
        out_hws = [resample.coded_size(p[0].height, p[0].width, side) for p in parsed]
        # the memory is checked from the headers, before any stream is entropy-decoded: the
        # batches run one after the other, so the largest one's need is held for the whole call
        groups = [[(parsed[i][0].coded_hw, out_hws[i]) for i in idx]
                  for idx in _group_by(parsed, lambda p: padded_size(*p[0].coded_hw)).values()]
        with max((self._fits_decoding(g, hold=True) for g in groups), key=_need, default=contextlib.nullcontext()):
            latents = [DecodedLatent(p[0], self._latents(*p), hw) for p, hw in zip(parsed, out_hws)]
            out: list[np.ndarray | None] = [None] * len(latents)
            for idx in _group_by(latents, lambda d: padded_size(*d.header.coded_hw)).values():
                for i, img in zip(idx, self.synthesize([latents[i] for i in idx], check_memory=False)):  # (held)
                    out[i] = img
        return out  # type: ignore[return-value]

    # -- stages: what the runtime Engine schedules (networks batched, entropy coding pooled) --
    def prepare(self, image: ImageInput, quality: float = DEFAULT_QUALITY, short_side: int | None = None) -> PreparedImage:
        """Validate an image and a quality, and resize to the coded size (``encode``'s ``short_side``)."""
        # None: the codec's setting; 0: the full size, whatever the codec's setting
        side = resample.call_short_side(short_side, self.short_side)
        arr = as_rgb_array(image, self.max_pixels)
        if arr.shape[0] * arr.shape[1] > self.max_pixels:
            raise ImageError(f"image of {arr.shape[1]}x{arr.shape[0]} pixels exceeds this codec's max_pixels="
                             f"{self.max_pixels} (Codec(max_pixels=...) or --max-pixels raises it)")
        q = check_in_range("quality", quality, 0, 100)
        size = (int(arr.shape[0]), int(arr.shape[1]))
        coded = resample.coded_size(*size, side)
        with self._fits_downscaling(size, coded):
            use_torch_threads(self._torch_threads)
            with self._stage("resize"):
                pixels = resample.downscale(arr, coded)
        return PreparedImage(pixels, container.quantize_quality(q), size)

    def refine_steps(self, refine: int | None = None) -> int:
        """The refinement steps of one call: ``refine`` validated, or None: the codec's ``refine``."""
        return self.refine if refine is None else check_refine_steps(refine)

    def analyse(self, arrays: list[np.ndarray], qualities: list[float], *,
                refine: int | None = None) -> tuple[Tensor, Tensor]:
        """Network stage of encoding, batched: (y · gain, z) for images of one padded size
        (``refine``: the steps of refinement, None: the codec's)."""
        steps = self.refine_steps(refine)
        if not len(arrays) or len(qualities) != len(arrays):  # (one quality was broadcast: a batch of two)
            raise ConfigError(f"analyse takes one or more images and one quality per image, got {len(arrays)} "
                              f"images and {len(qualities)} qualities")
        levels = torch.tensor([self.model.level_of_quality(q) for q in qualities])
        with self._fits_encoding(arrays, bool(steps)):  # (held through the refinement too)
            x, y_raw = self.analyse_unscaled(arrays, refining=bool(steps))
            y, z = self._scaled_latents(y_raw, levels)
            if steps:
                with self._stage("refine"):
                    y, z = self._refine(x, [a.shape[:2] for a in arrays], levels, y, z, steps)
        return y, z

    def analyse_unscaled(self, arrays: list[np.ndarray], *, refining: bool | None = None) -> tuple[Tensor, Tensor]:
        """The quality-independent part of the network stage, batched: (padded x, g_a(pre-edit(x)))
        before the quality's gain; rate control runs it once for all the qualities it tries.
        ``refining``: whether refinement follows (its memory is checked here; None: the codec's)."""
        refining = bool(self.refine) if refining is None else refining
        with self._fits_encoding(arrays, refining):  # (inside analyse's: that one)
            use_torch_threads(self._torch_threads)  # (before each stage's torch work: torch_threads.py)
            with self._stage("pad"):
                x = torch.from_numpy(np.stack([pad_edge(a) for a in arrays])).permute(0, 3, 1, 2).float().div_(255.0)
            with torch.inference_mode(), self._gpu_memory("encoding"):
                x_in = x
                if self.pre_edit:
                    with self._stage("pre-edit"):
                        x_in = self.backend.pre_edit(x)
                with self._stage("g_a"):
                    y_raw = self.backend.analysis(x_in)
        return x, y_raw

    def _scaled_latents(self, y_raw: Tensor, levels: Tensor) -> tuple[Tensor, Tensor]:
        """The quality's part: (y = g_a(x) · gain(level), z = h_a(y))."""
        use_torch_threads(self._torch_threads)
        with torch.inference_mode(), self._gpu_memory("encoding"):
            gain, _ = self.model.gains(levels)
            y = y_raw * gain.to(y_raw.device)[:, :, None, None]
            with self._stage("h_a"):
                z = self.backend.hyper_analysis(y)
        return y, z

    def encode_to_size(self, image: ImageInput, max_bytes: int | None = None, *, max_bpp: float | None = None,
                       short_side: int | None = None, min_quality: float = 0.0,
                       max_quality: float = 100.0, refine: int | None = None) -> bytes:
        """The stream of the highest quality whose size is at most ``max_bytes`` (or ``max_bpp``
        bits per pixel of the image as given) — rate control for a byte or bandwidth budget.

        The networks' quality-independent part (pre-edit, g_a) runs once; each quality tried costs
        h_a and the entropy coding (with ``refine``: the search runs on one-pass streams, corrected
        by refined encodes: up to three rounds, then a search on refined encodes in the bracket
        left). The search stops within 0.1 of quality or 1 % of the budget (``vlmcodec.rate_control``). The stream is the
        one ``encode`` gives at the quality found (in its header:
        ``container.unpack(data)[0].quality``). BudgetError when even ``min_quality`` does not fit.
        ``min_quality`` and ``max_quality`` are rounded to the 0.01 steps a stream carries, as a
        quality is (and as the C library's ``vlmc_decoder_encode_image_within`` rounds them): a
        ``max_quality`` of 77.777 may give 77.78.
        With ``refine``, a budget only one-pass streams fit gets the best of those, with a
        ``RefineFallbackWarning`` (refined streams are up to a few % larger at a quality). ``refine``:
        this encode's refinement steps (None: the codec's ``refine``)."""
        steps = self.refine_steps(refine)
        min_quality = check_in_range("min_quality", min_quality, 0.0, 100.0)
        max_quality = check_in_range("max_quality", max_quality, 0.0, 100.0)
        if min_quality > max_quality:  # before g_a runs
            raise ConfigError(f"min_quality {min_quality:g} is above max_quality {max_quality:g}")
        prep = self.prepare(image, min_quality, short_side)
        budget = rate_control.budget_bytes(prep.size[1], prep.size[0], max_bytes, max_bpp)
        data, fallback = self.encode_within(prep, budget, None, min_quality, max_quality, refine=steps)
        warn_refine_fallback(fallback)
        return data

    def encode_within(self, prep: PreparedImage, budget: int, y_raw: Tensor | None = None,
                      min_quality: float = 0.0, max_quality: float = 100.0, *,
                      refine: int | None = None) -> tuple[bytes, str | None]:
        """``encode_to_size``'s search for a prepared image (the runtime Engine's stage): the
        stream, and None or, where a refined search fell back to a one-pass stream, the
        ``RefineFallbackWarning``'s message (the caller issues it: the Engine runs this on a
        worker thread). ``y_raw``: its g_a output before the gain (C×h×w), when the caller has it.
        With refinement (``refine`` steps, None: the codec's), the search runs on the one-pass
        streams and each refined encode corrects it (a refined stream is up to a few % larger at the
        same quality): typically one or two refined encodes."""
        steps = self.refine_steps(refine)
        lo, hi = container.quantize_quality(min_quality), container.quantize_quality(max_quality)
        if y_raw is None:
            y_raw = self.analyse_unscaled([prep.pixels], refining=bool(steps))[1][0]

        def one_pass(q: float) -> bytes:
            y, z = self._scaled_latents(y_raw[None], torch.tensor([self.model.level_of_quality(q)]))
            return self.entropy_encode(y[0], z[0], prep._replace(quality=q))

        def one_pass_search() -> tuple[bytes, list]:
            try:
                return rate_control.largest_fitting(one_pass, budget, lo, hi)
            except BudgetError as e:
                raise BudgetError(f"{e}; {_smaller_stream_hint(prep, lo)}") from None

        if not steps:
            return one_pass_search()[0], None

        def refined(q: float) -> bytes:
            at = prep._replace(quality=q)
            y, z = self.analyse([at.pixels], [q], refine=steps)
            return self.entropy_encode(y[0], z[0], at)

        try:
            return rate_control.largest_fitting_via_proxy(refined, one_pass, budget, lo, hi)[0], None
        except BudgetError:
            # refinement spends a few % more bytes at a quality than one pass does, so a budget
            # near the smallest stream can fit one-pass streams only: those beat no stream at all
            # (and where none fits either, the error names the smallest size this model makes)
            data, probes = one_pass_search()
        quality = max(q for q, size in probes if size <= budget)
        return data, (f"no refined stream fits in {budget} bytes, even at quality {lo:g}; returned the "
                      f"one-pass stream of quality {quality:g} ({len(data)} bytes)")

    def entropy_encode(self, y: Tensor, z: Tensor, image: PreparedImage) -> bytes:
        """CPU stage of encoding, one image: symbols, exact entropy parameters, rANS, container."""
        use_torch_threads(self._torch_threads)
        with self._stage("z coding"):
            m = self.medians.reshape(-1, 1, 1)
            z_sym = torch.round(z - m)
            z_chunks = rans.encode(z_sym.to(torch.int32).numpy().ravel(), self._z_indexes(*z.shape[1:]).ravel(),
                                   self.tables["z"], 1)
        fused = hasattr(self.backend, "quantize")  # fused kernel: same indices, bit for bit
        with self._stage("h_s"), self._gpu_memory("encoding (h_s)"):
            try:
                if fused:
                    scales, means = self._entropy_parameters((z_sym + m)[None], indexes=False)
                else:
                    y_idx, means = self._entropy_parameters((z_sym + m)[None])
                    y_idx = y_idx[0]
            except OverflowError as e:  # (decoding says "corrupt stream" of such z values)
                raise ConfigError(f"this model cannot code the image: its z values are out of range for the exact "
                                  f"h_s ({e}); its weights (gains, g_a, h_a) are out of range (model edited or "
                                  "diverged?)") from e
        with self._stage("y coding"):
            if fused:
                sym_t, idx_t = cast(FusedQuantizer, self.backend).quantize(y[None], means, scales, self.scale_table64,
                                                                           self.scale_bound)
                y_sym, y_idx = sym_t[0].numpy(), idx_t[0]
            else:
                y_sym = self._y_symbols(y, means[0], y_idx)
            # (the chunks' bytes do not depend on the threads coding them)
            y_chunks = rans.encode(y_sym.ravel(), y_idx.numpy().ravel(), self.tables["y"], num_chunks_for(y_sym.size),
                                   threads=self.threads)
            flags = container.FLAG_PRE_EDITED if self.pre_edit else 0
            (h, w), (ch, cw) = image.size, image.pixels.shape[:2]
            header = container.Header(fingerprint=self.stream_fingerprint, width=w, height=h, quality=image.quality,
                                      flags=flags, coded_width=int(cw), coded_height=int(ch))
            return container.pack(header, z_chunks, y_chunks)

    def _y_symbols(self, y: Tensor, means: Tensor, indexes: Tensor) -> np.ndarray:
        """The y symbols a stream carries: round(y − μ), int32 (the rule a fused kernel computes
        the same way; ``indexes`` are the scale-table entries, for a subclass that chooses
        symbols by their cost, as ``scripts/quantizer_probe.py`` does)."""
        return y.to(torch.float64, copy=True).sub_(means).round_().to(torch.int32).numpy()

    def entropy_decode(self, data: container.Stream, short_side: int | None = None, *,
                       check_memory: bool = True) -> "DecodedLatent":
        """CPU stage of decoding, one stream: parse, check (the whole decode's memory too, from the
        header, before anything is decoded; ``check_memory=False``: the caller did), rANS-decode z
        and y → ŷ (and the output size: the original, or a consumer's of ``short_side`` px)."""
        side = resample.call_short_side(short_side)  # 0: the original size, as None
        header, z_chunks, y_chunks = self._parse(data)
        out_hw = resample.coded_size(header.height, header.width, side)
        if check_memory:
            self._fits_decoding([(header.coded_hw, out_hw)])
        return DecodedLatent(header, self._latents(header, z_chunks, y_chunks), out_hw)

    def synthesize(self, latents: list["DecodedLatent"], *, check_memory: bool = True) -> list[np.ndarray]:
        """Network stage of decoding, batched (one padded size): ŷ → cropped uint8 images. The
        batch's memory is checked and held while it runs (the runtime batches latents checked one by
        one; ``check_memory=False``: the caller holds this very batch's, as ``decode_batch`` does)."""
        if not latents:  # (a bare IndexError)
            raise ConfigError("synthesize takes one or more decoded latents, got none")
        sizes = [(d.header.coded_hw, d.out_hw) for d in latents]
        with self._fits_decoding(sizes, hold=True) if check_memory else contextlib.nullcontext():
            use_torch_threads(self._torch_threads)
            y_hat = torch.stack([d.y_hat for d in latents])
            levels = torch.tensor([self.model.level_of_quality(d.header.quality) for d in latents])
            n = len(latents)
            # a backend that runs items one at a time anyway gets them one by one here, so that each
            # float image (12 B per pixel) becomes uint8 before the next is made
            one_by_one = getattr(self.backend, "item_by_item", False)
            parts = [slice(j, j + 1) for j in range(n)] if one_by_one else [slice(0, n)]
            with torch.inference_mode(), self._gpu_memory("decoding"):
                _, inv_gain = self.model.gains(levels)
                y_hat = y_hat * inv_gain.to(y_hat.device)[:, :, None, None]
                out = []
                for part in parts:
                    with self._stage("g_s"):
                        x_hat = self.backend.synthesis(y_hat[part])
                    # (NaN became 0 in the uint8 cast: a black image); aminmax carries a NaN through,
                    # in one pass and without isfinite's boolean map
                    lo, hi = torch.aminmax(x_hat)
                    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
                        raise BitstreamError("corrupt stream: its latents drive the synthesis to values that are "
                                             "not finite (symbols far outside what an encoder writes)")
                    # in place: x̂ is this call's own tensor, and each full-size float copy costs 12 B per pixel
                    x_hat = x_hat.clamp_(0, 1)
                    for j, d in enumerate(latents[part]):
                        ch, cw = d.header.coded_hw
                        with self._stage("resize"):
                            xj = resample.resize(x_hat[j, :, :ch, :cw], d.out_hw)
                        # cast and HWC copy in one pass, on torch's threads (numpy's strided copy is one)
                        hwc = torch.empty((xj.shape[1], xj.shape[2], 3), dtype=torch.uint8)
                        out.append(hwc.copy_(xj.mul_(255).round_().permute(1, 2, 0)).numpy())
                    del x_hat
        return out

    # -- internals -----------------------------------------------------------------------
    def refiner(self):
        """The codec's ``LatentRefiner``, made on first use (it loads the refinement's teacher:
        ModelNotFoundError without the teacher's package); a server calls it at start-up."""
        with self._refiner_lock:
            if self._refiner is None:
                from .refine import LatentRefiner, RefineObjective

                objective = RefineObjective.from_recipe(self.loaded.metadata)
                if self.refine_views:
                    objective = dataclasses.replace(objective, teacher_short_sides=self.refine_views)
                if self.refine_bf16:
                    objective = dataclasses.replace(objective, teacher_bf16=True)
                with fork_waits():  # (the teacher's modules are made with a random init first: forks.py)
                    self._refiner = LatentRefiner(self.model, objective, self.refine)
            return self._refiner

    def _refine(self, x: Tensor, coded_hws: list[tuple[int, int]], levels: Tensor, y: Tensor,
                z: Tensor, steps: int) -> tuple[Tensor, Tensor]:
        """Latent refinement with the torch model on its device, per coded size (the loss ignores
        the padding; x: the padded originals, before any pre-edit); whatever the backend, the
        refined latents are coded as usual."""
        refiner = self.refiner()
        dev, back = next(self.model.parameters()).device, y.device
        x = x.to(dev)
        y, z = y.detach().to(dev).clone(), z.detach().to(dev).clone()
        for hw, idx in _group_by(coded_hws, lambda hw: hw).items():
            y[idx], z[idx] = refiner.refine(x[idx], y[idx], z[idx], levels[idx], hw, steps)
        return y.to(back), z.to(back)

    def _network_band_pixels(self, ph: int, pw: int) -> int | None:
        """The size of g_a's / g_s's row bands for a padded ph×pw image; None: one pass."""
        band = getattr(self.backend, "band_pixels", None)
        return band if bands_at(ph * pw, band) else None

    def _largest_band(self, net: str, ph: int, pw: int) -> int | None:
        """Full-resolution pixels of the largest row band ``net`` ("g_a", "g_s") runs in for a
        padded ph×pw image, its halo included; None: one pass."""
        band = self._network_band_pixels(ph, pw)
        geometry = row_geometry(getattr(self.model, net))
        return None if band is None or geometry is None else memory.network_band_pixels(geometry, ph, pw, band)

    def _estimated(self) -> str | None:
        """Which memory estimate applies: "torch" or "onnxruntime" on the CPU; None: no estimate
        (another backend or device)."""
        backend_device = getattr(self.backend, "device", None)
        on_cpu = backend_device is None or str(backend_device) == "cpu"
        return self.backend.name if on_cpu and self.backend.name in ("torch", "onnxruntime") else None

    def _encode_cost(self, ph: int, pw: int, refining: bool) -> tuple[int, int, int]:
        """(bytes per pixel of the first image, of each further one, base bytes) of encoding
        ph×pw padded images (``refining``: with refinement), scaled to g_a's width."""
        pre = self.model.pre_editor if self.pre_edit else None
        if refining:  # the torch model with gradients, whatever the backend
            per_pixel = round(memory.REFINE_BYTES_PER_PIXEL * memory.width_scale(self.model.config.analysis_width))
            # (the teacher's views cost the same whatever the codec's width: added unscaled)
            from .refine import RefineObjective

            sides = self.refine_views or RefineObjective.teacher_short_sides  # (the refiner's views)
            views = memory.refine_view_bytes(ph, pw, sides) if refining_teacher(self.loaded.metadata) else 0
            return per_pixel, per_pixel, views
        if self._estimated() == "onnxruntime":
            kind = "encode" if pre is not None else "encode-no-pre-edit"
            cost = memory.onnxruntime_cost(kind, ph * pw, pre is not None and not pre.windowed_at(ph, pw),
                                           self._network_band_pixels(ph, pw) is not None, self.backend.item_by_item)
        else:
            pre_band = (memory.pre_editor_band_pixels(pre.band_rows, ph, pw)
                        if pre is not None and pre.banded_at(ph, pw) else None)
            first, base = memory.encode_cost(self.pre_edit, pre_band, self._largest_band("g_a", ph, pw), ph * pw)
            cost = first, memory.ENCODE_BATCH_BYTES_PER_PIXEL, base
        return _cost_at_width(cost, self.model.config.analysis_width)

    def _decode_cost(self, ph: int, pw: int) -> tuple[int, int, int]:
        """As :meth:`_encode_cost`, for decoding (scaled to the decoder's width, N)."""
        if self._estimated() == "onnxruntime":
            cost = memory.onnxruntime_cost("decode", ph * pw, banded=self._network_band_pixels(ph, pw) is not None,
                                           item_by_item=self.backend.item_by_item)
        else:
            first, base = memory.decode_cost(self._largest_band("g_s", ph, pw), ph * pw)
            cost = first, memory.DECODE_BATCH_BYTES_PER_PIXEL, base
        return _cost_at_width(cost, self.model.config.N)

    def _fits(self, what: str, pixels: int, count: int, cost: tuple[int, int, int],
              hold: bool = False, kind: str | None = None) -> AbstractContextManager:
        """The memory check of coding ``count`` images of ``pixels``: made now (``hold``: as the
        returned block starts, its estimate held aside until it ends: ``memory.holding``).
        ``kind``: the onnxruntime sessions' kind of run, whose arenas' kept memory is counted."""
        if self.check_memory and self._estimated():
            first, more, base = cost
            kept = self._kept(kind)
            if hold:
                return memory.holding(what, pixels, first, count=count, batch_bytes_per_pixel=more, base_bytes=base,
                                      kept=kept)
            memory.check_fits(what, pixels, first, count=count, batch_bytes_per_pixel=more, base_bytes=base,
                              kept=kept)
        return contextlib.nullcontext()

    def _kept(self, kind: str | None) -> memory.Kept | None:
        """What the onnxruntime backend's sessions keep of a ``kind`` of run (None: another backend)."""
        return self._kept_memory[kind] if kind is not None and self._estimated() == "onnxruntime" else None

    def _fits_encoding(self, arrays: list[np.ndarray], refining: bool) -> AbstractContextManager:
        """The block the networks of encoding ``arrays`` (one padded size) run in, memory checked
        and held."""
        ph, pw = padded_size(*arrays[0].shape[:2])
        kind = None if refining else "encode" if self.pre_edit else "encode-no-pre-edit"
        return self._fits("encoding with refinement" if refining else "encoding", ph * pw, len(arrays),
                          self._encode_cost(ph, pw, refining), hold=True, kind=kind)

    def _fits_downscaling(self, size: tuple[int, int], coded: tuple[int, int]) -> AbstractContextManager:
        """The block downscaling an image of ``size`` to its ``coded`` size runs in, memory checked
        and held (host memory, whatever the backend and device; nothing to check at equal sizes)."""
        if self.check_memory and size != coded:
            # (no wait for other threads' blocks: the runtime prepares on the caller's thread, an
            # event loop's too; checked as check_fits does, then held)
            return memory.holding("downscaling", size[0] * size[1], 0, base_bytes=memory.downscale_bytes(size, coded),
                                  wait=False)
        return contextlib.nullcontext()

    def _fits_decoding(self, sizes: list[tuple[tuple[int, int], tuple[int, int]]],
                       hold: bool = False) -> AbstractContextManager:
        """The memory check of decoding a batch of streams of one padded size, given per stream
        (coded size, output size): g_s at the coded size, then the resize to another output
        (``hold`` as ``_fits``)."""
        ph, pw = padded_size(*sizes[0][0])
        first, more, base = self._decode_cost(ph, pw)
        resized = [out[0] * out[1] for coded, out in sizes if tuple(out) != tuple(coded)]
        return self._fits("decoding", ph * pw, len(sizes), (first, more, base + memory.resize_bytes(resized)), hold,
                          kind="decode")

    def memory_needed(self, height: int, width: int, count: int = 1, *, decoding: bool = False,
                      short_side: int | None = None, refine: int | None = None) -> int | None:
        """The estimated peak memory growth in bytes of encoding (``decoding``: decoding) ``count``
        images of ``height``×``width`` pixels on this codec — the figure the memory check compares
        with the memory left (``short_side`` and ``refine`` as ``encode`` takes them: encoding at a
        consumer's scale first downscales the full-size image, so it needs at least that; a stream
        coded at a consumer's scale is decoded at that coded size, then restored to height×width).
        None where no estimate exists: a backend other than torch or onnxruntime, or a GPU. (A
        warm onnxruntime codec's check counts the memory its sessions' arenas keep from earlier
        runs as taken, so it asks for less than this cold figure; ``memory.Kept``.)"""
        for name, value in (("height", height), ("width", width), ("count", count)):
            check_count(f"memory_needed's {name}", value)
        decoding = check_switch("decoding", decoding)  # ("no" gave the decode's figure)
        if not self._estimated():
            return None
        side = resample.call_short_side(short_side, self.short_side)
        coded = resample.coded_size(height, width, side)
        ph, pw = padded_size(*coded)
        if decoding:  # a stream coded at a consumer's scale is restored to height×width after g_s
            first, more, base = self._decode_cost(ph, pw)
            base += memory.resize_bytes([height * width] * count if tuple(coded) != (height, width) else [])
        else:
            first, more, base = self._encode_cost(ph, pw, bool(self.refine_steps(refine)))
            # each image is downscaled to its coded size (one at a time, its copies freed) before the networks run
            downscale = memory.downscale_bytes((height, width), coded)
            return max(memory.needed(ph * pw, first, count, more, base), memory.needed(0, 0, base_bytes=downscale))
        return memory.needed(ph * pw, first, count, more, base)

    @contextmanager
    def _gpu_memory(self, what: str):
        """A CUDA out-of-memory error as a ResourceError (the device's allocator raises it cleanly)."""
        try:
            yield
        except torch.cuda.OutOfMemoryError as e:
            raise ResourceError(f"{what} ran out of GPU memory: use smaller or fewer images per batch, "
                                f"or code at the consumer's scale (short_side) ({str(e).splitlines()[0]})") from e

    @contextmanager
    def _stage(self, name: str):
        """Adds the stage's wall time to ``self.stage_times`` when profiling is on (a dict: the one
        set when the stage began, so that profiling turned off meanwhile, by another thread, is no
        AttributeError in this one's coding)."""
        times = self.stage_times
        if times is None:
            yield
            return
        t0 = time.perf_counter()
        try:
            yield
        finally:
            times[name] = times.get(name, 0.0) + time.perf_counter() - t0

    def _scale_index(self, scales64: Tensor) -> Tensor:
        return self.model.gaussian_conditional.build_indexes(scales64)

    def _exact_scale_index(self, scales64: Tensor) -> Tensor:
        """``_scale_index`` of the exact h_s's scales (integers × 2⁻¹², on the CPU) by a table
        lookup: ``build_indexes`` itself tabulated over every such scale up to the last bound (all
        above it are the last index), so the same indexes; 0.27× the time of ``bucketize``
        (``scripts/scale_index_bench.py``)."""
        one, table = 2.0**ACT_FRAC_BITS, self._index_table
        if table is None:
            gc = self.model.gaussian_conditional
            top = int(float(gc.scale_table[-2].double()) * one) + 1  # n above: σ past the last bound
            table = gc.build_indexes(torch.arange(top + 1, dtype=torch.float64) / one).to(torch.uint8)
            self._index_table = table  # (~0.9 MB; threads that race here build the same table)
        n = scales64.mul(one).clamp_(0, len(table) - 1).to(torch.int64)
        return table[n].to(torch.int32)

    def _entropy_parameters(self, z_hat: Tensor, indexes: bool = True) -> tuple[Tensor, Tensor]:
        """ẑ [1, N, h, w] → (scale-table indexes int32, means float64), each [1, M, 4h, 4w]: the
        exact h_s, in bands of y rows above ``ENTROPY_BAND_PIXELS`` coded pixels. ``indexes=False``:
        (scales, means) float64 instead, for a fused quantization kernel that indexes them itself."""

        def params(z_part: Tensor) -> tuple[Tensor, Tensor]:
            scales, means = self.exact_hs(z_part)
            return (self._exact_scale_index(scales) if indexes else scales), means

        if self._hs_rows is None:
            return params(z_hat)
        # banded() sizes bands on its output, y, which has 16×16 image pixels per element
        return banded(params, z_hat, self._hs_rows, ENTROPY_BAND_PIXELS // 256)

    def _z_indexes(self, hz: int, wz: int) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(np.arange(self.N, dtype=np.int32)[:, None, None], (self.N, hz, wz)))

    def reads(self, fingerprint: bytes) -> bool:
        """Whether streams that carry ``fingerprint`` (8 bytes) decode here: this model's own, and
        those of the model whose decoder it shares, if any."""
        return fingerprint in (self.fingerprint, self.stream_fingerprint)

    def _parse(self, data: container.Stream) -> tuple[container.Header, list[bytes], list[bytes]]:
        """A stream's header and chunks, checked against this codec (its model, ``max_pixels``,
        the chunk count the size implies) without decoding anything."""
        header, z_chunks, y_chunks = container.unpack(data)
        if not self.reads(header.fingerprint):
            shares = (f" (whose streams carry {self.stream_fingerprint.hex()}: it shares that model's decoder)"
                      if self.stream_fingerprint != self.fingerprint else "")
            raise ModelMismatchError(
                f"stream was written by model {header.fingerprint.hex()}, this codec holds {self.fingerprint.hex()}"
                f"{shares}; decode it with the model that wrote it")
        if header.width * header.height > self.max_pixels:
            raise BitstreamError(f"stream announces {header.width}x{header.height} pixels, more than this codec's "
                                 f"max_pixels={self.max_pixels} (Codec(max_pixels=...) or --max-pixels raises it)")
        ph, pw = padded_size(*header.coded_hw)
        if len(y_chunks) != num_chunks_for(self.M * (ph // 16) * (pw // 16)) or len(z_chunks) != 1:
            raise BitstreamError("corrupt stream: chunk count does not match the image size")
        return header, z_chunks, y_chunks

    def _latents(self, header: container.Header, z_chunks: list[bytes], y_chunks: list[bytes]) -> Tensor:
        """ŷ of a parsed stream (``_parse``): rANS-decode z, the exact h_s, rANS-decode y."""
        ph, pw = padded_size(*header.coded_hw)
        hz, wz, hy, wy = ph // 64, pw // 64, ph // 16, pw // 16
        try:
            with self._stage("z coding"):
                z_sym = rans.decode(z_chunks, self._z_indexes(hz, wz).ravel(), self.tables["z"], threads=1)
        except ValueError as e:
            raise BitstreamError(f"corrupt stream: z payload does not decode ({e})") from e
        try:  # before h_s, whose cost a hostile stream's broken y chunks made a decoder pay first
            rans.check_chunk_starts(y_chunks)
        except ValueError as e:
            raise BitstreamError(f"corrupt stream: y payload does not decode ({e})") from e
        use_torch_threads(self._torch_threads)
        with self._stage("h_s"), self._gpu_memory("decoding (h_s)"):
            m = self.medians.reshape(1, -1, 1, 1)
            z_hat = torch.from_numpy(z_sym.reshape(1, self.N, hz, wz)).float() + m
            try:
                idx_t, means = self._entropy_parameters(z_hat)
            except OverflowError as e:  # z symbols no encoder writes (as the C decoder says too)
                raise BitstreamError(f"corrupt stream: z values out of range for the exact h_s ({e})") from e
            y_idx = idx_t[0].numpy()
        try:
            with self._stage("y coding"):
                y_sym = rans.decode(y_chunks, np.ascontiguousarray(y_idx).ravel(), self.tables["y"], threads=self.threads)
        except ValueError as e:
            raise BitstreamError(f"corrupt stream: y payload does not decode ({e})") from e
        return torch.from_numpy(y_sym.reshape(self.M, hy, wy)).to(torch.float64).add_(means[0]).float()
