"""Behaviours of the onnxruntime and tensorrt backends (``engine/backends``) and of
``export/tensorrt.py``, ``export/parity.py`` and ``export/manifest.py`` that the rest of the suite
left unchecked (found by mutation testing). CPU only: TensorRT and CUDA are stood in for, as in
tests/test_tensorrt.py (``_FakeTRT``, ``fake_trt_gpu``) and tests/test_export_atomic.py
(``fake_build``)."""

import copy
import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import vlmcodec.export.tensorrt as export_trt  # noqa: E402
from vlmcodec import Codec  # noqa: E402
from vlmcodec.backends import create_backend  # noqa: E402
from vlmcodec.errors import BackendUnavailableError, ConfigError  # noqa: E402
from vlmcodec.export.manifest import MANIFEST_NAME, network_fingerprint, read_manifest  # noqa: E402
from vlmcodec.export.onnx import DEFAULT_OPSET, NETWORKS, export_onnx, load_onnx_manifest  # noqa: E402
from vlmcodec.export.tensorrt import BuildConfig, load_engine_manifest  # noqa: E402
from vlmcodec.models import MeanScaleHyperprior, ModelConfig  # noqa: E402

from conftest import smooth_image  # noqa: E402
from test_backend_onnx import CudaReportingSession  # noqa: E402
from test_export_atomic import SMALL, fake_build, interrupt_at_replace  # noqa: E402, F401 (a fixture)
import test_export_onnx  # noqa: E402
from test_tensorrt import _Built, _FakeTRT, _manifest, fake_trt_gpu  # noqa: E402, F401 (a fixture)

loaded = test_export_onnx.loaded  # (the tiny model, loaded once: a fixture)


