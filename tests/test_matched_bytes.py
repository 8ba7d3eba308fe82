"""``vlmcodec bench matched-bytes``: vlmcodec rate-controlled into an anchor's bytes, scored in pairs."""

import json
import math

import numpy as np
import pytest
from conftest import smooth_image, write_train_folder
from vlmcodec import Codec
from vlmcodec.bench.bootstrap import mean_interval
from vlmcodec.bench.matched_bytes import markdown, paired_point
from vlmcodec.bench.metrics import PSNR
from vlmcodec.cli import main


def test_mean_interval_brackets_the_mean_and_shrinks_with_agreement():
    rng = np.random.default_rng(1)
    noisy = rng.normal(0.5, 1.0, 40)
    lo, hi = mean_interval(noisy)
    assert lo < noisy.mean() < hi and hi - lo < 1.5
    steady = np.full(40, 0.5) + rng.normal(0, 0.01, 40)
    s_lo, s_hi = mean_interval(steady)
    assert 0 < s_lo < 0.5 < s_hi and s_hi - s_lo < (hi - lo) / 20
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(ValueError, match="non-empty"):
        mean_interval([])
    # a non-finite difference (PSNR inf of a lossless image) gave an interval of NaN, as a figure
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ValueError, match="1 of 3 differences are not finite"):
            mean_interval([1.0, bad, 2.0])


class _SizedAnchor:
    """An anchor whose streams all have one size and decode to the image last encoded, off by
    one grey level (far better than the tiny random model at any size)."""

    name = "sized"

    def __init__(self, size: int):
        self.size, self.last = size, None

    def encode(self, img, quality):
        self.last = img
        return bytes(self.size)

    def decode(self, data):
        return np.clip(self.last.astype(np.int16) + 1, 0, 255).astype(np.uint8)


class _MeanAbsError:
    name, higher_is_better = "mae", False

    def compute(self, a, b):
        return float(np.abs(a.astype(np.float64) - b).mean())


