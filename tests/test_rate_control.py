"""Rate control (vlmcodec.rate_control, Codec.encode_to_size): the highest quality that fits a budget."""

import math
import warnings

import numpy as np
import pytest

from vlmcodec import BudgetError, Codec
from vlmcodec.bitstream import container
from vlmcodec.errors import ConfigError
from vlmcodec.rate_control import budget_bytes, largest_fitting, largest_fitting_via_proxy

from conftest import smooth_image


def _sizes(fn):
    """A fake coder: a stream of fn(q) bytes that remembers its quality."""
    def stream_at(q: float) -> bytes:
        assert abs(q * 100 - round(q * 100)) < 1e-9  # only the qualities a stream can carry
        return q.hex().encode().ljust(int(fn(q)), b".")
    return stream_at


def _quality(data: bytes) -> float:
    return float.fromhex(data.rstrip(b".").decode())


@pytest.mark.parametrize("fn", [
    lambda q: 1000 * math.exp(q / 40),                       # convex in bytes, straight in log-size
    lambda q: 20000 * math.sqrt(1 + q),                      # bending the other way
    lambda q: 1000 * math.exp(q / 40) * (1 + 0.01 * math.sin(q * 7)),   # not monotone at small scale
])
def test_the_result_fits_and_no_higher_grid_quality_of_the_bracket_does(fn):
    for budget in (1200, 5000, 9000, 11000):
        if fn(0) > budget:
            with pytest.raises(BudgetError, match="even quality 0 needs"):
                largest_fitting(_sizes(fn), budget)
            continue
        data, probes = largest_fitting(_sizes(fn), budget)
        q = _quality(data)
        assert len(data) <= budget
        assert len(probes) <= 16
        if q < 100:  # stopped at the tolerance (0.1) or within the slack (1 %) of the budget
            failing = [p for p, size in probes if size > budget and p > q]
            assert len(data) >= 0.99 * budget or min(failing) - q <= 0.1 + 1e-9, (budget, probes)


def test_a_budget_every_quality_fits_costs_one_probe_and_bounds_are_kept():
    data, probes = largest_fitting(_sizes(lambda q: 100 + q), 10_000)
    assert _quality(data) == 100 and len(probes) == 1
    data, probes = largest_fitting(_sizes(lambda q: 100 + q), 10_000, lo=10, hi=60.5)
    assert _quality(data) == 60.5
    data, _ = largest_fitting(_sizes(lambda q: 1000 * math.exp(q / 40)), 3000, lo=20, hi=90)
    assert 20 <= _quality(data) <= 90 and len(data) <= 3000
    with pytest.raises(ConfigError):
        largest_fitting(_sizes(lambda q: 100), 1000, lo=50, hi=40)


def test_a_budget_exactly_the_size_at_the_top_quality_takes_it_in_one_probe():
    data, probes = largest_fitting(_sizes(lambda q: 100 + q), 200)  # 200 bytes at quality 100: it fits
    assert _quality(data) == 100 and len(data) == 200 and probes == [(100.0, 200)]


def test_without_slack_the_search_narrows_a_step_to_the_tolerance():
    """A size that jumps at quality t (flat either side, so no stream fills the budget): the search
    stops only once the fitting and the failing quality are at most 0.1 apart."""
    for t in [k / 100 for k in range(1, 10000, 7)]:
        data, probes = largest_fitting(_sizes(lambda q, t=t: 1000 if q <= t else 2000), 1500, slack=0.0)
        q = _quality(data)
        failing = min(p for p, size in probes if size > 1500)
        assert t - 0.1 - 1e-9 <= q <= t and failing - q <= 0.1 + 1e-9, (t, probes)


