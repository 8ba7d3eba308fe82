"""Checks of the C code that the rest of the suite left unguarded (each seen to fail with the
change it guards against): a decoder-model file cut short behind a valid CRC-32 read past its end,
a non-canonical escape payload in a rANS chunk, an analysis transform that does not reduce 16x."""

import ctypes
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from vlmcodec.export.c_decoder import CDecoderError, CStreamDecoder, decoder_model_bytes
from vlmcodec.kernels import rans
from vlmcodec.models.checkpoint import load_model

from test_c_decoder import _GUARD_PAGE_SETUP, built, tiny_pair  # noqa: F401 (fixtures)
from test_rans import gtable  # noqa: F401 (a fixture)

# -- a decoder-model file cut short, behind a valid CRC-32, ending at a guard page -------------

_GUARDED_MODEL_OPENS = _GUARD_PAGE_SETUP + r"""
import re, zlib
body = open(model_path, "rb").read()[:-4]
k, seen = len(body) - 1, []
while k >= 12:  # (past the magic and the version)
    cut = body[:k] + zlib.crc32(body[:k]).to_bytes(4, "little")
    handle = ctypes.c_void_p()
    rc = lib.vlmc_decoder_open_memory(against_a_guard_page(cut), len(cut), ctypes.byref(handle))
    message = lib.vlmc_decoder_last_error().decode()
    seen.append([k, rc, message])
    if rc == 0:
        lib.vlmc_decoder_free(handle)
    at = re.search(r"truncated at offset (\d+)", message)
    # next: the field before the one that did not fit, one byte short (an array with its last
    # element incomplete: a bound one element off reads it, past the file's end, and reads on)
    k = min(int(at.group(1)), k) - 1 if at else k - 1
print(json.dumps(seen))
"""


@pytest.mark.skipif(os.name != "posix", reason="not available: the guard page needs mmap and mprotect (POSIX)")
def test_no_model_file_cut_short_is_read_past_its_end(tiny_pair, built):  # noqa: F811
    """The decoder-model file cut, behind a valid CRC-32, to end one byte inside each of its
    fields in turn (walking back from the end: each cut one byte short of the field its error
    names), each placed to end where a page that may not be read begins, opened from memory:
    each is refused as a bad model file (-6), "truncated", and none is read past its end (which
    would kill the process). (Reader::array's bound one element off read the last element past
    the data, then everything after it, unchecked: only a guard page or a sanitizer sees it.)"""
    _, _, model_file = tiny_pair
    run = subprocess.run([sys.executable, "-c", _GUARDED_MODEL_OPENS, str(built / "libvlmc_decoder.so"),
                          str(model_file), ""], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])  # (-11: a read past a file's end)
    seen = json.loads(run.stdout)
    assert all(rc == -6 and "decoder-model file: truncated at offset" in m for _, rc, m in seen), \
        [s for s in seen if s[1] != -6 or "truncated at offset" not in s[2]][:5]
    # every field was reached: the walk went back to the header (its network sizes' field), past
    # the encoder's section (g_a, h_a) and the decoder's (tables, h_s, g_s)
    assert seen[-1][0] < 40 and len(seen) > 100, (len(seen), seen[-1])


# -- a rANS escape payload with a leading zero group ------------------------------------------


def _one_symbol_chunk(table: rans.CdfTable, t: int, sym: int, groups: list[int] | None = None) -> bytes:
    """The rANS chunk of one symbol index ``sym`` of table ``t`` (rans.hpp's format, written here
    step by step as rans.cpp's encoder writes it); at the escape index, ``groups``: the payload's
    4-bit groups, least significant first (their count - 1 is written before them)."""
    L = 1 << 23
    cdf = [int(v) for v in table.cdf[t]]
    x, out = L, []

    def put(start: int, freq: int) -> None:
        nonlocal x
        while x >= (L >> 16 << 8) * freq:  # renormalise: bytes out, low first, each before the last
            out.insert(0, x & 0xFF)
            x >>= 8
        x = (x // freq << 16) + x % freq + start

    def put_bypass(bits: int) -> None:
        nonlocal x
        if x >= (L >> 4) << 8:
            out.insert(0, x & 0xFF)
            x >>= 8
        x = x << 4 | bits

    for g in reversed(groups or []):  # (the encoder runs backwards)
        put_bypass(g)
    if groups:
        put_bypass(len(groups) - 1)
    put(cdf[sym], cdf[sym + 1] - cdf[sym])
    return struct.pack("<II", x, L) + bytes(out)  # state 0 (the symbol's), state 1 (untouched)


def _escape_groups(w: int) -> list[int]:
    groups = [w & 15]
    while w >> 4 * len(groups):
        groups.append(w >> 4 * len(groups) & 15)
    return groups


def _c_rans_decode(built, table: rans.CdfTable, chunk: bytes) -> tuple[int, str]:  # noqa: F811
    """vlmc_rans_decode (the C library of the build) of one symbol of table 0 in ``chunk``: its
    code and the library's message."""
    lib = ctypes.CDLL(str(built.parent / "rans" / "libvlmc_rans.so"))
    lib.vlmc_rans_last_error.restype = ctypes.c_char_p
    lib.vlmc_rans_tables_create.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.POINTER(ctypes.c_void_p)]
    lib.vlmc_rans_tables_free.argtypes = [ctypes.c_void_p]
    lib.vlmc_rans_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t,
                                     ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    cdf = np.ascontiguousarray(table.cdf, np.int32)
    length, offsets = (np.ascontiguousarray(a, np.int32) for a in (table.cdf_length, table.offsets))
    tables = ctypes.c_void_p()
    assert lib.vlmc_rans_tables_create(cdf.ctypes.data, length.ctypes.data, offsets.ctypes.data, len(length),
                                       cdf.shape[1], ctypes.byref(tables)) == 0
    try:
        sizes, indexes, out = np.array([len(chunk)], np.uintp), np.zeros(1, np.int32), np.zeros(1, np.int32)
        rc = lib.vlmc_rans_decode(tables, chunk, sizes.ctypes.data, 1, indexes.ctypes.data, 1, 1, out.ctypes.data)
        return rc, lib.vlmc_rans_last_error().decode() if rc else f"decoded {int(out[0])}"
    finally:
        lib.vlmc_rans_tables_free(tables)


