"""The command line's file names and paths: names not in UTF-8, links that loop, FIFOs, folders of
one file, outputs that are standard output, inputs that are pipes, globs, output folders."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmcodec.bitstream import container
from vlmcodec.cli import IMAGE_SUFFIXES, expand_inputs, main

from conftest import smooth_image


def _image(path: Path, rng) -> Path:
    Image.fromarray(smooth_image(rng, 32, 48)).save(path, "PNG")
    return path


def _png_bytes(rng) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(smooth_image(rng, 32, 48)).save(buf, "PNG")
    return buf.getvalue()


def _strict_utf8() -> io.TextIOWrapper:
    """A standard stream as an en_US.UTF-8 locale makes it: UTF-8, errors "strict"."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)


@contextlib.contextmanager
def _feeding(fifo: Path, data: bytes):
    """Write ``data`` into ``fifo`` from a thread while the block runs; a writer still waiting for
    a reader at its end is released (the block never read the FIFO)."""
    def write():
        with contextlib.suppress(OSError), open(fifo, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        yield
    finally:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # (an open for writing waits for a reader)
        writer.join(60)
        os.close(fd)


def _run_cli(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlmcodec", *args], cwd=cwd, capture_output=True, timeout=300,
                          **kwargs)


def test_a_name_not_in_utf8_is_printed_escaped_and_every_file_is_processed(tmp_path, rng, tiny_model_path,
                                                                           monkeypatch):
    """Under a strict UTF-8 stdout, a\\xff.png's row stopped the batch ("can't encode character
    '\\udcff'", exit 2): b and c were never coded."""
    nb = tmp_path / "nb"
    nb.mkdir()
    odd = nb / os.fsdecode(b"a\xff.png")
    try:
        _image(odd, rng)
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    for name in ("b.png", "c.png"):
        _image(nb / name, rng)
    (nb / os.fsdecode(b"bad\xfe.png")).write_text("not an image")
    out, err = _strict_utf8(), _strict_utf8()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    model = ["--model", str(tiny_model_path), "--quiet"]
    assert main(["encode", str(nb), "-o", str(tmp_path / "out"), "--no-psnr", *model]) == 2
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == [b"a\xff.vlmc", b"b.vlmc", b"c.vlmc"]
    text, errors = out.buffer.getvalue(), err.buffer.getvalue()
    assert b"a\\udcff.png" in text and b"c.png" in text and b"mean of 3" in text
    assert b"bad\\udcfe.png" in errors and b"1 of 4 files failed" in errors
    assert main(["decode", str(tmp_path / "out"), "-o", str(tmp_path / "dec"), *model]) == 0
    assert sorted(os.listdir(os.fsencode(tmp_path / "dec"))) == [b"a\xff.png", b"b.png", b"c.png"]
    assert b"a\\udcff.vlmc -> " in out.buffer.getvalue()
    assert out.errors == "strict"  # the streams' error handler is given back


def test_a_link_that_loops_fails_alone_and_never_with_a_traceback(tmp_path, rng, tiny_model_path, capsys):
    """A loop of links was a RuntimeError traceback (exit 1) before anything was coded: as an input in a
    folder, as -o, and in save_image."""
    from vlmcodec.image_io import save_image

    d = tmp_path / "d"
    d.mkdir()
    _image(d / "a.png", rng)
    (d / "loop.png").symlink_to("loop.png")
    model = ["--model", str(tiny_model_path), "--quiet"]
    assert main(["encode", str(d), "-o", str(tmp_path / "out"), "--no-psnr", *model]) == 2
    err = capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.vlmc"]
    assert "loop.png" in err and "1 of 2 files failed" in err and "Traceback" not in err
    (tmp_path / "o.vlmc").symlink_to("o.vlmc")
    assert main(["encode", str(d / "a.png"), "-o", str(tmp_path / "o.vlmc"), *model]) == 2
    assert "o.vlmc" in capsys.readouterr().err
    (tmp_path / "lp.png").symlink_to("lp.png")
    assert main(["decode", str(tmp_path / "out" / "a.vlmc"), "-o", str(tmp_path / "lp.png"), *model]) == 2
    assert "lp.png" in capsys.readouterr().err
    with pytest.raises(OSError, match="lp.png"):
        save_image(np.zeros((8, 8, 3), np.uint8), tmp_path / "lp.png")
    assert main(["encode", str(d / "loop.png"), "-o", str(tmp_path / "x.vlmc"), *model]) == 2
    assert "loop.png" in capsys.readouterr().err


def test_a_missing_stream_among_several_is_named_as_encode_names_a_missing_image(tmp_path, rng, tiny_model_path,
                                                                                 capsys):
    """decode and info said "[Errno 2] No such file or directory" of type FileNotFoundError for a
    missing stream (or a dangling link) among several, where encode says "image not found" of
    type ImageError: a script keyed on the type met a bare OSError."""
    import json

    model = ["--model", str(tiny_model_path), "--quiet"]
    _image(tmp_path / "a.png", rng)
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.vlmc"), "--no-psnr", *model]) == 0
    (tmp_path / "gone.vlmc").symlink_to(tmp_path / "nowhere.vlmc")
    for command in (["decode", "-o", str(tmp_path / "out"), *model], ["info"]):
        for name in ("missing.vlmc", "gone.vlmc"):
            capsys.readouterr()
            assert main([command[0], str(tmp_path / name), str(tmp_path / "a.vlmc"), *command[1:], "--json"]) == 2
            first = json.loads(capsys.readouterr().out.splitlines()[0])
            assert first == {"file": str(tmp_path / name), "type": "BitstreamError",
                             "error": f"stream not found: {tmp_path / name}"}, first


def test_a_link_through_to_a_file_is_still_written_through(tmp_path):
    """(the loop check leaves links that lead somewhere alone)"""
    from vlmcodec.files import write_whole

    (tmp_path / "real").mkdir()
    (tmp_path / "link.vlmc").symlink_to(tmp_path / "real" / "s.vlmc")  # dangling: the file is made
    write_whole(tmp_path / "link.vlmc", b"abc")
    assert (tmp_path / "real" / "s.vlmc").read_bytes() == b"abc" and (tmp_path / "link.vlmc").is_symlink()


def test_a_folder_scan_keeps_regular_files_only(tmp_path, rng):
    """A FIFO named f.png in a scanned folder was kept, and the command hung reading it."""
    d = tmp_path / "d"
    d.mkdir()
    _image(d / "a.png", rng)
    os.mkfifo(d / "f.png")
    (d / "sub.png").mkdir()
    (d / "b.png").symlink_to("a.png")  # a link to an image is that image
    (d / "gone.png").symlink_to("nowhere.png")  # a link that leads nowhere fails alone, named
    assert expand_inputs([str(d)], IMAGE_SUFFIXES) == [d / "a.png", d / "b.png", d / "gone.png"]


def test_a_folder_or_glob_of_one_file_writes_into_the_output_folder(tmp_path, rng, tiny_model_path, capsys):
    """`encode d -o enc` with one image in d wrote a stream named enc, not enc/a.vlmc."""
    d = tmp_path / "d"
    d.mkdir()
    _image(d / "a.png", rng)
    model = ["--model", str(tiny_model_path), "--quiet"]
    assert main(["encode", str(d), "-o", str(tmp_path / "enc"), "--no-psnr", *model]) == 0
    assert (tmp_path / "enc" / "a.vlmc").is_file()
    assert main(["encode", str(d / "*.png"), "-o", str(tmp_path / "glob"), "--no-psnr", *model]) == 0
    assert (tmp_path / "glob" / "a.vlmc").is_file()
    assert main(["decode", str(tmp_path / "enc"), "-o", str(tmp_path / "dec"), *model]) == 0
    assert (tmp_path / "dec" / "a.png").is_file()
    assert main(["encode", str(d / "a.png"), "-o", str(tmp_path / "one"), "--no-psnr", *model]) == 0
    assert (tmp_path / "one").is_file()  # a file named alone: -o is the file
    capsys.readouterr()


def test_an_output_that_is_standard_output_gets_the_stream_alone(tmp_path, rng, tiny_model_path, monkeypatch, capsys):
    """-o naming the file standard output is (/dev/stdout in a pipe) mixed the table into the stream."""
    a = _image(tmp_path / "a.png", rng)
    target = tmp_path / "s.vlmc"
    with open(target, "wb+") as raw:
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, write_through=True))
        assert main(["encode", str(a), "-o", str(target), "--model", str(tiny_model_path), "--quiet"]) == 0
        sys.stdout.flush()
    container.unpack(target.read_bytes())  # the stream alone
    assert "bpp" in capsys.readouterr().err  # the table went to stderr
    image = tmp_path / "s.ppm"
    with open(image, "wb+") as raw:
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, write_through=True))
        assert main(["decode", str(target), "-o", str(image), "--model", str(tiny_model_path), "--quiet"]) == 0
        sys.stdout.flush()
    assert image.read_bytes().startswith(b"P6") and "s.vlmc -> -" in capsys.readouterr().err  # its suffix's format