@pytest.mark.parametrize("ratio", [
    lambda q: 1.05,                          # a refined stream: a steady few % above the one-pass one
    lambda q: 1.02 + 0.0008 * q,             # a ratio that drifts with the quality
    lambda q: 0.6 if q < 50 else 1.6,        # far from the proxy: the plain search takes over
])
def test_the_proxy_search_codes_for_real_a_few_times_and_fits(ratio):
    proxy = lambda q: 1000 * math.exp(q / 40)  # noqa: E731
    real_calls = []

    def real(q):
        real_calls.append(q)
        return _sizes(lambda v: proxy(v) * ratio(v))(q)

    for budget in (1500, 4000, 9000):
        data, codings = largest_fitting_via_proxy(real, _sizes(proxy), budget)
        assert len(data) <= budget and len(codings) == len(real_calls)
        plain, _ = largest_fitting(lambda q: _sizes(lambda v: proxy(v) * ratio(v))(q), budget)
        assert _quality(data) >= _quality(plain) - 1.0  # about as high as the search on the real coder
        if ratio(0) == 1.05:
            assert len(codings) <= 2  # a steady ratio: settled after one correction
        real_calls.clear()
    with pytest.raises(BudgetError):
        largest_fitting_via_proxy(_sizes(lambda q: 2000 + q), _sizes(lambda q: 900 + q), 1000)


def test_a_budget_even_the_proxy_misses_costs_one_real_coding_at_the_lowest_quality():
    """The proxy over the budget at ``lo``: the search coded for real at ``hi`` first, then at
    ``lo``, before its BudgetError (two refined encodes, 12.8 s at 128 px, for nothing)."""
    calls = []

    def real(q):
        calls.append(q)
        return _sizes(lambda v: 1100 + v)(q)

    with pytest.raises(BudgetError, match="even quality 10 needs 1110 bytes, over the budget of 1000"):
        largest_fitting_via_proxy(real, _sizes(lambda q: 1050 + q), 1000, lo=10)
    assert calls == [10.0]
    calls.clear()  # a real coder below its proxy there: it fits at lo, and the search goes on from it
    data, codings = largest_fitting_via_proxy(real, _sizes(lambda q: 2000 + q), 1150)
    assert calls[0] == 0.0 and 0.99 * 1150 <= len(data) <= 1150  # (filled to the 1 % slack)


def test_budget_bytes_takes_bytes_or_bits_per_pixel():
    assert budget_bytes(768, 512, 5000, None) == 5000
    assert budget_bytes(768, 512, np.int64(5000), None) == 5000 and type(budget_bytes(1, 1, np.int64(9), None)) is int
    assert budget_bytes(768, 512, None, 0.25) == 768 * 512 * 0.25 / 8
    assert budget_bytes(3, 3, None, 1.0) == 1  # 1.125 bytes: rounded down, a budget is never exceeded
    assert budget_bytes(1, 1, None, 0.5) == 1  # below one byte: at least 1
    assert budget_bytes(1, 1, 10**400, None) == budget_bytes(1, 1, None, 1e308) == 2**62  # (fits every stream)
    for bytes_, bpp, message in [(None, None, "one of"), (10, 0.1, "one of"), (0, None, "max_bytes must be a whole number, at least 1"),
                                 (1.5, None, "max_bytes must be a whole number, at least 1"), (True, None, "max_bytes must be a whole number, at least 1"),
                                 (None, -1.0, "positive number"), (None, float("nan"), "positive number")]:
        with pytest.raises(ConfigError, match=message):
            budget_bytes(64, 64, bytes_, bpp)


@pytest.fixture(scope="module")
def codec(tiny_model_path):
    return Codec(tiny_model_path)


def test_encode_to_size_gives_encodes_stream_at_the_quality_found(codec, rng):
    img = smooth_image(rng, 96, 128)
    small, large = len(codec.encode(img, 0)), len(codec.encode(img, 100))
    assert large > 1.5 * small  # the premise: quality moves the size
    for budget in np.linspace(small, large, 5).astype(int)[1:-1]:
        data = codec.encode_to_size(img, int(budget))
        q = container.unpack(data)[0].quality
        assert len(data) <= budget and 0 < q < 100
        assert data == codec.encode(img, q)  # the same bytes as a plain encode at that quality
        assert len(data) >= 0.99 * budget or len(codec.encode(img, round(q + 0.1, 2))) > budget
    bpp = 8 * (small + large) / 2 / (96 * 128)
    data = codec.encode_to_size(img, max_bpp=bpp)
    assert 8 * len(data) / (96 * 128) <= bpp
    assert codec.encode_to_size(img, large + 10) == codec.encode(img, 100)


