"""Gaps found by a mutation run over the entropy models (engine/entropy), the .vlmc container
(engine/bitstream/container.py) and the kernels' Python side (kernels/quantize.py, gdn.py,
_utils.py): each test fails with one (or more) of the mutants the rest of the suite let live."""

from __future__ import annotations

import math
import struct
import zlib

import pytest
import torch

from vlmcodec.bitstream import container
from vlmcodec.entropy import EntropyBottleneck, GaussianConditional, default_scale_table
from vlmcodec.errors import BitstreamError

from test_container import varint as _varint

FP = bytes(range(8))




def _hand_built(flags: int, sizes: bytes, z: bytes = b"zz", y: bytes = b"yyy") -> bytes:
    """A stream written field by field after the fingerprint (``sizes``: the raw size varints),
    one z and one y chunk, its CRC right: only the header's own checks can refuse it."""
    head = b"VLMC" + bytes([1, flags]) + FP + sizes + struct.pack("<H", 5000)
    head += _varint(1) + _varint(1) + _varint(len(z)) + _varint(len(y))
    return head + struct.pack("<I", zlib.crc32(z + y, zlib.crc32(head))) + z + y


# --------------------------------------------------------------------------------------------
# container
# --------------------------------------------------------------------------------------------


def test_hand_built_stream_helper_is_a_valid_stream():
    h, z, y = container.unpack(_hand_built(0, _varint(10) + _varint(7)))
    assert (h.width, h.height, h.quality, z, y) == (10, 7, 50.0, [b"zz"], [b"yyy"])


def test_pack_refuses_unknown_flag_bits():
    with pytest.raises(ValueError, match="unknown header flags 0x04"):
        container.pack(container.Header(FP, 5, 5, 50.0, flags=4), [b"z"], [b"y"])


def test_pack_refuses_a_coded_size_larger_than_the_image():
    for cw, ch in ((11, 5), (5, 8), (11, 8), (0, 7), (10, 0), (0, None)):  # (0 was taken as "the full size")
        with pytest.raises(ValueError, match="coded size"):
            container.pack(container.Header(FP, 10, 7, 50.0, coded_width=cw, coded_height=ch), [b"z"], [b"y"])


def test_rescaled_flag_with_the_full_size_as_coded_size_is_refused():
    ok = _hand_built(container.FLAG_RESCALED, _varint(10) + _varint(7) + _varint(6) + _varint(7))
    h = container.unpack(ok)[0]
    assert (h.coded_width, h.coded_height, h.rescaled, h.coded_hw) == (6, 7, True, (7, 6))
    same = _hand_built(container.FLAG_RESCALED, _varint(10) + _varint(7) + _varint(10) + _varint(7))
    with pytest.raises(BitstreamError, match="coded size equals the image size"):
        container.unpack(same)


def test_zero_width_height_and_chunk_count_are_refused():
    with pytest.raises(BitstreamError, match=r"width = 0 is outside \[1, 16384\]"):
        container.unpack(_hand_built(0, _varint(0) + _varint(7)))
    with pytest.raises(BitstreamError, match=r"height = 0 is outside \[1, 16384\]"):
        container.unpack(_hand_built(0, _varint(7) + _varint(0)))
    head = b"VLMC" + bytes([1, 0]) + FP + _varint(4) + _varint(4) + struct.pack("<H", 5000) + _varint(0) + _varint(1)
    with pytest.raises(BitstreamError, match=r"z chunk count = 0 is outside \[1, 4096\]"):
        container.unpack(head + b"\x00" + struct.pack("<I", zlib.crc32(head + b"\x00")))


def test_quality_is_stored_rounded_to_the_nearest_hundredth():
    # 0.29 * 100 = 28.999999999999996 and 57.01 * 100 = 5700.999999999999: truncation loses 0.01
    for quality, stored in ((0.29, 29), (57.01, 5701), (12.345, 1234), (99.999, 10000)):
        data = container.pack(container.Header(FP, 9, 9, quality), [b"z"], [b"y"])
        assert data[16:18] == struct.pack("<H", stored)  # after 14 fixed bytes and two 1-byte sizes
        assert container.unpack(data)[0].quality == stored / 100


