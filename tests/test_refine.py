"""Encoder-side latent refinement (vlmcodec.refine): valid ordinary streams, a lower objective,
determinism, and the option's plumbing (Codec, CLI, bench codec names)."""

import json

import numpy as np
import pytest
import torch

from vlmcodec import Codec
from vlmcodec.errors import VlmcodecWarning
from vlmcodec.refine import LatentRefiner, RefineObjective

from conftest import smooth_image


def _real_objective(codec: Codec, img: np.ndarray, data: bytes, quality: float) -> float:
    """bits per pixel of the real stream + λ(q) · 255² · MSE of its decode (the pixel objective)."""
    refiner = LatentRefiner(codec.model, RefineObjective(), steps=0)
    lm = float(refiner.lmbda(torch.tensor([codec.model.level_of_quality(quality)]))[0])
    rec = codec.decode(data).astype(np.float64)
    return 8 * len(data) / (img.shape[0] * img.shape[1]) + lm * ((rec - img) ** 2).mean()


def _tiny_teacher():
    """A frozen 2-block ViT teacher (patch 14, seeded) for the token term without DINOv2's weights."""
    from vlmcodec.teacher import DinoV2Teacher, ViTConfig, VisionTransformer

    torch.manual_seed(0)
    teacher = DinoV2Teacher(VisionTransformer(ViTConfig(depth=2, embed_dim=32, num_heads=2, pos_grid=4)), name="tiny")
    teacher.freeze()
    return teacher


def _pixel_codec(model, steps: int, **kw) -> Codec:
    codec = Codec(model, refine=steps, **kw)
    codec._refiner = LatentRefiner(codec.model, RefineObjective(), steps)  # no teacher: pixels only
    return codec


def test_refine_zero_is_the_one_pass_encoder(tiny_model_path, rng):
    img = smooth_image(rng, 64, 96)
    assert Codec(tiny_model_path, refine=0).encode(img, 50) == Codec(tiny_model_path).encode(img, 50)


def test_refined_stream_decodes_anywhere_and_is_deterministic(tiny_model_path, rng):
    img = smooth_image(rng, 70, 90)
    a = _pixel_codec(tiny_model_path, 8).encode(img, 60)
    b = _pixel_codec(tiny_model_path, 8).encode(img, 60)
    plain = Codec(tiny_model_path)  # a decoder that knows nothing of refinement
    assert a == b
    assert a != plain.encode(img, 60)
    assert plain.decode(a).shape == img.shape


def test_best_step_is_kept(tiny_model_path, rng):
    codec = _pixel_codec(tiny_model_path, 6)
    codec.encode_batch([smooth_image(rng, 64, 64), smooth_image(rng, 64, 64)], [0, 100])
    losses = np.array(codec._refiner.last_losses)  # [steps + 1, items]
    assert losses.shape == (7, 2)
    assert (losses.min(0) <= losses[0]).all()


def test_refinement_lowers_the_real_objective_on_the_default_model(rng):
    """Real file bits and real decoded pixels, not the estimate the optimiser sees."""
    from pathlib import Path

    from PIL import Image

    img = np.array(Image.open(Path(__file__).parents[1] / "assets" / "samples" / "kodim23.png").convert("RGB"))
    img = img[:128, :192]
    one_pass, refined = Codec(), _pixel_codec(None, 20)
    for q in (10, 90):
        before = _real_objective(one_pass, img, one_pass.encode(img, q), q)
        after = _real_objective(one_pass, img, refined.encode(img, q), q)
        assert after < before * 0.995, (q, before, after)


def test_mixed_sizes_in_one_padded_batch(tiny_model_path, rng):
    """Images sharing a padded size but not a coded size are refined each on its own pixels."""
    codec = _pixel_codec(tiny_model_path, 3)
    imgs = [smooth_image(rng, 60, 64), smooth_image(rng, 64, 50)]
    streams = codec.encode_batch(imgs, [50, 50])
    assert [codec.decode(s).shape for s in streams] == [im.shape for im in imgs]
    assert streams == [codec.encode(im, 50) for im in imgs]


