"""The memory check: an image whose coding would not fit is refused with ResourceError (a clear
message, the CLI goes on with the other files) instead of an out-of-memory kill."""

import pytest
import torch
from PIL import Image

from vlmcodec import Codec, memory
from vlmcodec.bitstream import container
from vlmcodec.cli import main
from vlmcodec.errors import ResourceError

from conftest import smooth_image


def _fake_root(tmp_path, mem_kb, cgroup=None):
    (tmp_path / "proc").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text(f"MemTotal: 99999999 kB\nMemFree: 1 kB\nMemAvailable: {mem_kb} kB\n")
    for rel, text in (cgroup or {}).items():
        f = tmp_path / "sys/fs/cgroup" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return tmp_path


def test_available_memory_reads_meminfo_and_cgroup_limits(tmp_path):
    assert memory.available_memory(_fake_root(tmp_path / "a", 2048)) == 2048 * 1024
    v2 = _fake_root(tmp_path / "b", 10**8, {"memory.max": "3000000\n", "memory.current": "1000000\n"})
    assert memory.available_memory(v2) == 2_000_000  # the cgroup leaves less than the host
    unlimited = _fake_root(tmp_path / "c", 4, {"memory.max": "max\n", "memory.current": "5\n",
                                               "memory/memory.limit_in_bytes": "9223372036854771712\n",
                                               "memory/memory.usage_in_bytes": "7\n"})
    assert memory.available_memory(unlimited) == 4096
    v1 = _fake_root(tmp_path / "d", 10**8, {"memory/memory.limit_in_bytes": "500\n",
                                            "memory/memory.usage_in_bytes": "900\n"})
    assert memory.available_memory(v1) == 0  # over the limit already
    assert memory.available_memory(tmp_path / "nothing") is None
    no_meminfo = _fake_root(tmp_path / "e", 1, {"memory/memory.limit_in_bytes": "9223372036854771712\n",
                                                "memory/memory.usage_in_bytes": "7\n"})
    (no_meminfo / "proc/meminfo").unlink()
    assert memory.available_memory(no_meminfo) is None  # v1's "no limit" is no figure (it gave ~2^63)
    assert memory.available_memory() is None or memory.available_memory() > 0  # this machine


def test_check_fits_refuses_only_what_cannot_fit(monkeypatch):
    room = memory.SETUP_BYTES + 300_000  # the fixed set-up margin, and 300 B for each of 1000 pixels
    memory.check_fits("encoding", 1000, 300, available=room)  # exactly fits
    with pytest.raises(ResourceError, match=r"encoding of 0\.0 Mpx needs about .* GiB .* available: code it"):
        memory.check_fits("encoding", 1001, 300, available=room)
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    memory.check_fits("encoding", 10**12, 300)  # unknown: no refusal
    assert issubclass(ResourceError, MemoryError)


def test_codec_refuses_an_image_that_would_not_fit(monkeypatch, rng, tiny_model_path):
    img = smooth_image(rng, 100, 130)  # padded to 128x192
    codec = Codec(tiny_model_path)
    data = codec.encode(img, 50)
    seen = []
    monkeypatch.setattr(memory, "available_memory", lambda: seen.append(1) or 128 * 192 * 100)
    with pytest.raises(ResourceError, match="encoding of 0.0 Mpx"):
        codec.encode(img, 50)
    with pytest.raises(ResourceError, match="decoding"):
        codec.decode(data)
    n = len(seen)
    assert Codec(tiny_model_path, check_memory=False).encode(img, 50) == data and len(seen) == n
    monkeypatch.setenv("VLMCODEC_CHECK_MEMORY", "0")
    assert Codec(tiny_model_path).decode(data).shape == img.shape
    just_enough = memory.SETUP_BYTES + 128 * 192 * memory.DECODE_BYTES_PER_PIXEL
    monkeypatch.setattr(memory, "available_memory", lambda: just_enough)
    monkeypatch.delenv("VLMCODEC_CHECK_MEMORY")
    assert Codec(tiny_model_path).decode(data).shape == img.shape  # just enough


def test_gpu_out_of_memory_becomes_resource_error(monkeypatch, rng, tiny_model_path):
    codec = Codec(tiny_model_path)

    def oom(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(codec.backend, "analysis", oom)
    with pytest.raises(ResourceError, match="ran out of GPU memory.*Tried to allocate 9.00 GiB"):
        codec.encode(smooth_image(rng, 64, 64), 50)


def test_cli_goes_on_past_an_image_too_large_for_memory(monkeypatch, tmp_path, rng, tiny_model_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_image(rng, 300, 400)).save(src / "big.png")
    Image.fromarray(smooth_image(rng, 40, 60)).save(src / "small.png")
    monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + 64 * 64 * 1000)
    assert main(["encode", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model_path)]) == 2
    res = capsys.readouterr()
    assert "big.png" in res.err and "needs about" in res.err and "1 of 2 files failed" in res.err
    assert [f.name for f in (tmp_path / "out").iterdir()] == ["small.vlmc"]