@pytest.fixture(scope="module")
def graphs(loaded, tmp_path_factory):
    """The tiny model's graphs, exported once."""
    out = tmp_path_factory.mktemp("graphs")
    export_onnx(loaded, out)
    return out


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    """Caches in a temporary folder, not the user's home."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


# --------------------------------------------------------------------------- onnxruntime backend

def test_a_cache_exported_with_another_opset_is_exported_again(loaded, xdg):
    """The cache is usable only when written with today's opset (an older vlmcodec's or a hand-made
    export at opset 18 is replaced, not run)."""
    folder = xdg / "vlmcodec" / "onnx" / network_fingerprint(loaded.model)[:16]
    export_onnx(loaded, folder, opset=DEFAULT_OPSET + 1)
    be = create_backend("onnxruntime", loaded.model, threads=1)
    assert be.graph_dir == folder and be.manifest["opset"] == DEFAULT_OPSET


def test_a_cache_lacking_one_of_the_models_graphs_is_exported_again(loaded, xdg):
    """A cache folder without every network of the model (here h_s, which the backend itself does
    not run) is not the complete export: it is replaced by one that has them all."""
    folder = xdg / "vlmcodec" / "onnx" / network_fingerprint(loaded.model)[:16]
    export_onnx(loaded, folder, networks=("g_a", "h_a", "g_s"))
    be = create_backend("onnxruntime", loaded.model, threads=1)
    assert be.graph_dir == folder and set(be.manifest["graphs"]) == set(NETWORKS)


def test_a_failed_export_into_the_cache_leaves_no_temporary_folder(loaded, tmp_path, monkeypatch):
    """An export that fails (a full disk, an exporter error) removes its temporary folder."""
    from vlmcodec.backends.onnxruntime_backend import cached_graphs

    def failing_export(model, out_dir, **kw):
        (Path(out_dir) / "g_a.onnx").write_bytes(b"half")
        raise RuntimeError("export failed")

    monkeypatch.setattr("vlmcodec.export.onnx.export_onnx", failing_export)
    with pytest.raises(RuntimeError, match="export failed"):
        cached_graphs(loaded.model, tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []


def test_a_blank_folder_option_is_refused_as_such(loaded):
    """graphs="  " (spaces only) is no folder: refused by name, not looked up as a folder."""
    with pytest.raises(ConfigError, match="graphs must be a folder, got '  '"):
        create_backend("onnxruntime", loaded.model, graphs="  ")


def test_switches_other_than_item_by_item_take_no_none(loaded, graphs):
    """None means "by device" for item_by_item only; allow_spinning / memory_pattern need a switch."""
    for name in ("allow_spinning", "memory_pattern"):
        with pytest.raises(ConfigError, match=f"{name} must be true or false, got None"):
            create_backend("onnxruntime", loaded.model, graphs=graphs, **{name: None})
    assert create_backend("onnxruntime", loaded.model, graphs=graphs, item_by_item=None).item_by_item


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA EP present")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_sessions_ask_for_device_0_then_the_cpu_fallback(loaded, graphs, monkeypatch):
    """device="cuda" is the first GPU, and the CPU provider stays listed after CUDA's (ONNX Runtime
    runs there the nodes CUDA's provider lacks)."""
    listed = ["CUDAExecutionProvider", *ort.get_available_providers()]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)

    monkeypatch.setattr(ort, "InferenceSession", CudaReportingSession)
    be = create_backend("onnxruntime", loaded.model, device="cuda", graphs=graphs)
    want = [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert all(s.asked == want for s in be.sessions.values())


def test_optimization_levels_and_default_threads_reach_the_sessions(loaded, graphs):
    """Each optimization name sets its ONNX Runtime level; threads=None leaves the intra-op count
    to ONNX Runtime (0: one per physical core)."""
    levels = ort.GraphOptimizationLevel
    for name, level in (("all", levels.ORT_ENABLE_ALL), ("extended", levels.ORT_ENABLE_EXTENDED),
                        ("basic", levels.ORT_ENABLE_BASIC), ("disable", levels.ORT_DISABLE_ALL)):
        be = create_backend("onnxruntime", loaded.model, graphs=graphs, optimization=name)
        for sess in be.sessions.values():
            opts = sess.get_session_options()
            assert opts.graph_optimization_level == level, name
            assert opts.intra_op_num_threads == 0


def test_graphs_missing_from_an_export_folder_are_named(loaded, tmp_path):
    """An export of some networks only is refused naming those missing (it was a KeyError)."""
    export_onnx(loaded, tmp_path, networks=("g_a", "g_s"))
    with pytest.raises(ConfigError, match=r"graphs \['h_a'\] are missing"):
        create_backend("onnxruntime", loaded.model, graphs=tmp_path)


def test_the_first_sessions_of_a_process_leave_the_callers_subnormals(tiny_model_path, graphs):
    """ONNX Runtime sets FTZ/DAZ on the calling thread when a process's first session is made (later
    ones do not): the backend gives the caller its floating-point mode back. In a fresh process, as
    only there is the first session the backend's."""
    import subprocess
    import sys

    code = ("import sys\nimport numpy as np\nfrom vlmcodec.backends import create_backend\n"
            "from vlmcodec.models.checkpoint import load_model\n"
            "create_backend('onnxruntime', load_model(sys.argv[1]).model, graphs=sys.argv[2], threads=1)\n"
            "print('subnormals', float(np.float32(1e-39) * np.float32(1.0)) != 0.0)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tiny_model_path), str(graphs)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["subnormals", "True"]


# --------------------------------------------------------------------------- tensorrt backend

def _runner(profile):
    from vlmcodec.backends.tensorrt_backend import _EngineRunner

    r = object.__new__(_EngineRunner)
    r.profile = profile
    return r


def test_a_shape_of_other_rank_is_outside_the_profile():
    """A 3-d or 5-d input is a ConfigError naming the profile (an IndexError before)."""
    r = _runner({"min": [1, 24, 4, 4], "max": [2, 24, 16, 16]})
    for bad in [(1, 24, 8), (1, 24, 8, 8, 1)]:
        with pytest.raises(ConfigError, match="profile"):
            r.check_shape(bad, "g_s")


def test_max_size_pairs_are_checked_like_text(loaded):
    """max_size=(500, 512) or a triple is refused before TensorRT is needed, as "500x512" is."""
    for bad in ((500, 512), [512, 100], (512, 512, 512)):
        with pytest.raises(ConfigError, match="multiples of 64|max_size must be HxW"):
            create_backend("tensorrt", loaded.model, max_size=bad)


def test_an_unusable_engine_cache_names_the_tensorrt_backend(loaded, fake_trt_gpu, tmp_path):  # noqa: F811
    """A cache_dir that cannot be made: the message is the tensorrt backend's (its engine cache,
    engines= a built folder), not the onnxruntime one's."""
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ConfigError, match="tensorrt backend: cannot make its engine cache .*engines= a built folder"):
        create_backend("tensorrt", loaded.model, cache_dir=tmp_path / "file" / "sub")


def test_the_engine_cache_is_keyed_by_every_build_setting(loaded, fake_trt_gpu, xdg, monkeypatch):  # noqa: F811
    """The cache folder's name holds the fingerprint, precision, batch, size, TensorRT version and
    GPU architecture (engines built for one are never taken for another), under
    $XDG_CACHE_HOME/vlmcodec/tensorrt."""
    built = []

    def build(model, out_dir, config, **kw):
        built.append(Path(out_dir))
        raise _Built

    monkeypatch.setattr(export_trt, "build_engines", build)
    fp = network_fingerprint(loaded.model)[:16]
    for kwargs, key in ((dict(), "fp32-b8-1024x1024"), (dict(fp16=True, max_batch=4, max_size="512x768"),
                                                         "fp16-b4-512x768")):
        with pytest.raises(_Built):
            create_backend("tensorrt", loaded.model, **kwargs)
        assert built[-1] == xdg / "vlmcodec" / "tensorrt" / f"{fp}-{key}-trt10.3.0-sm90"


def _engine_folder(folder: Path, model, versions: dict, names) -> Path:
    """An engine folder whose manifest lists ``names`` (stand-in engine files)."""
    engines = {}
    for name in names:
        (folder / f"{name}.fp32.engine").write_bytes(name.encode())
        engines[name] = {"file": f"{name}.fp32.engine", "sha256": hashlib.sha256(name.encode()).hexdigest(),
                         "inputs": [{"name": "x"}], "outputs": [{"name": "y"}],
                         "profile": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [2, 3, 128, 128]}}
    manifest = {**_manifest(model), "versions": versions, "engines": engines}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    return folder


