"""The decoder-model file of the C stream decoder (``kernels/decoder/vlmc_decoder.h``).

``vlmcodec export --format c-decoder -o DIR`` writes ``DIR/decoder_model.vlmd``: what decoding a
stream reads — the fingerprints, the z medians and CDF tables, the y CDF tables and scale table,
the inverse gains, h_s in exactly the integers ``ExactHyperSynthesis`` uses (so that the C
library computes the same latents bit for bit without Python) and g_s in float32, in the torch
backend's form (sub-pixel convolutions, folded GDN). Layout (little-endian)::

    magic "VLMCDEC\\0" · u32 version · fingerprint[8] · stream_fingerprint[8] · u32 N, M, K
    f32 medians[N] · table z · table y        (table: u32 T, u32 L, i32 cdf[T·L], i32 length[T], i32 offsets[T])
    f64 scale bounds[T_y − 1] · f64 scale_bound · f32 |inv_gain|[K·M] · f32 |gain|[K·M] (version 2)
    u32 layers · per layer: u32 kind (0 conv, 1 LeakyReLU(0.01), 2 ReLU); a conv:
        u32 out, in, kh, kw, sh, sw, ph, pw, shuffle · i32 weight[out·in·kh·kw]
        f64 bias_half[out] · f64 inv_scale[out] · f64 l1 · f64 bias_max
    u32 layers of g_s (float32, the torch backend's form) · per layer: u32 kind (0 conv, 3 folded GDN); a conv:
        u32 out, in, kh, kw, sh, sw, ph, pw, shuffle · f32 weight[out·in·kh·kw] · f32 bias[out]
        a GDN: u32 C, inverse · f32 gamma[C·C] · f32 beta[C]
    the encoder's networks in float32 (version 3): u32 has_pre_editor · [the pre-editor] ·
        u32 layers of g_a · layers · u32 layers of h_a · layers, a layer: u32 kind (0 conv, 1 LeakyReLU,
        3 folded GDN); a conv: u32 out, in, kh, kw, ph, pw, unshuffle · f32 weight · f32 bias (stride 1 on
        its input pixel-unshuffled by `unshuffle`: a strided convolution as ``space_to_depth``
        rewrites it); a LeakyReLU: f32 slope; a GDN as in g_s
        the pre-editor: u32 dim, depth, heads, hidden, patch, mlp, attention_window,
        global_attention_tokens (0: the window) · convs full, quarter, embed, pos · per block:
        norm1, conv qkv, conv proj, norm2, conv fc1, conv fc2 · norm · convs to_hidden, mid, out
        (a norm: f32 eps · f32 weight[dim] · f32 bias[dim]; convs as above, without the kind)
    u32 CRC-32 of everything before it

Version 2 added the encoder's gains (for ``vlmc_decoder_write_stream``: streams written in C from
the exported encoder graphs' outputs), version 3 the encoder's networks (for
``vlmc_decoder_encode_image``: images encoded in C, no other runtime); the library reads every
version, a version-1 file cannot write streams and a version-2 file cannot encode images.
"""

from __future__ import annotations

import functools
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vlmcodec.checks import check_count, is_whole
from vlmcodec.errors import ConfigError, ImageError, VlmcodecError
from vlmcodec.files import write_whole

MODEL_FILE_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MAGIC = b"VLMCDEC\0"
FILE_NAME = "decoder_model.vlmd"
_KINDS = {"leaky": 1, "relu": 2}


def _table(t) -> bytes:
    cdf = np.ascontiguousarray(t.cdf, dtype="<i4")
    return (struct.pack("<II", *cdf.shape) + cdf.tobytes() + np.asarray(t.cdf_length, "<i4").tobytes()
            + np.asarray(t.offsets, "<i4").tobytes())


def _check_keeps_size(kh: int, kw: int, ph: int, pw: int, where: str) -> None:
    """The C library runs convolutions that keep their input's size (odd kernel k, padding
    (k − 1) / 2) and refuses any other at open: refused here, before a file is written."""
    if kh != 2 * ph + 1 or kw != 2 * pw + 1:
        raise ConfigError(f"{where}: a {kh}x{kw} convolution with padding {ph}x{pw} does not keep the size; "
                          "the C library runs odd kernels k with padding (k - 1) / 2")


def _conv(layer) -> bytes:
    if layer.transposed:
        raise ConfigError("the C decoder runs h_s made of convolutions (and 5x5 stride-2 transposed ones, "
                          "which become convolutions); this model's h_s has another transposed convolution")
    if tuple(layer.stride) != (1, 1):
        raise ConfigError("the C decoder runs h_s convolutions of stride 1 (and 5x5 stride-2 transposed ones, "
                          "which become them); this model's h_s has a strided convolution")
    w = layer.weight.numpy()
    if not np.array_equal(w, np.round(w)) or np.abs(w).max(initial=0) >= 2**31:
        raise ConfigError("h_s weights are not the integers the exact h_s expects")
    out, cin, kh, kw = w.shape
    ph, pw = layer.padding
    _check_keeps_size(kh, kw, ph, pw, "h_s")
    head = struct.pack("<10I", 0, out, cin, kh, kw, *layer.stride, *layer.padding, int(layer.shuffle))
    return (head + w.astype("<i4").tobytes() + layer.bias_half.reshape(-1).numpy().astype("<f8").tobytes()
            + layer.inv_scale.reshape(-1).numpy().astype("<f8").tobytes() + struct.pack("<dd", layer.l1, layer.bias_max))


