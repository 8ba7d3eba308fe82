"""``vlmcodec bench ...`` subcommands run end to end on tiny inputs and fail cleanly on bad ones."""

import json


from vlmcodec.cli import main

from conftest import write_train_folder


def _images(tmp_path):
    return write_train_folder(tmp_path / "imgs", n=2, h=64, w=96)


def test_bench_speed(tmp_path, rng, tiny_model_path):
    out = tmp_path / "speed.json"
    rc = main(["bench", "speed", "--images", str(_images(tmp_path)), "--model", str(tiny_model_path),
               "--backends", "torch,tensorrt", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    stages = res["results"]["torch"]["encode_stages_s"]
    assert {"g_a", "h_a", "h_s", "y coding"} <= set(stages)
    assert "tensorrt" in res["unavailable"]
    assert res["settings"] == {"images": str(tmp_path / "imgs"), "files": ["0.png", "1.png"], "quality": 75.0,
                               "model": str(tiny_model_path), "device": None, "backends": ["torch", "tensorrt"]}
    # a misspelt backend was listed as "not available" and the run exited 0; one that ran nothing too
    images = str(tmp_path / "imgs")
    assert main(["bench", "speed", "--images", images, "--backends", "torchh", "--out", str(out)]) == 2
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert main(["bench", "speed", "--images", images, "--model", str(tiny_model_path), "--backends", "tensorrt",
                     "--out", str(tmp_path / "none.json")]) == 2


def test_bench_throughput(tmp_path, rng, tiny_model_path):
    out = tmp_path / "tp.json"
    rc = main(["bench", "throughput", "--images", str(_images(tmp_path)), "--model", str(tiny_model_path),
               "--requests", "6", "--concurrency", "1,3", "--warmup-shapes", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())["results"]
    assert set(res["encode"]) == {"sequential", "engine_c1", "engine_c3"}
    assert all(v["images_per_s"] > 0 for v in res["decode"].values())
    assert len(res["warmup_shapes_s"]) == 2 and all(s > 0 for s in res["warmup_shapes_s"])  # one per Engine


def test_bench_throughput_of_rate_controlled_encodes(tmp_path, rng, tiny_model_path, monkeypatch):
    from vlmcodec.codec import Codec

    searches = []
    real = Codec.encode_within

    def counted(self, *args, **kwargs):
        searches.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Codec, "encode_within", counted)
    out = tmp_path / "tp.json"
    rc = main(["bench", "throughput", "--images", str(_images(tmp_path)), "--model", str(tiny_model_path),
               "--requests", "6", "--concurrency", "3", "--max-bpp", "8", "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["args"]["max_bpp"] == 8 and set(res["results"]["encode"]) == {"sequential", "engine_c3"}
    assert len(searches) == 12  # every encode request, in the loop and in the Engine, was a budget search


def test_bench_throughput_onnxruntime_engine_gets_its_own_sessions(tmp_path, rng, tiny_model_path, monkeypatch):
    """On onnxruntime the Engine's codec is a second one with ``--intra-op-threads`` sessions (ORT
    takes its threads when a session is created); ``--warmup`` runs untimed requests first."""
    import pytest

    pytest.importorskip("onnxruntime")
    from vlmcodec.runtime import Engine

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seen = []
    real_init = Engine.__init__

    def spy(self, codec=None, **kw):
        seen.append(codec.backend.threads)
        real_init(self, codec, **kw)

    monkeypatch.setattr(Engine, "__init__", spy)
    out = tmp_path / "tp.json"
    rc = main(["bench", "throughput", "--images", str(_images(tmp_path)), "--model", str(tiny_model_path),
               "--backend", "onnxruntime", "--backend-option", "allow_spinning=false", "--requests", "4",
               "--concurrency", "2", "--warmup", "2", "--out", str(out)])
    assert rc == 0 and seen == [1]
    doc = json.loads(out.read_text())
    assert doc["args"]["warmup"] == 2 and doc["args"]["backend_option"] == [["allow_spinning", False]]
    assert doc["results"]["encode"]["engine_c2"]["images_per_s"] > 0


def test_bench_bad_folder(tmp_path, capsys):
    assert main(["bench", "speed", "--images", str(tmp_path / "missing")]) == 2
    assert "image folder not found" in capsys.readouterr().err


def test_bench_counts_below_their_least_are_refused_by_the_parser(capsys):
    """(--limit -1 ran on every image but the last; --max-batch 0 failed later)"""
    import pytest

    for argv, message in ((["speed", "--limit", "-1"], "--limit: expected a whole number, at least 0"),
                          (["rd", "--out", "x", "--threads", "0"], "--threads: expected a whole number, at least 1"),
                          (["throughput", "--max-batch", "0"], "--max-batch: expected a whole number, at least 1"),
                          (["compare", "--bootstrap", "-1", "a", "b"], "--bootstrap: expected a whole number, at least 0"),
                          # (numpy's "expected non-negative integer" did not say which option)
                          (["compare", "--curve", "a=x", "--seed", "-1"], "--seed: expected a whole number, at least 0")):
        with pytest.raises(SystemExit) as e:
            main(["bench", *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err, argv


def test_bench_throughput_against_a_running_server(tmp_path, rng, tiny_model_path):
    from vlmcodec import Codec
    from vlmcodec.runtime import CodecServer, Engine, serve_in_thread

    engine = Engine(Codec(tiny_model_path), max_batch=4, block=False)
    server = CodecServer(engine, "127.0.0.1", 0, auth_token="t0k")
    serve_in_thread(server)
    (tmp_path / "token").write_text("# a server's token file: the client sends the first\napp t0k\nother x1\n")
    try:
        out = tmp_path / "tp.json"
        rc = main(["bench", "throughput", "--images", str(_images(tmp_path)), "--url", server.url,
                   "--requests", "6", "--concurrency", "3", "--out", str(out), "--token-file", str(tmp_path / "token"),
                   "--max-bpp", "8"])
        assert rc == 0
        res = json.loads(out.read_text())["results"]
        assert set(res["encode"]) == set(res["decode"]) == {"sequential", "server_c3"}
        assert all(v["images_per_s"] > 0 for mode in ("encode", "decode") for v in res[mode].values())
        assert res["server"]["model"] == engine.codec.fingerprint.hex()
        assert engine.stats["ok"] >= 2 * 6 * 2  # every request went through the server's engine
    finally:
        server.shutdown()
        server.server_close()
        engine.shutdown()


def test_bench_rd_refuses_no_codecs_and_quality_keys_of_no_codec(tmp_path, rng, capsys):
    """(``--codecs ,`` wrote an rd.json of no codec; ``--qualities jpg=...`` was ignored; both exit 0)"""
    images = str(_images(tmp_path))
    for extra, message in ((["--codecs", ","], "--codecs ',': no codec named"),
                           (["--codecs", "jpeg", "--qualities", "jpg=50,60"], "--qualities jpg=...: no codec jpg")):
        assert main(["bench", "rd", images, "--out", str(tmp_path / "out"), "--no-semantic", "--quiet", *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_benchmarks_figures_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """(write_json wrote in place: a Ctrl-C or a full disk left a truncated file)"""
    import os

    import pytest

    from vlmcodec.bench.common import write_json

    out = tmp_path / "r.json"
    write_json(out, {"run": 1})

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_json(out, {"run": 2, "figures": list(range(1000))})
    assert json.loads(out.read_text()) == {"run": 1} and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_bench_throughput_limit_takes_the_first_images(tmp_path, rng, tiny_model_path):
    out = tmp_path / "tp.json"
    rc = main(["bench", "throughput", "--images", str(_images(tmp_path)), "--model", str(tiny_model_path),
               "--limit", "1", "--requests", "2", "--concurrency", "1", "--out", str(out)])
    assert rc == 0
    run = json.loads(out.read_text())
    assert run["files"] == ["0.png"] and run["args"]["limit"] == 1


def test_bench_semantic_limit_takes_the_first_images(tmp_path, monkeypatch, capsys):
    import numpy as np

    from vlmcodec.bench import semantic

    class Mean:  # a metric that records what it was given
        name = "mean"
        seen: list = []

        def compute_batch(self, originals, decoded):
            self.seen.append(len(originals))
            return [float(np.mean(d)) for d in decoded]

    monkeypatch.setattr(semantic, "semantic_metrics", lambda *a, **k: [Mean()])
    folder = _images(tmp_path)
    out = tmp_path / "sem.json"
    assert semantic.main(["--images", str(folder), "--limit", "1", "--jpeg", "50", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["images"] == ["0.png"] and Mean.seen == [1]
    assert "1 images from" in capsys.readouterr().out
