"""The ``vlmcodec`` command line.

    vlmcodec encode IN... -o OUT [-q QUALITY]     images → .vlmc (prints bpp, PSNR, time)
    vlmcodec decode IN... -o OUT                  .vlmc → PNG
                                                  (IN or OUT "-": standard input or output)
    vlmcodec roundtrip IN... -o OUT               both, with a summary table (the main job)
    vlmcodec info FILE...                         header fields of .vlmc files
    vlmcodec serve [--port 8080]                  HTTP server: POST /encode, /decode (batched)
    vlmcodec train --config FILE                  train a model (resumable)
    vlmcodec convert --from-compressai CKPT | --from-weights FILE -o MODEL.safetensors
    vlmcodec export --format onnx|tensorrt|c-decoder -o DIR [--fp16] [--max-batch N] [--max-size HxW]
    vlmcodec bench rd [IMAGES_DIR] --out DIR      rate–distortion benchmark (vlmcodec.bench.cli)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import glob
import io
import math
import os
import stat
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .checks import DEFAULT_QUALITY, finite_number_arg, whole_number_arg
from .console import backend_option
from .console import is_terminal as _is_terminal
from .errors import (BitstreamError, BudgetError, ConfigError, ImageError, ModelMismatchError, ModelNotFoundError, ResourceError,
                     VlmcodecError, VlmcodecWarning)
from .training.overrides import merge_overrides

if TYPE_CHECKING:
    from .codec import Codec

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
    from .image_io import load_image

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
    from .files import file_in_the_way, missing_folders

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


def _decoded_format(args, output_is_file: bool) -> tuple[str, str]:
    """(Pillow format, suffix) of the decoded images by ``--format`` (default PNG). A named output
    file keeps its suffix's format; one that contradicts an explicit ``--format`` is refused."""
    name = args.format or "png"
    fmt, suffixes = DECODED_FORMATS[name]
    if args.format and output_is_file and Path(args.output).suffix.lower() not in suffixes:
        raise ConfigError(f"--format {name} but the output file {args.output} has suffix "
                          f"{Path(args.output).suffix or '(none)'!r}; name it *{suffixes[0]} or drop --format")
    return fmt, suffixes[0]


def _resolve_png_level(args, fmt: str) -> int:
    """``--png-level``, or the default; refused when the decoded images are written in another
    format than PNG (where it would silently do nothing)."""
    if args.png_level is None:
        return DEFAULT_PNG_LEVEL
    if fmt != "PNG":
        raise ConfigError(f"--png-level sets the zlib level of PNG images, but the decoded images are "
                          f"written as {fmt}; drop --png-level")
    return args.png_level


def _names_a_file(out: str | None, many: bool) -> bool:
    """Whether ``-o out`` is one output file (not a folder, nor standard output)."""
    return (out not in (None, STDIO) and not many and not Path(out).is_dir()
            and not out.endswith(("/", "\\")))


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


def _check_refine_options(args, refining: bool, needs: str) -> None:
    """--refine-views and --refine-bf16 say how refinement runs: ConfigError (naming what they
    ``needs``) when the command does not refine."""
    for flag in ("refine_views", "refine_bf16"):
        if getattr(args, flag, None) and not refining:
            raise ConfigError(f"--{flag.replace('_', '-')} needs {needs}")


def _refine_settings(codec, prefix: str = "") -> str:
    """How the codec refines beyond its steps, for a status line: its teacher views and bfloat16
    (each ``, {prefix}teacher ...``), or ""."""
    views = f", {prefix}teacher views {','.join(map(str, codec.refine_views))} px" if codec.refine_views else ""
    return views + (f", {prefix}teacher in bfloat16" if codec.refine_bf16 else "")


def _codec(args, model=None):
    """The Codec the command's options describe (``model``: another model file, same options)."""
    from .codec import Codec

    if hasattr(args, "refine"):  # encode, roundtrip (serve checks against its --max-refine)
        _check_refine_options(args, args.refine, "--refine STEPS (how the refinement runs)")
    extra = {"max_pixels": args.max_pixels} if getattr(args, "max_pixels", None) else {}
    options = dict(getattr(args, "backend_option", None) or ())
    if model is not None and not str(model).strip():  # ("" meant --model's file: Codec("") is the default model)
        raise ConfigError("--extra-model takes a model file's path, got an empty one")
    return Codec(args.model if model is None else model, backend=args.backend, threads=args.threads, **extra,
                 backend_options=options, hs_device=getattr(args, "hs_device", None),
                 pre_edit=not getattr(args, "no_pre_edit", False), short_side=getattr(args, "short_side", None),
                 refine=getattr(args, "refine", 0), refine_views=getattr(args, "refine_views", None),
                 refine_bf16=getattr(args, "refine_bf16", False))


def _budget(args) -> dict:
    """encode's / roundtrip's --max-bytes or --max-bpp as encode_to_size's arguments ({} without)."""
    max_bytes, max_bpp = getattr(args, "max_bytes", None), getattr(args, "max_bpp", None)
    if max_bytes is None and max_bpp is None:
        return {}
    if args.quality is not None:
        raise ConfigError("-q and --max-bytes / --max-bpp exclude each other (the budget picks each image's quality)")
    if max_bytes is not None and max_bpp is not None:
        raise ConfigError("--max-bytes and --max-bpp exclude each other")
    return {"max_bytes": max_bytes} if max_bytes is not None else {"max_bpp": max_bpp}


def _stream_quality(data: bytes) -> float:
    from .bitstream import container

    return container.unpack(data)[0].quality


def cmd_encode(args, roundtrip: bool = False) -> int:
    from .files import empty_folders_removed

    with empty_folders_removed() as made:
        return _encode_files(args, roundtrip, made)


