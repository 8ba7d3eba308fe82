"""Evaluators of the RD bench (bench/semantic.py, bench/plots.py, bench/classic.py): behaviours a
mutation-testing run found unchecked. Tiny images, random or stub networks, no weights packages,
no ffmpeg (subprocess is replaced where HEVC is exercised)."""

import io
import json
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from vlmcodec.errors import ConfigError

from test_semantic import _tiny_teacher


def _rand(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- Lite0 preprocessing

def test_lite0_centre_crop_offset_rounds_up_as_tensorflow_does():
    """TF's eval crop starts at ((H - c) + 1) // 2: with an odd margin the extra row is at the top."""
    from vlmcodec.bench.semantic import lite0_crop_side, lite0_preprocess

    img = _rand(301, 300)  # c = 262: margins 39 (odd) down, 38 across
    c = lite0_crop_side(301, 300)
    assert c == 262
    crop = torch.from_numpy(img[20 : 20 + c, 19 : 19 + c].copy()).permute(2, 0, 1)[None].float()
    ref = (F.interpolate(crop, size=(224, 224), mode="bicubic", align_corners=False, antialias=True) - 127) / 128
    torch.testing.assert_close(lite0_preprocess([img]), ref)


def test_lite0_downscale_is_antialiased():
    """A crop larger than 224 is resized with antialiasing (as PIL does): a one-pixel checkerboard
    comes out as flat grey, not as aliasing."""
    from vlmcodec.bench.semantic import lite0_preprocess

    yy, xx = np.mgrid[:512, :512]
    img = np.repeat(((yy + xx) % 2 * 255).astype(np.uint8)[..., None], 3, axis=2)
    x = lite0_preprocess([img])
    crop = torch.from_numpy(img[32:480, 32:480].copy()).permute(2, 0, 1)[None].float()
    ref = (F.interpolate(crop, size=(224, 224), mode="bicubic", align_corners=False, antialias=True) - 127) / 128
    torch.testing.assert_close(x, ref)
    assert x[..., 4:-4, 4:-4].std() < 0.05


# --------------------------------------------------------------------------- input checks

@pytest.mark.parametrize("decoded", [
    lambda o: o.astype(np.float32),  # a float decoded image of an uint8 original
    lambda o: o.astype(np.uint16),
])
def test_decoded_image_of_another_type_is_refused(decoded):
    from vlmcodec.bench.semantic import Lite0KL

    o = _rand(8, 8)
    with pytest.raises(ConfigError, match="differ in size or type"):
        Lite0KL(model=None).compute_batch([o], [decoded(o)])


def test_images_with_four_channels_are_refused():
    from vlmcodec.bench.semantic import Lite0KL

    rgba = np.zeros((8, 8, 4), np.uint8)
    with pytest.raises(ConfigError, match="H×W×3"):
        Lite0KL(model=None).compute_batch([rgba], [rgba])


# --------------------------------------------------------------------------- the content-hash cache

class _Recorder:
    def __init__(self):
        self.batches = []

    def __call__(self, images):
        self.batches.append([im.shape for im in images])
        return [("out", im.shape, int(im.sum())) for im in images]


def test_cache_tells_apart_images_with_the_same_bytes_and_another_shape():
    from vlmcodec.bench.semantic import _CachedModel

    fn = _Recorder()
    m = _CachedModel(fn)
    a = _rand(2, 6)
    assert m([a])[0][1] == (2, 6, 3)
    assert m([a.reshape(6, 2, 3)])[0][1] == (6, 2, 3)
    assert len(fn.batches) == 2


def test_cache_runs_an_image_repeated_in_one_call_once():
    from vlmcodec.bench.semantic import _CachedModel

    fn = _Recorder()
    a, b = _rand(4, 4, 1), _rand(4, 4, 2)
    out = _CachedModel(fn)([a, b, a.copy(), a])
    assert fn.batches == [[(4, 4, 3), (4, 4, 3)]]
    assert out[0] == out[2] == out[3] != out[1]


def test_cache_batches_only_same_size_images_and_at_most_batch_size():
    from vlmcodec.bench.semantic import _CachedModel

    fn = _Recorder()
    imgs = [_rand(4, 6, i) for i in range(5)] + [_rand(6, 4, 10 + i) for i in range(2)]
    out = _CachedModel(fn, batch_size=2)(imgs)
    assert [len(b) for b in fn.batches] == [2, 2, 1, 2]
    assert all(len(set(b)) == 1 for b in fn.batches)
    assert [o[1] for o in out] == [im.shape for im in imgs]


def test_cache_evicts_the_least_recently_used_image():
    from vlmcodec.bench.semantic import _CachedModel

    fn = _Recorder()
    m = _CachedModel(fn, capacity=2)
    a, b, c = _rand(3, 3, 1), _rand(3, 3, 2), _rand(3, 3, 3)
    for im in (a, b, a, c):  # a used again after b: b is the one to go when c comes
        m([im])
    assert len(fn.batches) == 3
    m([a]), m([c])
    assert len(fn.batches) == 3  # both still cached
    m([b])
    assert len(fn.batches) == 4


# --------------------------------------------------------------------------- metric values

class _StubLite0:
    """log_probs of an image = the row of ``table`` its first pixel's red value names."""

    def __init__(self, table):
        self.table = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in table.items()}

    def log_probs(self, images):
        return torch.stack([self.table[int(im[0, 0, 0])] for im in images])


