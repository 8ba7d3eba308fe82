"""Rate–distortion bench: vlmcodec and classic codecs on a folder of images, with BD-rates.

    vlmcodec bench rd [IMAGES_DIR] --out DIR [--codecs vlmcodec,jpeg,webp,avif,jxl,hevc]
                      [--qualities CODEC=Q1,Q2,...] [--metrics psnr,ms-ssim,...] [--limit N]

For every codec × quality every image is encoded to a real file (bytes counted as written),
decoded, and scored by each metric (``bench/metrics.py``); the per-image results are cached in
``DIR/cache/<codec>/<quality>.json`` so an interrupted run resumes where it stopped, and a
change of codec settings, model or image invalidates only what it touches. The curve of a codec
is the mean bpp and mean metric over the images at each quality (as the published anchors are).

Outputs in DIR: ``rd.json`` (everything, with the environment and each image's pixel digest;
strict JSON: an undefined value such as a BD-rate of curves that do not overlap is null),
``report.md``, and one plot per
metric ``rd_<metric>.png`` / ``.svg`` (PSNR and MS-SSIM with the published anchors of
``../shared/anchors/kodak``). A codec whose library is missing and a metric that cannot be built
are listed as missing in the table, the JSON and the report; without matplotlib (the ``bench``
extra) the run warns before it starts and writes everything but the plots (``missing_plots``).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import bdrate
from vlmcodec.errors import ConfigError, VlmcodecWarning
from vlmcodec.resample import parse_short_side

from .classic import CLASSIC_CODECS, ClassicCodec, ConsumerScale
from .common import (DEFAULT_CODECS, check_output_folder, environment, finite_number, kodak_dir, output_folder,
                     progress_bar, strict_json, write_json)
from .metrics import build_metrics, compute_all, metric_key

CACHE_VERSION = 1
IMAGE_SUFFIXES = (".png", ".bmp", ".ppm", ".tif", ".tiff")
# Published anchors drawn on the PSNR / MS-SSIM plots and put in the BD-rate table (file stems).
DEFAULT_ANCHORS = ("vtm", "hm", "av1", "bpg_444_x265_ycbcr", "compressai-bmshj2018-hyperprior_mse_cpu",
                   "compressai-mbt2018-mean_mse_cpu", "compressai-cheng2020-anchor_mse_cuda",
                   "paper-elic2022_mse")
PSNR_ANCHOR = "vtm"          # every codec against VTM on PSNR (and MS-SSIM)
SEMANTIC_ANCHOR = "avif"     # and against AVIF on each semantic metric
ANCHORED_METRICS = ("psnr", "ms-ssim", "recall@1")  # tabled against the published anchors instead


class VlmCodec(ClassicCodec):
    """The project's codec behind the bench's codec interface (quality 0..100)."""

    name, label, suffix = "vlmcodec", "vlmcodec", ".vlmc"
    qualities = (0, 15, 30, 50, 70, 85, 100)
    whole_qualities = False  # (any quality in [0, 100]: the levels interpolate)

    def __init__(self, model: str | None = None, backend: str = "torch", threads: int | None = 1,
                 pre_edit: bool = True, short_side: int | None = None, refine: int = 0,
                 refine_views: tuple[int, ...] | None = None, refine_bf16: bool = False):
        self.model_path, self.backend, self.threads, self.pre_edit = model, backend, threads, pre_edit
        self.short_side, self.refine, self.refine_views = short_side, refine, refine_views
        self.refine_bf16 = refine_bf16
        base, label = (f"vlmcodec+r{refine}", f"vlmcodec, {refine} refinement steps") if refine else ("vlmcodec", "vlmcodec")
        if refine_bf16:
            base += "bf16"
            label += " (bfloat16 teacher)"
        if refine_views:
            base += "v" + "x".join(map(str, refine_views))
            label += f" over teacher views {', '.join(map(str, refine_views))} px"
        self.name, self.label = base, label
        if short_side is not None:
            self.name, self.label = f"{base}@{short_side}", f"{label} @ short side {short_side}"
        self._codec = None

    @property
    def codec(self):
        if self._codec is None:
            from vlmcodec import Codec

            self._codec = Codec(self.model_path, backend=self.backend, threads=self.threads,
                                pre_edit=self.pre_edit, short_side=self.short_side, refine=self.refine,
                                refine_views=self.refine_views, refine_bf16=self.refine_bf16)
        return self._codec

    def version(self) -> str:
        import vlmcodec

        return f"vlmcodec {vlmcodec.__version__}"

    def settings(self) -> dict:
        out = {"model": str(self.model_path or "default"), "fingerprint": self.codec.fingerprint.hex(),
               "backend": self.backend}
        if self.codec.model.pre_editor is not None and not self.codec.pre_edit:
            out["pre_edit"] = False  # only when it changes the streams: older caches stay valid
        if self.short_side is not None:
            out["short_side"] = self.short_side
        if self.refine:
            out["refine"] = self.refine
        if self.refine_views:
            out["refine_views"] = list(self.refine_views)
        if self.refine_bf16:
            out["refine_bf16"] = True
        return out

    def encode(self, img, quality):
        return self.codec.encode(img, float(quality))

    def decode(self, data):
        return self.codec.decode(data)


def make_codec(name: str, **vlm_kwargs) -> ClassicCodec:
    """A codec by name; ``NAME@N`` codes at the consumer's scale (shorter side N px, ``vlmcodec.resample``);
    ``vlmcodec+rK`` encodes with K steps of latent refinement (``vlmcodec.refine``), and
    ``vlmcodec+rKvAxB`` averages its token term over the teacher views A and B px (``refine_views``),
    and ``vlmcodec+rKbf16`` (before any ``vAxB``) runs the refinement's teacher in bfloat16 (``refine_bf16``)."""
    base, at, side = name.partition("@")
    short_side = None
    if at:  # (an empty side too: "webp@" was plain webp under another name)
        try:
            short_side = parse_short_side(side)
        except ValueError as e:
            raise ValueError(f"codec {name!r}: after '@' give the consumer's short side in pixels "
                             f"({e}), e.g. webp@256") from None
    base, plus, refine = base.partition("+r")
    refine, v, views = refine.partition("v")
    bf16 = refine.endswith("bf16")
    refine = refine.removesuffix("bf16")
    if plus and (base != "vlmcodec" or not refine.isdigit() or int(refine) < 1
                 or (v and not all(s.isdigit() for s in views.split("x")))):
        raise ValueError(f"codec {name!r}: '+rK' (K refinement steps, K >= 1, optionally bf16: a bfloat16 teacher, "
                         "and vAxB: the teacher views in px) applies to vlmcodec only, e.g. vlmcodec+r30@256, "
                         "vlmcodec+r10bf16@256 or vlmcodec+r30v224x336@256")
    if base == "vlmcodec":
        refine_views = None
        if v:
            from vlmcodec.refine import check_refine_views

            try:
                refine_views = check_refine_views([int(s) for s in views.split("x")])
            except ValueError as e:
                raise ValueError(f"codec {name!r}: {e}") from None
        return VlmCodec(**vlm_kwargs, short_side=short_side, refine=int(refine or 0), refine_views=refine_views,
                        refine_bf16=bf16)
    if base not in CLASSIC_CODECS:
        raise ValueError(f"unknown codec {base!r}; choose from {', '.join(('vlmcodec', *CLASSIC_CODECS))} "
                         "(each optionally NAME@SHORT_SIDE)")
    codec = CLASSIC_CODECS[base]()
    return codec if short_side is None else ConsumerScale(codec, short_side)


