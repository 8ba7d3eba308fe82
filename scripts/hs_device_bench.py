"""Exact h_s on the CPU against ``hs_device`` (default cuda), side by side in one process: median
wall time per call at a few image sizes, and whether the parameters are bit-identical.

    python scripts/hs_device_bench.py                    # on the GPU machine
    python scripts/hs_device_bench.py --device cpu-im2col  # the GPU formulation on the CPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vlmcodec.codec import default_model_path
from vlmcodec.entropy.exact_hyper import ExactHyperSynthesis
from vlmcodec.models.checkpoint import load_model


def timed(fn, z, reps: int) -> float:
    fn(z)  # first call: one-off costs (CUDA context, cuBLAS handles) are not what is measured
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(z)  # returns CPU tensors: the device work is synchronised inside
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu-im2col")
    ap.add_argument("--sizes", default="512x768,1536x2048,3008x4032", help="image sizes HxW")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    model = load_model(default_model_path()).model
    cpu = ExactHyperSynthesis.from_module(model.h_s)
    other = cpu.to("cpu", im2col=True) if args.device == "cpu-im2col" else cpu.to(args.device)
    if other.device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(other.device)}, torch {torch.__version__}")
    print(f"CPU threads: {torch.get_num_threads()}")
    g = torch.Generator().manual_seed(0)
    n = model.config.N if hasattr(model, "config") else cpu.layers[0].weight.shape[1]
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.lower().split("x"))
        z = torch.round(torch.randn(1, n, -(-h // 64), -(-w // 64), generator=g) * 8)
        same = all(torch.equal(a, b) for a, b in zip(cpu(z), other(z)))
        t_cpu, t_other = timed(cpu, z, args.reps), timed(other, z, args.reps)
        print(f"{h}x{w}: cpu {1000 * t_cpu:8.1f} ms   {args.device} {1000 * t_other:8.1f} ms "
              f"({t_other / t_cpu:.2f}x)   bit-identical {same}")


if __name__ == "__main__":
    main()
