"""`spectrumfm finetune`: adapt a pretrained backbone to one task with LoRA (paper §II-C).

    spectrumfm finetune --task sensing --backbone runs/pretrain --data rml2018:GOLD.hdf5 \
        --epochs 5 --out runs/sensing

An LWM-Spectro backbone (``lwm-spectro-*``) is fine-tuned by :mod:`.finetune_lwm` with
``--mode probe``, ``lora`` (its default) or ``full``, and its paper's residual CNN head; the
adapter folder has the same files and config layout. SpectrumFM backbones fine-tune with
LoRA only.

Trains LoRA matrices on the backbone's encoder and a task head, the backbone frozen, with
the shared training engine (AdamW, warm-up + cosine, early stopping on the validation
split, a stop on a non-finite loss). The train / validation / test split is the one the
backbone was pretrained with (its recorded seed and fractions, stratified by class and SNR,
a frame's windows kept together; see :func:`task_split`), so the test windows are unseen by
the backbone as by the adapter. The test split is never read here: ``spectrumfm evaluate``
re-derives it from the split saved with the adapter. ``--out`` receives ``adapter.safetensors``,
``head.safetensors`` and ``adapter_config.json`` (see ``spectrumfm.train.lora``) and the
engine's ``run_config.json``.

For ``--task anomaly`` the adapter is trained with the pretraining objectives on the normal
windows of the train split, and the reconstruction-error score is then calibrated to a
probability on the validation split (``spectrumfm.tasks.ReconstructionAnomalyHead``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from spectrumfm.errors import InputError

DESCRIPTION = ("Adapt a pretrained backbone to one task: SpectrumFM with LoRA (paper §II-C), "
               "LWM-Spectro with a frozen encoder, LoRA or full fine-tuning (§III-F).")

TASK_CHOICES = ("modulation", "technology", "sensing", "anomaly", "snr-mobility")
# The split of a backbone that records none (pretrain records its own): split_indices'
# default, the one `spectrumfm pretrain` uses.
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
MODES = ("probe", "lora", "full")
SPECTRUMFM_LR = 1e-3   # paper §II-C


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="spectrumfm finetune",
                                          description=DESCRIPTION)
    p.add_argument("--task", required=True, choices=TASK_CHOICES)
    p.add_argument("--backbone", required=True, metavar="DIR",
                   help="pretrained checkpoint folder (model.safetensors + config.json)")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="rml2016:PATH, rml2018:PATH, shards:DIR or sigmf:PATH")
    p.add_argument("--epochs", type=int, default=10,
                   help="most epochs; early stopping may end sooner (default %(default)s)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the adapter")
    p.add_argument("--mode", choices=MODES,
                   help="what trains: probe (the head on a frozen encoder), lora (LoRA matrices "
                        "and the head) or full (encoder and head); default lora. SpectrumFM: "
                        "lora only")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank a (default %(default)s)")
    p.add_argument("--alpha", type=float, default=16.0,
                   help="LoRA alpha; updates are scaled by alpha/rank (default %(default)s)")
    p.add_argument("--targets", default="all",
                   help="LoRA targets: 'all' (every linear and pointwise conv of the encoder "
                        "blocks; LWM-Spectro's six block linears), 'attention', or a comma "
                        "list of names (default %(default)s)")
    p.add_argument("--head", choices=("gru", "linear", "rescnn"),
                   help="classification head (default: gru for SpectrumFM, rescnn, the "
                        "residual 1D CNN of §III-F, for LWM-Spectro; anomaly has its own)")
    p.add_argument("--batch", type=int, default=256, help="windows per batch (paper: 256)")
    p.add_argument("--lr", type=float,
                   help="peak learning rate (default 1e-3, the SpectrumFM paper's; 1e-4 for "
                        "--mode full, the reduced rate LWM-Spectro's paper fine-tunes with)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps (default %(default)s)")
    p.add_argument("--patience", type=int, default=3,
                   help="epochs without a better validation loss before stopping; 0: never")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling")
    p.add_argument("--split-seed", type=int,
                   help="seed of the train/validation/test split (default: the one the "
                        "backbone was pretrained with, so its test windows stay unseen)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--max-windows", type=int, metavar="N",
                   help="train on at most N windows (a random stratified subset; validation "
                        "on a proportional share), for CPU-sized runs")
    p.add_argument("--input-rate", type=float, metavar="HZ",
                   help="the sample rate the inference engine must give this adapter's "
                        "windows (default: the dataset's own, when it records one)")
    p.add_argument("--channel-oversample", type=int, metavar="N",
                   help="occupancy/anomaly adapters trained on channel windows: the view they "
                        "were cut with (`generate --oversample`), which the engine then uses")
    p.add_argument("--bandwidth-fraction", type=float, metavar="F",
                   help="modulation: the share of --input-rate a training signal occupies; the "
                        "engine resamples a detected emission so that its width is this share")
    p.add_argument("--features", choices=("amp-phase-minmax", "amp-phase-level"),
                   help="SpectrumFM input features: the paper's per-window min-max (default), or "
                        "amp-phase-level, amplitude against the noise floor, for windows "
                        "scaled to unit noise (the occupancy data; the engine scales them by "
                        "the stream's floor)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def add_parser(sub):
    p = sub.add_parser("finetune", help="fine-tune a pretrained backbone for one task",
                       description=DESCRIPTION)
    get_args_parser(p)
    p.set_defaults(func=main)
    return p


class _Windows:
    """Windows ``indices`` of an IQDataset, read a batch per index list (the engine's
    batch-indexable dataset): ``data[[i, j, ...]] -> (complex64 (k, N), int64 (k,))``."""

    def __init__(self, data, indices):
        self.data, self.indices = data, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions):
        import torch

        iq, labels, _ = self.data.batch(self.indices[np.asarray(positions, dtype=np.int64)])
        return torch.from_numpy(iq), torch.from_numpy(labels)


def _check(args) -> None:
    for name in ("epochs", "batch", "rank"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if (args.lr is not None and not args.lr > 0) or not args.alpha > 0:
        raise InputError("--lr and --alpha must be positive")
    if args.patience < 0 or args.warmup < 0 or args.workers < 0:
        raise InputError("--patience, --warmup and --workers must not be negative")
    if args.channel_oversample is not None and args.channel_oversample < 1:
        raise InputError(f"--channel-oversample must be at least 1, got {args.channel_oversample}")
    if args.max_windows is not None and args.max_windows < 1:
        raise InputError(f"--max-windows must be at least 1, got {args.max_windows}")
    for name in ("input_rate", "bandwidth_fraction"):
        value = getattr(args, name)
        if value is not None and not (value > 0 and value < float("inf")):
            raise InputError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
    if args.bandwidth_fraction is not None and args.bandwidth_fraction > 1:
        raise InputError(f"--bandwidth-fraction is a share of the rate (0, 1], got "
                         f"{args.bandwidth_fraction}")


def task_split(spec: str, data, *, window_len: int, fractions, seed: int, open_source=None):
    """(train, val, test) indices of ``data`` (opened with ``task=``) under the split that
    ``spectrumfm pretrain`` made of the same spec.

    ``open_source()`` opens the spec as pretraining read it (default: windows of
    ``window_len``; LWM-Spectro's one example per image, see ``lwm_finetune.source_opener``).

    Pretraining splits the source windows by their own labels; a task's relabelling
    (sensing's vacant / occupied, anomaly's normal / anomalous) would stratify differently
    and hand windows the backbone trained on to the test split. So the source windows are
    split as pretraining split them, and the windows a task adds after them (sensing's
    pure-noise windows, appended by ``open_dataset``) are split among themselves. A task
    that leaves windows out (snr-mobility: speeds of neither regime) keeps each remaining
    window in its source window's part (``data.source_rows``).
    """
    from spectrumfm.data import open_dataset, split_indices

    opener = open_source or (lambda: open_dataset(spec, window_len=window_len))
    with opener() as source:
        n = len(source)
        parts = split_indices(source.labels, source.snr_db, fractions, seed=seed,
                              groups=source.frame_index)
    rows = getattr(data, "source_rows", None)
    if rows is not None:
        if len(rows) and rows.max() >= n:
            raise InputError(f"{spec}: the task's dataset has windows its source lacks")
        return tuple(np.flatnonzero(np.isin(rows, p)) for p in parts)
    if len(data) < n:
        raise InputError(f"{spec}: the task's dataset has fewer windows than its source")
    if len(data) > n:
        extra = split_indices(data.labels[n:], data.snr_db[n:], fractions, seed=seed,
                              groups=data.frame_index[n:])
        parts = tuple(np.concatenate([p, e + n]) for p, e in zip(parts, extra))
    return parts


def subsample(train_idx, val_idx, max_windows, seed: int):
    """``--max-windows``: a random share of the training indices, validation cut to match."""
    if max_windows is None or max_windows >= len(train_idx):
        return train_idx, val_idx
    rng = np.random.default_rng(seed)
    n_val = max(1, round(max_windows * len(val_idx) / max(1, len(train_idx))))
    train_idx = np.sort(rng.choice(train_idx, max_windows, replace=False))
    val_idx = np.sort(rng.choice(val_idx, min(n_val, len(val_idx)), replace=False))
    return train_idx, val_idx


def backbone_split(meta: dict, args) -> dict:
    """The split to use: the backbone's recorded one unless --split-seed overrides its seed."""
    recorded = meta.get("split") if isinstance(meta.get("split"), dict) else {}
    return {"fractions": list(recorded.get("fractions", DEFAULT_FRACTIONS)),
            "seed": args.split_seed if args.split_seed is not None else
            int(recorded.get("seed", args.seed))}


def main(args) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from spectrumfm.data import open_dataset
    from spectrumfm.features import features_for
    from spectrumfm.models import LWMSpectro, SpectrumFM
    from spectrumfm.tasks import POSITIVE, TaskModel, build_head, predict
    from spectrumfm.train import (DistContext, TrainConfig, fit, load_pretrained,
                                  resolve_device, seed_everything)
    from spectrumfm.train.checkpoint import STATE_FILE
    from spectrumfm.train.lora import (ADAPTER_FILE, HEAD_FILE, apply_lora, backbone_sha256,
                                       resolve_targets, save_adapter, trainable_share)

    _check(args)
    device = resolve_device(args.device)
    digest = backbone_sha256(args.backbone)
    seed_everything(args.seed)
    backbone, meta = load_pretrained(args.backbone, map_location=device)
    if isinstance(backbone, LWMSpectro):
        from .finetune_lwm import run
        return run(args, backbone, meta, digest, device)
    if not isinstance(backbone, SpectrumFM):
        raise InputError(f"--backbone {args.backbone}: a {meta.get('arch')} checkpoint; give "
                         "a SpectrumFM or LWM-Spectro (one expert) checkpoint")
    if args.mode not in (None, "lora"):
        raise InputError(f"--mode {args.mode}: SpectrumFM backbones fine-tune with LoRA only "
                         "(--mode lora); probe and full are for LWM-Spectro")
    try:
        targets = resolve_targets(args.targets)
    except ValueError as e:
        raise InputError(f"--targets {args.targets}: {e}") from None
    args.head = args.head or "gru"
    args.lr = SPECTRUMFM_LR if args.lr is None else args.lr
    args.features = args.features or "amp-phase-minmax"
    cfg = backbone.config
    data = open_dataset(args.data, window_len=cfg.window_len, task=args.task, seed=args.seed)
    split = backbone_split(meta, args)
    train_idx, val_idx, _ = task_split(args.data, data, window_len=cfg.window_len, **split)
    train_idx, val_idx = subsample(train_idx, val_idx, args.max_windows, args.seed)
    fit_val_idx = val_idx
    if args.task == "anomaly":
        # Reconstruction learns "normal"; early stopping watches the same loss on normal data.
        train_idx = train_idx[data.labels[train_idx] != POSITIVE]
        fit_val_idx = val_idx[data.labels[val_idx] != POSITIVE]
    if len(train_idx) == 0 or len(fit_val_idx) == 0:
        raise InputError(f"{args.data}: {len(data)} windows leave {len(train_idx)} for training "
                         f"and {len(fit_val_idx)} for validation; need at least one of each")
    model = apply_lora(backbone, rank=args.rank, alpha=args.alpha, targets=targets)
    head = build_head(args.task, cfg.d_model, len(data.classes), window_len=cfg.window_len,
                      mask_ratio=cfg.mask_ratio, kind=args.head)
    task_model = TaskModel(model, head, args.task).to(device)
    trainable, total, share = trainable_share(task_model)
    print(f"{args.task}: {len(data.classes)} classes, {len(train_idx)} train / {len(val_idx)} "
          f"validation windows; {trainable:,} of {total:,} parameters trainable "
          f"({100 * share:.2f} %)", file=sys.stderr)

    # Channel windows come from captures at many rates: the engine cuts them at the stream's.
    rate = args.input_rate if args.input_rate is not None else \
        (None if args.channel_oversample else data.samp_rate)
    base = {"backbone_arch": meta.get("arch"), "data": args.data, "split": split,
            "input": {"samp_rate": rate, "bandwidth_fraction": args.bandwidth_fraction,
                      "oversample": args.channel_oversample, "window_len": cfg.window_len,
                      "features": args.features}}
    features = features_for(args.features)

    def save(status: str, **extra):
        save_adapter(args.out, model, head, task=args.task, classes=data.classes,
                     backbone_dir=args.backbone, backbone_sha256=digest,
                     extra={**base, "status": status, **extra})

    def on_best(m, metrics):
        # Written at every improvement, not held in memory: a --resume'd run that improves
        # no further must still end with the best epoch, which its predecessor saw.
        save("best epoch so far; the run has not finished", train=metrics)

    def loss_fn(m, batch, generator):
        iq, labels = batch
        return m.loss(features(iq), labels, generator=generator)

    tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                       warmup_steps=args.warmup, patience=args.patience, seed=args.seed,
                       num_workers=args.workers, progress=not args.no_progress,
                       resume=args.resume)
    result = fit(task_model, loss_fn, _Windows(data, train_idx), _Windows(data, fit_val_idx),
                 tcfg, out_dir=args.out, ctx=DistContext(device=device), on_best=on_best,
                 run_info={"command": "finetune", "task": args.task, "data": args.data,
                           "backbone": args.backbone})
    if not Path(args.out, ADAPTER_FILE).is_file():
        raise InputError(f"{args.out}: no epoch was saved (was it deleted during the run?)")
    set_peft_model_state_dict(model, load_file(Path(args.out, ADAPTER_FILE), device=str(device)))
    head.load_state_dict(load_file(Path(args.out, HEAD_FILE), device=str(device)))

    extra_val = {}
    if args.task == "anomaly":
        raw = predict(task_model, data, val_idx, batch_size=args.batch, device=device,
                      fn=lambda m, f: m.head.raw_score(m.encoder, f), features=features)
        extra_val["calibration"] = head.calibrate(raw, data.labels[val_idx] == POSITIVE)
    probs = predict(task_model, data, val_idx, batch_size=args.batch, device=device,
                    features=features)
    val_acc = float((probs.argmax(1) == data.labels[val_idx]).mean())
    save("finished", val={"accuracy": val_acc, **extra_val}, train={
        "epochs": result.epochs_completed, "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val, "batch": args.batch, "lr": args.lr,
        "trainable_params": trainable, "total_params": total})
    # The resumable state holds the whole frozen backbone; the adapter folder exists so that
    # a task costs megabytes, not a backbone copy. A finished run has nothing to resume.
    Path(args.out, STATE_FILE).unlink(missing_ok=True)
    print(f"adapter written to {args.out} (best epoch {result.best_epoch} of "
          f"{result.epochs_completed}, validation accuracy {val_acc:.4f}"
          + (f"; {extra_val['calibration']}" if extra_val else "") + ")")
    return 0
