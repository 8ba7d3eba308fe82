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

Here: ``main`` and what every command shares (errors, warnings, signals). Beside it: ``parser``
(the options), ``paths`` (inputs and outputs), ``report`` (tables, JSON rows, per-file errors),
``codecs`` (the Codec the options describe), ``coding`` (encode, roundtrip, decode), ``info``,
``serve``, ``model_commands`` (train, convert, export).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import threading
import warnings
from collections.abc import Callable

from ..errors import ConfigError, VlmcodecError, VlmcodecWarning
from .coding import cmd_decode, cmd_encode
from .info import cmd_info
from .model_commands import cmd_convert, cmd_export, cmd_train
from .parser import build_parser, version_text
from .paths import IMAGE_SUFFIXES, expand_inputs
from .report import _emit
from .serve import apply_serve_config, cmd_serve

__all__ = ["IMAGE_SUFFIXES", "apply_serve_config", "build_parser", "expand_inputs", "main", "parse_cli", "version_text"]


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
        if args.command == "bench":
            from vlmcodec.bench.cli import dispatch

            return dispatch(args)
        # (looked up at each call: a test or an embedding program may replace one)
        commands: dict[str, Callable[[argparse.Namespace], int]] = {
            "encode": cmd_encode, "roundtrip": functools.partial(cmd_encode, roundtrip=True), "decode": cmd_decode,
            "info": cmd_info, "serve": cmd_serve, "train": cmd_train, "convert": cmd_convert, "export": cmd_export}
        return commands[args.command](args)
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
