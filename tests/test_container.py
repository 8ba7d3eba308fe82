"""The .vlmc container: round trip, limits, and every kind of damage raises BitstreamError."""

import random
import struct
import zlib

import pytest

from vlmcodec.bitstream import container
from vlmcodec.errors import BitstreamError

FP = bytes(range(8))


def _stream(w=768, h=512, q=75.0, z=(b"zz" * 10,), y=(b"a" * 300, b"b" * 280, b"")):
    return container.pack(container.Header(FP, w, h, q), list(z), list(y))


def test_round_trip_fields():
    data = _stream(w=33, h=1001, q=12.34)
    h, z, y = container.unpack(data)
    assert (h.width, h.height, h.quality, h.fingerprint, h.version) == (33, 1001, 12.34, FP, 1)
    assert z == [b"zz" * 10] and y == [b"a" * 300, b"b" * 280, b""]


def test_overhead_is_small():
    z, y = [b"z" * 100], [b"y" * 20000] * 4
    data = container.pack(container.Header(FP, 768, 512, 75.0), z, y)
    overhead = len(data) - 100 - 80000
    assert overhead <= 40, overhead


@pytest.mark.parametrize("cut", [0, 1, 3, 4, 5, 13, 14, 20, 30])
def test_truncated_header(cut):
    with pytest.raises(BitstreamError):
        container.unpack(_stream()[:cut])


def test_every_truncation_raises():
    data = _stream()
    for n in range(len(data)):
        with pytest.raises(BitstreamError):
            container.unpack(data[:n])


def test_extra_bytes_raise():
    with pytest.raises(BitstreamError, match="payload"):
        container.unpack(_stream() + b"\0")


def test_bad_magic_version_flags():
    data = bytearray(_stream())
    with pytest.raises(BitstreamError, match="magic"):
        container.unpack(b"XXXX" + bytes(data[4:]))
    bad = bytearray(data); bad[4] = 9
    with pytest.raises(BitstreamError, match="version 9"):
        container.unpack(bytes(bad))
    bad = bytearray(data); bad[5] = 0x80
    with pytest.raises(BitstreamError, match="flags"):
        container.unpack(bytes(bad))


def test_every_single_bit_flip_raises():
    data = _stream(y=(b"payload" * 5,))
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(BitstreamError):
                container.unpack(bytes(bad))


def test_absurd_dimensions_and_counts_rejected_before_allocation():
    head = bytearray(b"VLMC") + bytes([1, 0]) + FP
    huge = head + b"\xff\xff\xff\xff\x0f" + b"\x01"          # width = 2**32 - 1
    with pytest.raises(BitstreamError, match="width"):
        container.unpack(bytes(huge))
    many = head + b"\x10\x10" + struct.pack("<H", 100) + b"\x01" + b"\xff\xff\x03"  # 65535 y chunks
    with pytest.raises(BitstreamError, match="chunk count"):
        container.unpack(bytes(many))
    q = head + b"\x10\x10" + struct.pack("<H", 10001)
    with pytest.raises(BitstreamError, match="quality"):
        container.unpack(bytes(q))


