"""The bench figures' arithmetic at its edges: compare's anchor interpolation, --max-bpp and seeds, the report's interval
and overlap limits and row order, the bootstrap's mean, matched-bytes' ties, budgets and bpp, rd's per-point means and
times, the monotone curve's choice among equal rates (each test kills a mutant a mutation run left alive)."""
import json
import math

import numpy as np
import pytest

from vlmcodec.bench import bootstrap
from vlmcodec.bench import compare as cmp

from test_bench_compare import _noisy_curve, _rd_per_image


def _rd(path, codec, bpps, psnrs, kls, images=("a.png", "b.png")):
    pts = [{"quality": i, "bpp": b, "psnr": p, "effnet-kl": k} for i, (b, p, k) in enumerate(zip(bpps, psnrs, kls))]
    metrics = [{"name": "psnr", "higher_is_better": True}, {"name": "effnet-kl", "higher_is_better": False}]
    path.write_text(json.dumps({"images": list(images), "metrics": metrics, "codecs": {codec: {"points": pts}}}))
    return path


def test_anchor_value_is_interpolated_in_log_bpp(tmp_path):
    """The anchor's value between two points is linear in log-bpp (0.2 between 0.1 and 0.4 is the midpoint)."""
    a = cmp.load_curve(f"w={_rd(tmp_path / 'a.json', 'webp', [0.1, 0.4], [26, 30], [0.8, 0.4])}:webp")
    assert cmp.anchor_value_at(a, "psnr", 0.2) == pytest.approx(28.0)


def test_anchor_value_at_its_end_points_is_measured(tmp_path):
    """A curve point at exactly the anchor's lowest or highest bpp gets the anchor's value there, not "–"."""
    a = cmp.load_curve(f"w={_rd(tmp_path / 'a.json', 'webp', [0.1, 0.2, 0.4], [26, 28, 30], [0.8, 0.6, 0.4])}:webp")
    assert cmp.anchor_value_at(a, "psnr", 0.1) == pytest.approx(26.0)
    assert cmp.anchor_value_at(a, "psnr", 0.4) == pytest.approx(30.0)


def test_anchor_value_of_unsorted_points(tmp_path):
    """An rd.json whose points are not in bpp order gives the same anchor values as a sorted one."""
    a = cmp.load_curve(f"w={_rd(tmp_path / 'a.json', 'webp', [0.4, 0.1, 0.2], [30, 26, 28], [0.4, 0.8, 0.6])}:webp")
    assert cmp.anchor_value_at(a, "psnr", 0.3) == pytest.approx(28 + 2 * math.log(1.5) / math.log(2))
    assert cmp.anchor_value_at(a, "psnr", 0.15) == pytest.approx(26 + 2 * math.log(1.5) / math.log(2))


def test_a_point_at_exactly_max_bpp_is_listed(tmp_path):
    """--max-bpp is inclusive: a point at exactly that rate is in the low-rate table."""
    a = _rd(tmp_path / "a.json", "webp", [0.1, 0.2, 0.4], [26, 28, 30], [0.8, 0.6, 0.4])
    b = _rd(tmp_path / "b.json", "vlmcodec", [0.15, 0.3, 0.6], [27, 29, 31], [0.7, 0.5, 0.3])
    res = cmp.compare([cmp.load_curve(f"b={b}")], [cmp.load_curve(f"w={a}:webp")], ["psnr"], max_bpp=0.3)
    assert [r["bpp"] for r in res["low_rate"]["b"]] == [0.15, 0.3]


def test_compare_seed_reaches_the_bootstrap(tmp_path):
    """compare's seed is the bootstrap's: another seed draws other resamples (another interval)."""
    a = _rd_per_image(tmp_path / "a.json", "webp", *_noisy_curve(2, 12))
    t = _rd_per_image(tmp_path / "t.json", "vlmcodec", *_noisy_curve(3, 12))
    cis = [cmp.compare([cmp.load_curve(f"t={t}")], [cmp.load_curve(f"a={a}:webp")], ["effnet-top1"],
                       n_boot=200, seed=s)["bd"]["t"]["a"]["effnet-top1"]["ci"] for s in (0, 7)]
    direct = bootstrap.bd_rate_interval(cmp.load_curve(f"a={a}:webp").points, cmp.load_curve(f"t={t}").points,
                                        "effnet-top1", True, 200, seed=7)
    assert cis[0] != cis[1] and cis[1] == direct


