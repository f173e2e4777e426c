"""`spectrumfm pretrain --model lwm-spectro-...`: LWM-Spectro's two pretraining stages.

    spectrumfm pretrain --model lwm-spectro-tiny --data shards:gen --epochs 50 --out runs/s1
    spectrumfm pretrain --model lwm-spectro-tiny --stage contrastive --init runs/s1 \\
        --data shards:gen --epochs 50 --out runs/s2

Stage 1 (``--stage masked``, the default) is masked spectrogram modelling: 70 % of the
patches of each image hidden, MSE on them (eq. 21). Stage 2 (``--stage contrastive``) adds
supervised contrastive learning on the dataset's class labels, temperature 0.2, jointly with
the masked loss at weights 1.0 and 0.3 (eq. 22); it usually starts from stage 1 through
``--init``. Both follow Table I: AdamW (0.9, 0.999, weight decay 0.05), lr 5e-4, a 5-epoch
warm-up, cosine decay to 1e-8 and early stopping on the validation loss, through the engine
every trainer shares (:func:`spectrumfm.train.fit`).

Each example becomes one spectrogram (:mod:`spectrumfm.train.lwm`: its first samples, the
hop lowered to fit short examples). Before training, the dB mean and std of the training
split's spectrograms (a random sample of at most 2,048) become the model's ``spec_mean`` and
``spec_std``; ``--init`` keeps its checkpoint's and ``--resume`` its run's. The split,
the checkpoint files and ``--resume`` are SpectrumFM's (:mod:`.pretrain`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from spectrumfm.errors import InputError

from .pretrain import SPLIT_FRACTIONS, _check_args, _splits

LWM_LR = 5e-4   # Table I


def _objective_overrides(args) -> dict:
    pairs = (("mask_ratio", args.mask_ratio), ("w_recon", args.w_mask),
             ("w_cont", args.w_cont), ("temperature", args.temperature), ("hop", args.hop))
    return {k: v for k, v in pairs if v is not None}


def _build(args):
    """The model to train and where its weights came from: a fresh ``--model``, or the
    ``--init`` checkpoint's weights and features, with the objective options applied."""
    from spectrumfm.models import LWMSpectro, create_model
    from spectrumfm.train import load_pretrained

    overrides = _objective_overrides(args)
    if args.init:
        if args.hop is not None:
            raise InputError("--hop: the features of an --init checkpoint are fixed; leave "
                             "--hop out")
        model, meta = load_pretrained(args.init)
        if not isinstance(model, LWMSpectro) or meta["arch"] != args.model:
            raise InputError(f"--init {args.init}: holds {meta['arch']}, not --model "
                             f"{args.model}")
        model.train()
    else:
        model = create_model(args.model)
    try:
        model.config = dataclasses.replace(model.config, **overrides)
    except ValueError as exc:
        raise InputError(f"--model {args.model}: {exc}") from None
    return model


def _resumed_features(args, config):
    """On --resume, the features the run started with (from OUT/config.json, written after
    its first epoch), so a resumed run never renormalises mid-way; else None."""
    if not args.resume:
        return None
    try:
        stored = json.loads((Path(args.out) / "config.json").read_text())["model_config"]
        keep = {k: stored[k] for k in ("hop", "spec_mean", "spec_std")}
        return dataclasses.replace(config, **keep)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run(args) -> int:
    from spectrumfm.train import (TrainConfig, fit, init_distributed, save_pretrained,
                                  seed_everything)
    from spectrumfm.train.lwm import (ExampleBatches, contrastive_objective, masked_objective,
                                      min_lr_ratio, open_examples, spectrogram_stats,
                                      warmup_steps)

    args.stage = args.stage or "masked"
    args.lr = LWM_LR if args.lr is None else args.lr
    _check_args(args)
    if args.w_next is not None:
        raise InputError(f"--w-next: LWM-Spectro has no next-slot loss (--model {args.model})")
    seed_everything(args.seed)     # the same initial weights for the same seed
    model = _build(args)
    resumed = _resumed_features(args, model.config)
    start = resumed or model.config
    ds, config, example_len = open_examples(args.data, start,
                                            allow_fit=not (args.init or args.hop or resumed))
    train, val = _splits(ds, args)
    if args.init or resumed:
        stats = {"examples": None, "from": "resumed run" if resumed else args.init}
    else:
        mean, std, n = spectrogram_stats(ds, train, config, seed=args.seed)
        config = dataclasses.replace(config, spec_mean=mean, spec_std=std)
        stats = {"examples": n, "from": "training split"}
    model.config = config
    stats.update(mean_db=config.spec_mean, std_db=config.spec_std)

    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(math.ceil(len(train) / world) / args.batch)
    if args.warmup is None:
        args.warmup = warmup_steps(args.epochs, steps_per_epoch)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                      weight_decay=args.weight_decay, warmup_steps=args.warmup,
                      min_lr_ratio=min_lr_ratio(args.lr), patience=args.patience,
                      grad_clip=args.grad_clip, seed=args.seed, amp=args.amp,
                      num_workers=args.num_workers, progress=args.progress,
                      resume=args.resume)
    objective = contrastive_objective if args.stage == "contrastive" else masked_objective
    ctx = init_distributed(args.device)
    try:
        if ctx.is_main:
            _report_features(config, start.hop, example_len, stats)

        def on_best(best_model, metrics):
            save_pretrained(args.out, best_model, arch=args.model, extra={
                "stage": "pretrain", "objective": args.stage, "init": args.init,
                "data": args.data, "data_classes": ds.classes, "samp_rate": ds.samp_rate,
                "split": {"fractions": list(SPLIT_FRACTIONS), "seed": args.seed},
                "corpus_stats": stats, "metrics": metrics})

        result = fit(model, objective, ExampleBatches(ds, train), ExampleBatches(ds, val),
                     cfg, out_dir=args.out, ctx=ctx, on_best=on_best,
                     run_info={"command": "pretrain",
                               "args": {k: v for k, v in vars(args).items() if k != "func"},
                               "model": args.model, "model_config": config.to_dict(),
                               "objective": args.stage, "corpus_stats": stats,
                               "data": args.data, "train_windows": len(train),
                               "val_windows": len(val)})
    finally:
        ctx.close()
        ds.close()
    if ctx.is_main:
        from spectrumfm_apps.pretrain import summary   # absolute: torchrun runs pretrain.py
        print(summary(f"{args.model} ({args.stage})", args.data, len(train), "spectrograms",
                      ctx, result, args.out))
    return 0


def _report_features(config, hop_before: int, example_len, stats) -> None:
    note = ""
    if config.hop != hop_before:
        note = (f"; hop lowered from {hop_before}: the examples hold {example_len} samples, "
                f"the image at hop {hop_before} needs "
                f"{dataclasses.replace(config, hop=hop_before).input_len}")
    print(f"features: {config.n_frames} x {config.n_fft} spectrograms of "
          f"{config.input_len} samples (window {config.win_length} {config.window}, hop "
          f"{config.hop}, FFT {config.n_fft}){note}")
    what = (f"computed over {stats['examples']:,} training examples" if stats["examples"]
            else f"from {stats['from']}")
    print(f"normalisation: mean {stats['mean_db']:.2f} dB, std {stats['std_db']:.2f} dB "
          f"({what})")
