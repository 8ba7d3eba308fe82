"""Sizing a training run to one device call's time (vlmcodec.training.budget, device_train --fit-steps)."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import smooth_image
from vlmcodec.errors import ConfigError
from vlmcodec.training.budget import fit_steps_to_time, resumed_steps
from vlmcodec.training.trainer import TrainConfig, lr_at, train

ROOT = Path(__file__).resolve().parent.parent


def _tiny_cfg(tmp_path, **kw) -> TrainConfig:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(smooth_image(rng, 96, 128)).save(data / f"{i}.png")
    base = dict(data_dir=str(data), out_dir=str(tmp_path / "run"), N=8, M=12, lmbdas=(0.01, 0.05), crop=64,
                batch=1, steps=10_000, warmup=2, threads=1, lr=1e-3, lr_final=1e-5)
    return TrainConfig(**{**base, **kw})


def test_fit_sets_steps_from_the_probe_and_the_schedule_anneals(tmp_path):
    cfg = _tiny_cfg(tmp_path)
    fitted, info = fit_steps_to_time(cfg, seconds=6.0, probe_steps=6, margin_s=1.0)
    assert not info["resumed"] and info["steps"] == fitted.steps
    left = 6.0 - info["probe_s"] - info["setup_s"] - 1.0
    assert fitted.steps == pytest.approx(0.92 * left / info["sec_per_step"], abs=2)  # rounded figures in info
    assert cfg.warmup < fitted.steps < cfg.steps and 0 < fitted.time_limit_s < 6.0
    assert not (tmp_path / "run_probe").exists()  # the probe leaves nothing behind
    assert lr_at(fitted, fitted.steps) == pytest.approx(cfg.lr_final)  # the schedule ends at its final rate


def test_resumed_run_keeps_its_steps_without_a_probe(tmp_path):
    cfg = _tiny_cfg(tmp_path, steps=3)
    assert resumed_steps(cfg) is None
    train(cfg, progress=False)
    fitted, info = fit_steps_to_time(replace(cfg, steps=999), seconds=100.0, margin_s=10.0)
    assert info == {"resumed": True} and fitted.steps == 3 and fitted.time_limit_s == 90.0


def test_budget_too_small_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="warm-up"):
        fit_steps_to_time(_tiny_cfg(tmp_path), seconds=1.0, probe_steps=3)


@pytest.mark.slow
def test_device_train_fit_steps_from_source_tree(tmp_path):
    """device_train.py --fit-steps as on the bare GPU machine (python -S, no C++ extension)."""
    cfg = _tiny_cfg(tmp_path)
    toml = tmp_path / "tiny.toml"
    toml.write_text(f'data_dir = "{cfg.data_dir}"\nout_dir = "{cfg.out_dir}"\nN = 8\nM = 12\n'
                    'lmbdas = [0.01, 0.05]\ncrop = 64\nbatch = 1\nsteps = 100000\nwarmup = 2\nthreads = 1\n')
    paths = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    r = subprocess.run([sys.executable, "-S", str(ROOT / "scripts" / "device_train.py"), "--config", str(toml),
                        "--time-limit", "25", "--fit-steps", "--set", "lr=5e-4", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    info = json.loads((tmp_path / "out" / "fit.json").read_text())
    log = (tmp_path / "out" / "log.csv").read_text().splitlines()
    assert int(log[-1].split(",")[0]) == info["steps"] < 100000  # ran its fitted schedule to the end
    assert json.loads((tmp_path / "run" / "config.json").read_text())["lr"] == 5e-4
