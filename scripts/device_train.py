"""Train on the GPU device machine within one call's time limit, from the source tree.

Each device call may run 10 minutes, and the machine keeps ignored files (runs/) only while it
stays warm, so training goes in slices: every call trains for ``--time-limit`` seconds, resumes
from ``out_dir/last.pt`` when it is there, and writes the model's weights as fp16 (small enough to
carry back) into ``$OUT``. Back on a machine with vlmcodec installed:

    vlmcodec convert --from-weights weights.safetensors -o engine/weights/default.safetensors

Usage (the run tool, carrying gpu_data):
    python scripts/device_train.py --config configs/gpu.toml --time-limit 520
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import source_tree  # noqa: E402

source_tree.activate()

from vlmcodec.training.trainer import TrainConfig, export_weights, train  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--time-limit", type=float, default=520.0, help="seconds of training in this call")
    p.add_argument("--steps", type=int)
    p.add_argument("--out", default=os.environ.get("OUT", "out"), help="where the weights go (default $OUT)")
    a = p.parse_args()
    cfg = TrainConfig.from_toml(a.config, steps=a.steps, time_limit_s=a.time_limit)
    ckpt = train(cfg, progress=False)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    export_weights(ckpt, out / "weights.safetensors")
    shutil.copy(Path(cfg.out_dir) / "log.csv", out / "log.csv")
    print(f"weights: {out / 'weights.safetensors'} ({(out / 'weights.safetensors').stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