def _img(k):
    return np.full((4, 4, 3), k, np.uint8)


def test_kl_is_original_relative_to_decoded_summed_over_classes():
    """KL(p_original ‖ p_decoded) = Σ_c p_o (log p_o − log p_d), not the reverse, not a mean."""
    from vlmcodec.bench.semantic import Lite0KL

    po, pd = np.array([0.7, 0.2, 0.1]), np.array([0.2, 0.5, 0.3])
    kl = Lite0KL(_StubLite0({1: np.log(po), 2: np.log(pd)}))
    want = float(np.sum(po * (np.log(po) - np.log(pd))))
    reverse = float(np.sum(pd * (np.log(pd) - np.log(po))))
    assert abs(want - reverse) > 0.01
    assert kl.compute_batch([_img(1), _img(2)], [_img(2), _img(1)]) == pytest.approx([want, reverse], abs=1e-12)
    assert kl.compute(_img(1), _img(1)) == 0.0


def test_kl_rounding_below_zero_is_reported_as_zero():
    """Float rounding of two near-equal log-softmaxes can give a KL of −1e-9: it is clamped to 0."""
    from vlmcodec.bench.semantic import Lite0KL

    a = np.log(np.array([0.5, 0.5]))
    v = Lite0KL(_StubLite0({1: a, 2: a + 1e-9})).compute(_img(1), _img(2))
    assert v == 0.0


def test_teacher_sim_cache_key_names_the_short_side_and_layers():
    """Cached bench rd results are keyed by cache_key: another teacher resolution or other layers
    must not reuse them."""
    from vlmcodec.bench.semantic import TeacherSimilarity

    t = _tiny_teacher()
    keys = {TeacherSimilarity(t, layers=ly, short_side=s).cache_key for ly in ((1,), (2,), (1, 2)) for s in (28, 42)}
    assert len(keys) == 6


def test_rd_metrics_passes_optional_on(monkeypatch):
    from vlmcodec.bench import semantic

    seen = []
    monkeypatch.setattr(semantic, "semantic_metrics", lambda **kw: seen.append(kw) or [])
    semantic.rd_metrics(optional=True)
    semantic.rd_metrics()
    assert seen == [{"optional": True}, {"optional": False}]


# --------------------------------------------------------------------------- bench semantic's command line

def test_jpeg_quality_bounds_are_inclusive():
    from vlmcodec.bench.semantic import _jpeg_quality

    assert _jpeg_quality("0") == 0 and _jpeg_quality("100") == 100


