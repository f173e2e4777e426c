"""`spectrumfm pretrain`: self-supervised pretraining of a SpectrumFM encoder (paper §II-B),
or of an LWM-Spectro spectrogram encoder (its paper's §III, in :mod:`.pretrain_lwm`).

    spectrumfm pretrain --model spectrumfm-tiny --data shards:data/gen --epochs 10 --out runs/fm
    spectrumfm pretrain --model lwm-spectro-tiny --data shards:data/gen --epochs 50 --out runs/s1
    spectrumfm pretrain --model lwm-spectro-tiny --stage contrastive --init runs/s1 \
        --data shards:data/gen --epochs 50 --out runs/s2
    spectrumfm pretrain --model lwm-spectro-tiny --experts wifi,lte,nr \
        --data shards:data/tech --epochs 50 --out runs/moe          (mixture of experts)
    torchrun --nproc_per_node 2 .venv/bin/spectrumfm pretrain ...      (DDP, one process a GPU)

SpectrumFM: masked reconstruction plus next-slot prediction on unlabelled windows; the labels
of the data are ignored. The data are split with the same seed, fractions and frame grouping as the
fine-tuning and evaluation commands use, and pretraining reads only the training share: the
validation share decides early stopping and the best checkpoint, and the test share is never
opened, so a later evaluation on it measures windows the backbone has not seen.

Writes ``OUT/model.safetensors`` + ``OUT/config.json`` (+ README.md) for the best validation
loss, ``OUT/train_state.pt`` for ``--resume`` and ``OUT/run_config.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spectrumfm.errors import InputError

# The split every command shares (spectrumfm.data.split_indices' default): pretraining on
# the test share would leak it into every model fine-tuned from this backbone.
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spectrumfm pretrain", add_help=add_help,
        description="Pretrain a SpectrumFM encoder on unlabelled IQ windows (masked "
                    "reconstruction + next-slot prediction), or an LWM-Spectro encoder on "
                    "spectrograms (masked spectrogram modelling, then supervised contrastive "
                    "learning).")
    p.add_argument("--model", required=True, help="registered model, e.g. spectrumfm-tiny, "
                   "spectrumfm-small, spectrumfm-paper, lwm-spectro-tiny, lwm-spectro-paper")
    p.add_argument("--data", required=True, metavar="SPEC",
                   help="rml2016:PATH, rml2018:PATH, shards:DIR or sigmf:PATH")
    p.add_argument("--epochs", type=int, required=True, help="most epochs (early stopping may "
                   "end sooner)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the checkpoint")
    p.add_argument("--batch", type=int, default=256, help="windows (spectrograms) per step "
                   "and process (default %(default)s, the paper's)")
    p.add_argument("--lr", type=float, help="peak AdamW learning rate (default: 1e-3 for "
                   "SpectrumFM, 5e-4 for LWM-Spectro, their papers')")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay "
                   "(default %(default)g)")
    p.add_argument("--warmup", type=int, help="linear warm-up steps before the cosine decay "
                   "(default: 100 for SpectrumFM; for LWM-Spectro 5 epochs, at most a fifth "
                   "of the run, and the cosine then ends at 1e-8)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm; 0 for "
                   "none (default %(default)g)")
    p.add_argument("--mask-ratio", type=float, help="SpectrumFM: chance a sample is masked "
                   "(default: the model's, 0.15); LWM-Spectro: share of patches hidden "
                   "(default 0.7)")
    p.add_argument("--w-mask", type=float, help="weight of the masked-reconstruction loss "
                   "(default: the model's, 1)")
    p.add_argument("--w-next", type=float, help="SpectrumFM: weight of the next-slot loss "
                   "(default: the model's, 1)")
    p.add_argument("--patience", type=int, default=3, help="stop after this many epochs "
                   "without a better validation loss; 0 never stops (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the weights, the "
                   "masks and the order (default %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N; under "
                   "torchrun each process takes cuda:LOCAL_RANK (default %(default)s)")
    p.add_argument("--no-amp", dest="amp", action="store_false",
                   help="full fp32 on CUDA (default: bf16, or fp16 with loss scaling)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from "
                   "its train_state.pt")
    p.add_argument("--max-windows", type=int, metavar="N", help="train on at most N windows "
                   "(validation on a proportional share), for quick runs; with --experts "
                   "drawn from every class of --data, so the classes no expert takes use "
                   "part of N")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes "
                   "(default %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")
    lwm = p.add_argument_group(
        "LWM-Spectro (spectrogram models)",
        "Each example of --data becomes one spectrogram from its first samples; examples too "
        "short for the model's image get the largest hop that fits (stored in the "
        "checkpoint). The normalisation statistics are computed over the training split "
        "first and stored in config.json.")
    lwm.add_argument("--stage", choices=("masked", "contrastive"),
                     help="masked (default): stage 1, masked spectrogram modelling, 70 %% of "
                          "patches hidden, MSE on them, labels unused; contrastive: stage 2, "
                          "supervised contrastive learning on the data's class labels "
                          "(temperature 0.2) jointly with masked modelling, loss = 1.0 x "
                          "masked + 0.3 x contrastive, usually from stage 1 with --init")
    lwm.add_argument("--init", metavar="DIR", help="start from this LWM-Spectro checkpoint "
                     "(e.g. stage 1's --out): its weights, STFT settings and corpus "
                     "statistics; a new run, unlike --resume")
    lwm.add_argument("--w-cont", type=float, help="weight of the contrastive loss in stage 2 "
                     "(default: the model's, 0.3); --w-mask weighs the masked loss (1.0)")
    lwm.add_argument("--temperature", type=float, help="contrastive temperature (default: "
                     "the model's, 0.2)")
    lwm.add_argument("--hop", type=int, help="STFT hop in samples (default: the model's, 64, "
                     "lowered to fit short examples); not with --init")
    lwm.add_argument("--experts", metavar="A,B,...", help="train LWM-Spectro's mixture of "
                     "experts instead (its paper's section IV): one expert per named class "
                     "(e.g. wifi,lte,nr), pretrained on that class's examples only into "
                     "OUT/experts/NAME, then the router alone on a balanced mix with the "
                     "experts frozen; the mixture is saved in OUT, the router's accuracy in "
                     "OUT/router.json. Other classes are left out")
    lwm.add_argument("--router-epochs", type=int, metavar="N", help="with --experts: most "
                     "epochs of router training (default: --epochs)")
    return p


def add_parser(sub):
    p = sub.add_parser("pretrain", parents=[get_args_parser(add_help=False)],
                       help="self-supervised pretraining of a SpectrumFM encoder",
                       description=get_args_parser().description)
    p.set_defaults(func=main)
    return p


class WindowBatches:
    """Windows ``indices`` of an IQDataset, read a batch at a time as complex64 tensors
    (labels dropped): ``self[list_of_k] -> (k, window_len)``, the engine's batch protocol."""

    def __init__(self, dataset, indices):
        import numpy as np
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, rows):
        import torch
        return torch.from_numpy(self.dataset.batch(self.indices[rows])[0])


