"""Resumable trainer for the codec: rate + λ·(pixel MSE + the teacher's token terms), every
quality level in every batch of at least as many items as levels, else in turn over consecutive
steps (``rd_loss``, ``_semantic_term``).

Run with ``vlmcodec train --config FILE`` (TOML, see ``configs/``). Every ``ckpt_every`` steps
the full state (model, optimisers, step, RNG) is written atomically to ``out_dir/last.pt``; a
new run with the same ``out_dir`` resumes from it. Every ``log_every`` steps a row goes to
``out_dir/log.csv`` and, as a JSON object, to ``out_dir/log.jsonl``; the end writes
``out_dir/model.safetensors``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import tomllib
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm import tqdm

from ..checks import MAX_THREADS
from ..console import is_terminal
from ..devices import torch_device
from ..errors import ConfigError, TrainingDivergedError, VlmcodecWarning
from ..models import MeanScaleHyperprior, ModelConfig
from ..models.hyperprior import DECODER_PARTS, ENCODER_PARTS
from ..models.checkpoint import StreamIdentity, not_finite, stream_identity_of
from ..torch_threads import set_torch_threads
from .data import CropSampler
from .loss import rd_loss
from .weights import load_weights_into, save_weights


_TUPLE_KEYS = {"lmbdas": float, "teacher_layers": int, "consumer_short_sides": int,
               "consumer_teacher_scales": float, "train_only": str}  # field → element type


def _element(kind: type, x):
    """One element of a list-valued key, as strict as a scalar key: a layer 3.9, a flag true or
    a string "0.5" in a number list was taken as 3, 1, 0.5."""
    if kind is str:
        if not isinstance(x, str):
            raise TypeError
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError
    if kind is int:
        if x != int(x):
            raise ValueError
        return int(x)
    return float(x)


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str = "../shared/data/train"
    out_dir: str = "runs/default"
    N: int = 64
    M: int = 96
    N_a: int = 0  # g_a's width when wider than N (0: N); scripts/widen_encoder.py makes a model to start from
    lmbdas: tuple[float, ...] = (0.0018, 0.0054, 0.016, 0.0483)
    crop: int = 128
    batch: int = 16
    steps: int = 20000
    lr: float = 1e-3
    lr_final: float = 5e-5
    warmup: int = 200
    aux_lr: float = 1e-3
    clip_grad: float = 1.0
    seed: int = 0
    threads: int = 0
    device: str = "cpu"
    log_every: int = 25
    ckpt_every: int = 200
    nice: int = 0
    init_from: str = ""   # a vlmcodec model file to start from (fine-tuning / continuing elsewhere)
    pre_editor: bool = False
    teacher: str = ""     # "" = pixel loss only; "dinov2-vits14" or a Hugging Face model directory
    teacher_layers: tuple[int, ...] = (3, 6, 9, 12)
    w_pix: float = 1.0
    w_tok: float = 0.0
    w_rank: float = 0.0
    teacher_bf16: bool = False  # run the frozen teacher under bf16 autocast (GPU: ~2x on its cost)
    # the teacher sees the crop resized by this factor: a VLM sees a photo at ~224 px, not at full
    # resolution (bench.semantic's Kodak 768×512 → 336×224 is 0.4375), so the token term should too
    teacher_scale: float = 1.0
    pre_editor_lr_mult: float = 1.0  # the pre-editor starts at zero (identity): fine-tuning may want it faster
    # consumer-scale steps (vlmcodec.resample, Codec(short_side=N)): this fraction of the steps
    # crops images first resized to consumer_short_side, and the teacher sees them at
    # consumer_teacher_scale (a 224-px tower on a 256-px image: 0.875) — one model for both modes
    consumer_fraction: float = 0.0
    consumer_short_side: int = 256
    consumer_teacher_scale: float = 0.875
    # several sides (e.g. [256, 288, 320]): the consumer steps crop images resized to one of them
    # at random (scale jitter); empty: consumer_short_side alone
    consumer_short_sides: tuple[int, ...] = ()
    # several teacher scales (e.g. [0.875, 1.3125]: 224- and 336-px views of a 256-px crop): the
    # consumer steps' token term is their mean (refine_views' objective, which transferred to
    # unseen views and to Lite0 better than one view); empty: consumer_teacher_scale alone
    consumer_teacher_scales: tuple[float, ...] = ()
    time_limit_s: float = 0.0  # > 0: stop after this much wall time (checkpoint + model file), resume later
    # the parts trained (ENCODER_PARTS / DECODER_PARTS names); the others stay frozen. Empty: all.
    # ["pre_editor", "g_a", "gain", "h_a"] trains the encoder alone: its decoder stays the init
    # model's bit for bit, so its streams carry that model's fingerprint (save_model(decodes_as=))
    train_only: tuple[str, ...] = ()
    # > 0: also keep an exponential moving average of the weights, updated after each step
    # (0.999 averages over ~1000 steps), starting from the weights the run starts from (init_from's,
    # or a from-scratch run's random ones, which still weigh 0.999^N after N steps: 5 % at 3000);
    # model.safetensors is then the average and model_last.safetensors the last step's weights
    ema_decay: float = 0.0
    # a step whose loss or gradients are not finite (NaN, infinity) is skipped: no optimiser step,
    # which would carry them into every weight through Adam's moments; this many in a row stop the
    # run (TrainingDivergedError) with its last checkpoint intact
    max_bad_steps: int = 20

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "TrainConfig":
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read training config {path}: {e}") from e
        known = {f.name for f in fields(cls)}
        # each unknown key named where it was given: the file, or --set (the file was blamed for both)
        given = {k for k, v in overrides.items() if v is not None}
        for keys, where in ((set(raw), f"in {path}"), (given, "given as overrides (--set)")):
            unknown = keys - known
            if unknown:
                raise ConfigError(f"unknown keys {where}: {sorted(unknown)}; known: {sorted(known)}")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**cls.with_tuples(raw))

    @staticmethod
    def with_tuples(raw: dict) -> dict:
        """``raw`` with its list-valued keys (TOML arrays, JSON lists) as the tuples the fields hold."""
        out = dict(raw)
        for k, kind in _TUPLE_KEYS.items():
            if k not in raw:
                continue
            v = raw[k]
            try:
                if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
                    raise TypeError
                out[k] = tuple(_element(kind, x) for x in v)
            except (TypeError, ValueError):
                raise ConfigError(f"training config: {k} must be a list of {kind.__name__} values, got {v!r}") from None
        return out

    def check(self) -> None:
        """ConfigError for a value no run can use, before anything is loaded (a zero crop or
        log_every failed deep inside torch or with a ZeroDivisionError; a zero batch trained on
        nothing)."""
        def bad(key: str, rule: str) -> ConfigError:
            return ConfigError(f"training config: {key} {rule}, got {getattr(self, key)!r}")

        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        def whole(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        for key in ("data_dir", "out_dir", "device", "init_from", "teacher"):
            if not isinstance(getattr(self, key), str):
                raise bad(key, "must be a string")
        for key in ("data_dir", "out_dir"):  # ("" was the current folder: an unset shell variable's)
            if not getattr(self, key).strip():
                raise bad(key, "must name a folder")
        for key in ("pre_editor", "teacher_bf16"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "must be true or false")
        for key in ("seed", "nice"):
            if not whole(getattr(self, key)):
                raise bad(key, "must be a whole number")
        if not -(2**63) <= self.seed <= 2**64 - 2:  # (torch's "Overflow when unpacking long long")
            raise bad("seed", "must be in [-2**63, 2**64 - 2] (torch's seed range; consumer steps use seed + 1)")
        if not (number(self.consumer_fraction) and 0 <= self.consumer_fraction <= 1):
            raise bad("consumer_fraction", "must be a number in [0, 1]")
        if not (number(self.ema_decay) and 0 <= self.ema_decay < 1):
            raise bad("ema_decay", "must be a number in [0, 1)")
        if not (whole(self.crop) and self.crop >= 64 and self.crop % 64 == 0):
            raise bad("crop", "must be a multiple of 64 (the model's total stride), at least 64")
        for key in ("batch", "log_every", "ckpt_every", "max_bad_steps"):
            if not (whole(getattr(self, key)) and getattr(self, key) >= 1):
                raise bad(key, "must be a whole number, at least 1")
        for key in ("steps", "warmup", "threads"):
            if not (whole(getattr(self, key)) and getattr(self, key) >= 0):
                raise bad(key, "must be a whole number, at least 0")
        if self.threads > MAX_THREADS:  # (100 000 crashed the process)
            raise bad("threads", f"must be at most {MAX_THREADS}")
        for key in ("lr", "teacher_scale", "consumer_teacher_scale"):
            v = getattr(self, key)
            if not (number(v) and v > 0):
                raise bad(key, "must be a finite number above 0")
        for key in ("lr_final", "aux_lr", "clip_grad", "w_pix", "w_tok", "w_rank", "time_limit_s",
                    "pre_editor_lr_mult"):
            v = getattr(self, key)
            if not (number(v) and v >= 0):
                raise bad(key, "must be a finite number, at least 0")
        if not all(number(v) and v > 0 for v in self.consumer_teacher_scales):
            raise bad("consumer_teacher_scales", "must be finite numbers above 0")
        # the teacher sees round(crop × scale) px, rounded up to its patch size (0 failed at the first step)
        for key, scales in (("teacher_scale", (self.teacher_scale,)),
                            ("consumer_teacher_scale", (self.consumer_teacher_scale,)),
                            ("consumer_teacher_scales", self.consumer_teacher_scales)):
            if any(round(self.crop * v) < 1 for v in scales):
                raise bad(key, f"leaves the teacher no pixel of the {self.crop}-px crop (crop × scale rounds to 0)")
        if self.consumer_fraction > 0:
            for side in self.consumer_short_sides or (self.consumer_short_side,):
                if not (whole(side) and side >= self.crop):
                    raise ConfigError(f"training config: consumer short side {side!r} is smaller than the crop "
                                      f"({self.crop}): no consumer-scale crop would fit")
        try:
            self.model_config()
        except ValueError as e:
            raise ConfigError(f"training config: {e}") from e
        if not all(v > 0 for v in self.lmbdas):  # (0 is a converted model's "unknown"; its inverse gain 1/0)
            raise bad("lmbdas", "must all be above 0 to train")
        if any(b <= a for a, b in zip(self.lmbdas, self.lmbdas[1:])):  # (descending flipped the quality scale)
            raise bad("lmbdas", "must be strictly increasing (quality 0: the smallest λ, the smallest files)")
        self._check_distortion(bad)
        torch_device(self.device, "training config: device")

    def _check_distortion(self, bad: Callable[[str, str], ConfigError]) -> None:
        """The loss has a distortion term, and the token terms a teacher whose settings fit it (the
        scales and, where it can be told without loading the teacher, its layers)."""
        for key in ("w_tok", "w_rank"):
            if getattr(self, key) and not self.teacher:  # (they were dropped: pixel MSE alone)
                raise bad(key, 'needs a teacher (teacher = "" trains on pixels alone): name one, or set it to 0')
        if not (self.w_pix or self.uses_teacher()):
            raise bad("w_pix", "must be above 0 when no token term is on (w_tok, w_rank with a teacher): "
                               "the loss would be the rate alone")
        if not self.uses_teacher():
            return
        for name, sc in _teacher_scales(self):
            if not 0 < sc <= 4:
                raise ConfigError(f"training config: {name} must be in (0, 4], got {sc}")
        _check_teacher_layers(self, _teacher_depth(self.teacher))

    def uses_teacher(self) -> bool:
        """Whether the loss has a token term (the teacher is loaded)."""
        return bool(self.teacher) and bool(self.w_tok or self.w_rank)

    def model_config(self) -> ModelConfig:
        return ModelConfig(N=self.N, M=self.M, num_levels=len(self.lmbdas), lmbdas=tuple(self.lmbdas),
                           pre_editor=self.pre_editor, N_a=self.N_a or None)


# the block counts of load_teacher's names, to check teacher_layers before the teacher loads
_TEACHER_DEPTHS = {"dinov2-vits14": 12, "dinov2_vits14": 12, "default": 12}


def _teacher_depth(teacher: str) -> int | None:
    """A teacher's number of blocks where it can be told without loading it (a known name, a Hugging
    Face directory's config.json, the block names in a .safetensors file); else None."""
    if teacher in _TEACHER_DEPTHS:
        return _TEACHER_DEPTHS[teacher]
    path = Path(teacher).expanduser()
    try:
        if path.is_dir():
            raw = json.loads((path / "config.json").read_text())
            depth = (raw.get("vision_config") or raw).get("num_hidden_layers")
            return depth if isinstance(depth, int) and depth > 0 else None
        if path.suffix == ".safetensors" and path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                blocks = {int(m.group(1)) for m in map(re.compile(r"blocks\.(\d+)\.").match, f.keys()) if m}
            return max(blocks) + 1 if blocks else None
    except Exception:  # noqa: BLE001 — unreadable or not such a file: load_teacher says so, later
        return None
    return None


