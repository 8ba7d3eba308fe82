"""``vlmcodec bench ...``: the benchmark subcommands.

``add_bench_subparsers(sub)`` registers ``bench`` on the main parser's subparsers and returns the
group's own subparsers; each bench subcommand sets ``bench_func`` with ``set_defaults`` and
``dispatch(args)`` calls it. Another bench (``bench speed`` ...) is one more
``register(name, add_arguments, func)`` line in ``BENCHES``.

    vlmcodec bench rd [IMAGES_DIR] --out DIR [--codecs LIST] [--qualities CODEC=Q,Q,...] [--limit N]
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .common import count_arg, positive_arg, repeated


def _add_rd(p: argparse.ArgumentParser) -> None:
    from .common import DEFAULT_CODECS

    p.add_argument("images", nargs="?", type=Path, help="folder of images (default ../shared/data/kodak)")
    p.add_argument("--out", required=True, type=Path, help="output folder (results, cache, plots, report)")
    p.add_argument("--codecs", default=",".join(DEFAULT_CODECS),
                   help=f"comma-separated (default {','.join(DEFAULT_CODECS)}); NAME@N codes at the "
                        "consumer's scale (shorter side N px, decoded back to full size), e.g. vlmcodec@256,webp@256; "
                        "vlmcodec+rK encodes with K steps of latent refinement, e.g. vlmcodec+r30@256, and "
                        "vlmcodec+rKvAxB averages its token term over teacher views A and B px, e.g. vlmcodec+r30v224x336@256")
    p.add_argument("--qualities", action="append", default=[], metavar="CODEC=Q,Q,...",
                   help="override a codec's quality grid (repeatable); hevc's are QPs; "
                        "a bare list Q,Q,... applies to vlmcodec")
    p.add_argument("--metrics", help="comma-separated subset (default: all available but the optional effnet-top1-10crop)")
    p.add_argument("--no-semantic", action="store_true", help="do not try the semantic metrics")
    p.add_argument("--limit", type=count_arg, default=0, help="first N images only")
    p.add_argument("--anchors", type=Path, help="folder of published anchor JSON (default ../shared/anchors/kodak)")
    p.add_argument("--model", help="vlmcodec model .safetensors (default: the bundled model)")
    p.add_argument("--backend", default="torch", help="the vlmcodec codecs' backend (default torch)")
    p.add_argument("--threads", type=positive_arg, default=1, help="vlmcodec CPU threads (default 1)")
    p.add_argument("--no-pre-edit", action="store_true", help="vlmcodec without its model's pre-editor")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--merge", action="store_true",
                   help="keep the other codecs already in OUT/rd.json (same images and metrics) instead of "
                        "writing only this run's")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def parse_qualities(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, _, vals = item.rpartition("=")
        name = name or "vlmcodec"
        try:
            out[name] = [float(v) for v in vals.split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"bad --qualities {item!r}: expected CODEC=Q1,Q2,...")
        if not out[name]:
            raise ValueError(f"bad --qualities {item!r}: no values")
        twice = repeated(out[name])
        if twice:
            raise ValueError(f"bad --qualities {item!r}: {twice} given more than once")
    return out


def _run_rd(args) -> int:
    import torch

    from ..errors import ConfigError
    from .common import kodak_dir
    from .rd import canonical_names, canonical_quality_keys, check_quality_keys, run

    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    if not codecs:  # (an rd.json and a report of no codec, exit 0)
        raise ConfigError(f"--codecs {args.codecs!r}: no codec named")
    codecs = canonical_names(codecs)
    qualities = canonical_quality_keys(parse_qualities(args.qualities))
    check_quality_keys(qualities, codecs)
    torch.set_num_threads(max(1, args.threads or 1))
    images = args.images or kodak_dir("vlmcodec bench rd IMAGES_DIR --out DIR")
    res = run(images, args.out, codecs=codecs,
              qualities=qualities,
              metric_names=[m.strip() for m in args.metrics.split(",")] if args.metrics else None,
              limit=args.limit, anchors_dir=args.anchors, semantic=not args.no_semantic,
              progress=not args.quiet, plots=not args.no_plots,
              command="vlmcodec " + " ".join(shlex.quote(a) for a in getattr(args, "argv", ["bench", "rd"])),
              vlm_kwargs={"model": args.model, "backend": args.backend, "threads": args.threads,
                          "pre_edit": not args.no_pre_edit}, merge=args.merge)
    from .report import bd_markdown

    print("\n".join(bd_markdown(res, "psnr_vs_vtm")))
    if res.get("anchors_note"):
        print(f"note: {res['anchors_note']}")
    for k, why in {**res["missing_codecs"], **res["missing_metrics"]}.items():
        print(f"missing: {k}: {why}")
    if res.get("missing_plots"):
        print(f"missing: plots: {res['missing_plots']}")
    print(f"wrote {Path(args.out) / 'rd.json'}, {Path(args.out) / 'report.md'}")
    return 0


# name -> (help, add_arguments, func). Other benches register here.
BENCHES: dict = {"rd": ("rate–distortion curves, BD-rates, plots and report", _add_rd, _run_rd)}


def register(name: str, help: str, add_arguments, func) -> None:
    BENCHES[name] = (help, add_arguments, func)


# Benches with their own ``main(argv)``: ``vlmcodec bench NAME ARGS...`` hands ARGS to it
# (``run_passthrough``); they are registered here too so that ``vlmcodec bench --help`` lists them.
PASSTHROUGH: dict[str, str] = {}


def run_passthrough(argv: list[str]) -> int | None:
    """Run ``bench NAME ARGS...`` for a passthrough bench; None when argv is not one."""
    if len(argv) >= 2 and argv[0] == "bench" and argv[1] in PASSTHROUGH:
        import importlib

        return importlib.import_module(f"vlmcodec.bench.{PASSTHROUGH[argv[1]]}").main(argv[2:])
    return None


def _passthrough(name: str, module: str):
    PASSTHROUGH[name] = module

    def add(p: argparse.ArgumentParser) -> None:
        p.description = (p.description or "") + f" (options: vlmcodec bench {name} --help)"

    def run(args) -> int:  # only reached without arguments
        return run_passthrough(["bench", name]) or 0

    return add, run


for _name, _module, _help in (
    ("speed", "speed", "per-stage encode/decode timings per backend (and CompressAI with --compressai)"),
    ("throughput", "throughput", "runtime Engine vs a sequential loop: images/s, p50/p95/p99"),
    ("compressai", "codec", "end-to-end time vs CompressAI with the same weights"),
    ("entropy", "entropy", "rANS coder vs constriction and CompressAI, symbols/s"),
    ("backends", "backends", "onnxruntime vs torch: time and cross-decode"),
    ("kernels", "kernels", "Triton kernels vs torch references, GB/s (GPU)"),
    ("semantic", "semantic", "semantic metrics of Pillow JPEG, teacher timing"),
    ("compare", "compare", "BD-rates and low-rate points between curves of finished rd runs (ablations)"),
    ("matched-bytes", "matched_bytes", "vlmcodec rate-controlled into an anchor's bytes, image by image: paired gains"),
):
    register(_name, _help, *_passthrough(_name, _module))


def add_bench_subparsers(sub) -> argparse._SubParsersAction:
    """Add ``bench`` to a parser's subparsers; returns the bench group's subparsers."""
    b = sub.add_parser("bench", help="benchmarks (rd, ...)", description="Benchmarks.")
    bsub = b.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    for name, (help_, add_arguments, func) in BENCHES.items():
        p = bsub.add_parser(name, help=help_, description=help_)
        add_arguments(p)
        p.set_defaults(bench_func=func)
    return bsub


def dispatch(args) -> int:
    return args.bench_func(args)


def main(argv=None) -> int:
    """``python -m vlmcodec.bench.cli NAME ARGS...``: ``vlmcodec bench NAME ARGS...``."""
    from vlmcodec.cli import main as vlmcodec_main

    return vlmcodec_main(["bench", *(sys.argv[1:] if argv is None else argv)])


def main_of_module(module: str) -> int:
    """``python -m vlmcodec.bench.MODULE ARGS...`` as ``vlmcodec bench NAME ARGS...`` (the command's
    error messages, exit codes and signal handling; a bench module's own ``main`` raised tracebacks)."""
    from vlmcodec.cli import main as vlmcodec_main

    names = [name for name, mod in PASSTHROUGH.items() if mod == module]
    if not names:
        raise ValueError(f"vlmcodec.bench.{module} is not a bench command's module")
    return vlmcodec_main(["bench", names[0], *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
