"""Backend parity and cross-decode checks (DESIGN.md, Determinism).

``compare_backends(codec_a, codec_b, image)`` encodes one image with two codecs that hold the
same model on different backends and reports:

- the float differences of the backend networks on identical inputs: ``y`` (g_a) and ``x̂``
  (g_s of the decoded ŷ, on the 0–1 scale, before rounding to pixels);
- encoder agreement: z symbols, y symbols and scale-table indexes chosen by both encoders,
  counted element by element (``*_mismatch``, with the positions and y − μ of the first y
  mismatches: a float difference in ``g_a`` can move y − μ across a rounding boundary), and
  whether the two streams are byte-identical;
- cross-decode: the stream of each codec decoded by the other (``a_to_b_ok``, ``b_to_a_ok``),
  whether that decoder recovers exactly the symbols the encoder wrote (``*_symbols_equal``,
  compared as ŷ = s + μ), and the largest pixel difference between the two decoders on the
  same stream.

Used by the tests and by ``bench/backends.py``.
"""

from __future__ import annotations

import numpy as np
import torch

from vlmcodec.image_io import pad_edge


def _symbols(codec, y: torch.Tensor, z: torch.Tensor):
    """(z symbols, y symbols, scale indexes, y − μ, ŷ, z − median) of one image, as
    ``Codec.entropy_encode`` derives them."""
    m = codec.medians.reshape(-1, 1, 1)
    z_res = z - m
    z_sym = torch.round(z_res)
    scales, means = codec.exact_hs((z_sym + m)[None])
    y_idx = codec._scale_index(scales)[0]
    residual = y.double() - means[0]
    y_sym = torch.round(residual)
    y_hat = (y_sym + means[0]).float()
    return (z_sym.to(torch.int32).numpy(), y_sym.to(torch.int32).numpy(), y_idx.numpy(), residual.numpy(), y_hat,
            z_res.numpy())


def compare_backends(codec_a, codec_b, image, quality: float = 75.0) -> dict:
    """Parity and cross-decode record for one image (see the module docstring)."""
    prep = codec_a.prepare(image, quality)
    img, q = prep.pixels, prep.quality
    x = torch.from_numpy(np.array(pad_edge(img)[None])).permute(0, 3, 1, 2).float().div_(255.0)
    with torch.inference_mode():
        y_diff = float((codec_a.backend.analysis(x) - codec_b.backend.analysis(x)).abs().max())
    (ya, za), (yb, zb) = codec_a.analyse([img], [q]), codec_b.analyse([img], [q])
    sa, sb = _symbols(codec_a, ya[0], za[0]), _symbols(codec_b, yb[0], zb[0])
    rec = {
        "z_mismatch": int((sa[0] != sb[0]).sum()),
        "y_mismatch": int((sa[1] != sb[1]).sum()),
        "index_mismatch": int((sa[2] != sb[2]).sum()),
        "symbols": int(sa[0].size + sa[1].size),
        "y_max_abs_diff": y_diff,
        # where the two encoders chose different symbols: (channel, row, col, value − offset by a,
        # by b); a z difference changes μ and σ downstream, so y and index differences follow it
        "z_mismatch_where": [(int(c), int(i), int(j), float(sa[5][c, i, j]), float(sb[5][c, i, j]))
                             for c, i, j in np.argwhere(sa[0] != sb[0])[:10]],
        "y_mismatch_where": [(int(c), int(i), int(j), float(sa[3][c, i, j]), float(sb[3][c, i, j]))
                             for c, i, j in np.argwhere(sa[1] != sb[1])[:10]],
    }
    stream_a, stream_b = codec_a.encode(img, q), codec_b.encode(img, q)
    rec["streams_equal"] = stream_a == stream_b
    decoded = {}
    runs = (("a_by_b", stream_a, codec_b), ("b_by_a", stream_b, codec_a), ("a_by_a", stream_a, codec_a))
    for tag, stream, dec in runs:
        try:
            decoded[tag] = dec.decode(stream)
        except Exception as e:  # a failed cross-decode is a result here, not an error
            decoded[tag] = None
            rec[f"{tag}_error"] = f"{type(e).__name__}: {e}"
    rec["a_to_b_ok"] = decoded["a_by_b"] is not None and decoded["a_by_b"].shape == img.shape
    rec["b_to_a_ok"] = decoded["b_by_a"] is not None and decoded["b_by_a"].shape == img.shape
    # the decoder side of each direction recovers exactly the ŷ (symbols + μ) its encoder wrote
    rec["a_to_b_symbols_equal"] = bool(torch.equal(codec_b.entropy_decode(stream_a).y_hat, sa[4]))
    rec["b_to_a_symbols_equal"] = bool(torch.equal(codec_a.entropy_decode(stream_b).y_hat, sb[4]))
    if rec["a_to_b_ok"] and decoded["a_by_a"] is not None and decoded["a_by_a"].shape == img.shape:
        diff = decoded["a_by_b"].astype(np.int16) - decoded["a_by_a"].astype(np.int16)
        rec["pixel_max_diff"] = int(np.abs(diff).max())
    # x̂ parity: both synthesis networks on the same decoded ŷ (0–1 scale, before clamping)
    latent = codec_a.entropy_decode(stream_a)
    level = torch.tensor([codec_a.model.level_of_quality(latent.header.quality)])
    with torch.inference_mode():
        _, inv_gain = codec_a.model.gains(level)
        y_in = latent.y_hat[None] * inv_gain[:, :, None, None]
        x_diff = codec_a.backend.synthesis(y_in) - codec_b.backend.synthesis(y_in)
        rec["x_hat_max_abs_diff"] = float(x_diff.abs().max())
    return rec
