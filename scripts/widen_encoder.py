"""A model file whose g_a is wider, computing what the original's does (``vlmcodec.models.widen``),
to start an encoder-side training run from (``N_a`` in the training config; ``train_only`` the
encoder's parts keeps the decoder, and so every stream's decoding, as it was).

    python scripts/widen_encoder.py engine/weights/default.safetensors 128 -o runs/wide128_init.safetensors
"""

from __future__ import annotations

import argparse
import json


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a vlmcodec model file")
    p.add_argument("width", type=int, help="g_a's new width (channels)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--init-scale", type=float, default=1.0, help="new weights: this × the default initialisation")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    from vlmcodec.models.checkpoint import load_model, save_model
    from vlmcodec.models.widen import widen_analysis
    from vlmcodec.training.weights import lineage_of

    src = load_model(a.model)
    wide = widen_analysis(src.model, a.width, a.init_scale, a.seed)
    meta = {"train_lineage": json.dumps(lineage_of(src.metadata, a.model))}
    if "train_recipe" in src.metadata:  # refinement and evaluation read the recipe from the file
        meta["train_recipe"] = src.metadata["train_recipe"]
    fp = save_model(wide, a.output, extra_metadata=meta, decodes_as=src.identity)
    print(f"{a.output}: g_a {src.model.config.analysis_width} → {a.width} channels, fingerprint {fp.hex()[:16]}; "
          f"its streams carry {src.stream_fingerprint.hex()[:16]} (the decoder is {a.model}'s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
