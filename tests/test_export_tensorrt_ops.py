"""Static check, no TensorRT needed: every operator of every exported graph is one TensorRT's ONNX
parser supports (list in export/tensorrt_onnx_ops.txt, from onnx-tensorrt's docs/operators.md)."""

import pytest

onnx = pytest.importorskip("onnx")

from vlmcodec.codec import default_model_path  # noqa: E402
from vlmcodec.export.onnx import NETWORKS, export_onnx  # noqa: E402
from vlmcodec.export.tensorrt import OPS_FILE, supported_onnx_ops, tensorrt_parser_problems  # noqa: E402
from vlmcodec.models.checkpoint import load_model  # noqa: E402


def test_operator_list_names_its_source():
    text = OPS_FILE.read_text()
    assert "onnx/onnx-tensorrt" in text and "docs/operators.md" in text and "TensorRT 10.15" in text
    ops = supported_onnx_ops()
    assert {"Conv", "DepthToSpace", "Mul", "Sqrt", "LeakyRelu", "Split", "LayerNormalization", "Resize"} <= set(ops)
    assert "Det" not in ops and "Unique" not in ops  # "N" rows of the matrix are not listed
    assert "first output" in ops["LayerNormalization"]


@pytest.mark.parametrize("which", ["default", "tiny"])
@pytest.mark.parametrize("subpixel", [False, True])
def test_exported_graphs_parse_in_tensorrt(which, subpixel, tiny_model_path, tmp_path):
    loaded = load_model(default_model_path() if which == "default" else tiny_model_path)
    manifest = export_onnx(loaded, tmp_path, subpixel=subpixel)
    for name in NETWORKS:
        problems = tensorrt_parser_problems(tmp_path / manifest["graphs"][name]["file"])
        assert problems == [], f"{which} {name}: {problems}"


def test_check_flags_unsupported(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 4, 1, 1])
    graph = helper.make_graph([helper.make_node("Det", ["x"], ["h"], name="det"),
                               helper.make_node("Conv", ["h", "w"], ["y"], name="cv")], "g", [x, w], [y])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)]), str(path))
    problems = tensorrt_parser_problems(path)
    assert any("Det" in p for p in problems)
    assert any("not an initializer" in p for p in problems)
    assert any("opset 25" in p for p in problems)