def test_engines_missing_from_a_built_folder_are_named(loaded, fake_trt_gpu, tmp_path):  # noqa: F811
    """A built folder without one of the networks the backend runs is refused naming it."""
    versions = export_trt.current_versions(fake_trt_gpu, torch.device("cuda:0"))
    _engine_folder(tmp_path, loaded.model, versions, ("g_a", "g_s"))
    with pytest.raises(ConfigError, match=r"engines \['h_a'\] are missing"):
        create_backend("tensorrt", loaded.model, engines=tmp_path)


def _bare_backend(pre_profile):
    from vlmcodec.backends.tensorrt_backend import TensorRTBackend

    backend = object.__new__(TensorRTBackend)
    backend._lock = threading.Lock()
    backend._tiles, backend._pre_editor_device, backend.device = {}, None, torch.device("cpu")
    backend._nets = {"pre_editor": _runner(pre_profile)}
    return backend


def test_the_pre_editor_engine_output_is_clamped_and_batches_beyond_the_profile_use_it():
    """The pre-editor engine's output is clamped to [0, 1]; a batch larger than its profile's, at
    a size it takes, runs on the engine in parts (not on the torch module)."""
    backend = _bare_backend({"min": [1, 3, 64, 64], "max": [2, 3, 128, 128]})
    backend._pre_editor = SimpleNamespace()  # (never called: running it fails)
    batches = []

    def run_locked(r, name, x):
        batches.append(x.shape[0])
        return x * 3 - 1

    backend._run_locked = run_locked
    x = torch.rand(3, 3, 64, 64)
    out = backend.pre_edit(x)
    assert batches == [2, 1]
    assert torch.equal(out, (x * 3 - 1).clamp(0, 1))