def _check_teacher_layers(cfg: TrainConfig, depth: int | None) -> None:
    """ConfigError for a layer below 1 or past the teacher's ``depth`` (None: not known yet)."""
    beyond = [l for l in cfg.teacher_layers if not 1 <= l <= (depth or l)]
    if beyond:  # (they were dropped, and the model's recipe still named them)
        has = f"has layers 1..{depth}" if depth else "numbers its layers from 1"
        raise ConfigError(f"training config: teacher_layers {list(cfg.teacher_layers)}: the teacher "
                          f"{cfg.teacher!r} {has}, not {beyond}")


def _teacher_scales(cfg: TrainConfig) -> list[tuple[str, float]]:
    """The teacher scales a run uses, each with its key."""
    scales = [("teacher_scale", cfg.teacher_scale),
              *(("consumer_teacher_scales", v) for v in cfg.consumer_teacher_scales)]
    if cfg.consumer_fraction > 0 and not cfg.consumer_teacher_scales:  # the one consumer scale, then
        scales.append(("consumer_teacher_scale", cfg.consumer_teacher_scale))
    return scales


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr_final`` over the run."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, weight: float) -> None:
    """ema ← weight · ema + (1 − weight) · the model's value for each trained parameter; frozen
    parameters and buffers are copied (weight · v + (1 − weight) · v need not be v to the bit,
    and an encoder-only run must keep its decoder's bits: ``train_only``)."""
    for k, v in model.named_parameters():
        if v.requires_grad:
            ema[k].mul_(weight).add_(v.detach(), alpha=1 - weight)
        else:
            ema[k].copy_(v)
    for k, b in model.named_buffers():
        if k in ema:  # non-persistent buffers are not in the state dict
            ema[k].copy_(b)


