"""The ``.vlmc`` container: a small header, a chunk table and the entropy-coded chunks.

Layout (all integers little-endian; ``varint`` = unsigned LEB128 in its shortest form, at most 5 bytes)::

    magic        4   b"VLMC"
    version      1   FORMAT_VERSION
    flags        1   bit 0: the image went through the pre-editor; bit 1: it was coded at a
                     smaller size (consumer scale, ``vlmcodec.resample``); other bits must be 0
    fingerprint  8   first 8 bytes of the model's SHA-256 fingerprint
    width        varint   1 .. MAX_DIM        the decoded (original) size
    height       varint   1 .. MAX_DIM
    coded width  varint   1 .. width          only with flag bit 1: the size the latents code,
    coded height varint   1 .. height         not both equal to width × height
    quality      2   round(quality * 100), 0 .. 10000
    n_z, n_y     varint each: number of z and y chunks, 1 .. MAX_CHUNKS
    lengths      varint × (n_z + n_y): byte length of each chunk
    crc32        4   CRC-32 of everything before it and of the payload
    payload      the chunks, z first, concatenated

How many chunks a stream has is part of the format, fixed by the image size: z is one chunk, y
``min(64, ceil(M·h·w / 65536))`` (``codec.num_chunks_for``: M channels of the h×w latent, the
padded coded size / 16), each the next run of symbols in C order; a decoder refuses another count.

Every limit is checked before anything is allocated; lengths must add up to the file size
exactly. Any violation raises :class:`~vlmcodec.errors.BitstreamError`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from ..errors import BitstreamError, StreamTypeError

MAGIC = b"VLMC"
FORMAT_VERSION = 1
FINGERPRINT_BYTES = 8  # a stream's model fingerprint (the first 16 hex digits of a model file's)
MAX_DIM = 1 << 14  # = image_io.MAX_SIDE: a decoder is never asked for more than an encoder accepts
MAX_CHUNKS = 4096
MAX_CHUNK_BYTES = 1 << 30
# the longest header: 14 fixed bytes, four size varints, the quality, two counts and MAX_CHUNKS * 2
# chunk lengths (5 bytes each at most), the CRC
MAX_HEADER_BYTES = 14 + 4 * 5 + 2 + (2 + 2 * MAX_CHUNKS) * 5 + 4
FLAG_PRE_EDITED = 1
FLAG_RESCALED = 2
_KNOWN_FLAGS = FLAG_PRE_EDITED | FLAG_RESCALED


@dataclass(frozen=True)
class Header:
    """Decoded header fields of a .vlmc stream."""

    fingerprint: bytes
    width: int
    height: int
    quality: float
    flags: int = 0
    version: int = FORMAT_VERSION
    z_lengths: tuple[int, ...] = ()
    y_lengths: tuple[int, ...] = ()
    coded_width: int | None = None   # None: coded at width × height
    coded_height: int | None = None

    @property
    def pre_edited(self) -> bool:
        return bool(self.flags & FLAG_PRE_EDITED)

    @property
    def rescaled(self) -> bool:
        return self.coded_hw != (self.height, self.width)

    @property
    def coded_hw(self) -> tuple[int, int]:
        """(height, width) of the image the latents code."""
        return (self.height if self.coded_height is None else self.coded_height,
                self.width if self.coded_width is None else self.coded_width)


def quantize_quality(quality: float) -> float:
    """The quality value a stream can carry (steps of 0.01)."""
    return round(float(quality) * 100) / 100


def _varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise BitstreamError(f"truncated stream: {what} needs {n} bytes at offset {self.pos}, "
                                 f"file has {len(self.data)}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def varint(self, what: str, lo: int, hi: int) -> int:
        value, shift = 0, 0
        for i in range(5):
            (b,) = self.take(1, what)
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                # a last byte of 0 after the first pads the number: one value, one byte form
                if b == 0 and i > 0:
                    raise BitstreamError(f"corrupt stream: {what} is not a valid varint (over-long form)")
                break
        else:
            raise BitstreamError(f"corrupt stream: {what} is not a valid varint")
        if not lo <= value <= hi:
            raise BitstreamError(f"corrupt stream: {what} = {value} is outside [{lo}, {hi}]")
        return value


def pack(header: Header, z_chunks: list[bytes], y_chunks: list[bytes]) -> bytes:
    """Serialise a header and its chunks into a .vlmc byte string."""
    if len(header.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
    if not (1 <= header.width <= MAX_DIM and 1 <= header.height <= MAX_DIM):
        raise ValueError(f"image size {header.width}x{header.height} outside 1..{MAX_DIM}")
    if not (1 <= len(z_chunks) <= MAX_CHUNKS and 1 <= len(y_chunks) <= MAX_CHUNKS):
        raise ValueError("chunk counts must be in 1..MAX_CHUNKS")
    q = round(header.quality * 100)
    if not 0 <= q <= 10000:
        raise ValueError(f"quality {header.quality} outside [0, 100]")
    ch, cw = header.coded_hw
    if not (1 <= cw <= header.width and 1 <= ch <= header.height):
        raise ValueError(f"coded size {cw}x{ch} must be within 1x1 .. {header.width}x{header.height}")
    if header.flags & ~_KNOWN_FLAGS:
        raise ValueError(f"unknown header flags 0x{header.flags:02x}")
    # the rescaled bit always follows the coded size
    flags = (header.flags & ~FLAG_RESCALED) | (FLAG_RESCALED if header.rescaled else 0)
    head = bytearray(MAGIC)
    head += struct.pack("<BB", FORMAT_VERSION, flags)
    head += header.fingerprint
    head += _varint(header.width) + _varint(header.height)
    if header.rescaled:
        head += _varint(cw) + _varint(ch)
    head += struct.pack("<H", q)
    head += _varint(len(z_chunks)) + _varint(len(y_chunks))
    for c in list(z_chunks) + list(y_chunks):
        head += _varint(len(c))
    payload = b"".join(z_chunks) + b"".join(y_chunks)
    crc = zlib.crc32(payload, zlib.crc32(bytes(head)))
    return bytes(head) + struct.pack("<I", crc) + payload


# what a stream may be given as, for type checkers (any buffer of bytes is taken: ``as_bytes``)
Stream = bytes | bytearray | memoryview


def as_bytes(data) -> bytes:
    """``data`` as bytes: bytes, bytearray, memoryview, a uint8 numpy array or any other object
    exposing the buffer protocol (its raw bytes); BitstreamError for anything else."""
    if isinstance(data, bytes):
        return data
    try:
        return memoryview(data).tobytes()
    except TypeError:
        import os

        hint = (f" (a file's name? its bytes are Path({str(data)[:80]!r}).read_bytes())"
                if isinstance(data, (str, os.PathLike)) else "")
        raise StreamTypeError(f"expected bytes (or a bytes-like object), got {type(data).__name__}{hint}") from None


def fingerprint_of(data) -> bytes:
    """The model fingerprint a stream names, from its first bytes alone (BitstreamError when they
    are not a .vlmc header of this version); ``unpack`` verifies the rest."""
    head = bytes(memoryview(as_bytes(data))[:14])
    if head[:4] != MAGIC:
        raise BitstreamError("not a .vlmc stream (bad magic)")
    if len(head) < 14:
        raise BitstreamError(f"truncated stream: {len(head)} bytes")
    if head[4] != FORMAT_VERSION:
        raise BitstreamError(f"unsupported .vlmc version {head[4]} (this build reads {FORMAT_VERSION})")
    return head[6:14]


def _read_header(r: _Reader) -> tuple[Header, list[int], int]:
    """The header at ``r``'s start, checked: (header, the chunk lengths, where the CRC starts)."""
    if r.take(4, "magic") != MAGIC:
        raise BitstreamError("not a .vlmc stream (bad magic)")
    version, flags = r.take(2, "version")
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported .vlmc version {version} (this build reads {FORMAT_VERSION})")
    if flags & ~_KNOWN_FLAGS:
        raise BitstreamError(f"corrupt stream: unknown flags 0x{flags:02x}")
    fingerprint = r.take(8, "fingerprint")
    width = r.varint("width", 1, MAX_DIM)
    height = r.varint("height", 1, MAX_DIM)
    coded_width = coded_height = None
    if flags & FLAG_RESCALED:
        coded_width = r.varint("coded width", 1, width)
        coded_height = r.varint("coded height", 1, height)
        if (coded_width, coded_height) == (width, height):
            raise BitstreamError("corrupt stream: rescaled flag set but the coded size equals the image size")
    (q,) = struct.unpack("<H", r.take(2, "quality"))
    if q > 10000:
        raise BitstreamError(f"corrupt stream: quality {q / 100} outside [0, 100]")
    n_z = r.varint("z chunk count", 1, MAX_CHUNKS)
    n_y = r.varint("y chunk count", 1, MAX_CHUNKS)
    lengths = [r.varint("chunk length", 0, MAX_CHUNK_BYTES) for _ in range(n_z + n_y)]
    header = Header(fingerprint=fingerprint, width=width, height=height, quality=q / 100, flags=flags,
                    version=version, z_lengths=tuple(lengths[:n_z]), y_lengths=tuple(lengths[n_z:]),
                    coded_width=coded_width, coded_height=coded_height)
    return header, lengths, r.pos