def test_the_torch_pre_editor_output_is_clamped():
    """Beyond the engine's profile the torch module runs; its output is clamped to [0, 1] too."""
    backend = _bare_backend({"min": [1, 3, 64, 64], "max": [2, 3, 128, 128]})
    backend._pre_editor = torch.nn.Identity()
    backend._run = lambda name, x: pytest.fail("the engine was run beyond its profile")
    x = torch.linspace(-1, 2, 3 * 256 * 64).reshape(1, 3, 256, 64)
    want = x.clamp(0, 1)
    assert torch.equal(backend.pre_edit(x), want)


# --------------------------------------------------------------------------- export/tensorrt.py: static checks

def test_the_operator_list_holds_operator_names_only():
    """Comment lines of tensorrt_onnx_ops.txt are not operators."""
    ops = export_trt.supported_onnx_ops()
    assert ops and all(re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", op) for op in ops), sorted(ops)[:5]


def _graph(path, nodes, inputs, opsets):
    from onnx import TensorProto, helper

    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in inputs]
    graph = helper.make_graph(nodes, "g", vi, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]), str(path))
    return path


def test_opset_24_and_constant_weights_pass_custom_domains_and_computed_deconv_weights_do_not(tmp_path):
    """The newest opset the list covers (24) passes; a Conv whose weights come from a Constant node
    has constant weights; a custom operator domain and a ConvTranspose with computed weights are
    reported."""
    from onnx import TensorProto, helper

    w = helper.make_tensor("wv", TensorProto.FLOAT, [1, 1, 1, 1], [1.0])
    ok = _graph(tmp_path / "ok.onnx", [helper.make_node("Constant", [], ["w"], value=w, name="c"),
                                       helper.make_node("Conv", ["x", "w"], ["y"], name="cv")],
                ["x"], [("", 24)])
    assert export_trt.tensorrt_parser_problems(ok) == []
    bad = _graph(tmp_path / "bad.onnx", [helper.make_node("Abs", ["w0"], ["w"], name="abs"),
                                         helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="dc")],
                 ["x", "w0"], [("", 17), ("com.example", 1)])
    problems = export_trt.tensorrt_parser_problems(bad)
    assert any("custom operator domain 'com.example'" in p for p in problems), problems
    assert any("dc: ConvTranspose weights are not an initializer" in p for p in problems), problems


# --------------------------------------------------------------------------- export/tensorrt.py: GPU and config

def test_require_gpu_maps_cpu_to_the_first_gpu_and_refuses_one_past_the_last(fake_trt_gpu):  # noqa: F811
    """The Codec's default device "cpu" means the first GPU; cuda:1 on a one-GPU machine is refused."""
    assert export_trt.require_gpu("cpu") == export_trt.require_gpu("auto") == torch.device("cuda:0")
    assert export_trt.require_gpu("cuda:0") == torch.device("cuda:0")
    with pytest.raises(BackendUnavailableError, match="1 CUDA device"):
        export_trt.require_gpu("cuda:1")


def test_current_versions_record_tensorrt_cuda_and_the_gpu(fake_trt_gpu):  # noqa: F811
    v = export_trt.current_versions(fake_trt_gpu, torch.device("cuda:0"))
    assert {k: v[k] for k in ("tensorrt", "cuda", "gpu", "compute_capability")} == {
        "tensorrt": "10.3.0", "cuda": str(torch.version.cuda), "gpu": "NVIDIA H100", "compute_capability": "9.0"}


