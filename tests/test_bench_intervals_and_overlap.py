"""The metrics audit's findings on the benches: bootstrap intervals that hid undefined draws, a
merge that lost a metric's direction, BD values over a narrow overlap ranked as if whole, the
JPEG settings of bench semantic, what bench compressai's bpp count, BD-quality's precision."""

import json
from pathlib import Path

import numpy as np
import pytest

from vlmcodec.bench import bdrate, rd
from vlmcodec.bench import compare as cmp
from vlmcodec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SIDES = ROOT / "results" / "consumer_scale_sides" / "rd.json"


# --------------------------------------------------------------------------- 1: undefined draws

def test_interval_says_how_many_draws_were_undefined():
    from vlmcodec.bench.report import interval_text

    ci = {"lo": 4.6, "hi": 108.9, "level": 0.95, "n_boot": 1000}
    assert interval_text({**ci, "undefined": 0}, 12.0) == "[+4.6, +108.9]"
    assert interval_text({**ci, "undefined": 12}, 12.0) == "[+4.6, +108.9] (12/1000 undefined)"
    # more than 5 % undefined, or the point estimate undefined: no interval, and why
    assert interval_text({**ci, "undefined": 608}, 12.0) == "interval n/a: 61 % of 1000 draws undefined"
    assert interval_text({**ci, "undefined": 0}, float("nan")) == "interval n/a: the BD-rate itself is undefined"
    assert interval_text(None, 1.0) == ""


@pytest.mark.skipif(not SIDES.is_file(), reason="results/consumer_scale_sides/rd.json not in this checkout")
def test_compare_prints_no_interval_from_a_minority_of_defined_draws(tmp_path):
    """(the audit's repro: `n/a [+4.6, +108.9] (+nan)` from the 39 % of draws that were defined)"""
    out = tmp_path / "x.md"
    assert cmp.main(["--curve", f"v192={SIDES}:vlmcodec@192", "--curve", f"v320={SIDES}:vlmcodec@320",
                     "--metrics", "effnet-top1", "--out", str(out)]) == 0
    md = out.read_text()
    assert "[+4.6, +108.9]" not in md
    assert "n/a (interval n/a: 61 % of 1000 draws undefined)" in md
    assert "more than 5 % of the resamples are, no interval is given" in md  # the legend
    ci = json.loads(out.with_suffix(".json").read_text())["bd"]["v320"]["v192"]["effnet-top1"]["ci"]
    assert ci["undefined"] == 608 and ci["n_boot"] == 1000


def test_rd_report_interval_column_shows_undefined_draws():
    from vlmcodec.bench.report import bd_markdown

    table = {"effnet-top1_vs_avif": {
        "a": {"bd_rate": 10.0, "bd_quality": 0.01, "overlap": 0.9, "overlap_rate": 0.9,
              "ci": {"lo": 1.0, "hi": 20.0, "n_boot": 1000, "undefined": 30, "level": 0.95}},
        "b": {"bd_rate": 12.0, "bd_quality": 0.02, "overlap": 0.9, "overlap_rate": 0.9,
              "ci": {"lo": 1.0, "hi": 20.0, "n_boot": 1000, "undefined": 200, "level": 0.95}}}}
    text = "\n".join(bd_markdown({"bd": table, "codecs": {}}, "effnet-top1_vs_avif"))
    assert "| a | +10.0 % | [+1.0, +20.0] % (30/1000 undefined) |" in text
    assert "| b | +12.0 % | interval n/a: 20 % of 1000 draws undefined |" in text
    assert "no interval is given" in text


# --------------------------------------------------------------------------- 2: a metric's direction