def test_paired_point_counts_unfit_and_top_quality_pairs_and_scores_the_rest(tiny_model_path, rng):
    imgs = [smooth_image(rng, 64, 96) for _ in range(3)]
    codec = Codec(tiny_model_path)
    smallest = max(len(codec.encode(i, 0)) for i in imgs)
    largest = max(len(codec.encode(i, 100)) for i in imgs)
    ticks = []

    none_fit = paired_point(imgs, _SizedAnchor(min(len(codec.encode(i, 0)) for i in imgs) - 1), codec, 0, [PSNR()],
                            progress=lambda: ticks.append(1))
    assert none_fit == {"anchor_quality": 0.0, "pairs": 0, "unfit": 3, "vlmcodec_at_quality_100": 0}
    assert len(ticks) == 3

    mid = paired_point(imgs, _SizedAnchor((smallest + largest) // 2), codec, 50, [PSNR(), _MeanAbsError()])
    assert mid["pairs"] == 3 and mid["unfit"] == 0
    assert mid["bpp_vlmcodec"] <= mid["bpp_anchor"] == pytest.approx(8 * ((smallest + largest) // 2) / (64 * 96))
    for key, sign in (("psnr", 1), ("mae", -1)):  # gain > 0 means vlmcodec better, whichever way the metric runs
        r = mid[key]
        assert r["losses"] == 3 and r["wins"] == r["ties"] == 0
        assert r["gain"] == pytest.approx(sign * (r["vlmcodec"] - r["anchor"])) and r["gain_95"][1] < 0
    assert mid["mae"]["anchor"] == pytest.approx(1.0, abs=0.01)

    roomy = paired_point(imgs, _SizedAnchor(largest + 1000), codec, 90, [PSNR()])
    assert roomy["pairs"] == roomy["vlmcodec_at_quality_100"] == 3

    md = markdown({"anchor": "sized", "vlmcodec": "vlmcodec", "model": codec.fingerprint.hex(), "images": 3,
                   "metrics": ["psnr"], "points": [none_fit, mid]}, "CMD")
    assert "| sized q | pairs (unfit; vlmcodec at q100) | bpp sized / vlmcodec | PSNR |" in md
    assert "| 0 | 0 (3; 0) | – | – |" in md and "| 50 | 3 (0; 0) |" in md and ", 0/0/3 |" in md


class _InfOnFirst:
    name, higher_is_better = "odd", True

    def __init__(self):
        self.calls = 0

    def compute(self, a, b):
        self.calls += 1
        return math.inf if self.calls == 1 else 1.0


def test_paired_point_refuses_non_finite_metric_values(tiny_model_path, rng):
    imgs = [smooth_image(rng, 64, 96) for _ in range(2)]
    codec = Codec(tiny_model_path)
    roomy = max(len(codec.encode(i, 100)) for i in imgs) + 1000
    with pytest.raises(ValueError, match=r"metric odd is not finite \(inf\) for 1 of 2 images coded by sized at "
                                         "anchor quality 50"):
        paired_point(imgs, _SizedAnchor(roomy), codec, 50, [_InfOnFirst()])


def test_paired_point_counts_one_pass_fallbacks_or_leaves_them_out(tiny_model_path, rng):
    imgs = [smooth_image(rng, 64, 96) for _ in range(2)]
    plain = Codec(tiny_model_path)
    refined = Codec(tiny_model_path, refine=1)
    analyse = refined.analyse
    refined.analyse = lambda pixels, qualities, **kw: tuple(t * f for t, f in
                                                            zip(analyse(pixels, qualities, **kw), (1.5, 1)))
    # a budget between the one-pass and the (made larger) refined quality-0 streams of both images
    budget = max(len(plain.encode(i, 0)) for i in imgs) + 2
    assert all(len(refined.encode(i, 0)) > budget for i in imgs)
    counted = paired_point(imgs, _SizedAnchor(budget), refined, 1, [PSNR()])
    assert (counted["pairs"], counted["unfit"], counted["one_pass_fallbacks"]) == (2, 0, 2)
    strict = paired_point(imgs, _SizedAnchor(budget), refined, 1, [PSNR()], refined_only=True)
    assert (strict["pairs"], strict["unfit"], strict["one_pass_fallbacks"]) == (0, 2, 0)
    assert "one_pass_fallbacks" not in paired_point(imgs, _SizedAnchor(budget), plain, 1, [PSNR()])
    md = markdown({"anchor": "sized", "vlmcodec": "vlmcodec+r1", "model": "m", "images": 2, "metrics": ["psnr"],
                   "refined_only": True, "points": [counted, strict]}, "CMD")
    assert "pairs (unfit; vlmcodec at q100; one-pass)" in md and "| 1 | 2 (0; 0; 2) |" in md
    assert "| 1 | 0 (2; 0; 0) |" in md and "--refined-only" in md


def test_bench_matched_bytes_end_to_end(tmp_path, rng, tiny_model_path, capsys):
    out = tmp_path / "out"
    rc = main(["bench", "matched-bytes", str(write_train_folder(tmp_path / "imgs", h=64, w=96)), "--anchor", "jpeg", "--qualities", "5,95",
               "--codec", "vlmcodec", "--model", str(tiny_model_path), "--metrics", "psnr", "--out", str(out),
               "--quiet"])
    assert rc == 0
    report = json.loads((out / "vlmcodec_vs_jpeg.json").read_text())
    assert [p["anchor_quality"] for p in report["points"]] == [5.0, 95.0] and report["metrics"] == ["psnr"]
    assert report["images"] == 2 and all(p["pairs"] + p["unfit"] == 2 for p in report["points"])
    md = (out / "vlmcodec_vs_jpeg.md").read_text()
    assert md.startswith("# vlmcodec against jpeg at equal file size") and "bench matched-bytes" in md
    assert md in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--qualities", "5,x"], "--qualities: expected numbers"),
    (["--codec", "webp"], "--codec names the vlmcodec side"),
    (["--anchor", "nope"], "unknown codec 'nope'"),
    (["--metrics", "psnr,nope"], "unknown metric"),
    (["--model", "missing.safetensors"], "missing.safetensors"),
    (["--refined-only"], "--refined-only applies to a refining codec"),
    # the anchor's qualities, checked as bench rd does (jpeg=150 was coded at 100, reported as 150)
    (["--anchor", "jpeg", "--qualities", "50,150"], "jpeg: quality must be whole numbers in [0, 100], got 150"),
    (["--anchor", "webp@256", "--qualities", "50.5"], "webp@256: quality must be whole numbers"),
])
def test_bench_matched_bytes_refuses_bad_arguments(tmp_path, rng, args, message, capsys):
    rc = main(["bench", "matched-bytes", str(write_train_folder(tmp_path / "imgs", h=64, w=96)), "--metrics", "psnr", "--quiet",
               "--out", str(tmp_path / "out"), *args])
    assert rc == 2 and message in capsys.readouterr().err


def test_bench_matched_bytes_without_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["bench", "matched-bytes", str(tmp_path / "empty"), "--metrics", "psnr", "--quiet"]) == 2
    assert "no images" in capsys.readouterr().err
    assert main(["bench", "matched-bytes", str(tmp_path / "nowhere"), "--metrics", "psnr", "--quiet"]) == 2
    assert "nowhere: not a folder of images" in capsys.readouterr().err


def test_bench_matched_bytes_refuses_an_out_file_before_the_run(tmp_path, monkeypatch, capsys):
    """(--out naming a file failed with "File exists" only after every image was coded)"""
    from vlmcodec.bench import matched_bytes

    ran = []
    monkeypatch.setattr(matched_bytes, "run", lambda *a, **k: ran.append(1))
    (tmp_path / "file").write_text("")
    images = write_train_folder(tmp_path / "imgs", h=64, w=96)
    rc = main(["bench", "matched-bytes", str(images), "--metrics", "psnr", "--quiet", "--anchor", "jpeg",
               "--qualities", "50", "--out", str(tmp_path / "file")])
    assert rc == 2 and ran == [] and "--out" in capsys.readouterr().err
