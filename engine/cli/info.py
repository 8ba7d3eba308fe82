"""``vlmcodec info``: a stream's header, a model file's or a C decoder-model file's description."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError, ModelNotFoundError
from .paths import STDIN, _is_pipe, _read_stream, _refuse_terminal_stdin, expand_inputs
from .report import _FILE_ERRORS, _Failures


def _model_info(f: Path, as_json: bool) -> None:
    """``vlmcodec info MODEL.safetensors``: the model file's fingerprint, streams, architecture,
    parameters and training (ConfigError for a file that is no model)."""
    import json

    from ..models.checkpoint import describe_model

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


def cmd_info(args) -> int:
    from ..bitstream import container

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
