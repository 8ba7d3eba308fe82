"""Row bands for g_a / g_s: the geometry is right (checked against autograd's dependency
support), bands compute the same values as one pass, and the backends band only large images."""

from fractions import Fraction

import pytest
import torch
from torch import nn

from vlmcodec.backends.torch_backend import TorchBackend
from vlmcodec.banding import RowGeometry, _band_slices, banded, run_in_bands, run_in_row_bands
from vlmcodec.layers import GDN, conv, deconv
from vlmcodec.models import MeanScaleHyperprior, ModelConfig


def _small_model() -> MeanScaleHyperprior:
    torch.manual_seed(0)
    return MeanScaleHyperprior(ModelConfig(N=16, M=24)).eval()


def test_geometry_of_the_codec_networks():
    m = _small_model()
    ga, gs = RowGeometry.of(m.g_a), RowGeometry.of(m.g_s)
    assert (ga.scale, ga.align) == (Fraction(1, 16), 16)
    assert (gs.scale, gs.align) == (16, 1)
    # y row r of g_a reads image rows 16r − 30 … 16r + 30 (four 5×5 convolutions of stride 2)
    assert ga.input_rows(3, 4) == (18, 79)
    assert RowGeometry.of(m.h_a).align == 4


def test_geometry_refuses_what_it_cannot_describe():
    with pytest.raises(ValueError, match="Upsample"):
        RowGeometry.of(nn.Sequential(conv(3, 4), nn.Upsample(scale_factor=2)))
    with pytest.raises(ValueError, match="dilated"):
        RowGeometry.of(nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2)))


def _support(net: nn.Module, shape: tuple[int, ...], start: int, stop: int) -> tuple[int, int]:
    """The input rows on which output rows [start, stop) depend, found by autograd."""
    x = torch.randn(shape, requires_grad=True)
    net(x)[:, :, start:stop].sum().backward()
    rows = (x.grad.abs().sum(dim=(0, 1, 3)) > 0).nonzero().ravel()
    return int(rows.min()), int(rows.max()) + 1


@pytest.mark.parametrize("kind", ["conv", "deconv"])
@pytest.mark.parametrize("band", [(0, 1), (2, 3), (5, 9), (13, 16)])
def test_input_rows_are_the_dependency_support(kind, band):
    """Clamped to the image, ``input_rows`` is exactly where autograd finds a dependency: not
    one row more (bands as small as they can be), not one row less (bands exact)."""
    torch.manual_seed(1)
    if kind == "conv":
        net = nn.Sequential(conv(2, 3), GDN(3), conv(3, 3), nn.LeakyReLU(), conv(3, 2, stride=1, kernel_size=3))
        shape = (1, 2, 64, 5)
    else:
        net = nn.Sequential(deconv(2, 3), GDN(3, inverse=True), deconv(3, 2))
        shape = (1, 2, 4, 5)
    geometry = RowGeometry.of(net)
    h_out = int(shape[2] * geometry.scale)
    start, stop = band[0] % h_out, min(band[1], h_out)
    if stop <= start:
        start, stop = h_out - 1, h_out
    lo, hi = geometry.input_rows(start, stop)
    assert (max(lo, 0), min(hi, shape[2])) == _support(net, shape, start, stop)


@pytest.mark.parametrize("band_rows", [1, 2, 3, 5, 64])
def test_bands_compute_the_same_as_one_pass(band_rows):
    m = _small_model()
    x = torch.rand(1, 3, 192, 80)
    ga, gs = RowGeometry.of(m.g_a), RowGeometry.of(m.g_s)
    with torch.no_grad():
        y = m.g_a(x)
        torch.testing.assert_close(run_in_row_bands(m.g_a, x, ga, band_rows), y, atol=1e-6, rtol=1e-5)
        x_hat = m.g_s(y)
        torch.testing.assert_close(run_in_row_bands(m.g_s, y, gs, 16 * band_rows), x_hat, atol=1e-6, rtol=1e-5)


def test_too_small_a_halo_is_caught():
    """The check above can fail: claiming 3×3 kernels for g_a's 5×5 ones cuts bands too
    tightly, and their edge rows come out wrong."""
    m = _small_model()
    x = torch.rand(1, 3, 192, 80)
    wrong = RowGeometry(tuple(("conv", 3, 2, 1) for _ in range(4)))
    with torch.no_grad():
        y = m.g_a(x)
        assert (run_in_row_bands(m.g_a, x, wrong, 2) - y).abs().max() > 1e-3


def test_heights_off_the_grid_are_refused():
    m = _small_model()
    with pytest.raises(ValueError, match="grid"):
        run_in_row_bands(m.g_a, torch.rand(1, 3, 40, 64), RowGeometry.of(m.g_a), 1)


