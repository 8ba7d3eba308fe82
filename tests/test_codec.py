"""Codec API end to end on a small random model: exact reconstruction, sizes, errors, damage."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlmcodec import Codec, decode, encode
from vlmcodec.bitstream import container
from vlmcodec.bitstream.damage import damage
from vlmcodec.errors import BitstreamError, ConfigError, ImageError, ModelMismatchError

from conftest import smooth_image


def reference_decode(codec: Codec, img: np.ndarray, quality: float) -> np.ndarray:
    """x̂ computed straight from the encoder's latents, without any entropy coding."""
    y, z = codec.analyse([img], [quality])
    z_hat = torch.round(z - codec.medians.reshape(1, -1, 1, 1)) + codec.medians.reshape(1, -1, 1, 1)
    _, means = codec.exact_hs(z_hat)
    y_hat = (torch.round(y.double() - means) + means).float()
    _, inv = codec.model.gains(torch.tensor([codec.model.level_of_quality(quality)]))
    with torch.no_grad():
        x_hat = codec.model.g_s(y_hat * inv[:, :, None, None])
    h, w = img.shape[:2]
    return x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1)[0, :h, :w].numpy()


@pytest.mark.parametrize("h,w", [(64, 64), (70, 90), (1, 1), (65, 130), (17, 200)])
def test_decode_equals_encoder_reconstruction(tiny_codec, rng, h, w):
    img = smooth_image(rng, h, w)
    data = tiny_codec.encode(img, quality=60)
    out = tiny_codec.decode(data)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    assert np.array_equal(out, reference_decode(tiny_codec, img, 60.0))