def test_a_varint_of_more_than_five_bytes_is_refused_as_such():
    data = _hand_built(0, b"\xff\xff\xff\xff\xff\x01" + _varint(7))
    with pytest.raises(BitstreamError, match="width is not a valid varint$"):
        container.unpack(data)


def test_payload_span_starts_after_the_crc():
    z, y = [b"z" * 20], [b"a" * 300, b"b" * 280]
    data = container.pack(container.Header(FP, 768, 512, 75.0), z, y)
    start, length = container.payload_span(data)
    assert (start, length) == (len(data) - 600, 600)
    assert data[start:] == b"z" * 20 + b"a" * 300 + b"b" * 280
    assert zlib.crc32(data[start:], zlib.crc32(data[: start - 4])) == struct.unpack("<I", data[start - 4 : start])[0]


# --------------------------------------------------------------------------------------------
# Gaussian conditional
# --------------------------------------------------------------------------------------------


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def test_gaussian_likelihood_is_symmetric_and_precise_in_both_tails():
    gc = GaussianConditional()
    y = torch.tensor([5.0, -5.0, 3.0, -3.0])
    lik = gc.likelihood(y, torch.tensor([1.0, 1.0, 0.5, 0.5]), torch.zeros(4))
    assert torch.equal(lik[0], lik[1]) and torch.equal(lik[2], lik[3])
    for got, v, s in ((lik[1], 5.0, 1.0), (lik[3], 3.0, 0.5)):
        exact = _phi((0.5 - v) / s) - _phi((-0.5 - v) / s)
        assert abs(float(got) / exact - 1) < 1e-5


def test_gaussian_forward_with_noise_decodes_the_rounded_value():
    gc = GaussianConditional()
    torch.manual_seed(0)
    y = torch.tensor([0.2, 0.7, -1.6, 3.49], requires_grad=True)
    means = torch.tensor([0.0, 0.5, 0.1, -0.25])
    y_rate, y_dec, lik = gc(y, torch.ones(4), means, noise=True)
    assert torch.equal(y_dec.detach(), torch.tensor([0.0, 0.5, -1.9, 3.75]))
    assert ((y_rate - y).abs() <= 0.5).all() and not torch.equal(y_rate.detach(), y_dec.detach())
    (g,) = torch.autograd.grad(y_dec.sum(), y)  # straight through
    assert torch.equal(g, torch.ones(4))


def test_build_indexes_bounds_sigma_below_at_scale_bound_as_the_fused_quantizer_does():
    from vlmcodec.kernels.quantize import quantize_ref

    table = torch.tensor([0.11, 0.5, 1.0])
    gc = GaussianConditional(scale_table=table, scale_bound=0.6)
    scales = torch.tensor([0.05, 0.3, 0.55, 0.7, 2.0], dtype=torch.float64)
    idx = gc.build_indexes(scales)
    assert idx.tolist() == [2, 2, 2, 2, 2]
    _, _, k = quantize_ref(torch.zeros(5), torch.zeros(5), scales, table, scale_bound=0.6)
    assert torch.equal(idx, k)
    assert GaussianConditional(scale_table=table).build_indexes(scales).tolist() == [0, 1, 2, 2, 2]


def test_gaussian_pmfs_lengths_offsets_tails_and_values():
    gc = GaussianConditional(scale_table=torch.tensor([0.11, 1.0]))
    pmfs, tails, offsets = gc.pmfs()
    # tail mass 1e-9: the 1 - 0.5e-9 quantile is 6.109 σ; ceil(0.11 · 6.109) = 1, ceil(6.109) = 7
    assert offsets.tolist() == [-1, -7] and [len(p) for p in pmfs] == [3, 15]
    s = float(torch.tensor(0.11))  # the table's float32 entry
    for pmf, scale, center in ((pmfs[0], s, 1), (pmfs[1], 1.0, 7)):
        for i, p in enumerate(pmf):
            v = abs(i - center)
            exact = _phi((0.5 - v) / scale) - _phi((-0.5 - v) / scale)
            assert abs(p - exact) <= 1e-15 + 1e-9 * exact
    assert abs(tails[1] / (2 * _phi(-7.5)) - 1) < 1e-9 and 0 < tails[0] < 1e-40
    assert abs(pmfs[1].sum() + tails[1] - 1) < 1e-12