def test_an_escape_payload_with_a_leading_zero_group_is_a_corrupt_chunk(gtable):  # noqa: F811
    """An escaped value's payload is written in the fewest 4-bit groups that hold it (rans.hpp):
    one with a most significant group of 0 (the same value, one group longer) is no encoder's,
    and is refused as corrupt, "non-canonical escape payload", not decoded to the value. (The
    chunks are written here as rans.cpp writes them: the canonical ones are its bytes.)"""
    esc, offset = int(gtable.cdf_length[0]) - 2, int(gtable.offsets[0])
    assert _one_symbol_chunk(gtable, 0, 1) == rans.encode(np.array([offset + 1], np.int32), np.zeros(1, np.int32),
                                                          gtable, 1)[0]
    for w in (2, 0x123, 0xF234_5678):  # (w: twice the distance above the range, + 1 below it)
        value = offset + esc + w // 2 if w % 2 == 0 else offset - 1 - w // 2
        canonical = _one_symbol_chunk(gtable, 0, esc, _escape_groups(w))
        assert canonical == rans.encode(np.array([value], np.int32), np.zeros(1, np.int32), gtable, 1)[0], w
        for pad in ((1, 8 - len(_escape_groups(w))) if len(_escape_groups(w)) < 8 else (1,)):
            chunk = _one_symbol_chunk(gtable, 0, esc, _escape_groups(w) + [0] * pad)
            with pytest.raises(rans.CorruptStreamError, match="chunk 0 is corrupt: non-canonical escape payload"):
                rans.decode([chunk], np.zeros(1, np.int32), gtable)
    assert rans.decode([canonical], np.zeros(1, np.int32), gtable)[0] == value


def test_the_c_librarys_rans_decoder_refuses_a_non_canonical_escape(built, gtable):  # noqa: F811
    """The same through the C library (libvlmc_rans, whose core the C decoder decodes with):
    VLMC_RANS_ERR_CORRUPT (-2), the same words; the canonical chunk decodes."""
    esc, offset = int(gtable.cdf_length[0]) - 2, int(gtable.offsets[0])
    assert _c_rans_decode(built, gtable, _one_symbol_chunk(gtable, 0, esc, [2])) == (0, f"decoded {offset + esc + 1}")
    rc, message = _c_rans_decode(built, gtable, _one_symbol_chunk(gtable, 0, esc, [2, 0]))
    assert rc == -2 and "non-canonical escape payload" in message, (rc, message)


# -- an analysis transform that does not reduce the image 16 times ----------------------------


def test_a_model_file_whose_g_a_does_not_reduce_16_times_is_refused_at_open(tiny_model_path, built,  # noqa: F811
                                                                            monkeypatch):
    """The C encoder codes a latent of 1/16 the image's sides: a model file whose g_a reduces it 8
    times (a 5x5 convolution's stride 1 where the model has 2) is refused by the exporter, and,
    written past that check, is a bad model file (-6) naming why, at open, not latents of the
    wrong size."""
    from vlmcodec.errors import ConfigError
    from vlmcodec.export import c_decoder

    loaded = load_model(tiny_model_path)
    loaded.model.g_a[2].stride = (1, 1)
    with pytest.raises(ConfigError, match="g_a reduces the image 8 times"):
        decoder_model_bytes(loaded)
    monkeypatch.setattr(c_decoder, "_check_reduces_16", lambda g_a: None)
    with pytest.raises(CDecoderError) as e:
        CStreamDecoder(built / "libvlmc_decoder.so", decoder_model_bytes(loaded))
    assert e.value.code == -6 and "g_a does not reduce the image 16 times" in e.value.message, e.value.message
    CStreamDecoder(built / "libvlmc_decoder.so", decoder_model_bytes(load_model(tiny_model_path))).close()
