"""Fused quantization for the Gaussian-conditional latent (encode side) and its inverse (decode side).

Encode, one kernel, one pass over ``y``, ``mu``, ``sigma``:

    s     = round(y - mu)                 int32 symbols, round half to even (= torch.round)
    y_hat = s + mu                        in the dtype of y
    k     = bucketize(max(sigma, 0.11), scale_table[:-1], right=False)
          = the first i with sigma <= table[i], else T - 1             int32 CDF index

sigma is compared by its exact value: fp32 as is, fp16/bf16 widened to fp32 and fp64 in fp64, as
``GaussianConditional.build_indexes`` (the decoder's rule) compares the codec's fp64 scales.  (The
exact h_s's scales are integers × 2⁻¹², exact in fp32 below 4096, so for them an fp32 cast is
exact too; for a general fp64 sigma it is not: a value within half an fp32 ulp above a table
entry would round onto the entry and land in its bucket.)  The table and the bound are fp32
values, widened exactly for fp64 sigma.

Decode: ``y_hat = (s + mu) * inv_gain[c]`` (per-channel inverse gain on dim 1; ``None`` = 1).

The index ``k`` decides which CDF codes each symbol, so encoder and decoder must agree bit for
bit (DESIGN.md, "Determinism"): the kernel reproduces the reference exactly — the same fp32
operations, round half to even with plain floor/compare (no libdevice), a linear scan of the
(≤ 256-entry) table with the comparison ``!(table[i] >= sigma)`` (which also sends NaN to
``T - 1`` as ``torch.bucketize`` does).

Layers: ``_quantize_kernel`` / ``_dequantize_kernel`` → ``quantize_fwd`` / ``dequantize_fwd``
launchers → ``quantize`` / ``dequantize`` (``impl="auto"|"triton"|"torch"``); references
``quantize_ref`` / ``dequantize_ref`` defined only here.  No autograd: these are inference ops
(training uses noise or a straight-through estimator in the engine).
"""

from __future__ import annotations

import torch

from ._utils import (
    FLOAT_DTYPES,
    MAX_SCALE_TABLE,
    TritonUnavailableError,
    auto_selects_triton,
    check_float_dtype,
    check_impl,
    check_launchable,
    interpreter_requested,
    is_triton_available,
    next_power_of_2,
)

__all__ = [
    "SCALE_BOUND",
    "QUANTIZE_DTYPES",
    "quantize",
    "quantize_ref",
    "quantize_fwd",
    "dequantize",
    "dequantize_ref",
    "dequantize_fwd",
    "QUANTIZE_CONFIGS",
    "DEQUANTIZE_CONFIGS",
]

#: Lower bound applied to sigma before the table search (CompressAI's GaussianConditional).
SCALE_BOUND = 0.11
#: y's dtypes: the half types and fp32 as the network gives them, fp64 as the codec rounds y - mu
#: (``Codec._y_symbols``), so that the fused path writes the torch path's symbols bit for bit.
QUANTIZE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


# ---------------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------------


