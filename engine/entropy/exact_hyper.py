"""Device- and batch-invariant entropy parameters: the hyper-synthesis ``h_s`` in fixed point.

The decoder must derive exactly the scale-table index the encoder used for every symbol
(the bitstream's determinism rule: README, "Bitstream and entropy coding"). Float networks differ by an ULP across devices, libraries and batch
sizes, which is enough to flip an index. Here ``h_s`` runs on integers: weights and
activations are integers with a power-of-two scale, convolutions are computed in float64 on
integer-valued tensors — exact, whatever the summation order, as long as every partial sum
stays below 2**53, which is checked per layer — and rescaling is a floor division by a power of
two. The result is bit-identical on every IEEE-754 device, for any batch size.

It runs on the CPU by default. ``.to("cuda")`` moves it to a GPU, where each convolution is an
explicit im2col and a float64 matrix product (cuBLAS) rather than a cuDNN convolution, whose
algorithm (possibly FFT-based, not exact) is not ours to choose; integer-valued products and
sums below 2**53 are exact in any order, so the GPU gives the CPU's bits.

Only ``Conv2d``, ``ConvTranspose2d`` and ``LeakyReLU``/``ReLU`` layers are supported, which is
what the hyperprior's ``h_s`` is made of.
"""

from __future__ import annotations

import copy
import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import SubPixelConv

ACT_FRAC_BITS = 12          # activations carry 12 fractional bits
WEIGHT_BITS = 15            # each output channel's largest |weight| maps to < 2**15
LEAKY_NUM, LEAKY_SHIFT = 655, 16   # LeakyReLU(0.01) ≈ 655 / 2**16 (exactly dyadic)
_EXACT_LIMIT = 2.0**52