def test_default_scale_table_is_64_log_spaced_entries_from_0_11_to_256():
    t = default_scale_table()
    assert t.dtype == torch.float32 and t.numel() == 64
    assert float(t[0]) == float(torch.tensor(0.11)) and float(t[-1]) == 256.0
    ratio = math.exp(math.log(256 / 0.11) / 63)
    assert torch.allclose(t[1:] / t[:-1], torch.full((63,), ratio), rtol=1e-5)
    assert torch.equal(GaussianConditional().scale_table, t)


# --------------------------------------------------------------------------------------------
# entropy bottleneck
# --------------------------------------------------------------------------------------------


def _bottleneck(seed: int = 0, channels: int = 2) -> EntropyBottleneck:
    """A bottleneck with every parameter set from a seed, factors not zero (a fresh one has zero
    factors, where the tanh term vanishes)."""
    eb = EntropyBottleneck(channels, filters=(3, 3))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(eb.matrices) + list(eb.biases) + list(eb.factors):
            p.copy_(torch.randn(p.shape, generator=g))
        eb.quantiles.copy_(torch.tensor([[[-2.6, 0.3, 3.1]], [[-4.2, -0.4, 1.7]]])[:channels])
    return eb


def _cdf_logit64(eb: EntropyBottleneck, c: int, x: float) -> float:
    """f(x) of channel c in float64, straight from the definition."""
    v = torch.tensor([[x]], dtype=torch.float64)
    for i in range(len(eb.filters) + 1):
        m = torch.nn.functional.softplus(eb.matrices[i][c].detach().double())
        v = m @ v + eb.biases[i][c].detach().double()
        if i < len(eb.filters):
            v = v + torch.tanh(eb.factors[i][c].detach().double()) * torch.tanh(v)
    return float(v)


def _lik64(eb, c, x):
    lo, up = _cdf_logit64(eb, c, x - 0.5), _cdf_logit64(eb, c, x + 0.5)
    s = -1.0 if lo + up > 0 else 1.0  # the side where the difference is precise
    return abs(1 / (1 + math.exp(-s * up)) - 1 / (1 + math.exp(-s * lo)))


def test_bottleneck_likelihood_follows_the_cdf_network_definition():
    eb = _bottleneck()
    z = torch.tensor([[-3.0, -1.0, 0.0, 0.5, 2.0], [-2.0, -0.4, 0.6, 1.0, 4.0]]).reshape(1, 2, 1, 5)
    lik = eb.likelihood(z)
    for c in range(2):
        for j in range(5):
            exact = _lik64(eb, c, float(z[0, c, 0, j]))
            assert abs(float(lik[0, c, 0, j].detach()) / exact - 1) < 1e-4, (c, j)


def test_bottleneck_likelihood_is_precise_far_above_the_median():
    eb = _bottleneck()
    zs, exact = [], []
    for x in range(1, 200):
        e = _lik64(eb, 0, float(x))
        if 1e-7 < e < 1e-5 and _cdf_logit64(eb, 0, x - 0.5) > 0:  # upper tail: both sigmoids near 1
            zs.append(float(x)); exact.append(e)
    assert zs, "no point in the upper tail"
    lik = eb.likelihood(torch.tensor(zs).reshape(1, 1, 1, -1).expand(1, 2, 1, -1).contiguous())[0, 0, 0]
    for got, e in zip(lik.tolist(), exact):
        assert abs(got / e - 1) < 1e-3


def test_bottleneck_likelihood_at_an_exactly_odd_cdf_logit_is_not_zero():
    eb = _bottleneck()
    with torch.no_grad():
        for b in eb.biases:
            b.zero_()  # f is then an odd function: f(-0.5) = -f(0.5) exactly
    lik = eb.likelihood(torch.zeros(1, 2, 1, 1))
    for c in range(2):
        up = _cdf_logit64(eb, c, 0.5)
        exact = 2 / (1 + math.exp(-up)) - 1
        assert exact > 1e-3 and abs(float(lik[0, c, 0, 0].detach()) / exact - 1) < 1e-5


