"""Tests that kill mutants of engine/image_io.py and engine/rate_control.py the rest of the suite let live."""

import math
import warnings

import numpy as np
import pytest
from PIL import Image
from vlmcodec.errors import ImageError
from vlmcodec.image_io import MAX_SIDE, load_image, pil_to_rgb
from vlmcodec.rate_control import largest_fitting, largest_fitting_via_proxy


def _linear(q):  # a stream of 100 + (quality in hundredths) bytes
    return b"x" * (100 + round(q * 100))


# ---- image_io ----

def test_a_32_bit_integer_image_topping_at_256_is_read_as_16_bit():
    im = Image.fromarray(np.array([[0, 128, 256]], dtype=np.int32), "I")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pil_to_rgb(im)
    # 256 on the 0..65535 scale is (256 * 255 + 32767) // 65535 = 1 (not 256 wrapped to 0 in uint8)
    assert out[0, :, 0].tolist() == [0, 0, 1]


def test_a_32_bit_integer_image_just_above_16_bits_is_refused():
    im = Image.fromarray(np.array([[0, 65536]], dtype=np.int32), "I")
    with pytest.raises(ImageError, match=r"\[0, 65536\]"):
        pil_to_rgb(im)


def test_a_float_image_just_above_255_is_refused():
    im = Image.fromarray(np.array([[0.0, 256.0]], dtype=np.float32), "F")
    with pytest.raises(ImageError, match="outside"):
        pil_to_rgb(im)


def test_a_file_exactly_max_side_tall_is_read(tmp_path):
    path = tmp_path / "tall.png"
    Image.new("RGB", (1, MAX_SIDE), (10, 20, 30)).save(path)
    out = load_image(path)
    assert out.shape == (MAX_SIDE, 1, 3)
    assert out[-1, 0].tolist() == [10, 20, 30]


# ---- rate_control ----

def test_a_stream_exactly_the_budget_in_the_middle_of_the_search_fits():
    data, probes = largest_fitting(_linear, 104, tolerance=0.01, slack=0.0)
    assert len(data) == 104
    assert probes[-1] == (0.04, 104)


def test_a_budget_exactly_the_size_at_the_lowest_quality_fits():
    data, probes = largest_fitting(_linear, 100)
    assert len(data) == 100
    assert probes == [(100.0, 10100), (0.0, 100)]


def test_the_search_makes_at_most_max_probes_codings():
    data, probes = largest_fitting(_linear, 118, tolerance=0.01, slack=0.0, max_probes=5)
    assert len(probes) == 5
    assert len(data) == 117


def test_the_search_never_codes_the_same_quality_twice():
    def convex(q):
        k = round(q * 100)
        return b"x" * (100 + k * k // 50)

    for budget in (188, 216, 293):
        data, probes = largest_fitting(convex, budget, tolerance=0.01, slack=0.0)
        qualities = [q for q, _ in probes]
        assert len(qualities) == len(set(qualities)), probes
        assert len(data) <= budget


def test_the_proxy_search_takes_the_top_quality_at_once_when_it_fits_with_room():
    proxy_calls = []

    def proxy(q):
        proxy_calls.append(q)
        return _linear(q)

    data, real = largest_fitting_via_proxy(lambda q: b"y" * (2 * len(_linear(q))), proxy, 10**6)
    assert real == [(100.0, 20200)]
    assert len(data) == 20200
    assert proxy_calls == [100.0]  # one proxy coding, not a second round at the same quality


def test_the_proxy_search_ignores_failing_codings_below_the_best_fitting_one():
    # real sizes wobble against the proxy's (not monotonic): a coding that failed below the
    # quality that fitted must not become the top of the final bracket (lo > hi: ConfigError)
    def proxy(q):
        return b"x" * int(50 * math.exp(round(q * 100) / 2000))

    def real(q):
        return b"x" * max(1, int(len(proxy(q)) * (1.0 + 0.4 * math.sin(q))))

    data, coded = largest_fitting_via_proxy(real, proxy, 120)
    assert len(data) == 119
    assert coded[0] == (17.41, 71) and coded[-1] == (18.71, 119)


def test_interpolation_creeping_up_from_one_side_is_cut_by_bisection():
    # sizes bending sharply (a kink; a logarithm) make interpolation land again and again on
    # the same side of the budget: the bisection steps still reach the budget within the slack
    def kink(q):
        k = round(q * 100)
        return b"x" * (100 + (k if k < 3000 else 3000 + 20 * (k - 3000)))

    def log(q):
        return b"x" * (100 + int(400 * math.log1p(round(q * 100) / 10)))

    data, probes = largest_fitting(kink, 3258)
    assert (len(data), len(probes)) == (3240, 13)
    data, probes = largest_fitting(log, 335)
    assert (len(data), len(probes)) == (335, 11)