def test_dev_stdout_and_dev_stdin_in_a_pipe(tmp_path, rng, tiny_model_path):
    """`encode a.png -o /dev/stdout | vlmcodec info -` failed on the table's text in the stream;
    `cat a.png | encode /dev/stdin` said "input not found"."""
    if not Path("/dev/stdout").exists():
        pytest.skip("no /dev/stdout here")
    model = ["--model", str(tiny_model_path), "--quiet"]
    a = _image(tmp_path / "a.png", rng)
    res = _run_cli(["encode", str(a), "-o", "/dev/stdout", *model], tmp_path)
    assert res.returncode == 0, res.stderr
    container.unpack(res.stdout)
    assert b"bpp" in res.stderr
    res = _run_cli(["encode", "/dev/stdin", "-o", "s.vlmc", *model], tmp_path, input=a.read_bytes())
    assert res.returncode == 0, res.stderr
    container.unpack((tmp_path / "s.vlmc").read_bytes())


def test_a_fifo_named_as_input_is_read_once(tmp_path, rng, tiny_model_path, capsys):
    """An explicit FIFO (or <(cat a.png)) was "input not found"."""
    fifo = tmp_path / "p.png"
    os.mkfifo(fifo)
    model = ["--model", str(tiny_model_path), "--quiet"]
    with _feeding(fifo, _png_bytes(rng)):
        assert main(["encode", str(fifo), "-o", str(tmp_path / "p.vlmc"), *model]) == 0
    stream = (tmp_path / "p.vlmc").read_bytes()
    container.unpack(stream)
    sf = tmp_path / "s.vlmc"
    os.mkfifo(sf)
    with _feeding(sf, stream):
        assert main(["decode", str(sf), "-o", str(tmp_path / "s.png"), *model]) == 0
    assert Image.open(tmp_path / "s.png").size == (48, 32)
    capsys.readouterr()
    with _feeding(sf, stream):
        assert main(["info", str(sf)]) == 0
    assert "48x32" in capsys.readouterr().out


