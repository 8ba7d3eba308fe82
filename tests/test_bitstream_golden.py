"""The .vlmc format pinned: streams written from fixed latents by the default model must keep
their exact bytes (SHA-256). Round-trip tests pass a layout change made on both sides alike;
these fail on it. The latents are given, not computed by the float networks, so what is pinned
is the format (container, chunking, exact h_s, scale indexes, rANS), the same on any machine.

A deliberate format change updates the hashes here (and FORMAT_VERSION, and the C decoder)."""

import hashlib

import numpy as np
import pytest
import torch

from vlmcodec import Codec
from vlmcodec.bitstream import container

GOLDEN = {
    # (height, width, quality, short_side): (stream bytes, SHA-256)
    (512, 576, 42.5, None): (347495, "73ed733841a631b39dd0c88ba315a4aa5eddc9f734620e4f7d9943255f5c2186"),
    (100, 150, 87.25, 64): (9386, "d08e1d4d2431dbf9cb8e460bb0330ffccbfdfdad798bb12927b6da6fba0bfc1c"),
}


def _latents(codec: Codec, prep) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed y (× gain) and z of the prepared image's latent size: small integers times a step,
    so that their symbols cover the scale table and the escape code of no platform's rounding."""
    ch, cw = prep.pixels.shape[:2]
    h, w = -(-ch // 64) * 4, -(-cw // 64) * 4
    m, n = codec.model.M, codec.model.N
    c, i, j = torch.meshgrid(torch.arange(m), torch.arange(h), torch.arange(w), indexing="ij")
    y = (((c * 7 + i * 3 + j * 5) % 23) - 11).float() * 0.75
    c, i, j = torch.meshgrid(torch.arange(n), torch.arange(h // 4), torch.arange(w // 4), indexing="ij")
    z = (((c * 5 + i * 3 + j) % 9) - 4).float() * 1.25
    return y, z


@pytest.fixture(scope="module")
def codec():
    return Codec(threads=1)


@pytest.mark.parametrize("case", list(GOLDEN))
def test_streams_from_fixed_latents_keep_their_bytes(codec, case):
    h, w, quality, short_side = case
    prep = codec.prepare(np.zeros((h, w, 3), np.uint8), quality, short_side)
    data = codec.entropy_encode(*_latents(codec, prep), prep)
    size, digest = GOLDEN[case]
    assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest)
    header, z_chunks, y_chunks = container.unpack(data)
    assert (header.width, header.height, header.quality) == (w, h, quality)
    assert header.rescaled == (short_side is not None)
    latent = codec.entropy_decode(data)  # and it reads back: 3 y chunks of 64K symbols at 512×576
    assert latent.y_hat.shape[0] == codec.model.M and len(z_chunks) == 1
    assert len(y_chunks) == (3 if h == 512 else 1)
