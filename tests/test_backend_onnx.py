"""The onnxruntime backend: same streams as torch, x̂ parity, cross-decode, graph cache and options."""

from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from vlmcodec import Codec  # noqa: E402
from vlmcodec.backends import create_backend  # noqa: E402
from vlmcodec.errors import BackendUnavailableError, ConfigError, ModelMismatchError  # noqa: E402
from vlmcodec.export.onnx import export_onnx  # noqa: E402
from vlmcodec.export.parity import compare_backends  # noqa: E402
from vlmcodec.image_io import load_image  # noqa: E402
from vlmcodec.models import MeanScaleHyperprior  # noqa: E402
from vlmcodec.models.checkpoint import load_model  # noqa: E402

from conftest import smooth_image  # noqa: E402

KODAK = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "kodak"
X_HAT_TOL = 1e-4  # 0–1 scale


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory):
    """Graph cache in a temporary folder, not the user's home."""
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("xdg")
        mp.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture(scope="module")
def tiny_pair(tiny_model_path):
    loaded = load_model(tiny_model_path)
    return Codec(loaded, backend="torch"), Codec(loaded, backend="onnxruntime")


@pytest.fixture(scope="module")
def default_pair():
    loaded = load_model(Path(__file__).resolve().parents[1] / "engine" / "weights" / "default.safetensors")
    return Codec(loaded, backend="torch", threads=1), Codec(loaded, backend="onnxruntime")


# Encoders on different backends may choose a different symbol where z − median or y − μ lies
# within float noise (~1e-5) of a rounding boundary; a different z symbol then changes μ and σ in
# its neighbourhood, so y symbols and scale indexes there differ too. Such streams are valid and
# decode to the same ŷ on every backend (μ and k come from the exact h_s): the guarantee checked
# below is on the decoder side. Measured on the 24 Kodak images (torch vs ONNX Runtime 1.32, CPU,
# quality 75): encoders differ on 2 images — kodim11 by 1 y symbol, kodim19 by 1 z symbol and,
# downstream of it, 19 y symbols and 240 scale indexes — 21 of 4.9 M symbols; decoder-side
# mismatches 0 in both directions (bench/backends.py reports these counts). A bound is asserted.
MAX_ENCODER_MISMATCH_FRACTION = 1e-4


def _at_rounding_boundary(a, b):
    return abs(abs(a) % 1 - 0.5) < 1e-3 and abs(abs(b) % 1 - 0.5) < 1e-3


def _assert_parity_and_cross_decode(rec, name, exact_encoders=False):
    assert rec["x_hat_max_abs_diff"] <= X_HAT_TOL, (name, rec)
    assert rec["a_to_b_ok"] and rec["b_to_a_ok"], (name, rec)
    assert rec["a_to_b_symbols_equal"] and rec["b_to_a_symbols_equal"], (name, rec)
    assert rec["pixel_max_diff"] <= 1, (name, rec)
    for *_, ra, rb in rec["z_mismatch_where"]:
        assert _at_rounding_boundary(ra, rb), (name, rec)
    if rec["z_mismatch"] == 0:  # then μ and σ are equal, and y can only differ at a boundary
        assert rec["index_mismatch"] == 0, (name, rec)
        for *_, ra, rb in rec["y_mismatch_where"]:
            assert _at_rounding_boundary(ra, rb), (name, rec)
    assert rec["y_mismatch"] + rec["z_mismatch"] <= MAX_ENCODER_MISMATCH_FRACTION * rec["symbols"] * 10, (name, rec)
    if exact_encoders:
        assert rec["y_mismatch"] == 0 and rec["z_mismatch"] == 0 and rec["streams_equal"], (name, rec)


def test_tiny_model_roundtrip_and_same_streams(tiny_pair, rng):
    ct, co = tiny_pair
    assert co.backend.name == "onnxruntime"
    for h, w in [(37, 53), (64, 64), (100, 130)]:
        img = smooth_image(rng, h, w)
        rec = compare_backends(ct, co, img, quality=40)
        _assert_parity_and_cross_decode(rec, (h, w), exact_encoders=True)
    imgs = [smooth_image(rng, 70, 90) for _ in range(3)]
    assert co.encode_batch(imgs, [10, 50, 90]) == [co.encode(i, q) for i, q in zip(imgs, [10, 50, 90])]


def test_kodak_two_crops_parity_and_cross_decode(default_pair):
    """Fast variant of the 24-image test: two Kodak images, cropped to 256×384."""
    ct, co = default_pair
    for name in ("kodim01.png", "kodim23.png"):
        if not (KODAK / name).is_file():
            pytest.skip(f"Kodak image {name} not found in {KODAK}")
        img = load_image(KODAK / name)[128:384, 128:512]
        _assert_parity_and_cross_decode(compare_backends(ct, co, img), name)


