"""rANS entropy coder (C++ core, nanobind binding).

16-bit probabilities, 32-bit state, byte-wise renormalisation, two interleaved states per
chunk. Tables use CompressAI's layout (``cdf[t, :cdf_length[t]]`` rising from 0 to 65536, the
last symbol index ``cdf_length[t] - 2`` is the escape symbol, ``offsets[t]`` is the value of
symbol index 0), so the same arrays can drive CompressAI's coder. Values outside a table's
range are escape-coded: every int32 round-trips. The format is described in ``rans.hpp``.

The symbol stream is split into ``num_chunks`` contiguous ranges (chunk ``i`` covers
``[i*n//num_chunks, (i+1)*n//num_chunks)``), each an independent byte string, so only the chunk
count and the byte lengths need storing; decoding runs the chunks on a thread pool and its
result does not depend on the thread count.

Example::

    table = CdfTable.from_pmfs(pmfs, tail_masses, offsets)
    chunks = encode(symbols, indexes, table, num_chunks=4)        # list[bytes]
    assert (decode(chunks, indexes, table, threads=2) == symbols).all()

Errors: bad arguments raise ``TypeError`` / ``ValueError``; corrupt or truncated chunks raise
``CorruptStreamError`` (a ``ValueError``). Decoding is memory-safe and bounded on any input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

try:
    from . import _rans
except ImportError as e:  # a source tree that was never built, or a broken install
    raise ImportError(f"vlmcodec's C++ rANS extension is not available ({e}); build and install the "
                      "package (pip install .) to encode or decode") from e

__all__ = [
    "PRECISION",
    "FORMAT_VERSION",
    "CdfTable",
    "CorruptStreamError",
    "encode",
    "decode",
    "check_chunk_starts",
    "pmf_to_quantized_cdf",
    "pmf_to_quantized_cdf_ref",
]

PRECISION: int = _rans.PRECISION
"""Probability precision in bits: every CDF ends at ``2**PRECISION``."""
FORMAT_VERSION: int = _rans.FORMAT_VERSION
"""Version of the chunk format; changes whenever the bytes written change."""
CorruptStreamError = _rans.CorruptStreamError
CorruptStreamError.__doc__ = "Coded rANS data is corrupt or truncated (a ValueError)."


def _int32_table_array(name: str, value, ndim: int) -> np.ndarray:
    """Copy of ``value`` as a read-only C-contiguous int32 array, refusing lossy conversions."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size and (arr.min() < np.iinfo(np.int32).min or arr.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name} has values outside the int32 range")
    out = np.array(arr, dtype=np.int32, order="C", copy=True)
    out.setflags(write=False)
    return out


def _check_int32(name: str, arr) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray of int32, got {type(arr).__name__}")
    if arr.dtype != np.int32:
        raise TypeError(
            f"{name} must have dtype int32, got {arr.dtype}; convert with .astype(np.int32) "
            "after checking the values fit"
        )
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous; pass np.ascontiguousarray({name})")
    return arr


_MAX_THREADS_ARG = 2**31 - 1  # the binding's C int (at most rans.hpp's kMaxThreads run)


