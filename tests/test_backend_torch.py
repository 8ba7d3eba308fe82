"""The optimised torch backend computes the same function as the plain modules."""

import pytest
import torch

from vlmcodec.backends.torch_backend import TorchBackend
from vlmcodec.layers import GDN, FoldedGDN, SubPixelConv, deconv
from vlmcodec.models import MeanScaleHyperprior, ModelConfig


def test_subpixel_equals_transposed_conv():
    torch.manual_seed(0)
    d = deconv(7, 5)
    s = SubPixelConv.from_deconv(d)
    x = torch.randn(2, 7, 9, 13)
    with torch.no_grad():
        torch.testing.assert_close(s(x), d(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        SubPixelConv.from_deconv(torch.nn.ConvTranspose2d(3, 3, 3, stride=2))


@pytest.mark.parametrize("inverse", [False, True])
def test_folded_gdn(inverse):
    g = GDN(12, inverse=inverse)
    with torch.no_grad():
        g.gamma.add_(0.1 * torch.rand_like(g.gamma))
    x = torch.randn(2, 12, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(FoldedGDN(g)(x.clone()), g(x), atol=1e-6, rtol=1e-5)


def test_optimised_backend_matches_plain():
    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=32, M=48)).eval()
    plain, fast = TorchBackend(net, optimize=False), TorchBackend(net, optimize=True)
    x = torch.rand(2, 3, 128, 192)
    y = plain.analysis(x)
    torch.testing.assert_close(fast.analysis(x), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.hyper_analysis(y), plain.hyper_analysis(y), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.synthesis(y), plain.synthesis(y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("optimize", [False, True])
def test_batched_equals_single_bitwise(optimize):
    torch.manual_seed(0)
    net = MeanScaleHyperprior(ModelConfig(N=64, M=128)).eval()  # a size where oneDNN's choice varies
    b = TorchBackend(net, optimize=optimize)
    x = torch.rand(3, 3, 128, 192)
    y = torch.randn(3, 128, 8, 12)
    for fn, inp in ((b.analysis, x), (b.synthesis, y)):
        out = fn(inp)
        for i in range(3):
            assert torch.equal(out[i : i + 1], fn(inp[i : i + 1]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_cuda_backend_matches_cpu_and_cross_decodes(tiny_model_path):
    import numpy as np

    from vlmcodec import Codec

    cpu, gpu = Codec(tiny_model_path, backend="torch"), Codec(tiny_model_path, backend="torch", device="cuda")
    img = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    for data in (cpu.encode(img, 50), gpu.encode(img, 50)):
        a, b = cpu.decode(data), gpu.decode(data)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
def test_cuda_batches_equal_items_byte_for_byte(tiny_model_path):
    """DESIGN.md: batched results equal the unbatched path byte for byte — on CUDA too, where a
    batch may pick other convolution algorithms than one image does."""
    import numpy as np

    from vlmcodec import Codec

    gpu = Codec(tiny_model_path, backend="torch", device="cuda")
    rng = np.random.default_rng(1)
    imgs = [(rng.random((96, 128, 3)) * 255).astype(np.uint8) for _ in range(4)]
    batched = gpu.encode_batch(imgs, [50] * 4)
    assert batched == [gpu.encode(im, 50) for im in imgs]
    decoded = gpu.decode_batch(batched)
    for data, img in zip(batched, decoded):
        assert np.array_equal(img, gpu.decode(data))


def test_backend_options_reach_the_backend(tiny_model_path):
    from vlmcodec import Codec

    assert Codec(tiny_model_path, backend_options={"optimize": False}).backend.optimize is False
    assert Codec(tiny_model_path).backend.optimize is True


def test_unknown_or_clashing_backend_options_are_refused(tiny_model_path):
    from vlmcodec import Codec
    from vlmcodec.backends import backend_options, create_backend
    from vlmcodec.errors import ConfigError
    from vlmcodec.models.checkpoint import load_model

    assert backend_options("torch") == ("device", "threads", "optimize")
    # (threads is always Codec's own: it was listed among the options, then refused as one)
    with pytest.raises(ConfigError, match=r"torch backend has no option 'engines'; its options: device, optimize \("):
        Codec(tiny_model_path, backend_options={"engines": "x"})
    with pytest.raises(ConfigError, match=r"torch backend has no option 'engines'; its options: optimize \("):
        Codec(tiny_model_path, device="cpu", backend_options={"engines": "x"})
    with pytest.raises(ConfigError, match=r"^threads: Codec's own argument \(--threads"):
        Codec(tiny_model_path, backend_options={"threads": 1})
    with pytest.raises(ConfigError, match=r"^device: Codec's own argument, not"):
        Codec(tiny_model_path, device="cpu", backend_options={"device": "cpu"})
    with pytest.raises(ConfigError, match="no option 'optimise'"):
        create_backend("torch", load_model(tiny_model_path).model, optimise=True)
    with pytest.raises(ConfigError, match="unknown backend 'jax'"):  # (BackendUnavailableError: one not runnable)
        backend_options("jax")
    for name in (None, "TORCH"):
        with pytest.raises(ConfigError, match="unknown backend"):
            Codec(tiny_model_path, backend=name)


def test_cli_backend_option(tiny_model_path, tmp_path, rng, capsys):
    from conftest import smooth_image
    from vlmcodec.cli import main
    from vlmcodec.image_io import save_image

    src = tmp_path / "a.png"
    save_image(smooth_image(rng, 48, 64), src)
    base = ["encode", str(src), "-o", str(tmp_path / "a.vlmc"), "--model", str(tiny_model_path), "--quiet"]
    assert main(base + ["--backend-option", "optimize=false"]) == 0
    assert (tmp_path / "a.vlmc").stat().st_size > 0
    assert main(base + ["--backend-option", "fast=1"]) == 2
    assert "torch backend has no option 'fast'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(base + ["--backend-option", "optimize"])
    assert e.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("text,value", [("a=true", True), ("a=False", False), ("a=none", None), ("a=3", 3),
                                        ("a=0.5", 0.5), ("a=/tmp/x", "/tmp/x"), ("a=", "")])
def test_backend_option_values(text, value):
    from vlmcodec.console import backend_option

    assert backend_option(text) == ("a", value)
