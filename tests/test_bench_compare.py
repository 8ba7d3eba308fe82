"""``vlmcodec bench compare``: BD figures and low-rate point checks between finished rd runs."""

import json
import math
import re

import numpy as np
import pytest

from vlmcodec.bench import bootstrap
from vlmcodec.bench import compare as cmp
from vlmcodec.errors import ConfigError


def _rd(path, codec, bpps, psnrs, kls, images=("a.png", "b.png"), digests=None):
    pts = [{"quality": i, "bpp": b, "psnr": p, "effnet-kl": k} for i, (b, p, k) in enumerate(zip(bpps, psnrs, kls))]
    metrics = [{"name": "psnr", "higher_is_better": True}, {"name": "effnet-kl", "higher_is_better": False}]
    path.write_text(json.dumps({"images": list(images), "metrics": metrics, "codecs": {codec: {"points": pts}},
                                **({"image_digests": list(digests)} if digests else {})}))
    return path


def test_compare_bd_and_low_rate(tmp_path):
    a = _rd(tmp_path / "a.json", "webp", [0.1, 0.2, 0.4, 0.8], [26, 28, 30, 32], [0.8, 0.6, 0.4, 0.2])
    # the same curve with every rate 10 % lower: BD-rate −10 %, better at every point it shares
    b = _rd(tmp_path / "b.json", "vlmcodec", [0.09, 0.18, 0.36, 0.72], [26, 28, 30, 32], [0.8, 0.6, 0.4, 0.2])
    curves = [cmp.load_curve(f"mine={b}")]
    anchors = [cmp.load_curve(f"webp={a}:webp")]
    res = cmp.compare(curves, anchors, ["psnr", "effnet-kl"], max_bpp=0.3)
    for m in ("psnr", "effnet-kl"):
        assert res["bd"]["mine"]["webp"][m]["bd_rate"] == pytest.approx(-10.0, abs=1e-6)
        assert res["bd"]["mine"]["webp"][m]["bd_quality"] > 0
    rows = res["low_rate"]["mine"]
    assert [r["bpp"] for r in rows] == [0.09, 0.18]  # ≤ 0.3 only
    assert rows[0]["vs"]["webp"]["psnr"]["better"] is None  # 0.09 is below webp's measured range
    assert math.isnan(rows[0]["vs"]["webp"]["psnr"]["anchor"])
    assert rows[1]["vs"]["webp"]["psnr"]["better"] is True
    assert rows[1]["vs"]["webp"]["effnet-kl"]["better"] is True  # lower KL than webp at 0.18 bpp
    md = cmp.markdown(res, anchors, curves)
    assert "-10.0 %" in md and "✓" in md


def test_a_tie_at_a_point_is_equal_and_an_undefined_bd_quality_says_why(tmp_path):
    """A point equal to the anchor's was marked ✗ (worse), as top-1 agreement's steps of 1/N often
    are; an undefined BD-quality read "+nan", without the reason compare.json kept."""
    a = _rd(tmp_path / "a.json", "webp", [0.1, 0.2, 0.4], [26, 28, 30], [0.8, 0.6, 0.4])
    one = _rd(tmp_path / "one.json", "vlmcodec", [0.2], [28], [0.6])  # a single point: no BD values
    curves, anchors = [cmp.load_curve(f"same={a}:webp"), cmp.load_curve(f"one={one}")], [cmp.load_curve(f"webp={a}:webp")]
    res = cmp.compare(curves, anchors, ["psnr", "effnet-kl"], max_bpp=0.3)
    tie = res["low_rate"]["same"][1]["vs"]["webp"]["psnr"]
    assert tie == {"anchor": pytest.approx(28), "better": None, "equal": True}
    md = cmp.markdown(res, anchors, curves)
    points = md.split("### vs webp")[1]
    assert "| same | 1 | 0.200 | 28 / 28 = | 0.6 / 0.6 = |" in points and "✗" not in points
    cell = md.split("| one | ")[1].split(" | ")[0]
    assert "+nan" not in md and cell.startswith("n/a") and "(n/a)" in cell and "points" in cell, cell