def _synthesis(g_s) -> bytes:
    import torch
    from torch import nn

    from vlmcodec.backends.torch_backend import optimize_for_inference
    from vlmcodec.layers import FoldedGDN, SubPixelConv

    parts = []
    layers = list(optimize_for_inference(g_s).to(memory_format=torch.contiguous_format))  # type: ignore[call-overload]
    for m in layers:
        if isinstance(m, (SubPixelConv, nn.Conv2d)):
            c = m.conv if isinstance(m, SubPixelConv) else m
            if c.stride != (1, 1) or c.dilation != (1, 1) or c.groups != 1 or isinstance(c.padding, str):
                raise ConfigError("the C decoder runs g_s convolutions of stride 1 (and 5x5 stride-2 transposed ones)")
            w = c.weight.detach().float().contiguous().numpy()
            ph, pw = c.padding
            _check_keeps_size(w.shape[2], w.shape[3], ph, pw, "g_s")
            b = (c.bias.detach().float().numpy() if c.bias is not None else np.zeros(w.shape[0], np.float32))
            parts.append(struct.pack("<10I", 0, w.shape[0], w.shape[1], w.shape[2], w.shape[3], 1, 1, *c.padding,
                                     int(isinstance(m, SubPixelConv))) + w.astype("<f4").tobytes() + b.astype("<f4").tobytes())
        elif isinstance(m, FoldedGDN):
            g = m.weight.detach().float().reshape(m.weight.shape[0], -1).numpy()
            parts.append(struct.pack("<III", 3, g.shape[0], int(m.inverse)) + g.astype("<f4").tobytes()
                         + m.beta.detach().float().numpy().astype("<f4").tobytes())
        else:
            raise ConfigError(f"the C decoder cannot run g_s layer {type(m).__name__}")
    return struct.pack("<I", len(layers)) + b"".join(parts)