# --------------------------------------------------------------------------- images, cache

def list_images(folder: Path, limit: int = 0) -> list[Path]:
    if not Path(folder).is_dir():  # (a raw "[Errno 2] No such file or directory")
        raise FileNotFoundError(f"{folder}: not a folder of images")
    files = sorted(f for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files[: limit or None]


def load_rgb(path: Path) -> np.ndarray:
    from vlmcodec.image_io import load_image

    return load_image(path)


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha1(arr.tobytes() + str(arr.shape).encode()).hexdigest()[:16]


def _fmt_q(q: float) -> str:
    return f"{q:g}"


def _cache_path(out: Path, codec: str, q: float) -> Path:
    return out / "cache" / codec / f"q{_fmt_q(q)}.json"


def _load_cache(path: Path, settings: dict) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != CACHE_VERSION or data.get("settings") != settings:
        return {}
    return data.get("images", {})


# --------------------------------------------------------------------------- the run

@dataclass
class CodecCurve:
    name: str
    label: str
    quality_name: str
    version: str = ""
    settings: dict = field(default_factory=dict)
    points: list = field(default_factory=list)   # dicts: quality, bpp, <metric>..., images


def run_codec(codec: ClassicCodec, qualities: Sequence[float], images: list[Path], originals: list[np.ndarray],
              metrics: list, out: Path, progress: bool = True) -> CodecCurve:
    """Measure one codec at each quality (resuming from the cache) and return its curve."""
    settings = {"codec": codec.name, "version": codec.version(), **codec.settings()}
    curve = CodecCurve(codec.name, codec.label, codec.quality_name, settings["version"], settings)
    digests = [_digest(o) for o in originals]
    keys = [metric_key(m) for m in metrics]
    bar = progress_bar(len(qualities) * len(images), codec.name, enabled=progress)
    for q in qualities:
        path = _cache_path(out, codec.name, q)
        cached = _load_cache(path, settings)
        todo = []
        for img_path, dg in zip(images, digests):
            rec = cached.get(img_path.name)
            if rec is None or rec.get("digest") != dg:
                todo.append(img_path.name)
                cached.pop(img_path.name, None)
                continue
            for k in keys:  # a non-finite value (PSNR inf before its ceiling) is computed again
                if not finite_number(rec["metrics"].get(k)):
                    rec["metrics"].pop(k, None)
            if any(k not in rec["metrics"] for k in keys):
                todo.append(img_path.name)
        bar.update(len(images) - len(todo))
        by_name = {p.name: (o, dg) for p, o, dg in zip(images, originals, digests)}
        decoded, origs = [], []
        for name in todo:
            orig, dg = by_name[name]
            t0 = time.perf_counter()
            data = codec.encode(orig, q)
            t1 = time.perf_counter()
            rec_img = codec.decode(data)
            t2 = time.perf_counter()
            if rec_img.shape != orig.shape:
                raise RuntimeError(f"{codec.name} q={q} decoded {name} to {rec_img.shape}, expected {orig.shape}")
            h, w = orig.shape[:2]
            old = cached.get(name, {}).get("metrics", {})
            cached[name] = {"digest": dg, "bytes": len(data), "bpp": 8 * len(data) / (h * w),
                            "enc_s": t1 - t0, "dec_s": t2 - t1, "metrics": old}
            decoded.append(rec_img)
            origs.append(orig)
            bar.update(1)
        for m, k in zip(metrics, keys):
            need = [i for i, name in enumerate(todo) if k not in cached[name]["metrics"]]
            if need:
                vals = compute_all(m, [origs[i] for i in need], [decoded[i] for i in need])
                for i, v in zip(need, vals):
                    cached[todo[i]]["metrics"][k] = v
        if todo:
            write_json(path, {"version": CACHE_VERSION, "settings": settings, "quality": q, "images": cached})
        recs = [cached[p.name] for p in images]
        point: dict[str, object] = {"quality": q, "images": len(recs), "bpp": float(np.mean([r["bpp"] for r in recs])),
                 "bytes": int(sum(r["bytes"] for r in recs)),
                 "enc_s": float(np.mean([r["enc_s"] for r in recs])),
                 "dec_s": float(np.mean([r["dec_s"] for r in recs]))}
        per_image = {"bpp": [r["bpp"] for r in recs]}
        for m, k in zip(metrics, keys):
            per_image[m.name] = [r["metrics"][k] for r in recs]
            point[m.name] = float(np.mean(per_image[m.name]))
        point["per_image"] = per_image  # in the order of rd.json's "images": for bootstrap intervals
        curve.points.append(point)
    bar.close()
    curve.points.sort(key=lambda p: p["bpp"])
    return curve


def load_anchors(folder: Path | None, names: Sequence[str] = DEFAULT_ANCHORS) -> dict:
    """Published curves: {stem: {"label", "bpp", "psnr", "ms-ssim"}} for the files present;
    ConfigError naming the file and field of one that is not such a curve."""
    out: dict[str, dict] = {}
    if folder is None or not Path(folder).is_dir():
        return out
    for stem in names:
        f = Path(folder) / f"{stem}.json"
        if not f.is_file():
            continue
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"anchor file {f}: cannot read it as JSON ({e})") from None
        r = d.get("results") if isinstance(d, dict) else None
        if not isinstance(r, dict):
            raise ConfigError(f"anchor file {f}: no \"results\" object (expected {{\"results\": {{\"bpp\": [...], "
                              "\"psnr-rgb\": [...], ...}})")
        entry = {"label": str(d.get("name", stem)), "bpp": _anchor_series(f, r, "bpp")}
        for key, aliases in (("psnr", ("psnr-rgb", "psnr")), ("ms-ssim", ("ms-ssim-rgb", "ms-ssim"))):
            for a in aliases:
                if a in r:
                    entry[key] = _anchor_series(f, r, a, len(entry["bpp"]))
                    break
        out[stem] = entry
    return out


