"""Side by side: ``RemoteCodec.encode`` of in-memory images sending the pixels as they are
(``/encode?width=W&height=H``, now) against sending them as a PNG at zlib level 0 (before).
One `vlmcodec serve` process serves both arms; the arms alternate round by round, each round
encoding every image once with ``--concurrency`` client threads. Every arm's streams must be
byte-identical. Reported: images per second (medians) and the raw/PNG time ratio.

    python scripts/remote_upload_bench.py --rounds 3
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

from _served import client_bench_args, report, start_server


def main() -> int:
    args = client_bench_args(__doc__, rounds=3)

    from vlmcodec.image_io import image_bytes, load_image
    from vlmcodec.runtime import RemoteCodec

    images = [load_image(f) for f in sorted(Path(args.images).glob("*.png"))]
    proc, url = start_server()
    try:
        remote = RemoteCodec(url)

        def raw(img):
            return remote.encode(img, quality=args.quality)

        def png0(img):  # what RemoteCodec.encode sent before
            query = urlencode({"quality": args.quality})
            return remote._post(f"/encode?{query}", image_bytes(img, "PNG", 0))[0]

        arms = {"png level 0 (before)": png0, "raw pixels (now)": raw}
        times: dict[str, list[float]] = {name: [] for name in arms}
        streams: dict[str, list[bytes]] = {}
        with ThreadPoolExecutor(args.concurrency) as pool:
            for fn in arms.values():
                list(pool.map(fn, images))  # warm-up pass
            for r in range(args.rounds):
                for name, fn in arms.items():
                    t = time.perf_counter()
                    streams[name] = list(pool.map(fn, images))
                    times[name].append(time.perf_counter() - t)
                    print(f"round {r + 1} {name}: {len(images) / times[name][-1]:.2f} img/s", flush=True)
        first, *rest = streams.values()
        assert all(s == first for s in rest), "the arms' streams differ"
    finally:
        proc.terminate()
        proc.wait(30)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    before, now = med["png level 0 (before)"], med["raw pixels (now)"]
    result = {"images": len(images), "concurrency": args.concurrency, "rounds": args.rounds,
              "img_per_s": {name: len(images) / m for name, m in med.items()},
              "raw_over_png_time": now / before, "streams_identical": True}
    return report(result, args.out)


if __name__ == "__main__":
    sys.exit(main())
