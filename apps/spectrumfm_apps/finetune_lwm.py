"""`spectrumfm finetune` for an LWM-Spectro backbone (paper §III-F, §III-G).

    spectrumfm finetune --task modulation --backbone runs/lwm-s2 --data shards:gen \\
        --mode probe --epochs 8 --out runs/lwm-mod

Reached through :mod:`.finetune` (its options, its split): each example becomes one
spectrogram with the backbone's own features (its hop and corpus statistics), and a task
head, the residual 1D CNN of §III-F by default, learns on top of the encoder in one of three
modes (:mod:`spectrumfm.train.lwm_finetune`): ``probe`` (encoder frozen), ``lora`` (the
default, as SpectrumFM's adapters) or ``full`` (encoder and head, at a tenth of the learning
rate by default, as the paper's "LWM_FT" fine-tunes with reduced rates).

Sensing is a two-class head (vacant / occupied). Anomaly detection learns no class boundary:
in ``lora`` and ``full`` the encoder is adapted with the masked-modelling objective on the
*normal* training examples, in ``probe`` nothing trains; the score is then the masked-patch
reconstruction error (:class:`spectrumfm.tasks.PatchReconstructionAnomalyHead`), calibrated
to a probability on the validation split, as SpectrumFM's anomaly adapter does.
"""

from __future__ import annotations

import sys
from pathlib import Path

from spectrumfm.errors import InputError

from .finetune import _Windows, backbone_split, subsample, task_split

FULL_LR = 1e-4      # --mode full: a tenth of the head's rate, the paper's "reduced" rates
HEAD_LR = 1e-3      # probe and LoRA, SpectrumFM's fine-tuning rate


def _refuse_spectrumfm_options(args) -> None:
    if args.features is not None:
        raise InputError(f"--features {args.features}: an LWM-Spectro backbone reads the "
                         "spectrograms it was pretrained on; leave --features out")


def run(args, backbone, meta: dict, digest: str, device) -> int:
    """Fine-tune ``backbone`` (an :class:`~spectrumfm.models.LWMSpectro` loaded on ``device``)
    as ``args`` (:func:`.finetune.get_args_parser`) says; writes the adapter folder."""
    from spectrumfm.tasks import (POSITIVE, PatchReconstructionAnomalyHead, TaskModel,
                                  build_head, predict)
    from spectrumfm.train import DistContext, TrainConfig, fit
    from spectrumfm.train.checkpoint import STATE_FILE
    from spectrumfm.train.lora import ADAPTER_FILE, trainable_share
    from spectrumfm.train.lwm_finetune import (input_description, open_task_examples,
                                               prepare_encoder, restore_best,
                                               save_lwm_adapter, source_opener)

    _refuse_spectrumfm_options(args)
    mode = args.mode or "lora"
    lr = args.lr if args.lr is not None else (FULL_LR if mode == "full" else HEAD_LR)
    cfg = backbone.config
    data = open_task_examples(args.data, cfg, args.task, seed=args.seed)
    split = backbone_split(meta, args)
    train_idx, val_idx, _ = task_split(args.data, data, window_len=cfg.input_len,
                                       open_source=source_opener(args.data, cfg), **split)
    train_idx, val_idx = subsample(train_idx, val_idx, args.max_windows, args.seed)
    fit_val_idx = val_idx
    if args.task == "anomaly":
        train_idx = train_idx[data.labels[train_idx] != POSITIVE]
        fit_val_idx = val_idx[data.labels[val_idx] != POSITIVE]
    if len(train_idx) == 0 or len(fit_val_idx) == 0:
        raise InputError(f"{args.data}: {len(data)} examples leave {len(train_idx)} for "
                         f"training and {len(fit_val_idx)} for validation; need at least one "
                         "of each")
    encoder = prepare_encoder(backbone, mode, args.task, rank=args.rank, alpha=args.alpha,
                              targets=args.targets)
    if args.task == "anomaly":
        head = PatchReconstructionAnomalyHead(cfg.n_tokens, cfg.mask_ratio)
    else:
        head = build_head(args.task, cfg.d_model, len(data.classes), kind=args.head or "rescnn")
    task_model = TaskModel(encoder, head, args.task).to(device)
    trainable, total, share = trainable_share(task_model)
    print(f"{args.task} ({mode}): {len(data.classes)} classes, {len(train_idx)} train / "
          f"{len(val_idx)} validation spectrograms of {cfg.n_frames} x {cfg.n_fft} (hop "
          f"{cfg.hop}); {trainable:,} of {total:,} parameters trainable ({100 * share:.2f} %)",
          file=sys.stderr)

    rate = args.input_rate if args.input_rate is not None else \
        (None if args.channel_oversample else data.samp_rate)
    base = {"backbone_arch": meta.get("arch"), "data": args.data, "split": split,
            "input": input_description(cfg, rate, bandwidth_fraction=args.bandwidth_fraction,
                                       oversample=args.channel_oversample)}
    features = backbone.features   # the backbone's own hop and statistics, on the device

    def save(status: str, **extra):
        save_lwm_adapter(args.out, mode, encoder, head, task=args.task, classes=data.classes,
                         backbone_dir=args.backbone, backbone_sha256=digest,
                         extra={**base, "status": status, **extra})

    def on_best(m, metrics):
        save("best epoch so far; the run has not finished", train=metrics)

    def loss_fn(m, batch, generator):
        iq, labels = batch
        return m.loss(features(iq), labels, generator=generator)

    if trainable:
        tcfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=lr,
                           warmup_steps=args.warmup, patience=args.patience, seed=args.seed,
                           num_workers=args.workers, progress=not args.no_progress,
                           resume=args.resume)
        result = fit(task_model, loss_fn, _Windows(data, train_idx),
                     _Windows(data, fit_val_idx), tcfg, out_dir=args.out,
                     ctx=DistContext(device=device), on_best=on_best,
                     run_info={"command": "finetune", "task": args.task, "mode": mode,
                               "data": args.data, "backbone": args.backbone})
        if not Path(args.out, ADAPTER_FILE).is_file():
            raise InputError(f"{args.out}: no epoch was saved (was it deleted during the run?)")
        restore_best(args.out, mode, encoder, head, device)
        train = {"epochs": result.epochs_completed, "best_epoch": result.best_epoch,
                 "best_val_loss": result.best_val}
    else:
        # A frozen encoder's anomaly score has nothing to learn: calibration is all.
        train = {"epochs": 0, "best_epoch": 0, "best_val_loss": None}

    extra_val = {}
    if args.task == "anomaly":
        raw = predict(task_model, data, val_idx, batch_size=args.batch, device=device,
                      fn=lambda m, f: m.head.raw_score(m.encoder, f), features=features)
        extra_val["calibration"] = head.calibrate(raw, data.labels[val_idx] == POSITIVE)
    probs = predict(task_model, data, val_idx, batch_size=args.batch, device=device,
                    features=features)
    val_acc = float((probs.argmax(1) == data.labels[val_idx]).mean())
    save("finished", val={"accuracy": val_acc, **extra_val}, train={
        **train, "mode": mode, "batch": args.batch, "lr": lr, "trainable_params": trainable,
        "total_params": total})
    Path(args.out, STATE_FILE).unlink(missing_ok=True)
    print(f"{mode} adapter written to {args.out} (best epoch {train['best_epoch']} of "
          f"{train['epochs']}, validation accuracy {val_acc:.4f}"
          + (f"; {extra_val['calibration']}" if extra_val else "") + ")")
    return 0
