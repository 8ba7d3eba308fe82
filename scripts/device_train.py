"""Train on the GPU device machine within one call's time limit, from the source tree.

Each device call may run 10 minutes, and the machine keeps ignored files (runs/) only while it
stays warm, so training goes in slices: every call trains for ``--time-limit`` seconds, resumes
from ``out_dir/last.pt`` when it is there, and writes the model's weights as fp16 (small enough to
carry back) into ``$OUT``. Back on a machine with vlmcodec installed:

    vlmcodec convert --from-weights weights.safetensors -o engine/weights/default.safetensors

Usage (the run tool, carrying gpu_data):
    python scripts/device_train.py --config configs/gpu.toml --time-limit 520

``--fit-steps`` sizes the run to the call instead of the config's ``steps``: a short probe measures
the step time and the cosine schedule is set to end inside ``--time-limit`` (probe included), for
sessions that get one slice only (a run cut off mid-schedule stops at a high learning rate). A run
already in ``out_dir`` keeps its steps and resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import source_tree  # noqa: E402

source_tree.activate()

from vlmcodec.training.budget import fit_steps_to_time  # noqa: E402
from vlmcodec.training.overrides import merge_overrides  # noqa: E402
from vlmcodec.errors import TrainingDivergedError  # noqa: E402
from vlmcodec.training.trainer import TrainConfig, export_weights, train  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--time-limit", type=float, default=520.0, help="seconds of training in this call")
    p.add_argument("--steps", type=int)
    p.add_argument("--fit-steps", action="store_true",
                   help="set steps so the schedule ends within --time-limit (a timed probe first)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (TOML value)")
    p.add_argument("--out", default=os.environ.get("OUT", "out"), help="where the weights go (default $OUT)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = merge_overrides(a.set, steps=a.steps, time_limit_s=a.time_limit)
    cfg = TrainConfig.from_toml(a.config, **overrides)
    if a.fit_steps:
        cfg, info = fit_steps_to_time(cfg, a.time_limit)
        print("fit-steps:", json.dumps(info), flush=True)
        (out / "fit.json").write_text(json.dumps(info, indent=2))
    # SIGTERM (a time limit's, a tool stopping the call) as Ctrl-C: the trainer ends its step and
    # saves, then the weights are exported here (its default action killed the process first)
    signal.signal(signal.SIGTERM, _interrupt)
    ckpt, status, why = Path(cfg.out_dir) / "last.pt", 0, ""
    try:
        ckpt = train(cfg, progress=False)
    except TrainingDivergedError as e:
        # the device time is spent either way: the last checkpoint (intact) still comes back, with
        # the logs that show where the run went wrong; exit 3 says it diverged
        print(f"device_train: {e}", file=sys.stderr, flush=True)
        status, why = 3, " — of the last checkpoint before the run diverged"
    except KeyboardInterrupt:
        print("device_train: interrupted; the last checkpoint's weights still go to $OUT", file=sys.stderr, flush=True)
        status, why = 130, " — of the checkpoint saved when the run was stopped"
    except Exception as e:  # noqa: BLE001 — out of memory, a CUDA error...: what was saved still comes back
        print(f"device_train: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        status, why = 1, " — of the last checkpoint before the run failed"
    if ckpt.exists():
        _export(ckpt, Path(cfg.out_dir), out, why)
    return status


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _export(ckpt: Path, run: Path, out: Path, why: str) -> None:
    """The checkpoint's fp16 weights (its average, and with one the last step's too: a short slice's
    average is still mostly the model it started from) and the logs, into ``out``."""
    import torch

    export_weights(ckpt, out / "weights.safetensors")
    if torch.load(ckpt, map_location="cpu", weights_only=True).get("ema") is not None:
        export_weights(ckpt, out / "weights_last.safetensors", average=False)
    for log in ("log.csv", "log.jsonl"):
        if (run / log).exists():
            shutil.copy(run / log, out / log)
    print(f"weights: {out / 'weights.safetensors'} ({(out / 'weights.safetensors').stat().st_size / 1e6:.1f} MB)"
          + why, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
