"""Settings no codec or engine can use are refused where they are given, with the setting named."""

import numpy as np
import pytest

from vlmcodec.errors import ConfigError


def test_codec_refuses_a_thread_count_below_one_and_other_absurd_settings(tiny_model_path):
    from vlmcodec import Codec
    from vlmcodec.errors import ConfigError
    from vlmcodec.runtime import Engine

    for threads in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="threads must be a whole number, at least 1"):
            Codec(tiny_model_path, threads=threads)
    for max_pixels in (0, -1, float("nan"), "100"):  # (-1 was taken: every image then refused)
        with pytest.raises(ConfigError, match="max_pixels must be a number of pixels, at least 1"):
            Codec(tiny_model_path, max_pixels=max_pixels)
    with pytest.raises(ConfigError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'foo'"):  # (was torch's RuntimeError)
        Codec(tiny_model_path, device="foo")
    assert Codec(tiny_model_path, threads=np.int64(2), max_pixels=1e6).max_pixels == 1_000_000
    codec = Codec(tiny_model_path, threads=1)
    with pytest.raises(ValueError, match="intra_op_threads must be a whole number, at least 1"):
        Engine(codec, intra_op_threads=0)
    for delay in (float("nan"), -5, float("inf")):  # (NaN was taken)
        with pytest.raises(ValueError, match="max_delay_ms must be a finite number, at least 0"):
            Engine(codec, max_delay_ms=delay)
    for timeout in (-1, 0, float("nan")):  # (taken: every request then timed out at once)
        with pytest.raises(ValueError, match="timeout_s must be a finite number of seconds above 0"):
            Engine(codec, timeout_s=timeout)


def test_the_server_refuses_a_body_limit_below_one_byte(tiny_model_path, capsys):
    """(--max-body-mb -1 was taken and refused every body; NaN failed after the engine had started)"""
    from vlmcodec import Codec
    from vlmcodec.cli import main
    from vlmcodec.errors import ConfigError
    from vlmcodec.runtime import Engine
    from vlmcodec.runtime.server import CodecServer

    for mb in ("-1", "0", "nan"):
        with pytest.raises(SystemExit) as e:
            main(["serve", "--port", "0", "--model", str(tiny_model_path), "--max-body-mb", mb])
        assert e.value.code == 2 and "--max-body-mb: expected a finite number, above 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # (its byte count overflowed: a traceback)
        main(["serve", "--port", "0", "--model", str(tiny_model_path), "--max-body-mb", "1e308"])
    assert e.value.code == 2 and "expected a positive number below 4398046511104" in capsys.readouterr().err
    engine = Engine(Codec(tiny_model_path, threads=1))
    try:
        for bad in (0, -5, 1.5, None):
            with pytest.raises(ConfigError, match="max_body must be a whole number, at least 1"):
                CodecServer(engine, "127.0.0.1", 0, max_body=bad)
    finally:
        engine.shutdown()


def test_a_batch_call_given_one_item_says_so(tiny_model_path, tmp_path):
    """encode_batch(image) iterated over an H×W×3 array's rows (64 streams of 64×3 pixels) and a
    path's characters; decode_batch(stream) over its bytes; pre_edit="no" was True."""
    from vlmcodec import Codec, CodecSet
    from vlmcodec.errors import BitstreamError, ConfigError, ImageError

    codec = Codec(tiny_model_path, threads=1)
    img = np.zeros((64, 64, 3), np.uint8)
    for one in (img, "photo.png", tmp_path / "photo.png"):
        with pytest.raises(ImageError, match=r"encode_batch takes a sequence of images .*: for one, use encode\(\)"):
            codec.encode_batch(one, 50)
    stream = codec.encode(img, 50)
    for one in (stream, bytearray(stream), memoryview(stream)):
        with pytest.raises(BitstreamError, match=r"decode_batch takes a sequence of streams .*: for one, use decode\(\)"):
            codec.decode_batch(one)
        with pytest.raises(BitstreamError, match="decode_batch takes a sequence of streams"):
            CodecSet([codec]).decode_batch(one)
    batch = np.stack([img, img + 9])  # an N×H×W×C array is a batch of N
    assert [codec.decode(s).shape for s in codec.encode_batch(batch, 50)] == [(64, 64, 3)] * 2
    assert len(codec.decode_batch((s for s in [stream, stream]))) == 2  # any iterable of streams
    from vlmcodec.runtime import Engine

    engine = Engine(codec)
    try:
        with pytest.raises(ImageError, match=r"encode_many takes a sequence of images .*: for one, use submit_encode"):
            engine.encode_many(img)
        with pytest.raises(BitstreamError, match=r"decode_many takes a sequence of streams .*: for one, use submit_decode"):
            engine.decode_many(stream)
        assert [a.shape for a in engine.decode_many(engine.encode_many(batch))] == [(64, 64, 3)] * 2
    finally:
        engine.shutdown()
    with pytest.raises(ConfigError, match="pre_edit must be True or False, got 'no'"):
        Codec(tiny_model_path, pre_edit="no")


def test_the_client_refuses_a_timeout_it_cannot_use():
    """(-5 and NaN were taken, then each request failed with http.client's "Timeout value out of range")"""
    from vlmcodec.runtime.client import RemoteCodec

    for timeout in (-5, 0, float("nan"), float("inf"), "10", True):
        with pytest.raises(ConfigError, match="timeout_s must be a finite number of seconds above 0"):
            RemoteCodec("http://127.0.0.1:1", timeout_s=timeout)
    RemoteCodec("http://127.0.0.1:1", timeout_s=None).close()  # (no timeout)
    RemoteCodec("http://127.0.0.1:1", timeout_s=np.float32(2.5)).close()


def test_the_client_refuses_settings_it_cannot_use_as_config_errors():
    """(plain ValueErrors before; retries=1.5 was taken as 1 and "2" as 2)"""
    import ssl

    from vlmcodec.runtime.client import RemoteCodec

    for retries in (-1, 1.5, "2", None, True):
        with pytest.raises(ConfigError, match="retries must be a whole number, at least 0"):
            RemoteCodec("http://127.0.0.1:1", retries=retries)
    RemoteCodec("http://127.0.0.1:1", retries=np.int64(3)).close()
    for url in ("ftp://example.com", "127.0.0.1:8080", "http://"):
        with pytest.raises(ConfigError, match="https://host:port"):
            RemoteCodec(url)
    with pytest.raises(ConfigError, match="needs an https:// URL"):
        RemoteCodec("http://example.com", ssl_context=ssl.create_default_context())


def test_an_engine_left_running_at_exit_is_shut_down(tmp_path):
    """A program that exits without Engine.shutdown(): every queued request is resolved (run, or
    failed with EngineDeadError; they vanished with the engine's daemon thread) and the threads let
    go of the codec (nanobind printed ten lines of "leaked" rANS tables)."""
    import subprocess
    import sys

    script = tmp_path / "left_running.py"
    script.write_text(
        "import numpy as np\n"
        "from vlmcodec import Codec\n"
        "from vlmcodec.runtime import Engine\n"
        "import time\n"
        "codec = Codec(threads=1)\n"
        "coded = codec.entropy_encode\n"
        "def slow(*args, **kwargs):  # (12 queued behind 0.5 s each: some are left at exit on a busy machine too)\n"
        "    time.sleep(0.5)\n"
        "    return coded(*args, **kwargs)\n"
        "codec.entropy_encode = slow\n"
        "engine = Engine(codec, max_batch=1)\n"
        "img = np.zeros((128, 128, 3), np.uint8)\n"
        "import sys, threading\n"
        "lock = threading.Lock()\n"
        "def told(f):\n"
        "    word = 'ok' if f.exception() is None else type(f.exception()).__name__\n"
        "    with lock:  # callbacks run on several threads; print() writes word and newline apart\n"
        "        sys.stdout.write(word + '\\n'); sys.stdout.flush()\n"
        "for _ in range(12):\n"
        "    engine.submit_encode(img, 50).add_done_callback(told)\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    outcomes = run.stdout.split()
    assert len(outcomes) == 12 and set(outcomes) <= {"ok", "EngineDeadError"}, run.stdout
    assert "EngineDeadError" in outcomes  # (12 queued behind one at a time: not all ran)
    assert "leaked" not in run.stderr, run.stderr[-2000:]


def test_a_batch_the_network_pool_refuses_fails_its_requests(tiny_model_path):
    """At the interpreter's exit concurrent.futures refuses new work before atexit shuts the engine
    down: the batch the scheduler had taken off the queue vanished with its thread (a request never
    resolved, one time in two in the test above on a busy machine)."""
    from vlmcodec import Codec
    from vlmcodec.errors import EngineDeadError
    from vlmcodec.runtime import Engine

    engine = Engine(Codec(tiny_model_path, threads=1), max_batch=1)
    try:
        def refuse(*args, **kwargs):
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")

        engine._net_pool.submit = refuse
        future = engine.submit_encode(np.zeros((32, 32, 3), np.uint8), 50)
        with pytest.raises(EngineDeadError, match="interpreter shutdown"):
            future.result(timeout=60)
    finally:
        engine.shutdown(drain=False, timeout_s=5.0)


@pytest.mark.parametrize("how", ["never served", "served on a thread, a keep-alive client"])
def test_a_server_left_open_at_exit_lets_go_of_its_codec(tmp_path, how):
    """A program that ends without closing its CodecServer: no daemon thread (the refusing one, the
    serving one, a keep-alive connection's) is frozen holding the codec, so nanobind reports no
    "leaked" rANS tables; one served on a thread was stopped at exit (its connection closed)."""
    import subprocess
    import sys

    script = tmp_path / "left_open.py"
    lines = ["import numpy as np",
             "from vlmcodec import Codec",
             "from vlmcodec.runtime import Engine, RemoteCodec",
             "from vlmcodec.runtime.server import CodecServer, serve_in_thread",
             "server = CodecServer(Engine(Codec(threads=1)), port=0)"]
    if how != "never served":
        lines += ["serve_in_thread(server)",
                  "remote = RemoteCodec(server.url)",
                  "print(len(remote.encode(np.zeros((64, 64, 3), np.uint8), 50)) > 0, flush=True)"]
    script.write_text("\n".join(lines) + "\n")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ([] if how == "never served" else ["True"])
    assert "leaked" not in run.stderr, run.stderr[-2000:]


def test_random_codec_settings_and_encode_arguments_work_or_raise_a_vlmcodec_error(tiny_model_path):
    """Codec(...) and encode(...) given 1-2 settings of every kind of value (zero, negative,
    huge, NaN, infinity, strings, booleans, lists, tables, None, numpy integers): they work or raise
    a VlmcodecError, as the README promises (quality and short_side raised plain ValueErrors;
    hs_device={...} and backend_options=True TypeErrors)."""
    import random
    import warnings

    from vlmcodec import Codec
    from vlmcodec.errors import VlmcodecError

    rng = random.Random(0)
    values = [0, -1, 1, 16, 64, 1e30, -0.5, float("nan"), float("inf"), "abc", "", True, False, [], [1, 2], (224,),
              {"a": 1}, 3.5, None, np.int64(2)]
    settings = ["backend", "device", "threads", "max_pixels", "pre_edit", "short_side", "refine", "refine_views",
                "refine_bf16", "check_memory", "backend_options", "hs_device"]
    codec = Codec(tiny_model_path, threads=1)
    img = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    refused = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(60):
            try:
                Codec(tiny_model_path, **{rng.choice(settings): rng.choice(values) for _ in range(rng.randint(1, 2))})
            except VlmcodecError:
                refused += 1
            kw = {rng.choice(["quality", "short_side", "refine"]): rng.choice(values) for _ in range(rng.randint(1, 2))}
            try:
                codec.encode(img, kw.pop("quality", 50), **kw)
            except VlmcodecError:
                refused += 1
    assert refused > 60


def test_a_request_with_a_bad_argument_fails_alone_with_a_config_error(tiny_model_path):
    """Engine.submit_encode/submit_decode: a timeout that is no positive number (a string was a
    TypeError raised at the caller; NaN never timed out), a max_bpp that is no number ("abc" a
    ValueError of float()) and a priority that is no int (a plain ValueError) fail their own
    future with ConfigError; the engine goes on serving."""
    from vlmcodec import Codec
    from vlmcodec.errors import ConfigError
    from vlmcodec.runtime import Engine

    img = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    with Engine(Codec(tiny_model_path, threads=1)) as engine:
        for kw, message in (({"timeout_s": "abc"}, "timeout_s must be a finite number of seconds above 0"),
                            ({"timeout_s": float("nan")}, "timeout_s must be"),
                            ({"timeout_s": -1}, "timeout_s must be"),
                            ({"max_bpp": "abc"}, "max_bpp must be a positive number"),
                            ({"max_bpp": []}, "max_bpp must be a positive number"),
                            ({"priority": 3.5}, "priority must be an int")):
            with pytest.raises(ConfigError, match=message):
                engine.submit_encode(img, None if "max_bpp" in kw else 50, **kw).result(timeout=60)
        data = engine.submit_encode(img, 50).result(timeout=60)
        with pytest.raises(ConfigError, match="timeout_s must be"):
            engine.submit_decode(data, timeout_s="abc").result(timeout=60)
        assert engine.submit_decode(data).result(timeout=60).shape == (40, 56, 3)


def test_the_client_refuses_a_stream_that_is_no_bytes_before_sending_it():
    """(an int was sent as that many zero bytes, a file's name was a TypeError)"""
    from vlmcodec.errors import BitstreamError
    from vlmcodec.runtime.client import RemoteCodec

    remote = RemoteCodec("http://127.0.0.1:1", retries=0)  # nothing listens: sending would be a ConnectionError
    with pytest.raises(BitstreamError, match="got int"):
        remote.decode(5)
    with pytest.raises(BitstreamError, match=r"got str \(a file's name\?"):
        remote.decode("photo.vlmc")
    with pytest.raises(ConnectionError):  # bytes-like: sent
        remote.decode(memoryview(b"VLMC"))


def test_api_arguments_of_the_wrong_kind_are_vlmcodec_errors(tiny_model_path, tmp_path):
    """Each was a TypeError (or worse) from deep inside: a model that is no path ('expected str,
    bytes or os.PathLike'; 0 and False were the default model), a CodecSet given one path (taken
    character by character) or a number, memory_needed's sizes as strings, a backend list to the
    cached vlmcodec.encode ('unhashable')."""
    import vlmcodec
    from vlmcodec import Codec, CodecSet

    for model in (-1, 0, False, 2.5, [str(tiny_model_path)], object()):
        with pytest.raises(ConfigError, match="a model is the path of a .safetensors model file"):
            Codec(model)
    with pytest.raises(ConfigError, match="a model is the path"):
        vlmcodec.decode(b"VLMC", model=7)
    codec = Codec(tiny_model_path)
    for given in (str(tiny_model_path), tiny_model_path, codec, 5, None):
        with pytest.raises(ConfigError, match="a CodecSet takes a list of Codecs or model paths"):
            CodecSet(given)
    assert len(CodecSet((codec,))) == 1 and len(CodecSet(iter([codec]))) == 1
    for sizes in (("100", 100), (None, 100), (100, 2.5), (100, True), (0, 10)):
        with pytest.raises(ConfigError, match="memory_needed's (height|width|count) must be a whole number, at least 1"):
            codec.memory_needed(*sizes)
    assert codec.memory_needed(np.int64(100), 130) == codec.memory_needed(100, 130)
    with pytest.raises(ConfigError, match="backend must be a backend's name"):
        vlmcodec.encode(np.zeros((8, 8, 3), np.uint8), backend=["torch"])


def test_engine_counts_must_be_whole_numbers(tiny_model_path):
    """(None, "abc", NaN and lists were TypeErrors or ValueErrors from a comparison; 2.5 and True were taken)"""
    from vlmcodec import Codec
    from vlmcodec.runtime import Engine

    codec = Codec(tiny_model_path, threads=1)
    for name in ("max_batch", "workers", "network_workers", "refine_workers", "max_queue"):
        for value in (None, "abc", float("nan"), [1], 2.5, True, 0, -3):
            with pytest.raises(ConfigError, match=f"{name} must be a whole number, at least 1, got"):
                Engine(codec, **{name: value})
    with Engine(codec, max_batch=np.int64(2), workers=np.int32(1)) as engine:
        for window in (0, 2.5, "4", float("nan")):
            with pytest.raises(ConfigError, match="window must be a whole number, at least 1"):
                list(engine.encode_many([np.zeros((8, 8, 3), np.uint8)], window=window))


def test_server_settings_of_the_wrong_kind_are_config_errors(tiny_model_path):
    """CodecServer's own arguments (Python embedders; the CLI's types check its flags): a
    quality, PNG level, connection count or idle timeout that is no number, an ssl_context that
    is no SSLContext (failed at each connection), tokens or per-client options that are not a
    list or mapping (TypeErrors, AttributeErrors), trusted proxies as one string (taken
    character by character, refused as "'1' is not an address"; now that one network), a rate
    limit of True (a rate of 1 a second)."""
    from vlmcodec import Codec
    from vlmcodec.runtime import Engine
    from vlmcodec.runtime.server import CodecServer

    cases = {"quality": ("abc", None, 101, float("nan"), True), "png_level": (None, "1", 10, 2.5, True),
             "max_connections": (None, "abc", 0, float("nan"), 2.5), "idle_timeout": ("abc", 0, float("nan"), True),
             "ssl_context": ("abc", 1), "auth_token": (-1, 2.5, object()), "client_limits": ("abc", [1], 2),
             "client_priorities": ("abc", [1], 2), "client_max_refine": ("abc", [1], 2),
             "trusted_proxies": (-1, 2.5, object(), "1", "not-an-address"), "rate_limit": (True, "abc", -1)}
    with Engine(Codec(tiny_model_path, threads=1)) as engine:
        for name, values in cases.items():
            for value in values:
                with pytest.raises(ConfigError):
                    CodecServer(engine, "127.0.0.1", 0, **{name: value}).server_close()
        server = CodecServer(engine, "127.0.0.1", 0, trusted_proxies="10.0.0.0/8", png_level=np.int64(3))
        try:  # one network as a string is that network
            assert [str(n) for n in server.trusted_proxies] == ["10.0.0.0/8"] and server.png_level == 3
        finally:
            server.server_close()


def test_batch_calls_given_no_sequence_are_vlmcodec_errors(tiny_model_path):
    """(None, numbers and objects were TypeErrors "not iterable" / "has no len()" from inside)"""
    from vlmcodec import Codec, CodecSet
    from vlmcodec.errors import BitstreamError, ImageError

    codec = Codec(tiny_model_path, threads=1)
    img = np.zeros((16, 16, 3), np.uint8)
    for items in (None, -1, 2.5, True, object()):
        with pytest.raises(ImageError, match="encode_batch takes a sequence of images"):
            codec.encode_batch(items, 50)
        with pytest.raises(BitstreamError, match="decode_batch takes a sequence of streams"):
            codec.decode_batch(items)
        with pytest.raises(BitstreamError, match="decode_batch takes a sequence of streams"):
            CodecSet([codec]).decode_batch(items)
    for qualities in (None, True, object(), "ab"):
        with pytest.raises(ConfigError, match="qualities must be a number or one per image"):
            codec.encode_batch([img, img], qualities)
    assert codec.encode_batch([img, img], np.array([40, 60])) == [codec.encode(img, 40), codec.encode(img, 60)]
