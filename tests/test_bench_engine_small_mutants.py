"""Gaps found by mutation testing of the bench's metrics, result helpers and timing figures, and of
the small engine modules (checks, resample, files, torch_threads): each test pins a behaviour a
user reads (a metric's value, a rate or ratio, an argument refused, a file written whole)."""

import importlib.util
import math
import sys
import types

import numpy as np
import pytest

from vlmcodec.bench import metrics
from vlmcodec.errors import ConfigError

from test_metrics import _image


# --------------------------------------------------------------------------- bench/metrics.py

def test_psnr_and_ms_ssim_refuse_images_without_three_channels():
    """A metric scores H×W×3 RGB only: an RGBA pair is refused, not scored over four channels."""
    a = np.zeros((8, 8, 4), np.uint8)
    with pytest.raises(ValueError, match="expected H×W×3 images"):
        metrics.psnr(a, a)
    big = np.zeros((200, 200, 4), np.uint8)
    with pytest.raises(ValueError, match="expected H×W×3 images"):
        metrics.MSSSIM().compute(big, big)


def test_ms_ssim_of_anti_correlated_images_is_zero_not_nan():
    """A negative contrast–structure term is clamped to 0 (pytorch_msssim's relu): an inverted
    image scores 0, where a negative base to a fractional weight made it NaN."""
    a = _image()
    value = metrics.ms_ssim(a, 255 - a)
    assert value == 0.0 and not math.isnan(value)


def test_ms_ssim_prepare_refuses_a_side_of_exactly_160_and_names_the_smallest():
    """``prepare`` refuses what ``ms_ssim`` would (a side of 160 px is too small for five
    scales), and its message names the smallest of the images refused."""
    m = metrics.MSSSIM()
    with pytest.raises(ConfigError, match="1 of 1 are not"):
        m.prepare([np.zeros((160, 300, 3), np.uint8)])
    m.prepare([np.zeros((161, 161, 3), np.uint8)])  # just enough
    originals = [np.zeros((150, 200, 3), np.uint8), np.zeros((100, 120, 3), np.uint8),
                 np.zeros((400, 400, 3), np.uint8)]
    with pytest.raises(ConfigError, match=r"2 of 3 are not \(the smallest 120x100\)"):
        m.prepare(originals)


def test_recall_cache_key_changes_with_the_gallery_not_only_its_size():
    """Two runs over different images of the same count must not share cached recall values."""
    a, b = metrics.RetrievalRecall1(), metrics.RetrievalRecall1()
    a.prepare([_image(seed=s) for s in range(3)])
    b.prepare([_image(seed=s) for s in range(3, 6)])
    assert a.cache_key.startswith("recall@1:3:") and b.cache_key.startswith("recall@1:3:")
    assert a.cache_key != b.cache_key
    c = metrics.RetrievalRecall1()
    c.prepare([_image(seed=s) for s in range(3)])
    assert c.cache_key == a.cache_key  # the same gallery: the same key