def space_to_depth(weight, stride: int, padding: int):
    """A convolution of ``stride`` and ``padding`` rewritten as one of stride 1 on its input
    pixel-unshuffled by ``stride`` (``F.pixel_unshuffle``: channel c·s² + a·s + b holds pixels
    (s·i + a, s·j + b) of channel c): (weight [out, in·s², ⌈k/s⌉, ⌈k/s⌉], padding / s). Same
    function on inputs whose sides are multiples of ``stride``; tap t, phase a reads kernel row
    s·t + a (zero where that is past the kernel)."""
    import torch

    if padding % stride:
        raise ConfigError(f"a convolution of stride {stride} with padding {padding} does not unshuffle")
    out, cin, kh, kw = weight.shape
    th, tw = -(-kh // stride), -(-kw // stride)
    padded = torch.zeros(out, cin, th * stride, tw * stride, dtype=weight.dtype)
    padded[:, :, :kh, :kw] = weight
    # [out, in, t, a, u, b] → [out, in, a, b, t, u]
    w = padded.reshape(out, cin, th, stride, tw, stride).permute(0, 1, 3, 5, 2, 4)
    return w.reshape(out, cin * stride * stride, th, tw).contiguous(), padding // stride


def _encoder_conv(c, kind: bool = True) -> bytes:
    """An encoder convolution record (stride s → stride 1 on the s-unshuffled input)."""
    from torch import nn

    if not isinstance(c, nn.Conv2d) or c.dilation != (1, 1) or isinstance(c.padding, str):
        raise ConfigError(f"the C encoder runs plain convolutions, not {c}")
    w = c.weight.detach().float().cpu()
    if c.groups != 1:  # a depthwise one (the position encoding) as a dense one, zeros off the diagonal
        import torch

        if c.groups != c.in_channels or c.out_channels != c.in_channels:
            raise ConfigError("the C encoder runs depthwise or dense convolutions only")
        dense = torch.zeros(c.out_channels, c.in_channels, *w.shape[2:])
        dense[range(c.out_channels), range(c.out_channels)] = w[:, 0]
        w = dense
    (sh, sw), (ph, pw) = c.stride, c.padding
    if sh != sw or ph != pw or w.shape[2] != w.shape[3]:
        raise ConfigError("the C encoder runs square convolutions with equal strides and paddings")
    if sh > 1:
        w, ph = space_to_depth(w, sh, ph)
        pw = ph
    _check_keeps_size(w.shape[2], w.shape[3], ph, pw, "an encoder network")
    b = c.bias.detach().float().cpu().numpy() if c.bias is not None else np.zeros(w.shape[0], np.float32)
    head = struct.pack("<I", 0) if kind else b""
    return (head + struct.pack("<7I", w.shape[0], w.shape[1], w.shape[2], w.shape[3], ph, pw, sh)
            + w.numpy().astype("<f4").tobytes() + b.astype("<f4").tobytes())


def _gdn(m) -> bytes:
    g = m.weight.detach().float().reshape(m.weight.shape[0], -1).cpu().numpy()
    return (struct.pack("<III", 3, g.shape[0], int(m.inverse)) + g.astype("<f4").tobytes()
            + m.beta.detach().float().cpu().numpy().astype("<f4").tobytes())


def _encoder_net(seq, name: str) -> bytes:
    from torch import nn

    from vlmcodec.layers import GDN, FoldedGDN

    parts = []
    for m in seq:
        if isinstance(m, nn.Conv2d):
            parts.append(_encoder_conv(m))
        elif isinstance(m, (GDN, FoldedGDN)):
            parts.append(_gdn(FoldedGDN(m) if isinstance(m, GDN) else m))
        elif isinstance(m, nn.LeakyReLU):
            parts.append(struct.pack("<If", 1, m.negative_slope))
        else:
            raise ConfigError(f"the C encoder cannot run {name} layer {type(m).__name__}")
    return struct.pack("<I", len(parts)) + b"".join(parts)


def _norm(n) -> bytes:
    return (struct.pack("<f", n.eps) + n.weight.detach().float().cpu().numpy().astype("<f4").tobytes()
            + n.bias.detach().float().cpu().numpy().astype("<f4").tobytes())


def _pre_editor(p) -> bytes:
    from torch import nn

    c = p.config
    mlp = p.blocks[0].mlp[0].out_features if len(p.blocks) else 0
    if any(not isinstance(b.mlp[1], nn.GELU) or b.mlp[1].approximate != "none" for b in p.blocks):
        raise ConfigError("the C encoder runs the pre-editor's exact (erf) GELU only")
    head = struct.pack("<8I", c.dim, c.depth, c.heads, c.hidden, c.patch, mlp, p.attention_window,
                       p.global_attention_tokens or 0)
    parts = [head] + [_encoder_conv(m, kind=False) for m in (p.full, p.quarter, p.embed, p.pos)]
    for b in p.blocks:
        parts += [_norm(b.norm1), _linear(b.qkv), _linear(b.proj), _norm(b.norm2), _linear(b.mlp[0]),
                  _linear(b.mlp[2])]
    parts += [_norm(p.norm)] + [_encoder_conv(m, kind=False) for m in (p.to_hidden, p.mid, p.out)]
    return b"".join(parts)


def _linear(lin) -> bytes:
    """A Linear layer over tokens as the 1×1 convolution record it is on the token grid."""
    w = lin.weight.detach().float().cpu().numpy()
    b = lin.bias.detach().float().cpu().numpy() if lin.bias is not None else np.zeros(w.shape[0], np.float32)
    return struct.pack("<7I", w.shape[0], w.shape[1], 1, 1, 0, 0, 1) + w.astype("<f4").tobytes() + b.astype("<f4").tobytes()


def _check_reduces_16(g_a) -> None:
    """The C encoder codes latents of 1/16 the image's sides and refuses at open (the whole file,
    decoder part too) a g_a whose strides do not multiply to 16: refused here, before writing."""
    from torch import nn

    scale = 1
    for m in g_a:
        if isinstance(m, nn.Conv2d):
            scale *= int(m.stride[0])
    if scale != 16:
        raise ConfigError(f"g_a reduces the image {scale} times (its strides' product); the C encoder "
                          "codes latents of 1/16 the image's sides")


def _encoder(model) -> bytes:
    pre = model.pre_editor
    _check_reduces_16(model.g_a)
    return (struct.pack("<I", int(pre is not None)) + (_pre_editor(pre) if pre is not None else b"")
            + _encoder_net(model.g_a, "g_a") + _encoder_net(model.h_a, "h_a"))


def decoder_model_bytes(loaded, version: int = MODEL_FILE_VERSION) -> bytes:
    """The decoder-model file of a loaded model (``vlmcodec.models.checkpoint.load_model``);
    ``version``: an older layout (1: without the gains, 2: without the encoder's networks), for
    tests of the library's compatibility."""
    if version not in READABLE_VERSIONS:
        raise ConfigError(f"decoder-model file version {version} (this build writes {READABLE_VERSIONS})")
    model = loaded.model
    # (here, not at the top: `vlmcodec info FILE.vlmd` reads a file without torch, 0.2 s against 1.5–2 s)
    from vlmcodec.entropy.exact_hyper import ExactHyperSynthesis
    from vlmcodec.models.checkpoint import require_finite

    require_finite(model.state_dict(), "the model's weights are not finite")  # (the library refuses them)
    gc = model.gaussian_conditional
    exact = ExactHyperSynthesis.from_module(model.h_s)
    medians = model.entropy_bottleneck.medians().detach().float().cpu().numpy()
    bounds = gc.scale_table.detach().double().cpu().numpy()[:-1]
    if not (np.diff(bounds) > 0).all():  # (finite: checked above with every weight and buffer)
        # (the library refuses such a file: its index search assumes a sorted table)
        raise ConfigError("the model's scale table is not finite and increasing (nor can its streams be coded in C)")
    inv_gain = model.inv_gain.detach().abs().float().cpu().numpy()
    gain = model.gain.detach().abs().float().cpu().numpy()
    parts = [MAGIC, struct.pack("<I", version), loaded.fingerprint[:8], loaded.stream_fingerprint[:8],
             struct.pack("<III", model.N, model.M, inv_gain.shape[0]), medians.astype("<f4").tobytes(),
             _table(loaded.tables["z"]), _table(loaded.tables["y"]), bounds.astype("<f8").tobytes(),
             struct.pack("<d", float(gc.scale_bound)), inv_gain.astype("<f4").tobytes(),
             gain.astype("<f4").tobytes() if version >= 2 else b"", struct.pack("<I", len(exact.layers))]
    for layer in exact.layers:
        parts.append(struct.pack("<I", _KINDS[layer]) if isinstance(layer, str) else _conv(layer))
    parts.append(_synthesis(model.g_s))
    if version >= 3:
        parts.append(_encoder(model))
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def _most_bytes(n: int, m: int, levels: int) -> int:
    """A generous bound on the size of a decoder-model file of ``n``, ``m`` and ``levels`` (its
    real one is ~1/20 of it): 64 float64 5x5 convolutions of the wider width, CDF tables of 65536
    entries for each z channel and 256 scales, the gains, and 64 MiB more."""
    w = max(n, m)
    return (64 << 20) + 8 * 25 * 64 * w * w + 4 * 65536 * (n + 256) + 8 * levels * m


def describe_decoder_model(path: str | Path) -> dict:
    """What a decoder-model file holds (its fields, checked: magic, version, CRC-32); ConfigError
    for a file that is not one or is damaged."""
    with open(path, "rb") as f:  # (its fixed header first: a 2 GB file of zeros was read whole)
        size = os.fstat(f.fileno()).st_size
        blob = f.read(40)
        if blob[:8] != MAGIC:
            raise ConfigError(f"{path} is not a vlmcodec decoder-model file (bad magic)")
        if size < 44:
            raise ConfigError(f"{path}: truncated ({size} bytes, less than a decoder-model file's header)")
        n, m, k = struct.unpack("<III", blob[28:40])
        # the C library's limits (a forged file with N 0 was described as one that encodes images)
        if not (1 <= n <= 4096 and 1 <= m <= 4096 and 1 <= k <= 1024):
            raise ConfigError(f"{path}: bad network sizes N {n}, M {m}, levels {k} (damaged)")
        if size < 44 + 8 * k * m:  # (at least the gains: the C library said "truncated")
            raise ConfigError(f"{path}: truncated ({size} bytes, too few for N {n}, M {m}, levels {k})")
        if size > _most_bytes(n, m, k):
            raise ConfigError(f"{path}: {size} bytes, more than a decoder-model file of N {n}, M {m} holds (damaged)")
        blob += f.read(size - len(blob))
    if struct.unpack("<I", blob[-4:])[0] != zlib.crc32(blob[:-4]):
        raise ConfigError(f"{path}: CRC-32 mismatch (damaged)")
    (version,) = struct.unpack("<I", blob[8:12])
    if version not in READABLE_VERSIONS:
        raise ConfigError(f"{path}: decoder-model file version {version} (this build reads "
                          f"{', '.join(map(str, READABLE_VERSIONS))})")
    return {"format_version": version, "model": blob[12:20].hex(), "streams_carry": blob[20:28].hex(),
            "N": n, "M": m, "levels": k, "writes_streams": version >= 2,
            "encodes_images": version >= 3, "bytes": len(blob)}


def export_c_decoder(loaded, out_dir: str | Path, version: int = MODEL_FILE_VERSION) -> Path:
    """Write ``out_dir/decoder_model.vlmd`` for ``loaded``; returns its path. ``version`` 2 leaves
    the encoder's networks out (a decoding-only service: a smaller file, a faster open)."""
    if version not in (2, MODEL_FILE_VERSION):
        raise ConfigError(f"decoder-model file version {version}: this build writes 2 (decoding and writing "
                          f"streams) or {MODEL_FILE_VERSION} (also encoding images)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE_NAME
    write_whole(path, decoder_model_bytes(loaded, version))  # whole or not at all
    return path


# -- building and calling the C library from Python (tests, benchmarks) ---------------------------

def cpu_vector_isa(no_avx512: bool = False) -> str | None:
    """The convolution version the C library takes on this CPU by its flags (``/proc/cpuinfo``):
    "avx512" (F/VL/BW/DQ; "avx2" with ``no_avx512``, as ``VLMC_NO_AVX512=1`` makes it), "avx2"
    (AVX2 + FMA) or "portable"; None where the flags cannot be read (not x86-64 Linux), where the
    library's build decides alone. (For a build with the dispatch: GCC ≥ 11 or Clang ≥ 12.)"""
    import platform
    import re

    if platform.machine() != "x86_64":
        return None
    try:
        found = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return None
    if found is None:
        return None
    flags = set(found.group(1).split())
    if not no_avx512 and {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else "portable"


def find_cmake() -> str | None:
    """A cmake executable: on PATH, else the one the ``cmake`` PyPI package installs; None without."""
    import shutil

    found = shutil.which("cmake")
    if found:
        return found
    try:
        import cmake  # the PyPI package ships a binary

        # (getattr: any cmake module may be found, e.g. the source tree's cmake/ folder, which has none)
        return str(Path(getattr(cmake, "CMAKE_BIN_DIR")) / "cmake")
    except (ImportError, AttributeError):
        return None


def build_c_decoder(source_dir: str | Path, build_dir: str | Path, jobs: int = 2, tests: bool = False,
                    bench: bool = False, compilers: tuple[str, str] | None = None) -> Path:
    """Configure and build ``libvlmc_decoder``, ``vlmc_decode_latents`` and ``vlmc_write_stream`` from the project's
    CMakeLists.txt into ``build_dir`` (``tests``: every target, the ctest programs included;
    ``bench``: ``vlmc_conv_bench`` too; ``compilers``: the C and C++ compilers, else cmake's
    choice); returns the folder holding them. ConfigError (with cmake's output) when cmake or a
    compiler is missing or the build fails."""
    import subprocess

    cmake = find_cmake()
    if cmake is None:
        raise ConfigError("cmake not found (apt install cmake, or pip install cmake)")
    build = Path(build_dir)
    targets = [] if tests else ["--target", "vlmc_decoder", "vlmc_decode_latents", "vlmc_write_stream", "vlmc_encode",
                                *(["vlmc_conv_bench"] if bench else [])]
    steps = [[cmake, "-S", str(source_dir), "-B", str(build), "-DVLMCODEC_BUILD_PYTHON=OFF",
              f"-DVLMCODEC_BUILD_TESTS={'ON' if tests else 'OFF'}", "-DCMAKE_BUILD_TYPE=Release",
              *([f"-DCMAKE_C_COMPILER={compilers[0]}", f"-DCMAKE_CXX_COMPILER={compilers[1]}"] if compilers else [])],
             [cmake, "--build", str(build), *targets, "-j", str(jobs)]]
    for cmd in steps:
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise ConfigError(f"building the C decoder failed ({' '.join(cmd[:2])}):\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return build / "kernels" / "decoder"


@functools.lru_cache(maxsize=None)
def _c_library(library: str):
    """The C library at ``library`` with its functions' types declared, and the ctypes types its
    calls take: (CDLL, Info, Pixels or None, HyperAnalysis). Once per library for the process:
    ctypes keeps every POINTER type for good, so types declared per decoder (they were, in
    ``CStreamDecoder.__init__``) kept ~7 KB each for good."""
    import ctypes

    lib = ctypes.CDLL(str(library))
    lib.vlmc_decoder_last_error.restype = ctypes.c_char_p
    if hasattr(lib, "vlmc_decoder_vector_isa"):  # (a library built before it has none)
        lib.vlmc_decoder_vector_isa.restype = ctypes.c_char_p
    lib.vlmc_decoder_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.vlmc_decoder_open_memory.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
    lib.vlmc_decoder_free.argtypes = [ctypes.c_void_p]
    lib.vlmc_decoder_set_max_pixels.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    lib.vlmc_decoder_set_band_pixels.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    if hasattr(lib, "vlmc_decoder_set_cache_bytes"):  # (libraries before stop 45 have no block cache)
        lib.vlmc_decoder_set_cache_bytes.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        lib.vlmc_decoder_cached_bytes.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint64)]
    lib.vlmc_decoder_stream_info.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.vlmc_decoder_latents.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                                         ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    lib.vlmc_decoder_image.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32,
                                       ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    lib.vlmc_decoder_image_at.argtypes = lib.vlmc_decoder_image.argtypes
    lib.vlmc_decoder_consumer_size.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32),
                                               ctypes.POINTER(ctypes.c_uint32)]
    lib.vlmc_decoder_fingerprints.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.vlmc_decoder_can_write.argtypes = [ctypes.c_void_p]
    lib.vlmc_decoder_gain.argtypes = [ctypes.c_void_p, ctypes.c_double, ctypes.c_void_p, ctypes.c_size_t]
    lib.vlmc_decoder_latent_size.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
                                             ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    lib.vlmc_decoder_write_stream.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32,
        ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_double, ctypes.c_uint32, ctypes.c_int,
        ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)), ctypes.POINTER(ctypes.c_size_t)]
    lib.vlmc_decoder_free_stream.argtypes = [ctypes.POINTER(ctypes.c_uint8)]
    lib.vlmc_decoder_can_encode.argtypes = [ctypes.c_void_p]
    out_stream: list[Any] = [ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)), ctypes.POINTER(ctypes.c_size_t)]
    lib.vlmc_decoder_encode_image.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_double, ctypes.c_uint32,
        ctypes.c_uint32, ctypes.c_int, *out_stream]
    lib.vlmc_decoder_encode_image_within.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_size_t,
        ctypes.c_double, ctypes.c_double, ctypes.c_uint32, ctypes.c_int, *out_stream,
        ctypes.POINTER(ctypes.c_double)]

    class Pixels(ctypes.Structure):  # (returned only where the library takes it)
        _fields_ = [("data", ctypes.c_void_p), ("width", ctypes.c_uint32), ("height", ctypes.c_uint32),
                    ("row_stride", ctypes.c_ssize_t), ("format", ctypes.c_uint32)]

    has_pixels = hasattr(lib, "vlmc_decoder_encode_pixels")  # (libraries before stop 45 take tight RGB alone)
    if has_pixels:
        lib.vlmc_decoder_encode_pixels.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(Pixels), ctypes.c_double, ctypes.c_uint32, ctypes.c_uint32,
            ctypes.c_int, *out_stream]
        lib.vlmc_decoder_encode_pixels_within.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(Pixels), ctypes.c_uint32, ctypes.c_size_t, ctypes.c_double,
            ctypes.c_double, ctypes.c_uint32, ctypes.c_int, *out_stream, ctypes.POINTER(ctypes.c_double)]
    lib.vlmc_decoder_analyse_image.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_double, ctypes.c_uint32,
        ctypes.c_uint32, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t]
    HyperAnalysis = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                     ctypes.c_size_t, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t)
    lib.vlmc_decoder_write_stream_within.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, HyperAnalysis, ctypes.c_void_p,
        ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_size_t, ctypes.c_double,
        ctypes.c_double, ctypes.c_uint32, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)),
        ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_double)]

    class Info(ctypes.Structure):
        _fields_ = [*[(name, ctypes.c_uint32) for name in CStreamDecoder._FIELDS],
                    ("quality", ctypes.c_float), ("fingerprint", ctypes.c_uint8 * 8)]

    return lib, Info, Pixels if has_pixels else None, HyperAnalysis


