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
        assert 0 < p["ms-ssim"] <= 1, p  # (one assert each: `a and b or c` passed whatever ms-ssim was)
        assert any(abs(p["recall@1"] - k / 3) < 1e-9 for k in range(4)), p  # 3 images: 3 queries
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


def _strict_json(path):
    """rd.json parsed as strict JSON: NaN / Infinity tokens are an error."""
    def refuse(token):
        raise AssertionError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_lossless_image_keeps_its_point_finite_and_rd_json_strict(images, tmp_path):
    Image.fromarray(np.full((176, 208, 3), 128, np.uint8)).save(images / "flat.png")  # JPEG codes it losslessly
    anchors = tmp_path / "anchors"
    anchors.mkdir()  # a VTM whose PSNR range does not overlap: BD-rates NaN, written as null
    (anchors / "vtm.json").write_text(json.dumps({"name": "VTM", "results": {"bpp": [0.1, 0.2], "psnr-rgb": [5, 6]}}))
    out = tmp_path / "out"
    kw = dict(codecs=["jpeg"], qualities={"jpeg": [30, 90]}, plots=False, metric_names=["psnr"])
    res = rd.run(images, out, semantic=False, progress=False, anchors_dir=anchors, **kw)
    on_disk = _strict_json(out / "rd.json")
    flat = on_disk["images"].index("flat.png")
    for p in on_disk["codecs"]["jpeg"]["points"]:
        assert p["per_image"]["psnr"][flat] == 100.0 and p["psnr"] == pytest.approx(np.mean(p["per_image"]["psnr"]))
    assert np.isnan(res["bd"]["psnr_vs_vtm"]["jpeg"]["bd_rate"])
    assert on_disk["bd"]["psnr_vs_vtm"]["jpeg"]["bd_rate"] is None
    # a cache written before the ceiling (inf) is computed again, not averaged
    cache = out / "cache" / "jpeg" / "q30.json"
    data = json.loads(cache.read_text())
    data["images"]["flat.png"]["metrics"]["psnr"] = float("inf")
    cache.write_text(json.dumps(data))
    again = rd.run(images, out, semantic=False, progress=False, anchors_dir=anchors, **kw)
    psnrs = [[p["psnr"] for p in r["codecs"]["jpeg"]["points"]] for r in (res, again)]
    assert psnrs[0] == psnrs[1]


def _no_coding(monkeypatch):
    calls = []
    for cls in (classic.JPEG, classic.WebP):
        monkeypatch.setattr(cls, "encode", lambda self, img, q: calls.append(q))
    return calls


def test_merge_refuses_other_images_of_the_same_names_before_coding(images, tmp_path, monkeypatch):
    from vlmcodec.errors import ConfigError

    out = tmp_path / "out"
    kw = dict(plots=False, metric_names=["psnr"])
    _run(images, out, codecs=["jpeg"], qualities={"jpeg": [20, 60]}, **kw)
    assert len(_strict_json(out / "rd.json")["image_digests"]) == 3
    other = tmp_path / "other"
    shutil.copytree(images, other)
    Image.fromarray(_image(176, 208, 9)).save(other / "im1.png")  # same names, one other picture
    calls = _no_coding(monkeypatch)
    with pytest.raises(ConfigError, match="other images of the same names"):
        _run(other, out, codecs=["webp"], qualities={"webp": [20, 60]}, merge=True, **kw)
    assert calls == []  # refused before any coding (it was checked after every codec ran)
    monkeypatch.undo()
    # an rd.json from before the digests: merged by names, as before
    old = _strict_json(out / "rd.json")
    del old["image_digests"]
    (out / "rd.json").write_text(json.dumps(old))
    merged = _run(images, out, codecs=["webp"], qualities={"webp": [20, 60]}, merge=True, **kw)
    assert set(merged["codecs"]) == {"jpeg", "webp"}


def test_wrong_options_are_refused_before_coding(images, tmp_path, monkeypatch):
    """(each was accepted with exit 0: a missing --anchors folder gave tables without anchors,
    --out the images folder made the next run measure the plots)"""
    from vlmcodec.errors import ConfigError

    calls = _no_coding(monkeypatch)
    (tmp_path / "no_anchors").mkdir()
    (tmp_path / "no_anchors" / "other.json").write_text("{}")
    for kw, message in (({"anchors_dir": tmp_path / "nowhere"}, "nowhere: not a folder"),
                        ({"anchors_dir": tmp_path / "no_anchors"}, "none of the anchor files is there"),
                        ({"out": images}, "is the images folder")):
        args = {"anchors_dir": None, "out": tmp_path / "out", **kw}
        with pytest.raises(ConfigError, match=message):
            rd.run(images, args.pop("out"), codecs=["jpeg"], semantic=False, progress=False, plots=False,
                   metric_names=["psnr"], **args)
    assert calls == [] and not (images / "rd.json").exists()