def test_retrieval_descriptor_layout_half_ignores_overall_brightness():
    """The DCT half drops the DC coefficient: a uniform brightness shift leaves it unchanged."""
    img = (_image(seed=3).astype(int) // 2 + 40).astype(np.uint8)
    d1, d2 = metrics.retrieval_descriptor(img), metrics.retrieval_descriptor(img + 20)
    u1, u2 = d1[:63] / np.linalg.norm(d1[:63]), d2[:63] / np.linalg.norm(d2[:63])
    assert np.abs(u1 - u2).max() < 1e-6


def test_semantic_metrics_drop_objects_that_cannot_compute(monkeypatch):
    """A METRICS entry with no ``compute``/``compute_batch`` (or no name) is not run."""
    import vlmcodec.bench as pkg

    class Good:
        name, higher_is_better = "teacher-sim", True

        def compute(self, original, decoded):
            return 1.0

    class NoCompute:
        name, higher_is_better = "effnet-kl", False

    mod = types.ModuleType("vlmcodec.bench.semantic")
    mod.METRICS = [Good(), NoCompute(), object()]
    monkeypatch.setitem(sys.modules, "vlmcodec.bench.semantic", mod)
    monkeypatch.setattr(pkg, "semantic", mod, raising=False)
    found, missing = metrics.semantic_metrics()
    assert [m.name for m in found] == ["teacher-sim"] and missing == {}


# --------------------------------------------------------------------------- bench/common.py

def test_finite_number_refuses_bools_and_strict_json_nulls_non_finite_inside_tuples():
    from vlmcodec.bench.common import finite_number, strict_json

    assert finite_number(3) and finite_number(2.5) and not finite_number(math.nan)
    assert not finite_number(True) and not finite_number(False)  # a JSON true is no figure
    assert strict_json({"a": (1.0, math.nan), "b": [math.inf, {"c": -math.inf}]}) == {"a": [1.0, None],
                                                                                   "b": [None, {"c": None}]}


def test_output_folder_keeps_an_existing_out_folders_empty_subfolders(tmp_path):
    """Only folders the run made are removed again: an --out that existed keeps its contents."""
    from vlmcodec.bench.common import output_folder

    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)
    with output_folder(out) as path:
        (path / "made-by-run").mkdir()
    assert (out / "keep").is_dir()
    new = tmp_path / "new" / "deeper"
    with output_folder(new) as path:
        (path / "sub").mkdir()
    assert not (tmp_path / "new").exists()  # a run that wrote nothing leaves no folder it made


def test_check_output_path_refuses_a_file_it_cannot_write(tmp_path, monkeypatch):
    """(checked with os.access: faked here, as root may write anything)"""
    import os

    from vlmcodec.bench import common

    target = tmp_path / "r.json"
    target.write_text("{}")
    real = os.access
    monkeypatch.setattr(common.os, "access", lambda p, mode: False if str(p) == str(target) else real(p, mode))
    with pytest.raises(ConfigError, match="the file is not writable"):
        common.check_output_path(target)


def test_check_output_folder_refuses_a_parent_that_is_a_file(tmp_path):
    from vlmcodec.bench.common import check_output_folder, check_output_path

    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"cannot write in .*f \(a file, not a folder\)"):
        check_output_folder(tmp_path / "f" / "out")
    with pytest.raises(ConfigError, match=r"\(a file, not a folder\)"):
        check_output_path(tmp_path / "f" / "deeper" / "r.json")


# --------------------------------------------------------------------------- bench/speed.py

class _StageCodec:
    """A codec whose encode and decode report fixed stage times (speed.stage_times reads them)."""

    def __init__(self):
        self.stage_times = None
        self.encodes = 0

    def encode(self, img, quality):
        self.encodes += 1
        if self.stage_times is not None:
            self.stage_times.update({"g_a": 1.0, "y coding": 2.0})
        return b"x"

    def decode(self, data):
        if self.stage_times is not None:
            self.stage_times.update({"g_s": 4.0, "y coding": 8.0})
        return None


def test_speed_stage_times_are_means_per_image_per_phase():
    from vlmcodec.bench.speed import stage_times

    codec = _StageCodec()
    r = stage_times(codec, [object()] * 3, 75.0)
    assert codec.encodes == 4  # one warm-up, untimed
    assert r["encode_stages_s"] == {"g_a": 1.0, "y coding": 2.0}  # the mean over 3 images, warm-up not counted
    assert r["decode_stages_s"] == {"y coding": 8.0, "g_s": 4.0}  # decode's own stages only
    assert list(r["decode_stages_s"]) == ["y coding", "g_s"]  # in pipeline order
    assert codec.stage_times is None


def test_speed_with_no_backend_named_is_an_error(capsys):
    from vlmcodec.bench.speed import main as speed_main

    assert speed_main(["--backends", " , "]) == 2
    assert "unknown backend(s) none given" in capsys.readouterr().err


# --------------------------------------------------------------------------- bench/throughput.py

