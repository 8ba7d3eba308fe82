"""The C command-line tools write their outputs whole or not at all, as ``vlmcodec.files.write_whole``
does: under a temporary name beside the target, renamed over it. A write that fails (here a file
size limit, RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) leaves an existing output as it was
and no temporary file, and says which path and why; a new file gets the umask's permissions, a
replaced one keeps its own; a FIFO is written in place, a symbolic link through."""

import os
import resource
import signal
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from PIL import Image

from vlmcodec import Codec
from vlmcodec.export.c_decoder import export_c_decoder
from vlmcodec.models.checkpoint import load_model

from conftest import smooth_image

OLD = b"a good old output, kept when a rewrite fails\n"


@pytest.fixture(scope="module")
def inputs(c_decoder_build, tiny_model_path, tmp_path_factory):
    """The tools' folder, the tiny model's decoder-model file, and inputs in a folder of their own:
    an image (PPM), its stream, and the encoder's y and z (raw float32) with the stream's sizes."""
    import numpy as np

    folder = tmp_path_factory.mktemp("tool_inputs")
    model_file = export_c_decoder(load_model(tiny_model_path), folder)
    codec = Codec(tiny_model_path)
    image = smooth_image(np.random.default_rng(0), 50, 80)
    Image.fromarray(image).save(folder / "in.ppm")
    (folder / "s.vlmc").write_bytes(codec.encode(image, 30))
    prep = codec.prepare(image, 30, 0)
    y, z = codec.analyse([prep.pixels], [prep.quality])
    (folder / "y.f32").write_bytes(y[0].numpy().astype("<f4").tobytes())
    (folder / "z.f32").write_bytes(z[0].numpy().astype("<f4").tobytes())
    (h, w), (ch, cw) = prep.size, prep.pixels.shape[:2]
    return c_decoder_build, model_file, folder, ["--size", f"{w}x{h}", "--coded-size", f"{cw}x{ch}", "--quality", "30"]


def _commands(inputs, out: Path) -> dict[str, list[str]]:
    """Each tool's way of writing ``out``, by name."""
    tools, model, folder, sizes = inputs
    m = str(model)
    return {"encode": [str(tools / "vlmc_encode"), m, str(folder / "in.ppm"), str(out), "--quality", "30"],
            "latents": [str(tools / "vlmc_decode_latents"), m, str(folder / "s.vlmc"), str(out)],
            "image": [str(tools / "vlmc_decode_latents"), m, str(folder / "s.vlmc"), "--image", str(out)],
            "stream": [str(tools / "vlmc_write_stream"), m, str(folder / "y.f32"), str(folder / "z.f32"), str(out),
                       *sizes],
            "gain": [str(tools / "vlmc_write_stream"), m, "--gain", "30", str(out)]}


def _run(cmd: list[str], max_file_bytes: int | None = None) -> subprocess.CompletedProcess:
    """``cmd`` under umask 022 and, with ``max_file_bytes``, that file size limit (SIGXFSZ
    ignored, so that a write past it fails with EFBIG rather than killing the tool)."""
    def limit() -> None:
        os.umask(0o022)
        if max_file_bytes is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=limit)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("kind", ["encode", "latents", "image", "stream", "gain"])
def test_a_failed_rewrite_keeps_the_old_output(inputs, tmp_path, kind):
    out = tmp_path / f"out.{kind}"
    run = _run(_commands(inputs, out)[kind])  # a new file: the umask's permissions, no temporary file left
    assert run.returncode == 0, run.stderr
    new = out.read_bytes()
    assert len(new) > 64 and _mode(out) == 0o644 and [p.name for p in tmp_path.iterdir()] == [out.name]
    out.write_bytes(OLD)
    out.chmod(0o640)
    run = _run(_commands(inputs, out)[kind], max_file_bytes=16)  # the new output cannot be written whole
    assert run.returncode == 2, run.stderr
    assert out.read_bytes() == OLD and [p.name for p in tmp_path.iterdir()] == [out.name]
    tool = Path(_commands(inputs, out)[kind][0]).name
    assert run.stderr == f"{tool}: error: cannot write {out}: File too large\n"
    run = _run(_commands(inputs, out)[kind])  # a replaced file keeps its own permissions
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == new and _mode(out) == 0o640 and [p.name for p in tmp_path.iterdir()] == [out.name]


def test_an_unwritable_folder_is_named(inputs, tmp_path):
    out = tmp_path / "missing" / "out.vlmc"
    run = _run(_commands(inputs, out)["encode"])
    assert run.returncode == 2 and run.stderr == f"vlmc_encode: error: cannot write {out}: No such file or directory\n"


def test_a_fifo_is_written_in_place_and_a_link_through(inputs, tmp_path):
    (tmp_path / "plain").mkdir()
    assert _run(_commands(inputs, tmp_path / "plain" / "x.ppm")["image"]).returncode == 0
    want = (tmp_path / "plain" / "x.ppm").read_bytes()
    fifo = tmp_path / "pipe.ppm"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    run = _run(_commands(inputs, fifo)["image"])
    reader.join(60)
    assert run.returncode == 0 and got == [want] and stat.S_ISFIFO(os.lstat(fifo).st_mode), run.stderr
    target, link = tmp_path / "target.ppm", tmp_path / "link.ppm"
    target.write_bytes(OLD)
    link.symlink_to(target.name)
    run = _run(_commands(inputs, link)["image"])
    assert run.returncode == 0 and link.is_symlink() and target.read_bytes() == want, run.stderr
    (tmp_path / "dangling.ppm").symlink_to("made.ppm")  # a link to no file yet: the file made through it
    run = _run(_commands(inputs, tmp_path / "dangling.ppm")["image"])
    assert run.returncode == 0 and (tmp_path / "made.ppm").read_bytes() == want, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.ppm", "link.ppm", "made.ppm", "pipe.ppm", "plain",
                                                          "target.ppm"]


@pytest.mark.parametrize("kind", ["encode", "image", "stream"])
def test_a_tool_killed_mid_write_leaves_no_temporary_file(inputs, tmp_path, kind):
    """A signal that ends a tool while it writes (here the file size limit's SIGXFSZ at its default
    action, as Ctrl-C or a kill would) left the hidden temporary file beside the target: the tools
    remove it before the signal's own action ends them (still killed by that signal)."""
    out = tmp_path / f"out.{kind}"
    out.write_bytes(OLD)

    def limit() -> None:
        os.umask(0o022)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16, 16))

    run = subprocess.run(_commands(inputs, out)[kind], capture_output=True, timeout=120, preexec_fn=limit)
    assert run.returncode == -signal.SIGXFSZ, run.stderr
    assert out.read_bytes() == OLD and [p.name for p in tmp_path.iterdir()] == [out.name]
