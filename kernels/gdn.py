"""Fused GDN / IGDN (generalized divisive normalization, Ballé et al. 2016).

    GDN:   y[b,i,h,w] = x[b,i,h,w] / sqrt(norm[b,i,h,w])
    IGDN:  y[b,i,h,w] = x[b,i,h,w] * sqrt(norm[b,i,h,w])
    norm[b,i,h,w] = beta[i] + sum_j gamma[i,j] * x[b,j,h,w]**2

with ``beta``, ``gamma`` the *effective* (already re-parametrised, non-negative) parameters, as
CompressAI computes them: ``F.conv2d(x**2, gamma.reshape(C, C, 1, 1), beta)``.  A model folds its
raw parameters once with :func:`gdn_fold`, not on every call.

Layers, outermost last (the Liger-Kernel layout):

* ``_gdn_fwd_kernel`` / ``_gdn_bwd_t_kernel`` / ``_gdn_bwd_dx_kernel`` — private Triton kernels.
  A program owns a block of pixels × all channels: the C×C mix is a blocked ``tl.dot`` (fp32
  accumulation) over channel blocks, then rsqrt/sqrt and the multiply happen in registers, so x is
  read once from HBM (channel blocks are re-read from L1/L2) and y written once.
* ``gdn_fwd`` / ``gdn_bwd`` — launchers: checks, strides, allocation, grid.
* ``GDNFunction`` — autograd; the backward is two Triton kernels (see ``gdn_bwd``) plus a
  torch reduction for the parameter gradients.
* ``gdn(x, beta, gamma, inverse=False, impl="auto")`` — the functional entry point.
* ``gdn_ref`` — the plain-torch reference, defined only here.

Backward, with a = -1/2 (GDN) or +1/2 (IGDN), y_i = x_i n_i^a, g = dL/dy:
    t_i   = a g_i x_i n_i^(a-1)
    dx_k  = g_k n_k^a + 2 x_k sum_i t_i gamma[i,k]
    dbeta = sum_pixels t,   dgamma[i,k] = sum_pixels t_i x_k^2
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._utils import (
    FLOAT_DTYPES,
    MAX_GDN_CHANNELS,
    MIN_DOT_BLOCK,
    TritonUnavailableError,
    auto_selects_triton,
    channel_block,
    check_channels,
    check_float_dtype,
    check_impl,
    check_launchable,
    interpreter_requested,
    is_triton_available,
    next_power_of_2,
)

__all__ = ["gdn", "gdn_ref", "gdn_fold", "gdn_fwd", "gdn_bwd", "GDNFunction", "GDN_FWD_CONFIGS", "GDN_BWD_CONFIGS"]


# ---------------------------------------------------------------------------------------------
# Reference and parameter folding
# ---------------------------------------------------------------------------------------------


def gdn_ref(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Plain-torch GDN/IGDN on NCHW ``x`` with effective ``beta`` [C] and ``gamma`` [C, C]
    (1×1 conv on x², then rsqrt or sqrt, then multiply; computed in fp32 for half ``x``, as the
    kernel accumulates — x² of a half overflows from |x| ≈ 256 — else in ``x.dtype``).

    An empty ``x`` (a zero batch, height or width) gives an empty result, as the kernel does;
    ``C = 0`` is refused with the kernel's ``ValueError``."""
    c = x.shape[1]
    check_channels(c, what="gdn")
    xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if xc.numel() == 0:
        # F.conv2d refuses a zero height or width; the same mix as an einsum is empty and still
        # connects beta and gamma to the graph (their gradients: zeros, as the kernel's)
        norm = torch.einsum("ij,njhw->nihw", gamma.reshape(c, c).to(xc.dtype), xc * xc) + beta.to(xc.dtype).reshape(1, c, 1, 1)
    else:
        norm = F.conv2d(xc * xc, gamma.reshape(c, c, 1, 1).to(xc.dtype), beta.to(xc.dtype))
    y = xc * torch.sqrt(norm) if inverse else xc * torch.rsqrt(norm)
    return y.to(x.dtype)


