"""The ``onnxruntime`` backend: g_a, h_a, g_s as exported ONNX graphs run by ONNX Runtime.

Graphs come from a directory written by ``vlmcodec export --format onnx`` (``graphs=DIR``,
checked against the model's network fingerprint and the files' checksums), or are exported
on first use into a cache directory keyed by that fingerprint (``cache_dir``, default
``$XDG_CACHE_HOME/vlmcodec/onnx/<fingerprint[:16]>``). Sessions are created once per backend.

CPU by default; ``device="cuda"`` (or ``"cuda:1"``) uses the CUDA execution provider and fails
with ``BackendUnavailableError`` where the installed ONNX Runtime has none or cannot create it
(CUDA libraries that do not load) — never a silent fallback. Above ``band_pixels`` pixels per
image the graphs of g_a and g_s run over row bands (``vlmcodec.banding``), as in the torch
backend. Denormals are flushed to zero (``session.set_denormal_as_zero``): GDN produces tiny
values whose denormal arithmetic is slow on x86 and changes nothing visible.

Batch invariance: on the CPU provider the items of a batch go through each graph one at a
time (``item_by_item``), as in the torch backend, so ``Codec.encode_batch`` and the runtime
Engine give byte-identical results to single calls by construction: a whole-batch run may pick
other kernels (other float rounding). It costs no speed on a CPU (warm, item by item / whole
0.85-1.07 per network call, 0.99 under the runtime Engine; README, "Backends"), keeps the
memory of a batch near one image's, and a new batch size is no new shape for ONNX Runtime (the
first run at a new batch shape grows its arena: 19-27 s instead of 2.5 s for 8 Kodak images on
this project's VM). On CUDA whole batches run (the device wants them).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import __version__
from ..banding import NETWORK_BAND_PIXELS, banded, row_geometry
from ..checks import check_threads, is_switch
from ..errors import BackendUnavailableError, ConfigError, VlmcodecError

RUN_NETWORKS = ("g_a", "h_a", "g_s")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vlmcodec" / "onnx"


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailableError(
            "onnxruntime not available: install it with pip install 'vlmcodec[onnx]'") from e
    return ort


def cached_graphs(model, cache_dir: str | Path | None = None) -> Path:
    """Directory holding this model's exported graphs, exporting them first when absent or stale."""
    from vlmcodec.export.manifest import network_fingerprint
    from vlmcodec.export.onnx import DEFAULT_OPSET, load_onnx_manifest, networks_of

    directory = Path(cache_dir or default_cache_dir()) / network_fingerprint(model)[:16]

    def usable() -> bool:  # exported for this model, intact, by this vlmcodec, with today's export settings
        try:
            m = load_onnx_manifest(directory, model)
        except VlmcodecError:
            return False
        return m.get("opset") == DEFAULT_OPSET and m.get("rewrites") == {"fold_gdn": True, "subpixel": False} \
            and set(networks_of(model)) <= set(m.get("graphs", {})) \
            and (m.get("versions") or {}).get("vlmcodec") == __version__

    if usable():
        return directory
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        lock = _ExportLock(directory)
    except OSError as e:
        raise _no_cache(directory, e) from e
    with lock:
        # one process of those that found no usable cache exports it; the others then find it here
        # (two replacing a stale one at once could each move the other's fresh install aside)
        if usable():
            return directory
        return _export_into(model, directory, usable)


def _no_cache(directory: Path, e: OSError, backend: str = "onnxruntime",
              made: str = "graph cache", instead: str = "graphs= an exported folder") -> ConfigError:
    """A backend's cache folder that cannot be made or locked, and what to give instead."""
    return ConfigError(f"{backend} backend: cannot make its {made} in {directory.parent} ({e}); give "
                       f"backend_options cache_dir=DIR (or set XDG_CACHE_HOME), or {instead}")


