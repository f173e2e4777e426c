"""LWM-Spectro's mixture of experts (paper §IV): a router and top-1 routing over experts.

One :class:`~spectrumfm.models.lwm_spectro.LWMSpectro` expert per protocol family (``wifi``,
``lte``, ``nr``), each pretrained on its family; a small :class:`Router` trained with the
experts frozen, on a balanced mix, to name the family; at inference only the chosen expert
runs on each image, so the cost is one expert plus the router, not all of them (§IV-D).

A trained mixture is one checkpoint (``arch`` :data:`MOE_ARCH`): :meth:`LWMSpectroMoE.
checkpoint_config` and :meth:`LWMSpectroMoE.from_config` are what
:func:`spectrumfm.train.save_pretrained` and :func:`~spectrumfm.train.load_pretrained` read
and write. It is not in the model registry: a mixture is assembled from trained experts
(:mod:`spectrumfm.train.lwm_moe`), never built from a size name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

from . import create_model
from .lwm_spectro import FEATURE_RECIPE, LWMSpectro, _DictConfig
from .patch_transformer import PatchEncoder, grid_problems

# The features every expert and the router must share: one image is computed per input and
# given to all of them, so they must agree on what it means.
_FEATURE_FIELDS = ("n_frames", "n_fft", "win_length", "hop", "window", "spec_mean", "spec_std")

# The ``arch`` of a mixture's config.json; its experts' own registry name is inside.
MOE_ARCH = "lwm-spectro-moe"


@dataclass
class RouterConfig(_DictConfig):
    """The gating network of §IV-B: a 2-layer Transformer with d = 64, GAP, linear, softmax.

    The image size and patch side must match the experts' (4 x 4 patches of 128 x 128: 1024
    tokens); at d = 64 and 2 layers the router takes 0.20 GFLOP per image against a
    paper-size expert's 4.8 GFLOP, and 0.17 M parameters against 2.5 M.
    """

    n_experts: int = 3         # wifi, lte, nr
    n_frames: int = 128        # T, as the experts
    n_fft: int = 128           # K, as the experts
    patch_size: int = 4
    d_model: int = 64          # the paper's router width
    ff_dim: int = 256          # 4 d
    n_heads: int = 4           # head width 16, as the experts'
    n_layers: int = 2          # the paper's router depth
    dropout: float = 0.0

    def __post_init__(self):
        problems = grid_problems(self.n_frames, self.n_fft, self.patch_size, self.d_model,
                                 self.n_heads)
        if min(self.n_experts, self.ff_dim, self.n_layers, self.n_frames, self.n_fft) < 1:
            problems.append("n_experts, ff_dim, n_layers, n_frames and n_fft must be positive")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout {self.dropout} must lie in [0, 1)")
        if problems:
            raise ValueError("bad router config: " + "; ".join(problems))


class Router(nn.Module):
    """Images (B, T, K) -> expert logits (B, n_experts): patch encoder, mean over all tokens
    (the GAP over time and frequency of §IV-B), linear. Train with cross-entropy against the
    family label; :meth:`probs` gives the softmax weights g."""

    def __init__(self, config: RouterConfig | None = None):
        super().__init__()
        self.config = cfg = config or RouterConfig()
        self.encoder = PatchEncoder(cfg.n_frames, cfg.n_fft, cfg.patch_size, cfg.d_model,
                                    cfg.n_heads, cfg.ff_dim, cfg.n_layers, cfg.dropout)
        self.classifier = nn.Linear(cfg.d_model, cfg.n_experts)

    def forward(self, images: Tensor) -> Tensor:
        """(B, T, K) -> logits (B, n_experts)."""
        return self.classifier(self.encoder(images).mean(dim=1))      # GAP: (B, d)

    def probs(self, images: Tensor) -> Tensor:
        """(B, T, K) -> expert weights g (B, n_experts), rows summing to 1."""
        return self.forward(images).float().softmax(dim=-1)


class LWMSpectroMoE(nn.Module):
    """Top-1 mixture of LWM-Spectro experts: the router picks one expert per image and only
    that expert encodes it.

    Args:
        experts: family name -> expert, in the order of the router's outputs (e.g.
            ``{"wifi": ..., "lte": ..., "nr": ...}``). All must share the feature parameters
            (including the normalisation statistics, computed once over the mixed corpus),
            the patch grid and d, so their tokens are interchangeable for a head.
        router: a :class:`Router` with one output per expert and the experts' image size.
        expert_arch: the experts' registry name (e.g. ``"lwm-spectro-tiny"``), which a
            checkpoint needs to rebuild them; None for a mixture that is never saved.
    """

    feature_recipe = FEATURE_RECIPE

    def __init__(self, experts: Mapping[str, LWMSpectro], router: Router,
                 expert_arch: str | None = None):
        super().__init__()
        if not experts:
            raise ValueError("an MoE needs at least one expert")
        names = list(experts)
        if router.config.n_experts != len(names):
            raise ValueError(f"router has {router.config.n_experts} outputs for "
                             f"{len(names)} experts {names}")
        first = experts[names[0]].config
        for name in names[1:]:
            c = experts[name].config
            for field in _FEATURE_FIELDS + ("patch_size", "d_model"):
                if getattr(c, field) != getattr(first, field):
                    raise ValueError(f"expert {name!r} has {field} = {getattr(c, field)!r} "
                                     f"but {names[0]!r} has {getattr(first, field)!r}")
        if (router.config.n_frames, router.config.n_fft) != (first.n_frames, first.n_fft):
            raise ValueError(f"router reads {router.config.n_frames} x {router.config.n_fft} "
                             f"images, the experts {first.n_frames} x {first.n_fft}")
        self.expert_names = names
        self.expert_arch = expert_arch
        self.experts = nn.ModuleDict(experts)
        self.router = router

    def checkpoint_config(self) -> dict:
        """The ``model_config`` of a checkpoint: the experts' registry name, their names in
        router order, each expert's full config (features included) and the router's."""
        if self.expert_arch is None:
            raise ValueError("this mixture was built without expert_arch; it cannot be saved")
        return {"expert_arch": self.expert_arch, "expert_names": list(self.expert_names),
                "experts": {n: self.experts[n].config.to_dict() for n in self.expert_names},
                "router": self.router.config.to_dict()}

    @classmethod
    def from_config(cls, config: Mapping) -> "LWMSpectroMoE":
        """A mixture with fresh weights from :meth:`checkpoint_config`'s dict.

        Raises:
            ValueError: a missing or malformed entry, or experts and router that do not fit
                together (the constructor's checks), naming what is wrong.
        """
        want = {"expert_arch", "expert_names", "experts", "router"}
        if not isinstance(config, Mapping) or set(config) != want:
            got = sorted(config) if isinstance(config, Mapping) else type(config).__name__
            raise ValueError(f"a mixture's model_config needs exactly {sorted(want)}, got {got}")
        names, configs = config["expert_names"], config["experts"]
        if not isinstance(configs, Mapping) or list(names) != list(configs):
            raise ValueError(f"expert_names {names} do not name the experts' configs in order")
        experts = {}
        for name in names:
            expert = create_model(config["expert_arch"], **configs[name])
            if not isinstance(expert, LWMSpectro):
                raise ValueError(f"expert_arch {config['expert_arch']!r} is not LWM-Spectro")
            experts[name] = expert
        return cls(experts, Router(RouterConfig.from_dict(config["router"])),
                   expert_arch=config["expert_arch"])

    @staticmethod
    def checkpoint_features(config: Mapping) -> dict:
        """The ``features`` entry of config.json: the experts' own (they share them), so
        code that reads an LWM-Spectro checkpoint's input reads a mixture's the same way."""
        first = config["experts"][config["expert_names"][0]]
        return LWMSpectro.checkpoint_features(first)

    @property
    def config(self):
        """The experts' shared config (features, grid, d) of the first expert."""
        return self.experts[self.expert_names[0]].config

    def features(self, iq: Tensor) -> Tensor:
        """IQ -> the images every expert and the router read (see ``LWMSpectro.features``)."""
        return self.experts[self.expert_names[0]].features(iq)

    def active_parameters(self) -> int:
        """Parameters one input runs through: the router plus the largest expert's encoder
        (the experts' pretraining decoders and projections never run here)."""
        count = lambda m: sum(p.numel() for p in m.parameters())          # noqa: E731
        return count(self.router) + max(count(e.encoder) for e in self.experts.values())

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Route each image and encode it with its top-1 expert only (§IV-B c).

        Images are grouped by the chosen expert, so each expert runs once per batch on its
        own images and an expert nobody chose does not run at all.

        Args:
            images: (B, T, K) normalised spectrograms.

        Returns:
            ``(tokens, probs)``: tokens (B, N, d) from each image's chosen expert, and the
            router's weights g (B, n_experts) float32; the choice is ``probs.argmax(-1)``.
        """
        probs = self.router.probs(images)                                # (B, E)
        choice = probs.argmax(dim=-1)                                    # (B,)
        parts = []
        for k, name in enumerate(self.expert_names):
            idx = (choice == k).nonzero(as_tuple=True)[0]
            if idx.numel():
                parts.append((idx, self.experts[name].forward_encoder(images[idx])))
        c = self.config
        if not parts:          # an empty batch
            return images.new_empty(0, c.n_tokens, c.d_model), probs
        out = parts[0][1].new_empty(images.shape[0], *parts[0][1].shape[1:])   # (B, N, d)
        for idx, tokens in parts:
            out[idx] = tokens
        return out, probs
