"""Running a convolutional network (g_a, g_s) over a large image in bands of rows.

A band of output rows depends on a bounded range of input rows, which follows from the
layers' kernels, strides and paddings (``RowGeometry``). Each band runs the network on that
range of the input, cut at rows where the strided grids line up, and keeps the rows that the
cut edges cannot reach: the function of one pass over the whole image (up to float rounding,
as convolution libraries pick kernels by shape; exact for integer-valued arithmetic), with the
peak memory of one band's hidden maps instead of the image's (g_a's first GDN and g_s's last
one hold 128 channels at a quarter of the pixels: 128 bytes per image pixel per map).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TypeVar, cast

from torch import Tensor, nn

Outputs = TypeVar("Outputs", bound=Tensor | tuple)

# above this many full-resolution pixels, without gradients, g_a and g_s run in bands of about
# this many pixels each (the pre-editor's head uses the same threshold: PreEditor.band_pixels)
NETWORK_BAND_PIXELS = 1 << 20

_POINTWISE = (nn.LeakyReLU, nn.ReLU, nn.GELU, nn.Identity)


@dataclass(frozen=True)
class RowGeometry:
    """The vertical geometry of a chain of convolutions: ("conv" | "deconv", kernel, stride,
    padding) per layer, in order. Layers between them must be pointwise in space."""

    layers: tuple[tuple[str, int, int, int], ...]

    @classmethod
    def of(cls, seq: nn.Sequential, axis: int = 0) -> RowGeometry:
        """From a network's modules: Conv2d / ConvTranspose2d, and pointwise layers (GDN, its
        folded and kernel forms, activations); anything else is refused. ``axis`` 0: along the
        rows (the vertical geometry), 1: along the columns."""
        layers: list[tuple[str, int, int, int]] = []
        for m in seq:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                kind = "deconv" if isinstance(m, nn.ConvTranspose2d) else "conv"
                if m.dilation[axis] != 1:
                    raise ValueError(f"row bands do not handle dilated convolutions ({m})")
                # (numeric padding: the networks name no "same" / "valid")
                layers.append((kind, m.kernel_size[axis], m.stride[axis], cast(int, m.padding[axis])))
            elif not (isinstance(m, _POINTWISE) or "GDN" in type(m).__name__):
                raise ValueError(f"row bands cannot tell the geometry of {type(m).__name__}")
        return cls(tuple(layers))

    @property
    def scale(self) -> Fraction:
        """Output rows per input row."""
        s = Fraction(1)
        for kind, _, stride, _ in self.layers:
            s = s * stride if kind == "deconv" else s / stride
        return s

    @property
    def align(self) -> int:
        """A cut in the input must fall on a multiple of this many rows for the strided grids of
        a band to coincide with the whole image's."""
        a = 1
        for kind, _, stride, _ in reversed(self.layers):
            a = a * stride if kind == "conv" else max(1, a // stride)
        return a

    def input_rows(self, start: int, stop: int) -> tuple[int, int]:
        """The input rows [lo, hi) that output rows [start, stop) read (unclamped: rows
        outside the image are the zero padding)."""
        lo, hi = start, stop - 1  # inclusive while walking back
        for kind, k, s, p in reversed(self.layers):
            if kind == "conv":  # out o reads in o·s − p … o·s − p + k − 1
                lo, hi = lo * s - p, hi * s - p + k - 1
            else:  # out o reads in i with 0 ≤ o + p − s·i ≤ k − 1
                lo, hi = math.ceil((lo + p - k + 1) / s), (hi + p) // s
        return lo, hi + 1


def row_geometry(seq: nn.Sequential, axis: int = 0) -> RowGeometry | None:
    """``RowGeometry.of(seq, axis)``, or None for a network it cannot describe (which then never
    runs in bands)."""
    try:
        return RowGeometry.of(seq, axis)
    except ValueError:
        return None


def bands_at(pixels: int, band_pixels: int | None) -> bool:
    """Whether an image of ``pixels`` (full resolution) runs in bands under ``band_pixels``
    (None: never)."""
    return band_pixels is not None and pixels > band_pixels


def _band_slices(geometry: RowGeometry, h: int, band_rows: int):
    """Per band of ``band_rows`` output rows: (start, stop) of its output rows and [c0, c1) of
    the input rows it runs on (its receptive field, cut on the aligned grid, clamped)."""
    scale, align = geometry.scale, geometry.align
    rows_out = h * scale
    if rows_out.denominator != 1 or h % align:
        raise ValueError(f"{h} rows do not divide into the network's grid (scale {scale}, align {align})")
    h_out = int(rows_out)
    band_rows = max(1, int(band_rows))
    for start in range(0, h_out, band_rows):
        stop = min(start + band_rows, h_out)
        lo, hi = geometry.input_rows(start, stop)
        yield start, stop, max(lo, 0) // align * align, min(h, -(-hi // align) * align)


def band_rows_within(geometry: RowGeometry, h: int, min_rows: int, max_rows: int) -> int | None:
    """The most output rows per band for which every band's input (context and alignment
    included) has between ``min_rows`` and ``max_rows`` rows: how an engine whose optimisation
    profile caps the input height runs a taller one (with a column geometry: the columns of a
    wider one). None when no band size fits."""
    h_out = int(h * geometry.scale)
    for band_rows in range(h_out, 0, -1):
        if all(min_rows <= c1 - c0 <= max_rows for _, _, c0, c1 in _band_slices(geometry, h, band_rows)):
            return band_rows
    return None


def run_in_bands(fn: Callable[[Tensor], Outputs], x: Tensor, geometry: RowGeometry, band: int,
                 dim: int = -2) -> Outputs:
    """``fn(x)`` computed ``band`` output rows (``dim`` −2) or columns (``dim`` −1) at a time.
    ``fn`` must compute the network ``geometry`` describes along that axis, giving a tensor or a
    tuple of tensors whose last two dimensions are rows and columns; x's extent along ``dim``
    times ``geometry.scale`` must be whole."""
    if dim not in (-2, -1):
        raise ValueError(f"dim must be -2 (rows) or -1 (columns), got {dim}")
    n = x.shape[dim]
    scale = geometry.scale
    n_out = int(n * scale)  # (an extent off the grid raises in _band_slices before any band runs)
    outs: list[Tensor] = []
    single = True
    for start, stop, c0, c1 in _band_slices(geometry, n, band):
        result = fn(x.narrow(dim, c0, c1 - c0))
        single = isinstance(result, Tensor)
        parts = (result,) if single else tuple(result)
        offset = int(c0 * scale)
        for i, part in enumerate(parts):
            if part.shape[dim] != (c1 - c0) * scale:
                raise RuntimeError(f"network gave {part.shape[dim]} for {c1 - c0} input rows or columns (scale {scale})")
            if len(outs) <= i:
                shape = list(part.shape)
                shape[dim] = n_out
                outs.append(part.new_empty(shape))
            outs[i].narrow(dim, start, stop - start).copy_(part.narrow(dim, start - offset, stop - start))
    return outs[0] if single else tuple(outs)  # type: ignore[return-value]


def run_in_row_bands(fn: Callable[[Tensor], Outputs], x: Tensor, geometry: RowGeometry,
                     band_rows: int) -> Outputs:
    """``fn(x)`` computed ``band_rows`` output rows at a time (``run_in_bands`` along the rows)."""
    return run_in_bands(fn, x, geometry, band_rows, dim=-2)


def banded(fn: Callable[[Tensor], Outputs], x: Tensor, geometry: RowGeometry,
           band_pixels: int | None = NETWORK_BAND_PIXELS) -> Outputs:
    """``fn(x)``, in row bands of about ``band_pixels`` each when the full-resolution side (the
    input of g_a, the output of g_s) has more than ``band_pixels`` pixels per image (None:
    never; 0: one row of the coarse side per band)."""
    h, w = x.shape[-2:]
    scale = geometry.scale
    full_h, full_w = (h, w) if scale <= 1 else (int(h * scale), int(w * scale))
    if not bands_at(full_h * full_w, band_pixels):
        return fn(x)
    h_out = int(h * scale)
    assert band_pixels is not None
    band_rows = max(1, (band_pixels // full_w) * h_out // full_h)
    return run_in_row_bands(fn, x, geometry, band_rows)
