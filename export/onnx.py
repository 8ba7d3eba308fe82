"""ONNX export of the float networks ``g_a``, ``h_a``, ``h_s``, ``g_s`` (and the pre-editor of
models that have one): one graph each.

Each graph has a dynamic batch, height and width, named inputs and outputs, float32 I/O, and
only standard operators (opset 17 by default): GDN/IGDN becomes ``Mul → Conv(1×1) → Sqrt →
(Reciprocal) → Mul``, no custom op. Two of the torch backend's inference rewrites are available:

- ``fold_gdn=True`` (default): GDN with β, γ folded into constants (``FoldedGDN``): no
  re-parametrisation ops in the graph, and every Conv reads its weights from an initializer
  (TensorRT needs that to pre-format and fuse them);
- ``subpixel=True`` (off by default): every stride-2 transposed convolution as a 3×3 ``Conv`` +
  ``DepthToSpace`` (``SubPixelConv``). It is what makes torch fast on CPU, but ONNX Runtime's
  ConvTranspose is already fast: measured end to end on Kodak (``bench/backends.py``, 1 thread,
  shared 2-core machine) the two forms decode within ±10 % of each other, in either direction
  from run to run, so the default keeps the smaller graph with ConvTranspose.

::

    graph       input                         output
    pre_editor  x      (B, 3, H, W)       →   x_edit (B, 3, H, W)    (not clamped; models with one)
    g_a         x      (B, 3, H, W)       →   y      (B, M, H/16, W/16)
    h_a         y      (B, M, H/16, W/16) →   z      (B, N, H/64, W/64)
    h_s         z_hat  (B, N, H/64, W/64) →   scales, means (B, M, H/16, W/16)
    g_s         y_hat  (B, M, H/16, W/16) →   x_hat  (B, 3, H, W)

H and W are multiples of 64 (the codec pads to that). Beside the graphs, ``manifest.json``
records the network fingerprint, the model file fingerprint when known, shapes, opset, op
lists, the names of GDN nodes (which a TensorRT FP16 build keeps in FP32) and the versions.

The codec's entropy parameters come from the exact fixed-point ``h_s``
(``vlmcodec.entropy.exact_hyper``) on every backend; ``h_s.onnx`` is exported for completeness
(tools, other runtimes), not used by the ``onnxruntime`` backend. Its float scales pick another
CDF than the exact ``h_s`` on some symbols (108 of 8192 in a sample crop:
``tests/test_export_onnx.py``), enough to desynchronise a stream's rANS decode: the manifest says so
(``entropy_parameters``) where a runtime's user reads what each graph is for.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vlmcodec.errors import BackendUnavailableError, ConfigError
from vlmcodec.layers import GDN, FoldedGDN, SubPixelConv

from .manifest import (MANIFEST_NAME, network_fingerprint, read_manifest, sha256_file, torch_versions,
                       verify_listed_files, write_manifest)

FORMAT = "vlmcodec-onnx-1"
DEFAULT_OPSET = 17
MIN_OPSET = 17
NETWORKS = ("g_a", "h_a", "h_s", "g_s")
EXAMPLE_SIZE = (128, 192)  # padded image size used to trace; every dimension is dynamic anyway
_TWO_GB = 2**31
ENTROPY_PARAMETERS_NOTE = ("a stream's scales and means come from the exact fixed-point h_s "
                           "(vlmcodec.entropy.exact_hyper; inside libvlmc_decoder's stream writer and decoder), "
                           "not from h_s.onnx: its float scales index other CDFs on some symbols (~1 %), "
                           "which desynchronises the rANS decode")


@dataclass(frozen=True)
class GraphSpec:
    """Names and geometry of one graph; ``in_scale``/``out_scale`` = size relative to the image."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    in_channels: str      # "3", "M" or "N"
    out_channels: str
    in_scale: int         # spatial size = image size // in_scale
    out_scale: int


SPECS = {
    "g_a": GraphSpec("g_a", ("x",), ("y",), "3", "M", 1, 16),
    "h_a": GraphSpec("h_a", ("y",), ("z",), "M", "N", 16, 64),
    "h_s": GraphSpec("h_s", ("z_hat",), ("scales", "means"), "N", "M", 64, 16),
    "g_s": GraphSpec("g_s", ("y_hat",), ("x_hat",), "M", "3", 16, 1),
    "pre_editor": GraphSpec("pre_editor", ("x",), ("x_edit",), "3", "3", 1, 1),
}


def networks_of(model) -> tuple[str, ...]:
    """The graphs a model has: the four networks, plus the pre-editor when it has one."""
    return (("pre_editor",) if getattr(model, "pre_editor", None) is not None else ()) + NETWORKS


