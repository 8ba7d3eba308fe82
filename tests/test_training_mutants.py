"""Training loss, semantic terms, crop sampler, budget, overrides, teacher and codec networks:
behaviour pinned by exact values on hand-made inputs (each test kills a mutant the rest of the
suite let through: a mutation-testing run over issue 7's code)."""


import pytest
import torch

from vlmcodec.training.loss import bpp_per_item, rd_loss


def _out(x_hat, lik_y, lik_z, **extra):
    return {"x_hat": x_hat, "likelihoods": {"y": lik_y, "z": lik_z}, **extra}


def test_rd_loss_is_per_item_rate_plus_lambda_times_pixel_and_semantic_distortion():
    """loss = mean_i(bpp_i + λ_i·(w_pix·255²·MSE_i + sem_i)): the MSE of each item (not the batch's)
    times that item's λ; λ scales the distortion (semantic included), never the rate."""
    x = torch.zeros(2, 3, 4, 4)
    x_hat = torch.zeros(2, 3, 4, 4)
    x_hat[0] += 2 / 255  # item 0: MSE = (2/255)², item 1: exact
    lik_y = torch.full((2, 5, 1, 1), 0.5)  # 5 bits per item
    lik_z = torch.stack([torch.full((1, 1, 1), 0.25), torch.full((1, 1, 1), 1.0)])  # 2 bits, 0 bits
    lmbdas = torch.tensor([0.01, 0.1])
    sem = torch.tensor([3.0, 7.0])
    r = rd_loss(_out(x_hat, lik_y, lik_z), x, lmbdas, w_pix=0.5, semantic=sem)
    bpp = torch.tensor([7.0, 5.0]) / 16
    dist = torch.tensor([0.5 * 4.0 + 3.0, 0.0 + 7.0])  # w_pix·255²·(2/255)² = 0.5·4
    expected = (bpp + lmbdas * dist).mean()
    assert r["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert r["bpp"].item() == pytest.approx(6.0 / 16, rel=1e-6)
    assert r["mse"].item() == pytest.approx((2 / 255) ** 2 / 2, rel=1e-6)
    assert r["semantic"].item() == pytest.approx(5.0)


def test_rd_loss_measures_distortion_against_the_original_not_the_pre_edited_image():
    x = torch.full((1, 3, 4, 4), 0.5)
    x_hat = x.clone()
    edited = x + 0.1  # what the pre-editor gave the codec
    r = rd_loss(_out(x_hat, torch.ones(1, 2, 1, 1), torch.ones(1, 1, 1, 1), x_edit=edited), x, torch.tensor([1.0]))
    assert r["mse"].item() == 0.0 and r["loss"].item() == 0.0


def test_bpp_is_bits_per_pixel_over_every_likelihood_tensor():
    lik = {"y": torch.full((2, 3, 2, 2), 0.5), "z": torch.full((2, 1, 1, 1), 0.125)}
    assert bpp_per_item(lik, 6).tolist() == pytest.approx([(12 + 3) / 6] * 2)


# -- semantic terms ------------------------------------------------------------------------------

def test_token_distortion_is_one_minus_cosine_mean_over_tokens_then_layers():
    from vlmcodec.training.semantic import token_distortion

    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    ref = torch.stack([e0, e0, e0]).expand(2, 3, 2)  # B=2, 3 tokens, D=2
    hat0 = torch.stack([torch.stack([e0, e0, e1]), torch.stack([-e0, e0, e0])])  # cos: (1,1,0), (-1,1,1)
    hat1 = ref * 2.0  # a second layer: same directions, cos 1 everywhere
    got = token_distortion([hat0, hat1], [ref, ref])
    assert got.shape == (2,)
    # item 0: layer 0 mean(0,0,1)=1/3, layer 1 0 → 1/6; item 1: layer 0 mean(2,0,0)=2/3 → 1/3
    torch.testing.assert_close(got, torch.tensor([1 / 6, 1 / 3]))


def _tokens_with_spectrum(a: float, b: float, offset=(5.0, -3.0)) -> torch.Tensor:
    """[1, 4, 2] tokens whose centred matrix has singular values √2·a, √2·b (plus a common offset)."""
    t = torch.tensor([[a, 0.0], [-a, 0.0], [0.0, b], [0.0, -b]]) + torch.tensor(offset)
    return t[None]


def test_rank_spectrum_is_of_the_centred_tokens_and_normalised_to_sum_one():
    from vlmcodec.training.semantic import _spectrum

    s = _spectrum(_tokens_with_spectrum(3.0, 1.0))
    torch.testing.assert_close(s, torch.tensor([[0.75, 0.25]]))


def test_rank_distortion_is_the_l1_distance_of_spectra_mean_over_layers():
    from vlmcodec.training.semantic import rank_distortion

    ref = _tokens_with_spectrum(3.0, 1.0)  # (0.75, 0.25)
    hat = _tokens_with_spectrum(2.0, 2.0, offset=(1.0, 1.0))  # (0.5, 0.5): L1 0.5 (squared L2 0.125)
    got = rank_distortion([hat, ref], [ref, ref])  # layers: 0.5 and 0
    torch.testing.assert_close(got, torch.tensor([0.25]))


def test_rank_distortion_gives_no_gradient_to_the_reference_tokens():
    from vlmcodec.training.semantic import rank_distortion

    ref = _tokens_with_spectrum(3.0, 1.0).requires_grad_()
    hat = _tokens_with_spectrum(2.0, 1.5).requires_grad_()
    rank_distortion([hat], [ref]).sum().backward()
    assert ref.grad is None and hat.grad is not None and hat.grad.abs().sum() > 0


def test_teacher_size_rounds_up_to_the_patch():
    from vlmcodec.training.semantic import teacher_size

    assert teacher_size(15, 28, 14) == (28, 28)
    assert teacher_size(1, 43, 14) == (14, 56)


# -- crop sampler --------------------------------------------------------------------------------

def _write(folder, name, arr):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(folder / name)


def test_crops_keep_the_colour_channels_and_scale_by_255(tmp_path):
    import numpy as np

    from vlmcodec.training.data import CropSampler

    arr = np.zeros((40, 40, 3), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = 255, 0, 51
    _write(tmp_path, "a.png", arr)
    batch = CropSampler(tmp_path, 16, seed=1).sample(16)  # (downscaling a flat image keeps it flat)
    for c, v in enumerate((1.0, 0.0, 0.2)):
        torch.testing.assert_close(batch[:, c], torch.full_like(batch[:, c], v), atol=1e-6, rtol=0)


def test_crops_are_flipped_both_ways_and_are_exact_without_downscale(tmp_path):
    import numpy as np

    from vlmcodec.training.data import CropSampler

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    _write(tmp_path, "a.png", arr)
    img = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    views = {"id": img, "lr": img.flip(2), "ud": img.flip(1), "both": img.flip(1).flip(2)}
    seen = set()
    for patch in CropSampler(tmp_path, 8, seed=3, downscale=False).sample(40):
        names = [k for k, v in views.items() if torch.equal(patch, v)]
        assert len(names) == 1, "a crop of the whole image must be the image, flipped or not"
        seen.add(names[0])
    assert seen == set(views)


def test_crops_of_a_wide_image_cover_its_width_and_stay_inside_it(tmp_path):
    import numpy as np

    from vlmcodec.training.data import CropSampler

    arr = np.zeros((8, 64, 3), np.uint8)
    arr[:, :, 0] = np.arange(64, dtype=np.uint8)[None] * 4  # column index, readable from any crop
    _write(tmp_path, "wide.png", arr)
    lefts = set()
    for patch in CropSampler(tmp_path, 8, seed=0, downscale=False).sample(60):
        cols = (patch[0, 0] * 255 / 4).round()
        assert len(set(cols.tolist())) == 8 and (patch[0] == patch[0, :1]).all()  # one row of 8 columns
        lefts.add(int(cols.min()))
    assert max(lefts) > 8  # offsets along the width, not only the first 1 (=h − crop + 1) positions


def test_an_image_exactly_one_crop_in_size_is_used(tmp_path):
    import warnings

    import numpy as np

    from vlmcodec.training.data import CropSampler

    _write(tmp_path, "a.png", np.full((16, 16, 3), 7, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = CropSampler(tmp_path, 16)
    assert len(s.images) == 1


def test_the_seed_picks_the_crops_and_downscale_false_never_resamples(tmp_path, monkeypatch):
    import numpy as np

    from vlmcodec.training.data import CropSampler

    _write(tmp_path, "a.png", np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    a, b = CropSampler(tmp_path, 16, seed=1).sample(4), CropSampler(tmp_path, 16, seed=1).sample(4)
    c = CropSampler(tmp_path, 16, seed=2).sample(4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    sizes = []
    real = torch.nn.functional.interpolate
    monkeypatch.setattr(torch.nn.functional, "interpolate", lambda t, *a, **k: sizes.append(t.shape[-1]) or real(t, *a, **k))
    CropSampler(tmp_path, 16, seed=0, downscale=False).sample(20)
    assert sizes == []
    CropSampler(tmp_path, 16, seed=0).sample(60)
    assert sizes and all(16 < s <= 32 for s in sizes)  # a source of crop/scale px, scale in [0.5, 1)


# -- budget --------------------------------------------------------------------------------------

def _fake_probe(monkeypatch, rows, clock):
    """budget.train replaced by one writing ``rows`` (sec_per_step per log window) to the probe's
    log; perf_counter reads ``clock`` in turn. Returns the probe configs seen."""
    import csv

    from vlmcodec.training import budget

    seen = []

    def train(probe, progress):
        seen.append(probe)
        from pathlib import Path

        Path(probe.out_dir).mkdir(parents=True)
        with open(Path(probe.out_dir) / "log.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "sec_per_step"])
            w.writeheader()
            for i, s in enumerate(rows):
                w.writerow({"step": (i + 1) * probe.log_every, "sec_per_step": s})

    ticks = iter(clock)
    monkeypatch.setattr(budget, "train", train)
    monkeypatch.setattr(budget.time, "perf_counter", lambda: next(ticks))
    return seen


def _budget_cfg(tmp_path, **kw):
    from vlmcodec.training.trainer import TrainConfig

    return TrainConfig(**{"data_dir": str(tmp_path / "data"), "out_dir": str(tmp_path / "run"), "steps": 10_000,
                          "warmup": 50, **kw})


def test_fit_steps_skips_the_first_window_and_charges_the_setup_twice(tmp_path, monkeypatch):
    from vlmcodec.training.budget import fit_steps_to_time

    # probe: 30 steps, windows of 10 at 1.0 (first: one-off costs), 0.1, 0.2 s/step; 20 s in all
    seen = _fake_probe(monkeypatch, ["1.0", "0.1", "0.2"], [100.0, 120.0])
    fitted, info = fit_steps_to_time(_budget_cfg(tmp_path), seconds=200.0, probe_steps=30)
    probe = seen[0]
    assert (probe.steps, probe.log_every, probe.warmup, probe.time_limit_s) == (30, 10, 30, 0.0)
    # stepping 13 s → setup 7 s (paid again by the run); left = 200 − 20 − 7 − 15 = 158 s at 0.15 s/step
    assert info == {"resumed": False, "probe_s": 20.0, "setup_s": 7.0, "sec_per_step": 0.15, "steps": 969}
    assert fitted.steps == 969 and fitted.time_limit_s == pytest.approx(158.0)


def test_fit_steps_refuses_a_budget_of_no_more_steps_than_the_warm_up(tmp_path, monkeypatch):
    from vlmcodec.errors import ConfigError
    from vlmcodec.training.budget import fit_steps_to_time

    _fake_probe(monkeypatch, ["1.0", "0.1", "0.2"], [100.0, 120.0])
    with pytest.raises(ConfigError, match="leaves 969 steps"):
        fit_steps_to_time(_budget_cfg(tmp_path, warmup=969), seconds=200.0, probe_steps=30)


# -- overrides -----------------------------------------------------------------------------------

def test_set_overrides_flags_win_and_unset_flags_are_not_overrides():
    from vlmcodec.training.overrides import merge_overrides, parse_sets

    assert merge_overrides(["steps=5", "lr=0.5"], steps=7, crop=None) == {"steps": 7, "lr": 0.5}
    assert merge_overrides(None, steps=None) == {}
    assert parse_sets(["out_dir=2024-01-05", "data_dir=123", "teacher=\"x y\"", " w_tok =0.5"]) == {
        "out_dir": "2024-01-05", "data_dir": "123", "teacher": "x y", "w_tok": 0.5}


# -- teacher -------------------------------------------------------------------------------------

def _tiny_teacher(**kw):
    from vlmcodec.teacher import DinoV2Teacher, ViTConfig, VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(**{"depth": 2, "embed_dim": 32, "num_heads": 2, "pos_grid": 4, **kw}))
    with torch.no_grad():
        for p in vit.parameters():  # (zeros as made: CLS, registers, position embeddings)
            p.add_(0.1 * torch.randn_like(p))
    return DinoV2Teacher(vit, name="tiny")


def test_spaced_layers_round_to_the_nearest_block():
    from vlmcodec.teacher import spaced_layers

    assert spaced_layers(12) == (3, 6, 9, 12)
    assert spaced_layers(6) == (2, 3, 4, 6)  # 1.5 → 2, 4.5 → 4 (round half to even)
    assert spaced_layers(10) == (2, 5, 8, 10)
    assert spaced_layers(2) == (1, 2)


def test_default_layers_are_all_returned():
    t = _tiny_teacher(depth=6)
    with torch.no_grad():
        out = t(torch.rand(1, 3, 28, 28))
    assert len(out) == 4
    with torch.no_grad():
        want = t(torch.rand(1, 3, 28, 28).zero_(), layers=(2, 3, 4, 6))
        got = t(torch.zeros(1, 3, 28, 28))
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_resize_to_antialiases_when_shrinking_only():
    import torch.nn.functional as F

    from vlmcodec.teacher import resize_to

    x = torch.rand(1, 3, 60, 45, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(resize_to(x, (28, 28), 14),
                               F.interpolate(x, size=(28, 28), mode="bicubic", align_corners=False, antialias=True))
    torch.testing.assert_close(resize_to(x, (70, 56), 14),
                               F.interpolate(x, size=(70, 56), mode="bicubic", align_corners=False, antialias=False))


def test_embeddings_put_registers_right_after_cls_without_position_embedding():
    t = _tiny_teacher(num_register_tokens=2)
    vit = t.vit
    x = torch.rand(1, 3, 56, 56)  # the trained 4×4 grid: no interpolation
    with torch.no_grad():
        tok = t(x, layers=[0], norm=False)[0]
        patches = vit.patch_embed(t.normalise(x)) + vit.pos_embed[:, 1:]
    assert tok.shape == (1, 1 + 2 + 16, 32)
    torch.testing.assert_close(tok[:, 0], (vit.cls_token + vit.pos_embed[:, :1])[:, 0])
    torch.testing.assert_close(tok[:, 1:3], vit.register_tokens)
    torch.testing.assert_close(tok[:, 3:], patches)
    assert torch.equal(t.patch_tokens(tok), tok[:, 3:])


def test_norm_applies_to_every_requested_layer_even_the_embeddings():
    t = _tiny_teacher()
    x = torch.rand(2, 3, 28, 42)
    with torch.no_grad():
        raw = t(x, layers=[0, 1], norm=False)
        normed = t(x, layers=[0, 1], norm=True)
    for r, n in zip(raw, normed):
        torch.testing.assert_close(n, t.vit.norm(r))


def test_position_embeddings_are_interpolated_bicubically_for_any_other_grid():
    import torch.nn.functional as F

    vit = _tiny_teacher().vit
    g = vit.pos_embed[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    for gh, gw in ((2, 2), (3, 5), (4, 4)):
        want = F.interpolate(g, size=(gh, gw), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        got = vit.interpolate_pos_embed(gh, gw)
        assert got.shape == (1, 1 + gh * gw, 32)
        torch.testing.assert_close(got[:, 1:], want)
        assert torch.equal(got[:, :1], vit.pos_embed[:, :1])


def test_a_dinov2_state_dict_with_mask_token_and_int8_rows_loads(tmp_path):
    from safetensors.torch import save_file

    from vlmcodec.teacher import load_teacher
    from vlmcodec.teacher.dinov2 import INT8_SCALE_SUFFIX, dequantize_int8_rows, quantize_int8_rows

    t = _tiny_teacher(depth=1, embed_dim=64, num_heads=1)  # (a DINOv2 file's width: a multiple of 64)
    sd = {k: v.clone() for k, v in t.vit.state_dict().items()}
    w = sd["blocks.0.mlp.fc1.weight"]  # [256, 64]: not square
    q, s = quantize_int8_rows(w)
    assert q.dtype == torch.int8 and s.shape == (256,)
    torch.testing.assert_close(s, w.abs().amax(1) / 127)
    deq = dequantize_int8_rows({"w": q, "w" + INT8_SCALE_SUFFIX: s})["w"]
    assert (deq - w).abs().max() <= s.max() / 2 + 1e-7
    sd["blocks.0.mlp.fc1.weight"], sd["blocks.0.mlp.fc1.weight" + INT8_SCALE_SUFFIX] = q, s
    sd["mask_token"] = torch.zeros(1, 64)
    save_file(sd, str(tmp_path / "t.safetensors"))
    loaded = load_teacher(tmp_path / "t.safetensors")
    torch.testing.assert_close(loaded.vit.blocks[0].mlp.fc1.weight, deq)


# -- pre-editor ----------------------------------------------------------------------------------

def _reference_delta(p, x):
    """Δ(x) written out from the module docstring's diagram, attention as softmax(q kᵀ/√d) v."""
    import torch.nn.functional as F

    from vlmcodec.models.pre_editor import attention_ref

    tok = p.embed(x)
    tok = tok + p.pos(tok)  # conv position encoding, added
    b, d, gh, gw = tok.shape
    t = tok.flatten(2).transpose(1, 2)
    for blk in p.blocks:  # pre-norm, two residual branches
        q, k, v = blk.qkv(blk.norm1(t)).reshape(b, -1, 3, blk.heads, d // blk.heads).permute(2, 0, 3, 1, 4)
        t = t + blk.proj(attention_ref(q, k, v).transpose(1, 2).reshape(b, -1, d))
        t = t + blk.mlp(blk.norm2(t))
    t = p.norm(t).transpose(1, 2).reshape(b, d, gh, gw)
    quarter = F.gelu(p.quarter(x)) + F.interpolate(p.to_hidden(t), scale_factor=p.config.patch // 4, mode="bilinear")
    quarter = F.gelu(p.mid(quarter))
    full = F.gelu(p.full(x)) + F.interpolate(quarter, scale_factor=4, mode="bilinear")
    return p.out(full)


def test_pre_editor_is_x_plus_the_delta_of_its_diagram():
    from vlmcodec.models.pre_editor import PreEditor, PreEditorConfig

    torch.manual_seed(0)
    p = PreEditor(PreEditorConfig(dim=24, depth=2, heads=2, hidden=8))
    with torch.no_grad():
        p.out.weight.normal_(0, 0.05)
        x = torch.rand(2, 3, 32, 48)
        torch.testing.assert_close(p.delta(x), _reference_delta(p, x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(p(x), x + _reference_delta(p, x), atol=1e-5, rtol=1e-5)


def test_pre_editor_windows_shift_by_half_a_piece_in_every_other_block(monkeypatch):
    from vlmcodec.models.pre_editor import PreEditor, PreEditorConfig, _Block

    torch.manual_seed(0)
    p = PreEditor(PreEditorConfig(dim=24, depth=2, heads=2, hidden=8)).eval()
    calls = []
    fused = _Block.attend
    monkeypatch.setattr(_Block, "attend", staticmethod(lambda q, k, v: calls.append(q.shape[-2]) or fused(q, k, v)))
    monkeypatch.setattr(PreEditor, "global_attention_tokens", None)
    monkeypatch.setattr(PreEditor, "attention_window", 6)
    with torch.no_grad():
        p(torch.rand(1, 3, 96, 160))  # 6×10 tokens
    # block 1: columns cut at 5 → 6×5, 6×5; block 2 (shifted by 2): cuts at 3 and 8 → 6×3, 6×5, 6×2
    assert calls == [30, 30, 18, 30, 12]


# -- codec network: gains, forward ---------------------------------------------------------------

def _net(**kw):
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig

    torch.manual_seed(0)
    return MeanScaleHyperprior(ModelConfig(**{"N": 8, "M": 12, "num_levels": 3, "lmbdas": (0.01, 0.04, 0.16), **kw}))


def test_gains_start_at_the_square_root_of_lambda_over_its_largest():
    net = _net()
    torch.testing.assert_close(net.gain.detach(), torch.tensor([0.5, 1.0, 2.0])[:, None].expand(3, 12) / 2)
    torch.testing.assert_close(net.inv_gain.detach(), torch.tensor([4.0, 2.0, 1.0])[:, None].expand(3, 12))


def test_gains_interpolate_geometrically_between_the_anchors_below_and_above():
    net = _net()
    with torch.no_grad():
        net.gain.copy_(torch.tensor([1.0, 2.0, 8.0])[:, None].expand(3, 12))
        net.inv_gain.copy_(1 / net.gain)
    levels = torch.tensor([-1.0, 0.0, 0.25, 0.75, 1.0, 1.5, 2.0, 5.0])
    gain, inv = net.gains(levels)
    want = torch.tensor([1.0, 1.0, 2**0.25, 2**0.75, 2.0, 4.0, 8.0, 8.0])  # clamped to [0, K−1]
    torch.testing.assert_close(gain, want[:, None].expand(8, 12))
    torch.testing.assert_close(inv, 1 / want[:, None].expand(8, 12))


def test_forward_is_gain_analysis_rounding_around_the_means_and_inverse_gain_synthesis():
    net = _net().eval()
    with torch.no_grad():
        net.gain.uniform_(0.5, 2.0)
        net.inv_gain.uniform_(0.5, 2.0)
        x = torch.rand(2, 3, 64, 64)
        levels = torch.tensor([0.5, 2.0])
        gain, inv = net.gains(levels)
        y = net.g_a(x) * gain[:, :, None, None]
        z_hat, _ = net.entropy_bottleneck(net.h_a(y))
        scales, means = net.h_s(z_hat).chunk(2, 1)
        x_hat = net.g_s((torch.round(y - means) + means) * inv[:, :, None, None])
        out = net(x, levels)
        torch.testing.assert_close(out["y"], y)
        torch.testing.assert_close(out["x_hat"], x_hat)
        top = net(x, torch.full((2,), 2.0))["x_hat"]
        assert torch.equal(net(x)["x_hat"], top)  # no levels: the highest quality


def test_the_pre_edited_image_is_clamped_to_the_unit_range():
    net = _net(pre_editor=True).eval()
    with torch.no_grad():
        net.pre_editor.out.bias.copy_(torch.tensor([2.0, -2.0, 0.25]))  # Δ = that, everywhere
        x = torch.rand(1, 3, 64, 64)
        out = net(x)
    torch.testing.assert_close(out["x_edit"], (x + torch.tensor([2.0, -2.0, 0.25])[:, None, None]).clamp(0, 1))


# -- widening ------------------------------------------------------------------------------------

def test_widened_channels_start_with_scaled_default_bounds_and_their_own_gdn():
    from vlmcodec.models.widen import widen_analysis

    net = _net()
    wide = widen_analysis(net, 16, init_scale=0.5, seed=0)
    for layer in (wide.g_a[0], wide.g_a[2]):
        fan_in = layer.weight.shape[1] * 25
        new = layer.weight[8:].detach().abs()
        assert new.max() <= 0.5 / fan_in**0.5 and new.max() > 0.4 / fan_in**0.5
        assert torch.equal(layer.bias[8:].detach(), torch.zeros(8))
    beta, gamma = wide.g_a[1].fold()
    torch.testing.assert_close(beta[8:], torch.ones(8))
    torch.testing.assert_close(gamma[8:, 8:], 0.1 * torch.eye(8), atol=1e-6, rtol=0)
    assert gamma[8:, :8].abs().max() < 1e-6 and gamma[:8, 8:].abs().max() < 1e-6