def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([128 + 90 * np.sin(6 * x + seed), 128 + 80 * np.cos(5 * y + seed), 100 + 120 * x * y], -1)
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def test_merge_with_fewer_metrics_keeps_the_kept_metrics_direction(tmp_path):
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(2):
        Image.fromarray(_image(176, 208, i)).save(images / f"im{i}.png")
    out = tmp_path / "out"
    kw = dict(semantic=False, progress=False, anchors_dir=None, plots=False)
    rd.run(images, out, codecs=["jpeg"], qualities={"jpeg": [20, 60]}, metric_names=["psnr", "ms-ssim"], **kw)
    # stand in for a lower-is-better metric (effnet-kl) without its models: ms-ssim recorded so
    first = json.loads((out / "rd.json").read_text())
    first["metrics"][1]["higher_is_better"] = False
    (out / "rd.json").write_text(json.dumps(first))
    merged = rd.run(images, out, codecs=["webp"], qualities={"webp": [20, 60]}, metric_names=["psnr"],
                    merge=True, **kw)
    entries = {m["name"]: m for m in merged["metrics"]}
    assert entries["ms-ssim"]["higher_is_better"] is False and entries["ms-ssim"]["kept_codecs_only"] is True
    assert "kept_codecs_only" not in entries["psnr"]
    assert "ms-ssim: of the codecs kept by `--merge` only" in (out / "report.md").read_text()
    assert cmp.load_curve(f"j={out / 'rd.json'}:jpeg").better("ms-ssim") is False


def _rd(path, codec, bpps, psnrs, kls, metrics):
    pts = [{"quality": i, "bpp": b, "psnr": p, "effnet-kl": k, "odd": k}
           for i, (b, p, k) in enumerate(zip(bpps, psnrs, kls))]
    path.write_text(json.dumps({"images": ["a.png"], "metrics": metrics, "codecs": {codec: {"points": pts}}}))
    return path


def test_compare_takes_a_missing_direction_from_the_projects_metrics_and_refuses_unknown_ones(tmp_path, capsys):
    only_psnr = [{"name": "psnr", "higher_is_better": True}]  # what a merge with fewer metrics wrote
    a = _rd(tmp_path / "a.json", "webp", [0.1, 0.2, 0.4, 0.8], [26, 28, 30, 32], [0.8, 0.6, 0.4, 0.2], only_psnr)
    b = _rd(tmp_path / "b.json", "vlmcodec", [0.09, 0.18, 0.36, 0.72], [26, 28, 30, 32], [0.8, 0.6, 0.4, 0.2],
            only_psnr)
    curves, anchors = [cmp.load_curve(f"mine={b}")], [cmp.load_curve(f"webp={a}:webp")]
    res = cmp.compare(curves, anchors, ["effnet-kl"], n_boot=0)
    # 10 % fewer bits for the same KL: −10 % (taken for higher-is-better, the curves did not even overlap)
    assert res["bd"]["mine"]["webp"]["effnet-kl"]["bd_rate"] == pytest.approx(-10.0, abs=1e-6)
    assert res["low_rate"]["mine"][1]["vs"]["webp"]["effnet-kl"]["better"] is True
    with pytest.raises(ConfigError, match="does not say whether a higher odd is better"):
        cmp.compare(curves, anchors, ["odd"], n_boot=0)
    assert cmp.main(["--curve", f"mine={b}", "--anchor", f"webp={a}:webp", "--metrics", "odd"]) == 2
    assert "does not say whether a higher odd is better" in capsys.readouterr().err


def test_the_direction_table_agrees_with_the_metric_classes():
    from vlmcodec.bench import metrics, semantic

    classes = {**{k: c.higher_is_better for k, c in metrics.BASE_METRICS.items()},
               "teacher-sim": semantic.TeacherSimilarity.higher_is_better,
               "effnet-top1": semantic.Lite0Agreement.higher_is_better,
               "effnet-top1-10crop": semantic.Lite0Agreement.higher_is_better,
               "effnet-kl": semantic.Lite0KL.higher_is_better}
    assert metrics.METRIC_DIRECTIONS == classes
    assert set(metrics.METRIC_DIRECTIONS) == (set(metrics.BASE_METRICS) | set(metrics.SEMANTIC_METRIC_NAMES)
                                              | set(metrics.OPTIONAL_SEMANTIC_METRIC_NAMES))


# --------------------------------------------------------------------------- 3: overlap of the curves

