"""The reference backend: the model's own PyTorch modules (CPU, or CUDA when asked).

With ``optimize=True`` (the default) it runs copies of the networks rewritten for speed but
computing the same function: channels-last memory layout, and every stride-2 transposed
convolution of ``g_s`` replaced by a 3×3 convolution + pixel shuffle (``SubPixelConv``), and
GDN with its parameters folded once and the normalisation done in place (``FoldedGDN``).
``optimize=False`` runs the modules exactly as trained.

Large images: above ``band_pixels`` full-resolution pixels, g_a and g_s run in bands of rows
(``vlmcodec.banding``): the same function (up to float rounding: oneDNN picks kernels by
shape), with the peak memory of one band's hidden maps.

Batch invariance: on CPU, items of a batch go through the networks one at a time, so
``Codec.encode_batch`` / the runtime Engine give byte-identical results to single calls.
"""

from __future__ import annotations

import copy
import threading

import torch
from torch import Tensor, nn

from ..banding import NETWORK_BAND_PIXELS, RowGeometry, banded, row_geometry
from ..checks import is_switch
from ..devices import torch_device
from ..errors import ConfigError
from ..layers import GDN, FoldedGDN, SubPixelConv
from ..torch_threads import set_torch_threads


def optimize_for_inference(seq: nn.Sequential) -> nn.Sequential:
    """A copy of ``seq`` with transposed convs as sub-pixel convs, in channels-last layout."""
    out = copy.deepcopy(seq).eval()
    for i, m in enumerate(out):
        if isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) and m.kernel_size == (5, 5):
            out[i] = SubPixelConv.from_deconv(m)
        elif isinstance(m, GDN):
            out[i] = FoldedGDN(m)
    return out.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch's stub lacks it)


class TorchBackend:
    name = "torch"
    # above this many pixels per image, g_a and g_s run in row bands (None: never)
    band_pixels: int | None = NETWORK_BAND_PIXELS

    def __init__(self, model, device: str = "cpu", threads: int | None = None, optimize: bool = True):
        if not is_switch(optimize):  # ("false" was true: any string is)
            raise ConfigError(f"{self.name} backend: optimize must be true or false, got {optimize!r}")
        # cpu or cuda only: "meta" moved the caller's model there, breaking every codec sharing it
        self.device = torch_device(device, f"{self.name} backend: device")
        set_torch_threads(threads)  # (one in a process forked after torch ran on several: torch_threads.py)
        self.model = model.to(self.device).eval()
        self._streams: dict[int, "torch.cuda.Stream"] = {}
        self.optimize = bool(optimize)
        if optimize:
            self.g_a = optimize_for_inference(self.model.g_a)
            self.h_a = optimize_for_inference(self.model.h_a)
            self.g_s = optimize_for_inference(self.model.g_s)
        else:
            self.g_a, self.h_a, self.g_s = self.model.g_a, self.model.h_a, self.model.g_s
        self._ga_rows, self._gs_rows = row_geometry(self.model.g_a), row_geometry(self.model.g_s)
        pre = self.model.pre_editor
        self.pre = None if pre is None else (copy.deepcopy(pre).eval().to(memory_format=torch.channels_last)
                                             if optimize else pre)

    @property
    def item_by_item(self) -> bool:
        """Whether a batch's items go through the networks one at a time (on the CPU)."""
        return self.device.type != "cuda"

    def _run(self, net: nn.Module, x: Tensor) -> Tensor:
        if self.device.type == "cuda":
            return self._run_cuda(net, x)
        if self.optimize:
            x = x.contiguous(memory_format=torch.channels_last)
        if x.shape[0] > 1:
            # oneDNN picks batch-size-dependent algorithms for small feature maps, which changes
            # float rounding; one item at a time keeps batched results identical to single ones.
            return torch.cat([net(x[i : i + 1]).float() for i in range(x.shape[0])]).contiguous()
        return net(x).float().contiguous()

    def _run_cuda(self, net: nn.Module, x: Tensor) -> Tensor:
        """On CUDA: each calling thread gets its own stream (the runtime's network thread and a
        caller's thread do not serialise on the default stream); host tensors are staged in
        pinned memory so the copies are asynchronous."""
        stream = self._streams.get(threading.get_ident())
        if stream is None:
            stream = self._streams.setdefault(threading.get_ident(), torch.cuda.Stream(device=self.device))
        with torch.cuda.stream(stream):
            src = x.pin_memory() if x.device.type == "cpu" else x
            xd = src.to(self.device, non_blocking=True)
            if self.optimize:
                xd = xd.contiguous(memory_format=torch.channels_last)
            out = net(xd).float()
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
        stream.synchronize()
        return host.contiguous()

    @torch.inference_mode()
    def pre_edit(self, x: Tensor) -> Tensor:
        """The pre-editor P (identity for models without one), clamped to [0, 1]."""
        return x if self.pre is None else self._run(self.pre, x).clamp_(0, 1)

    @torch.inference_mode()
    def analysis(self, x: Tensor) -> Tensor:
        return self._banded(self.g_a, x, self._ga_rows)

    @torch.inference_mode()
    def hyper_analysis(self, y: Tensor) -> Tensor:
        return self._run(self.h_a, y)

    @torch.inference_mode()
    def synthesis(self, y_hat: Tensor) -> Tensor:
        return self._banded(self.g_s, y_hat, self._gs_rows)

    def _banded(self, net: nn.Module, x: Tensor, geometry: RowGeometry | None) -> Tensor:
        if geometry is None:
            return self._run(net, x)
        return banded(lambda part: self._run(net, part), x, geometry, self.band_pixels)
