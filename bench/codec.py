"""End-to-end codec speed on Kodak, vlmcodec vs CompressAI with the same weights, side by side.

    vlmcodec bench compressai [--images DIR] [--limit N] [--out results/codec_speed.json]

Two configurations: ``N128-M192`` (CompressAI's mbt2018-mean size, its random initialisation,
converted to vlmcodec with the converter) and ``default-weights`` (the bundled model's trained
networks loaded into both, at gain 1). For every image both codecs encode and decode in turn;
the report gives mean seconds per image, the ratio vlmcodec / CompressAI, and both bpp: vlmcodec's
counts the whole ``.vlmc`` file (its container header included), CompressAI's only its entropy
strings (no header: the shape it needs to decode is not counted).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .common import check_output_path, count_arg, environment, image_files, positive_arg, progress_bar, write_json
from .compressai_compat import import_compressai


def _compressai_model(N: int, M: int, state: dict | None, seed: int = 0):
    google = import_compressai("models.google")
    torch.manual_seed(seed)
    net = google.MeanScaleHyperprior(N=N, M=M).eval()
    net.update(force=True)  # CompressAI's load_state_dict wants its coding buffers present
    if state is not None:
        full = net.state_dict()
        full.update({k: v for k, v in state.items() if k in full and not k.startswith("gaussian_conditional")})
        net.load_state_dict(full)
        net.update(force=True)
    return net


CONFIGS = ("N128-M192", "default-weights")


def config_list(text: str) -> list[str]:
    """An argparse ``type``: comma-separated names of CONFIGS, each once (any other name ran the
    default-weights arm; " N128-M192", with its space, too)."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    twice = sorted({c for c in names if names.count(c) > 1})
    if not names or unknown or twice:
        why = (f"unknown {', '.join(unknown)}" if unknown else f"{', '.join(twice)} given twice" if twice
               else "none given")
        raise argparse.ArgumentTypeError(f"{why}; choose from {', '.join(CONFIGS)}, got {text!r}")
    return names


def _codecs(config: str, workdir: Path):
    from vlmcodec import Codec
    from vlmcodec.models.convert import convert_compressai

    if config == "N128-M192":
        ref = _compressai_model(128, 192, None)
    else:
        default = Codec()
        state = {k: v for k, v in default.model.state_dict().items()}
        ref = _compressai_model(default.N, default.M, state)
    ckpt = workdir / f"{config}.pth"
    torch.save(ref.state_dict(), ckpt)
    convert_compressai(ckpt, workdir / f"{config}.safetensors")
    return Codec(workdir / f"{config}.safetensors"), ref


SIDE_MULTIPLE = 64  # the CompressAI path here pads nothing


def check_sides(files: list[Path], images: list[np.ndarray] | None = None) -> None:
    """ConfigError naming the first image whose sides are not multiples of 64, before any model is
    converted or timed (it failed after them); ``images``: ``files`` already loaded."""
    from vlmcodec.errors import ConfigError
    from vlmcodec.image_io import load_image

    for i, path in enumerate(files):
        h, w = (images[i] if images is not None else load_image(path)).shape[:2]
        if h % SIDE_MULTIPLE or w % SIDE_MULTIPLE:
            raise ConfigError(f"--images: {path} is {w}x{h}; the CompressAI comparison needs sides that are "
                              f"multiples of {SIDE_MULTIPLE} (Kodak's are): crop the images or give other ones")


def run(images: list[Path], configs: list[str], repeat: int = 1) -> dict:
    from vlmcodec.image_io import load_image

    check_sides(images)  # every image's, before the models are converted and timed
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            ours, ref = _codecs(config, Path(tmp))
            t: dict[str, list[float]] = {"ours_enc": [], "ours_dec": [], "cai_enc": [], "cai_dec": [],
                                         "ours_bpp": [], "cai_bpp": []}
            for path in progress_bar(len(images), config, iterable=images):
                img = load_image(path)
                h, w = img.shape[:2]
                # a copy: load_image's arrays are read-only, which torch.from_numpy warns about
                x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
                ours.encode(img, 100.0)  # warm-up
                for _ in range(repeat):
                    t0 = time.perf_counter(); data = ours.encode(img, 100.0); t1 = time.perf_counter()
                    ours.decode(data); t2 = time.perf_counter()
                    with torch.inference_mode():
                        t3 = time.perf_counter(); enc = ref.compress(x); t4 = time.perf_counter()
                        ref.decompress(enc["strings"], enc["shape"]); t5 = time.perf_counter()
                    t["ours_enc"].append(t1 - t0); t["ours_dec"].append(t2 - t1)
                    t["cai_enc"].append(t4 - t3); t["cai_dec"].append(t5 - t4)
                t["ours_bpp"].append(8 * len(data) / (h * w))
                t["cai_bpp"].append(8 * sum(len(s[0]) for s in enc["strings"]) / (h * w))
            mean = {k: float(np.mean(v)) for k, v in t.items()}
            results[config] = {
                "images": len(images), "repeat": repeat, **mean,
                "enc_ratio": mean["ours_enc"] / mean["cai_enc"], "dec_ratio": mean["ours_dec"] / mean["cai_dec"],
                "N": ours.N, "M": ours.M,
            }
    return results


# What each bpp counts (the figures are not quite like for like): vlmcodec's is the whole .vlmc
# container (header with the image's size, chunk lengths, rANS final states: ~34 bytes per Kodak
# image at q50); CompressAI's only its entropy-coded strings (the shape it needs to decode is not counted).
BPP_NOTE = ("bpp: ours counts the whole .vlmc file (container header included); CompressAI's only its entropy "
            "strings (no header: the latent shape it needs to decode is not counted)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="vlmcodec bench compressai", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, help="folder of images (default ../shared/data/kodak)")
    p.add_argument("--limit", type=count_arg, default=0, help="use the first N images only")
    p.add_argument("--repeat", type=positive_arg, default=1)
    p.add_argument("--configs", type=config_list, default=",".join(CONFIGS),
                   help=f"comma-separated, from {', '.join(CONFIGS)} (default both)")
    p.add_argument("--out", default="results/codec_speed.json")
    a = p.parse_args(argv)
    check_output_path(a.out)  # before the run (a folder given failed after it)
    images = image_files(a.images, a.limit)
    res = run(images, a.configs, a.repeat)  # (it checks every image's sides first)
    write_json(a.out, {"benchmark": "codec_e2e", "env": environment(), "results": res, "bpp_note": BPP_NOTE})
    print_table(res)
    print(f"wrote {a.out}")
    return 0


def print_table(res: dict) -> None:
    """``run``'s results as a table on stdout, with the note on their bpp."""
    print(f"{'config':<16} {'enc s (ours/CAI)':>22} {'ratio':>6} {'dec s (ours/CAI)':>22} {'ratio':>6} {'bpp (ours/CAI)':>18}")
    for k, r in res.items():
        print(f"{k:<16} {r['ours_enc']:>10.3f} /{r['cai_enc']:>10.3f} {r['enc_ratio']:>6.2f} "
              f"{r['ours_dec']:>10.3f} /{r['cai_dec']:>10.3f} {r['dec_ratio']:>6.2f} {r['ours_bpp']:>8.4f} /{r['cai_bpp']:>8.4f}")
    print(BPP_NOTE)


if __name__ == "__main__":
    from vlmcodec.bench.cli import main_of_module

    raise SystemExit(main_of_module("codec"))