def test_a_device_named_as_input_is_refused_clearly(tmp_path, tiny_model_path, capsys):
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null here")
    assert main(["encode", "/dev/null", "-o", str(tmp_path / "x.vlmc"), "--model", str(tiny_model_path)]) == 2
    err = capsys.readouterr().err
    assert "/dev/null is not a regular file" in err and "use - for standard input" in err


def test_help_names_inputs_outputs_and_defaults(capsys):
    """roundtrip's IN and -o DIR (default out), info's FILE and '-', encode's -o without -o / into a folder."""
    def help_of(command: str) -> str:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())

    roundtrip = help_of("roundtrip")
    assert "image files, folders, globs" in roundtrip and "default out" in roundtrip
    info = help_of("info")
    assert "or - (standard input" in info and ".vlmc" in info
    encode = help_of("encode")
    assert "beside" in encode and "ending in /" in encode and "folder or glob input" in encode
    assert "beside" in help_of("decode")


def test_globs_keep_what_a_folder_scan_keeps(tmp_path, rng, tiny_model_path, capsys):
    """`encode 'd/*'` passed a subfolder and notes.txt on: "cannot read image d/sub: Is a directory"."""
    d = tmp_path / "d"
    d.mkdir()
    _image(d / "a.png", rng)
    (d / "sub").mkdir()
    (d / "sub.png").mkdir()
    (d / "notes.txt").write_text("notes")
    os.mkfifo(d / "f.png")
    assert expand_inputs([str(d / "*")], IMAGE_SUFFIXES) == [d / "a.png"]
    assert main(["encode", str(d / "*"), "-o", str(tmp_path / "o2"), "--model", str(tiny_model_path), "--quiet"]) == 0
    assert [p.name for p in (tmp_path / "o2").iterdir()] == ["a.vlmc"]
    assert main(["encode", str(d / "*.txt"), "-o", str(tmp_path / "o3"), "--model", str(tiny_model_path)]) == 2
    assert "no input files" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_made_is_one_clear_error(tmp_path, rng, tiny_model_path, capsys):
    """-o afile/x.vlmc said "[Errno 17] File exists: 'afile'"; with several inputs, once per input."""
    a = _image(tmp_path / "a.png", rng)
    b = _image(tmp_path / "b.png", rng)
    (tmp_path / "afile").write_text("a file")
    model = ["--model", str(tiny_model_path), "--quiet"]
    assert main(["encode", str(a), "-o", str(tmp_path / "afile" / "x.vlmc"), *model]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'afile'} is not a folder" in err and "Errno" not in err
    assert main(["encode", str(a), str(b), "-o", str(tmp_path / "afile" / "sub"), *model]) == 2
    err = capsys.readouterr().err
    assert err.count("is not a folder") == 1 and "files failed" not in err