def test_quality_keys_must_name_a_codec_run():
    """(--qualities jpg=50,60 was ignored: jpeg ran on its default grid, exit 0)"""
    from vlmcodec.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--qualities jpg=\.\.\.: no codec jpg in --codecs \(jpeg\)"):
        rd.check_quality_keys({"jpeg": [50], "jpg": [50, 60]}, ["jpeg"])
    with pytest.raises(ConfigError, match="a bare list Q,Q,... is vlmcodec's"):
        rd.check_quality_keys({"vlmcodec": [50]}, ["jpeg", "webp"])
    # a key for the family of the codecs run is theirs
    rd.check_quality_keys({"vlmcodec": [50], "webp": [5], "jpeg@256": [9]},
                          ["vlmcodec+r2v224x336@256", "webp@256", "jpeg@256"])


@pytest.mark.parametrize("text, message", [
    ('{"name": "VTM"}', r'vtm.json: no "results" object'),
    ("not json", "vtm.json: cannot read it as JSON"),
    ('{"results": {"bpp": [0.1, 0.2, 0.3], "psnr-rgb": [30, 31]}}',
     "vtm.json: results.psnr-rgb has 2 values, results.bpp 3"),
    ('{"results": {"bpp": [0.1, "x"], "psnr-rgb": [30, 31]}}', "vtm.json: results.bpp must be a list of numbers"),
])
def test_malformed_anchor_files_are_named_before_the_codecs_run(images, tmp_path, monkeypatch, text, message):
    from vlmcodec.errors import ConfigError

    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / "vtm.json").write_text(text)
    calls = _no_coding(monkeypatch)
    with pytest.raises(ConfigError, match=f"anchor file {anchors}/{message}"):
        rd.run(images, tmp_path / "out", codecs=["jpeg"], qualities={"jpeg": [50]}, plots=False, metric_names=["psnr"],
               semantic=False, progress=False, anchors_dir=anchors)
    assert calls == []


def test_a_part_of_kodak_against_the_published_anchors_is_noted(images, tmp_path, monkeypatch):
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / "vtm.json").write_text(json.dumps({"results": {"bpp": [0.5, 1, 2], "psnr-rgb": [28, 32, 36]}}))
    monkeypatch.setattr(rd, "kodak_dir", lambda: images)  # these images play Kodak
    monkeypatch.setattr(rd, "default_anchor_dir", lambda: anchors)
    kw = dict(codecs=["jpeg"], qualities={"jpeg": [50, 90]}, plots=False, metric_names=["psnr"])
    res = _run(images, tmp_path / "out", limit=2, **kw)
    assert res["anchors"] and "means over all 3 Kodak images, this run's over the first 2 (--limit)" in res[
        "anchors_note"]
    assert "over the first 2 (--limit)" in (tmp_path / "out" / "report.md").read_text()
    assert "anchors_note" not in _run(images, tmp_path / "out", **kw)


def test_no_progress_bar_is_drawn_into_a_file_or_a_pipe(images, tmp_path, capsys):
    """bench rd (and speed, throughput, compressai, matched-bytes) called tqdm directly: a run with
    stderr in a file wrote its bar's carriage returns there (README: no bar off a terminal)."""
    from vlmcodec.cli import main

    assert main(["bench", "rd", str(images), "--out", str(tmp_path / "o"), "--codecs", "jpeg", "--qualities",
                 "jpeg=50,80", "--no-semantic", "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "%|" not in err, err[-500:]


def test_the_recorded_command_is_the_one_run_whatever_the_entry_point(tmp_path, monkeypatch, capsys):
    """rd.json recorded "vlmcodec " + sys.argv[1:]: "vlmcodec rd ..." (no "bench", which does not
    run) from ``python -m vlmcodec.bench.cli``, and a host script's own arguments from main([...])."""
    import json

    from PIL import Image

    from vlmcodec.bench.cli import main as bench_main

    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "a.png")
    monkeypatch.setattr("sys.argv", ["host_script.py", "--its-own", "flags"])
    args = ["rd", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"), "--codecs", "jpeg", "--qualities",
            "jpeg=10,50", "--metrics", "psnr", "--no-semantic", "--no-plots", "--quiet"]
    assert bench_main(args) == 0
    recorded = json.loads((tmp_path / "out" / "rd.json").read_text())["command"]
    assert recorded.startswith("vlmcodec bench rd ") and "--its-own" not in recorded, recorded
    assert f"vlmcodec bench rd {tmp_path / 'imgs'} --out" in (tmp_path / "out" / "report.md").read_text()
