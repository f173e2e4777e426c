"""LoRA fine-tuning of a SpectrumFM backbone through peft (paper §II-C, eq. 15).

The backbone is wrapped with ``peft.get_peft_model``, not ``inject_adapter_in_model``. Both
accept a plain ``nn.Module`` (the encoder is no Transformers model; peft only matches module
names) and both freeze the base weights, but only the wrapper has ``merge_and_unload``
(inference on merged weights, no LoRA overhead) and ``disable_adapter`` (the backbone's
own output, for comparisons); merging an injected model would mean re-implementing peft's
unload logic. Attribute access falls through the wrapper, so ``peft_model.forward_encoder``,
``.decoder`` and ``.forward_pretrain`` are the backbone's own, with the LoRA updates active.

peft scales the update by ``alpha / rank`` (Hu et al.), so the defaults alpha 16, rank 8
give ``W + 2 B A``. The paper's eq. 15 writes ``W + alpha A B``, but the authors' code
scales by ``alpha / rank`` as well.

An adapter folder holds only what fine-tuning changed, next to a reference to the backbone:

* ``adapter.safetensors``: the LoRA matrices under peft's own key names (peft's
  ``set_peft_model_state_dict`` reads them unchanged);
* ``head.safetensors``: the task head's state dict;
* ``adapter_config.json``: ``mode`` ("lora"), rank, alpha, targets, task, class names, the
  head's config and the backbone (its path, absolute and relative to the adapter, and the
  SHA-256 of its ``model.safetensors``). An adapter is refused on any other backbone: LoRA
  deltas only mean something on the exact weights they were trained against.

LWM-Spectro's frozen-encoder and full fine-tuning modes write the same folder through
:func:`write_adapter_folder`, ``lora`` null and ``adapter.safetensors`` holding no tensors or
the whole encoder (:mod:`.lwm_finetune`); :func:`load_adapter` loads LoRA adapters only.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from peft import get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from spectrumfm.errors import InputError
from spectrumfm.models import LORA_TARGETS
from spectrumfm.tasks import head_config

# The folder's files are read by code without peft too (inference); see adapter_files.
from .adapter_files import (ADAPTER_CONFIG_FILE, ADAPTER_FILE, ADAPTER_FORMAT, HEAD_FILE,
                            TARGET_PRESETS, backbone_sha256, bad_config, build_head,
                            check_backbone, file_sha256, load_head_weights, load_tensors,
                            read_adapter_config, resolve_targets)
from .checkpoint import describe_mismatch, load_pretrained

__all__ = ["apply_lora", "trainable_share", "merge", "save_adapter", "write_adapter_folder",
           "load_adapter",
           "resolve_targets", "file_sha256", "backbone_sha256", "TARGET_PRESETS",
           "ADAPTER_FILE", "HEAD_FILE", "ADAPTER_CONFIG_FILE"]


def apply_lora(backbone: nn.Module, *, rank: int = 8, alpha: float = 16.0,
               targets=None) -> PeftModel:
    """Add LoRA (rank ``rank``, scale ``alpha / rank``) to ``backbone`` and freeze the rest.

    The backbone is modified in place (its target layers become LoRA layers) and returned
    wrapped. Every base parameter, the pretraining decoder and next-slot head included, has
    ``requires_grad = False`` afterwards; only the ``lora_A`` / ``lora_B`` matrices train.
    ``lora_B`` starts at zero, so the wrapped model computes exactly the backbone's function
    until the first update.
    """
    if rank < 1 or alpha <= 0:
        raise ValueError(f"LoRA needs rank >= 1 and alpha > 0, got rank {rank}, alpha {alpha}")
    config = LoraConfig(r=int(rank), lora_alpha=float(alpha), lora_dropout=0.0, bias="none",
                        target_modules=resolve_targets(targets))
    return get_peft_model(backbone, config)


def trainable_share(model: nn.Module) -> tuple[int, int, float]:
    """``(trainable, total, trainable / total)`` parameter counts of ``model``.

    Pass the whole :class:`~spectrumfm.tasks.TaskModel` to count the head with the LoRA
    matrices, or the wrapped backbone to count LoRA alone. The total includes the frozen
    pretraining decoder and next-slot head, which a fine-tuned model carries along.
    """
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total, (trainable / total if total else 0.0)


def merge(model: PeftModel) -> nn.Module:
    """Fold the LoRA updates into the base weights and drop the LoRA layers (peft's
    ``merge_and_unload``): the plain backbone class, as fast as the original, computing what
    the adapted model computes (to float32 rounding)."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"merge() takes a LoRA-wrapped model, got {type(model).__name__}")
    return model.merge_and_unload()