def _encode_files(args, roundtrip: bool, made: list[Path]) -> int:
    from .file_pipeline import WriteBehind, read_ahead
    from .files import write_whole
    from .image_io import psnr, save_image

    files, scanned = _expand_inputs(args.inputs, IMAGE_SUFFIXES, per_file=True)
    if _is_stdout(args.output):  # -o /dev/stdout: the stream alone on stdout
        args.output = STDIO
    if roundtrip and (files[0] is STDIN or args.output == STDIO):
        raise VlmcodecError("roundtrip writes .vlmc and image files: give it image files and an output folder "
                            "(encode and decode read and write standard input and output with '-')")
    to_stdout = _check_stdio(files, args.output)
    table = sys.stderr if to_stdout else sys.stdout  # stdout carries the stream then
    notes = sys.stderr if args.json else table  # --json: the table's stream carries JSON lines only
    codec = _codec(args)
    # roundtrip's -o is a folder even for one image (it was a file named "out" and "out.png" beside it)
    many = len(files) > 1 or scanned or roundtrip
    _check_output_folder(args.output, many)
    rows = []
    if codec.short_side:
        print(f"coding at the consumer's scale: shorter side {codec.short_side} px (an image no larger is coded "
              "at its own size; decoded at the original size)", file=notes)
    if codec.refine:
        print(f"refining each latent with {codec.refine} steps before coding (slower encoding"
              f"{_refine_settings(codec)})", file=notes)
    budget = _budget(args)
    quality = DEFAULT_QUALITY if args.quality is None else args.quality
    codec.model.level_of_quality(quality)  # a bad -q fails once, not once per file
    qcol = f" {'quality':>7}" if budget else ""  # with a budget, the quality each image got
    # the table's header comes with its first row (an input that fails alone prints only its error)
    header = [f"{'image':<24} {'size':>10} {'bytes':>8} {'bpp':>7}{qcol} {'PSNR dB':>8} {'enc ms':>8} {'dec ms':>8}"]
    failures = _Failures(len(files), table if args.json else None)
    decoded_fmt, (suffix, *_) = DECODED_FORMATS[getattr(args, "format", None) or "png"]  # roundtrip's
    png_level = _resolve_png_level(args, decoded_fmt) if roundtrip else DEFAULT_PNG_LEVEL

    def decoded_path(dst: Path) -> Path:
        return dst.with_suffix(suffix) if dst.suffix == ".vlmc" else Path(str(dst) + suffix)

    if not to_stdout:
        streams = [_output_name(f, args.output, many, ".vlmc") for f in files]
        _check_outputs(files, [[d, decoded_path(d)] if roundtrip else [d] for d in streams])
        _make_folders(streams, made)
    if codec.refine:  # its teacher loads now: a missing package fails once, not once per file
        codec.refiner()

    def report(src: Path, row: tuple, line: str | dict):
        def then(err: BaseException | None) -> None:
            if err is not None:
                failures.add(src, err)
                return
            rows.append(row)
            if isinstance(line, dict):
                _emit_json(line, table)
                return
            if header:
                _emit(header.pop(), table)
            _emit(line, table)
        return then

    # the next image is read and the last decoded one written while this one is coded
    with WriteBehind() as writes:
        def save_decoded(rec, out: Path, dst: Path) -> None:
            try:
                save_image(rec, out, png_level)
            except OSError as e:  # (reported as the file's failure: say what it left)
                raise type(e)(f"{e} (its stream {dst} was written)") from e

        loads = read_ahead(files, lambda f: _load(f, codec.max_pixels))
        for src, loaded in _progress(loads, not args.quiet, "encode", total=len(files)):
            try:
                img = loaded.result()
                # where it goes, refused before any coding if that is the input itself
                dst = Path(STDIO) if to_stdout else _output_name(src, args.output, many, ".vlmc")
                out = decoded_path(dst)
                if _is_input(dst, src):
                    raise FileExistsError(f"{dst}: the stream would replace its own input image (-o names it)")
                if roundtrip and _is_input(out, src):
                    raise FileExistsError(f"{out}: the decoded image would replace its own input "
                                          "(give roundtrip another -o folder)")
                t0 = time.perf_counter()
                if budget:
                    data = codec.encode_to_size(img, **budget)
                else:
                    data = codec.encode(img, quality=quality)
                t_enc = time.perf_counter() - t0
                if to_stdout:
                    _write_stdout(data)
                else:
                    write_whole(dst, data)  # whole or not at all (a Ctrl-C left a truncated stream)
            except _FILE_ERRORS as e:
                failures.add_after(writes, src, e)
                continue
            h, w = img.shape[:2]
            bpp = 8 * len(data) / (h * w)
            p, t_dec, rec = float("nan"), float("nan"), None
            if roundtrip or not args.no_psnr:
                t0 = time.perf_counter()
                try:
                    rec = codec.decode(data)
                except _FILE_ERRORS as e:
                    failures.add_after(writes, src, e)
                    continue
                t_dec = time.perf_counter() - t0
                p = psnr(img, rec)
            row = (bpp, p, t_enc, t_dec)
            got = f" {_stream_quality(data):>7.2f}" if budget else ""
            line: str | dict = (f"{src.name[:24]:<24} {w:>4}x{h:<5} {len(data):>8} {bpp:>7.4f}{got} {_cell(p, '.2f')} "
                                f"{1000*t_enc:>8.0f} {_cell(1000 * t_dec, '.0f')}")
            if args.json:
                line = {"file": str(src), "output": str(dst), **({"decoded": str(out)} if roundtrip else {}),
                        "width": w, "height": h, "bytes": len(data), "bpp": bpp, "quality": _stream_quality(data),
                        "psnr_db": p, "encode_ms": 1000 * t_enc, "decode_ms": 1000 * t_dec}
            if roundtrip:
                writes.submit(functools.partial(save_decoded, rec, out, dst), report(src, row, line))
            else:
                report(src, row, line)(None)
    if len(rows) > 1 and not args.json:
        n = len(rows)
        mean = [sum(r[i] for r in rows) / n for i in range(4)]
        print(f"{'mean of ' + str(n):<24} {'':>10} {'':>8} {mean[0]:>7.4f}{' ' * len(qcol)} {_cell(mean[1], '.2f')} "
              f"{1000*mean[2]:>8.0f} {_cell(1000 * mean[3], '.0f')}", file=table)
    return failures.status()


def _cell(value: float, fmt: str) -> str:
    """A number of the encode table, 8 wide; "-" where there is none (nan: --no-psnr's PSNR and
    decode time, which printed "nan")."""
    return f"{'-' if math.isnan(value) else format(value, fmt):>8}"


def cmd_decode(args) -> int:
    from .files import empty_folders_removed

    with empty_folders_removed() as made:
        return _decode_files(args, made)


def _decode_files(args, made: list[Path]) -> int:
    from .file_pipeline import WriteBehind
    from .image_io import image_bytes, save_image, written_format

    files, scanned = _expand_inputs(args.inputs, {".vlmc"}, per_file=True)
    if _is_stdout(args.output):  # -o /dev/stdout: the image alone on stdout (in the format of a name's suffix)
        suffix = Path(args.output).suffix.lower()
        args.format = args.format or next((k for k, (_, s) in DECODED_FORMATS.items() if suffix in s), None)
        args.output = STDIO
    to_stdout = _check_stdio(files, args.output)
    many = len(files) > 1 or scanned
    _check_output_folder(args.output, many)
    names_a_file = _names_a_file(args.output, many)
    fmt, suffix = _decoded_format(args, names_a_file)
    # a suffix it cannot write: refused before anything is decoded
    args.png_level = _resolve_png_level(args, written_format(args.output) if names_a_file else fmt)
    codec = _codec(args)
    codecs = _codec_set(codec, _distinct_models(args, codec, [(path, _codec(args, path))
                                                              for path in args.extra_model or ()]))
    table = sys.stderr if to_stdout else sys.stdout  # stdout carries the image then
    failures = _Failures(len(files), table if args.json else None)
    if not to_stdout:
        outputs = [_output_name(f, args.output, many, suffix) for f in files]
        _check_outputs(files, [[o] for o in outputs])
        _make_folders(outputs, made)

    def report(src: Path, line: str | dict):
        def then(err: BaseException | None) -> None:
            if err is not None:
                failures.add(src, err)
            elif isinstance(line, dict):
                _emit_json(line, table)
            else:
                _emit(line, table)
        return then

    # each image is written on a background thread while the next one decodes
    with WriteBehind() as writes:
        for src in _progress(files, not args.quiet, "decode"):
            try:
                dst = Path(STDIO) if to_stdout else _output_name(src, args.output, many, suffix)
                if not to_stdout and _is_input(dst, src):  # (stream.png, or a link to the stream; even with --force)
                    raise FileExistsError(f"{dst}: the decoded image would replace its own input stream "
                                          + ("(-o names it)" if args.output else "(name the output with -o)"))
                if args.output is None and dst.exists() and not args.force:  # refused before decoding
                    # beside its stream, a decoded image takes the original's name (photo.png →
                    # photo.vlmc → photo.png): replacing it would lose the original to the lossy copy
                    raise FileExistsError(f"{dst} exists: decode does not replace a file it was not told to "
                                          "(name the output with -o, or add --force)")
                data = _read_stream(src)  # (a 1.5 GB file of no stream was read whole first: 11 s, 2 GB)
                _check_decoded_size(data, fmt if to_stdout else written_format(dst), args.decode_short_side)
                t0 = time.perf_counter()
                img = _codec_for(codecs, data, codec).decode(data, args.decode_short_side)
                dt = time.perf_counter() - t0
            except _FILE_ERRORS as e:
                failures.add_after(writes, src, e)
                continue
            line: str | dict = f"{src.name} -> {dst}  {img.shape[1]}x{img.shape[0]}  {1000*dt:.0f} ms"
            if args.json:
                line = {"file": str(src), "output": str(dst), "width": img.shape[1], "height": img.shape[0],
                        "bytes": len(data), "decode_ms": 1000 * dt}
            if to_stdout:  # written here: there is no next image to overlap with
                _write_stdout(image_bytes(img, fmt, args.png_level))
                report(src, line)(None)
            else:
                writes.submit(functools.partial(save_image, img, dst, args.png_level), report(src, line))
    return failures.status()


def _check_decoded_size(data: bytes, fmt: str, short_side: int | None) -> None:
    """Refuse, from the stream's header and before it is decoded, an image too large for the
    format it is to be written in (a WebP: 16383 pixels a side)."""
    from . import resample
    from .bitstream import container
    from .image_io import FORMAT_MAX_SIDE, check_format_size

    if fmt.upper() not in FORMAT_MAX_SIDE:  # (no header parsed twice where any size is written)
        return
    header = container.read_header(data)  # (its payload is verified as it is decoded)
    h, w = resample.coded_size(header.height, header.width, resample.call_short_side(short_side))
    check_format_size(fmt, w, h)


