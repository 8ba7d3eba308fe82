"""Model files: safetensors with the architecture in metadata, the CDF tables, and a fingerprint.

The quantized CDF tables are computed once when a model is saved (``save_model``) and stored in
the file, so encoder and decoder use the very same integers wherever they run. The
fingerprint is the SHA-256 of the architecture JSON and every tensor (sorted by name); a
bitstream carries its first 8 bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import ConfigError, ModelNotFoundError
from .hyperprior import MeanScaleHyperprior, ModelConfig

if TYPE_CHECKING:
    from vlmcodec.kernels.rans import CdfTable

FORMAT = "vlmcodec-model-1"
TABLE_PREFIX = "tables."


def build_tables(model: MeanScaleHyperprior) -> dict[str, CdfTable]:
    """Quantized CDF tables for z (one per channel) and y (one per scale-table entry)."""
    from vlmcodec.kernels.rans import CdfTable  # the C++ extension; weights-only helpers work without it

    tables = {}
    for name, module in (("z", model.entropy_bottleneck), ("y", model.gaussian_conditional)):
        pmfs, tails, offsets = module.pmfs()
        tables[name] = CdfTable.from_pmfs(pmfs, tails, offsets)
    return tables


def _table_tensors(tables: dict[str, CdfTable]) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in tables.items():
        out[f"{TABLE_PREFIX}{name}.cdf"] = torch.from_numpy(np.array(t.cdf, dtype=np.int32))
        out[f"{TABLE_PREFIX}{name}.cdf_length"] = torch.from_numpy(np.array(t.cdf_length, dtype=np.int32))
        out[f"{TABLE_PREFIX}{name}.offsets"] = torch.from_numpy(np.array(t.offsets, dtype=np.int32))
    return out


def fingerprint_of(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> bytes:
    h = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()


# Buffers that are derived or CompressAI bookkeeping; they are rebuilt on load.
DERIVED_SUFFIXES = ("._offset", "._quantized_cdf", "._cdf_length")


def model_tensors(model: MeanScaleHyperprior, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith(DERIVED_SUFFIXES):
            continue
        v = v.detach().cpu()
        sd[k] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    return sd


def save_model(model: MeanScaleHyperprior, path: str | Path, dtype: torch.dtype = torch.float32,
               extra_metadata: dict | None = None) -> bytes:
    """Write ``model`` (weights in ``dtype``, fp16 halves the file) with its CDF tables; returns
    the full fingerprint. Tables are built from the weights as stored (after the dtype cast)."""
    model = model.cpu().eval()
    tensors = model_tensors(model, dtype)
    if dtype != torch.float32:  # tables and inference must see the stored precision
        reloaded = MeanScaleHyperprior(model.config)
        reloaded.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, strict=False)
        model = reloaded.eval()
    tensors.update(_table_tensors(build_tables(model)))
    fp = fingerprint_of(model.config, tensors)
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict()), "fingerprint": fp.hex()}
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return fp


@dataclass
class LoadedModel:
    model: MeanScaleHyperprior
    tables: dict[str, CdfTable]
    fingerprint: bytes
    metadata: dict


def read_safetensors(path: str | Path, what: str = "model file") -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors and the metadata of a safetensors file; clear errors for a missing or damaged one."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{what} not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except Exception as e:  # safetensors raises several types for a damaged file
        raise ConfigError(f"cannot read {what} {path}: {e}") from e


def load_model(path: str | Path) -> LoadedModel:
    """Load a model file written by ``save_model`` (checks format and fingerprint)."""
    path = Path(path)
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a vlmcodec model (format {meta.get('format')!r}, expected {FORMAT!r})")
    config = ModelConfig.from_dict(json.loads(meta["config"]))
    fp = fingerprint_of(config, tensors)
    if meta.get("fingerprint") and meta["fingerprint"] != fp.hex():
        raise ConfigError(f"{path}: fingerprint mismatch (file damaged or edited)")
    model = MeanScaleHyperprior(config)
    weights = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items() if not k.startswith(TABLE_PREFIX)}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith(DERIVED_SUFFIXES)]
    if missing or unexpected:
        raise ConfigError(f"{path}: weights do not match the architecture (missing {missing[:5]}, unexpected {unexpected[:5]})")
    from vlmcodec.kernels.rans import CdfTable

    tables = {}
    for name in ("z", "y"):
        try:
            tables[name] = CdfTable(
                cdf=tensors[f"{TABLE_PREFIX}{name}.cdf"].numpy(),
                cdf_length=tensors[f"{TABLE_PREFIX}{name}.cdf_length"].numpy(),
                offsets=tensors[f"{TABLE_PREFIX}{name}.offsets"].numpy(),
            )
        except KeyError as e:
            raise ConfigError(f"{path}: CDF tables missing ({e}); re-save the model with save_model") from e
    return LoadedModel(model.eval(), tables, fp, meta)