def test_quality_changes_rate(tiny_codec, rng):
    img = smooth_image(rng, 128, 128)
    sizes = [len(tiny_codec.encode(img, q)) for q in (0, 50, 100)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_pil_and_grayscale_inputs(tiny_codec, rng):
    img = smooth_image(rng, 40, 50)
    assert tiny_codec.encode(Image.fromarray(img), 30) == tiny_codec.encode(img, 30)
    gray = img[:, :, 0]
    assert tiny_codec.decode(tiny_codec.encode(gray, 30)).shape == (40, 50, 3)


def test_batch_equals_single(tiny_codec, rng):
    imgs = [smooth_image(rng, 100, 120) for _ in range(3)]
    qs = [10.0, 55.5, 90.0]
    batched = tiny_codec.encode_batch(imgs, qs)
    assert batched == [tiny_codec.encode(i, q) for i, q in zip(imgs, qs)]
    dec = tiny_codec.decode_batch(batched)
    for d, s in zip(dec, batched):
        assert np.array_equal(d, tiny_codec.decode(s))


def test_decode_batch_synthesizes_item_by_item_on_such_a_backend(tiny_codec, rng, monkeypatch):
    """A backend that runs items one at a time gets them one by one from Codec.synthesize, so each
    float image becomes uint8 before the next (a batch's memory stays near one image's); one
    that runs whole batches gets the batch."""
    streams = tiny_codec.encode_batch([smooth_image(rng, 64, 80) for _ in range(3)], [20, 50, 80])
    expected = [tiny_codec.decode(s) for s in streams]
    seen = []
    synthesis = tiny_codec.backend.synthesis
    monkeypatch.setattr(tiny_codec.backend, "synthesis", lambda y: seen.append(y.shape[0]) or synthesis(y))
    out = tiny_codec.decode_batch(streams)
    assert seen == [1, 1, 1] and all(np.array_equal(a, b) for a, b in zip(out, expected))
    seen.clear()
    monkeypatch.setattr(type(tiny_codec.backend), "item_by_item", False)
    out = tiny_codec.decode_batch(streams)
    assert seen == [3] and all(np.array_equal(a, b) for a, b in zip(out, expected))


def test_header_fields(tiny_codec, rng):
    data = tiny_codec.encode(smooth_image(rng, 33, 77), quality=42.123)
    h, z, y = container.unpack(data)
    assert (h.width, h.height, h.quality, h.fingerprint) == (77, 33, 42.12, tiny_codec.fingerprint)


def test_the_latents_are_coded_at_the_quality_the_header_carries(tiny_model_path, rng):
    """A quality between the 0.01 steps a stream carries is rounded before coding, not only in the
    header: the decoder rescales the latents by the header's quality. (The gains of 33.3349 and
    33.33 differ by ~1e-4, which seldom moves a rounded latent, so the networks' input is checked.)"""
    codec = Codec(tiny_model_path)
    analyse, seen = codec.analyse, []

    def recording(pixels, qualities, **options):
        seen.extend(qualities)
        return analyse(pixels, qualities, **options)

    codec.analyse = recording
    img = smooth_image(rng, 40, 56)
    assert codec.prepare(img, 33.3349).quality == 33.33
    data = codec.encode(img, 33.3349)
    assert container.unpack(data)[0].quality == 33.33 and seen == [33.33]
    assert data == codec.encode(img, 33.33) and codec.encode_batch([img], [33.3349]) == [data]
    assert seen == [33.33] * 3


@pytest.mark.parametrize("bad", [
    np.zeros((10, 10, 5), np.uint8), np.zeros((10, 10, 2), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((0, 5, 3), np.uint8),
    np.zeros((20000, 2, 3), np.uint8), "not an image", None,
])
def test_bad_images_raise(tiny_codec, bad):
    with pytest.raises(ImageError):
        tiny_codec.encode(bad)


@pytest.mark.parametrize("q", [-1, 100.5, float("nan"), True, np.bool_(True), "50", np.float64("inf")])
def test_bad_quality_raises(tiny_codec, rng, q):
    with pytest.raises(ConfigError, match="quality must be a number in"):
        tiny_codec.encode(smooth_image(rng, 8, 8), quality=q)


def test_numpy_qualities_and_bytes_like_streams(tiny_codec, rng):
    """Qualities from numpy (np.arange, np.int64 ...) work like Python numbers; any bytes-like
    stream decodes (bytearray, memoryview, a uint8 array read with np.fromfile)."""
    img = smooth_image(rng, 40, 56)
    data = tiny_codec.encode(img, 50)
    assert tiny_codec.encode(img, np.int64(50)) == tiny_codec.encode(img, np.float32(50.0)) == data
    assert tiny_codec.encode_batch([img, img], np.array([50, 50])) == [data, data]
    assert tiny_codec.encode_batch([img, img], np.int32(50)) == [data, data]
    ref = tiny_codec.decode(data)
    for view in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert np.array_equal(tiny_codec.decode(view), ref)
    with pytest.raises(BitstreamError, match=r"expected bytes .*got str \(a file's name\? its bytes are "
                                             r"Path\('photo.vlmc'\).read_bytes\(\)\)"):
        tiny_codec.decode("photo.vlmc")
    with pytest.raises(BitstreamError, match=r"got PosixPath \(a file's name"):
        tiny_codec.decode(Path("photo.vlmc"))
    with pytest.raises(BitstreamError, match=r"got NoneType$") as wrong:
        tiny_codec.decode(None)
    assert isinstance(wrong.value, TypeError)  # StreamTypeError: Python's type errors catch it too


def test_other_model_refuses_stream(tiny_codec, rng, tmp_path):
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import save_model

    torch.manual_seed(5)
    save_model(MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016))), tmp_path / "o.safetensors")
    other = Codec(tmp_path / "o.safetensors")
    with pytest.raises(ModelMismatchError, match="model"):
        other.decode(tiny_codec.encode(smooth_image(rng, 16, 16)))




def test_fuzz_10000_mutations_and_truncations(tiny_codec, rng):
    """Mutated or truncated real streams raise BitstreamError (or ModelMismatchError), never crash."""
    streams = [tiny_codec.encode(smooth_image(rng, h, w), q) for h, w, q in [(64, 64, 50), (90, 70, 10), (130, 65, 90)]]
    streams.append(tiny_codec.encode(smooth_image(rng, 130, 65), 40, short_side=32))  # a rescaled header
    r = random.Random(1)
    outcomes = {"raised": 0, "decoded": 0}
    i = 0
    while outcomes["raised"] + outcomes["decoded"] < 10_000:
        i += 1
        original = r.choice(streams)
        kind = ("truncate", "flip", "overwrite", "insert")[i % 4]
        data = damage(original, kind, r, edits={"flip": 1, "overwrite": 7, "insert": 4}.get(kind, 3))
        if data == original:
            continue  # a byte overwritten with its own value is no mutation
        try:
            tiny_codec.decode(data)
            outcomes["decoded"] += 1
        except (BitstreamError, ModelMismatchError):
            outcomes["raised"] += 1
    assert outcomes["raised"] == 10_000, outcomes


