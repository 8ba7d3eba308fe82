"""The fixed-point h_s: close to the float network, and bit-identical across batch sizes,
thread counts and memory layouts (the property that makes streams decodable anywhere)."""

import pytest
import torch

from vlmcodec.entropy.exact_hyper import ExactHyperSynthesis
from vlmcodec.models import MeanScaleHyperprior, ModelConfig


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    return MeanScaleHyperprior(ModelConfig(N=32, M=48, num_levels=1, lmbdas=(0.01,))).eval()


def test_close_to_float(net):
    ex = ExactHyperSynthesis.from_module(net.h_s)
    z = torch.round(torch.randn(3, 32, 5, 7) * 4) + 0.3
    with torch.no_grad():
        s_ref, m_ref = net.h_s(z).chunk(2, 1)
    s, m = ex(z)
    scale = float(torch.cat([s_ref, m_ref]).abs().max())
    assert float((s.float() - s_ref).abs().max()) <= 5e-3 * max(scale, 1)
    assert float((m.float() - m_ref).abs().max()) <= 5e-3 * max(scale, 1)


def test_building_it_leaves_the_callers_h_s_as_it_was():
    """from_module called .cpu()/.float() on the caller's transposed convs (in place): a float64
    h_s came out mixed float32/float64, and a model on a GPU got two of its layers moved back."""
    import copy

    torch.manual_seed(2)
    h_s = copy.deepcopy(MeanScaleHyperprior(ModelConfig(N=8, M=12, num_levels=1, lmbdas=(0.01,))).h_s).double()
    before = [(id(p), p.dtype, p.device) for p in h_s.parameters()]
    ExactHyperSynthesis.from_module(h_s)
    assert [(id(p), p.dtype, p.device) for p in h_s.parameters()] == before
    assert {p.dtype for p in h_s.parameters()} == {torch.float64}


def test_batch_and_thread_invariant(net):
    ex = ExactHyperSynthesis.from_module(net.h_s)
    z = torch.round(torch.randn(5, 32, 6, 9) * 6)
    s_all, m_all = ex(z)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for b in range(5):
            s, m = ex(z[b : b + 1])
            assert torch.equal(s, s_all[b : b + 1]) and torch.equal(m, m_all[b : b + 1])
    finally:
        torch.set_num_threads(threads)
    s_cl, m_cl = ex(z.contiguous(memory_format=torch.channels_last))
    assert torch.equal(s_cl.contiguous(), s_all) and torch.equal(m_cl.contiguous(), m_all)


def test_outputs_are_dyadic(net):
    ex = ExactHyperSynthesis.from_module(net.h_s)
    s, _ = ex(torch.round(torch.randn(1, 32, 3, 3) * 3))
    fixed = s * 2.0**12
    assert torch.equal(fixed, torch.round(fixed))


def test_overflow_is_detected(net):
    ex = ExactHyperSynthesis.from_module(net.h_s)
    with pytest.raises(OverflowError):
        ex(torch.full((1, 32, 2, 2), 1e12))


def _default_exact_hs():
    from vlmcodec.codec import default_model_path
    from vlmcodec.models.checkpoint import load_model

    return ExactHyperSynthesis.from_module(load_model(default_model_path()).model.h_s)


def test_im2col_path_gives_the_same_bits(net):
    """The GPU formulation (im2col + float64 matmul, no cuDNN) run on the CPU: bit-identical to
    the convolutions, for the default model and a small one, several batch sizes and grids."""
    torch.manual_seed(3)
    for ex, n in ((ExactHyperSynthesis.from_module(net.h_s), 32), (_default_exact_hs(), 64)):
        col = ex.to("cpu", im2col=True)
        assert all(layer.im2col for layer in col.layers if not isinstance(layer, str))
        assert not any(layer.im2col for layer in ex.layers if not isinstance(layer, str))
        for shape in ((1, n, 8, 12), (3, n, 5, 7), (2, n, 1, 1)):
            z = torch.round(torch.randn(shape) * 8) + torch.rand(1, n, 1, 1)  # + per-channel medians
            s, m = ex(z)
            s2, m2 = col(z)
            assert torch.equal(s, s2) and torch.equal(m, m2), shape
            assert s2.device.type == "cpu" and s2.dtype == torch.float64


def test_hs_device_is_checked(tiny_model_path, tmp_path, capsys):
    from vlmcodec import BackendUnavailableError, Codec, ConfigError

    assert Codec(tiny_model_path, hs_device="cpu").hs_device == "cpu"
    with pytest.raises(ConfigError, match="hs_device must be 'cpu', 'cuda' or 'cuda:N', got 'meta'"):
        Codec(tiny_model_path, hs_device="meta")
    with pytest.raises(ConfigError, match="hs_device"):
        Codec(tiny_model_path, hs_device="not a device")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="not available: torch sees no CUDA GPU"):
            Codec(tiny_model_path, hs_device="cuda")
        from vlmcodec.cli import main

        stream = tmp_path / "a.vlmc"
        stream.write_bytes(b"")  # never read: the codec is refused first
        assert main(["decode", str(stream), "--model", str(tiny_model_path), "--hs-device", "cuda"]) == 2
        assert "hs_device 'cuda' not available" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="not available: needs a CUDA GPU (torch sees none)")
def test_exact_hs_on_cuda_gives_the_cpu_bits(rng):
    """hs_device="cuda": the same entropy parameters, bit for bit, hence the same streams, which
    a CPU codec decodes to the same pixels."""
    from conftest import smooth_image
    from vlmcodec import Codec

    ex = _default_exact_hs()
    gpu = ex.to("cuda")
    torch.manual_seed(4)
    for shape in ((1, 64, 8, 12), (4, 64, 13, 9), (1, 64, 40, 60)):
        z = torch.round(torch.randn(shape) * 10) + torch.rand(1, 64, 1, 1)
        s, m = ex(z)
        s2, m2 = gpu(z)
        assert s2.device.type == "cpu"
        assert torch.equal(s, s2) and torch.equal(m, m2), shape
    cpu_codec, gpu_codec = Codec(), Codec(hs_device="cuda")
    for h, w in ((512, 768), (300, 200), (1100, 1700)):
        img = smooth_image(rng, h, w)
        data = cpu_codec.encode(img, 50)
        assert gpu_codec.encode(img, 50) == data
        assert (gpu_codec.decode(data) == cpu_codec.decode(data)).all()


def test_layers_it_cannot_run_exactly_are_refused():
    """A LeakyReLU of another slope than 0.01 (it computed with 0.01), and a transposed conv with
    im2col: ValueError, never a silently different h_s."""
    from torch import nn

    with pytest.raises(ValueError, match="LeakyReLU"):
        ExactHyperSynthesis.from_module(nn.Sequential(nn.LeakyReLU(0.2)))
    exact = ExactHyperSynthesis.from_module(nn.Sequential(nn.ConvTranspose2d(4, 4, 3, 1, 1)))
    with pytest.raises(ValueError):
        exact.to("cpu", im2col=True)
