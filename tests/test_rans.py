"""Tests of the C++ rANS coder through its Python API (vlmcodec.kernels.rans)."""

from __future__ import annotations

import math
import pickle
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmcodec.kernels import rans
from vlmcodec.kernels.rans import _rans

I32_MIN, I32_MAX = np.iinfo(np.int32).min, np.iinfo(np.int32).max
TOTAL = 1 << rans.PRECISION


# ---------------------------------------------------------------------------------------------
# helpers


def random_cdf_table(rng: np.random.Generator, num_tables: int, max_len: int, extreme: bool = True) -> rans.CdfTable:
    """Random valid tables: lengths 3..max_len (sometimes 2: escape only), random strictly rising
    CDFs, some with one symbol (or the escape) holding almost all mass, offsets up to the int32
    limits."""
    rows, offsets = [], []
    for _ in range(num_tables):
        length = int(rng.integers(3, max_len + 1)) if max_len >= 3 else 3
        kind = int(rng.integers(0, 6)) if extreme else 0
        if kind == 1:  # symbol 0 holds almost everything
            cdf = np.concatenate([[0], np.arange(TOTAL - (length - 2), TOTAL + 1)])
        elif kind == 2:  # the escape holds almost everything
            cdf = np.concatenate([np.arange(0, length - 1), [TOTAL]])
        elif kind == 3:  # escape only
            cdf = np.array([0, TOTAL])
        else:
            inner = np.sort(rng.choice(np.arange(1, TOTAL), size=length - 2, replace=False))
            cdf = np.concatenate([[0], inner, [TOTAL]])
        rows.append(cdf)
        off_kind = int(rng.integers(0, 5)) if extreme else 0
        if off_kind == 1:
            offsets.append(I32_MAX - int(rng.integers(0, len(cdf))))
        elif off_kind == 2:
            offsets.append(I32_MIN + int(rng.integers(0, 3)))
        elif off_kind == 3:
            offsets.append(int(rng.integers(I32_MIN, I32_MAX, endpoint=True)))
        else:
            offsets.append(-(len(cdf) // 2))
    width = max(len(r) for r in rows)
    cdf = np.zeros((num_tables, width), dtype=np.int32)
    for t, r in enumerate(rows):
        cdf[t, : len(r)] = r
    lengths = np.array([len(r) for r in rows], dtype=np.int32)
    return rans.CdfTable(cdf, lengths, np.array(offsets, dtype=np.int32))


def random_symbols(rng: np.random.Generator, table: rans.CdfTable, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mostly in-range values, some just outside, some anywhere in int32, some at the limits."""
    indexes = rng.integers(0, table.num_tables, size=n, dtype=np.int32)
    esc = table.cdf_length[indexes].astype(np.int64) - 2
    off = table.offsets[indexes].astype(np.int64)
    inside = off + (rng.random(n) * np.maximum(esc, 1)).astype(np.int64)
    near = off + rng.integers(-3, 4, size=n) + np.where(rng.random(n) < 0.5, 0, esc)
    anywhere = rng.integers(I32_MIN, I32_MAX, size=n, endpoint=True)
    limits = np.where(rng.random(n) < 0.5, I32_MIN, I32_MAX)
    pick = rng.random(n)
    values = np.where(pick < 0.7, inside, np.where(pick < 0.85, near, np.where(pick < 0.95, anywhere, limits)))
    return np.clip(values, I32_MIN, I32_MAX).astype(np.int32), indexes


def gaussian_table(scales=(0.11, 0.5, 1.0, 3.0, 10.0, 50.0, 256.0)) -> rans.CdfTable:
    from vlmcodec.bench.entropy import gaussian_cdf_table

    return gaussian_cdf_table(np.asarray(scales, dtype=np.float64))


@pytest.fixture(scope="module")
def gtable() -> rans.CdfTable:
    return gaussian_table()


# ---------------------------------------------------------------------------------------------
# round trips


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    num_tables=st.integers(1, 6),
    max_len=st.sampled_from([3, 4, 10, 300, 5000]),
    n=st.integers(0, 3000),
    chunk_frac=st.floats(0, 1),
    threads=st.integers(1, 4),
)
def test_round_trip_random_tables(seed, num_tables, max_len, n, chunk_frac, threads):
    rng = np.random.default_rng(seed)
    table = random_cdf_table(rng, num_tables, max_len)
    symbols, indexes = random_symbols(rng, table, n)
    num_chunks = 1 if n == 0 else 1 + int(chunk_frac * (n - 1))
    chunks = rans.encode(symbols, indexes, table, num_chunks, threads=threads)
    assert len(chunks) == num_chunks and all(isinstance(c, bytes) for c in chunks)
    out = rans.decode(chunks, indexes, table, threads=threads)
    assert out.dtype == np.int32 and out.shape == indexes.shape
    np.testing.assert_array_equal(out, symbols)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_chunks=st.integers(1, 64))
def test_thread_count_invariance(seed, num_chunks, gtable):
    rng = np.random.default_rng(seed)
    symbols, indexes = random_symbols(rng, gtable, 5000)
    reference = rans.encode(symbols, indexes, gtable, num_chunks, threads=1)
    for threads in (2, 3, 8):
        assert rans.encode(symbols, indexes, gtable, num_chunks, threads=threads) == reference
    for threads in (1, 2, 5, 64):
        np.testing.assert_array_equal(rans.decode(reference, indexes, gtable, threads=threads), symbols)


def test_chunks_are_contiguous_ranges(gtable):
    # Chunk i covers [i*n//k, (i+1)*n//k): each chunk decodes alone with its slice of indexes.
    rng = np.random.default_rng(1)
    n, k = 1001, 7
    symbols, indexes = random_symbols(rng, gtable, n)
    chunks = rans.encode(symbols, indexes, gtable, k)
    for i, chunk in enumerate(chunks):
        lo, hi = i * n // k, (i + 1) * n // k
        np.testing.assert_array_equal(rans.decode([chunk], indexes[lo:hi], gtable), symbols[lo:hi])


def test_longest_table_all_symbols_probability_one_in_65536():
    # cdf_length 65537: 65535 symbols + escape, every one of frequency 1 (16 bits each).
    cdf = np.arange(TOTAL + 1, dtype=np.int32)[None, :]
    table = rans.CdfTable(cdf, [TOTAL + 1], [I32_MIN])
    rng = np.random.default_rng(10)
    symbols = (I32_MIN + rng.integers(0, TOTAL + 50, size=4000)).astype(np.int32)
    indexes = np.zeros_like(symbols)
    chunks = rans.encode(symbols, indexes, table, 3)
    np.testing.assert_array_equal(rans.decode(chunks, indexes, table, threads=3), symbols)
    with pytest.raises(ValueError, match="cdf_length"):
        rans.CdfTable(np.arange(TOTAL + 2, dtype=np.int32)[None, :], [TOTAL + 2], [0])


def test_escape_values_at_int32_limits(gtable):
    values = np.array([I32_MIN, I32_MIN + 1, -1, 0, 1, I32_MAX - 1, I32_MAX], dtype=np.int32)
    symbols = np.tile(values, gtable.num_tables)
    indexes = np.repeat(np.arange(gtable.num_tables, dtype=np.int32), len(values))
    np.testing.assert_array_equal(rans.decode(rans.encode(symbols, indexes, gtable), indexes, gtable), symbols)


def test_an_escape_decoded_past_int32_is_a_corrupt_stream(gtable):
    """An escape whose value, with the decoding table's offset, leaves int32 (a stream decoded with
    another table's offsets): CorruptStreamError, never a value wrapped around."""
    chunks = rans.encode(np.array([I32_MAX], np.int32), np.zeros(1, np.int32), gtable)
    shifted = rans.CdfTable(gtable.cdf, gtable.cdf_length, gtable.offsets + 1)
    with pytest.raises(rans.CorruptStreamError, match="escape value out of int32 range"):
        rans.decode(chunks, np.zeros(1, np.int32), shifted)


def test_empty_input(gtable):
    """No symbols code in one chunk; more are refused (any count was taken: 10**7 took 18 s and
    1.6 GB), by the wrapper and by the C++ core."""
    empty = np.zeros(0, dtype=np.int32)
    chunks = rans.encode(empty, empty, gtable, 1)
    assert len(chunks) == 1
    out = rans.decode(chunks, empty, gtable, threads=2)
    assert out.shape == (0,) and out.dtype == np.int32
    for k in (2, 10**7, 2**64):
        with pytest.raises(ValueError, match=rf"num_chunks must be <= 1 \(at most one chunk per symbol, one for none; "
                                             rf"0 symbols\), got {k}"):
            rans.encode(empty, empty, gtable, k)
    with pytest.raises(ValueError, match="num_chunks must be 1 when there are no symbols, got 3"):
        _rans.encode(gtable._native, empty, empty, 3, 1)
    with pytest.raises(ValueError, match="2 chunks for 0 symbols"):
        rans.decode(chunks * 2, empty, gtable)
    with pytest.raises(ValueError, match="num_chunks must be 1 when there are no symbols, got 2"):
        _rans.decode_into(gtable._native, chunks * 2, empty, np.empty(0, np.int32), 1)


def test_counts_past_the_bindings_types_are_value_errors(gtable):
    """threads, num_chunks and precision too large for the binding's C types are a ValueError naming
    the argument, not nanobind's dump of the signatures."""
    s = np.zeros(4, dtype=np.int32)
    for kw, name in ((dict(threads=2**31), "threads"), (dict(threads=2**40), "threads"),
                     (dict(num_chunks=2**64), "num_chunks")):
        with pytest.raises(ValueError, match=rf"^{name} must be <= ") as e:
            rans.encode(s, s, gtable, **kw)
        assert "incompatible" not in str(e.value)
    with pytest.raises(ValueError, match=r"^threads must be <= 2147483647, got 1099511627776$"):
        rans.decode(rans.encode(s, s, gtable), s, gtable, threads=2**40)
    for p in (2**40, 0, 17):
        with pytest.raises(ValueError, match=rf"^precision must be in \[1, 16\], got {p}$"):
            rans.pmf_to_quantized_cdf([1.0], 0.1, precision=p)
    assert len(rans.encode(s, s, gtable, 4, threads=2**31 - 1)) == 4  # (the largest; at most 256 run)


def test_multidimensional_shape_kept(gtable):
    rng = np.random.default_rng(2)
    symbols, indexes = random_symbols(rng, gtable, 2 * 3 * 5)
    symbols, indexes = symbols.reshape(2, 3, 5), indexes.reshape(2, 3, 5)
    out = rans.decode(rans.encode(symbols, indexes, gtable, 4), indexes, gtable)
    assert out.shape == (2, 3, 5)
    np.testing.assert_array_equal(out, symbols)


def test_concurrent_python_threads(gtable):
    # The GIL is released while coding; concurrent calls from Python threads stay correct.
    rng = np.random.default_rng(3)
    jobs = [random_symbols(rng, gtable, 20000) for _ in range(4)]
    errors = []

    def work(symbols, indexes):
        try:
            for _ in range(3):
                chunks = rans.encode(symbols, indexes, gtable, 3)
                np.testing.assert_array_equal(rans.decode(chunks, indexes, gtable, threads=2), symbols)
        except Exception as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ---------------------------------------------------------------------------------------------
# corrupt input


def _good_stream(gtable, n=3000, k=3, seed=4):
    rng = np.random.default_rng(seed)
    indexes = rng.integers(0, gtable.num_tables, size=n, dtype=np.int32)
    symbols = np.rint(rng.normal(size=n) * np.array([0.11, 0.5, 1, 3, 10, 50, 256])[indexes]).astype(np.int32)
    return symbols, indexes, rans.encode(symbols, indexes, gtable, k)


def test_truncated_and_extended_chunks_raise(gtable):
    symbols, indexes, chunks = _good_stream(gtable)
    for i in range(len(chunks)):
        for cut in range(len(chunks[i])):
            bad = list(chunks)
            bad[i] = chunks[i][:cut]
            with pytest.raises(rans.CorruptStreamError):
                rans.decode(bad, indexes, gtable, threads=2)
        bad = list(chunks)
        bad[i] = chunks[i] + b"\x00"
        with pytest.raises(ValueError, match="left over"):
            rans.decode(bad, indexes, gtable)
    with pytest.raises(rans.CorruptStreamError):
        rans.decode(chunks[::-1], indexes, gtable)


def test_mutated_chunks_raise_and_never_crash(gtable):
    symbols, indexes, chunks = _good_stream(gtable, n=1500, k=2)
    rng = np.random.default_rng(5)
    trials, detected = 3000, 0
    for trial in range(trials):
        bad = [bytearray(c) for c in chunks]
        target = bad[int(rng.integers(0, len(bad)))]
        for _ in range(int(rng.integers(1, 4))):
            target[int(rng.integers(0, len(target)))] ^= int(rng.integers(1, 256))
        try:
            rans.decode([bytes(b) for b in bad], indexes, gtable, threads=1 + trial % 2)
        except rans.CorruptStreamError as exc:
            assert isinstance(exc, ValueError) and "corrupt" in str(exc)
            detected += 1
    # rANS has no redundancy: a mutated byte that moves the state to another symbol with the
    # same frequency and slot offset (e.g. -k vs +k of a symmetric table) yields the same next
    # state and decodes one wrong value silently (~0.2% here). Integrity is the container's CRC.
    assert detected >= 0.99 * trials


def test_lowest_failing_chunk_is_reported(gtable):
    symbols, indexes, chunks = _good_stream(gtable, k=6)
    bad = list(chunks)
    bad[2] = bad[2][:-1]
    bad[5] = bad[5][:-1]
    for threads in (1, 2, 6):
        with pytest.raises(rans.CorruptStreamError, match="chunk 2 "):
            rans.decode(bad, indexes, gtable, threads=threads)


# ---------------------------------------------------------------------------------------------
# argument checking


def test_bad_arguments(gtable):
    s = np.zeros(10, dtype=np.int32)
    with pytest.raises(TypeError, match="int32"):
        rans.encode(s.astype(np.int64), s, gtable)
    with pytest.raises(TypeError, match="numpy"):
        rans.encode(list(s), s, gtable)
    with pytest.raises(ValueError, match="C-contiguous"):
        rans.encode(np.zeros(20, np.int32)[::2], s, gtable)
    with pytest.raises(ValueError, match="same shape"):
        rans.encode(s, s[:5], gtable)
    with pytest.raises(ValueError, match="num_chunks"):
        rans.encode(s, s, gtable, 0)
    with pytest.raises(ValueError, match="num_chunks"):
        rans.encode(s, s, gtable, 11)
    with pytest.raises(ValueError, match="threads"):
        rans.encode(s, s, gtable, threads=0)
    with pytest.raises(TypeError, match="CdfTable"):
        rans.encode(s, s, "table")
    bad_idx = s.copy()
    bad_idx[7] = gtable.num_tables
    with pytest.raises(ValueError, match=r"indexes\[7\]"):
        rans.encode(s, bad_idx, gtable)
    bad_idx[7] = -1
    with pytest.raises(ValueError, match=r"indexes\[7\]"):
        rans.encode(s, bad_idx, gtable)
    chunks = rans.encode(s, s, gtable, 2)
    with pytest.raises(ValueError, match=r"indexes\[7\]"):
        rans.decode(chunks, bad_idx, gtable)
    bad_idx[7] = gtable.num_tables  # (one past the last table: read past the tables' info, were it let through)
    with pytest.raises(ValueError, match=r"indexes\[7\]"):
        rans.decode(chunks, bad_idx, gtable)
    with pytest.raises(ValueError, match="at least one chunk"):
        rans.decode([], s, gtable)
    with pytest.raises(ValueError, match="at most one chunk per symbol"):
        rans.decode(chunks * 6, s, gtable)
    with pytest.raises(TypeError, match="sequence of bytes"):
        rans.decode(chunks[0], s, gtable)
    with pytest.raises(TypeError, match="bytes"):
        rans.decode(["abc", "def"], s, gtable)
    np.testing.assert_array_equal(rans.decode([bytearray(c) for c in chunks], s, gtable), s)


def test_table_validation():
    ok = np.array([[0, 100, 65536, 0]], dtype=np.int32)
    rans.CdfTable(ok, [3], [0])
    cases = {
        "must be 0": [[5, 100, 65536, 0]],
        "must be 65536": [[0, 100, 65535, 0]],
        "increase strictly": [[0, 100, 100, 65536]],
    }
    for msg, cdf in cases.items():
        length = 4 if "increase" in msg else 3
        with pytest.raises(ValueError, match=msg):
            rans.CdfTable(np.array(cdf, dtype=np.int32), [length], [0])
    with pytest.raises(ValueError, match="cdf_length"):
        rans.CdfTable(ok, [5], [0])
    with pytest.raises(ValueError, match="cdf_length"):
        rans.CdfTable(ok, [1], [0])
    with pytest.raises(ValueError, match="rows"):
        rans.CdfTable(ok, [3, 3], [0, 0])
    with pytest.raises(ValueError, match="int32 range"):
        rans.CdfTable(ok, [3], [2**31])
    with pytest.raises(TypeError, match="integer"):
        rans.CdfTable(ok.astype(np.float32), [3], [0])
    with pytest.raises(ValueError, match="precision"):
        rans.CdfTable(ok, [3], [0], precision=15)
    table = rans.CdfTable(ok, [3], [0])
    clone = pickle.loads(pickle.dumps(table))
    np.testing.assert_array_equal(clone.cdf, table.cdf)
    assert rans.encode(np.array([0, 5], np.int32), np.zeros(2, np.int32), clone) == rans.encode(
        np.array([0, 5], np.int32), np.zeros(2, np.int32), table
    )
    with pytest.raises(AttributeError):
        table.offsets = np.zeros(1, np.int32)
    with pytest.raises(ValueError):
        table.cdf[0, 1] = 7  # read-only copy


# ---------------------------------------------------------------------------------------------
# pmf -> quantized CDF


@settings(max_examples=100, deadline=None)
@given(
    pmf=st.lists(st.floats(0, 1e3, allow_nan=False, allow_infinity=False), min_size=0, max_size=200),
    tail=st.sampled_from([0.0, 1e-9, 1e-3, 0.5]),
)
def test_pmf_to_quantized_cdf_properties(pmf, tail):
    p = np.asarray(pmf, dtype=np.float64)
    if p.sum() + tail <= 0:
        tail = 1.0
    cdf = rans.pmf_to_quantized_cdf(p, tail)
    assert cdf.dtype == np.int32 and cdf.shape == (len(pmf) + 2,)
    assert cdf[0] == 0 and cdf[-1] == TOTAL and np.all(np.diff(cdf) >= 1)
    np.testing.assert_array_equal(cdf, rans.pmf_to_quantized_cdf_ref(p, tail))
    # Close to proportional: each bin within a few units of its ideal share (larger bins may
    # give up the rounding surplus, so allow a relative slack too).
    ideal = np.concatenate([p, [tail]]) / (p.sum() + tail) * TOTAL
    freq = np.diff(cdf)
    assert np.all(np.abs(freq - ideal) <= 2 + len(pmf) + 0.01 * ideal)


@pytest.mark.parametrize("pmf, precision, freqs", [
    ([3, 131069], 16, [2, 65533, 1]),       # 1.5 and 65534.5 of 65536: both up, the surplus off the largest
    ([1, 5, 131066], 16, [1, 3, 65531, 1]),  # 0.5 (1 anyway, the floor of a bin) and 2.5 → 3
    ([3, 509], 8, [2, 253, 1]),              # 1.5 and 254.5 of 256
])
def test_pmf_to_quantized_cdf_rounds_halves_away_from_zero(pmf, precision, freqs):
    """An exact half share of a bin rounds up (llround), in the C++ code and the reference alike;
    Python's round() (to even) or a floor would give 1.5 → 2 but 2.5 → 2, or 1.5 → 1."""
    expect = np.concatenate([[0], np.cumsum(freqs)])
    np.testing.assert_array_equal(rans.pmf_to_quantized_cdf(pmf, 0.0, precision), expect)
    np.testing.assert_array_equal(rans.pmf_to_quantized_cdf_ref(pmf, 0.0, precision), expect)


def test_pmf_to_quantized_cdf_errors():
    with pytest.raises(ValueError, match="pmf\\[1\\]"):
        rans.pmf_to_quantized_cdf([0.5, -0.1], 0.1)
    with pytest.raises(ValueError, match="finite"):
        rans.pmf_to_quantized_cdf([math.nan], 0.1)
    with pytest.raises(ValueError, match="tail_mass"):
        rans.pmf_to_quantized_cdf([0.5], math.inf)
    with pytest.raises(ValueError, match="positive"):
        rans.pmf_to_quantized_cdf([0.0, 0.0], 0.0)
    with pytest.raises(ValueError, match="entries"):
        rans.pmf_to_quantized_cdf(np.ones(TOTAL), 0.0)
    assert rans.pmf_to_quantized_cdf(np.ones(TOTAL - 1), 0.0)[-1] == TOTAL


def test_from_pmfs_matches_single_and_validates():
    rng = np.random.default_rng(6)
    pmfs = [rng.random(m) for m in (1, 5, 40)]
    tails = [1e-3, 0.0, 0.2]
    table = rans.CdfTable.from_pmfs(pmfs, tails, [0, -2, 100])
    assert table.cdf.shape == (3, 42)
    np.testing.assert_array_equal(table.cdf_length, [3, 7, 42])
    for t in range(3):
        np.testing.assert_array_equal(table.cdf[t, : table.cdf_length[t]], rans.pmf_to_quantized_cdf(pmfs[t], tails[t]))
    with pytest.raises(ValueError, match="offsets"):
        rans.CdfTable.from_pmfs(pmfs, tails, [0, 1])
    with pytest.raises(ValueError, match="tail masses"):
        rans.CdfTable.from_pmfs(pmfs, tails[:2], [0, 1, 2])


# ---------------------------------------------------------------------------------------------
# compression efficiency


def test_coded_size_close_to_empirical_entropy():
    rng = np.random.default_rng(7)
    n = 400_000
    symbols = rng.geometric(0.3, size=n).astype(np.int32) - 1 - 2  # values -2 .. ~40
    values, counts = np.unique(symbols, return_counts=True)
    lo = int(values.min())
    pmf = np.zeros(int(values.max()) - lo + 1)
    pmf[values - lo] = counts / n
    table = rans.CdfTable.from_pmfs([pmf], [0.0], [lo])
    entropy_bits = -np.sum(counts * np.log2(counts / n))
    indexes = np.zeros(n, dtype=np.int32)
    for k in (1, 16):
        coded_bits = 8 * sum(len(c) for c in rans.encode(symbols, indexes, table, k))
        assert coded_bits <= 1.01 * entropy_bits + 8 * 16 * k, (k, coded_bits, entropy_bits)


def test_same_tables_drive_compressai():
    # The layout is CompressAI's: its coder accepts our tables and produces the same size
    # (within rANS flush overhead) on in-range symbols.
    ans = pytest.importorskip("vlmcodec.bench.entropy")._load_compressai_ans  # noqa: SLF001
    try:
        ans = ans()
    except ImportError as exc:
        pytest.skip(str(exc))
    table = gaussian_table()
    rng = np.random.default_rng(8)
    scales = np.array([0.11, 0.5, 1.0, 3.0, 10.0, 50.0, 256.0])
    indexes = rng.integers(0, len(scales), size=50_000, dtype=np.int32)
    symbols = np.rint(rng.normal(size=indexes.size) * scales[indexes]).astype(np.int32)
    args = (table.cdf.tolist(), table.cdf_length.tolist(), table.offsets.tolist())
    theirs = ans.RansEncoder().encode_with_indexes(symbols.tolist(), indexes.tolist(), *args)
    decoded = ans.RansDecoder().decode_with_indexes(theirs, indexes.tolist(), *args)
    np.testing.assert_array_equal(np.asarray(decoded, np.int32), symbols)
    ours = sum(len(c) for c in rans.encode(symbols, indexes, table))
    assert abs(ours - len(theirs)) <= 0.002 * len(theirs) + 16


@pytest.mark.slow
def test_round_trip_large_many_chunks(gtable):
    rng = np.random.default_rng(9)
    symbols, indexes = random_symbols(rng, gtable, 3_000_000)
    chunks = rans.encode(symbols, indexes, gtable, 97, threads=2)
    np.testing.assert_array_equal(rans.decode(chunks, indexes, gtable, threads=4), symbols)
