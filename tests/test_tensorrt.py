"""TensorRT builder and backend.

What runs everywhere: build-configuration checks, the engine-manifest refusal rules, and the
"TensorRT not available" error (backend and CLI). What needs TensorRT 10 and a CUDA GPU
(``gpu`` marker; skipped with the reason otherwise): building FP32/FP16 engines for a small
model, running them through the backend, x̂ parity with torch, cross-decode, profile limits and
the timing cache.
"""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmcodec.errors import BackendUnavailableError, ConfigError, ModelMismatchError
from vlmcodec.export.manifest import network_fingerprint
from vlmcodec.export.tensorrt import (FORMAT, BuildConfig, check_engine_manifest, import_tensorrt, parse_size,
                                      require_gpu)
from vlmcodec.models import MeanScaleHyperprior
from vlmcodec.models.checkpoint import load_model

from conftest import smooth_image


def _unavailable_reason():
    try:
        import_tensorrt()
        require_gpu()
    except BackendUnavailableError as e:
        return str(e)
    return None


REASON = _unavailable_reason()
needs_trt = pytest.mark.skipif(REASON is not None, reason=REASON or "")


# -- everywhere ---------------------------------------------------------------------------------
def test_build_config_profiles():
    cfg = BuildConfig(min_batch=1, opt_batch=2, max_batch=4, min_size=(64, 64), opt_size=(512, 768),
                      max_size=(1024, 1536))
    assert cfg.profile("g_a", 3) == {"min": [1, 3, 64, 64], "opt": [2, 3, 512, 768], "max": [4, 3, 1024, 1536]}
    assert cfg.profile("h_a", 192) == {"min": [1, 192, 4, 4], "opt": [2, 192, 32, 48], "max": [4, 192, 64, 96]}
    assert cfg.profile("g_s", 192)["max"] == [4, 192, 64, 96]
    assert cfg.profile("h_s", 128)["opt"] == [2, 128, 8, 12]
    assert cfg.precision == "fp32" and BuildConfig(fp16=True).precision == "fp16"
    assert json.loads(json.dumps(cfg.to_dict()))["max_size"] == [1024, 1536]


@pytest.mark.parametrize("kwargs", [dict(min_batch=2, opt_batch=1), dict(max_batch=0), dict(max_size=(1000, 1024)),
                                    dict(opt_size=(2048, 2048)), dict(networks=("g_z",)),
                                    dict(builder_optimization_level=9)])
def test_build_config_rejects(kwargs):
    with pytest.raises(ConfigError):
        BuildConfig(**kwargs)


def test_parse_size():
    assert parse_size("1024x768") == (1024, 768)
    for bad in ("1024", "100x64", "0x64", "axb"):
        with pytest.raises(ConfigError):
            parse_size(bad)


def _manifest(model, **versions):
    v = {"tensorrt": "10.3.0", "cuda": "12.4", "compute_capability": "9.0", "gpu": "H100"}
    v.update(versions)
    return {"format": FORMAT, "network_fingerprint": network_fingerprint(model), "versions": v}


def test_engine_manifest_refusals(tiny_model_path):
    model = load_model(tiny_model_path).model
    here = {"tensorrt": "10.3.0", "cuda": "12.6", "compute_capability": "9.0", "gpu": "H100"}
    check_engine_manifest(_manifest(model), model, here)  # same TensorRT, CUDA 12.x, same arch: accepted
    with pytest.raises(ModelMismatchError, match="TensorRT 10.2.0"):
        check_engine_manifest(_manifest(model, tensorrt="10.2.0"), model, here)
    with pytest.raises(ModelMismatchError, match="CUDA 11.8"):
        check_engine_manifest(_manifest(model, cuda="11.8"), model, here)
    with pytest.raises(ModelMismatchError, match="compute capability 8.0"):
        check_engine_manifest(_manifest(model, compute_capability="8.0"), model, here)
    with pytest.raises(ModelMismatchError, match="re-export"):
        check_engine_manifest(_manifest(MeanScaleHyperprior(model.config)), model, here)