@pytest.mark.slow
def test_kodak_24_parity_and_cross_decode(default_pair):
    """x̂ max abs error ≤ 1e-4 and identical symbols/streams, both decode directions, all 24 images."""
    ct, co = default_pair
    files = sorted(KODAK.glob("kodim*.png"))
    if len(files) != 24:
        pytest.skip(f"expected the 24 Kodak images in {KODAK}, found {len(files)}")
    records = []
    for f in files:
        records.append(compare_backends(ct, co, load_image(f)))
        _assert_parity_and_cross_decode(records[-1], f.name)
    total = sum(r["symbols"] for r in records)
    mismatched = sum(r["y_mismatch"] + r["z_mismatch"] for r in records)
    assert mismatched <= MAX_ENCODER_MISMATCH_FRACTION * total, (mismatched, total)


def test_graph_cache_reused_and_keyed_by_fingerprint(tiny_model_path, onnx_cache):
    loaded = load_model(tiny_model_path)
    a = create_backend("onnxruntime", loaded.model, threads=1)
    stamp = (a.graph_dir / "manifest.json").stat().st_mtime_ns
    b = create_backend("onnxruntime", loaded.model, threads=1)
    assert b.graph_dir == a.graph_dir and (b.graph_dir / "manifest.json").stat().st_mtime_ns == stamp
    assert str(a.graph_dir).startswith(str(onnx_cache))
    other = MeanScaleHyperprior(loaded.model.config)
    c = create_backend("onnxruntime", other, threads=1)
    assert c.graph_dir != a.graph_dir


def test_explicit_graphs_and_mismatch(tiny_model_path, tmp_path):
    loaded = load_model(tiny_model_path)
    export_onnx(loaded, tmp_path)
    be = create_backend("onnxruntime", loaded.model, graphs=tmp_path, threads=1, allow_spinning=False)
    assert be.graph_dir == tmp_path
    with pytest.raises(ModelMismatchError):
        create_backend("onnxruntime", MeanScaleHyperprior(loaded.model.config), graphs=tmp_path)
    with pytest.raises(ConfigError, match="export"):
        create_backend("onnxruntime", loaded.model, graphs=tmp_path / "missing")


def test_session_options(tiny_model_path):
    be = create_backend("onnxruntime", load_model(tiny_model_path).model, threads=1, inter_op_threads=1)
    for sess in be.sessions.values():
        opts = sess.get_session_options()
        assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
        assert opts.get_session_config_entry("session.set_denormal_as_zero") == "1"
        assert opts.enable_mem_pattern is False  # re-planned at every change of shape: slow
    assert be.providers == ["CPUExecutionProvider"]
    on = Codec(tiny_model_path, backend="onnxruntime", threads=1, backend_options={"memory_pattern": True})
    assert all(s.get_session_options().enable_mem_pattern for s in on.backend.sessions.values())
    with pytest.raises(ConfigError, match="optimization"):
        create_backend("onnxruntime", load_model(tiny_model_path).model, optimization="max")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA EP present")
def test_cuda_without_cuda_provider_is_reported(tiny_model_path):
    with pytest.raises(BackendUnavailableError, match="CUDA execution provider"):
        create_backend("onnxruntime", load_model(tiny_model_path).model, device="cuda")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="CUDA EP present")
