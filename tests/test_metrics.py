"""PSNR, MS-SSIM and retrieval recall@1 of the RD bench (bench/metrics.py)."""

import math
import sys

import numpy as np
import pytest

from vlmcodec.bench.metrics import (MSSSIM_WEIGHTS, PSNR, PSNR_CEILING, RetrievalRecall1, build_metrics, compute_all,
                                    ms_ssim, psnr, retrieval_descriptor)


def _image(h=192, w=256, seed=0):
    """A smooth gradient with texture: structured enough for SSIM to mean something."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([128 + 90 * np.sin(6 * x + seed), 128 + 80 * np.cos(5 * y), 100 + 120 * x * y], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _noisy(img, sigma, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def test_psnr_known_values():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a) == PSNR_CEILING == 100.0  # capped: one lossless image made a point's mean inf
    assert psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2), abs=1e-12)  # MSE 1 → 48.13 dB
    b = a.copy()
    b[..., 0] += 3  # MSE = 9 / 3 = 3 over RGB
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 3), abs=1e-12)
    with pytest.raises(ValueError, match="shapes differ"):
        PSNR().compute(a, a[:4])


def test_ms_ssim_properties():
    a = _image()
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    vals = [ms_ssim(a, _noisy(a, s)) for s in (2, 8, 25)]
    assert 1 > vals[0] > vals[1] > vals[2] > 0
    b = _noisy(a, 8)
    assert ms_ssim(a, b) == pytest.approx(ms_ssim(b, a), abs=1e-12)
    # invariant to a global scaling of both images together with data_range
    assert ms_ssim(a * 2.0, b * 2.0, data_range=510.0) == pytest.approx(ms_ssim(a, b), abs=1e-12)
    assert MSSSIM_WEIGHTS == (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, Table 1 fit


def test_ms_ssim_needs_enough_pixels():
    a = _image(160, 300)
    with pytest.raises(ValueError, match="needs sides > 160"):
        ms_ssim(a, a)


@pytest.mark.parametrize("shape", [(192, 256), (201, 333)])
def test_ms_ssim_matches_pytorch_msssim(shape):
    torch = pytest.importorskip("torch")
    pm = pytest.importorskip("pytorch_msssim")
    a = _image(*shape)
    b = _noisy(a, 10)

    def t(im):
        return torch.from_numpy(im.copy()).permute(2, 0, 1)[None].double() / 255

    ref = pm.ms_ssim(t(a), t(b), data_range=1.0).item()
    # pytorch_msssim builds its Gaussian window in float32: agreement to ~1e-6, not 1e-12
    assert ms_ssim(a, b) == pytest.approx(ref, abs=2e-6)
    ref1 = pm.ssim(t(a), t(b), data_range=1.0).item()
    assert ms_ssim(a, b, weights=(1.0,)) == pytest.approx(ref1, abs=2e-6)  # one scale = SSIM


def test_retrieval_recall():
    imgs = [_image(seed=s) for s in range(5)]
    m = RetrievalRecall1()
    with pytest.raises(RuntimeError, match="prepare"):
        m.compute(imgs[0], imgs[0])
    m.prepare(imgs)
    assert m.cache_key.startswith("recall@1:5:")
    assert compute_all(m, imgs, [_noisy(i, 3) for i in imgs]) == [1.0] * 5
    assert m.compute(imgs[0], imgs[3]) == 0.0  # the query looks like another gallery image
    d = retrieval_descriptor(imgs[0])
    assert d.shape == (63 + 64,) and np.linalg.norm(d) == pytest.approx(1.0)


def test_semantic_metrics_reported_missing_when_module_absent(monkeypatch):
    import vlmcodec.bench as pkg

    monkeypatch.setitem(sys.modules, "vlmcodec.bench.semantic", None)  # import raises ImportError
    monkeypatch.delattr(pkg, "semantic", raising=False)  # even when an earlier test imported it
    metrics, missing = build_metrics(None, [_image()], semantic=True)
    assert [m.name for m in metrics] == ["psnr", "ms-ssim", "recall@1"]
    assert set(missing) == {"teacher-sim", "effnet-top1", "effnet-kl"}
    assert all("does not import" in why for why in missing.values())


def test_semantic_metrics_registered_when_present(monkeypatch):
    import types

    class Fake:
        name, higher_is_better = "teacher-sim", True

        def compute_batch(self, originals, decodeds):
            return [0.5] * len(originals)

    mod = types.ModuleType("vlmcodec.bench.semantic")
    mod.rd_metrics = lambda: [Fake()]
    monkeypatch.setitem(sys.modules, "vlmcodec.bench.semantic", mod)
    import vlmcodec.bench as pkg

    monkeypatch.setattr(pkg, "semantic", mod, raising=False)
    metrics, missing = build_metrics(None, [_image()], semantic=True)
    assert [m.name for m in metrics][-1] == "teacher-sim" and missing == {}
    assert compute_all(metrics[-1], [_image()] * 2, [_image()] * 2) == [0.5, 0.5]


def test_optional_semantic_metrics_only_by_name(monkeypatch):
    import types

    class Fake:
        higher_is_better = True

        def __init__(self, name):
            self.name = name

        def compute_batch(self, originals, decodeds):
            return [1.0] * len(originals)

    calls = []

    def rd_metrics(optional=False):
        calls.append(optional)
        return [Fake("teacher-sim")] + ([Fake("effnet-top1-10crop")] if optional else [])

    mod = types.ModuleType("vlmcodec.bench.semantic")
    mod.rd_metrics = rd_metrics
    monkeypatch.setitem(sys.modules, "vlmcodec.bench.semantic", mod)
    import vlmcodec.bench as pkg

    monkeypatch.setattr(pkg, "semantic", mod, raising=False)
    metrics, _ = build_metrics(None, [_image()], semantic=True)
    assert "effnet-top1-10crop" not in [m.name for m in metrics] and calls == [False]
    metrics, _ = build_metrics(["psnr", "effnet-top1-10crop"], [_image()], semantic=True)
    assert [m.name for m in metrics] == ["psnr", "effnet-top1-10crop"] and calls == [False, True]
    monkeypatch.setitem(sys.modules, "vlmcodec.bench.semantic", None)
    monkeypatch.delattr(pkg, "semantic", raising=False)
    _, missing = build_metrics(["effnet-top1-10crop"], [_image()], semantic=True)
    assert list(missing) == ["effnet-top1-10crop"]


def test_unknown_metric_name_raises():
    with pytest.raises(ValueError, match="unknown metric") as e:
        build_metrics(["psnr", "lpips"], [_image()], semantic=False)
    # the names that exist (it said "available: []" when the names asked for held none of them)
    assert "available: ms-ssim, psnr, recall@1 (semantic metrics off; with them: teacher-sim" in str(e.value)
    with pytest.raises(ValueError, match="unknown metric") as e:  # (the optional one was left out of the list)
        build_metrics(["psnr", "nope"], [_image()], semantic=True)
    assert "effnet-top1-10crop" in str(e.value).split("available: ")[1], str(e.value)


def test_psnr_ceiling_is_above_near_lossless_values():
    a = _image(64, 64)
    b = a.copy()
    b[0, 0, 0] ^= 1  # one sample off by one in 12 288: 88.9 dB, under the ceiling
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 * a.size), abs=1e-9) and psnr(a, b) < PSNR_CEILING
    assert compute_all(PSNR(), [a, a], [a, b]) == [PSNR_CEILING, psnr(a, b)]


def test_ms_ssim_without_scipy_gives_the_same(monkeypatch):
    a = _image(170, 180)
    b = _noisy(a, 6)
    with_scipy = ms_ssim(a, b)
    monkeypatch.setitem(sys.modules, "scipy.ndimage", None)
    assert ms_ssim(a, b) == pytest.approx(with_scipy, abs=1e-12)