def read_header(head) -> Header:
    """The header of the stream whose first bytes ``head`` are, checked as ``unpack`` checks it;
    its chunks are neither read nor verified (``unpack`` does that)."""
    return _read_header(_Reader(as_bytes(head)))[0]


def payload_span(head) -> tuple[int, int]:
    """(where the payload starts, its length in bytes) of the stream whose first bytes ``head``
    are (its header at least: ``MAX_HEADER_BYTES`` at most), from its chunk table; BitstreamError
    as ``unpack`` says of a bad header. Lets a reader refuse a file of another length unread."""
    r = _Reader(as_bytes(head))
    _, lengths, header_end = _read_header(r)
    return header_end + 4, sum(lengths)


def length_mismatch(payload: int, file_payload: int) -> BitstreamError:
    """``unpack``'s error for a chunk table that says ``payload`` bytes where the file has ``file_payload``."""
    if file_payload > payload:  # (two streams concatenated, a stream with bytes appended)
        return BitstreamError(f"corrupt stream: {file_payload - payload} bytes after the stream's end (chunk table "
                              f"says {payload} payload bytes, file has {file_payload})")
    return BitstreamError(f"corrupt or truncated stream: chunk table says {payload} payload bytes, "
                          f"file has {file_payload}")


def unpack(data: Stream) -> tuple[Header, list[bytes], list[bytes]]:
    """Parse and verify a .vlmc byte string; returns (header, z_chunks, y_chunks)."""
    data = as_bytes(data)
    r = _Reader(data)
    header, lengths, header_end = _read_header(r)
    n_z = len(header.z_lengths)
    (crc,) = struct.unpack("<I", r.take(4, "crc32"))
    payload_len = len(data) - r.pos
    if sum(lengths) != payload_len:
        raise length_mismatch(sum(lengths), payload_len)
    if zlib.crc32(data[r.pos :], zlib.crc32(data[:header_end])) != crc:
        raise BitstreamError("corrupt stream: CRC-32 mismatch")
    chunks, pos = [], r.pos
    for n in lengths:
        chunks.append(data[pos : pos + n])
        pos += n
    return header, chunks[:n_z], chunks[n_z:]
