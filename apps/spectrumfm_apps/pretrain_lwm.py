"""`spectrumfm pretrain --model lwm-spectro-...`: LWM-Spectro's two pretraining stages, and
its mixture of experts.

    spectrumfm pretrain --model lwm-spectro-tiny --data shards:gen --epochs 50 --out runs/s1
    spectrumfm pretrain --model lwm-spectro-tiny --stage contrastive --init runs/s1 \\
        --data shards:gen --epochs 50 --out runs/s2
    spectrumfm pretrain --model lwm-spectro-tiny --experts wifi,lte,nr --data shards:tech \\
        --epochs 50 [--router-epochs 20] --out runs/moe

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

``--experts`` trains the mixture of the paper's §IV in one run (:mod:`spectrumfm.train.
lwm_moe`): the data split once and one set of statistics over the families' mixed training
examples; then per family an expert pretrained by stage 1's own code on that class's train
and validation examples only, saved as a plain checkpoint in ``OUT/experts/<family>``; then
the router (2 layers, d = 64) alone, cross-entropy on the family, on a balanced mix, with
the same optimiser, schedule and early stopping, the saved experts frozen. The mixture is one
checkpoint in OUT (``load_pretrained`` rebuilds it); the router's accuracy on the families'
validation and test examples as they are (not rebalanced), overall, per family and as a
confusion matrix, goes to ``OUT/router.json``. Other classes of the data are left out.
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
    from spectrumfm.train import init_distributed, seed_everything
    from spectrumfm.train.lwm import open_examples, spectrogram_stats

    if args.experts is not None:
        return run_moe(args)
    if args.router_epochs is not None:
        raise InputError("--router-epochs: only with --experts (a mixture's router)")
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

    ctx = init_distributed(args.device)
    try:
        if ctx.is_main:
            report_features(config, start.hop, example_len, stats)
        result = pretrain_split(args, model, ds, train, val, args.out, ctx, stats)
    finally:
        ctx.close()
        ds.close()
    if ctx.is_main:
        from spectrumfm_apps.pretrain import summary   # absolute: torchrun runs pretrain.py
        print(summary(f"{args.model} ({args.stage})", args.data, len(train), "spectrograms",
                      ctx, result, args.out))
    return 0


def train_config(args, n_train: int, epochs: int):
    """Table I's optimisation for ``n_train`` examples over ``epochs``: the options' lr,
    batch and decay, a 5-epoch warm-up (at most a fifth of the run) unless ``--warmup``
    says otherwise, and a cosine that ends at 1e-8."""
    from spectrumfm.train import TrainConfig
    from spectrumfm.train.lwm import min_lr_ratio, warmup_steps

    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(math.ceil(n_train / world) / args.batch)
    warmup = args.warmup if args.warmup is not None else warmup_steps(epochs, steps_per_epoch)
    return TrainConfig(epochs=epochs, batch_size=args.batch, lr=args.lr,
                       weight_decay=args.weight_decay, warmup_steps=warmup,
                       min_lr_ratio=min_lr_ratio(args.lr), patience=args.patience,
                       grad_clip=args.grad_clip, seed=args.seed, amp=args.amp,
                       num_workers=args.num_workers, progress=args.progress,
                       resume=args.resume)


def pretrain_split(args, model, ds, train, val, out, ctx, stats, extra: dict | None = None):
    """Pretrain ``model`` on examples ``train`` of ``ds`` with ``args.stage``'s objective,
    early stopping on ``val``; the best weights go to ``out`` as a checkpoint whose config
    also holds ``extra``. The one path of a plain run and of each expert of a mixture.

    Returns:
        the engine's :class:`~spectrumfm.train.FitResult`.
    """
    from spectrumfm.train import fit, save_pretrained
    from spectrumfm.train.lwm import ExampleBatches, contrastive_objective, masked_objective

    cfg = train_config(args, len(train), args.epochs)
    objective = contrastive_objective if args.stage == "contrastive" else masked_objective
    config = model.config

    def on_best(best_model, metrics):
        save_pretrained(out, best_model, arch=args.model, extra={
            "stage": "pretrain", "objective": args.stage, "init": args.init,
            "data": args.data, "data_classes": ds.classes, "samp_rate": ds.samp_rate,
            "split": {"fractions": list(SPLIT_FRACTIONS), "seed": args.seed},
            "corpus_stats": stats, **(extra or {}), "metrics": metrics})

    return fit(model, objective, ExampleBatches(ds, train), ExampleBatches(ds, val),
               cfg, out_dir=out, ctx=ctx, on_best=on_best,
               run_info={"command": "pretrain",
                         "args": {k: v for k, v in vars(args).items() if k != "func"},
                         "model": args.model, "model_config": config.to_dict(),
                         "objective": args.stage, "corpus_stats": stats,
                         "data": args.data, "train_windows": len(train),
                         "val_windows": len(val), **(extra or {})})


def report_features(config, hop_before: int, example_len, stats) -> None:
    """Print the image the examples become and the normalisation statistics (rank 0)."""
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


# ---- the mixture of experts (paper §IV): --experts ------------------------------------------

def _families(args) -> list[str]:
    """``--experts wifi,lte,nr`` -> the family names, checked for a mixture's needs."""
    names = [n.strip() for n in args.experts.split(",") if n.strip()]
    if len(names) < 2:
        raise InputError(f"--experts {args.experts}: a mixture needs at least 2 families, "
                         "e.g. --experts wifi,lte,nr")
    if len(set(names)) < len(names):
        raise InputError(f"--experts {args.experts}: a family is named twice")
    bad = [n for n in names if "/" in n or "\\" in n or n.startswith(".")]
    if bad:
        raise InputError(f"--experts: {', '.join(bad)} cannot name a folder of --out/experts")
    given = [("--stage contrastive", args.stage == "contrastive"), ("--init", args.init),
             ("--resume", args.resume)]
    clash = [name for name, on in given if on]
    if clash:
        raise InputError(f"{', '.join(clash)}: not with --experts, whose experts pretrain "
                         "from scratch with the masked objective (stage 1) in one new run")
    if args.router_epochs is not None and args.router_epochs < 1:
        raise InputError(f"--router-epochs must be >= 1 (got {args.router_epochs})")
    return names


