"""The backend interface."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class Backend(Protocol):
    """Runs the float networks on batched tensors (float32, NCHW, values as in training).
    The tensors returned are the caller's own: the codec works on them in place."""

    name: str
    # True when a batch's items run through the networks one at a time (the CPU backends):
    # batched results then equal single calls', and a batch size is no new shape to warm up
    item_by_item: bool

    def pre_edit(self, x: Tensor) -> Tensor:
        """Pre-editor P: images in [0, 1] → edited images in [0, 1] (identity without one)."""

    def analysis(self, x: Tensor) -> Tensor:
        """g_a: images in [0, 1], (B, 3, H, W) → y (B, M, H/16, W/16)."""

    def hyper_analysis(self, y: Tensor) -> Tensor:
        """h_a: y (already multiplied by the gain) → z (B, N, H/64, W/64)."""

    def synthesis(self, y_hat: Tensor) -> Tensor:
        """g_s: ŷ (already multiplied by the inverse gain) → x̂ (B, 3, H, W)."""


class FusedQuantizer(Protocol):
    """A backend with a fused quantization kernel (the codec asks ``hasattr(backend, "quantize")``)."""

    def quantize(self, y: Tensor, means: Tensor, scales: Tensor, scale_table: Tensor,
                 scale_bound: float) -> tuple[Tensor, Tensor]:
        """(int32 symbols, int32 scale indices), bit-identical to the torch path."""