def _export_into(model, directory: Path, usable) -> Path:
    """``cached_graphs``' export and install, under its lock."""
    from vlmcodec.export.onnx import export_onnx

    try:
        _sweep_abandoned(directory)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        # the umask's permissions, as a plain mkdir's (mkdtemp's 0700 kept a serving account out of a shared cache)
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)
    except OSError as e:
        raise _no_cache(directory, e) from e
    try:
        export_onnx(model, tmp)
        # Several processes may get here at once (workers starting after an upgrade left a stale
        # export). Each installs its export by renames alone: a stale folder is moved aside, never
        # deleted in place (another process may be reading it), and a usable one found installed
        # meanwhile is taken as it is
        for _ in range(5):
            try:
                os.replace(tmp, directory)  # atomic when the target is absent or an empty folder
                return directory
            except OSError:
                if usable():
                    return directory
            aside = Path(tempfile.mkdtemp(prefix=f".{directory.name}.stale.", dir=directory.parent))
            try:
                os.replace(directory, aside)
            except OSError:
                pass  # (gone meanwhile, or replaced by another process's: the next try tells)
            shutil.rmtree(aside, ignore_errors=True)
        if usable():
            return directory
        raise ConfigError(f"onnxruntime backend: could not install its graph cache at {directory} (other "
                          "processes kept replacing it); give backend_options graphs= an exported folder")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _ExportLock:
    """An exclusive lock on ``.NAME.lock`` beside the cache folder ``directory`` (fcntl's, held
    while the block runs; where there is no fcntl, no lock)."""

    def __init__(self, directory: Path):
        self.path = directory.parent / f".{directory.name}.lock"
        self.file = open(self.path, "a")  # (made here: an unwritable cache fails as its mkdir would)

    def __enter__(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return
        fcntl.flock(self.file.fileno(), fcntl.LOCK_EX)

    def __exit__(self, *exc) -> None:
        self.file.close()  # (closing releases the lock)


# an export's temporary folder older than this was abandoned (a killed process's; an export takes seconds)
ABANDONED_EXPORT_S = 3600.0


def _sweep_abandoned(directory: Path) -> None:
    """Remove the temporary folders of exports for ``directory`` that a killed process left (SIGKILL,
    out of memory: its clean-up never ran, and no later run removed them; ~8.5 MB each)."""
    now = time.time()
    for old in directory.parent.glob(f".{directory.name}.*"):
        try:
            if old.is_dir() and not old.is_symlink() and now - old.stat().st_mtime > ABANDONED_EXPORT_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass  # (removed meanwhile by another process's sweep)


def _folder_option(name: str, value, backend: str = "onnxruntime") -> str | Path | None:
    """A folder given as a backend option: a path, or a number the command line parsed from a
    folder's name (--backend-option graphs=007: the folder as typed, its ``text``)."""
    text = getattr(value, "text", None)
    if isinstance(text, str):
        value = text
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or isinstance(value, Path) or (isinstance(value, str) and value.strip()):
        return value
    raise ConfigError(f"{backend} backend: {name} must be a folder, got {value!r}")


def _flushes_denormals() -> bool:
    """True when this thread flushes subnormal floats to zero (FTZ/DAZ)."""
    return float(np.float32(1e-39) * np.float32(1.0)) == 0.0


class OnnxRuntimeBackend:
    """``Backend`` on ONNX Runtime sessions.

    Options: ``device`` ("cpu" | "cuda[:i]"), ``threads`` (intra-op threads per session, None =
    ONNX Runtime's default of one per physical core), ``inter_op_threads`` (1: the graphs are
    chains; above 1, ONNX Runtime's parallel mode, which runs independent nodes at once),
    ``allow_spinning`` (busy-wait of idle worker threads; off is kinder to a shared machine), ``graphs`` (an exported directory) or ``cache_dir``, ``optimization`` ("all" |
    "extended" | "basic" | "disable"), ``memory_pattern`` (ONNX Runtime's per-shape memory
    planning; off by default, as it slows every change of batch or image size), ``item_by_item``
    (run a batch's items one at a time; None: on the CPU, not on CUDA).
    """

    name = "onnxruntime"
    # above this many pixels per image, g_a and g_s run in row bands (None: never)
    band_pixels: int | None = NETWORK_BAND_PIXELS

    def __init__(self, model, device: str = "cpu", threads: int | None = None, inter_op_threads: int = 1,
                 allow_spinning: bool = True, graphs: str | Path | None = None, cache_dir: str | Path | None = None,
                 optimization: str = "all", memory_pattern: bool = False, item_by_item: bool | None = None):
        from vlmcodec.export.onnx import SPECS, load_onnx_manifest

        ort = _import_ort()
        self.device = str(device)
        if self.device == "cpu":
            providers: list = ["CPUExecutionProvider"]
        elif self.device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailableError(
                    f"onnxruntime backend on {self.device} requested but this onnxruntime has no CUDA execution "
                    f"provider (available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu")
            dev_id = int(self.device.split(":")[1]) if ":" in self.device else 0
            providers = [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
        else:
            raise ConfigError(f"onnxruntime backend: unknown device {device!r} (use 'cpu' or 'cuda[:i]')")
        levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                  "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                  "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
        if optimization not in levels:
            raise ConfigError(f"onnxruntime backend: optimization must be one of {', '.join(levels)}")
        model = getattr(model, "model", model)  # (a LoadedModel: its network)
        model = model.cpu().eval() if hasattr(model, "cpu") else model
        for name, value in (("allow_spinning", allow_spinning), ("memory_pattern", memory_pattern),
                            ("item_by_item", item_by_item)):
            if not (is_switch(value) or (name == "item_by_item" and value is None)):
                # ("false" or "off" was true: any string is)
                raise ConfigError(f"onnxruntime backend: {name} must be true or false, got {value!r}")
        inter_op_threads = check_threads("onnxruntime backend: inter_op_threads", inter_op_threads)
        graphs, cache_dir = (_folder_option(n, v) for n, v in (("graphs", graphs), ("cache_dir", cache_dir)))
        if graphs is not None:
            self.graph_dir = Path(graphs)
        else:
            self.graph_dir = cached_graphs(model, cache_dir)
        self.manifest = load_onnx_manifest(self.graph_dir, model)
        self._pre_editor = getattr(model, "pre_editor", None)  # for images the graph cannot take (pre_edit)
        self._rows = {name: row_geometry(getattr(model, name)) for name in ("g_a", "g_s") if hasattr(model, name)}

        so = ort.SessionOptions()
        so.graph_optimization_level = levels[optimization]
        # ONNX Runtime runs independent nodes at once only in parallel mode, the only one that
        # reads inter_op_num_threads (sequential with more inter-op threads was a no-op option)
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if inter_op_threads > 1 else ort.ExecutionMode.ORT_SEQUENTIAL
        # ORT's memory pattern plans one allocation per input shape and plans again whenever the
        # shape changes: with it, the pre-editor on 8 Kodak images after single images took 3.2-4.4 s
        # instead of 0.7 s (the runtime's batches change size all the time; README, Backends)
        so.enable_mem_pattern = bool(memory_pattern)
        so.intra_op_num_threads = int(threads or 0)
        so.inter_op_num_threads = int(inter_op_threads)
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        self.threads = threads
        self.sessions = {}
        needed = RUN_NETWORKS + (("pre_editor",) if getattr(model, "pre_editor", None) is not None else ())
        missing = [n for n in needed if n not in self.manifest["graphs"]]
        if missing:
            raise ConfigError(f"{self.graph_dir}: graphs {missing} are missing; re-export with every network")
        caller_ftz = _flushes_denormals()
        try:
            for name in needed:
                entry = self.manifest["graphs"][name]
                path = self.graph_dir / entry["file"]
                try:
                    sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
                except Exception as e:  # noqa: BLE001 — onnxruntime's own error types
                    raise ConfigError(f"{path}: onnxruntime cannot load it ({str(e).strip()[:200]}); re-export") from e
                # the graph is that network's, and the manifest names its input and output as runs use
                # them: either wrong failed only at the first encode (a hand-edited manifest, or an
                # entry naming another network's file)
                want = (list(SPECS[name].inputs), list(SPECS[name].outputs))
                have = ([i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
                listed = ([i["name"] for i in entry["inputs"]], [o["name"] for o in entry["outputs"]])
                if have != want or listed != want:
                    raise ConfigError(f"{self.graph_dir}: graph {name} ({entry['file']}) takes and gives {have}, its "
                                      f"manifest says {listed}, {name} is {want}; re-export")
                self.sessions[name] = sess
        finally:  # creating a session sets FTZ/DAZ on this thread too, even one that is refused
            if not caller_ftz:
                torch.set_flush_denormal(False)
        self.providers = self.sessions["g_a"].get_providers()
        without = [n for n, sess in self.sessions.items() if "CUDAExecutionProvider" not in sess.get_providers()]
        if self.device != "cpu" and without:
            # ONNX Runtime falls back to the CPU when its CUDA provider cannot be created (CUDA or
            # cuDNN libraries that do not load, a driver too old): listed is not usable
            raise BackendUnavailableError(
                f"onnxruntime backend on {self.device}: ONNX Runtime could not create its CUDA execution provider "
                f"(the {without[0]} session got {', '.join(self.sessions[without[0]].get_providers())}; ONNX "
                "Runtime's warning on stderr says why, e.g. CUDA or cuDNN libraries that do not load)")
        self.item_by_item = self.device == "cpu" if item_by_item is None else bool(item_by_item)

    def _items(self, fn, x: Tensor) -> Tensor:
        """``fn`` on the batch ``x``, one item at a time when ``item_by_item``."""
        if self.item_by_item and x.shape[0] > 1:
            return torch.cat([fn(x[i : i + 1]) for i in range(x.shape[0])])
        return fn(x)

    def _run(self, name: str, x: Tensor) -> Tensor:
        return self._items(lambda part: self._run_graph(name, part), x)

    def _run_graph(self, name: str, x: Tensor) -> Tensor:
        sess = self.sessions[name]
        g = self.manifest["graphs"][name]
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        caller_ftz = _flushes_denormals()
        try:
            out = sess.run([g["outputs"][0]["name"]], {g["inputs"][0]["name"]: arr})[0]
        finally:
            if not caller_ftz:
                # ORT's set_denormal_as_zero also sets FTZ/DAZ on the calling thread (it runs ops
                # there); give the caller its floating-point mode back, on failure too.
                torch.set_flush_denormal(False)
        return torch.from_numpy(out)

    def pre_edit(self, x: Tensor) -> Tensor:
        """The pre-editor P (identity for models without one), clamped to [0, 1].

        The exported graph attends globally over all 16×16 patches, so its memory grows with the
        square of the pixel count (~27 GB of attention scores at 4032×3008). Above the pre-editor's
        attention window (1024 px per side) the torch module runs instead, with windowed
        attention: the same function the torch backend computes."""
        if "pre_editor" not in self.sessions:
            return x
        pre = self._pre_editor
        if pre is not None and pre.windowed_at(*x.shape[-2:]):
            with torch.inference_mode():
                return self._items(pre, x.detach().cpu().float()).clamp_(0, 1)
        return self._run("pre_editor", x).clamp_(0, 1)

    def analysis(self, x: Tensor) -> Tensor:
        return self._banded("g_a", x)

    def hyper_analysis(self, y: Tensor) -> Tensor:
        return self._run("h_a", y)

    def synthesis(self, y_hat: Tensor) -> Tensor:
        return self._banded("g_s", y_hat)

    def _banded(self, name: str, x: Tensor) -> Tensor:
        geometry = self._rows.get(name)
        if geometry is None:
            return self._run(name, x)
        return banded(lambda part: self._run(name, part), x, geometry, self.band_pixels)