def test_bottleneck_likelihood_is_lower_bounded_and_keeps_the_batch_order():
    eb = _bottleneck()
    far = eb.likelihood(torch.full((1, 2, 1, 1), 1e4))
    assert torch.equal(far, torch.full((1, 2, 1, 1), float(torch.tensor(1e-9))))
    z = torch.tensor([[-1.0, 2.0, 0.5], [3.0, -2.0, 0.0]]).reshape(2, 1, 1, 3).expand(2, 2, 1, 3).contiguous()
    z[:, 1] += 0.25
    both = eb.likelihood(z)
    assert torch.equal(both[0], eb.likelihood(z[:1])[0]) and torch.equal(both[1], eb.likelihood(z[1:])[0])
    out, lik = eb(z, noise=False)
    assert torch.equal(lik[1], eb(z[1:], noise=False)[1][0])


def test_bottleneck_inference_rounds_around_the_channel_medians():
    eb = _bottleneck()
    z = torch.tensor([1.0, -0.9, 2.45]).reshape(1, 1, 1, 3).expand(1, 2, 1, 3).contiguous()
    out, _ = eb(z, noise=False)
    # medians 0.3 and -0.4: round(z - m) + m
    assert torch.allclose(out[0, 0, 0], torch.tensor([1.3, -0.7, 2.3]), atol=1e-6)
    assert torch.allclose(out[0, 1, 0], torch.tensor([0.6, -0.4, 2.6]), atol=1e-6)


def test_bottleneck_pmfs_support_offsets_and_tails():
    eb = _bottleneck()
    pmfs, tails, offsets = eb.pmfs()
    # channel 0: m = 0.3, ceil(0.3 + 2.6) = 3 below, ceil(3.1 - 0.3) = 3 above
    # channel 1: m = -0.4, ceil(-0.4 + 4.2) = 4 below, ceil(1.7 + 0.4) = 3 above
    assert offsets.tolist() == [-3, -4] and [len(p) for p in pmfs] == [7, 8]
    for c, m, lo in ((0, 0.3, 3), (1, -0.4, 4)):
        for i, p in enumerate(pmfs[c]):
            assert abs(p / _lik64(eb, c, m - lo + i) - 1) < 1e-4
    # the tails of the longest channel (1): mass below its first and above its last value (a
    # shorter channel's upper tail is taken at the longest channel's end, as CompressAI does)
    below = 1 / (1 + math.exp(-_cdf_logit64(eb, 1, -0.4 - 4 - 0.5)))
    above = 1 / (1 + math.exp(_cdf_logit64(eb, 1, -0.4 - 4 + 8 - 0.5)))
    assert below > 1e-3 and above > 1e-4 and abs(tails[1] - (below + above)) < 1e-6
    assert abs(pmfs[1].sum() + tails[1] - 1) < 1e-6


def test_bottleneck_target_and_aux_loss_sum_over_channels():
    eb = EntropyBottleneck(1, tail_mass=1e-9)
    t = math.log(2 / 1e-9 - 1)  # sigmoid(±t) = the tail-mass quantiles 0.5e-9 and 1 - 0.5e-9
    assert torch.allclose(eb.target.double(), torch.tensor([-t, 0.0, t], dtype=torch.float64))
    assert abs(1 / (1 + math.exp(float(eb.target[2]))) - 0.5e-9) < 1e-15
    one, two = _bottleneck(channels=1), _bottleneck(channels=2)
    with torch.no_grad():
        for ps in ("matrices", "biases", "factors", ):
            for p1, p2 in zip(getattr(one, ps), getattr(two, ps)):
                p2.copy_(p1.expand_as(p2))
        two.quantiles.copy_(one.quantiles.expand_as(two.quantiles))
    a1 = float(one.aux_loss().detach())
    expected = sum(abs(_cdf_logit64(one, 0, q) - tq) for q, tq in zip([-2.6, 0.3, 3.1], [-t, 0.0, t]))
    assert abs(a1 / expected - 1) < 1e-5
    assert abs(float(two.aux_loss().detach()) / (2 * a1) - 1) < 1e-6