def test_token_term_runs_with_a_given_teacher(tiny_model_path, rng):
    teacher = _tiny_teacher()
    codec = Codec(tiny_model_path, refine=4)
    objective = RefineObjective(w_pix=0.5, w_tok=1000.0, teacher="tiny", teacher_layers=(1, 2),
                                teacher_short_sides=(28, 42))
    codec._refiner = LatentRefiner(codec.model, objective, 4, teacher=teacher)
    data = codec.encode(smooth_image(rng, 64, 64), 50)
    losses = np.array(codec._refiner.last_losses)
    assert losses.min() < losses[0, 0]
    assert codec.decode(data).shape == (64, 64, 3)
    assert not any(p.grad is not None for p in teacher.parameters())


def test_objective_from_the_default_models_recipe():
    codec = Codec()
    obj = RefineObjective.from_recipe(codec.loaded.metadata)
    recipe = json.loads(codec.loaded.metadata["train_recipe"])
    assert (obj.w_pix, obj.w_tok, obj.teacher) == (recipe["w_pix"], recipe["w_tok"], recipe["teacher"])
    assert RefineObjective.from_recipe({}) == RefineObjective()  # no recipe: pixels only
    assert RefineObjective.from_recipe({"train_recipe": json.dumps({"w_pix": 2.0, "w_tok": 5.0})}).w_tok == 0.0
    # a rank term the refinement does not minimise is said, not dropped silently
    ranked = {"train_recipe": json.dumps({"teacher": "dinov2-vits14", "w_tok": 0.0, "w_rank": 1000.0})}
    with pytest.warns(VlmcodecWarning, match=r"rank term \(w_rank 1000.0\); refinement minimises the pixel"):
        assert RefineObjective.from_recipe(ranked) == RefineObjective()


def test_lambda_interpolates_the_anchors(tiny_model_path):
    codec = Codec(tiny_model_path)
    r = LatentRefiner(codec.model, RefineObjective(), 0)
    lm = r.lmbda(torch.tensor([0.0, 0.5, 1.0, 2.0]))
    assert torch.allclose(lm, torch.tensor([0.001, 0.002, 0.004, 0.016]), rtol=1e-5)


def test_refine_views(tiny_model_path, rng):
    from vlmcodec.errors import ConfigError
    from vlmcodec.teacher import DinoV2Teacher, ViTConfig, VisionTransformer

    codec = Codec(tiny_model_path, refine=2, refine_views=[224, 336])
    assert codec.refine_views == (224, 336)
    codec.encode(smooth_image(rng, 64, 64), 50)
    assert codec._refiner.objective.teacher_short_sides == (224, 336)
    for bad in ([], [0], [224, True], "224", [224] * 5, [224.7], ["224"], 224, [None]):
        with pytest.raises(ValueError, match="refine_views"):
            Codec(tiny_model_path, refine_views=bad)
    # a named teacher's patch size is known without loading it: views refused when the codec is made
    # (Codec(refine_views=(100,)) was taken, and refused 1-2 s into its first refined encode)
    with pytest.raises(ConfigError, match=r"refine_views \[100\] must be multiples of dinov2-vits14's patch size 14"):
        Codec(refine_views=(224, 100))
    assert Codec(refine_views=(224, 336)).refine_views == (224, 336)
    teacher = DinoV2Teacher(VisionTransformer(ViTConfig(depth=1, embed_dim=32, num_heads=2, pos_grid=4)), name="tiny")
    with pytest.raises(ConfigError, match="patch size"):
        LatentRefiner(codec.model, RefineObjective(w_tok=1.0, teacher="tiny", teacher_short_sides=(230,)), 2,
                      teacher=teacher)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", 10**6])
def test_bad_refine_values_are_refused(tiny_model_path, bad):
    with pytest.raises(ValueError, match="refine"):
        Codec(tiny_model_path, refine=bad)


