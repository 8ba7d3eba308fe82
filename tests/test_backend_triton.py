"""The triton backend (fused GDN and quantization kernels) against the torch backend.

On a machine without a GPU this runs the kernels under Triton's interpreter in a subprocess
(TRITON_INTERPRET must be set before triton is first imported), on small images.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install triton==3.7.1)")

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ.setdefault("TRITON_INTERPRET", "1")
    import numpy as np, torch
    from vlmcodec import Codec
    model = sys.argv[1]
    torch.manual_seed(0)
    ref = Codec(model, backend="torch")
    tri = Codec(model, backend="triton")
    rng = np.random.default_rng(0)
    # count the kernels' launches: the backend runs them, not the torch references (whose streams
    # would equal the torch backend's as well)
    from vlmcodec.kernels import gdn as G, quantize as Q
    launches = {"gdn": 0, "quantize": 0}
    real_gdn_fwd, real_qfwd = G.gdn_fwd, Q.quantize_fwd
    G.gdn_fwd = lambda *a, **k: launches.__setitem__("gdn", launches["gdn"] + 1) or real_gdn_fwd(*a, **k)
    Q.quantize_fwd = lambda *a, **k: launches.__setitem__("quantize", launches["quantize"] + 1) or real_qfwd(*a, **k)
    for h, w in [(64, 64), (70, 90)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        a, b = ref.encode(img, 60), tri.encode(img, 60)
        # byte-identical streams (README, "Backends"): symbols could differ only where float GDN
        # rounding moved y across a .5 boundary, which these images do not hit
        assert a == b, ("streams differ", len(a), len(b))
        # and each backend decodes them (cross-decode) to pixels within one level (GDN in floats)
        x1, x2 = ref.decode(a), tri.decode(a)
        assert x1.shape == (h, w, 3) and x2.shape == (h, w, 3)
        assert np.abs(x1.astype(int) - x2.astype(int)).max() <= 1
    # the default model on crops of the sample images (README: "streams byte-identical to torch")
    from vlmcodec.image_io import load_image
    samples = os.path.join(sys.argv[2], "assets", "samples")
    ref_d, tri_d = Codec(backend="torch"), Codec(backend="triton")
    for name in ("kodim15.png", "kodim23.png"):
        img = load_image(os.path.join(samples, name))[:96, :128]
        for q in (20, 60):
            a, b = ref_d.encode(img, q), tri_d.encode(img, q)
            assert a == b, (name, q, len(a), len(b))
            assert np.abs(ref_d.decode(a).astype(int) - tri_d.decode(a).astype(int)).max() <= 1, (name, q)
    assert launches["gdn"] > 0 and launches["quantize"] > 0, launches
    # above band_pixels g_a and g_s run in row bands, through the fused kernels too
    be = tri.backend
    x = torch.rand(1, 3, 128, 96)
    y_one = be.analysis(x)
    x_one = be.synthesis(y_one)
    calls = []
    real = be._run
    be._run = lambda net, t: calls.append(t.shape[-2]) or real(net, t)
    be.band_pixels = 32 * 96
    assert torch.allclose(be.analysis(x), y_one, atol=1e-5, rtol=1e-5) and len(calls) > 1 and max(calls) < 128
    calls.clear()
    assert torch.allclose(be.synthesis(y_one), x_one, atol=1e-5, rtol=1e-5) and len(calls) > 1
    # the fused path's entropy parameters run in row bands too, with the same bits
    import vlmcodec.codec as codec_module
    img = rng.integers(0, 256, (400, 130, 3), dtype=np.uint8)  # padded to 448 rows: ẑ has 7
    whole = tri.encode(img, 60)
    codec_module.ENTROPY_BAND_PIXELS = 64 * 64
    hs_rows = []
    real_hs = tri.exact_hs
    tri.exact_hs = lambda z: hs_rows.append(z.shape[-2]) or real_hs(z)
    assert tri.encode(img, 60) == whole and len(hs_rows) > 1 and max(hs_rows) < 7, hs_rows
    # the fused quantization gives the torch path's symbols (y - mu rounded in float64, here at
    # near-ties that float32 rounds the other way) and the decoder's indices (sigma clamped at the
    # model's scale_bound, here not CompressAI's 0.11), bit for bit
    from vlmcodec.models import MeanScaleHyperprior, ModelConfig
    from vlmcodec.models.checkpoint import save_model
    net = MeanScaleHyperprior(ModelConfig(N=16, M=24, num_levels=3, lmbdas=(0.001, 0.004, 0.016)))
    with torch.no_grad():
        net.g_a[-1].weight.mul_(40.0)  # large latents: many symbols, scales across the table
        net.gaussian_conditional.scale_bound.fill_(0.5)
    bound_path = os.path.join(os.path.dirname(__file__), "bound05.safetensors")
    save_model(net, bound_path)
    ref5, tri5 = Codec(bound_path, backend="torch"), Codec(bound_path, backend="triton")
    y = (torch.randn(1, 24, 4, 5) * 50).float()
    means = y.double() + torch.tensor([101.4999999, -3.4999997, 5.4999998, -0.50000003],
                                      dtype=torch.float64).repeat(120).reshape(1, 24, 4, 5)
    scales = (torch.rand(1, 24, 4, 5, dtype=torch.float64) * 4096).round() / 4096
    sym, idx = tri5.backend.quantize(y, means, scales, tri5.scale_table64, tri5.scale_bound)
    assert np.array_equal(sym[0].numpy(), ref5._y_symbols(y[0], means[0], None))
    assert torch.equal(idx.long(), ref5.model.gaussian_conditional.build_indexes(scales).long())
    for h, w in [(64, 64), (48, 80)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        data = tri5.encode(img, 60)
        assert np.abs(ref5.decode(data).astype(int) - ref5.decode(ref5.encode(img, 60)).astype(int)).max() <= 1
    print("OK")
    """
)


