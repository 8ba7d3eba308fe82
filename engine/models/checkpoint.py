"""Model files: safetensors with the architecture in metadata, the CDF tables, and a fingerprint.

The quantized CDF tables are computed once when a model is saved (``save_model``) and stored in
the file, so encoder and decoder use the very same integers wherever they run. The
fingerprint is the SHA-256 of the architecture JSON and every tensor (sorted by name); a
bitstream carries its first 8 bytes.

A model whose decoder is another model's, bit for bit (an encoder-only fine-tune, a widened
g_a), can say so: ``save_model(..., decodes_as=that)`` records that model's stream fingerprint
and the digest of the decoder they share (``decoder_digest``: the decoder's architecture, g_s,
h_s, inv_gain, the entropy models and the CDF tables). Its streams then carry that fingerprint,
so every decoder of the older model reads them unchanged, and it reads both its own and those
streams. ``load_model`` recomputes the digest and refuses a file whose decoder is not the one it
claims.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load, save

from ..errors import ConfigError, ModelNotFoundError
from ..files import write_whole
from ..torch_threads import note_torch_use
from .hyperprior import DECODER_PARTS, MeanScaleHyperprior, ModelConfig

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


DECODER_CONFIG_KEYS = ("arch", "N", "M", "num_levels", "lmbdas")


def is_decoder_tensor(key: str) -> bool:
    """Whether decoding reads the tensor ``key`` of a model file: the decoder's parts
    (``DECODER_PARTS``), the Gaussian conditional's scale table and the CDF tables."""
    return key.startswith(TABLE_PREFIX) or key.split(".", 1)[0] in (*DECODER_PARTS, "gaussian_conditional")


def decoder_digest(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> bytes:
    """SHA-256 of what decoding a stream reads: the decoder's architecture, and the tensors of
    g_s, h_s, the inverse gains, the entropy models and the CDF tables, as stored."""
    arch = {k: v for k, v in config.to_dict().items() if k in DECODER_CONFIG_KEYS}
    return _digest(arch, {k: v for k, v in tensors.items() if is_decoder_tensor(k)})


def fingerprint_of(config: ModelConfig, tensors: dict[str, torch.Tensor]) -> bytes:
    return _digest(config.to_dict(), tensors)


def _digest(arch: dict, tensors: dict[str, torch.Tensor]) -> bytes:
    h = hashlib.sha256(json.dumps(arch, sort_keys=True).encode())
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


def not_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors holding a NaN or an infinity."""
    # a tensor's sum is finite only if every value is (∞ + x = ∞, ∞ − ∞ = NaN): a sum, no mask
    # to allocate, 20x faster on a model file; a sum that overflowed is checked value by value
    def finite(v: torch.Tensor) -> bool:
        v = v if v.dtype in FLOAT_DTYPES else v.float()  # (float8 has no sum on the CPU: widened first)
        return math.isfinite(float(v.sum())) or bool(torch.isfinite(v).all())

    return [k for k, v in tensors.items() if v.is_floating_point() and not finite(v)]


def require_finite(tensors: dict[str, torch.Tensor], head: str) -> None:
    """ConfigError "``head`` in N tensors (names)" when any of ``tensors`` holds a NaN or an
    infinity: no model or weights file holds them, nor does a run start from them."""
    bad = not_finite(tensors)
    if bad:
        raise ConfigError(f"{head} in {len(bad)} tensors ({', '.join(bad[:5])})")


def require_floats(tensors: dict[str, torch.Tensor], head: str) -> None:
    """ConfigError "``head``: NAME is stored as DTYPE ..." for the first of ``tensors`` not stored
    as a float (``FLOAT_DTYPES``): integers or bools are no weights, fp8 has no arithmetic on the CPU."""
    odd = next((k for k, t in tensors.items() if t.dtype not in FLOAT_DTYPES), None)
    if odd is not None:
        raise ConfigError(f"{head}: {odd} is stored as {str(tensors[odd].dtype).removeprefix('torch.')}; weights are "
                          "float16, bfloat16, float32 or float64 (file damaged or edited)")


def config_of(path: str | Path, meta: dict) -> ModelConfig:
    """The architecture a model or weights file's metadata records (ConfigError: unreadable)."""
    try:
        return ModelConfig.from_dict(json.loads(meta["config"]))
    except (KeyError, ValueError, TypeError, RecursionError, OverflowError) as e:  # (JSON nested 10^5 deep)
        raise ConfigError(f"{path}: unreadable architecture in its metadata ({str(e)[:300]})") from None


def save_model(model: MeanScaleHyperprior, path: str | Path, dtype: torch.dtype = torch.float32,
               extra_metadata: dict | None = None, decodes_as: "StreamIdentity | None" = None,
               require_shared: bool = False) -> bytes:
    """Write ``model`` (weights in ``dtype``, fp16 halves the file) with its CDF tables; returns
    the full fingerprint. Tables are built from the weights as stored (after the dtype cast).

    ``decodes_as``: the model (``LoadedModel.identity``) whose decoder this one may share; when
    the decoders are equal as stored, the file records it and its streams carry that model's
    fingerprint (module doc); otherwise nothing is recorded, or with ``require_shared`` nothing is
    written and ConfigError says so."""
    model = model.cpu().eval()
    tensors = model_tensors(model, dtype)
    if dtype != torch.float32:  # tables and inference must see the stored precision
        reloaded = MeanScaleHyperprior(model.config)
        reloaded.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, strict=False)
        model = reloaded.eval()
    require_finite(tensors, f"not saved: weights not finite (as {dtype})")  # a diverged training
    tensors.update(_table_tensors(build_tables(model)))
    fp = fingerprint_of(model.config, tensors)
    meta = {"format": FORMAT, "config": json.dumps(model.config.to_dict()), "fingerprint": fp.hex()}
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items() if k not in _IDENTITY_KEYS})
    shared = decodes_as is not None and decodes_as.decoder_digest == decoder_digest(model.config, tensors)
    if shared and decodes_as is not None:  # (shared implies it: for the type checker)
        meta["stream_fingerprint"] = decodes_as.stream_fingerprint.hex()
        meta["decoder_digest"] = decodes_as.decoder_digest.hex()
    elif require_shared and decodes_as is not None:
        raise ConfigError(f"this model's decoder (g_s, h_s, inv_gain, entropy models, CDF tables, as stored in "
                          f"{dtype}) is not that of model {decodes_as.stream_fingerprint.hex()[:16]}: its streams "
                          "could not carry that model's fingerprint")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # whole or not at all: a Ctrl-C mid-write of engine/weights/default.safetensors would break
    # every codec made from it until the file was restored
    write_whole(path, save(tensors, metadata=meta))
    return fp


