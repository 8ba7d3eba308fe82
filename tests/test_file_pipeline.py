"""Overlapped file I/O of the multi-file commands (vlmcodec.file_pipeline) and whole-or-nothing
image writes (image_io.save_image)."""

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmcodec.cli import main
from vlmcodec.errors import ImageError
from vlmcodec.file_pipeline import WriteBehind, read_ahead
from vlmcodec.image_io import save_image

from conftest import smooth_image

WAIT = 10.0  # seconds: a generous bound on a thread's progress, never reached when it works


def test_read_ahead_loads_the_next_item_while_the_current_one_is_worked_on():
    started = {i: threading.Event() for i in range(3)}

    def load(i):
        started[i].set()
        if i == 1:
            raise ValueError("item 1 is bad")
        return i * 10

    seen = []
    for item, loaded in read_ahead([0, 1, 2], load):
        if item + 1 in started:  # the next load starts before this item's work ends
            assert started[item + 1].wait(WAIT)
        try:
            seen.append(loaded.result())
        except ValueError as e:
            seen.append(str(e))
    assert seen == [0, "item 1 is bad", 20]
    assert list(read_ahead([], load)) == []


def test_read_ahead_abandoned_reads_no_further():
    calls = []
    gen = read_ahead(list(range(10)), calls.append)
    next(gen)
    gen.close()  # waits for the one load ahead; the rest never start
    assert calls in ([0], [0, 1])


def test_write_behind_reports_in_order_and_bounds_the_pending_writes():
    release = threading.Event()
    running = []
    order = []

    def write(i):
        def run():
            running.append(i)
            if i == 0:
                assert release.wait(WAIT)
            if i == 2:
                raise OSError("disk full")
        return run

    with WriteBehind(max_pending=1) as writes:
        writes.submit(write(0), lambda err: order.append((0, err)))
        # a second submit would finish write 0 first (max_pending=1), which waits on release:
        # so release it from another thread shortly after
        timer = threading.Timer(0.05, release.set)
        timer.start()
        writes.submit(write(1), lambda err: order.append((1, err)))
        assert [i for i, _ in order] == [0]  # the oldest finished, on this thread, before submit returned
        writes.submit(write(2), lambda err: order.append((2, err)))
    assert [i for i, _ in order] == [0, 1, 2]
    assert order[0][1] is None and order[1][1] is None and isinstance(order[2][1], OSError)
    with pytest.raises(ValueError):
        WriteBehind(max_pending=-1)


def test_write_behind_after_an_error_cancels_what_has_not_started():
    gate = threading.Event()
    done = []
    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(max_pending=5) as writes:
            writes.submit(lambda: gate.wait(WAIT), lambda err: done.append(0))
            for i in range(1, 4):
                writes.submit(lambda i=i: done.append(("ran", i)), lambda err, i=i: done.append(i))
            gate.set()
            raise KeyboardInterrupt
    # no callback ran (the caller is leaving on an error); queued writes may not all have run
    assert all(isinstance(d, tuple) for d in done)


def test_save_image_writes_whole_files_or_none(tmp_path, rng, monkeypatch):
    img = smooth_image(rng, 40, 64)
    for suffix in (".png", ".ppm", ".bmp", ".tif", ".webp"):
        save_image(img, tmp_path / f"a{suffix}")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), img)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.ppm")), img)
    with pytest.raises(ImageError, match="unknown image file extension '.xyz'"):
        save_image(img, tmp_path / "a.xyz")
    with pytest.raises(ValueError, match="png_level"):
        save_image(img, tmp_path / "b.png", png_level=10)
    # a write that fails half-way leaves neither the file nor its temporary behind, and an
    # existing file as it was
    before = (tmp_path / "a.png").read_bytes()

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half an image")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        save_image(img, tmp_path / "a.png")
    with pytest.raises(OSError, match="No space"):
        save_image(img, tmp_path / "new.png")
    monkeypatch.undo()
    import os

    def failing_replace(src, dst):  # the temporary file was written; putting it in place fails
        raise OSError("No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    for name in ("a.png", "new.png"):
        with pytest.raises(OSError, match="No space"):
            save_image(img, tmp_path / name)
    monkeypatch.undo()
    assert (tmp_path / "a.png").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"a{s}" for s in (".png", ".ppm", ".bmp", ".tif", ".webp"))