def test_a_batch_adds_only_its_inputs_and_outputs(monkeypatch, rng, tiny_model_path):
    """The torch backend runs one image at a time on the CPU: a batch of 3 needs one image's peak
    plus two images' inputs and outputs, not three peaks."""
    imgs = [smooth_image(rng, 64, 64) for _ in range(3)]
    px = 64 * 64
    codec = Codec(tiny_model_path)
    first, more = memory.ENCODE_BYTES_PER_PIXEL[codec.pre_edit], memory.ENCODE_BATCH_BYTES_PER_PIXEL
    monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + px * (first + 2 * more))
    assert len(codec.encode_batch(imgs, [50] * 3)) == 3
    monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + px * (first + 2 * more) - 1)
    with pytest.raises(ResourceError, match="encoding of 3 images of 0.0 Mpx"):
        codec.encode_batch(imgs, [50] * 3)
    assert len(codec.encode_batch(imgs[:2], [50] * 2)) == 2


def test_refinement_is_estimated_at_its_own_cost(monkeypatch, rng, tiny_model_path):
    img = smooth_image(rng, 64, 64)
    enough_for_one_pass = memory.SETUP_BYTES + 64 * 64 * memory.ENCODE_BYTES_PER_PIXEL[True]
    monkeypatch.setattr(memory, "available_memory", lambda: enough_for_one_pass)
    Codec(tiny_model_path).encode(img, 50)
    with pytest.raises(ResourceError, match="encoding with refinement"):
        Codec(tiny_model_path, refine=1).encode(img, 50)


def test_row_bands_lower_the_estimate(monkeypatch, rng, tiny_model_path):
    """Above the band threshold the estimate is the largest band (its halo included) at the
    one-pass cost and the other pixels at the banded cost: an image refused in one pass fits with
    bands, and the banded estimate is exact to the byte."""
    from vlmcodec.backends.torch_backend import TorchBackend
    from vlmcodec.banding import row_geometry

    img = smooth_image(rng, 250, 250)  # padded to 256x256
    px, band = 256 * 256, 64 * 64
    codec = Codec(tiny_model_path)
    data = codec.encode(img, 50)
    monkeypatch.setattr(TorchBackend, "band_pixels", band)
    ga = memory.network_band_pixels(row_geometry(codec.model.g_a), 256, 256, band)
    gs = memory.network_band_pixels(row_geometry(codec.model.g_s), 256, 256, band)
    assert band < ga < px and band < gs < px  # 16 rows and their halo
    e_whole = memory.ENCODE_BYTES_PER_PIXEL[codec.pre_edit]
    e_banded = memory.ENCODE_BANDED_BYTES_PER_PIXEL[codec.pre_edit]
    d_whole, d_banded = memory.DECODE_BYTES_PER_PIXEL, memory.DECODE_BANDED_BYTES_PER_PIXEL
    enc = memory.SETUP_BYTES + ga * (e_whole - e_banded) + px * e_banded
    dec = memory.SETUP_BYTES + gs * (d_whole - d_banded) + px * d_banded
    monkeypatch.setattr(memory, "available_memory", lambda: enc)
    assert codec.encode(img, 50)
    monkeypatch.setattr(memory, "available_memory", lambda: enc - 1)
    with pytest.raises(ResourceError, match="encoding"):
        codec.encode(img, 50)
    monkeypatch.setattr(memory, "available_memory", lambda: dec)
    assert codec.decode(data).shape == img.shape
    monkeypatch.setattr(memory, "available_memory", lambda: dec - 1)
    with pytest.raises(ResourceError, match="decoding"):
        codec.decode(data)
    monkeypatch.setattr(TorchBackend, "band_pixels", None)  # one pass: the same memory is too little
    monkeypatch.setattr(memory, "available_memory", lambda: max(enc, dec))
    with pytest.raises(ResourceError, match="encoding"):
        codec.encode(img, 50)
    with pytest.raises(ResourceError, match="decoding"):
        codec.decode(data)


def test_a_wider_model_is_estimated_at_its_width(monkeypatch, rng, tmp_path):
    """The figures were measured at N = 64; a model twice as wide (a CompressAI-size N = 128)
    needs twice the estimate, and a wider encoder alone (N_a) only when encoding."""
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import save_model

    assert memory.width_scale(16) == memory.width_scale(64) == 1.0 and memory.width_scale(128) == 2.0
    img = smooth_image(rng, 64, 64)
    px = 64 * 64
    paths = {}
    for name, cfg in (("wide", ModelConfig(N=128, M=24, num_levels=1, lmbdas=(0.01,))),
                      ("wide_encoder", ModelConfig(N=16, M=24, num_levels=1, lmbdas=(0.01,), N_a=128))):
        torch.manual_seed(0)
        paths[name] = tmp_path / f"{name}.safetensors"
        save_model(MeanScaleHyperprior(cfg), paths[name])
    enc, dec = px * memory.ENCODE_BYTES_PER_PIXEL[False], px * memory.DECODE_BYTES_PER_PIXEL
    for name, enc_scale, dec_scale in (("wide", 2, 2), ("wide_encoder", 2, 1)):
        codec = Codec(paths[name])
        data = codec.encode(img, 50)
        monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + enc_scale * enc)
        assert codec.encode(img, 50) == data
        monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + enc_scale * enc - 1)
        with pytest.raises(ResourceError, match="encoding"):
            codec.encode(img, 50)
        monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + dec_scale * dec)
        assert codec.decode(data).shape == img.shape
        monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + dec_scale * dec - 1)
        with pytest.raises(ResourceError, match="decoding"):
            codec.decode(data)
        monkeypatch.undo()


