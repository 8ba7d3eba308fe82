"""The command line's gaps found by a mutation run over engine/cli/ (each test fails with a
small change of the code it names: an exit status, an error swallowed, a flag ignored, a JSON
field, a summary figure, standard output's handling)."""

import io
import json
import os
import sys

import numpy as np
import pytest
from conftest import smooth_image
from PIL import Image
from vlmcodec.cli import main


def _png(path, rng, h=32, w=48):
    Image.fromarray(smooth_image(rng, h, w)).save(path)
    return str(path)


def test_a_value_error_from_a_command_exits_2_with_one_error_line(monkeypatch, capsys):
    """__init__: ValueError is caught beside OSError (exit 2, "vlmcodec: error:"), not a traceback."""
    from vlmcodec import cli

    def bad(args):
        raise ValueError("a bad value")

    monkeypatch.setattr(cli, "cmd_info", bad)
    assert cli.main(["info", "x.vlmc"]) == 2
    assert capsys.readouterr().err.strip() == "vlmcodec: error: a bad value"


class _ClosedPipe:
    """A standard output whose reader went away: every write is a BrokenPipeError."""

    def __init__(self):
        self.buffer = self

    def write(self, data):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        raise io.UnsupportedOperation("no file descriptor")


def test_encode_to_a_closed_standard_output_stops_quietly_with_141(tmp_path, rng, tiny_model_path, monkeypatch,
                                                                   capsys):
    """report: a BrokenPipeError writing -o - is no file's failure (exit 141, no error), not 2."""
    src = _png(tmp_path / "a.png", rng)
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["encode", src, "-o", "-", "--model", str(tiny_model_path), "--no-psnr", "--quiet"]) == 141
    assert "error" not in capsys.readouterr().err


def test_a_folder_takes_images_whose_suffix_is_upper_case(tmp_path, rng, tiny_model_path, capsys):
    """paths: a folder's IMG.PNG and b.JpG are inputs (suffixes compared case-blind)."""
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "IMG.PNG", rng)
    Image.fromarray(smooth_image(rng, 24, 40)).save(folder / "b.JpG", format="JPEG")
    out = tmp_path / "out"
    assert main(["encode", str(folder), "-o", str(out), "--model", str(tiny_model_path), "--no-psnr"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["IMG.vlmc", "b.vlmc"]


def test_o_dev_null_with_stdout_on_the_null_device_keeps_the_table_on_stdout(tmp_path, rng, tiny_model_path,
                                                                             monkeypatch, capsys):
    """paths._is_stdout: the null device is never taken for standard output (-o - and a table on
    stderr): `vlmcodec encode a.png -o /dev/null > /dev/null` prints nothing on stderr."""
    src = _png(tmp_path / "a.png", rng)
    with open(os.devnull, "w") as null:
        monkeypatch.setattr(sys, "stdout", null)
        rc = main(["encode", src, "-o", os.devnull, "--model", str(tiny_model_path), "--no-psnr"])
    assert rc == 0
    assert capsys.readouterr().err == ""


def test_roundtrip_refuses_standard_output_and_writes_nothing(tmp_path, rng, tiny_model_path, monkeypatch, capsys):
    """coding: roundtrip -o - is refused (it wrote the stream to stdout and "-.png" here)."""
    src = _png(tmp_path / "a.png", rng)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    with open(tmp_path / "stdout.bin", "w") as stdout:  # (a file: what reached standard output, bytes and all)
        monkeypatch.setattr(sys, "stdout", stdout)
        rc = main(["roundtrip", src, "-o", "-", "--model", str(tiny_model_path)])
    assert rc == 2
    assert "roundtrip writes .vlmc and image files" in capsys.readouterr().err
    assert (tmp_path / "stdout.bin").stat().st_size == 0 and list(work.iterdir()) == []


def test_json_quality_under_a_budget_is_the_quality_each_stream_got(tmp_path, rng, tiny_model_path, capsys):
    """coding: with --max-bytes the JSON row's "quality" is the stream's own (its header's), not
    the default -q the run would otherwise have used."""
    from vlmcodec import Codec
    from vlmcodec.bitstream import container

    img = smooth_image(rng, 48, 64)
    src = tmp_path / "a.png"
    Image.fromarray(img).save(src)
    codec = Codec(tiny_model_path)
    budget = (len(codec.encode(img, 0)) + len(codec.encode(img, 100))) // 2
    out = tmp_path / "a.vlmc"
    assert main(["encode", str(src), "-o", str(out), "--max-bytes", str(budget), "--json", "--no-psnr",
                 "--model", str(tiny_model_path)]) == 0
    row = json.loads(capsys.readouterr().out)
    got = container.unpack(out.read_bytes())[0].quality
    assert row["quality"] == pytest.approx(got) and got != 75
    assert row["bytes"] == out.stat().st_size <= budget


def test_the_mean_row_averages_the_files_coded_not_those_that_failed(tmp_path, rng, tiny_model_path, capsys):
    """coding: "mean of N" divides by the N rows shown; a failed input neither counts nor drags
    the mean bpp down."""
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "a.png", rng, 32, 48)
    _png(folder / "b.png", rng, 40, 56)
    (folder / "c.png").write_text("not an image")
    rc = main(["encode", str(folder), "-o", str(tmp_path / "out"), "--no-psnr", "--model", str(tiny_model_path)])
    assert rc == 2
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"a.png", "b.png", "mean"}
    bpps = [float(rows[name][3]) for name in ("a.png", "b.png")]
    assert rows["mean"][:3] == ["mean", "of", "2"]
    assert float(rows["mean"][3]) == pytest.approx(sum(bpps) / 2, abs=2e-4)


