"""Damaged copies of a ``.vlmc`` stream, for robustness tests of decoders.

The Python decoder's fuzz tests, the C decoder's agreement test and the sanitizer run of the C
library (``scripts/c_decoder_sanitizer_fuzz.py``) all draw their damage here. A damaged stream
must make a decoder raise a clean error (or, where the damage is invisible, decode to what the
other decoder gives), never crash or hang. With ``valid_crc`` the CRC-32 is recomputed over the
damage, so that it gets past the integrity check to the chunk table, rANS and h_s.
"""

from __future__ import annotations

import random
import struct
import zlib

from .container import unpack

KINDS = ("truncate", "flip", "overwrite", "insert")


def crc_offset(stream: bytes) -> int:
    """Where the CRC-32 field of a well-formed stream starts (the payload follows it)."""
    _, z, y = unpack(stream)
    return len(stream) - sum(map(len, z)) - sum(map(len, y)) - 4


def damage(stream: bytes, kind: str, r: random.Random, *, edits: int = 3, payload_only: bool = False,
           valid_crc: bool = False) -> bytes:
    """A damaged copy of the well-formed ``stream``.

    ``kind``: ``"truncate"`` (cut at a random length), ``"flip"`` (1..``edits`` random bit flips),
    ``"overwrite"`` (1..``edits`` bytes set to random values), ``"insert"`` (1..``edits`` random
    bytes inserted at one place). ``payload_only``: flips and overwrites fall in the payload.
    ``valid_crc``: the CRC recomputed over the result (when it still reaches past the field).
    The same ``r`` state gives the same damage.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if edits < 1:
        raise ValueError(f"edits must be >= 1, got {edits}")
    crc_at = crc_offset(stream)
    data = bytearray(stream)
    lo = crc_at + 4 if payload_only else 0
    if lo >= len(data):
        raise ValueError("the stream has no payload to damage")

    def count() -> int:
        return 1 if edits == 1 else r.randrange(1, edits + 1)  # (edits == 1 draws nothing)

    if kind == "truncate":
        data = data[: r.randrange(len(data))]
    elif kind == "insert":
        pos = r.randrange(len(data))
        data[pos:pos] = bytes(r.randrange(256) for _ in range(count()))
    else:
        for _ in range(count()):
            if kind == "flip":
                pos = r.randrange(lo, len(data))
                data[pos] ^= 1 << r.randrange(8)
            else:  # the value drawn first, then where it goes
                value = r.randrange(256)
                data[r.randrange(lo, len(data))] = value
    if valid_crc and len(data) > crc_at + 4:
        crc = zlib.crc32(bytes(data[crc_at + 4:]), zlib.crc32(bytes(data[:crc_at])))
        data[crc_at:crc_at + 4] = struct.pack("<I", crc)
    return bytes(data)