def test_payload_damage_behind_a_valid_crc(tiny_codec, rng):
    """With the CRC recomputed, damage reaches the rANS decoder: it must raise or return an
    image of the right shape — bounded time, no crash."""
    img = smooth_image(rng, 96, 96)
    data = tiny_codec.encode(img, 70)
    r = random.Random(2)
    detected = 0
    for _ in range(400):
        bad = damage(data, "flip", r, edits=1, payload_only=True, valid_crc=True)
        try:
            out = tiny_codec.decode(bad)
            assert out.shape == img.shape
        except BitstreamError:
            detected += 1
    # The CRC is the integrity check; the rANS end-of-chunk checks are a second, partial line.
    assert detected > 20, detected


def test_z_symbols_no_encoder_writes_are_a_bitstream_error(tiny_codec, rng):
    """A stream valid to the byte (CRC, chunk table) whose z carries a huge escape-coded symbol:
    the exact h_s cannot hold it — BitstreamError, as the C decoder's CORRUPT (was OverflowError)."""
    from vlmcodec.kernels import rans

    h, z, y = container.unpack(tiny_codec.encode(smooth_image(rng, 48, 40), 50))
    idx = tiny_codec._z_indexes(1, 1).ravel()
    zs = rans.decode(z, idx, tiny_codec.tables["z"], threads=1)
    zs[0] = 2**31 - 1
    with pytest.raises(BitstreamError, match="z values out of range"):
        tiny_codec.decode(container.pack(h, rans.encode(zs, idx, tiny_codec.tables["z"], 1), y))


def test_module_level_api(tiny_model_path, rng):
    img = smooth_image(rng, 30, 40)
    data = encode(img, quality=20, model=tiny_model_path)
    assert decode(data, model=tiny_model_path).shape == (30, 40, 3)


def test_max_pixels_guard(tiny_model_path, rng):
    small = Codec(tiny_model_path, max_pixels=64 * 64)
    img = smooth_image(rng, 65, 64)
    with pytest.raises(ImageError, match="max_pixels"):
        small.encode(img)
    data = Codec(tiny_model_path).encode(img)
    with pytest.raises(BitstreamError, match="max_pixels"):
        small.decode(data)


def _encode_in_worker(codec, image: np.ndarray, quality: float) -> bytes:
    return codec.encode(image, quality)


def test_a_codec_pickles_as_its_model_file_and_settings(tiny_model_path, rng, tmp_path):
    """Pickling (multiprocessing's spawn and forkserver — the default start method on Linux from
    Python 3.14 —, a DataLoader's workers) raised "cannot pickle '_thread.lock' object". A codec
    made from a model file now travels as that file and its settings: the worker's streams are
    this process's; a model file changed since is refused; one made from a model in memory says
    how to make one that pickles."""
    import pickle
    import shutil
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from vlmcodec.errors import ModelMismatchError
    from vlmcodec.models.checkpoint import load_model

    img = smooth_image(rng, 40, 56)
    model = tmp_path / "m.safetensors"
    shutil.copy(tiny_model_path, model)
    codec = Codec(model, short_side=32, threads=1)
    copy = pickle.loads(pickle.dumps(codec))
    assert copy.short_side == 32 and copy.fingerprint == codec.fingerprint
    assert copy.encode(img, 40) == codec.encode(img, 40)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert pool.submit(_encode_in_worker, codec, img, 40).result(timeout=300) == codec.encode(img, 40)
    assert pickle.loads(pickle.dumps(Codec(threads=1))).fingerprint == Codec(threads=1).fingerprint  # the default
    data = pickle.dumps(codec)
    other = Codec(tiny_model_path)
    torch.manual_seed(1)
    with torch.no_grad():
        other.model.g_s[0].weight.add_(torch.randn_like(other.model.g_s[0].weight))
    from vlmcodec.models.checkpoint import save_model

    save_model(other.model, model)  # the file changes under the pickled codec
    with pytest.raises(ModelMismatchError, match="changed since the codec was pickled"):
        pickle.loads(data)
    with pytest.raises(TypeError, match="made from a model held in memory .* cannot be pickled"):
        pickle.dumps(Codec(load_model(tiny_model_path)))