def _require_onnx():
    try:
        import onnx
    except ImportError as e:
        raise BackendUnavailableError("ONNX export needs the 'onnx' package: pip install 'vlmcodec[onnx]'") from e
    return onnx


class _SplitParams(nn.Module):
    """h_s with its (scales ‖ means) output split into two named outputs."""

    def __init__(self, h_s: nn.Module, M: int):
        super().__init__()
        self.net = h_s
        self.M = int(M)

    def forward(self, z_hat):
        scales, means = torch.split(self.net(z_hat), [self.M, self.M], dim=1)  # a constant Split
        return scales, means


def network_module(model, name: str, fold_gdn: bool = True, subpixel: bool = False) -> nn.Module:
    """The module exported as graph ``name``: a CPU float32 eval copy, with the chosen rewrites."""
    import copy

    seq = getattr(model, name, None)
    if seq is None:
        raise ConfigError(f"this model has no {name} network")
    net = copy.deepcopy(seq).float().cpu().eval()
    if name == "pre_editor":  # a transformer: no GDN or transposed convs to rewrite
        return net
    for i, m in enumerate(net):
        if subpixel and isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) and m.kernel_size == (5, 5):
            net[i] = SubPixelConv.from_deconv(m)
        elif fold_gdn and isinstance(m, GDN):
            net[i] = FoldedGDN(m)
    return _SplitParams(net, model.M) if name == "h_s" else net


def _symbolic_shape(channels: int, scale: int) -> list:
    """["batch", C, "height/s", "width/s"] in terms of the padded image size."""
    return ["batch", channels] + [dim if scale == 1 else f"{dim}/{scale}" for dim in ("height", "width")]


def _channels(spec: str, model) -> int:
    return {"3": 3, "M": model.M, "N": model.N}[spec]


def _gdn_node_prefixes(model, name: str) -> list[str]:
    if name == "pre_editor":
        return []
    seq = getattr(model, name)
    base = "/net" if name == "h_s" else ""
    return [f"{base}/{i}/" for i, m in enumerate(seq) if isinstance(m, (GDN, FoldedGDN))]


def max_opset() -> int | None:
    """The newest opset the TorchScript exporter (``dynamo=False``) writes; None where this torch
    does not say (its export then reports a newer one itself)."""
    from torch.onnx import _constants

    return getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None)


def check_opset(opset: int) -> None:
    """ConfigError for an opset this torch's ONNX exporter does not write, or older than vlmcodec's
    graphs need."""
    if opset < MIN_OPSET:
        raise ConfigError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    newest = max_opset()
    if newest is not None and opset > newest:
        raise ConfigError(f"opset {opset} is newer than this torch's ONNX exporter writes "
                          f"(torch {torch.__version__}: {MIN_OPSET} to {newest})")


def export_graph(model, name: str, path: str | Path, opset: int = DEFAULT_OPSET, fold_gdn: bool = True,
                 subpixel: bool = False) -> dict:
    """Export network ``name`` of ``model`` to ``path``; validate it; return its manifest entry."""
    onnx = _require_onnx()
    if name not in SPECS:
        raise ConfigError(f"unknown network {name!r}; choose from {', '.join(NETWORKS)}")
    check_opset(opset)
    spec = SPECS[name]
    net = network_module(model, name, fold_gdn, subpixel)
    h, w = EXAMPLE_SIZE
    c_in = _channels(spec.in_channels, model)
    example = torch.rand(1, c_in, h // spec.in_scale, w // spec.in_scale)
    dyn = {n: {0: "batch", 2: "height", 3: "width"} for n in spec.inputs}
    dyn.update({n: {0: "batch", 2: f"{n}_height", 3: f"{n}_width"} for n in spec.outputs})
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, (example,), buf,  # type: ignore[arg-type]  # (torch's hint: a path, not a buffer)
                          dynamo=False, opset_version=opset, do_constant_folding=True,
                          input_names=list(spec.inputs), output_names=list(spec.outputs), dynamic_axes=dyn)
    proto = onnx.load_from_string(buf.getvalue())
    _fold_initializer_identities(proto)
    proto.producer_name, proto.producer_version = "vlmcodec", torch_versions()["vlmcodec"]
    proto.doc_string = f"vlmcodec {name} (fold_gdn={fold_gdn}, subpixel={subpixel})"
    validate(proto)
    path = Path(path)
    if proto.ByteSize() >= _TWO_GB:  # only then: weights in a file beside the graph
        onnx.save_model(proto, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save_model(proto, str(path))
    c_out = _channels(spec.out_channels, model)
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "inputs": [{"name": n, "shape": _symbolic_shape(c_in, spec.in_scale), "dtype": "float32"} for n in spec.inputs],
        "outputs": [{"name": n, "shape": _symbolic_shape(c_out, spec.out_scale), "dtype": "float32"}
                    for n in spec.outputs],
        "in_scale": spec.in_scale,
        "out_scale": spec.out_scale,
        "ops": sorted({n.op_type for n in proto.graph.node}),
        "gdn_nodes": [n.name for n in proto.graph.node
                      if any(n.name.startswith(p) for p in _gdn_node_prefixes(model, name))],
    }