@pytest.mark.skipif(REASON is None, reason="TensorRT and a GPU are present")
def test_unavailable_is_reported(tiny_model_path, tmp_path, rng, capsys):
    from vlmcodec import Codec
    from vlmcodec.cli import main
    from vlmcodec.image_io import save_image

    with pytest.raises(BackendUnavailableError, match="^TensorRT not available: "):
        Codec(tiny_model_path, backend="tensorrt")
    assert main(["export", "--format", "tensorrt", "-o", str(tmp_path / "e"), "--model", str(tiny_model_path)]) == 2
    assert "TensorRT not available" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()  # nothing exported before the check
    src = tmp_path / "a.png"
    save_image(smooth_image(rng, 64, 64), src)
    assert main(["encode", str(src), "--model", str(tiny_model_path), "--backend", "tensorrt", "--quiet"]) == 2
    assert "TensorRT not available" in capsys.readouterr().err


# -- TensorRT 10 + GPU --------------------------------------------------------------------------
SMALL = dict(max_batch=2, opt_batch=1, min_size=(64, 64), opt_size=(128, 192), max_size=(256, 256))


@pytest.fixture(scope="module")
def engines_fp32(tiny_model_path, tmp_path_factory):
    from vlmcodec.export.tensorrt import build_engines

    out = tmp_path_factory.mktemp("trt32")
    return out, build_engines(load_model(tiny_model_path), out, BuildConfig(**SMALL))


@pytest.mark.gpu
@needs_trt
def test_fp32_engines_parity_and_cross_decode(tiny_model_path, engines_fp32, rng):
    from vlmcodec import Codec
    from vlmcodec.backends import create_backend
    from vlmcodec.export.parity import compare_backends

    out, manifest = engines_fp32
    assert manifest["precision"] == "fp32" and set(manifest["engines"]) == {"g_a", "h_a", "g_s"}
    assert (out / "timing.cache").stat().st_size > 0 and (out / "onnx" / "manifest.json").is_file()
    loaded = load_model(tiny_model_path)
    ct = Codec(loaded, backend="torch")
    cg = Codec(loaded, backend="torch")
    cg.backend = create_backend("tensorrt", loaded.model, engines=out)
    for h, w in [(64, 64), (100, 130), (256, 256)]:
        rec = compare_backends(ct, cg, smooth_image(rng, h, w))
        assert rec["x_hat_max_abs_diff"] <= 1e-4, rec
        # the guarantee is on the decoder side (h_s is exact on every backend): each decodes the
        # other's stream to the symbols written. Encoders on a GPU and a CPU may round a latent
        # within float noise of .5 apart (valid streams, not equal): a few symbols at most
        assert rec["a_to_b_ok"] and rec["b_to_a_ok"], rec
        assert rec["a_to_b_symbols_equal"] and rec["b_to_a_symbols_equal"], rec
        assert rec["y_mismatch"] + rec["z_mismatch"] <= max(2, 1e-3 * rec["symbols"]), rec
    y = torch.randn(2, loaded.model.M, 4, 4)
    with torch.no_grad():
        np.testing.assert_allclose(cg.backend.synthesis(y).numpy(), loaded.model.g_s(y).numpy(), atol=1e-4)
    with torch.no_grad():  # beyond max_size: in tiles; beyond max_batch: in parts of it
        for x in (torch.rand(1, 3, 512, 64), torch.rand(3, 3, 64, 64)):
            np.testing.assert_allclose(cg.backend.analysis(x).numpy(), loaded.model.g_a(x).numpy(), atol=1e-4)