def _serve_security(args):
    """(TLS context or None, ``tokens.TokenFile``: the tokens, None without a token file, and
    the clients' own options) from serve's --tls-cert/--tls-key and --auth-token-file; ConfigError for a
    half-given pair, an unreadable file or a token file with no token or a malformed line."""
    from .runtime.tokens import TokenFile

    ssl_context, token_file = None, TokenFile(None)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (it asks HTTPS clients for certificates)")
    if args.tls_cert:
        import ssl

        ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the TLS certificate {args.tls_cert} / key {args.tls_key}: {e}") from None
        if args.tls_client_ca:  # mutual TLS: only clients with a certificate this CA signed get in
            try:
                ssl_context.load_verify_locations(cafile=args.tls_client_ca)
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(f"cannot load --tls-client-ca {args.tls_client_ca}: {e}") from None
            ssl_context.verify_mode = ssl.CERT_REQUIRED
    if args.auth_token_file:
        from .runtime.tokens import read_token_file

        try:
            text = Path(args.auth_token_file).read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is dropped
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read --auth-token-file {args.auth_token_file}: "
                              f"{getattr(e, 'strerror', None) or e}") from None
        token_file = read_token_file(text, f"--auth-token-file {args.auth_token_file}")
    for flag, path in (("--tls-key", args.tls_key), ("--auth-token-file", args.auth_token_file)):
        _warn_if_others_can_read(flag, path)
    return ssl_context, token_file


def _warn_if_others_can_read(flag: str, path: str | None) -> None:
    """A secret (the TLS key, the tokens) in a file other users of the machine may read: a
    VlmcodecWarning naming the fix, as ssh does for its keys (POSIX permissions only)."""
    if not path or os.name != "posix":
        return
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:  # a registry of its own: said at each reload too, not once per process
        warnings.warn_explicit(f"{flag} {path} can be read by other users of this machine (mode {mode:o}): "
                               f"chmod 600 {path}", VlmcodecWarning, __file__, 0, registry={})


def _reload_security(server, args) -> None:
    """SIGHUP: read the certificate, key, client CA and token files again (a rotated certificate or
    token) for the connections to come; a set that fails to load leaves the current one in force."""
    if not (args.tls_cert or args.auth_token_file):
        print("vlmcodec: SIGHUP: nothing to reload (no --tls-cert or --auth-token-file)", file=sys.stderr, flush=True)
        return
    try:
        context, token_file = _serve_security(args)
        # each read once per connection / request; a client's options change with its line
        server.set_clients(token_file.tokens, token_file.limits, token_file.priorities, token_file.max_refine)
    except ConfigError as e:
        print(f"vlmcodec: reload refused, the current certificate and token stay: {e}", file=sys.stderr, flush=True)
        return
    server.ssl_context = context
    print("vlmcodec: reloaded the TLS certificate and token files", file=sys.stderr, flush=True)


def _distinct_models(args, codec, extra: list) -> list:
    """The --extra-model codecs (``extra``: (path, codec)) less any model already given: each
    repeat is named in a warning and held once (serve refused one only after making and warming
    every engine, with a message naming no file)."""
    seen = {codec.fingerprint: f"--model {args.model}" if args.model else "the default model"}
    kept = []
    for path, other in extra:
        if other.fingerprint in seen:
            warnings.warn(f"--extra-model {path} is the same model ({other.fingerprint.hex()}) as "
                          f"{seen[other.fingerprint]}: held once", VlmcodecWarning, stacklevel=2)
            continue
        seen[other.fingerprint] = f"--extra-model {path}"
        kept.append(other)
    return kept


def _codec_set(codec, others: list):
    """With --extra-model: the models held (each stream goes to the model that wrote it); without:
    None."""
    if not others:
        return None
    from .codec_set import CodecSet

    return CodecSet([codec, *others])


def _codec_for(codecs, data: bytes, default):
    """The codec of the model that wrote ``data``; ``default`` for a damaged header, whose decode
    then says what is wrong. A stream of none of the models held: the CodecSet's error, which
    names them all (the default's named it alone)."""
    if codecs is None:
        return default
    try:
        return codecs.codec_for(data)
    except BitstreamError:
        return default


def _exposure_warning(host: str, tokens: bool, tls: bool) -> str | None:
    """What a server listening on ``host`` leaves open, if it listens beyond this machine: no
    token (anyone who reaches it can use it), or tokens without TLS (they cross the network in
    clear); None on a loopback address or with both."""
    import ipaddress

    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback or (tokens and tls):
        return None
    if not tokens:
        return (f"listening on {host} without --auth-token-file: anyone who can reach it can use this server "
                "(give it tokens and TLS, or put it behind a proxy that has them)")
    return (f"listening on {host} with tokens but without TLS: the tokens cross the network in clear "
            "(--tls-cert/--tls-key)")