def _cpu(tensors: dict) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def save_adapter(out_dir, model: PeftModel, head: nn.Module, *, task: str, classes,
                 backbone_dir, backbone_sha256: str, extra: dict | None = None) -> Path:
    """Write the adapter folder (see the module docstring); returns it.

    Args:
        model: the LoRA-wrapped backbone from :func:`apply_lora` (not merged).
        head: the task head; rebuilt on load from ``tasks.head_config(head)``.
        task, classes: the task name and class names in logit order.
        backbone_dir, backbone_sha256: the backbone folder and its weights' SHA-256.
        extra: more top-level JSON (data spec, split seed, metrics, training settings).
    """
    if not isinstance(model, PeftModel):
        raise TypeError("save_adapter needs the unmerged LoRA model (merging loses the adapter)")
    lora = model.peft_config["default"]
    return write_adapter_folder(
        out_dir, get_peft_model_state_dict(model), head, task=task, classes=classes,
        backbone_dir=backbone_dir, backbone_sha256=backbone_sha256, mode="lora",
        lora={"rank": lora.r, "alpha": lora.lora_alpha,
              "targets": [t for t in LORA_TARGETS if t in set(lora.target_modules)],
              "library": "peft"},
        extra=extra)


def write_adapter_folder(out_dir, tensors: dict, head: nn.Module, *, task: str, classes,
                         backbone_dir, backbone_sha256: str, mode: str, lora: dict | None,
                         extra: dict | None = None) -> Path:
    """The adapter folder of any fine-tuning mode: ``tensors`` as ``adapter.safetensors``,
    the head, and ``adapter_config.json`` with ``mode`` and ``lora`` (None unless the mode
    is LoRA) beside the fields :func:`save_adapter` documents."""
    from safetensors.torch import save_file

    from spectrumfm import __version__

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    backbone = Path(backbone_dir).resolve()
    config = {
        "format": ADAPTER_FORMAT,
        "task": task,
        "classes": [str(c) for c in classes],
        "mode": mode,
        "lora": lora,
        "head": head_config(head),
        "backbone": {"path": str(backbone),
                     "relative_path": os.path.relpath(backbone, out.resolve()),
                     "sha256": backbone_sha256},
        "code_version": __version__,
        "command": shlex.join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    save_file(_cpu(tensors), str(out / ADAPTER_FILE), metadata={"format": "pt"})
    save_file(_cpu(head.state_dict()), str(out / HEAD_FILE), metadata={"format": "pt"})
    (out / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_adapter(adapter_dir, *, map_location="cpu", merged: bool = True,
                 backbone_dir=None) -> tuple[nn.Module, nn.Module, dict]:
    """Load an adapter onto the backbone it names.

    Args:
        adapter_dir: folder written by :func:`save_adapter`.
        map_location: device for the model and head.
        merged: fold LoRA into the weights (inference) or keep the peft wrapper (training,
            or to read the LoRA matrices).
        backbone_dir: use this backbone folder instead of the recorded path (a moved
            backbone); its weights must still hash to the recorded SHA-256.

    Returns:
        ``(backbone with LoRA, merged or wrapped, in eval mode; head in eval mode; config)``.

    Raises:
        InputError: a missing or malformed file; a backbone whose weights differ from the
            one the adapter was trained on; adapter or head tensors that do not fit.
    """
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    if config.get("mode", "lora") != "lora":
        raise InputError(f"{adapter_dir}: a {config.get('mode')}-mode adapter, without LoRA "
                         "matrices; load it with spectrumfm.train.lwm_finetune.load_lwm_adapter")
    backbone = check_backbone(adapter_dir, config, backbone_dir)
    model, _ = load_pretrained(backbone, map_location=map_location)
    lora = config["lora"]
    try:
        model = apply_lora(model, rank=int(lora["rank"]), alpha=float(lora["alpha"]),
                           targets=lora["targets"])
    except (KeyError, TypeError, ValueError) as e:
        raise bad_config(adapter_dir, e) from None
    head = build_head(adapter_dir, config, map_location)
    tensors = load_tensors(adapter_dir / ADAPTER_FILE, map_location)
    problem = describe_mismatch(get_peft_model_state_dict(model), tensors)
    if problem:
        raise InputError(f"{adapter_dir / ADAPTER_FILE}: does not fit the backbone: {problem}")
    set_peft_model_state_dict(model, tensors)
    head = load_head_weights(adapter_dir, head, map_location)
    if merged:
        model = merge(model)
    return model.to(map_location).eval(), head, config
