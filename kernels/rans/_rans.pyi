"""Type stub of the nanobind module built from bind.cpp (private; use vlmcodec.kernels.rans).

Kept by hand: a change of bind.cpp's signatures changes this file too. The int32 / float64
arrays must be C-contiguous and of exactly that dtype (no conversion)."""

from collections.abc import Sequence

import numpy as np

PRECISION: int
FORMAT_VERSION: int
MAX_CDF_LENGTH: int
STATE_LOWER: int
NUM_STATES: int

class CorruptStreamError(ValueError): ...

class Tables:
    """Validated, prepared CDF tables (immutable)."""

    def __init__(self, cdf: np.ndarray, cdf_length: np.ndarray, offsets: np.ndarray) -> None: ...
    @property
    def num_tables(self) -> int: ...

def encode(tables: Tables, symbols: np.ndarray, indexes: np.ndarray, num_chunks: int, threads: int) -> list[bytes]: ...
def decode_into(tables: Tables, chunks: Sequence[bytes], indexes: np.ndarray, out: np.ndarray,
                threads: int) -> None: ...
def pmf_to_quantized_cdf(pmf: np.ndarray, tail_mass: float, precision: int) -> np.ndarray: ...
def build_cdf_table(pmfs: np.ndarray, pmf_lengths: np.ndarray, tail_masses: np.ndarray,
                    precision: int) -> tuple[np.ndarray, np.ndarray]: ...
