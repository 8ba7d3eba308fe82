"""A local Hugging Face ``transformers`` vision model as a teacher (CLIP, SigLIP, DINOv2, …).

``HFTeacher.from_pretrained(dir)`` loads ``AutoModel.from_pretrained(dir)`` from a directory
(never a hub download: ``local_files_only=True``); for a two-tower model (CLIP, SigLIP) it keeps
the ``vision_model``. Tokens are ``hidden_states`` of ``output_hidden_states=True`` (index 0 =
embeddings, i = after block i). ``norm=True`` applies the model's final sequence norm
(``layernorm`` for DINOv2, ``post_layernorm`` for CLIP/SigLIP) to each returned layer.
Mean/std come from the directory's ``preprocessor_config.json`` when present, else from the model
type (CLIP's OpenAI statistics, SigLIP's 0.5/0.5, ImageNet otherwise). Position embeddings are
interpolated to the input size where the model supports it (``interpolate_pos_encoding``).

At load, one forward pass on a blank image of the configured ``image_size`` checks the token
contract of ``base``: every hidden state must be [1, num_prefix_tokens + (H/p)(W/p), hidden_size].
Models that break it (ViT-MAE masks patches at random even in eval, Swin merges patches and has
no CLS token) are refused with ``ConfigError``. The prefix is the model's ``num_prefix_tokens``
where its embeddings have one, else CLS + registers (+ DeiT's distillation token); SigLIP has none.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from ..errors import BackendUnavailableError, ConfigError, ModelNotFoundError
from .base import IMAGENET_MEAN, IMAGENET_STD, FrozenTeacher, check_stats, spaced_layers


def _prefer_installed_kernels() -> None:
    """Make the top-level name ``kernels`` mean Hugging Face's package, not this checkout's folder.

    transformers ≥ 5.25 depends on (and imports) Hugging Face's ``kernels`` package. In a source
    checkout, vlmcodec's own ``kernels/`` folder (imported as ``vlmcodec.kernels``) sits at the
    repository root, so whenever that root is on ``sys.path`` (``python -m pytest`` or ``python -m
    ...`` run from there) ``import kernels`` finds the wrong package and transformers fails with an
    ImportError. Importing the installed one once, with the root left out of the path, binds the
    name in ``sys.modules`` for good; nothing happens where there is no such clash."""
    if "kernels" in sys.modules:
        return
    spec = importlib.util.find_spec("kernels")
    ours = importlib.util.find_spec("vlmcodec.kernels")
    if spec is None or spec.origin is None or ours is None or ours.origin is None:
        return
    our_dir = Path(ours.origin).resolve().parent
    if Path(spec.origin).resolve().parent != our_dir:
        return
    root = str(our_dir.parent)
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != os.path.realpath(root)]
    try:
        if importlib.util.find_spec("kernels") is not None:  # an installed package of that name
            importlib.import_module("kernels")
    except ImportError:
        pass  # a broken install: transformers reports it in its own words
    finally:
        sys.path[:] = saved


def import_transformers() -> ModuleType:
    """``transformers``, imported so that this checkout's ``kernels/`` folder cannot shadow the
    package of that name it needs; a clear error when it is not installed."""
    _prefer_installed_kernels()
    try:
        return importlib.import_module("transformers")
    except ImportError as e:
        raise BackendUnavailableError("a Hugging Face teacher needs the package transformers: "
                                      "pip install 'vlmcodec[hf]' (or pip install transformers)") from e


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _stats(model_type: str, directory: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    pre = directory / "preprocessor_config.json"
    if pre.is_file():
        try:
            cfg = json.loads(pre.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"{pre}: not a readable JSON file: {e}") from e
        if not isinstance(cfg, dict):
            raise ConfigError(f"{pre}: expected a JSON object, got {type(cfg).__name__}")
        if "image_mean" in cfg and "image_std" in cfg:
            return check_stats(cfg["image_mean"], cfg["image_std"], str(pre))
    if "clip" in model_type:
        return CLIP_MEAN, CLIP_STD
    if "siglip" in model_type:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return IMAGENET_MEAN, IMAGENET_STD


class HFTeacher(FrozenTeacher):
    def __init__(self, model: nn.Module, vision_config, mean, std, name: str):
        super().__init__(mean, std)
        self.model = model
        self.name = name
        self.num_layers = int(vision_config.num_hidden_layers)
        self.embed_dim = int(vision_config.hidden_size)
        self.patch_size = int(vision_config.patch_size)
        model_type = getattr(vision_config, "model_type", "")
        embeddings = getattr(model, "embeddings", None)
        prefix = getattr(embeddings, "num_prefix_tokens", None)
        if isinstance(prefix, int):
            self.num_prefix_tokens = prefix
        elif "siglip" in model_type:
            self.num_prefix_tokens = 0
        else:
            self.num_prefix_tokens = (1 + int(getattr(vision_config, "num_register_tokens", 0) or 0)
                                      + int(getattr(embeddings, "distillation_token", None) is not None))
        self.default_layers = spaced_layers(self.num_layers)
        self._final_norm = getattr(model, "layernorm", None) or getattr(model, "post_layernorm", None)
        if self._final_norm is None and hasattr(model, "vision_model"):
            self._final_norm = getattr(model.vision_model, "post_layernorm", None)
        params = inspect.signature(model.forward).parameters
        self._kwargs = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in params else {}
        self.freeze()

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "HFTeacher":
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise ModelNotFoundError(f"no Hugging Face model in {directory} (config.json missing)")
        try:  # transformers reports a malformed config.json as a missing model (OSError)
            config = json.loads((directory / "config.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"{directory / 'config.json'}: not a readable JSON file: {e}") from e
        if not isinstance(config, dict):
            raise ConfigError(f"{directory / 'config.json'}: expected a JSON object, got {type(config).__name__}")
        AutoModel = import_transformers().AutoModel
        try:
            model = AutoModel.from_pretrained(str(directory), local_files_only=True)
        except OSError as e:  # weights file missing or unreadable
            raise ModelNotFoundError(f"cannot load the Hugging Face model in {directory}: {e}") from e
        except ImportError as e:  # the model's own code needs a package (timm, ...)
            raise BackendUnavailableError(f"the Hugging Face model in {directory} needs a package: {e}") from e
        except Exception as e:  # no/unknown model_type, weights not matching the config, a corrupt file
            raise ConfigError(f"cannot load the Hugging Face model in {directory}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from e
        # float32 as every teacher: transformers 5 loads a checkpoint in its own precision (an fp16 one
        # ran training and the metrics in half precision on the CPU)
        model = model.float()
        if hasattr(model, "vision_model") and hasattr(model.config, "vision_config"):  # CLIP/SigLIP two-tower
            model, vcfg = model.vision_model, model.config.vision_config
        else:
            vcfg = getattr(model.config, "vision_config", model.config)
        for attr in ("num_hidden_layers", "hidden_size", "patch_size"):
            if not hasattr(vcfg, attr):
                raise ConfigError(f"{directory}: {type(model).__name__} is not a ViT-like vision model (no {attr})")
        mean, std = _stats(getattr(vcfg, "model_type", "") or getattr(model.config, "model_type", ""), directory)
        teacher = cls(model, vcfg, mean, std, name=directory.name)
        teacher._check_tokens(getattr(vcfg, "image_size", None), directory)
        return teacher

    def _check_tokens(self, image_size: object, where: Path) -> None:
        """One forward pass on a blank image: ConfigError unless every hidden state is
        [1, num_prefix_tokens + (H/p)(W/p), hidden_size] (the contract of ``base``)."""
        p = self.patch_size
        hw = image_size if isinstance(image_size, (tuple, list)) and len(image_size) == 2 else (image_size,) * 2
        h, w = (max(1, int(v) // p) * p if isinstance(v, int) and not isinstance(v, bool) else 2 * p for v in hw)
        want = (1, self.num_prefix_tokens + (h // p) * (w // p), self.embed_dim)
        param = next(self.model.parameters())
        try:
            with torch.no_grad():
                out = self.model(pixel_values=torch.zeros(1, 3, h, w, dtype=param.dtype, device=param.device),
                                 output_hidden_states=True, return_dict=True, **self._kwargs)
            shapes = [tuple(t.shape) for t in (out.hidden_states or ())]
        except Exception as e:
            raise ConfigError(f"{where}: {type(self.model).__name__} fails on a {h}x{w} image: "
                              f"{type(e).__name__}: {e}") from e
        if len(shapes) != self.num_layers + 1 or any(s != want for s in shapes):
            raise ConfigError(f"{where}: {type(self.model).__name__} is not a plain ViT teacher: on a {h}x{w} image "
                              f"(patch {p}) its hidden states are {sorted(set(shapes))} ({len(shapes)} of them), "
                              f"not {self.num_layers + 1} × {list(want)} = [batch, {self.num_prefix_tokens} prefix + "
                              f"{(h // p) * (w // p)} patch tokens, width] (a model that masks, pools or merges "
                              f"patches cannot be a teacher)")

    def _forward_layers(self, x: Tensor, layers: list[int], norm: bool) -> list[Tensor]:
        out = self.model(pixel_values=x, output_hidden_states=True, return_dict=True, **self._kwargs)
        hs = out.hidden_states
        if len(hs) != self.num_layers + 1:
            raise ConfigError(f"{self.name}: expected {self.num_layers + 1} hidden states, got {len(hs)}")
        fn = self._final_norm if (norm and self._final_norm is not None) else None
        return [fn(hs[l]) if fn is not None else hs[l] for l in layers]
