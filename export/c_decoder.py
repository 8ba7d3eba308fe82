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
    u32 CRC-32 of everything before it

Version 2 added the encoder's gains (for ``vlmc_decoder_write_stream``: streams written in C from
the exported encoder graphs' outputs); the library still reads version 1 files, which decode but
cannot write.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from vlmcodec.entropy.exact_hyper import ExactHyperSynthesis
from vlmcodec.errors import ConfigError

MODEL_FILE_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAGIC = b"VLMCDEC\0"
FILE_NAME = "decoder_model.vlmd"
_KINDS = {"leaky": 1, "relu": 2}


def _table(t) -> bytes:
    cdf = np.ascontiguousarray(t.cdf, dtype="<i4")
    return (struct.pack("<II", *cdf.shape) + cdf.tobytes() + np.asarray(t.cdf_length, "<i4").tobytes()
            + np.asarray(t.offsets, "<i4").tobytes())


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
    head = struct.pack("<10I", 0, out, cin, kh, kw, *layer.stride, *layer.padding, int(layer.shuffle))
    return (head + w.astype("<i4").tobytes() + layer.bias_half.reshape(-1).numpy().astype("<f8").tobytes()
            + layer.inv_scale.reshape(-1).numpy().astype("<f8").tobytes() + struct.pack("<dd", layer.l1, layer.bias_max))


def _synthesis(g_s) -> bytes:
    import torch
    from torch import nn

    from vlmcodec.backends.torch_backend import optimize_for_inference
    from vlmcodec.layers import FoldedGDN, SubPixelConv

    parts = []
    layers = list(optimize_for_inference(g_s).to(memory_format=torch.contiguous_format))
    for m in layers:
        if isinstance(m, (SubPixelConv, nn.Conv2d)):
            c = m.conv if isinstance(m, SubPixelConv) else m
            if c.stride != (1, 1) or c.dilation != (1, 1) or c.groups != 1 or isinstance(c.padding, str):
                raise ConfigError("the C decoder runs g_s convolutions of stride 1 (and 5x5 stride-2 transposed ones)")
            w = c.weight.detach().float().contiguous().numpy()
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


def decoder_model_bytes(loaded) -> bytes:
    """The decoder-model file of a loaded model (``vlmcodec.models.checkpoint.load_model``)."""
    model = loaded.model
    gc = model.gaussian_conditional
    exact = ExactHyperSynthesis.from_module(model.h_s)
    medians = model.entropy_bottleneck.medians().detach().float().cpu().numpy()
    bounds = gc.scale_table.detach().double().cpu().numpy()[:-1]
    inv_gain = model.inv_gain.detach().abs().float().cpu().numpy()
    gain = model.gain.detach().abs().float().cpu().numpy()
    parts = [MAGIC, struct.pack("<I", MODEL_FILE_VERSION), loaded.fingerprint[:8], loaded.stream_fingerprint[:8],
             struct.pack("<III", model.N, model.M, inv_gain.shape[0]), medians.astype("<f4").tobytes(),
             _table(loaded.tables["z"]), _table(loaded.tables["y"]), bounds.astype("<f8").tobytes(),
             struct.pack("<d", float(gc.scale_bound)), inv_gain.astype("<f4").tobytes(), gain.astype("<f4").tobytes(),
             struct.pack("<I", len(exact.layers))]
    for layer in exact.layers:
        parts.append(struct.pack("<I", _KINDS[layer]) if isinstance(layer, str) else _conv(layer))
    parts.append(_synthesis(model.g_s))
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def describe_decoder_model(path: str | Path) -> dict:
    """What a decoder-model file holds (its fields, checked: magic, version, CRC-32); ConfigError
    for a file that is not one or is damaged."""
    blob = Path(path).read_bytes()
    if len(blob) < 44 or blob[:8] != MAGIC:
        raise ConfigError(f"{path} is not a vlmcodec decoder-model file (bad magic)")
    if struct.unpack("<I", blob[-4:])[0] != zlib.crc32(blob[:-4]):
        raise ConfigError(f"{path}: CRC-32 mismatch (damaged)")
    (version,) = struct.unpack("<I", blob[8:12])
    if version not in READABLE_VERSIONS:
        raise ConfigError(f"{path}: decoder-model file version {version} (this build reads "
                          f"{', '.join(map(str, READABLE_VERSIONS))})")
    n, m, k = struct.unpack("<III", blob[28:40])
    return {"format_version": version, "model": blob[12:20].hex(), "streams_carry": blob[20:28].hex(),
            "N": n, "M": m, "levels": k, "writes_streams": version >= 2, "bytes": len(blob)}


