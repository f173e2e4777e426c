"""Downstream tasks over the SpectrumFM encoder (paper §II-C): heads and losses.

Five tasks, each producing per-window logits ``(B, n_classes)`` from a :class:`TaskModel`:

* ``modulation``, ``technology``: one class per modulation / wireless technology;
* ``sensing``: two classes, vacant and occupied;
* ``anomaly``: two classes, normal and anomalous;
* ``snr-mobility``: LWM-Spectro's joint SNR bin x mobility regime, six classes
  (:data:`spectrumfm.data.readers.SNR_MOBILITY_CLASSES`).

The classification tasks read the encoder tokens with a GRU then a linear layer
(:class:`~spectrumfm.models.GRUHead`), as the paper does for sensing and technology and the
issue asks for modulation as well; LWM-Spectro's head is the residual 1D CNN of its paper's
§III-F (:class:`~spectrumfm.models.ResCNNHead`). Anomaly detection has no labelled anomalies
to train on in the paper's setting (its baseline is an autoencoder), so its score is the
pretraining decoder's reconstruction error: the encoder, adapted on *normal* windows with the
pretraining objectives, reconstructs normal signals well and anything else worse. See
:class:`ReconstructionAnomalyHead` (SpectrumFM's IQ samples) and
:class:`PatchReconstructionAnomalyHead` (LWM-Spectro's spectrogram patches) for how that
error becomes a probability in [0, 1].
"""

from __future__ import annotations

import abc
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectrumfm.data.readers import TASKS
from spectrumfm.models import GRUHead, LinearHead, ResCNNHead

__all__ = ["TASKS", "POSITIVE", "BINARY_TASKS", "TaskModel", "ReconstructionAnomalyHead",
           "PatchReconstructionAnomalyHead", "build_head", "head_config", "head_from_config",
           "fit_logistic", "predict"]

# One list of task names for the data readers and the heads: ``open_dataset(spec,
# task=...)`` relabels a dataset for its task, and puts the class a binary task detects
# (occupied, anomalous) second, so its probability is column POSITIVE of the softmax.
POSITIVE = 1
BINARY_TASKS = ("sensing", "anomaly")