def test_low_rate_cells_mark_better_with_a_tick_and_worse_with_a_cross(tmp_path):
    """The low-rate table's cell says ✓ where the curve beats the anchor and ✗ where it loses (legend aside)."""
    a = _rd(tmp_path / "a.json", "webp", [0.1, 0.2, 0.4], [26, 28, 30], [0.8, 0.6, 0.4])
    b = _rd(tmp_path / "b.json", "vlmcodec", [0.15, 0.3], [28, 27], [0.5, 0.7])  # better, then worse
    curves, anchors = [cmp.load_curve(f"b={b}")], [cmp.load_curve(f"w={a}:webp")]
    md = cmp.markdown(cmp.compare(curves, anchors, ["psnr", "effnet-kl"], max_bpp=0.3, n_boot=0), anchors, curves)
    rows = [line for line in md.split("### vs w")[1].splitlines() if line.startswith("| b |")]
    assert rows[0].count("✓") == 2 and "✗" not in rows[0]
    assert rows[1].count("✗") == 2 and "✓" not in rows[1]


def test_interval_at_exactly_the_undefined_limit_is_given():
    """Exactly MAX_UNDEFINED (5 %) of draws undefined still gives the interval; only more than that withholds it."""
    from vlmcodec.bench.report import interval_text
    assert interval_text({"n_boot": 100, "undefined": 5, "lo": -1.0, "hi": 1.0}, 0.0) == "[-1.0, +1.0] (5/100 undefined)"
    assert interval_text({"n_boot": 100, "undefined": 6, "lo": -1.0, "hi": 1.0}, 0.0).startswith("interval n/a")


def test_overlap_at_exactly_the_minimum_is_not_marked():
    """An overlap of exactly MIN_OVERLAP (75 %) gets no dagger; just below it does."""
    from vlmcodec.bench.report import overlap_mark
    assert overlap_mark({"overlap": 0.75, "bd_rate": 1.0}) == ""
    assert overlap_mark({"overlap": 0.7499, "bd_rate": 1.0}) == " †"


def test_bd_quality_dagger_goes_by_the_bd_quality_not_the_bd_rate():
    """A narrow log-rate overlap is marked on a defined BD-quality even where the BD-rate is undefined, and not on an undefined BD-quality."""
    from vlmcodec.bench.report import overlap_mark
    assert overlap_mark({"overlap_rate": 0.5, "bd_quality": 0.3, "bd_rate": float("nan")}, "overlap_rate") == " †"
    assert overlap_mark({"overlap_rate": 0.5, "bd_quality": float("nan"), "bd_rate": -3.0}, "overlap_rate") == ""


def test_bd_table_rows_are_best_first_and_undefined_last():
    """bench rd's BD table lists codecs by BD-rate ascending (most bits saved first), undefined ones last."""
    from vlmcodec.bench.report import bd_markdown
    e = lambda r: {"bd_rate": r, "bd_quality": 0.1, "overlap": 1.0, "overlap_rate": 1.0}
    table = {"psnr_vs_vtm": {"up": e(3.0), "nan": e(None), "down": e(-5.0), "mid": e(0.5)}}
    rows = [l.split(" | ")[0][2:] for l in bd_markdown({"bd": table, "codecs": {}}, "psnr_vs_vtm") if l.startswith("| ")][2:]
    assert rows == ["down", "mid", "up", "nan"]