def test_banded_splits_only_above_the_threshold():
    m = _small_model()
    ga = RowGeometry.of(m.g_a)
    x = torch.rand(1, 3, 128, 64)
    seen: list[int] = []

    def net(t):
        seen.append(t.shape[-2])
        return m.g_a(t)

    with torch.no_grad():
        banded(net, x, ga, band_pixels=128 * 64)
        assert seen == [128]
        seen.clear()
        banded(net, x, ga, band_pixels=None)
        assert seen == [128]
        seen.clear()
        out = banded(net, x, ga, band_pixels=32 * 64)  # 2 y rows per band → 4 bands
        assert len(seen) == 4 and max(seen) < 128
        torch.testing.assert_close(out, m.g_a(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("optimize", [True, False])
def test_torch_backend_bands_large_images(monkeypatch, optimize):
    from conftest import check_backend_row_bands

    check_backend_row_bands(TorchBackend(_small_model(), optimize=optimize), monkeypatch, torch.rand(2, 3, 192, 128))


def test_codec_round_trip_with_bands(monkeypatch, tiny_model_path):
    """A whole encode / decode with every network banded decodes to the one-pass image."""
    import numpy as np

    from conftest import smooth_image
    from vlmcodec import Codec

    img = smooth_image(np.random.default_rng(0), 200, 136)
    one = Codec(tiny_model_path, backend="torch")
    data = one.encode(img, 60)
    ref = one.decode(data)
    monkeypatch.setattr(TorchBackend, "band_pixels", 64 * 64)
    monkeypatch.setattr("vlmcodec.models.pre_editor.PreEditor.band_pixels", 64 * 64)
    bands = Codec(tiny_model_path, backend="torch")
    data_b = bands.encode(img, 60)
    out = bands.decode(data_b)
    assert out.shape == ref.shape
    # float rounding may move a pixel across a rounding boundary, no further
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    assert abs(len(data_b) - len(data)) <= 8


def test_entropy_parameters_in_bands_are_bit_identical(monkeypatch, tiny_model_path):
    """The exact h_s runs on integers, so bands change no bit: the same stream, and a decode
    with bands gives the same image as one without; both sides band (several h_s calls)."""
    import numpy as np

    import vlmcodec.codec as codec_module
    from conftest import smooth_image
    from vlmcodec import Codec

    img = smooth_image(np.random.default_rng(1), 300, 260)
    one = Codec(tiny_model_path, backend="torch")
    data = one.encode(img, 40)
    ref = one.decode(data)
    monkeypatch.setattr(codec_module, "ENTROPY_BAND_PIXELS", 64 * 64)
    bands = Codec(tiny_model_path, backend="torch")
    calls: list[int] = []
    real = bands.exact_hs
    monkeypatch.setattr(bands, "exact_hs", lambda z: calls.append(z.shape[-2]) or real(z))
    assert bands.encode(img, 40) == data
    assert len(calls) > 1 and max(calls) < 5  # ẑ of 320 rows has 5
    calls.clear()
    assert np.array_equal(bands.decode(data), ref) and len(calls) > 1


@pytest.mark.parametrize("band", [1, 3, 64])
def test_column_bands_and_tiles_compute_the_same_as_one_pass(band):
    """run_in_bands along the columns (the geometry along axis 1), and tiles (column bands inside
    row bands), as the TensorRT backend runs inputs wider or larger than its engines' profiles."""
    m = _small_model()
    x = torch.rand(1, 3, 128, 320)
    rows, cols = RowGeometry.of(m.g_a, 0), RowGeometry.of(m.g_a, 1)
    with torch.no_grad():
        y = m.g_a(x)
        torch.testing.assert_close(run_in_bands(m.g_a, x, cols, band, dim=-1), y, atol=1e-6, rtol=1e-5)
        tiles = run_in_bands(lambda part: run_in_bands(m.g_a, part, cols, band, dim=-1), x, rows, 3, dim=-2)
        torch.testing.assert_close(tiles, y, atol=1e-6, rtol=1e-5)
        gs_cols = RowGeometry.of(m.g_s, 1)
        torch.testing.assert_close(run_in_bands(m.g_s, y, gs_cols, 16 * band, dim=-1), m.g_s(y), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="dim"):
        run_in_bands(m.g_a, x, cols, band, dim=1)


def test_band_rows_within_a_profile():
    """The largest band whose every input slice lies within [min, max] rows, None if none does."""
    from vlmcodec.banding import band_rows_within

    gs = RowGeometry.of(_small_model().g_s)
    rows = band_rows_within(gs, 40, 4, 16)
    assert rows is not None and rows > 0
    slices = [(c0, c1) for _, _, c0, c1 in _band_slices(gs, 40, rows)]
    assert all(4 <= c1 - c0 <= 16 for c0, c1 in slices) and slices[0][0] == 0 and slices[-1][1] == 40
    assert band_rows_within(gs, 40, 4, 16) >= (band_rows_within(gs, 40, 4, 12) or 0)
    assert band_rows_within(gs, 40, 4, 3) is None  # no band fits in fewer rows than its context


def test_banding_begins_above_the_threshold_and_a_height_that_fits_is_one_band():
    """``bands_at``: an image of exactly ``band_pixels`` runs in one pass; one pixel more bands.
    ``band_rows_within``: a height the bound admits whole is one band of all its rows (one row for a
    one-row output, which found no band size at all)."""
    from vlmcodec.banding import band_rows_within, bands_at

    assert not bands_at(1 << 20, 1 << 20) and bands_at((1 << 20) + 1, 1 << 20)
    geometry = RowGeometry((("conv", 5, 2, 2), ("conv", 5, 2, 2)))
    assert band_rows_within(geometry, 64, 1, 10**6) == 16
    assert band_rows_within(geometry, 4, 1, 10**6) == 1


def test_a_height_the_chain_cannot_split_evenly_is_refused():
    """A conv/deconv chain whose bands need a height divisible by its alignment: ValueError for one
    that is not (a band's rows would land between output rows)."""
    geometry = RowGeometry((("conv", 3, 2, 1), ("deconv", 4, 2, 1)))
    with pytest.raises(ValueError):
        list(_band_slices(geometry, 9, 4))