def _anchor_series(f: Path, results: dict, field: str, length: int | None = None) -> list:
    """``results[field]`` of anchor file ``f``: a list of finite numbers (of ``length``), else ConfigError."""
    v = results.get(field)
    if not isinstance(v, list) or not all(finite_number(x) for x in v):
        raise ConfigError(f"anchor file {f}: results.{field} must be a list of numbers, got {str(v)[:60]}")
    if length is not None and len(v) != length:
        raise ConfigError(f"anchor file {f}: results.{field} has {len(v)} values, results.bpp {length}")
    return list(v)


def default_anchor_dir() -> Path | None:
    here = Path(__file__).resolve().parents[1]
    for cand in (here.parent / "shared" / "anchors" / "kodak", Path.cwd().parent / "shared" / "anchors" / "kodak"):
        if cand.is_dir():
            return cand
    return None


def _is_kodak(images_dir: Path) -> bool:
    """Whether ``images_dir`` is the evaluation set the published anchors were measured on."""
    try:
        return Path(images_dir).resolve() == kodak_dir().resolve()
    except FileNotFoundError:
        return False


def msssim_db(v):
    """MS-SSIM on a dB scale, −10·log10(1 − MS-SSIM), the axis CompressAI plots it on."""
    v = np.asarray(v, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return -10 * np.log10(np.clip(1 - v, 1e-12, None))


def _axis(metric: str, values, higher_is_better: bool = True):
    """The quality axis BD-rates are computed on (monotone in the metric, higher = better)."""
    if metric == "ms-ssim":
        return msssim_db(values)
    v = np.asarray(values, dtype=np.float64)
    return v if higher_is_better else -v


def bd_table(curves: dict, anchor: str, metric: str, higher_is_better: bool = True, method: str = "pchip") -> dict:
    """{name: {"bd_rate": %, "bd_quality": Δ, "overlap": f, "overlap_rate": f}} of every curve
    against ``anchor`` on ``metric``: ``overlap`` is the share of the two curves' combined quality
    range that the BD-rate integrates over, ``overlap_rate`` that of their log-rate range for the
    BD-quality (``bdrate.overlap``; below ``bdrate.MIN_OVERLAP`` the reports mark the value).

    ``curves``: {name: {"bpp": [...], metric: [...]}}; curves without the metric are left out."""
    if anchor not in curves or metric not in curves[anchor]:
        return {}
    a = curves[anchor]
    qa = _axis(metric, a[metric], higher_is_better)
    table = {}
    for name, c in curves.items():
        if name == anchor or metric not in c:
            continue
        qt = _axis(metric, c[metric], higher_is_better)
        bd_rate = bdrate.bd_rate(a["bpp"], qa, c["bpp"], qt, method)
        bd_quality = bdrate.bd_quality(a["bpp"], qa, c["bpp"], qt, method)
        entry: dict[str, float | str] = {
            "bd_rate": bd_rate, "bd_quality": bd_quality,
            "overlap": bdrate.overlap(a["bpp"], qa, c["bpp"], qt, "quality"),
            "overlap_rate": bdrate.overlap(a["bpp"], qa, c["bpp"], qt, "rate")}
        if not np.isfinite(bd_rate) or not np.isfinite(bd_quality):
            entry["note"] = _why_nan(a["bpp"], qa, c["bpp"], qt, method)
        table[name] = entry
    return table


def _why_nan(ra, qa, rt, qt, method) -> str:
    """Why a BD value is NaN: too few monotone points, or the ranges do not overlap."""
    ra, qa = bdrate.monotone_curve(ra, qa)
    rt, qt = bdrate.monotone_curve(rt, qt)
    need = 4 if method == "cubic" else 2
    if min(len(ra), len(rt)) < need:
        return f"fewer than {need} points where quality grows with rate"
    parts = []
    if not min(qa[-1], qt[-1]) > max(qa[0], qt[0]):
        parts.append(f"quality ranges do not overlap (test {qt[0]:.3g}..{qt[-1]:.3g}, "
                     f"anchor {qa[0]:.3g}..{qa[-1]:.3g})")
    if not min(ra[-1], rt[-1]) > max(ra[0], rt[0]):
        parts.append(f"rate ranges do not overlap (test {rt[0]:.3g}..{rt[-1]:.3g}, "
                     f"anchor {ra[0]:.3g}..{ra[-1]:.3g} bpp)")
    return "; ".join(parts)


def _kept_codecs(path: Path, images: list[Path], metrics: list, measured,
                 digests: list[str] | None = None) -> tuple[dict[str, CodecCurve], list[str], list[dict]]:
    """The curves of ``path`` (an earlier rd.json) for the codecs not in ``measured``, for a merge,
    the commands that produced that file (its earlier merges' first), and that file's ``metrics``
    entries of the metrics this run does not measure but the kept curves' points still carry
    (their direction: a merge with fewer metrics dropped them, and ``bench compare`` then took a
    lower-is-better metric such as effnet-kl for higher-is-better)."""
    if not path.is_file():
        return {}, [], []
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"--merge: cannot read {path}: {e}") from e
    if old.get("images") != [p.name for p in images]:
        raise ConfigError(f"--merge: {path} was measured on other images; use another --out")
    if digests is not None and old.get("image_digests") not in (None, digests):  # (none: before they were recorded)
        raise ConfigError(f"--merge: {path} was measured on other images of the same names (their pixels differ); "
                          "use another --out")
    names = {m.name for m in metrics}
    kept = {}
    for name, c in old.get("codecs", {}).items():
        if name in measured:
            continue
        lacking = sorted(names - {k for p in c["points"] for k in p})
        if lacking:
            raise ConfigError(f"--merge: {path} has no {', '.join(lacking)} for {name}; rerun it with this run's "
                              "metrics or use another --out")
        kept[name] = CodecCurve(name, c["label"], c.get("quality_name", "quality"), c.get("version", ""),
                                c.get("settings", {}), c["points"])
    earlier = list(old.get("earlier_commands", [])) + ([old["command"]] if old.get("command") else [])
    carried = {k for c in kept.values() for p in c.points for k in p} - names
    old_metrics = old.get("metrics") if isinstance(old.get("metrics"), list) else []
    extra = [{**m, "kept_codecs_only": True} for m in old_metrics
             if isinstance(m, dict) and m.get("name") in carried]
    return kept, earlier if kept else [], extra


