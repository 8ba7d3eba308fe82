"""``vlmcodec bench compare``: BD figures and low-rate point checks between finished rd runs."""

import json
import math

import pytest

from vlmcodec.bench import compare as cmp
from vlmcodec.errors import ConfigError


def _rd(path, codec, bpps, psnrs, kls, images=("a.png", "b.png")):
    pts = [{"quality": i, "bpp": b, "psnr": p, "effnet-kl": k} for i, (b, p, k) in enumerate(zip(bpps, psnrs, kls))]
    metrics = [{"name": "psnr", "higher_is_better": True}, {"name": "effnet-kl", "higher_is_better": False}]
    path.write_text(json.dumps({"images": list(images), "metrics": metrics, "codecs": {codec: {"points": pts}}}))
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
