"""Fused quantization / dequantization kernels against their references: symbols, indices and
y_hat must be equal bit for bit (CPU via Triton's interpreter; GPU tests marked)."""

from __future__ import annotations

import importlib.util
import math
import pathlib

import pytest
import torch

_spec = importlib.util.spec_from_file_location("_vlmcodec_triton_helpers", pathlib.Path(__file__).with_name("conftest_triton.py"))
H = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(H)
H.setup_interpreter()  # before anything in this module imports triton

_NO_TRITON = H.triton_import_error()
if _NO_TRITON:
    pytest.skip(_NO_TRITON, allow_module_level=True)

from vlmcodec.kernels import _utils as U  # noqa: E402
from vlmcodec.kernels import quantize as Q  # noqa: E402
from vlmcodec.kernels._utils import TritonUnavailableError, auto_selects_triton  # noqa: E402
from vlmcodec.kernels.quantize import dequantize_ref, quantize_ref  # noqa: E402

INTERPRETED = H.interpreted()
# the interpreter evaluates NaN/inf/overflow lanes with NumPy, which warns; results are checked
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
cpu = pytest.mark.skipif(not INTERPRETED, reason=H.NOT_INTERPRETED_REASON)


_gpu = H.gpu_only


DTYPES = [torch.float32, torch.float16, torch.bfloat16]
CHANNELS = [3, 128, 192, 320]
# CompressAI's default Gaussian scale table: 64 log-spaced entries from 0.11 to 256
TABLE = torch.exp(torch.linspace(math.log(0.11), math.log(256.0), 64))


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view of a tensor, so that equality is bitwise (-0.0 != 0.0, NaN == same NaN)."""
    view = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
    return t.view(view[t.dtype]) if t.dtype in view else t


def assert_bitwise_equal(got, want):
    for name, a, b in zip(("symbols", "y_hat", "index"), got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(_bits(a.contiguous()), _bits(b.contiguous())), f"{name} differs at {(_bits(a) != _bits(b)).nonzero()[:5].tolist()}"


def _latents(shape, dtype, seed=0):
    """y, mu with many exact .5 ties (half-integer means), negatives, and sigma over the whole table."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.randn(shape, generator=g) * 12).to(dtype)
    mu = (torch.randint(-40, 40, shape, generator=g) * 0.5).to(dtype)
    ties = torch.rand(shape, generator=g) < 0.3
    y = torch.where(ties, (torch.randint(-60, 60, shape, generator=g) + 0.5).to(dtype) + mu, y).to(dtype)
    sigma = torch.exp(torch.rand(shape, generator=g) * 8 - 3)  # 0.05 .. 150
    return y, mu, sigma


@cpu
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("c", CHANNELS)
def test_quantize_matches_reference_bitwise(c, dtype, channels_last):
    y, mu, sigma = _latents((2, c, 3, 5), dtype)
    want = quantize_ref(y, mu, sigma, TABLE)
    if channels_last:
        y, mu, sigma = (t.to(memory_format=torch.channels_last) for t in (y, mu, sigma))
    got = Q.quantize(y, mu, sigma, TABLE, impl="triton")
    assert_bitwise_equal(got, want)
    assert all(t.is_contiguous(memory_format=torch.channels_last) == channels_last for t in got)


@cpu
def test_round_half_to_even_edge_values():
    v = torch.tensor(
        [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, -3.5, 1e6 + 0.5, -1e6 - 0.5, 0.49999997, -0.49999997,
         0.50000006, -0.50000006, 1.4999999, -1.4999999, 2.0**23 - 0.5, -(2.0**23) + 0.5, 2.0**23 + 1, 2.0**24 + 2,
         -(2.0**24) - 2, 2.0**30, -(2.0**30), 0.0, -0.0, 1e-30, -1e-30, 0.3, -0.3, 7.0, -7.0, 1e-45, -1e-45],
        dtype=torch.float32,
    )
    mu = torch.zeros_like(v)
    got = Q.quantize(v, mu, torch.ones_like(v), TABLE, impl="triton")
    want = quantize_ref(v, mu, torch.ones_like(v), TABLE)
    assert_bitwise_equal(got, want)
    # with mu = -0.0 and v != 0, y_hat = round(v) + (-0.0) is round(v) itself, signed zeros included
    neg_zero = torch.full_like(v, -0.0)
    got = Q.quantize(v, neg_zero, torch.ones_like(v), TABLE, impl="triton")
    nz = v != 0
    assert torch.equal(_bits(got[1][nz]), _bits(torch.round(v[nz])))
    assert torch.equal(got[0], torch.round(v).to(torch.int32))


