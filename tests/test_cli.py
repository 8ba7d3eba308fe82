"""The vlmcodec command line: round trip, info, errors with exit status 2."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmcodec import Codec
from vlmcodec.cli import main

from conftest import smooth_image


def test_encode_decode_info(tmp_path, rng, tiny_model_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(rng, 40 + i, 70)).save(src / f"im{i}.png")
    out = tmp_path / "out"
    assert main(["encode", str(src), "-o", str(out), "-q", "40", "--model", str(tiny_model_path)]) == 0
    text = capsys.readouterr().out
    assert "im0.png" in text and "bpp" in text and "mean of 2" in text
    streams = sorted(out.glob("*.vlmc"))
    assert len(streams) == 2
    assert main(["decode", str(out / "*.vlmc"), "-o", str(tmp_path / "dec"), "--model", str(tiny_model_path)]) == 0
    dec = np.asarray(Image.open(tmp_path / "dec" / "im1.png"))
    assert dec.shape == (41, 70, 3)
    capsys.readouterr()
    assert main(["info", str(streams[0])]) == 0
    assert "70x40" in capsys.readouterr().out
    import json

    assert main(["info", "--json", *map(str, streams)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["width"], r["height"], r["quality"]) for r in rows] == [(70, 40, 40.0), (70, 41, 40.0)]
    assert rows[0]["bytes"] == streams[0].stat().st_size and rows[0]["file"] == str(streams[0])
    assert rows[0]["bpp"] == pytest.approx(8 * streams[0].stat().st_size / (70 * 40))


def test_errors_exit_2(tmp_path, tiny_model_path, capsys):
    bad = tmp_path / "bad.vlmc"
    bad.write_bytes(b"VLMC\x01\x00garbage")
    assert main(["decode", str(bad), "--model", str(tiny_model_path)]) == 2
    assert "vlmcodec: error:" in capsys.readouterr().err
    notimg = tmp_path / "x.png"
    notimg.write_text("not an image")
    capsys.readouterr()
    assert main(["encode", str(notimg), "--model", str(tiny_model_path)]) == 2
    failed = capsys.readouterr()
    assert failed.out == "" and "x.png" in failed.err  # no table header over nothing: the error alone
    assert main(["encode", str(tmp_path / "missing.png")]) == 2
    assert main(["encode", str(notimg), "--backend", "tensorrt"]) == 2
    assert main(["encode", str(notimg), "-q", "150", "--model", str(tiny_model_path)]) == 2
    capsys.readouterr()
    for threads in ("-2", "0"):  # (-2 was torch's RuntimeError and a traceback)
        with pytest.raises(SystemExit) as e:
            main(["encode", str(notimg), "--threads", threads, "--model", str(tiny_model_path)])
        assert e.value.code == 2 and "--threads: expected a whole number, at least 1" in capsys.readouterr().err


def test_one_bad_file_does_not_stop_the_others(tmp_path, rng, tiny_model_path, capsys):
    """encode/decode/info go on past a file that fails, name it, and exit 2 at the end."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "c"):
        Image.fromarray(smooth_image(rng, 40, 64)).save(src / f"{name}.png")
    (src / "b.png").write_text("not an image")
    out = tmp_path / "out"
    assert main(["encode", str(src), "-o", str(out), "--model", str(tiny_model_path), "--quiet"]) == 2
    res = capsys.readouterr()
    assert sorted(f.name for f in out.iterdir()) == ["a.vlmc", "c.vlmc"]  # c came after the failure
    assert "b.png" in res.err and "1 of 3 files failed" in res.err and "mean of 2" in res.out
    (out / "b.vlmc").write_bytes((out / "a.vlmc").read_bytes()[:-5])  # truncated
    assert main(["decode", str(out), "-o", str(tmp_path / "dec"), "--model", str(tiny_model_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert sorted(f.name for f in (tmp_path / "dec").iterdir()) == ["a.png", "c.png"]
    assert f"{out / 'b.vlmc'}:" in err and "1 of 3 files failed" in err
    assert main(["info", str(out / "b.vlmc"), str(out / "c.vlmc")]) == 2
    res = capsys.readouterr()
    assert "c.vlmc" in res.out and "b.vlmc" in res.err
    # a single good file: status 0 and no failure count
    assert main(["info", str(out / "c.vlmc")]) == 0 and "failed" not in capsys.readouterr().err


def test_animation_warns_and_piped_stderr_gets_no_progress_bar(tmp_path, rng, tiny_model_path, capsys):
    """A folder's GIFs are coded; an animated one warns (one plain line, first frame coded). With
    stderr not a terminal (here: captured), no progress bar's carriage returns reach it."""
    src = tmp_path / "in"
    src.mkdir()
    frames = [Image.fromarray(smooth_image(rng, 40, 64)) for _ in range(3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    Image.fromarray(smooth_image(rng, 40, 64)).save(src / "still.png")
    assert main(["roundtrip", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path)]) == 0
    res = capsys.readouterr()
    assert "vlmcodec: warning: " in res.err and "anim.gif holds 3 frames; only the first is coded" in res.err
    assert "Warning" not in res.err and "\r" not in res.err  # no Python warning format, no bar
    assert "anim.gif" in res.out and "mean of 2" in res.out


def test_train_set_overrides():
    from vlmcodec.errors import ConfigError
    from vlmcodec.training.overrides import merge_overrides, parse_sets as _parse_sets

    got = _parse_sets(["pre_editor=false", "w_tok=0", " teacher_layers=[3, 6]", "teacher=dinov2-vits14",
                       'out_dir="runs/x"'])
    assert got == {"pre_editor": False, "w_tok": 0, "teacher_layers": [3, 6], "teacher": "dinov2-vits14",
                   "out_dir": "runs/x"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _parse_sets(["w_tok"])
    # a flag given wins over --set for its key; a flag left at None is no override
    assert merge_overrides(["steps=5", "w_tok=2"], steps=9, out_dir=None) == {"steps": 9, "w_tok": 2}


def test_train_set_and_flag_for_one_key(tmp_path, monkeypatch):
    import vlmcodec.training.trainer as trainer
    from vlmcodec.cli import main

    seen = {}
    monkeypatch.setattr(trainer, "train", lambda cfg, progress=True: seen.setdefault("cfg", cfg))
    cfg = tmp_path / "c.toml"
    cfg.write_text('data_dir = "nowhere"\n')
    assert main(["train", "--config", str(cfg), "--set", "steps=5", "--set", "w_tok=2.5", "--steps", "7"]) == 0
    assert seen["cfg"].steps == 7 and seen["cfg"].w_tok == 2.5  # the dedicated flag wins


def test_train_set_unknown_key_exits_2(tmp_path, capsys):
    from vlmcodec.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('data_dir = "nowhere"\n')
    assert main(["train", "--config", str(cfg), "--set", "no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_closed_stdout_stops_quietly(monkeypatch, capsys):
    """`vlmcodec bench compare … | head`: a reader that stops early is not an error report."""
    import vlmcodec.cli as cli

    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_info", closed)
    assert cli.main(["info", "x.vlmc"]) == 141
    assert "error" not in capsys.readouterr().err


def test_help_and_info_do_not_import_torch(tmp_path, rng, tiny_model_path):
    """`vlmcodec --help` and `vlmcodec info` answer in a fraction of a second: no torch import."""
    import subprocess
    import sys

    assert main(["encode", _write(tmp_path, rng), "-o", str(tmp_path / "a.vlmc"), "--model", str(tiny_model_path),
                 "--no-psnr"]) == 0
    # a decoder-model file too (its export module imported torch at the top: 1.5–2 s for `info`)
    assert main(["export", "--format", "c-decoder", "--model", str(tiny_model_path), "-o", str(tmp_path / "cdec")]) == 0
    for path in (tmp_path / "a.vlmc", tmp_path / "cdec" / "decoder_model.vlmd"):
        code = ("import sys; from vlmcodec.cli import build_parser, main; build_parser(); "
                f"rc = main(['info', {str(path)!r}]); "
                "print('torch' in sys.modules, rc)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().endswith("False 0"), out


def test_a_client_of_a_server_runs_without_torch(tmp_path, rng):
    """`from vlmcodec.runtime import RemoteCodec` imported the Engine, hence torch (~1.3 s and
    ~190 MiB in every client process), and its first request did again (QueueFull)."""
    import subprocess
    import sys

    code = r"""
import socket, sys, threading
import numpy as np
from vlmcodec.runtime import RemoteCodec
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(4)
def serve():
    for reply in (b'{"status": "ok"}', b'{"error": "busy", "type": "QueueFull"}', bytes(12)):
        conn, _ = sock.accept()
        conn.recv(65536)
        status = b"503 Service Unavailable" if b"busy" in reply else b"200 OK"
        head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\nConnection: close\r\n" % len(reply)
        conn.sendall(head + (b"X-Image-Width: 2\r\nX-Image-Height: 2\r\n\r\n" if len(reply) == 12 else b"\r\n") + reply)
        conn.close()
threading.Thread(target=serve, daemon=True).start()
remote = RemoteCodec(f"http://127.0.0.1:{sock.getsockname()[1]}", retries=0)
assert remote.health() == {"status": "ok"}
try:
    remote.encode(np.zeros((4, 4, 3), np.uint8), 50)
except Exception as e:
    print(type(e).__name__)
print(remote.decode(b"VLMC" + bytes(30)).shape, 'torch' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["QueueFull", "(2,", "2,", "3)", "False"], out.stdout


def test_version_names_the_release_format_and_default_model_without_torch(monkeypatch):
    """`vlmcodec --version`: what a bug report needs, read without importing torch."""
    import subprocess
    import sys

    import vlmcodec
    import vlmcodec.cli as cli
    from vlmcodec.codec import default_model_path
    from vlmcodec.models.checkpoint import load_model

    assert default_model_path is vlmcodec.default_model_path  # one definition, which needs no torch
    code = ("import sys; from vlmcodec.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit as e:\n    print('exit', e.code)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    fp = load_model(default_model_path()).fingerprint.hex()[:16]
    assert out[0] == f"vlmcodec {vlmcodec.__version__} (bitstream format 1, default model {fp})"
    assert out[1].startswith("Python ") and ", torch 2." in out[1]
    assert out[2:4] == ["exit 0", "False"]
    monkeypatch.setattr(vlmcodec, "default_model_path", lambda: Path("/nonexistent/default.safetensors"))
    assert "default model missing or unreadable" in cli.version_text()


def _write(tmp_path, rng) -> str:
    path = tmp_path / "img.png"
    Image.fromarray(smooth_image(rng, 40, 64)).save(path)
    return str(path)


def test_max_pixels_option(tmp_path, rng, tiny_model_path, capsys):
    src = _write(tmp_path, rng)  # 64x40 = 2560 pixels
    out = str(tmp_path / "a.vlmc")
    assert main(["encode", src, "-o", out, "--model", str(tiny_model_path), "--max-pixels", "2559"]) == 2
    assert "more than max_pixels=2559" in capsys.readouterr().err
    assert main(["encode", src, "-o", out, "--model", str(tiny_model_path), "--max-pixels", "2560"]) == 0
    assert main(["decode", out, "-o", str(tmp_path / "d.png"), "--model", str(tiny_model_path),
                 "--max-pixels", "100"]) == 2
    assert "max_pixels=100" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["encode", src, "--max-pixels", "0"])


def test_is_terminal_copes_with_replaced_and_closed_streams(tmp_path):
    import io

    from vlmcodec.console import is_terminal

    f = open(tmp_path / "log", "w")
    assert not is_terminal(f)
    f.close()
    assert not is_terminal(f)  # closed: isatty raises ValueError
    assert not is_terminal(object()) and not is_terminal(io.StringIO())


def test_python_dash_m_vlmcodec_runs_the_command(tmp_path):
    """``python -m vlmcodec`` is the ``vlmcodec`` command: its usage, and its error and exit status."""
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "vlmcodec", "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("usage: vlmcodec")
    bad = tmp_path / "x.vlmc"
    bad.write_bytes(b"not a stream")
    fail = subprocess.run([sys.executable, "-m", "vlmcodec", "info", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert fail.returncode == 2 and "vlmcodec: error:" in fail.stderr


def test_json_lines_for_scripts(tmp_path, rng, tiny_model_path, capsys):
    """--json: one strict JSON object per line on the table's stream (nothing else there), a
    failed input as {file, error, type} beside its message on stderr, the exit status as ever."""
    import json

    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        Image.fromarray(smooth_image(rng, 40 + i, 70)).save(src / f"im{i}.png")
    (src / "bad.png").write_bytes(b"not an image")
    out, model = tmp_path / "out", ["--model", str(tiny_model_path)]
    assert main(["encode", str(src), "-o", str(out), "-q", "40", "--short-side", "32", "--json", "--quiet", *model]) == 2
    got = capsys.readouterr()
    rows = [json.loads(line) for line in got.out.splitlines()]  # every line is JSON: no header, no mean, no note
    bad = [r for r in rows if "error" in r]
    assert len(bad) == 1 and bad[0]["file"] == str(src / "bad.png") and bad[0]["type"] == "ImageError"
    assert "consumer's scale" in got.err and "bad.png" in got.err
    good = sorted((r for r in rows if "error" not in r), key=lambda r: r["file"])
    assert [(r["width"], r["height"]) for r in good] == [(70, 40), (70, 41)]
    for r in good:
        stream = Path(r["output"])
        assert r["bytes"] == stream.stat().st_size and r["quality"] == 40.0
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / (r["width"] * r["height"]))
        assert r["psnr_db"] > 0 and r["encode_ms"] > 0 and r["decode_ms"] > 0
    assert main(["encode", str(src / "im0.png"), "-o", str(tmp_path / "a.vlmc"), "--no-psnr", "--json", *model]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["psnr_db"] is None and row["decode_ms"] is None  # not measured: null, not NaN (strict JSON)

    assert main(["decode", str(out / "*.vlmc"), "-o", str(tmp_path / "dec"), "--json", "--quiet", *model]) == 0
    rows = sorted((json.loads(line) for line in capsys.readouterr().out.splitlines()), key=lambda r: r["file"])
    assert [(Path(r["output"]).name, r["width"], r["height"]) for r in rows] == [("im0.png", 70, 40), ("im1.png", 70, 41)]
    assert all(Path(r["output"]).is_file() and r["bytes"] == Path(r["file"]).stat().st_size for r in rows)

    assert main(["roundtrip", str(src / "im1.png"), "-o", str(tmp_path / "rt"), "--json", *model]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # one image's roundtrip writes into the folder -o names (a file "rt" and "rt.png" before)
    assert row["output"] == str(tmp_path / "rt" / "im1.vlmc") and row["decoded"] == str(tmp_path / "rt" / "im1.png")
    assert Path(row["output"]).is_file() and Path(row["decoded"]).is_file()


def test_json_lines_go_to_stderr_when_the_stream_goes_to_stdout(tmp_path, rng, tiny_model_path, capsysbinary):
    import json

    Image.fromarray(smooth_image(rng, 40, 70)).save(tmp_path / "im.png")
    assert main(["encode", str(tmp_path / "im.png"), "-o", "-", "--json", "--model", str(tiny_model_path)]) == 0
    got = capsysbinary.readouterr()
    row = json.loads(got.err.decode().splitlines()[-1])
    assert row["output"] == "-" and row["bytes"] == len(got.out) and got.out.startswith(b"VLMC")


def test_decode_never_replaces_the_original_beside_its_stream(tmp_path, rng, tiny_model_path, capsys):
    """encode photo.png → photo.vlmc, then decode photo.vlmc without -o: the decoded image's name
    is the original's, which decode replaced with the lossy copy. Now refused (exit 2, the
    original intact) unless --force or -o names the file; roundtrip into the input's own folder
    refuses to replace its input too."""
    model = ["--model", str(tiny_model_path), "--quiet"]
    photo = tmp_path / "photo.png"
    Image.fromarray(smooth_image(rng, 40, 70)).save(photo)
    original = photo.read_bytes()
    assert main(["encode", str(photo), *model]) == 0
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "photo.vlmc"), *model]) == 2
    assert photo.read_bytes() == original
    assert "photo.png exists" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "photo.vlmc"), "-o", str(tmp_path / "dec.png"), *model]) == 0
    assert main(["decode", str(tmp_path / "photo.vlmc"), "-o", str(tmp_path / "dec.png"), *model]) == 0  # named: replaced
    assert main(["decode", str(tmp_path / "photo.vlmc"), "--force", *model]) == 0
    assert photo.read_bytes() != original and photo.read_bytes() == (tmp_path / "dec.png").read_bytes()
    other = tmp_path / "other.png"
    Image.fromarray(smooth_image(rng, 40, 70)).save(other)
    before = other.read_bytes()
    assert main(["roundtrip", str(other), "-o", str(tmp_path), *model]) == 2
    assert other.read_bytes() == before and "would replace its own input" in capsys.readouterr().err
    assert main(["encode", str(other), "-o", str(other), *model]) == 2  # (wrote the stream over the image)
    assert other.read_bytes() == before and "would replace its own input image" in capsys.readouterr().err


def test_an_output_folder_that_is_a_file_is_refused_up_front(tmp_path, rng, tiny_model_path, capsys):
    """(each input was coded first, then failed alone with "[Errno 17] File exists")"""
    model = ["--model", str(tiny_model_path), "--quiet"]
    for i in range(2):
        Image.fromarray(smooth_image(rng, 40, 70)).save(tmp_path / f"im{i}.png")
    (tmp_path / "out").write_text("a file")
    for argv in (["encode", str(tmp_path / "im*.png")], ["roundtrip", str(tmp_path / "im0.png")],
                 ["decode", str(tmp_path / "*.vlmc")]):
        if argv[0] == "decode":
            assert main(["encode", str(tmp_path / "im*.png"), "-o", str(tmp_path), *model]) == 0
            capsys.readouterr()
        assert main([*argv, "-o", str(tmp_path / "out"), *model]) == 2
        err = capsys.readouterr().err
        assert "is a file: the outputs go into a folder" in err and "Errno" not in err, err
    for fmt in ("c-decoder", "onnx"):
        assert main(["export", "--format", fmt, "-o", str(tmp_path / "out"), "--model", str(tiny_model_path)]) == 2
        err = capsys.readouterr().err
        assert "is a file: export writes into a folder" in err and "Errno" not in err, err


def test_two_inputs_never_write_one_output_nor_over_another_input(tmp_path, rng, tiny_model_path, capsys):
    """a.png and a.jpg both went to a.vlmc, one silently overwritten; `roundtrip d -o d` wrote
    a.jpg's decoded image over the original a.png. Now such a run is refused before any coding."""
    model = ["--model", str(tiny_model_path)]
    d = tmp_path / "d"
    d.mkdir()
    Image.fromarray(smooth_image(rng, 40, 64)).save(d / "a.png")
    Image.fromarray(smooth_image(rng, 64, 40)).save(d / "a.jpg")
    original = (d / "a.png").read_bytes()
    assert main(["encode", str(d), "-o", str(tmp_path / "out"), *model]) == 2
    assert "would both be written to" in capsys.readouterr().err and not (tmp_path / "out" / "a.vlmc").exists()
    assert main(["roundtrip", str(d), "-o", str(d), *model]) == 2
    assert "would replace the input" in capsys.readouterr().err and (d / "a.png").read_bytes() == original
    assert sorted(p.name for p in d.iterdir()) == ["a.jpg", "a.png"]
    for sub in ("s1", "s2"):  # streams of one name in two folders, decoded into one
        assert main(["encode", str(d / "a.png"), "-o", str(tmp_path / sub / "a.vlmc"), *model]) == 0
    capsys.readouterr()
    assert main(["decode", str(tmp_path / "s1" / "a.vlmc"), str(tmp_path / "s2" / "a.vlmc"),
                 "-o", str(tmp_path / "dec"), *model]) == 2
    assert "would both be written to" in capsys.readouterr().err


def test_an_image_over_the_budget_fails_alone(tmp_path, rng, tiny_model_path, capsys):
    """BudgetError stopped a folder's run at that image, the file unnamed, the rest not coded."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(src / "b.png")
    Image.fromarray(np.full((8, 8, 3), 50, np.uint8)).save(src / "c.png")
    codec = Codec(tiny_model_path)
    small = max(len(codec.encode(np.asarray(Image.open(src / f"{n}.png")), 0)) for n in "ac")
    assert main(["encode", str(src), "-o", str(tmp_path / "out"), "--max-bytes", str(small + 40),
                 "--model", str(tiny_model_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "b.png" in err and "over the budget" in err and "1 of 3 files failed" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.vlmc", "c.vlmc"]


def test_damaged_ppm_and_tiff_files_are_image_errors(tmp_path, rng, tiny_model_path, capsys):
    """Pillow's ValueError (a PPM header cut short) and TypeError (a TIFF's dimensions damaged)
    escaped: a traceback for the TIFF, and either stopped a folder's run."""
    import io

    from vlmcodec.errors import ImageError
    from vlmcodec.image_io import load_image

    (tmp_path / "t.ppm").write_bytes(b"P6\n17")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((12, 17, 3), np.uint8)).save(buf, "TIFF")
    tiff = bytearray(buf.getvalue())
    tiff[132] = 138  # (found by a fuzz of 3600 damaged files: Pillow's "Missing dimensions")
    (tmp_path / "bad.tif").write_bytes(bytes(tiff))
    for name in ("t.ppm", "bad.tif"):
        with pytest.raises(ImageError, match=f"cannot read image .*{name}"):
            load_image(tmp_path / name)
    Image.fromarray(smooth_image(rng, 40, 64)).save(tmp_path / "good.png")
    assert main(["encode", str(tmp_path / "t.ppm"), str(tmp_path / "bad.tif"), str(tmp_path / "good.png"),
                 "-o", str(tmp_path / "out"), "--model", str(tiny_model_path), "--quiet"]) == 2
    assert "2 of 3 files failed" in capsys.readouterr().err and (tmp_path / "out" / "good.vlmc").exists()


def test_a_file_whose_name_has_glob_characters_is_itself(tmp_path, rng, tiny_model_path, monkeypatch, capsys):
    """'photo[1].png' was taken as a pattern: "no file matches" although it exists, or another
    file (photo1.png) was coded in its place."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(smooth_image(rng, 40, 64)).save("photo[1].png")
    Image.fromarray(smooth_image(rng, 64, 40)).save("photo1.png")
    assert main(["encode", "photo[1].png", "-o", "p.vlmc", "--model", str(tiny_model_path), "--json"]) == 0
    assert '"file": "photo[1].png"' in capsys.readouterr().out
    assert main(["encode", "photo?.png", "-o", "globbed/", "--model", str(tiny_model_path), "--quiet"]) == 0
    assert [p.name for p in (tmp_path / "globbed").iterdir()] == ["photo1.vlmc"]  # a pattern is still one


def test_standard_input_into_a_folder_is_refused(tmp_path, rng, tiny_model_path, monkeypatch, capsys):
    """-o DIR/ for '-' wrote DIR/<standard input>.vlmc."""
    import io
    import sys

    buf = io.BytesIO()
    Image.fromarray(smooth_image(rng, 40, 64)).save(buf, "PNG")
    monkeypatch.setattr(sys, "stdin", type("Stdin", (), {"buffer": io.BytesIO(buf.getvalue()),
                                                          "isatty": lambda self: False})())
    (tmp_path / "sdir").mkdir()
    assert main(["encode", "-", "-o", str(tmp_path / "sdir"), "--model", str(tiny_model_path)]) == 2
    assert "standard input needs -o FILE" in capsys.readouterr().err and not any((tmp_path / "sdir").iterdir())


def test_encode_batch_takes_a_generator(tiny_model_path, rng):
    """(a TypeError: "object of type 'generator' has no len()")"""
    codec = Codec(tiny_model_path)
    images = [smooth_image(rng, 40, 64), smooth_image(rng, 24, 32)]
    assert codec.encode_batch((im for im in images), 50) == codec.encode_batch(images, 50)
    assert codec.encode_batch(map(lambda im: im, images), [40, 60]) == codec.encode_batch(images, [40, 60])


def test_no_psnr_table_shows_dashes_not_nan(tmp_path, rng, tiny_model_path, capsys):
    """--no-psnr's table printed "nan" for the PSNR and decode time (rows and mean): "-" now;
    --json keeps null."""
    first = _write(tmp_path, rng)
    second = tmp_path / "second.png"
    second.write_bytes(Path(first).read_bytes())
    capsys.readouterr()
    assert main(["encode", first, str(second), "-o", str(tmp_path / "o") + "/", "--no-psnr",
                 "--model", str(tiny_model_path)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(rows) == 3 and all(r[-1] == "-" and r[-3] == "-" for r in rows), rows
    assert "nan" not in str(rows)