@pytest.mark.gpu
@needs_trt
def test_fp16_engines_and_timing_cache_reuse(tiny_model_path, engines_fp32, tmp_path, rng):
    from vlmcodec.backends import create_backend
    from vlmcodec.export.tensorrt import build_engines

    out32, _ = engines_fp32
    loaded = load_model(tiny_model_path)
    manifest = build_engines(loaded, tmp_path, BuildConfig(fp16=True, **SMALL), onnx_dir=out32 / "onnx",
                             timing_cache=out32 / "timing.cache")
    assert manifest["precision"] == "fp16" and manifest["versions"]["tensorrt"].startswith("10")
    be = create_backend("tensorrt", loaded.model, engines=tmp_path)
    x = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        ref = loaded.model.g_a(x)
    got = be.analysis(x)
    assert torch.isfinite(got).all()
    assert float((got - ref).abs().max()) <= 2e-2 * float(ref.abs().max()) + 1e-2


@pytest.mark.gpu
@needs_trt
def test_refuses_tampered_manifest(tiny_model_path, engines_fp32, tmp_path):
    import shutil

    from vlmcodec.backends import create_backend

    out, _ = engines_fp32
    shutil.copytree(out, tmp_path / "e")
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    m["versions"]["tensorrt"] = "10.0.0.0-other"
    (tmp_path / "e" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelMismatchError, match="rebuild"):
        create_backend("tensorrt", load_model(tiny_model_path).model, engines=tmp_path / "e")


# -- the builder's and runtime's calls, against a stand-in for the tensorrt module --------------
class _FakeTRT:
    """Just enough of the TensorRT 10 Python API to drive build_engine and _EngineRunner on a
    machine without TensorRT; it records the calls. It checks our use of the API against our
    reading of the documentation, not TensorRT itself (the gpu tests do that)."""

    float32 = "float32"

    class ILogger:
        class Severity:
            INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self):
            pass

    class MemoryPoolType:
        WORKSPACE = "workspace"

    class BuilderFlag:
        FP16, TF32, PREFER_PRECISION_CONSTRAINTS = "fp16", "tf32", "prefer"

    class LayerType:
        CONSTANT, SHAPE, CONVOLUTION, ELEMENTWISE = "constant", "shape", "conv", "elementwise"

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    def __init__(self, layer_names, refuse_cache: bool = False):
        self.calls, self.refuse_cache = [], refuse_cache
        trt = self

        class Layer:
            def __init__(self, name):
                self.name, self.type, self.num_outputs, self.precision, self.out_types = name, "conv", 1, None, {}

            def set_output_type(self, i, t):
                self.out_types[i] = t

        class Network:
            def __init__(self):
                self.layers = [Layer(n) for n in layer_names]
                self.num_layers = len(self.layers)

            def get_layer(self, i):
                return self.layers[i]

        class Config:
            def __init__(self):
                self.flags = {"tf32"}  # TensorRT's default
                self.builder_optimization_level = None

            def set_memory_pool_limit(self, pool, size):
                trt.calls.append(("pool", pool, size))

            def set_flag(self, f):
                self.flags.add(f)

            def clear_flag(self, f):
                self.flags.discard(f)

            def add_optimization_profile(self, p):
                trt.calls.append(("profile", dict(p.shapes)))

                self.cache = None

            def create_timing_cache(self, data):
                trt.calls.append(("cache_in", bytes(data)))
                return bytes(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                # TensorRT returns False for a cache of another device or version (and uses none)
                trt.calls.append(("cache_set", cache, ignore_mismatch))
                if cache and trt.refuse_cache:
                    return False
                self.cache = cache
                return True

            def get_timing_cache(self):  # None when no cache is set
                return None if self.cache is None else type("C", (), {"serialize": lambda s: b"timing"})()

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, lo, opt, hi):
                self.shapes[name] = (lo, opt, hi)

        class Builder:
            def __init__(self, logger):
                trt.network, trt.config = Network(), Config()

            def create_network(self, flags):
                trt.calls.append(("create_network", flags))
                return trt.network

            def create_builder_config(self):
                return trt.config

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                trt.calls.append(("build", sorted(config.flags)))
                return b"engine-bytes"

        class OnnxParser:
            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                trt.calls.append(("parse", path))
                return True

        self.Builder, self.OnnxParser = Builder, OnnxParser