def test_overlap_is_the_bjontegaard_packages():
    ra, qa = [0.1, 0.2, 0.4, 0.8], [26.0, 28.0, 30.0, 32.0]
    rt, qt = [0.3, 0.5, 0.9, 1.6], [30.0, 33.0, 36.0, 40.0]
    assert bdrate.overlap(ra, qa, rt, qt) == pytest.approx((32 - 30) / (40 - 26))
    lr = (np.log(0.8) - np.log(0.3)) / (np.log(1.6) - np.log(0.1))
    assert bdrate.overlap(ra, qa, rt, qt, "rate") == pytest.approx(lr)
    assert bdrate.overlap(ra, qa, [1, 2], [40, 41]) == 0.0
    bj = pytest.importorskip("bjontegaard")
    with pytest.warns(UserWarning, match=f"Insufficient curve overlap: '{100 * (2 / 14):.2f}'"):
        bj.bd_rate(ra, qa, rt, qt, method="pchip")


def _curves():
    return {"anchor": {"bpp": [0.1, 0.2, 0.4, 0.8], "psnr": [26.0, 28.0, 30.0, 32.0]},
            "near": {"bpp": [0.11, 0.22, 0.44, 0.88], "psnr": [26.0, 28.0, 30.0, 32.0]},
            "far": {"bpp": [0.3, 0.5, 0.9, 1.6], "psnr": [30.0, 33.0, 36.0, 40.0]}}


def test_bd_results_record_their_overlap_and_reports_mark_narrow_ones(tmp_path):
    from vlmcodec.bench.report import bd_markdown

    table = rd.bd_table(_curves(), "anchor", "psnr")
    assert table["near"]["overlap"] == pytest.approx(1.0) and table["far"]["overlap"] == pytest.approx(2 / 14)
    text = "\n".join(bd_markdown({"bd": {"psnr_vs_anchor": table}, "codecs": {}}, "psnr_vs_anchor"))
    near = next(x for x in text.splitlines() if x.startswith("| near |"))
    far = next(x for x in text.splitlines() if x.startswith("| far |"))
    assert "†" not in near and f"{table['far']['bd_rate']:+.1f} % †" in far and "overlap 14 % (quality)" in far
    assert "less than 75 % of their combined range" in text
    # bench compare: the same in compare.json and compare.md
    for name, c in _curves().items():
        pts = [{"quality": i, "bpp": b, "psnr": q} for i, (b, q) in enumerate(zip(c["bpp"], c["psnr"]))]
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"images": ["a.png"], "metrics": [{"name": "psnr", "higher_is_better": True}],
             "codecs": {"x": {"points": pts}}}))
    out = tmp_path / "c.md"
    assert cmp.main(["--curve", f"near={tmp_path / 'near.json'}:x", "--curve", f"far={tmp_path / 'far.json'}:x",
                     "--anchor", f"a={tmp_path / 'anchor.json'}:x", "--metrics", "psnr", "--bootstrap", "0",
                     "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["bd"]["far"]["a"]["psnr"]["overlap"] == pytest.approx(2 / 14)
    md = out.read_text()
    assert f"| far | {res['bd']['far']['a']['psnr']['bd_rate']:+.1f} % †" in md
    assert "less than 75 % of their combined range" in md


@pytest.mark.skipif(not (ROOT / "results/rd_kodak/rd.json").is_file(), reason="no results/rd_kodak/rd.json")
def test_vlmcodec_psnr_range_overlaps_vtms_narrowly_and_the_readme_says_so():
    d = json.loads((ROOT / "results/rd_kodak/rd.json").read_text())
    vtm, pts = d["anchors"]["vtm"], d["codecs"]["vlmcodec"]["points"]
    ov = bdrate.overlap(vtm["bpp"], vtm["psnr"], [p["bpp"] for p in pts], [p["psnr"] for p in pts])
    assert 0.14 < ov < 0.16
    readme = (ROOT / "README.md").read_text()
    assert "trails every measured codec" not in readme
    # the README's figures on vlmcodec's own PSNR window: each curve's PCHIP integral of log-rate there
    curves = {n: ([q["bpp"] for q in c["points"]], [q["psnr"] for q in c["points"]]) for n, c in d["codecs"].items()}
    lo, hi = min(curves["vlmcodec"][1]), max(curves["vlmcodec"][1])

    def on_window(rate, quality):
        r, q = bdrate.monotone_curve(rate, quality)
        return bdrate._pchip_integral(q, np.log(r), lo, hi)

    readme = " ".join(readme.split())  # (its lines wrap anywhere)
    anchor = on_window(vtm["bpp"], vtm["psnr"])
    window = {n: (np.exp((on_window(*c) - anchor) / (hi - lo)) - 1) * 100 for n, c in curves.items()}
    assert (f"{lo:.1f}–{hi:.1f} dB" in readme and "overlaps VTM's on only 15 %" in readme
            and f"level with JPEG ({window['vlmcodec']:+.1f} % vs {window['jpeg']:+.1f} %)" in readme)
    for name, label in (("jxl", "JPEG XL"), ("webp", "WebP"), ("avif", "AVIF"), ("hevc", "x265")):
        assert f"{label} {window[name]:+.1f} %" in readme, (name, window[name])


# --------------------------------------------------------------------------- 4–7

def test_readme_says_bench_rd_draws_1000_with_seed_0(capsys):
    from vlmcodec.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "rd", "--out", "x", "--bootstrap", "10"])
    capsys.readouterr()
    readme = (ROOT / "README.md").read_text()
    assert "`bench rd` always draws 1000 with seed 0; only `bench compare` takes" in readme