def test_bd_cell_interval_follows_a_lower_is_better_metric(tmp_path):
    """bd_cell's bootstrap interval negates a lower-is-better metric as its BD-rate does."""
    from vlmcodec.bench.report import bd_cell
    per_bpp, per_q = _noisy_curve(1)
    kl = 2.0 - per_q  # falls as the rate grows
    a = cmp.load_curve(f"a={_rd_per_image(tmp_path / 'a.json', 'webp', per_bpp, kl, 'effnet-kl', False)}:webp")
    t = cmp.load_curve(f"t={_rd_per_image(tmp_path / 't.json', 'vlmcodec', 0.8 * per_bpp, kl, 'effnet-kl', False)}")
    assert bd_cell(a.points, t.points, "effnet-kl", higher_is_better=False) == "-20.0 % [-20.0, -20.0]"


def test_mean_interval_is_of_the_mean_not_the_median():
    """matched-bytes' gain interval is a percentile interval of resampled means (skewed gains: it excludes 0)."""
    from vlmcodec.bench.bootstrap import mean_interval
    lo, hi = mean_interval([0.0] * 6 + [10.0] * 4)
    assert 0.5 < lo < 4.0 < hi < 8.0


def test_a_one_point_curve_gets_no_bootstrap_interval(tmp_path):
    """A curve of a single point has no BD-rate and so no interval record (not one of NaNs)."""
    per_bpp, per_q = _noisy_curve(1)
    a = cmp.load_curve(f"a={_rd_per_image(tmp_path / 'a.json', 'webp', per_bpp, per_q)}:webp")
    t = cmp.load_curve(f"t={_rd_per_image(tmp_path / 't.json', 'vlmcodec', per_bpp[:1], per_q[:1])}")
    assert bootstrap.bd_rate_interval(a.points, t.points, "effnet-top1", n_boot=20) is None


class _FixedAnchor:
    name = "fixed"

    def encode(self, img, quality):
        self.last = img
        return bytes(100)

    def decode(self, data):
        return self.last


class _ShiftCodec:
    """Streams 0, 1, 2 bytes under the budget for images 0, 1, 2, decoding to +1, 0, −1 grey levels."""
    refine = False

    def __init__(self):
        self.i = -1

    def encode_to_size(self, img, max_bytes):
        self.i += 1
        self.last = img
        return bytes(max_bytes - self.i)

    def decode(self, data):
        return (self.last.astype(np.int16) + (1 - (100 - len(data)))).astype(np.uint8)


class _Offset:
    name, higher_is_better = "offset", True

    def compute(self, a, b):
        return float(b[0, 0, 0]) - float(a[0, 0, 0])


def _paired(monkeypatch):
    from types import SimpleNamespace
    from vlmcodec.bitstream import container
    from vlmcodec.bench.matched_bytes import paired_point
    monkeypatch.setattr(container, "unpack", lambda data: (SimpleNamespace(quality=50), None))
    imgs = [np.full((h, w, 3), 100, np.uint8) for h, w in ((8, 8), (8, 16), (16, 16))]
    return paired_point(imgs, _FixedAnchor(), _ShiftCodec(), 30, [_Offset()])


def test_paired_point_counts_a_tie_as_a_tie_not_a_win(monkeypatch):
    """wins / ties / losses: a pair of equal scores is a tie (gains +1, 0, −1 → 1/1/1)."""
    r = _paired(monkeypatch)["offset"]
    assert (r["wins"], r["ties"], r["losses"]) == (1, 1, 1) and r["gain"] == 0.0


def test_paired_point_bpp_is_the_mean_of_each_images_bpp_from_its_own_bytes(monkeypatch):
    """bpp per side: the mean over pairs of 8·bytes/pixels, vlmcodec's from its own stream sizes."""
    pt = _paired(monkeypatch)
    px = np.array([64, 128, 256])
    assert pt["bpp_anchor"] == pytest.approx(np.mean(800 / px))
    assert pt["bpp_vlmcodec"] == pytest.approx(np.mean(8 * np.array([100, 99, 98]) / px))