def test_compare_errors(tmp_path, capsys):
    a = _rd(tmp_path / "a.json", "webp", [0.1, 0.2], [26, 28], [0.8, 0.6])
    other = _rd(tmp_path / "o.json", "vlmcodec", [0.1, 0.2], [26, 28], [0.8, 0.6], images=("x.png",))
    with pytest.raises(ConfigError, match="no codec"):
        cmp.load_curve(f"x={a}:jpeg")
    with pytest.raises(ConfigError, match="NAME=RD_JSON"):
        cmp.load_curve("nonsense")
    with pytest.raises(ConfigError, match="other images"):
        cmp.compare([cmp.load_curve(f"o={other}")], [cmp.load_curve(f"w={a}:webp")], ["psnr"])
    assert cmp.main(["--curve", f"o={tmp_path / 'missing.json'}"]) == 2
    assert "cannot read" in capsys.readouterr().err
    # JSON that is not a bench rd result (an AttributeError, a KeyError, a TypeError before)
    for i, text in enumerate(("[1, 2]", '{"codecs": {"vlmcodec": {"points": [{"psnr": 30}]}}}',
                              '{"codecs": {"vlmcodec": {"points": []}}, "metrics": "psnr"}')):
        (tmp_path / f"bad{i}.json").write_text(text)
        assert cmp.main(["--curve", f"b={tmp_path / f'bad{i}.json'}"]) == 2
        assert "`vlmcodec bench rd` result" in capsys.readouterr().err
    # a misspelt metric, a NaN bound, a report named .json: refused (they exited 0 with tables of
    # n/a, every point "at ≤ nan bpp", or the report replaced by its figures)
    for extra, message in ((["--metrics", "psnrr"], r"\['psnrr'\] not measured"),
                           (["--max-bpp", "nan"], "--max-bpp must be a number above 0"),
                           (["--out", str(tmp_path / "r.json")], "name the Markdown report"),
                           # a folder: the name suggested is one compare takes (it said result.json)
                           (["--out", str(tmp_path)], re.escape(f"e.g. {tmp_path / 'compare.md'}"))):
        assert cmp.main(["--curve", f"w={a}:webp", "--anchor", f"v={a}:webp", *extra]) == 2
        assert re.search(message, capsys.readouterr().err)
    assert cmp.main(["--curve", f"w={a}:webp"]) == 2  # (a report of headers alone, exit 0)
    assert "one --curve and no --anchor: nothing to compare it with" in capsys.readouterr().err
    assert cmp.main(["--curve", f"w={a}:webp", "--anchor", f"v={a}:webp", "--out", str(tmp_path / "r.md"),
                     "--bootstrap", "0"]) == 0
    assert (tmp_path / "r.md").read_text().startswith("# Curve comparison") and (tmp_path / "r.json").exists()
    # strict JSON: an undefined value is null (a bare NaN token before, which strict parsers refuse)
    json.loads((tmp_path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in r.json"))


def _rd_per_image(path, codec, per_bpp, per_q, metric="effnet-top1", hib=True):
    """An rd.json whose points carry per-image values ([points][images])."""
    per_bpp, per_q = np.asarray(per_bpp, float), np.asarray(per_q, float)
    images = [f"im{i}.png" for i in range(per_bpp.shape[1])]
    pts = [{"quality": i, "bpp": float(r.mean()), metric: float(q.mean()),
            "per_image": {"bpp": r.tolist(), metric: q.tolist()}} for i, (r, q) in enumerate(zip(per_bpp, per_q))]
    path.write_text(json.dumps({"images": images, "metrics": [{"name": metric, "higher_is_better": hib}],
                                "codecs": {codec: {"points": pts}}}))
    return path


def _noisy_curve(seed, n_img=24, rates=(0.1, 0.2, 0.4, 0.8)):
    rng = np.random.default_rng(seed)
    per_bpp = np.array([r * rng.uniform(0.5, 1.5, n_img) for r in rates])
    per_q = np.array([np.clip(0.3 + 0.25 * np.log2(r / 0.1) + rng.normal(0, 0.3, n_img), 0, 1) for r in rates])
    return per_bpp, per_q


def test_bootstrap_interval_is_exact_for_a_uniform_rate_change(tmp_path):
    per_bpp, per_q = _noisy_curve(1)
    a = cmp.load_curve(f"a={_rd_per_image(tmp_path / 'a.json', 'webp', per_bpp, per_q)}:webp")
    # every image coded with 20 % fewer bytes at the same quality: −20 % in every resample
    t = cmp.load_curve(f"t={_rd_per_image(tmp_path / 't.json', 'vlmcodec', 0.8 * per_bpp, per_q)}")
    ci = bootstrap.bd_rate_interval(a.points, t.points, "effnet-top1", n_boot=200)
    assert ci["lo"] == pytest.approx(-20.0, abs=1e-9) and ci["hi"] == pytest.approx(-20.0, abs=1e-9)
    same = bootstrap.bd_rate_interval(a.points, a.points, "effnet-top1", n_boot=50)
    assert same["lo"] == pytest.approx(0.0, abs=1e-9) and same["hi"] == pytest.approx(0.0, abs=1e-9)


def test_bootstrap_interval_covers_estimate_and_shrinks_with_images(tmp_path):
    widths = []
    for n_img in (12, 192):
        a = _rd_per_image(tmp_path / f"a{n_img}.json", "webp", *_noisy_curve(2, n_img))
        t = _rd_per_image(tmp_path / f"t{n_img}.json", "vlmcodec", *_noisy_curve(3, n_img))
        res = cmp.compare([cmp.load_curve(f"t={t}")], [cmp.load_curve(f"a={a}:webp")], ["effnet-top1"],
                          n_boot=300, seed=5)
        cell = res["bd"]["t"]["a"]["effnet-top1"]
        assert cell["ci"]["lo"] < cell["bd_rate"] < cell["ci"]["hi"]
        widths.append(cell["ci"]["hi"] - cell["ci"]["lo"])
        # the same seed draws the same resamples
        again = cmp.compare([cmp.load_curve(f"t={t}")], [cmp.load_curve(f"a={a}:webp")], ["effnet-top1"],
                            n_boot=300, seed=5)
        assert again["bd"]["t"]["a"]["effnet-top1"]["ci"] == cell["ci"]
    assert widths[1] < widths[0] / 2  # 16× the images: about a quarter of the width
    md = cmp.markdown(res, [cmp.load_curve(f"a={a}:webp")], [cmp.load_curve(f"t={t}")])
    assert "paired bootstrap" in md and f"[{cell['ci']['lo']:+.1f}, {cell['ci']['hi']:+.1f}]" in md


def test_bootstrap_needs_per_image_values(tmp_path, capsys):
    a = _rd(tmp_path / "a.json", "webp", [0.1, 0.2, 0.4], [26, 28, 30], [0.8, 0.6, 0.4])
    b = _rd(tmp_path / "b.json", "vlmcodec", [0.09, 0.18, 0.36], [26, 28, 30], [0.8, 0.6, 0.4])
    res = cmp.compare([cmp.load_curve(f"b={b}")], [cmp.load_curve(f"a={a}:webp")], ["psnr"], n_boot=100)
    assert "ci" not in res["bd"]["b"]["a"]["psnr"]  # older rd.json: BD-rate alone, no interval
    with pytest.raises(SystemExit) as e:
        cmp.main(["--curve", f"b={b}", "--anchor", f"a={a}:webp", "--bootstrap", "-1"])
    assert e.value.code == 2 and "--bootstrap: expected a whole number, at least 0" in capsys.readouterr().err


def test_bd_cell_is_the_bd_rate_and_its_interval(tmp_path):
    from vlmcodec.bench.report import bd_cell

    per_bpp, per_q = _noisy_curve(1)
    a = cmp.load_curve(f"a={_rd_per_image(tmp_path / 'a.json', 'webp', per_bpp, per_q)}:webp")
    t = cmp.load_curve(f"t={_rd_per_image(tmp_path / 't.json', 'vlmcodec', 0.8 * per_bpp, per_q)}")
    assert bd_cell(a.points, t.points, "effnet-top1") == "-20.0 % [-20.0, -20.0]"
    # points without per-image values: the BD-rate alone
    bare = [{k: v for k, v in p.items() if k != "per_image"} for p in t.points]
    assert bd_cell(a.points, bare, "effnet-top1") == "-20.0 %"
    # curves that do not overlap in quality have no BD-rate
    far = [{**p, "effnet-top1": p["effnet-top1"] + 10.0} for p in bare]
    assert bd_cell(a.points, far, "effnet-top1") == "n/a"


def test_compare_checks_the_images_pixels_where_recorded(tmp_path, capsys):
    """(runs on other images that share their file names were compared, exit 0)"""
    args = ([0.1, 0.2, 0.4], [26, 28, 30], [0.8, 0.6, 0.4])
    a = _rd(tmp_path / "a.json", "webp", *args, digests=("d1", "d2"))
    same = _rd(tmp_path / "s.json", "vlmcodec", *args, digests=("d1", "d2"))
    other = _rd(tmp_path / "o.json", "vlmcodec", *args, digests=("d1", "d3"))
    old = _rd(tmp_path / "old.json", "vlmcodec", *args)  # before bench rd recorded digests
    anchors = [cmp.load_curve(f"w={a}:webp")]
    with pytest.raises(ConfigError, match=r"o \(.*o.json:vlmcodec\) was measured on other images than s, of the "
                                          r"same names \(their pixels differ\)"):
        cmp.compare([cmp.load_curve(f"s={same}"), cmp.load_curve(f"o={other}")], anchors, ["psnr"])
    assert cmp.main(["--curve", f"o={other}", "--anchor", f"w={a}:webp", "--metrics", "psnr"]) == 2
    assert "their pixels differ" in capsys.readouterr().err
    assert "notes" not in cmp.compare([cmp.load_curve(f"s={same}")], anchors, ["psnr"], n_boot=0)
    # an older rd.json: compared by names, as before, with a note
    curves = [cmp.load_curve(f"old={old}")]
    res = cmp.compare(curves, anchors, ["psnr"], n_boot=0)
    assert res["bd"]["old"]["w"]["psnr"]["bd_rate"] == pytest.approx(0.0, abs=1e-9)
    assert res["notes"] == ["old: an rd.json without image digests (older `bench rd`): its images are matched to "
                            "the others' by file name only"]
    assert "_Note: old: an rd.json without image digests" in cmp.markdown(res, anchors, curves)


def test_the_figures_file_is_strict_json(tmp_path):
    """Curves whose quality ranges do not overlap: their BD-rate is undefined, null in the
    figures file (a bare NaN token before, which strict JSON parsers refuse)."""
    per_bpp = np.array([[0.2, 0.3], [0.4, 0.5], [0.8, 0.9], [1.6, 1.7]])
    a = _rd_per_image(tmp_path / "a.json", "webp", per_bpp, np.array([[0.1, 0.2], [0.2, 0.3], [0.3, 0.4], [0.4, 0.5]]))
    t = _rd_per_image(tmp_path / "t.json", "vlmcodec", per_bpp, np.array([[0.7, 0.8], [0.8, 0.9], [0.85, 0.9], [0.9, 0.95]]))
    assert cmp.main(["--curve", f"t={t}", "--anchor", f"a={a}:webp", "--out", str(tmp_path / "r.md"),
                     "--bootstrap", "0"]) == 0
    text = (tmp_path / "r.json").read_text()
    assert "null" in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in r.json"))


def test_rd_report_renders_a_metric_that_failed_at_every_point():
    # every point's value None (the metric's model failed): the "same value everywhere" note
    # formatted None with :g and raised TypeError, so no report was written
    from vlmcodec.bench.report import render

    points = [{"quality": q, "bpp": 0.1 * q, "psnr": 30.0 + q, "lite0": None, "enc_s": 0.1, "dec_s": 0.1}
              for q in (1, 2)]
    result = {"metrics": [{"name": "psnr"}, {"name": "lite0"}], "images": ["a.png"], "images_dir": "d",
              "bd": {}, "codecs": {"ours": {"points": points, "quality_name": "q", "label": "ours",
                                            "version": "1", "settings": {}}}}
    text = render(result)
    assert "**lite0** has no value at any point" in text
    assert "| ours | q 1 | 0.1000 | 31.00 | n/a |" in text
