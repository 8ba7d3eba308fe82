"""What a multi-file command prints: its table's lines and JSON rows, a progress bar, and
the per-file errors with the exit status they make."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..console import is_terminal as _is_terminal
from ..errors import BitstreamError, BudgetError, ImageError, ModelMismatchError, ResourceError


def _progress(items, enabled: bool, desc: str, total: int | None = None):
    """Iterate with a progress bar on stderr (when enabled, there are several items and stderr is
    a terminal: in a log file or pipe the bar's carriage returns would only garble the lines).
    ``total``: the number of items, when ``items`` is an iterator."""
    total = len(items) if total is None else total
    if not enabled or total < 2 or not _is_terminal(sys.stderr):
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)


def _emit(line: str, stream=None) -> None:
    """Print a line (to stdout unless ``stream``) without tearing an active progress bar."""
    from tqdm import tqdm

    stream = stream or sys.stdout
    tqdm.write(line, file=stream)
    stream.flush()


def _emit_json(row: dict, stream=None) -> None:
    """``--json``: one object per line; a number that is not finite (a PSNR not measured, or of
    an image coded exactly) as null, so that every line is strict JSON."""
    import json
    import math

    _emit(json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}),
          stream)


# what one input file can get wrong; the run goes on with the others (a config or backend error,
# the same for every file, stops it at once)
_FILE_ERRORS = (ImageError, BitstreamError, ModelMismatchError, ResourceError, BudgetError, OSError)


class _Failures:
    """Per-file errors of a multi-file command: each is printed as it happens, the exit status
    (2 if any failed) and a count come at the end, after every other file was processed."""

    def __init__(self, total: int, json_stream=None):
        self.total, self.count = total, 0
        self.json_stream = json_stream  # --json: each failure also as {"file", "error", "type"} there

    def add(self, src: Path, err: BaseException) -> None:
        if isinstance(err, BrokenPipeError):  # stdout went away: not this file's fault
            raise err
        msg = str(err)
        self.count += 1
        _emit(f"vlmcodec: error: {msg if str(src) in msg else f'{src}: {msg}'}", sys.stderr)
        if self.json_stream is not None:
            _emit_json({"file": str(src), "error": msg, "type": type(err).__name__}, self.json_stream)

    def add_after(self, writes, src: Path, err: BaseException) -> None:
        """``add``, once the rows of the files before it have come (``writes``: the ``WriteBehind``
        they wait in), so that results come in input order."""
        writes.drain()
        self.add(src, err)

    def status(self) -> int:
        if self.count and self.total > 1:
            print(f"vlmcodec: error: {self.count} of {self.total} files failed (the others were processed)",
                  file=sys.stderr)
        return 2 if self.count else 0


def _cell(value: float, fmt: str) -> str:
    """A number of the encode table, 8 wide; "-" where there is none (nan: --no-psnr's PSNR and
    decode time, which printed "nan")."""
    return f"{'-' if math.isnan(value) else format(value, fmt):>8}"