@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
class CudaReportingSession(ort.InferenceSession):
    """A session that runs on the CPU but reports CUDA's provider, as where it is created; keeps
    the providers it was asked for in ``asked``."""

    def __init__(self, path, sess_options=None, providers=None):
        self.asked = providers
        super().__init__(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_provider_that_cannot_be_created_is_reported(tiny_model_path, monkeypatch):
    """onnxruntime-gpu lists its CUDA provider even where it cannot create it (CUDA or cuDNN
    libraries that do not load); the sessions then ran on the CPU, silently. Stand-in: this
    onnxruntime made to list it; then sessions made to report it, as where it is created."""
    model = load_model(tiny_model_path).model
    listed = ["CUDAExecutionProvider", *ort.get_available_providers()]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    with pytest.raises(BackendUnavailableError,
                       match="could not create its CUDA execution provider .*got CPUExecutionProvider"):
        create_backend("onnxruntime", model, device="cuda")

    monkeypatch.setattr(ort, "InferenceSession", CudaReportingSession)
    be = create_backend("onnxruntime", model, device="cuda:1")
    assert be.providers[0] == "CUDAExecutionProvider" and not be.item_by_item
    assert all(s.asked[0] == ("CUDAExecutionProvider", {"device_id": 1}) for s in be.sessions.values())


def test_cli_backend_onnxruntime(tiny_model_path, tmp_path, rng, capsys):
    from vlmcodec.cli import main
    from vlmcodec.image_io import save_image

    src = tmp_path / "a.png"
    save_image(smooth_image(rng, 80, 96), src)
    assert main(["encode", str(src), "-o", str(tmp_path / "a.vlmc"), "--model", str(tiny_model_path),
                 "--backend", "onnxruntime", "--quiet"]) == 0
    assert main(["decode", str(tmp_path / "a.vlmc"), "-o", str(tmp_path / "b.png"), "--model", str(tiny_model_path),
                 "--backend", "onnxruntime", "--quiet"]) == 0
    assert load_image(tmp_path / "b.png").shape == (80, 96, 3)
    assert main(["export", "--format", "onnx", "-o", str(tmp_path / "g"), "--model", str(tiny_model_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["g_a.onnx", "g_s.onnx", "h_a.onnx", "h_s.onnx",
                                                                   "manifest.json"]
    assert main(["export", "--format", "onnx", "--fp16", "-o", str(tmp_path / "h")]) == 2
    assert "tensorrt only" in capsys.readouterr().err
    # the TensorRT profile's settings too (--max-batch 4 was taken and unused)
    for flags in (["--max-batch", "4"], ["--max-size", "512x512"], ["--opt-batch", "1"]):
        assert main(["export", "--format", "onnx", *flags, "-o", str(tmp_path / "h")]) == 2
        assert f"{flags[0]}: for --format tensorrt only" in capsys.readouterr().err


def test_cache_with_other_export_settings_is_rebuilt(tiny_model_path, onnx_cache):
    from vlmcodec.export.manifest import network_fingerprint

    model = load_model(tiny_model_path).model
    stale = onnx_cache / "vlmcodec" / "onnx" / network_fingerprint(model)[:16]
    export_onnx(model, stale, subpixel=True)
    be = create_backend("onnxruntime", model, threads=1)
    assert be.graph_dir == stale and be.manifest["rewrites"] == {"fold_gdn": True, "subpixel": False}


def test_damaged_cache_is_rebuilt(tiny_model_path):
    model = load_model(tiny_model_path).model
    a = create_backend("onnxruntime", model, threads=1)
    g_s = a.graph_dir / "g_s.onnx"
    g_s.write_bytes(g_s.read_bytes()[:100])  # truncated file: checksum mismatch
    b = create_backend("onnxruntime", model, threads=1)
    assert b.graph_dir == a.graph_dir
    y = np.random.default_rng(0).standard_normal((1, model.M, 2, 3)).astype(np.float32)
    import torch

    with torch.no_grad():
        np.testing.assert_allclose(b.synthesis(torch.from_numpy(y)).numpy(), model.g_s(torch.from_numpy(y)).numpy(),
                                   atol=1e-4)


def _pre_editor_codecs(tmp_path, g_a_gain: float = 1.0):
    """A tiny model with a (non-identity) pre-editor, as torch and onnxruntime codecs."""
    from vlmcodec.models import ModelConfig

    if "pre_editor" not in ModelConfig.__dataclass_fields__:
        pytest.skip("this build's models have no pre-editor")
    import torch

    from vlmcodec.models.checkpoint import save_model

    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, pre_editor=True))
    with torch.no_grad():
        net.pre_editor.out.weight.normal_(0, 0.05)
        net.g_a[-1].weight.mul_(g_a_gain)
    save_model(net, tmp_path / "pe.safetensors")
    loaded = load_model(tmp_path / "pe.safetensors")
    return Codec(loaded, backend="torch"), Codec(loaded, backend="onnxruntime")


def test_pre_editor_model_same_streams(tmp_path, rng):
    import torch

    ct, co = _pre_editor_codecs(tmp_path, g_a_gain=40.0)
    assert "pre_editor" in co.backend.sessions
    x = torch.rand(2, 3, 64, 128)
    torch.testing.assert_close(co.backend.pre_edit(x), ct.backend.pre_edit(x), atol=1e-5, rtol=0)
    img = smooth_image(rng, 70, 90)
    _assert_parity_and_cross_decode(compare_backends(ct, co, img), "pre-editor")


def test_pre_editor_above_the_window_runs_windowed_in_torch(tmp_path, monkeypatch):
    """The exported pre-editor attends globally (memory ∝ tokens²); above the attention window
    the onnxruntime backend runs the torch module's windowed attention instead of the graph."""
    import torch

    from vlmcodec.models.pre_editor import PreEditor

    ct, co = _pre_editor_codecs(tmp_path)
    x = torch.rand(1, 3, 64, 128)  # 4×8 tokens
    graph_out = co.backend.pre_edit(x)
    monkeypatch.setattr(PreEditor, "global_attention_tokens", None)  # global up to the window only
    monkeypatch.setattr(PreEditor, "attention_window", 4)  # now the grid is wider than a window
    calls = []
    run = co.backend._run
    monkeypatch.setattr(co.backend, "_run", lambda name, t: calls.append(name) or run(name, t))
    windowed = co.backend.pre_edit(x)
    assert "pre_editor" not in calls
    torch.testing.assert_close(windowed, ct.backend.pre_edit(x), atol=1e-5, rtol=0)
    assert not torch.equal(windowed, graph_out)  # windows did change the attention
    monkeypatch.setattr(PreEditor, "attention_window", 8)
    co.backend.pre_edit(x)
    assert calls == ["pre_editor"]  # fits in a window: the graph runs


def test_cpu_batches_run_item_by_item_and_equal_single_calls(tmp_path, rng, monkeypatch):
    """On the CPU provider every graph sees one item at a time (a whole-batch run may pick other
    kernels, other rounding): a batch's streams equal single calls' by construction, and a new
    batch size is no new shape for ONNX Runtime. ``item_by_item=False`` runs whole batches."""
    import torch

    ct, co = _pre_editor_codecs(tmp_path, g_a_gain=40.0)
    assert co.backend.item_by_item
    shapes = []
    run = co.backend._run_graph
    monkeypatch.setattr(co.backend, "_run_graph", lambda name, t: shapes.append((name, t.shape[0])) or run(name, t))
    imgs = [smooth_image(rng, 60, 70) for _ in range(3)]
    streams = co.encode_batch(imgs, 50)
    assert shapes and {n for _, n in shapes} == {1}
    assert {name for name, _ in shapes} == {"pre_editor", "g_a", "h_a"}
    shapes.clear()
    assert streams == [co.encode(im, 50) for im in imgs]
    decoded = co.decode_batch(streams)
    assert all(np.array_equal(d, co.decode(s)) for d, s in zip(decoded, streams))
    x = torch.rand(3, 3, 64, 64)
    one_by_one = torch.cat([co.backend.analysis(x[i : i + 1]) for i in range(3)])
    assert torch.equal(co.backend.analysis(x), one_by_one)
    whole = Codec(co.loaded, backend="onnxruntime", backend_options={"item_by_item": False})
    assert not whole.backend.item_by_item
    shapes_whole = []
    run_whole = whole.backend._run_graph
    monkeypatch.setattr(whole.backend, "_run_graph",
                        lambda name, t: shapes_whole.append(t.shape[0]) or run_whole(name, t))
    torch.testing.assert_close(whole.backend.analysis(x), one_by_one, atol=1e-4, rtol=0)
    assert shapes_whole == [3]


def test_caller_keeps_subnormals(tiny_model_path):
    """ORT's denormal flushing must not leak into the caller's thread (numpy, hypothesis...)."""
    import numpy as np

    from vlmcodec import Codec

    codec = Codec(tiny_model_path, backend="onnxruntime")
    codec.encode(np.zeros((64, 64, 3), np.uint8), 50)
    assert float(np.float32(1e-39) * np.float32(1.0)) != 0.0


def test_consumer_scale_streams_cross_decode(tiny_pair, rng):
    """short_side works on every backend: the resizes live in Codec, outside the networks."""
    ct, co = tiny_pair
    img = smooth_image(rng, 150, 100)
    st, so = ct.encode(img, 50, short_side=48), co.encode(img, 50, short_side=48)
    assert st == so  # the tiny model's encoders agree exactly (see the test above)
    for a, b in ((ct, co), (co, ct)):
        out_a, out_b = a.decode(st), b.decode(st)
        assert out_a.shape == img.shape and np.abs(out_a.astype(int) - out_b.astype(int)).max() <= 1


def test_large_images_run_g_a_and_g_s_in_bands(tiny_pair, monkeypatch):
    """Above band_pixels the graphs run over row bands and give the one-pass values."""
    import torch

    from conftest import check_backend_row_bands

    check_backend_row_bands(tiny_pair[1].backend, monkeypatch, torch.rand(1, 3, 192, 128))


def test_memory_estimate_applies_to_onnxruntime_on_cpu(tmp_path, monkeypatch, rng):
    """The onnxruntime backend on the CPU gets its own estimate (arena floor + bytes per pixel;
    item by item, or a whole batch in one graph run): exactly enough memory codes, one byte less
    is refused (by a codec that has not run yet: a warm one counts what its arenas keep as taken)."""
    from vlmcodec import memory
    from vlmcodec.errors import ResourceError

    ct, co = _pre_editor_codecs(tmp_path)
    imgs = [smooth_image(rng, 60, 60) for _ in range(3)]  # padded to 64x64
    px = 64 * 64
    first, more, base = memory.onnxruntime_cost("encode", px, global_attention=True)
    assert (first, more, base) == (memory.ONNXRUNTIME_BYTES_PER_PIXEL["encode"],
                                   memory.ONNXRUNTIME_ITEM_BATCH_BYTES_PER_PIXEL["encode"],
                                   memory.ONNXRUNTIME_SMALL_BYTES_PER_PIXEL["encode"] * px)
    need = memory.SETUP_BYTES + base + px * (first + 2 * more)
    monkeypatch.setattr(memory, "available_memory", lambda: need)
    streams = co.encode_batch(imgs, [50] * 3)
    monkeypatch.setattr(memory, "available_memory", lambda: need - 1)
    with pytest.raises(ResourceError, match="encoding of 3 images"):
        Codec(co.loaded, backend="onnxruntime").encode_batch(imgs, [50] * 3)

    def whole() -> Codec:
        return Codec(co.loaded, backend="onnxruntime", backend_options={"item_by_item": False})

    w_more = memory.onnxruntime_cost("encode", px, global_attention=True, item_by_item=False)[1]
    assert w_more == memory.ONNXRUNTIME_BATCH_BYTES_PER_PIXEL["encode-global"] > more
    monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + base + px * (first + 2 * w_more))
    assert whole().encode_batch(imgs, [50] * 3) == streams
    monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + base + px * (first + 2 * w_more) - 1)
    with pytest.raises(ResourceError, match="encoding of 3 images"):
        whole().encode_batch(imgs, [50] * 3)
    # the torch backend's estimate for the same batch is far smaller: it is not the one applied
    assert ct.encode_batch(imgs, [50] * 3) == streams
    d_first, d_more, d_base = memory.onnxruntime_cost("decode", px)
    assert d_more == memory.ONNXRUNTIME_ITEM_BATCH_BYTES_PER_PIXEL["decode"]
    monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + d_base + px * d_first)
    assert co.decode(streams[0]).shape == imgs[0].shape
    monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + d_base + px * d_first - 1)
    with pytest.raises(ResourceError, match="decoding"):
        Codec(co.loaded, backend="onnxruntime").decode(streams[0])
    no_pre = Codec(co.loaded, backend="onnxruntime", pre_edit=False)
    n_first, _, n_base = memory.onnxruntime_cost("encode-no-pre-edit", px)
    monkeypatch.setattr(memory, "available_memory", lambda: memory.SETUP_BYTES + n_base + px * n_first - 1)
    with pytest.raises(ResourceError, match="encoding"):
        no_pre.encode(imgs[0], 50)
    assert Codec(co.loaded, backend="onnxruntime", check_memory=False).encode(imgs[0], 50)


