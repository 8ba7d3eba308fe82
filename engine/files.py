"""Writing files whole or not at all; the folders a run makes for them."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from pathlib import Path


def write_whole(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: under a temporary name beside it, then
    renamed over it, so that an interrupted or failed write (a full disk, Ctrl-C) leaves the file
    as it was, never truncated — a model file, a stream, an image (a FIFO or a device is written
    in place; a link, through). A file replaced keeps its permission bits (a hard link to it keeps
    the old bytes: the rename makes a new file). An OSError names ``path``, not the temporary name."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO or a device: written in place, never replaced
        with open(path, "wb") as f:
            f.write(data)
        return
    if path.is_symlink():  # write through the link, as a plain open would
        path = _link_target(path)
    # a short name: the target's own name in it went past NAME_MAX for names of ~225 characters
    tmp = path.with_name(f".vlmc-{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        with open(tmp, "xb") as f:  # mode x: a new file gets the umask's permissions, as a plain open would
            f.write(data)
        if path.exists():  # a plain open keeps an existing file's mode (a 0600 stream stayed 0600)
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except OSError as e:  # (the same OSError subclass, from the errno)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _link_target(link: Path) -> Path:
    """The file a write through ``link`` reaches (made if the link dangles); a loop of links is
    the OSError a plain open raises (``Path.resolve`` raised RuntimeError on Python < 3.13)."""
    try:
        os.stat(link)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OSError(e.errno, f"cannot write {link}: {e.strerror}") from None
    return Path(os.path.realpath(link))


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist, outermost first: what
    ``folder.mkdir(parents=True)`` makes."""
    return [q for q in (*reversed(folder.parents), folder) if not q.exists()]


def file_in_the_way(folder: Path) -> Path | None:
    """The first of ``folder`` and its parents that exists and is no folder: why it cannot be made
    (None: none is)."""
    return next((q for q in (folder, *folder.parents) if q.exists() and not q.is_dir()), None)


@contextlib.contextmanager
def empty_folders_removed():
    """A list for the folders a run makes (``missing_folders``, before making them); on leaving,
    those still empty are removed, innermost first: a run that failed or was interrupted before its
    first output leaves no empty folder behind."""
    made: list[Path] = []
    try:
        yield made
    finally:
        for folder in reversed(made):
            with contextlib.suppress(OSError):  # (not empty, or gone: left as it is)
                folder.rmdir()
