"""``vlmcodec encode``, ``roundtrip`` and ``decode``."""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

from ..checks import DEFAULT_QUALITY
from ..errors import ConfigError, VlmcodecError
from .codecs import _codec, _codec_for, _codec_set, _distinct_models, _refine_settings
from .paths import (DECODED_FORMATS, DEFAULT_PNG_LEVEL, IMAGE_SUFFIXES, STDIN, STDIO, _check_output_folder,
                    _check_outputs, _check_stdio, _expand_inputs, _is_input, _is_stdout, _load, _make_folders,
                    _output_name, _read_stream, _write_stdout)
from .report import _FILE_ERRORS, _cell, _emit, _emit_json, _Failures, _progress


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
    from ..bitstream import container

    return container.unpack(data)[0].quality


def cmd_encode(args, roundtrip: bool = False) -> int:
    from ..files import empty_folders_removed

    with empty_folders_removed() as made:
        return _encode_files(args, roundtrip, made)


def _encode_files(args, roundtrip: bool, made: list[Path]) -> int:
    from ..file_pipeline import WriteBehind, read_ahead
    from ..files import write_whole
    from ..image_io import psnr, save_image

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


def cmd_decode(args) -> int:
    from ..files import empty_folders_removed

    with empty_folders_removed() as made:
        return _decode_files(args, made)


def _decode_files(args, made: list[Path]) -> int:
    from ..file_pipeline import WriteBehind
    from ..image_io import image_bytes, save_image, written_format

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
    from .. import resample
    from ..bitstream import container
    from ..image_io import FORMAT_MAX_SIDE, check_format_size

    if fmt.upper() not in FORMAT_MAX_SIDE:  # (no header parsed twice where any size is written)
        return
    header = container.read_header(data)  # (its payload is verified as it is decoded)
    h, w = resample.coded_size(header.height, header.width, resample.call_short_side(short_side))
    check_format_size(fmt, w, h)