def test_bottleneck_initialisation_spreads_init_scale_over_the_layers():
    eb = EntropyBottleneck(2, filters=(3, 3, 3, 3), init_scale=10.0)
    scale = 10.0 ** (1 / 5)
    for i, dims_out in enumerate((3, 3, 3, 3, 1)):
        assert torch.allclose(eb.matrices[i], torch.full_like(eb.matrices[i], math.log(math.expm1(1 / scale / dims_out))))
    assert torch.equal(eb.quantiles[:, 0], torch.tensor([[-10.0, 0.0, 10.0]] * 2))


def test_bottleneck_likelihood_trains_the_biases():
    eb = _bottleneck()
    eb.likelihood(torch.tensor([0.5, -1.0]).reshape(1, 1, 1, 2).expand(1, 2, 1, 2).contiguous()).log().sum().backward()
    assert all(b.grad is not None and b.grad.abs().sum() > 0 for b in eb.biases)


# --------------------------------------------------------------------------------------------
# kernels: quantize (the reference, the checks, the launcher's layout handling)
# --------------------------------------------------------------------------------------------


def _interpreted_quantize():
    from vlmcodec.kernels import quantize as Q
    from vlmcodec.kernels._utils import is_triton_available, kernel_is_interpreted

    if not (is_triton_available() and Q._quantize_kernel is not None and kernel_is_interpreted(Q._quantize_kernel)):
        pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1, set by tests/conftest.py without a GPU)")
    return Q


def test_quantize_ref_compares_float64_sigma_with_the_fp32_rounded_table():
    from vlmcodec.kernels.quantize import quantize_ref

    table = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)  # 0.3 is 0.30000001192... in fp32
    sigma = torch.tensor([0.3000000050, 0.3000000200, 0.2999999], dtype=torch.float64)
    _, _, k = quantize_ref(torch.zeros(3), torch.zeros(3), sigma, table, scale_bound=0.11)
    assert k.tolist() == [0, 1, 0]


def test_quantize_refuses_a_sigma_of_another_shape():
    from vlmcodec.kernels.quantize import quantize

    y = torch.zeros(2, 3)
    for sigma in (torch.ones(1), torch.ones(3), torch.ones(2, 3, 1)):
        with pytest.raises(ValueError, match="one shape"):
            quantize(y, y, sigma, default_scale_table(), impl="torch")


def test_quantize_kernel_with_a_dense_y_and_a_mu_of_another_layout():
    Q = _interpreted_quantize()
    g = torch.Generator().manual_seed(3)
    y = torch.randn(1, 4, 3, 5, generator=g) * 4
    mu = (torch.randn(1, 4, 3, 5, generator=g)).to(memory_format=torch.channels_last)
    sigma = torch.rand(1, 4, 3, 5, generator=g) * 3
    table = default_scale_table()
    got = Q.quantize(y, mu, sigma, table, impl="triton")
    ref = Q.quantize_ref(y, mu, sigma, table)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)


@pytest.mark.filterwarnings("ignore:torch.searchsorted")  # (the reference's)
def test_quantize_kernel_outputs_keep_a_dense_layout_with_a_size_one_dim_of_any_stride():
    Q = _interpreted_quantize()
    g = torch.Generator().manual_seed(4)

    def strided(scale=1.0):  # shape (2, 3, 1, 5), strides (3, 1, 7, 6): dense, neither NCHW nor NHWC
        return (torch.randn(30, generator=g) * scale).as_strided((2, 3, 1, 5), (3, 1, 7, 6))

    y, mu, sigma = strided(4.0), strided(), strided(3.0).abs()
    assert Q._is_dense(y) and not y.is_contiguous()
    symbols, y_hat, index = Q.quantize(y, mu, sigma, default_scale_table(), impl="triton")
    assert symbols.stride() == y_hat.stride() == index.stride() == (3, 1, 7, 6)
    for a, b in zip((symbols, y_hat, index), Q.quantize_ref(y, mu, sigma, default_scale_table())):
        assert torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# kernels: gdn's config pruning, _utils
# --------------------------------------------------------------------------------------------


