"""A training run stopped by a signal, resumed with another config, run twice at once, or given
empty paths: what it keeps, says and refuses."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace

import pytest
import torch

from conftest import write_train_folder
from vlmcodec.cli import main
from vlmcodec.errors import ConfigError, VlmcodecWarning
from vlmcodec.training.trainer import TrainConfig, train


@pytest.fixture
def cfg(tmp_path):
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    return TrainConfig(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                       batch=1, steps=2, warmup=1, threads=1, log_every=1, ckpt_every=2)


def _saved_config(run) -> dict:
    return torch.load(f"{run}/last.pt", map_location="cpu", weights_only=False)["config"]


def test_a_resume_with_another_config_says_what_differs_and_keeps_init_from_and_seed(cfg, tmp_path):
    """A resume given another init_from ignored it without a word while config.json and the model
    file recorded it; other changes (lr, crop, ...) went unsaid."""
    train(cfg, progress=False)
    other = replace(cfg, steps=4, lr=5e-4, seed=7, init_from=str(tmp_path / "nowhere.safetensors"))
    with pytest.warns(VlmcodecWarning, match="another config") as caught:
        train(other, progress=False)
    note = str(caught[0].message)
    assert "goes on with lr 0.001 -> 0.0005" in note and "seed 0 -> 7" in note and "not taken" in note, note
    assert f"init_from '' -> '{other.init_from}'" in note, note
    assert "steps" not in note  # (more steps: what a resume is for)
    saved = _saved_config(cfg.out_dir)
    assert (saved["init_from"], saved["seed"], saved["lr"], saved["steps"]) == ("", 0, 5e-4, 4)
    assert json.loads(open(f"{cfg.out_dir}/config.json").read())["init_from"] == ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same config again: no note
        train(replace(other, steps=5, seed=0, init_from=""), progress=False)


def test_a_second_run_on_the_same_out_dir_is_refused(cfg):
    """Two runs at once on one out_dir both finished, their log rows interleaved."""
    import fcntl

    os.makedirs(cfg.out_dir)
    with open(f"{cfg.out_dir}/.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # (as a run in another process holds it)
        with pytest.raises(ConfigError, match="another training run is using"):
            train(cfg, progress=False)
    assert not os.path.exists(f"{cfg.out_dir}/last.pt")
    train(cfg, progress=False)  # released: it runs


def test_an_earlier_runs_file_of_the_other_kind_goes(cfg):
    """A weights.safetensors of an earlier run (no C++ extension then) stayed beside this run's
    model.safetensors of more steps, and the other way round."""
    os.makedirs(cfg.out_dir)
    stale = f"{cfg.out_dir}/weights.safetensors"
    open(stale, "wb").write(b"an earlier run's weights")
    train(cfg, progress=False)
    assert os.path.exists(f"{cfg.out_dir}/model.safetensors") and not os.path.exists(stale)


def test_empty_paths_are_refused(cfg, capsys):
    """--out-dir "" trained into the current folder (resuming any last.pt there); --init-from ""
    dropped the config's init_from without a word."""
    with pytest.raises(ConfigError, match="out_dir must name a folder"):
        replace(cfg, out_dir=" ").check()
    with pytest.raises(ConfigError, match="data_dir must name a folder"):
        replace(cfg, data_dir="").check()
    toml = cfg.out_dir + ".toml"
    with open(toml, "w") as f:
        f.write(f'data_dir = "{cfg.data_dir}"\nN = 8\nM = 12\nlmbdas = [0.01, 0.05]\ncrop = 64\nbatch = 1\n')
    for flag in ("--out-dir", "--init-from"):
        assert main(["train", "--config", toml, flag, "", "--steps", "1"]) == 2
        assert f"{flag} is empty" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_ends_the_step_then_saves_the_checkpoint_and_model(cfg, tmp_path, signum, code):
    """Ctrl-C or SIGTERM lost every step since the last checkpoint (up to ckpt_every) and wrote no
    model file; the run now ends its step, saves both, then exits as the signal says."""
    toml = tmp_path / "t.toml"
    toml.write_text(f'data_dir = "{cfg.data_dir}"\nout_dir = "{cfg.out_dir}"\nN = 8\nM = 12\nlmbdas = [0.01, 0.05]\n'
                    'crop = 64\nbatch = 1\nsteps = 100000\nwarmup = 1\nthreads = 1\nlog_every = 1\n'
                    'ckpt_every = 100000\n')
    proc = subprocess.Popen([sys.executable, "-m", "vlmcodec", "train", "--config", str(toml), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "log.csv"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= 4:  # header and 3 steps
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == code, err[-2000:]
    assert "stopped at step" in out and "stopping after this step" in out, (out[-2000:], err[-2000:])
    step = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)["step"]
    logged = [int(r.split(",")[0]) for r in log.read_text().splitlines()[1:]]
    assert step >= 3 and logged[-1] == step, (step, logged)
    assert (tmp_path / "run" / "model.safetensors").exists()


def test_set_gives_text_keys_the_text_itself():
    """--set out_dir=2024-01-05 was a TOML date ("out_dir must be a string, got datetime.date"),
    --set data_dir=123 a number."""
    from dataclasses import fields

    from vlmcodec.training.overrides import TEXT_KEYS, parse_sets

    assert TEXT_KEYS == {f.name for f in fields(TrainConfig) if f.type in ("str", str)}
    got = parse_sets(["out_dir=2024-01-05", "data_dir=123", 'teacher="dinov2-vits14"', "lr=1e-4", "init_from=a b"])
    assert got == {"out_dir": "2024-01-05", "data_dir": "123", "teacher": "dinov2-vits14", "lr": 1e-4,
                   "init_from": "a b"}


def test_convert_from_checkpoint_makes_the_runs_model_file(cfg, tmp_path, capsys):
    """After a Ctrl-C or a crash, last.pt was the run's only output and no command read it:
    `convert --from-model last.pt` said "header too large". convert --from-checkpoint writes
    the model file the run would have (the same fingerprint), read without running pickled code."""
    from vlmcodec.models.checkpoint import load_model

    train(cfg, progress=False)
    out = tmp_path / "from_ckpt.safetensors"
    assert main(["convert", "--from-checkpoint", f"{cfg.out_dir}/last.pt", "-o", str(out)]) == 0
    assert load_model(out).fingerprint == load_model(f"{cfg.out_dir}/model.safetensors").fingerprint
    capsys.readouterr()
    assert main(["convert", "--from-model", f"{cfg.out_dir}/last.pt", "-o", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "--from-checkpoint" in err and "header too large" not in err, err
    assert main(["convert", "--from-checkpoint", f"{cfg.out_dir}/model.safetensors", "-o",
                 str(tmp_path / "y.safetensors")]) == 2
    assert "not a vlmcodec training checkpoint" in capsys.readouterr().err


def test_a_schedule_that_is_likely_a_mistake_is_named(cfg):
    """steps 0 wrote an untrained model, warmup >= steps never reached lr, lr_final > lr rose: all
    without a word."""
    from vlmcodec.training.trainer import _schedule_notes

    assert _schedule_notes(cfg) == []
    assert "untrained" in _schedule_notes(replace(cfg, steps=0))[0]
    assert "never reaches lr" in _schedule_notes(replace(cfg, warmup=5, steps=4))[0]
    assert "rises" in _schedule_notes(replace(cfg, lr_final=0.01))[0]
    assert _schedule_notes(replace(cfg, warmup=4, steps=4)) == []  # (its last step reaches lr)
    with pytest.warns(VlmcodecWarning, match="warmup 5 > steps 2"):
        train(replace(cfg, warmup=5), progress=False)


def test_loading_the_teacher_leaves_the_runs_random_state_alone(monkeypatch, cfg):
    """The teacher's random initialisation drew from the global random state after a resume had
    restored it: a resumed token-loss run drew other noise than an unbroken one."""
    import types

    import vlmcodec.teacher
    from vlmcodec.training import trainer

    def loader(name, device=None):
        torch.nn.Linear(64, 64)  # (a model made at random, as the teacher's ViT is before its weights load)
        return types.SimpleNamespace(num_layers=12)

    monkeypatch.setattr(vlmcodec.teacher, "load_teacher", loader)
    torch.manual_seed(5)
    before = torch.get_rng_state()
    trainer._semantic_term(replace(cfg, teacher="dinov2-vits14", w_tok=1.0), torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), before)


def test_a_gpu_trained_models_recipe_refines_with_the_installed_teacher():
    """configs/semantic.toml's teacher is the GPU machine's packed file, a relative path of that
    machine: a model trained there could not refine anywhere else ("teacher weights not found")."""
    from vlmcodec.refine import RefineObjective

    recipe = json.dumps({"teacher": "gpu_data/dinov2_vits14_int8.safetensors", "w_tok": 4000.0, "w_pix": 1.0})
    assert RefineObjective.from_recipe({"train_recipe": recipe}).teacher == "dinov2-vits14"
    other = json.dumps({"teacher": "/models/siglip", "w_tok": 1.0})
    assert RefineObjective.from_recipe({"train_recipe": other}).teacher == "/models/siglip"
