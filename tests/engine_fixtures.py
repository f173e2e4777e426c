"""A complete model folder with random weights, laid out exactly like a shipped model.

The inference engine's tests (and anyone trying the engine by hand) need a backbone plus one
adapter per task without training for hours; the weights are random, so the decisions mean
nothing, but every file, config field and class list is what ``spectrumfm pretrain`` and
``spectrumfm finetune`` write::

    DIR/config.json, model.safetensors, README.md, MODEL_CARD.md
    DIR/adapters/<task>/adapter_config.json, adapter.safetensors, head.safetensors, MODEL_CARD.md

Run as a script to write one: ``python tests/engine_fixtures.py /tmp/fixture-model``
(``... /tmp/lwm-model --lwm`` for the LWM-Spectro folder of :func:`make_lwm_model_dir`).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

ARCH = "spectrumfm-tiny"
TASKS = ("sensing", "anomaly", "technology", "modulation")

# What each adapter's finetune data would have been: class names in logit order (the binary
# tasks put the detected class second, spectrumfm.tasks.POSITIVE) and the "input" block
# finetune records (the rate the windows were cut at; modulation also the signal's share of
# it). Sensing and anomaly read channel windows at whatever rate the channelizer gives.
_INPUT = {
    "sensing": {"samp_rate": None, "bandwidth_fraction": None},
    "anomaly": {"samp_rate": None, "bandwidth_fraction": None},
    "technology": {"samp_rate": 20e6, "bandwidth_fraction": None},
    "modulation": {"samp_rate": 1e6, "bandwidth_fraction": 0.25},
}


def task_classes(task: str) -> list[str]:
    """The class list an adapter of ``task`` trained on the project's data would carry."""
    from spectrumfm import synth

    if task == "sensing":
        return ["vacant", "occupied"]
    if task == "anomaly":
        return ["normal", "anomalous"]
    if task in ("technology", "modulation"):
        # The generator's ids (`spectrumfm generate --list`); modulation's are the 24
        # RadioML 2018 modulations.
        return list(synth.names(task))
    raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")


def _randomize_lora(model, generator: torch.Generator, std: float = 0.05) -> None:
    # lora_B starts at zero (the adapted model equals the backbone): give it values, so a
    # merged and an unmerged runner could disagree if merging went wrong.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)


def _card(path: Path, title: str, lines: list[str]) -> None:
    path.write_text("\n".join([f"# {title}", "", *lines, ""]))


def make_model_dir(path, tasks=TASKS, seed: int = 0) -> Path:
    """Write a random-weight ``spectrumfm-tiny`` model folder with adapters for ``tasks``.

    Args:
        path: the model folder, created if needed (its name is the model's name).
        tasks: adapter task names (sensing, anomaly, technology, modulation).
        seed: seeds the backbone, the LoRA matrices and the heads.

    Returns:
        the folder.
    """
    from spectrumfm.models import create_model
    from spectrumfm.tasks import build_head
    from spectrumfm.train.checkpoint import save_pretrained
    from spectrumfm.train.lora import apply_lora, backbone_sha256, save_adapter

    out = Path(path)
    torch.manual_seed(seed)
    backbone = create_model(ARCH)
    save_pretrained(out, backbone, arch=ARCH, extra={"fixture": "random weights (tests)"})
    _card(out / "MODEL_CARD.md", out.name,
          [f"Random-weight {ARCH} backbone written by tests/engine_fixtures.py (seed {seed}).",
           "For tests only: its outputs mean nothing."])
    digest = backbone_sha256(out)
    cfg = backbone.config
    for k, task in enumerate(tasks):
        classes = task_classes(task)
        g = torch.Generator().manual_seed(seed * 1000 + k + 1)
        torch.manual_seed(seed * 1000 + k + 1)
        model = apply_lora(copy.deepcopy(backbone), rank=8, alpha=16.0)
        _randomize_lora(model, g)
        head = build_head(task, cfg.d_model, len(classes), window_len=cfg.window_len,
                          mask_ratio=cfg.mask_ratio)
        if task == "anomaly":
            # Calibration as finetune would leave it, not the identity: probabilities spread.
            head.scale.fill_(2.0)
            head.bias.fill_(1.5)
        adapter_dir = out / "adapters" / task
        save_adapter(adapter_dir, model, head, task=task, classes=classes, backbone_dir=out,
                     backbone_sha256=digest,
                     extra={"backbone_arch": ARCH, "status": "finished",
                            "input": {**_INPUT[task], "window_len": cfg.window_len}})
        _card(adapter_dir / "MODEL_CARD.md", f"{out.name}/{task}",
              [f"Random LoRA adapter and head for {task} ({len(classes)} classes: "
               f"{', '.join(classes)}), written by tests/engine_fixtures.py.",
               "For tests only: its outputs mean nothing."])
    return out