def test_sizes_and_build_settings_are_checked_on_both_axes():
    """The width is checked as the height is; batches start at 1; level 0 is a level."""
    with pytest.raises(ConfigError, match="multiples of 64"):
        export_trt.parse_size("64x100")
    for kwargs in (dict(opt_size=(512, 2048)), dict(max_size=(1024, 1000)), dict(min_batch=0, opt_batch=0)):
        with pytest.raises(ConfigError):
            BuildConfig(**kwargs)
    assert BuildConfig(builder_optimization_level=0).builder_optimization_level == 0
    assert export_trt.default_opt_size((1024, 1024), min_size=(768, 896)) == (768, 896)


# --------------------------------------------------------------------------- export/tensorrt.py: building

def test_the_tensorrt_logger_maps_severities(caplog):
    trt = _FakeTRT([])
    logger = export_trt._Logger.make(trt)
    sev = trt.ILogger.Severity
    with caplog.at_level(logging.DEBUG, logger="vlmcodec.tensorrt"):
        for s in (sev.INTERNAL_ERROR, sev.ERROR, sev.WARNING, sev.INFO):
            logger.log(s, f"m{s}")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "m0"), (logging.ERROR, "m1"), (logging.WARNING, "m2"), (logging.DEBUG, "m3")]


def test_gdn_prefixes_end_at_the_layer_boundary():
    """/1/ must not also pin /10/… (the prefix keeps its slash)."""
    assert export_trt._gdn_prefixes({"gdn_nodes": ["/1/Mul", "/1/Sqrt", "/3/Conv"]}) == ("/1/", "/3/")


@pytest.fixture(scope="module")
def g_s_entry(loaded, tmp_path_factory):
    out = tmp_path_factory.mktemp("g_s")
    return out, export_onnx(loaded, out, networks=("g_s",))["graphs"]["g_s"]


def _build(g_s_entry, layers, config, trt=None):
    out, entry = g_s_entry
    trt = trt or _FakeTRT(layers)
    profile = config.profile("g_s", 24)
    result = export_trt.build_engine(trt, export_trt._Logger.make(trt), out / "g_s.onnx", entry, profile, config, b"")
    return trt, result


def test_build_engine_sets_workspace_level_and_output_types(g_s_entry):
    """The workspace in MiB (<< 20), the optimization level, and FP32 outputs of the pinned GDN
    layers; a constant or shape layer under a GDN prefix is left alone."""
    trt = _FakeTRT(["/1/Mul", "/1/Const", "/10/Conv"])

    class Builder(trt.Builder):
        def create_network(self, flags):
            net = super().create_network(flags)
            net.layers[1].type = "constant"
            return net

    trt.Builder = Builder
    cfg = BuildConfig(fp16=True, workspace_mib=64, builder_optimization_level=4, **SMALL)
    _build(g_s_entry, None, cfg, trt)
    assert ("pool", "workspace", 64 << 20) in trt.calls
    assert trt.config.builder_optimization_level == 4
    mul, const, conv10 = trt.network.layers
    assert (mul.precision, mul.out_types) == ("float32", {0: "float32"})
    assert (const.precision, const.out_types) == (None, {})
    assert conv10.precision is None


def test_fp16_without_keep_gdn_fp32_pins_nothing(g_s_entry):
    trt, _ = _build(g_s_entry, ["/1/Mul", "/3/Conv"], BuildConfig(fp16=True, keep_gdn_fp32=False, **SMALL))
    assert ("build", ["fp16"]) in trt.calls
    assert all(layer.precision is None for layer in trt.network.layers)


def test_a_build_tensorrt_fails_is_a_config_error(g_s_entry):
    trt = _FakeTRT(["/1/Mul"])

    class Builder(trt.Builder):
        def build_serialized_network(self, network, config):
            return None

    trt.Builder = Builder
    with pytest.raises(ConfigError, match="TensorRT failed to build an engine from g_s.onnx"):
        _build(g_s_entry, None, BuildConfig(**SMALL), trt)


