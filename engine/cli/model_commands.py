"""``vlmcodec train``, ``convert`` and ``export``: the commands that write model files or exported networks."""

from __future__ import annotations

from pathlib import Path

from ..errors import VlmcodecError
from ..training.overrides import merge_overrides
from .paths import STDIO, _check_output_folder, _is_input


def cmd_train(args) -> int:
    from ..training.trainer import TrainConfig, train

    for flag, value in (("--out-dir", args.out_dir), ("--init-from", args.init_from)):
        if value is not None and not value.strip():  # (an unset shell variable's "": the current folder, or none)
            raise VlmcodecError(f"{flag} is empty: name a {'folder' if flag == '--out-dir' else 'model file'}")

    overrides = merge_overrides(args.set, steps=args.steps, out_dir=args.out_dir, time_limit_s=args.time_limit,
                                init_from=args.init_from)
    cfg = TrainConfig.from_toml(args.config, **overrides)
    train(cfg, progress=not args.quiet)
    return 0


def cmd_convert(args) -> int:
    from ..models import checkpoint

    if not args.from_compressai and (args.N is not None or args.M is not None):
        raise VlmcodecError("--N and --M apply to --from-compressai (a model or weights file records its own)")
    if not args.output.strip():
        raise VlmcodecError("-o is empty: name the model file to write (-o FILE.safetensors)")
    if args.output == STDIO:  # (it wrote a file named "-", where encode and decode mean standard output)
        raise VlmcodecError("-o -: convert writes a model file, not standard output; name it (-o FILE.safetensors)")
    if Path(args.output).is_dir():  # (it failed after the reading, with "[Errno 21] Is a directory")
        raise VlmcodecError(f"-o {args.output} is a folder: convert writes one model file; "
                            "name it (-o FILE.safetensors)")
    from ..files import file_in_the_way

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
        from ..training.weights import weights_to_model_file

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
        from ..training.trainer import export_checkpoint

        fp = export_checkpoint(args.from_checkpoint, args.output)
    else:
        from ..models.convert import convert_compressai

        fp = convert_compressai(args.from_compressai, args.output, N=args.N, M=args.M)
    whose = f"{args.decodes_as}'s decoder" if args.decodes_as else f"the decoder {args.from_model} shares"
    also = f"; its streams carry {shared.stream_fingerprint[:8].hex()} ({whose})" if shared else ""
    print(f"wrote {args.output} (fingerprint {fp[:8].hex()}{also})")
    return 0


def cmd_export(args) -> int:
    from ..files import empty_folders_removed, missing_folders

    with empty_folders_removed() as made:  # (a failed or interrupted export left its new -o folder, empty)
        made += missing_folders(Path(args.output))
        return _export(args)


def _export(args) -> int:
    from ..codec import default_model_path
    from ..models.checkpoint import load_model

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
        from vlmcodec.export.tensorrt import (
            BuildConfig,
            build_engines,
            default_opt_size,
            import_tensorrt,
            parse_size,
            require_gpu,
        )

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
