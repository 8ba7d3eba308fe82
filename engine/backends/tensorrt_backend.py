"""The ``tensorrt`` backend: g_a, h_a, g_s as TensorRT engines on a CUDA GPU.

Engines come from a directory written by ``vlmcodec export --format tensorrt`` (``engines=DIR``)
or are built on first use into a cache keyed by the network fingerprint, precision, TensorRT
version and GPU (``cache_dir``, default ``$XDG_CACHE_HOME/vlmcodec/tensorrt/…``; a build takes
minutes). The manifest beside the engines is checked first: engines built for other weights,
another TensorRT, CUDA major version or GPU architecture are refused, never run.

Execution: one execution context per engine and one CUDA stream for the backend; inputs and
outputs are torch CUDA tensors whose addresses are bound with ``set_tensor_address``, shapes
set with ``set_input_shape``, and ``execute_async_v3`` enqueues on the stream. The Backend
interface takes and returns CPU tensors; copies are made on the same stream.

An engine takes inputs up to its optimisation profile's size (``max_size``). Larger images still
run: g_a, h_a and g_s in tiles — bands of rows, then of columns — that each fit the profile
(``vlmcodec.banding``: the same function, each tile with its receptive field's context), and the
pre-editor, whose attention sees the whole image, as the torch module on the engines' GPU
(windowed attention above its window, as the other backends run it). A batch larger than the
profile's runs in parts of the profile's batch size (``max_batch``).

The engines always run on a GPU: ``device`` selects which ("cuda", "cuda:1"); the Codec's
default "cpu" means the first GPU. Without TensorRT or a GPU the constructor raises
``BackendUnavailableError("TensorRT not available: …")``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from pathlib import Path

import torch
from torch import Tensor, nn

from ..banding import band_rows_within, row_geometry, run_in_bands
from ..checks import check_count, is_switch
from ..errors import ConfigError, VlmcodecError
from .onnxruntime_backend import _folder_option

RUN_NETWORKS = ("g_a", "h_a", "g_s")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vlmcodec" / "tensorrt"


def _within(profile: dict, shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    """Whether ``shape`` lies within an optimisation profile's min .. max along ``dims``."""
    return all(profile["min"][i] <= shape[i] <= profile["max"][i] for i in dims)


class _EngineRunner:
    """One deserialized engine, its execution context, and its I/O names and profile."""

    def __init__(self, trt, runtime, path: Path, entry: dict):
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ConfigError(f"TensorRT could not deserialize {path} (damaged, or built by another version)")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [entry["inputs"][0]["name"]] or outputs != [entry["outputs"][0]["name"]]:
            raise ConfigError(f"{path}: engine I/O {inputs} → {outputs} does not match its manifest entry")
        self.input, self.output = inputs[0], outputs[0]
        self.profile = entry["profile"]

    def check_shape(self, shape: tuple[int, ...], name: str) -> None:
        lo, hi = self.profile["min"], self.profile["max"]
        if len(shape) != 4 or shape[1] != lo[1] or not _within(self.profile, shape, (0, 2, 3)):
            raise ConfigError(
                f"tensorrt {name}: input shape {list(shape)} is outside the engine's profile "
                f"min {lo} .. max {hi}; rebuild the engines with a larger --max-batch / --max-size")


def _in_bands(fn, geometry, band: int, dim: int):
    """``fn`` run in bands of ``band`` outputs along ``dim`` (−2 rows, −1 columns)."""
    return lambda x: run_in_bands(fn, x, geometry, band, dim=dim)


def _build_under_lock(model, engines: Path, config, device: str, versions: dict) -> None:
    """Build engines into the cache folder ``engines``, one process at a time: processes that
    start together (serving workers) found no engines and each built for minutes into the same
    folder; the later ones now wait, then take the engines the first built."""
    from vlmcodec.export.tensorrt import build_engines, load_engine_manifest

    from .onnxruntime_backend import _ExportLock, _no_cache

    try:
        engines.parent.mkdir(parents=True, exist_ok=True)
        lock = _ExportLock(engines)
    except OSError as e:
        raise _no_cache(engines, e, "tensorrt", "engine cache", "engines= a built folder") from e
    with lock:
        try:
            load_engine_manifest(engines, model, versions)  # built meanwhile by another process
        except VlmcodecError:
            build_engines(model, engines, config, device=device)


