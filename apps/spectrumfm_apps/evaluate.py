"""`spectrumfm evaluate`: score a fine-tuned adapter on a dataset.

    spectrumfm evaluate --model runs/sensing --data rml2018:GOLD.hdf5 --json

Loads the adapter onto its backbone (refused if the backbone's weights changed), merges
the LoRA update for inference (an LWM-Spectro adapter of any ``--mode``: see
``spectrumfm.train.lwm_finetune``; its examples become spectrograms with the backbone's own
features) and runs every window of the chosen split: by default the
test split that ``finetune`` held out, re-derived from the seed and fractions saved with
the adapter. Prints accuracy, macro F1, per-class precision / recall / F1 and accuracy per
SNR; for sensing also the ROC AUC and the detection probability at a false-alarm rate of
0.1, for anomaly detection the ROC AUC. With ``--json`` the last line of the output is one
JSON object with the same figures (NaN written as null).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from spectrumfm.errors import InputError

from .finetune import DEFAULT_FRACTIONS, task_split

DESCRIPTION = ("Score a fine-tuned adapter on a dataset; with --scenes, occupancy against the "
               "energy detector; with --few-shot, LWM-Spectro's few-shot protocol.")


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="spectrumfm evaluate",
                                          description=DESCRIPTION)
    p.add_argument("--model", required=True, metavar="DIR",
                   help="adapter folder (finetune --out); with --scenes, a model name or "
                        "folder (models/spectrumfm-tiny); with --few-shot, the pretrained "
                        "LWM-Spectro checkpoint (pretrain --out) or a shipped model's name")
    p.add_argument("--data", metavar="SPEC",
                   help="rml2016:PATH, rml2018:PATH, shards:DIR or sigmf:PATH")
    p.add_argument("--scenes", type=int, metavar="N",
                   help="instead of --data: occupancy on N generated two-emitter scenes per "
                        "SNR, the model against the energy detector on the same cells")
    p.add_argument("--snr", default="-10,-5,0,5",
                   help="with --scenes: the emitters' in-band SNRs, dB (default %(default)s)")
    p.add_argument("--channels", type=int, default=16,
                   help="with --scenes: channels of the occupancy grid (default %(default)s)")
    p.add_argument("--calibrate", action="store_true",
                   help="with --scenes: first fit the model/energy fusion on calibration "
                        "scenes and write it into the sensing adapter's config")
    p.add_argument("--split", choices=("test", "val", "all"), default="test",
                   help="which windows to score (default %(default)s: the held-out test split)")
    p.add_argument("--per-frame", action="store_true",
                   help="score whole frames: average the class probabilities of each frame's "
                        "windows (RadioML 2018's 1024-sample frames are 8 windows)")
    p.add_argument("--backbone", metavar="DIR",
                   help="the backbone folder, if it moved since fine-tuning")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--pfa", type=float, default=0.1,
                   help="false-alarm rate for the sensing Pd figure (default %(default)s)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    _few_shot_options(p)
    return p


def _few_shot_options(p: argparse.ArgumentParser) -> None:
    # LWM-Spectro's few-shot protocol (paper §V), run by .few_shot.
    g = p.add_argument_group("few-shot protocol (--few-shot; see spectrumfm_apps.few_shot)")
    g.add_argument("--few-shot", metavar="LIST",
                   help="instead of scoring an adapter: train the frozen encoder's heads, the "
                        "fine-tuned encoder and a CNN from scratch on N examples per class, for "
                        "each N of LIST (e.g. 2,5,10,20,50,100,200,400), and score them on "
                        "--data")
    g.add_argument("--trials", type=int, default=5,
                   help="random splits per N, for mean and std (default %(default)s)")
    g.add_argument("--methods", default="frozen,linear,finetuned,cnn",
                   help="which of frozen (the paper's head on the frozen encoder), linear (a "
                        "linear probe on it), finetuned and cnn to run (default %(default)s)")
    g.add_argument("--epochs", type=int, default=8,
                   help="most epochs per training; early stopping on the validation loss "
                        "(default %(default)s, the paper's)")
    g.add_argument("--n-val", type=int, default=20,
                   help="validation examples per class for early stopping: min(N, this) at "
                        "each N (default %(default)s)")
    g.add_argument("--n-test", type=int, default=100,
                   help="test examples per class, the same at every N of a trial "
                        "(default %(default)s)")
    g.add_argument("--lr", type=float, default=1e-3,
                   help="AdamW rate of the head and the CNN; the fine-tuned encoder gets a "
                        "tenth (default %(default)s)")
    g.add_argument("--train-batch", type=int, default=32,
                   help="training batch of every method (default %(default)s); --batch is "
                        "the inference batch")
    g.add_argument("--task", default=None,
                   help="relabel --data for a task (modulation, technology, sensing, ...); "
                        "default: the dataset's own classes")
    g.add_argument("--seed", type=int, default=0, help="seeds the splits and the training "
                   "(default %(default)s)")
    g.add_argument("--out", metavar="DIR",
                   help="folder for few_shot.json, few_shot.md and few_shot.png")


def add_parser(sub):
    p = sub.add_parser("evaluate", help="score an adapter on a dataset (or --scenes, --few-shot)",
                       description=DESCRIPTION)
    get_args_parser(p)
    p.set_defaults(func=main)
    return p


# More distinct SNRs than this are binned (SNR_BIN_DB wide) in the per-SNR figures.
MAX_SNR_KEYS = 40
SNR_BIN_DB = 5.0


def _finite(obj):
    # JSON has no NaN; a metric that is undefined (one class absent) is written as null.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def frame_vote(probs: np.ndarray, labels, snr_db, frames):
    """Average window probabilities per frame: (frame probs, labels, SNRs), frame order."""
    uniq, first, inverse = np.unique(frames, return_index=True, return_inverse=True)
    sums = np.zeros((len(uniq), probs.shape[1]), np.float64)
    np.add.at(sums, inverse, probs)
    counts = np.bincount(inverse, minlength=len(uniq))[:, None]
    return (sums / counts).astype(np.float32), np.asarray(labels)[first], \
        np.asarray(snr_db)[first]


def evaluate(probs, labels, snr_db, classes, task: str, pfa: float = 0.1) -> dict:
    """All figures of one evaluation from class probabilities (n, C)."""
    from spectrumfm import metrics
    from spectrumfm.tasks import BINARY_TASKS, POSITIVE

    pred = probs.argmax(axis=1)
    out = metrics.classification_report(labels, pred, classes)
    snr_db = np.asarray(snr_db, dtype=np.float64)
    if len(np.unique(snr_db[~np.isnan(snr_db)])) > MAX_SNR_KEYS:
        # A generated set draws a continuous SNR per example: report it in bins, each
        # keyed by its lower edge ("-5" holds -5 <= SNR < 0).
        snr_db = np.floor(snr_db / SNR_BIN_DB) * SNR_BIN_DB
        out["snr_bin_db"] = SNR_BIN_DB
    out["accuracy_per_snr"] = metrics.accuracy_per_snr(labels, pred, snr_db)
    if task in BINARY_TASKS:
        positive, score = labels == POSITIVE, probs[:, POSITIVE]
        out["roc_auc"] = metrics.roc_auc(positive, score)
        if task == "sensing":
            out["pd_at_pfa"] = metrics.pd_at_pfa(positive, score, pfa)
            out["pfa"] = pfa
            out["pd_at_pfa_per_snr"] = pd_per_snr(positive, score, snr_db, pfa)
    return out


def pd_per_snr(positive, score, snr_db, pfa: float) -> dict:
    """Pd of each SNR (bin) at the one threshold that gives ``pfa`` over all negatives."""
    negatives = np.sort(score[~positive])
    if not len(negatives) or not positive.any():
        return {}
    # The smallest threshold t with P(score > t | vacant) <= pfa.
    k = int(np.ceil(len(negatives) * (1 - pfa))) - 1
    t = negatives[min(max(k, 0), len(negatives) - 1)]
    out = {}
    for value in np.unique(snr_db[positive & ~np.isnan(snr_db)]):
        sel = positive & (snr_db == value)
        out[f"{value:g}"] = float((score[sel] > t).mean())
    return out


def _summary(res: dict) -> str:
    lines = [f"{res['task']} on {res['data']} ({res['split']} split, {res['n']} "
             f"{'frames' if res['per_frame'] else 'windows'}): accuracy {res['accuracy']:.4f}, "
             f"macro F1 {res['macro_f1']:.4f}"]
    extra = [f"ROC AUC {res['roc_auc']:.4f}" if res.get("roc_auc") is not None else None,
             f"Pd {res['pd_at_pfa']:.4f} at Pfa {res['pfa']:g}"
             if res.get("pd_at_pfa") is not None else None]
    extra = [e for e in extra if e]
    if extra:
        lines[0] += ", " + ", ".join(extra)
    lines.append(f"  {'class':<16} {'precision':>9} {'recall':>9} {'F1':>9} {'support':>8}")
    for name, m in res["per_class"].items():
        lines.append(f"  {name:<16} {m['precision']:9.4f} {m['recall']:9.4f} {m['f1']:9.4f} "
                     f"{m['support']:8d}")
    snr = res["accuracy_per_snr"]
    if snr:
        lines.append("  accuracy per SNR (dB): "
                     + ", ".join(f"{k}: {v:.3f}" for k, v in snr.items()))
    return "\n".join(lines)


def _load(args, device):
    """``(TaskModel, dataset, feature function, adapter config, split opener)`` of the
    adapter in ``args.model`` on ``args.data``; the opener (None: windows) reads the spec
    as pretraining did, for :func:`task_split`."""
    from spectrumfm.data import open_dataset
    from spectrumfm.features import features_for
    from spectrumfm.tasks import TaskModel
    from spectrumfm.train.adapter_files import read_adapter_config
    from spectrumfm.train.lwm_finetune import (is_spectrogram_adapter, load_lwm_adapter,
                                               open_task_examples, source_opener)

    split = None
    if is_spectrogram_adapter(read_adapter_config(args.model)):
        model, head, config = load_lwm_adapter(args.model, map_location=device,
                                               backbone_dir=args.backbone)
        split = config.get("split") or {"seed": 0, "fractions": list(DEFAULT_FRACTIONS)}
        data = open_task_examples(args.data, model.config, config["task"], seed=split["seed"])
        features, opener = model.features, source_opener(args.data, model.config)
    else:
        from spectrumfm.train.lora import load_adapter

        model, head, config = load_adapter(args.model, map_location=device, merged=True,
                                           backbone_dir=args.backbone)
        split = config.get("split") or {"seed": 0, "fractions": list(DEFAULT_FRACTIONS)}
        data = open_dataset(args.data, window_len=model.config.window_len, task=config["task"],
                            seed=split["seed"])
        try:
            features = features_for((config.get("input") or {}).get("features"))
        except ValueError as e:
            raise InputError(f"{args.model}: {e}") from None
        opener = None
    return TaskModel(model, head, config["task"]), data, features, {**config, "split": split}, \
        opener


# The options only one way of evaluating reads; the others refuse them rather than ignore
# them (``--task snr-mobility`` on an adapter would otherwise score the adapter's own task).
_ONLY = {"few-shot": ("trials", "methods", "epochs", "n_val", "n_test", "lr", "train_batch",
                       "task", "seed", "out"),
         "scenes": ("snr", "channels", "calibrate"),
         "adapter": ("split", "per_frame", "backbone", "pfa")}
_WITH = {"few-shot": "with --few-shot", "scenes": "with --scenes",
         "adapter": "when scoring an adapter on --data"}


def _refuse_other_modes(args) -> None:
    mode = ("few-shot" if getattr(args, "few_shot", None) is not None else
            "scenes" if args.scenes is not None else "adapter")
    defaults = get_args_parser(argparse.ArgumentParser(add_help=False)).parse_args(
        ["--model", "_"])
    for owner, names in _ONLY.items():
        if owner == mode:
            continue
        for name in names:
            if getattr(args, name, None) != getattr(defaults, name):
                raise InputError(f"--{name.replace('_', '-')}: only used {_WITH[owner]}, not "
                                 f"{_WITH[mode]}")


def main(args) -> int:
    from spectrumfm.tasks import predict
    from spectrumfm.train import resolve_device

    _refuse_other_modes(args)
    if getattr(args, "few_shot", None) is not None:
        from . import few_shot
        return few_shot.main(args)
    if args.scenes is not None:
        import os

        from spectrumfm.infer.bundle import add_search_dir

        from . import eval_scenes
        from ._paths import DATA_DIR
        add_search_dir(os.path.join(DATA_DIR, "models"))
        return eval_scenes.main(args)
    if not args.data:
        raise InputError("evaluate: no --data (the dataset to score) and no --scenes")
    if args.batch < 1 or not 0 <= args.pfa <= 1:
        raise InputError("--batch must be >= 1 and --pfa within [0, 1]")
    device = resolve_device(args.device)
    task_model, data, features, config, opener = _load(args, device)
    task, classes, split = config["task"], config["classes"], config["split"]
    if config.get("status", "finished") != "finished":
        print(f"spectrumfm: warning: {args.model}: {config['status']}", file=sys.stderr)
    if data.classes != classes:
        raise InputError(f"{args.data}: classes {data.classes} differ from the {classes} the "
                         f"adapter in {args.model} was trained on")
    if args.split == "all":
        idx = np.arange(len(data))
    else:
        window_len = getattr(task_model.encoder.config, "window_len", None)
        parts = task_split(args.data, data, window_len=window_len, open_source=opener,
                           fractions=split["fractions"], seed=split["seed"])
        idx = parts[2 if args.split == "test" else 1]
    if len(idx) == 0:
        raise InputError(f"{args.data}: the {args.split} split is empty")
    probs = predict(task_model, data, idx, batch_size=args.batch, device=device,
                    features=features)
    labels, snr = data.labels[idx], data.snr_db[idx]
    if args.per_frame:
        probs, labels, snr = frame_vote(probs, labels, snr, data.frame_index[idx])
    res = {"task": task, "data": args.data, "split": args.split, "per_frame": args.per_frame,
           "n": int(len(labels)), "same_data_as_training": config.get("data") == args.data,
           **evaluate(probs, labels, snr, classes, task, args.pfa)}
    res = _finite(res)
    print(_summary(res))
    if args.json:
        print(json.dumps(res, allow_nan=False))
    return 0