def test_build_engine_calls(tiny_model_path, tmp_path):
    from vlmcodec.export.onnx import export_onnx
    from vlmcodec.export.tensorrt import _Logger, build_engine

    loaded = load_model(tiny_model_path)
    manifest = export_onnx(loaded, tmp_path, networks=("g_s",))
    entry = manifest["graphs"]["g_s"]
    assert entry["gdn_nodes"] and all(n.startswith(("/1/", "/3/", "/5/")) for n in entry["gdn_nodes"])
    trt = _FakeTRT(["/0/ConvTranspose", "/1/Mul", "/1/Conv", "/1/Sqrt", "/1/Mul_1", "/2/ConvTranspose", "/3/Conv"])
    cfg = BuildConfig(fp16=True, **SMALL)
    profile = cfg.profile("g_s", loaded.model.M)
    blob, cache = build_engine(trt, _Logger.make(trt), tmp_path / "g_s.onnx", entry, profile, cfg, b"old")
    assert (blob, cache) == (b"engine-bytes", b"timing")
    assert ("create_network", 0) in trt.calls and ("cache_in", b"old") in trt.calls
    assert ("profile", {"y_hat": (tuple(profile["min"]), tuple(profile["opt"]), tuple(profile["max"]))}) in trt.calls
    assert ("build", ["fp16", "prefer"]) in trt.calls  # TF32 cleared, FP16 on, precision constraints preferred
    pinned = {layer.name for layer in trt.network.layers if layer.precision == "float32"}
    assert pinned == {"/1/Mul", "/1/Conv", "/1/Sqrt", "/1/Mul_1", "/3/Conv"}  # GDN layers only

    trt32 = _FakeTRT(["/1/Conv"])
    build_engine(trt32, _Logger.make(trt32), tmp_path / "g_s.onnx", entry, profile, BuildConfig(**SMALL), b"")
    assert ("build", []) in trt32.calls and trt32.network.layers[0].precision is None


def test_a_timing_cache_tensorrt_refuses_is_replaced_by_a_fresh_one(tiny_model_path, tmp_path, caplog):
    """A cache of another GPU or TensorRT (a re-export into the same folder elsewhere):
    set_timing_cache returns False and get_timing_cache None, which failed with an AttributeError
    after the minutes of the build; now the engine builds with a fresh cache, said in a warning."""
    from vlmcodec.export.onnx import export_onnx
    from vlmcodec.export.tensorrt import _Logger, build_engine

    loaded = load_model(tiny_model_path)
    entry = export_onnx(loaded, tmp_path, networks=("g_s",))["graphs"]["g_s"]
    cfg = BuildConfig(**SMALL)
    trt = _FakeTRT(["/1/Conv"], refuse_cache=True)
    with caplog.at_level("WARNING", logger="vlmcodec.tensorrt"):
        blob, cache = build_engine(trt, _Logger.make(trt), tmp_path / "g_s.onnx", entry,
                                   cfg.profile("g_s", loaded.model.M), cfg, b"another-gpu")
    assert (blob, cache) == (b"engine-bytes", b"timing")
    assert [c for c in trt.calls if c[0] == "cache_in"] == [("cache_in", b"another-gpu"), ("cache_in", b"")]
    assert "refused the timing cache" in caplog.text