# SpectrumFM's defaults for the options whose LWM-Spectro defaults differ.
SPECTRUMFM_LR = 1e-3
SPECTRUMFM_WARMUP = 100
_SPECTROGRAM_ONLY = ("stage", "init", "w_cont", "temperature", "hop", "experts",
                     "router_epochs")


def pretrain_loss(model, iq, generator=None):
    """The objective on a batch of complex windows (B, N): features computed on the batch's
    device, then both pretraining losses."""
    from spectrumfm.features import iq_features
    return model.forward_pretrain(iq_features(iq), generator=generator)


def _check_args(args) -> None:
    positive = {"--epochs": args.epochs, "--batch": args.batch}
    bad = [f"{k} must be >= 1 (got {v})" for k, v in positive.items() if v < 1]
    if args.lr <= 0:
        bad.append(f"--lr must be > 0 (got {args.lr:g})")
    if min(args.weight_decay, args.warmup or 0, args.grad_clip, args.patience,
           args.num_workers) < 0:
        bad.append("--weight-decay, --warmup, --grad-clip, --patience and --num-workers "
                   "must not be negative")
    if args.max_windows is not None and args.max_windows < 2:
        bad.append(f"--max-windows must be >= 2 (got {args.max_windows})")
    if bad:
        raise InputError("; ".join(bad))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    from spectrumfm.train import STATE_FILE
    if not args.resume and (out / STATE_FILE).exists():
        raise InputError(f"--out {out}: already holds a training run; add --resume to "
                         "continue it, or choose another folder")


def _build_model(args):
    from spectrumfm.models import create_model
    overrides = {k: v for k, v in (("mask_ratio", args.mask_ratio), ("w_mask", args.w_mask),
                                   ("w_next", args.w_next)) if v is not None}
    try:
        model = create_model(args.model, **overrides)
    except ValueError as exc:
        raise InputError(f"--model {args.model}: {exc}") from None
    _require_spectrumfm(model, args.model, "pretrained")
    return model


def is_spectrogram_model(name: str) -> bool:
    """Whether the registered model ``name`` reads spectrograms (an LWM-Spectro size).

    Built on the meta device with the random state put back afterwards, so asking neither
    allocates weights nor changes the initial weights a seed gives."""
    import torch

    from spectrumfm.models import LWMSpectro, create_model
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        try:
            model = create_model(name)
        except ValueError as exc:
            raise InputError(f"--model {name}: {exc}") from None
    return isinstance(model, LWMSpectro)


