"""The trainer's edges: config rules checked before anything loads, logs kept whole across kills,
time limits and resumes, niceness, checkpoints that are incomplete or fail to write."""

import csv
import json
import os
import types
import warnings
from dataclasses import replace

import pytest
import torch

from conftest import write_train_folder
from vlmcodec.cli import main
from vlmcodec.errors import ConfigError, VlmcodecWarning
from vlmcodec.training import trainer
from vlmcodec.training.trainer import TrainConfig, lr_at, train


@pytest.fixture
def cfg(tmp_path):
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    return TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                       batch=1, steps=4, warmup=1, threads=1, log_every=1, ckpt_every=2)


def rows_of(run) -> list[dict]:
    with open(f"{run}/log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_an_empty_log_csv_gets_its_header(cfg):
    """A kill -9 before the first row left a 0-byte log.csv; the rerun wrote rows without a header."""
    os.makedirs(cfg.out_dir)
    open(f"{cfg.out_dir}/log.csv", "w").close()
    train(replace(cfg, steps=2), progress=False)
    lines = open(f"{cfg.out_dir}/log.csv").read().splitlines()
    assert lines[0].startswith("step,lr,loss,") and [r["step"] for r in rows_of(cfg.out_dir)] == ["1", "2"]


@pytest.mark.parametrize("lmbdas", [(0.05, 0.005), (0.01, 0.01), (0.001, 0.01, 0.005)])
def test_lmbdas_must_strictly_increase(lmbdas):
    """Descending lmbdas gave quality 0 the finest quantiser; repeated ones two identical levels."""
    with pytest.raises(ConfigError, match="lmbdas must be strictly increasing"):
        TrainConfig(lmbdas=lmbdas).check()
    TrainConfig(lmbdas=(0.01,)).check()


@pytest.mark.parametrize("change, named", [({"w_tok": 4000.0}, "w_tok"), ({"w_rank": 1.0}, "w_rank"),
                                           ({"w_pix": 0.0}, "w_pix"),
                                           ({"w_pix": 0.0, "teacher": "dinov2-vits14"}, "w_pix")])
def test_token_terms_without_a_teacher_and_a_loss_of_rate_alone_are_refused(change, named):
    with pytest.raises(ConfigError, match=f"training config: {named}"):
        TrainConfig(**change).check()
    TrainConfig(teacher="dinov2-vits14", w_pix=0.0, w_tok=1.0).check()  # tokens alone: a distortion term
    TrainConfig(teacher="dinov2-vits14", w_tok=0.0).check()  # (the README's ablation: pixels alone)


def test_progress_off_a_terminal_is_not_redrawn_at_each_log_row(cfg, capsys):
    """set_postfix redrew the bar at every row, past mininterval's once a minute, into a log file."""
    train(replace(cfg, steps=8, log_every=1), progress=True)
    err = capsys.readouterr().err
    draws = [s for s in err.replace("\r", "\n").splitlines() if s.startswith("train")]
    assert 1 <= len(draws) <= 2, draws  # the first and the last


def test_nice_is_a_target_not_added_up_across_runs(cfg, monkeypatch):
    """nice 0 became 5 after fit_steps_to_time's probe and 10 after the run it sized."""
    state = {"nice": 0}

    def fake_nice(inc):
        if inc < 0 and state["nice"] + inc < 0:
            raise PermissionError(1, "Operation not permitted")
        state["nice"] += inc
        return state["nice"]

    monkeypatch.setattr(os, "nice", fake_nice)
    for i, nice in enumerate((3, 3, 1)):  # 1: never lowered back (that needs permission)
        train(replace(cfg, out_dir=f"{cfg.out_dir}{i}", steps=0, nice=nice), progress=False)
        assert state["nice"] == 3
    with pytest.raises(ConfigError, match="training config: nice -5 .*needs the permission"):
        train(replace(cfg, steps=0, nice=-5), progress=False)


@pytest.mark.parametrize("seed", [2**64, 2**64 - 1, -(2**63) - 1])
def test_a_seed_torch_cannot_take_is_refused_before_the_out_dir_is_made(cfg, seed):
    with pytest.raises(ConfigError, match="training config: seed"):
        train(replace(cfg, seed=seed), progress=False)
    assert not os.path.exists(cfg.out_dir)
    replace(cfg, seed=2**64 - 2).check()


@pytest.mark.parametrize("change, named", [
    ({"teacher_scale": 5.0}, "teacher_scale must be in"),
    ({"consumer_fraction": 0.5, "consumer_teacher_scale": 9.0}, "consumer_teacher_scale must be in"),
    ({"teacher_layers": (3, 13)}, r"teacher_layers \[3, 13\]: the teacher 'dinov2-vits14' has layers 1..12"),
    ({"teacher_layers": (0, 3)}, r"teacher_layers \[0, 3\]"),
])
def test_teacher_settings_are_checked_before_images_and_teacher_load(cfg, monkeypatch, change, named):
    """teacher_scale > 4 and layers the teacher lacks were found only after both had loaded."""
    import vlmcodec.teacher as teacher_mod

    def no_load(*args, **kwargs):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(teacher_mod, "load_teacher", no_load)
    bad = replace(cfg, data_dir=cfg.data_dir + "_missing", teacher="dinov2-vits14", w_tok=1.0, **change)
    with pytest.raises(ConfigError, match=named):
        train(bad, progress=False)


def test_layer_count_of_a_teacher_file_is_read_from_its_names(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "t.safetensors"
    save_file({f"blocks.{i}.norm1.weight": torch.zeros(2) for i in range(4)} | {"cls_token": torch.zeros(1, 1, 2)},
              str(path))
    with pytest.raises(ConfigError, match="has layers 1..4, not \\[6\\]"):
        TrainConfig(teacher=str(path), teacher_layers=(2, 6), w_tok=1.0).check()
    TrainConfig(teacher=str(path), teacher_layers=(2, 4), w_tok=1.0).check()


def test_logged_lr_is_the_one_the_windows_last_step_used(cfg):
    """The row for steps 5-6 showed lr_at(6), the next step's (the last row: lr_final, used by none)."""
    run = replace(cfg, steps=6, warmup=2, log_every=2, lr=1e-3, lr_final=5e-5)
    train(run, progress=False)
    rows = rows_of(run.out_dir)
    assert [r["step"] for r in rows] == ["2", "4", "6"]
    assert [r["lr"] for r in rows] == [f"{lr_at(run, s - 1):.3g}" for s in (2, 4, 6)]
    assert rows[-1]["lr"] != f"{run.lr_final:.3g}"


def test_a_resume_without_an_average_removes_the_stale_last_weights(cfg):
    from vlmcodec.models.checkpoint import load_model

    train(replace(cfg, ema_decay=0.9), progress=False)
    assert os.path.exists(f"{cfg.out_dir}/model_last.safetensors")
    train(replace(cfg, steps=6), progress=False)
    assert not os.path.exists(f"{cfg.out_dir}/model_last.safetensors")
    assert load_model(f"{cfg.out_dir}/model.safetensors").metadata["train_steps"] == "6"


@pytest.mark.parametrize("steps", [4, 2])
def test_a_resume_with_nothing_to_train_warns_and_keeps_config_json(cfg, steps):
    """steps below the checkpoint's (or a finished run) trained nothing, silently, and wrote the
    smaller steps into config.json while last.pt and the recipe said more."""
    train(cfg, progress=False)
    before = open(f"{cfg.out_dir}/config.json").read()
    with pytest.warns(VlmcodecWarning, match=f"last.pt is at step 4 .*steps {steps}.*nothing to train"):
        train(replace(cfg, steps=steps), progress=False)
    assert open(f"{cfg.out_dir}/config.json").read() == before
    assert torch.load(f"{cfg.out_dir}/last.pt", weights_only=False)["step"] == 4
    with warnings.catch_warnings():
        warnings.simplefilter("error", VlmcodecWarning)
        train(replace(cfg, steps=5), progress=False)  # more steps: no warning


def test_a_time_limit_stop_logs_its_last_partial_window_once(cfg, monkeypatch):
    """Stopped at step 5 with log_every 3: steps 4-5 were never logged, even after the resume."""
    calls = {"n": 0}
    real = trainer.rd_loss

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    def clock():  # the time limit is past once 5 steps ran
        return 1e6 if calls["n"] >= 5 else 0.0

    monkeypatch.setattr(trainer, "rd_loss", counting)
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=clock, time=lambda: 1.0))
    run = replace(cfg, steps=10, log_every=3, ckpt_every=100, time_limit_s=1000.0)
    train(run, progress=False)
    assert torch.load(f"{run.out_dir}/last.pt", weights_only=False)["step"] == 5
    assert [r["step"] for r in rows_of(run.out_dir)] == ["3", "5"]
    monkeypatch.undo()
    train(replace(run, time_limit_s=0.0), progress=False)
    rows = rows_of(run.out_dir)
    assert [r["step"] for r in rows] == ["3", "5", "6", "9", "10"] and all(r["loss"] for r in rows)
    assert [json.loads(line)["step"] for line in open(f"{run.out_dir}/log.jsonl")] == [3, 5, 6, 9, 10]


