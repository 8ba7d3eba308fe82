"""TensorRT builder and backend.

What runs everywhere: build-configuration checks, the engine-manifest refusal rules, and the
"TensorRT not available" error (backend and CLI). What needs TensorRT 10 and a CUDA GPU
(``gpu`` marker; skipped with the reason otherwise): building FP32/FP16 engines for a small
model, running them through the backend, x̂ parity with torch, cross-decode, profile limits and
the timing cache.
"""

import json

import numpy as np
import pytest
import torch

from vlmcodec.errors import BackendUnavailableError, ConfigError, ModelMismatchError
from vlmcodec.export.manifest import network_fingerprint
from vlmcodec.export.tensorrt import (FORMAT, BuildConfig, check_engine_manifest, import_tensorrt, parse_size,
                                      require_gpu)
from vlmcodec.models import MeanScaleHyperprior
from vlmcodec.models.checkpoint import load_model

from conftest import smooth_image


def _unavailable_reason():
    try:
        import_tensorrt()
        require_gpu()
    except BackendUnavailableError as e:
        return str(e)
    return None


REASON = _unavailable_reason()
needs_trt = pytest.mark.skipif(REASON is not None, reason=REASON or "")


# -- everywhere ---------------------------------------------------------------------------------
def test_build_config_profiles():
    cfg = BuildConfig(min_batch=1, opt_batch=2, max_batch=4, min_size=(64, 64), opt_size=(512, 768),
                      max_size=(1024, 1536))
    assert cfg.profile("g_a", 3) == {"min": [1, 3, 64, 64], "opt": [2, 3, 512, 768], "max": [4, 3, 1024, 1536]}
    assert cfg.profile("h_a", 192) == {"min": [1, 192, 4, 4], "opt": [2, 192, 32, 48], "max": [4, 192, 64, 96]}
    assert cfg.profile("g_s", 192)["max"] == [4, 192, 64, 96]
    assert cfg.profile("h_s", 128)["opt"] == [2, 128, 8, 12]
    assert cfg.precision == "fp32" and BuildConfig(fp16=True).precision == "fp16"
    assert json.loads(json.dumps(cfg.to_dict()))["max_size"] == [1024, 1536]


@pytest.mark.parametrize("kwargs", [dict(min_batch=2, opt_batch=1), dict(max_batch=0), dict(max_size=(1000, 1024)),
                                    dict(opt_size=(2048, 2048)), dict(networks=("g_z",)),
                                    dict(builder_optimization_level=9)])
def test_build_config_rejects(kwargs):
    with pytest.raises(ConfigError):
        BuildConfig(**kwargs)


def test_parse_size():
    assert parse_size("1024x768") == (1024, 768)
    for bad in ("1024", "100x64", "0x64", "axb"):
        with pytest.raises(ConfigError):
            parse_size(bad)


def _manifest(model, **versions):
    v = {"tensorrt": "10.3.0", "cuda": "12.4", "compute_capability": "9.0", "gpu": "H100"}
    v.update(versions)
    return {"format": FORMAT, "network_fingerprint": network_fingerprint(model), "versions": v}


def test_engine_manifest_refusals(tiny_model_path):
    model = load_model(tiny_model_path).model
    here = {"tensorrt": "10.3.0", "cuda": "12.6", "compute_capability": "9.0", "gpu": "H100"}
    check_engine_manifest(_manifest(model), model, here)  # same TensorRT, CUDA 12.x, same arch: accepted
    with pytest.raises(ModelMismatchError, match="TensorRT 10.2.0"):
        check_engine_manifest(_manifest(model, tensorrt="10.2.0"), model, here)
    with pytest.raises(ModelMismatchError, match="CUDA 11.8"):
        check_engine_manifest(_manifest(model, cuda="11.8"), model, here)
    with pytest.raises(ModelMismatchError, match="compute capability 8.0"):
        check_engine_manifest(_manifest(model, compute_capability="8.0"), model, here)
    with pytest.raises(ModelMismatchError, match="re-export"):
        check_engine_manifest(_manifest(MeanScaleHyperprior(model.config)), model, here)


