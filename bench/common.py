"""Shared helpers of the benchmarks: environment description and result files."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from ..checks import whole_number_arg

# the codecs `bench rd` runs by default (here, not in rd.py, so the CLI's parser needs no torch)
DEFAULT_CODECS = ("vlmcodec", "avif", "jpeg", "webp", "jxl", "hevc")


# argparse types: a whole number, 0 or more (a count where 0 means "all" or "none"); 1 or more
count_arg = whole_number_arg(0)
positive_arg = whole_number_arg(1)


def source_commit() -> str | None:
    """The git commit of the code that runs (``+dirty`` with uncommitted changes), or None outside
    a git checkout (an installed wheel): a result says which code made it."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def environment() -> dict:
    """What every JSON result records about where it ran."""
    import numpy as np
    import torch

    from .. import __version__

    env = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "vlmcodec": __version__,
        "commit": source_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    env["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return env


def check_output_path(path: str | Path, option: str = "--out", example: str = "result.json") -> Path:
    """``path`` as a file a benchmark can write at its end, checked before it runs (a folder given,
    or a parent that cannot be made, failed only after the whole run); ConfigError naming ``option``
    (and, for a folder, the file it could be given: ``example`` in it)."""
    from ..errors import ConfigError

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give the file to write, e.g. {path / example}")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{option} {path}: the file is not writable")
    _check_can_make(path.absolute().parent, path, option)
    return path


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a folder a benchmark can make and write in, checked before it runs (a file given
    was a raw "File exists" after the images were read); ConfigError naming ``option``."""
    from ..errors import ConfigError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file; name a folder")
    _check_can_make(path.absolute(), path, option)
    return path


def _check_can_make(folder: Path, path: Path, option: str) -> None:
    """ConfigError unless ``folder`` exists or can be made: the first of it and its parents that
    exists must be a folder this process can write in."""
    from ..errors import ConfigError

    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{option} {path}: cannot write in {folder} (a file, not a folder)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: cannot write in {folder}")


@contextmanager
def output_folder(path: str | Path):
    """``path`` made (with its parents) for the body's outputs; on leaving, the folders it made
    that hold no file are removed again (a run that failed or was interrupted before it wrote
    anything left an empty --out behind)."""
    from ..files import empty_folders_removed, missing_folders

    path = Path(path)
    with empty_folders_removed() as made:
        made += missing_folders(path)
        path.mkdir(parents=True, exist_ok=True)
        try:
            yield path
        finally:
            if made:  # (a new folder: the subfolders the run made in it too, innermost first)
                for root, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0]))[:-1]:
                    with suppress(OSError):  # (not empty: left as it is)
                        Path(root).rmdir()


def progress_bar(total: int, desc: str, enabled: bool = True, iterable=None):
    """A tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal (in a log file
    its carriage returns would only garble the lines); ``update()`` it per step, or iterate it
    (``iterable``)."""
    from tqdm import tqdm

    from ..console import is_terminal

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=not (enabled and is_terminal(sys.stderr)))


def repeated(values) -> str:
    """The values given more than once, as text ("50, 60"; "" for none): a quality list's repeat
    gave its own point of a curve or row of a report."""
    floats = [float(v) for v in values]
    return ", ".join(f"{v:g}" for v in sorted({v for v in floats if floats.count(v) > 1}))


def finite_number(v) -> bool:
    """Whether ``v`` is a finite int or float (not a bool): a figure read back from JSON."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def strict_json(obj):
    """``obj`` with every non-finite float (NaN, ±inf) as None: the figures files are strict JSON
    (null), which strict parsers read (a bare NaN token they refuse)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_json(path: str | Path, payload: dict) -> None:
    """A benchmark's figures, written whole or not at all (a Ctrl-C left a truncated file)."""
    from ..files import write_whole

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, json.dumps(payload, indent=2).encode())


def kodak_dir(usage: str = "") -> Path:
    """The evaluation set, relative to the project root (../shared/data/kodak); ``usage``: how the
    calling command takes another folder (a positional IMAGES_DIR or --images DIR), for the error."""
    here = Path(__file__).resolve().parents[1]
    for cand in (here.parent / "shared" / "data" / "kodak", Path.cwd().parent / "shared" / "data" / "kodak"):
        if cand.is_dir():
            return cand
    raise FileNotFoundError("Kodak images not found (expected ../shared/data/kodak); name a folder of images"
                            + (f": {usage}" if usage else " (IMAGES_DIR or --images DIR: see the command's --help)"))


def image_files(folder: str | Path | None, limit: int = 0) -> list[Path]:
    """The PNG/JPEG images of ``folder`` (default: Kodak), sorted; a clear error when there are none."""
    folder = Path(folder) if folder else kodak_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".ppm", ".bmp"))
    if not files:
        raise FileNotFoundError(f"no images in {folder}")
    return files[: limit or None]
