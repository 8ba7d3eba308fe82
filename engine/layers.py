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


class LowerBound(nn.Module):
    """max(x, bound) with a gradient that can lift x off the bound."""

    bound: Tensor

    def __init__(self, bound: float):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
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