@pytest.mark.parametrize("key", ["sampler_rng", "torch_rng", "aux_opt"])
def test_a_checkpoint_missing_a_key_is_named(cfg, key):
    train(replace(cfg, steps=2), progress=False)
    ckpt = f"{cfg.out_dir}/last.pt"
    state = torch.load(ckpt, weights_only=False)
    del state[key]
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match=f"cannot resume from .*last.pt: it holds no {key}"):
        train(cfg, progress=False)


def fail_second_save(monkeypatch):
    """torch.save writes its first checkpoint, then fails half-way as on a full disk."""
    calls = {"n": 0}
    real = torch.save

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] < 2:
            return real(obj, f, *args, **kwargs)
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04" + b"\0" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2938048 vs 2937984")

    monkeypatch.setattr(torch, "save", save)


def test_a_checkpoint_that_fails_to_write_leaves_no_tmp_and_the_last_one_intact(cfg, monkeypatch, capsys):
    """A full disk mid-checkpoint gave torch's RuntimeError traceback and left last.pt.tmp."""
    fail_second_save(monkeypatch)
    with pytest.raises(OSError, match=r"cannot write the checkpoint .*last.pt: .*unexpected pos"):
        train(cfg, progress=False)
    assert not os.path.exists(f"{cfg.out_dir}/last.pt.tmp")
    assert torch.load(f"{cfg.out_dir}/last.pt", weights_only=False)["step"] == 2

    # through the command line: one line, exit 2
    toml = f'data_dir = "{cfg.data_dir}"\nout_dir = "{cfg.out_dir}_cli"\nN = 8\nM = 12\nlmbdas = [0.01, 0.05]\n' \
           'crop = 64\nbatch = 1\nsteps = 4\nwarmup = 1\nthreads = 1\nckpt_every = 2\n'
    path = f"{cfg.out_dir}.toml"
    open(path, "w").write(toml)
    fail_second_save(monkeypatch)
    capsys.readouterr()
    assert main(["train", "--config", path, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vlmcodec: error: cannot write the checkpoint") and "last.pt" in err[0]
    assert not os.path.exists(f"{cfg.out_dir}_cli/last.pt.tmp")
