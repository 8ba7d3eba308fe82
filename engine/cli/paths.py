"""The command line's inputs and outputs: files, folders, globs and "-" expanded, standard
input and output, output names and folders, refused before anything is coded."""

from __future__ import annotations

import contextlib
import glob
import io
import os
import stat
import sys
from pathlib import Path

from ..console import is_terminal as _is_terminal
from ..errors import BitstreamError, VlmcodecError


DEFAULT_PNG_LEVEL = 1  # = image_io.DEFAULT_PNG_LEVEL (the CLI starts without numpy and Pillow)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".gif"}


# "-" as an input or output: standard input or output (a file named "-" is "./-")
STDIO = "-"
# --format: decoded images written into a folder, beside their inputs or to standard output
DECODED_FORMATS = {"png": ("PNG", (".png",)), "ppm": ("PPM", (".ppm", ".pnm")), "bmp": ("BMP", (".bmp",)),
                   "tif": ("TIFF", (".tif", ".tiff"))}
STDIN = Path("<standard input>")  # the input "-" stands for; compared by identity, never opened


def expand_inputs(items: list[str], suffixes: set[str], per_file: bool = False) -> list[Path]:
    """Files, folders (their matching files, sorted), glob patterns and "-" (``STDIN``, alone)
    → a list of paths. ``per_file``: of several inputs, one named that is missing or a link that
    leads nowhere is kept, to fail alone where it is read (as one found in a folder does), not
    refused with the whole run."""
    return _expand_inputs(items, suffixes, per_file)[0]