def test_output_folders_made_for_a_run_whose_inputs_all_failed_are_removed(tmp_path, rng, tiny_model_path, capsys):
    """encode / roundtrip / decode make -o's folders before coding; when every input failed they
    stayed behind empty. Now the folders the run made go if empty; one that was there stays, and
    one holding an output stays."""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    bad_stream = tmp_path / "bad.vlmc"
    bad_stream.write_bytes(b"VLMC" + b"\0" * 30)
    model = ["--model", str(tiny_model_path), "--quiet"]
    for argv in (["encode", str(bad), "-o", str(tmp_path / "e" / "sub") + "/"],
                 ["roundtrip", str(bad), "-o", str(tmp_path / "r" / "sub")],
                 ["decode", str(bad_stream), "-o", str(tmp_path / "d" / "sub") + "/"]):
        assert main([*argv, *model]) == 2
        assert not (tmp_path / argv[0][0]).exists(), argv
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["encode", str(bad), "-o", str(kept) + "/", *model]) == 2 and kept.is_dir()
    good = _image(tmp_path / "good.png", rng)
    assert main(["encode", str(good), str(bad), "-o", str(tmp_path / "g" / "sub"), *model]) == 2
    assert (tmp_path / "g" / "sub" / "good.vlmc").is_file()
    capsys.readouterr()


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX signals only")
def test_sigterm_ends_a_command_as_ctrl_c_does_and_its_temporary_folder_goes(tmp_path):
    """SIGTERM's default action killed an ONNX export on the spot and left its temporary folder
    (8.5 MB of graphs in the cache, 1 MB in export's -o folder) that no later run removed: it now
    ends the command as Ctrl-C does, clean-ups run, exit 143."""
    out = tmp_path / "exp"
    proc = subprocess.Popen([sys.executable, "-m", "vlmcodec", "export", "--format", "onnx", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob(".onnx-export.*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(out.glob(".onnx-export.*")), "the export never made its temporary folder"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "vlmcodec: terminated" in err, (proc.returncode, err[-2000:])
    assert not list(out.glob(".onnx-export.*"))


def test_a_failed_file_is_reported_in_its_place_among_the_others(tmp_path, capsys):
    """roundtrip and decode write the last image in the background: a failing file's error came
    before the row of the file before it (im0, im2, im1, im3); results now come in input order."""
    rng = np.random.default_rng(1)
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        Image.fromarray(smooth_image(rng, 32, 48)).save(src / f"im{i}.png")
    (src / "im2.png").write_bytes((src / "im2.png").read_bytes()[:60])  # damaged
    assert main(["roundtrip", str(src), "-o", str(tmp_path / "rt"), "--json", "-q", "20", "--quiet"]) == 2
    order = [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()]
    assert [Path(f).name for f in order] == ["im0.png", "im1.png", "im2.png", "im3.png"]
    streams = tmp_path / "streams"
    assert main(["encode", str(src / "im0.png"), str(src / "im1.png"), "-o", str(streams), "--quiet"]) == 0
    (streams / "im1b.vlmc").write_bytes(b"VLMC junk")
    capsys.readouterr()
    assert main(["decode", str(streams), "-o", str(tmp_path / "dec"), "--json", "--quiet"]) == 2
    order = [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()]
    assert [Path(f).name for f in order] == ["im0.vlmc", "im1.vlmc", "im1b.vlmc"]


def test_roundtrip_says_the_stream_was_written_when_its_image_was_not(tmp_path, capsys, monkeypatch):
    """A decoded image roundtrip cannot write fails the file, but its stream is there: the error says so."""
    import vlmcodec.image_io

    def full(*_, **__):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vlmcodec.image_io, "save_image", full)
    img = tmp_path / "a.png"
    Image.fromarray(smooth_image(np.random.default_rng(2), 32, 32)).save(img)
    assert main(["roundtrip", str(img), "-o", str(tmp_path / "rt"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and f"its stream {tmp_path / 'rt' / 'a.vlmc'} was written" in err
    assert (tmp_path / "rt" / "a.vlmc").exists()


def test_decode_reads_a_long_stream_from_a_stand_in_standard_input(tmp_path, tiny_model_path, monkeypatch, capsys):
    """Standard input without a file descriptor (an embedding program's io.BytesIO): a stream longer
    than a header's most bytes is read as from a pipe (decode read it whole before; the header-first
    read asked it for its fileno)."""
    from vlmcodec import Codec

    codec = Codec(tiny_model_path)
    data = codec.encode(np.random.default_rng(0).integers(0, 256, (512, 640, 3), dtype=np.uint8), 100)
    assert len(data) > container.MAX_HEADER_BYTES
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(data)))
    out = tmp_path / "o.png"
    assert main(["decode", "-", "-o", str(out), "--model", str(tiny_model_path), "--quiet"]) == 0, capsys.readouterr()
    assert np.array_equal(np.asarray(Image.open(out)), codec.decode(data))


def test_the_consumer_scale_note_says_a_smaller_image_is_coded_at_its_own_size(tmp_path, rng, tiny_model_path,
                                                                               capsys):
    """The note said every image was coded at the consumer's side, also one already smaller (which
    is coded at its own size, rightly)."""
    _image(tmp_path / "a.png", rng)
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(tmp_path / "a.vlmc"), "--short-side", "256",
                 "--no-psnr", "--model", str(tiny_model_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "shorter side 256 px (an image no larger is coded at its own size" in out, out