def fit_logistic(x, y, ridge: float = 1e-3, iters: int = 50) -> tuple[float, float]:
    """Fit ``P(y = 1 | x) = sigmoid(a x + b)`` by Newton's method (Platt scaling).

    A small ridge on ``a`` keeps it finite when the classes separate perfectly, which the
    unpenalised fit would chase to infinity. Returns ``(a, b)``.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    X = np.stack([x, np.ones_like(x)], axis=1)                     # (n, 2)
    w = np.zeros(2)
    penalty = np.diag([ridge * len(x), 0.0])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -500, 500)))
        grad = X.T @ (p - y) + penalty @ w
        hess = (X * (p * (1 - p))[:, None]).T @ X + penalty + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])


class _CalibratedErrorHead(nn.Module, metaclass=abc.ABCMeta):
    """A reconstruction error made a probability: ``raw_score`` (subclasses) -> logistic.

    Calibration maps ``log(raw)`` through a logistic ``sigmoid(scale * log(raw) + bias)``:
    fitted on validation scores with their normal / anomalous labels when the validation
    split has both (:meth:`calibrate`), else set so that the probability is 0.5 at the 99th
    percentile of normal scores with one standard deviation of log-score per unit of logit.
    The log makes the fit insensitive to the error's overall scale, which varies by orders
    of magnitude between backbones.
    """

    reads_reconstruction = True

    def _register_calibration(self) -> None:
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("bias", torch.tensor(0.0))

    @abc.abstractmethod
    def raw_score(self, encoder, feats: Tensor) -> Tensor:
        """float32 (B,) reconstruction error of each input (the subclass's model)."""

    def logit(self, raw: Tensor) -> Tensor:
        return self.scale * torch.log(raw.clamp_min(1e-12)) + self.bias

    def forward(self, encoder, feats: Tensor) -> Tensor:
        """feats -> logits (B, 2): softmax gives (normal, anomalous) probabilities."""
        z = self.logit(self.raw_score(encoder, feats))
        return torch.stack([torch.zeros_like(z), z], dim=-1)

    @torch.no_grad()
    def calibrate(self, raw, anomalous) -> str:
        """Set scale and bias from validation raw scores and their labels; says how."""
        log_s = np.log(np.maximum(np.asarray(raw, dtype=np.float64), 1e-12))
        y = np.asarray(anomalous).astype(bool)
        if y.any() and (~y).any():
            a, b = fit_logistic(log_s, y)
            how = f"logistic fit on {len(y)} validation windows ({int(y.sum())} anomalous)"
        else:
            normal = log_s[~y] if (~y).any() else log_s
            spread = float(normal.std()) or 1.0
            a, b = 1.0 / spread, -float(np.quantile(normal, 0.99)) / spread
            how = (f"no anomalies in validation: 0.5 at the 99th percentile of "
                   f"{len(normal)} normal scores")
        self.scale.fill_(a)
        self.bias.fill_(b)
        return how


class ReconstructionAnomalyHead(_CalibratedErrorHead):
    """Anomaly probability from the pretraining decoder's reconstruction error.

    The raw score of a window is its mean squared reconstruction error (eq. 13) over *all*
    its samples: the samples are split into ``n_masks`` fixed disjoint groups (a random
    permutation cut in pieces, drawn once from ``seed``), each group is hidden in turn and
    reconstructed. With ``n_masks = round(1 / mask_ratio)`` each pass hides the share of
    samples the decoder was trained on. Fixed masks make the score a deterministic function
    of the window alone, the same in a batch of one (live) or of 256 (evaluation), which a
    random mask per call would not be. Calibration: see :class:`_CalibratedErrorHead`.
    """

    def __init__(self, window_len: int, n_masks: int = 7, seed: int = 0):
        super().__init__()
        if not 1 <= n_masks <= window_len:
            raise ValueError(f"n_masks must lie in 1..{window_len}, got {n_masks}")
        self.window_len, self.n_masks, self.seed = int(window_len), int(n_masks), int(seed)
        perm = torch.randperm(window_len, generator=torch.Generator().manual_seed(seed))
        masks = torch.zeros(n_masks, window_len, dtype=torch.bool)
        for k, group in enumerate(perm.tensor_split(n_masks)):
            masks[k, group] = True
        self.register_buffer("masks", masks)                               # (K, N)
        self._register_calibration()

    def raw_score(self, encoder, feats: Tensor) -> Tensor:
        """feats (B, N, F) -> float32 (B,) mean squared error norm over the N samples."""
        B, N, nf = feats.shape
        if N != self.window_len:
            raise ValueError(f"anomaly head was built for windows of {self.window_len}, got {N}")
        K = self.n_masks
        masked = feats[None].masked_fill(self.masks[:, None, :, None], 0.0)  # (K, B, N, F)
        pred = encoder.decoder(encoder.forward_encoder(masked.reshape(K * B, N, nf)))
        err = (pred.float().reshape(K, B, N, nf) - feats.float()[None]).pow(2).sum(-1)
        # Each sample is hidden in exactly one of the K passes: keep that pass's error.
        return torch.where(self.masks[:, None, :], err, 0.0).sum(dim=(0, 2)) / N


class PatchReconstructionAnomalyHead(_CalibratedErrorHead):
    """LWM-Spectro's anomaly probability: its masked-patch reconstruction error (eq. 17).

    The decoder was trained to fill in ``mask_ratio`` (70 %) of the patches, so each pass
    hides that share: ``n_masks`` fixed masks, each a cyclic run of ``round(mask_ratio * N)``
    positions of one random permutation (drawn once from ``seed``) starting ``k N / n_masks``
    along it. With ``n_masks = ceil(1 / mask_ratio)`` (2 at 70 %) every patch is hidden in at
    least one pass. The raw score is the mean squared error per pixel over every (pass,
    hidden patch) pair: deterministic per image, whatever the batch. Calibration: see
    :class:`_CalibratedErrorHead`.

    Args:
        n_tokens: N, patches per image (``LWMSpectroConfig.n_tokens``).
        mask_ratio: share hidden per pass, the backbone's ``mask_ratio``.
        n_masks: passes; default ``ceil(1 / mask_ratio)``.
        seed: of the permutation.
    """

    def __init__(self, n_tokens: int, mask_ratio: float = 0.7, n_masks: int | None = None,
                 seed: int = 0):
        super().__init__()
        n_masked = round(mask_ratio * n_tokens)
        n_masks = math.ceil(1 / mask_ratio) if n_masks is None and mask_ratio > 0 else n_masks
        if not 1 <= n_masked <= n_tokens - 1 or n_masks is None or n_masks < 1:
            raise ValueError(f"mask_ratio {mask_ratio} and n_masks {n_masks} must hide between "
                             f"1 and {n_tokens - 1} of {n_tokens} patches in at least one pass")
        self.n_tokens, self.mask_ratio = int(n_tokens), float(mask_ratio)
        self.n_masks, self.seed = int(n_masks), int(seed)
        perm = torch.randperm(n_tokens, generator=torch.Generator().manual_seed(seed))
        masks = torch.zeros(n_masks, n_tokens, dtype=torch.bool)
        for k in range(n_masks):
            start = k * n_tokens // n_masks
            masks[k, perm[(start + torch.arange(n_masked)) % n_tokens]] = True
        self.register_buffer("masks", masks)                               # (K, N)
        self._register_calibration()

    def raw_score(self, encoder, images: Tensor) -> Tensor:
        """images (B, T, K) -> float32 (B,) mean squared error per hidden pixel."""
        B, K = images.shape[0], self.n_masks
        target = encoder.patchify(images).float()                          # (B, N, P^2)
        if target.shape[1] != self.n_tokens:
            raise ValueError(f"anomaly head was built for {self.n_tokens} patches, got "
                             f"{target.shape[1]}")
        tiled = images[None].expand(K, *images.shape).reshape(K * B, *images.shape[1:])
        mask = self.masks[:, None, :].expand(K, B, self.n_tokens)          # (K, B, N)
        pred = encoder.decoder(encoder.forward_encoder(tiled, mask.reshape(K * B, -1)))
        err = (pred.float().reshape(K, B, *target.shape[1:]) - target[None]).pow(2).mean(-1)
        return torch.where(mask, err, 0.0).sum(dim=(0, 2)) / mask.sum(dim=(0, 2))


def build_head(task: str, d_model: int, n_classes: int, *, window_len: int = 128,
               mask_ratio: float = 0.15, kind: str | None = None, **kw) -> nn.Module:
    """The head of ``task``: GRU + linear for classification, reconstruction for anomaly.

    ``kind`` ("gru", "linear" or "rescnn") overrides the classification head, e.g. for a
    cheap probe or LWM-Spectro's §III-F head.
    """
    if task == "anomaly":
        return ReconstructionAnomalyHead(window_len, n_masks=max(1, round(1 / mask_ratio)), **kw)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if (kind or "gru") == "gru":
        return GRUHead(d_model, n_classes, **kw)
    if kind == "linear":
        return LinearHead(d_model, n_classes, **kw)
    if kind == "rescnn":
        return ResCNNHead(d_model, n_classes, **kw)
    raise ValueError(f"unknown head kind {kind!r} (gru, linear or rescnn)")


def head_config(head: nn.Module) -> dict:
    """What rebuilds ``head`` with :func:`head_from_config` (saved in adapter_config.json)."""
    if isinstance(head, GRUHead):
        return {"type": "gru", "d_model": head.gru.input_size, "n_classes":
                head.classifier.out_features, "hidden": head.gru.hidden_size,
                "dropout": head.dropout.p}
    if isinstance(head, LinearHead):
        return {"type": "linear", "d_model": head.classifier.in_features,
                "n_classes": head.classifier.out_features, "dropout": head.dropout.p}
    if isinstance(head, ResCNNHead):
        return {"type": "rescnn", "d_model": head.d_model,
                "n_classes": head.classifier.out_features,
                "channels": head.classifier.in_features, "n_blocks": len(head.res_blocks),
                "kernel_size": head.stem.kernel_size[0], "dropout": head.dropout.p}
    if isinstance(head, ReconstructionAnomalyHead):
        return {"type": "reconstruction", "window_len": head.window_len,
                "n_masks": head.n_masks, "seed": head.seed}
    if isinstance(head, PatchReconstructionAnomalyHead):
        return {"type": "patch-reconstruction", "n_tokens": head.n_tokens,
                "mask_ratio": head.mask_ratio, "n_masks": head.n_masks, "seed": head.seed}
    raise ValueError(f"cannot describe head {type(head).__name__}")


def head_from_config(cfg: dict) -> nn.Module:
    """Inverse of :func:`head_config`; ``ValueError`` on an unknown type or field."""
    cfg = dict(cfg)
    kind = cfg.pop("type", None)
    builders = {"gru": GRUHead, "linear": LinearHead, "rescnn": ResCNNHead,
                "reconstruction": ReconstructionAnomalyHead,
                "patch-reconstruction": PatchReconstructionAnomalyHead}
    if kind not in builders:
        raise ValueError(f"unknown head type {kind!r}")
    try:
        return builders[kind](**cfg)
    except TypeError as e:
        raise ValueError(f"bad {kind} head config {cfg}: {e}") from None


class TaskModel(nn.Module):
    """An encoder (plain, LoRA-wrapped or merged SpectrumFM or LWM-Spectro) with a task head.

    ``forward(feats) -> logits (B, n_classes)``, feats the encoder's input (SpectrumFM's
    ``(B, N, F)`` windows, LWM-Spectro's ``(B, T, K)`` images). The encoder must provide
    ``forward_encoder`` (and, for anomaly, ``decoder`` and ``forward_pretrain``).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, task: str):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        self.encoder, self.head, self.task = encoder, head, task

    def forward(self, feats: Tensor) -> Tensor:
        if getattr(self.head, "reads_reconstruction", False):
            return self.head(self.encoder, feats)
        return self.head(self.encoder.forward_encoder(feats))

    def loss(self, feats: Tensor, labels: Tensor, generator=None) -> Tensor:
        """Training loss of one batch: cross-entropy on the logits, or for anomaly the
        pretraining objectives (masked reconstruction + next slot, masks drawn from
        ``generator``) with ``labels`` unused: the caller passes normal windows only."""
        if self.task == "anomaly":
            return self.encoder.forward_pretrain(feats, generator=generator)["loss"]
        return F.cross_entropy(self(feats).float(), labels)

    @torch.no_grad()
    def probabilities(self, feats: Tensor) -> Tensor:
        """(B, N, F) -> (B, n_classes) class probabilities, float32."""
        return torch.softmax(self(feats).float(), dim=-1)



@torch.no_grad()
def predict(task_model: TaskModel, data, indices, *, batch_size: int = 256, device="cpu",
            fn=None, features=None) -> np.ndarray:
    """Run ``task_model`` over the windows ``indices`` of an IQDataset, a batch at a time.

    Args:
        fn: ``fn(task_model, feats) -> (B, ...) tensor``; default the class probabilities.
        features: the feature function (:func:`spectrumfm.features.features_for`); default
            :func:`~spectrumfm.features.iq_features`.

    Returns:
        float32 numpy array, one row per index, in the order of ``indices``.
    """
    from spectrumfm.features import iq_features

    features = features or iq_features
    task_model.eval()
    idx = np.asarray(indices, dtype=np.int64)
    fn = fn or (lambda m, feats: m.probabilities(feats))
    out = []
    for lo in range(0, len(idx), batch_size):
        iq, _, _ = data.batch(idx[lo:lo + batch_size])
        feats = features(torch.from_numpy(iq).to(device))
        out.append(fn(task_model, feats).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,), np.float32)
