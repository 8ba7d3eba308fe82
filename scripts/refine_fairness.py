"""What sharing the refine workers between owners buys a client beside a flood of refined encodes.

One Engine (the default model, one refine worker) and two owners: "flood" queues ``--flood``
refined encodes at once, then "polite" asks one. With owners named (the server's way,
``submit_encode(..., owner=)``) the polite request gets the worker next; with no owner named
(every request the same owner, the engine's order before the sharing: arrival) it waits behind
the whole flood. The two arms alternate ``--rounds`` times; each round records the polite
request's latency and the flood's total time.

    python scripts/refine_fairness.py [--flood 6] [--refine 3] [--rounds 2]
        → results/refine_fairness/fairness.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from vlmcodec.bench.common import count_arg, positive_arg

ROOT = Path(__file__).resolve().parents[1]


def one_round(engine, image, flood: int, refine: int, named: bool) -> dict:
    t0 = time.perf_counter()
    futs = [engine.submit_encode(image, 50, refine=refine, owner="flood" if named else None) for _ in range(flood)]
    t_polite = time.perf_counter()
    polite = engine.submit_encode(image, 50, refine=refine, owner="polite" if named else None)
    polite.result()
    polite_s = time.perf_counter() - t_polite
    for f in futs:
        f.result()
    return {"polite_s": polite_s, "flood_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flood", type=count_arg, default=6)
    p.add_argument("--refine", type=positive_arg, default=3)
    p.add_argument("--rounds", type=positive_arg, default=2)
    p.add_argument("--out", default=str(ROOT / "results/refine_fairness/fairness.json"))
    a = p.parse_args(argv)

    from vlmcodec import Codec
    from vlmcodec.image_io import load_image
    from vlmcodec.runtime import Engine

    image = load_image(ROOT / "assets/samples/kodim23.png")
    codec = Codec(short_side=256)
    codec.encode(image, 50, refine=1)  # teacher loaded, first-call costs paid
    arms: dict[str, list[dict]] = {"owners": [], "no_owners": []}
    with Engine(codec, refine_workers=1) as engine:
        for r in range(a.rounds):
            for arm in (("owners", "no_owners") if r % 2 == 0 else ("no_owners", "owners")):
                arms[arm].append(one_round(engine, image, a.flood, a.refine, arm == "owners"))
                print(arm, {k: round(v, 2) for k, v in arms[arm][-1].items()}, flush=True)
    med = {arm: {k: statistics.median(x[k] for x in runs) for k in ("polite_s", "flood_s")} for arm, runs in arms.items()}
    out = {"command": f"python scripts/refine_fairness.py --flood {a.flood} --refine {a.refine} --rounds {a.rounds}",
           "image": "assets/samples/kodim23.png at short side 256", "rounds": arms, "medians": med,
           "polite_ratio": med["owners"]["polite_s"] / med["no_owners"]["polite_s"],
           "flood_ratio": med["owners"]["flood_s"] / med["no_owners"]["flood_s"]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("medians", "polite_ratio", "flood_ratio")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
