"""ONNX export: valid graphs with dynamic batch/size and named I/O, same function as torch, manifest checks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from vlmcodec.errors import ConfigError, ModelMismatchError  # noqa: E402
from vlmcodec.export.manifest import network_fingerprint  # noqa: E402
from vlmcodec.export.onnx import NETWORKS, export_onnx, graph_ops, load_onnx_manifest  # noqa: E402
from vlmcodec.models.checkpoint import load_model  # noqa: E402


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    return load_model(tiny_model_path)


@pytest.fixture(scope="module")
def exported(loaded, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return out, export_onnx(loaded, out)


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_graphs_valid_named_dynamic(exported):
    out, manifest = exported
    assert set(manifest["graphs"]) == set(NETWORKS)
    for name, g in manifest["graphs"].items():
        proto = onnx.load(str(out / g["file"]))
        onnx.checker.check_model(proto, full_check=True)
        assert max(i.version for i in proto.opset_import if i.domain in ("", "ai.onnx")) >= 17
        assert [i.name for i in proto.graph.input] == [i["name"] for i in g["inputs"]]
        assert [o.name for o in proto.graph.output] == [o["name"] for o in g["outputs"]]
        for vi in list(proto.graph.input) + list(proto.graph.output):
            dims = vi.type.tensor_type.shape.dim
            assert dims[0].dim_param and dims[2].dim_param and dims[3].dim_param, (name, vi.name)
            assert dims[1].dim_value > 0


def test_gdn_is_plain_ops(exported):
    out, manifest = exported
    for name in ("g_a", "g_s"):
        ops = graph_ops(out / manifest["graphs"][name]["file"])
        assert ops <= {"Conv", "ConvTranspose", "Mul", "Sqrt", "Div", "Reciprocal", "Constant"}, ops
        assert manifest["graphs"][name]["gdn_nodes"]
    assert "ConvTranspose" in graph_ops(out / manifest["graphs"]["g_s"]["file"])  # no sub-pixel by default


@pytest.mark.parametrize("batch,hw", [(1, (64, 64)), (2, (192, 128)), (1, (320, 448))])
def test_same_function_as_torch(loaded, exported, batch, hw):
    out, manifest = exported
    model = loaded.model
    torch.manual_seed(batch)
    h, w = hw
    inputs = {"g_a": torch.rand(batch, 3, h, w), "h_a": torch.randn(batch, model.M, h // 16, w // 16) * 4,
              "h_s": torch.randn(batch, model.N, h // 64, w // 64).round(),
              "g_s": torch.randn(batch, model.M, h // 16, w // 16)}
    for name in NETWORKS:
        sess = _session(out / manifest["graphs"][name]["file"])
        got = sess.run(None, {manifest["graphs"][name]["inputs"][0]["name"]: inputs[name].numpy()})
        with torch.no_grad():
            ref = getattr(model, name)(inputs[name])
        if name == "h_s":
            ref = ref.chunk(2, 1)
        else:
            ref = (ref,)
        assert len(got) == len(ref)
        for g, r in zip(got, ref):
            assert g.shape == tuple(r.shape)
            np.testing.assert_allclose(g, r.numpy(), atol=2e-4, rtol=1e-4, err_msg=name)


def test_rewrite_variants_agree(loaded, tmp_path):
    export_onnx(loaded.model, tmp_path / "plain", fold_gdn=False, networks=("g_s",))
    export_onnx(loaded.model, tmp_path / "sub", subpixel=True, networks=("g_s", "h_s"))
    assert "ConvTranspose" not in graph_ops(tmp_path / "sub" / "g_s.onnx") | graph_ops(tmp_path / "sub" / "h_s.onnx")
    assert "DepthToSpace" in graph_ops(tmp_path / "sub" / "g_s.onnx")
    assert {"Pow", "Max"} <= graph_ops(tmp_path / "plain" / "g_s.onnx")  # GDN re-parametrisation kept
    y = torch.randn(1, loaded.model.M, 6, 5)
    with torch.no_grad():
        ref = loaded.model.g_s(y).numpy()
    for d in ("plain", "sub"):
        got = _session(tmp_path / d / "g_s.onnx").run(None, {"y_hat": y.numpy()})[0]
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4, err_msg=d)


def test_manifest_contents(loaded, exported):
    out, manifest = exported
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["network_fingerprint"] == network_fingerprint(loaded.model)
    assert manifest["model_fingerprint"] == loaded.fingerprint.hex()
    assert manifest["opset"] == 17 and manifest["rewrites"] == {"fold_gdn": True, "subpixel": False}
    assert {"torch", "onnx", "vlmcodec"} <= set(manifest["versions"])
    assert manifest["graphs"]["g_a"]["outputs"][0]["shape"] == ["batch", loaded.model.M, "height/16", "width/16"]
    load_onnx_manifest(out, loaded.model)  # passes
    assert "exact fixed-point h_s" in manifest["entropy_parameters"]


def test_the_float_h_s_picks_other_cdfs_than_the_exact_one():
    """Why the manifest warns that h_s.onnx must not code streams: the float h_s (the graph's
    function) picks another scale index than the exact h_s on some symbols of a real image."""
    from vlmcodec import Codec
    from vlmcodec.image_io import load_image

    codec = Codec(threads=1)
    image = load_image(sorted((Path(__file__).resolve().parents[1] / "assets" / "samples").glob("*.png"))[0])
    prep = codec.prepare(image[:128, :128], 50)
    z = codec.analyse([prep.pixels], [prep.quality])[1][0]
    medians = codec.medians.reshape(-1, 1, 1)
    z_hat = (torch.round(z - medians) + medians)[None]
    exact = codec._scale_index(codec.exact_hs(z_hat)[0])
    with torch.no_grad():
        floats = codec._scale_index(codec.model.h_s(z_hat).chunk(2, 1)[0].double())
    assert 0 < int((floats != exact).sum()) < exact.numel() // 10  # (108 of 8192 when written)


def test_manifest_refuses_other_model_and_damage(loaded, tmp_path):
    from vlmcodec.models import MeanScaleHyperprior

    export_onnx(loaded, tmp_path, networks=("h_a",))
    other = MeanScaleHyperprior(loaded.model.config)
    with pytest.raises(ModelMismatchError, match="re-export"):
        load_onnx_manifest(tmp_path, other)
    data = bytearray((tmp_path / "h_a.onnx").read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "h_a.onnx").write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="checksum"):
        load_onnx_manifest(tmp_path, loaded.model)
    with pytest.raises(ConfigError, match="no manifest"):
        load_onnx_manifest(tmp_path / "nothing")


def test_bad_arguments(loaded, tmp_path):
    with pytest.raises(ConfigError, match="opset"):
        export_onnx(loaded, tmp_path, opset=13)
    with pytest.raises(ConfigError, match="unknown network"):
        export_onnx(loaded, tmp_path, networks=("g_x",))


def _pre_editor_model():
    from vlmcodec.models import ModelConfig

    if "pre_editor" not in ModelConfig.__dataclass_fields__:
        pytest.skip("this build's models have no pre-editor")
    from vlmcodec.models import MeanScaleHyperprior

    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, pre_editor=True)).eval()
    with torch.no_grad():
        net.pre_editor.out.weight.normal_(0, 0.05)  # untrained it is the identity
    return net


def test_pre_editor_graph(tmp_path):
    net = _pre_editor_model()
    manifest = export_onnx(net, tmp_path)
    assert list(manifest["graphs"]) == ["pre_editor", *NETWORKS]
    g = manifest["graphs"]["pre_editor"]
    assert [i["name"] for i in g["inputs"]] == ["x"] and [o["name"] for o in g["outputs"]] == ["x_edit"]
    sess = _session(tmp_path / g["file"])
    for shape in [(1, 3, 64, 64), (2, 3, 128, 192)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            ref = net.pre_editor(x).numpy()
        np.testing.assert_allclose(sess.run(None, {"x": x.numpy()})[0], ref, atol=1e-5)


def test_an_opset_outside_what_the_exporter_writes_is_refused(loaded, tmp_path):
    """(99 was torch's RuntimeError and a traceback)"""
    from vlmcodec.export.onnx import max_opset

    with pytest.raises(ConfigError, match="opset 16 is too old"):
        export_onnx(loaded, tmp_path / "old", opset=16)
    newest = max_opset()
    assert newest is not None and newest >= 17  # (this torch says: the check runs)
    with pytest.raises(ConfigError, match=f"opset {newest + 1} is newer than this torch's ONNX exporter writes "
                                          rf"\(torch .*: 17 to {newest}\)"):
        export_onnx(loaded, tmp_path / "new", opset=newest + 1)