@pytest.mark.skipif(REASON is None, reason="TensorRT and a GPU are present")
def test_unavailable_is_reported(tiny_model_path, tmp_path, rng, capsys):
    from vlmcodec import Codec
    from vlmcodec.cli import main
    from vlmcodec.image_io import save_image

    with pytest.raises(BackendUnavailableError, match="^TensorRT not available: "):
        Codec(tiny_model_path, backend="tensorrt")
    assert main(["export", "--format", "tensorrt", "-o", str(tmp_path / "e"), "--model", str(tiny_model_path)]) == 2
    assert "TensorRT not available" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()  # nothing exported before the check
    src = tmp_path / "a.png"
    save_image(smooth_image(rng, 64, 64), src)
    assert main(["encode", str(src), "--model", str(tiny_model_path), "--backend", "tensorrt", "--quiet"]) == 2
    assert "TensorRT not available" in capsys.readouterr().err


# -- TensorRT 10 + GPU --------------------------------------------------------------------------
SMALL = dict(max_batch=2, opt_batch=1, min_size=(64, 64), opt_size=(128, 192), max_size=(256, 256))


@pytest.fixture(scope="module")
def engines_fp32(tiny_model_path, tmp_path_factory):
    from vlmcodec.export.tensorrt import build_engines

    out = tmp_path_factory.mktemp("trt32")
    return out, build_engines(load_model(tiny_model_path), out, BuildConfig(**SMALL))


@pytest.mark.gpu
@needs_trt
def test_fp32_engines_parity_and_cross_decode(tiny_model_path, engines_fp32, rng):
    from vlmcodec import Codec
    from vlmcodec.backends import create_backend
    from vlmcodec.export.parity import compare_backends

    out, manifest = engines_fp32
    assert manifest["precision"] == "fp32" and set(manifest["engines"]) == {"g_a", "h_a", "g_s"}
    assert (out / "timing.cache").stat().st_size > 0 and (out / "onnx" / "manifest.json").is_file()
    loaded = load_model(tiny_model_path)
    ct = Codec(loaded, backend="torch")
    cg = Codec(loaded, backend="torch")
    cg.backend = create_backend("tensorrt", loaded.model, engines=out)
    for h, w in [(64, 64), (100, 130), (256, 256)]:
        rec = compare_backends(ct, cg, smooth_image(rng, h, w))
        assert rec["x_hat_max_abs_diff"] <= 1e-4, rec
        assert rec["y_mismatch"] == 0 and rec["index_mismatch"] == 0 and rec["streams_equal"], rec
        assert rec["a_to_b_ok"] and rec["b_to_a_ok"], rec
    y = torch.randn(2, loaded.model.M, 4, 4)
    with torch.no_grad():
        np.testing.assert_allclose(cg.backend.synthesis(y).numpy(), loaded.model.g_s(y).numpy(), atol=1e-4)
    with pytest.raises(ConfigError, match="profile"):
        cg.backend.analysis(torch.rand(1, 3, 512, 64))  # beyond max_size
    with pytest.raises(ConfigError, match="profile"):
        cg.backend.analysis(torch.rand(3, 3, 64, 64))   # beyond max_batch


@pytest.mark.gpu
@needs_trt
def test_fp16_engines_and_timing_cache_reuse(tiny_model_path, engines_fp32, tmp_path, rng):
    from vlmcodec.backends import create_backend
    from vlmcodec.export.tensorrt import build_engines

    out32, _ = engines_fp32
    loaded = load_model(tiny_model_path)
    manifest = build_engines(loaded, tmp_path, BuildConfig(fp16=True, **SMALL), onnx_dir=out32 / "onnx",
                             timing_cache=out32 / "timing.cache")
    assert manifest["precision"] == "fp16" and manifest["versions"]["tensorrt"].startswith("10")
    be = create_backend("tensorrt", loaded.model, engines=tmp_path)
    x = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        ref = loaded.model.g_a(x)
    got = be.analysis(x)
    assert torch.isfinite(got).all()
    assert float((got - ref).abs().max()) <= 2e-2 * float(ref.abs().max()) + 1e-2


@pytest.mark.gpu
@needs_trt
def test_refuses_tampered_manifest(tiny_model_path, engines_fp32, tmp_path):
    import shutil

    from vlmcodec.backends import create_backend

    out, _ = engines_fp32
    shutil.copytree(out, tmp_path / "e")
    m = json.loads((tmp_path / "e" / "manifest.json").read_text())
    m["versions"]["tensorrt"] = "10.0.0.0-other"
    (tmp_path / "e" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelMismatchError, match="rebuild"):
        create_backend("tensorrt", load_model(tiny_model_path).model, engines=tmp_path / "e")
