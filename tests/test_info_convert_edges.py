"""``vlmcodec info`` and ``vlmcodec convert`` on hostile or odd inputs: huge files refused from
their first bytes, crafted metadata, DataParallel checkpoints, --json for failed inputs."""

import builtins
import io
import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save

from vlmcodec.bitstream import container
from vlmcodec.cli import main
from vlmcodec.export.c_decoder import decoder_model_bytes
from vlmcodec.models import MeanScaleHyperprior, ModelConfig
from vlmcodec.models.checkpoint import describe_model, load_model

BIG = 2 << 30  # a sparse file: no disk, but reading it whole took 2 GB and ~10 s
LIMIT = 200 << 20  # what reading any of them may take


class _Counted:
    """A file object whose reads are counted (``reads``); one asking for more than LIMIT fails."""

    def __init__(self, f, reads: list[int]):
        self._f, self._reads = f, reads

    def read(self, n=-1):
        if n is None or n < 0:
            n = os.fstat(self._f.fileno()).st_size - self._f.tell()
        self._reads.append(n)
        if sum(self._reads) > LIMIT:
            raise OSError("read too much")
        return self._f.read(n)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def reads(monkeypatch):
    """Every read of a file in binary mode, counted; reading more than LIMIT fails."""
    counted: list[int] = []
    real_open = builtins.open

    def counting_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _Counted(f, counted) if "b" in mode and "r" in mode else f

    def read_bytes(self):
        with counting_open(self, "rb") as f:
            return f.read()

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return counted


def _stream() -> bytes:
    head = container.Header(fingerprint=bytes(range(8)), width=16, height=8, quality=50.0)
    return container.pack(head, [b"zz"], [b"yyy", b"y"])