def canonical_names(names: Sequence[str]) -> list[str]:
    """``names`` as the codecs name themselves (``webp@0256`` is ``webp@256``), each once: results,
    ``--qualities`` and ``--merge`` go by these (one codec spelt two ways ran twice as two curves)."""
    return list(dict.fromkeys(make_codec(n).name for n in names))


def canonical_quality_keys(qualities: dict) -> dict:
    """``--qualities`` keys spelt as ``canonical_names`` spells codecs (a key naming no codec is
    kept as it is: ``check_quality_keys`` says so)."""
    out = {}
    for key, qs in qualities.items():
        try:
            key = make_codec(key).name
        except (ValueError, KeyError):
            pass
        out[key] = qs
    return out


def check_quality_keys(qualities: dict, codecs: Sequence[str]) -> None:
    """ConfigError for a ``--qualities`` key that is none of ``codecs`` nor their family (``webp``
    for ``webp@256``, ``vlmcodec`` for ``vlmcodec+r30@256``): a misspelt one was ignored, and its
    codec ran on its default grid."""
    families = {k for n in codecs for k in (n, n.partition("@")[0], n.partition("@")[0].partition("+")[0])}
    for key in qualities:
        if key not in families:
            raise ConfigError(f"--qualities {key}=...: no codec {key} in --codecs ({', '.join(codecs)})"
                              + ("; a bare list Q,Q,... is vlmcodec's" if key == "vlmcodec" else ""))