_IDENTITY_KEYS = ("stream_fingerprint", "decoder_digest")  # written by save_model alone, never copied
# the dtypes a model file's weights and buffers may be stored in (save_model's dtype); its CDF
# tables are integers (int32)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TABLE_PARTS = ("cdf", "cdf_length", "offsets")
_PARAMETER_SUFFIXES = (".weight", ".bias", ".beta", ".gamma")  # (GDN's reparametrisation buffers aside)


@dataclass(frozen=True)
class StreamIdentity:
    """Which decoder a model's streams need: the fingerprint they carry (full, 32 bytes) and the
    digest of that decoder."""

    stream_fingerprint: bytes
    decoder_digest: bytes


@dataclass
class LoadedModel:
    model: MeanScaleHyperprior
    tables: dict[str, CdfTable]
    fingerprint: bytes
    metadata: dict
    identity: StreamIdentity | None = None  # set by load_model
    dtype: torch.dtype = torch.float32  # the weights' dtype in the file (``stored_dtype``)

    @property
    def stream_fingerprint(self) -> bytes:
        """The fingerprint this model's streams carry: its own, or that of the model whose decoder
        it shares (module doc)."""
        return self.identity.stream_fingerprint if self.identity else self.fingerprint


def read_safetensors(path: str | Path, what: str = "model file") -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors and the metadata of a safetensors file; clear errors for a missing or damaged one."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"{what} not found: {path}" + (" (a folder: name the file in it)" if path.is_dir() else ""))
    try:
        # read whole, not tensor by tensor: safe_open's get_tensor kept ~60 B per tensor for good
        # (safetensors 0.8: ~6 KB a Codec made, for a process that keeps making them)
        data = _read_checked(path)
        tensors = load(data)
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
        return tensors, (header.get("__metadata__") or {})
    except Exception as e:  # safetensors raises several types for a damaged file
        raise ConfigError(f"cannot read {what} {path}: {_other_kind(path) or e}") from e


