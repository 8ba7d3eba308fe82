"""Size a training run to a wall-time budget (one device call): measure the step time on a short
throwaway probe, then set ``steps`` so the learning-rate schedule anneals fully before the budget
ends — a run cut off by ``time_limit_s`` alone would stop mid-schedule, at a high learning rate."""

from __future__ import annotations

import csv
import shutil
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from ..errors import ConfigError
from .trainer import TrainConfig, _resume_state, train

EXPORT_MARGIN_S = 15.0  # the final checkpoint, model file and fp16 export after the last step


def resumed_steps(cfg: TrainConfig) -> int | None:
    """The ``steps`` of the run already in ``cfg.out_dir`` (a later slice keeps its schedule), else
    None. ConfigError, as the run itself would give, for a checkpoint it could not resume from."""
    ckpt = Path(cfg.out_dir) / "last.pt"
    if not ckpt.exists():
        return None
    saved = _resume_state(ckpt, cfg, torch.device("cpu"), complete=False).get("config")  # (the run checks the rest)
    steps = saved.get("steps") if isinstance(saved, dict) else None
    if not (isinstance(steps, int) and not isinstance(steps, bool)):
        raise ConfigError(f"cannot resume from {ckpt}: it records no number of steps (its config); "
                          "remove it to start afresh, or give another out_dir")
    return steps


def fit_steps_to_time(cfg: TrainConfig, seconds: float, probe_steps: int = 30, safety: float = 0.92,
                      margin_s: float = EXPORT_MARGIN_S) -> tuple[TrainConfig, dict]:
    """``cfg`` with ``steps`` and ``time_limit_s`` set so that training (probe included) fits in
    ``seconds``; returns it with the probe's measurements. A run to resume keeps its own steps."""
    t_start = time.perf_counter()
    prior = resumed_steps(cfg)
    if prior is not None:
        return replace(cfg, steps=prior, time_limit_s=max(1.0, seconds - margin_s)), {"resumed": True}
    log_every = max(1, probe_steps // 3)
    out = Path(cfg.out_dir).resolve()  # (out_dir "." has no name to add to)
    probe_dir = out.parent / f"{out.name}_probe"
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe = replace(cfg, out_dir=str(probe_dir), steps=probe_steps, time_limit_s=0.0,
                    log_every=log_every, ckpt_every=10**9, warmup=min(cfg.warmup, probe_steps))
    train(probe, progress=False)
    with open(probe_dir / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    shutil.rmtree(probe_dir, ignore_errors=True)
    probe_s = time.perf_counter() - t_start
    # the first window carries the first steps' one-off costs (cuDNN autotuning, allocator warm-up);
    # the mean of the others, not their median: the run pays its occasional slow steps too
    later = rows[1:] or rows
    sec_per_step = statistics.fmean(float(r["sec_per_step"]) for r in later)
    stepping_s = sum(float(r["sec_per_step"]) * log_every for r in rows)
    setup_s = max(0.0, probe_s - stepping_s)  # data, model, teacher: paid again by the real run
    left = seconds - probe_s - setup_s - margin_s
    steps = int(safety * left / sec_per_step)
    if steps <= cfg.warmup:
        raise ConfigError(f"a {seconds:g} s budget leaves {max(steps, 0)} steps at {sec_per_step:.3f} s/step, "
                          f"not more than the {cfg.warmup} warm-up steps: give more time or a smaller warmup")
    info = {"resumed": False, "probe_s": round(probe_s, 2), "setup_s": round(setup_s, 2),
            "sec_per_step": round(sec_per_step, 4), "steps": steps}
    return replace(cfg, steps=steps, time_limit_s=max(1.0, left)), info
