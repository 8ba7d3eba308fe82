"""Files the exporters write whole (temp file + rename) get the umask's permissions, as a plain
open would give them, not mkstemp's 0600: another user can read an export's manifest and engines."""

import os
import stat

import pytest

from vlmcodec.export.manifest import MANIFEST_NAME, read_manifest, write_manifest
from vlmcodec.export.tensorrt import _write_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_manifest_follows_the_umask(tmp_path, umask_022):
    path = write_manifest(tmp_path, {"format": "vlmcodec-test", "x": 1})
    assert path == tmp_path / MANIFEST_NAME and _mode(path) == 0o644
    assert read_manifest(tmp_path, "vlmcodec-test")["x"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [MANIFEST_NAME]  # no temp file left
    os.umask(0o077)  # a rewrite keeps the file's own mode, as a plain open would
    write_manifest(tmp_path, {"format": "vlmcodec-test", "x": 2})
    assert _mode(path) == 0o644 and read_manifest(tmp_path, "vlmcodec-test")["x"] == 2


def test_tensorrt_files_follow_the_umask(tmp_path, umask_022):
    path = tmp_path / "g_a.fp16.engine"
    _write_atomic(path, b"engine bytes")
    assert path.read_bytes() == b"engine bytes" and _mode(path) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_onnx_export_manifest_follows_the_umask(tiny_model_path, tmp_path, umask_022):
    pytest.importorskip("onnx")
    from vlmcodec.export.onnx import export_onnx
    from vlmcodec.models.checkpoint import load_model

    export_onnx(load_model(tiny_model_path), tmp_path, networks=("h_s",))
    assert _mode(tmp_path / MANIFEST_NAME) == 0o644
    assert all(_mode(p) == 0o644 for p in tmp_path.iterdir() if p.is_file()), \
        {p.name: oct(_mode(p)) for p in tmp_path.iterdir()}
