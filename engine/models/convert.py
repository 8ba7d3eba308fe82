"""Convert a CompressAI ``MeanScaleHyperprior`` checkpoint into a vlmcodec model file."""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError, ModelNotFoundError
from .checkpoint import FLOAT_DTYPES, _check_scales, save_model
from .hyperprior import MeanScaleHyperprior, ModelConfig

_OLD_EB = re.compile(r"^entropy_bottleneck\._(matrix|bias|factor)(\d+)$")
_NEW_EB = {"matrix": "matrices", "bias": "biases", "factor": "factors"}
_IGNORED = ("._offset", "._quantized_cdf", "._cdf_length")


def compressai_state_to_vlmcodec(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the legacy ``_matrix0`` style keys; drop CompressAI's derived coding buffers."""
    out = {}
    for k, v in state.items():
        if k.endswith(_IGNORED) or (k.endswith("scale_table") and v.numel() == 0):
            continue  # derived coding buffers, or a scale table never filled by update()
        m = _OLD_EB.match(k)
        if m:
            k = f"entropy_bottleneck.{_NEW_EB[m.group(1)]}.{m.group(2)}"
        out[k] = v
    return out


def _odd_entry(state: dict) -> str | None:
    """What in ``state`` no state dict of CompressAI's holds (None: nothing): a key that is no name,
    a value that is no tensor, a network tensor of no floating-point dtype (its coding buffers are
    integers)."""
    for k, v in state.items():
        if not isinstance(k, str):
            return f"key {k!r:.60} is not a name"
        if not isinstance(v, torch.Tensor):
            return f"{k[:80]} holds a value of type {type(v).__name__}, not a tensor"
        if not k.endswith(_IGNORED) and v.dtype not in FLOAT_DTYPES:
            return f"{k[:80]} is {str(v.dtype).removeprefix('torch.')}, not float16, bfloat16, float32 or float64"
    return None


def convert_compressai(src: str | Path, dst: str | Path, N: int | None = None, M: int | None = None) -> bytes:
    """Read ``src`` (a state dict, or a dict holding ``state_dict``), write ``dst``; returns fingerprint."""
    src = Path(src)
    if src.is_dir():
        raise ConfigError(f"{src} is a folder, not a checkpoint")
    if not src.is_file():
        raise ModelNotFoundError(f"checkpoint not found: {src}")
    try:
        # torch's notes on the pickle protocol (naming its own source lines) kept for the message
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", UserWarning)
            ckpt = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch's own message runs to a dozen lines and advises weights_only=False, which would
        # run whatever code a crafted file holds: its first line, and what the file must be
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in why and any("Detected pickle protocol" in str(n.message) for n in notes):
            why = ("saved with a pickle protocol that torch.load's safe (weights-only) reader does not read; "
                   "save it again with torch.save's default protocol")
        elif "Weights only load failed" in why:
            why = ("not a checkpoint of tensors that torch.load reads safely (weights only); a CompressAI "
                   "checkpoint saved with torch.save is one")
        elif isinstance(e, (KeyError, EOFError, pickle.UnpicklingError)):  # (a KeyError's "101": a text file)
            why = "not a torch checkpoint (a file torch.save writes, as a CompressAI checkpoint is)"
        raise ConfigError(f"cannot read checkpoint {src}: {why}") from e
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if isinstance(state, dict):  # (a DataParallel model's names start with "module.")
        state = {k.removeprefix("module.") if isinstance(k, str) else k: v for k, v in state.items()}
    if not isinstance(state, dict) or "g_a.0.weight" not in state:
        raise ConfigError(f"{src} does not look like a CompressAI MeanScaleHyperprior state dict")
    odd = _odd_entry(state)
    if odd:
        raise ConfigError(f"{src} does not look like a CompressAI MeanScaleHyperprior state dict ({odd})")
    state = compressai_state_to_vlmcodec(state)
    # The architecture follows from tensor shapes: g_a.0 is (N, 3, 5, 5), g_a.6 is (M, N, 5, 5).
    for name, given in (("N", N), ("M", M)):
        if given is not None and not (isinstance(given, int) and given >= 1):  # (0 was "read it from the shapes")
            raise ConfigError(f"{name} must be a channel count of at least 1, got {given!r}")
    try:
        N = N or int(state["g_a.0.weight"].shape[0])
        M = M or int(state["g_a.6.weight"].shape[0])
    except KeyError as e:
        raise ConfigError(f"{src} does not look like a CompressAI MeanScaleHyperprior state dict (no {e})") from None
    except IndexError:  # a tensor of no dimensions
        raise ConfigError(f"{src} does not look like a CompressAI MeanScaleHyperprior state dict (g_a.0.weight or "
                          "g_a.6.weight has no output channels)") from None
    model = MeanScaleHyperprior(ModelConfig(N=N, M=M, num_levels=1, lmbdas=(0.0,)))
    with torch.no_grad():
        model.gain.fill_(1.0)
        model.inv_gain.fill_(1.0)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape ("size mismatch for g_s.0.weight: …")
        raise ConfigError(f"{src}: not a MeanScaleHyperprior(N={N}, M={M}) checkpoint: "
                          f"{str(e).splitlines()[-1].strip()[:300]}") from None
    missing = [k for k in missing if k not in ("gain", "inv_gain", "gaussian_conditional.scale_table")]
    if missing or unexpected:
        raise ConfigError(f"{src}: not a MeanScaleHyperprior(N={N}, M={M}) checkpoint "
                          f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    _check_scales(src, model.state_dict())  # (a file load_model would refuse is not written)
    return save_model(model, dst, extra_metadata={"source": f"compressai:{src.name}"})
