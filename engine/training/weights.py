"""Weights-only files: a model's learned tensors without CDF tables or fingerprint.

They let training run where the C++ entropy coder is not built (a bare GPU machine working on a
source tree): the run writes weights (fp16 keeps them small to carry back), and
``weights_to_model_file`` turns them into a full model file wherever the package is installed.
``load_weights_into`` reads either kind of file, so ``init_from`` needs no extension either.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import save

from ..errors import ConfigError, VlmcodecWarning
from ..files import write_whole
from ..models.checkpoint import (DERIVED_SUFFIXES, FORMAT, TABLE_PREFIX, LoadedModel, _checked, config_of,
                                 fingerprint_of, is_decoder_tensor, lineage_in, model_tensors, read_safetensors,
                                 require_finite, require_floats)
from ..models.hyperprior import MeanScaleHyperprior

WEIGHTS_FORMAT = "vlmcodec-weights-1"
# SHA-256 of the architecture and the tensors as stored (checkpoint.fingerprint_of), in the
# metadata: a weights file damaged on its way (from a GPU machine) is refused, not trained on
WEIGHTS_DIGEST_KEY = "weights_digest"


def save_weights(model: MeanScaleHyperprior, path: str | Path, dtype: torch.dtype = torch.float16,
                 extra_metadata: dict | None = None) -> None:
    """Write the learned tensors of ``model`` (parameters in ``dtype``, buffers such as the scale
    table kept in float32) with its architecture in the metadata."""
    params = {k for k, _ in model.named_parameters()}
    tensors = {k: (v.to(dtype) if k in params else v).contiguous() for k, v in model_tensors(model).items()}
    require_finite(tensors, f"not saved: weights not finite (as {dtype})")
    meta = {"format": WEIGHTS_FORMAT, "config": json.dumps(model.config.to_dict())}
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    meta[WEIGHTS_DIGEST_KEY] = fingerprint_of(model.config, tensors).hex()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, save(tensors, metadata=meta))  # whole or not at all


def load_weights_into(model: MeanScaleHyperprior, path: str | Path) -> list[dict]:
    """Copy the tensors of a model or weights file into ``model`` (shapes must match); returns
    the training lineage of that file with the file itself appended (``lineage_of``).

    Tensors the file lacks are allowed only for a pre-editor (a codec without one seeds a model
    with one; the pre-editor then starts as the identity)."""
    tensors, meta = read_weights(path)
    _copy_into(model, tensors, path)
    return lineage_of(meta, path)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of a weights or model file, checked against the digest or
    fingerprint it records (ConfigError: damaged or edited) and for weights that are not finite
    (a run started from them would skip every step). Weights files written before the digest
    have none to check."""
    tensors, meta = read_safetensors(path, "weights file")
    if meta.get("format") == FORMAT:  # a model file: its own checks (fingerprint, finite weights)
        _checked(Path(path), tensors, meta)
        return tensors, meta
    if meta.get("format") == WEIGHTS_FORMAT and WEIGHTS_DIGEST_KEY in meta:
        if fingerprint_of(config_of(path, meta), tensors).hex() != meta[WEIGHTS_DIGEST_KEY]:
            raise ConfigError(f"{path}: digest mismatch (weights file damaged or edited)")
    require_floats(tensors, str(path))
    require_finite(tensors, f"{path}: weights not finite")
    return tensors, meta


def lineage_of(meta: dict, path: str | Path) -> list[dict]:
    """The stages a model file came from, oldest first, ending with the file itself: each
    {"file", "fingerprint", "train_steps", "train_recipe"} as its metadata records them (files
    written before lineages were kept, or with a null one, start the list with themselves).
    ConfigError for a ``train_lineage`` that is not a JSON list of objects (``lineage_in``)."""
    before = lineage_in(meta, path)
    try:
        recipe = json.loads(meta["train_recipe"]) if "train_recipe" in meta else None
    except (ValueError, RecursionError):  # (kept as the text it is)
        recipe = meta["train_recipe"]
    steps = meta.get("train_steps")
    return [*before, {"file": Path(path).name, "fingerprint": meta.get("fingerprint", "")[:16],
                      "train_steps": int(steps) if steps and steps.isascii() and steps.isdigit() else steps,
                      "train_recipe": recipe}]