@cpu
def test_round_matches_torch_on_many_halves_and_neighbours():
    k = torch.arange(-3000, 3000, dtype=torch.float32)
    halves = k + 0.5
    around = torch.cat([halves, torch.nextafter(halves, halves + 1), torch.nextafter(halves, halves - 1), k])
    big = torch.tensor([2.0**e + d for e in range(20, 31) for d in (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5)])
    v = torch.cat([around, big, -big])
    mu = torch.randn(v.shape, generator=torch.Generator().manual_seed(3)) * 0  # exact zeros, then offsets
    for offset in (0.0, 0.25, -3.75):
        got = Q.quantize(v + offset, mu + offset, torch.ones_like(v), TABLE, impl="triton")
        assert_bitwise_equal(got, quantize_ref(v + offset, mu + offset, torch.ones_like(v), TABLE))


@cpu
def test_index_on_table_entries_below_bound_above_last_and_nan():
    table = TABLE
    sigma = torch.cat([
        table,  # exactly on every entry: bucketize(right=False) gives that entry's index
        torch.nextafter(table, table + 1),  # just above each entry: the next index
        torch.nextafter(table, table - 1),  # just below
        torch.tensor([0.0, -1.0, 0.05, 0.1099, 0.11, 0.110001, 255.9, 256.0, 256.1, 1e9, float("inf"), float("nan")]),
    ])
    y = torch.zeros_like(sigma)
    got = Q.quantize(y, y, sigma, table, impl="triton")
    want = quantize_ref(y, y, sigma, table)
    assert_bitwise_equal(got, want)
    idx = got[2]
    assert torch.equal(idx[: len(table)], torch.arange(len(table), dtype=torch.int32))
    assert idx[-12:-9].tolist() == [0, 0, 0]  # below the 0.11 bound
    assert idx[-4:].tolist() == [63, 63, 63, 63]  # above the last entry, inf, NaN


@cpu
@pytest.mark.parametrize("table_len", [1, 2, 7, 256])
def test_index_other_table_lengths(table_len):
    table = torch.sort(torch.rand(table_len, generator=torch.Generator().manual_seed(table_len)) * 50 + 0.2).values
    y, mu, sigma = _latents((1, 8, 8, 5), torch.float32, seed=table_len)
    sigma = torch.cat([sigma.flatten()[: 320 - table_len], table]).reshape(1, 8, 8, 5)
    assert_bitwise_equal(Q.quantize(y, mu, sigma, table, impl="triton"), quantize_ref(y, mu, sigma, table))


@cpu
def test_quantize_non_dense_inputs_and_mixed_layouts():
    y, mu, sigma = _latents((2, 16, 6, 5), torch.float32)
    ys = y[:, ::2]  # non-dense view
    mus = mu[:, ::2].to(memory_format=torch.channels_last)  # other layout
    got = Q.quantize(ys, mus, sigma[:, ::2], TABLE, impl="triton")
    assert_bitwise_equal(got, quantize_ref(ys, mus, sigma[:, ::2], TABLE))


@cpu
def test_quantize_empty_and_sigma_dtypes():
    e = torch.empty(0, 3, 2, 2)
    s, yh, k = Q.quantize(e, e, e, TABLE, impl="triton")
    assert s.shape == e.shape and s.dtype == torch.int32 and k.dtype == torch.int32
    y, mu, sigma = _latents((1, 8, 3, 3), torch.float16)
    got = Q.quantize(y, mu, sigma.half(), TABLE, impl="triton")  # fp16 sigma, compared in fp32
    assert_bitwise_equal(got, quantize_ref(y, mu, sigma.half(), TABLE))


