"""LWM-Spectro's few-shot protocol (paper §V): N labelled examples per class, four learners.

For every N per class and trial, a stratified train / validation / test split of a dataset
the encoder never saw (:func:`few_shot_split`), then the paper's three methods and a linear
probe trained on the train part, early-stopped on the validation part and scored on the test
part:

* ``frozen`` (the paper's "LWM"): the pretrained encoder frozen, the §III-F head
  (:class:`~spectrumfm.models.ResCNNHead`) trained on top. The head's first step is the mean
  over tokens, so each example's pooled embedding is computed once per run
  (:class:`EmbeddingCache`) and the head trains on ``(B, 1, d)`` inputs: the same maths as
  on the full tokens, at the cost of a head alone.
* ``finetuned`` ("LWM_FT"): encoder and head trained jointly from a fresh copy of the
  pretrained weights for each (N, trial), the encoder at a tenth of the head's learning
  rate (the paper's "reduced learning rates").
* ``linear`` (not in the paper): the same frozen embeddings, layer-normalised, into one linear
  layer. The §III-F head convolves along the d channels of the pooled vector and averages
  over them, which reads shift-invariant patterns of the embedding rather than its
  coordinates; the linear probe tells whether a weak ``frozen`` score is the encoder's or
  that head's.
* ``cnn`` ("Deep CNN"): :class:`~spectrumfm.models.spectrogram_cnn.SpectrogramCNN` from
  scratch on the same normalised images.

All use AdamW with weight decay 5e-4 and at most 8 epochs with early stopping on the
validation loss, the best epoch's weights restored (the paper's settings). Where a pass over
the training set is fewer than ``min_batches`` batches it is cycled in fresh random orders to
fill them: at 2 examples per class one pass is one batch, and 8 optimiser steps leave every
learner at its initialisation, which would measure the step count rather than the features.

A mixture of experts (:class:`~spectrumfm.models.LWMSpectroMoE`) is encoded through
:func:`encode` by each image's routed expert; every method but ``finetuned`` is offered for it.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectrumfm.errors import InputError
from spectrumfm.metrics import classification_report
from spectrumfm.models import LinearHead, LWMSpectro, LWMSpectroMoE, ResCNNHead
from spectrumfm.models.spectrogram_cnn import SpectrogramCNN

from .engine import NonFiniteLossError

__all__ = ["METHODS", "EMBEDDING_METHODS", "FewShotConfig", "LinearProbe", "TooFewExamplesError",
           "few_shot_split", "encoder_kind", "encode", "ExampleImages", "EmbeddingCache",
           "train_and_score", "run_trial", "summarise"]

METHODS = ("frozen", "linear", "finetuned", "cnn")
_SEED_INDEX = {"frozen": 0, "finetuned": 1, "cnn": 2, "linear": 3}   # fixed as methods are added
EMBEDDING_METHODS = ("frozen", "linear")     # the frozen encoder's cached embeddings


@dataclass
class FewShotConfig:
    """Optimisation of every method; defaults are the paper's where it gives them (§V-B)."""

    epochs: int = 8              # "8 epochs with early stopping"
    batch_size: int = 32         # the same for every method; smaller sets train full-batch
    lr: float = 1e-3             # head and CNN; the project's fine-tuning rate
    encoder_lr_ratio: float = 0.1  # finetuned: encoder at lr * this ("reduced" rates)
    weight_decay: float = 5e-4   # the paper's AdamW decay (not on biases and norms)
    patience: int = 3            # epochs without a better val loss; the engine's default
    min_batches: int = 10        # per epoch, the training set cycled to fill them (module doc)
    grad_clip: float = 1.0       # the engine's guard against rare spikes
    eval_batch: int = 256        # images per forward pass outside training


# ---- the split --------------------------------------------------------------------------

