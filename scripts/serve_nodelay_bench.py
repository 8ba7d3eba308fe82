"""Side by side: one RemoteCodec client's requests, one after another on its keep-alive
connection, to an in-process server whose sockets have Nagle's algorithm on (the server before
TCP_NODELAY) or off, alternating round by round. An answer's head and body are two writes; with
Nagle's algorithm the second waits for the client's delayed ACK of the first (~40 ms).

    python scripts/serve_nodelay_bench.py --rounds 3 --out results/serve/nodelay.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from vlmcodec import Codec
from vlmcodec.bench.common import positive_arg
from vlmcodec.image_io import load_image
from vlmcodec.runtime import Engine, RemoteCodec
from vlmcodec.runtime.http_handler import RequestHandler
from vlmcodec.runtime.server import running_server

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"


def one_arm(nodelay: bool, img, requests: int) -> dict:
    RequestHandler.disable_nagle_algorithm = nodelay
    with running_server(Engine(Codec(threads=2), block=False), quiet=True) as server:
        remote = RemoteCodec(server.url)
        data = remote.encode(img, 50)
        remote.decode(data)
        remote.health()  # (warm)
        out = {}
        for name, call in (("health", remote.health), ("encode", lambda: remote.encode(img, 50)),
                           ("decode", lambda: remote.decode(data))):
            start = time.perf_counter()
            for _ in range(requests):
                call()
            out[name] = 1000 * (time.perf_counter() - start) / requests
        remote.close()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=positive_arg, default=3)
    ap.add_argument("--requests", type=positive_arg, default=20)
    ap.add_argument("--side", type=positive_arg, default=256, help="the image: a SIDE x SIDE crop of the first sample")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    img = load_image(sorted(SAMPLES.glob("*.png"))[0])[: a.side, : a.side]
    runs: dict[str, list[dict]] = {"nagle": [], "nodelay": []}
    for rnd in range(a.rounds):
        for arm in ("nagle", "nodelay"):
            runs[arm].append(one_arm(arm == "nodelay", img, a.requests))
            print(f"round {rnd} {arm}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in runs[arm][-1].items()), flush=True)
    medians = {arm: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for arm, rs in runs.items()}
    for k in medians["nagle"]:
        print(f"{k}: median {medians['nagle'][k]:.1f} ms with Nagle, {medians['nodelay'][k]:.1f} ms without "
              f"({medians['nagle'][k] / medians['nodelay'][k]:.2f}x)")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"image": f"{img.shape[1]}x{img.shape[0]}", "requests": a.requests,
                                     "runs_ms": runs, "medians_ms": medians}, indent=1) + "\n")


if __name__ == "__main__":
    main()