def test_build_engines_writes_the_timing_cache_and_a_complete_manifest(loaded, tmp_path, fake_build):  # noqa: F811
    """The timing cache is written back (to out_dir by default, or to --timing-cache), and the
    manifest records the model file's fingerprint and the graphs' opset."""
    onnx_dir = tmp_path / "onnx"
    export_onnx(loaded, onnx_dir)
    m = export_trt.build_engines(loaded, tmp_path / "a", BuildConfig(**SMALL), onnx_dir=onnx_dir)
    assert (tmp_path / "a" / "timing.cache").read_bytes() == b"ccc"  # (one "c" per engine: the stand-in's)
    assert m["model_fingerprint"] == loaded.fingerprint.hex() and m["onnx_opset"] == DEFAULT_OPSET
    assert m["precision"] == "fp32" and set(m["engines"]) == {"g_a", "h_a", "g_s"}
    model = loaded.model
    for name, channels, in_scale, out_scale in (("g_a", 3, 1, 16), ("h_a", model.M, 16, 64), ("g_s", model.M, 16, 1)):
        e = m["engines"][name]
        assert (e["profile"]["min"][1], e["in_scale"], e["out_scale"]) == (channels, in_scale, out_scale), name
    assert read_manifest(tmp_path / "a", export_trt.FORMAT) == m
    elsewhere = tmp_path / "t.cache"
    export_trt.build_engines(loaded, tmp_path / "b", BuildConfig(**SMALL), onnx_dir=onnx_dir, timing_cache=elsewhere)
    assert elsewhere.read_bytes() == b"ccc" and not (tmp_path / "b" / "timing.cache").exists()


def test_build_engines_names_a_graph_missing_from_the_onnx_folder(loaded, tmp_path, fake_build):  # noqa: F811
    export_onnx(loaded, tmp_path / "onnx", networks=("g_a", "g_s"))
    with pytest.raises(ConfigError, match="no h_a graph to build from"):
        export_trt.build_engines(loaded, tmp_path / "trt", BuildConfig(**SMALL), onnx_dir=tmp_path / "onnx")


def test_build_engines_adds_the_pre_editor(tmp_path, fake_build):  # noqa: F811
    """A model with a pre-editor gets its engine too, without being asked for it."""
    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, pre_editor=True))
    m = export_trt.build_engines(net, tmp_path, BuildConfig(**SMALL))
    assert fake_build.built[0] == "pre_editor" and set(m["engines"]) == {"pre_editor", "g_a", "h_a", "g_s"}


def test_a_tensorrt_export_interrupted_while_swapping_leaves_no_stale_manifest(loaded, tmp_path, fake_build,  # noqa: F811
                                                                               monkeypatch):
    """Engines are swapped in after the old manifest is removed: stopped midway, the folder has no
    manifest (refused as such), never one whose checksums name engines half replaced."""
    onnx_dir = tmp_path / "onnx"
    export_onnx(loaded, onnx_dir)
    out = tmp_path / "trt"
    export_trt.build_engines(loaded, out, BuildConfig(**SMALL), onnx_dir=onnx_dir)
    interrupt_at_replace(monkeypatch, 2, ".engine")
    with pytest.raises(KeyboardInterrupt):
        export_trt.build_engines(loaded, out, BuildConfig(**SMALL), onnx_dir=onnx_dir)
    monkeypatch.undo()
    assert not (out / MANIFEST_NAME).exists()


# --------------------------------------------------------------------------- export/tensorrt.py: loading

HERE = {"tensorrt": "10.3.0", "cuda": "12.4", "compute_capability": "9.0", "gpu": "H100"}


