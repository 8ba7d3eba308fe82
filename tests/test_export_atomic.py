"""Exports that fail or stop midway: what they leave in their -o folder (ONNX, TensorRT with a
stand-in tensorrt module and GPU, the command line's checks before any work)."""

import contextlib
import types
from pathlib import Path

import pytest
import torch

import vlmcodec.export.tensorrt as export_trt
from vlmcodec.cli import main
from vlmcodec.errors import ConfigError
from vlmcodec.export.manifest import MANIFEST_NAME, read_manifest
from vlmcodec.export.onnx import export_onnx, load_onnx_manifest
from vlmcodec.models.checkpoint import load_model

pytest.importorskip("onnx", reason="the onnx package (extra [onnx]) exports the graphs")

SMALL = dict(max_batch=2, opt_batch=1, min_size=(64, 64), opt_size=(128, 192), max_size=(256, 256))


@pytest.fixture
def fake_build(monkeypatch):
    """TensorRT stood in for: each engine is the bytes "ENGINE-<graph>"; ``fails_at`` names a
    network whose build raises; ``built`` lists the networks built."""
    state = types.SimpleNamespace(fails_at=None, built=[])

    def build_engine(trt, logger, onnx_path, graph, profile, config, cache):
        name = Path(onnx_path).stem
        if name == state.fails_at:
            raise RuntimeError(f"build of {name} failed")
        state.built.append(name)
        return b"ENGINE-" + name.encode() + bytes(state.built.__len__()), cache + b"c"

    monkeypatch.setattr(export_trt, "import_tensorrt", lambda: types.SimpleNamespace(__version__="10.9"))
    monkeypatch.setattr(export_trt, "require_gpu", lambda device="cuda": "cuda:0")
    monkeypatch.setattr(export_trt._Logger, "make", staticmethod(lambda trt: None))
    monkeypatch.setattr(export_trt, "build_engine", build_engine)
    monkeypatch.setattr(export_trt, "current_versions",
                        lambda trt, dev: {"tensorrt": "10.9", "cuda": "12.4", "gpu": "fake", "compute_capability": "9.0"})
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    return state


def test_a_tensorrt_build_failing_midway_leaves_the_earlier_export_as_it_was(tiny_model_path, tmp_path, fake_build):
    """Each engine was written into -o as it was built: a failure at the second network left a
    new first engine beside the old manifest (or beside none). Engines are now staged and swapped
    in only when all are built."""
    loaded = load_model(tiny_model_path)
    out = tmp_path / "trt"
    onnx_dir = tmp_path / "onnx"
    export_onnx(loaded, onnx_dir)
    config = export_trt.BuildConfig(**SMALL)
    first = export_trt.build_engines(loaded, out, config, onnx_dir=onnx_dir)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert MANIFEST_NAME in before and len(first["engines"]) >= 3
    fake_build.fails_at = list(first["engines"])[1]
    with pytest.raises(RuntimeError, match="failed"):
        export_trt.build_engines(loaded, out, config, onnx_dir=onnx_dir)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not list(out.glob(".trt-export.*"))
    assert read_manifest(out, export_trt.FORMAT)["engines"] == first["engines"]


def test_a_timing_cache_that_cannot_be_written_is_refused_before_any_build(tiny_model_path, tmp_path, fake_build,
                                                                           capsys):
    """--timing-cache naming a folder (or a path in a missing folder) failed only after every
    engine was built ("[Errno 21] Is a directory"), leaving engines without a manifest."""
    folder = tmp_path / "cachedir"
    folder.mkdir()
    for cache, says in ((folder, "is not a file"), (tmp_path / "nowhere" / "t.cache", "does not exist")):
        out = tmp_path / f"e{len(fake_build.built)}-{cache.name}"
        assert main(["export", "--format", "tensorrt", "-o", str(out), "--timing-cache", str(cache),
                     "--model", str(tiny_model_path), "--max-size", "256x256"]) == 2
        assert says in capsys.readouterr().err
        assert fake_build.built == [] and not out.exists()


def test_export_checks_batches_and_opset_before_any_work(tiny_model_path, tmp_path, fake_build, capsys):
    """--opt-batch above --max-batch was lowered to it without a word; --max-batch 0 was reported
    as "1 <= min <= opt <= max, got 1, 0, 0"; a bad --opset failed after the model loaded and
    left an empty -o folder."""
    model = ["--model", str(tiny_model_path)]
    out = tmp_path / "x"
    assert main(["export", "--format", "tensorrt", "-o", str(out), "--opt-batch", "16", *model]) == 2
    assert "--opt-batch 16 is above the largest batch, 8" in capsys.readouterr().err
    assert main(["export", "--format", "tensorrt", "-o", str(out), "--max-batch", "4", "--opt-batch", "5",
                 *model]) == 2
    assert "--opt-batch 5 is above the largest batch, 4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--format", "tensorrt", "-o", str(out), "--max-batch", "0", *model])
    assert "--max-batch" in capsys.readouterr().err
    for opset in ("16", "99"):
        assert main(["export", "--format", "onnx", "-o", str(out / "sub"), "--opset", opset, *model]) == 2
        assert f"opset {opset}" in capsys.readouterr().err
    assert fake_build.built == [] and not out.exists()


def interrupt_at_replace(monkeypatch, n: int, suffix: str = "") -> None:
    """An export stopped midway through its swap: ``Path.replace`` raises KeyboardInterrupt at its
    n-th call on a file whose name ends in ``suffix``."""
    real_replace, calls = Path.replace, []

    def replace(self, target):
        if self.name.endswith(suffix):
            calls.append(self)
            if len(calls) == n:
                raise KeyboardInterrupt
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace)


def test_an_onnx_export_interrupted_while_swapping_leaves_no_stale_manifest(tiny_model_path, tmp_path, monkeypatch):
    """Re-exporting into an export folder swapped the graphs in one at a time under the old
    manifest: stopped midway, the folder held old and new graphs and a manifest whose checksums
    no longer matched. The old manifest now goes first: the folder is refused as having none."""
    loaded = load_model(tiny_model_path)
    out = tmp_path / "onnx"
    export_onnx(loaded, out)
    interrupt_at_replace(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(loaded, out, fold_gdn=False)
    monkeypatch.undo()
    assert not (out / MANIFEST_NAME).exists() and not list(out.glob(".onnx-export.*"))
    with pytest.raises(ConfigError, match="manifest"):
        load_onnx_manifest(out)
