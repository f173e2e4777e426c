"""`spectrumfm evaluate --few-shot`: LWM-Spectro's few-shot protocol (paper §V).

    spectrumfm evaluate --few-shot 2,5,10,20,50,100,200,400 --trials 5 \\
        --model runs/lwm-s2 --data shards:phoenix --out runs/few-shot

On a dataset from a scenario the encoder never saw: for every N per class and trial, a
stratified train / validation / test split kept apart by frame, then the frozen encoder with
the paper's head (``frozen``, "LWM"), a linear probe on the same frozen embeddings
(``linear``, ours), the encoder fine-tuned with the paper's head (``finetuned``, "LWM_FT")
and a CNN from scratch on the same images (``cnn``, "Deep CNN") each trained on the N
examples per class and scored on the test part (:mod:`spectrumfm.train.few_shot`).

Within a trial the test part is the same at every N and the training sets are nested, so
the curves compare training-set sizes and nothing else; the validation part at N is
``min(N, --n-val)`` examples per class (a user with N labels per class would not hold out
more than N for early stopping), all drawn from one reserve kept apart from every training
set. Trials are the outer loop, so one trial's spectrograms are computed once and then
freed; ``few_shot.json`` is rewritten after every (trial, N), so an interrupted run keeps
everything it finished, and the summary covers the trials finished at each N.

Writes ``few_shot.json`` (settings, classes, every run, the summary, seconds per method),
``few_shot.md`` (the table) and ``few_shot.png`` (macro-F1 against N per class).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from spectrumfm.errors import InputError

LABELS = {"frozen": "frozen (LWM)", "linear": "frozen, linear probe",
          "finetuned": "fine-tuned (LWM_FT)", "cnn": "CNN (scratch)"}
COLORS = {"frozen": "C0", "linear": "C3", "finetuned": "C1", "cnn": "C2"}  # fixed across plots


def parse_counts(text: str) -> list[int]:
    """``"2,5,10"`` -> [2, 5, 10], sorted and without repeats; each a whole number >= 1."""
    counts = []
    for item in str(text).split(","):
        try:
            n = int(item.strip())
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"--few-shot {text}: {item.strip()!r} is not a whole number >= 1")
        counts.append(n)
    return sorted(set(counts))


def _methods(text: str) -> list[str]:
    from spectrumfm.train.few_shot import METHODS

    methods = [m.strip() for m in str(text).split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            raise InputError(f"--methods: unknown method {m!r} (one of {', '.join(METHODS)})")
    if not methods:
        raise InputError(f"--methods {text!r}: names no method (one of {', '.join(METHODS)})")
    return [m for m in METHODS if m in methods]


def _check_args(args) -> tuple[list[int], list[str]]:
    from spectrumfm.data.readers import TASKS

    counts = parse_counts(args.few_shot)
    if args.scenes is not None:
        raise InputError("--few-shot and --scenes are separate evaluations; give one")
    if not args.data or not args.out:
        raise InputError("--few-shot needs --data (the unseen scenario's dataset) and --out "
                         "(the folder for few_shot.json, .md and .png)")
    for name, value in (("--trials", args.trials), ("--epochs", args.epochs),
                        ("--n-val", args.n_val), ("--n-test", args.n_test),
                        ("--train-batch", args.train_batch), ("--batch", args.batch)):
        if value < 1:
            raise InputError(f"{name} {value}: must be >= 1")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise InputError(f"--lr {args.lr}: must be a positive number")
    if args.task is not None and args.task not in TASKS:
        raise InputError(f"--task {args.task}: unknown (one of {', '.join(TASKS)})")
    return counts, _methods(args.methods)


def _load_model(spec: str, device):
    """The pretrained encoder in ``spec`` (a folder or a shipped model's name), its
    config.json, folder and kind (``lwm`` or ``moe``)."""
    from spectrumfm.infer.bundle import add_search_dir, resolve_model
    from spectrumfm.train import load_pretrained
    from spectrumfm.train.few_shot import encoder_kind

    from ._paths import DATA_DIR

    add_search_dir(os.path.join(DATA_DIR, "models"))
    folder = resolve_model(spec)
    model, meta = load_pretrained(folder, map_location=device)
    kind = encoder_kind(model)
    if kind is None:
        raise InputError(f"--model {spec}: holds a {meta['arch']} checkpoint; the few-shot "
                         "protocol needs an LWM-Spectro encoder (pretrain --model "
                         "lwm-spectro-...) or an LWM-Spectro mixture of experts")
    return model.eval(), meta, folder, kind


def _cell(row: dict | None, metric: str) -> str:
    if row is None:
        return "–"
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def table(report: dict) -> str:
    """The markdown table of ``report["summary"]``: a row per N, accuracy and macro-F1 of
    each method as mean ± std over the trials, then a line saying what was measured."""
    methods, rows = report["settings"]["methods"], report["summary"]
    by = {(r["n"], r["method"]): r for r in rows}
    head = ["N/class"] + [f"{LABELS[m]} {k}" for m in methods for k in ("accuracy", "macro-F1")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted({r["n"] for r in rows}):
        cells = [_cell(by.get((n, m)), k) for m in methods for k in ("accuracy", "macro_f1")]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    s = report["settings"]
    # A trial counts when every (N, method) of it finished; an interrupted one is named apart
    # (its finished rows are in the means, each row's count in few_shot.json's summary).
    runs = {}
    for r in report["runs"]:
        runs.setdefault(r["trial"], set()).add((r["n"], r["method"]))
    need = {(n, m) for n in s["n_per_class"] for m in methods}
    full = [t for t, got in runs.items() if need <= got]
    part = len(runs) - len(full)
    task = f"task {s['task']}" if s["task"] else "the dataset's own classes"
    lines += ["", f"Model `{s['model']}` ({report['model']['arch']}), data `{s['data']}`, "
              f"{task}, {len(report['classes'])} classes, "
              f"{len(full)} of {s['trials']} trials"
              + (f" and {part} interrupted (in the rows it reached)" if part else "")
              + f", {s['n_test']} test examples per class: chance level {report['chance']:.3f}."]
    lines += [f"Note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    """Macro-F1 against N per class (log axis), mean with std bars per method, chance level
    dashed; False (and a warning) where matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("spectrumfm: warning: matplotlib is not installed: no few_shot.png "
              "(apt install python3-matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in report["settings"]["methods"]:
        rows = [r for r in report["summary"] if r["method"] == method]
        if rows:
            ax.errorbar([r["n"] for r in rows], [r["macro_f1_mean"] for r in rows],
                        yerr=[r["macro_f1_std"] or 0.0 for r in rows], marker="o",
                        capsize=3, label=LABELS[method], color=COLORS[method])
    ax.axhline(report["chance"], color="grey", linestyle="--", label="chance")
    ax.set_xscale("log")
    # Ticks at the N values measured, written as numbers (not 2 x 10^0).
    ns = sorted({r["n"] for r in report["summary"]})
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("training examples per class (N)")
    ax.set_ylabel("macro-F1 on the test part")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"few-shot: {Path(report['settings']['model']).name} on "
                 f"{report['settings']['data']}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _write_json(out: Path, report: dict) -> None:
    # Beside the target, then renamed: an interruption never leaves half a file.
    tmp = out / ".few_shot.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, out / "few_shot.json")


def _progress(trial: int, trials: int, n: int, results: dict) -> str:
    parts = [f"{m} acc {r['accuracy']:.3f} F1 {r['macro_f1']:.3f} ({r['seconds']:.1f} s)"
             for m, r in results.items()]
    return f"trial {trial + 1}/{trials} N={n}: " + ", ".join(parts)


def _write_all(out: Path, report: dict) -> None:
    _write_json(out, report)
    (out / "few_shot.md").write_text(table(report) + "\n")
    plot(report, out / "few_shot.png")


def _run(model, data, splits: list[dict], cfg, device, report: dict, out: Path,
         seed: int) -> None:
    """Every trial in turn, appending to ``report``; the JSON is rewritten after each
    (trial, N), the table and the plot after each trial."""
    from spectrumfm.train.few_shot import EmbeddingCache, run_trial, summarise

    methods, trials = report["settings"]["methods"], len(splits)
    embeddings = EmbeddingCache(model, device, cfg.eval_batch)
    for trial, trial_splits in enumerate(splits):
        finished: dict[int, dict] = {}
        for n, method, res in run_trial(model, data, trial_splits, methods, cfg, device,
                                        trial=trial, seed=seed, embeddings=embeddings):
            sizes = dict(zip(("train", "val", "test"), map(len, trial_splits[n])))
            report["runs"].append({"n": n, "trial": trial, "method": method,
                                   "examples": sizes, **res})
            report["seconds"][method] += res["seconds"]
            finished.setdefault(n, {})[method] = res
            if len(finished[n]) == len(methods):
                print(_progress(trial, trials, n, finished[n]), file=sys.stderr, flush=True)
                report["summary"] = summarise(report["runs"])
                _write_json(out, report)
        _write_all(out, report)


def _all_splits(data, counts: list[int], args) -> list[dict]:
    """Every trial's split at every N, drawn before any training, so that a class too small
    for the largest N stops the run at once; the error then names the largest N that fits
    with its own validation count, min(N, --n-val), in every trial (a search: the splits
    nest, so what fits at N fits below it)."""
    from spectrumfm.train.few_shot import TooFewExamplesError, few_shot_split

    def split(trial: int, n: int):
        return few_shot_split(data.labels, data.frame_index, n, min(n, args.n_val),
                              args.n_test, np.random.default_rng([args.seed, trial]),
                              data.classes)

    try:
        return [{n: split(t, n) for n in counts} for t in range(args.trials)]
    except TooFewExamplesError as e:
        lo, hi = 0, max(counts) - 1          # lo fits (0: trivially), the answer is <= hi
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                for t in range(args.trials):
                    split(t, mid)
                lo = mid
            except TooFewExamplesError:
                hi = mid - 1
        raise TooFewExamplesError(e.problem, lo, " (lower --n-test or --n-val for more)"
                                  if lo else "") from None


def main(args) -> int:
    """Run the protocol as ``args`` (evaluate's parser) say; 0 when every run finished."""
    from spectrumfm.train import resolve_device
    from spectrumfm.train.few_shot import FewShotConfig
    from spectrumfm.train.lwm import open_examples

    counts, methods = _check_args(args)
    device = resolve_device(args.device)
    model, meta, folder, kind = _load_model(args.model, device)
    notes = []
    if kind == "moe" and "finetuned" in methods:
        if methods == ["finetuned"]:
            raise InputError(f"--model {args.model}: a mixture of experts; --methods finetuned "
                             "is not offered for it (use frozen, linear or cnn)")
        methods.remove("finetuned")
        notes.append("fine-tuning a mixture of experts is not offered: the finetuned method "
                     "was left out")
        print(f"spectrumfm: note: {notes[-1]}", file=sys.stderr)
    data, _, _ = open_examples(args.data, model.config, allow_fit=False, task=args.task,
                               seed=args.seed,
                               fixed_hint=" (a pretrained model's hop is fixed)")
    classes = list(data.classes)
    n_val = {n: min(n, args.n_val) for n in counts}
    try:
        splits = _all_splits(data, counts, args)
    except InputError:
        data.close()
        raise
    cfg = FewShotConfig(epochs=args.epochs, batch_size=args.train_batch, lr=args.lr,
                        eval_batch=args.batch)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "settings": {"model": args.model, "data": args.data, "task": args.task,
                     "n_per_class": counts, "trials": args.trials, "methods": methods,
                     "n_val": n_val, "n_test": args.n_test, "seed": args.seed,
                     "device": str(device), "epochs": cfg.epochs, "batch": cfg.batch_size,
                     "lr": cfg.lr, "encoder_lr": cfg.lr * cfg.encoder_lr_ratio,
                     "weight_decay": cfg.weight_decay, "patience": cfg.patience,
                     "min_batches_per_epoch": cfg.min_batches, "optimizer": "AdamW"},
        "model": {"path": str(folder), "arch": meta["arch"], "kind": kind,
                  "d_model": model.config.d_model},
        "classes": classes, "chance": 1.0 / len(classes), "notes": notes,
        "status": "running",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "runs": [], "summary": [], "seconds": {m: 0.0 for m in methods}}
    print(f"few-shot: {len(classes)} classes, N/class {','.join(map(str, counts))}, "
          f"{args.trials} trials, methods {', '.join(methods)} on {device}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        _run(model, data, splits, cfg, device, report, out, args.seed)
    except KeyboardInterrupt:
        report["status"] = "interrupted"
        print(f"spectrumfm: interrupted; the finished runs are in {out}", file=sys.stderr)
        raise
    except Exception as exc:
        report["status"] = f"stopped by an error: {exc}"
        raise
    else:
        report["status"] = "finished"
    finally:
        data.close()
        report["seconds"]["total"] = time.perf_counter() - t0
        if report["runs"]:
            _write_all(out, report)
    print(table(report))
    print(f"-> {out / 'few_shot.json'}, few_shot.md, few_shot.png "
          f"({report['seconds']['total']:.1f} s)")
    if args.json:
        print(json.dumps({k: report[k] for k in ("settings", "model", "classes", "chance",
                                                 "notes", "summary", "seconds")},
                         allow_nan=False))
    return 0
