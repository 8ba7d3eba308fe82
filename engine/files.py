"""Writing files whole or not at all."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_whole(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: under a temporary name beside it, then
    renamed over it, so that an interrupted or failed write (a full disk, Ctrl-C) leaves the file
    as it was, never truncated — a model file, a stream, an image (a FIFO or a device is written
    in place; a link, through). An OSError names ``path``, not the temporary name."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO or a device: written in place, never replaced
        with open(path, "wb") as f:
            f.write(data)
        return
    if path.is_symlink():  # write through the link, as a plain open would
        path = path.resolve()
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "xb") as f:  # mode x: the umask's permissions, as a plain open would give
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:  # (the same OSError subclass, from the errno)
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