def test_encode_to_size_refuses_what_cannot_fit_and_bad_budgets(codec, rng):
    img = smooth_image(rng, 64, 64)
    smallest = len(codec.encode(img, 0))
    with pytest.raises(BudgetError, match=f"even quality 0 needs {smallest} bytes.*; a smaller short_side"):
        codec.encode_to_size(img, smallest - 1)
    with pytest.raises(BudgetError, match="even quality 40 needs .*; a min_quality below 40 makes smaller streams"):
        codec.encode_to_size(img, smallest, min_quality=40)
    tiny = smooth_image(rng, 2, 2)  # (short_side never upscales: no hint of one)
    with pytest.raises(BudgetError, match="; this model makes no smaller stream of this image"):
        codec.encode_to_size(tiny, len(codec.encode(tiny, 0)) - 1)
    with pytest.raises(ConfigError, match="one of max_bytes and max_bpp"):
        codec.encode_to_size(img)
    with pytest.raises(ConfigError, match="max_quality must be a number in"):  # the argument named
        codec.encode_to_size(img, 10_000, max_quality=101)
    for bad in (-1, float("nan"), "50"):
        with pytest.raises(ConfigError, match="min_quality must be a number in"):
            codec.encode_to_size(img, 10_000, min_quality=bad)
    with pytest.raises(ConfigError, match="min_quality 60 is above max_quality 40"):
        codec.encode_to_size(img, 10_000, min_quality=60, max_quality=40)


def test_encode_to_size_at_the_consumers_scale_and_with_refinement(tiny_model_path, rng):
    img = smooth_image(rng, 128, 192)
    scaled = Codec(tiny_model_path, short_side=64)
    budget = (len(scaled.encode(img, 0)) + len(scaled.encode(img, 100))) // 2
    data = scaled.encode_to_size(img, budget)
    q = container.unpack(data)[0].quality
    assert len(data) <= budget and data == scaled.encode(img, q)
    refined = Codec(tiny_model_path, short_side=64, refine=2)
    data = refined.encode_to_size(img, budget)
    q = container.unpack(data)[0].quality
    assert len(data) <= budget and data == refined.encode(img, q)
    # a budget beyond any float (an OverflowError with refine, a traceback and HTTP 500)
    assert refined.encode_to_size(img, 10**400) == refined.encode(img, 100)


def test_a_budget_only_one_pass_streams_fit_gets_the_best_of_them_with_a_warning(tiny_model_path, rng):
    """Refined streams that do not fit even at quality 0 fall back to the one-pass search's stream
    (a warning says so); where no one-pass stream fits either, the error names the smallest size."""
    from vlmcodec import RefineFallbackWarning, VlmcodecWarning

    img = smooth_image(rng, 128, 192)
    plain = Codec(tiny_model_path)
    refined = Codec(tiny_model_path, refine=1)
    analyse = refined.analyse

    def larger_refined(pixels, qualities, **options):  # a refined stream several % larger, as on real images
        y, z = analyse(pixels, qualities, **options)
        return y * 1.5, z

    refined.analyse = larger_refined
    smallest = len(plain.encode(img, 0))
    budget = smallest + (len(plain.encode(img, 20)) - smallest) // 2
    with pytest.warns(RefineFallbackWarning, match=f"no refined stream fits in {budget} bytes, even at quality 0"):
        data = refined.encode_to_size(img, budget)
    assert issubclass(RefineFallbackWarning, VlmcodecWarning)  # the CLI prints it as its own
    q = container.unpack(data)[0].quality
    assert 0 < q < 20 and len(data) <= budget and data == plain.encode(img, q)
    with pytest.raises(BudgetError, match=f"even quality 0 needs {smallest} bytes"):
        refined.encode_to_size(img, smallest - 1)
    with warnings.catch_warnings():  # the strict behaviour, for whoever wants refined streams or none
        warnings.simplefilter("error", RefineFallbackWarning)
        with pytest.raises(RefineFallbackWarning):
            refined.encode_to_size(img, budget)