def test_cli_reports_bpp_of_pillow_default_jpeg_and_the_metric_mean(tmp_path, monkeypatch):
    """bpp is 8 × the file's bytes / pixels of a Pillow-defaults JPEG (optimize=False), and each
    metric column is the mean of the per-image values, on decoded images of that JPEG."""
    from PIL import Image
    from vlmcodec.bench import semantic

    imgs = {"a.png": _rand(24, 40, 1), "b.png": _rand(32, 16, 2)}
    for name, im in imgs.items():
        Image.fromarray(im).save(tmp_path / name)

    class Fake:
        name = "fake"

        def compute_batch(self, originals, decodeds):
            self.seen = [(o.copy(), d.copy()) for o, d in zip(originals, decodeds)]
            return [1.0, 4.0]

    fake = Fake()
    monkeypatch.setattr(semantic, "semantic_metrics", lambda *a, **k: [fake])
    out = tmp_path / "r.json"
    assert semantic.main(["--images", str(tmp_path), "--jpeg", "40", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["jpeg"][0]
    want, decoded = [], []
    for im in imgs.values():
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=40)
        want.append(8 * len(buf.getvalue()) / (im.shape[0] * im.shape[1]))
        decoded.append(np.asarray(Image.open(buf).convert("RGB")))
    assert row["quality"] == 40 and row["bpp"] == pytest.approx(np.mean(want), rel=1e-12)
    assert row["fake"] == 2.5
    for (o, d), im, dec in zip(fake.seen, imgs.values(), decoded):
        assert np.array_equal(o, im) and np.array_equal(d, dec)


# --------------------------------------------------------------------------- plots

@pytest.fixture
def drawn(monkeypatch):
    """Records every Axes.plot (x, y, label) and the x limits of the figures plot_metric draws."""
    pytest.importorskip("matplotlib")
    from matplotlib.axes import Axes

    rec = {"lines": [], "xlim": []}
    plot, set_xlim = Axes.plot, Axes.set_xlim

    def rec_plot(self, x, y, *a, **kw):
        rec["lines"].append((list(x), list(np.asarray(y, dtype=float)), kw.get("label")))
        return plot(self, x, y, *a, **kw)

    def rec_xlim(self, *a, **kw):
        rec["xlim"].append(a)
        return set_xlim(self, *a, **kw)

    monkeypatch.setattr(Axes, "plot", rec_plot)
    monkeypatch.setattr(Axes, "set_xlim", rec_xlim)
    return rec


def _result():
    return {"metrics": [{"name": "psnr"}, {"name": "ms-ssim"}, {"name": "effnet-top1"}],
            "images": ["a.png", "b.png"], "images_dir": "imgs",
            "codecs": {
                "jpeg": {"label": "JPEG", "points": [{"bpp": 0.2, "psnr": 28.0, "ms-ssim": 0.9},
                                                     {"bpp": 0.4, "psnr": 31.0, "ms-ssim": 0.99},
                                                     {"bpp": 0.6, "ms-ssim": 0.995}]},
                "webp": {"label": "WebP", "points": [{"bpp": 0.3, "ms-ssim": 0.95}]}},
            "anchors": {
                "vtm": {"label": "VTM", "bpp": [0.1, 0.8], "psnr": [30.0, 36.0], "ms-ssim": [0.95, 0.999]},
                "bpg": {"label": "BPG", "bpp": [0.1, 1.2], "ms-ssim": [0.94, 0.998]}}}


def test_plot_draws_only_the_points_and_anchors_that_have_the_metric(tmp_path, drawn):
    from vlmcodec.bench.plots import plot_metric

    assert plot_metric(_result(), "psnr", tmp_path, with_anchors=True) == ["rd_psnr.png", "rd_psnr.svg"]
    assert [(x, y, lab) for x, y, lab in drawn["lines"]] == [
        ([0.1, 0.8], [30.0, 36.0], "VTM (published)"), ([0.2, 0.4], [28.0, 31.0], "JPEG")]
    assert drawn["xlim"][0] == (0, pytest.approx(1.05 * 0.8))  # (matplotlib calls it again itself)


def test_plot_x_limit_counts_measured_rates(tmp_path, drawn):
    from vlmcodec.bench.plots import plot_metric

    plot_metric(_result(), "ms-ssim", tmp_path, with_anchors=False)
    assert [lab for *_, lab in drawn["lines"]] == ["JPEG", "WebP"]
    assert drawn["xlim"][0] == (0, pytest.approx(1.05 * 0.6))


def test_plot_draws_ms_ssim_in_db(tmp_path, drawn):
    from vlmcodec.bench.plots import plot_metric

    plot_metric(_result(), "ms-ssim", tmp_path, with_anchors=True)
    by_label = {lab: y for _, y, lab in drawn["lines"]}
    assert by_label["JPEG"] == pytest.approx([10.0, 20.0, -10 * np.log10(0.005)])
    assert by_label["BPG (published)"] == pytest.approx([-10 * np.log10(0.06), -10 * np.log10(0.002)])


def test_plot_all_draws_anchors_for_psnr_and_ms_ssim_only(tmp_path, monkeypatch):
    from vlmcodec.bench import plots

    calls = []
    monkeypatch.setattr(plots, "plot_metric", lambda r, m, out, with_anchors: calls.append((m, with_anchors)) or [m])
    assert plots.plot_all(_result(), tmp_path) == {"psnr": ["psnr"], "ms-ssim": ["ms-ssim"],
                                                   "effnet-top1": ["effnet-top1"]}
    assert calls == [("psnr", True), ("ms-ssim", True), ("effnet-top1", False)]


def test_plot_file_names_keep_digits():
    from vlmcodec.bench.plots import _slug

    assert _slug("effnet-top1") == "effnet_top1"
    assert _slug("effnet-top1-10crop") == "effnet_top1_10crop"
    assert _slug("recall@1") == "recall_1"


# --------------------------------------------------------------------------- classic codecs

def test_jpeg_is_coded_with_420_chroma():
    from PIL import Image, JpegImagePlugin
    from vlmcodec.bench.classic import JPEG

    data = JPEG().encode(_rand(32, 48), 50)
    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(data))) == 2  # 4:2:0


def test_webp_is_lossy_libwebp_at_the_recorded_settings():
    from PIL import Image
    from vlmcodec.bench.classic import WebP

    codec = WebP()
    img = _rand(32, 48)
    data = codec.encode(img, 50)
    assert data[:4] == b"RIFF" and data[12:16] == b"VP8 "  # lossy bitstream (VP8L would be lossless)
    s = codec.settings()
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="WEBP", quality=50, method=s["method"], lossless=s["lossless"])
    assert data == buf.getvalue()