def test_cli_refine(tmp_path, tiny_model_path, rng, capsys):
    from PIL import Image

    from vlmcodec.cli import main

    src = tmp_path / "a.png"
    Image.fromarray(smooth_image(rng, 64, 64)).save(src)
    with pytest.raises(SystemExit) as e:
        main(["encode", str(src), "--refine", "-2", "--model", str(tiny_model_path)])
    assert e.value.code != 0 and "refine" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["encode", str(src), "--refine", "many", "--model", str(tiny_model_path)])
    assert "integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["encode", str(src), "--refine", "2", "--refine-views", "224,x", "--model", str(tiny_model_path)])
    assert "comma-separated integers" in capsys.readouterr().err
    assert main(["encode", str(src), "--refine-views", "224", "--model", str(tiny_model_path)]) != 0
    assert "needs --refine" in capsys.readouterr().err
    assert main(["encode", str(src), "--refine-bf16", "--model", str(tiny_model_path)]) != 0
    assert "--refine-bf16 needs --refine" in capsys.readouterr().err
    assert main(["encode", str(src), "--refine", "2", "--model", str(tiny_model_path), "-o", str(tmp_path / "a.vlmc"),
                 "--quiet"]) == 0
    assert "refining each latent with 2 steps" in capsys.readouterr().out
    assert main(["encode", str(src), "--refine", "1", "--refine-views", "28", "--refine-bf16", "--model",
                 str(tiny_model_path), "-o", str(tmp_path / "b.vlmc"), "--quiet"]) == 0
    assert "(slower encoding, teacher views 28 px, teacher in bfloat16)" in capsys.readouterr().out
    assert (tmp_path / "a.vlmc").stat().st_size > 0


def test_bench_codec_names():
    from vlmcodec.bench.rd import make_codec

    c = make_codec("vlmcodec+r30@256")
    assert (c.name, c.refine, c.short_side) == ("vlmcodec+r30@256", 30, 256)
    assert make_codec("vlmcodec").refine == 0
    two = make_codec("vlmcodec+r30v224x336@256")
    assert (two.name, two.refine, two.refine_views) == ("vlmcodec+r30v224x336@256", 30, (224, 336))
    assert two.settings()["refine_views"] == [224, 336]  # part of the cache key
    assert "refine_views" not in c.settings()
    for bad in ("webp+r3", "vlmcodec+r0", "vlmcodec+rx", "vlmcodec+r30v", "vlmcodec+r30v224x", "vlmcodec+r3v2x3x"):
        with pytest.raises(ValueError, match=r"\+rK"):
            make_codec(bad)
    with pytest.raises(ValueError, match="refine_views"):  # out of range: the codec's own check
        make_codec("vlmcodec+r30v5000")
    half = make_codec("vlmcodec+r10bf16v224x336@256")
    assert (half.name, half.refine, half.refine_bf16, half.refine_views) == ("vlmcodec+r10bf16v224x336@256", 10,
                                                                            True, (224, 336))
    assert half.settings()["refine_bf16"] is True and "refine_bf16" not in two.settings()
    for bad in ("vlmcodec+rbf16", "vlmcodec+r10bf", "vlmcodec+r10bf16bf16", "webp+r10bf16"):
        with pytest.raises(ValueError, match=r"\+rK"):
            make_codec(bad)