def test_onnxruntime_cost_by_size():
    from vlmcodec import memory

    band = 1 << 20
    whole, item = memory.ONNXRUNTIME_BATCH_BYTES_PER_PIXEL, memory.ONNXRUNTIME_ITEM_BATCH_BYTES_PER_PIXEL
    assert memory.onnxruntime_cost("encode", 4 * band, global_attention=False, item_by_item=False)[1] == whole["encode"]
    assert memory.onnxruntime_cost("decode", band + 1, banded=True, item_by_item=False)[1] == whole["decode"]
    assert memory.onnxruntime_cost("encode-no-pre-edit", band, banded=False, item_by_item=False)[1] == \
        whole["encode-no-pre-edit-small"]
    assert memory.onnxruntime_cost("encode", band, global_attention=True)[1] == item["encode"]
    assert memory.onnxruntime_cost("decode", band + 1, banded=True)[1] == item["decode"]
    assert memory.onnxruntime_cost("decode", band)[1] == item["decode"]
    assert memory.onnxruntime_cost("decode", 64 * 64)[2] < 4 << 20  # a thumbnail: no 600 MiB floor
    assert memory.onnxruntime_cost("decode", 4096 * 3072)[2] == memory.ONNXRUNTIME_BASE_BYTES["decode"]


# peaks of one image measured with scripts/memory_probe.py --backend onnxruntime (results/
# memory_onnxruntime.txt and README "Large images"; the larger of that and the re-measurement
# with the tuned malloc, results/allocator/memory_probe_onnxruntime.txt): (kind, H×W) → bytes
# per pixel
ORT_MEASURED = {("encode", 256 * 256): 782, ("encode", 512 * 768): 872, ("encode", 768 * 1024): 759,
                ("encode", 1536 * 2048): 194, ("encode", 3072 * 4096): 102,
                ("encode-no-pre-edit", 256 * 256): 206, ("encode-no-pre-edit", 512 * 768): 292,
                ("encode-no-pre-edit", 768 * 1024): 308, ("encode-no-pre-edit", 1536 * 2048): 172,
                ("encode-no-pre-edit", 3072 * 4096): 86, ("decode", 256 * 256): 563, ("decode", 512 * 768): 615,
                ("decode", 768 * 1024): 640, ("decode", 1536 * 2048): 235, ("decode", 3072 * 4096): 134}