def test_engine_manifests_refuse_boolean_dims_and_changed_files(loaded, tmp_path):
    """A profile dimension true is no size; a changed engine file fails its checksum unless the
    caller asks not to verify files."""
    _engine_folder(tmp_path, loaded.model, HERE, ("g_a",))
    assert load_engine_manifest(tmp_path, loaded.model, HERE)["engines"]["g_a"]["file"] == "g_a.fp32.engine"
    (tmp_path / "g_a.fp32.engine").write_bytes(b"changed")
    with pytest.raises(ConfigError, match="checksum"):
        load_engine_manifest(tmp_path, loaded.model, HERE)
    assert load_engine_manifest(tmp_path, loaded.model, HERE, verify_files=False)
    m = json.loads((tmp_path / MANIFEST_NAME).read_text())
    m["engines"]["g_a"]["profile"]["max"][0] = True
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="lack their inputs, outputs or profile"):
        load_engine_manifest(tmp_path, loaded.model, HERE, verify_files=False)


# --------------------------------------------------------------------------- export/manifest.py

def test_the_network_fingerprint_covers_the_pre_editor_and_ignores_the_float_type():
    """Pre-editor weights are part of what the graphs compute; the float type the model is held in
    (float64 here) is not."""
    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, pre_editor=True))
    fp = network_fingerprint(net)
    assert network_fingerprint(copy.deepcopy(net).double()) == fp
    with torch.no_grad():
        net.pre_editor.out.weight.add_(0.5)
    assert network_fingerprint(net) != fp


def test_read_manifest_refuses_another_format(graphs):
    with pytest.raises(ConfigError, match="format 'vlmcodec-onnx"):
        read_manifest(graphs, export_trt.FORMAT)


def test_load_onnx_manifest_can_skip_checksums(loaded, graphs, tmp_path):
    import shutil

    shutil.copytree(graphs, tmp_path / "g")
    (tmp_path / "g" / "h_s.onnx").write_bytes(b"changed")
    with pytest.raises(ConfigError, match="checksum"):
        load_onnx_manifest(tmp_path / "g", loaded)
    assert load_onnx_manifest(tmp_path / "g", loaded, verify_files=False)["graphs"]["h_s"]


# --------------------------------------------------------------------------- export/parity.py

class _Shifted:
    """A backend whose g_a adds ``dy``, h_a ``dz`` and g_s ``dx``: another backend's float noise,
    made large."""

    def __init__(self, inner, dy, dz, dx):
        self.inner, self.dy, self.dz, self.dx = inner, dy, dz, dx

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def analysis(self, x):
        return self.inner.analysis(x) + self.dy

    def hyper_analysis(self, y):
        return self.inner.hyper_analysis(y) + self.dz

    def synthesis(self, y):
        return self.inner.synthesis(y) + self.dx


@pytest.fixture(scope="module")
def parity_record(loaded):
    from vlmcodec.export.parity import _symbols, compare_backends

    ca, cb = Codec(loaded, backend="torch", threads=1), Codec(loaded, backend="torch", threads=1)
    cb.backend = _Shifted(cb.backend, 0.5, 5.0, -0.02)
    img = smooth_image(np.random.default_rng(0), 128, 192)
    rec = compare_backends(ca, cb, img, quality=50)
    prep = ca.prepare(img, 50)
    img, q = prep.pixels, prep.quality
    (ya, za), (yb, zb) = ca.analyse([img], [q]), cb.analyse([img], [q])
    sa, sb = _symbols(ca, ya[0], za[0]), _symbols(cb, yb[0], zb[0])
    stream_a = ca.encode(img, q)
    return SimpleNamespace(rec=rec, ca=ca, cb=cb, img=img, q=q, ya=ya[0], za=za[0], sa=sa, sb=sb, stream_a=stream_a)


