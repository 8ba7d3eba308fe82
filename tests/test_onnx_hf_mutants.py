"""Behaviours of the ONNX export (``export/onnx.py``) and the Hugging Face teacher
(``engine/teacher/hf.py``) that the rest of the suite left unchecked (found by mutation testing).
Tiny models only; Hugging Face models are random tiny configs saved to tmp_path (never a download)."""

import importlib.util
import json

import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")

from vlmcodec.errors import ConfigError
from vlmcodec.export import onnx as ox
from vlmcodec.layers import GDN, FoldedGDN
from vlmcodec.models.checkpoint import load_model

from vlmcodec.teacher.hf import import_transformers

from test_teacher_hf import TINY, _save, dirs  # noqa: F401 (a fixture)

needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="transformers not installed (optional extra)")


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    return load_model(tiny_model_path)


# --------------------------------------------------------------------------- ONNX export

def test_gdn_nodes_name_exactly_the_gdn_layers(loaded, tmp_path):
    """The manifest's gdn_nodes (kept FP32 by a TensorRT FP16 build) are the nodes of the GDN layers,
    every one of them, and nothing else."""
    model = loaded.model
    entry = ox.export_graph(model, "g_a", tmp_path / "g_a.onnx")
    gdn_idx = {i for i, m in enumerate(model.g_a) if isinstance(m, GDN)}
    assert gdn_idx
    got = {int(n.split("/")[1]) for n in entry["gdn_nodes"]}
    assert got == gdn_idx
    proto = onnx.load(str(tmp_path / "g_a.onnx"))
    assert {n.name for n in proto.graph.node if int(n.name.split("/")[1]) in gdn_idx} == set(entry["gdn_nodes"])


def test_the_newest_opset_the_exporter_writes_is_accepted():
    newest = ox.max_opset()
    assert newest is not None
    ox.check_opset(newest)  # no error
    ox.check_opset(ox.MIN_OPSET)
    with pytest.raises(ConfigError):
        ox.check_opset(newest + 1)


def test_an_explicit_model_fingerprint_is_recorded_over_the_loaded_one(loaded, tmp_path):
    fp = "ab" * 32
    manifest = ox.export_onnx(loaded, tmp_path, networks=("h_a",), model_fingerprint=fp)
    assert manifest["model_fingerprint"] == fp
    manifest = ox.export_onnx(loaded.model, tmp_path / "b", networks=("h_a",), model_fingerprint=bytes.fromhex(fp))
    assert manifest["model_fingerprint"] == fp


def test_a_small_graph_is_one_file_without_external_data(loaded, tmp_path):
    ox.export_onnx(loaded, tmp_path, networks=("h_a", "g_s"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g_s.onnx", "h_a.onnx", "manifest.json"]
    proto = onnx.load(str(tmp_path / "h_a.onnx"), load_external_data=False)
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in proto.graph.initializer)


def test_manifest_shapes_match_what_each_graph_computes(loaded, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = loaded.model
    manifest = ox.export_onnx(loaded, tmp_path)
    H, W = 128, 192
    env = {"batch": 2, "height": H, "width": W}

    def concrete(shape):
        out = []
        for d in shape:
            if isinstance(d, int):
                out.append(d)
            elif "/" in d:
                name, s = d.split("/")
                out.append(env[name] // int(s))
            else:
                out.append(env[d])
        return tuple(out)

    for name, g in manifest["graphs"].items():
        spec = ox.SPECS[name]
        assert g["in_scale"] == spec.in_scale and g["out_scale"] == spec.out_scale
        sess = ort.InferenceSession(str(tmp_path / g["file"]), providers=["CPUExecutionProvider"])
        feeds = {i["name"]: torch.rand(*concrete(i["shape"])).numpy() for i in g["inputs"]}
        outs = sess.run(None, feeds)
        assert [o.shape for o in outs] == [concrete(o["shape"]) for o in g["outputs"]], name
    assert manifest["graphs"]["h_a"]["outputs"][0]["shape"] == ["batch", model.N, "height/64", "width/64"]
    assert manifest["graphs"]["h_s"]["inputs"][0]["shape"] == ["batch", model.N, "height/64", "width/64"]


def test_output_axes_carry_the_declared_dynamic_names(loaded, tmp_path):
    ox.export_graph(loaded.model, "h_s", tmp_path / "h_s.onnx")
    proto = onnx.load(str(tmp_path / "h_s.onnx"))
    for o in proto.graph.output:
        dims = [d.dim_param for d in o.type.tensor_type.shape.dim]
        assert dims[0] == "batch" and dims[2] == f"{o.name}_height" and dims[3] == f"{o.name}_width", dims


def test_every_conv_reads_its_weights_from_an_initializer(loaded, tmp_path):
    """TensorRT needs constant weights straight from initializers (fold_gdn, constant folding,
    Identity nodes of shared weights dropped)."""
    for name in ox.NETWORKS:
        for sub in (False, True):
            path = tmp_path / f"{name}{int(sub)}.onnx"
            ox.export_graph(loaded.model, name, path, subpixel=sub)
            g = onnx.load(str(path)).graph
            inits = {i.name for i in g.initializer}
            for n in g.node:
                if n.op_type in ("Conv", "ConvTranspose"):
                    assert all(x in inits for x in n.input[1:]), (name, sub, n.name, list(n.input))
            assert not [n for n in g.node if n.op_type == "Identity"], name


def _manifest_edit(tmp_path, loaded, fn):
    ox.export_onnx(loaded, tmp_path, networks=("h_s",))
    p = tmp_path / "manifest.json"
    m = json.loads(p.read_text())
    fn(m["graphs"]["h_s"])
    p.write_text(json.dumps(m))


@pytest.mark.parametrize("side", ["inputs", "outputs"])
@pytest.mark.parametrize("bad", [[], [{"shape": []}], "x"])
def test_a_manifest_with_malformed_inputs_or_outputs_is_refused(loaded, tmp_path, side, bad):
    _manifest_edit(tmp_path, loaded, lambda g: g.__setitem__(side, bad))
    with pytest.raises(ConfigError, match=f"malformed {side}"):
        ox.load_onnx_manifest(tmp_path, loaded.model)


def test_a_graph_failing_validation_is_refused_and_nothing_is_written(loaded, tmp_path, monkeypatch):
    def fail(*a, **k):
        raise onnx.checker.ValidationError("injected")

    monkeypatch.setattr(onnx.checker, "check_model", fail)
    with pytest.raises(ConfigError, match="failed ONNX validation: injected"):
        ox.export_onnx(loaded, tmp_path, networks=("h_a",))
    assert list(tmp_path.iterdir()) == []


def test_graph_ops_names_standard_domains_plainly_and_walks_every_subgraph(tmp_path):
    h = onnx.helper
    vi = h.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1])
    vo = h.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1])
    sub1 = h.make_graph([h.make_node("Relu", ["a"], ["b"])], "s1", [vi], [vo])
    sub2 = h.make_graph([h.make_node("Sigmoid", ["a"], ["b"])], "s2", [vi], [vo])
    nodes = [h.make_node("Abs", ["a"], ["c"], domain="ai.onnx"),
             h.make_node("Custom", ["c"], ["b"], domain="my.dom", bodies=[sub1, sub2])]
    g = h.make_graph(nodes, "g", [vi], [vo])
    assert onnx.AttributeProto.GRAPHS == nodes[1].attribute[0].type
    path = tmp_path / "m.onnx"
    onnx.save_model(h.make_model(g), str(path))
    assert ox.graph_ops(path) == {"Abs", "my.dom::Custom", "Relu", "Sigmoid"}