def test_save_image_writes_through_links_and_into_fifos(tmp_path, rng):
    import os
    import threading

    img = smooth_image(rng, 16, 24)
    target = tmp_path / "target.png"
    save_image(img, target)
    link = tmp_path / "link.png"
    link.symlink_to(target)
    save_image(img[::-1].copy(), link)
    assert link.is_symlink() and np.array_equal(np.asarray(Image.open(target)), img[::-1])
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    got = {}
    reader = threading.Thread(target=lambda: got.setdefault("data", fifo.read_bytes()))
    reader.start()
    save_image(img, fifo)
    reader.join(10)
    assert fifo.exists() and not fifo.is_file()  # still the FIFO, not replaced by a file
    assert np.array_equal(np.asarray(Image.open(__import__("io").BytesIO(got["data"]))), img)


def test_png_level_trades_size_for_speed_losslessly(tmp_path, rng):
    img = np.ascontiguousarray(np.repeat(smooth_image(rng, 96, 128), 2, axis=1))
    save_image(img, tmp_path / "fast.png", png_level=0)
    save_image(img, tmp_path / "small.png", png_level=9)
    assert (tmp_path / "fast.png").stat().st_size > (tmp_path / "small.png").stat().st_size
    for name in ("fast.png", "small.png"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / name)), img)


def test_cli_png_level_option_and_in_order_rows(tmp_path, rng, tiny_model_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    names = [f"im{i}" for i in range(4)]
    for i, name in enumerate(names):
        Image.fromarray(smooth_image(rng, 40 + i, 64)).save(src / f"{name}.png")
    out = tmp_path / "out"
    assert main(["roundtrip", str(src), "-o", str(out), "--model", str(tiny_model_path), "--png-level", "0"]) == 0
    rows = [line.split()[0] for line in capsys.readouterr().out.splitlines() if line.startswith("im") and not line.startswith("image")]
    assert rows == [f"{n}.png" for n in names]  # written behind, reported in input order
    level0 = sum((out / f"{n}.png").stat().st_size for n in names)
    assert main(["decode", str(out), "-o", str(tmp_path / "dec"), "--model", str(tiny_model_path),
                 "--png-level", "9"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "->" in line]
    assert [line.split()[0] for line in lines] == [f"{n}.vlmc" for n in names]
    assert sum((tmp_path / "dec" / f"{n}.png").stat().st_size for n in names) < level0
    for n in names:  # the same pixels whatever the level
        assert np.array_equal(np.asarray(Image.open(out / f"{n}.png")), np.asarray(Image.open(tmp_path / "dec" / f"{n}.png")))
    for bad in ("10", "-1", "x"):
        with pytest.raises(SystemExit) as e:
            main(["decode", str(out), "--png-level", bad])
        assert e.value.code == 2
    assert "expected a zlib level 0..9" in capsys.readouterr().err


def test_cli_decode_a_write_failure_is_that_files_error(tmp_path, rng, tiny_model_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c"):
        Image.fromarray(smooth_image(rng, 40, 64)).save(src / f"{name}.png")
    streams = tmp_path / "streams"
    assert main(["encode", str(src), "-o", str(streams), "--model", str(tiny_model_path), "--no-psnr"]) == 0
    dec = tmp_path / "dec"
    (dec / "b.png").mkdir(parents=True)  # b's output path is taken by a folder: its write fails
    capsys.readouterr()
    assert main(["decode", str(streams), "-o", str(dec), "--model", str(tiny_model_path)]) == 2
    res = capsys.readouterr()
    assert "b.vlmc" in res.err and "1 of 3 files failed" in res.err
    assert (dec / "a.png").is_file() and (dec / "c.png").is_file()
    assert not [p for p in dec.iterdir() if p.name.endswith(".tmp")]


class _Stdin:
    def __init__(self, data: bytes):
        import io

        self.buffer = io.BytesIO(data)


def test_cli_standard_input_and_output(tmp_path, rng, tiny_model_path, monkeypatch, capsysbinary):
    """`vlmcodec encode - -o -` and `decode - -o -` work in a pipe: the stream or the PNG on
    stdout, the table on stderr; the same bytes as with files."""
    import io
    import sys

    img = smooth_image(rng, 40, 64)
    src = tmp_path / "a.png"
    Image.fromarray(img).save(src)
    model = ["--model", str(tiny_model_path)]
    assert main(["encode", str(src), "-o", str(tmp_path / "a.vlmc"), "-q", "40", *model]) == 0
    capsysbinary.readouterr()
    monkeypatch.setattr(sys, "stdin", _Stdin(src.read_bytes()))
    assert main(["encode", "-", "-o", "-", "-q", "40", *model]) == 0
    res = capsysbinary.readouterr()
    assert res.out == (tmp_path / "a.vlmc").read_bytes()  # only the stream on stdout
    assert b"<standard input>" in res.err and b"bpp" in res.err
    monkeypatch.setattr(sys, "stdin", _Stdin(res.out))
    assert main(["decode", "-", "-o", "-", *model, "--png-level", "9"]) == 0
    res = capsysbinary.readouterr()
    assert main(["decode", str(tmp_path / "a.vlmc"), "-o", str(tmp_path / "a_dec.png"), *model]) == 0
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(res.out))), np.asarray(Image.open(tmp_path / "a_dec.png")))
    capsysbinary.readouterr()
    monkeypatch.setattr(sys, "stdin", _Stdin((tmp_path / "a.vlmc").read_bytes()))
    assert main(["info", "-"]) == 0 and b"64x40" in capsysbinary.readouterr().out
    # stdin to a file, a file to stdout
    monkeypatch.setattr(sys, "stdin", _Stdin((tmp_path / "a.vlmc").read_bytes()))
    assert main(["decode", "-", "-o", str(tmp_path / "b.png"), *model]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), np.asarray(Image.open(tmp_path / "a_dec.png")))
    capsysbinary.readouterr()
    # a corrupt stream on stdin: exit 2, named as standard input
    monkeypatch.setattr(sys, "stdin", _Stdin(b"VLMC garbage"))
    assert main(["decode", "-", "-o", "-", *model]) == 2
    assert b"<standard input>" in capsysbinary.readouterr().err


