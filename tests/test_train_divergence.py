"""The trainer's guard against divergence: a step whose loss or gradients are not finite is
skipped (no optimiser step), ``max_bad_steps`` of them in a row stop the run with its last
checkpoint intact, and weights that became not finite are never checkpointed."""

import csv
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import write_train_folder
from vlmcodec.cli import main
from vlmcodec.errors import ConfigError, TrainingDivergedError
from vlmcodec.models import MeanScaleHyperprior
from vlmcodec.models.checkpoint import load_model
from vlmcodec.training import trainer
from vlmcodec.training.trainer import TrainConfig, train


@pytest.fixture
def cfg(tmp_path):
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    return TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                       batch=1, steps=4, warmup=1, threads=1, log_every=1, ckpt_every=1)


def poison_loss(monkeypatch, steps: set[int], value: float = float("nan")):
    """rd_loss's total made ``value`` at the given (1-based) steps."""
    calls = {"n": 0}
    real = trainer.rd_loss

    def rd_loss(*args, **kwargs):
        calls["n"] += 1
        losses = real(*args, **kwargs)
        if calls["n"] in steps:
            losses["loss"] = losses["loss"] * value
        return losses

    monkeypatch.setattr(trainer, "rd_loss", rd_loss)


def test_steps_with_a_loss_not_finite_are_skipped_and_logged(cfg, monkeypatch):
    """Steps 2 and 3 of 3 give NaN and +inf: the weights and the optimiser's state after them are
    those of a run of the first step alone, to the bit; the log counts them; the model file is
    written and loads."""
    clean = replace(cfg, out_dir=cfg.out_dir + "_one", steps=1)
    train(clean, progress=False)
    calls = {"n": 0}
    real = trainer.rd_loss

    def nan_then_inf(*args, **kwargs):
        calls["n"] += 1
        losses = real(*args, **kwargs)
        if calls["n"] in (2, 3):
            losses["loss"] = losses["loss"] * (float("nan") if calls["n"] == 2 else float("inf"))
        return losses

    monkeypatch.setattr(trainer, "rd_loss", nan_then_inf)
    poisoned = replace(cfg, steps=3)
    train(poisoned, progress=False)
    a = torch.load(f"{clean.out_dir}/last.pt", weights_only=False)
    b = torch.load(f"{poisoned.out_dir}/last.pt", weights_only=False)
    assert b["step"] == 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    for pa, pb in zip(a["opt"]["state"].values(), b["opt"]["state"].values(), strict=True):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["step"], pb["step"])
    rows = list(csv.DictReader(open(f"{poisoned.out_dir}/log.csv")))
    assert [r["skipped"] for r in rows] == ["0", "1", "1"]
    assert rows[0]["loss"] != "" and rows[1]["loss"] == rows[2]["loss"] == ""
    assert load_model(f"{poisoned.out_dir}/model.safetensors").fingerprint