class TooFewExamplesError(InputError):
    """A class without room for the split's counts.

    ``problem`` names the class and the counts, ``largest`` is the largest training count
    per class that fits beside the same test and validation counts (0: none).
    """

    def __init__(self, problem: str, largest: int, hint: str = ""):
        self.problem, self.largest = problem, largest
        tail = (f"the largest N/class that fits is {largest}" if largest >= 1 else
                "no N/class fits (lower the test or validation count)")
        super().__init__(f"{problem}; {tail}{hint}")


def _leading(sizes: np.ndarray, need: int) -> int | None:
    """How many leading groups hold at least ``need`` examples; None if all of them do not."""
    k = int(np.searchsorted(np.cumsum(sizes), need))
    return None if k == len(sizes) else k + 1


def few_shot_split(labels, groups, n_train: int, n_val: int, n_test: int,
                   rng: np.random.Generator, classes=None):
    """Exactly ``n_train``, ``n_val`` and ``n_test`` examples of every class, disjoint by group.

    Each class's groups (e.g. ``IQDataset.frame_index``: the examples of one frame must not
    sit on both sides of a split) are put in one random order, each group's examples too.
    The test part takes groups from the front of that order, then the validation part the
    next ones; the training part takes groups from the back. A group that is only partly
    needed is cut and its rest left unused, so every part holds its count exactly and no
    group serves two parts.

    The random draws depend only on the labels and groups, never on the counts, so
    generators in the same state give the same order, and therefore the same test part,
    a validation part nested in any larger one, and a training part nested in any larger
    one: the curves over N of one trial compare nested training sets on one test set.

    A group belongs to the class of its first example (in dataset order); examples of
    another class in it (no reader makes such groups) are never used.

    Args:
        labels: (n,) integer class of each example.
        groups: (n,) group ids, or None for one group per example.
        n_train, n_val, n_test: examples per class in each part, each at least 1.
        rng: the trial's random generator.
        classes: class names in label order; every one must have enough examples. Default:
            the labels present.

    Returns:
        ``(train, val, test)`` sorted int64 index arrays.

    Raises:
        InputError: fewer than two classes, or a class without room for the three counts
            (naming it, its counts and the largest ``n_train`` that fits).
    """
    labels = np.asarray(labels, dtype=np.int64).ravel()
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups).ravel()
    if len(groups) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(groups)} group ids")
    if min(n_train, n_val, n_test) < 1:
        raise ValueError(f"counts must be >= 1, got {n_train}, {n_val}, {n_test}")
    codes = range(len(classes)) if classes is not None else np.unique(labels).tolist()
    names = [str(c) for c in classes] if classes is not None else [str(c) for c in codes]
    if len(codes) < 2:
        what = f"only one class ({names[0]!r})" if names else "no examples"
        raise InputError(f"{what}: few-shot classification needs at least two classes")
    # Examples by group, in a random order within each group: group g is
    # order[starts[g]:ends[g]]. Vectorised, as a dataset may hold a million examples; only
    # the groups a part takes are visited one by one.
    order = np.lexsort((rng.random(len(labels)), groups))
    _, starts = np.unique(groups[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    group_class = labels[np.minimum.reduceat(order, starts)] if len(order) else starts
    usable = labels[order] == np.repeat(group_class, ends - starts)
    group_size = np.add.reduceat(usable, starts) if len(order) else starts

    def examples(chosen, n: int) -> np.ndarray:
        rows = np.concatenate([order[starts[g]:ends[g]][usable[starts[g]:ends[g]]]
                               for g in chosen])
        return rows[:n]

    parts, plans = ([], [], []), []
    for code, name in zip(codes, names):
        chosen = np.flatnonzero(group_class == code)
        chosen = chosen[rng.permutation(len(chosen))]
        sizes = group_size[chosen]
        k_test = _leading(sizes, n_test)
        k_val = None if k_test is None else _leading(sizes[k_test:], n_val)
        front = len(chosen) if k_val is None else k_test + k_val
        k_train = _leading(sizes[front:][::-1], n_train)
        plans.append((name, int(sizes.sum()), len(chosen), int(sizes[front:].sum()), k_train))
        if k_train is not None:
            parts[0].append(examples(chosen[front:][::-1][:k_train], n_train))
            parts[1].append(examples(chosen[k_test:front], n_val))
            parts[2].append(examples(chosen[:k_test], n_test))
    failing = [p for p in plans if p[4] is None]
    if failing:
        name, n_ex, n_groups, _, _ = failing[0]
        fits = min(p[3] for p in plans)
        in_groups = f" in {n_groups} groups" if n_groups != n_ex else ""
        raise TooFewExamplesError(f"class {name!r} has {n_ex} examples{in_groups}, too few "
                                  f"for {n_test} test + {n_val} validation + {n_train} "
                                  "training per class", fits)
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


# ---- encoders, images and embeddings ----------------------------------------------------

def encoder_kind(model: nn.Module) -> str | None:
    """``"lwm"`` for an LWM-Spectro encoder, ``"moe"`` for a mixture of them, else None."""
    if isinstance(model, LWMSpectroMoE):
        return "moe"
    return "lwm" if isinstance(model, LWMSpectro) else None


def encode(model: nn.Module, images: Tensor) -> Tensor:
    """Tokens (B, N, d) of images (B, T, K): an MoE's come from each image's routed expert."""
    if isinstance(model, LWMSpectroMoE):
        return model(images)[0]
    return model.forward_encoder(images)


class ExampleImages:
    """Normalised spectrogram images of a dataset's examples, each computed once (on the
    device, kept as float32 on the CPU): one trial's methods and N values share them."""

    def __init__(self, dataset, model: nn.Module, device: torch.device, batch_size: int = 256):
        self.dataset, self.model, self.device, self.batch = dataset, model, device, batch_size
        self._store: dict[int, Tensor] = {}

    @torch.no_grad()
    def __call__(self, indices) -> Tensor:
        """(len(indices), T, K) images in the order of ``indices``."""
        missing = sorted({int(i) for i in indices} - self._store.keys())
        for start in range(0, len(missing), self.batch):
            rows = np.asarray(missing[start:start + self.batch], dtype=np.int64)
            iq = torch.from_numpy(self.dataset.batch(rows)[0]).to(self.device)
            for i, image in zip(rows.tolist(), self.model.features(iq).float().cpu()):
                self._store[i] = image
        return torch.stack([self._store[int(i)] for i in indices])


class EmbeddingCache:
    """Mean-pooled tokens of the frozen encoder (eval mode, no grad), each example's computed
    once per run: a trial's N values and the later trials reuse them."""

    def __init__(self, model: nn.Module, device: torch.device, batch_size: int = 256):
        self.model, self.device, self.batch = model, device, batch_size
        self._store: dict[int, Tensor] = {}

    @torch.no_grad()
    def __call__(self, indices, images: ExampleImages) -> Tensor:
        """(len(indices), 1, d) embeddings, the ``(B, N, d)`` head input with N = 1."""
        self.model.eval()
        missing = sorted({int(i) for i in indices} - self._store.keys())
        for start in range(0, len(missing), self.batch):
            rows = missing[start:start + self.batch]
            tokens = encode(self.model, images(rows).to(self.device))            # (B, N, d)
            for i, z in zip(rows, tokens.float().mean(dim=1).cpu()):
                self._store[i] = z
        return torch.stack([self._store[int(i)] for i in indices])[:, None, :]


# ---- training ---------------------------------------------------------------------------

class _FineTuned(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, images: Tensor) -> Tensor:
        return self.head(encode(self.encoder, images))


class LinearProbe(nn.Sequential):
    """Tokens (B, N, d) -> LayerNorm (no gain) -> the project's :class:`LinearHead` (mean over
    tokens, linear): the textbook probe of a frozen encoder. The norm is per example, so no
    batch statistics are needed at 2 examples per class; on the cached (B, 1, d) embeddings
    it normalises the pooled vector itself."""

    def __init__(self, d_model: int, n_classes: int):
        super().__init__(nn.LayerNorm(d_model, elementwise_affine=False),
                         LinearHead(d_model, n_classes))


def _groups(module: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    # Decay on biases and norm gains only pulls them to zero (as the engine's _param_groups).
    params = [p for p in module.parameters() if p.requires_grad]
    return [g for g in ({"params": [p for p in params if p.ndim >= 2], "lr": lr,
                         "weight_decay": weight_decay},
                        {"params": [p for p in params if p.ndim < 2], "lr": lr,
                         "weight_decay": 0.0}) if g["params"]]


@torch.no_grad()
def _logits(net: nn.Module, x: Tensor, device, batch: int) -> Tensor:
    net.eval()
    return torch.cat([net(x[s:s + batch].to(device)).float().cpu()
                      for s in range(0, len(x), batch)])


def train_and_score(net: nn.Module, param_groups: list[dict], data: dict, classes,
                    cfg: FewShotConfig, device: torch.device, seed: int) -> dict:
    """Train ``net`` on ``data["train"]``, keep its best epoch on ``data["val"]``, score it
    on ``data["test"]``.

    A plain loop rather than :func:`spectrumfm.train.fit`: a run here is a few hundred
    steps repeated hundreds of times, and the engine writes its training state to disk every
    epoch, warms the rate up and restores no best weights, none of which fits.

    Args:
        net: inputs -> logits (B, C), already on ``device``.
        param_groups: AdamW groups, each with its ``lr`` and ``weight_decay``.
        data: ``{"train" | "val" | "test": (inputs, int64 labels)}``, CPU tensors.
        classes: names in label order, for the metrics.
        seed: batch order (and, set by the caller before building ``net``, its init).

    Returns:
        ``{"accuracy", "macro_f1", "epochs", "best_epoch", "steps", "seconds"}``.

    Raises:
        NonFiniteLossError: a NaN or inf training loss, or no finite validation loss.
    """
    t0 = time.perf_counter()
    (x, y), (vx, vy), (tx, ty) = data["train"], data["val"], data["test"]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(param_groups)
    n = len(x)
    b = min(cfg.batch_size, n)
    steps_per_epoch = max(math.ceil(n / b), cfg.min_batches)
    best, best_epoch, best_state, bad, steps, epoch = math.inf, 0, None, 0, 0, 0
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = torch.cat([torch.randperm(n, generator=gen)
                           for _ in range(math.ceil(steps_per_epoch * b / n))])
        for s in range(steps_per_epoch):
            rows = order[s * b:(s + 1) * b]
            loss = F.cross_entropy(net(x[rows].to(device)).float(), y[rows].to(device))
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"non-finite training loss at epoch {epoch}, step "
                                         f"{s + 1}; lower --lr or check the data for NaN/inf")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            steps += 1
        val = float(F.cross_entropy(_logits(net, vx, device, cfg.eval_batch), vy))
        if val < best:
            best, best_epoch, bad = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if cfg.patience and bad >= cfg.patience:
                break
    if best_state is None:
        raise NonFiniteLossError("no finite validation loss in any epoch; lower --lr or check "
                                 "the data for NaN/inf")
    net.load_state_dict(best_state)
    pred = _logits(net, tx, device, cfg.eval_batch).argmax(dim=1).numpy()
    report = classification_report(ty.numpy(), pred, classes)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "epochs": epoch,
            "best_epoch": best_epoch, "steps": steps, "seconds": time.perf_counter() - t0}


def _run_seed(seed: int, trial: int, n: int, method: str) -> int:
    return int(np.random.SeedSequence([seed, trial, n, _SEED_INDEX[method]])
               .generate_state(1)[0])


def run_trial(model: nn.Module, dataset, splits: dict, methods, cfg: FewShotConfig,
              device: torch.device, *, trial: int, seed: int = 0,
              embeddings: EmbeddingCache | None = None) -> Iterator[tuple[int, str, dict]]:
    """Train and score every method at every N of one trial.

    Args:
        model: the pretrained encoder (an LWM-Spectro or a mixture), on ``device``; never
            modified (``finetuned`` trains a copy).
        dataset: the examples (``batch(idx) -> (iq, labels, snr)``, ``labels``, ``classes``).
        splits: N per class -> ``(train, val, test)`` from :func:`few_shot_split`.
        methods: names from :data:`METHODS`.
        embeddings: the run's frozen-encoder cache, shared across trials.

    Yields:
        ``(N, method, result of train_and_score)``, N in increasing order.
    """
    classes = list(dataset.classes)
    labels = torch.from_numpy(np.asarray(dataset.labels, dtype=np.int64))
    if "finetuned" in methods and encoder_kind(model) == "moe":
        raise ValueError("fine-tuning a mixture of experts is not offered")
    images = ExampleImages(dataset, model, device, cfg.eval_batch)
    embeddings = embeddings or EmbeddingCache(model, device, cfg.eval_batch)
    d = model.config.d_model
    for n in sorted(splits):
        idx = dict(zip(("train", "val", "test"), splits[n]))
        image_data = None
        for method in methods:
            t0 = time.perf_counter()
            torch.manual_seed(_run_seed(seed, trial, n, method))
            if method in EMBEDDING_METHODS:
                data = {k: (embeddings(v, images), labels[v]) for k, v in idx.items()}
                net = (ResCNNHead(d, len(classes)) if method == "frozen"
                       else LinearProbe(d, len(classes))).to(device)
                groups = _groups(net, cfg.lr, cfg.weight_decay)
            elif method in ("finetuned", "cnn"):
                image_data = data = image_data or {k: (images(v), labels[v])
                                                   for k, v in idx.items()}
                if method == "finetuned":
                    net = _FineTuned(copy.deepcopy(model), ResCNNHead(d, len(classes)))
                    net = net.to(device).requires_grad_(True)
                    groups = (_groups(net.encoder, cfg.lr * cfg.encoder_lr_ratio,
                                      cfg.weight_decay)
                              + _groups(net.head, cfg.lr, cfg.weight_decay))
                else:
                    net = SpectrogramCNN(len(classes)).to(device)
                    groups = _groups(net, cfg.lr, cfg.weight_decay)
            else:
                raise ValueError(f"unknown method {method!r}; methods: {METHODS}")
            result = train_and_score(net, groups, data, classes, cfg, device,
                                     _run_seed(seed, trial, n, method))
            # Wall time with the data preparation: the frozen method's embeddings are its
            # encoder cost, the first image method's images theirs.
            result["train_seconds"], result["seconds"] = (result["seconds"],
                                                          time.perf_counter() - t0)
            del net
            yield n, method, result


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and sample std (None from one trial) of accuracy and macro-F1 over trials.

    Args:
        runs: ``{"n", "method", "trial", "accuracy", "macro_f1", "seconds", ...}`` each.

    Returns:
        one row per (N, method) present, N increasing then in :data:`METHODS` order:
        ``{"n", "method", "trials", "accuracy_mean", "accuracy_std", "macro_f1_mean",
        "macro_f1_std", "seconds_mean"}``.
    """
    rows = []
    keys = sorted({(r["n"], r["method"]) for r in runs},
                  key=lambda k: (k[0], METHODS.index(k[1]) if k[1] in METHODS else 99))
    for n, method in keys:
        sel = [r for r in runs if (r["n"], r["method"]) == (n, method)]
        row = {"n": n, "method": method, "trials": len(sel)}
        for metric in ("accuracy", "macro_f1"):
            v = np.array([r[metric] for r in sel], dtype=np.float64)
            row[f"{metric}_mean"] = float(v.mean())
            row[f"{metric}_std"] = float(v.std(ddof=1)) if len(v) > 1 else None
        row["seconds_mean"] = float(np.mean([r["seconds"] for r in sel]))
        rows.append(row)
    return rows