def test_cli_standard_input_and_output_misuse_is_refused(tmp_path, rng, tiny_model_path, monkeypatch, capsys):
    import sys

    src = tmp_path / "a.png"
    Image.fromarray(smooth_image(rng, 40, 64)).save(src)
    model = ["--model", str(tiny_model_path)]
    monkeypatch.setattr(sys, "stdin", _Stdin(src.read_bytes()))
    cases = {
        ("encode", "-", str(src)): "must be the only input",
        ("encode", "-"): "needs -o FILE",
        ("encode", str(src), str(src), "-o", "-"): "takes one input",
        ("roundtrip", "-"): "roundtrip writes .vlmc and image files",
    }
    for argv, message in cases.items():
        assert main([*argv, *model]) == 2, argv
        assert message in capsys.readouterr().err, argv

    class Tty:  # a terminal on stdout gets no binary data
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdout", Tty())
    assert main(["encode", str(src), "-o", "-", *model]) == 2
    assert "standard output is a terminal" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", Tty())  # nor is any read from one (it waited for Ctrl-D)
    for argv in (["encode", "-", "-o", str(tmp_path / "x.vlmc")], ["decode", "-", "-o", str(tmp_path / "x.png")]):
        assert main([*argv, *model]) == 2
        assert "standard input is a terminal" in capsys.readouterr().err


