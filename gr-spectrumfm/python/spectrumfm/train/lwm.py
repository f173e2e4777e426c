"""LWM-Spectro pretraining pieces: one spectrogram per example, corpus statistics, objectives.

Every training command that feeds an LWM-Spectro model reads its data through
:func:`open_examples`: each example of the dataset becomes exactly one ``T x K`` image, made
from its first ``config.input_len`` IQ samples (``samples_for_frames(T, N_w, R)``) by the
model's own :meth:`~spectrumfm.models.LWMSpectro.features`, on the training device.

Examples shorter than one image (the generator writes 1,024 samples by default, the paper's
128 x 128 image at hop 64 takes 8,256) are not zero-padded: padding would fill most rows
with the -120 dB floor and drag the corpus statistics with it. Instead, where the caller
allows, the hop is lowered to the largest that fits, ``(L - N_w) // (T - 1)`` (7 samples
for L = 1024 and the 128 x 128 defaults: 1,017 samples an image); the image size, and so the
model's weights, stay the same, and the fitted hop is stored in the model's config, so the
checkpoint rebuilds exactly the input it was trained on. For the paper's time span per
image, generate longer examples (``spectrumfm generate --length 8256``).

The objectives are the engine's ``loss_fn(model, batch, generator)``: stage 1 is masked
spectrogram modelling (eq. 21), stage 2 adds supervised contrastive learning on the batch's
class labels (eq. 22); both are :meth:`~spectrumfm.models.LWMSpectro.forward_pretrain`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from spectrumfm.data import IQDataset, LazyWindows, open_dataset
from spectrumfm.errors import InputError
from spectrumfm.spectrogram import corpus_stats, spectrogram_db

__all__ = ["open_examples", "fit_hop", "ExampleBatches", "spectrogram_stats",
           "masked_objective", "contrastive_objective", "warmup_steps", "STATS_EXAMPLES",
           "WARMUP_EPOCHS", "MIN_LR", "min_lr_ratio"]

# Training examples the normalisation statistics are computed over: 2,048 images of
# 128 x 128 are 33 million dB values, and the mean moves by far less than the 0.1 dB that
# could matter once the examples are a random sample of the training split.
STATS_EXAMPLES = 2048
WARMUP_EPOCHS = 5      # Table I's linear warm-up
MIN_LR = 1e-8          # Table I: the cosine ends here


class _FirstSamples(LazyWindows):
    """The first ``n`` samples of every window of ``base`` (numpy or lazy), read lazily."""

    def __init__(self, base, n: int):
        super().__init__(len(base), n)
        self.base = base

    def _read(self, idx):
        return np.asarray(self.base[idx], dtype=np.complex64)[:, : self.shape[1]]

    def close(self) -> None:
        if hasattr(self.base, "close"):
            self.base.close()


def fit_hop(config, n_samples: int):
    """``config`` with the largest hop whose ``n_frames`` frames fit in ``n_samples``, or
    ``config`` itself when they already fit at its own hop; ``None`` when no hop fits
    (fewer than ``win_length + n_frames - 1`` samples)."""
    if n_samples >= config.input_len:
        return config
    hop = (n_samples - config.win_length) // max(1, config.n_frames - 1)
    return dataclasses.replace(config, hop=hop) if hop >= 1 else None


def open_examples(spec: str, config, *, allow_fit: bool = True, task: str | None = None,
                  seed: int = 0, fixed_hint: str = " or lower --hop (not with --init)"):
    """Open ``spec`` with one image's worth of IQ per example.

    Fixed-length examples (``shards:``, ``rml2016:``, ``rml2018:``) are read whole and cut
    to their first ``config.input_len`` samples; SigMF annotations are cut into windows of
    ``config.input_len`` samples.

    Args:
        spec: a dataset spec (:func:`spectrumfm.data.open_dataset`).
        config: the model's :class:`~spectrumfm.models.LWMSpectroConfig`.
        allow_fit: lower the hop when the examples are too short (module docstring);
            when False, short examples are an error.
        task, seed: relabel for a downstream task (``open_dataset``'s ``task``, which
            for sensing adds pure-noise examples drawn from ``seed``).
        fixed_hint: the end of the error for too short examples when ``allow_fit`` is
            False (what the caller's user can change).

    Returns:
        ``(dataset, config, example_len)``: the dataset of ``(n, input_len)`` examples, the
        config that reads them (``config`` itself, or with a lowered hop) and the samples
        each example of the source holds (None for SigMF).

    Raises:
        InputError: an unreadable spec, or examples no allowed hop makes one image of.
    """
    if spec.partition(":")[0].strip().lower() == "sigmf":
        return open_dataset(spec, window_len=config.input_len, task=task, seed=seed), config, \
            None
    ds = open_dataset(spec, whole_frames=True, task=task, seed=seed)
    length = ds.window_len
    fitted = fit_hop(config, length) if allow_fit else (
        config if length >= config.input_len else None)
    if fitted is None:
        ds.close()
        how = ("generate longer examples (spectrumfm generate --length "
               f"{config.input_len})")
        if allow_fit:
            how += f", or use a model whose images need at most {length} samples"
        else:
            how += fixed_hint
        raise InputError(f"{spec}: examples of {length} samples are too short for one "
                         f"{config.n_frames} x {config.n_fft} spectrogram "
                         f"({config.input_len} samples at hop {config.hop}); {how}")
    n = fitted.input_len
    iq = ds.iq[:, :n] if isinstance(ds.iq, np.ndarray) else _FirstSamples(ds.iq, n)
    return ds.replace(iq=iq), fitted, length


class ExampleBatches:
    """Examples ``indices`` of an IQDataset as the engine's batches: ``self[list_of_k]`` ->
    ``(iq complex64 (k, S), labels int64 (k,))``, read in one go."""

    def __init__(self, dataset: IQDataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, rows):
        iq, labels, _ = self.dataset.batch(self.indices[rows])
        return torch.from_numpy(iq), torch.from_numpy(labels)


def spectrogram_stats(dataset: IQDataset, indices, config, *, max_examples: int = STATS_EXAMPLES,
                      seed: int = 0, batch: int = 256) -> tuple[float, float, int]:
    """Corpus mean and std in dB of the spectrograms of (a random sample of) ``indices``.

    Computed on the CPU in float64 sums (:func:`~spectrumfm.spectrogram.corpus_stats`), so
    every process of a distributed run gets the same numbers without talking to the others.

    Returns:
        ``(mean_db, std_db, examples used)``.

    Raises:
        InputError: no examples, or spectrograms that cannot normalise (constant, non-finite).
    """
    idx = np.asarray(indices, dtype=np.int64)
    if len(idx) > max_examples:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_examples, replace=False))

    def images():
        for start in range(0, len(idx), batch):
            iq = torch.from_numpy(dataset.batch(idx[start:start + batch])[0])
            yield spectrogram_db(iq, config.n_fft, config.win_length, config.hop,
                                 config.window)
    try:
        mean, std = corpus_stats(images())
    except ValueError as exc:
        raise InputError(f"{dataset.source}: cannot normalise its spectrograms: {exc}") \
            from None
    return mean, std, len(idx)


def masked_objective(model, batch, generator=None) -> dict:
    """Stage 1 (eq. 21): masked spectrogram modelling on the batch's IQ; labels unused."""
    return model.forward_pretrain(model.features(batch[0]), generator=generator)


def contrastive_objective(model, batch, generator=None) -> dict:
    """Stage 2 (eq. 22): masked modelling plus SupCon on the batch's class labels,
    ``w_recon * L_recon + w_cont * L_cont``."""
    iq, labels = batch
    return model.forward_pretrain(model.features(iq), labels, generator=generator)


def warmup_steps(epochs: int, steps_per_epoch: int) -> int:
    """Table I's 5-epoch warm-up in steps, at most a fifth of the run, so a short run still
    reaches its peak rate and decays (the paper's runs are far longer than 25 epochs)."""
    return min(WARMUP_EPOCHS * steps_per_epoch, (epochs * steps_per_epoch) // 5)


def min_lr_ratio(lr: float) -> float:
    """The engine's ``min_lr_ratio`` that makes the cosine end at :data:`MIN_LR`."""
    return min(1.0, MIN_LR / lr) if lr > 0 and math.isfinite(lr) else 0.0
