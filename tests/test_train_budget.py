"""Sizing a training run to one device call's time (vlmcodec.training.budget, device_train --fit-steps)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import run_bare_script, write_train_folder
from vlmcodec.errors import ConfigError
from vlmcodec.training.budget import fit_steps_to_time, resumed_steps
from vlmcodec.training.trainer import TrainConfig, lr_at, train


def _tiny_cfg(tmp_path, **kw) -> TrainConfig:
    data = write_train_folder(tmp_path / "data", h=160, w=192)
    base = dict(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                batch=1, steps=10_000, warmup=2, threads=1, lr=1e-3, lr_final=1e-5)
    return TrainConfig(**{**base, **kw})


def test_fit_sets_steps_from_the_probe_and_the_schedule_anneals(tmp_path):
    # only the probe runs; the budget is generous so a loaded machine cannot squeeze out the steps
    cfg = _tiny_cfg(tmp_path)
    fitted, info = fit_steps_to_time(cfg, seconds=60.0, probe_steps=6, margin_s=1.0)
    assert not info["resumed"] and info["steps"] == fitted.steps
    left = 60.0 - info["probe_s"] - info["setup_s"] - 1.0
    assert fitted.steps == pytest.approx(0.92 * left / info["sec_per_step"], abs=2)  # rounded figures in info
    assert cfg.warmup < fitted.steps < cfg.steps and 0 < fitted.time_limit_s < 60.0
    assert not (tmp_path / "run_probe").exists()  # the probe leaves nothing behind
    assert lr_at(fitted, fitted.steps) == pytest.approx(cfg.lr_final)  # the schedule ends at its final rate


def test_the_warm_up_starts_above_zero_and_reaches_the_rate_on_its_last_step(tmp_path):
    """Step s < warmup trains at lr · (s + 1) / warmup: no step at rate 0, the full rate at the
    last warm-up step, then the cosine from there down to lr_final."""
    cfg = _tiny_cfg(tmp_path, warmup=4, steps=20)
    assert [lr_at(cfg, s) for s in range(4)] == pytest.approx([cfg.lr * k / 4 for k in (1, 2, 3, 4)], rel=1e-12)
    assert lr_at(cfg, 0) > 0 and lr_at(cfg, cfg.warmup - 1) == cfg.lr == lr_at(cfg, cfg.warmup)
    assert lr_at(cfg, cfg.warmup + 1) < cfg.lr and lr_at(cfg, cfg.steps) == pytest.approx(cfg.lr_final)
    one = replace(cfg, warmup=1)
    assert lr_at(one, 0) == cfg.lr


def test_resumed_run_keeps_its_steps_without_a_probe(tmp_path):
    cfg = _tiny_cfg(tmp_path, steps=3)
    assert resumed_steps(cfg) is None
    train(cfg, progress=False)
    fitted, info = fit_steps_to_time(replace(cfg, steps=999), seconds=100.0, margin_s=10.0)
    assert info == {"resumed": True} and fitted.steps == 3 and fitted.time_limit_s == 90.0


def test_budget_too_small_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="warm-up"):
        fit_steps_to_time(_tiny_cfg(tmp_path), seconds=1.0, probe_steps=3)


def test_a_checkpoint_the_run_cannot_resume_is_a_config_error(tmp_path):
    """(a damaged last.pt gave pickle's UnpicklingError, one without its config a KeyError)"""
    cfg = _tiny_cfg(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"garbage, a truncated copy")
    with pytest.raises(ConfigError, match=r"cannot resume from .*last.pt: not a readable checkpoint"):
        fit_steps_to_time(cfg, seconds=30.0, probe_steps=3)
    torch.save({"model": {}, "opt": {}, "step": 3}, tmp_path / "run" / "last.pt")
    with pytest.raises(ConfigError, match=r"cannot resume from .*last.pt: it records no number of steps"):
        fit_steps_to_time(cfg, seconds=30.0, probe_steps=3)


def test_out_dir_dot_probes_beside_it(tmp_path, monkeypatch):
    """(out_dir "." failed: PosixPath('.') has an empty name)"""
    from vlmcodec.training import budget

    cfg = _tiny_cfg(tmp_path)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    probes = []

    def probe_train(probe, progress):
        probes.append(Path(probe.out_dir))
        return train(probe, progress=progress)

    monkeypatch.setattr(budget, "train", probe_train)
    fitted, info = fit_steps_to_time(replace(cfg, out_dir="."), seconds=60.0, probe_steps=3, margin_s=1.0)
    assert probes == [(tmp_path / "here_probe").resolve()] and not probes[0].exists()
    assert fitted.out_dir == "." and info["steps"] == fitted.steps > cfg.warmup


@pytest.mark.slow
def test_device_train_fit_steps_from_source_tree(tmp_path):
    """device_train.py --fit-steps as on the bare GPU machine (python -S, no C++ extension)."""
    cfg = _tiny_cfg(tmp_path)
    toml = tmp_path / "tiny.toml"
    toml.write_text(f'data_dir = "{cfg.data_dir}"\nout_dir = "{cfg.out_dir}"\nN = 8\nM = 12\n'
                    'lmbdas = [0.01, 0.05]\ncrop = 128\nbatch = 2\nsteps = 100000\nwarmup = 2\nthreads = 1\n'
                    'log_every = 10\nckpt_every = 100\n')
    r = run_bare_script("device_train.py", "--config", toml, "--time-limit", 40, "--fit-steps",
                        "--set", "lr=5e-4", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr[-2000:]
    info = json.loads((tmp_path / "out" / "fit.json").read_text())
    log = (tmp_path / "out" / "log.csv").read_text().splitlines()
    assert len((tmp_path / "out" / "log.jsonl").read_text().splitlines()) == len(log) - 1  # the same rows
    run_cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run_cfg["steps"] == info["steps"] < 100000 and run_cfg["lr"] == 5e-4  # fitted, and --set applied
    # the fitted schedule ran to its end, or nearly: the time limit stays the hard stop, and steps of
    # a few tens of ms on a loaded machine vary more than the 8 % the fit keeps in hand
    assert 0.75 * info["steps"] <= int(log[-1].split(",")[0]) <= info["steps"]
