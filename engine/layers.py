"""Building blocks of the transforms: GDN/IGDN and the conv helpers.

Parameter and buffer names follow CompressAI (``beta``, ``gamma``, ``beta_reparam.pedestal``,
``...lower_bound.bound``) so its checkpoints load without renaming.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _LowerBoundFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, bound: Tensor) -> Tensor:
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, bound = ctx.saved_tensors
        # Let gradients through where they would push x back above the bound.
        pass_through = (x >= bound) | (grad < 0)
        return pass_through.type_as(grad) * grad, None


def tracing_here() -> bool:
    """Whether this thread is tracing the networks (the TorchScript ONNX export traces them, as
    ``torch.jit.trace`` does): they then take the traceable paths. Not
    ``torch.onnx.is_in_onnx_export()``: that is one flag for the whole process, true in every
    thread while any exports — an encode in another thread then attended globally and skipped
    the pre-editor's bands (2.7x the memory at 2048x2048, beyond its memory estimate)."""
    return torch.jit.is_tracing()


def making_meta() -> bool:
    """Whether modules are being made on the meta device (a model file's shapes, a load that then
    assigns the file's tensors): their constructors then make empty tensors rather than compute
    initial values — arithmetic on meta tensors runs torch's Python meta kernels, whose first call
    imports torch._dynamo (~0.9 s of every process's first Codec(); 79 ms in all before)."""
    return torch.empty(0).is_meta


class LowerBound(nn.Module):
    """max(x, bound) with a gradient that can lift x off the bound."""

    bound: Tensor

    def __init__(self, bound: float):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting() or tracing_here():
            return torch.max(x, self.bound)
        return _LowerBoundFn.apply(x, self.bound)


class NonNegativeParametrizer(nn.Module):
    """Stores sqrt(v + pedestal); returns max(p, bound)^2 - pedestal (keeps v >= minimum)."""

    pedestal: Tensor

    def __init__(self, minimum: float = 0.0, reparam_offset: float = 2**-18):
        super().__init__()
        self.minimum = float(minimum)
        self.reparam_offset = float(reparam_offset)
        self.register_buffer("pedestal", torch.tensor([self.reparam_offset**2]))
        self.lower_bound = LowerBound((self.minimum + self.reparam_offset**2) ** 0.5)

    def init(self, x: Tensor) -> Tensor:
        return torch.sqrt(torch.max(x + self.pedestal, self.pedestal))

    def forward(self, x: Tensor) -> Tensor:
        return self.lower_bound(x) ** 2 - self.pedestal


class GDN(nn.Module):
    r"""Generalized divisive normalization (Ballé et al. 2016).

    GDN:  y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2);   IGDN (``inverse=True``): multiply.
    ``fold()`` returns the effective (beta, gamma) once, for kernels and export.
    """

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.channels = int(channels)
        self.inverse = bool(inverse)
        self.beta_reparam = NonNegativeParametrizer(minimum=beta_min)
        self.gamma_reparam = NonNegativeParametrizer()
        if making_meta():
            self.beta = nn.Parameter(torch.empty(channels))
            self.gamma = nn.Parameter(torch.empty(channels, channels))
            return
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(channels)))
        self.gamma = nn.Parameter(self.gamma_reparam.init(gamma_init * torch.eye(channels)))

    def fold(self) -> tuple[Tensor, Tensor]:
        """Effective non-negative (beta [C], gamma [C, C])."""
        return self.beta_reparam(self.beta), self.gamma_reparam(self.gamma)

    def forward(self, x: Tensor) -> Tensor:
        beta, gamma = self.fold()
        norm = F.conv2d(x * x, gamma.reshape(self.channels, self.channels, 1, 1), beta)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))

    def extra_repr(self) -> str:
        return f"{self.channels}, inverse={self.inverse}"


def conv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(in_ch: int, out_ch: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(
        in_ch, out_ch, kernel_size, stride=stride, output_padding=stride - 1, padding=kernel_size // 2
    )


class SubPixelConv(nn.Module):
    """A stride-2 ConvTranspose2d(k=5, padding=2, output_padding=1) rewritten as a 3×3 conv
    producing the four output phases, then PixelShuffle(2). Same function, and much faster on
    CPU, where transposed convolutions are poorly optimised. Built by ``from_deconv``."""

    def __init__(self, conv3: nn.Conv2d):
        super().__init__()
        self.conv = conv3
        self.shuffle = nn.PixelShuffle(2)

    @classmethod
    def from_deconv(cls, d: nn.ConvTranspose2d) -> "SubPixelConv":
        if d.kernel_size != (5, 5) or d.stride != (2, 2) or d.padding != (2, 2) or d.output_padding != (1, 1):
            raise ValueError("SubPixelConv handles ConvTranspose2d(k=5, s=2, p=2, output_padding=1) only")
        w = d.weight.detach()                       # (Cin, Cout, 5, 5)
        cin, cout = w.shape[:2]
        new_w = torch.zeros(cout, 2, 2, cin, 3, 3, dtype=w.dtype)
        # output phase a at tap t reads kernel index k = a + 4 - 2t (when 0 <= k < 5)
        for ay in range(2):
            for ty in range(3):
                ky = ay + 4 - 2 * ty
                if not 0 <= ky < 5:
                    continue
                for ax in range(2):
                    for tx in range(3):
                        kx = ax + 4 - 2 * tx
                        if 0 <= kx < 5:
                            new_w[:, ay, ax, :, ty, tx] = w[:, :, ky, kx].t()
        # built on meta and given its tensors: no random init (torch's generator is neither drawn
        # from nor locked, which a fork meanwhile would inherit held: forks.py)
        conv3 = nn.Conv2d(cin, 4 * cout, 3, padding=1, bias=d.bias is not None, device="meta")
        conv3.weight = nn.Parameter(new_w.reshape(4 * cout, cin, 3, 3))
        if d.bias is not None:
            conv3.bias = nn.Parameter(d.bias.detach().repeat_interleave(4))
        return cls(conv3.to(w.device))

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))


class FoldedGDN(nn.Module):
    """Inference-only GDN/IGDN with β, γ folded once (no reparametrisation per call) and the
    normalisation computed in place: one 1×1 conv, one (r)sqrt, one multiply."""

    beta: Tensor
    weight: Tensor

    def __init__(self, gdn: GDN):
        super().__init__()
        beta, gamma = gdn.fold()
        c = gdn.channels
        self.inverse = gdn.inverse
        self.register_buffer("beta", beta.detach().clone())
        self.register_buffer("weight", gamma.detach().clone().reshape(c, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        norm = F.conv2d(x * x, self.weight, self.beta)
        norm = norm.sqrt_() if self.inverse else norm.rsqrt_()
        return norm.mul_(x)