# each further image of a batch of 4, item by item (the default on the CPU): (kind, H×W) → bytes
# per pixel, the same probe with --batch 4 (the larger of results/memory_onnxruntime.txt —
# decode: results/memory_decode_batch.txt — and the tuned-malloc re-measurement)
ORT_ITEM_BATCH_MEASURED = {("encode", 768 * 1024): 39, ("encode", 1536 * 2048): 21, ("encode", 3072 * 4096): 24,
                           ("encode-no-pre-edit", 768 * 1024): 11, ("encode-no-pre-edit", 1536 * 2048): 12,
                           ("encode-no-pre-edit", 3072 * 4096): 5, ("decode", 768 * 1024): 39,
                           ("decode", 1536 * 2048): 15, ("decode", 3072 * 4096): 8}


@pytest.mark.parametrize("kind,pixels", sorted(ORT_ITEM_BATCH_MEASURED))
def test_onnxruntime_item_batch_estimate_covers_the_measured_growth(kind, pixels):
    from vlmcodec import memory

    more = memory.onnxruntime_cost(kind, pixels, global_attention=pixels <= 1024 * 1024,
                                   banded=pixels > memory_band_threshold())[1]
    assert ORT_ITEM_BATCH_MEASURED[kind, pixels] <= more <= 6 * max(ORT_ITEM_BATCH_MEASURED[kind, pixels], 10)


