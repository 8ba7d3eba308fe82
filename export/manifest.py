"""The manifest written beside exported graphs and engines, and the fingerprint it is keyed by.

An exported graph or engine computes the float networks ``g_a``, ``h_a``, ``h_s``, ``g_s`` and
nothing else, so it is identified by the **network fingerprint**: SHA-256 of the architecture
JSON and of every tensor of those four networks (sorted by name, same hashing as the model
file's fingerprint in ``vlmcodec.models.checkpoint``). Two model files with equal weights but
different CDF tables share graphs; any change to a network weight changes the fingerprint. The
model file's own fingerprint is recorded too when it is known (``model_fingerprint``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from vlmcodec.errors import ConfigError, ModelMismatchError
from vlmcodec.files import write_whole
from vlmcodec.models.checkpoint import fingerprint_of

NETWORK_PREFIXES = ("g_a.", "h_a.", "h_s.", "g_s.", "pre_editor.")
MANIFEST_NAME = "manifest.json"


def network_fingerprint(model) -> str:
    """Hex SHA-256 of the architecture and the weights of g_a, h_a, h_s, g_s (and the
    pre-editor, when the model has one) of ``model``."""
    tensors = {k: v for k, v in model.state_dict().items() if k.startswith(NETWORK_PREFIXES)}
    tensors = {k: (v.detach().float() if v.is_floating_point() else v.detach()) for k, v in tensors.items()}
    return fingerprint_of(model.config, tensors).hex()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: str | Path, manifest: dict) -> Path:
    """Write ``manifest.json`` whole or not at all (temp file + rename, ``write_whole``), with the
    umask's permissions as a plain open would give it (mkstemp's 0600 kept other users out)."""
    path = Path(directory) / MANIFEST_NAME
    write_whole(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_manifest(directory: str | Path, expected_format: str) -> dict:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ConfigError(f"no {MANIFEST_NAME} in {directory}; export the model first (vlmcodec export)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    if not isinstance(manifest, dict):  # (an AttributeError from .get)
        raise ConfigError(f"{path}: not a manifest (a JSON object); re-export")
    if manifest.get("format") != expected_format:
        raise ConfigError(f"{path}: format {manifest.get('format')!r}, expected {expected_format!r}")
    return manifest


def verify_listed_files(directory: Path, entries: object, kind: str, remedy: str,
                        verify_checksums: bool = True) -> None:
    """Every file a manifest lists (``entries``: name -> {"file", "sha256"}) exists and, with
    ``verify_checksums``, still has its recorded SHA-256; ConfigError naming the ``remedy`` otherwise."""
    if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)
            for e in entries.values()):  # (a hand-edited manifest: KeyError, TypeError, AttributeError)
        raise ConfigError(f"{directory}: its manifest's {kind}s are malformed (each needs its file and sha256); "
                          f"{remedy}")
    for name, e in entries.items():
        path = directory / e["file"]
        if not path.is_file():
            raise ConfigError(f"{directory}: {kind} {name} ({e['file']}) is missing; {remedy}")
        if verify_checksums and sha256_file(path) != e["sha256"]:
            raise ConfigError(f"{path}: checksum does not match the manifest (file changed or damaged); {remedy}")


def check_fingerprint(manifest: dict, model, where: str | Path) -> None:
    """Raise ModelMismatchError unless the manifest was written for ``model``'s networks."""
    fp = network_fingerprint(getattr(model, "model", model))  # (a LoadedModel: its network)
    if manifest.get("network_fingerprint") != fp:
        raise ModelMismatchError(
            f"{where} was exported from networks {str(manifest.get('network_fingerprint'))[:16]}, the model in use "
            f"has {fp[:16]}; re-export it for this model (vlmcodec export --model ...)")


def torch_versions() -> dict:
    import vlmcodec

    return {"vlmcodec": vlmcodec.__version__, "torch": torch.__version__}