def _fold_initializer_identities(proto) -> None:
    """Drop ``Identity`` nodes that copy an initializer (the exporter emits them when two layers
    hold equal weights), so every Conv reads its weights straight from an initializer, as
    TensorRT's ONNX parser requires."""
    inits = {i.name for i in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    alias = {}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            keep.append(node)
    if not alias:
        return
    for node in keep:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del proto.graph.node[:]
    proto.graph.node.extend(keep)


def validate(proto) -> None:
    """``onnx.checker`` (full check) and strict shape inference; raises ConfigError on failure."""
    onnx = _require_onnx()
    try:
        onnx.checker.check_model(proto, full_check=True)
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ConfigError(f"exported graph failed ONNX validation: {e}") from e


def export_onnx(model, out_dir: str | Path, *, opset: int = DEFAULT_OPSET, fold_gdn: bool = True,
                subpixel: bool = False,
                networks: tuple[str, ...] | None = None, model_fingerprint: bytes | str | None = None) -> dict:
    """Export ``networks`` (default: all the model has, ``networks_of``) of ``model`` (a
    ``MeanScaleHyperprior`` or a ``LoadedModel``) into ``out_dir`` as ``<name>.onnx`` +
    ``manifest.json``; returns the manifest.

    The directory is filled atomically: graphs are written to a temporary sibling that replaces
    ``out_dir``'s graph files and manifest only when every graph has passed validation (an
    interruption during that swap leaves no manifest: the folder is refused until exported again).
    """
    onnx = _require_onnx()
    if hasattr(model, "model") and hasattr(model, "fingerprint"):  # LoadedModel
        model_fingerprint = model_fingerprint or model.fingerprint
        model = model.model
    if isinstance(model_fingerprint, bytes):
        model_fingerprint = model_fingerprint.hex()
    networks = networks_of(model) if networks is None else tuple(networks)
    check_opset(opset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".onnx-export.", dir=out_dir))
    try:
        graphs = {name: export_graph(model, name, tmp / f"{name}.onnx", opset, fold_gdn, subpixel) for name in networks}
        # the old manifest goes first: an interrupted swap leaves no manifest (refused as such),
        # never one whose checksums name graphs half replaced
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        for name in networks:
            for f in tmp.glob(f"{name}.onnx*"):
                f.replace(out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = {
        "format": FORMAT,
        "network_fingerprint": network_fingerprint(model),
        "model_fingerprint": model_fingerprint,
        "config": model.config.to_dict(),
        "opset": opset,
        "rewrites": {"fold_gdn": fold_gdn, "subpixel": subpixel},
        "pad_multiple": 64,
        "graphs": graphs,
        "entropy_parameters": ENTROPY_PARAMETERS_NOTE,
        "versions": {**torch_versions(), "onnx": onnx.__version__},
    }
    write_manifest(out_dir, manifest)
    return manifest


def load_onnx_manifest(directory: str | Path, model=None, verify_files: bool = True) -> dict:
    """Read and check ``directory/manifest.json``: format, the model's network fingerprint
    (when ``model`` is given) and, with ``verify_files``, each graph's SHA-256."""
    from .manifest import check_fingerprint

    directory = Path(directory)
    manifest = read_manifest(directory, FORMAT)
    if model is not None:
        check_fingerprint(manifest, model, directory / MANIFEST_NAME)
    verify_listed_files(directory, manifest.get("graphs"), "graph", "re-export", verify_files)
    for name, g in manifest["graphs"].items():
        for side in ("inputs", "outputs"):
            ios = g.get(side)
            if not (isinstance(ios, list) and ios and all(isinstance(io, dict) and isinstance(io.get("name"), str)
                                                          for io in ios)):
                raise ConfigError(f"{directory}: its manifest's graph {name} has malformed {side}; re-export")
    return manifest


def graph_ops(path: str | Path) -> set[str]:
    """Operator types used by an ONNX file (main graph and any subgraphs)."""
    onnx = _require_onnx()
    proto = onnx.load(str(path), load_external_data=False)
    ops: set[str] = set()

    def walk(graph):
        for node in graph.node:
            ops.add(node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}")
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(proto.graph)
    return ops