def test_ycbcr_is_full_range_bt601_in_y_cb_cr_order():
    from vlmcodec.bench.classic import rgb_to_ycbcr444, ycbcr444_to_rgb

    rgb = np.array([[[255, 0, 0], [0, 0, 255], [128, 128, 128]]], np.uint8)
    ycc = rgb_to_ycbcr444(rgb)
    assert ycc[:, 0, 0].tolist() == [76, 85, 255]
    assert ycc[:, 0, 1].tolist() == [29, 255, 107]
    assert ycc[:, 0, 2].tolist() == [128, 128, 128]
    grey = np.full((3, 1, 1), 128, np.uint8)
    assert ycbcr444_to_rgb(grey).tolist() == [[[128, 128, 128]]]


def test_ycbcr_rounds_to_nearest():
    from vlmcodec.bench.classic import rgb_to_ycbcr444

    # Y of (0, 0, 9) is 1.026, of (0, 0, 13) 1.482, of (0, 0, 14) 1.596 -> 1, 1, 2
    ycc = rgb_to_ycbcr444(np.array([[[0, 0, 9], [0, 0, 13], [0, 0, 14]]], np.uint8))
    assert ycc[0, 0].tolist() == [1, 1, 2]


def _fake_ffmpeg(monkeypatch, stdout=b"\x00\x00\x01stream", probe=b"5,3\n", returncode=0):
    from vlmcodec.bench import classic

    calls = []

    def run(cmd, input=None, **kw):
        calls.append((cmd, input))
        if cmd[0] == "ffprobe":
            return subprocess.CompletedProcess(cmd, 0, stdout=probe, stderr=b"")
        if "libx265" in cmd:
            return subprocess.CompletedProcess(cmd, returncode, stdout=stdout, stderr=b"x265 said no")
        planes = np.arange(3 * 3 * 5, dtype=np.uint8).reshape(3, 3, 5)  # decode: Y, Cb, Cr planes 3×5
        return subprocess.CompletedProcess(cmd, 0, stdout=planes.tobytes(), stderr=b"")

    monkeypatch.setattr(classic.subprocess, "run", run)
    return calls


def test_hevc_gives_ffmpeg_width_by_height_and_its_planes(monkeypatch):
    from vlmcodec.bench.classic import HEVC, rgb_to_ycbcr444

    calls = _fake_ffmpeg(monkeypatch)
    img = _rand(3, 5)
    assert HEVC().encode(img, 30) == b"\x00\x00\x01stream"
    cmd, data = calls[0]
    assert cmd[cmd.index("-s") + 1] == "5x3"
    assert data == rgb_to_ycbcr444(img).tobytes()


def test_hevc_decode_reads_width_then_height_from_ffprobe(monkeypatch):
    from vlmcodec.bench.classic import HEVC, ycbcr444_to_rgb

    _fake_ffmpeg(monkeypatch, probe=b"5,3\n")
    out = HEVC().decode(b"stream")
    assert out.shape == (3, 5, 3)
    assert np.array_equal(out, ycbcr444_to_rgb(np.arange(45, dtype=np.uint8).reshape(3, 3, 5)))


def test_hevc_encode_with_no_output_is_an_error(monkeypatch):
    from vlmcodec.bench.classic import HEVC

    _fake_ffmpeg(monkeypatch, stdout=b"")
    with pytest.raises(RuntimeError, match="encode failed"):
        HEVC().encode(_rand(3, 5), 30)


def test_consumer_scale_keeps_a_non_square_size():
    from vlmcodec.bench.classic import JPEG, ConsumerScale
    from vlmcodec.bitstream.container import _varint

    codec = ConsumerScale(JPEG(), 16)
    img = _rand(40, 64)
    data = codec.encode(img, 90)
    assert data.startswith(_varint(64) + _varint(40))
    assert codec.decode(data).shape == (40, 64, 3)


def test_consumer_scale_takes_the_inner_codecs_quality_range():
    from vlmcodec.bench import rd

    c = rd.make_codec("hevc@64")
    assert c.quality_name == "qp" and c.quality_range == (0, 51)
    c.check_qualities([0, 51])
    with pytest.raises(ValueError, match="qp must be whole numbers in"):
        c.check_qualities([52])


def test_consumer_scale_settings_name_the_short_side():
    """Cached results are keyed by settings: jpeg@64 and jpeg@128 must not share them."""
    from vlmcodec.bench.classic import JPEG, ConsumerScale

    a, b = ConsumerScale(JPEG(), 64).settings(), ConsumerScale(JPEG(), 128).settings()
    assert a != b and a["short_side"] == 64
