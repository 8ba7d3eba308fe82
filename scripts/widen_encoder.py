"""A model file whose g_a is wider, computing what the original's does (``vlmcodec.models.widen``),
to start an encoder-side training run from (``N_a`` in the training config; ``train_only`` the
encoder's parts keeps the decoder, and so every stream's decoding, as it was).

    python scripts/widen_encoder.py engine/weights/default.safetensors 128 -o runs/wide128_init.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a vlmcodec model file")
    p.add_argument("width", type=int, help="g_a's new width (channels)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--init-scale", type=float, default=1.0, help="new weights: this × the default initialisation")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    from vlmcodec.errors import VlmcodecError

    try:
        print(widen(a.model, a.width, a.output, a.init_scale, a.seed))
    except VlmcodecError as e:  # a bad argument or model file: one line, not a traceback
        print(f"widen_encoder: error: {e}", file=sys.stderr)
        return 2
    return 0


def widen(model: str, width: int, output: str, init_scale: float = 1.0, seed: int = 0) -> str:
    """Write the widened model; returns what to say about it."""
    from vlmcodec.models.checkpoint import load_model, save_model, stream_identity_of
    from vlmcodec.models.widen import widen_analysis
    from vlmcodec.training.weights import lineage_of

    src = load_model(model)
    wide = widen_analysis(src.model, width, init_scale, seed)
    meta = {"train_lineage": json.dumps(lineage_of(src.metadata, model))}
    if "train_recipe" in src.metadata:  # refinement and evaluation read the recipe from the file
        meta["train_recipe"] = src.metadata["train_recipe"]
    # in the source's dtype: the decoder digest covers dtypes (an fp16 model saved as float32 shares nothing)
    fp = save_model(wide, output, dtype=src.dtype, extra_metadata=meta, decodes_as=src.identity)
    carried = stream_identity_of(output).stream_fingerprint  # (as the file records it; no network made)
    dtype = str(src.dtype).removeprefix("torch.")
    head = (f"{output}: g_a {src.model.config.analysis_width} → {width} channels ({dtype}), "
            f"fingerprint {fp.hex()[:16]}; ")
    if carried == src.stream_fingerprint:
        return head + f"its streams carry {carried.hex()[:16]} (the decoder is {model}'s)"
    return head + (f"its streams carry its own fingerprint: its decoder as stored (g_s, h_s, inv_gain, entropy models, "
                   f"CDF tables rebuilt from them) is not {model}'s, whose decoders do not read them")


if __name__ == "__main__":
    raise SystemExit(main())