def _trained(name: str, train_only: tuple[str, ...]) -> bool:
    return not train_only or name.split(".", 1)[0] in train_only


def freeze_untrained(model: MeanScaleHyperprior, train_only: tuple[str, ...]) -> None:
    """Freeze (requires_grad False) every parameter outside the parts ``train_only`` names
    (empty: none frozen). ConfigError for a name that is no part of the model."""
    known = ENCODER_PARTS + DECODER_PARTS
    bad = [n for n in train_only if n not in known]
    if bad:
        raise ConfigError(f"train_only: unknown part(s) {bad}; the model's parts are {list(known)}")
    if "pre_editor" in train_only and model.pre_editor is None:
        raise ConfigError("train_only names pre_editor, but the model has none (pre_editor = false)")
    for n, p in model.named_parameters():
        p.requires_grad_(_trained(n, train_only))


def _split_params(model: MeanScaleHyperprior):
    """(main, aux) trainable parameters: aux are the entropy bottleneck's quantiles."""
    main = [p for n, p in model.named_parameters() if not n.endswith("quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith("quantiles") and p.requires_grad]
    return main, aux


def _param_groups(model: MeanScaleHyperprior, cfg: "TrainConfig") -> list[dict]:
    """The main optimiser's groups: the codec, and the pre-editor (if any) at ``pre_editor_lr_mult``."""
    named = [(n, p) for n, p in model.named_parameters() if not n.endswith("quantiles") and p.requires_grad]
    groups = [{"params": [p for n, p in named if not n.startswith("pre_editor.")], "lr_mult": 1.0}]
    pre = [p for n, p in named if n.startswith("pre_editor.")]
    if pre:
        groups.append({"params": pre, "lr_mult": cfg.pre_editor_lr_mult})
    return groups


def _semantic_term(cfg: TrainConfig, device):
    """Per-item weighted semantic distortion w_tok·D_tok + w_rank·D_rank, or None (pixel loss only)."""
    if not cfg.teacher or (cfg.w_tok == 0 and cfg.w_rank == 0):
        return None
    for name, sc in _teacher_scales(cfg):  # (check() did; a direct call is checked here)
        if not 0 < sc <= 4:
            raise ConfigError(f"{name} must be in (0, 4], got {sc}")
    from ..teacher import load_teacher
    from ..teacher.base import warn_if_slow_bfloat16
    from .semantic import rank_distortion, teacher_size, token_distortion

    # its random initialisation (then overwritten) must not draw from the run's random state, which a
    # resume has restored by now: a resumed token-loss run drew other noise than an unbroken one
    with torch.random.fork_rng(devices=[]):
        teacher = load_teacher(cfg.teacher, device=device)
    _check_teacher_layers(cfg, teacher.num_layers)
    layers = list(cfg.teacher_layers)
    if cfg.teacher_bf16:
        warn_if_slow_bfloat16(device, "teacher_bf16")

    def tokens(img, size):
        # distances (cosines, singular values) are taken in float32 even when the teacher runs in bf16
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.teacher_bf16):
            return [teacher.patch_tokens(t).float() for t in teacher(img, layers, size=size)]

    def term(x, x_hat, scale: float | tuple[float, ...] = cfg.teacher_scale):
        if isinstance(scale, tuple):  # several views: the mean of their terms
            return sum(term(x, x_hat, sc) for sc in scale) / len(scale)
        size = teacher_size(round(x.shape[-2] * scale), round(x.shape[-1] * scale), teacher.patch_size)
        with torch.no_grad():
            ref = tokens(x, size)
        hat = tokens(x_hat.clamp(0, 1), size)
        d = cfg.w_tok * token_distortion(hat, ref)
        if cfg.w_rank:
            d = d + cfg.w_rank * rank_distortion(hat, ref)
        return d

    return term


# what a checkpoint can only be resumed with: the architecture and what is trained
_RESUME_KEYS = ("N", "M", "N_a", "lmbdas", "pre_editor", "train_only")
# what a resume may change without a word: how long and where it runs, how often it writes
_FREE_ON_RESUME = ("steps", "time_limit_s", "out_dir", "threads", "nice", "device", "log_every", "ckpt_every")
# what a resume cannot change (the model and random states come from the checkpoint): kept as saved
_KEPT_ON_RESUME = ("init_from", "seed")


def _resume_changes(saved: dict, cfg: TrainConfig) -> tuple[TrainConfig, str | None]:
    """``cfg`` with the keys a resume cannot change set back to the checkpoint's (``saved``: its
    config), and a note naming every key that differs (None: none): a changed init_from was
    ignored without a word while the model file recorded it, other changes went unsaid."""
    from dataclasses import replace

    now = asdict(cfg)
    differ = {k: (saved[k], now[k]) for k in now
              if k in saved and k not in _FREE_ON_RESUME + _RESUME_KEYS and _listed(saved[k]) != _listed(now[k])}
    if not differ:
        return cfg, None
    def change(k: str) -> str:
        return f"{k} {_listed(differ[k][0])!r} -> {_listed(differ[k][1])!r}"

    kept = {k: v for k, (v, _) in differ.items() if k in _KEPT_ON_RESUME}
    parts = []
    if len(kept) < len(differ):
        parts.append(f"the run goes on with {', '.join(change(k) for k in differ if k not in kept)}")
    if kept:
        parts.append(f"{', '.join(change(k) for k in kept)} not taken: a resume's model and random states come "
                     "from the checkpoint (kept as it has them)")
    return replace(cfg, **kept), "; ".join(parts)
# what a resume reads from a checkpoint ("consumer_rng", "cuda_rng", "ema", "lineage", "decodes_as" are optional)
_CKPT_KEYS = ("model", "opt", "aux_opt", "step", "sampler_rng", "torch_rng")


def _resume_state(ckpt: Path, cfg: TrainConfig, device: torch.device, complete: bool = True) -> dict:
    """The checkpoint a run resumes from, read and checked against ``cfg`` (ConfigError naming
    the file: a damaged one gave torch's traceback, one of another architecture a size mismatch,
    one without a key a resume reads a KeyError). ``complete=False``: that last check left out
    (a look at its config alone)."""
    try:
        state = torch.load(ckpt, map_location=device, weights_only=True)  # (never code a crafted file carries)
    except Exception as e:  # noqa: BLE001 — torch.load raises many kinds for a damaged file
        raise ConfigError(f"cannot resume from {ckpt}: not a readable checkpoint ({type(e).__name__}: "
                          f"{str(e)[:200]}); remove it to start afresh, or give another out_dir") from None
    if not isinstance(state, dict) or not {"model", "opt", "step"} <= set(state):
        raise ConfigError(f"cannot resume from {ckpt}: not a vlmcodec training checkpoint")
    missing = [k for k in _CKPT_KEYS if k not in state] if complete else []
    if missing:
        raise ConfigError(f"cannot resume from {ckpt}: it holds no {', '.join(missing)} (not a complete training "
                          "checkpoint); remove it to start afresh, or give another out_dir")
    config = state.get("config")
    saved: dict = config if isinstance(config, dict) else {}
    now = asdict(cfg)
    differ = [f"{k} {_listed(saved[k])} there, {_listed(now[k])} here" for k in _RESUME_KEYS
              if k in saved and _listed(saved[k]) != _listed(now[k])]
    if differ:
        raise ConfigError(f"cannot resume from {ckpt}: it was trained with another {'; '.join(differ)} "
                          "(resume with its config, or give another out_dir)")
    return state


def _cut_logs(csv_path: Path, jsonl_path: Path, step: int) -> None:
    """The logs without their rows past ``step`` (written whole or not at all)."""
    from ..files import write_whole

    if csv_path.exists():
        with open(csv_path, newline="") as f:
            rows = list(csv.reader(f))
        kept = rows[:1] + [r for r in rows[1:] if not (r and r[0].isdigit() and int(r[0]) > step)]
        if len(kept) != len(rows):
            buf = io.StringIO()
            csv.writer(buf).writerows(kept)
            write_whole(csv_path, buf.getvalue().encode())
    if jsonl_path.exists():
        lines = jsonl_path.read_text().splitlines(keepends=True)
        kept_lines = [ln for ln in lines if _logged_step(ln) <= step]
        if len(kept_lines) != len(lines):
            write_whole(jsonl_path, "".join(kept_lines).encode())


def _logged_step(line: str) -> int:
    try:
        value = json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return 0  # (kept: not a row of ours)
    return value if isinstance(value, int) else 0


def _listed(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _renice(target: int) -> None:
    """The process made at least ``target`` nice (0: left as it is), not ``target`` more each run
    (fit_steps_to_time's probe, then the run it sized); a negative target needs the permission."""
    delta = target - os.nice(0)
    if target == 0 or (delta < 0 and target > 0):
        return
    try:
        os.nice(delta)
    except PermissionError:
        raise ConfigError(f"training config: nice {target} raises the process's priority, which needs the "
                          "permission to (root, CAP_SYS_NICE); use 0 or above") from None


def _save_checkpoint(state: dict, ckpt: Path) -> None:
    """``state`` written to ``ckpt`` atomically; a failed write (a full disk: torch's "unexpected
    pos" RuntimeError) leaves no temporary file, the previous checkpoint as it was, and an OSError
    naming the checkpoint."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, ckpt)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if not isinstance(e, (RuntimeError, OSError)):
            raise
        why = (getattr(e, "strerror", None) or str(e)).strip().splitlines() or [type(e).__name__]
        try:
            free = f"; {shutil.disk_usage(ckpt.parent).free / 1e6:.1f} MB free there"
        except OSError:
            free = ""
        raise OSError(f"cannot write the checkpoint {ckpt}: {why[0]}{free}; the previous one is kept") from e


class _StopRequest:
    """Ctrl-C or SIGTERM during a run (in the main thread): the step in progress ends, the run then
    stops as at its time limit (checkpoint, model file) and the signal takes its course after
    (they lost up to ckpt_every steps and wrote no model file). A second signal acts at once."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                if hasattr(signal, name):
                    num = getattr(signal, name)
                    self._previous[num] = signal.signal(num, self._requested)
        return self

    def __exit__(self, *exc) -> None:
        for num, handler in self._previous.items():
            signal.signal(num, handler)  # type: ignore[arg-type]

    def _requested(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second: at once
            self.take_course(signum, frame)
        self.signum = signum
        tqdm.write("train: stopping after this step (checkpoint and model file); again to stop at once")

    def take_course(self, signum: int | None = None, frame=None) -> None:
        """The signal's own action, as it would have been without this request: the handler before
        it (the CLI's SIGTERM raises its KeyboardInterrupt), else KeyboardInterrupt."""
        signum = self.signum if signum is None else signum
        previous = self._previous.get(signum) if signum is not None else None
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL and signum is not None and signum == getattr(signal, "SIGTERM", None):
            signal.signal(signum, signal.SIG_DFL)  # (the process ends as the signal's default does)
            os.kill(os.getpid(), signum)
        raise KeyboardInterrupt


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train (or resume) and return the path of the last checkpoint."""
    cfg.check()
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():  # (mkdir's "[Errno 17] File exists")
        raise ConfigError(f"out_dir {out} is a file: training writes its checkpoints into a folder; name a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # (a parent that is a file: "[Errno 20] Not a directory", unnamed)
        raise ConfigError(f"cannot make out_dir {out}: {e.strerror or e}") from e
    with _run_lock(out), _StopRequest() as stop:
        ckpt = _train(cfg, out, progress, stop)
        if stop.signum is not None:  # stopped by a signal: saved, now its own action
            stop.take_course()
        return ckpt


@contextmanager
def _run_lock(out: Path):
    """An advisory lock on ``out/.lock`` for the run: a second run on the same out_dir is refused
    (two at once both finished, their log rows interleaved, last.pt the later one's)."""
    try:
        import fcntl
    except ImportError:  # (not POSIX: no lock)
        yield
        return
    f = open(out / ".lock", "a")
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ConfigError(f"another training run is using {out} (it holds {out / '.lock'}): wait for it "
                              "to end, or give another out_dir") from None
        yield
    finally:
        f.close()


def _schedule_notes(cfg: TrainConfig) -> list[str]:
    """What in the learning-rate schedule or the length of a run is most likely a mistake (each
    was taken without a word)."""
    notes = []
    if cfg.steps == 0:
        notes.append("steps 0: the model file written is the untrained (or init_from) model")
    elif cfg.warmup > cfg.steps:
        notes.append(f"warmup {cfg.warmup} > steps {cfg.steps}: the lr never reaches lr ({cfg.lr:g}), nor decays")
    if cfg.lr_final > cfg.lr:
        notes.append(f"lr_final {cfg.lr_final:g} > lr {cfg.lr:g}: the lr rises after the warm-up")
    return notes


def _train(cfg: TrainConfig, out: Path, progress: bool, stop: _StopRequest) -> Path:
    """``train``'s run, in ``out`` (made and locked)."""
    for note in _schedule_notes(cfg):
        warnings.warn(f"training config: {note}", VlmcodecWarning, stacklevel=3)
    _renice(cfg.nice)
    set_torch_threads(cfg.threads or None)
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    if device.type == "cuda":  # TF32 matmuls (convolutions already default to it in cuDNN)
        torch.backends.cuda.matmul.allow_tf32 = True
    model = MeanScaleHyperprior(cfg.model_config()).to(device)
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # (torch's stub lacks it)
    freeze_untrained(model, cfg.train_only)
    main_p, aux_p = _split_params(model)
    opt = torch.optim.Adam(_param_groups(model, cfg), lr=cfg.lr)
    # the quantiles (z's medians) are the decoder's: frozen with the entropy bottleneck
    aux_opt = torch.optim.Adam(aux_p, lr=cfg.aux_lr) if aux_p else None
    sampler = CropSampler(cfg.data_dir, cfg.crop, seed=cfg.seed)
    consumer = (CropSampler(cfg.data_dir, cfg.crop, seed=cfg.seed + 1, downscale=False,
                            short_side=cfg.consumer_short_sides or cfg.consumer_short_side)
                if cfg.consumer_fraction > 0 else None)
    step = 0
    ckpt = out / "last.pt"
    lineage: list[dict] = []  # the stages the init model came from (model metadata "train_lineage")
    decodes_as = None  # the init model's stream identity: kept if the run leaves its decoder as it was
    if not ckpt.exists() and cfg.init_from:
        lineage = load_weights_into(model, cfg.init_from)  # a model or weights file; checks shapes
        decodes_as = stream_identity_of(cfg.init_from)
    if ckpt.exists():
        state = _resume_state(ckpt, cfg, device)
        saved_config = state.get("config")
        cfg, changes = _resume_changes(saved_config if isinstance(saved_config, dict) else {}, cfg)
        if changes:
            warnings.warn(f"resuming from {ckpt} with another config: {changes}", VlmcodecWarning, stacklevel=3)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        # the optimisers' settings are this config's (loading put back the checkpoint's: a changed
        # pre_editor_lr_mult or aux_lr was announced and then not used)
        for group, fresh in zip(opt.param_groups, _param_groups(model, cfg)):
            group["lr_mult"] = fresh["lr_mult"]
        if aux_opt is not None:
            aux_opt.load_state_dict(state["aux_opt"])
            for group in aux_opt.param_groups:
                group["lr"] = cfg.aux_lr
        step = int(state["step"])
        # the RNG states are CPU byte tensors: map_location moved them to the run's device (a CUDA run
        # could not resume: "RNG state must be a torch.ByteTensor")
        sampler.gen.set_state(state["sampler_rng"].cpu())
        if consumer is not None and "consumer_rng" in state:
            consumer.gen.set_state(state["consumer_rng"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and state.get("cuda_rng") is not None:  # (the quantisation noise's, on a GPU)
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        lineage = state.get("lineage", [])
        decodes_as = _decodes_as(state)
    ema = None
    if cfg.ema_decay > 0:
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if ckpt.exists() and state.get("ema") is not None:
            for k, v in state["ema"].items():
                ema[k].copy_(v)
    saved_step = step if ckpt.exists() else None
    if saved_step is not None and step >= cfg.steps:  # (config.json then said fewer steps than last.pt)
        warnings.warn(f"{ckpt} is at step {step} already (steps {cfg.steps} given): nothing to train; the model "
                      f"files are written from it again, config.json is left as it was", VlmcodecWarning, stacklevel=2)
    else:
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    lmbdas = torch.tensor(cfg.lmbdas, device=device)
    semantic_term = _semantic_term(cfg, device)
    K = len(cfg.lmbdas)
    log_path = out / "log.csv"
    # "semantic": the weighted token/rank term alone; a resumed run keeps its log's columns
    # "skipped": the steps of the row's window whose loss or gradients were not finite
    columns = ["step", "lr", "loss", "bpp", "psnr", "semantic", "aux", "sec_per_step", "skipped"]
    if log_path.exists():
        with open(log_path, newline="") as f:
            columns = next(csv.reader(f), []) or columns
    # rows logged after the checkpoint this run resumes from (a run stopped by Ctrl-C or a crash
    # between checkpoints) are logged again: they go, so that each step is in the logs once
    _cut_logs(log_path, out / "log.jsonl", step)
    new_log = not log_path.exists() or log_path.stat().st_size == 0  # (0 bytes: killed before its header)
    log_f = open(log_path, "a", newline="")
    # the same rows as JSON lines (numbers as numbers, all columns), for dashboards and scripts
    json_f = open(out / "log.jsonl", "a")
    log = csv.writer(log_f)
    if new_log:
        log.writerow(columns)
        log_f.flush()
    # into a log file or pipe (nohup, CI) the bar redraws once a minute, not ten times a second
    interactive = is_terminal(sys.stderr)
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True,
               mininterval=0.1 if interactive else 60.0)
    model.train()
    acc = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "semantic": 0.0, "aux": 0.0, "n": 0, "skipped": 0}
    t0 = t_start = time.perf_counter()
    bad_in_a_row = 0
    last_good = step  # the last step whose update was made

    def diverged(why: str) -> TrainingDivergedError:
        log_f.flush()
        json_f.flush()
        bar.close()
        kept = (f"{ckpt} holds step {saved_step}, intact" if saved_step is not None
                else "no checkpoint was written")
        if saved_step is not None and last_good < saved_step:
            kept += f" (the last step without a bad value: {last_good})"
        how = "Resume from it" if saved_step is not None else "Start again"
        return TrainingDivergedError(f"training diverged: {why}; {kept}. {how} with a lower lr, a "
                                     "clip_grad, or a larger max_bad_steps")

    def save() -> None:
        bad = not_finite(model.state_dict())
        if bad:  # never over the last good checkpoint
            raise diverged(f"weights not finite at step {step} ({', '.join(bad[:3])})")
        _save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(),
                          "aux_opt": aux_opt.state_dict() if aux_opt is not None else None, "ema": ema,
                          "step": step, "config": asdict(cfg), "sampler_rng": sampler.gen.get_state(),
                          "torch_rng": torch.get_rng_state(), "lineage": lineage,
                          # a CUDA run's noise comes from the device's generator: without it a resumed
                          # slice replayed the seed's noise from its start
                          "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                          "decodes_as": ((decodes_as.stream_fingerprint.hex(), decodes_as.decoder_digest.hex())
                                         if decodes_as else None),
                          **({"consumer_rng": consumer.gen.get_state()} if consumer is not None else {})}, ckpt)

    def log_window() -> None:
        """The steps since the last row as one row of both logs (the lr: their last step's)."""
        nonlocal acc, t0
        n = acc["n"]
        dt = (time.perf_counter() - t0) / (n + acc["skipped"])
        row: dict[str, int | str] = {"step": step, "lr": f"{lr_at(cfg, step - 1):.3g}", "sec_per_step": f"{dt:.3f}",
                                     "skipped": str(acc["skipped"])}
        if n:  # (a window of skipped steps alone has no figures)
            psnr = 10 * math.log10(1.0 / max(acc["mse"] / n, 1e-12))
            row |= {"loss": f"{acc['loss']/n:.4f}", "bpp": f"{acc['bpp']/n:.4f}", "psnr": f"{psnr:.3f}",
                    "semantic": f"{acc['semantic']/n:.4f}", "aux": f"{acc['aux']/n:.2f}"}
            # off a terminal the bar redraws at its mininterval alone (set_postfix redrew it at each row)
            bar.set_postfix(loss=f"{acc['loss']/n:.3f}", bpp=f"{acc['bpp']/n:.3f}", psnr=f"{psnr:.2f}",
                            refresh=interactive)
        log.writerow([row.get(c, "") for c in columns])
        log_f.flush()
        json_f.write(json.dumps({k: int(v) if k in ("step", "skipped") else float(v) for k, v in row.items()
                                 if k in columns} | {"time": round(time.time(), 3)}) + "\n")
        json_f.flush()
        acc = {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "semantic": 0.0, "aux": 0.0, "n": 0, "skipped": 0}
        t0 = time.perf_counter()

    while step < cfg.steps:
        if stop.signum is not None:
            tqdm.write(f"train: stopped at step {step}; the checkpoint and model file hold it; resume with the "
                       "same out_dir")
            break
        if cfg.time_limit_s > 0 and time.perf_counter() - t_start > cfg.time_limit_s:
            tqdm.write(f"train: time limit of {cfg.time_limit_s:g} s reached at step {step}; "
                       "resume with the same out_dir")
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step) * g.get("lr_mult", 1.0)
        # a deterministic share of consumer-scale steps (resumes without extra state)
        at_consumer = int((step + 1) * cfg.consumer_fraction) > int(step * cfg.consumer_fraction)
        src, t_scale = ((consumer, tuple(cfg.consumer_teacher_scales) or cfg.consumer_teacher_scale)
                        if consumer is not None and at_consumer
                        else (sampler, cfg.teacher_scale))
        x = src.sample(cfg.batch).to(device).contiguous(memory_format=torch.channels_last)
        # every level in every batch of at least K items; a smaller or uneven batch rotates through
        # them over consecutive steps (the same levels as arange % K when batch is a multiple of K)
        levels = (torch.arange(cfg.batch, device=device) + step * cfg.batch) % K
        outp = model(x, levels.float())
        sem = semantic_term(x, outp["x_hat"], t_scale) if semantic_term else None
        losses = rd_loss(outp, x, lmbdas[levels], cfg.w_pix, sem)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = (torch.nn.utils.clip_grad_norm_(main_p, cfg.clip_grad) if cfg.clip_grad > 0
                     else torch.nn.utils.get_total_norm([p.grad for p in main_p if p.grad is not None]))
        # (one host sync per step, as the logged loss below already makes)
        loss_value = losses["loss"].item()
        # a step whose loss or gradients are not finite makes no update; the aux loss is the
        # quantiles' own, measured after the main update (CompressAI's order): not finite, its
        # update alone is skipped, and the step counts as bad too (the main update broke the model)
        main_ok = math.isfinite(loss_value) and math.isfinite(float(grad_norm))
        if main_ok:
            opt.step()
        aux_ok = True
        if aux_opt is not None:
            aux = model.aux_loss()
            aux_opt.zero_grad(set_to_none=True)
            aux.backward()
            aux_ok = math.isfinite(aux.item())
            if main_ok and aux_ok:
                aux_opt.step()
        else:
            with torch.no_grad():
                aux = model.aux_loss()
        step += 1
        if main_ok and aux_ok:
            bad_in_a_row, last_good = 0, step
            if ema is not None:
                ema_update(ema, model, cfg.ema_decay)
            acc["loss"] += loss_value; acc["bpp"] += losses["bpp"].item()
            acc["mse"] += losses["mse"].item(); acc["semantic"] += losses["semantic"].item()
            acc["aux"] += aux.item(); acc["n"] += 1
        else:
            bad_in_a_row += 1
            acc["skipped"] += 1
            opt.zero_grad(set_to_none=True)
            what = ("loss or gradients not finite; the step is skipped" if not main_ok else
                    "aux loss not finite after the step's update; the aux update is skipped")
            if bad_in_a_row == 1:
                tqdm.write(f"train: step {step}: {what}")
            if bad_in_a_row >= cfg.max_bad_steps:
                raise diverged(f"loss, gradients or aux loss not finite at {bad_in_a_row} steps in a row "
                               f"(steps {step - bad_in_a_row + 1}–{step}, max_bad_steps {cfg.max_bad_steps})")
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            log_window()
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save()
            saved_step = step
    if acc["n"] + acc["skipped"]:
        log_window()  # stopped by the time limit mid-window: its steps are in the checkpoint below
    if saved_step != step:
        save()  # stopped by the time limit between checkpoints
    bar.close()
    log_f.close()
    json_f.close()
    from ..models.checkpoint import save_model

    # with an average: model.* is the average, model_last.* the last step's weights
    outputs = ([("model", "weights", True), ("model_last", "weights_last", False)] if ema is not None
               else [("model", "weights", False)])
    for model_name, weights_name, average in outputs:
        final, meta = _checkpoint_model(ckpt, average=average)
        try:
            # an encoder-only run (train_only) keeps the init model's decoder: its streams carry that
            # model's fingerprint and decode there (save_model checks the decoders are equal)
            save_model(final, out / f"{model_name}.safetensors", extra_metadata=meta, decodes_as=decodes_as)
            stale = out / f"{weights_name}.safetensors"
        except ImportError as e:  # the C++ rANS extension is not built here: CDF tables cannot be made
            weights = out / f"{weights_name}.safetensors"
            save_weights(final, weights, extra_metadata=meta)
            tqdm.write(f"train: {e}; wrote {weights} instead — make the model file where vlmcodec is "
                       f"installed: vlmcodec convert --from-weights FILE -o model.safetensors")
            stale = out / f"{model_name}.safetensors"
        stale.unlink(missing_ok=True)  # an earlier run's file of the other kind, of fewer steps
    if ema is None:  # an earlier run's last weights beside this run's model file (it kept an average)
        for name in ("model_last", "weights_last"):
            (out / f"{name}.safetensors").unlink(missing_ok=True)
    return ckpt