def _grown(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.truncate(path, BIG)
    return path


def _info_error(path: Path, capsys) -> str:
    assert main(["info", str(path)]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("suffix,message", [
    (".vlmc", "not a .vlmc stream (bad magic)"),
    (".safetensors", "cannot read model file {path}: Error while deserializing: invalid JSON in header"),
    (".vlmd", "{path} is not a vlmcodec decoder-model file (bad magic)")])
def test_a_huge_file_of_zeros_is_refused_from_its_first_bytes(tmp_path, capsys, reads, suffix, message):
    path = tmp_path / f"big{suffix}"
    _grown(path, b"")
    assert message.format(path=path) in _info_error(path, capsys)
    assert sum(reads) < LIMIT


def test_a_huge_file_with_a_good_header_is_refused_from_its_header(tmp_path, capsys, reads, tiny_model_path):
    data = _stream()
    err = _info_error(_grown(tmp_path / "s.vlmc", data), capsys)
    assert "bytes after the stream's end (chunk table says 6 payload bytes" in err, err
    model = tiny_model_path.read_bytes()
    err = _info_error(_grown(tmp_path / "m.safetensors", model), capsys)
    assert "incomplete metadata, file not fully covered" in err, err
    vlmd = decoder_model_bytes(load_model(tiny_model_path))
    err = _info_error(_grown(tmp_path / "d.vlmd", vlmd), capsys)
    assert "d.vlmd" in err and "damaged" in err, err
    assert sum(reads) < 3 * LIMIT


def test_good_files_still_read(tmp_path, capsys, tiny_model_path):
    (tmp_path / "s.vlmc").write_bytes(_stream())
    (tmp_path / "d.vlmd").write_bytes(decoder_model_bytes(load_model(tiny_model_path)))
    assert main(["info", str(tmp_path / "s.vlmc"), str(tiny_model_path), str(tmp_path / "d.vlmd")]) == 0
    out = capsys.readouterr().out
    assert "chunks          z 1, y 2" in out and "N 16, M 24" in out and "format version  3" in out


def _with_metadata(tmp_path: Path, src: Path, **meta) -> Path:
    data = src.read_bytes()
    n = int.from_bytes(data[:8], "little")
    old = json.loads(data[8:8 + n])["__metadata__"]
    out = tmp_path / "edited.safetensors"
    out.write_bytes(save(load(data), metadata={**old, **meta}))
    return out


def test_a_crafted_train_steps_neither_crashes_info_nor_stops_the_run(tmp_path, capsys, tiny_model_path):
    """("²".isdigit() is True, int("²") a ValueError: info stopped at that file, naming none)"""
    edited = _with_metadata(tmp_path, tiny_model_path, train_steps="²")
    (tmp_path / "s.vlmc").write_bytes(_stream())
    assert main(["info", "--json", str(edited), str(tmp_path / "s.vlmc")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and lines[0]["train_steps"] is None
    assert describe_model(_with_metadata(tmp_path, tiny_model_path, train_steps="12"))["train_steps"] == 12
    from vlmcodec.training.weights import lineage_of

    assert lineage_of({"train_steps": "²"}, "x")[-1]["train_steps"] == "²"  # (kept as the text it is)
    assert lineage_of({"train_steps": "12"}, "x")[-1]["train_steps"] == 12


def _compressai_state() -> dict:
    return {k: v for k, v in MeanScaleHyperprior(ModelConfig(N=16, M=24)).state_dict().items()
            if k not in ("gain", "inv_gain")}


@pytest.mark.parametrize("wrap", [lambda s: {"state_dict": s, "epoch": 3}, lambda s: s])
def test_convert_takes_a_dataparallel_checkpoint(tmp_path, capsys, wrap):
    state = {f"module.{k}": v for k, v in _compressai_state().items()}
    torch.save(wrap(state), tmp_path / "dp.pth.tar")
    out = tmp_path / "m.safetensors"
    assert main(["convert", "--from-compressai", str(tmp_path / "dp.pth.tar"), "-o", str(out)]) == 0, \
        capsys.readouterr().err
    assert (load_model(out).model.N, load_model(out).model.M) == (16, 24)


def test_info_json_gives_an_object_for_a_failed_input(tmp_path, capsys):
    folder = tmp_path / "mix"
    folder.mkdir()
    for name in ("a.vlmc", "b.vlmc"):
        (folder / name).write_bytes(_stream())
    (folder / "c.vlmc").write_bytes(b"JUNK" * 10)
    assert main(["info", "--json", str(folder)]) == 2
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and lines[2]["file"] == str(folder / "c.vlmc") and "bad magic" in lines[2]["error"]
    assert lines[2]["type"] == "BitstreamError"


def test_parameters_count_no_buffers(tiny_model_path):
    net = load_model(tiny_model_path).model
    names = {k for k, _ in net.named_parameters()}
    decoder = sum(p.numel() for k, p in net.named_parameters() if k.split(".")[0] in
                  ("g_s", "h_s", "entropy_bottleneck", "inv_gain", "gaussian_conditional"))
    total = sum(p.numel() for k, p in net.named_parameters() if k in names)
    d = describe_model(tiny_model_path)["parameters"]
    assert (d["encoder"], d["decoder"]) == (total - decoder, decoder)


def test_info_of_a_decoder_model_on_standard_input_names_it(tmp_path, tiny_model_path, monkeypatch, capsys):
    class Stdin:
        buffer = io.BytesIO(decoder_model_bytes(load_model(tiny_model_path)))

        def isatty(self):
            return False

    monkeypatch.setattr("sys.stdin", Stdin())
    err = _info_error(Path("-"), capsys)
    assert "decoder-model file" in err and "version 68" not in err, err


def test_convert_messages_name_what_is_wrong(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is text\n")
    assert main(["convert", "--from-compressai", str(text), "-o", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "not a torch checkpoint" in err and ": 101" not in err, err
    torch.save(_compressai_state(), tmp_path / "cai.pt")
    (tmp_path / "conv").mkdir()
    assert main(["convert", "--from-compressai", str(tmp_path / "cai.pt"), "-o", str(tmp_path / "conv")]) == 2
    err = capsys.readouterr().err
    assert "-o" in err and "Errno" not in err, err


def test_info_json_names_each_kind_and_steps_are_numbers(tmp_path, capsys, tiny_model_path):
    (tmp_path / "s.vlmc").write_bytes(_stream())
    (tmp_path / "d.vlmd").write_bytes(decoder_model_bytes(load_model(tiny_model_path)))
    edited = _with_metadata(tmp_path, tiny_model_path, train_steps="-5")
    assert main(["info", "--json", str(tmp_path / "s.vlmc"), str(edited), str(tmp_path / "d.vlmd")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["kind"] for d in lines] == ["stream", "model", "decoder-model"]
    assert lines[1]["train_steps"] is None and re.fullmatch(r"[0-9a-f]+", lines[0]["model"])


def test_info_json_pairs_streams_with_models_by_one_key(tmp_path, capsys, tiny_model_path):
    """The fingerprint a file's streams carry was "model" in a stream, "streams_carry" in a
    decoder-model file and a 64-digit "stream_fingerprint" in a model file: each now also gives
    "stream_model", 16 digits, the same for a model, its .vlmd and its streams."""
    from vlmcodec import Codec

    codec = Codec(tiny_model_path)
    (tmp_path / "s.vlmc").write_bytes(codec.encode(torch.zeros(16, 16, 3, dtype=torch.uint8).numpy(), 50))
    (tmp_path / "d.vlmd").write_bytes(decoder_model_bytes(load_model(tiny_model_path)))
    assert main(["info", "--json", str(tmp_path / "s.vlmc"), str(tiny_model_path), str(tmp_path / "d.vlmd")]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {d["stream_model"] for d in lines} == {codec.stream_fingerprint.hex()}, lines


@pytest.mark.parametrize("forge,says", [
    (lambda b: b[:28] + (0).to_bytes(4, "little") + b[32:], "bad network sizes N 0"),
    (lambda b: b[:36] + (5000).to_bytes(4, "little") + b[40:], "bad network sizes"),
    (lambda b: b[:40], "truncated"),
    (lambda b: b[:20], "truncated")])
def test_info_refuses_a_decoder_model_file_the_c_library_refuses(tmp_path, capsys, tiny_model_path, forge, says):
    """Only magic, version and CRC were checked: a file with N 0, or cut to its 44-byte header (its
    CRC made again), was described as one that "encodes images"; one cut below 44 bytes was
    "bad magic"."""
    import zlib

    good = decoder_model_bytes(load_model(tiny_model_path))
    body = forge(good[:-4])
    path = tmp_path / "forged.vlmd"
    path.write_bytes(body + zlib.crc32(body).to_bytes(4, "little") if len(body) >= 40 else body)
    err = _info_error(path, capsys)
    assert says in err and "bad magic" not in err, err


def test_convert_refuses_what_would_replace_a_model_it_reads_and_says_what_files_are(tmp_path, capsys,
                                                                                    tiny_model_path):
    """--from-model A -o A and --decodes-as B -o B replaced the model read (B's encoder lost);
    -o under a file said "[Errno 17] File exists" after the conversion; a .vlmd or a stream given
    as a model said "Error while deserializing: header too large"; a folder as a checkpoint
    "checkpoint not found"; a weights file as a model did not say what to do with it."""
    import shutil

    a = tmp_path / "a.safetensors"
    shutil.copy(tiny_model_path, a)
    before = a.read_bytes()
    assert main(["convert", "--from-model", str(a), "-o", str(a)]) == 2
    assert "(--from-model)" in capsys.readouterr().err
    assert main(["convert", "--from-model", str(tiny_model_path), "--decodes-as", str(a), "-o", str(a)]) == 2
    assert "(--decodes-as)" in capsys.readouterr().err and a.read_bytes() == before
    (tmp_path / "afile").write_text("x")
    assert main(["convert", "--from-model", str(a), "-o", str(tmp_path / "afile" / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "afile is not a folder" in err and "Errno" not in err, err
    (tmp_path / "d.vlmd").write_bytes(decoder_model_bytes(load_model(tiny_model_path)))
    (tmp_path / "s.vlmc").write_bytes(_stream())
    for given, says in (("d.vlmd", "decoder model (.vlmd)"), ("s.vlmc", ".vlmc stream")):
        assert main(["convert", "--from-model", str(tmp_path / given), "-o", str(tmp_path / "o.safetensors")]) == 2
        err = capsys.readouterr().err
        assert says in err and "header too large" not in err, err
    assert main(["convert", "--from-model", str(a), "-o", ""]) == 2  # (it said "-o  is a folder")
    assert "-o is empty" in capsys.readouterr().err
    assert main(["convert", "--from-compressai", str(tmp_path), "-o", str(tmp_path / "o.safetensors")]) == 2
    assert "is a folder, not a checkpoint" in capsys.readouterr().err
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(save({"x": torch.zeros(2)}, metadata={"format": "vlmcodec-weights-1"}))
    assert main(["info", str(weights)]) == 2
    assert "convert --from-weights" in capsys.readouterr().err


def test_a_model_file_as_weights_and_a_folder_as_a_model_say_what_they_are(tmp_path, capsys, tiny_model_path):
    """convert --from-weights MODEL.safetensors said only "not a vlmcodec weights file"; a folder
    as --model said "not found" of a folder that is there."""
    assert main(["convert", "--from-weights", str(tiny_model_path), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "a model file already" in capsys.readouterr().err
    assert main(["info", "--json", str(tiny_model_path)]) == 0
    capsys.readouterr()
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "model file not found" in err and "(a folder: name the file in it)" in err, err


def test_info_reads_a_model_or_decoder_model_named_without_its_suffix(tmp_path, capsys, tiny_model_path):
    """convert -o model (no suffix) wrote a working model file that info then called "not a .vlmc
    stream (bad magic)": a name without a known suffix is read as its first bytes say."""
    import shutil

    shutil.copy(tiny_model_path, tmp_path / "model")
    (tmp_path / "dec").write_bytes(decoder_model_bytes(load_model(tiny_model_path)))
    (tmp_path / "s").write_bytes(_stream())
    assert main(["info", "--json", str(tmp_path / "model"), str(tmp_path / "dec"), str(tmp_path / "s")]) == 0
    assert [json.loads(x)["kind"] for x in capsys.readouterr().out.splitlines()] == ["model", "decoder-model",
                                                                                      "stream"]


def test_decode_refuses_a_huge_file_from_its_first_bytes(tmp_path, capsys, monkeypatch, tiny_model_path):
    """decode read its input whole before the header was looked at (a 1.5 GB sparse file of no
    stream: 11 s and 2 GB), where info read only what the header announces."""
    path = _grown(tmp_path / "big.vlmc", b"")
    good = _grown(tmp_path / "padded.vlmc", _stream())  # a header, then 2 GB the chunk table does not announce
    counted: list[int] = []
    real_open = builtins.open

    def counting_open(file, mode="r", *args, **kwargs):  # (the two inputs' reads only: the model's are its own)
        f = real_open(file, mode, *args, **kwargs)
        return _Counted(f, counted) if str(file) in (str(path), str(good)) else f

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(Path, "read_bytes", lambda self: counting_open(self, "rb").read())
    for f, says in ((path, "not a .vlmc stream (bad magic)"), (good, "payload bytes")):
        assert main(["decode", str(f), "-o", str(tmp_path / "x.png"), "--model", str(tiny_model_path)]) == 2
        assert says in capsys.readouterr().err
    assert counted and sum(counted) < LIMIT


def test_a_stream_whose_synthesis_is_not_finite_is_refused(tiny_model_path, rng):
    """Symbols far beyond an encoder's drove g_s to NaN, which the uint8 cast made 0: an all-black
    image returned without an error."""
    import numpy as np

    from vlmcodec import Codec
    from vlmcodec.bitstream.container import unpack
    from vlmcodec.errors import BitstreamError

    codec = Codec(tiny_model_path)
    stream = codec.encode(np.full((64, 64, 3), 128, np.uint8), 50)
    latent = codec.entropy_decode(stream)
    latent.y_hat.fill_(3e38)  # (as ~2**31 symbols do: finite, but g_s overflows)
    with pytest.raises(BitstreamError, match="not finite"):
        codec.synthesize([latent])
    assert unpack(stream)[0].width == 64


def test_broken_y_chunks_fail_before_the_exact_h_s(tiny_model_path, rng, monkeypatch):
    """A stream with a valid z and y chunks whose initial rANS states no encoder writes made the
    decoder run the whole exact h_s first (62 KB at 8000x8000: 9.5 s and 1.4 GB before the error)."""
    from conftest import smooth_image
    from vlmcodec import Codec
    from vlmcodec.bitstream import container
    from vlmcodec.errors import BitstreamError
    from vlmcodec.kernels import rans

    codec = Codec(tiny_model_path)
    stream = codec.encode(smooth_image(rng, 64, 64), 50)
    header, z_chunks, y_chunks = container.unpack(stream)
    rans.check_chunk_starts(y_chunks)  # (an encoder's chunks pass)
    monkeypatch.setattr(codec, "_entropy_parameters", lambda z: pytest.fail("h_s ran"))
    for bad, says in ((bytes(8), "initial state out of range"), (b"\x00\x00\x80", "fewer than its 8-byte header")):
        forged = container.pack(header, z_chunks, [bad] * len(y_chunks))
        with pytest.raises(BitstreamError, match=f"y payload does not decode .*{says}"):
            codec.decode(forged)