def test_memory_needed_is_the_figure_the_check_uses(monkeypatch, rng, tiny_model_path):
    """``Codec.memory_needed`` gives the estimate the check compares: exactly that much memory
    lets the call through, one byte less refuses it — for encoding, a batch, refinement, the
    consumer's scale and decoding."""
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 100, 130)
    data = codec.encode(img, 50)
    small = codec.encode(img, 50, short_side=32)
    cases = [(codec.memory_needed(100, 130), lambda: codec.encode(img, 50)),
             (codec.memory_needed(100, 130, 3), lambda: codec.encode_batch([img] * 3, [50] * 3)),
             (codec.memory_needed(100, 130, refine=1), lambda: codec.encode(img, 50, refine=1)),
             (codec.memory_needed(100, 130, short_side=32), lambda: codec.encode(img, 50, short_side=32)),
             (codec.memory_needed(100, 130, decoding=True), lambda: codec.decode(data)),
             (codec.memory_needed(100, 130, decoding=True, short_side=32), lambda: codec.decode(small))]
    for need, call in cases:
        monkeypatch.setattr(memory, "available_memory", lambda: need)
        call()
        monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
        with pytest.raises(ResourceError):
            call()
    assert cases[1][0] > cases[0][0] and cases[2][0] > cases[0][0] > cases[3][0]
    # restoring a stream coded at the consumer's scale to the original size is counted (it was not)
    assert cases[5][0] >= memory.needed(32 * 64, *codec._decode_cost(32, 64)[::2]) + 15 * 100 * 130
    assert codec.memory_needed(100, 130, decoding=True, short_side=0) == cases[4][0]  # 0: full size, as encode
    with pytest.raises(ValueError, match="at least 1"):
        codec.memory_needed(0, 10)


def test_a_tiny_stream_restored_to_a_huge_size_is_checked_before_it_grows(monkeypatch, tiny_model_path, rng):
    """A 16-px-high stream announcing an 8000×8000 original: the resize to 64 Mpx (~1 GB) counts
    in the decode's memory check (a stream of ~100 bytes grew the process by 916 MB unchecked)."""
    codec = Codec(tiny_model_path)
    h, z, y = container.unpack(codec.encode(smooth_image(rng, 16, 16), 50))
    big = container.Header(fingerprint=h.fingerprint, width=8000, height=8000, quality=50.0,
                           flags=h.flags,
                           coded_width=16, coded_height=16)
    data = container.pack(big, z, y)
    monkeypatch.setattr(memory, "available_memory", lambda: 500 << 20)
    with pytest.raises(ResourceError):
        codec.decode(data)
    assert codec.decode(data, short_side=64).shape == (64, 64, 3)  # a small output still fits


def test_memory_needed_is_none_where_nothing_is_estimated(tiny_model_path):
    pytest.importorskip("triton", reason="triton not installed (the triton extra)")
    assert Codec(tiny_model_path, backend="triton").memory_needed(100, 130) is None


def test_an_exact_h_s_out_of_gpu_memory_is_a_resource_error(tiny_model_path, rng):
    """With hs_device on a GPU the exact h_s can run out of its memory: a ResourceError as in the
    networks' stages (it was torch's OutOfMemoryError, on encode and decode alike)."""
    codec = Codec(tiny_model_path)
    img = smooth_image(rng, 48, 64)
    data = codec.encode(img, 50)

    def out_of_memory(z):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    codec.exact_hs = out_of_memory
    with pytest.raises(ResourceError, match=r"encoding \(h_s\) ran out of GPU memory"):
        codec.encode(img, 50)
    with pytest.raises(ResourceError, match=r"decoding \(h_s\) ran out of GPU memory"):
        codec.decode(data)


def test_a_refusal_tells_the_need_from_the_memory_left():
    """One decimal printed "needs about 0.2 GiB of memory and 0.2 GiB are available"."""
    from vlmcodec import memory

    e = memory._refusal("encoding", 10**6, 1, int(0.24 * 2**30), int(0.22 * 2**30))
    assert "needs about 0.24 GiB of memory and 0.22 GiB are available" in str(e)
    e = memory._refusal("encoding", 10**6, 1, int(1.2 * 2**30), int(0.5 * 2**30))
    assert "needs about 1.2 GiB of memory and 0.5 GiB are available" in str(e)


def test_resizing_a_batch_counts_the_largest_image_once_and_every_output():
    """``resize_bytes``: the resize's working memory for the largest image, plus each resized
    output (3 bytes a pixel), for a batch of decodes resized one after the other."""
    assert memory.resize_bytes([100, 50]) == (memory.RESIZE_BYTES_PER_PIXEL - 3) * 100 + 3 * 150
    assert memory.resize_bytes([]) == 0
