"""The ``vlmcodec`` argument parser: its subcommands, their options and the options' types."""

from __future__ import annotations

import argparse

from ..checks import DEFAULT_QUALITY, finite_number_arg, whole_number_arg
from ..console import backend_option
from .paths import DECODED_FORMATS, DEFAULT_PNG_LEVEL


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
    from ..resample import MIN_SHORT_SIDE, call_short_side

    try:
        return call_short_side(int(text))  # (0: None, as a call's short_side=0)
    except ValueError:  # (not a whole number; ConfigError: below the least)
        raise argparse.ArgumentTypeError(f"expected 0 (the original size) or an integer >= {MIN_SHORT_SIDE}, "
                                         f"got {text!r}") from None


def _checked_argument(parse, check: str, expected: str):
    """An argparse type: ``parse`` the text (else "expected"), then ``vlmcodec.refine.<check>`` it
    (imported on use: the CLI starts without torch)."""
    def convert(text: str):
        from .. import refine

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

    from .. import __version__, default_model_path
    from ..bitstream.container import FORMAT_VERSION

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
    v.add_argument("--max-connections-per-address", type=_positive_int, metavar="N",
                   help="open connections from one address before answering 503 to its new ones (default: no "
                        "bound of its own; a --trusted-proxy's connections are not counted)")
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
    from vlmcodec.bench.cli import (
        add_bench_subparsers,  # the bench group owns its subcommands
    )

    add_bench_subparsers(sub)
    p.serve_parser = v  # serve --config sets its defaults (apply_serve_config)
    return p
