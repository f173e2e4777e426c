"""Training LWM-Spectro's mixture of experts the way its paper does (§IV-C): experts first,
then the router alone.

Stage 1 pretrains one expert per protocol family on that family's examples only, with the
masked objective of :mod:`.lwm` (the command line runs the usual pretraining once per
family). Stage 2 trains the :class:`~spectrumfm.models.Router` with cross-entropy on the
family label while the experts stay as they were saved: they take no part in its loss, so a
router that has learnt the families is all this stage adds. This module holds stage 2's
pieces and the helpers both stages share:

* :func:`family_classes` / :func:`family_labels`: which dataset classes are the experts'
  families, and each example's family (other classes are left out);
* :func:`balanced_indices`: the router's "balanced mix" of §IV-C;
* :class:`FamilyBatches` and :func:`router_objective`: the engine's batches and loss;
* :func:`routing_report`: accuracy overall and per family, and the confusion matrix.

Every expert and the router read the same images, normalised by one set of corpus statistics
computed over the mixed training split before any expert trains; the mixture refuses experts
whose features differ (:class:`~spectrumfm.models.LWMSpectroMoE`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from spectrumfm.errors import InputError
from spectrumfm.models import Router, RouterConfig
from spectrumfm.spectrogram import spectrogram_image

__all__ = ["family_classes", "family_labels", "balanced_indices", "FamilyBatches",
           "router_for", "router_images", "router_objective", "routing_report"]


def family_classes(classes, families) -> list[int]:
    """The dataset's class index of each family, in ``families``' order.

    Raises:
        InputError: a family that is no class of the dataset, in one line that lists the
            dataset's classes (names match exactly, as ``spectrumfm generate`` writes them).
    """
    classes = list(classes)
    missing = [f for f in families if f not in classes]
    if missing:
        raise InputError(f"--experts: {', '.join(missing)} not among the dataset's classes "
                         f"({', '.join(classes)})")
    return [classes.index(f) for f in families]


def family_labels(labels, class_of_family) -> np.ndarray:
    """(n,) dataset class labels -> (n,) int64 family index, -1 for classes no expert takes."""
    labels = np.asarray(labels, dtype=np.int64)
    lookup = np.full(max(int(labels.max(initial=0)), *class_of_family) + 1, -1, np.int64)
    lookup[list(class_of_family)] = np.arange(len(class_of_family))
    return lookup[labels]


def balanced_indices(indices, family, n_families: int, rng: np.random.Generator) -> np.ndarray:
    """``indices`` resampled so every family has as many as the largest one.

    §IV-C trains the router "on a balanced mix" without giving proportions. Smaller families
    are repeated whole as often as fits and the rest drawn without replacement, rather than
    the larger ones cut down: every example of every family is still seen each epoch, and
    the copies of one family's examples differ in number by at most one.

    Args:
        indices: (n,) example indices.
        family: (n,) family index of each, all in ``range(n_families)``.
        n_families: how many families; each must have at least one example.
        rng: draws the remainders.

    Returns:
        (n_families * largest,) int64, sorted (the engine shuffles).
    """
    indices, family = np.asarray(indices, np.int64), np.asarray(family, np.int64)
    groups = [indices[family == k] for k in range(n_families)]
    if min(len(g) for g in groups) == 0:
        raise ValueError("every family needs at least one example to balance")
    target = max(len(g) for g in groups)
    parts = []
    for g in groups:
        whole, rest = divmod(target, len(g))
        parts += [np.tile(g, whole), rng.choice(g, rest, replace=False)]
    return np.sort(np.concatenate(parts))


class FamilyBatches:
    """Examples ``indices`` of an IQDataset with their family as the label: ``self[rows]`` ->
    ``(iq complex64 (k, S), family int64 (k,))``, read in one go (the engine's protocol).

    Args:
        dataset: the IQDataset of :func:`spectrumfm.train.lwm.open_examples`.
        indices: (n,) example indices, repeats allowed (:func:`balanced_indices`).
        family_of: (len(dataset),) family index of every example (:func:`family_labels`).
    """

    def __init__(self, dataset, indices, family_of):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.family = np.asarray(family_of, dtype=np.int64)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        iq = self.dataset.batch(self.indices[rows])[0]
        return torch.from_numpy(iq), torch.from_numpy(self.family[rows])


def router_for(expert_config, n_experts: int, **overrides) -> Router:
    """The paper's router (2 layers, d = 64) for experts of ``expert_config``: their image
    size and patch side, so it sees the same patches they do."""
    return Router(RouterConfig(n_experts=n_experts, n_frames=expert_config.n_frames,
                               n_fft=expert_config.n_fft, patch_size=expert_config.patch_size,
                               **overrides))


def router_images(config, iq: torch.Tensor) -> torch.Tensor:
    """IQ -> the images the experts read (``LWMSpectro.features`` of ``config``), on iq's
    device; the router owns no feature parameters of its own."""
    return spectrogram_image(iq, config.spec_mean, config.spec_std, config.n_fft,
                             config.win_length, config.hop, config.window)


def router_objective(config):
    """The engine's ``loss_fn`` for the router on :class:`FamilyBatches`: cross-entropy of
    its logits against the family, plus the batch's accuracy (reported, not optimised).

    Args:
        config: the experts' shared :class:`~spectrumfm.models.LWMSpectroConfig`.
    """
    def loss_fn(router, batch, generator=None) -> dict:
        iq, family = batch
        logits = router(router_images(config, iq))                    # (B, E)
        return {"loss": F.cross_entropy(logits.float(), family),
                "accuracy": (logits.argmax(dim=-1) == family).float().mean()}
    return loss_fn


@torch.no_grad()
def routing_report(router, dataset, indices, family_of, families, config, *,
                   device="cpu", batch: int = 256) -> dict:
    """How often the router picks each example's own expert.

    Args:
        router: the trained router (put in eval mode here).
        dataset, indices, family_of: as for :class:`FamilyBatches`.
        families: the family names, in the router's output order.
        config: the experts' shared config (the images).
        device: where to run it.
        batch: examples per forward pass.

    Returns:
        ``{"n", "accuracy", "per_family", "counts", "confusion"}``: ``confusion[i][j]``
        counts examples of family i routed to expert j, so its total is ``n``; per-family
        accuracy is row i's diagonal share (the family's recall), None for a family with
        no examples here, as is ``accuracy`` when ``n`` is 0.
    """
    router = router.to(device).eval()
    data = FamilyBatches(dataset, indices, family_of)
    E = len(families)
    confusion = torch.zeros(E, E, dtype=torch.int64)
    for start in range(0, len(data), batch):
        iq, fam = data[np.arange(start, min(start + batch, len(data)))]
        picked = router(router_images(config, iq.to(device))).argmax(dim=-1).cpu()
        confusion += torch.bincount(fam * E + picked, minlength=E * E).reshape(E, E)
    rows = confusion.sum(dim=1).tolist()
    diag = confusion.diagonal().tolist()
    n = int(sum(rows))
    return {"n": n, "accuracy": sum(diag) / n if n else None,
            "per_family": {f: diag[k] / rows[k] if rows[k] else None
                           for k, f in enumerate(families)},
            "counts": {f: rows[k] for k, f in enumerate(families)},
            "confusion": confusion.tolist()}