def test_batches_beyond_the_profile_run_in_parts_it_takes(tiny_model_path):
    """A batch larger than the engines' max_batch (an Engine or encode_batch of more images) was
    refused with a ConfigError (the Engine then retried it item by item, silently unbatched): it
    runs in parts of the profile's batch, giving the whole batch's result; each part passes the
    runner's own profile check."""
    from vlmcodec.backends.tensorrt_backend import TensorRTBackend, _EngineRunner

    model = load_model(tiny_model_path).model.eval()
    backend = object.__new__(TensorRTBackend)  # no engines: _run_locked runs the torch network
    backend._lock = threading.Lock()
    backend._nets, backend._tiles = {}, {}
    for name, c, side in (("g_a", 3, 64), ("g_s", model.M, 4)):
        runner = object.__new__(_EngineRunner)
        runner.profile = {"min": [1, c, side, side], "max": [3, c, 4 * side, 4 * side]}
        backend._nets[name] = runner
    batches = []

    def run_locked(r, name, x):
        batches.append((name, x.shape[0]))
        return getattr(model, name)(x)

    backend._run_locked = run_locked
    x = torch.rand(8, 3, 64, 64)
    with torch.no_grad():
        y = backend.analysis(x)
        assert torch.allclose(y, model.g_a(x), atol=1e-5)
        assert torch.allclose(backend.synthesis(y[:4]), model.g_s(y[:4]), atol=1e-5)
    assert batches == [("g_a", 3), ("g_a", 3), ("g_a", 2), ("g_s", 3), ("g_s", 1)]
    with pytest.raises(ConfigError, match="profile"):  # the runner's check still guards what the engine gets
        backend.analysis(torch.rand(2, 3, 32, 64))


def test_engine_runner_io_and_profile_check(tmp_path):
    from vlmcodec.backends.tensorrt_backend import _EngineRunner

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["y_hat", "x_hat"][i]

        def get_tensor_mode(self, name):
            return "in" if name == "y_hat" else "out"

        def create_execution_context(self):
            return object()

    class Runtime:
        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"ok" else None

    entry = {"inputs": [{"name": "y_hat"}], "outputs": [{"name": "x_hat"}],
             "profile": {"min": [1, 24, 4, 4], "opt": [1, 24, 8, 12], "max": [2, 24, 16, 16]}}
    (tmp_path / "ok.engine").write_bytes(b"ok")
    (tmp_path / "bad.engine").write_bytes(b"bad")
    r = _EngineRunner(_FakeTRT([]), Runtime(), tmp_path / "ok.engine", entry)
    assert (r.input, r.output) == ("y_hat", "x_hat")
    r.check_shape((2, 24, 16, 4), "g_s")
    for bad in [(3, 24, 8, 8), (1, 24, 32, 8), (1, 12, 8, 8), (1, 24, 2, 8)]:
        with pytest.raises(ConfigError, match="profile"):
            r.check_shape(bad, "g_s")
    with pytest.raises(ConfigError, match="deserialize"):
        _EngineRunner(_FakeTRT([]), Runtime(), tmp_path / "bad.engine", entry)
    with pytest.raises(ConfigError, match="does not match"):
        _EngineRunner(_FakeTRT([]), Runtime(), tmp_path / "ok.engine", {**entry, "inputs": [{"name": "x"}]})