def test_info_json_payload_and_coded_size_of_a_stream_coded_at_a_consumers_scale(tmp_path, rng, tiny_model_path,
                                                                                 capsys):
    """info: --json's payload_bytes (the chunks alone, less than bytes) and coded_width /
    coded_height (the size coded at, not swapped) of a 40x80 image coded at --short-side 20."""
    from vlmcodec.bitstream import container

    src = _png(tmp_path / "a.png", rng, 40, 80)
    out = tmp_path / "a.vlmc"
    assert main(["encode", src, "-o", str(out), "--short-side", "20", "--no-psnr", "--model",
                 str(tiny_model_path)]) == 0
    capsys.readouterr()
    assert main(["info", "--json", str(out)]) == 0
    row = json.loads(capsys.readouterr().out)
    data = out.read_bytes()
    h, zc, yc = container.unpack(data)
    assert (row["width"], row["height"]) == (80, 40)
    assert (row["coded_width"], row["coded_height"]) == (40, 20) == (h.coded_hw[1], h.coded_hw[0])
    assert row["payload_bytes"] == sum(map(len, zc)) + sum(map(len, yc)) < row["bytes"] == len(data)


def _bad_warmup_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")  # (a serve that got past its option checks fails here, at its warm-up)
    return str(bad)


def test_serve_refuses_a_port_above_65535_before_anything_starts(tmp_path, tiny_model_path, capsys):
    assert main(["serve", "--port", "65536", "--warmup", _bad_warmup_image(tmp_path), "--quiet",
                 "--model", str(tiny_model_path)]) == 2
    assert "--port must be 0..65535, got 65536" in capsys.readouterr().err


def test_serve_refuses_a_tls_key_without_its_certificate(tmp_path, tiny_model_path, capsys):
    key = tmp_path / "key.pem"
    key.write_text("not read")
    assert main(["serve", "--tls-key", str(key), "--port", "0", "--warmup", _bad_warmup_image(tmp_path), "--quiet",
                 "--model", str(tiny_model_path)]) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_convert_refuses_m_without_from_compressai_and_writes_nothing(tmp_path, tiny_model_path, capsys):
    out = tmp_path / "m.safetensors"
    for flag in ("--N", "--M"):
        assert main(["convert", "--from-model", str(tiny_model_path), flag, "8", "-o", str(out)]) == 2
        assert "--N and --M apply to --from-compressai" in capsys.readouterr().err
        assert not out.exists()


def test_roundtrip_without_o_writes_into_the_out_folder(tmp_path, rng, tiny_model_path, monkeypatch, capsys):
    """parser: roundtrip's -o defaults to "out" (a folder, even for one image), never beside the input."""
    src = _png(tmp_path / "a.png", rng)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["roundtrip", src, "--model", str(tiny_model_path), "--quiet"]) == 0
    assert sorted(p.name for p in (work / "out").iterdir()) == ["a.png", "a.vlmc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "cwd"]


def test_encode_no_pre_edit_reaches_the_codec(tmp_path, rng, capsys):
    """codecs: --no-pre-edit writes a stream its header says was not pre-edited (a model with a
    pre-editor; without the flag it is)."""
    import torch
    from vlmcodec.bitstream import container
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import save_model

    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=2, lmbdas=(0.01, 0.05), pre_editor=True))
    path = tmp_path / "pe.safetensors"
    save_model(model, path)
    src = _png(tmp_path / "a.png", rng)
    for flags, edited in (([], True), (["--no-pre-edit"], False)):
        out = tmp_path / f"{edited}.vlmc"
        assert main(["encode", src, "-o", str(out), "--no-psnr", "--model", str(path), *flags]) == 0
        assert container.unpack(out.read_bytes())[0].pre_edited is edited


