"""The reference backend: the model's own PyTorch modules (CPU, or CUDA when asked)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import BackendUnavailableError


class TorchBackend:
    name = "torch"

    def __init__(self, model, device: str = "cpu", threads: int | None = None):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailableError("torch backend on CUDA requested but no CUDA device is available")
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def analysis(self, x: Tensor) -> Tensor:
        return self.model.g_a(x.to(self.device)).float().cpu()

    @torch.inference_mode()
    def hyper_analysis(self, y: Tensor) -> Tensor:
        return self.model.h_a(y.to(self.device)).float().cpu()

    @torch.inference_mode()
    def synthesis(self, y_hat: Tensor) -> Tensor:
        return self.model.g_s(y_hat.to(self.device)).float().cpu()
