"""``Codec``: a loaded model on one backend, encoding images to .vlmc bytes and back.

Encode (DESIGN.md, Data flow): pad → g_a → ·gain(q) → h_a → z symbols around the medians →
exact h_s(ẑ) → (μ, σ, k) → y symbols s = round(y − μ) → rANS in chunks → container.
Decode runs the same steps backwards; μ and k come from the exact h_s, so they match the
encoder's bit for bit on any backend and device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vlmcodec.kernels import rans

from .backends import create_backend
from .bitstream import container
from .entropy.exact_hyper import ExactHyperSynthesis
from .errors import BitstreamError, ModelMismatchError
from .image_io import as_rgb_array, pad_edge, padded_size
from .models.checkpoint import LoadedModel, load_model

DEFAULT_QUALITY = 75.0
SYMBOLS_PER_CHUNK = 1 << 16  # y is cut into ceil(n / this) chunks, for parallel decode
MAX_Y_CHUNKS = 64


def default_model_path() -> Path:
    return Path(__file__).parent / "weights" / "default.safetensors"


def num_chunks_for(n: int) -> int:
    return max(1, min(MAX_Y_CHUNKS, -(-n // SYMBOLS_PER_CHUNK)))


@dataclass
class _Latents:
    z_sym: np.ndarray     # int32 (N, hz, wz)
    y_sym: np.ndarray     # int32 (M, hy, wy)
    y_idx: np.ndarray     # int32 (M, hy, wy)


class Codec:
    """A model ready to encode and decode.

    >>> codec = Codec()                       # the default model, torch backend
    >>> data = codec.encode(image, quality=75)  # image: uint8 H×W×3 numpy or PIL
    >>> restored = codec.decode(data)         # uint8 H×W×3 numpy
    """

    def __init__(self, model: str | Path | LoadedModel | None = None, backend: str = "torch",
                 device: str = "cpu", threads: int | None = None):
        loaded = model if isinstance(model, LoadedModel) else load_model(model or default_model_path())
        self.loaded = loaded
        self.model = loaded.model
        self.fingerprint = loaded.fingerprint[:8]
        self.tables = loaded.tables
        self.backend = create_backend(backend, self.model, device=device, threads=threads) if backend == "torch" \
            else create_backend(backend, self.model, device=device)
        self.exact_hs = ExactHyperSynthesis.from_module(self.model.h_s)
        self.medians = self.model.entropy_bottleneck.medians().detach().float().cpu()
        self.scale_table64 = self.model.gaussian_conditional.scale_table.detach().double().cpu()
        self.scale_bound = float(self.model.gaussian_conditional.scale_bound)
        self.threads = threads or min(4, os.cpu_count() or 1)

    # -- public API ----------------------------------------------------------------------
    @property
    def N(self) -> int:
        return self.model.N

    @property
    def M(self) -> int:
        return self.model.M

    def encode(self, image, quality: float = DEFAULT_QUALITY) -> bytes:
        """Compress one image (uint8 H×W×3 numpy or PIL) to .vlmc bytes; quality in [0, 100]."""
        return self.encode_batch([image], [quality])[0]

    def decode(self, data: bytes) -> np.ndarray:
        """Decompress .vlmc bytes to a uint8 H×W×3 array."""
        return self.decode_batch([data])[0]

    def encode_batch(self, images, qualities) -> list[bytes]:
        """Encode images that share one padded size in one batched network pass."""
        arrays = [as_rgb_array(im) for im in images]
        if isinstance(qualities, (int, float)):
            qualities = [qualities] * len(arrays)
        qualities = [container.quantize_quality(q) for q in qualities]
        for q in qualities:
            self.model.level_of_quality(q)  # validates the range
        sizes = {padded_size(*a.shape[:2]) for a in arrays}
        if len(sizes) > 1:
            return [self.encode_batch([a], [q])[0] for a, q in zip(arrays, qualities)]
        x = torch.from_numpy(np.stack([pad_edge(a) for a in arrays])).permute(0, 3, 1, 2).float().div_(255.0)
        latents = self._analyse(x, qualities)
        return [self._write(a.shape[:2], q, lat) for a, q, lat in zip(arrays, qualities, latents)]

    def decode_batch(self, streams) -> list[np.ndarray]:
        """Decode streams; those that share a padded size run the synthesis as one batch."""
        parsed = [self._read(s) for s in streams]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (h, _) in enumerate(parsed):
            groups.setdefault(padded_size(h.height, h.width), []).append(i)
        out: list[np.ndarray | None] = [None] * len(parsed)
        for idx in groups.values():
            y_hat = torch.stack([parsed[i][1] for i in idx])
            levels = torch.tensor([self.model.level_of_quality(parsed[i][0].quality) for i in idx])
            with torch.inference_mode():
                _, inv_gain = self.model.gains(levels)
                x_hat = self.backend.synthesis(y_hat * inv_gain[:, :, None, None])
                pix = x_hat.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for j, i in enumerate(idx):
                h = parsed[i][0]
                out[i] = np.ascontiguousarray(pix[j, : h.height, : h.width])
        return out  # type: ignore[return-value]

    # -- internals -----------------------------------------------------------------------
    def _scale_index(self, scales64: Tensor) -> Tensor:
        s = torch.clamp_min(scales64, self.scale_bound).contiguous()
        return torch.bucketize(s, self.scale_table64[:-1].contiguous(), right=False).to(torch.int32)

    def _analyse(self, x: Tensor, qualities: list[float]) -> list[_Latents]:
        levels = torch.tensor([self.model.level_of_quality(q) for q in qualities])
        with torch.inference_mode():
            gain, _ = self.model.gains(levels)
            y = self.backend.analysis(x) * gain[:, :, None, None]
            z = self.backend.hyper_analysis(y)
        m = self.medians.reshape(1, -1, 1, 1)
        z_sym = torch.round(z - m)
        out = []
        for b in range(x.shape[0]):  # per item: the exact path is batch-invariant anyway
            scales, means = self.exact_hs((z_sym[b : b + 1] + m))
            y_idx = self._scale_index(scales)[0]
            y_sym = torch.round(y[b].double() - means[0]).to(torch.int32)
            out.append(_Latents(z_sym[b].to(torch.int32).numpy(), y_sym.numpy(), y_idx.numpy()))
        return out

    def _z_indexes(self, hz: int, wz: int) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(np.arange(self.N, dtype=np.int32)[:, None, None], (self.N, hz, wz)))

    def _write(self, hw: tuple[int, int], quality: float, lat: _Latents) -> bytes:
        z_chunks = rans.encode(lat.z_sym.ravel(), self._z_indexes(*lat.z_sym.shape[1:]).ravel(), self.tables["z"], 1)
        n = lat.y_sym.size
        y_chunks = rans.encode(lat.y_sym.ravel(), lat.y_idx.ravel(), self.tables["y"], num_chunks_for(n))
        header = container.Header(fingerprint=self.fingerprint, width=int(hw[1]), height=int(hw[0]), quality=quality)
        return container.pack(header, z_chunks, y_chunks)

    def _read(self, data: bytes) -> tuple[container.Header, Tensor]:
        header, z_chunks, y_chunks = container.unpack(data)
        if header.fingerprint != self.fingerprint:
            raise ModelMismatchError(
                f"stream was written by model {header.fingerprint.hex()}, this codec holds {self.fingerprint.hex()}; "
                "decode it with the model that wrote it")
        ph, pw = padded_size(header.height, header.width)
        hz, wz, hy, wy = ph // 64, pw // 64, ph // 16, pw // 16
        n_y = self.M * hy * wy
        if len(y_chunks) != num_chunks_for(n_y) or len(z_chunks) != 1:
            raise BitstreamError("corrupt stream: chunk count does not match the image size")
        try:
            z_sym = rans.decode(z_chunks, self._z_indexes(hz, wz).ravel(), self.tables["z"], threads=1)
        except ValueError as e:
            raise BitstreamError(f"corrupt stream: z payload does not decode ({e})") from e
        m = self.medians.reshape(1, -1, 1, 1)
        z_hat = torch.from_numpy(z_sym.reshape(1, self.N, hz, wz)).float() + m
        scales, means = self.exact_hs(z_hat)
        y_idx = self._scale_index(scales)[0].numpy()
        try:
            y_sym = rans.decode(y_chunks, np.ascontiguousarray(y_idx).ravel(), self.tables["y"], threads=self.threads)
        except ValueError as e:
            raise BitstreamError(f"corrupt stream: y payload does not decode ({e})") from e
        y_hat = (torch.from_numpy(y_sym.reshape(self.M, hy, wy)).double() + means[0]).float()
        return header, y_hat