def test_refine_bf16_runs_the_teacher_under_bfloat16_autocast(tiny_model_path, rng):
    from vlmcodec.errors import ConfigError
    teacher = _tiny_teacher()
    seen = []
    forward = teacher.forward

    def traced(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return forward(*args, **kwargs)

    teacher.forward = traced
    img = smooth_image(rng, 64, 64)
    losses = {}
    for bf16 in (False, True):
        codec = Codec(tiny_model_path, refine=3, refine_bf16=bf16)
        objective = RefineObjective(w_pix=0.5, w_tok=1000.0, teacher="tiny", teacher_layers=(1, 2),
                                    teacher_short_sides=(28,), teacher_bf16=codec.refiner().objective.teacher_bf16)
        codec._refiner = LatentRefiner(codec.model, objective, 3, teacher=teacher)
        seen.clear()
        data = codec.encode(img, 50)
        assert seen and set(seen) == {bf16}  # every teacher call, and only under bf16
        assert codec.decode(data).shape == img.shape
        losses[bf16] = np.array(codec._refiner.last_losses)
    assert not np.array_equal(losses[True], losses[False])  # the token term was computed otherwise
    np.testing.assert_allclose(losses[True], losses[False], rtol=0.05)  # but measures the same thing
    with pytest.raises(ConfigError, match="refine_bf16 must be True or False"):
        Codec(tiny_model_path, refine_bf16="yes")


def test_runtime_engine_refines_like_the_codec(tiny_model_path, rng):
    """Two network workers refining at once on one shared model give the codec's own bytes."""
    from vlmcodec.runtime import Engine

    codec = _pixel_codec(tiny_model_path, 4)
    imgs = [smooth_image(rng, 64, 64 + 64 * (i % 2)) for i in range(4)]
    want = [codec.encode(im, 40) for im in imgs]
    with Engine(codec, max_batch=1, network_workers=2) as engine:
        got = [f.result(timeout=120) for f in [engine.submit_encode(im, 40) for im in imgs]]
    assert got == want
    assert all(p.grad is None for p in codec.model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_refinement_on_cuda(tiny_model_path, rng):
    """A CUDA codec refines on the GPU; its streams decode on the CPU and its best step beats step 0."""
    img = smooth_image(rng, 64, 96)
    gpu = Codec(tiny_model_path, device="cuda", refine=6)
    gpu._refiner = LatentRefiner(gpu.model, RefineObjective(), 6)
    data = gpu.encode(img, 60)
    losses = np.array(gpu._refiner.last_losses)
    assert losses.min() < losses[0, 0]
    assert Codec(tiny_model_path).decode(data).shape == img.shape


@pytest.mark.parametrize("caps, want", [({"avx512_bf16": False, "amx_bf16": False}, True),
                                        ({"avx512_bf16": True, "amx_bf16": False}, False),
                                        ({"avx512_bf16": False, "amx_bf16": True}, False)])
def test_cpu_lacks_native_bfloat16_reads_the_cpu_capabilities(monkeypatch, caps, want):
    from vlmcodec.teacher import base

    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", lambda: dict(caps, avx2=True))
    assert base.cpu_lacks_native_bfloat16() is want


@pytest.mark.parametrize("mkldnn_bf16", [False, True])
def test_cpu_lacks_native_bfloat16_falls_back_to_onednn(monkeypatch, mkldnn_bf16):
    from vlmcodec.teacher import base

    def no_capability():
        raise AttributeError("not in this torch")

    monkeypatch.setattr(torch._C._cpu, "_get_cpu_capability", no_capability)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16)
    assert base.cpu_lacks_native_bfloat16() is (not mkldnn_bf16)


@pytest.mark.parametrize("lacks", [True, False])
def test_refine_bf16_warns_on_a_cpu_without_bfloat16_instructions(tiny_model_path, monkeypatch, lacks):
    import warnings

    from vlmcodec.errors import VlmcodecWarning
    from vlmcodec.teacher import base

    monkeypatch.setattr(base, "cpu_lacks_native_bfloat16", lambda: lacks)
    teacher = _tiny_teacher()
    model = Codec(tiny_model_path).model
    for bf16 in (False, True):
        objective = RefineObjective(w_pix=0.5, w_tok=1000.0, teacher="tiny", teacher_layers=(1, 2),
                                    teacher_short_sides=(28,), teacher_bf16=bf16)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            LatentRefiner(model, objective, 3, teacher=teacher)
        slow = [w for w in caught if issubclass(w.category, VlmcodecWarning) and "bfloat16" in str(w.message)]
        assert len(slow) == (1 if bf16 and lacks else 0), [str(w.message) for w in caught]
        if slow:
            assert "refine_bf16" in str(slow[0].message) and "leave bfloat16 off" in str(slow[0].message)


def test_a_model_without_a_training_lambda_per_level_is_refused(tmp_path, rng):
    """A CompressAI conversion records λ 0 (unknown): λ was NaN, every step's loss NaN, and the
    one-pass latents came back after K steps paid for; a config with lmbdas shorter than its levels
    refined at λ 1 everywhere."""
    from vlmcodec.errors import ConfigError
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import save_model

    for name, config in (("converted", ModelConfig(N=16, M=24, num_levels=1, lmbdas=(0.0,))),
                         ("short", ModelConfig(N=16, M=24, num_levels=3))):
        net = MeanScaleHyperprior(config)
        with torch.no_grad():  # (as the converter writes them: λ 0 gives no gains of its own)
            net.gain.fill_(1.0)
            net.inv_gain.fill_(1.0)
        save_model(net, tmp_path / f"{name}.safetensors")
        codec = Codec(tmp_path / f"{name}.safetensors")
        with pytest.raises(ConfigError, match="refinement needs the model's training λ for each of its"):
            codec.encode(smooth_image(rng, 32, 32), 50, refine=2)
        assert codec.encode(smooth_image(rng, 32, 32), 50)  # one pass still codes


def test_the_memory_check_counts_the_teachers_views():
    """A refined encode's estimate counted the image's pixels alone: a 64×64 crop refined on one
    896-px view took ~1.1 GB more than one pass (the teacher's tokens and their attention), and
    the check held 35 MB."""
    from vlmcodec import memory

    one = Codec().memory_needed(64, 64, refine=1)
    big = Codec(refine_views=(896,)).memory_needed(64, 64, refine=1)
    assert big - one >= 1108 * 10**6 - memory.refine_view_bytes(64, 64, (224,))  # the measured +1108 MB, at least
    assert memory.refine_view_bytes(64, 64, (224, 336)) > memory.refine_view_bytes(64, 64, (336,))  # views add up
    assert memory.refine_view_bytes(64, 4096, (224,)) == memory.refine_view_bytes(64, 8192, (224,))  # (1:4 at most)


def test_refine_options_at_their_bounds(tiny_codec, tmp_path):
    """1000 steps is the most (1001 refused); a learning rate must be finite (inf made every
    loss NaN and kept the one-pass latents without a word); a local file named like the GPU
    machine's packed teacher is used as it is, not swapped for the installed teacher."""
    from vlmcodec.errors import ConfigError
    from vlmcodec.refine import _portable_teacher, check_refine_steps

    assert check_refine_steps(1000) == 1000
    with pytest.raises(ConfigError, match="refine must be"):
        check_refine_steps(1001)
    for lr in (float("inf"), float("nan"), 0.0):
        with pytest.raises(ConfigError, match="refine lr"):
            LatentRefiner(tiny_codec.model, RefineObjective(), steps=1, lr=lr)
    local = tmp_path / "dinov2_vits14_int8.safetensors"
    assert _portable_teacher(str(local)) == "dinov2-vits14"  # (not here: the installed one)
    local.write_bytes(b"")
    assert _portable_teacher(str(local)) == str(local)


def test_the_learning_rate_decays_on_a_cosine(tiny_model_path, rng, monkeypatch):
    """Each step's learning rate: lr at the first, half of it halfway (cosine decay to 0 at the end)."""
    seen: list[float] = []
    step = torch.optim.Adam.step

    def recorded(self, *a, **kw):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", recorded)
    _pixel_codec(tiny_model_path, 2).encode(smooth_image(rng, 64, 64), 50)
    assert seen == pytest.approx([0.02, 0.01])


def test_the_teachers_last_layer_is_one_of_the_token_terms_layers(tiny_model_path):
    """Layers up to the teacher's depth are used, its last one included (a layer beyond it is left
    out): a 2-block teacher asked for layers 1, 2 and 3 uses 1 and 2."""
    teacher = _tiny_teacher()
    objective = RefineObjective(w_tok=1.0, teacher="tiny", teacher_layers=(1, 2, 3), teacher_short_sides=(28,))
    refiner = LatentRefiner(Codec(tiny_model_path).model, objective, 1, teacher=teacher)
    assert refiner.layers == teacher.resolve_layers([1, 2]) != teacher.resolve_layers([1])