def _family_splits(ds, args, families):
    """The usual split, each example's family, and the train/val/test examples of the
    families (other classes dropped); one line for a family a split lacks."""
    from spectrumfm.data import split_indices
    from spectrumfm.train.lwm_moe import family_classes, family_labels

    family_of = family_labels(ds.labels, family_classes(ds.classes, families))
    train, val = _splits(ds, args)
    # The test share of the same split (_splits returns only what trainers may read); it is
    # opened only to report the router's accuracy at the end.
    test = split_indices(ds.labels, ds.snr_db, fractions=SPLIT_FRACTIONS, seed=args.seed,
                         groups=ds.frame_index)[2]
    train, val, test = (idx[family_of[idx] >= 0] for idx in (train, val, test))
    for k, family in enumerate(families):
        for name, idx in (("training", train), ("validation", val)):
            if not (family_of[idx] == k).any():
                raise InputError(f"--experts {family}: no {name} examples of class {family} "
                                 f"in {args.data} (after --max-windows, if given); add "
                                 "examples of it")
    return family_of, train, val, test


def run_moe(args) -> int:
    """``--experts``: one expert per family through :func:`pretrain_split`, then the router
    alone on a balanced mix, with the experts frozen (§IV-C); writes OUT/experts/<family>/,
    OUT/router.json and the mixture's checkpoint in OUT."""
    import numpy as np

    from spectrumfm.models import LWMSpectroMoE
    from spectrumfm.models.lwm_spectro_moe import MOE_ARCH
    from spectrumfm.train import (fit, init_distributed, load_pretrained, save_pretrained,
                                  seed_everything)
    from spectrumfm.train.lwm import open_examples, spectrogram_stats
    from spectrumfm.train.lwm_moe import (FamilyBatches, balanced_indices, router_for,
                                          router_objective, routing_report)

    from .pretrain import summary

    families = _families(args)
    args.stage = "masked"
    args.lr = LWM_LR if args.lr is None else args.lr
    _check_args(args)
    if args.w_next is not None:
        raise InputError(f"--w-next: LWM-Spectro has no next-slot loss (--model {args.model})")
    out = Path(args.out)
    if (out / "experts").exists():
        raise InputError(f"--out {out}: already holds a mixture's experts; choose another "
                         "folder")
    start = _build(args).config
    ds, config, example_len = open_examples(args.data, start, allow_fit=args.hop is None)
    try:
        family_of, train, val, test = _family_splits(ds, args, families)
        # One set of statistics for every expert and the router: they all read one image.
        mean, std, n = spectrogram_stats(ds, train, config, seed=args.seed)
        config = dataclasses.replace(config, spec_mean=mean, spec_std=std)
        stats = {"examples": n, "from": f"mixed training split ({', '.join(families)})",
                 "mean_db": mean, "std_db": std}
        ignored = [c for c in ds.classes if c not in families]
        ctx = init_distributed(args.device)
        try:
            if ctx.is_main:
                report_features(config, start.hop, example_len, stats)
                if ignored:
                    print(f"note: left out the {int((family_of < 0).sum()):,} examples of "
                          f"the classes no expert takes: {', '.join(ignored)}")
            for k, family in enumerate(families):
                seed_everything(args.seed)     # each expert starts as a plain run would
                expert = _build(args)
                expert.config = config
                tr, va = train[family_of[train] == k], val[family_of[val] == k]
                where = out / "experts" / family
                result = pretrain_split(args, expert, ds, tr, va, where, ctx, stats, extra={
                    "expert": {"family": family, "families": families, "mixture": str(out)}})
                if ctx.is_main:
                    print(summary(f"{args.model} expert {family} (masked)", args.data, len(tr),
                                  "spectrograms", ctx, result, where))

            seed_everything(args.seed)
            router = router_for(config, len(families))
            experts = {f: load_pretrained(out / "experts" / f)[0].requires_grad_(False)
                       for f in families}
            moe = LWMSpectroMoE(experts, router, expert_arch=args.model)
            rng = np.random.default_rng(args.seed)
            bal_train = balanced_indices(train, family_of[train], len(families), rng)
            bal_val = balanced_indices(val, family_of[val], len(families), rng)
            epochs = args.router_epochs or args.epochs
            extra = {"stage": "mixture", "experts": {f: f"experts/{f}" for f in families},
                     "data": args.data, "data_classes": ds.classes, "samp_rate": ds.samp_rate,
                     "split": {"fractions": list(SPLIT_FRACTIONS), "seed": args.seed},
                     "corpus_stats": stats}

            def on_best(_router, metrics):   # the router is moe's, so moe holds its weights
                save_pretrained(out, moe, arch=MOE_ARCH, extra={**extra, "metrics": metrics})

            run_info = {"command": "pretrain", "model": MOE_ARCH, "expert_arch": args.model,
                        "args": {k: v for k, v in vars(args).items() if k != "func"},
                        "router_config": router.config.to_dict(),
                        "model_config": config.to_dict(), "train_windows": len(bal_train),
                        "val_windows": len(bal_val), **extra}
            result = fit(router, router_objective(config),
                         FamilyBatches(ds, bal_train, family_of),
                         FamilyBatches(ds, bal_val, family_of),
                         train_config(args, len(bal_train), epochs), out_dir=out, ctx=ctx,
                         on_best=on_best, run_info=run_info)
            if ctx.is_main:
                _report_router(args, out, families, ignored, ds, family_of, val, test, config,
                               ctx.device, result, extra)
        finally:
            ctx.close()
    finally:
        ds.close()
    return 0


