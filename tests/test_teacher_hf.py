"""Hugging Face teachers from a local directory: tiny random DINOv2 / CLIP / SigLIP configs saved to a
temporary folder (never a download). Skips when ``transformers`` is not installed."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from vlmcodec.errors import ConfigError
from vlmcodec.teacher import HFTeacher, Teacher, load_teacher
from vlmcodec.teacher.hf import import_transformers

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                reason="transformers not installed (optional extra): pip install transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14, image_size=56)


def _save(tmp_path, name, model, preprocessor=None):
    d = tmp_path / name
    model.save_pretrained(str(d))
    if preprocessor is not None:
        (d / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return d


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    tf = import_transformers()
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    return {
        "dinov2": _save(root, "dinov2", tf.Dinov2Model(tf.Dinov2Config(**TINY))),
        "clip": _save(root, "clip", tf.CLIPModel(tf.CLIPConfig(
            vision_config=TINY, text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=64, vocab_size=100), projection_dim=16)),
                      preprocessor={"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.5, 0.5]}),
        "clip_vision": _save(root, "clip_vision", tf.CLIPVisionModel(tf.CLIPVisionConfig(**TINY))),
        "siglip": _save(root, "siglip", tf.SiglipVisionModel(tf.SiglipVisionConfig(**TINY))),
    }


@pytest.mark.parametrize("kind,prefix", [("dinov2", 1), ("clip", 1), ("clip_vision", 1), ("siglip", 0)])
def test_tokens_frozen_and_differentiable(dirs, kind, prefix):
    t = load_teacher(dirs[kind])
    assert isinstance(t, HFTeacher) and isinstance(t, Teacher)
    assert (t.num_layers, t.embed_dim, t.patch_size, t.num_prefix_tokens) == (2, 32, 14, prefix)
    assert not any(p.requires_grad for p in t.parameters()) and not t.train().training
    x = torch.rand(2, 3, 56, 56, requires_grad=True)
    toks = t(x, layers=(0, 1, -1))
    assert [o.shape for o in toks] == [(2, prefix + 16, 32)] * 3
    sum(o.square().mean() for o in toks).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()
    with torch.no_grad():
        raw = t(x, layers=(2,), norm=False)[0]
        normed = t(x, layers=(2,), norm=True)[0]
    assert not torch.allclose(raw, normed)  # the final norm is applied on request
    with pytest.raises(ConfigError):
        t(x, layers=(3,))


@pytest.mark.parametrize("kind", ["dinov2", "clip", "siglip"])
def test_other_input_sizes(dirs, kind):
    """Position embeddings are interpolated to grids other than the configured 4×4."""
    t = load_teacher(dirs[kind])
    with torch.no_grad():
        out = t(torch.rand(1, 3, 42, 70), layers=(2,))[0]
    assert out.shape == (1, t.num_prefix_tokens + 3 * 5, 32)


def test_hidden_states_match_the_model(dirs):
    """Our layer k is the model's hidden_states[k]; mean/std come from preprocessor_config.json."""
    t = load_teacher(dirs["clip"])
    assert t.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    x = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        hs = t.model(pixel_values=t.normalise(x), output_hidden_states=True).hidden_states
        ours = t(x, layers=(0, 1, 2), norm=False)
    for a, b in zip(ours, hs):
        torch.testing.assert_close(a, b)


def test_checkout_kernels_folder_does_not_shadow_the_installed_package(tmp_path, monkeypatch):
    """transformers ≥ 5.25 imports Hugging Face's ``kernels``; with the repository root on sys.path
    (``python -m pytest`` from there) this checkout's ``kernels/`` folder would be found instead."""
    from vlmcodec.teacher.hf import _prefer_installed_kernels

    ours = importlib.util.find_spec("vlmcodec.kernels")
    root = Path(ours.origin).resolve().parent.parent
    if not (root / "kernels" / "__init__.py").is_file() or (root / "vlmcodec").is_dir():
        pytest.skip("not a source checkout: vlmcodec.kernels is not a top-level kernels/ folder here")
    installed = tmp_path / "site"
    (installed / "kernels").mkdir(parents=True)
    (installed / "kernels" / "__init__.py").write_text("WHO = 'installed'\n")
    saved = sys.modules.pop("kernels", None)
    try:
        monkeypatch.setattr(sys, "path", [str(root), str(installed)] + [p for p in sys.path if p])
        importlib.invalidate_caches()
        assert importlib.util.find_spec("kernels").origin.startswith(str(root))  # the clash is real
        _prefer_installed_kernels()
        assert getattr(sys.modules["kernels"], "WHO", None) == "installed"
        assert sys.path[0] == str(root)  # the path is left as it was
    finally:
        sys.modules.pop("kernels", None)
        if saved is not None:
            sys.modules["kernels"] = saved


