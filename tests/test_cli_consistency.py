"""Options that meant something else, or nothing, on some subcommands (a CLI audit): each is now
refused or says what it does."""

import io
import sys

import pytest

from vlmcodec import cli
from vlmcodec.cli import main

from conftest import smooth_image


def test_serve_quiet_says_it_silences_the_access_log(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--quiet no access log" in out


def test_decode_takes_no_pre_editor_option(tmp_path, capsys):
    """decode --no-pre-edit was taken and unused (its help: 'when encoding')."""
    with pytest.raises(SystemExit) as e:
        main(["decode", str(tmp_path / "s.vlmc"), "--no-pre-edit"])
    assert e.value.code == 2 and "unrecognized arguments: --no-pre-edit" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["decode", "S", "-o", ""], ["encode", "I", "-o", ""], ["encode", "I", "--model", ""],
                                  ["roundtrip", "I", "-o", " "]])
def test_an_empty_output_or_model_is_refused(tmp_path, rng, capsys, monkeypatch, args):
    """-o "" (an unset shell variable) wrote into the current folder, past decode's guard of the
    original beside its stream; --model "" meant the bundled model."""
    from PIL import Image

    monkeypatch.chdir(tmp_path)  # (where a run that took it would write)

    Image.fromarray(smooth_image(rng, 32, 32)).save(tmp_path / "i.png")
    (tmp_path / "s.vlmc").write_bytes(b"")
    args = [str(tmp_path / "s.vlmc") if a == "S" else str(tmp_path / "i.png") if a == "I" else a for a in args]
    assert main(args) == 2
    assert "takes a path, got an empty one" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["decode", "", "-o", "x.png"], ["info", ""], ["encode", "", "-o", "o/"],
                                     ["roundtrip", "", "-o", "r"]])
def test_an_empty_input_is_refused_not_taken_for_the_current_folder(tmp_path, rng, capsys, monkeypatch, command):
    """An empty input (an unset shell variable) was Path(""), the current folder: decode "" -o x.png
    decoded every stream there into a folder x.png/, info printed them all. The Python API said
    "is a directory: '.'"."""
    from PIL import Image

    import vlmcodec
    from vlmcodec.errors import ImageError

    monkeypatch.chdir(tmp_path)
    Image.fromarray(smooth_image(rng, 32, 32)).save(tmp_path / "i.png")
    assert main(["encode", "i.png", "-o", "s.vlmc", "--no-psnr"]) == 0
    capsys.readouterr()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(command) == 2
    assert "an input is empty" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(ImageError, match="the image path is empty"):
        vlmcodec.encode("")
    # a name of spaces is a name like any other (a file called " " encodes)
    Image.fromarray(smooth_image(rng, 32, 32)).save(tmp_path / " ", format="PNG")
    assert len(vlmcodec.encode(" ")) > 0


@pytest.mark.parametrize("flag", [["--opset", "17"], ["--subpixel"], ["--no-fold-gdn"]])
def test_export_refuses_onnx_options_for_other_formats(tmp_path, capsys, flag):
    """--opset 3 --subpixel --no-fold-gdn with --format c-decoder exited 0 (unused)."""
    assert main(["export", "--format", "c-decoder", "-o", str(tmp_path / "c"), *flag]) == 2
    assert f"{flag[0]}: for --format onnx only" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_info_refuses_a_terminal_as_standard_input(monkeypatch, capsys):
    """info - waited for bytes no one could type; encode and decode refused."""
    monkeypatch.setattr(cli.paths, "_is_terminal", lambda stream: stream is sys.stdin)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["info", "-"]) == 2
    assert "standard input is a terminal" in capsys.readouterr().err


def test_convert_does_not_take_dash_for_a_file(tmp_path, monkeypatch, capsys, tiny_model_path):
    """convert -o - wrote a file named "-" (encode and decode read - as standard output)."""
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "--from-model", str(tiny_model_path), "-o", "-"]) == 2
    assert "convert writes a model file, not standard output" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


def test_every_option_says_what_it_is(capsys):
    """Some options had no help text (train --config/--steps/--out-dir, convert -o/--M, export --format/-o)."""
    bare = []
    for action in cli.build_parser()._actions:
        for name, sub in getattr(action, "choices", {}).items() if action.dest == "command" else ():
            bare += [f"{name} {a.option_strings[0]}" for a in sub._actions
                     if a.option_strings and not a.help and a.dest != "help"]
    assert bare == [], bare