def _checkpoint_model(ckpt: str | Path, average: bool | None = None,
                      state: dict | None = None) -> tuple[MeanScaleHyperprior, dict]:
    """A checkpoint's model and metadata: its weight average where it has one (``average`` None
    or True; True without one is an error), else the last step's weights (``state``: the
    checkpoint already read)."""
    state = _checkpoint_state(ckpt) if state is None else state
    cfg = TrainConfig(**TrainConfig.with_tuples(state["config"]))
    model = MeanScaleHyperprior(cfg.model_config())
    has_average = state.get("ema") is not None
    if average and not has_average:
        raise ConfigError(f"{ckpt} holds no weight average (ema_decay was 0)")
    use_average = has_average if average is None else average
    model.load_state_dict(state["ema"] if use_average else state["model"])
    meta = {"train_steps": state["step"], "train_recipe": json.dumps(state["config"]),
            **({"train_weights": f"average (ema_decay {cfg.ema_decay:g})"} if use_average else {})}
    if state.get("lineage"):
        meta["train_lineage"] = json.dumps(state["lineage"])
    return model, meta


def _checkpoint_state(ckpt: str | Path) -> dict:
    """A training checkpoint's state, read as tensors and plain values only (never code a crafted
    file could carry); ConfigError for a file that is none."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"training checkpoint not found: {ckpt}") from None
    except Exception as e:  # noqa: BLE001 — torch.load raises many kinds for a file that is none
        why = (str(e).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"{ckpt} is not a readable training checkpoint ({type(e).__name__}"
                          f"{': ' + why if why else ''}); a training run's OUT_DIR/last.pt is one") from None
    if not isinstance(state, dict) or not {"model", "step", "config"} <= set(state):
        raise ConfigError(f"{ckpt} is not a vlmcodec training checkpoint (last.pt)")
    return state


def export_checkpoint(ckpt: str | Path, out: str | Path, average: bool | None = None) -> bytes:
    """Write the model of a training checkpoint as a vlmcodec model file (its weight average where
    it keeps one, unless ``average=False``); returns its fingerprint. An encoder-only run's model
    shares its init model's decoder, as the run's own model file does."""
    from ..models.checkpoint import save_model

    state = _checkpoint_state(ckpt)  # (read once: the model and the decoder it shares)
    model, meta = _checkpoint_model(ckpt, average, state)
    return save_model(model, out, extra_metadata=meta, decodes_as=_decodes_as(state))


def _decodes_as(state: dict) -> StreamIdentity | None:
    """The stream identity a checkpoint's run keeps (an encoder-only run's init model's), or None."""
    shared = state.get("decodes_as")
    return StreamIdentity(*map(bytes.fromhex, shared)) if shared else None


def export_weights(ckpt: str | Path, out: str | Path, dtype: torch.dtype = torch.float16,
                   average: bool | None = None) -> None:
    """Write the model of a training checkpoint as a weights-only file (no C++ extension needed;
    its weight average where it keeps one, unless ``average=False``)."""
    model, meta = _checkpoint_model(ckpt, average)
    save_weights(model, out, dtype, meta)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="vlmcodec train", description="Train the codec (resumable).")
    p.add_argument("--config", required=True, help="TOML training config")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--out-dir", help="override the output folder")
    p.add_argument("--time-limit", type=float, metavar="SECONDS", help="stop after this much wall time")
    a = p.parse_args(argv)
    cfg = TrainConfig.from_toml(a.config, steps=a.steps, out_dir=a.out_dir, time_limit_s=a.time_limit)
    train(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