class _LowerBound(torch.autograd.Function):
    """``max(x, bound)`` with CompressAI's gradient: pass through where x ≥ bound or the gradient
    would push x up (grad < 0)."""

    @staticmethod
    def forward(ctx, x, bound):
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad_output):
        x, bound = ctx.saved_tensors
        pass_through = (x >= bound) | (grad_output < 0)
        return pass_through.type(grad_output.dtype) * grad_output, None


def _non_negative(param: torch.Tensor, minimum: float, reparam_offset: float) -> torch.Tensor:
    # CompressAI NonNegativeParametrizer: the bound and the pedestal are float32 buffers there.
    pedestal = torch.tensor([reparam_offset**2], dtype=torch.float32, device=param.device)
    bound = torch.tensor([(minimum + reparam_offset**2) ** 0.5], dtype=torch.float32, device=param.device)
    out = _LowerBound.apply(param, bound.to(param.dtype))
    return out**2 - pedestal.to(param.dtype)


def gdn_fold(
    beta_param: torch.Tensor,
    gamma_param: torch.Tensor,
    beta_min: float = 1e-6,
    reparam_offset: float = 2**-18,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Effective ``(beta, gamma)`` from raw GDN parameters, as CompressAI's
    ``NonNegativeParametrizer``: lower bound, square, minus the pedestal ``reparam_offset**2``.
    β is bounded at ``sqrt(beta_min + pedestal)``, γ at ``sqrt(pedestal)``.  Differentiable."""
    beta = _non_negative(beta_param, beta_min, reparam_offset)
    gamma = _non_negative(gamma_param, 0.0, reparam_offset)
    return beta, gamma


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------

_HAS_TRITON = is_triton_available()
_INTERPRETED = interpreter_requested()  # decided now, when the kernels below are defined

# GPU autotune space: (BLOCK_P, BLOCK_CO, BLOCK_CI, num_warps, num_stages).  Configs whose channel
# blocks exceed the padded channel count are pruned at launch (see _prune_channel_blocks).
# Untuned guesses (no GPU was available when they were written): a mid tile, a big tile for
# large C, a small-C tile, and a minimal one (every dot dimension at its 16 floor) for C <= 16.
_GDN_FWD_SPACE = [
    (64, 64, 32, 4, 3),
    (128, 64, 64, 8, 3),
    (64, 32, 32, 4, 4),
    (32, 16, 16, 4, 2),
]
_GDN_BWD_SPACE = [
    (64, 64, 32, 4, 3),
    (32, 16, 16, 4, 2),
]
# The interpreter runs one config; big blocks mean fewer (slow, Python-level) programs.
_GDN_INTERPRET_SPACE = [(64, 64, 64, 4, 1)]

if _HAS_TRITON:
    import triton
    import triton.language as tl

    def _configs(space):
        return [
            triton.Config({"BLOCK_P": p, "BLOCK_CO": co, "BLOCK_CI": ci}, num_warps=w, num_stages=s)
            for p, co, ci, w, s in space
        ]

    #: Autotune configs used on the GPU (the compile test builds every one for sm_80 and sm_90).
    GDN_FWD_CONFIGS = _configs(_GDN_FWD_SPACE)
    GDN_BWD_CONFIGS = _configs(_GDN_BWD_SPACE)

    def _prune_channel_blocks(configs, named_args, **kwargs):
        cpad = max(MIN_DOT_BLOCK, next_power_of_2(named_args["C"]))
        kept = [c for c in configs if c.kwargs["BLOCK_CO"] <= cpad and c.kwargs["BLOCK_CI"] <= cpad]
        return kept or configs[-1:]

    def _autotune(gpu_configs):
        if _INTERPRETED:
            return triton.autotune(configs=_configs(_GDN_INTERPRET_SPACE), key=["C"])
        return triton.autotune(
            configs=gpu_configs, key=["C", "P_BUCKET"], prune_configs_by={"early_config_prune": _prune_channel_blocks}
        )

    @triton.jit
    def _cast_out(x, DTYPE: tl.constexpr):
        """fp32 ``x`` cast to ``DTYPE`` with round to nearest even everywhere: the interpreter's
        fp32 -> bf16 cast truncates (the GPU's rounds), so bf16 is rounded with integer ops."""
        if DTYPE == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
            return tl.where(x != x, x, bits.to(tl.float32, bitcast=True)).to(DTYPE)
        else:
            return x.to(DTYPE)

    @triton.jit
    def _gdn_norm(
        X, BETA, GAMMA, x_pix, mask_p, offs_co, mask_co, C, sx_c,
        DOT_PRECISION: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr,
    ):
        """norm[p, i] = beta[i] + sum_j gamma[i, j] x[p, j]^2 for a block of pixels × output
        channels, fp32; the C×C mix as a blocked dot (shared by the forward and backward kernels)."""
        acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
        for ci in range(0, C, BLOCK_CI):
            offs_ci = ci + tl.arange(0, BLOCK_CI)
            mask_ci = offs_ci < C
            xj = tl.load(
                X + x_pix[:, None] + offs_ci.to(tl.int64)[None, :] * sx_c,
                mask=mask_p[:, None] & mask_ci[None, :],
                other=0.0,
            ).to(tl.float32)
            # g[j, i] = gamma[i, j]: the transposed block, so that acc[p, i] += sum_j x2[p, j] g[j, i]
            g = tl.load(
                GAMMA + offs_co[None, :] * C + offs_ci[:, None],
                mask=mask_ci[:, None] & mask_co[None, :],
                other=0.0,
            )
            acc = tl.dot(xj * xj, g, acc, input_precision=DOT_PRECISION)
        beta = tl.load(BETA + offs_co, mask=mask_co, other=1.0)
        return acc + beta[None, :]

    @_autotune(GDN_FWD_CONFIGS)
    @triton.jit
    def _gdn_fwd_kernel(
        X,  # *in: x, logical [N, C, H, W], any strides (NCHW, channels-last, ...)
        Y,  # *out: y, same logical shape, its own strides; dtype of x
        BETA,  # *in: effective beta, [C] fp32 contiguous
        GAMMA,  # *in: effective gamma, [C, C] fp32 contiguous, gamma[i, j] at i*C + j
        P,  # number of pixels N*H*W
        P_BUCKET,  # next power of two of P: the autotune key (unused in the body), so that every new
        # image size does not trigger a new autotuning run
        C,  # channels
        HW,  # H*W
        W,  # width
        sx_n, sx_c, sx_h, sx_w,  # strides of x, in elements
        sy_n, sy_c, sy_h, sy_w,  # strides of y, in elements
        INVERSE: tl.constexpr,  # False: GDN (x * rsqrt(norm)); True: IGDN (x * sqrt(norm))
        DOT_PRECISION: tl.constexpr,  # "tf32x3" (fp32 inputs) or "tf32" (fp16/bf16 inputs)
        BLOCK_P: tl.constexpr,  # pixels per program
        BLOCK_CO: tl.constexpr,  # output channels per mix block
        BLOCK_CI: tl.constexpr,  # input channels per mix block (the dot's K)
    ):
        pid = tl.program_id(0)
        offs_p = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        n = offs_p // HW
        hw = offs_p % HW
        h = hw // W
        w = hw % W
        x_pix = n * sx_n + h * sx_h + w * sx_w  # int64 [BLOCK_P]
        y_pix = n * sy_n + h * sy_h + w * sy_w
        for co in range(0, C, BLOCK_CO):
            offs_co = co + tl.arange(0, BLOCK_CO)
            mask_co = offs_co < C
            norm = _gdn_norm(X, BETA, GAMMA, x_pix, mask_p, offs_co, mask_co, C, sx_c,
                             DOT_PRECISION, BLOCK_P, BLOCK_CO, BLOCK_CI)
            mask = mask_p[:, None] & mask_co[None, :]
            xi = tl.load(X + x_pix[:, None] + offs_co.to(tl.int64)[None, :] * sx_c, mask=mask, other=0.0)
            if INVERSE:
                y = xi.to(tl.float32) * tl.sqrt(norm)
            else:
                y = xi.to(tl.float32) * tl.rsqrt(norm)
            tl.store(Y + y_pix[:, None] + offs_co.to(tl.int64)[None, :] * sy_c, _cast_out(y, Y.dtype.element_ty), mask=mask)

    @_autotune(GDN_BWD_CONFIGS)
    @triton.jit
    def _gdn_bwd_t_kernel(
        X,  # *in: x, logical [N, C, H, W], any strides
        DY,  # *in: dL/dy, logical [N, C, H, W], any strides
        BETA,  # *in: effective beta [C] fp32
        GAMMA,  # *in: effective gamma [C, C] fp32 contiguous
        T,  # *out: t = a * g * x * n^(a-1), [P, C] fp32 contiguous (pixel-major)
        S,  # *out: s = n^a, [P, C] fp32 contiguous
        P, P_BUCKET, C, HW, W,
        sx_n, sx_c, sx_h, sx_w,
        sg_n, sg_c, sg_h, sg_w,
        INVERSE: tl.constexpr,
        DOT_PRECISION: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_CO: tl.constexpr,
        BLOCK_CI: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs_p = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        n = offs_p // HW
        hw = offs_p % HW
        h = hw // W
        w = hw % W
        x_pix = n * sx_n + h * sx_h + w * sx_w
        g_pix = n * sg_n + h * sg_h + w * sg_w
        for co in range(0, C, BLOCK_CO):
            offs_co = co + tl.arange(0, BLOCK_CO)
            mask_co = offs_co < C
            norm = _gdn_norm(X, BETA, GAMMA, x_pix, mask_p, offs_co, mask_co, C, sx_c,
                             DOT_PRECISION, BLOCK_P, BLOCK_CO, BLOCK_CI)
            mask = mask_p[:, None] & mask_co[None, :]
            ch = offs_co.to(tl.int64)[None, :]
            xi = tl.load(X + x_pix[:, None] + ch * sx_c, mask=mask, other=0.0).to(tl.float32)
            gi = tl.load(DY + g_pix[:, None] + ch * sg_c, mask=mask, other=0.0).to(tl.float32)
            r = tl.rsqrt(norm)
            if INVERSE:
                s = norm * r  # sqrt(n)
                t = 0.5 * gi * xi * r  # (1/2) g x n^(-1/2)
            else:
                s = r
                t = -0.5 * gi * xi * (r * r * r)  # (-1/2) g x n^(-3/2)
            out = offs_p[:, None] * C + ch
            tl.store(T + out, t, mask=mask)
            tl.store(S + out, s, mask=mask)

    @_autotune(GDN_BWD_CONFIGS)
    @triton.jit
    def _gdn_bwd_dx_kernel(
        X,  # *in: x, logical [N, C, H, W], any strides
        DY,  # *in: dL/dy, any strides
        S,  # *in: n^a, [P, C] fp32 contiguous
        T,  # *in: t, [P, C] fp32 contiguous
        GAMMA,  # *in: effective gamma [C, C] fp32 contiguous
        DX,  # *out: dL/dx, logical [N, C, H, W], its own strides, dtype of x
        P, P_BUCKET, C, HW, W,
        sx_n, sx_c, sx_h, sx_w,
        sg_n, sg_c, sg_h, sg_w,
        sd_n, sd_c, sd_h, sd_w,
        DOT_PRECISION: tl.constexpr,
        BLOCK_P: tl.constexpr,
        BLOCK_CO: tl.constexpr,  # output (k) channels per block
        BLOCK_CI: tl.constexpr,  # reduced (i) channels per block
    ):
        pid = tl.program_id(0)
        offs_p = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < P
        n = offs_p // HW
        hw = offs_p % HW
        h = hw // W
        w = hw % W
        x_pix = n * sx_n + h * sx_h + w * sx_w
        g_pix = n * sg_n + h * sg_h + w * sg_w
        d_pix = n * sd_n + h * sd_h + w * sd_w
        for co in range(0, C, BLOCK_CO):
            offs_co = co + tl.arange(0, BLOCK_CO)
            mask_co = offs_co < C
            acc = tl.zeros((BLOCK_P, BLOCK_CO), dtype=tl.float32)
            for ci in range(0, C, BLOCK_CI):
                offs_ci = ci + tl.arange(0, BLOCK_CI)
                mask_ci = offs_ci < C
                t = tl.load(
                    T + offs_p[:, None] * C + offs_ci[None, :],
                    mask=mask_p[:, None] & mask_ci[None, :],
                    other=0.0,
                )
                # g[i, k] = gamma[i, k]: acc[p, k] += sum_i t[p, i] gamma[i, k]
                g = tl.load(
                    GAMMA + offs_ci[:, None] * C + offs_co[None, :],
                    mask=mask_ci[:, None] & mask_co[None, :],
                    other=0.0,
                )
                acc = tl.dot(t, g, acc, input_precision=DOT_PRECISION)
            mask = mask_p[:, None] & mask_co[None, :]
            ch = offs_co.to(tl.int64)[None, :]
            xk = tl.load(X + x_pix[:, None] + ch * sx_c, mask=mask, other=0.0).to(tl.float32)
            gk = tl.load(DY + g_pix[:, None] + ch * sg_c, mask=mask, other=0.0).to(tl.float32)
            sk = tl.load(S + offs_p[:, None] * C + ch, mask=mask, other=0.0)
            dx = gk * sk + 2.0 * xk * acc
            tl.store(DX + d_pix[:, None] + ch * sd_c, _cast_out(dx, DX.dtype.element_ty), mask=mask)

else:  # pragma: no cover - exercised only without triton
    GDN_FWD_CONFIGS = []
    GDN_BWD_CONFIGS = []
    _gdn_fwd_kernel = _gdn_bwd_t_kernel = _gdn_bwd_dx_kernel = None


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _check_shapes(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, op: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{op}: x must be 4-D [N, C, H, W], got shape {tuple(x.shape)}")
    c = x.shape[1]
    check_channels(c, what=op)  # every impl: C = 0 is refused, not a raw conv/launch error
    if beta.numel() != c:
        raise ValueError(f"{op}: beta must have {c} elements (one per channel), got shape {tuple(beta.shape)}")
    if gamma.numel() != c * c:
        raise ValueError(f"{op}: gamma must be [{c}, {c}] (or [{c}, {c}, 1, 1]), got shape {tuple(gamma.shape)}")


def _check_params(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, op: str) -> tuple[torch.Tensor, torch.Tensor]:
    _check_shapes(x, beta, gamma, op)
    check_float_dtype(x, f"{op}: x")
    c = x.shape[1]
    channel_block(c, limit=MAX_GDN_CHANNELS, what=op)
    beta32 = beta.detach().reshape(c).to(device=x.device, dtype=torch.float32).contiguous()
    gamma32 = gamma.detach().reshape(c, c).to(device=x.device, dtype=torch.float32).contiguous()
    return beta32, gamma32


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs: 3xTF32 keeps ~fp32 accuracy on tensor cores; half inputs: TF32 is ample.
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _grid(p: int):
    return lambda meta: (triton.cdiv(p, meta["BLOCK_P"]),)


def gdn_fwd(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Launch the fused forward kernel. ``y`` has ``x``'s dtype and memory format."""
    beta32, gamma32 = _check_params(x, beta, gamma, "gdn")
    check_launchable(_gdn_fwd_kernel, x, op="gdn")
    n, c, h, w = x.shape
    y = torch.empty_like(x)  # preserve_format: NCHW stays NCHW, channels-last stays channels-last
    p = n * h * w
    if p == 0:
        return y
    _gdn_fwd_kernel[_grid(p)](
        x, y, beta32, gamma32, p, next_power_of_2(p), c, h * w, w,
        *x.stride(), *y.stride(),
        INVERSE=bool(inverse), DOT_PRECISION=_dot_precision(x.dtype),
    )
    return y


def gdn_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    inverse: bool = False,
    need_param_grads: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Gradients ``(dx, dbeta, dgamma)`` of GDN/IGDN.

    Two Triton kernels compute ``dx`` (the first recomputes the norm and writes ``t`` and ``n^a``
    as fp32 [P, C] buffers, the second does the transposed channel mix); the parameter gradients,
    reductions over all pixels, are a torch sum and one matmul (fp32), only when asked for.
    """
    beta32, gamma32 = _check_params(x, beta, gamma, "gdn backward")
    check_launchable(_gdn_bwd_t_kernel, x, dy, op="gdn backward")
    if dy.shape != x.shape:
        raise ValueError(f"gdn backward: grad shape {tuple(dy.shape)} != x shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    p = n * h * w
    t = torch.empty((p, c), device=x.device, dtype=torch.float32)
    s = torch.empty((p, c), device=x.device, dtype=torch.float32)
    dx = torch.empty_like(x)
    if p > 0:
        prec = _dot_precision(x.dtype)
        _gdn_bwd_t_kernel[_grid(p)](
            x, dy, beta32, gamma32, t, s, p, next_power_of_2(p), c, h * w, w,
            *x.stride(), *dy.stride(),
            INVERSE=bool(inverse), DOT_PRECISION=prec,
        )
        _gdn_bwd_dx_kernel[_grid(p)](
            x, dy, s, t, gamma32, dx, p, next_power_of_2(p), c, h * w, w,
            *x.stride(), *dy.stride(), *dx.stride(),
            DOT_PRECISION=prec,
        )
    dbeta = dgamma = None
    if need_param_grads:
        dbeta = t.sum(0)
        x2 = x.permute(0, 2, 3, 1).reshape(p, c).to(torch.float32).square()
        dgamma = t.t() @ x2
    return dx, dbeta, dgamma


# ---------------------------------------------------------------------------------------------
# Autograd and functional
# ---------------------------------------------------------------------------------------------


class GDNFunction(torch.autograd.Function):
    """Fused GDN/IGDN with a Triton backward. Inputs: x [N,C,H,W], effective beta [C] and
    gamma [C,C] (or [C,C,1,1]), inverse flag."""

    @staticmethod
    def forward(ctx, x, beta, gamma, inverse=False):
        ctx.save_for_backward(x, beta, gamma)
        ctx.inverse = bool(inverse)
        return gdn_fwd(x, beta, gamma, inverse)

    @staticmethod
    def backward(ctx, dy):
        x, beta, gamma = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the kernels' gradient would have no graph (silently)
            raise RuntimeError("gdn: the Triton kernels' gradient is not differentiable (a double backward, "
                               "create_graph=True); use impl='torch' for higher-order gradients")
        need_x, need_b, need_g = ctx.needs_input_grad[:3]
        dx, dbeta, dgamma = gdn_bwd(dy, x, beta, gamma, ctx.inverse, need_param_grads=need_b or need_g)
        if need_b:
            dbeta = dbeta.reshape(beta.shape).to(beta.dtype)
        if need_g:
            dgamma = dgamma.reshape(gamma.shape).to(gamma.dtype)
        return (dx if need_x else None), (dbeta if need_b else None), (dgamma if need_g else None), None


def gdn(
    x: torch.Tensor,
    beta_eff: torch.Tensor,
    gamma_eff: torch.Tensor,
    inverse: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """GDN (``inverse=False``) or IGDN (``inverse=True``) of NCHW ``x`` (any memory format).

    ``impl``: ``"auto"`` — the Triton kernel for CUDA tensors when triton is installed (and not
    in interpreter mode) and the kernel takes ``x`` (fp32/fp16/bf16, at most
    :data:`MAX_GDN_CHANNELS` channels), else :func:`gdn_ref`; ``"triton"`` — always the kernel
    (CPU tensors need kernels defined under ``TRITON_INTERPRET=1``, else
    :class:`TritonUnavailableError`; other dtypes or more channels: ``ValueError``); ``"torch"`` —
    :func:`gdn_ref`.  Empty ``x`` (zero N, H or W): an empty result in every impl; ``C = 0``: the
    same ``ValueError`` in every impl.
    """
    check_impl(impl)
    if impl == "torch" or (
        impl == "auto" and not auto_selects_triton(_gdn_fwd_kernel, x, dtypes=FLOAT_DTYPES, max_channels=MAX_GDN_CHANNELS)
    ):
        _check_shapes(x, beta_eff, gamma_eff, "gdn")
        return gdn_ref(x, beta_eff, gamma_eff, inverse)
    if not _HAS_TRITON:
        raise TritonUnavailableError("gdn: impl='triton' needs the triton package; use impl='torch'")
    return GDNFunction.apply(x, beta_eff, gamma_eff, bool(inverse))