def _check_count(name: str, value, low: int, high: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if value > high:  # (past the binding's C types, nanobind gave a signature dump)
        raise ValueError(f"{name} must be <= {high}{why}, got {value}")
    return value


class CdfTable:
    """Quantized CDF tables in CompressAI's layout, validated once, immutable.

    Attributes:
        cdf: int32 ``[T, L]``; row ``t`` holds ``cdf_length[t]`` entries rising strictly from 0
            to ``2**precision`` (every symbol, escape included, has probability >= 2**-16);
            entries past ``cdf_length[t]`` are ignored.
        cdf_length: int32 ``[T]``, each in ``[2, L]``; symbol index ``cdf_length[t] - 2`` is the
            escape symbol.
        offsets: int32 ``[T]``, the value coded by symbol index 0 of table ``t``.
        precision: probability bits, always 16.

    The arrays are copied and made read-only. Raises ``ValueError`` / ``TypeError`` on a
    malformed table.
    """

    __slots__ = ("cdf", "cdf_length", "offsets", "precision", "_native")
    # (set once, by __init__, through object.__setattr__)
    cdf: np.ndarray
    cdf_length: np.ndarray
    offsets: np.ndarray
    precision: int
    _native: _rans.Tables

    def __init__(self, cdf, cdf_length, offsets, precision: int = PRECISION):
        if precision != PRECISION:
            raise ValueError(f"only precision {PRECISION} is supported, got {precision}")
        cdf = _int32_table_array("cdf", cdf, 2)
        cdf_length = _int32_table_array("cdf_length", cdf_length, 1)
        offsets = _int32_table_array("offsets", offsets, 1)
        native = _rans.Tables(cdf, cdf_length, offsets)  # validates (ValueError)
        for name, value in (
            ("cdf", cdf),
            ("cdf_length", cdf_length),
            ("offsets", offsets),
            ("precision", PRECISION),
            ("_native", native),
        ):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("CdfTable is immutable")

    def __delattr__(self, name):
        raise AttributeError("CdfTable is immutable")

    def __reduce__(self):  # pickling (e.g. to worker processes) rebuilds and revalidates
        return (CdfTable, (self.cdf, self.cdf_length, self.offsets, self.precision))

    def __repr__(self) -> str:
        return f"CdfTable(num_tables={self.num_tables}, max_length={self.cdf.shape[1]})"

    @property
    def num_tables(self) -> int:
        return int(self.cdf.shape[0])

    @classmethod
    def from_pmfs(cls, pmfs: Sequence[np.ndarray], tail_masses, offsets) -> CdfTable:
        """Builds tables from ``T`` pmfs of any lengths (each over its table's symbol values
        ``offsets[t] .. offsets[t] + len(pmfs[t]) - 1``) and the probability mass ``tail_masses[t]``
        left outside that range (the escape symbol's), with :func:`pmf_to_quantized_cdf`."""
        rows = [np.asarray(p, dtype=np.float64).reshape(-1) for p in pmfs]
        tails = np.asarray(tail_masses, dtype=np.float64).reshape(-1)
        if len(rows) == 0:
            raise ValueError("need at least one pmf")
        if tails.shape[0] != len(rows):
            raise ValueError(f"got {len(rows)} pmfs but {tails.shape[0]} tail masses")
        width = max(1, max(r.shape[0] for r in rows))
        padded = np.zeros((len(rows), width), dtype=np.float64)
        for t, r in enumerate(rows):
            padded[t, : r.shape[0]] = r
        lengths = np.array([r.shape[0] for r in rows], dtype=np.int32)
        cdf, cdf_length = _rans.build_cdf_table(padded, lengths, tails, PRECISION)
        offsets = _int32_table_array("offsets", offsets, 1)
        if offsets.shape[0] != len(rows):
            raise ValueError(f"got {len(rows)} pmfs but {offsets.shape[0]} offsets")
        return cls(cdf, cdf_length, offsets)


def pmf_to_quantized_cdf(pmf, tail_mass: float, precision: int = PRECISION) -> np.ndarray:
    """Quantizes ``pmf`` (``m`` probabilities) plus ``tail_mass`` (the escape symbol) to an int32
    CDF of ``m + 2`` entries from 0 to ``2**precision`` in which every symbol has frequency >= 1.

    Deterministic: one IEEE double rounding per entry, ``f_i = max(1, round(p_i / sum(p) *
    2**precision))`` (halves away from zero), then the total is fixed with integer steps (take 1 from the largest bin while
    too large, add the shortfall to the largest bin; ties go to the lowest index).
    """
    p = np.ascontiguousarray(np.asarray(pmf, dtype=np.float64).reshape(-1))
    precision = int(precision)
    if not 1 <= precision <= PRECISION:
        raise ValueError(f"precision must be in [1, {PRECISION}], got {precision}")
    return _rans.pmf_to_quantized_cdf(p, float(tail_mass), precision)


def pmf_to_quantized_cdf_ref(pmf, tail_mass: float, precision: int = PRECISION) -> np.ndarray:
    """Plain-Python reference of :func:`pmf_to_quantized_cdf` (same result, slow; for tests)."""
    p = [float(v) for v in np.asarray(pmf, dtype=np.float64).reshape(-1)] + [float(tail_mass)]
    target = 1 << precision
    if len(p) > target:
        raise ValueError("too many symbols for the precision")
    if any(not math.isfinite(v) or v < 0 for v in p):
        raise ValueError("pmf and tail_mass must be finite and >= 0")
    total = 0.0
    for v in p:  # sequential sum, as the C++ code
        total += v
    if not (total > 0 and math.isfinite(total)):
        raise ValueError("pmf and tail_mass must have a positive, finite sum")
    f = []
    for v in p:
        x = (v / total) * target  # as in C++: the ratio is <= 1, the power-of-two scale exact
        low = math.floor(x)
        # llround: halves away from zero (Python's round() would round them to even).
        f.append(max(1, int(low) + (1 if x - low >= 0.5 else 0)))
    excess = sum(f) - target
    while excess > 0:
        best = max(range(len(f)), key=lambda i: (f[i], -i))
        f[best] -= 1
        excess -= 1
    if excess < 0:
        best = max(range(len(f)), key=lambda i: (f[i], -i))
        f[best] -= excess
    return np.concatenate([[0], np.cumsum(f)]).astype(np.int32)


def _check_table(table) -> None:
    if not isinstance(table, CdfTable):
        raise TypeError(f"table must be a CdfTable, got {type(table).__name__}")


def encode(
    symbols: np.ndarray,
    indexes: np.ndarray,
    table: CdfTable,
    num_chunks: int = 1,
    *,
    threads: int = 1,
) -> list[bytes]:
    """Encodes ``symbols[i]`` with table ``indexes[i]`` into ``num_chunks`` byte strings.

    Args:
        symbols: int32 C-contiguous array, any shape (read as flat, ``n = symbols.size``).
        indexes: int32 C-contiguous array of the same shape, each in ``[0, table.num_tables)``.
        table: the CDF tables.
        num_chunks: ``1 <= num_chunks <= max(n, 1)``: at most one chunk per symbol, one for none.
        threads: encoder threads; the bytes do not depend on it.
    """
    _check_table(table)
    _check_int32("symbols", symbols)
    _check_int32("indexes", indexes)
    if symbols.shape != indexes.shape:
        raise ValueError(
            f"symbols and indexes must have the same shape, got {symbols.shape} and {indexes.shape}"
        )
    num_chunks = _check_count("num_chunks", num_chunks, 1, max(symbols.size, 1),
                              f" (at most one chunk per symbol, one for none; {symbols.size} symbols)")
    threads = _check_count("threads", threads, 1, _MAX_THREADS_ARG)
    return _rans.encode(table._native, symbols, indexes, num_chunks, threads)


def decode(
    chunks: Sequence[bytes],
    indexes: np.ndarray,
    table: CdfTable,
    threads: int = 1,
) -> np.ndarray:
    """Decodes the chunks written by :func:`encode` back to an int32 array of ``indexes.shape``.

    Args:
        chunks: the byte strings, in order (``bytes``; ``bytearray`` / ``memoryview`` are copied).
        indexes: int32 C-contiguous array, the same table indexes as at encode time.
        table: the same CDF tables as at encode time.
        threads: decoder threads (chunks run in parallel); the result does not depend on it.

    Raises:
        CorruptStreamError: a chunk is corrupt or truncated (detected: running out of bytes,
            bytes left over, a final state mismatch, an impossible escape payload).
    """
    _check_table(table)
    _check_int32("indexes", indexes)
    threads = _check_count("threads", threads, 1, _MAX_THREADS_ARG)
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        raise TypeError("chunks must be a sequence of bytes objects, not a single bytes object")
    chunk_list = [c if isinstance(c, bytes) else _as_bytes(c) for c in chunks]
    n = indexes.size
    if len(chunk_list) < 1:
        raise ValueError("need at least one chunk")
    if len(chunk_list) > max(n, 1):
        raise ValueError(f"{len(chunk_list)} chunks for {n} symbols: at most one chunk per symbol, one for none")
    out = np.empty(indexes.shape, dtype=np.int32)
    _rans.decode_into(table._native, chunk_list, indexes, out, threads)
    return out


def check_chunk_starts(chunks: Sequence[bytes]) -> None:
    """ValueError for the first chunk whose start no encoder writes (shorter than its states, or a
    state out of range), as :func:`decode` says it; here before a symbol's table is known, so that
    a stream whose chunks are plainly broken fails before the work that makes those tables (a
    62 KB stream cost the Python decoder 9.5 s and 1.4 GB of exact h_s before "initial state out of
    range")."""
    lower, n = int(_rans.STATE_LOWER), int(_rans.NUM_STATES)
    for i, chunk in enumerate(chunks):
        head = bytes(memoryview(chunk)[:4 * n])
        if len(head) < 4 * n:
            raise CorruptStreamError(f"rANS chunk {i} has {len(memoryview(chunk))} bytes, fewer than its "
                                     f"{4 * n}-byte header")
        if any(not lower <= int.from_bytes(head[k:k + 4], "little") < lower << 8 for k in range(0, 4 * n, 4)):
            raise CorruptStreamError(f"rANS chunk {i} is corrupt: initial state out of range")


def _as_bytes(chunk) -> bytes:
    if isinstance(chunk, (bytearray, memoryview)):
        return bytes(chunk)
    raise TypeError(f"chunks must be bytes objects, got {type(chunk).__name__}")
