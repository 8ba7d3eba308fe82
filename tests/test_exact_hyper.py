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