def export_c_decoder(loaded, out_dir: str | Path) -> Path:
    """Write ``out_dir/decoder_model.vlmd`` for ``loaded``; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / FILE_NAME
    path.write_bytes(decoder_model_bytes(loaded))
    return path


# -- building and calling the C library from Python (tests, benchmarks) ---------------------------

def find_cmake() -> str | None:
    """A cmake executable: on PATH, else the one the ``cmake`` PyPI package installs; None without."""
    import shutil

    found = shutil.which("cmake")
    if found:
        return found
    try:
        import cmake  # the PyPI package ships a binary

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
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
    targets = [] if tests else ["--target", "vlmc_decoder", "vlmc_decode_latents", "vlmc_write_stream",
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
        lib = ctypes.CDLL(str(library))
        lib.vlmc_decoder_last_error.restype = ctypes.c_char_p
        lib.vlmc_decoder_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        lib.vlmc_decoder_open_memory.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)]
        lib.vlmc_decoder_free.argtypes = [ctypes.c_void_p]
        lib.vlmc_decoder_set_max_pixels.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        lib.vlmc_decoder_set_band_pixels.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
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
        self._HyperAnalysis = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float),
                                               ctypes.c_size_t, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t)
        lib.vlmc_decoder_write_stream_within.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, self._HyperAnalysis, ctypes.c_void_p,
            ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_size_t, ctypes.c_double,
            ctypes.c_double, ctypes.c_uint32, ctypes.c_int, ctypes.POINTER(ctypes.POINTER(ctypes.c_uint8)),
            ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_double)]

        class Info(ctypes.Structure):
            _fields_ = [(name, ctypes.c_uint32) for name in self._FIELDS] + [
                ("quality", ctypes.c_float), ("fingerprint", ctypes.c_uint8 * 8)]

        self._Info, self._lib = Info, lib
        handle = ctypes.c_void_p()
        if isinstance(model_file, (bytes, bytearray, memoryview)):  # the file's bytes: vlmc_decoder_open_memory
            blob = bytes(model_file)
            self._check(lib.vlmc_decoder_open_memory(blob, len(blob), ctypes.byref(handle)))
        else:
            self._check(lib.vlmc_decoder_open(str(model_file).encode(), ctypes.byref(handle)))
        self._handle = handle

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise CDecoderError(rc, self._lib.vlmc_decoder_last_error().decode(errors="replace"))

    def close(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.vlmc_decoder_free(self._handle)
            self._handle = None

    __del__ = close

    def set_max_pixels(self, n: int) -> None:
        self._check(self._lib.vlmc_decoder_set_max_pixels(self._handle, n))

    def set_band_pixels(self, n: int) -> None:
        self._check(self._lib.vlmc_decoder_set_band_pixels(self._handle, n))

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
                raise ValueError("coded_size and short_side exclude each other")
            info, w, h = self._stream_info(data), self._ct.c_uint32(), self._ct.c_uint32()
            self._check(self._lib.vlmc_decoder_consumer_size(self._ct.byref(info), short_side, self._ct.byref(w),
                                                             self._ct.byref(h)))
            out = np.empty((h.value, w.value, 3), np.uint8)
            self._check(self._lib.vlmc_decoder_image_at(self._handle, data, len(data), short_side, threads,
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
            self._handle, y_raw.ctypes.data, y_raw.size, z_count, fn, None, width, height, cw, ch, max_bytes,
            float(min_quality), float(max_quality), 1 if pre_edited else 0, threads, ct.byref(buf), ct.byref(size),
            ct.byref(quality)))
        return self._take_stream(buf, size.value), round(quality.value, 2)


class CDecoderError(Exception):
    """An error code and message from the C decoder."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{CStreamDecoder.CODES.get(code, code)}: {message}")
        self.code, self.message = code, message
