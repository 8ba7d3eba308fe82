"""The ``triton`` backend: the optimised torch networks with every GDN/IGDN replaced by the
fused Triton kernel (parameters folded once per model), and the encoder's quantization
(symbols and scale-table indices) done by the fused quantization kernel.

Runs on CUDA; on CPU only under ``TRITON_INTERPRET=1`` (slow, for tests). Streams are
interchangeable with every other backend: the entropy parameters come from the shared exact
path, and the kernel's scale indices equal the reference bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import BackendUnavailableError
from ..layers import FoldedGDN
from .torch_backend import TorchBackend


def _kernels():
    try:
        from vlmcodec.kernels import _utils, gdn, quantize
    except Exception as e:  # pragma: no cover - import errors of an optional dependency
        raise BackendUnavailableError(f"triton backend not available: {e}") from e
    return _utils, gdn, quantize


class TritonGDN(nn.Module):
    """FoldedGDN computed by the fused kernel."""

    beta: Tensor
    gamma: Tensor

    def __init__(self, folded: FoldedGDN):
        super().__init__()
        from vlmcodec.kernels.gdn import gdn

        self._gdn = gdn
        self.inverse = folded.inverse
        c = folded.beta.numel()
        self.register_buffer("beta", folded.beta.detach().clone())
        self.register_buffer("gamma", folded.weight.detach().reshape(c, c).clone())

    def forward(self, x: Tensor) -> Tensor:
        return self._gdn(x, self.beta, self.gamma, inverse=self.inverse, impl="triton")


class TritonBackend(TorchBackend):
    name = "triton"

    def __init__(self, model, device: str | None = None, threads: int | None = None):
        utils, _, _ = _kernels()
        if not utils.is_triton_available():
            raise BackendUnavailableError("triton backend not available: the triton package is not installed "
                                          "(pip install triton==3.7.1)")
        if device is None:  # an explicit "cpu" stays on the CPU (the interpreter), even beside a GPU
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and not utils.triton_language_interpreted():
            raise BackendUnavailableError(
                "triton backend not available: no CUDA GPU; on CPU it runs only under TRITON_INTERPRET=1 "
                "set before triton is first imported (for tests)")
        super().__init__(model, device=device, threads=threads, optimize=True)
        for seq in (self.g_a, self.g_s):
            for i, m in enumerate(seq):
                if isinstance(m, FoldedGDN):
                    seq[i] = TritonGDN(m).to(self.device)

    def quantize(self, y: Tensor, means: Tensor, scales: Tensor, scale_table: Tensor,
                 scale_bound: float) -> tuple[Tensor, Tensor]:
        """(int32 symbols, int32 scale indices) by the fused kernel, bit-identical to the torch path:
        y − μ rounded in float64, σ clamped at the model's ``scale_bound`` as the decoder does."""
        from vlmcodec.kernels.quantize import quantize

        dev = self.device
        sym, _, idx = quantize(y.to(dev, torch.float64), means.to(dev, torch.float64), scales.to(dev, torch.float32),
                               scale_table.to(dev, torch.float32), impl="triton", scale_bound=scale_bound)
        return sym.cpu(), idx.cpu()