def test_cli_format_picks_the_decoded_files_format(tmp_path, rng, tiny_model_path, monkeypatch, capsysbinary):
    """`--format ppm|bmp|tif` writes decoded images in that format, into folders, beside the
    inputs, to stdout, and in roundtrip's output; a named file whose suffix contradicts it is refused."""
    import io
    import sys

    from vlmcodec import Codec

    model = ["--model", str(tiny_model_path)]
    codec = Codec(tiny_model_path)
    srcs = []
    for name in ("a", "b"):
        srcs.append(tmp_path / f"{name}.png")
        Image.fromarray(smooth_image(rng, 40, 64)).save(srcs[-1])
    assert main(["roundtrip", *map(str, srcs), "-o", str(tmp_path / "rt"), "--format", "ppm", "-q", "40", *model]) == 0
    for name in ("a", "b"):
        ppm = tmp_path / "rt" / f"{name}.ppm"
        with Image.open(ppm) as im:
            assert im.format == "PPM"
            decoded = codec.decode((tmp_path / "rt" / f"{name}.vlmc").read_bytes())
            assert np.array_equal(np.asarray(im), decoded)
    assert not list((tmp_path / "rt").glob("*.png"))
    streams = [str(tmp_path / "rt" / f"{name}.vlmc") for name in ("a", "b")]
    assert main(["decode", *streams, "-o", str(tmp_path / "tif"), "--format", "tif", *model]) == 0
    with Image.open(tmp_path / "tif" / "b.tif") as im:
        assert im.format == "TIFF" and np.array_equal(np.asarray(im), codec.decode(Path(streams[1]).read_bytes()))
    capsysbinary.readouterr()
    monkeypatch.setattr(sys, "stdin", _Stdin(Path(streams[0]).read_bytes()))
    assert main(["decode", "-", "-o", "-", "--format", "ppm", *model]) == 0
    out = capsysbinary.readouterr().out
    assert out.startswith(b"P6\n64 40\n255\n")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(out))), codec.decode(Path(streams[0]).read_bytes()))
    # a named output file keeps its own suffix's format; a contradicting --format is refused
    assert main(["decode", streams[0], "-o", str(tmp_path / "one.bmp"), "--format", "bmp", *model]) == 0
    assert Image.open(tmp_path / "one.bmp").format == "BMP"
    assert main(["decode", streams[0], "-o", str(tmp_path / "x.png"), "--format", "ppm", *model]) == 2
    assert b"--format ppm but the output file" in capsysbinary.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_cli_decode_with_extra_models_takes_each_stream_to_its_model(tmp_path, rng, tiny_model_path, capsys):
    import torch

    from vlmcodec import Codec
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import save_model

    torch.manual_seed(2)
    other_path = tmp_path / "other.safetensors"
    save_model(MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016))), other_path)
    first, other = Codec(tiny_model_path), Codec(other_path)
    img = smooth_image(rng, 40, 64)
    (tmp_path / "a.vlmc").write_bytes(first.encode(img, 50))
    (tmp_path / "b.vlmc").write_bytes(other.encode(img, 50))
    streams = [str(tmp_path / "a.vlmc"), str(tmp_path / "b.vlmc")]
    # one model: the other's stream fails (exit 2, "1 of 2 files failed"), its own is written
    assert main(["decode", *streams, "-o", str(tmp_path / "one"), "--model", str(tiny_model_path)]) == 2
    assert (tmp_path / "one" / "a.png").exists() and not (tmp_path / "one" / "b.png").exists()
    assert main(["decode", *streams, "-o", str(tmp_path / "both"), "--model", str(tiny_model_path),
                 "--extra-model", str(other_path)]) == 0
    for name, codec in (("a", first), ("b", other)):
        decoded = codec.decode((tmp_path / f"{name}.vlmc").read_bytes())
        assert np.array_equal(np.asarray(Image.open(tmp_path / "both" / f"{name}.png")), decoded)
    # a stream of neither: the error names both models held (it named the default alone)
    torch.manual_seed(3)
    third_path = tmp_path / "third.safetensors"
    save_model(MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016))), third_path)
    (tmp_path / "c.vlmc").write_bytes(Codec(third_path).encode(img, 50))
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "c.vlmc"), "-o", str(tmp_path / "c.png"), "--model", str(tiny_model_path),
                 "--extra-model", str(other_path)]) == 2
    err = capsys.readouterr().err
    assert "the models held are" in err and first.fingerprint.hex()[:8] in err and other.fingerprint.hex()[:8] in err