def test_threads_calling_vlmcodec_encode_at_once_share_one_codec(tiny_model_path, monkeypatch):
    """(each made its own the first time: a model load and its memory per thread)"""
    import threading

    import vlmcodec
    import vlmcodec.codec as codec_module

    monkeypatch.setattr(vlmcodec, "_codecs", {})
    made = []
    real = codec_module.Codec.__init__

    def counted(self, *args, **kwargs):
        made.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(codec_module.Codec, "__init__", counted)
    img = np.zeros((16, 16, 3), np.uint8)
    streams = []
    threads = [threading.Thread(target=lambda: streams.append(vlmcodec.encode(img, 50, model=str(tiny_model_path))))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len(streams) == 4 and len(set(streams)) == 1


def test_codecs_say_what_they_are(tiny_model_path):
    from vlmcodec import CodecSet
    from vlmcodec.runtime import RemoteCodec

    codec = Codec(tiny_model_path, threads=1, short_side=64)
    assert repr(codec) == f"Codec(model={codec.fingerprint.hex()}, backend=torch, threads=1, short_side=64)"
    assert repr(CodecSet([codec])) == f"CodecSet([{codec!r}])"
    # threads=None: torch runs on the caller's count (the repr said a number, entropy coding's)
    default = Codec(tiny_model_path)
    assert f"threads=None (torch: the caller's; entropy coding: {default.threads})" in repr(default)
    remote = RemoteCodec("http://h:1", token="secret-token")
    assert repr(remote) == "RemoteCodec('http://h:1', timeout_s=300.0, retries=2)" and "secret" not in repr(remote)


def test_a_codec_given_refine_views_as_an_iterator_pickles(tiny_model_path):
    """The pickling recipe kept the iterator as given, used up by the check: unpickling refused it
    (a generator did not pickle at all)."""
    import pickle

    for views in (iter([224]), (v for v in (224, 336))):
        codec = Codec(tiny_model_path, refine_views=views)
        again = pickle.loads(pickle.dumps(codec))
        assert again.refine_views == codec.refine_views and codec.refine_views[0] == 224


def test_numpys_booleans_are_taken_for_switches(tiny_model_path):
    """pre_edit took np.True_, refine_bf16 refused it."""
    codec = Codec(tiny_model_path, refine_bf16=np.True_, pre_edit=np.False_)
    assert codec.refine_bf16 is True and codec.pre_edit is False


def test_the_scale_index_table_is_build_indexes_on_every_exact_scale():
    """_exact_scale_index looks the exact h_s's scales (integers × 2⁻¹²) up in build_indexes's own
    table: the same index at and around every bound, below the first, past the last."""
    import torch

    from vlmcodec.entropy.exact_hyper import ACT_FRAC_BITS

    codec = Codec()
    one = 2**ACT_FRAC_BITS
    bounds = codec.model.gaussian_conditional.scale_table.double()
    around = ((bounds * one).floor().long()[:, None] + torch.arange(-2, 3)).ravel()
    n = torch.cat([around, torch.tensor([-5, 0, 1, 10**6, 10**9])])
    scales = n.double() / one
    assert torch.equal(codec._exact_scale_index(scales), codec._scale_index(scales))
    assert codec._exact_scale_index(scales).dtype == torch.int32


def test_making_a_codec_imports_neither_dynamo_nor_sympy(tiny_model_path):
    """Models are made on the meta device and given the file's tensors; their constructors' initial
    arithmetic on meta tensors ran torch's Python meta kernels, whose first calls imported
    torch._dynamo and sympy: every process's first Codec() took ~1 s instead of ~0.15 s."""
    import subprocess
    import sys

    code = ("import sys, vlmcodec; vlmcodec.Codec({!r}, threads=1); vlmcodec.Codec(threads=1); "
            "print(sorted(m for m in ('torch._dynamo', 'sympy', 'torch.onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code.format(str(tiny_model_path))], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]", out


def test_profiling_turned_off_during_a_stage_does_not_fail_the_coding(tiny_codec, rng):
    """``stage_times`` set to None (by another thread) while a stage runs: that coding goes on and
    its stage's time goes to the dict it began with (it raised AttributeError)."""
    from conftest import smooth_image

    times: dict[str, float] = {}
    tiny_codec.stage_times = times
    real = tiny_codec.backend.analysis

    def switched_off(*a, **kw):
        tiny_codec.stage_times = None
        return real(*a, **kw)

    tiny_codec.backend.analysis = switched_off
    try:
        assert tiny_codec.encode(smooth_image(rng, 64, 64), 50)[:4] == b"VLMC"
    finally:
        del tiny_codec.backend.analysis
        tiny_codec.stage_times = None
    assert "g_a" in times and tiny_codec.stage_times is None
