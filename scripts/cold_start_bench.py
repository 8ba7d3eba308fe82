"""A server's cold start, phase by phase, in fresh processes: importing torch, importing
vlmcodec's codec, making a ``Codec`` (the default model), its first encode and decode of a
256-px Kodak image, then the same again warm. Medians over ``--rounds`` processes.

    python scripts/cold_start_bench.py --rounds 6
    python scripts/cold_start_bench.py --rounds 6 --compare-onnx-probe   # arms alternating

``--compare-onnx-probe`` runs a second arm in turn with the models asking
``torch.onnx.is_in_onnx_export()`` as they did before 23d33cd (which imported torch.onnx on a
new codec's first forward), so that the gain is measured side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from vlmcodec.bench.common import positive_arg

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak" / "kodim01.png"

WORKER = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import vlmcodec
from vlmcodec import codec as _codec_module
from vlmcodec.image_io import load_image
t2 = time.perf_counter()
if sys.argv[1] == "onnx_probe":
    import vlmcodec.layers as L, vlmcodec.models.pre_editor as P
    # the networks' check as it was: torch.onnx imported (and asked) at every forward pass
    L.tracing_here = P.tracing_here = lambda: torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
image = load_image(sys.argv[2])
t3 = time.perf_counter()
codec = vlmcodec.Codec(threads=2)
t4 = time.perf_counter()
data = codec.encode(image, 50, short_side=256)
t5 = time.perf_counter()
codec.decode(data)
t6 = time.perf_counter()
codec.encode(image, 50, short_side=256)
t7 = time.perf_counter()
codec.decode(data)
t8 = time.perf_counter()
ms = lambda a, b: 1000 * (b - a)
print(json.dumps({"import_torch": ms(t0, t1), "import_vlmcodec": ms(t1, t2), "codec": ms(t3, t4),
                  "first_encode": ms(t4, t5), "first_decode": ms(t5, t6), "warm_encode": ms(t6, t7),
                  "warm_decode": ms(t7, t8)}))
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=positive_arg, default=6, help="fresh processes per arm")
    p.add_argument("--image", default=str(KODAK))
    p.add_argument("--compare-onnx-probe", action="store_true", help="also the arm importing torch.onnx, alternating")
    p.add_argument("--out", help="write the medians as JSON here")
    args = p.parse_args(argv)
    arms = ["current", "onnx_probe"] if args.compare_onnx_probe else ["current"]
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            out = subprocess.run([sys.executable, "-c", WORKER, arm, args.image], capture_output=True, text=True,
                                 check=True)
            runs[arm].append(json.loads(out.stdout.splitlines()[-1]))
    medians = {a: {k: statistics.median(run[k] for run in rs) for k in rs[0]} for a, rs in runs.items()}
    for arm, m in medians.items():
        print(arm + ": " + ", ".join(f"{k} {v:.0f} ms" for k, v in m.items()))
    if args.compare_onnx_probe:
        print(f"Codec(): {medians['current']['codec']:.0f} vs {medians['onnx_probe']['codec']:.0f} ms "
              f"({medians['current']['codec'] / medians['onnx_probe']['codec']:.2f}x)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"rounds": args.rounds, "medians": medians}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