def test_a_run_of_bad_steps_stops_with_the_last_checkpoint_intact(cfg, monkeypatch, capsys):
    poison_loss(monkeypatch, {3, 4, 5, 6})
    run = replace(cfg, steps=8, max_bad_steps=3)
    with pytest.raises(TrainingDivergedError, match=r"loss, gradients or aux loss not finite at 3 steps in a row "
                                                    r"\(steps 3–5, max_bad_steps 3\)"
                                                    r".*last.pt holds step 4, intact \(the last step without a bad "
                                                    r"value: 2\)"):
        train(run, progress=False)
    state = torch.load(f"{run.out_dir}/last.pt", weights_only=False)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert "step 3: loss or gradients not finite; the step is skipped" in capsys.readouterr().out
    rows = list(csv.DictReader(open(f"{run.out_dir}/log.csv")))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]  # (step 5 stopped the run before its row)

    # through the command line: one line and a non-zero exit
    toml = f'data_dir = "{cfg.data_dir}"\nout_dir = "{cfg.out_dir}_cli"\nN = 8\nM = 12\nlmbdas = [0.01, 0.05]\n' \
           'crop = 64\nbatch = 1\nsteps = 8\nwarmup = 1\nthreads = 1\nmax_bad_steps = 2\n'
    path = f"{cfg.out_dir}.toml"
    open(path, "w").write(toml)
    poison_loss(monkeypatch, set(range(1, 9)))
    assert main(["train", "--config", path, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "no checkpoint was written" in err


def test_weights_that_became_not_finite_are_never_checkpointed(cfg, monkeypatch):
    calls = {"n": 0}
    real = MeanScaleHyperprior.aux_loss

    def aux_loss(self):
        calls["n"] += 1
        if calls["n"] == 3:  # after step 3's update (the loss and gradients were finite)
            with torch.no_grad():
                self.g_s[0].weight[0, 0, 0, 0] = float("nan")
        return real(self)

    monkeypatch.setattr(MeanScaleHyperprior, "aux_loss", aux_loss)
    with pytest.raises(TrainingDivergedError, match=r"weights not finite at step 3 \(g_s.0.weight\).*step 2, intact"):
        train(cfg, progress=False)
    assert torch.load(f"{cfg.out_dir}/last.pt", weights_only=False)["step"] == 2


@pytest.mark.parametrize("change, message", [
    ({"crop": 0}, "crop must be a multiple of 64"),
    ({"crop": 96}, "crop must be a multiple of 64"),
    ({"batch": 0}, "batch must be a whole number, at least 1"),
    ({"log_every": 0}, "log_every must be a whole number, at least 1"),
    ({"ckpt_every": 0}, "ckpt_every must be"),
    ({"max_bad_steps": 0}, "max_bad_steps must be a whole number, at least 1"),
    ({"steps": -3}, "steps must be a whole number, at least 0"),
    ({"lr": -1.0}, "lr must be a finite number above 0"),
    ({"lr": float("nan")}, "lr must be a finite number above 0"),
    ({"clip_grad": -1.0}, "clip_grad must be a finite number, at least 0"),
    ({"teacher_scale": 0.0}, "teacher_scale must be a finite number above 0"),
    # (the first step failed: "teacher input size 0x0 must be positive multiples of the patch size")
    ({"teacher_scale": 0.005}, "teacher_scale leaves the teacher no pixel of the 64-px crop"),
    ({"consumer_teacher_scale": 0.007}, "consumer_teacher_scale leaves the teacher no pixel"),
    ({"consumer_teacher_scales": (0.875, 0.001)}, "consumer_teacher_scales leaves the teacher no pixel"),
    ({"consumer_fraction": 0.5, "consumer_short_side": 32}, "consumer short side 32 is smaller than the crop"),
    ({"lmbdas": ()}, r"num_levels must be in \[1, 1024\]"),
    ({"N": 0}, "N must be a channel count"),
    ({"batch": True}, "batch must be a whole number, at least 1"),
    ({"consumer_fraction": "abc"}, r"consumer_fraction must be a number in \[0, 1\]"),  # (was a TypeError)
    ({"ema_decay": 1.0}, r"ema_decay must be a number in \[0, 1\)"),
    ({"out_dir": float("nan")}, "out_dir must be a string"),
    ({"pre_editor": "yes"}, "pre_editor must be true or false"),
    ({"threads": 100_000}, "threads must be at most 1024"),  # (a segfault, and the machine starved)
    ({"device": "foo"}, "device must be 'cpu', 'cuda' or 'cuda:N'"),  # (torch's RuntimeError)
    ({"device": "mps"}, "device must be 'cpu', 'cuda' or 'cuda:N'"),
    ({"lmbdas": (0.0, 0.01)}, "lmbdas must all be above 0 to train"),  # (reported as a divergence)
])
def test_a_config_no_run_can_use_is_refused_before_anything_is_loaded(cfg, change, message):
    """(These failed deep inside torch, with a ZeroDivisionError, or trained on empty batches.)"""
    run = replace(cfg, **change, data_dir="/nonexistent")  # (checked before the data is read)
    with pytest.raises(ConfigError, match=f"training config: {message}"):
        train(run, progress=False)


def test_cuda_without_cuda_is_a_clear_error(cfg):
    if torch.cuda.is_available():
        pytest.skip("not available: this check needs a machine without CUDA (this one has a GPU)")
    from vlmcodec.errors import BackendUnavailableError

    with pytest.raises(BackendUnavailableError, match="device 'cuda' not available: torch sees no CUDA GPU"):
        train(replace(cfg, device="cuda"), progress=False)


def test_a_list_key_given_something_else_names_the_key(tmp_path):
    """(lmbdas = "abc" was "could not convert string to float: 'a'", no key named)"""
    path = tmp_path / "c.toml"
    for line, message in (('lmbdas = "abc"', r"lmbdas must be a list of float values, got 'abc'"),
                          ("lmbdas = 0.01", r"lmbdas must be a list of float values, got 0.01"),
                          ('teacher_layers = [3, "x"]', r"teacher_layers must be a list of int values"),
                          # (each element converted as it came: 3.9 → 3, true → 1, "0.5" → 0.5)
                          ("teacher_layers = [3.9]", r"teacher_layers must be a list of int values"),
                          ("teacher_layers = [true]", r"teacher_layers must be a list of int values"),
                          ('lmbdas = [0.01, "0.5"]', r"lmbdas must be a list of float values"),
                          ("train_only = [1]", r"train_only must be a list of str values")):
        path.write_text(line + "\n")
        with pytest.raises(ConfigError, match=f"training config: {message}"):
            TrainConfig.from_toml(path)
    path.write_text("lmbdas = [0.01, 0.02]\n")
    assert TrainConfig.from_toml(path).lmbdas == (0.01, 0.02)


def test_an_aux_loss_not_finite_skips_the_aux_update_and_counts_as_bad(cfg, monkeypatch, capsys):
    """The aux loss is measured after the main update (CompressAI's order): not finite, the
    quantiles keep their values, the step counts as bad, and enough in a row stop the run."""
    calls = {"n": 0}
    seen = {}
    real = MeanScaleHyperprior.aux_loss

    def aux_loss(self):
        calls["n"] += 1
        if calls["n"] == 2:  # the quantiles as step 1's aux update left them
            seen["quantiles"] = self.entropy_bottleneck.quantiles.detach().clone()
        loss = real(self)
        return loss * float("nan") if calls["n"] >= 2 else loss

    monkeypatch.setattr(MeanScaleHyperprior, "aux_loss", aux_loss)
    with pytest.raises(TrainingDivergedError, match=r"aux loss not finite at 2 steps in a row \(steps 2–3"):
        train(replace(cfg, steps=6, max_bad_steps=2), progress=False)
    assert "step 2: aux loss not finite after the step's update; the aux update is skipped" in capsys.readouterr().out
    state = torch.load(f"{cfg.out_dir}/last.pt", weights_only=False)
    assert state["step"] == 2 and torch.equal(state["model"]["entropy_bottleneck.quantiles"], seen["quantiles"])


def test_random_configs_are_usable_or_refused_with_a_vlmcodec_error():
    """1000 configs with 1-3 keys set to values of every kind (zero, negative, huge, NaN,
    infinity, strings, booleans, lists, tables): TrainConfig.check raises a VlmcodecError or
    passes, never another exception (a string consumer_fraction was a TypeError)."""
    import random
    from dataclasses import fields

    from vlmcodec.errors import VlmcodecError

    rng = random.Random(0)
    keys = [f.name for f in fields(TrainConfig)]
    values = [0, -1, 1, 64, 1e30, -0.5, float("nan"), float("inf"), "abc", "", True, [], [1, 2], ["x"], {"a": 1}, 3.5]
    refused = 0
    for _ in range(1000):
        raw = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(1, 3))}
        try:
            TrainConfig(**TrainConfig.with_tuples(raw)).check()
        except VlmcodecError:
            refused += 1
    assert refused > 500