def test_paired_point_refuses_a_stream_over_the_budget(monkeypatch):
    """A vlmcodec stream even one byte over the anchor's size stops the comparison (its premise)."""
    from vlmcodec.bench import matched_bytes

    class Over(_ShiftCodec):
        def encode_to_size(self, img, max_bytes):
            self.last = img
            return bytes(max_bytes + 1)
    monkeypatch.setattr("vlmcodec.bitstream.container.unpack", lambda d: (type("H", (), {"quality": 50}), None))
    with pytest.raises(AssertionError, match="101 bytes for a budget of 100"):
        matched_bytes.paired_point([np.zeros((8, 8, 3), np.uint8)], _FixedAnchor(), Over(), 30, [_Offset()])


def test_paired_point_counts_quality_100_only(monkeypatch):
    """vlmcodec_at_quality_100 counts streams at quality 100 only (95 is within vlmcodec's range)."""
    from types import SimpleNamespace
    from vlmcodec.bench.matched_bytes import paired_point
    qs = iter([100, 95, 99])
    monkeypatch.setattr("vlmcodec.bitstream.container.unpack", lambda d: (SimpleNamespace(quality=next(qs)), None))
    imgs = [np.full((8, 8, 3), 100, np.uint8)] * 3
    assert paired_point(imgs, _FixedAnchor(), _ShiftCodec(), 30, [_Offset()])["vlmcodec_at_quality_100"] == 1


def test_matched_bytes_table_shows_both_ends_of_the_gain_interval():
    """The Markdown cell gives the gain interval's low and high ends."""
    from vlmcodec.bench.matched_bytes import markdown
    pt = {"anchor_quality": 30.0, "pairs": 3, "unfit": 0, "vlmcodec_at_quality_100": 0, "bpp_anchor": 0.5,
          "bpp_vlmcodec": 0.4, "psnr": {"anchor": 30.0, "vlmcodec": 31.0, "gain": 1.0, "gain_95": [0.25, 1.75],
                                        "wins": 2, "ties": 0, "losses": 1}}
    md = markdown({"anchor": "webp", "vlmcodec": "v", "model": "m", "images": 3, "metrics": ["psnr"], "points": [pt]}, "C")
    assert "30.00 → 31.00, gain +1.0000 [+0.2500, +1.7500], 2/0/1" in md


class _SizeCodec:
    """A fake bench codec: at quality q an image of value v is coded in q·(1 + v/100) bytes, decoded exactly."""
    name = label = "fake"
    quality_name = "q"

    def version(self):
        return "1"

    def settings(self):
        return {}

    def encode(self, img, q):
        return bytes([int(img[0, 0, 0])]) + bytes(int(q * (1 + img[0, 0, 0] / 100)) - 1)

    def decode(self, data):
        return np.full((8, 8, 3), data[0], np.uint8)


class _ValueMetric:
    name, higher_is_better = "val", True

    def compute(self, a, b):
        return float(a[0, 0, 0])


def test_rd_points_are_means_over_images_sorted_by_bpp(tmp_path):
    """A bench rd point: bpp = mean of 8·bytes/pixels, each metric the mean over the images, bytes summed, points by bpp."""
    from vlmcodec.bench.rd import run_codec
    imgs = [np.full((8, 8, 3), v, np.uint8) for v in (0, 50, 200)]
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    curve = run_codec(_SizeCodec(), [40.0, 10.0], paths, imgs, [_ValueMetric()], tmp_path / "out", progress=False)
    assert [p["quality"] for p in curve.points] == [10.0, 40.0]
    p = curve.points[0]
    sizes = [10, 15, 30]
    assert p["bpp"] == pytest.approx(np.mean([8 * s / 64 for s in sizes]))
    assert p["bytes"] == sum(sizes) and p["val"] == pytest.approx(250 / 3)
    assert p["per_image"]["val"] == [0.0, 50.0, 200.0]


class _Mae:
    name, higher_is_better = "mae", False

    def compute(self, a, b):
        return float(np.abs(a.astype(np.float64) - b).mean())