def test_cli_encode_and_roundtrip_with_a_budget(tmp_path, rng, tiny_model_path, capsys):
    from PIL import Image

    from vlmcodec.cli import main

    src = tmp_path / "in"
    src.mkdir()
    images = [smooth_image(rng, 64, 96), smooth_image(rng, 80, 80)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(src / f"im{i}.png")
    codec = Codec(tiny_model_path)
    budget = max((len(codec.encode(img, 0)) + len(codec.encode(img, 100))) // 2 for img in images)
    model = ["--model", str(tiny_model_path)]
    assert main(["encode", str(src), "-o", str(tmp_path / "out"), "--max-bytes", str(budget), *model]) == 0
    text = capsys.readouterr().out
    assert "quality" in text.splitlines()[0]
    for i, img in enumerate(images):
        data = (tmp_path / "out" / f"im{i}.vlmc").read_bytes()
        q = container.unpack(data)[0].quality
        assert len(data) <= budget and data == codec.encode_to_size(img, budget)
        assert f"{q:>7.2f}" in text
    bpp = 8 * budget / (64 * 96)
    (tmp_path / "rt").mkdir()
    assert main(["roundtrip", str(src / "im0.png"), "-o", str(tmp_path / "rt"), "--max-bpp", str(bpp), *model]) == 0
    assert 8 * (tmp_path / "rt" / "im0.vlmc").stat().st_size / (64 * 96) <= bpp
    assert (tmp_path / "rt" / "im0.png").exists()
    capsys.readouterr()
    for argv, message in [(["--max-bytes", "10"], "even quality 0 needs"),
                          (["--max-bytes", "1000", "-q", "50"], "-q and --max-bytes / --max-bpp exclude each other"),
                          (["--max-bytes", "1000", "--max-bpp", "0.5"], "--max-bytes and --max-bpp exclude")]:
        assert main(["encode", str(src / "im0.png"), "-o", str(tmp_path / "x.vlmc"), *argv, *model]) == 2, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):
        main(["encode", str(src / "im0.png"), "--max-bpp", "-1", *model])


def test_engine_and_server_encode_to_a_budget(tiny_model_path, rng):
    """Engine.submit_encode(max_bytes=) and /encode?max_bytes= give encode_to_size's stream;
    budget requests batch apart from plain ones; what cannot fit fails alone (400, BudgetError)."""
    from vlmcodec.runtime import Engine, RemoteCodec
    from vlmcodec.runtime.server import CodecServer, serve_in_thread

    codec = Codec(tiny_model_path)
    images = [smooth_image(rng, 64, 96) for _ in range(3)]
    budgets = [(len(codec.encode(img, 0)) + len(codec.encode(img, 100))) // 2 for img in images]
    engine = Engine(codec, max_batch=4, max_delay_ms=50, block=False)
    server = CodecServer(engine, "127.0.0.1", 0)
    serve_in_thread(server)
    try:
        futures = [engine.submit_encode(img, max_bytes=b) for img, b in zip(images, budgets, strict=True)]
        plain = engine.submit_encode(images[0], 60)
        for f, img, b in zip(futures, images, budgets, strict=True):
            assert f.result(timeout=60) == codec.encode_to_size(img, b)
        assert plain.result(timeout=60) == codec.encode(images[0], 60)
        too_small = engine.submit_encode(images[0], max_bytes=10)
        with pytest.raises(BudgetError):
            too_small.result(timeout=60)
        bad = engine.submit_encode(images[0], max_bytes=10, max_bpp=0.5)
        with pytest.raises(ConfigError, match="one of"):
            bad.result(timeout=60)
        both = engine.submit_encode(images[0], 75, max_bytes=budgets[0])  # a quality the budget would ignore
        with pytest.raises(ConfigError, match="exclude each other"):
            both.result(timeout=60)
        assert engine.submit_encode(images[0]).result(timeout=60) == codec.encode(images[0], 75)
        assert list(engine.encode_many(images[:1], max_bytes=budgets[0])) == [codec.encode_to_size(images[0], budgets[0])]
        with RemoteCodec(server.url) as remote:
            assert remote.encode(images[1], max_bytes=budgets[1]) == codec.encode_to_size(images[1], budgets[1])
            bpp = 8 * budgets[2] / (64 * 96)
            assert remote.encode(images[2], max_bpp=bpp) == codec.encode_to_size(images[2], max_bpp=bpp)
            with pytest.raises(BudgetError, match="even quality 0 needs"):
                remote.encode(images[0], max_bytes=10)
            with pytest.raises(ConfigError, match="exclude each other"):
                remote.encode(images[1], 50, max_bytes=budgets[1])
            assert remote.encode(images[1]) == codec.encode(images[1], 75)
        import http.client
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(images[0]).save(buf, format="PNG")
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
        conn.request("POST", f"/encode?max_bytes={budgets[0]}", body=buf.getvalue())
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200 and data == codec.encode_to_size(images[0], budgets[0])
        assert float(resp.getheader("X-Quality")) == container.unpack(data)[0].quality
        conn.request("POST", f"/encode?max_bytes={budgets[0]}&quality=50", body=buf.getvalue())
        resp = conn.getresponse()
        assert resp.status == 400 and b"exclude each other" in resp.read()
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_module_level_encode_and_decode_take_a_budget_and_a_consumer_size(tiny_model_path, rng):
    import vlmcodec

    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 64, 96)
    budget = (len(codec.encode(img, 0)) + len(codec.encode(img, 100))) // 2
    data = vlmcodec.encode(img, model=tiny_model_path, max_bytes=budget)
    assert data == codec.encode_to_size(img, budget)
    assert vlmcodec.encode(img, 40, model=tiny_model_path) == codec.encode(img, 40)
    assert vlmcodec.encode(img, model=tiny_model_path) == codec.encode(img, 75)
    with pytest.raises(ConfigError, match="exclude each other"):  # was coded to the budget, the quality ignored
        vlmcodec.encode(img, 40, model=tiny_model_path, max_bytes=budget)
    with pytest.raises(ConfigError, match="exclude each other"):
        vlmcodec.encode(img, quality=40, model=tiny_model_path, max_bpp=1.0)
    assert vlmcodec.decode(data, model=tiny_model_path, short_side=32).shape == (32, 48, 3)


def test_an_engines_budget_search_does_not_hold_the_network_worker(tiny_model_path, rng):
    """While a rate-controlled request searches (held here), a plain request still gets the
    network worker and finishes."""
    import threading

    from vlmcodec.runtime import Engine

    codec = Codec(tiny_model_path)
    release, searching = threading.Event(), threading.Event()
    real = codec.encode_within

    def held(*args, **kwargs):
        searching.set()
        assert release.wait(60)
        return real(*args, **kwargs)

    codec.encode_within = held
    engine = Engine(codec, max_batch=1, network_workers=1, block=False)
    try:
        img = smooth_image(rng, 64, 96)
        budgeted = engine.submit_encode(img, max_bytes=10_000)
        assert searching.wait(60)
        assert engine.submit_encode(img, 50).result(timeout=60) == codec.encode(img, 50)
        assert not budgeted.done()
        release.set()
        assert budgeted.result(timeout=60) == codec.encode_to_size(img, 10_000)
    finally:
        release.set()
        engine.shutdown()