def cmd_serve(args) -> int:
    import signal
    import threading

    from .runtime import Engine
    from .runtime.server import CodecServer

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    ssl_context, token_file = _serve_security(args)
    samples = expand_inputs(args.warmup, IMAGE_SUFFIXES) if args.warmup else []
    codec = _codec(args)
    codec.model.level_of_quality(args.quality)  # a bad -q fails here, as encode's does
    # older models, kept to decode their streams (and to encode with ?model=): one engine each
    others = _distinct_models(args, codec, [(path, _codec(args, path)) for path in args.extra_model or ()])
    refining = bool(args.max_refine or any(token_file.max_refine.values()))
    if args.refine_cost and not (args.rate_limit or any(token_file.limits.values())):
        raise ConfigError("--refine-cost needs a rate limit to count against (--rate-limit, or a token-file "
                          "line's rate=R)")
    _check_refine_options(args, refining, "--max-refine STEPS, or a token-file line's refine=N (how the refined "
                                          "encodes run)")
    if refining:  # the refinement's teacher loads now: a missing package fails here, not on a request
        for each in (codec, *others):
            each.refiner()
    engines = [Engine(c, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
                      network_workers=args.network_workers, max_queue=args.max_queue, block=False,
                      timeout_s=args.timeout, refine_workers=args.refine_workers) for c in [codec, *others]]

    def shut_down_engines(drain: bool) -> None:
        for each in engines:
            each.shutdown(drain=drain)

    if samples:
        t0 = time.perf_counter()
        try:
            images = [_load(f, codec.max_pixels) for f in samples]
            records = [r for each in engines  # every model's
                       for r in each.warmup(images, quality=args.quality, refine=refining)]
        except BaseException:
            shut_down_engines(drain=False)
            raise
        sizes = sorted({r["coded_size"] for r in records})
        models = f" of {len(engines)} models" if len(engines) > 1 else ""
        print(f"vlmcodec: warmed up {len(records)} shapes{models} ({len(sizes)} coded sizes) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    png_level = DEFAULT_PNG_LEVEL if args.png_level is None else args.png_level  # (PNG responses only)
    try:
        server = CodecServer(engines, args.host, args.port, max_body=max(1, int(args.max_body_mb * 2**20)),
                             png_level=png_level, quiet=args.quiet, quality=args.quality,
                             max_connections=args.max_connections, ssl_context=ssl_context, auth_token=token_file.tokens,
                             rate_limit=args.rate_limit, rate_burst=args.rate_burst, client_limits=token_file.limits,
                             log_format=args.log_format, max_refine=args.max_refine,
                             trusted_proxies=args.trusted_proxy, client_priorities=token_file.priorities,
                             client_max_refine=token_file.max_refine, max_refine_pixels=args.max_refine_pixels,
                             refine_cost=args.refine_cost, idle_timeout=args.idle_timeout,
                             header_timeout=args.header_timeout)
    except (OSError, ConfigError) as e:
        shut_down_engines(drain=False)
        if isinstance(e, ConfigError):
            raise
        raise VlmcodecError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    # SIGTERM (a container stopping) ends the loop as Ctrl-C does: answer what is in flight, then exit
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
        if hasattr(signal, "SIGHUP"):  # always: its default action would kill the server, requests in flight too
            signal.signal(signal.SIGHUP, lambda *_: _reload_security(server, args))
    from .runtime.forwarded import trust_warning

    for warning in (_exposure_warning(args.host, bool(token_file.tokens), bool(ssl_context)),
                    trust_warning(server.trusted_proxies)):
        if warning:
            print(f"vlmcodec: warning: {warning}", file=sys.stderr, flush=True)
    also = f" (and {', '.join(map(_model_label, others))} for their streams)" if others else ""
    limiter = server.rate_limiter
    limit = f", {limiter.rate:g} requests/s per client, burst {limiter.burst}" if limiter.limit else ""
    if server.client_limits:
        limit += f", {len(server.client_limits)} client(s) with a limit of their own"
    if server.client_priorities:
        limit += f", {len(server.client_priorities)} client(s) with a priority of their own"
    if server.trusted_proxies:
        limit += f", clients forwarded by {', '.join(map(str, server.trusted_proxies))}"
    if server.client_max_refine:
        limit += f", {len(server.client_max_refine)} client(s) with a refine cap of their own"
    if server.max_refine:
        limit += f", refine up to {server.max_refine} steps on {args.refine_workers} worker(s)"
    limit += _refine_settings(codec, "refinement's ")
    if server.refine_cost:
        limit += f", a refinement step counts as {server.refine_cost:g} requests"
    print(f"vlmcodec: serving model {_model_label(codec)}{also} ({args.backend} backend{limit}) on {server.url}: "
          "POST /encode, /decode; GET /health, /stats, /metrics (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        shut_down_engines(drain=True)
    print("vlmcodec: server stopped", file=sys.stderr)
    return 0


def _model_label(codec: "Codec") -> str:
    """A served model's fingerprint, and the one its streams carry where it shares another's decoder."""
    own = codec.fingerprint.hex()
    if codec.stream_fingerprint == codec.fingerprint:
        return own
    return f"{own} (writing streams that carry {codec.stream_fingerprint.hex()})"


def _model_info(f: Path, as_json: bool) -> None:
    """``vlmcodec info MODEL.safetensors``: the model file's fingerprint, streams, architecture,
    parameters and training (ConfigError for a file that is no model)."""
    import json

    from .models.checkpoint import describe_model

    d = describe_model(f)
    if as_json:
        # "stream_model" (16 hex digits) in every kind's object: the fingerprint its streams carry
        print(json.dumps({"file": d["file"], "kind": "model", **d, "stream_model": d["stream_fingerprint"][:16]}),
              flush=True)
        return
    c = d["config"]
    shares = "" if d["stream_fingerprint"] == d["fingerprint"] else "  (shares that model's decoder)"
    width = f", g_a {c['N_a']}" if c.get("N_a") else ""
    levels = ", ".join(f"{v:g}" for v in c["lmbdas"])
    stages = " → ".join(f"{st['fingerprint'] or '?'}" + (f" ({st['train_steps']} steps)" if st.get("train_steps") else "")
                        for st in d["lineage"])
    print(f"{f}:\n  model file      {d['bytes']} bytes, {'/'.join(d['dtypes'])}\n  fingerprint     {d['fingerprint']}\n"
          f"  streams carry   {d['stream_fingerprint'][:16]}{shares}\n"
          f"  architecture    {c['arch']}, N {c['N']}, M {c['M']}{width}, pre-editor {bool(c.get('pre_editor'))}\n"
          f"  quality levels  {c['num_levels']} (λ {levels})\n"
          f"  parameters      encoder {d['parameters']['encoder']:,}, decoder {d['parameters']['decoder']:,}\n"
          f"  trained         {d['train_steps'] if d['train_steps'] is not None else '?'} steps"
          + (f" (weights: the {d['train_weights']})" if d.get("train_weights") else "") + (f", from {stages}" if stages else ""))


def _info_kind(f: Path) -> str:
    """What ``info`` reads ``f`` as: its suffix's kind, or for a name without a known one (a model
    file written as "-o model"), the kind its first bytes say (it was read as a stream: "bad magic")."""
    suffix = f.suffix.lower()
    if suffix in (".vlmc", ".safetensors", ".vlmd") or f is STDIN or _is_pipe(f):
        return suffix
    try:
        with open(f, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return suffix  # (its error comes where it is read)
    from vlmcodec.export.c_decoder import MAGIC as DECODER_MODEL_MAGIC

    if head.startswith(DECODER_MODEL_MAGIC):
        return ".vlmd"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return ".safetensors"  # (a safetensors file: its header's length, then its JSON)
    return suffix


def _why_no_encoder(d: dict) -> str:
    """``info``'s reason a decoder-model file has no encoder: written with --decode-only (version
    2 is what it writes), or by an exporter before version 3."""
    if d["format_version"] == 2 and d["writes_streams"]:
        return "no (exported with --decode-only: export without it to encode)"
    return "no (before version 3: re-export it)"


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
    from .bitstream import container

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


def cmd_info(args) -> int:
    from .bitstream import container

    files = expand_inputs(args.inputs, {".vlmc", ".safetensors", ".vlmd"}, per_file=True)
    _refuse_terminal_stdin(files)
    failures = _Failures(len(files), sys.stdout if args.json else None)
    for f in files:
        kind = _info_kind(f)
        if kind == ".vlmd":  # the C decoder's model file (export --format c-decoder)
            from vlmcodec.export.c_decoder import describe_decoder_model

            try:
                d = describe_decoder_model(f)
            except (ConfigError, OSError) as e:
                failures.add(f, e)
                continue
            if args.json:
                import json

                print(json.dumps({"file": str(f), "kind": "decoder-model", **d, "stream_model": d["streams_carry"]}),
                      flush=True)
            else:
                print(f"{f}: decoder-model file of the C decoder (kernels/decoder/vlmc_decoder.h)\n"
                      f"  format version  {d['format_version']}\n  model           {d['model']}\n"
                      f"  streams carry   {d['streams_carry']}\n  N, M, levels    {d['N']}, {d['M']}, {d['levels']}\n"
                      f"  writes streams  {'yes' if d['writes_streams'] else 'no (version 1: re-export it)'}\n"
                      f"  encodes images  {'yes' if d['encodes_images'] else _why_no_encoder(d)}\n"
                      f"  bytes           {d['bytes']}")
            continue
        if kind == ".safetensors":
            try:
                _model_info(f, args.json)
            except (ConfigError, ModelNotFoundError, OSError) as e:
                failures.add(f, e)
            continue
        try:
            data = _read_stream(f)
            h, zc, yc = container.unpack(data)
        except _FILE_ERRORS as e:
            failures.add(f, e)
            continue
        payload = sum(map(len, zc)) + sum(map(len, yc))
        if args.json:  # one JSON object per line, one line per stream
            import json

            print(json.dumps({"file": str(f), "kind": "stream", "format_version": h.version,
                              "model": h.fingerprint.hex(), "stream_model": h.fingerprint.hex(),
                              "width": h.width, "height": h.height, "coded_width": h.coded_hw[1],
                              "coded_height": h.coded_hw[0], "quality": h.quality, "pre_edited": h.pre_edited,
                              "z_chunks": len(zc), "y_chunks": len(yc), "bytes": len(data), "payload_bytes": payload,
                              "bpp": 8 * len(data) / (h.width * h.height)}), flush=True)
            continue
        coded = f" (coded at {h.coded_hw[1]}x{h.coded_hw[0]})" if h.rescaled else ""
        print(f"{f}:\n  format version  {h.version}\n  model           {h.fingerprint.hex()}\n"
              f"  size            {h.width}x{h.height}{coded}\n  quality         {h.quality:g}\n"
              f"  pre-edited      {h.pre_edited}\n  chunks          z {len(zc)}, y {len(yc)}\n"
              f"  bytes           {len(data)} (payload {payload}, container {len(data) - payload})\n"
              f"  bpp             {8 * len(data) / (h.width * h.height):.4f}")
    return failures.status()


def cmd_train(args) -> int:
    from .training.trainer import TrainConfig, train

    for flag, value in (("--out-dir", args.out_dir), ("--init-from", args.init_from)):
        if value is not None and not value.strip():  # (an unset shell variable's "": the current folder, or none)
            raise VlmcodecError(f"{flag} is empty: name a {'folder' if flag == '--out-dir' else 'model file'}")

    overrides = merge_overrides(args.set, steps=args.steps, out_dir=args.out_dir, time_limit_s=args.time_limit,
                                init_from=args.init_from)
    cfg = TrainConfig.from_toml(args.config, **overrides)
    train(cfg, progress=not args.quiet)
    return 0


def cmd_convert(args) -> int:
    from .models import checkpoint

    if not args.from_compressai and (args.N is not None or args.M is not None):
        raise VlmcodecError("--N and --M apply to --from-compressai (a model or weights file records its own)")
    if not args.output.strip():
        raise VlmcodecError("-o is empty: name the model file to write (-o FILE.safetensors)")
    if args.output == STDIO:  # (it wrote a file named "-", where encode and decode mean standard output)
        raise VlmcodecError("-o -: convert writes a model file, not standard output; name it (-o FILE.safetensors)")
    if Path(args.output).is_dir():  # (it failed after the reading, with "[Errno 21] Is a directory")
        raise VlmcodecError(f"-o {args.output} is a folder: convert writes one model file; "
                            "name it (-o FILE.safetensors)")
    from .files import file_in_the_way

    in_the_way = file_in_the_way(Path(args.output).parent)
    if in_the_way is not None:  # (it said "[Errno 17] File exists" once the model was converted)
        raise VlmcodecError(f"cannot write -o {args.output}: {in_the_way} is not a folder")
    # an input replaced by the output: a checkpoint by a file of another kind, or the model whose
    # decoder the new one shares (--decodes-as B -o B lost B's encoder)
    for flag in ("from_compressai", "from_weights", "from_model", "from_checkpoint", "decodes_as"):
        source = getattr(args, flag)
        if source and _is_input(Path(args.output), Path(source)):
            raise VlmcodecError(f"{args.output}: the model file would replace its own input "
                                f"(--{flag.replace('_', '-')}); name another with -o")
    old = None  # the model whose decoder the new one shares (--decodes-as), read once
    if args.decodes_as:
        if args.from_compressai or args.from_checkpoint:
            raise VlmcodecError("--decodes-as applies to --from-model and --from-weights")
        old = checkpoint.load_model(args.decodes_as)  # a weights file: "not a vlmcodec model" (no CDF tables)
    shared = old.identity if old else None
    if args.from_weights:
        from .training.weights import weights_to_model_file

        fp = weights_to_model_file(args.from_weights, args.output, decodes_as=old)
    elif args.from_model:
        loaded = checkpoint.load_model(args.from_model)
        if shared is None and loaded.stream_fingerprint != loaded.fingerprint:
            shared = loaded.identity  # keep the decoder it already shares
        extra = {k: v for k, v in loaded.metadata.items() if k not in ("format", "config", "fingerprint")}
        # stored as the file whose decoder it keeps (the decoder digest covers dtypes): an fp16
        # model re-saved as float32 changed its fingerprint and shared no decoder
        dtype = old.dtype if old else loaded.dtype
        fp = checkpoint.save_model(loaded.model, args.output, dtype=dtype, extra_metadata=extra, decodes_as=shared,
                                   require_shared=True)
    elif args.from_checkpoint:
        from .training.trainer import export_checkpoint

        fp = export_checkpoint(args.from_checkpoint, args.output)
    else:
        from .models.convert import convert_compressai

        fp = convert_compressai(args.from_compressai, args.output, N=args.N, M=args.M)
    whose = f"{args.decodes_as}'s decoder" if args.decodes_as else f"the decoder {args.from_model} shares"
    also = f"; its streams carry {shared.stream_fingerprint[:8].hex()} ({whose})" if shared else ""
    print(f"wrote {args.output} (fingerprint {fp[:8].hex()}{also})")
    return 0


def cmd_export(args) -> int:
    from .files import empty_folders_removed, missing_folders

    with empty_folders_removed() as made:  # (a failed or interrupted export left its new -o folder, empty)
        made += missing_folders(Path(args.output))
        return _export(args)


def _export(args) -> int:
    from .codec import default_model_path
    from .models.checkpoint import load_model

    tensorrt_only = [flag for flag, value in (("--fp16", args.fp16), ("--timing-cache", args.timing_cache),
                                              ("--max-batch", args.max_batch), ("--opt-batch", args.opt_batch),
                                              ("--max-size", args.max_size), ("--opt-size", args.opt_size))
                     if value is not None and value is not False]
    if args.format != "tensorrt" and tensorrt_only:
        raise VlmcodecError(f"{', '.join(tensorrt_only)}: for --format tensorrt only")
    if args.format != "c-decoder" and args.decode_only:
        raise VlmcodecError("--decode-only applies to --format c-decoder only")
    onnx_only = [flag for flag, given in (("--opset", args.opset is not None), ("--subpixel", args.subpixel),
                                           ("--no-fold-gdn", args.no_fold_gdn)) if given]
    if args.format != "onnx" and onnx_only:  # (the c-decoder file has no graph; TensorRT's are the defaults)
        raise VlmcodecError(f"{', '.join(onnx_only)}: for --format onnx only")
    if args.opset is None:
        from vlmcodec.export.onnx import DEFAULT_OPSET

        args.opset = DEFAULT_OPSET
    _check_output_folder(args.output, True, "export writes into a folder")  # (an "[Errno 17] File exists")
    if args.format == "onnx":
        from vlmcodec.export.onnx import check_opset

        check_opset(args.opset)  # before the model loads (it failed after, its -o folder made)
    if args.format == "c-decoder":
        from vlmcodec.export.c_decoder import export_c_decoder

        loaded = load_model(args.model or default_model_path())
        path = export_c_decoder(loaded, args.output, 2 if args.decode_only else 3)
        print(f"{path}  {path.stat().st_size:>10} bytes")
        print(f"decoder model of model {loaded.fingerprint[:8].hex()} for the C decoder (kernels/decoder/vlmc_decoder.h); "
              f"it reads streams that carry {loaded.stream_fingerprint[:8].hex()}, writes them from the outputs of "
              "the exported g_a and h_a (vlmc_decoder_write_stream)"
              + ("" if args.decode_only else " and encodes images itself (vlmc_decoder_encode_image)"))
        return 0
    if args.format == "tensorrt":
        from vlmcodec.export.tensorrt import (BuildConfig, build_engines, default_opt_size, import_tensorrt,
                                              parse_size, require_gpu)

        max_batch = 8 if args.max_batch is None else args.max_batch
        opt_batch = 1 if args.opt_batch is None else args.opt_batch
        if opt_batch > max_batch:  # (it was lowered to max_batch without a word)
            raise VlmcodecError(f"--opt-batch {opt_batch} is above the largest batch, {max_batch} (--max-batch)")
        import_tensorrt()  # fail before any work when TensorRT or a GPU is missing
        require_gpu()
        max_size = parse_size(args.max_size or "1024x1024")
        config = BuildConfig(fp16=args.fp16, max_batch=max_batch, opt_batch=opt_batch,
                             max_size=max_size,
                             opt_size=parse_size(args.opt_size) if args.opt_size else default_opt_size(max_size))
        loaded = load_model(args.model or default_model_path())
        manifest = build_engines(loaded, args.output, config, timing_cache=args.timing_cache)
        files = [e["file"] for e in manifest["engines"].values()]
        v = manifest["versions"]
        extra = f" ({manifest['precision']}, TensorRT {v['tensorrt']}, {v['gpu']})"
    else:
        from vlmcodec.export.onnx import export_onnx

        loaded = load_model(args.model or default_model_path())
        manifest = export_onnx(loaded, args.output, opset=args.opset, fold_gdn=not args.no_fold_gdn,
                               subpixel=args.subpixel)
        files = [g["file"] for g in manifest["graphs"].values()]
        extra = f" (opset {manifest['opset']})"
    out = Path(args.output)
    for f in files + ["manifest.json"]:
        print(f"{out / f}  {(out / f).stat().st_size:>10} bytes")
    print(f"exported networks {manifest['network_fingerprint'][:16]} of model {loaded.fingerprint[:8].hex()}{extra}")
    return 0


_positive_int = whole_number_arg(1)


_positive_float = finite_number_arg(0, above=True)


def _body_mib(text: str) -> float:
    """--max-body-mb: a positive number of MiB whose byte count is a number (1e308 overflowed)."""
    value = _positive_float(text)
    if value >= 2**42:
        raise argparse.ArgumentTypeError(f"expected a positive number below {2**42} (MiB), got {text!r}")
    return value


def _png_level(text: str) -> int:
    if text.strip() not in {str(i) for i in range(10)}:
        raise argparse.ArgumentTypeError(f"expected a zlib level 0..9, got {text!r}")
    return int(text)


def _short_side(text: str) -> int | None:
    """``--short-side N``: N >= MIN_SHORT_SIDE, or 0 for the original size (as the API's 0; the same
    as leaving the option out)."""
    from .resample import MIN_SHORT_SIDE, call_short_side

    try:
        return call_short_side(int(text))  # (0: None, as a call's short_side=0)
    except ValueError:  # (not a whole number; ConfigError: below the least)
        raise argparse.ArgumentTypeError(f"expected 0 (the original size) or an integer >= {MIN_SHORT_SIDE}, "
                                         f"got {text!r}") from None


def _checked_argument(parse, check: str, expected: str):
    """An argparse type: ``parse`` the text (else "expected"), then ``vlmcodec.refine.<check>`` it
    (imported on use: the CLI starts without torch)."""
    def convert(text: str):
        from . import refine

        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
        try:
            return getattr(refine, check)(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return convert


_refine_steps = _checked_argument(int, "check_refine_steps", "refine steps must be an integer")
_refine_views = _checked_argument(lambda text: [int(v) for v in text.split(",") if v.strip()],
                                  "check_refine_views", "refine views must be comma-separated integers")


def version_text() -> str:
    """``vlmcodec --version``: read from metadata and the model file's header alone (no torch import)."""
    import platform
    from importlib import metadata

    from safetensors import SafetensorError, safe_open

    from . import __version__, default_model_path
    from .bitstream.container import FORMAT_VERSION

    try:
        with safe_open(str(default_model_path()), framework="numpy") as f:
            model = f.metadata()["fingerprint"][:16]
    except (OSError, SafetensorError, KeyError, TypeError):
        model = "missing or unreadable"
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return (f"vlmcodec {__version__} (bitstream format {FORMAT_VERSION}, default model {model})\n"
            f"Python {platform.python_version()}, torch {torch_version}")


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """vlmcodec's parser, with its serve subcommand's parser beside it (serve --config sets its defaults)."""

    serve_parser: argparse.ArgumentParser


def build_parser() -> _Parser:
    p = _Parser(
        prog="vlmcodec",
        description="Learned image codec for vision-language-model pipelines.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  vlmcodec encode photo.png -q 60 -o photo.vlmc\n"
               "  vlmcodec decode photo.vlmc -o photo.png\n  vlmcodec roundtrip assets/samples -o out/",
    )
    p.add_argument("--version", action=_VersionAction,
                   help="print the version, the bitstream format, the default model's fingerprint and the Python "
                        "and torch versions, then exit")
    # (the subcommands' parsers are plain ones, not _Parser)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser)

    def common(sp, model=True, encodes=True, quiet="no progress bar"):
        if model:
            sp.add_argument("--model", help="model .safetensors (default: the bundled model)")
            sp.add_argument("--backend", default="torch", help="torch | triton | onnxruntime | tensorrt (default torch)")
            sp.add_argument("--backend-option", type=backend_option, action="append", metavar="KEY=VALUE",
                            help="an option of the backend, repeatable (e.g. onnxruntime: allow_spinning=false, "
                                 "optimization=basic; tensorrt: engines=DIR; README, Backends)")
            sp.add_argument("--threads", type=_positive_int, help="CPU threads for networks and entropy decoding")
            sp.add_argument("--hs-device", metavar="DEVICE",
                            help="where the exact entropy parameters (h_s) run: cpu (default) or cuda "
                                 "(bit-identical streams; README, Backends)")
            if encodes:  # (decode has no pre-editor to skip: the option was taken and unused)
                sp.add_argument("--no-pre-edit", action="store_true",
                                help="skip the model's pre-editor when encoding (faster; valid streams, lower quality "
                                     "per bit)")
            sp.add_argument("--max-pixels", type=_positive_int, metavar="N",
                            help="largest image (width x height) to code or decode (default 64000000)")
        sp.add_argument("--quiet", action="store_true", help=quiet)

    def json_lines(sp, fields):
        sp.add_argument("--json", action="store_true",
                        help=f"for scripts: one JSON object per line instead of the table ({fields}; a failed "
                             "input: file, error, type); notes go to standard error")

    def refine_views(sp):
        sp.add_argument("--refine-views", type=_refine_views, metavar="SIDES",
                        help="the teacher views the refinement's token term averages over, comma-separated short "
                             "sides in px (default 224; 224,336 transfers better to other views, ~3x slower)")
        sp.add_argument("--refine-bf16", action="store_true",
                        help="run the refinement's teacher in bfloat16: ~0.8x the time on a CPU with AVX512-BF16, "
                             "~20x on one without bfloat16 instructions (warned), "
                             "the same token similarity per bit as float32 (README), other bytes")

    def refine(sp):
        sp.add_argument("--refine", type=_refine_steps, default=0, metavar="STEPS",
                        help="refine each latent with STEPS optimisation steps before coding (vlmcodec.refine): "
                             "~0.5 s per step on 2 CPU cores at 256 px, better rate-quality, any decoder reads "
                             "the stream (1 already saves ~10 %% of the bits at equal token similarity, 2 ~14 %%, 5 ~22 %%, 30 ~37 %%; "
                             "needs the model's teacher for its token term)")
        refine_views(sp)

    def short_side(sp):
        sp.add_argument("--short-side", type=_short_side, metavar="N",
                        help="code at the consumer's scale: downscale so the shorter side is N px before "
                             "encoding, decode back to the original size (e.g. 256 for a 224-px vision tower; "
                             "0: the original size, as without the option)")

    def budget(sp):
        sp.add_argument("--max-bytes", type=_positive_int, metavar="N",
                        help="rate control: each image at the highest quality whose stream fits in N bytes "
                             "(instead of -q; an image that does not fit even at quality 0 fails)")
        sp.add_argument("--max-bpp", type=_positive_float, metavar="BPP",
                        help="rate control: as --max-bytes, with a budget of BPP bits per pixel of each image")

    def png_level(sp):
        sp.add_argument("--png-level", type=_png_level, metavar="0-9",
                        help=f"zlib level of the decoded PNGs (default {DEFAULT_PNG_LEVEL}: fastest; "
                             "6 is Pillow's default, ~7 %% smaller files, ~4x slower to write)")

    def decoded_format(sp):
        sp.add_argument("--format", choices=list(DECODED_FORMATS),
                        help="format of the decoded images written into a folder, beside their inputs or to "
                             "standard output (default png; ppm is uncompressed, the fastest to write and read)")

    e = sub.add_parser("encode", help="compress images to .vlmc", description="Compress images (files, folders, globs).")
    e.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders, globs, or - (standard input)")
    e.add_argument("-o", "--output", metavar="OUT",
                   help="output file; a folder (OUT/NAME.vlmc) for several inputs, a folder or glob input, an "
                        "existing folder or a name ending in / (even for one input); or - (standard output). "
                        "Without -o each stream goes beside its input (NAME.vlmc)")
    e.add_argument("-q", "--quality", type=float, help="quality 0..100, 0 = smallest files (default 75)")
    budget(e)
    e.add_argument("--no-psnr", action="store_true", help="skip the verification decode (no PSNR)")
    short_side(e)
    refine(e)
    json_lines(e, "per image: file, output, width, height, bytes, bpp, quality, psnr_db, encode_ms, decode_ms")
    common(e)
    r = sub.add_parser("roundtrip", help="encode, decode, and report bpp / PSNR / time",
                       description="Encode and decode images; writes .vlmc and decoded .png files (--format).")
    r.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders, globs")
    r.add_argument("-o", "--output", metavar="DIR", default="out",
                   help="folder for the .vlmc streams and the decoded images, even for one input (default out)")
    r.add_argument("-q", "--quality", type=float, help="quality 0..100 (default 75)")
    budget(r)
    short_side(r)
    refine(r)
    png_level(r)
    decoded_format(r)
    json_lines(r, "per image: encode's and decoded, the image written")
    common(r)
    d = sub.add_parser("decode", help="decompress .vlmc to PNG")
    d.add_argument("inputs", nargs="+", metavar="IN", help=".vlmc files, folders, globs, or - (standard input)")
    d.add_argument("-o", "--output", metavar="OUT",
                   help="output file (its suffix picks the format: .png, .ppm/.pnm, .bmp, .tif/.tiff, .webp "
                        "(lossless) or .jpg/.jpeg (quality 95, 4:4:4); another is refused); a folder for "
                        "several inputs, a folder or glob input, an existing folder or a name ending in /; or - "
                        "(standard output; PNG unless --format). Without -o each image goes beside its stream")
    png_level(d)
    decoded_format(d)
    d.add_argument("--extra-model", action="append", metavar="MODEL",
                   help="another model file (repeatable): each stream is decoded by the model that wrote it")
    d.add_argument("--short-side", type=_short_side, metavar="N", dest="decode_short_side",
                   help="decode at the size a consumer of N px sees (shorter side N, never above the original) "
                        "instead of the original size: one resize from the reconstruction, smaller files (0: the "
                        "original size, as without the option)")
    json_lines(d, "per stream: file, output, width, height, bytes, decode_ms")
    d.add_argument("--force", action="store_true",
                   help="without -o, replace an existing image beside its stream (refused otherwise: it may be "
                        "the original the stream was encoded from)")
    common(d, encodes=False)
    v = sub.add_parser("serve", help="serve encode/decode over HTTP (batched by the runtime Engine)",
                       description="An HTTP server: POST /encode?quality=Q or ?max_bytes=N (body: an image file, "
                                   "or raw RGB with &width=W&height=H) → .vlmc, POST /decode?format=png|ppm|raw (body: a .vlmc "
                                   "stream) → the image, GET /health, /stats, /metrics. Concurrent requests are "
                                   "batched. SIGTERM stops it after answering what is in flight; SIGHUP reloads "
                                   "the TLS and token files.")
    v.add_argument("--config", metavar="FILE",
                   help="a TOML file of these options (keys as the flags, without '--': port = 8443, "
                        "trusted-proxy = [\"10.0.0.0/8\"], quiet = true); flags given here override it")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all; an IPv6 address such as ::1, or :: for all)")
    v.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free one)")
    v.add_argument("--max-batch", type=_positive_int, default=8, help="largest batch (default 8)")
    v.add_argument("--max-delay-ms", type=float, metavar="MS",
                   help="longest wait to fill a batch (default: 0 on the CPU backends, which run a batch's items "
                        "one at a time, so that a wait saves nothing; 5 on backends that run whole batches)")
    v.add_argument("--network-workers", type=_positive_int, default=1, help="threads running networks (default 1)")
    v.add_argument("--max-queue", type=_positive_int, default=256,
                   help="requests in flight before answering 503 (default 256)")
    v.add_argument("--extra-model", action="append", metavar="MODEL",
                   help="another model file to hold (repeatable): /decode takes each stream to the model that "
                        "wrote it, /encode?model=FINGERPRINT encodes with it; --model stays the default")
    v.add_argument("--max-connections", type=_positive_int, default=128,
                   help="open connections (a thread each) before answering 503 to new ones (default 128)")
    v.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="answer 504 to a request queued longer (default: none; set it below your clients' own timeout)")
    v.add_argument("--idle-timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                   help="close a connection silent this long (keep-alive; 408 if a body was due; default 60)")
    v.add_argument("--header-timeout", type=_positive_float, default=30.0, metavar="SECONDS",
                   help="a request's line and headers must arrive within this long of its first byte, its body "
                        "within this plus its length at 64 KiB/s (slow clients cannot hold connections; default 30)")
    v.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate (chain); needs --tls-key")
    v.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    v.add_argument("--tls-client-ca", metavar="PEM",
                   help="mutual TLS: accept only clients whose certificate this CA (bundle) signed")
    v.add_argument("--auth-token-file", metavar="FILE",
                   help="every request but /health must carry 'Authorization: Bearer <a token of the file>': "
                        "one a line, as TOKEN or NAME TOKEN (the client's name, logged and counted in /stats), "
                        "then optionally the client's own rate=R burst=B or rate=unlimited, priority=P and refine=N; "
                        "# comments; a file, not an argument, so that no token shows in the process list")
    v.add_argument("--rate-limit", type=float, metavar="PER_SECOND",
                   help="per client (its token's name, else its IP address): /encode and /decode requests a "
                        "second, over which it is answered 429 with Retry-After (default: no limit)")
    v.add_argument("--rate-burst", type=_positive_int, metavar="N",
                   help="requests a client may send at once under --rate-limit (default: one second's worth)")
    v.add_argument("--trusted-proxy", action="append", metavar="ADDRESS",
                   help="a reverse proxy's address or network (e.g. 10.0.0.0/8; repeatable) whose X-Forwarded-For "
                        "names the client, for --rate-limit and the access log (default: the header is never read)")
    v.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="the access log on stderr: text lines (default) or one JSON object a line (time, remote, "
                        "method, path, status, bytes, ms, request_id, client)")
    v.add_argument("--max-refine", type=_refine_steps, default=0, metavar="STEPS",
                   help="allow /encode?refine=K, K <= STEPS steps of latent refinement (slower, better encodes "
                        "on their own worker threads; default 0: refused)")
    v.add_argument("--max-refine-pixels", type=_positive_int, default=2**20, metavar="N",
                   help="largest coded size (pixels, after any short_side) of a refined encode; larger ones are "
                        "answered 413 (default 1048576: 13 s at 10 steps on 2 CPU cores)")
    v.add_argument("--refine-workers", type=_positive_int, default=1, metavar="N",
                   help="threads running refined encodes, beside the network workers (default 1)")
    v.add_argument("--refine-cost", type=float, default=0.0, metavar="C",
                   help="under --rate-limit, an /encode?refine=K counts as 1 + C*K requests (e.g. 0.1: ten "
                        "steps count as two; default 0: as one request)")
    refine_views(v)
    v.add_argument("--max-body-mb", type=_body_mib, default=64.0, help="largest request body in MiB (default 64)")
    v.add_argument("--warmup", nargs="+", action="extend", metavar="IMAGE",
                   help="before listening, run every batch shape of these sample images' sizes (Engine.warmup), "
                        "so that no request pays a first run; one sample per image size the traffic will have")
    v.add_argument("-q", "--quality", type=float, default=DEFAULT_QUALITY,
                   help="quality of an /encode request that gives none, and of the warm-up (default 75)")
    png_level(v)
    short_side(v)
    common(v, quiet="no access log (a line per request on standard error otherwise)")
    i = sub.add_parser("info", help="print .vlmc header fields, or what a model file is")
    i.add_argument("inputs", nargs="+", metavar="FILE",
                   help=".vlmc streams, model files (.safetensors, .vlmd), folders, globs, or - (standard input: "
                        "a stream)")
    i.add_argument("--json", action="store_true", help="one JSON object per file and line (for scripts)")
    t = sub.add_parser("train", help="train a model (resumable)")
    t.add_argument("--config", required=True, metavar="FILE",
                   help="the run's TOML config (configs/*.toml; keys: vlmcodec.training.trainer.TrainConfig)")
    t.add_argument("--steps", type=int, help="training steps in all (overrides the config's steps)")
    t.add_argument("--out-dir", metavar="DIR",
                   help="where the checkpoint, logs and model file go (overrides the config's out_dir; a run "
                        "there resumes)")
    t.add_argument("--init-from", metavar="MODEL", help="start from this model file (overrides the config)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one config key (repeatable), e.g. --set pre_editor=false --set w_tok=0")
    t.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="stop cleanly after this much training time, counted from the first step (start-up "
                        "aside; checkpoint + model file); rerun to resume; 0: no limit")
    common(t, model=False)
    c = sub.add_parser("convert", help="make a model file from a CompressAI checkpoint, a weights file or a model file")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--from-compressai", metavar="CKPT", help="a CompressAI MeanScaleHyperprior checkpoint")
    src.add_argument("--from-weights", metavar="FILE",
                     help="a weights-only file written by training without the C++ extension (e.g. on a GPU machine)")
    src.add_argument("--from-model", metavar="FILE", help="a model file, written again (with --decodes-as)")
    src.add_argument("--from-checkpoint", metavar="LAST_PT",
                     help="a training run's checkpoint (OUT_DIR/last.pt; its weight average where it keeps one): "
                          "the model of a run stopped before its end")
    c.add_argument("--decodes-as", metavar="MODEL",
                   help="the model whose decoder this one shares, bit for bit (an encoder-only fine-tune): its "
                        "streams then carry that model's fingerprint, so that model's decoders read them; an "
                        "error if the decoders differ (with --from-weights: beyond the fp16 rounding of a weights "
                        "file, which the model's own decoder tensors then replace)")
    c.add_argument("-o", "--output", required=True, metavar="FILE", help="the model file to write (.safetensors)")
    c.add_argument("--N", type=int, help="override N (default: read from the weights' shapes)")
    c.add_argument("--M", type=int, help="override M (default: read from the weights' shapes)")
    x = sub.add_parser("export", help="export the networks as ONNX graphs or TensorRT engines, or the C decoder's "
                                      "model file",
                       description="Write g_a, h_a, h_s, g_s as ONNX graphs (dynamic batch and size), or build "
                                   "TensorRT engines from them, with a manifest.json beside them; --format c-decoder "
                                   "writes DIR/decoder_model.vlmd, what the C stream decoder "
                                   "(kernels/decoder/vlmc_decoder.h) reads, and writes streams and encodes images with.")
    x.add_argument("--format", required=True, choices=("onnx", "tensorrt", "c-decoder"),
                   help="onnx graphs, tensorrt engines (a CUDA GPU and TensorRT), or the C library's model file")
    x.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="the folder written (with manifest.json; c-decoder: decoder_model.vlmd)")
    x.add_argument("--model", help="model .safetensors (default: the bundled model)")
    x.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    x.add_argument("--subpixel", action="store_true",
                   help="transposed convs as 3x3 conv + DepthToSpace (the torch backend's rewrite)")
    x.add_argument("--no-fold-gdn", action="store_true", help="keep GDN's re-parametrisation ops in the graphs")
    x.add_argument("--fp16", action="store_true", help="TensorRT: FP16 engines (GDN kept in FP32)")
    # (defaults None: given with another format they are refused, not silently unused)
    x.add_argument("--max-batch", type=_positive_int, help="TensorRT profile: largest batch (default 8)")
    x.add_argument("--opt-batch", type=_positive_int, help="TensorRT profile: batch to optimise for (default 1)")
    x.add_argument("--max-size", metavar="HxW", help="TensorRT profile: largest padded image size (default 1024x1024)")
    x.add_argument("--opt-size", metavar="HxW", help="TensorRT profile: size to optimise for (default 512x768, limited to --max-size)")
    x.add_argument("--timing-cache", metavar="FILE", help="TensorRT timing cache to reuse and update")
    x.add_argument("--decode-only", action="store_true",
                   help="c-decoder: leave the encoder's networks out (file version 2: it decodes and writes streams "
                        "from given latents but does not encode images; a smaller file, a faster open)")
    from vlmcodec.bench.cli import add_bench_subparsers  # the bench group owns its subcommands

    add_bench_subparsers(sub)
    p.serve_parser = v  # serve --config sets its defaults (apply_serve_config)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    """vlmcodec's own warnings as one plain line (no source location); others as Python shows them."""
    if issubclass(category, VlmcodecWarning):
        _emit(f"vlmcodec: warning: {message}", sys.stderr)
    else:
        _default(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def _escaped_names():
    """Print what the standard streams' encoding cannot write (a file name's bytes that are not
    UTF-8, held as surrogates) escaped, "a\\udcff.png", where a strict stream (an en_US.UTF-8
    locale's) stopped the run at that name; a stream's own handler other than "strict" (the C
    locale's surrogateescape writes the name's bytes back) is kept. Given back at the end."""
    changed = []
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError):  # (a closed stream)
                stream.reconfigure(errors="backslashreplace")
                changed.append(stream)
    try:
        yield
    finally:
        for stream in changed:
            with contextlib.suppress(ValueError, OSError):
                stream.reconfigure(errors="strict")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C's KeyboardInterrupt is: the command's clean-ups run (temporary
    files and folders, the ONNX cache's export) and it exits 143."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``kill``, ``timeout``, a container stopping) ends a command as Ctrl-C does, where
    its default action killed the process on the spot and left temporary folders (an ONNX
    export's, in the cache or in export's -o folder) that no later run removed. ``serve`` too,
    while it starts (its graph cache's export); listening, it has its own handler (it answers what
    is in flight); a handler an embedding program set is kept."""
    import signal

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def terminated(*_):
        raise _Terminated

    signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main(argv: list[str] | None = None) -> int:
    with warnings.catch_warnings(), _escaped_names(), _terminate_as_interrupt():
        warnings.showwarning = _show_warning
        # Pillow's "decompression bomb" notice (images of 89-179 Mpx): max_pixels decides here,
        # with its own clear error, before any pixel is decoded
        warnings.filterwarnings("ignore", message=".*could be decompression bomb")
        return _main(argv)


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """The command line's arguments (``serve --config FILE``: the file's options under them)."""
    parser = build_parser()
    if argv[:1] == ["serve"]:
        apply_serve_config(parser.serve_parser, argv[1:])
    return parser.parse_args(argv)


def apply_serve_config(serve_parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """``serve --config FILE``: each key of the TOML file (a flag's name without ``--``; ``-`` or
    ``_``) becomes that option's default, converted and checked as the flag's text would be, so
    that the flags given on the command line override it (a repeatable one adds to the file's
    list). ConfigError names an unreadable file, an unknown key or a bad value."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    path = pre.parse_known_args(argv)[0].config
    if not path:
        return
    import tomllib

    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read --config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path} is not valid TOML: {e}") from None
    actions = {a.dest: a for a in serve_parser._actions if a.option_strings and a.dest not in ("help", "config")}
    defaults: dict[str, object] = {}
    keys: dict[str, str] = {}
    for key, value in table.items():
        action = actions.get(key.replace("-", "_"))
        if action is None:
            known = ", ".join(sorted(d.replace("_", "-") for d in actions))
            raise ConfigError(f"--config {path}: unknown option {key!r} (serve's options: {known})")
        if action.dest in keys:  # TOML refuses a key twice, not rate-limit beside rate_limit
            raise ConfigError(f"--config {path}: {keys[action.dest]!r} and {key!r} are one option")
        keys[action.dest] = key
        defaults[action.dest] = _config_value(action, value, f"--config {path}: {key}")
    serve_parser.set_defaults(**defaults)