def test_throughput_cycle_indexes_like_a_list_of_the_cycled_items():
    from vlmcodec.bench.throughput import _Cycle

    items = ["a", "b"]
    work = _Cycle(items, 5)
    assert list(work) == ["a", "b", "a", "b", "a"] and len(work) == 5
    assert [work[-i] for i in range(1, 6)] == ["a", "b", "a", "b", "a"][::-1]
    assert len(work[:3]) == 3 and list(work[:3]) == ["a", "b", "a"]
    assert list(work[1:4]) == ["b", "a", "b"]


def test_throughput_percentiles_are_milliseconds_at_50_95_99():
    from vlmcodec.bench.throughput import _percentiles

    lat = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p = _percentiles(lat)
    assert p == pytest.approx({"p50_ms": float(np.percentile(np.arange(1, 101), 50)),
                               "p95_ms": float(np.percentile(np.arange(1, 101), 95)),
                               "p99_ms": float(np.percentile(np.arange(1, 101), 99))})
    assert _percentiles([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}


def test_throughput_first_error_is_the_first_one_raised():
    from vlmcodec.bench.throughput import sequential

    def call(item):
        raise (ValueError if item == 0 else KeyError)(f"request {item}")

    r = sequential(call, [0, 1, 2])
    assert r["errors"] == {"ValueError": 1, "KeyError": 2} and r["first_error"] == "ValueError: request 0"


def test_throughput_speedup_is_the_rate_over_the_sequential_rate():
    from vlmcodec.bench.throughput import _with_speedups, failed_requests

    res = {"encode": {"sequential": {"images_per_s": 2.0, "requests": 4, "failed": 0},
                      "engine_c4": {"images_per_s": 6.0, "requests": 4, "failed": 1, "errors": {"E": 1}}},
           "decode": {"sequential": {"images_per_s": 0.0, "requests": 4, "failed": 4, "errors": {"E": 4}},
                      "engine_c4": {"images_per_s": 1.0, "requests": 4, "failed": 0}}}
    _with_speedups(res)
    assert res["encode"]["engine_c4"]["speedup_vs_sequential"] == 3.0
    assert res["encode"]["sequential"]["speedup_vs_sequential"] == 1.0
    assert res["decode"]["engine_c4"]["speedup_vs_sequential"] is None  # no sequential rate to compare with
    assert failed_requests(res) == (5, 16, {"E": 5})  # 5 of the 16 requests sent failed


def test_throughput_with_url_takes_engine_options_equal_to_their_defaults(tmp_path, capsys):
    """Only options changed from their defaults are refused with --url: ``--backend torch`` is the default."""
    from vlmcodec.cli import main

    torch = "".join(["tor", "ch"])  # as from a shell: a string equal to the default, not the same object
    assert main(["bench", "throughput", "--url", "http://127.0.0.1:9", "--backend", torch,
                 "--images", str(tmp_path / "none"), "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert "image folder not found" in err and "only for an in-process Engine" not in err


# --------------------------------------------------------------------------- bench/codec.py (CompressAI comparison)

def _png_folder(tmp_path, sizes):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(np.full((h, w, 3), 100 + i, np.uint8)).save(folder / f"{i}.png")
    return sorted(folder.iterdir())


def test_compressai_check_sides_looks_at_both_sides(tmp_path):
    from vlmcodec.bench.codec import check_sides

    check_sides(_png_folder(tmp_path, [(64, 128)]))
    images = [np.zeros((64, 100, 3), np.uint8)]
    with pytest.raises(ConfigError, match="is 100x64; the CompressAI comparison needs sides that are multiples of 64"):
        check_sides([tmp_path / "x.png"], images)


def test_compressai_run_figures_bpp_of_both_strings_and_ratios(tmp_path, monkeypatch):
    """With fake codecs on a fake clock: seconds, ratios ours/CAI, and bpp of whole files (ours)
    and of all of CompressAI's strings (y and z)."""
    from vlmcodec.bench import codec as bench_codec

    clock = [0.0]

    class Ours:
        N, M = 8, 12

        def encode(self, img, quality):
            clock[0] += 3.0
            return b"o" * 100

        def decode(self, data):
            clock[0] += 1.0

    class Ref:
        def compress(self, x):
            clock[0] += 6.0
            return {"strings": [[b"y" * 40], [b"z" * 8]], "shape": (1, 1)}

        def decompress(self, strings, shape):
            clock[0] += 4.0

    monkeypatch.setattr(bench_codec, "_codecs", lambda config, workdir: (Ours(), Ref()))
    monkeypatch.setattr(bench_codec.time, "perf_counter", lambda: clock[0])
    files = _png_folder(tmp_path, [(64, 128)])
    r = bench_codec.run(files, ["N128-M192"], repeat=2)["N128-M192"]
    assert (r["ours_enc"], r["ours_dec"], r["cai_enc"], r["cai_dec"]) == (3.0, 1.0, 6.0, 4.0)
    assert r["enc_ratio"] == 0.5 and r["dec_ratio"] == 0.25
    assert r["ours_bpp"] == 8 * 100 / (64 * 128) and r["cai_bpp"] == 8 * 48 / (64 * 128)
    assert (r["images"], r["repeat"], r["N"], r["M"]) == (1, 2, 8, 12)


# --------------------------------------------------------------------------- bench/entropy.py

def test_entropy_case_row_reports_medians_bests_and_bits_per_symbol():
    from vlmcodec.bench.entropy import _Case

    case = _Case("c", 1, 1, None, None, None)
    case.enc_times, case.dec_times, case.nbytes = [1.0, 2.0, 9.0], [4.0, 3.0, 8.0], 100
    row = case.row(400)
    assert row["bits_per_symbol"] == 2.0 and row["bytes"] == 100
    assert (row["encode_s_median"], row["encode_s_best"]) == (2.0, 1.0)
    assert (row["decode_s_median"], row["decode_s_best"]) == (4.0, 3.0)
    assert row["encode_msym_s"] == 400 / 2.0 / 1e6 and row["decode_msym_s"] == 400 / 4.0 / 1e6


def test_entropy_run_ratios_compare_the_rows_they_name():
    from vlmcodec.bench.entropy import run

    report = run(n=4000, repeats=1, chunks=2, progress=False)
    rows, ratios = report["results"], report["ratios"]
    assert [(r["threads"], r["chunks"]) for r in rows[:3]] == [(1, 1), (1, 2), (2, 2)]
    assert ratios["encode_2threads_vs_1thread_same_chunks"] == rows[2]["encode_msym_s"] / rows[1]["encode_msym_s"]
    assert ratios["decode_2threads_vs_1thread_same_chunks"] == rows[2]["decode_msym_s"] / rows[1]["decode_msym_s"]
    # the ideal code length is a lower bound the coder gets close to
    bits = report["model_bits_per_symbol"]
    assert bits <= rows[0]["bits_per_symbol"] < bits * 1.05 + 0.1


def test_entropy_takes_as_many_symbols_as_chunks(tmp_path, capsys):
    """--n equal to --chunks is enough (one symbol per chunk); only fewer is refused."""
    from vlmcodec.cli import main

    out = tmp_path / "e.json"
    assert main(["bench", "entropy", "--n", "8", "--chunks", "8", "--repeats", "1", "--json", str(out)]) == 0
    assert out.exists() and "too few symbols" not in capsys.readouterr().err


def test_entropy_tables_escape_mass_is_both_tails():
    """The escape mass of a table is that of both tails, 2·Φ(-(c + ½)/s) (CompressAI's update)."""
    from statistics import NormalDist

    from vlmcodec.bench import entropy
    from vlmcodec.kernels import rans

    seen = {}

    def from_pmfs(pmfs, tails, offsets):
        seen.update(pmfs=pmfs, tails=tails, offsets=offsets)
        return "table"

    scales = np.array([1.0, 5.0])
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(rans.CdfTable, "from_pmfs", staticmethod(from_pmfs))
        assert entropy.gaussian_cdf_table(scales, tail_mass=1e-3) == "table"
    finally:
        mp.undo()
    for s, pmf, tail, off in zip(scales, seen["pmfs"], seen["tails"], seen["offsets"]):
        c = -off
        assert tail == pytest.approx(2 * NormalDist().cdf(-(c + 0.5) / s), rel=1e-9)
        assert pmf.sum() + tail == pytest.approx(1.0, abs=1e-9)


def test_entropy_model_bits_of_an_escape_is_that_of_the_escape_symbol():
    """A symbol out of its table's range costs the escape symbol's bits (however far out it is)."""
    from vlmcodec.bench.entropy import gaussian_cdf_table, model_bits, scale_table
    from vlmcodec.kernels import rans

    table = gaussian_cdf_table(scale_table())
    idx = np.array([0], dtype=np.int32)
    esc = int(table.cdf_length[0]) - 2
    escape_bits = rans.PRECISION - math.log2(int(table.cdf[0, esc + 1]) - int(table.cdf[0, esc]))
    for far in (50, 1000, -1000):
        bits = model_bits(np.array([far], dtype=np.int32), idx, table)
        assert math.isfinite(bits) and bits == pytest.approx(escape_bits), far


# --------------------------------------------------------------------------- bench/backends.py

def test_backends_table_gives_each_variants_time_over_torchs():
    from vlmcodec.bench.backends import format_table

    def t(mean):
        return {"mean_s": mean, "median_s": mean}

    result = {"summary": {"torch": {"encode": t(2.0), "decode": t(1.0), "networks_encode": t(1.0),
                                    "networks_decode": t(0.5)},
                          "onnxruntime": {"encode": t(1.0), "decode": t(4.0), "networks_encode": t(0.5),
                                          "networks_decode": t(3.0)}},
              "cross_decode": None, "settings": {"threads": 1},
              "environment": {"loadavg_before": (0.5,), "loadavg_after": (0.25,), "cpu_count": 2, "cpu": "x"}}
    lines = format_table(result).splitlines()
    ort = next(line for line in lines if line.startswith("onnxruntime"))
    assert ort.split()[-2:] == ["0.50x", "4.00x"]


def test_backends_summary_medians_are_medians(tmp_path, rng, tiny_model_path):
    import statistics

    from vlmcodec.bench import backends
    from conftest import write_train_folder

    images = sorted(write_train_folder(tmp_path / "imgs", n=1, h=64, w=64).iterdir())
    res = backends.run(images, ["torch"], 1, repeat=3, model_path=tiny_model_path, cross_decode=False, progress=False)
    for key, values in res["per_image_seconds"]["torch"].items():
        assert len(values) == 3
        assert res["summary"]["torch"][key]["median_s"] == statistics.median(values)
        assert res["summary"]["torch"][key]["mean_s"] == pytest.approx(statistics.fmean(values))


# --------------------------------------------------------------------------- bench/compressai_compat.py

def test_import_compressai_leaves_no_stub_module_behind():
    """(left in place, a stubbed torchvision made other libraries believe it was installed)"""
    from vlmcodec.bench import compressai_compat as cc

    if importlib.util.find_spec("compressai") is None:
        pytest.skip("compressai is not installed")
    before = {n for n in sys.modules if n.split(".")[0] in cc._STUBS}
    cc.import_compressai("models.google")
    after = {n for n in sys.modules if n.split(".")[0] in cc._STUBS}
    assert not any(isinstance(sys.modules[n], cc._Anything) for n in after - before)
    assert not any(isinstance(sys.modules.get(n), cc._Anything) for n in sys.modules)


def test_import_compressai_turns_a_missing_dependency_into_compressai_unavailable(monkeypatch):
    from vlmcodec.bench import compressai_compat as cc

    def missing(submodule):
        raise ModuleNotFoundError("No module named 'einops'")

    monkeypatch.setattr(cc, "_import_unchecked", missing)
    with pytest.raises(cc.CompressAIUnavailable, match=r"compressai cannot be imported \(No module named 'einops'\): "
                                                       r"pip install --no-deps compressai==1.2.8 einops"):
        cc.import_compressai("models.google")


def test_import_compressai_of_a_module_that_is_no_package_is_unavailable(monkeypatch):
    import importlib.machinery

    from vlmcodec.bench import compressai_compat as cc

    monkeypatch.delitem(sys.modules, "compressai", raising=False)
    monkeypatch.setattr(cc.importlib.util, "find_spec",
                        lambda name: importlib.machinery.ModuleSpec(name, None) if name == "compressai" else None)
    with pytest.raises(cc.CompressAIUnavailable, match="compressai is not installed: pip install"):
        cc._import_unchecked("models.google")


# --------------------------------------------------------------------------- engine/checks.py

def test_finite_number_arg_bounds_above_or_at_least_and_refuses_infinity():
    import argparse

    from vlmcodec.checks import finite_number_arg

    above, at_least = finite_number_arg(0, above=True), finite_number_arg(0)
    assert at_least("0") == 0.0 and above("0.5") == 0.5 and at_least("1e3") == 1000.0
    for parse, bad in ((above, "0"), (above, "-1"), (at_least, "-0.1"), (at_least, "inf"), (above, "inf"),
                       (at_least, "nan"), (at_least, "x")):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number"):
            parse(bad)


def test_quality_beside_either_budget_is_refused():
    from vlmcodec.checks import DEFAULT_QUALITY, quality_or_budget

    assert quality_or_budget(None, None, None) == DEFAULT_QUALITY == 75.0
    assert quality_or_budget(40, None, None) == 40 and quality_or_budget(None, 1000, None) == DEFAULT_QUALITY
    for max_bytes, max_bpp in ((1000, None), (None, 0.5), (1000, 0.5)):
        with pytest.raises(ConfigError, match="quality and max_bytes / max_bpp exclude each other"):
            quality_or_budget(40, max_bytes, max_bpp)


def test_check_seconds_and_number_take_their_upper_bounds():
    from vlmcodec.checks import MAX_SECONDS, check_number, check_seconds

    assert check_seconds("t", MAX_SECONDS) == MAX_SECONDS and check_seconds("t", int(MAX_SECONDS)) == MAX_SECONDS
    with pytest.raises(ConfigError):
        check_number("d", math.inf, most=math.inf)


# --------------------------------------------------------------------------- engine/resample.py

def test_coded_size_rounds_to_the_nearest_pixel():
    from vlmcodec.resample import coded_size

    assert coded_size(96, 145, 64) == (64, 97)  # 145·64/96 = 96.67: 97, not 96
    assert coded_size(145, 96, 64) == (97, 64)
    assert coded_size(64, 145, 64) == (64, 145)  # the short side already at the consumer's scale


def test_short_side_of_exactly_the_minimum_is_taken_and_zero_only_for_a_call():
    from vlmcodec.resample import MIN_SHORT_SIDE, call_short_side, check_short_side

    assert check_short_side(MIN_SHORT_SIDE) == MIN_SHORT_SIDE == 16
    assert check_short_side(0, zero=True) == 0 and call_short_side(0, default=64) is None
    with pytest.raises(ConfigError, match=r"short_side must be None or an integer >= 16, got 0"):
        check_short_side(0)


def test_downscale_is_antialiased():
    """A fine checkerboard shrunk 4× is mid-grey (antialiased), not a moiré of the samples it hits."""
    from vlmcodec.resample import downscale

    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    img = np.repeat(board[..., None], 3, axis=2)
    small = downscale(img, (16, 16)).astype(int)
    assert small.shape == (16, 16, 3) and np.abs(small - 128).max() <= 2


def test_upscale_uint8_rounds_not_truncates():
    from vlmcodec.resample import upscale_uint8

    for level in (1, 100, 200, 254):
        flat = np.full((8, 8, 3), level, np.uint8)
        assert np.array_equal(upscale_uint8(flat, (16, 24)), np.full((16, 24, 3), level, np.uint8)), level


def test_resize_growing_either_side_is_the_plain_upscale():
    """Growing one side while shrinking the other is the upscale (no antialiasing), as when
    growing both; only shrinking both is antialiased."""
    import torch

    from vlmcodec.resample import resize, upscale

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 20, 30, generator=g)
    for size in ((40, 15), (10, 60), (40, 60)):
        assert torch.equal(resize(x, size), upscale(x, size)), size
    shrunk = resize(x, (10, 15))
    assert shrunk.shape == (3, 10, 15) and not torch.equal(shrunk, upscale(x, (10, 15)))


# --------------------------------------------------------------------------- engine/files.py

def test_write_whole_failure_leaves_no_temporary_file_and_names_the_path(tmp_path, monkeypatch):
    import errno

    from vlmcodec import files

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full_disk)
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device") as e:
        files.write_whole(target, b"new")
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"] and target.read_bytes() == b"old"


def test_write_whole_keeps_a_replaced_files_mode(tmp_path):
    import os
    import stat

    from vlmcodec.files import write_whole

    target = tmp_path / "s.vlmc"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    old = os.umask(0o022)
    try:
        write_whole(target, b"new")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"new" and stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_write_whole_writes_through_a_link(tmp_path):
    from vlmcodec.files import write_whole

    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    write_whole(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_missing_folders_and_file_in_the_way(tmp_path):
    from vlmcodec.files import file_in_the_way, missing_folders

    assert missing_folders(tmp_path / "a" / "b") == [tmp_path / "a", tmp_path / "a" / "b"]
    assert missing_folders(tmp_path) == []
    f = tmp_path / "f"
    f.write_text("")
    assert file_in_the_way(f) == f and file_in_the_way(f / "x" / "y") == f and file_in_the_way(tmp_path / "d") is None


def test_empty_folders_removed_removes_every_empty_folder_it_made(tmp_path):
    from vlmcodec.files import empty_folders_removed, missing_folders

    deep = tmp_path / "a" / "b" / "c"
    with empty_folders_removed() as made:
        made += missing_folders(deep)
        deep.mkdir(parents=True)
    assert list(tmp_path.iterdir()) == []
    with empty_folders_removed() as made:
        made += missing_folders(deep)
        deep.mkdir(parents=True)
        (tmp_path / "a" / "kept.txt").write_text("x")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["kept.txt"]


# --------------------------------------------------------------------------- engine/torch_threads.py

@pytest.fixture
def torch_threads_state(monkeypatch):
    """The module's process state, restored after the test (and torch's thread count)."""
    import torch

    from vlmcodec import torch_threads as tt

    for name in ("_threads_started", "_used", "_forked_after", "_warned"):
        monkeypatch.setattr(tt, name, getattr(tt, name))
    before = torch.get_num_threads()
    try:
        yield tt
    finally:
        torch.set_num_threads(before)


def test_one_thread_asked_for_in_a_forked_child_is_no_warning(torch_threads_state):
    import warnings

    tt = torch_threads_state
    tt._forked_after, tt._warned = True, False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tt.set_torch_threads(1)
    assert not tt._warned


def test_torch_on_one_thread_does_not_mark_the_process(torch_threads_state):
    import torch

    tt = torch_threads_state
    tt._threads_started, tt._forked_after = False, False
    torch.set_num_threads(1)
    tt.note_torch_use()
    assert not tt._threads_started and tt._used


def test_fork_before_any_vlmcodec_work_marks_nothing(torch_threads_state):
    import torch

    tt = torch_threads_state
    tt._threads_started, tt._used, tt._forked_after = False, False, False
    torch.set_num_threads(2)
    tt._before_fork()
    assert not tt._threads_started and not tt._used


def test_a_forked_child_warns_again_once(torch_threads_state):
    tt = torch_threads_state
    tt._threads_started, tt._warned = False, True
    tt._after_fork_in_child()
    assert not tt._warned and not tt._forked_after
