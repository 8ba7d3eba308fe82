"""The speed benchmarks (throughput, backends, entropy, speed, kernels): failed requests counted as
failed, arguments checked before the run, the output path checked before the run."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from vlmcodec.bench import throughput as tp
from vlmcodec.cli import main

from conftest import smooth_image, write_train_folder


def _images(tmp_path):
    return write_train_folder(tmp_path / "imgs", n=1, h=64, w=96)


def test_with_clients_counts_failed_requests_and_goes_on():
    """(a request that raised killed its client thread, its other requests were never sent, and
    images/s counted all of them; when all failed, an IndexError from np.percentile)"""
    sent = []

    def call(item):
        sent.append(item)
        time.sleep(0.01)
        if item % 2:
            raise RuntimeError(f"request {item} failed")

    r = tp.with_clients(call, list(range(8)), 4)
    assert sorted(sent) == list(range(8))  # every request was sent
    assert (r["requests"], r["ok"], r["failed"]) == (8, 4, 4)
    assert r["errors"] == {"RuntimeError": 4} and r["first_error"].startswith("RuntimeError: request ")
    assert r["images_per_s"] == pytest.approx(4 / r["seconds"])
    r = tp.with_clients(lambda item: 1 / 0, list(range(4)), 2)
    assert (r["ok"], r["failed"], r["images_per_s"], r["p50_ms"]) == (0, 4, 0.0, None)
    assert r["errors"] == {"ZeroDivisionError": 4}


def test_bench_throughput_with_failed_requests_exits_2(tmp_path, rng, tiny_model_path, monkeypatch, capsys):
    from vlmcodec.runtime import Engine

    def broken(self, data, *args, **kwargs):
        raise RuntimeError("no decoding today")

    monkeypatch.setattr(Engine, "submit_decode", broken)
    out = tmp_path / "tp.json"
    rc = main(["bench", "throughput", "--images", str(_images(tmp_path)), "--model", str(tiny_model_path),
               "--requests", "3", "--concurrency", "2", "--network-workers", "1", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "error: 3 of 12 requests failed (RuntimeError 3)" in err
    res = json.loads(out.read_text())["results"]
    assert res["decode"]["engine_c2"]["failed"] == 3 and res["decode"]["engine_c2"]["images_per_s"] == 0
    assert res["decode"]["engine_c2"]["speedup_vs_sequential"] == 0 and res["decode"]["engine_c2"]["p99_ms"] is None
    assert res["encode"]["engine_c2"]["failed"] == 0 and "errors" not in res["encode"]["engine_c2"]


@pytest.mark.parametrize("value", ["0", "-1", "x", "4,0", " , "])
def test_bench_throughput_concurrency_is_checked_by_the_parser(value, capsys, tmp_path):
    """(--concurrency 0 ran the sequential passes, then an IndexError; a non-number did not name the
    option). --out in tmp_path: were the check lost, the bench would run and write there, not over
    the repository's results/."""
    with pytest.raises(SystemExit) as e:
        main(["bench", "throughput", "--concurrency", value, "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "argument --concurrency: expected" in capsys.readouterr().err
    assert tp.concurrency_list("1, 4,16") == [1, 4, 16]


def test_bench_throughput_requests_are_indexed_lazily(rng, tiny_model_path, monkeypatch):
    """(--requests N built two N-long lists before the first request: ~16 GB for 10⁹)"""
    class Stop(Exception):
        pass

    seen = []

    def stop(fn, work):
        seen.append(work)
        raise Stop

    monkeypatch.setattr(tp, "sequential", stop)
    imgs = [smooth_image(rng, 64, 96), smooth_image(rng, 64, 96)]
    t0 = time.perf_counter()
    with pytest.raises(Stop):
        tp.run(imgs, 10**9, [1], 75, 8, None, 1, tiny_model_path, network_workers=1)
    assert time.perf_counter() - t0 < 60
    (work,) = seen
    assert not isinstance(work, list) and len(work) == 10**9
    assert work[0] is imgs[0] and work[10**9 - 1] is imgs[1] and work[-2] is imgs[0]
    assert len(work[:5]) == 5 and list(work[:3]) == [imgs[0], imgs[1], imgs[0]]
    with pytest.raises(IndexError):
        work[10**9]


@pytest.mark.parametrize("extra, message", [
    (["--token-file", "t"], "--token-file: only with --url"),
    (["--cafile", "c.pem", "--token-file", "t"], "--token-file, --cafile: only with --url"),
    (["--url", "http://127.0.0.1:9", "--model", "m.safetensors", "--warmup", "2"],
     "--model, --warmup: only for an in-process Engine"),
    (["--url", "http://127.0.0.1:9", "--backend", "onnxruntime"], "--backend: only for an in-process Engine"),
])
def test_bench_throughput_refuses_options_that_do_not_apply(tmp_path, extra, message, capsys):
    """(they were silently ignored)"""
    assert main(["bench", "throughput", "--images", str(tmp_path / "none"), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("bench, option", [("speed", "--out"), ("throughput", "--out"), ("backends", "--out"),
                                           ("entropy", "--json")])
def test_bench_output_path_is_checked_before_the_run(tmp_path, bench, option, capsys):
    """(--out DIR ran the whole benchmark, then failed with "Is a directory", speed printing no result)"""
    (tmp_path / "file").write_text("")
    for path, message in ((tmp_path, "is a folder"), (tmp_path / "file" / "x.json", "cannot write in")):
        t0 = time.perf_counter()
        assert main(["bench", bench, "--images", str(tmp_path / "none"), option, str(path)]
                    if bench != "entropy" else ["bench", bench, option, str(path)]) == 2
        assert f"error: {option} {path}: {message}" in capsys.readouterr().err
        assert time.perf_counter() - t0 < 10


def test_check_output_path_accepts_folders_still_to_make(tmp_path):
    from vlmcodec.bench.common import check_output_path

    path = tmp_path / "a" / "b" / "r.json"
    assert check_output_path(path) == path and not (tmp_path / "a").exists()
    (tmp_path / "r.json").write_text("{}")
    assert check_output_path(tmp_path / "r.json") == tmp_path / "r.json"


@pytest.mark.parametrize("value, message", [
    (" , ", "--variants ' , ': no variant named"),
    ("torch,onnx", "--variants: unknown 'onnx'; choose from torch, onnxruntime"),
    ("torch,onnxruntime,torch", "--variants: torch named more than once"),
])
def test_bench_backends_checks_variants_before_building_codecs(tmp_path, value, message, capsys):
    """(no variant: a ZeroDivisionError after the models were built; one named twice was timed twice)"""
    (tmp_path / "imgs").mkdir()  # no image: were the check missing, the run would stop there, not on Kodak
    assert main(["bench", "backends", "--variants", value, "--images", str(tmp_path / "imgs"),
                 "--out", str(tmp_path / "b.json")]) == 2
    assert message in capsys.readouterr().err


def test_bench_backends_encoder_networks_include_the_pre_editor(tmp_path, rng, tiny_model_path, monkeypatch):
    """(the "nets enc" column summed g_a and h_a only, leaving out the default model's largest network)"""
    pytest.importorskip("onnxruntime")
    from vlmcodec.bench import backends
    from vlmcodec.codec import Codec

    real = Codec.encode

    def encode(self, *args, **kwargs):
        data = real(self, *args, **kwargs)
        if self.stage_times is not None:
            self.stage_times = {"pad": 8.0, "pre-edit": 1.0, "g_a": 2.0, "h_a": 4.0, "y coding": 16.0}
        return data

    monkeypatch.setattr(Codec, "encode", encode)
    images = sorted(_images(tmp_path).iterdir())
    res = backends.run(images, ["torch"], 1, model_path=tiny_model_path, cross_decode=False)
    assert res["per_image_seconds"]["torch"]["networks_encode"] == [7.0]
    assert res["settings"]["networks_encode_stages"] == ["pre-edit", "g_a", "h_a"]


@pytest.mark.parametrize("argv", [["--n", "1", "--chunks", "1"], ["--n", "5"], ["--n", "7", "--chunks", "8"]])
def test_bench_entropy_refuses_fewer_symbols_than_chunks(tmp_path, argv, capsys):
    """(--n 1: a Rust panic in constriction, raw traceback; --n 2..7 with 8 chunks a coder error not naming --chunks)"""
    assert main(["bench", "entropy", *argv, "--json", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert f"--n {argv[1]}: too few symbols" in err and "--chunks" in err
    assert not (tmp_path / "e.json").exists()


def test_bench_entropy_constriction_case_with_all_symbols_equal():
    """(its QuantizedGaussian(min, max) panicked when min == max: two symbols can be equal)"""
    pytest.importorskip("constriction")
    from vlmcodec.bench.entropy import case_constriction, scale_table

    symbols, indexes = np.zeros(2, dtype=np.int32), np.array([0, 5], dtype=np.int32)
    case_constriction(symbols, indexes, scale_table()).run_once(symbols)  # checks the round trip


def test_bench_kernels_runs_without_pytest():
    """(bench/kernels.py imported pytest, a test extra only, at module level: ModuleNotFoundError)"""
    code = ("import sys; sys.modules['pytest'] = None; from vlmcodec.cli import main; "
            "sys.exit(main(['bench', 'kernels', '--quick']))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "ModuleNotFoundError" not in p.stderr, p.stderr
    from vlmcodec.bench.kernels import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason:  # exit 0 still (a GPU-only bench among the others), saying plainly that it measured nothing
        assert p.stderr.strip() == f"vlmcodec bench kernels: nothing measured: {reason}", p.stderr