class _IntLayer:
    # the h_s layers' geometry: numeric (no "same"/"valid" padding in h_s)
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]

    def __init__(self, layer: nn.Conv2d | nn.ConvTranspose2d):
        if isinstance(layer, nn.ConvTranspose2d) and layer.kernel_size == (5, 5) and layer.stride == (2, 2):
            # same integers, but a plain conv: float64 transposed convs are slow on CPU
            # on a copy: .cpu() / .float() act in place, and the caller's h_s (on a GPU) must stay where it is
            sub = SubPixelConv.from_deconv(copy.deepcopy(layer).cpu().float())
            self.shuffle = True
            layer = sub.conv
        else:
            self.shuffle = False
        w = layer.weight.detach().to(torch.float64).cpu()
        self.transposed = isinstance(layer, nn.ConvTranspose2d)
        out_dim = 1 if self.transposed else 0
        reduce_dims = [d for d in range(4) if d != out_dim]
        wmax = w.abs().amax(dim=reduce_dims)
        # per-output-channel power-of-two exponent, found with exact frexp
        _, exp = torch.frexp(wmax.clamp_min(1e-30))
        self.shift = (WEIGHT_BITS - exp).clamp(0, 40).to(torch.int64)            # [out]
        scale = torch.pow(2.0, self.shift.to(torch.float64))
        shape = [1, -1, 1, 1] if self.transposed else [-1, 1, 1, 1]
        self.weight = torch.round(w * scale.reshape(shape))
        b = layer.bias.detach().to(torch.float64).cpu() if layer.bias is not None else torch.zeros_like(wmax)
        self.bias = torch.round(b * scale * 2.0**ACT_FRAC_BITS).reshape(1, -1, 1, 1)
        self.inv_scale = torch.pow(2.0, -self.shift.to(torch.float64)).reshape(1, -1, 1, 1)
        # round half up before the floor-shift (no rounding term where the shift is 0)
        self.half = torch.where(self.inv_scale < 1, 0.5 / self.inv_scale, torch.zeros_like(self.inv_scale))
        self.bias_half = self.bias + self.half
        # bound on |acc| per unit of max|x|: the largest sum of |w| over one output
        self.l1 = float(self.weight.abs().sum(dim=reduce_dims).max())
        self.bias_max = float(self.bias_half.abs().max())
        self.stride, self.padding = layer.stride, cast(tuple[int, ...], layer.padding)
        self.output_padding = getattr(layer, "output_padding", (0, 0))
        self.im2col = False  # convolve as im2col + matmul (set by ExactHyperSynthesis.to)

    def to(self, device: torch.device, im2col: bool) -> "_IntLayer":
        if im2col and self.transposed:
            raise ValueError("exact h_s off the CPU supports plain convolutions only (no transposed ones)")
        moved = copy.copy(self)
        for name in ("weight", "bias_half", "inv_scale"):
            setattr(moved, name, getattr(self, name).to(device))
        moved.im2col = im2col
        return moved

    def _conv_im2col(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        o, _, kh, kw = self.weight.shape
        cols = F.unfold(x, (kh, kw), padding=self.padding, stride=self.stride)  # [n, c·kh·kw, L]
        acc = torch.matmul(self.weight.reshape(o, -1), cols)                      # [n, o, L]
        oh = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        ow = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        return acc.reshape(n, o, oh, ow)

    def __call__(self, x: Tensor) -> Tensor:
        xmax = float(x.abs().max()) if x.numel() else 0.0
        if xmax * self.l1 + self.bias_max >= _EXACT_LIMIT:
            raise OverflowError("fixed-point h_s would exceed exact float64 range; activations too large")
        if self.im2col:
            acc = self._conv_im2col(x)
        elif self.transposed:
            acc = F.conv_transpose2d(x, self.weight, None, self.stride, self.padding, self.output_padding)
        else:
            acc = F.conv2d(x, self.weight, None, self.stride, self.padding)
        # back to ACT_FRAC_BITS: floor((acc + bias + half) / 2**shift), exact for power-of-two scales
        out = torch.floor(acc.add_(self.bias_half).mul_(self.inv_scale))
        return F.pixel_shuffle(out, 2) if self.shuffle else out


class ExactHyperSynthesis:
    """Fixed-point twin of a float ``h_s``; ``__call__(z_hat) -> (scales, means)`` as float64
    (integers × 2⁻¹²: the codec computes y − μ in float64; a cast to float32 would change symbols).

    Built once per model (``from_module``); runs in float64 on the CPU, or on ``device`` after
    ``to(device)``; returns CPU tensors either way.
    """

    def __init__(self, layers: list, device: torch.device | None = None):
        self.layers = layers
        self.device = torch.device("cpu") if device is None else torch.device(device)

    def to(self, device: str | torch.device, im2col: bool | None = None) -> "ExactHyperSynthesis":
        """A copy that runs on ``device`` (bit-identical results). ``im2col``: convolve as im2col +
        matmul — the default off the CPU; on the CPU only to test that path."""
        device = torch.device(device)
        im2col = device.type != "cpu" if im2col is None else bool(im2col)
        layers = [layer if isinstance(layer, str) else layer.to(device, im2col) for layer in self.layers]
        return ExactHyperSynthesis(layers, device)

    @classmethod
    def from_module(cls, h_s: nn.Sequential) -> "ExactHyperSynthesis":
        layers: list = []
        for m in h_s:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                layers.append(_IntLayer(m))
            elif isinstance(m, nn.LeakyReLU):
                if not math.isclose(m.negative_slope, 0.01):
                    raise ValueError("exact h_s supports LeakyReLU(0.01) only")
                layers.append("leaky")
            elif isinstance(m, nn.ReLU):
                layers.append("relu")
            else:
                raise ValueError(f"exact h_s cannot run layer {type(m).__name__}")
        return cls(layers)

    def to_fixed(self, z_hat: Tensor) -> Tensor:
        """ẑ → integers with ACT_FRAC_BITS fractional bits (round half to even, exact), on this
        instance's device."""
        return torch.round(z_hat.detach().to(self.device, torch.float64) * 2.0**ACT_FRAC_BITS)

    @torch.no_grad()
    def params_fixed(self, z_fixed: Tensor) -> Tensor:
        """Integer-valued float64 output (scales ‖ means) with ACT_FRAC_BITS fractional bits."""
        x = z_fixed
        for layer in self.layers:
            if layer == "leaky":
                x = torch.where(x < 0, torch.floor(x * LEAKY_NUM / 2.0**LEAKY_SHIFT), x)
            elif layer == "relu":
                x = torch.clamp_min(x, 0)
            else:
                x = layer(x)
        return x

    @torch.no_grad()
    def __call__(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        out = self.params_fixed(self.to_fixed(z_hat)).mul_(2.0**-ACT_FRAC_BITS).cpu()
        scales, means = out.chunk(2, 1)
        return scales, means