class CStreamDecoder:
    """The C decoder through ctypes: ``latents(data, raw=False, threads=0) -> float32 [M, h, w]``,
    ``image(data, ...)`` and ``info(data) -> dict``, and the stream writer (``write_stream(y, z,
    ...)``, ``gain(quality)``); ``model_file`` is a decoder-model file's path or its bytes; errors
    raise ``CDecoderError`` carrying the C error code."""

    CODES = {-1: "invalid argument", -2: "corrupt", -3: "model mismatch", -4: "buffer too small",
             -5: "no memory", -6: "bad model file", -7: "too large", -8: "internal", -9: "over budget",
             -10: "callback failed"}
    _FIELDS = ("width", "height", "coded_width", "coded_height", "padded_width", "padded_height", "channels",
               "latent_height", "latent_width", "flags")

    def __init__(self, library: str | Path, model_file: str | Path | bytes):
        import ctypes

        self._ct = ctypes
        lib, Info, self._Pixels, self._HyperAnalysis = _c_library(str(library))
        self._Info, self._lib = Info, lib
        handle = ctypes.c_void_p()
        if isinstance(model_file, (bytes, bytearray, memoryview)):  # the file's bytes: vlmc_decoder_open_memory
            blob = bytes(model_file)
            self._check(lib.vlmc_decoder_open_memory(blob, len(blob), ctypes.byref(handle)))
        else:
            self._check(lib.vlmc_decoder_open(str(model_file).encode(), ctypes.byref(handle)))
        self._handle: ctypes.c_void_p | None = handle

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise CDecoderError(rc, self._lib.vlmc_decoder_last_error().decode(errors="replace"))

    def close(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.vlmc_decoder_free(self._handle)
            self._handle = None

    __del__ = close

    def set_max_pixels(self, n: int) -> None:
        self._check(self._lib.vlmc_decoder_set_max_pixels(self._handle, self._count("max_pixels", n, 1)))

    def set_band_pixels(self, n: int) -> None:
        self._check(self._lib.vlmc_decoder_set_band_pixels(self._handle, self._count("band_pixels", n, 0)))

    @staticmethod
    def _count(name: str, n, least: int) -> int:
        """A size_t setting: a whole number from ``least`` (ctypes wrapped -1 to 2^64 - 1)."""
        n = check_count(name, n, least=least)
        if n >= 1 << 64:
            raise ConfigError(f"{name} must be below 2^64, got {n}")
        return n

    def vector_isa(self) -> str:
        """The vector instructions the library's convolutions use in this process: "avx512", "avx2"
        or "portable" (vlmc_decoder_vector_isa; VLMC_NO_AVX512=1 in the environment keeps "avx2")."""
        return self._lib.vlmc_decoder_vector_isa().decode()

    def set_cache_bytes(self, n: int) -> None:
        """Bytes of working buffers kept between calls (vlmc_decoder_set_cache_bytes; 0: none)."""
        self._check(self._lib.vlmc_decoder_set_cache_bytes(self._handle, n))

    def cached_bytes(self) -> int:
        """Bytes of working buffers kept now."""
        out = self._ct.c_uint64()
        self._check(self._lib.vlmc_decoder_cached_bytes(self._handle, self._ct.byref(out)))
        return out.value

    def _stream_info(self, data: bytes):
        """vlmc_decoder_stream_info's struct for ``data``."""
        info = self._Info()
        self._check(self._lib.vlmc_decoder_stream_info(self._handle, data, len(data), self._ct.byref(info)))
        return info

    def info(self, data: bytes) -> dict:
        info = self._stream_info(data)
        out = {name: getattr(info, name) for name in self._FIELDS}
        return {**out, "quality": round(info.quality, 2), "fingerprint": bytes(info.fingerprint)}

    def latents(self, data: bytes, raw: bool = False, threads: int = 0, out_count: int | None = None) -> np.ndarray:
        i = self.info(data)
        shape = (i["channels"], i["latent_height"], i["latent_width"])
        out = np.empty(int(np.prod(shape)), np.float32)
        n = out.size if out_count is None else out_count
        self._check(self._lib.vlmc_decoder_latents(self._handle, data, len(data), 1 if raw else 0, threads,
                                                   out.ctypes.data, n))
        return out.reshape(shape)

    def image(self, data: bytes, threads: int = 0, coded_size: bool = False, short_side: int | None = None) -> np.ndarray:
        """The decoded image, uint8 H×W×3: at the original size, or (``coded_size``) at the size
        the stream codes (a consumer's scale), or (``short_side=N``) at the size a consumer of N
        px sees, as ``Codec.decode(data, short_side=N)``."""
        if short_side is not None:
            if coded_size:
                raise ConfigError("coded_size and short_side exclude each other")
            short_side = self._side(short_side, "None, 0")
            info, w, h = self._stream_info(data), self._ct.c_uint32(), self._ct.c_uint32()
            self._check(self._lib.vlmc_decoder_consumer_size(self._ct.byref(info), int(short_side), self._ct.byref(w),
                                                             self._ct.byref(h)))
            out = np.empty((h.value, w.value, 3), np.uint8)
            self._check(self._lib.vlmc_decoder_image_at(self._handle, data, len(data), int(short_side), threads,
                                                        out.ctypes.data, out.size))
            return out
        i = self.info(data)
        h, w = (i["coded_height"], i["coded_width"]) if coded_size else (i["height"], i["width"])
        out = np.empty((h, w, 3), np.uint8)
        self._check(self._lib.vlmc_decoder_image(self._handle, data, len(data), 2 if coded_size else 0, threads,
                                                 out.ctypes.data, out.size))
        return out

    def fingerprints(self) -> tuple[bytes, bytes]:
        """(the model's fingerprint, the one its streams carry): 8 bytes each."""
        own, carried = (self._ct.c_uint8 * 8)(), (self._ct.c_uint8 * 8)()
        self._check(self._lib.vlmc_decoder_fingerprints(self._handle, own, carried))
        return bytes(own), bytes(carried)

    # -- writing streams (vlmc_decoder_write_stream) -------------------------------------------
    def can_write(self) -> bool:
        """Whether this decoder-model file can write streams (version 2: it holds the gains)."""
        return self._lib.vlmc_decoder_can_write(self._handle) == 0

    def gain(self, quality: float) -> np.ndarray:
        """The gain g_a's output is multiplied by at ``quality``: float32 [M]."""
        m = self.latent_size(64, 64)[0] // 16  # the channels: one 64×64 block has 4×4 latent positions
        out = np.empty(m, np.float32)
        self._check(self._lib.vlmc_decoder_gain(self._handle, float(quality), out.ctypes.data, out.size))
        return out

    def latent_size(self, coded_width: int, coded_height: int) -> tuple[int, int]:
        """(y floats, z floats) for an image coded at ``coded_width`` × ``coded_height``."""
        ny, nz = self._ct.c_size_t(), self._ct.c_size_t()
        self._check(self._lib.vlmc_decoder_latent_size(self._handle, coded_width, coded_height, self._ct.byref(ny),
                                                       self._ct.byref(nz)))
        return ny.value, nz.value

    def write_stream(self, y: np.ndarray, z: np.ndarray, width: int, height: int, quality: float, *,
                     coded_size: tuple[int, int] | None = None, pre_edited: bool = False, threads: int = 0,
                     y_count: int | None = None, z_count: int | None = None) -> bytes:
        """A .vlmc stream of y (= g_a output · gain, [M, h, w]) and z (= h_a(y)) for an image of
        ``width`` × ``height`` (``coded_size``: (width, height) g_a saw, when smaller), as
        ``Codec.entropy_encode`` writes it. ``y_count``/``z_count`` override the counts passed
        (argument-check tests)."""
        y = np.ascontiguousarray(y, np.float32)
        z = np.ascontiguousarray(z, np.float32)
        cw, ch = coded_size if coded_size is not None else (0, 0)
        buf, size = self._ct.POINTER(self._ct.c_uint8)(), self._ct.c_size_t()
        self._check(self._lib.vlmc_decoder_write_stream(
            self._handle, y.ctypes.data, y.size if y_count is None else y_count, z.ctypes.data,
            z.size if z_count is None else z_count, width, height, cw, ch, float(quality), 1 if pre_edited else 0,
            threads, self._ct.byref(buf), self._ct.byref(size)))
        return self._take_stream(buf, size.value)

    def _take_stream(self, buf, size: int) -> bytes:
        """A stream the library allocated, as bytes; the library's buffer freed."""
        try:
            return self._ct.string_at(buf, size)
        finally:
            self._lib.vlmc_decoder_free_stream(buf)

    def write_stream_within(self, y_raw: np.ndarray, h_a, z_shape: tuple[int, int, int], width: int, height: int,
                            max_bytes: int, *, min_quality: float = 0.0, max_quality: float = 100.0,
                            coded_size: tuple[int, int] | None = None, pre_edited: bool = False,
                            threads: int = 0) -> tuple[bytes, float]:
        """(stream, quality): the highest quality whose stream fits ``max_bytes``
        (vlmc_decoder_write_stream_within); ``y_raw``: g_a's output before the gain [M, h, w];
        ``h_a(y) -> z`` (float32 arrays, z of ``z_shape``) is called for each quality tried (an
        exception in it stops the search: CDecoderError -10)."""
        ct = self._ct
        y_raw = np.ascontiguousarray(y_raw, np.float32)
        z_count = int(np.prod(z_shape))

        def callback(_user, y_ptr, y_count, z_ptr, n_z):
            try:
                y = np.ctypeslib.as_array(y_ptr, (y_count,)).reshape(y_raw.shape)
                z = np.ascontiguousarray(h_a(y.copy()), np.float32).reshape(-1)
                if z.size != n_z:
                    return 2
                np.ctypeslib.as_array(z_ptr, (n_z,))[:] = z
                return 0
            except Exception:  # noqa: BLE001 — a Python error must not unwind through C
                return 1

        fn = self._HyperAnalysis(callback)
        cw, ch = coded_size if coded_size is not None else (0, 0)
        buf, size, quality = ct.POINTER(ct.c_uint8)(), ct.c_size_t(), ct.c_double()
        self._check(self._lib.vlmc_decoder_write_stream_within(
            self._handle, y_raw.ctypes.data, y_raw.size, z_count, fn, None, width, height, cw, ch, self._budget(max_bytes),
            float(min_quality), float(max_quality), 1 if pre_edited else 0, threads, ct.byref(buf), ct.byref(size),
            ct.byref(quality)))
        return self._take_stream(buf, size.value), round(quality.value, 2)

    # -- encoding images (vlmc_decoder_encode_image) ---------------------------------------------
    def can_encode(self) -> bool:
        """Whether this decoder-model file can encode images (version 3: the encoder's networks)."""
        return self._lib.vlmc_decoder_can_encode(self._handle) == 0

    @staticmethod
    def _rgb(image) -> np.ndarray:
        # (np.ascontiguousarray(image, np.uint8) cast whatever came: a float image in [0, 1] was
        # coded near black, 300 in int64 as 44; Codec.encode refuses them, and so does this)
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ImageError(f"expected an H×W×3 uint8 array, got a {got} (vlmcodec.image_io.as_rgb_array "
                             "converts other images)")
        return np.ascontiguousarray(image)

    @staticmethod
    def _budget(max_bytes) -> int:
        """A byte budget for the C calls: a whole number >= 1, above 2^62 capped (every stream fits
        it, as the Python search caps it); ctypes wrapped -1 to 2^64 - 1 and 2^64 + 300 to 300."""
        return min(check_count("max_bytes", max_bytes), 1 << 62)  # (rate_control.budget_bytes' rule)

    @staticmethod
    def _side(short_side, takes: str = "0") -> int:
        """A consumer's short side for the C calls (ctypes wraps a negative or too large number
        modulo 2^32: -1 was the full size, 2^32 + 32 was 32); ``takes``: what else the call takes."""
        if not is_whole(short_side) or not 0 <= short_side < 1 << 32:
            raise ConfigError(f"short_side must be {takes} or an integer >= 16, got {short_side!r}")
        return int(short_side)

    def encode_image(self, image, quality: float, *, short_side: int = 0, pre_edit: bool = True,
                     threads: int = 0) -> bytes:
        """The .vlmc stream of ``image`` (uint8 H×W×3) at ``quality``, encoded in C
        (``short_side``: at a consumer's scale; ``pre_edit=False``: without the pre-editor)."""
        rgb = self._rgb(image)
        buf, size = self._ct.POINTER(self._ct.c_uint8)(), self._ct.c_size_t()
        self._check(self._lib.vlmc_decoder_encode_image(
            self._handle, rgb.ctypes.data, rgb.shape[1], rgb.shape[0], float(quality), self._side(short_side),
            0 if pre_edit else 2, threads, self._ct.byref(buf), self._ct.byref(size)))
        return self._take_stream(buf, size.value)

    def encode_image_within(self, image, max_bytes: int, *, min_quality: float = 0.0, max_quality: float = 100.0,
                            short_side: int = 0, pre_edit: bool = True, threads: int = 0) -> tuple[bytes, float]:
        """(stream, quality): the highest quality whose stream of ``image`` fits ``max_bytes``."""
        ct, rgb = self._ct, self._rgb(image)
        buf, size, quality = ct.POINTER(ct.c_uint8)(), ct.c_size_t(), ct.c_double()
        self._check(self._lib.vlmc_decoder_encode_image_within(
            self._handle, rgb.ctypes.data, rgb.shape[1], rgb.shape[0], self._side(short_side), self._budget(max_bytes),
            float(min_quality),
            float(max_quality), 0 if pre_edit else 2, threads, ct.byref(buf), ct.byref(size), ct.byref(quality)))
        return self._take_stream(buf, size.value), round(quality.value, 2)

    PIXEL_LAYOUTS = {"rgb": 0, "bgr": 1, "rgba": 2, "bgra": 3}  # VLMC_PIXELS_*

    def _pixels(self, pixels: np.ndarray, layout: str):
        """vlmc_pixels over ``pixels``' own memory: H×W×C uint8 with C the layout's bytes per pixel,
        pixels and channels tight, rows at any stride (padded, a crop's, negative when flipped)."""
        if layout not in self.PIXEL_LAYOUTS:
            raise ConfigError(f"layout must be one of {sorted(self.PIXEL_LAYOUTS)}, got {layout!r}")
        step = len(layout)
        if (not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 3
                or pixels.shape[2] != step):
            raise ImageError(f"expected an H×W×{step} uint8 array for layout {layout!r}, got "
                             f"{getattr(pixels, 'shape', type(pixels))}")
        if pixels.strides[1:] != (step, 1):
            raise ImageError("the pixels and channels of each row must be tight (strides (any, "
                             f"{step}, 1), got {pixels.strides}): pass np.ascontiguousarray(pixels)")
        return self._Pixels(pixels.ctypes.data, pixels.shape[1], pixels.shape[0], pixels.strides[0],
                            self.PIXEL_LAYOUTS[layout])

    def encode_pixels(self, pixels: np.ndarray, quality: float, *, layout: str = "rgb", short_side: int = 0,
                      pre_edit: bool = True, threads: int = 0) -> bytes:
        """``encode_image`` on pixels as they lie in memory (vlmc_decoder_encode_pixels): ``layout``
        "rgb", "bgr", "rgba" or "bgra" (alpha ignored), rows at ``pixels.strides[0]``; no copy."""
        desc = self._pixels(pixels, layout)
        buf, size = self._ct.POINTER(self._ct.c_uint8)(), self._ct.c_size_t()
        self._check(self._lib.vlmc_decoder_encode_pixels(
            self._handle, self._ct.byref(desc), float(quality), self._side(short_side), 0 if pre_edit else 2, threads,
            self._ct.byref(buf), self._ct.byref(size)))
        return self._take_stream(buf, size.value)

    def encode_pixels_within(self, pixels: np.ndarray, max_bytes: int, *, layout: str = "rgb",
                             min_quality: float = 0.0, max_quality: float = 100.0, short_side: int = 0,
                             pre_edit: bool = True, threads: int = 0) -> tuple[bytes, float]:
        """``encode_image_within`` on pixels as they lie in memory (see ``encode_pixels``)."""
        ct, desc = self._ct, self._pixels(pixels, layout)
        buf, size, quality = ct.POINTER(ct.c_uint8)(), ct.c_size_t(), ct.c_double()
        self._check(self._lib.vlmc_decoder_encode_pixels_within(
            self._handle, ct.byref(desc), self._side(short_side), self._budget(max_bytes), float(min_quality),
            float(max_quality),
            0 if pre_edit else 2, threads, ct.byref(buf), ct.byref(size), ct.byref(quality)))
        return self._take_stream(buf, size.value), round(quality.value, 2)

    def analyse_image(self, image, quality: float, *, short_side: int = 0, pre_edit: bool = True,
                      threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(y, z) float32, flat: the latents ``encode_image`` codes (y = g_a · gain, z = h_a(y))."""
        rgb, short_side = self._rgb(image), self._side(short_side)
        h, w = rgb.shape[:2]
        if short_side and min(h, w) > short_side:
            from vlmcodec.resample import coded_size

            h, w = coded_size(h, w, short_side)
        ny, nz = self.latent_size(w, h)
        y, z = np.empty(ny, np.float32), np.empty(nz, np.float32)
        self._check(self._lib.vlmc_decoder_analyse_image(
            self._handle, rgb.ctypes.data, rgb.shape[1], rgb.shape[0], float(quality), short_side,
            0 if pre_edit else 2, threads, y.ctypes.data, y.size, z.ctypes.data, z.size))
        return y, z


class CDecoderError(VlmcodecError):
    """An error code and message from the C decoder (a VlmcodecError, as every error vlmcodec
    raises on purpose)."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{CStreamDecoder.CODES.get(code, code)}: {message}")
        self.code, self.message = code, message