def _require_spectrumfm(model, name: str, what: str) -> None:
    """One line for a registered model a command cannot drive yet (LWM-Spectro's
    spectrogram models, for the commands that do not take them)."""
    from spectrumfm.models import SpectrumFM, list_models
    if not isinstance(model, SpectrumFM):
        iq = ", ".join(n for n in list_models() if n.startswith("spectrumfm-"))
        raise InputError(f"--model {name}: a spectrogram model; this version has its modules "
                         f"but cannot have it {what} yet (IQ models: {iq})")


def _splits(ds, args):
    import numpy as np

    from spectrumfm.data import split_indices
    train, val, _test = split_indices(ds.labels, ds.snr_db, fractions=SPLIT_FRACTIONS,
                                      seed=args.seed, groups=ds.frame_index)
    if args.max_windows is not None and args.max_windows < len(train):
        rng = np.random.default_rng(args.seed)
        n_val = max(1, round(args.max_windows * len(val) / max(1, len(train))))
        train = np.sort(rng.choice(train, args.max_windows, replace=False))
        val = np.sort(rng.choice(val, min(n_val, len(val)), replace=False))
    return train, val


def main(args) -> int:
    from spectrumfm.data import open_dataset
    from spectrumfm.train import (TrainConfig, fit, init_distributed, save_pretrained,
                                  seed_everything)

    if is_spectrogram_model(args.model):
        from spectrumfm_apps.pretrain_lwm import run   # absolute: torchrun runs this file
        return run(args)
    given = [f"--{k.replace('_', '-')}" for k in _SPECTROGRAM_ONLY
             if getattr(args, k, None) is not None]
    if given:
        raise InputError(f"{', '.join(given)}: only for spectrogram models (lwm-spectro-*), "
                         f"not --model {args.model}")
    args.lr = SPECTRUMFM_LR if args.lr is None else args.lr
    args.warmup = SPECTRUMFM_WARMUP if args.warmup is None else args.warmup
    # Everything a user can get wrong is checked before joining the process group, so under
    # torchrun every rank fails the same way at once instead of leaving the others waiting.
    _check_args(args)
    seed_everything(args.seed)     # the same initial weights for the same seed
    model = _build_model(args)
    ds = open_dataset(args.data, window_len=model.config.window_len)
    train, val = _splits(ds, args)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                      weight_decay=args.weight_decay, warmup_steps=args.warmup,
                      patience=args.patience, grad_clip=args.grad_clip, seed=args.seed,
                      amp=args.amp, num_workers=args.num_workers, progress=args.progress,
                      resume=args.resume)
    ctx = init_distributed(args.device)
    try:
        def on_best(best_model, metrics):
            save_pretrained(args.out, best_model, arch=args.model, extra={
                "stage": "pretrain", "data": args.data, "data_classes": ds.classes,
                "samp_rate": ds.samp_rate, "split": {"fractions": list(SPLIT_FRACTIONS),
                                                     "seed": args.seed},
                "metrics": metrics})

        result = fit(model, pretrain_loss, WindowBatches(ds, train), WindowBatches(ds, val),
                     cfg, out_dir=args.out, ctx=ctx, on_best=on_best,
                     run_info={"command": "pretrain",
                               "args": {k: v for k, v in vars(args).items() if k != "func"},
                               "model": args.model, "model_config": model.config.to_dict(),
                               "data": args.data, "train_windows": len(train),
                               "val_windows": len(val)})
    finally:
        ctx.close()
        ds.close()
    if ctx.is_main:
        print(summary(args.model, args.data, len(train), "windows", ctx, result, args.out))
    return 0


def summary(name: str, data: str, n_train: int, unit: str, ctx, result, out) -> str:
    """The line a finished pretraining run prints (rank 0), for either model family."""
    how = "stopped early" if result.stopped_early else "done"
    since = f", resumed after epoch {result.resumed_from}" if result.resumed_from else ""
    procs = f" in {ctx.world_size} processes" if ctx.world_size > 1 else ""
    return (f"pretrained {name} on {data} ({n_train:,} {unit}{procs}): "
            f"{result.epochs_completed} epochs, {result.steps} steps ({how}{since}); best "
            f"val loss {result.best_val:.5f} at epoch {result.best_epoch}; "
            f"{result.windows_per_s:,.0f} {unit}/s -> {Path(out) / 'model.safetensors'}")


def _script(argv=None) -> int:
    # `python -m spectrumfm_apps.pretrain` / `torchrun .../pretrain.py`, without the cli.
    args = get_args_parser().parse_args(argv)
    try:
        return main(args)
    except InputError as exc:
        print(f"spectrumfm: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_script())
