"""The RD bench end to end on a few small synthetic images: files, cache/resume, missing codecs
and metrics, report, plots, CLI (bench/rd.py, classic.py, report.py, plots.py, cli.py)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from vlmcodec.bench import classic, rd
from vlmcodec.bench.cli import parse_qualities


def _image(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([128 + 90 * np.sin(6 * x + seed), 128 + 80 * np.cos(5 * y + seed), 100 + 120 * x * y], -1)
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        Image.fromarray(_image(176, 208, i)).save(d / f"im{i}.png")
    return d


class _Missing(classic.ClassicCodec):
    name = "hevc"

    def available(self):
        return False, "ffmpeg not found (test)"


def _run(images, out, **kw):
    kw.setdefault("codecs", ["jpeg", "webp", "hevc"])
    kw.setdefault("qualities", {"jpeg": [20, 60, 90], "webp": [20, 60, 90]})
    return rd.run(images, out, semantic=False, progress=False, anchors_dir=None, **kw)


def test_run_writes_results_and_reports_missing(images, tmp_path, monkeypatch):
    monkeypatch.setitem(classic.CLASSIC_CODECS, "hevc", _Missing)
    out = tmp_path / "out"
    res = _run(images, out, plots=False)
    assert res["missing_codecs"] == {"hevc": "ffmpeg not found (test)"}
    pts = res["codecs"]["jpeg"]["points"]
    assert [p["quality"] for p in pts] == [20, 60, 90]  # sorted by bpp, which grows with quality
    assert pts[0]["bpp"] < pts[1]["bpp"] < pts[2]["bpp"] and pts[0]["psnr"] < pts[2]["psnr"]
    # bpp are real JPEG file sizes
    img = np.asarray(Image.open(images / "im0.png"))
    size = len(classic.JPEG().encode(img, 60))
    cache = json.loads((out / "cache" / "jpeg" / "q60.json").read_text())
    assert cache["images"]["im0.png"]["bytes"] == size
    assert set(cache["images"]["im0.png"]["metrics"]) >= {"psnr", "ms-ssim"}
    for p in pts:
        assert 0 < p["ms-ssim"] <= 1 and p["recall@1"] in (0.0, 1 / 3, 2 / 3, 1.0) or 0 <= p["recall@1"] <= 1
    on_disk = json.loads((out / "rd.json").read_text())
    assert on_disk["missing_codecs"] == res["missing_codecs"] and "env" in on_disk
    # per-image values, in rd.json's image order, whose means are the point
    for p in on_disk["codecs"]["jpeg"]["points"]:
        per = p["per_image"]
        assert len(per["bpp"]) == len(on_disk["images"]) == 3
        assert np.mean(per["bpp"]) == pytest.approx(p["bpp"]) and np.mean(per["psnr"]) == pytest.approx(p["psnr"])
    q60 = next(p for p in on_disk["codecs"]["jpeg"]["points"] if p["quality"] == 60)
    assert q60["per_image"]["bpp"][on_disk["images"].index("im0.png")] == pytest.approx(8 * size / (176 * 208))
    report = (out / "report.md").read_text()
    assert "codec **hevc**: ffmpeg not found (test)" in report and "| hevc | missing |" in report
    # images other than Kodak: the published Kodak anchors are left out, and the report says why
    assert on_disk["anchors"] == {} and "measured on Kodak" in on_disk["anchors_note"]
    assert "published anchors not used" in report


def test_resume_uses_cache_and_invalidates_changed_images(images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    # recall@1 depends on the whole gallery (a changed image redoes every image), so leave it out
    _run(images, out, codecs=["jpeg"], plots=False, metric_names=["psnr", "ms-ssim"])
    calls = []
    real = classic.JPEG.encode
    monkeypatch.setattr(classic.JPEG, "encode", lambda self, img, q: calls.append(q) or real(self, img, q))
    first = json.loads((out / "rd.json").read_text())["codecs"]["jpeg"]["points"]
    again = _run(images, out, codecs=["jpeg"], plots=False,
                 metric_names=["psnr", "ms-ssim"])["codecs"]["jpeg"]["points"]
    assert calls == []  # everything came from the cache
    assert [p["bpp"] for p in again] == [p["bpp"] for p in first]
    Image.fromarray(_image(176, 208, 7)).save(images / "im1.png")  # one image changes
    _run(images, out, codecs=["jpeg"], plots=False, metric_names=["psnr", "ms-ssim"])
    assert calls == [20, 60, 90]  # only that image is redone, at each quality
    calls.clear()
    _run(images, out, codecs=["jpeg"], plots=False)  # a metric added later: computed for all
    assert calls == [20] * 3 + [60] * 3 + [90] * 3


def test_vlmcodec_plots_and_bd_tables(images, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    # a fake "VTM" anchor: JPEG's own curve at 0.8x the rate → JPEG's BD-rate vs it is +25 %
    res0 = _run(images, tmp_path / "tmp", codecs=["jpeg"], qualities={"jpeg": [10, 30, 50, 70, 90]}, plots=False)
    jp = res0["codecs"]["jpeg"]["points"]
    (anchors / "vtm.json").write_text(json.dumps({"name": "VTM", "results": {
        "bpp": [0.8 * p["bpp"] for p in jp], "psnr-rgb": [p["psnr"] for p in jp],
        "ms-ssim-rgb": [p["ms-ssim"] for p in jp]}}))
    shutil.copytree(tmp_path / "tmp" / "cache", out / "cache")
    res = rd.run(images, out, codecs=["vlmcodec", "jpeg"],
                 qualities={"vlmcodec": [10, 90], "jpeg": [10, 30, 50, 70, 90]},
                 semantic=False, progress=False, anchors_dir=anchors)
    assert res["bd"]["psnr_vs_vtm"]["jpeg"]["bd_rate"] == pytest.approx(25.0, abs=1e-6)
    assert "vlmcodec" in res["bd"]["psnr_vs_vtm"]
    assert len(res["codecs"]["vlmcodec"]["points"]) == 2
    for m in ("psnr", "ms_ssim", "recall_1"):
        for ext in ("png", "svg"):
            assert (out / f"rd_{m}.{ext}").stat().st_size > 1000
    assert "![psnr](rd_psnr.png)" in (out / "report.md").read_text()


def test_plot_x_axis_follows_the_drawn_rates():
    from vlmcodec.bench.plots import MAX_BPP, x_limit

    assert x_limit([0.09, 0.29]) == pytest.approx(0.3045)  # a low-rate study fills the plot
    assert x_limit([0.1, 7.0]) == MAX_BPP and x_limit([]) == MAX_BPP


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (scripts/setup_bench.sh)")
def test_hevc_roundtrip():
    codec = classic.HEVC()
    ok, why = codec.available()
    if not ok:
        pytest.skip(why)
    img = _image(101, 77, 3)  # odd size
    data = codec.encode(img, 22)
    out = codec.decode(data)
    assert out.shape == img.shape and out.dtype == np.uint8
    from vlmcodec.bench.metrics import psnr

    assert psnr(img, out) > 30
    assert len(codec.encode(img, 42)) < len(data)


def test_ycbcr_roundtrip_is_within_one_level():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    back = classic.ycbcr444_to_rgb(classic.rgb_to_ycbcr444(img))
    assert np.abs(back.astype(int) - img).max() <= 2


def test_cli_parsing():
    from vlmcodec.cli import build_parser

    args = build_parser().parse_args(["bench", "rd", "imgs", "--out", "o", "--codecs", "jpeg", "--limit", "2",
                                      "--qualities", "jpeg=10,50", "--qualities", "0,100"])
    assert args.command == "bench" and args.bench_command == "rd" and args.limit == 2
    assert parse_qualities(args.qualities) == {"jpeg": [10.0, 50.0], "vlmcodec": [0.0, 100.0]}
    with pytest.raises(ValueError):
        parse_qualities(["jpeg=a,b"])
    with pytest.raises(ValueError, match="unknown codec"):
        rd.make_codec("bpg")


def test_merge_keeps_other_codecs(images, tmp_path):
    from vlmcodec.errors import ConfigError

    out = tmp_path / "out"
    _run(images, out, codecs=["jpeg"], qualities={"jpeg": [20, 60]}, plots=False, metric_names=["psnr"])
    only = _run(images, out, codecs=["webp"], qualities={"webp": [20, 60]}, plots=False, metric_names=["psnr"])
    assert list(only["codecs"]) == ["webp"]  # the default: this run's codecs only
    _run(images, out, codecs=["jpeg"], qualities={"jpeg": [20, 60]}, plots=False, metric_names=["psnr"],
         command="run jpeg")
    assert "earlier_commands" not in json.loads((out / "rd.json").read_text())
    both = _run(images, out, codecs=["webp"], qualities={"webp": [20, 60, 90]}, plots=False,
                metric_names=["psnr"], merge=True, command="run webp")
    on_disk = json.loads((out / "rd.json").read_text())
    assert set(on_disk["codecs"]) == {"jpeg", "webp"} == set(both["codecs"])
    assert on_disk["command"] == "run webp" and on_disk["earlier_commands"] == ["run jpeg"]
    assert "run jpeg" in (out / "report.md").read_text()
    _run(images, out, codecs=["webp"], qualities={"webp": [20]}, plots=False, metric_names=["psnr"], merge=True,
         command="run webp again")  # the history grows, oldest first
    assert json.loads((out / "rd.json").read_text())["earlier_commands"] == ["run jpeg", "run webp"]
    both = _run(images, out, codecs=["webp"], qualities={"webp": [20, 60, 90]}, plots=False,
                metric_names=["psnr"], merge=True)
    on_disk = json.loads((out / "rd.json").read_text())
    assert len(on_disk["codecs"]["webp"]["points"]) == 3  # the measured codec is this run's
    assert "jpeg" in on_disk["bd"]["psnr_vs_vtm"] or on_disk["bd"]["psnr_vs_vtm"] == {}
    with pytest.raises(ConfigError, match="no ms-ssim for jpeg"):
        _run(images, out, codecs=["webp"], qualities={"webp": [20]}, plots=False,
             metric_names=["psnr", "ms-ssim"], merge=True)
    with pytest.raises(ConfigError, match="other images"):
        _run(images, out, codecs=["webp"], qualities={"webp": [20]}, plots=False, metric_names=["psnr"],
             merge=True, limit=2)


def test_bd_tables_between_measured_codecs_carry_bootstrap_intervals(images, tmp_path, monkeypatch):
    monkeypatch.setattr(rd, "SEMANTIC_ANCHOR", "webp")
    monkeypatch.setattr(rd, "ANCHORED_METRICS", ())  # table PSNR against WebP as a semantic metric is
    res = _run(images, tmp_path / "out", codecs=["jpeg", "webp"], plots=False, metric_names=["psnr"])
    cell = res["bd"]["psnr_vs_webp"]["jpeg"]
    assert cell["ci"]["n_boot"] == 1000 and cell["ci"]["lo"] <= cell["bd_rate"] <= cell["ci"]["hi"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "95 % interval (bootstrap over images)" in report and f"[{cell['ci']['lo']:+.1f}," in report


def test_classic_qualities_outside_what_the_encoder_takes_are_refused():
    """jpeg=200 was coded at Pillow's 100 and recorded as 200; jpeg=50.5 at 50."""
    for name, bad in (("jpeg", 200), ("jpeg", -1), ("jpeg", 50.5), ("webp", 101), ("hevc", 52), ("webp@256", 120)):
        with pytest.raises(ValueError, match="must be whole numbers in"):
            rd.make_codec(name).check_qualities([50, bad] if name != "hevc" else [30, bad])
    rd.make_codec("jpeg").check_qualities([0, 5, 100])
    rd.make_codec("hevc").check_qualities([0, 51])
    rd.make_codec("vlmcodec").check_qualities([0, 37.5, 100])
    with pytest.raises(ValueError, match=r"vlmcodec: quality must be numbers in \[0, 100\]"):
        rd.make_codec("vlmcodec").check_qualities([101])