def test_threads_reaches_the_codec(tmp_path, rng, tiny_model_path, monkeypatch, capsys):
    """codecs: --threads is the Codec's threads (1 here: the tests' torch count, left as it is)."""
    import vlmcodec.codec as codec_module

    real, seen = codec_module.Codec, []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("threads"))
        return real(*args, **kwargs)

    monkeypatch.setattr(codec_module, "Codec", spy)
    src = _png(tmp_path / "a.png", rng)
    assert main(["encode", src, "-o", str(tmp_path / "a.vlmc"), "--threads", "1", "--no-psnr",
                 "--model", str(tiny_model_path)]) == 0
    assert seen == [1]


def test_an_output_name_ending_in_a_slash_is_a_new_folder_for_one_input(tmp_path, rng, tiny_model_path, capsys):
    """paths: -o new/ (no such folder yet) takes one input's stream as new/a.vlmc, not a file "new"."""
    src = _png(tmp_path / "a.png", rng)
    assert main(["encode", src, "-o", str(tmp_path / "new") + "/", "--no-psnr", "--model", str(tiny_model_path)]) == 0
    assert (tmp_path / "new" / "a.vlmc").is_file()


class _PipedStdin:
    """Standard input from a pipe: bytes, no terminal, no file size to compare against."""

    def __init__(self, data: bytes):
        self.buffer = io.BytesIO(data)

    def isatty(self):
        return False


def test_a_stream_with_a_byte_after_its_end_on_standard_input_is_refused(tiny_model_path, monkeypatch, capsys):
    """paths._read_stream: a piped stream longer than its header's chunk table (one that fills
    more than the header's read) is read one byte past its end, so that the extra byte is
    refused, as a file's size is."""
    from vlmcodec import Codec
    from vlmcodec.bitstream import container

    img = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    data = Codec(tiny_model_path).encode(img, 100)
    assert len(data) > container.MAX_HEADER_BYTES  # (a shorter one is read whole with its header)
    monkeypatch.setattr(sys, "stdin", _PipedStdin(data))
    assert main(["info", "-"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", _PipedStdin(data + b"x"))
    assert main(["info", "-"]) == 2
    assert "1 bytes after the stream's end" in capsys.readouterr().err


def test_info_text_splits_a_streams_bytes_into_payload_and_container(tmp_path, rng, tiny_model_path, capsys):
    from vlmcodec.bitstream import container

    src = _png(tmp_path / "a.png", rng)
    out = tmp_path / "a.vlmc"
    assert main(["encode", src, "-o", str(out), "--no-psnr", "--model", str(tiny_model_path)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    data = out.read_bytes()
    _, zc, yc = container.unpack(data)
    payload = sum(map(len, zc)) + sum(map(len, yc))
    assert f"bytes           {len(data)} (payload {payload}, container {len(data) - payload})" in capsys.readouterr().out


def test_serve_png_level_reaches_the_server(tmp_path, tiny_model_path, monkeypatch, capsys):
    """serve: --png-level is the server's PNG level (a stand-in server that cannot listen records it)."""
    import vlmcodec.runtime.server as server_module

    seen = []

    def cannot_listen(engines, host, port, **kwargs):
        seen.append(kwargs["png_level"])
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(server_module, "CodecServer", cannot_listen)
    for flags, level in (([], 1), (["--png-level", "6"], 6)):
        assert main(["serve", "--port", "0", "--quiet", *flags, "--model", str(tiny_model_path)]) == 2
        assert "cannot listen on 127.0.0.1:0: Address already in use" in capsys.readouterr().err
        assert seen.pop() == level


@pytest.mark.parametrize("flag", ["--out-dir", "--init-from"])
def test_train_refuses_an_empty_out_dir_or_init_from(tmp_path, capsys, flag):
    # (a missing --config: a run past the check stops there)
    assert main(["train", "--config", str(tmp_path / "missing.toml"), flag, ""]) == 2
    assert f"{flag} is empty" in capsys.readouterr().err