def _expand_inputs(items: list[str], suffixes: set[str], per_file: bool = False) -> tuple[list[Path], bool]:
    """``expand_inputs``, and whether an item was a folder or a glob pattern: its outputs then go
    into a folder even when it holds one file (-o was taken as that file's name). A folder and a
    glob keep the same files: those of ``suffixes`` that are regular (``_scanned``)."""
    out: list[Path] = []
    scanned = False
    if STDIO in items and len(items) > 1:
        raise VlmcodecError("'-' (standard input) must be the only input")
    alone = per_file and len(items) > 1  # (a single input still fails at once)
    for item in items:
        if item == "":  # (an unset shell variable: Path("") is ".", the whole current folder)
            raise VlmcodecError(f"an input is empty ({item!r}): name a file, a folder, a glob or -")
        p = Path(item)
        if item == STDIO:
            out.append(STDIN)
        elif p.is_dir():
            scanned = True
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in suffixes and _scanned(f))
        elif p.is_file():  # a name that exists is that file, glob characters and all ("photo[1].png")
            out.append(p)
        elif os.path.lexists(item):  # there, but no regular file: a FIFO, a device, a link leading nowhere
            out.append(_named_input(p, alone))
        elif any(c in item for c in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            if not matches:
                raise VlmcodecError(f"no file matches {item!r}")
            scanned = True
            out += [f for f in matches if f.suffix.lower() in suffixes and _scanned(f)]
        elif alone:
            out.append(p)
        else:
            raise VlmcodecError(f"input not found: {item}")
    if not out:
        raise VlmcodecError("no input files" + (f" (folders and globs take {', '.join(sorted(suffixes))} files)"
                                                if scanned else ""))
    return out, scanned


def _scanned(f: Path) -> bool:
    """Whether a folder's or a glob's entry is an input: a regular file (or a link to one), or a
    link that leads nowhere (broken, or a loop: it fails alone, with its reason); never a folder,
    a FIFO (the command hung reading it), a socket or a device."""
    try:
        return stat.S_ISREG(f.stat().st_mode)
    except OSError:
        return f.is_symlink()


def _named_input(p: Path, alone: bool = False) -> Path:
    """An input named on the command line that exists but is no regular file or folder: a FIFO
    (/dev/stdin from a pipe, a shell's <(command)) is read once, as standard input is; a device
    or a socket is refused, and so is a link that leads nowhere unless it is to fail ``alone``."""
    try:
        mode = p.stat().st_mode
    except OSError as e:  # a broken link, a loop of links
        if alone:
            return p
        raise VlmcodecError(f"cannot read {p}: {e.strerror or e}") from None
    if not stat.S_ISFIFO(mode):
        raise VlmcodecError(f"{p} is not a regular file (use - for standard input)")
    return p


def _is_pipe(src: Path) -> bool:
    """Whether ``src`` is read as a stream (standard input, a FIFO): once, whole, never seeked."""
    if src is STDIN:
        return True
    try:
        return stat.S_ISFIFO(src.stat().st_mode)
    except OSError:
        return False


def _is_stdout(output: str | None) -> bool:
    """Whether ``-o output`` names the file standard output already is (/dev/stdout, /proc/self/fd/1,
    the file stdout is redirected to): it is then standard output, as ``-o -`` is, with the table
    on stderr (it was mixed into the stream). The null device is left alone."""
    if output in (None, STDIO):
        return False
    try:
        named, out, null = os.stat(output), os.fstat(sys.stdout.fileno()), os.stat(os.devnull)
    except (OSError, ValueError, AttributeError):  # (no file behind stdout: io.UnsupportedOperation)
        return False
    same = (named.st_dev, named.st_ino) == (out.st_dev, out.st_ino)
    return same and (named.st_dev, named.st_ino) != (null.st_dev, null.st_ino)


def _real(path: Path) -> Path:
    """Where ``path`` leads, links followed (a loop of links: a path in it, where ``Path.resolve``
    raised RuntimeError on Python < 3.13)."""
    return Path(os.path.realpath(path))


def _refuse_terminal_stdin(files: list[Path]) -> None:
    if files[0] is STDIN and _is_terminal(sys.stdin):  # (it waited for bytes no one can type)
        raise VlmcodecError("standard input is a terminal: pipe the input in (< FILE or COMMAND |) or name a file")


def _check_stdio(files: list[Path], output: str | None) -> bool:
    """Refuse what standard input/output cannot do; True when the output is standard output."""
    if files[0] is STDIN and (output is None or (output != STDIO and (Path(output).is_dir()
                                                                   or output.endswith(("/", "\\"))))):
        # (a folder: the output was named "<standard input>.vlmc" in it)
        raise VlmcodecError("reading standard input needs -o FILE (or -o - for standard output)")
    _refuse_terminal_stdin(files)
    if output != STDIO:
        return False
    if len(files) > 1:
        raise VlmcodecError("-o - (standard output) takes one input")
    if _is_terminal(sys.stdout):
        raise VlmcodecError("standard output is a terminal: redirect it (> FILE or | COMMAND) or give -o FILE")
    return True


def _check_output_folder(output: str | None, many: bool,
                         why: str = "the outputs go into a folder here (several inputs, or roundtrip)") -> None:
    """An output that must be a folder (several inputs, roundtrip, export) but is an existing
    file: one error up front (each input was coded, then failed on it with "File exists")."""
    if many and output not in (None, STDIO) and Path(output).exists() and not Path(output).is_dir():
        raise VlmcodecError(f"-o {output} is a file: {why}; name a folder")


def _is_input(path: Path, src: Path) -> bool:
    """Whether writing ``path`` would replace the input file ``src`` itself."""
    return src is not STDIN and path.exists() and _real(path) == _real(src)


def _read_bytes(src: Path) -> bytes:
    return sys.stdin.buffer.read() if src is STDIN else src.read_bytes()


def _load(src: Path, max_pixels: int | None):
    """``src``'s image; standard input or a FIFO read whole first (Pillow seeks in a file)."""
    from ..image_io import load_image

    if not _is_pipe(src):
        return load_image(src, max_pixels)
    data = io.BytesIO(_read_bytes(src))
    data.name = str(src)  # (errors and warnings name the file or "<standard input>", not "<stream>")
    return load_image(data, max_pixels)


def _write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _output_name(src: Path, out: str | None, many: bool, suffix: str) -> Path:
    """Where ``src``'s output goes (no folder made yet)."""
    if out is None:
        return src.with_suffix(suffix)
    o = Path(out)
    if many or o.is_dir() or out.endswith(("/", "\\")):
        return o / (src.stem + suffix)
    return o


def _make_folders(outputs: list[Path], made: list[Path]) -> None:
    """Make the outputs' folders before anything is coded: one that cannot be made is one error
    up front (it was each input's, and a file in the way an "[Errno 17] File exists"). The folders
    this made, parents first, are added to ``made`` (``files.empty_folders_removed``)."""
    from ..files import file_in_the_way, missing_folders

    for folder in sorted({p.parent for p in outputs}):
        new = missing_folders(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            made += new
        except OSError as e:
            in_the_way = file_in_the_way(folder)
            why = f"{in_the_way} is not a folder" if in_the_way is not None else e.strerror or str(e)
            raise VlmcodecError(f"cannot make the output folder {folder}: {why}") from None


def _check_outputs(files: list[Path], outputs: list[list[Path]]) -> None:
    """Refuse, before anything is coded, a run in which two inputs would write the same output
    (a.png and a.jpg both to a.vlmc: one was overwritten by the other without a word) or an input
    would be written over by another's output (roundtrip d -o d: a.jpg's decoded image replaced
    the original a.png). An output that replaces its own input is refused per file, later."""
    inputs = {_real(src): src for src in files if src is not STDIN}
    taken: dict[Path, Path] = {}
    for src, outs in zip(files, outputs):
        for out in outs:
            where = _real(out)
            if where in taken and taken[where] != src:
                raise VlmcodecError(f"{taken[where]} and {src} would both be written to {out}: give one of them "
                                    "another name, or code them into separate -o folders")
            taken[where] = src
            other = inputs.get(where)
            if other is not None and other != src:
                raise VlmcodecError(f"{out}, the output of {src}, would replace the input {other}: give -o another "
                                    "folder")


def _refuse_decoder_model(head: bytes) -> None:
    """BitstreamError naming it for a C decoder-model file read as a stream (standard input): its
    "VLMCDEC" was "unsupported .vlmc version 68"."""
    from vlmcodec.export.c_decoder import MAGIC as DECODER_MODEL_MAGIC

    if head.startswith(DECODER_MODEL_MAGIC):
        raise BitstreamError("a decoder-model file of the C decoder (.vlmd), not a .vlmc stream: "
                             "name it as FILE.vlmd to describe it")


def _read_stream(src: Path) -> bytes:
    """A .vlmc stream's bytes for ``info`` and ``decode``, read whole only when its header says the
    file is that long: a damaged or hostile one (a 2 GB file of zeros) fails from its first bytes, as
    ``container.unpack`` says of it."""
    from ..bitstream import container

    with contextlib.ExitStack() as stack:
        try:
            f = sys.stdin.buffer if src is STDIN else stack.enter_context(open(src, "rb"))
        except FileNotFoundError as e:  # (as encode's "image not found": not a bare FileNotFoundError)
            raise BitstreamError(f"stream not found: {src}") from e
        head = f.read(container.MAX_HEADER_BYTES)
        _refuse_decoder_model(head)
        if len(head) < container.MAX_HEADER_BYTES:  # (the whole file)
            return head
        start, payload = container.payload_span(head)
        try:
            st = os.fstat(f.fileno())
            size = st.st_size if stat.S_ISREG(st.st_mode) else None  # (a pipe's or a FIFO's is not known)
        except (OSError, ValueError):  # (a stand-in stdin without a file descriptor)
            size = None
        if size is not None and size != start + payload:
            raise container.length_mismatch(payload, size - start)
        return head + f.read(start + payload + 1 - len(head))  # (one more: unpack refuses a longer one)