def varint(n: int) -> bytes:
    """``n`` as the container writes it: 7 bits a byte, low first, the top bit set on all but the last."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _hand_built(width: int, height: int, n_z: int, n_y: int) -> bytes:
    """A stream of ``n_z`` + ``n_y`` empty chunks written field by field (``pack`` refuses sizes and
    counts over the limits), its CRC right: only the limits can refuse it."""
    head = b"VLMC" + bytes([1, 0]) + FP + varint(width) + varint(height) + struct.pack("<H", 5000)
    head += varint(n_z) + varint(n_y) + b"\x00" * (n_z + n_y)
    return head + struct.pack("<I", zlib.crc32(head))


def test_the_largest_size_and_chunk_counts_are_read_and_one_more_refused():
    top = container.MAX_DIM
    h, _, _ = container.unpack(container.pack(container.Header(FP, top, top, 50.0), [b""], [b""]))
    assert (h.width, h.height) == (top, top)
    for w, hgt in [(top, top), (top, 1), (1, top)]:
        assert container.unpack(_hand_built(w, hgt, 1, 1))[0].width == w
    for w, hgt, field in [(top + 1, 1, "width"), (1, top + 1, "height")]:
        with pytest.raises(BitstreamError, match=f"{field} = {top + 1} is outside"):
            container.unpack(_hand_built(w, hgt, 1, 1))
    most = container.MAX_CHUNKS
    _, z, y = container.unpack(container.pack(container.Header(FP, 5, 5, 50.0), [b""] * most, [b""] * most))
    assert len(z) == len(y) == most
    assert container.unpack(_hand_built(5, 5, most, most))[0].y_lengths == (0,) * most
    for n_z, n_y, field in [(most + 1, 1, "z chunk count"), (1, most + 1, "y chunk count")]:
        with pytest.raises(BitstreamError, match=f"{field} = {most + 1} is outside"):
            container.unpack(_hand_built(5, 5, n_z, n_y))


def with_header(data: bytes, edit) -> bytes:
    """The well-formed stream ``data`` with its header (the bytes before the CRC field) changed by
    ``edit`` (a bytearray in, bytes out) and the CRC recomputed over the new header and the payload."""
    from vlmcodec.bitstream.damage import crc_offset

    crc_at = crc_offset(data)
    head, payload = bytes(edit(bytearray(data[:crc_at]))), data[crc_at + 4:]
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def over_long_width(data: bytes) -> bytes:
    """``data`` (a one-byte width at offset 14) with its width padded to two bytes (``0x80 | w, 0x00``)
    and the CRC recomputed: the same numbers in a longer byte form."""
    assert data[14] < 0x80
    return with_header(data, lambda head: head[:14] + bytes([0x80 | head[14], 0]) + head[15:])


def test_over_long_varints_are_refused():
    """One stream, one byte form: a number padded with a trailing 0x00 byte is refused (a single
    0x00, the number 0, is a valid varint: an empty chunk's length)."""
    z, y = [b"zz"], [b"yyy", b""]
    data = container.pack(container.Header(FP, 33, 40, 50.0), z, y)
    assert container.unpack(data)[2] == y
    with pytest.raises(BitstreamError, match="width is not a valid varint .over-long"):
        container.unpack(over_long_width(data))


def test_random_garbage_never_crashes():
    rng = random.Random(0)
    for _ in range(3000):
        n = rng.randrange(0, 80)
        blob = bytes(rng.randrange(256) for _ in range(n))
        if rng.random() < 0.5:
            blob = b"VLMC\x01\x00" + blob
        with pytest.raises(BitstreamError):
            container.unpack(blob)


def test_non_bytes_input():
    with pytest.raises(BitstreamError):
        container.unpack("VLMC")  # type: ignore[arg-type]


def test_pack_validates():
    with pytest.raises(ValueError):
        container.pack(container.Header(FP, 0, 5, 50.0), [b""], [b""])
    with pytest.raises(ValueError):
        container.pack(container.Header(FP, 5, 5, 150.0), [b""], [b""])
    with pytest.raises(ValueError):
        container.pack(container.Header(b"short", 5, 5, 50.0), [b""], [b""])


def test_fingerprint_of_reads_the_header_alone():
    data = _stream()
    assert container.fingerprint_of(data) == FP == container.fingerprint_of(memoryview(data)[:14])
    for bad, message in ((b"JUNKJUNKJUNKJUNK", "bad magic"), (data[:13], "truncated"),
                         (data[:4] + b"\x09" + data[5:], "version 9")):
        with pytest.raises(BitstreamError, match=message):
            container.fingerprint_of(bad)


def test_damage_helper_kinds_crc_and_determinism():
    """vlmcodec.bitstream.damage, which the decoders' fuzz tests draw from: every kind changes the
    stream, payload-only damage behind a recomputed CRC still parses (the CRC holds, the header is
    intact), without it the CRC check catches it, and a seed gives the same damage."""
    from vlmcodec.bitstream.damage import KINDS, crc_offset, damage

    data = _stream()
    crc_at = crc_offset(data)
    assert data[crc_at:crc_at + 4] == struct.pack("<I", zlib.crc32(data[crc_at + 4:], zlib.crc32(data[:crc_at])))
    r = random.Random(0)
    for kind in KINDS:
        changed = [damage(data, kind, r, edits=5) != data for _ in range(50)]
        assert sum(changed) >= 45, kind  # (an overwrite may rewrite a byte with its own value)
    for _ in range(50):
        bad = damage(data, "flip", r, payload_only=True, valid_crc=True)
        h, z, y = container.unpack(bad)  # parses: only the payload changed, and the CRC covers it
        assert (h.width, h.height) == (768, 512) and bad[:crc_at] == data[:crc_at]
        with pytest.raises(BitstreamError, match="CRC-32"):
            container.unpack(damage(data, "flip", r, edits=1, payload_only=True))
    assert damage(data, "insert", random.Random(5)) == damage(data, "insert", random.Random(5))
    assert len(damage(data, "truncate", r)) < len(data)
    with pytest.raises(ValueError, match="kind"):
        damage(data, "shuffle", r)
    with pytest.raises(ValueError, match="edits"):
        damage(data, "flip", r, edits=0)


def test_bytes_after_a_streams_end_are_named_as_such():
    """A stream with bytes appended (two streams concatenated) was "corrupt or truncated"."""
    data = container.pack(container.Header(FP, 64, 48, 50.0), [b"abc"], [b"de"])
    with pytest.raises(BitstreamError, match=r"corrupt stream: 3 bytes after the stream's end \(chunk table says "
                                             r"5 payload bytes, file has 8\)"):
        container.unpack(data + b"xyz")
    with pytest.raises(BitstreamError, match="corrupt or truncated stream: chunk table says 5 payload bytes, "
                                             "file has 4"):
        container.unpack(data[:-1])


def test_damage_helper_bounds():
    """vlmcodec.bitstream.damage at its edges, on a stream of a 5-byte payload: up to ``edits``
    flips are drawn (the most too); a truncation is always shorter and, cut inside the header or
    the CRC field, a plain prefix (no CRC written past its end); payload-only flips never land in
    the CRC field (a recomputed CRC would then undo them); a stream without a payload is refused."""
    from vlmcodec.bitstream.damage import crc_offset, damage

    data = container.pack(container.Header(FP, 64, 48, 50.0), [b"abc"], [b"de"])
    crc_at = crc_offset(data)
    r = random.Random(1)
    bits = [sum(bin(a ^ b).count("1") for a, b in zip(data, damage(data, "flip", r, edits=3))) for _ in range(200)]
    assert max(bits) == 3  # (two flips of one bit undo each other: fewer is possible too)
    for _ in range(200):
        cut = damage(data, "truncate", r, valid_crc=True)
        assert len(cut) < len(data) and (len(cut) > crc_at + 4 or data.startswith(cut))
        assert damage(data, "flip", r, edits=1, payload_only=True, valid_crc=True) != data
    bare = container.pack(container.Header(FP, 64, 48, 50.0), [b""], [b""])
    with pytest.raises(ValueError, match="no payload"):
        damage(bare, "flip", r, payload_only=True)
