"""Python API arguments of the wrong type or kind fail where they are given, with a ConfigError
(not an AttributeError later, not taken by truthiness), and the API's docstrings name the
parameters its calls take."""

from __future__ import annotations

import inspect
import pydoc

import numpy as np
import pytest

import vlmcodec
from vlmcodec import Codec, CodecSet
from vlmcodec.errors import ConfigError
from vlmcodec.image_io import load_image, save_image
from vlmcodec.models.checkpoint import load_model
from vlmcodec.runtime import Engine
from vlmcodec.runtime.client import AsyncRemoteCodec, RemoteCodec

ENGINE_PARAMETERS = ("codec", "max_batch", "max_delay_ms", "workers", "network_workers", "intra_op_threads",
                     "max_queue", "block", "timeout_s", "refine_workers")
CODEC_PARAMETERS = ("model", "backend", "device", "threads", "max_pixels", "pre_edit", "short_side", "refine",
                    "refine_views", "refine_bf16", "check_memory", "backend_options", "hs_device")


def test_engine_takes_a_codec_only(tiny_model_path):
    codec = Codec(tiny_model_path, threads=1)
    for wrong in (str(tiny_model_path), CodecSet([codec]), 5):
        with pytest.raises(ConfigError, match="Engine takes a Codec"):
            Engine(wrong)


def test_engine_and_clients_document_their_parameters_and_calls():
    text = pydoc.render_doc(Engine, renderer=pydoc.plaintext)
    doc = Engine.__doc__ or ""
    for name in ENGINE_PARAMETERS:
        assert f"``{name}``" in doc, name
    assert "max_batch" in text
    for member in (Engine.decode, Engine.in_flight, RemoteCodec.health, RemoteCodec.stats, AsyncRemoteCodec.health,
                   AsyncRemoteCodec.stats):
        assert (member.__doc__ or "").strip(), member


def test_check_memory_is_a_strict_switch(tiny_model_path):
    for value in ("false", "no", None, 1):
        with pytest.raises(ConfigError, match="check_memory must be True or False"):
            Codec(tiny_model_path, check_memory=value)
    assert Codec(tiny_model_path, check_memory=np.bool_(False)).check_memory is False


def test_torch_optimize_is_a_strict_switch(tiny_model_path):
    for value in ("false", None, 0):
        with pytest.raises(ConfigError, match="optimize must be true or false"):
            Codec(tiny_model_path, backend_options={"optimize": value})
    assert Codec(tiny_model_path, backend_options={"optimize": False}).backend.optimize is False


def test_onnxruntime_inter_op_threads_is_checked(tiny_model_path):
    pytest.importorskip("onnxruntime")
    loaded = load_model(tiny_model_path)
    for value in (-1, 0, "x", 1.5, True):
        with pytest.raises(ConfigError, match="inter_op_threads must be a whole number, at least 1"):
            Codec(loaded, backend="onnxruntime", backend_options={"inter_op_threads": value})


def test_max_pixels_is_a_whole_number(tiny_model_path, tmp_path):
    with pytest.raises(ConfigError, match="max_pixels must be a number of pixels, at least 1.*1.5"):
        Codec(tiny_model_path, max_pixels=1.5)
    assert Codec(tiny_model_path, max_pixels=np.int64(5000)).max_pixels == 5000
    save_image(np.zeros((4, 5, 3), np.uint8), tmp_path / "a.png")
    with pytest.raises(ConfigError, match="max_pixels must be a number of pixels, at least 1.*20.5"):
        load_image(tmp_path / "a.png", max_pixels=20.5)
    assert load_image(tmp_path / "a.png", max_pixels=20.0).shape == (4, 5, 3)


def test_warmup_switches_are_strict(tiny_model_path):
    with Engine(Codec(tiny_model_path, threads=1), max_batch=1) as engine:
        image = np.zeros((16, 16, 3), np.uint8)
        for name in ("refine", "decode"):
            for value in ("x", "false", None, 1):
                with pytest.raises(ConfigError, match=f"{name} must be True or False"):
                    engine.warmup(image, **{name: value})
        assert engine.warmup(image, decode=np.bool_(False))


def test_remote_codec_url_must_be_text():
    for wrong in (5, b"http://127.0.0.1:8080", None):
        with pytest.raises(ConfigError, match="a server's URL must be a string"):
            RemoteCodec(wrong)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="a server's URL must be a string"):
            AsyncRemoteCodec(wrong)


def test_docstrings_name_the_parameters():
    for fn in (vlmcodec.encode, vlmcodec.decode):
        for name in ("model", "backend"):
            assert f"``{name}``" in (fn.__doc__ or ""), (fn.__name__, name)
    for name in CODEC_PARAMETERS:
        assert f"``{name}``" in (Codec.__doc__ or ""), name
    for name in ("timeout_s", "retries"):
        assert f"``{name}``" in (RemoteCodec.__doc__ or ""), name
    from vlmcodec.runtime import CodecServer  # (it named 3 of its 21 options)

    options = [p for p in inspect.signature(CodecServer.__init__).parameters if p not in ("self", "engine", "host",
                                                                                         "port")]
    assert len(options) > 15 and not [p for p in options if f"``{p}``" not in (CodecServer.__doc__ or "")]


def test_stage_methods_check_their_batches_and_codec_set_takes_the_quality_bounds(tiny_model_path):
    """analyse([img], [50, 60]) broadcast to a batch of two, analyse([], []) and synthesize([])
    were bare IndexErrors; CodecSet.encode_to_size, 'Codec.encode_to_size with a model', had no
    min_quality / max_quality (a TypeError)."""
    codec = Codec(tiny_model_path)
    img = np.zeros((64, 64, 3), np.uint8)
    for arrays, qualities in (([img], [50, 60]), ([img, img], [50]), ([], [])):
        with pytest.raises(ConfigError, match="one quality per image"):
            codec.analyse(arrays, qualities)
    with pytest.raises(ConfigError, match="synthesize takes one or more"):
        codec.synthesize([])
    y, z = codec.analyse([img], [50])
    assert y.shape[0] == z.shape[0] == 1
    data = CodecSet([codec]).encode_to_size(img, 10_000, min_quality=20, max_quality=30)
    assert data == codec.encode_to_size(img, 10_000, min_quality=20, max_quality=30)