def run(images_dir: Path, out: Path, codecs: Sequence[str] = DEFAULT_CODECS, qualities: dict | None = None,
        metric_names: Sequence[str] | None = None, limit: int = 0, anchors_dir: Path | None = None,
        semantic: bool = True, progress: bool = True, plots: bool = True, command: str = "",
        vlm_kwargs: dict | None = None, merge: bool = False) -> dict:
    """The whole bench; returns what it writes to ``out/rd.json``. With ``merge`` the codecs of
    an existing ``out/rd.json`` that this run does not measure are kept (same images — names, and
    pixels where it records them — and metrics required), so a run of one codec does not drop the
    others from the file."""
    out = Path(out)
    if out.resolve() == Path(images_dir).resolve():  # (the next run measured the plots as images)
        raise ConfigError(f"--out {out} is the images folder; give another folder")
    check_output_folder(out)
    qualities = qualities or {}
    if anchors_dir is not None:
        if not Path(anchors_dir).is_dir():
            raise ConfigError(f"--anchors {anchors_dir}: not a folder")
        if not any((Path(anchors_dir) / f"{stem}.json").is_file() for stem in DEFAULT_ANCHORS):
            raise ConfigError(f"--anchors {anchors_dir}: none of the anchor files is there "
                              f"({', '.join(s + '.json' for s in DEFAULT_ANCHORS)})")
    no_plots = ""
    if plots:  # matplotlib (the bench extra) missing: said now, before the codecs run, and the figures written
        from .plots import unavailable

        no_plots = unavailable()
        if no_plots:
            warnings.warn(f"no plots: {no_plots}; rd.json and report.md are written without them "
                          "(--no-plots skips them without this warning)", VlmcodecWarning, stacklevel=2)
    images = list_images(Path(images_dir), limit)
    originals = [load_rgb(p) for p in images]
    digests = [_digest(o) for o in originals]
    metrics, missing_metrics = build_metrics(metric_names, originals, semantic=semantic)
    anchors_note = ""
    if anchors_dir is None and _is_kodak(images_dir):
        anchors_dir = default_anchor_dir()
    elif anchors_dir is None:  # the published curves are Kodak's
        anchors_note = (f"published anchors not used: they were measured on Kodak, these images are {images_dir} "
                        "(--anchors DIR to use them anyway)")
    anchors = load_anchors(anchors_dir)  # before the codecs run: a malformed file stops the run here
    n_all = len(list_images(Path(images_dir))) if anchors and _is_kodak(images_dir) else len(images)
    if n_all > len(images):
        anchors_note = (f"the published anchors are means over all {n_all} Kodak images, this run's over the "
                        f"first {len(images)} (--limit): BD-rates against them compare different image sets")
    missing_codecs: dict[str, str] = {}
    to_run = []
    for name in codecs:
        codec = make_codec(name, **(vlm_kwargs or {}))  # vlm_kwargs reach vlmcodec only
        ok, why = codec.available()
        if not ok:
            missing_codecs[name] = why
            continue
        family = name.partition("@")[0]
        qs = qualities.get(name, qualities.get(family, qualities.get(family.partition("+")[0], codec.qualities)))
        codec.check_qualities(qs)  # every codec's before the first runs
        to_run.append((name, codec, qs))
    if not to_run:  # (exit 0 with an rd.json and a report of no codec, replacing the earlier ones)
        raise ConfigError("none of the codecs asked for is available ("
                          + "; ".join(f"{n}: {why}" for n, why in missing_codecs.items()) + ")"
                          + (f"; {out / 'rd.json'} is left as it was" if merge and (out / "rd.json").is_file() else ""))
    # an earlier rd.json that cannot be merged stops the run before the codecs do
    kept, earlier_commands, kept_metrics = (
        _kept_codecs(out / "rd.json", images, metrics, {n for n, _, _ in to_run}, digests)
        if merge else ({}, [], []))
    with output_folder(out):  # removed again if nothing was written in it (an error, Ctrl-C)
        curves: dict[str, CodecCurve] = {}
        for name, codec, qs in to_run:
            curves[name] = run_codec(codec, qs, images, originals, metrics, out, progress)
        curves = {**kept, **curves}

        measured = {n: {"label": c.label, "bpp": [p["bpp"] for p in c.points],
                        **{m.name: [p[m.name] for p in c.points] for m in metrics}} for n, c in curves.items()}
        both = {**{f"anchor:{k}": v for k, v in anchors.items()}, **measured}
        vs = f"anchor:{PSNR_ANCHOR}"
        bd = {"psnr_vs_vtm": bd_table(both, vs, "psnr"), "ms-ssim_vs_vtm": bd_table(both, vs, "ms-ssim")}
        from .bootstrap import bd_rate_interval  # here: bootstrap builds on this module's bd_table
        for m in metrics:
            if m.name not in ANCHORED_METRICS:
                hib = getattr(m, "higher_is_better", True)
                table = bd[f"{m.name}_vs_{SEMANTIC_ANCHOR}"] = bd_table(measured, SEMANTIC_ANCHOR, m.name, hib)
                for name, entry in table.items():  # both measured here: per-image values on both sides
                    ci = bd_rate_interval(curves[SEMANTIC_ANCHOR].points, curves[name].points, m.name, hib)
                    if ci is not None:
                        entry["ci"] = ci
        result = {
            "benchmark": "rd",
            "command": command,
            **({"earlier_commands": earlier_commands} if earlier_commands else {}),
            "env": environment(),
            "images_dir": str(images_dir),
            "images": [p.name for p in images],
            "image_digests": digests,  # of the decoded pixels: --merge and bench compare check them
            # this run's, then those only the kept codecs (--merge) have, marked kept_codecs_only
            "metrics": [{"name": m.name, "higher_is_better": getattr(m, "higher_is_better", True),
                         "cache_key": metric_key(m)} for m in metrics] + kept_metrics,
            "missing_metrics": missing_metrics,
            "missing_codecs": missing_codecs,
            "codecs": {n: {"label": c.label, "version": c.version, "settings": c.settings,
                           "quality_name": c.quality_name, "points": c.points} for n, c in curves.items()},
            "anchors": anchors,
            **({"anchors_note": anchors_note} if anchors_note else {}),
            "bd_method": "pchip",
            "bd": bd,
            **({"missing_plots": no_plots} if no_plots else {}),
        }
        from .report import write_report

        # the figures first: a plot that fails loses none of them
        write_json(out / "rd.json", strict_json(result))  # NaN and inf (undefined BD values...) as null
        write_report(result, out / "report.md")
        if plots and not no_plots:
            from .plots import plot_all

            result["plots"] = plot_all(result, out)
            write_json(out / "rd.json", strict_json(result))
            write_report(result, out / "report.md")
        return result