def quantize_ref(
    y: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    scale_table: torch.Tensor,
    scale_bound: float = SCALE_BOUND,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain-torch ``(symbols int32, y_hat, index int32)``; sigma is compared by its exact value
    (fp32/fp16/bf16 in fp32, fp64 in fp64) with the fp32 table and the fp32-rounded bound."""
    r = torch.round(y - mu)
    symbols = r.to(torch.int32)
    y_hat = r + mu
    cmp = torch.float64 if sigma.dtype == torch.float64 else torch.float32
    sig = sigma.to(cmp).clamp_min(_bound32(scale_bound))
    table = scale_table.to(device=sigma.device, dtype=torch.float32).to(cmp)
    index = torch.bucketize(sig, table[:-1].contiguous(), right=False).to(torch.int32)
    return symbols, y_hat, index


def _bound32(scale_bound: float) -> float:
    """``scale_bound`` rounded to fp32 (the kernel's scalar type), as a Python float."""
    return float(torch.tensor(float(scale_bound), dtype=torch.float32))


def _gain_view(inv_gain: torch.Tensor, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[1] = -1
    return inv_gain.reshape(shape)


def dequantize_ref(symbols: torch.Tensor, mu: torch.Tensor, inv_gain: torch.Tensor | None = None) -> torch.Tensor:
    """Plain-torch ``(s + mu) * inv_gain[c]`` in the dtype of ``mu`` (channels on dim 1)."""
    y_hat = symbols.to(mu.dtype) + mu
    if inv_gain is not None:
        y_hat = y_hat * _gain_view(inv_gain.to(device=mu.device, dtype=mu.dtype), mu.dim())
    return y_hat


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------

_HAS_TRITON = is_triton_available()
_INTERPRETED = interpreter_requested()

_QUANT_SPACE = [(1024, 4), (2048, 8), (512, 4)]  # (BLOCK, num_warps)
_DEQUANT_SPACE = [(1024, 4), (2048, 8)]
_INTERPRET_SPACE = [(4096, 4)]

if _HAS_TRITON:
    import triton
    import triton.language as tl

    def _configs(space):
        return [triton.Config({"BLOCK": b}, num_warps=w) for b, w in space]

    #: Autotune configs used on the GPU (the compile test builds each for sm_80 and sm_90).
    QUANTIZE_CONFIGS = _configs(_QUANT_SPACE)
    DEQUANTIZE_CONFIGS = _configs(_DEQUANT_SPACE)

    def _autotune(gpu_configs):
        configs = _configs(_INTERPRET_SPACE) if _INTERPRETED else gpu_configs
        return triton.autotune(configs=configs, key=[] if _INTERPRETED else ["NUMEL_BUCKET", "N_BOUNDS"])

    @triton.jit
    def _round_to(x, DTYPE: tl.constexpr):
        """fp32 ``x`` rounded to ``DTYPE`` (round to nearest even), as fp32.

        bf16 is rounded with integer ops: the interpreter's fp32 -> bf16 cast truncates, while the
        GPU's (and torch's) rounds to nearest even, so a plain ``.to`` would differ between them."""
        if DTYPE == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
            return tl.where(x != x, x, bits.to(tl.float32, bitcast=True))
        else:
            return x.to(DTYPE).to(tl.float32)

    @_autotune(QUANTIZE_CONFIGS)
    @triton.jit
    def _quantize_kernel(
        Y,  # *in: y, dense, same strides as MU, SIGMA and the outputs (walked flat in memory order)
        MU,  # *in: mu, dtype of y (fp32/fp16/bf16 computed in fp32 and rounded to it, fp64 in fp64)
        SIGMA,  # *in: sigma, fp32/fp16/bf16 (compared in fp32: exact) or fp64 (compared in fp64)
        TABLE,  # *in: scale table, fp32 contiguous, ascending; only its first N_BOUNDS entries are read
        SYM,  # *out: symbols, int32
        YHAT,  # *out: y_hat, dtype of y
        IDX,  # *out: CDF index, int32
        numel,  # number of elements
        NUMEL_BUCKET,  # next power of two of numel: the autotune key (unused in the body)
        N_BOUNDS,  # len(table) - 1: the bucketize boundaries
        scale_bound,  # fp32 lower bound on sigma (the launcher passes it rounded to fp32)
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        y = tl.load(Y + offs, mask=mask, other=0.0)
        mu = tl.load(MU + offs, mask=mask, other=0.0)
        # Arithmetic in fp32, rounded back to y's dtype after each op: for fp32 that is the op
        # itself; for fp16/bf16 it equals the native half op bit for bit (fp32 has ≥ 2p+2 bits, so
        # double rounding is exact) and it avoids half arithmetic, which the interpreter mis-handles.
        if Y.dtype.element_ty == tl.float64:  # the codec's rule: y - mu in float64
            d = y - mu
        else:
            d = _round_to(y.to(tl.float32) - mu.to(tl.float32), y.dtype)
        # round half to even without libdevice: f = floor(d), frac = d - f (exact, or rounded in
        # a way that never crosses 1/2 the wrong side), ties go to the even neighbour.
        f = tl.floor(d)
        frac = d - f
        half = f * 0.5
        f_odd = (half - tl.floor(half)) != 0.0
        r = tl.where((frac > 0.5) | ((frac == 0.5) & f_odd), f + 1.0, f)
        r = tl.where(r == 0.0, d * 0.0, r)  # torch.round keeps the sign of zero: round(-0.3) = -0.0
        tl.store(SYM + offs, r.to(tl.int32), mask=mask)
        if Y.dtype.element_ty == tl.float64:
            y_hat = r + mu
        else:
            y_hat = _round_to(r + mu.to(tl.float32), y.dtype)  # r is exact in y's dtype
        tl.store(YHAT + offs, y_hat.to(YHAT.dtype.element_ty), mask=mask)
        if SIGMA.dtype.element_ty == tl.float64:  # the codec's exact scales: compared in fp64
            sig = tl.load(SIGMA + offs, mask=mask, other=1.0)
        else:  # fp32 as is, halves widened (exact)
            sig = tl.load(SIGMA + offs, mask=mask, other=1.0).to(tl.float32)
        # clamp_min that keeps NaN (an fp32 bound, promoted exactly for fp64 sigma)
        sig = tl.where(sig < scale_bound, scale_bound, sig)
        k = tl.zeros((BLOCK,), dtype=tl.int32)
        for i in range(0, N_BOUNDS):
            b = tl.load(TABLE + i).to(sig.dtype)  # fp32 entry, widened exactly for fp64 sigma
            k += tl.where(b >= sig, 0, 1)  # bucketize(right=False): count boundaries < sigma
        tl.store(IDX + offs, k, mask=mask)

    @_autotune(DEQUANTIZE_CONFIGS)
    @triton.jit
    def _dequantize_kernel(
        SYM,  # *in: symbols, int32, dense, same strides as MU and YHAT
        MU,  # *in: mu
        GAIN,  # *in: per-channel inverse gain [C], dtype of mu (unused when HAS_GAIN is False)
        YHAT,  # *out: y_hat, dtype of mu
        numel,  # number of elements
        NUMEL_BUCKET,  # next power of two of numel: the autotune key (unused in the body)
        C,  # channels (size of dim 1)
        stride_c,  # memory stride of dim 1: channel of flat offset m is (m // stride_c) % C
        HAS_GAIN: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        s = tl.load(SYM + offs, mask=mask, other=0)
        mu = tl.load(MU + offs, mask=mask, other=0.0)
        # as dequantize_ref: s -> mu's dtype, + mu, * gain, each rounded to mu's dtype (computed in
        # fp32, exact for |s| < 2**24; see _quantize_kernel on why this equals the native op)
        s = _round_to(s.to(tl.float32), mu.dtype)
        y = _round_to(s + mu.to(tl.float32), mu.dtype)
        if HAS_GAIN:
            c = (offs // stride_c) % C
            g = tl.load(GAIN + c, mask=mask, other=1.0)
            y = _round_to(y * g.to(tl.float32), mu.dtype)
        tl.store(YHAT + offs, y.to(YHAT.dtype.element_ty), mask=mask)  # exact: y is representable

else:  # pragma: no cover - exercised only without triton
    QUANTIZE_CONFIGS = []
    DEQUANTIZE_CONFIGS = []
    _quantize_kernel = _dequantize_kernel = None


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _is_dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the elements fill ``numel`` consecutive slots in some order."""
    if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
        return True
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1)
    expected = 1
    for st, sz in dims:
        if st != expected:
            return False
        expected *= sz
    return True


def _flat_layout(ref: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Tensors that can be walked flat in one memory order: ``ref``'s if it is dense and every
    other tensor has its strides, else all made contiguous (one extra copy, documented)."""
    if _is_dense(ref) and all(o.stride() == ref.stride() for o in others):
        return (ref, *others)
    return tuple(t.contiguous() for t in (ref, *others))


def _launch_grid(numel: int):
    return lambda meta: (triton.cdiv(numel, meta["BLOCK"]),)


def quantize_fwd(
    y: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    scale_table: torch.Tensor,
    scale_bound: float = SCALE_BOUND,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launch the fused quantization kernel; outputs share ``y``'s memory format."""
    _check_quantize(y, mu, sigma, scale_table)
    check_launchable(_quantize_kernel, y, mu, sigma, op="quantize")
    y, mu, sigma = _flat_layout(y, mu, sigma)
    table = scale_table.to(device=y.device, dtype=torch.float32).contiguous()
    symbols = torch.empty_like(y, dtype=torch.int32)
    y_hat = torch.empty_like(y)
    index = torch.empty_like(y, dtype=torch.int32)
    numel = y.numel()
    if numel:
        _quantize_kernel[_launch_grid(numel)](
            y, mu, sigma, table, symbols, y_hat, index, numel, next_power_of_2(numel), table.numel() - 1,
            _bound32(scale_bound),
        )
    return symbols, y_hat, index


def dequantize_fwd(symbols: torch.Tensor, mu: torch.Tensor, inv_gain: torch.Tensor | None = None) -> torch.Tensor:
    """Launch the dequantization kernel; ``y_hat`` shares ``mu``'s memory format."""
    _check_dequantize(symbols, mu, inv_gain)
    check_launchable(_dequantize_kernel, symbols, mu, op="dequantize")
    mu, symbols = _flat_layout(mu, symbols)
    y_hat = torch.empty_like(mu)
    numel = mu.numel()
    if numel == 0:
        return y_hat
    has_gain = inv_gain is not None
    if inv_gain is not None:
        gain = inv_gain.to(device=mu.device, dtype=mu.dtype).reshape(-1).contiguous()
        c, stride_c = mu.shape[1], mu.stride(1)
    else:
        gain, c, stride_c = mu, 1, 1  # placeholder pointer, never read
    _dequantize_kernel[_launch_grid(numel)](
        symbols, mu, gain, y_hat, numel, next_power_of_2(numel), c, stride_c, HAS_GAIN=has_gain
    )
    return y_hat


def _check_quantize(y, mu, sigma, scale_table) -> None:
    check_float_dtype(y, "quantize: y", QUANTIZE_DTYPES)
    if mu.dtype != y.dtype:
        raise ValueError(f"quantize: mu dtype {mu.dtype} must equal y dtype {y.dtype}")
    check_float_dtype(sigma, "quantize: sigma", QUANTIZE_DTYPES)
    if not (y.shape == mu.shape == sigma.shape):
        raise ValueError(
            f"quantize: y, mu, sigma must have one shape, got {tuple(y.shape)}, {tuple(mu.shape)}, {tuple(sigma.shape)}"
        )
    if scale_table.dim() != 1 or not 1 <= scale_table.numel() <= MAX_SCALE_TABLE:
        raise ValueError(
            f"quantize: scale_table must be 1-D with 1..{MAX_SCALE_TABLE} entries, got shape {tuple(scale_table.shape)}"
        )


def _check_dequantize(symbols, mu, inv_gain) -> None:
    if symbols.dtype != torch.int32:
        raise ValueError(f"dequantize: symbols must be int32, got {symbols.dtype}")
    check_float_dtype(mu, "dequantize: mu")
    if symbols.shape != mu.shape:
        raise ValueError(f"dequantize: symbols shape {tuple(symbols.shape)} != mu shape {tuple(mu.shape)}")
    if inv_gain is not None:
        if mu.dim() < 2:
            raise ValueError("dequantize: inv_gain needs mu with a channel dimension (dim 1)")
        if inv_gain.numel() != mu.shape[1]:
            raise ValueError(
                f"dequantize: inv_gain must have {mu.shape[1]} elements (one per channel), got shape {tuple(inv_gain.shape)}"
            )


# ---------------------------------------------------------------------------------------------
# Functional
# ---------------------------------------------------------------------------------------------


def _use_triton(impl: str, kernel, t: torch.Tensor, op: str, dtypes: tuple[torch.dtype, ...]) -> bool:
    check_impl(impl)
    if impl == "torch":
        return False
    if impl == "auto":  # the kernel only for inputs it takes (the checks are shared: same errors)
        return auto_selects_triton(kernel, t, dtypes=dtypes)
    if not _HAS_TRITON:
        raise TritonUnavailableError(f"{op}: impl='triton' needs the triton package; use impl='torch'")
    return True


def quantize(
    y: torch.Tensor,
    mu: torch.Tensor,
    sigma: torch.Tensor,
    scale_table: torch.Tensor,
    impl: str = "auto",
    scale_bound: float = SCALE_BOUND,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(symbols int32, y_hat, index int32)`` for latent ``y`` with mean ``mu`` and scale ``sigma``.

    ``impl``: ``"auto"`` — the fused kernel on CUDA tensors, :func:`quantize_ref` otherwise;
    ``"triton"`` — always the kernel (CPU needs ``TRITON_INTERPRET=1`` at import); ``"torch"``.
    Both give identical results, bit for bit.
    """
    if _use_triton(impl, _quantize_kernel, y, "quantize", QUANTIZE_DTYPES):
        return quantize_fwd(y, mu, sigma, scale_table, scale_bound)
    _check_quantize(y, mu, sigma, scale_table)
    return quantize_ref(y, mu, sigma, scale_table, scale_bound)


def dequantize(
    symbols: torch.Tensor,
    mu: torch.Tensor,
    inv_gain: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """``y_hat = (symbols + mu) * inv_gain[c]`` (``inv_gain`` per channel of dim 1; ``None`` = 1)."""
    if _use_triton(impl, _dequantize_kernel, mu, "dequantize", FLOAT_DTYPES):
        return dequantize_fwd(symbols, mu, inv_gain)
    _check_dequantize(symbols, mu, inv_gain)
    return dequantize_ref(symbols, mu, inv_gain)