def test_cli_encode_writes_each_stream_whole_or_not_at_all(tmp_path, rng, tiny_model_path, monkeypatch):
    """A Ctrl-C (or a full disk) while a stream is written leaves the file as it was, never a
    truncated stream (written in place before, as the decoded images never were)."""
    import vlmcodec.image_io as image_io

    Image.fromarray(smooth_image(rng, 40, 64)).save(tmp_path / "a.png")
    out = tmp_path / "a.vlmc"
    out.write_bytes(b"the previous stream")

    def interrupted(src, dst):
        assert Path(src).read_bytes()[:4] == b"VLMC"  # written whole under the temporary name
        raise KeyboardInterrupt

    monkeypatch.setattr(image_io.os, "replace", interrupted)
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(out), "--model", str(tiny_model_path),
                 "--quiet"]) == 130  # "vlmcodec: interrupted"
    assert out.read_bytes() == b"the previous stream"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.vlmc"]  # no temporary file left
    monkeypatch.undo()
    assert main(["encode", str(tmp_path / "a.png"), "-o", str(out), "--model", str(tiny_model_path), "--quiet"]) == 0
    assert out.read_bytes()[:4] == b"VLMC"


def test_cli_png_level_is_refused_where_no_png_is_written(tmp_path, rng, tiny_model_path, capsys):
    """--png-level with decoded images of another format did nothing, silently: refused, before
    anything is written; the default level with any format, and an explicit level with PNG, run."""
    src = tmp_path / "a.png"
    Image.fromarray(smooth_image(rng, 48, 64)).save(src)
    model = ["--model", str(tiny_model_path)]
    assert main(["encode", str(src), "-o", str(tmp_path / "a.vlmc"), "--no-psnr", *model]) == 0
    refusals = [["decode", str(tmp_path / "a.vlmc"), "-o", str(tmp_path / "x.jpg"), "--png-level", "6"],
                ["decode", str(tmp_path / "a.vlmc"), "-o", str(tmp_path / "d") + "/", "--format", "ppm", "--png-level", "6"],
                ["decode", str(tmp_path / "a.vlmc"), "-o", "-", "--format", "bmp", "--png-level", "6"],
                ["roundtrip", str(src), "-o", str(tmp_path / "r"), "--format", "tif", "--png-level", "6"]]
    for argv in refusals:
        capsys.readouterr()
        assert main([*argv, *model]) == 2, argv  # a usage error
        assert "--png-level sets the zlib level of PNG images" in capsys.readouterr().err
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path / "d").exists() and not (tmp_path / "r").exists()
    assert main(["decode", str(tmp_path / "a.vlmc"), "-o", str(tmp_path / "y.jpg"), *model]) == 0
    assert main(["decode", str(tmp_path / "a.vlmc"), "-o", str(tmp_path / "z.png"), "--png-level", "6", *model]) == 0
    assert main(["roundtrip", str(src), "-o", str(tmp_path / "r2"), "--format", "ppm", *model]) == 0
    assert (tmp_path / "y.jpg").is_file() and (tmp_path / "z.png").is_file() and (tmp_path / "r2" / "a.ppm").is_file()


def test_writes_queued_behind_a_running_one_are_dropped_when_the_block_fails():
    """Ctrl-C (any exception) in a WriteBehind block: the writes still queued behind the running
    one never run (they ran to the end, one by one, before the interrupt reached the user)."""
    gate, ran = threading.Event(), []
    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(max_pending=5) as writes:
            writes.submit(lambda: gate.wait(10), lambda err: None)
            for i in range(1, 4):
                writes.submit(lambda i=i: ran.append(i), lambda err: None)
            threading.Timer(0.5, gate.set).start()  # (the running write ends after the block has failed)
            raise KeyboardInterrupt
    assert ran == []


def test_a_read_ahead_closed_early_never_starts_the_next_load():
    """A read_ahead left after its first item (an error, Ctrl-C) cancels the load it started
    ahead, which would otherwise read the next file for nothing."""
    gate, calls = threading.Event(), []

    def load(i):
        calls.append(i)
        if i == 0:
            gate.wait(10)

    loads = read_ahead(list(range(5)), load)
    next(loads)
    threading.Timer(0.5, gate.set).start()
    loads.close()
    assert calls == [0]


def test_write_behind_keeps_one_write_pending_by_default():
    """The default bound is one write waiting: a second submit waits for the first write (and its
    report), so that at most two decoded images are held at once."""
    gate, order = threading.Event(), []
    threading.Timer(0.3, gate.set).start()
    with WriteBehind() as writes:
        writes.submit(lambda: gate.wait(10), lambda err: order.append(0))
        writes.submit(lambda: None, lambda err: order.append(1))
        assert order == [0]
    assert order == [0, 1]