def _copy_into(model: MeanScaleHyperprior, tensors: dict[str, torch.Tensor], path: str | Path) -> None:
    state = model.state_dict()
    missing = [k for k in state if k not in tensors and not k.startswith("pre_editor.")
               and not k.endswith(DERIVED_SUFFIXES)]
    wrong = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in state.items()
             if k in tensors and tensors[k].shape != v.shape]
    if missing or wrong:
        raise ConfigError(f"{path}: weights do not fit this architecture "
                          f"(missing {missing[:4]}, shape mismatches {wrong[:4]})")
    left = [k for k in tensors if k not in state and not k.endswith(DERIVED_SUFFIXES)
            and not k.startswith(TABLE_PREFIX)]
    if left:  # (a pre-editor the run's model lacks was dropped without a word)
        other = [k for k in left if not k.startswith("pre_editor.")]
        pre = len(left) - len(other)
        what = ([f"its pre-editor ({pre} tensors; this model has none: pre_editor = false)"] if pre else []) + other[:4]
        warnings.warn(f"{path}: not carried over: {', '.join(what)}", VlmcodecWarning, stacklevel=3)
    with torch.no_grad():
        for k, v in state.items():
            if k in tensors:
                v.copy_(tensors[k].to(v.dtype))


def weights_to_model_file(path: str | Path, out: str | Path, decodes_as: LoadedModel | None = None) -> bytes:
    """Turn a weights file into a full model file (CDF tables, fingerprint); returns the fingerprint.

    ``decodes_as``: the model whose decoder this one shares (an encoder-only run). The weights'
    decoder must be that model's up to the fp16 rounding a weights file applies; it is then
    replaced by that model's own tensors, so that it is bit for bit the same and the new model's
    streams carry that model's fingerprint (``save_model(decodes_as=)``). ConfigError when it is
    further off (a decoder that was trained)."""
    from ..models.checkpoint import save_model

    tensors, meta = read_weights(path)
    if meta.get("format") != WEIGHTS_FORMAT:
        hint = ("; it is a model file already (vlmcodec convert --from-model writes one again)"
                if meta.get("format") == "vlmcodec-model-1" else "")
        raise ConfigError(f"{path} is not a vlmcodec weights file (format {meta.get('format')!r}){hint}")
    model = MeanScaleHyperprior(config_of(path, meta))
    _copy_into(model, tensors, path)
    extra = {k: v for k, v in meta.items() if k not in ("format", "config", WEIGHTS_DIGEST_KEY)}
    extra["source"] = f"weights:{Path(path).name}"
    if decodes_as is None:
        return save_model(model, out, extra_metadata=extra)
    _restore_decoder(model, decodes_as, path)
    # stored as that model is (its decoder digest covers dtypes: an fp16 model's decoder saved as
    # float32 would not be its decoder)
    return save_model(model, out, dtype=decodes_as.dtype, extra_metadata=extra, decodes_as=decodes_as.identity,
                      require_shared=True)


# a weights file stores parameters in fp16: 11 significant bits (relative step 2^-11), and
# values below fp16's smallest normal (6.1e-5) with an absolute step of 6e-8
_FP16_REL, _FP16_ABS = 2.0 ** -10, 1e-6


def _restore_decoder(model: MeanScaleHyperprior, old: LoadedModel, path) -> None:
    """Give ``model`` the decoder tensors of ``old`` (``is_decoder_tensor``), each of which must
    equal the model's own up to fp16 rounding."""
    name = f"model {old.fingerprint.hex()[:16]}"
    mine, theirs = model.state_dict(), old.model.state_dict()
    keys = [k for k in mine if is_decoder_tensor(k) and not k.endswith(DERIVED_SUFFIXES)]
    with torch.no_grad():
        for k in keys:
            a, b = mine[k], theirs.get(k)
            if b is None or a.shape != b.shape:
                raise ConfigError(f"{path}: {k} does not fit the decoder of {name}")
            if a.is_floating_point():
                off = (a.double() - b.double()).abs() - (_FP16_REL * b.double().abs() + _FP16_ABS)
                if off.max() > 0:
                    raise ConfigError(f"{path}: its decoder is not {name}'s up to fp16 rounding ({k} differs by "
                                      f"{(a.double() - b.double()).abs().max():.3g}): was the decoder trained?")
            a.copy_(b)