def memory_band_threshold() -> int:
    from vlmcodec.backends.onnxruntime_backend import OnnxRuntimeBackend

    return OnnxRuntimeBackend.band_pixels


@pytest.mark.parametrize("kind,pixels", sorted(ORT_MEASURED))
def test_onnxruntime_estimate_covers_the_measured_peaks(kind, pixels):
    from vlmcodec import memory

    first, _, base = memory.onnxruntime_cost(kind, pixels, global_attention=pixels <= 1024 * 1024)
    need = base + first * pixels
    assert need >= ORT_MEASURED[kind, pixels] * pixels
    assert need <= 3 * ORT_MEASURED[kind, pixels] * pixels  # not so far above that it refuses in vain


def test_processes_replacing_a_stale_cache_at_once_each_get_a_usable_one(tiny_model_path, tmp_path, monkeypatch):
    """Workers starting together after an upgrade left a stale export: one deleted the folder while
    another installed its own there, and the first's rename then failed with a raw OSError
    ("Directory not empty"; 3 of 20 rounds of 4 processes). The moment is made to happen here: as
    soon as the stale folder is gone, "another process" installs a fresh export."""
    import os
    import shutil

    from vlmcodec.backends.onnxruntime_backend import cached_graphs
    from vlmcodec.export.manifest import network_fingerprint

    loaded = load_model(tiny_model_path)
    directory = tmp_path / network_fingerprint(loaded.model)[:16]
    export_onnx(loaded, directory, subpixel=True)  # stale: other export settings
    real_replace, real_rmtree, installed = os.replace, shutil.rmtree, []

    def the_other_process_installs() -> None:
        if not directory.exists() and not installed:
            installed.append(True)
            export_onnx(loaded, tmp_path / "other")
            real_replace(tmp_path / "other", directory)

    def replace(src, dst):
        real_replace(src, dst)
        the_other_process_installs()

    def rmtree(path, *args, **kwargs):
        real_rmtree(path, *args, **kwargs)
        the_other_process_installs()

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    assert cached_graphs(loaded.model, tmp_path) == directory and installed
    monkeypatch.undo()
    codec = Codec(loaded, backend="onnxruntime", backend_options={"graphs": str(directory)})
    assert codec.decode(codec.encode(smooth_image(np.random.default_rng(0), 32, 48), 50)).shape == (32, 48, 3)


def test_the_cache_sweeps_abandoned_exports_and_follows_the_umask(tiny_model_path, tmp_path):
    """A process killed mid-export (SIGKILL, out of memory) left its temporary folder for good: the
    next export removes those older than an hour (a younger one may be another process's, under
    way). The installed folder has the umask's permissions (mkdtemp's 0700 kept others out)."""
    import os

    from vlmcodec.backends.onnxruntime_backend import ABANDONED_EXPORT_S, cached_graphs
    from vlmcodec.export.manifest import network_fingerprint

    loaded = load_model(tiny_model_path)
    name = network_fingerprint(loaded.model)[:16]
    abandoned, under_way = tmp_path / f".{name}.k1ll3d", tmp_path / f".{name}.bu5y00"
    for folder in (abandoned, under_way):
        (folder / ".onnx-export.x").mkdir(parents=True)
        (folder / ".onnx-export.x" / "g_a.onnx").write_bytes(b"half")
    old = os.stat(abandoned).st_mtime - ABANDONED_EXPORT_S - 60
    os.utime(abandoned, (old, old))
    mask = os.umask(0o022)
    try:
        directory = cached_graphs(loaded.model, tmp_path)
    finally:
        os.umask(mask)
    assert directory == tmp_path / name and not abandoned.exists() and under_way.exists()
    assert directory.stat().st_mode & 0o777 == 0o755