LWM_ARCH = "lwm-spectro-tiny"
# A hop other than the default (64) and corpus statistics other than 0 / 1, so that a
# runner that ignored the stored features would be seen: 127 * 16 + 128 = 2160 samples per
# 128 x 128 image.
LWM_FEATURES = {"hop": 16, "spec_mean": -35.0, "spec_std": 12.0}
LWM_MODES = {"technology": "lora", "modulation": "probe"}


def make_lwm_model_dir(path, modes=None, seed: int = 0) -> Path:
    """Write a random-weight ``lwm-spectro-tiny`` model folder with emission adapters.

    Args:
        path: the model folder, created if needed.
        modes: adapter task -> fine-tuning mode (probe, lora, full), default
            :data:`LWM_MODES`; each adapter is written as ``spectrumfm finetune`` writes it
            (LoRA with random ``lora_B``, full with every encoder weight perturbed).
        seed: seeds the backbone and the adapters.

    Returns:
        the folder.
    """
    from spectrumfm.models import create_model
    from spectrumfm.tasks import build_head
    from spectrumfm.train.checkpoint import save_pretrained
    from spectrumfm.train.lora import backbone_sha256
    from spectrumfm.train.lwm_finetune import (input_description, prepare_encoder,
                                               save_lwm_adapter)

    out = Path(path)
    torch.manual_seed(seed)
    backbone = create_model(LWM_ARCH, **LWM_FEATURES)
    save_pretrained(out, backbone, arch=LWM_ARCH, extra={"fixture": "random weights (tests)"})
    _card(out / "MODEL_CARD.md", out.name,
          [f"Random-weight {LWM_ARCH} backbone written by tests/engine_fixtures.py "
           f"(seed {seed}).", "For tests only: its outputs mean nothing."])
    digest = backbone_sha256(out)
    cfg = backbone.config
    for k, (task, mode) in enumerate((modes or LWM_MODES).items()):
        classes = task_classes(task)
        g = torch.Generator().manual_seed(seed * 1000 + k + 1)
        torch.manual_seed(seed * 1000 + k + 1)
        encoder = prepare_encoder(copy.deepcopy(backbone), mode, task)
        if mode == "lora":
            _randomize_lora(encoder, g)
        elif mode == "full":
            with torch.no_grad():
                for p in encoder.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.02)
        head = build_head(task, cfg.d_model, len(classes), kind="rescnn")
        rate, frac = _INPUT[task]["samp_rate"], _INPUT[task]["bandwidth_fraction"]
        adapter_dir = out / "adapters" / task
        save_lwm_adapter(adapter_dir, mode, encoder, head, task=task, classes=classes,
                         backbone_dir=out, backbone_sha256=digest,
                         extra={"backbone_arch": LWM_ARCH, "status": "finished",
                                "input": input_description(cfg, rate,
                                                           bandwidth_fraction=frac)})
        _card(adapter_dir / "MODEL_CARD.md", f"{out.name}/{task}",
              [f"Random {mode}-mode adapter and head for {task} ({len(classes)} classes), "
               "written by tests/engine_fixtures.py.", "For tests only: its outputs mean "
               "nothing."])
    return out


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "/tmp/fixture-model"
    if len(sys.argv) > 2 and sys.argv[2] == "--lwm":
        print(make_lwm_model_dir(target))
    else:
        print(make_model_dir(target))