class TensorRTBackend:
    """``Backend`` on TensorRT engines. Options: ``device``, ``engines`` (a built directory),
    ``cache_dir``, and for builds into the cache ``fp16``, ``max_batch``, ``max_size`` (H, W)."""

    name = "tensorrt"
    item_by_item = False  # engines take whole batches (optimisation profiles)

    def __init__(self, model, device: str = "cuda", engines: str | Path | None = None,
                 cache_dir: str | Path | None = None, fp16: bool = False, max_batch: int = 8,
                 max_size: tuple[int, int] | str | int = (1024, 1024), threads: int | None = None):
        from vlmcodec.export.manifest import network_fingerprint
        from vlmcodec.export.tensorrt import (BuildConfig, current_versions, default_opt_size,
                                              import_tensorrt, load_engine_manifest, parse_size, require_gpu)

        # --backend-option max_size=512x512 (or =1024, a square) comes as text or a number
        if isinstance(max_size, str) or (isinstance(max_size, int) and not isinstance(max_size, bool)):
            max_size = parse_size(max_size if isinstance(max_size, str) else f"{max_size}x{max_size}")
        elif not (isinstance(max_size, (tuple, list)) and len(max_size) == 2):
            raise ConfigError(f"tensorrt backend: max_size must be HxW (e.g. 1024x1024), got {max_size!r}")
        else:
            max_size = parse_size(f"{max_size[0]}x{max_size[1]}")
        max_batch = check_count("tensorrt backend: max_batch", max_batch)
        if not is_switch(fp16):  # ("no" was true: any text is)
            raise ConfigError(f"tensorrt backend: fp16 must be true or false, got {fp16!r}")
        engines, cache_dir = (_folder_option(n, v, "tensorrt") for n, v in (("engines", engines),
                                                                            ("cache_dir", cache_dir)))
        trt = import_tensorrt()
        self.device = require_gpu(device)
        model = model.cpu().eval()
        versions = current_versions(trt, self.device)
        if engines is None:
            config = BuildConfig(fp16=fp16, max_batch=max_batch, max_size=max_size,
                                 opt_size=default_opt_size(max_size))
            key = (f"{network_fingerprint(model)[:16]}-{config.precision}-b{max_batch}-{max_size[0]}x{max_size[1]}"
                   f"-trt{versions['tensorrt']}-sm{versions['compute_capability'].replace('.', '')}")
            engines = Path(cache_dir or default_cache_dir()) / key
            try:
                load_engine_manifest(engines, model, versions)
            except VlmcodecError:
                _build_under_lock(model, engines, config, str(self.device), versions)
        self.engine_dir = Path(engines)
        self.manifest = load_engine_manifest(self.engine_dir, model, versions)
        needed = RUN_NETWORKS + (("pre_editor",) if getattr(model, "pre_editor", None) is not None else ())
        missing = [n for n in needed if n not in self.manifest["engines"]]
        if missing:
            raise ConfigError(f"{self.engine_dir}: engines {missing} are missing; rebuild with every network")
        self._trt = trt
        # per network, its geometry along the rows and along the columns (tiles beyond the profile)
        self._tiles = {name: (row_geometry(getattr(model, name), 0), row_geometry(getattr(model, name), 1))
                       for name in ("g_a", "h_a", "g_s") if hasattr(model, name)}
        self._pre_editor = getattr(model, "pre_editor", None)  # on the GPU for images beyond the profile
        self._pre_editor_device: nn.Module | None = None
        from vlmcodec.export.tensorrt import _Logger

        self._logger = _Logger.make(trt)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self._nets = {n: _EngineRunner(trt, self._runtime, self.engine_dir / self.manifest["engines"][n]["file"],
                                           self.manifest["engines"][n]) for n in needed}
            self.stream = torch.cuda.Stream(self.device)
        # one execution context per network and one stream: calls from several threads (an
        # Engine with network_workers > 1) take turns, or they would overwrite each other's
        # input shape and tensor addresses between set_input_shape and execute_async_v3
        self._lock = threading.Lock()

    def _run(self, name: str, x: Tensor) -> Tensor:
        r = self._nets[name]
        most = r.profile["max"][0]
        if x.shape[0] > most >= 1:  # a batch beyond the profile's: in parts the engine takes
            return torch.cat([self._run(name, part) for part in x.split(most)])
        r.check_shape(tuple(x.shape), name)
        with self._lock:
            return self._run_locked(r, name, x)

    def _run_locked(self, r, name: str, x: Tensor) -> Tensor:
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            host = x.detach().to(torch.float32).contiguous()
            if not host.is_cuda:
                host = host.pin_memory()
            x_dev = host.to(self.device, non_blocking=True)
            if not r.context.set_input_shape(r.input, tuple(x_dev.shape)):
                raise ConfigError(f"tensorrt {name}: the engine refused input shape {list(x_dev.shape)}")
            out_shape = tuple(r.context.get_tensor_shape(r.output))
            out = torch.empty(out_shape, dtype=torch.float32, device=self.device)
            r.context.set_tensor_address(r.input, x_dev.data_ptr())
            r.context.set_tensor_address(r.output, out.data_ptr())
            if not r.context.execute_async_v3(self.stream.cuda_stream):
                raise VlmcodecError(f"tensorrt {name}: execute_async_v3 failed (see the TensorRT log)")
            result = torch.empty(out_shape, dtype=torch.float32, pin_memory=True)
            result.copy_(out, non_blocking=True)
        self.stream.synchronize()  # x_dev and out stay referenced until here
        return result

    @torch.inference_mode()
    def pre_edit(self, x: Tensor) -> Tensor:
        """The pre-editor P (identity for models without one), clamped to [0, 1]."""
        if "pre_editor" not in self._nets:
            return x
        if self._pre_editor is not None and not self._fits("pre_editor", tuple(x.shape)):
            return self._torch_pre_editor(x)
        return self._run("pre_editor", x).clamp_(0, 1)

    def _fits(self, name: str, shape: tuple[int, ...]) -> bool:
        return _within(self._nets[name].profile, shape, (2, 3))

    def _run_tiled(self, name: str, x: Tensor) -> Tensor:
        """``_run``, or for an input larger than the engine's profile, in tiles that fit it: bands
        of rows, each in bands of columns, each with its receptive field's context."""
        if self._fits(name, tuple(x.shape)) or name not in self._tiles:
            return self._run(name, x)
        lo, hi = self._nets[name].profile["min"], self._nets[name].profile["max"]
        fn = lambda part: self._run(name, part)  # noqa: E731
        for axis in (1, 0):  # bands of columns inside bands of rows
            geometry, i = self._tiles[name][axis], 2 + axis  # the profile's H, W at 2, 3
            if geometry is None or _within(self._nets[name].profile, tuple(x.shape), (i,)):
                continue
            band = band_rows_within(geometry, x.shape[i], lo[i], hi[i])
            if band is None:  # cannot be cut to fit: _run reports the profile
                return self._run(name, x)
            fn = _in_bands(fn, geometry, band, dim=i - 4)
        return fn(x)

    def _torch_pre_editor(self, x: Tensor) -> Tensor:
        """The pre-editor as the torch module on the engines' device, for images its engine's
        profile does not take."""
        assert self._pre_editor is not None  # (pre_edit calls this for a model with one only)
        with self._lock:
            if self._pre_editor_device is None:
                self._pre_editor_device = copy.deepcopy(self._pre_editor).to(self.device).eval()
        on_gpu = torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()
        with on_gpu:
            return self._pre_editor_device(x.to(self.device, torch.float32)).clamp_(0, 1).cpu()

    @torch.inference_mode()
    def analysis(self, x: Tensor) -> Tensor:
        return self._run_tiled("g_a", x)

    @torch.inference_mode()
    def hyper_analysis(self, y: Tensor) -> Tensor:
        return self._run_tiled("h_a", y)

    @torch.inference_mode()
    def synthesis(self, y_hat: Tensor) -> Tensor:
        return self._run_tiled("g_s", y_hat)