def _other_kind(path: Path) -> str | None:
    """What ``path`` is, where its first bytes say it is one of vlmcodec's other files: named when
    one is given as a model file (it said "Error while deserializing: header too large")."""
    from vlmcodec.export.c_decoder import MAGIC as DECODER_MODEL_MAGIC

    from ..bitstream.container import MAGIC as STREAM_MAGIC

    kinds = ((DECODER_MODEL_MAGIC, "it is the C library's decoder model (.vlmd), exported from a model file: give "
                                   "that model's .safetensors"),  # (before the stream's: it starts with it)
             (STREAM_MAGIC, "it is a .vlmc stream, not a model"),
             (b"PK\x03\x04", "a zip archive, as a training checkpoint (last.pt) is: `vlmcodec convert "
                             "--from-checkpoint last.pt -o MODEL.safetensors` makes a model file of one"))
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    return next((what for magic, what in kinds if head.startswith(magic)), None)


_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header ("header too large")


def _read_checked(path: Path) -> bytes:
    """A safetensors file's bytes, read whole only when its header says the file is that long: a
    damaged or hostile one (a 2 GB file of zeros) fails from its header, as ``load`` says of it."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if n <= _MAX_HEADER:
            head += f.read(min(n, max(size - 8, 0)))
        if _stated_size(head) == size:
            return head + f.read(size - len(head))
    load(head)  # (raises what safetensors says of it)
    raise ValueError("Error while deserializing: incomplete metadata, file not fully covered")


def _stated_size(head: bytes) -> int | None:
    """The file size a safetensors header (``head``: its length and JSON) states; None where it
    is no header."""
    n = int.from_bytes(head[:8], "little")
    if len(head) < 8 or n > _MAX_HEADER or len(head) != 8 + n:
        return None
    try:
        header = json.loads(head[8:])
        ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError):
        return None
    return 8 + n + max(ends, default=0)


def load_model(path: str | Path) -> LoadedModel:
    """Load a model file written by ``save_model`` (checks format, fingerprint, and that it holds its
    architecture's tensors and CDF tables: ``_checked``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"a model is the path of a .safetensors model file, got {type(path).__name__}")
    path = Path(path)
    note_torch_use()  # (its checks and the module's making run torch: torch_threads.py)
    tensors, meta = read_safetensors(path)
    config, fp, identity = _checked(path, tensors, meta)  # (the tensors' names, shapes, dtypes and tables too)
    # built without memory or random initialisation, then given the file's tensors: a random init
    # holds torch's CPU generator mutex, which a child forked meanwhile from another thread found
    # locked for good (its own Codec() hung). Copies: safetensors' tensors view read-only bytes
    with torch.device("meta"):
        model = MeanScaleHyperprior(config)
    weights = {k: v.to(torch.float32, copy=True) for k, v in tensors.items() if not k.startswith(TABLE_PREFIX)}
    try:
        model.load_state_dict(weights, assign=True)
    except RuntimeError as e:  # (_checked has compared them with the architecture's)
        raise ConfigError(f"{path}: weights do not match the architecture (file damaged or edited): "
                          f"{str(e).splitlines()[-1].strip()[:300]}") from None
    from vlmcodec.kernels.rans import CdfTable

    tables = {}
    for name in ("z", "y"):
        try:
            parts = {part: tensors[f"{TABLE_PREFIX}{name}.{part}"].numpy() for part in _TABLE_PARTS}
            tables[name] = CdfTable(cdf=parts["cdf"], cdf_length=parts["cdf_length"], offsets=parts["offsets"])
        except (TypeError, ValueError) as e:  # values no CDF holds (file edited)
            raise ConfigError(f"{path}: bad {name} CDF tables (file damaged or edited): {e}") from None
    return LoadedModel(model.eval(), tables, fp, meta, identity, stored_dtype(tensors))


def stored_dtype(tensors: dict[str, torch.Tensor]) -> torch.dtype:
    """The dtype a model file stores its weights in (save_model's ``dtype``): float32 for a file
    that mixes several. Saving a model in its source's dtype keeps its decoder digest (which
    covers dtypes): ``save_model(loaded.model, out, dtype=loaded.dtype, decodes_as=loaded.identity)``."""
    dtypes = {t.dtype for k, t in tensors.items() if t.is_floating_point() and not k.startswith(TABLE_PREFIX)}
    return dtypes.pop() if len(dtypes) == 1 else torch.float32


def stream_identity_of(path: str | Path) -> StreamIdentity | None:
    """The stream identity of the model file at ``path`` (what its streams carry, and its decoder's
    digest; checked as ``load_model`` checks it); None for a weights-only file, which has no CDF
    tables and so no whole decoder. Needs no C++ extension."""
    tensors, meta = read_safetensors(path)
    if meta.get("format") != FORMAT:
        return None
    return _checked(Path(path), tensors, meta)[2]


def _checked(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> tuple[ModelConfig, bytes, StreamIdentity]:
    """A model file's architecture, fingerprint and stream identity, each checked: its format,
    a readable architecture, the fingerprint it records, its tensors (names, shapes, dtypes) and
    CDF tables (``_check_contents``), finite weights, the decoder it claims (ConfigError)."""
    if meta.get("format") != FORMAT:
        hint = ("; it is a training run's weights: `vlmcodec convert --from-weights FILE -o MODEL.safetensors` "
                "makes a model file of them" if meta.get("format") == "vlmcodec-weights-1" else "")
        raise ConfigError(f"{path} is not a vlmcodec model (format {meta.get('format')!r}, expected {FORMAT!r}){hint}")
    config = config_of(path, meta)
    # the networks' weights the file holds against those its architecture has (a file edited
    # without its fingerprint: load_state_dict's size mismatch, from the file alone for `info`)
    held = sum(t.numel() for k, t in tensors.items()
               if k.split(".", 1)[0] in ("g_a", "g_s", "h_a", "h_s") and k.endswith(_PARAMETER_SUFFIXES))
    if held != config.network_weights():
        raise ConfigError(f"{path}: its g_a, g_s, h_a and h_s hold {held:,} weights, its architecture (N={config.N}, "
                          f"M={config.M}) has {config.network_weights():,} (file damaged or edited)")
    fp = fingerprint_of(config, tensors)
    if meta.get("fingerprint") and meta["fingerprint"] != fp.hex():
        raise ConfigError(f"{path}: fingerprint mismatch (file damaged or edited)")
    _check_contents(path, config, tensors)
    # (its fingerprint may be valid, saved before save_model checked: it would code garbage)
    require_finite(tensors, f"{path}: weights not finite")
    _check_scales(path, tensors)
    return config, fp, _identity(config, tensors, meta, fp, path)


@functools.lru_cache(maxsize=8)
def _expected_tensors(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the tensors a model file of ``config`` holds, CDF tables aside."""
    with torch.device("meta"):  # no memory, no initialisation (this thread only)
        return {k: tuple(v.shape) for k, v in MeanScaleHyperprior(config).state_dict().items()}


def _check_contents(path: Path, config: ModelConfig, tensors: dict[str, torch.Tensor]) -> None:
    """The file holds the tensors ``config``'s network has, each of its shape, as floats
    (``FLOAT_DTYPES``), and the CDF tables: integers, one row per z channel (N) and per scale-table
    entry; ConfigError otherwise. From the file alone: ``describe_model`` refuses what ``load_model`` does."""
    expected = _expected_tensors(config)
    tables = [f"{TABLE_PREFIX}{name}.{part}" for name in ("z", "y") for part in _TABLE_PARTS]
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected and k not in tables]
    if missing or unexpected:
        raise ConfigError(f"{path}: weights do not match the architecture (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    for k, shape in expected.items():
        t = tensors[k]
        if tuple(t.shape) != shape:
            raise ConfigError(f"{path}: weights do not match the architecture (file damaged or edited): size mismatch "
                              f"for {k}: {tuple(t.shape)} in the file, {shape} in the architecture")
    require_floats({k: tensors[k] for k in expected}, str(path))
    rows = {"z": (config.N, "one per z channel"),
            "y": (tensors["gaussian_conditional.scale_table"].numel(), "one per scale-table entry")}
    for name, (n, per) in rows.items():
        keys = [f"{TABLE_PREFIX}{name}.{part}" for part in _TABLE_PARTS]
        absent = [k for k in keys if k not in tensors]
        if absent:
            raise ConfigError(f"{path}: CDF tables missing ({absent[0]!r}); re-save the model with save_model")
        for k, ndim in zip(keys, (2, 1, 1)):
            t = tensors[k]
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise ConfigError(f"{path}: bad {name} CDF tables (file damaged or edited): {k} must be an integer "
                                  f"array (int32), got {str(t.dtype).removeprefix('torch.')}")
            if t.dim() != ndim or t.shape[0] != n:
                raise ConfigError(f"{path}: bad {name} CDF tables (file damaged or edited): {k} is {tuple(t.shape)}, "
                                  f"its model needs {n} rows ({per})")


def _check_scales(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """The Gaussian scale table ascends from a positive value and the bound is positive: the
    encoder's index search (a fused kernel counts the entries below σ, torch bisects) and the
    decoder's agree only on such a table."""
    table = tensors.get("gaussian_conditional.scale_table")
    if table is not None and (table.dim() != 1 or table.numel() < 2 or not bool(table[0] > 0)
                              or not bool((table[1:] > table[:-1]).all())):
        raise ConfigError(f"{path}: gaussian_conditional.scale_table must be 2 or more ascending positive values "
                          "(file edited?)")
    bound = tensors.get("gaussian_conditional.scale_bound")
    if bound is not None and (bound.numel() != 1 or not bool(bound.reshape(-1)[0] > 0)):
        raise ConfigError(f"{path}: gaussian_conditional.scale_bound must be one positive value (file edited?)")


def _identity(config: ModelConfig, tensors: dict[str, torch.Tensor], meta: dict, fp: bytes, path: Path) -> StreamIdentity:
    """The model's own fingerprint and decoder digest, or the decoder-sharing claim its file
    records, which must hold (ConfigError otherwise)."""
    digest = decoder_digest(config, tensors)
    if "stream_fingerprint" not in meta:
        return StreamIdentity(fp, digest)
    if meta.get("decoder_digest") != digest.hex():
        raise ConfigError(f"{path}: its decoder is not the one of model {meta['stream_fingerprint'][:16]} it "
                          "claims to share (file edited?); its streams would not decode there")
    try:
        stream_fp = bytes.fromhex(meta["stream_fingerprint"])
    except ValueError:
        stream_fp = b""
    if len(stream_fp) != len(fp):
        raise ConfigError(f"{path}: stream_fingerprint {meta['stream_fingerprint'][:70]!r} is not a fingerprint")
    return StreamIdentity(stream_fp, digest)


def describe_model(path: str | Path) -> dict:
    """What a model file is, from the file alone (no C++ extension): fingerprint, what its streams
    carry, architecture, parameters of the encoder and the decoder, training steps, whether the
    weights are a training run's average (``ema_decay``), and lineage.
    ConfigError for a file that is no model file or does not hold together (as ``load_model`` refuses
    it, without making the network; the CDF tables' values aside, which the C++ extension checks), or
    whose lineage is no list (``lineage_in``)."""
    path = Path(path)
    tensors, meta = read_safetensors(path)
    config, fp, identity = _checked(path, tensors, meta)
    params = _parameter_names(config)  # (not the buffers: GDN's bounds, scale table, ...)
    decoder = sum(t.numel() for k, t in tensors.items() if k in params and is_decoder_tensor(k))
    weights = sum(t.numel() for k, t in tensors.items() if k in params)
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for k, t in tensors.items()
                     if t.is_floating_point() and not k.startswith(TABLE_PREFIX)})
    lineage = lineage_in(meta, path)
    return {"file": str(path), "bytes": path.stat().st_size, "fingerprint": fp.hex(),
            "stream_fingerprint": identity.stream_fingerprint.hex(), "decoder_digest": identity.decoder_digest.hex(),
            "config": config.to_dict(), "parameters": {"encoder": weights - decoder, "decoder": decoder},
            "dtypes": dtypes, "train_steps": steps_in(meta),
            "train_weights": meta.get("train_weights"),  # "average (ema_decay …)"; None: the last step's
            "lineage": [{"file": st.get("file"), "fingerprint": st.get("fingerprint"), "train_steps": steps_in(st)}
                        for st in lineage]}


def steps_in(meta: dict) -> int | None:
    """The ``train_steps`` a file's metadata records, as a number; None where it records none (or
    no count of steps: edited metadata, "²" or "-5")."""
    steps = meta.get("train_steps")
    if isinstance(steps, int) and not isinstance(steps, bool):
        return steps if steps >= 0 else None
    return int(steps) if isinstance(steps, str) and steps.isascii() and steps.isdigit() else None


def _parameter_names(config: ModelConfig) -> set[str]:
    """The names of the learned parameters of ``config``'s model (made on no memory)."""
    with torch.device("meta"):
        return {k for k, _ in MeanScaleHyperprior(config).named_parameters()}


def lineage_in(meta: dict, path: str | Path) -> list[dict]:
    """The stages a file's metadata records it came from (``train_lineage``: a JSON list of
    objects, oldest first); [] where it has none (absent, or null). ConfigError for one that is
    not such a list (edited metadata: it is not covered by the fingerprint)."""
    text = meta.get("train_lineage")
    if text is None:
        return []
    try:
        lineage = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: unreadable train_lineage in its metadata ({str(e)[:200]})") from None
    if lineage is None:
        return []
    if not isinstance(lineage, list) or not all(isinstance(st, dict) for st in lineage):
        raise ConfigError(f"{path}: train_lineage in its metadata is not a list of stages (objects), got "
                          f"{text[:100]!r} (metadata edited?)")
    return lineage
