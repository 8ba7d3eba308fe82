"""Fused GDN / IGDN kernels against ``gdn_ref`` (CPU via Triton's interpreter; GPU tests marked)."""

from __future__ import annotations

import importlib.util
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
from vlmcodec.kernels import gdn as G  # noqa: E402
from vlmcodec.kernels._utils import IMPLS, MAX_GDN_CHANNELS, TritonUnavailableError, auto_selects_triton  # noqa: E402
from vlmcodec.kernels.gdn import gdn_fold, gdn_ref  # noqa: E402

INTERPRETED = H.interpreted()
cpu = pytest.mark.skipif(not INTERPRETED, reason=H.NOT_INTERPRETED_REASON)


_gpu = H.gpu_only

CHANNELS = [3, 128, 192, 320]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _params(c: int, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    beta = torch.rand(c, generator=g) + 0.5
    # off-diagonal mixing on the scale GDN layers learn (CompressAI initialises gamma = 0.1·I)
    gamma = 0.1 * torch.eye(c) + torch.rand(c, c, generator=g) * (0.2 / c)
    return beta.to(dtype), gamma.to(dtype)


def _input(shape, dtype, channels_last: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3).to(dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x


@cpu
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("inverse", [False, True], ids=["gdn", "igdn"])
def test_forward_matches_reference(inverse, c, dtype, channels_last):
    x = _input((2, c, 5, 7), dtype, channels_last)
    beta, gamma = _params(c)
    y = G.gdn(x, beta, gamma, inverse=inverse, impl="triton")
    expected = gdn_ref(x.double(), beta.double(), gamma.double(), inverse)
    assert y.dtype == dtype and y.shape == x.shape
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last  # layout preserved
    assert H.rel_err(y, expected) <= H.tolerance(dtype)


@cpu
@pytest.mark.parametrize("shape", [(1, 5, 1, 1), (3, 17, 1, 9), (1, 33, 13, 3), (0, 4, 3, 3)])
def test_forward_irregular_shapes(shape):
    x = _input(shape, torch.float32, False)
    beta, gamma = _params(shape[1])
    y = G.gdn(x, beta, gamma, impl="triton")
    assert y.shape == x.shape
    if x.numel():
        assert H.rel_err(y, gdn_ref(x.double(), beta.double(), gamma.double())) <= 1e-5


@cpu
def test_forward_strided_input_and_4d_gamma():
    # a channel slice: neither NCHW- nor NHWC-contiguous; gamma given as the conv weight [C, C, 1, 1]
    base = _input((2, 40, 6, 5), torch.float32, False)
    x = base[:, 3:35:2]  # 16 channels, stride 2 in C
    beta, gamma = _params(16)
    y = G.gdn(x, beta, gamma.reshape(16, 16, 1, 1), impl="triton")
    assert H.rel_err(y, gdn_ref(x.double(), beta.double(), gamma.double())) <= 1e-5


@cpu
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("c", [3, 128, 192])
@pytest.mark.parametrize("inverse", [False, True], ids=["gdn", "igdn"])
def test_backward_matches_autograd_of_reference(inverse, c, channels_last):
    x = _input((2, c, 3, 5), torch.float32, channels_last).requires_grad_()
    beta, gamma = _params(c)
    beta.requires_grad_()
    gamma.requires_grad_()
    dy = _input((2, c, 3, 5), torch.float32, False, seed=7)
    got = torch.autograd.grad(G.gdn(x, beta, gamma, inverse=inverse, impl="triton"), (x, beta, gamma), dy)

    x64, b64, g64 = (t.detach().double().requires_grad_() for t in (x, beta, gamma))
    want = torch.autograd.grad(gdn_ref(x64, b64, g64, inverse), (x64, b64, g64), dy.double())
    for name, a, e in zip(("dx", "dbeta", "dgamma"), got, want):
        assert a.shape == e.shape, name
        assert H.rel_err(a, e) <= 1e-5, name
    assert got[0].is_contiguous(memory_format=torch.channels_last) == channels_last


@cpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_backward_half_precision(dtype):
    c = 24
    x = _input((2, c, 3, 4), dtype, False).requires_grad_()
    beta, gamma = _params(c)
    dy = _input((2, c, 3, 4), dtype, False, seed=3)
    (dx,) = torch.autograd.grad(G.gdn(x, beta, gamma, impl="triton"), (x,), dy)
    x64 = x.detach().double().requires_grad_()
    (want,) = torch.autograd.grad(gdn_ref(x64, beta.double(), gamma.double()), (x64,), dy.double())
    assert dx.dtype == dtype
    assert H.rel_err(dx, want) <= H.tolerance(dtype)


@cpu
def test_gradcheck_small():
    # gradcheck needs float64; the kernels run fp32, so compare the analytic (Triton) Jacobian with
    # the reference's numerical one at fp32-appropriate tolerances instead of torch.autograd.gradcheck.
    c = 5
    x = _input((1, c, 2, 3), torch.float32, False).requires_grad_()
    beta, gamma = _params(c)
    y = G.gdn(x, beta, gamma, inverse=True, impl="triton")
    jac = torch.stack([torch.autograd.grad(y.flatten()[i], x, retain_graph=True)[0].flatten() for i in range(y.numel())])
    x64 = x.detach().double()
    eps = 1e-6
    num = torch.empty(y.numel(), x.numel(), dtype=torch.float64)
    for j in range(x.numel()):
        d = torch.zeros(x.numel(), dtype=torch.float64)
        d[j] = eps
        d = d.view_as(x64)
        f = lambda t: gdn_ref(t, beta.double(), gamma.double(), True).flatten()  # noqa: E731
        num[:, j] = (f(x64 + d) - f(x64 - d)) / (2 * eps)
    assert H.rel_err(jac, num) <= 1e-5


@cpu
def test_fold_matches_compressai_parametrizer():
    pedestal = 2.0**-36
    beta_param = torch.tensor([-1.0, 0.0, 1e-4, 0.5, 2.0])
    gamma_param = torch.tensor([[-0.3, 0.0], [2.0**-18, 0.7]])
    beta, gamma = gdn_fold(beta_param, gamma_param)
    beta_bound = torch.tensor((1e-6 + pedestal) ** 0.5, dtype=torch.float32)
    gamma_bound = torch.tensor(2.0**-18, dtype=torch.float32)
    expected_beta = torch.max(beta_param, beta_bound) ** 2 - torch.tensor(pedestal, dtype=torch.float32)
    expected_gamma = torch.max(gamma_param, gamma_bound) ** 2 - torch.tensor(pedestal, dtype=torch.float32)
    assert torch.equal(beta, expected_beta) and torch.equal(gamma, expected_gamma)
    assert (beta > 0).all() and (gamma >= 0).all()
    assert abs(float(beta[0]) - 1e-6) < 1e-12  # bounded below at beta_min


@cpu
def test_fold_gradient_passes_through_like_lower_bound():
    p = torch.tensor([-1.0, 1.0], requires_grad=True)
    beta, _ = gdn_fold(p, torch.ones(1, 1))
    # below the bound the gradient passes only when it would push the parameter up (grad < 0)
    (g_pos,) = torch.autograd.grad(beta.sum(), p, retain_graph=True)
    assert g_pos[0] == 0 and g_pos[1] == 2.0
    (g_neg,) = torch.autograd.grad((-beta).sum(), p)
    assert g_neg[0] != 0


@cpu
def test_impl_selection_on_cpu():
    x = _input((1, 4, 3, 3), torch.float32, False)
    beta, gamma = _params(4)
    ref = gdn_ref(x, beta, gamma)
    assert torch.equal(G.gdn(x, beta, gamma, impl="torch"), ref)
    assert torch.equal(G.gdn(x, beta, gamma, impl="auto"), ref)  # CPU tensors: auto = reference
    with pytest.raises(ValueError, match="impl"):
        G.gdn(x, beta, gamma, impl="cuda")


@cpu
def test_triton_on_cpu_without_interpreter_is_a_clear_error():
    compiled = H.load_kernel_module("gdn", interpret=False)  # compiled kernels in an interpreted process
    x = _input((1, 4, 3, 3), torch.float32, False)
    beta, gamma = _params(4)
    with pytest.raises(TritonUnavailableError, match="TRITON_INTERPRET=1"):
        compiled.gdn(x, beta, gamma, impl="triton")


@pytest.mark.parametrize(
    "shape, beta_n, gamma_n, match",
    [
        ((2, 4, 3), 4, 16, "4-D"),
        ((1, 4, 3, 3), 3, 16, "beta"),
        ((1, 4, 3, 3), 4, 12, "gamma"),
        ((1, 5000, 1, 1), 5000, 5000 * 5000, "more than the kernel supports"),
    ],
)
@cpu
def test_bad_arguments_raise_value_error(shape, beta_n, gamma_n, match):
    x = torch.zeros(shape)
    with pytest.raises(ValueError, match=match):
        G.gdn_fwd(x, torch.ones(beta_n), torch.zeros(gamma_n))


@pytest.mark.parametrize("shape, beta_n, gamma_n, match",
                         [((2, 4, 3), 4, 16, "4-D"), ((1, 4, 3, 3), 3, 16, "beta"), ((1, 4, 3, 3), 4, 12, "gamma")])
def test_the_reference_path_checks_arguments_too(shape, beta_n, gamma_n, match):
    """impl="torch" (and "auto" on CPU) names the wrong argument (it was a raw reshape/conv error)."""
    for impl in ("torch", "auto"):
        with pytest.raises(ValueError, match=match):
            G.gdn(torch.zeros(shape), torch.ones(beta_n), torch.zeros(gamma_n), impl=impl)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_reference_accumulates_half_inputs_in_fp32(dtype):
    """x² of a half overflows from |x| ≈ 256: the reference (like the kernel) squares in fp32."""
    x = torch.full((1, 2, 1, 1), 300.0, dtype=dtype)
    beta, gamma = torch.ones(2), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = G.gdn(x, beta, gamma, impl="torch")
    want = gdn_ref(x.double(), beta.double(), gamma.double())
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert torch.allclose(y.double(), want, rtol=1e-2)


@cpu
def test_double_backward_is_a_clear_error():
    """The kernels' gradient has no graph: asking for one is an error, not a silent zero."""
    c = 4
    x = _input((1, c, 3, 3), torch.float32, False).requires_grad_()
    beta, gamma = _params(c)
    with pytest.raises(RuntimeError, match="not differentiable"):
        torch.autograd.grad(G.gdn(x, beta, gamma, impl="triton").sum(), (x,), create_graph=True)
    (dx,) = torch.autograd.grad(G.gdn(x, beta, gamma, impl="triton").sum(), (x,))  # first order as before
    assert dx.shape == x.shape and not dx.requires_grad


@cpu
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [(2, 4, 0, 3), (2, 4, 3, 0), (0, 4, 3, 3)], ids=["h0", "w0", "n0"])
@pytest.mark.parametrize("impl", IMPLS)
def test_empty_input_gives_empty_output_in_every_impl(impl, shape, channels_last):
    """Zero N, H or W: an empty result (the reference's conv refused a zero height or width), and
    zero gradients for beta and gamma, in every impl alike."""
    x = _input(shape, torch.float32, channels_last).requires_grad_()
    beta, gamma = (t.requires_grad_() for t in _params(4))
    for inverse in (False, True):
        y = G.gdn(x, beta, gamma, inverse=inverse, impl=impl)
        assert y.shape == x.shape and y.dtype == x.dtype
        dx, dbeta, dgamma = torch.autograd.grad(y.sum(), (x, beta, gamma))
        assert dx.shape == x.shape
        assert torch.equal(dbeta, torch.zeros(4)) and torch.equal(dgamma, torch.zeros(4, 4))
    assert gdn_ref(x.detach().half(), beta, gamma).shape == x.shape


@cpu
@pytest.mark.parametrize("impl", IMPLS)
def test_zero_channels_refused_alike_in_every_impl(impl):
    """C = 0: the kernel path's ValueError in every impl (the reference raised a raw conv error)."""
    with pytest.raises(ValueError, match="gdn: channel count must be positive, got 0"):
        G.gdn(torch.zeros(2, 0, 3, 3), torch.ones(0), torch.zeros(0, 0), impl=impl)
    with pytest.raises(ValueError, match="channel count must be positive, got 0"):
        gdn_ref(torch.zeros(2, 0, 3, 3), torch.ones(0), torch.zeros(0, 0))


@pytest.fixture
def simulated_gpu(monkeypatch):
    """impl="auto" as on a CUDA tensor with compiled kernels (no GPU here): the device part of
    auto_selects_triton says yes; the kernels still run, under the interpreter."""
    monkeypatch.setattr(U, "_compiled_kernel_for", lambda kernel, t: True)


@cpu
def test_auto_on_a_gpu_falls_back_to_torch_for_inputs_the_kernel_refuses(simulated_gpu, monkeypatch):
    """On CUDA, impl="auto" raised the kernel's ValueError for a float64 x or C > MAX_GDN_CHANNELS,
    where impl="torch" (and "auto" on CPU) works: it now takes the reference for those."""
    launches = []
    real = G.gdn_fwd
    monkeypatch.setattr(G, "gdn_fwd", lambda x, *a, **k: launches.append((x.dtype, x.shape[1])) or real(x, *a, **k))
    beta, gamma = _params(4)
    x = _input((1, 4, 3, 3), torch.float32, False)
    assert auto_selects_triton(G._gdn_fwd_kernel, x, max_channels=MAX_GDN_CHANNELS)
    y = G.gdn(x, beta, gamma, impl="auto")  # a dtype the kernel takes: the kernel
    assert launches == [(torch.float32, 4)] and H.rel_err(y, gdn_ref(x.double(), beta.double(), gamma.double())) <= 1e-5

    x64 = x.double()
    assert not auto_selects_triton(G._gdn_fwd_kernel, x64, max_channels=MAX_GDN_CHANNELS)
    assert torch.equal(G.gdn(x64, beta, gamma, impl="auto"), G.gdn(x64, beta, gamma, impl="torch"))
    assert len(launches) == 1  # the fallback did not reach the kernel
    with pytest.raises(ValueError, match="dtype"):
        G.gdn(x64, beta, gamma, impl="triton")  # asked for explicitly: still refused

    c = MAX_GDN_CHANNELS + 1
    xc, bc, gc = torch.rand(1, c, 1, 2) + 0.5, torch.ones(c), torch.eye(c) * 0.1
    assert not auto_selects_triton(G._gdn_fwd_kernel, xc, max_channels=MAX_GDN_CHANNELS)
    n = len(launches)
    assert torch.equal(G.gdn(xc, bc, gc, inverse=True, impl="auto"), gdn_ref(xc, bc, gc, inverse=True))
    assert len(launches) == n
    with pytest.raises(ValueError, match="more than the kernel supports"):
        G.gdn(xc, bc, gc, impl="triton")


def test_auto_selects_the_reference_for_cpu_tensors():
    x = torch.zeros(1, 4, 2, 2)
    assert not auto_selects_triton(G._gdn_fwd_kernel, x, max_channels=MAX_GDN_CHANNELS)


@cpu
def test_integer_input_rejected():
    with pytest.raises(ValueError, match="dtype"):
        G.gdn_fwd(torch.zeros(1, 2, 2, 2, dtype=torch.int32), torch.ones(2), torch.eye(2))


# ------------------------------------------------------------------------------------------------
# Real GPU execution (skipped without CUDA)
# ------------------------------------------------------------------------------------------------

@_gpu
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("c", CHANNELS)
@pytest.mark.parametrize("inverse", [False, True], ids=["gdn", "igdn"])
def test_gpu_forward_matches_reference(inverse, c, dtype, channels_last):
    x = _input((3, c, 33, 47), dtype, channels_last).cuda()
    beta, gamma = (t.cuda() for t in _params(c))
    assert auto_selects_triton(G._gdn_fwd_kernel, x, max_channels=MAX_GDN_CHANNELS)  # what "auto" runs on CUDA
    y = G.gdn(x, beta, gamma, inverse=inverse, impl="triton")  # the kernel, never a fallback
    expected = gdn_ref(x.double(), beta.double(), gamma.double(), inverse)
    assert y.dtype == dtype
    assert H.rel_err(y, expected) <= H.tolerance(dtype)


@_gpu
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("c", [3, 192, 320])
@pytest.mark.parametrize("inverse", [False, True], ids=["gdn", "igdn"])
def test_gpu_backward_matches_reference(inverse, c, dtype, channels_last):
    x = _input((2, c, 17, 9), dtype, channels_last).cuda().requires_grad_()
    beta, gamma = (t.cuda().requires_grad_() for t in _params(c))
    dy = _input((2, c, 17, 9), dtype, False, seed=7).cuda()
    got = torch.autograd.grad(G.gdn(x, beta, gamma, inverse=inverse, impl="triton"), (x, beta, gamma), dy)
    x64, b64, g64 = (t.detach().double().requires_grad_() for t in (x, beta, gamma))
    want = torch.autograd.grad(gdn_ref(x64, b64, g64, inverse), (x64, b64, g64), dy.double())
    assert got[0].dtype == dtype and got[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    # fp32: 3xTF32 dots, ~fp32 accuracy; fp16/bf16 inputs: TF32 dots and the rounded dx
    tol = 1e-5 if dtype == torch.float32 else H.tolerance(dtype)
    for name, a, e in zip(("dx", "dbeta", "dgamma"), got, want):
        assert H.rel_err(a, e) <= tol, name


@_gpu
def test_gpu_auto_runs_the_kernel_and_falls_back_for_refused_inputs():
    beta, gamma = (t.cuda() for t in _params(8))
    x = _input((1, 8, 5, 6), torch.float32, False).cuda()
    assert auto_selects_triton(G._gdn_fwd_kernel, x, max_channels=MAX_GDN_CHANNELS)
    assert torch.equal(G.gdn(x, beta, gamma, impl="auto"), G.gdn(x, beta, gamma, impl="triton"))
    x64 = x.double()  # the kernel refuses float64: "auto" is the reference, as on the CPU
    assert not auto_selects_triton(G._gdn_fwd_kernel, x64, max_channels=MAX_GDN_CHANNELS)
    assert torch.equal(G.gdn(x64, beta, gamma, impl="auto"), gdn_ref(x64, beta, gamma))
    empty = torch.zeros(2, 8, 0, 4, device="cuda")
    for impl in IMPLS:
        assert G.gdn(empty, beta, gamma, impl=impl).shape == empty.shape


@pytest.mark.skipif(INTERPRETED, reason="the CPU kernel tests ran in this process")
def test_cpu_tests_in_interpreter_subprocess():
    proc = H.run_pytest_interpreted(__file__)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]


@cpu
@pytest.mark.parametrize("c, max_block", [(3, 16), (16, 16), (20, 32), (192, 64), (320, 64)])
def test_gpu_configs_pruned_to_channel_count(c, max_block):
    # the GPU autotune space, pruned at launch so that no channel block exceeds the padded C
    kept = G._prune_channel_blocks(G.GDN_FWD_CONFIGS, {"C": c})
    assert kept
    assert max(max(k.kwargs["BLOCK_CO"], k.kwargs["BLOCK_CI"]) for k in kept) <= max_block
    assert all(k.kwargs["BLOCK_P"] >= 16 and k.kwargs["BLOCK_CI"] >= 16 and k.kwargs["BLOCK_CO"] >= 16 for k in G.GDN_FWD_CONFIGS + G.GDN_BWD_CONFIGS)
