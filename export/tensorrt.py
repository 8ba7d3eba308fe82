"""TensorRT engines built from the exported ONNX graphs (TensorRT 10 Python API).

One engine per network (``g_a``, ``h_a``, ``g_s``; ``h_s`` on request), FP32 or FP16, each with
one optimisation profile spanning [min, max] batch and image size (optimised for ``opt``), a
shared timing cache (``timing.cache``, reused across builds and networks), and
``manifest.json`` beside the engines: shapes and profiles, precision, the network fingerprint,
and the TensorRT, CUDA and GPU the engines were built for. A serialized engine runs only on
the TensorRT version and GPU architecture that built it, so the runtime
(``vlmcodec.backends.tensorrt_backend``) refuses an engine whose fingerprint, TensorRT
version, CUDA major version or compute capability differ from the current ones.

FP16 builds keep GDN/IGDN layers in FP32 (``keep_gdn_fp32``): the sum of squares in GDN
overflows FP16's range (65504) for large activations, which the precision constraints avoid.
FP32 builds disable TF32 unless ``tf32=True`` (TensorRT enables it by default, which would put
x̂ well outside the 1e-4 parity bound).

    >>> from vlmcodec.export.tensorrt import BuildConfig, build_engines
    >>> build_engines(loaded_model, "engines/", BuildConfig(fp16=True, max_batch=8, max_size=(1024, 1024)))

TensorRT needs an NVIDIA GPU and the ``tensorrt`` package (``pip install tensorrt``); where
either is missing every entry point raises ``BackendUnavailableError("TensorRT not available:
…")``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vlmcodec.errors import BackendUnavailableError, ConfigError, ModelMismatchError
from vlmcodec.files import write_whole

from .manifest import MANIFEST_NAME, check_fingerprint, network_fingerprint, read_manifest, sha256_file, \
    torch_versions, verify_listed_files, write_manifest
from .onnx import SPECS, export_onnx, load_onnx_manifest

log = logging.getLogger("vlmcodec.tensorrt")

FORMAT = "vlmcodec-tensorrt-1"
ENGINE_NETWORKS = ("g_a", "h_a", "g_s")
TIMING_CACHE_NAME = "timing.cache"
PAD = 64  # image sizes are multiples of this (the codec pads)
OPS_FILE = Path(__file__).with_name("tensorrt_onnx_ops.txt")
OPS_MAX_OPSET = 24  # the newest opset the operator list covers (TensorRT 10.15)


# -- static checks (no TensorRT needed) --------------------------------------------------------
def supported_onnx_ops() -> dict[str, str]:
    """Operators TensorRT's ONNX parser supports → their stated restriction ("" for none),
    from ``tensorrt_onnx_ops.txt`` (source named in that file)."""
    ops = {}
    for line in OPS_FILE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, restriction = line.partition("|")
        ops[op.strip()] = restriction.strip()
    return ops


def tensorrt_parser_problems(onnx_path: str | Path) -> list[str]:
    """Reasons TensorRT's ONNX parser would reject a graph, found statically: operators not in
    its support list, an opset newer than the list's, custom domains — plus one rule of our own:
    Conv/ConvTranspose weights must be initializers (TensorRT 10 accepts computed weights, but
    then cannot pre-format them or fuse; TensorRT 8.4 refused them). An empty list means none."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    supported = supported_onnx_ops()
    problems = []
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx") and imp.version > OPS_MAX_OPSET:
            problems.append(f"opset {imp.version} is newer than the operator list's ({OPS_MAX_OPSET})")
        elif imp.domain not in ("", "ai.onnx"):
            problems.append(f"custom operator domain {imp.domain!r}")
    constants = {i.name for i in proto.graph.initializer}
    constants |= {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    for node in proto.graph.node:
        if node.op_type not in supported:
            problems.append(f"{node.name or node.op_type}: operator {node.op_type} is not supported")
        if node.op_type in ("Conv", "ConvTranspose") and node.input[1] not in constants:
            problems.append(f"{node.name}: {node.op_type} weights are not an initializer")
    return problems


# -- availability ------------------------------------------------------------------------------
def import_tensorrt():
    """The ``tensorrt`` module (TensorRT 10), or BackendUnavailableError saying why not."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailableError(
            "TensorRT not available: the 'tensorrt' Python package is not installed "
            "(pip install tensorrt; it needs an NVIDIA GPU and driver)") from e
    except OSError as e:  # package present, CUDA/TensorRT shared libraries not loadable
        raise BackendUnavailableError(f"TensorRT not available: its libraries failed to load ({e})") from e
    major = int(str(trt.__version__).split(".")[0])
    if major != 10:  # 11 removed BuilderFlag.FP16, PREFER_PRECISION_CONSTRAINTS and per-layer precision
        raise BackendUnavailableError(
            f"TensorRT not available: version {trt.__version__} found, vlmcodec supports TensorRT 10 only")
    return trt


def require_gpu(device: str = "cuda"):
    """The torch CUDA device to use, or BackendUnavailableError when there is none."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "TensorRT not available: no CUDA GPU is visible (torch.cuda.is_available() is False"
            + ("; this torch is a CPU-only build" if torch.version.cuda is None else "") + ")")
    dev = torch.device("cuda:0" if device in ("cpu", "cuda", "auto") else device)
    if dev.type != "cuda" or (dev.index or 0) >= torch.cuda.device_count():
        raise BackendUnavailableError(
            f"TensorRT not available on {device!r}: {torch.cuda.device_count()} CUDA device(s)")
    return dev


def current_versions(trt, device) -> dict:
    """What a serialized engine depends on: TensorRT, CUDA, GPU (+ torch/vlmcodec for the record)."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return {
        **torch_versions(),
        "tensorrt": str(trt.__version__),
        "cuda": str(torch.version.cuda),
        "gpu": torch.cuda.get_device_name(device),
        "compute_capability": f"{major}.{minor}",
    }


# -- configuration ----------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    """'HxW' → (H, W), both positive multiples of 64."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"size {text!r} is not HxW (e.g. 1024x1024)") from None
    if h <= 0 or w <= 0 or h % PAD or w % PAD:
        raise ConfigError(f"size {text!r}: height and width must be positive multiples of {PAD}")
    return h, w


DEFAULT_OPT_SIZE = (512, 768)  # BuildConfig's opt_size (Kodak's size)


def default_opt_size(max_size: tuple[int, int], min_size: tuple[int, int] = (64, 64)) -> tuple[int, int]:
    """The size to optimise for when none is given: DEFAULT_OPT_SIZE, within min_size .. max_size
    per axis (a --max-size below 512x768 alone was refused)."""
    h, w = (max(min_size[i], min(DEFAULT_OPT_SIZE[i], max_size[i])) for i in range(2))
    return h, w


@dataclass(frozen=True)
class BuildConfig:
    """Engine build settings. Sizes are padded image sizes (H, W), multiples of 64."""

    fp16: bool = False
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    min_size: tuple[int, int] = (64, 64)
    opt_size: tuple[int, int] = DEFAULT_OPT_SIZE
    max_size: tuple[int, int] = (1024, 1024)
    workspace_mib: int = 2048
    keep_gdn_fp32: bool = True
    tf32: bool = False
    builder_optimization_level: int = 3
    networks: tuple[str, ...] = field(default=ENGINE_NETWORKS)

    def __post_init__(self):
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(f"batch sizes must satisfy 1 <= min <= opt <= max, got "
                              f"{self.min_batch}, {self.opt_batch}, {self.max_batch}")
        for i in range(2):
            if not self.min_size[i] <= self.opt_size[i] <= self.max_size[i]:
                raise ConfigError(f"sizes must satisfy min <= opt <= max per axis, got "
                                  f"{self.min_size}, {self.opt_size}, {self.max_size}")
        for s in (self.min_size, self.opt_size, self.max_size):
            if s[0] <= 0 or s[1] <= 0 or s[0] % PAD or s[1] % PAD:
                raise ConfigError(f"size {s}: sides must be positive multiples of {PAD}")
        unknown = set(self.networks) - set(SPECS)
        if unknown:
            raise ConfigError(f"unknown networks {sorted(unknown)}")
        if not 0 <= self.builder_optimization_level <= 5:
            raise ConfigError("builder_optimization_level must be in 0..5")

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    def profile(self, name: str, channels: int) -> dict[str, list[int]]:
        """min/opt/max input shapes of graph ``name`` whose input has ``channels`` channels."""
        s = SPECS[name].in_scale

        def shape(b, hw):
            return [b, channels, hw[0] // s, hw[1] // s]

        return {"min": shape(self.min_batch, self.min_size), "opt": shape(self.opt_batch, self.opt_size),
                "max": shape(self.max_batch, self.max_size)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["networks"] = list(self.networks)
        for k in ("min_size", "opt_size", "max_size"):
            d[k] = list(d[k])
        return d


# -- building ---------------------------------------------------------------------------------
class _Logger:
    """A trt.ILogger forwarding warnings and errors to Python's logging."""

    @staticmethod
    def make(trt):
        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                    log.error(msg)
                elif severity == trt.ILogger.Severity.WARNING:
                    log.warning(msg)
                else:
                    log.debug(msg)

        return Logger()


def _gdn_prefixes(graph_entry: dict) -> tuple[str, ...]:
    return tuple(sorted({n.rsplit("/", 1)[0] + "/" for n in graph_entry.get("gdn_nodes", [])}))


def build_engine(trt, logger, onnx_path: Path, graph_entry: dict, profile: dict, config: BuildConfig,
                 timing_cache: bytes) -> tuple[bytes, bytes]:
    """Build one serialized engine from an ONNX file; returns (engine bytes, timing cache bytes)."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {errors}")

    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(config.workspace_mib) << 20)
    cfg.builder_optimization_level = int(config.builder_optimization_level)
    if not config.tf32:  # TensorRT allows TF32 in "FP32" engines by default: 10-bit mantissa products
        cfg.clear_flag(trt.BuilderFlag.TF32)
    if config.fp16:
        cfg.set_flag(trt.BuilderFlag.FP16)
        prefixes = _gdn_prefixes(graph_entry)
        if config.keep_gdn_fp32 and prefixes:
            cfg.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                if layer.name.startswith(prefixes) and layer.type not in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE):
                    layer.precision = trt.float32
                    for j in range(layer.num_outputs):
                        layer.set_output_type(j, trt.float32)

    opt_profile = builder.create_optimization_profile()
    input_name = graph_entry["inputs"][0]["name"]
    opt_profile.set_shape(input_name, tuple(profile["min"]), tuple(profile["opt"]), tuple(profile["max"]))
    cfg.add_optimization_profile(opt_profile)

    # set_timing_cache returns False for a cache of another GPU or TensorRT version (a re-export
    # into the same folder on another machine): build with a fresh one rather than without any
    if cfg.set_timing_cache(cfg.create_timing_cache(timing_cache), ignore_mismatch=False) is False:
        log.warning("TensorRT refused the timing cache (written on another GPU or by another TensorRT?): "
                    "building %s with a fresh one, which replaces it", onnx_path.name)
        cfg.set_timing_cache(cfg.create_timing_cache(b""), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise ConfigError(f"TensorRT failed to build an engine from {onnx_path.name} (see the log above)")
    used = cfg.get_timing_cache()  # (None if no cache was set after all: the one read stays)
    return bytes(serialized), bytes(used.serialize()) if used is not None else bytes(timing_cache)


def build_engines(model, out_dir: str | Path, config: BuildConfig | None = None, *, onnx_dir: str | Path | None = None,
                  timing_cache: str | Path | None = None, device: str = "cuda") -> dict:
    """Build TensorRT engines for ``model`` (``MeanScaleHyperprior`` or ``LoadedModel``) into
    ``out_dir``: ``<net>.<precision>.engine`` + ``manifest.json``; returns the manifest.

    The ONNX graphs are taken from ``onnx_dir`` (checked against the model) or exported into
    ``out_dir/onnx``. The timing cache is read from and written back to ``timing_cache``
    (default ``out_dir/timing.cache``).
    """
    trt = import_tensorrt()
    dev = require_gpu(device)
    config = config or BuildConfig()
    model_fp = None
    if hasattr(model, "model") and hasattr(model, "fingerprint"):  # LoadedModel
        model_fp, model = model.fingerprint.hex(), model.model
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = Path(timing_cache) if timing_cache else out_dir / TIMING_CACHE_NAME
    check_timing_cache(cache_path)  # (before minutes of building: it is written at the end)
    if onnx_dir is None:
        onnx_dir = out_dir / "onnx"
        onnx_manifest = export_onnx(model, onnx_dir, model_fingerprint=model_fp)
    else:
        onnx_dir = Path(onnx_dir)
        onnx_manifest = load_onnx_manifest(onnx_dir, model)

    import torch

    logger = _Logger.make(trt)
    cache_bytes = cache_path.read_bytes() if cache_path.is_file() else b""
    channels = {"3": 3, "M": model.M, "N": model.N}
    networks = tuple(config.networks)
    if getattr(model, "pre_editor", None) is not None and "pre_editor" not in networks:
        networks = ("pre_editor",) + networks
    engines = {}
    # every engine is built into a temporary sibling first: a build that fails midway leaves the
    # folder's earlier engines and manifest as they were (it left new engines beside the old manifest)
    tmp = Path(tempfile.mkdtemp(prefix=".trt-export.", dir=out_dir))
    try:
        with torch.cuda.device(dev):
            for name in networks:
                g = onnx_manifest["graphs"].get(name)
                if g is None:
                    raise ConfigError(f"{onnx_dir}: no {name} graph to build from")
                profile = config.profile(name, channels[SPECS[name].in_channels])
                blob, cache_bytes = build_engine(trt, logger, onnx_dir / g["file"], g, profile, config, cache_bytes)
                staged = tmp / f"{name}.{config.precision}.engine"
                _write_atomic(staged, blob)
                engines[name] = {"file": staged.name, "sha256": sha256_file(staged), "onnx_sha256": g["sha256"],
                                 "inputs": g["inputs"], "outputs": g["outputs"], "profile": profile,
                                 "in_scale": g["in_scale"], "out_scale": g["out_scale"]}
            versions = current_versions(trt, dev)
        _write_atomic(cache_path, cache_bytes)
        # the old manifest goes first: an interrupted swap leaves no manifest (refused as such),
        # never one whose checksums name engines half replaced
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        for entry in engines.values():
            (tmp / entry["file"]).replace(out_dir / entry["file"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = {
        "format": FORMAT,
        "network_fingerprint": network_fingerprint(model),
        "model_fingerprint": model_fp,
        "config": model.config.to_dict(),
        "precision": config.precision,
        "build": config.to_dict(),
        "engines": engines,
        "versions": versions,
        "onnx_opset": onnx_manifest["opset"],
    }
    write_manifest(out_dir, manifest)
    return manifest


def check_timing_cache(path: Path) -> None:
    """A timing cache's path must be a file (or none yet) in a folder that exists: ConfigError."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"timing cache {path} is not a file")
    if not path.parent.is_dir():
        raise ConfigError(f"timing cache {path}: its folder {path.parent} does not exist")


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` to ``path`` whole or not at all, with the umask's permissions (``write_whole``)."""
    write_whole(path, data)


# -- loading ----------------------------------------------------------------------------------
def check_engine_manifest(manifest: dict, model, versions: dict, where: str | Path = "engine manifest") -> None:
    """Refuse engines built for other networks, another TensorRT, CUDA major or GPU architecture.

    ``versions`` is ``current_versions(trt, device)`` (a plain dict, so this check is testable
    without TensorRT).
    """
    check_fingerprint(manifest, model, where)
    built = manifest.get("versions", {})
    if not isinstance(built, dict):  # (a hand-edited manifest: an AttributeError from .get)
        raise ConfigError(f"{where}: its versions are malformed ({built!r}); rebuild the engines")
    problems = []
    if built.get("tensorrt") != versions.get("tensorrt"):
        problems.append(f"TensorRT {built.get('tensorrt')} (this machine: {versions.get('tensorrt')})")
    if str(built.get("cuda", "")).split(".")[0] != str(versions.get("cuda", "")).split(".")[0]:
        problems.append(f"CUDA {built.get('cuda')} (this machine: {versions.get('cuda')})")
    if built.get("compute_capability") != versions.get("compute_capability"):
        problems.append(f"GPU compute capability {built.get('compute_capability')} "
                        f"(this machine: {versions.get('compute_capability')}, {versions.get('gpu')})")
    if problems:
        raise ModelMismatchError(f"{where}: engines were built for " + ", ".join(problems)
                                 + "; rebuild them here with vlmcodec export --format tensorrt")


def _entry_is_runnable(entry: dict) -> bool:
    """Whether an engine entry has what the runtime reads: its first input's and output's names
    and a profile of 4-dimensional min and max shapes."""
    def named(ios) -> bool:
        return isinstance(ios, list) and bool(ios) and isinstance(ios[0], dict) and isinstance(ios[0].get("name"), str)

    profile = entry.get("profile")
    return named(entry.get("inputs")) and named(entry.get("outputs")) and isinstance(profile, dict) and all(
        isinstance(profile.get(k), list) and len(profile[k]) == 4
        and all(isinstance(d, int) and not isinstance(d, bool) for d in profile[k]) for k in ("min", "max"))


def load_engine_manifest(directory: str | Path, model, versions: dict, verify_files: bool = True) -> dict:
    directory = Path(directory)
    manifest = read_manifest(directory, FORMAT)
    check_engine_manifest(manifest, model, versions, directory / MANIFEST_NAME)
    verify_listed_files(directory, manifest.get("engines"), "engine", "rebuild", verify_files)
    bad = [name for name, entry in manifest["engines"].items() if not _entry_is_runnable(entry)]
    if bad:  # (a KeyError when the backend loads them)
        raise ConfigError(f"{directory}: its manifest's entries for engines {bad} lack their inputs, outputs or "
                          "profile (min and max shapes); rebuild")
    return manifest