def test_large_inputs_run_in_tiles_that_fit_the_profile(tiny_model_path, rng):
    """Inputs larger than an engine's profile go through g_a / h_a / g_s in tiles (bands of rows, each
    in bands of columns), each within the profile's sizes, giving the whole pass's result; the
    pre-editor beyond its profile runs as the torch module. The backend's own methods over
    stand-in engines (the networks in torch, on the CPU) whose profiles take 64..256 image pixels
    per side, so that the real path runs without TensorRT."""
    from types import SimpleNamespace

    from vlmcodec.backends.tensorrt_backend import TensorRTBackend
    from vlmcodec.banding import row_geometry

    model = load_model(tiny_model_path).model.eval()
    backend = object.__new__(TensorRTBackend)  # no engines: _run is replaced below
    backend._tiles = {name: (row_geometry(getattr(model, name), 0), row_geometry(getattr(model, name), 1))
                      for name in ("g_a", "h_a", "g_s")}
    backend._pre_editor, backend._pre_editor_device, backend.device = None, None, torch.device("cpu")
    backend._lock = threading.Lock()
    scales = {"g_a": 1, "h_a": 16, "g_s": 16}
    backend._nets = {name: SimpleNamespace(profile={"min": [1, 0, 64 // s, 64 // s], "max": [2, 0, 256 // s, 256 // s]})
                     for name, s in scales.items()}
    seen = {"g_a": [], "h_a": [], "g_s": []}

    def run(name, x):
        lo, hi = backend._nets[name].profile["min"], backend._nets[name].profile["max"]
        if not (lo[2] <= x.shape[2] <= hi[2] and lo[3] <= x.shape[3] <= hi[3]):
            raise ConfigError(f"tensorrt {name}: input shape {list(x.shape)} is outside the engine's profile")
        seen[name].append(tuple(x.shape[2:]))
        return getattr(model, name)(x)

    backend._run = run
    for h, w in [(640, 192), (192, 576), (576, 448)]:  # tall, wide, both
        for v in seen.values():
            v.clear()
        img = torch.from_numpy(smooth_image(rng, h, w)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            y = backend.analysis(img)
            z = backend.hyper_analysis(y)
            x_hat = backend.synthesis(y)
            assert torch.allclose(y, model.g_a(img), atol=1e-4) and torch.allclose(x_hat, model.g_s(y), atol=1e-4)
            assert torch.allclose(z, model.h_a(y), atol=1e-4)
        for name, side in (("g_a", 256), ("h_a", 16), ("g_s", 16)):
            assert len(seen[name]) > 2 and all(side // 4 <= d <= side for shape in seen[name] for d in shape), seen[name]
    seen["g_s"].clear()
    backend.synthesis(y[:, :, :16, :16])  # fits: one pass
    assert seen["g_s"] == [(16, 16)]
    with pytest.raises(ConfigError, match="profile"):  # a side that cannot be cut small enough reaches the check
        backend._nets["g_s"].profile["max"][2] = 2
        backend.synthesis(y)

    # the pre-editor beyond its engine's profile: the torch module (here on the CPU), clamped
    from vlmcodec.models.pre_editor import PreEditor, PreEditorConfig

    torch.manual_seed(0)
    pre = PreEditor(PreEditorConfig(dim=24, depth=1, heads=2, hidden=8)).eval()
    backend._pre_editor = pre
    backend._nets["pre_editor"] = SimpleNamespace(profile={"min": [1, 3, 64, 64], "max": [2, 3, 256, 256]})
    backend._run = lambda name, x: pytest.fail("the engine was run beyond its profile")
    big = torch.rand(1, 3, 320, 128)
    with torch.no_grad():
        assert torch.equal(backend.pre_edit(big), pre(big).clamp(0, 1))


def test_max_size_from_the_command_line_is_parsed_before_tensorrt_is_needed(tiny_model_path):
    """--backend-option max_size=512x512 arrives as text (tuple() made it single characters: a
    TypeError deep in the build); a bad one is a ConfigError here, TensorRT or not."""
    from vlmcodec.backends import create_backend
    from vlmcodec.errors import BackendUnavailableError, ConfigError
    from vlmcodec.models.checkpoint import load_model

    model = load_model(tiny_model_path).model
    for bad in ("abc", "500x512", (1, 2, 3), True):
        with pytest.raises(ConfigError, match="max_size must be HxW|is not HxW|multiples of 64"):
            create_backend("tensorrt", model, max_size=bad)
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        for good in ("512x512", 1024, (512, 768)):
            with pytest.raises(BackendUnavailableError):
                create_backend("tensorrt", model, max_size=good)


# -- options, sizes and manifests, with a stand-in tensorrt module and GPU ----------------------
@pytest.fixture
def fake_trt_gpu(monkeypatch):
    """A 'tensorrt' module (version only) and torch.cuda reporting one H100: enough to reach the
    build or the manifest check without TensorRT. The build itself is replaced per test."""
    import sys
    import types

    import importlib.machinery

    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0"
    fake.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # (torch._dynamo's import looks it up)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H100")
    return fake


class _Built(Exception):
    """Raised by a stand-in build_engines once it has seen the config."""


def test_tensorrt_other_than_10_is_refused(fake_trt_gpu):
    """TensorRT 11 removed BuilderFlag.FP16, PREFER_PRECISION_CONSTRAINTS and per-layer precision:
    an --fp16 build died with an AttributeError."""
    assert import_tensorrt() is fake_trt_gpu
    for version in ("11.0.0", "9.2.0"):
        fake_trt_gpu.__version__ = version
        with pytest.raises(BackendUnavailableError, match=f"version {version} found, .*TensorRT 10 only"):
            import_tensorrt()


def test_a_max_size_below_the_default_opt_size_is_taken(tiny_model_path, fake_trt_gpu, tmp_path, monkeypatch,
                                                        capsys):
    """--max-size / max_size below 512x768 without --opt-size: the size optimised for is limited to
    it (it was refused: "min <= opt <= max"); an explicit --opt-size beyond it stays an error."""
    import vlmcodec.export.tensorrt as export_trt
    from vlmcodec.backends import create_backend
    from vlmcodec.cli import main

    configs = []

    def fake_build(model, out_dir, config, **kw):
        configs.append(config)
        raise _Built

    def no_manifest(*a, **kw):
        raise ConfigError("no manifest")

    monkeypatch.setattr(export_trt, "build_engines", fake_build)
    monkeypatch.setattr(export_trt, "load_engine_manifest", no_manifest)
    model = load_model(tiny_model_path).model
    for max_size, opt in (("512x512", (512, 512)), ("256x1024", (256, 768)), (1024, (512, 768)),
                          ((64, 64), (64, 64))):
        with pytest.raises(_Built):
            create_backend("tensorrt", model, max_size=max_size, cache_dir=tmp_path)
        assert configs[-1].opt_size == opt and configs[-1].profile("g_a", 3)["opt"] == [1, 3, *opt]

    with pytest.raises(_Built):
        main(["export", "--format", "tensorrt", "--max-size", "512x512", "-o", str(tmp_path / "e"),
              "--model", str(tiny_model_path)])
    assert configs[-1].max_size == (512, 512) and configs[-1].opt_size == (512, 512)
    capsys.readouterr()
    assert main(["export", "--format", "tensorrt", "--max-size", "512x512", "--opt-size", "512x768",
                 "-o", str(tmp_path / "f"), "--model", str(tiny_model_path)]) == 2
    assert "min <= opt <= max" in capsys.readouterr().err
    assert len(configs) == 5  # not built


def test_backends_starting_together_build_the_cache_once(tiny_model_path, fake_trt_gpu, tmp_path, monkeypatch):
    """Two backends (processes, here threads: flock excludes separate opens) that find no engines
    in the cache at once: one builds, the other waits for it and takes its engines (both built,
    minutes each, into the same folder)."""
    import vlmcodec.export.tensorrt as export_trt
    from vlmcodec.backends import create_backend

    builds, both_looked, seen = [], threading.Barrier(2, timeout=10), threading.local()

    def fake_build(model, out_dir, config, **kw):
        builds.append(out_dir)
        time.sleep(0.3)
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "built").write_text("")
        raise _Built

    def fake_manifest(directory, model, versions):
        if not getattr(seen, "looked", False):  # each thread's first look finds nothing, at the same time
            seen.looked = True
            both_looked.wait()
        if not (Path(directory) / "built").exists():
            raise ConfigError("no manifest")
        return {"engines": {}}

    monkeypatch.setattr(export_trt, "build_engines", fake_build)
    monkeypatch.setattr(export_trt, "load_engine_manifest", fake_manifest)
    model = load_model(tiny_model_path).model
    errors: list[BaseException] = []

    def start():
        try:
            create_backend("tensorrt", model, cache_dir=tmp_path)
        except BaseException as e:  # noqa: BLE001 - collected for the asserts
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(builds) == 1, builds
    assert sorted(type(e).__name__ for e in errors) == ["ConfigError", "_Built"]  # (the stand-in has no engines)
    assert "engines" in str(next(e for e in errors if isinstance(e, ConfigError)))


def test_backend_options_as_the_command_line_gives_them(tiny_model_path, fake_trt_gpu, tmp_path, monkeypatch):
    """--backend-option engines=2024 / cache_dir=2024 (numbers) were a TypeError, max_batch=eight
    a TypeError from a comparison deep in the build."""
    import vlmcodec.export.tensorrt as export_trt
    from vlmcodec.backends import create_backend

    model = load_model(tiny_model_path).model
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="no manifest.json in 2024"):
        create_backend("tensorrt", model, engines=2024)
    built = []

    def fake_build(model, out_dir, config, **kw):
        built.append((Path(out_dir), config))
        raise _Built

    monkeypatch.setattr(export_trt, "build_engines", fake_build)
    with pytest.raises(_Built):
        create_backend("tensorrt", model, cache_dir=2024, max_batch=4)
    assert built[-1][0].parent == Path("2024") and built[-1][1].max_batch == 4
    for name, bad in (("max_batch", "eight"), ("max_batch", 0), ("max_batch", True), ("max_batch", 2.5),
                      ("engines", 1.5), ("cache_dir", True), ("fp16", "no"), ("fp16", 1)):
        with pytest.raises(ConfigError, match=f"tensorrt backend: {name} must be"):
            create_backend("tensorrt", model, **{name: bad})
    assert len(built) == 1


def test_malformed_engine_manifests_are_config_errors(tiny_model_path, tmp_path):
    """A hand-edited or damaged manifest: "versions": null was an AttributeError; an engine entry
    without its inputs, outputs or profile passed, then was a KeyError when the backend loaded it."""
    import hashlib

    from vlmcodec.export.tensorrt import load_engine_manifest

    model = load_model(tiny_model_path).model
    here = {"tensorrt": "10.3.0", "cuda": "12.4", "compute_capability": "9.0", "gpu": "H100"}
    with pytest.raises(ConfigError, match="versions are malformed"):
        check_engine_manifest({**_manifest(model), "versions": None}, model, here)
    (tmp_path / "g_a.fp32.engine").write_bytes(b"x")
    entry = {"file": "g_a.fp32.engine", "sha256": hashlib.sha256(b"x").hexdigest(),
             "inputs": [{"name": "x"}], "outputs": [{"name": "y"}],
             "profile": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [2, 3, 128, 128]}}

    def load(engines):
        (tmp_path / "manifest.json").write_text(json.dumps({**_manifest(model), "engines": engines}))
        return load_engine_manifest(tmp_path, model, here)

    assert load({"g_a": entry})["engines"]["g_a"] == entry
    for broken in ({k: v for k, v in entry.items() if k != "inputs"}, {**entry, "outputs": []},
                   {k: v for k, v in entry.items() if k != "profile"}, {**entry, "profile": {"min": [1, 3]}},
                   {**entry, "profile": {**entry["profile"], "max": [2, 3, "128", 128]}},
                   {**entry, "inputs": [{"shape": [1]}]}):
        with pytest.raises(ConfigError, match="lack their inputs, outputs or profile"):
            load({"g_a": broken})
    with pytest.raises(ConfigError, match="malformed"):
        load(None)
    (tmp_path / "manifest.json").write_text(json.dumps(_manifest(model)))  # no "engines"
    with pytest.raises(ConfigError, match="malformed"):
        load_engine_manifest(tmp_path, model, here)