def _report_router(args, out, families, ignored, ds, family_of, val, test, config, device,
                   result, extra) -> None:
    """Measure the best router on the validation and test examples of the families, write
    OUT/router.json, add the numbers to the mixture's config.json and print them."""
    from spectrumfm.models.lwm_spectro_moe import MOE_ARCH
    from spectrumfm.train import load_pretrained, save_pretrained
    from spectrumfm.train.lwm_moe import routing_report

    moe, meta = load_pretrained(out, map_location=device)     # the best epoch's router
    splits = {name: routing_report(moe.router, ds, idx, family_of, families, config,
                                   device=device, batch=args.batch)
              for name, idx in (("val", val), ("test", test))}
    report = {"families": families, "ignored_classes": ignored,
              "confusion_layout": "confusion[i][j]: examples of family i routed to expert j",
              "router_config": moe.router.config.to_dict(),
              "training": {"epochs_completed": result.epochs_completed,
                           "best_epoch": result.best_epoch, "best_val_loss": result.best_val,
                           "stopped_early": result.stopped_early},
              **splits}
    (out / "router.json").write_text(json.dumps(report, indent=2) + "\n")
    save_pretrained(out, moe, arch=MOE_ARCH, extra={**extra, "metrics": meta["metrics"],
                                                    "routing": splits})

    def acc(v):
        return "n/a" if v is None else f"{v:.3f}"

    def line(r):
        each = ", ".join(f"{f} {acc(a)}" for f, a in r["per_family"].items())
        return f"{acc(r['accuracy'])} on {r['n']:,} spectrograms ({each})"
    print(f"router accuracy: val {line(splits['val'])}; test {line(splits['test'])}; best val "
          f"loss {result.best_val:.4f} at epoch {result.best_epoch} -> {out / 'router.json'}")
    total = sum(p.numel() for p in moe.parameters())
    print(f"mixture of {len(families)} experts ({', '.join(families)}) -> "
          f"{out / 'model.safetensors'}: {total:,} parameters, {moe.active_parameters():,} "
          "active per spectrogram (router + one expert)")