def _config_value(action: argparse.Action, value, where: str):
    """A config file's value for ``action``, as its flag's text would give it."""
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    many = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*")
    if many:
        values = value if isinstance(value, list) else [value]
        return [_config_item(action, v, where) for v in values]
    if isinstance(value, (list, dict)):
        raise ConfigError(f"{where} takes one value, got {value!r}")
    return _config_item(action, value, where)


def _config_item(action: argparse.Action, value, where: str):
    # what int and float take, said as such ("invalid literal for int() with base 10")
    kind = {int: "a whole number", float: "a number"}.get(action.type)  # type: ignore[call-overload]
    if isinstance(value, (list, dict)) or (isinstance(value, bool) and action.type is not None):
        raise ConfigError(f"{where} must be {kind or 'what its flag takes (a number or text)'}, got {value!r}")
    text = value if isinstance(value, str) else str(value)
    assert action.type is None or callable(action.type)  # (no serve option names its type as a string)
    try:
        out = action.type(text) if action.type is not None else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
        raise ConfigError(f"{where} must be {kind}, got {value!r}" if kind else f"{where}: {e}") from None
    if action.choices is not None and out not in action.choices:
        raise ConfigError(f"{where} must be one of {sorted(action.choices)}, got {value!r}")
    return out


def _refuse_empty_paths(args) -> None:
    """An empty -o or --model (what an unset shell variable gives) is refused: -o "" wrote into
    the current folder, past decode's guard of an original image beside its stream, and --model ""
    meant the bundled model."""
    for name, flag in (("output", "-o"), ("model", "--model")):
        if args.command == "convert" and name == "output":  # (its own message names the file to write)
            continue
        value = getattr(args, name, None)
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{flag} takes a path, got an empty one")


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = None if argv[:1] == ["bench"] and len(argv) >= 2 else parse_cli(argv)
    except VlmcodecError as e:
        print(f"vlmcodec: error: {e}", file=sys.stderr)
        return 2
    try:
        if args is None:
            from vlmcodec.bench.cli import run_passthrough

            code = run_passthrough(argv)
            if code is not None:
                return code
            args = build_parser().parse_args(argv)
        args.argv = argv  # (what was run: a bench records it; sys.argv is a host script's, or lacks "bench")
        _refuse_empty_paths(args)
        if args.command == "encode":
            return cmd_encode(args)
        if args.command == "roundtrip":
            return cmd_encode(args, roundtrip=True)
        if args.command == "decode":
            return cmd_decode(args)
        if args.command == "info":
            return cmd_info(args)
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "train":
            return cmd_train(args)
        if args.command == "convert":
            return cmd_convert(args)
        if args.command == "bench":
            from vlmcodec.bench.cli import dispatch

            return dispatch(args)
        if args.command == "export":
            return cmd_export(args)
    except VlmcodecError as e:
        print(f"vlmcodec: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed by the reader (`| head`): stop quietly, as cat does
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        return 141
    except (OSError, ValueError) as e:
        print(f"vlmcodec: error: {e}", file=sys.stderr)
        return 2
    except _Terminated:
        print("vlmcodec: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("vlmcodec: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