def test_a_hand_edited_manifest_is_a_config_error(tiny_model_path, tmp_path):
    """(KeyError, AttributeError, TypeError, IndexError; a renamed input or output failed only at
    the first encode, inside onnxruntime)"""
    import json
    import shutil

    loaded = load_model(tiny_model_path)
    good = tmp_path / "good"
    export_onnx(loaded, good)
    manifest = json.loads((good / "manifest.json").read_text())
    edits = {"no file": lambda m: m["graphs"]["g_a"].pop("file"), "no sha": lambda m: m["graphs"]["g_a"].pop("sha256"),
             "no graphs": lambda m: m.pop("graphs"), "graphs a list": lambda m: m.update(graphs=[]),
             "file null": lambda m: m["graphs"]["g_a"].update(file=None),
             "no inputs": lambda m: m["graphs"]["g_a"].update(inputs=[]),
             "renamed output": lambda m: m["graphs"]["g_s"]["outputs"][0].update(name="other"),
             "another graph": lambda m: m["graphs"].update(g_a=dict(m["graphs"]["h_a"]))}
    for i, (what, edit) in enumerate(edits.items()):
        folder = tmp_path / f"edited{i}"
        shutil.copytree(good, folder)
        edited = json.loads(json.dumps(manifest))
        edit(edited)
        (folder / "manifest.json").write_text(json.dumps(edited))
        with pytest.raises(ConfigError):
            Codec(loaded, backend="onnxruntime", backend_options={"graphs": str(folder)})
        # sessions made before the refusal had set FTZ/DAZ on this thread and kept it
        assert float(np.float32(1e-39) * np.float32(1.0)) != 0.0, what
    (tmp_path / "edited0" / "manifest.json").write_text("[]")
    with pytest.raises(ConfigError, match="not a manifest"):
        Codec(loaded, backend="onnxruntime", backend_options={"graphs": str(tmp_path / "edited0")})


def test_backend_options_are_taken_as_meant(tiny_model_path, tmp_path, monkeypatch):
    """"false"/"off" for a switch was true (any string is); a folder named 2024 from the command
    line (a number) was a TypeError; an unusable cache folder a raw OSError; a LoadedModel given
    to load_onnx_manifest an AttributeError."""
    from vlmcodec.export.onnx import load_onnx_manifest

    loaded = load_model(tiny_model_path)
    for name in ("allow_spinning", "memory_pattern", "item_by_item"):
        for value in ("false", "off", 0):
            with pytest.raises(ConfigError, match=f"{name} must be true or false"):
                Codec(loaded, backend="onnxruntime", backend_options={name: value})
    monkeypatch.chdir(tmp_path)
    export_onnx(loaded, tmp_path / "2024")
    codec = Codec(loaded, backend="onnxruntime", backend_options={"graphs": 2024})
    assert codec.backend.graph_dir == Path("2024")
    with pytest.raises(ConfigError, match="graphs must be a folder"):
        Codec(loaded, backend="onnxruntime", backend_options={"graphs": True})
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match="cannot make its graph cache"):
        Codec(loaded, backend="onnxruntime", backend_options={"cache_dir": str(tmp_path / "a.png" / "x")})
    assert load_onnx_manifest(tmp_path / "2024", loaded)["format"]