def test_models_that_break_the_token_contract_are_refused(tmp_path):
    """ViT-MAE masks 75 % of the patches at random even in eval (5 tokens instead of 17, the same image
    scored 0.42 against itself); Swin merges patches and has no CLS: both loaded and ran before."""
    tf = import_transformers()
    torch.manual_seed(0)
    mae = _save(tmp_path, "vitmae", tf.ViTMAEModel(tf.ViTMAEConfig(**TINY)))
    swin = _save(tmp_path, "swin", tf.SwinModel(tf.SwinConfig(image_size=56, patch_size=4, embed_dim=16, depths=[1, 1],
                                                              num_heads=[2, 2], window_size=7)))
    for d in (mae, swin):
        with pytest.raises(ConfigError, match="not a plain ViT teacher"):
            load_teacher(d)


def test_deit_distillation_token_is_a_prefix_token(tmp_path):
    tf = import_transformers()
    t = load_teacher(_save(tmp_path, "deit", tf.DeiTModel(tf.DeiTConfig(**TINY))))
    assert t.num_prefix_tokens == 2  # CLS + distillation
    with torch.no_grad():
        out = t(torch.rand(1, 3, 56, 56), layers=(-1,))[0]
    assert out.shape == (1, 2 + 16, 32) and t.patch_tokens(out).shape == (1, 16, 32)


def test_broken_directories_raise_config_errors(dirs, tmp_path):
    """Each gave a raw ValueError / RuntimeError / SafetensorError / JSONDecodeError / TypeError, or NaN tokens."""
    import shutil

    def variant(name, edit_config=None, files=None):
        d = tmp_path / name
        shutil.copytree(dirs["dinov2"], d)
        if edit_config is not None:
            cfg = json.loads((d / "config.json").read_text())
            edit_config(cfg)
            (d / "config.json").write_text(json.dumps(cfg))
        for fname, data in (files or {}).items():
            (d / fname).write_text(data) if isinstance(data, str) else (d / fname).write_bytes(data)
        return d

    def no_type(c):
        c.pop("model_type")
        c.pop("architectures", None)

    bad = [variant("notype", no_type),
           variant("unknowntype", lambda c: c.update(model_type="nonexistent_xyz")),
           variant("mismatch", lambda c: c.update(hidden_size=48, num_attention_heads=3)),
           variant("corruptw", files={"model.safetensors": b"garbage" * 10})]
    for name, pre in (("badjson", "{bad"), ("onelist", json.dumps({"image_mean": [0.5], "image_std": [0.5]})),
                      ("zerostd", json.dumps({"image_mean": [0.5] * 3, "image_std": [0, 0, 0]})),
                      ("notdict", "[1, 2]")):
        bad.append(variant(name, files={"preprocessor_config.json": pre}))
    # a malformed config.json was "cannot load ... (ModelNotFoundError)": the file is there
    bad += [variant("badconfig", files={"config.json": "{bad"}), variant("listconfig", files={"config.json": "[1]"})]
    for d in bad:
        with pytest.raises(ConfigError, match=d.name):
            load_teacher(d)
    scalar = variant("scalar", files={"preprocessor_config.json": json.dumps({"image_mean": 0.5, "image_std": 0.25})})
    assert load_teacher(scalar).std.flatten().tolist() == [0.25] * 3  # a number is every channel's, as in transformers


def test_a_half_precision_checkpoint_loads_as_float32(tmp_path):
    """transformers 5 loads a checkpoint in its own precision: an fp16 DINOv2 directory made an
    fp16 teacher (training and metrics in half precision on the CPU)."""
    tf = import_transformers()
    d = _save(tmp_path, "half", tf.Dinov2Model(tf.Dinov2Config(**TINY)).half())
    teacher = load_teacher(d)
    assert {p.dtype for p in teacher.parameters()} == {torch.float32}
    assert teacher(torch.rand(1, 3, 56, 56), layers=[1])[0].dtype == torch.float32