def test_triton_backend_cross_decodes_with_torch(tiny_model_path, tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run([sys.executable, str(script), str(tiny_model_path), str(REPO)], capture_output=True,
                       text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "OK" in r.stdout


def test_triton_backend_unavailable_message(tiny_model_path):
    """Without a GPU and without the interpreter, asking for triton is a clear error."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the triton backend is available")
    code = ("import sys\nfrom vlmcodec import Codec\nfrom vlmcodec.errors import BackendUnavailableError\n"
            "try:\n    Codec(sys.argv[1], backend='triton')\nexcept BackendUnavailableError as e:\n"
            "    print('UNAVAILABLE', e)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code, str(tiny_model_path)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert "UNAVAILABLE" in r.stdout and "TRITON_INTERPRET" in r.stdout, r.stdout + r.stderr[-2000:]


GPU_SCRIPT = textwrap.dedent(
    """
    import os, sys
    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "must run compiled"
    import numpy as np, torch
    from vlmcodec import Codec
    from vlmcodec.image_io import load_image
    from vlmcodec.kernels import gdn as G, quantize as Q
    from vlmcodec.kernels._utils import kernel_is_interpreted, triton_language_interpreted

    tri = Codec(backend="triton", device="cuda")
    ref = Codec(backend="torch", device="cuda")
    ref_cpu = Codec(backend="torch")  # the CPU reference decoder
    assert not triton_language_interpreted() and not kernel_is_interpreted(G._gdn_fwd_kernel)
    assert tri.backend.device.type == "cuda" and ref.backend.device.type == "cuda"
    # count the compiled kernels' launches: the fused path ran, nothing fell back to torch
    launches = {"gdn": 0, "quantize": 0}
    real_gdn_fwd, real_qfwd = G.gdn_fwd, Q.quantize_fwd
    G.gdn_fwd = lambda *a, **k: launches.__setitem__("gdn", launches["gdn"] + 1) or real_gdn_fwd(*a, **k)
    Q.quantize_fwd = lambda *a, **k: launches.__setitem__("quantize", launches["quantize"] + 1) or real_qfwd(*a, **k)
    samples = os.path.join(sys.argv[1], "assets", "samples")
    for name in ("kodim15.png", "kodim23.png"):
        full = load_image(os.path.join(samples, name))
        for h, w in [(96, 128), (77, 101)]:  # an odd size: padded, masked pixel tails
            img = np.ascontiguousarray(full[:h, :w])
            for q in (20, 60):
                a, b = ref.encode(img, q), tri.encode(img, q)
                assert a == b, ("streams differ", name, h, w, q, len(a), len(b))
                c = ref_cpu.encode(img, q)
                # each backend decodes the others' streams: pixels within one level (GDN in floats)
                for data in (a, c):
                    x_tri, x_ref, x_cpu = tri.decode(data), ref.decode(data), ref_cpu.decode(data)
                    assert x_tri.shape == (h, w, 3)
                    for other in (x_ref, x_cpu):
                        assert np.abs(x_tri.astype(int) - other.astype(int)).max() <= 1, (name, h, w, q)
                print(name, h, w, q, len(a), "identical; CPU torch stream", "identical" if c == a else "differs")
    assert launches["gdn"] > 0 and launches["quantize"] > 0, launches
    print("OK", launches)
    """
)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_gpu_triton_backend_streams_identical_to_torch(tmp_path):
    """On a CUDA device, compiled (no TRITON_INTERPRET): the triton backend's streams are the torch
    backend's byte for byte, and each decodes the other's (and the CPU torch codec's) streams to
    pixels within one level."""
    script = tmp_path / "gpu_run.py"
    script.write_text(GPU_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, str(script), str(REPO)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-4000:]
    assert "OK" in r.stdout, r.stdout[-3000:]