def test_a_torch_device_without_data_is_refused_before_the_shared_model_moves(tiny_model_path):
    """device="meta" moved the caller's model there: a NotImplementedError, and every codec
    sharing the model broken for good."""
    loaded = load_model(tiny_model_path)
    first = Codec(loaded, threads=1)
    img = smooth_image(np.random.default_rng(0), 32, 48)
    ref = first.encode(img, 50)
    for device in ("meta", "mps", "xla"):
        with pytest.raises(ConfigError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
            Codec(loaded, device=device)
    assert first.encode(img, 50) == ref


def test_a_bad_hs_device_is_refused_before_the_graphs_are_exported(tiny_model_path, tmp_path, monkeypatch):
    """(it was checked after the backend was made: a whole ONNX export first)"""
    import torch

    from vlmcodec.errors import VlmcodecError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bad = ["gpu", "meta"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in bad:
        with pytest.raises(VlmcodecError, match="hs_device"):
            Codec(tiny_model_path, backend="onnxruntime", hs_device=device)
    assert not (tmp_path / "cache").exists()


def test_threads_bound_the_torch_stages_of_an_onnxruntime_codec(tiny_model_path, rng):
    """Codec(threads=1) on onnxruntime ran its exact h_s (torch work) on the calling thread's
    torch count (2 here), though threads is "the networks' CPU threads" whatever the backend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        codec = Codec(tiny_model_path, backend="onnxruntime", threads=1)
        seen = []
        exact = codec.exact_hs
        codec.exact_hs = lambda z: (seen.append(torch.get_num_threads()), exact(z))[1]
        torch.set_num_threads(2)  # (as another codec, or the application, may leave it)
        data = codec.encode(smooth_image(rng, 64, 64), 50)
        codec.decode(data)
        assert seen and set(seen) == {1}, seen
    finally:
        torch.set_num_threads(before)


def test_a_folder_option_is_the_folder_as_typed(tiny_model_path, rng, tmp_path, monkeypatch, capsys):
    """--backend-option read graphs=007 as the number 7 (the folder "7"), graphs=2024.06 and
    graphs=inf as floats (refused); graphs= (empty) looked in the current folder."""
    from PIL import Image

    from vlmcodec.cli import main

    loaded = load_model(tiny_model_path)
    Image.fromarray(smooth_image(rng, 64, 64)).save(tmp_path / "in.png")
    monkeypatch.chdir(tmp_path)
    for name in ("007", "2024.06", "inf"):
        export_onnx(loaded, tmp_path / name)
        assert main(["encode", "in.png", "-o", f"{name}.vlmc", "--model", str(tiny_model_path), "--backend",
                     "onnxruntime", "--backend-option", f"graphs={name}", "--quiet"]) == 0, capsys.readouterr().err
    assert main(["encode", "in.png", "-o", "e.vlmc", "--model", str(tiny_model_path), "--backend", "onnxruntime",
                 "--backend-option", "graphs=", "--quiet"]) == 2
    assert "graphs must be a folder, got ''" in capsys.readouterr().err


def test_inter_op_threads_above_one_runs_the_parallel_mode(tiny_pair, rng):
    """inter_op_threads was set on sessions in sequential mode, which never reads it."""
    torch_codec, ort_codec = tiny_pair
    parallel = Codec(ort_codec.loaded, backend="onnxruntime", backend_options={"inter_op_threads": 2})
    modes = {s.get_session_options().execution_mode for s in parallel.backend.sessions.values()}
    assert modes == {ort.ExecutionMode.ORT_PARALLEL}
    assert {s.get_session_options().execution_mode for s in ort_codec.backend.sessions.values()} == {
        ort.ExecutionMode.ORT_SEQUENTIAL}
    img = smooth_image(rng, 70, 90)
    assert parallel.encode(img, 40) == torch_codec.encode(img, 40)


def test_a_process_waits_for_anothers_export_and_takes_it(tiny_model_path, tmp_path, monkeypatch):
    """Two processes replacing a stale cache at once: one could move the other's fresh install
    aside after deciding, before it, that the folder was stale (the other then failed: "no
    manifest.json"). An export now runs under a lock beside the folder, and whoever gets the lock
    looks again first: here "another process" holds it and installs a fresh export meanwhile."""
    import fcntl
    import threading

    from vlmcodec.backends import onnxruntime_backend as orb
    from vlmcodec.export.manifest import network_fingerprint

    loaded = load_model(tiny_model_path)
    directory = tmp_path / network_fingerprint(loaded.model)[:16]
    export_onnx(loaded, directory, subpixel=True)  # stale
    exports = []
    monkeypatch.setattr("vlmcodec.export.onnx.export_onnx", lambda *a, **k: exports.append(a) or export_onnx(*a, **k))
    held = open(tmp_path / f".{directory.name}.lock", "a")
    fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # the other process's export is running
    got = []
    waiter = threading.Thread(target=lambda: got.append(orb.cached_graphs(loaded.model, tmp_path)))
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive() and not got  # it waits for the lock
    fresh = tmp_path / "fresh"
    export_onnx(loaded, fresh)
    import shutil

    shutil.rmtree(directory)
    fresh.rename(directory)  # the other process installed its export
    held.close()  # and let go
    waiter.join(60)
    assert got == [directory] and exports == []  # taken as installed, not exported again


def test_a_cache_another_vlmcodec_made_is_exported_again(tiny_model_path, onnx_cache):
    import json

    import vlmcodec
    from vlmcodec.export.manifest import network_fingerprint

    model = load_model(tiny_model_path).model
    folder = onnx_cache / "vlmcodec" / "onnx" / network_fingerprint(model)[:16]
    export_onnx(model, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["versions"]["vlmcodec"] = "0.0.1"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    be = create_backend("onnxruntime", model, threads=1)
    assert be.graph_dir == folder and be.manifest["versions"]["vlmcodec"] == vlmcodec.__version__


def test_spinning_and_inter_op_threads_reach_the_sessions(tiny_model_path):
    """allow_spinning=False and inter_op_threads=2 are what the sessions are made with (spinning
    off, parallel execution), and the defaults what they say (spinning on, sequential)."""
    model = load_model(tiny_model_path).model
    quiet = create_backend("onnxruntime", model, threads=1, allow_spinning=False)
    busy = create_backend("onnxruntime", model, threads=1, inter_op_threads=2)
    for sess in quiet.sessions.values():
        opts = sess.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    for sess in busy.sessions.values():
        opts = sess.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        assert opts.execution_mode == ort.ExecutionMode.ORT_PARALLEL and opts.inter_op_num_threads == 2


def test_a_batch_of_two_runs_item_by_item_on_the_cpu(tiny_model_path, monkeypatch):
    """On the CPU a batch runs one item at a time from two items up (so that a batch gives the
    bytes single calls give)."""
    import torch

    backend = create_backend("onnxruntime", load_model(tiny_model_path).model, threads=1)
    seen: list[int] = []
    run = backend._run_graph
    monkeypatch.setattr(backend, "_run_graph", lambda name, t: seen.append(t.shape[0]) or run(name, t))
    backend.hyper_analysis(torch.rand(2, 24, 4, 4))
    assert seen == [1, 1]