def test_rd_interval_of_a_lower_is_better_metric_is_defined(tmp_path, monkeypatch):
    """bench rd's bootstrap interval against AVIF negates a lower-is-better metric as the BD-rate does (defined, brackets it)."""
    from PIL import Image
    from vlmcodec.bench import rd
    rng = np.random.default_rng(0)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    yy, xx = np.mgrid[0:64, 0:64]
    for i in range(3):
        base = np.stack([128 + 100 * np.sin(xx / (7.0 + i)), 128 + 90 * np.cos(yy / 5.0), (xx + yy) % 256], axis=2)
        Image.fromarray(np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)).save(imgs / f"{i}.png")
    monkeypatch.setattr(rd, "build_metrics", lambda names, originals, semantic=True: ([_Mae()], {}))
    res = rd.run(imgs, tmp_path / "out", codecs=["avif", "jpeg"], qualities={"avif": [20, 40, 60, 80], "jpeg": [20, 40, 60, 80]},
                 metric_names=["mae"], semantic=False, progress=False, plots=False)
    e = res["bd"]["mae_vs_avif"]["jpeg"]
    assert math.isfinite(e["bd_rate"]) and e["ci"]["undefined"] == 0 and e["ci"]["lo"] <= e["bd_rate"] <= e["ci"]["hi"]


def test_rd_points_time_encode_and_decode_apart(tmp_path, monkeypatch):
    """A point's enc_s and dec_s are the mean encode and decode times, each of its own step (a fake clock)."""
    from vlmcodec.bench import rd
    clock = [0.0]

    def tick():
        clock[0] += 1.0
        return clock[0]

    class Slow(_SizeCodec):
        def decode(self, data):
            clock[0] += 10.0
            return super().decode(data)
    monkeypatch.setattr(rd.time, "perf_counter", tick)
    imgs = [np.full((8, 8, 3), v, np.uint8) for v in (0, 50)]
    curve = rd.run_codec(Slow(), [10.0], [tmp_path / "0.png", tmp_path / "1.png"], imgs, [_ValueMetric()],
                         tmp_path / "out", progress=False)
    assert curve.points[0]["enc_s"] == 1.0 and curve.points[0]["dec_s"] == 11.0


def test_monotone_curve_keeps_the_best_of_equal_rate_points():
    """Of two points at the same rate the better quality is kept (the worse one is dominated)."""
    from vlmcodec.bench.bdrate import monotone_curve
    r, q = monotone_curve([1.0, 1.0, 2.0], [10.0, 12.0, 13.0])
    assert r.tolist() == [1.0, 2.0] and q.tolist() == [12.0, 13.0]


def test_runs_on_other_images_are_refused_when_the_first_curve_lists_none(tmp_path):
    """Two runs measured on different images are refused even when the first curve is an older
    rd.json without an image list (each was only compared with the first's list)."""
    def run(name: str, codec: str, images) -> str:
        pts = [{"quality": i, "bpp": b, "psnr": p} for i, (b, p) in enumerate(zip([0.1, 0.2, 0.4], [26, 28, 30]))]
        body = {"metrics": [{"name": "psnr", "higher_is_better": True}], "codecs": {codec: {"points": pts}},
                **({"images": images} if images else {})}
        (tmp_path / name).write_text(json.dumps(body))
        return str(tmp_path / name)

    from vlmcodec.errors import ConfigError

    curves = [cmp.load_curve(f"old={run('old.json', 'vlmcodec', None)}"),
              cmp.load_curve(f"b={run('b.json', 'vlmcodec', ['kodim01.png', 'kodim02.png'])}")]
    anchor = cmp.load_curve(f"webp={run('a.json', 'webp', ['cat.png', 'dog.png'])}:webp")
    with pytest.raises(ConfigError, match="webp .* was measured on other images than b"):
        cmp.compare(curves, [anchor], ["psnr"], n_boot=0)
    same = cmp.load_curve(f"webp={run('s.json', 'webp', ['kodim01.png', 'kodim02.png'])}:webp")
    assert "b" in cmp.compare(curves, [same], ["psnr"], n_boot=0)["bd"]