def test_fold_gdn_false_keeps_the_gdn_layers(loaded):
    net = ox.network_module(loaded.model, "g_a", fold_gdn=False)
    assert any(isinstance(m, GDN) for m in net) and not any(isinstance(m, FoldedGDN) for m in net)
    net = ox.network_module(loaded.model, "g_a", fold_gdn=True)
    assert not any(isinstance(m, GDN) for m in net) and any(isinstance(m, FoldedGDN) for m in net)


def test_export_rewrites_a_copy_and_leaves_the_model_as_it_was(loaded, tmp_path):
    model = loaded.model
    before = [type(m) for m in model.g_s], [type(m) for m in model.g_a]
    ox.network_module(model, "g_s", fold_gdn=True, subpixel=True)
    ox.export_graph(model, "g_a", tmp_path / "g_a.onnx", fold_gdn=True)
    assert ([type(m) for m in model.g_s], [type(m) for m in model.g_a]) == before
    assert any(isinstance(m, nn.ConvTranspose2d) for m in model.g_s)


def test_a_bad_opset_is_refused_before_the_output_folder_is_made(loaded, tmp_path):
    with pytest.raises(ConfigError, match="opset 16 is too old"):
        ox.export_onnx(loaded, tmp_path / "out", opset=16, networks=())
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- Hugging Face teacher

def _same_stats(t, mean, std):
    return (torch.allclose(t.mean.flatten(), torch.tensor(mean, dtype=torch.float32))
            and torch.allclose(t.std.flatten(), torch.tensor(std, dtype=torch.float32)))


@needs_transformers
def test_model_type_decides_the_statistics_without_a_preprocessor_config(dirs):  # noqa: F811
    from vlmcodec.teacher import HFTeacher
    from vlmcodec.teacher.base import IMAGENET_MEAN, IMAGENET_STD
    from vlmcodec.teacher.hf import CLIP_MEAN, CLIP_STD

    assert _same_stats(HFTeacher.from_pretrained(dirs["clip_vision"]), CLIP_MEAN, CLIP_STD)
    assert _same_stats(HFTeacher.from_pretrained(dirs["siglip"]), (0.5,) * 3, (0.5,) * 3)
    assert _same_stats(HFTeacher.from_pretrained(dirs["dinov2"]), IMAGENET_MEAN, IMAGENET_STD)