def test_bench_semantic_says_its_jpeg_settings(capsys):
    import io

    from PIL import Image

    from vlmcodec.bench import classic, semantic

    img = _image(96, 128, 3)
    _, n = semantic._jpeg(img, 10)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=10)  # Pillow's defaults
    assert n == len(buf.getvalue()) > len(classic.JPEG().encode(img, 10))  # bench rd's: optimize=True
    assert semantic.JPEG_SETTINGS["optimize"] is False
    with pytest.raises(SystemExit):
        semantic.main(["--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "optimize=False" in helptext and "optimize=True" in helptext
    readme = (ROOT / "README.md").read_text()
    assert "`optimize=False`; `bench rd`'s JPEG uses `optimize=True`" in readme


def test_bench_compressai_says_what_each_bpp_counts(monkeypatch, tmp_path, capsys):
    from vlmcodec.bench import codec

    r = {"ours_enc": 1.0, "cai_enc": 2.0, "enc_ratio": 0.5, "ours_dec": 1.0, "cai_dec": 2.0, "dec_ratio": 0.5,
         "ours_bpp": 0.1706, "cai_bpp": 0.1694}
    monkeypatch.setattr(codec, "image_files", lambda *a: [])
    monkeypatch.setattr(codec, "run", lambda *a: {"N128-M192": r})
    assert codec.main(["--out", str(tmp_path / "c.json")]) == 0
    assert "CompressAI's only its entropy strings" in capsys.readouterr().out
    assert "entropy strings" in json.loads((tmp_path / "c.json").read_text())["bpp_note"]
    readme = (ROOT / "README.md").read_text()
    assert "bpp 0.1706 vs 0.1694 (vlmcodec's counts the whole `.vlmc` file" in readme


def test_report_bd_quality_has_four_significant_digits():
    from vlmcodec.bench.report import bd_markdown

    table = {"teacher-sim_vs_avif": {"a": {"bd_rate": 1.0, "bd_quality": 0.0012344, "overlap": 1.0,
                                           "overlap_rate": 1.0}}}
    text = "\n".join(bd_markdown({"bd": table, "codecs": {}}, "teacher-sim_vs_avif"))
    assert "| a | +1.0 % | +0.001234 |" in text


def test_results_record_the_code_that_made_them():
    """A result's env named the Python, torch and CPU but not vlmcodec's version or commit."""
    import subprocess

    import vlmcodec
    from vlmcodec.bench.common import environment

    env = environment()
    assert env["vlmcodec"] == vlmcodec.__version__
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert env["commit"] in (head, head + "+dirty"), env["commit"]
    else:
        assert env["commit"] is None