def test_parity_counts_symbols_and_mismatches(parity_record):
    p = parity_record
    rec = p.rec
    assert rec["symbols"] == p.ya.numel() + p.za.numel()
    assert rec["y_mismatch"] == int((p.sa[1] != p.sb[1]).sum()) > 10
    assert rec["z_mismatch"] == int((p.sa[0] != p.sb[0]).sum()) > 0
    assert rec["index_mismatch"] == int((p.sa[2] != p.sb[2]).sum()) > 1
    assert len(rec["y_mismatch_where"]) == 10 and len(rec["z_mismatch_where"]) == min(10, rec["z_mismatch"])
    z_res = (p.za - p.ca.medians.reshape(-1, 1, 1)).numpy()
    for c, i, j, ra, _ in rec["z_mismatch_where"]:
        assert ra == pytest.approx(float(z_res[c, i, j]))
    assert not rec["streams_equal"]


def test_parity_float_differences_are_absolute(parity_record):
    """y: g_a's +0.5 is a difference of 0.5; x̂: g_s's −0.02 one of 0.02 (both as magnitudes), and
    the decoded pixels differ by about 0.02 × 255."""
    p = parity_record
    rec = p.rec
    assert rec["y_max_abs_diff"] == pytest.approx(0.5, abs=1e-5)
    assert rec["x_hat_max_abs_diff"] == pytest.approx(0.02, abs=1e-5)
    by_b, by_a = p.cb.decode(p.stream_a), p.ca.decode(p.stream_a)
    want = int(np.abs(by_b.astype(np.int16) - by_a.astype(np.int16)).max())
    assert rec["pixel_max_diff"] == want >= 4


def test_parity_cross_decode_recovers_each_encoders_symbols(parity_record):
    """Encoders that chose other symbols: each decoder still recovers the symbols of the stream it
    was given (ŷ of that stream's encoder)."""
    rec = parity_record.rec
    assert rec["a_to_b_ok"] and rec["b_to_a_ok"]
    assert rec["a_to_b_symbols_equal"] and rec["b_to_a_symbols_equal"]


def test_parity_reports_a_decode_of_the_wrong_shape(parity_record, monkeypatch):
    """A decoder giving an image of another shape is no successful cross-decode."""
    from vlmcodec.export.parity import compare_backends

    p = parity_record
    stream_b = p.cb.encode(p.img, p.q)
    real = p.ca.decode
    monkeypatch.setattr(p.ca, "decode", lambda s: real(s)[:-1] if s == stream_b else real(s))
    rec = compare_backends(p.ca, p.cb, p.img, quality=50)
    assert rec["a_to_b_ok"] and not rec["b_to_a_ok"]


def test_parity_records_a_cross_decode_of_the_wrong_shape_without_a_pixel_difference(parity_record, monkeypatch):
    """b's decode of a's stream giving another shape is a failed cross-decode in the record (no
    pixel difference between images of two shapes), not a broadcasting error out of the comparison."""
    from vlmcodec.export.parity import compare_backends

    p = parity_record
    stream_a = p.ca.encode(p.img, p.q)
    real = p.cb.decode
    monkeypatch.setattr(p.cb, "decode", lambda s: real(s)[:-1] if s == stream_a else real(s))
    rec = compare_backends(p.ca, p.cb, p.img, quality=50)
    assert not rec["a_to_b_ok"] and rec["b_to_a_ok"]
    assert "pixel_max_diff" not in rec


def test_parity_records_a_decode_that_fails(parity_record, monkeypatch):
    """A cross-decode that raises is a result (the error, and not ok), not an error."""
    from vlmcodec.export.parity import compare_backends

    p = parity_record
    stream_b = p.cb.encode(p.img, p.q)
    real = p.ca.decode

    def decode(s):
        if s == stream_b:
            raise ValueError("bad stream")
        return real(s)

    monkeypatch.setattr(p.ca, "decode", decode)
    rec = compare_backends(p.ca, p.cb, p.img, quality=50)
    assert rec["b_by_a_error"] == "ValueError: bad stream"
    assert rec["a_to_b_ok"] and not rec["b_to_a_ok"] and "pixel_max_diff" in rec