def _codec_sigma64(table: torch.Tensor, n_random: int = 500) -> torch.Tensor:
    """float64 scales as the codec's exact h_s gives them: on, just above and just below every
    table entry (within half an fp32 ulp: rounding to fp32 would land on the entry), around the
    bound, inf, NaN, and random values over the table."""
    t64 = table.double()
    inf = torch.full_like(t64, float("inf"))
    edges = torch.tensor([0.0, -1.0, 0.05, 0.11, 0.10999999940395355, 0.1100000001, 1e9, float("inf"), float("nan")],
                         dtype=torch.float64)
    rnd = torch.exp(torch.rand(n_random, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 8 - 3)
    return torch.cat([t64, torch.nextafter(t64, inf), torch.nextafter(t64, -inf), edges, rnd])


@cpu
@pytest.mark.parametrize("y_dtype", [torch.float64, torch.float32, torch.float16], ids=lambda d: str(d).replace("torch.", ""))
def test_float64_sigma_compared_exactly_as_the_codec_does(y_dtype):
    """float64 sigma (the codec's exact h_s scales) is accepted by every impl and compared in float64:
    the indices of ``GaussianConditional.build_indexes`` (the decoder's), bit for bit, in both
    impls. Rounding it to fp32 first would move the scales just above an entry into its bucket."""
    from vlmcodec.entropy.gaussian import GaussianConditional

    gc = GaussianConditional()
    table, bound = gc.scale_table, float(gc.scale_bound)
    sigma = _codec_sigma64(table)
    y, mu, _ = _latents(sigma.shape, y_dtype, seed=11)
    want_idx = gc.build_indexes(sigma)
    ref = Q.quantize(y, mu, sigma, table, impl="torch", scale_bound=bound)
    got = Q.quantize(y, mu, sigma, table, impl="triton", scale_bound=bound)
    assert_bitwise_equal(got, ref)
    assert torch.equal(got[2], want_idx)
    n = len(table)
    above = slice(n, 2 * n - 1)  # just above entries 0..T-2: the next bucket
    assert torch.equal(want_idx[above], torch.arange(1, n, dtype=torch.int32))
    assert not torch.equal(quantize_ref(y, mu, sigma.float(), table, bound)[2][above], want_idx[above])
    # the other outputs do not depend on sigma's dtype; nor do its fp32-exact values' indices
    f32 = sigma.float().double() == sigma
    got32 = Q.quantize(y, mu, sigma.float(), table, impl="triton", scale_bound=bound)
    assert torch.equal(_bits(got32[1]), _bits(got[1])) and torch.equal(got32[0], got[0])
    assert torch.equal(got32[2][f32], got[2][f32])


@cpu
def test_auto_on_a_gpu_takes_the_kernel_for_every_accepted_dtype(monkeypatch):
    """impl="auto" as on a CUDA tensor (the device check simulated): the kernel for every dtype
    it takes (float64 y and sigma included); what it refuses, the reference refuses alike (the
    checks are shared), so "auto" never raises a kernel-only error."""
    monkeypatch.setattr(U, "_compiled_kernel_for", lambda kernel, t: True)
    launches = []
    real_q, real_dq = Q.quantize_fwd, Q.dequantize_fwd
    monkeypatch.setattr(Q, "quantize_fwd", lambda y, *a, **k: launches.append(("q", y.dtype)) or real_q(y, *a, **k))
    monkeypatch.setattr(Q, "dequantize_fwd", lambda s, mu, *a, **k: launches.append(("dq", mu.dtype)) or real_dq(s, mu, *a, **k))
    for dtype in Q.QUANTIZE_DTYPES:
        y, mu, sigma = _latents((1, 6, 3, 4), dtype)
        for sig in (sigma, sigma.double()):
            assert auto_selects_triton(Q._quantize_kernel, y, dtypes=Q.QUANTIZE_DTYPES)
            got = Q.quantize(y, mu, sig, TABLE, impl="auto")
            assert launches[-1] == ("q", dtype)
            assert_bitwise_equal(got, quantize_ref(y, mu, sig, TABLE))
        if dtype != torch.float64:
            assert torch.equal(_bits(Q.dequantize(got[0], mu, impl="auto")), _bits(dequantize_ref(got[0], mu)))
            assert launches[-1] == ("dq", dtype)
    n = len(launches)
    y, mu, sigma = _latents((1, 6, 3, 4), torch.float32)
    for impl in ("auto", "torch"):  # refused alike, by the shared checks, before any launch
        with pytest.raises(ValueError, match="dtype"):
            Q.quantize(y.int(), mu.int(), sigma, TABLE, impl=impl)
        with pytest.raises(ValueError, match="dequantize: mu must have dtype"):
            Q.dequantize(torch.zeros(y.shape, dtype=torch.int32), mu.double(), impl=impl)
    assert len(launches) == n


@cpu
@pytest.mark.parametrize("with_gain", [True, False], ids=["gain", "nogain"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("c", CHANNELS)
def test_dequantize_matches_reference_bitwise(c, dtype, channels_last, with_gain):
    y, mu, sigma = _latents((2, c, 3, 5), dtype)
    symbols = quantize_ref(y, mu, sigma, TABLE)[0]
    gain = (torch.rand(c, generator=torch.Generator().manual_seed(c)) * 2 + 0.25).to(dtype) if with_gain else None
    want = dequantize_ref(symbols, mu, gain)
    if channels_last:
        symbols, mu = symbols.to(memory_format=torch.channels_last), mu.to(memory_format=torch.channels_last)
    got = Q.dequantize(symbols, mu, gain, impl="triton")
    assert got.dtype == dtype
    assert torch.equal(_bits(got.contiguous()), _bits(want))


@cpu
def test_roundtrip_symbols_dequantize_to_y_hat():
    y, mu, sigma = _latents((2, 24, 4, 3), torch.float32)
    s, y_hat, _ = Q.quantize(y, mu, sigma, TABLE, impl="triton")
    assert torch.equal(_bits(Q.dequantize(s, mu, impl="triton")), _bits(y_hat))


@cpu
def test_impl_selection_and_errors():
    y, mu, sigma = _latents((1, 4, 3, 3), torch.float32)
    want = quantize_ref(y, mu, sigma, TABLE)
    assert_bitwise_equal(Q.quantize(y, mu, sigma, TABLE, impl="torch"), want)
    assert_bitwise_equal(Q.quantize(y, mu, sigma, TABLE), want)  # auto on CPU: the reference
    with pytest.raises(ValueError, match="impl"):
        Q.quantize(y, mu, sigma, TABLE, impl="fast")
    with pytest.raises(ValueError, match="one shape"):
        Q.quantize(y, mu[:, :2], sigma, TABLE, impl="triton")
    with pytest.raises(ValueError, match="dtype"):
        Q.quantize(y, mu.half(), sigma, TABLE, impl="triton")
    with pytest.raises(ValueError, match="1..256"):
        Q.quantize(y, mu, sigma, torch.ones(257), impl="triton")
    with pytest.raises(ValueError, match="int32"):
        Q.dequantize(want[0].long(), mu, impl="triton")
    with pytest.raises(ValueError, match="one per channel"):
        Q.dequantize(want[0], mu, torch.ones(3), impl="triton")
    compiled = H.load_kernel_module("quantize", interpret=False)  # compiled kernels in an interpreted process
    with pytest.raises(TritonUnavailableError, match="TRITON_INTERPRET=1"):
        compiled.quantize(y, mu, sigma, TABLE, impl="triton")


# ------------------------------------------------------------------------------------------------
# Real GPU execution (skipped without CUDA)
# ------------------------------------------------------------------------------------------------


@_gpu
@pytest.mark.parametrize("sigma64", [False, True], ids=["sigma32", "sigma64"])
@pytest.mark.parametrize("shape", [(8, 192, 16, 24), (3, 37, 5, 7)], ids=["big", "odd"])  # odd: a masked tail
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES + [torch.float64], ids=lambda d: str(d).replace("torch.", ""))
def test_gpu_quantize_and_dequantize_bitwise(dtype, channels_last, shape, sigma64):
    y, mu, sigma = _latents(shape, dtype)
    if sigma64:  # the codec's exact scales, some within half an fp32 ulp of a table entry
        sigma = sigma.double()
        flat = sigma.flatten()
        edges = _codec_sigma64(TABLE, n_random=0)[: flat.numel()]
        flat[: edges.numel()] = edges
        sigma = flat.reshape(shape)
    want = quantize_ref(y, mu, sigma, TABLE)  # on CPU: encoder/decoder on different devices agree
    y, mu, sigma = (t.cuda() for t in (y, mu, sigma))
    if channels_last:
        y, mu, sigma = (t.to(memory_format=torch.channels_last) for t in (y, mu, sigma))
    assert auto_selects_triton(Q._quantize_kernel, y, dtypes=Q.QUANTIZE_DTYPES)  # what "auto" runs on CUDA
    got = Q.quantize(y, mu, sigma, TABLE.cuda(), impl="triton")  # the kernel, never a fallback
    assert_bitwise_equal([t.cpu() for t in got], want)
    if dtype == torch.float64:  # the codec's symbols; dequantize takes the network's dtypes
        return
    c = shape[1]
    gain = torch.rand(c, device="cuda").to(dtype) + 0.5
    got_dq = Q.dequantize(got[0], mu, gain, impl="triton")
    assert torch.equal(_bits(got_dq.cpu().contiguous()), _bits(dequantize_ref(want[0], mu.cpu(), gain.cpu())))


@pytest.mark.skipif(INTERPRETED, reason="the CPU kernel tests ran in this process")
def test_cpu_tests_in_interpreter_subprocess():
    proc = H.run_pytest_interpreted(__file__)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