def _tiny_teacher(monkeypatch):
    import vlmcodec.teacher as teacher_mod
    from vlmcodec.teacher import DinoV2Teacher, ViTConfig, VisionTransformer

    torch.manual_seed(0)
    tiny = DinoV2Teacher(VisionTransformer(ViTConfig(depth=2, embed_dim=64, num_heads=1, pos_grid=4)), name="tiny")
    monkeypatch.setattr(teacher_mod, "load_teacher", lambda name, device=None: tiny)


def test_a_reconstruction_not_finite_with_the_rank_term_is_a_bad_step(cfg, monkeypatch, capsys):
    """With w_rank > 0, tokens that are not finite made svdvals raise torch's _LinAlgError (a
    traceback, exit 1) instead of counting as a bad step."""
    _tiny_teacher(monkeypatch)
    real, calls = MeanScaleHyperprior.forward, {"n": 0}

    def forward(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 2:  # a diverging step's reconstruction
            out["x_hat"] = out["x_hat"] * float("nan")
        return out

    monkeypatch.setattr(MeanScaleHyperprior, "forward", forward)
    run = replace(cfg, steps=6, max_bad_steps=3, teacher="tiny", teacher_layers=(1, 2), w_tok=1.0, w_rank=1.0)
    with pytest.raises(TrainingDivergedError, match=r"not finite at 3 steps in a row \(steps 2–4"):
        train(run, progress=False)
    assert "step 2: loss or gradients not finite; the step is skipped" in capsys.readouterr().out


def test_rank_term_is_nan_for_tokens_not_finite_and_flat_without_a_gradient_burst():
    from vlmcodec.training.semantic import rank_distortion

    torch.manual_seed(0)
    ref = torch.randn(2, 16, 8)
    for bad in (float("nan"), float("inf")):
        hat = torch.randn(2, 16, 8)
        hat[0, 3, 1] = bad
        d = rank_distortion([hat], [ref])
        assert d[0].isnan() and d[1].isfinite()  # (svdvals raised _LinAlgError)
    # all tokens equal, or zero: no spectrum; normalising its rounding noise gave gradients of ~1e12
    for flat in (torch.zeros(2, 16, 8), torch.full((2, 16, 8), 3.0), 1 + 1e-6 * torch.randn(2, 16, 8)):
        hat = flat.clone().requires_grad_(True)
        d = rank_distortion([hat], [ref])
        d.sum().backward()
        assert torch.allclose(d, torch.ones(2)) and hat.grad.abs().max() < 1.0
    # ordinary tokens: the term as it was (an L1 distance of spectra normalised to sum 1)
    hat = torch.randn(2, 16, 8, dtype=torch.float64)

    def spectrum(t):
        s = torch.linalg.svdvals(t - t.mean(dim=1, keepdim=True))
        return s / s.sum(dim=-1, keepdim=True)

    want = (spectrum(hat) - spectrum(ref.double())).abs().sum(dim=-1)
    assert torch.equal(rank_distortion([hat], [ref.double()]), want)


def test_training_images_smaller_than_a_crop_are_named_in_a_warning(tmp_path):
    """Images smaller than the crop were dropped without a word (a folder of mostly small images
    trained on the few large ones)."""
    from PIL import Image

    from vlmcodec.errors import VlmcodecWarning
    from vlmcodec.training.data import CropSampler

    rng = np.random.default_rng(0)
    for name, (h, w) in {"big.png": (80, 96), "small.png": (40, 200), "tiny.png": (10, 10)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    with pytest.warns(VlmcodecWarning, match=r"2 of 3 training images .* smaller than a 64x64 crop and are not "
                                             r"used: small.png \(200x40\), tiny.png \(10x10\)"):
        sampler = CropSampler(tmp_path, 64)
    assert len(sampler.images) == 1 and sampler.too_small == ["small.png (200x40)", "tiny.png (10x10)"]
    with pytest.warns(VlmcodecWarning, match=r"of 6 \(3 at 2 sides\) .* big.png \(79x66 at short side 66\)"):
        CropSampler(tmp_path, 70, short_side=[66, 128], downscale=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (tmp_path / "small.png").unlink(), (tmp_path / "tiny.png").unlink()
        CropSampler(tmp_path, 64)  # every image used: no warning


@pytest.mark.parametrize("case, message", [
    ("missing", "training folder not found: .*missing"),
    ("file", "training folder .*file.png is not a folder"),  # (was "training folder not found")
    ("empty", "no images in .*empty"),
    ("small", "no image in .*small is at least 64 px on each side"),
])
def test_a_training_folder_without_usable_images_is_a_config_error(tmp_path, case, message):
    """(FileNotFoundError or ValueError before; still both, for the scripts that catch them)"""
    from vlmcodec.training.data import CropSampler

    folder = tmp_path / ("file.png" if case == "file" else case)
    if case == "file":
        folder.write_bytes(b"")
    elif case == "small":
        write_train_folder(folder, h=32, w=200)
    elif case == "empty":
        folder.mkdir()
    with pytest.raises(ConfigError, match=message) as e:
        CropSampler(folder, 64)
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)
