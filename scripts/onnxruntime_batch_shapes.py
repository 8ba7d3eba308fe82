"""Cost of a backend's first run at each batch shape: the network stages of one Kodak image,
batched n times, for the batch sizes in the order given (repeat one to see its second run).

    python scripts/onnxruntime_batch_shapes.py 1,8,1,8,3,3,5,5 [--threads 1] [--backend onnxruntime]
        [--backend-option item_by_item=false]

Prints, per run, the seconds of ``Codec.analyse`` (pre-editor, g_a, h_a) and of
``Codec.synthesize`` (g_s). On onnxruntime the first run at a larger batch grows the arena,
which is what ``Engine.warmup`` moves out of the live requests' way; item by item (the CPU
default) a new batch size is no new shape.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from vlmcodec import Codec
from vlmcodec.bench.common import image_files
from vlmcodec.console import backend_option
from vlmcodec.image_io import load_image


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("batches", help="comma-separated batch sizes, run in this order")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--threads", type=int, default=1, help="the codec's threads (default 1, as under the Engine)")
    p.add_argument("--quality", type=float, default=60.0)
    p.add_argument("--backend-option", type=backend_option, action="append", metavar="KEY=VALUE",
                   help="an option of the backend, repeatable (e.g. item_by_item=false)")
    a = p.parse_args()
    codec = Codec(backend=a.backend, threads=a.threads, backend_options=dict(a.backend_option or ()))
    img: np.ndarray = load_image(image_files(None)[0])
    prep = codec.prepare(img, a.quality)
    latent = codec.entropy_decode(codec.encode(img, a.quality))
    for n in (int(v) for v in a.batches.split(",")):
        t = time.perf_counter()
        codec.analyse([prep.pixels] * n, [prep.quality] * n)
        te = time.perf_counter() - t
        t = time.perf_counter()
        codec.synthesize([latent] * n)
        td = time.perf_counter() - t
        print(f"batch {n}: analyse {te:.2f} s ({te / n:.2f}/img), synthesize {td:.2f} s ({td / n:.2f}/img)",
              flush=True)


if __name__ == "__main__":
    main()
