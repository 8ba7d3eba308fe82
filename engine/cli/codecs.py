"""The Codec objects a command's options describe (--model, --extra-model, --backend, --refine ...)."""

from __future__ import annotations

import warnings

from ..errors import BitstreamError, ConfigError, VlmcodecWarning


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
    from ..codec import Codec

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
    from ..codec_set import CodecSet

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
