"""Mean-scale hyperprior (Minnen, Ballé, Toderici 2018, without the context model) with a
variable-rate adaptive layer (per-channel gain / inverse gain for K anchor qualities).

::

    x ─► [P] ─► g_a ─► y ─►·gain(q)─►┬─► h_a ─► z ─► Q ─► ẑ ─► h_s ─► (μ, σ)
                              │                               │
                              └────► Q(y − μ) + μ = ŷ ◄───────┘
    x̂ ◄─ g_s ◄─ ŷ·inv_gain(q)

P is the optional semantic pre-editor (``ModelConfig.pre_editor``), run at encode time only.
Layer names match CompressAI's ``MeanScaleHyperprior`` so its checkpoints convert; the gains
are extra parameters (all ones = CompressAI's fixed-rate model).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from ..checks import check_in_range, is_real
from ..entropy import EntropyBottleneck, GaussianConditional
from ..errors import ConfigError
from ..layers import GDN, conv, deconv, making_meta
from .pre_editor import PreEditor


def level_neighbours(levels: Tensor, num_levels: int) -> tuple[Tensor, Tensor, Tensor]:
    """For continuous levels [B] (clamped to [0, K−1]): the anchors below and above and the
    position t in [0, 1] between them, in ``levels``' dtype; what geometric interpolation
    between anchors (the gains, the refinement's λ) needs."""
    K = num_levels
    levels = levels.clamp(0, K - 1)
    lo = torch.floor(levels).long().clamp(max=max(K - 2, 0))
    hi = (lo + 1).clamp(max=K - 1)
    return lo, hi, levels - lo.to(levels.dtype)


# the model's trainable parts by what reads them: the encoder's alone, and the decoder's (the
# entropy bottleneck's CDFs and medians, h_s, g_s and the inverse gains are what decoding reads,
# with GaussianConditional's scale table, which has no parameters)
ENCODER_PARTS = ("pre_editor", "g_a", "gain", "h_a")
DECODER_PARTS = ("entropy_bottleneck", "h_s", "g_s", "inv_gain")


MAX_CHANNELS = 4096  # as the C library's model reader (N, M)
MAX_LEVELS = 1024   # quality anchors, likewise
# the most weights a model's four networks may have (1 GiB in float32): ~40x CompressAI's largest
# (~25 M). A model file is refused above it before any tensor is made: N = M = 4096 passes the
# channel bound and would allocate 5·10^9 weights
MAX_NETWORK_WEIGHTS = 2**28


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (stored in checkpoint metadata, never inferred from keys)."""

    N: int = 128
    M: int = 192
    num_levels: int = 1
    lmbdas: tuple[float, ...] = field(default=(0.0130,))
    arch: str = "mean_scale_hyperprior"
    pre_editor: bool = False
    N_a: int | None = None  # g_a's width, when wider than N (an encoder-side change: g_s reads the same y)

    def __post_init__(self):
        # a model file's metadata is checked here before any tensor is made: a damaged or edited
        # one must not allocate a network of 10^10 weights or fail deep inside torch
        def channels(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_CHANNELS

        if self.arch != "mean_scale_hyperprior":
            raise ConfigError(f"unknown architecture {self.arch!r} (this build has 'mean_scale_hyperprior')")
        for name in ("N", "M"):
            if not channels(getattr(self, name)):
                raise ConfigError(f"{name} must be a channel count in [1, {MAX_CHANNELS}], got {getattr(self, name)!r}")
        if self.N_a is not None and not channels(self.N_a):
            raise ConfigError(f"N_a must be a channel count in [1, {MAX_CHANNELS}] or None, got {self.N_a!r}")
        K = self.num_levels
        if not (isinstance(K, int) and not isinstance(K, bool) and 1 <= K <= MAX_LEVELS):
            raise ConfigError(f"num_levels must be in [1, {MAX_LEVELS}], got {K!r}")
        def lmbda(v) -> bool:  # (0: unknown, as a converted CompressAI model's)
            try:
                return is_real(v) and math.isfinite(v) and v >= 0
            except OverflowError:  # an integer beyond float's range
                return False

        if not self.lmbdas or not all(lmbda(v) for v in self.lmbdas):
            raise ConfigError(f"lmbdas must be finite numbers, none negative, got {self.lmbdas!r}")
        if not isinstance(self.pre_editor, bool):
            raise ConfigError(f"pre_editor must be true or false, got {self.pre_editor!r}")
        if self.N_a == self.N:  # the same network as no N_a: the same dict, the same fingerprint
            object.__setattr__(self, "N_a", None)
        if self.network_weights() > MAX_NETWORK_WEIGHTS:
            raise ConfigError(f"N={self.N}, M={self.M}{f', N_a={self.N_a}' if self.N_a else ''}: g_a, g_s, h_a "
                              f"and h_s would hold {self.network_weights():,} weights, more than {MAX_NETWORK_WEIGHTS:,}")

    def network_weights(self) -> int:
        """The weights (and biases) of g_a, g_s, h_a and h_s this architecture has, from its sizes
        alone (as MeanScaleHyperprior makes them; a test checks that they agree)."""
        A, N, M = self.analysis_width, self.N, self.M

        def conv(i: int, o: int, k: int = 5) -> int:
            return i * o * k * k + o

        def gdn(c: int) -> int:
            return c * c + c

        g_a = conv(3, A) + conv(A, A) * 2 + conv(A, M) + gdn(A) * 3
        g_s = conv(M, N) + conv(N, N) * 2 + conv(N, 3) + gdn(N) * 3
        h_a = conv(M, N, 3) + conv(N, N) * 2
        h_s = conv(N, M) + conv(M, M * 3 // 2) + conv(M * 3 // 2, M * 2, 3)
        return g_a + g_s + h_a + h_s

    @property
    def analysis_width(self) -> int:
        return self.N_a or self.N

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lmbdas"] = list(self.lmbdas)
        # absent when off / unset, so fingerprints of models without them are stable
        if not self.pre_editor:
            del d["pre_editor"]
        if self.N_a is None:
            del d["N_a"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """The config ``to_dict`` wrote (a model file's metadata); ConfigError for ``lmbdas`` that is
        not a list of numbers (a string, an object, booleans were coerced: "55" read as (5.0, 5.0))."""
        d = dict(d)
        lmbdas = d.get("lmbdas", (0.013,))
        if not isinstance(lmbdas, (list, tuple)) or not all(is_real(v) for v in lmbdas):
            raise ConfigError(f"lmbdas must be finite numbers, none negative, in a list, got {lmbdas!r:.100}")
        try:
            d["lmbdas"] = tuple(float(v) for v in lmbdas)
        except OverflowError:  # an integer beyond float's range
            raise ConfigError("lmbdas must be finite numbers, none negative, got an integer beyond float's "
                              "range") from None
        return cls(**{k: d[k] for k in ("N", "M", "num_levels", "lmbdas", "arch", "pre_editor", "N_a") if k in d})


class MeanScaleHyperprior(nn.Module):
    """The codec network. ``forward`` is the training path (noise / straight-through)."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        N, M, K = self.config.N, self.config.M, self.config.num_levels
        self.N, self.M = N, M
        A = self.config.analysis_width
        self.g_a = nn.Sequential(conv(3, A), GDN(A), conv(A, A), GDN(A), conv(A, A), GDN(A), conv(A, M))
        self.g_s = nn.Sequential(
            deconv(M, N), GDN(N, inverse=True), deconv(N, N), GDN(N, inverse=True),
            deconv(N, N), GDN(N, inverse=True), deconv(N, 3),
        )
        self.h_a = nn.Sequential(
            conv(M, N, stride=1, kernel_size=3), nn.LeakyReLU(inplace=True),
            conv(N, N), nn.LeakyReLU(inplace=True), conv(N, N),
        )
        self.h_s = nn.Sequential(
            deconv(N, M), nn.LeakyReLU(inplace=True),
            deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            conv(M * 3 // 2, M * 2, stride=1, kernel_size=3),
        )
        self.pre_editor = PreEditor() if self.config.pre_editor else None
        self.entropy_bottleneck = EntropyBottleneck(N)
        self.gaussian_conditional = GaussianConditional()
        # Level k's gain starts as a scalar step ~sqrt(λ_k / λ_max): a plain change of quantizer step.
        if making_meta():  # (no values: layers.making_meta)
            self.gain, self.inv_gain = nn.Parameter(torch.empty(K, M)), nn.Parameter(torch.empty(K, M))
            return
        lm = torch.tensor(self.config.lmbdas[:K] if len(self.config.lmbdas) >= K else [1.0] * K)
        init = torch.sqrt(lm / lm.max()).reshape(K, 1).repeat(1, M)
        self.gain = nn.Parameter(init.clone())
        self.inv_gain = nn.Parameter(1.0 / init)

    # -- variable rate ---------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return self.config.num_levels

    def level_of_quality(self, quality: float) -> float:
        """Map quality in [0, 100] (0 = smallest files) onto the anchor range [0, K−1]."""
        return check_in_range("quality", quality, 0, 100) / 100.0 * (self.num_levels - 1)

    def gains(self, levels: Tensor) -> tuple[Tensor, Tensor]:
        """Per-item (gain, inv_gain) [B, M] for continuous levels [B] in [0, K−1], interpolated
        geometrically between adjacent anchors."""
        # on the gains' device (a model on a GPU, levels made on the CPU by the codec)
        lo, hi, t = level_neighbours(levels.to(self.gain.device, self.gain.dtype), self.num_levels)
        t = t.unsqueeze(1)
        g, ig = torch.abs(self.gain), torch.abs(self.inv_gain)
        gain = torch.exp((1 - t) * torch.log(g[lo]) + t * torch.log(g[hi]))
        inv = torch.exp((1 - t) * torch.log(ig[lo]) + t * torch.log(ig[hi]))
        return gain, inv

    # -- training forward -----------------------------------------------------------------
    def forward(self, x: Tensor, levels: Tensor | None = None) -> dict[str, Tensor]:
        """x in [0, 1], (B, 3, H, W) with H, W multiples of 64. Returns x_hat, likelihoods, y."""
        if levels is None:
            levels = torch.full((x.shape[0],), float(self.num_levels - 1), device=x.device)
        gain, inv_gain = self.gains(levels)
        # clamped as every backend clamps it at encode time (zero gradient where it clips)
        x_in = self.pre_editor(x).clamp(0, 1) if self.pre_editor is not None else x
        y = self.g_a(x_in) * gain[:, :, None, None]
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_bottleneck(z)
        scales, means = self.h_s(z_hat).chunk(2, 1)
        _, y_dec, y_lik = self.gaussian_conditional(y, scales, means)
        x_hat = self.g_s(y_dec * inv_gain[:, :, None, None])
        return {"x_hat": x_hat, "x_edit": x_in, "y": y, "z": z, "likelihoods": {"y": y_lik, "z": z_lik}}

    def aux_loss(self) -> Tensor:
        return self.entropy_bottleneck.aux_loss()