def test_gdn_config_pruning_drops_a_config_whose_input_block_alone_is_too_big():
    triton = pytest.importorskip("triton")
    from vlmcodec.kernels import gdn as G

    wide_ci = triton.Config({"BLOCK_P": 32, "BLOCK_CO": 16, "BLOCK_CI": 64}, num_warps=4)
    fits = triton.Config({"BLOCK_P": 32, "BLOCK_CO": 16, "BLOCK_CI": 16}, num_warps=4)
    assert G._prune_channel_blocks([wide_ci, fits], {"C": 16}) == [fits]
    assert G._prune_channel_blocks([wide_ci, fits], {"C": 64}) == [wide_ci, fits]


def test_next_power_of_2_small_values():
    from vlmcodec.kernels._utils import next_power_of_2

    assert [next_power_of_2(n) for n in (-3, 0, 1, 2, 3, 4, 5, 16, 17)] == [1, 1, 1, 2, 4, 4, 8, 16, 32]


def test_channel_block_pads_to_the_dot_minimum_and_takes_the_limit_itself():
    from vlmcodec.kernels._utils import MAX_GDN_CHANNELS, MIN_DOT_BLOCK, channel_block

    assert [channel_block(c, limit=MAX_GDN_CHANNELS, what="t") for c in (1, 3, 16, 17, 192)] == [MIN_DOT_BLOCK, 16, 16, 32, 256]
    assert channel_block(MAX_GDN_CHANNELS, limit=MAX_GDN_CHANNELS, what="t") == MAX_GDN_CHANNELS
    with pytest.raises(ValueError, match="4097 channels is more than the kernel supports"):
        channel_block(MAX_GDN_CHANNELS + 1, limit=MAX_GDN_CHANNELS, what="t")
    with pytest.raises(ValueError, match="channel count must be positive, got 0"):
        channel_block(0, limit=MAX_GDN_CHANNELS, what="t")


def test_auto_takes_the_kernel_up_to_max_channels_inclusive(monkeypatch):
    from vlmcodec.kernels import _utils as U

    monkeypatch.setattr(U, "_compiled_kernel_for", lambda kernel, t: True)  # a simulated GPU
    at, over = torch.empty(1, U.MAX_GDN_CHANNELS, 1, 1), torch.empty(1, U.MAX_GDN_CHANNELS + 1, 1, 1)
    assert U.auto_selects_triton(object(), at, max_channels=U.MAX_GDN_CHANNELS)
    assert not U.auto_selects_triton(object(), over, max_channels=U.MAX_GDN_CHANNELS)
    assert not U.auto_selects_triton(object(), torch.empty(5), max_channels=U.MAX_GDN_CHANNELS)


def test_check_launchable_refuses_tensors_on_two_devices():
    pytest.importorskip("triton")
    from vlmcodec.kernels import quantize as Q
    from vlmcodec.kernels._utils import check_launchable

    with pytest.raises(ValueError, match=r"all tensors must be on one device, got \['cpu', 'meta'\]"):
        check_launchable(Q._quantize_kernel, torch.zeros(2), torch.zeros(2, device="meta"), op="quantize")


_MIXED_MODE = """
import os
import triton, triton.language  # compiled: the variable is 0 at the first import
os.environ["TRITON_INTERPRET"] = "1"  # so the kernels below are defined interpreted
import torch
from triton.runtime.interpreter import InterpretedFunction
from vlmcodec.kernels import quantize as Q
from vlmcodec.kernels._utils import TritonUnavailableError, check_launchable, kernel_is_interpreted
fn = Q._quantize_kernel
while hasattr(fn, "fn") and not isinstance(fn, InterpretedFunction):
    fn = fn.fn
assert isinstance(fn, InterpretedFunction)
assert not kernel_is_interpreted(Q._quantize_kernel)  # triton.language is compiled: cannot run
try:
    check_launchable(Q._quantize_kernel, torch.zeros(2), op="quantize")
except TritonUnavailableError as e:
    assert "needs Triton's interpreter" in str(e)
else:
    raise AssertionError("mixed modes accepted")
print("ok")
"""


def test_a_kernel_defined_interpreted_in_a_compiled_triton_process_is_not_runnable():
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, "-c", _MIXED_MODE], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