@needs_transformers
def test_a_preprocessor_config_with_only_a_mean_falls_back_to_the_model_type(tmp_path):
    from vlmcodec.teacher import HFTeacher
    from vlmcodec.teacher.hf import CLIP_MEAN, CLIP_STD

    tf = import_transformers()
    d = _save(tmp_path, "clip_vision", tf.CLIPVisionModel(tf.CLIPVisionConfig(**TINY)),
              preprocessor={"image_mean": [0.1, 0.2, 0.3]})
    assert _same_stats(HFTeacher.from_pretrained(d), CLIP_MEAN, CLIP_STD)


@needs_transformers
def test_a_preprocessor_config_that_is_not_an_object_is_a_config_error(dirs, tmp_path):  # noqa: F811
    import shutil

    from vlmcodec.teacher import HFTeacher

    d = tmp_path / "d"
    shutil.copytree(dirs["dinov2"], d)
    (d / "preprocessor_config.json").write_text(json.dumps([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]]))
    with pytest.raises(ConfigError, match="expected a JSON object"):
        HFTeacher.from_pretrained(d)


@needs_transformers
def test_register_tokens_count_as_prefix_tokens(tmp_path):
    from vlmcodec.teacher import HFTeacher

    tf = import_transformers()
    torch.manual_seed(0)
    d = _save(tmp_path, "reg", tf.Dinov2WithRegistersModel(tf.Dinov2WithRegistersConfig(num_register_tokens=2, **TINY)))
    t = HFTeacher.from_pretrained(d)
    assert t.num_prefix_tokens == 3
    with torch.no_grad():
        assert t(torch.rand(1, 3, 56, 56), layers=(1,))[0].shape == (1, 3 + 16, 32)


@needs_transformers
def test_default_layers_are_spread_up_to_the_last_block(dirs):  # noqa: F811
    from vlmcodec.teacher import HFTeacher
    from vlmcodec.teacher.base import spaced_layers

    t = HFTeacher.from_pretrained(dirs["dinov2"])
    assert t.num_layers == 2 and t.default_layers == spaced_layers(2) == (1, 2)


@needs_transformers
def test_loading_never_asks_the_hub(dirs, monkeypatch):  # noqa: F811
    from vlmcodec.teacher import HFTeacher

    tf = import_transformers()
    seen = []
    orig = tf.AutoModel.from_pretrained

    def spy(*a, **k):
        seen.append(k)
        return orig(*a, **k)

    monkeypatch.setattr(tf.AutoModel, "from_pretrained", spy)
    HFTeacher.from_pretrained(dirs["dinov2"])
    assert seen and all(k.get("local_files_only") is True for k in seen)


@needs_transformers
@pytest.mark.parametrize("exc,err", [("ImportError", "BackendUnavailableError"), ("OSError", "ModelNotFoundError"),
                                     ("ValueError", "ConfigError")])
def test_load_failures_map_to_vlmcodec_errors(dirs, monkeypatch, exc, err):  # noqa: F811
    import builtins

    from vlmcodec import errors
    from vlmcodec.teacher import HFTeacher

    tf = import_transformers()

    def boom(*a, **k):
        raise getattr(builtins, exc)("this model needs timm")

    monkeypatch.setattr(tf.AutoModel, "from_pretrained", boom)
    with pytest.raises(getattr(errors, err), match="needs timm") as info:
        HFTeacher.from_pretrained(dirs["dinov2"])
    if err == "ConfigError":  # the two others are not ConfigErrors
        assert type(info.value) is errors.ConfigError


class _Cfg:
    model_type = "fake"
    num_hidden_layers = 2
    hidden_size = 8
    patch_size = 4


class _FakeVit(nn.Module):
    """A ViT-shaped model returning ``n_states`` hidden states of the right shape."""

    def __init__(self, n_states):
        super().__init__()
        self.n_states = n_states
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, pixel_values, output_hidden_states=True, return_dict=True):
        from types import SimpleNamespace

        b, _, h, w = pixel_values.shape
        t = torch.zeros(b, 1 + (h // 4) * (w // 4), 8) * self.w
        return SimpleNamespace(hidden_states=(t,) * self.n_states)


def test_a_model_with_the_wrong_number_of_hidden_states_is_refused(tmp_path):
    from vlmcodec.teacher.hf import HFTeacher

    HFTeacher(_FakeVit(3), _Cfg, (0.5,) * 3, (0.5,) * 3, "ok")._check_tokens(8, tmp_path)
    t = HFTeacher(_FakeVit(2), _Cfg, (0.5,) * 3, (0.5,) * 3, "short")
    with pytest.raises(ConfigError, match="not a plain ViT teacher"):
        t._check_tokens(8, tmp_path)


def test_the_final_norm_of_a_wrapped_vision_model_is_found():
    """(transformers 4's CLIPVisionModel keeps its layers under ``vision_model``)"""
    from vlmcodec.teacher.hf import HFTeacher

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_model = nn.Module()
            self.vision_model.post_layernorm = nn.LayerNorm(8)

        def forward(self, pixel_values, output_hidden_states=True, return_dict=True):
            raise AssertionError

    m = Wrapped()
    t = HFTeacher(m, _Cfg, (0.5,) * 3, (0.5,) * 3, "w")
    assert t._final_norm is m.vision_model.post_layernorm
