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
* ``adapter_config.json``: rank, alpha, targets, task, class names, the head's config and
  the backbone (its path, absolute and relative to the adapter, and the SHA-256 of its
  ``model.safetensors``). An adapter is refused on any other backbone: LoRA deltas only
  mean something on the exact weights they were trained against.
"""

from __future__ import annotations

import hashlib
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
from spectrumfm.tasks import head_config, head_from_config

from .checkpoint import WEIGHTS_FILE, describe_mismatch, load_pretrained

__all__ = ["apply_lora", "trainable_share", "merge", "save_adapter", "load_adapter",
           "resolve_targets", "file_sha256", "backbone_sha256", "TARGET_PRESETS",
           "ADAPTER_FILE", "HEAD_FILE", "ADAPTER_CONFIG_FILE"]

ADAPTER_FILE = "adapter.safetensors"
HEAD_FILE = "head.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_FORMAT = "spectrumfm-lora/1"

# "all": every linear and pointwise-conv weight of the encoder blocks, the target
# set (rank 8 on the paper model: 819,200 LoRA parameters, 5.0 % of the backbone's 16.3 M).
# "attention": the four attention projections only (262,144, 1.6 %), the original LoRA
# paper's choice, the one that comes near the SpectrumFM paper's "2 % of parameters".
TARGET_PRESETS = {"all": list(LORA_TARGETS),
                  "attention": ["q_proj", "k_proj", "v_proj", "out_proj"]}


def resolve_targets(targets=None) -> list[str]:
    """A preset name, a comma-separated string or a list of LORA_TARGETS suffixes -> list.

    Raises ValueError for a name that is not one of the encoder's LoRA targets (the input
    projection and depthwise conv are deliberately not adaptable, see LORA_TARGETS).
    """
    if targets is None:
        return list(LORA_TARGETS)
    if isinstance(targets, str):
        targets = TARGET_PRESETS.get(targets) or [t.strip() for t in targets.split(",")]
    unknown = sorted(set(targets) - set(LORA_TARGETS))
    if unknown or not targets:
        raise ValueError(f"unknown LoRA targets {unknown or targets}; choose from "
                         f"{', '.join(LORA_TARGETS)} or a preset ({', '.join(TARGET_PRESETS)})")
    return [t for t in LORA_TARGETS if t in set(targets)]


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


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def backbone_sha256(backbone_dir) -> str:
    """SHA-256 of a checkpoint folder's weights file, the identity an adapter refers to."""
    path = Path(backbone_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing (is {backbone_dir} a spectrumfm checkpoint folder?)")
    return file_sha256(path)


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
    from safetensors.torch import save_file

    from spectrumfm import __version__

    if not isinstance(model, PeftModel):
        raise TypeError("save_adapter needs the unmerged LoRA model (merging loses the adapter)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lora = model.peft_config["default"]
    backbone = Path(backbone_dir).resolve()
    config = {
        "format": ADAPTER_FORMAT,
        "task": task,
        "classes": [str(c) for c in classes],
        "lora": {"rank": lora.r, "alpha": lora.lora_alpha,
                 "targets": [t for t in LORA_TARGETS if t in set(lora.target_modules)],
                 "library": "peft"},
        "head": head_config(head),
        "backbone": {"path": str(backbone),
                     "relative_path": os.path.relpath(backbone, out.resolve()),
                     "sha256": backbone_sha256},
        "code_version": __version__,
        "command": shlex.join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    save_file(_cpu(get_peft_model_state_dict(model)), str(out / ADAPTER_FILE),
              metadata={"format": "pt"})
    save_file(_cpu(head.state_dict()), str(out / HEAD_FILE), metadata={"format": "pt"})
    (out / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out


def read_adapter_config(adapter_dir) -> dict:
    """``adapter_config.json`` of an adapter folder, checked for the fields loading needs."""
    path = Path(adapter_dir) / ADAPTER_CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a spectrumfm adapter folder?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable or malformed JSON ({e})") from None
    need = ("task", "classes", "lora", "head", "backbone")
    if not isinstance(config, dict) or config.get("format") != ADAPTER_FORMAT or \
            any(k not in config for k in need):
        raise InputError(f"{path}: not a {ADAPTER_FORMAT} adapter config (needs "
                         f"format and {', '.join(need)})")
    return config


def _find_backbone(adapter_dir: Path, ref: dict, override) -> Path:
    # The relative path first: an adapter and its backbone copied together to another
    # machine keep working although the absolute path no longer exists there.
    if override is not None:
        return Path(override)
    if ref.get("relative_path"):
        beside = adapter_dir / ref["relative_path"]
        if (beside / WEIGHTS_FILE).is_file():
            return beside
    return Path(str(ref.get("path", "")))


def _load_tensors(path: Path, device) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({e})") from None


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
    ref = config["backbone"]
    backbone = _find_backbone(adapter_dir, ref, backbone_dir)
    digest = backbone_sha256(backbone)
    if digest != ref.get("sha256"):
        raise InputError(f"{adapter_dir}: adapter was trained on backbone sha256 "
                         f"{str(ref.get('sha256'))[:12]}… ({ref.get('path')}), but "
                         f"{backbone / WEIGHTS_FILE} has {digest[:12]}…: an adapter only "
                         "fits the backbone it was trained on")
    model, _ = load_pretrained(backbone, map_location=map_location)
    lora = config["lora"]
    try:
        model = apply_lora(model, rank=int(lora["rank"]), alpha=float(lora["alpha"]),
                           targets=lora["targets"])
        head = head_from_config(config["head"]).to(map_location)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{adapter_dir / ADAPTER_CONFIG_FILE}: bad lora/head config ({e})") \
            from None
    tensors = _load_tensors(adapter_dir / ADAPTER_FILE, map_location)
    problem = describe_mismatch(get_peft_model_state_dict(model), tensors)
    if problem:
        raise InputError(f"{adapter_dir / ADAPTER_FILE}: does not fit the backbone: {problem}")
    set_peft_model_state_dict(model, tensors)
    head_tensors = _load_tensors(adapter_dir / HEAD_FILE, map_location)
    problem = describe_mismatch(head.state_dict(), head_tensors)
    if problem:
        raise InputError(f"{adapter_dir / HEAD_FILE}: does not fit its config: {problem}")
    head.load_state_dict(head_tensors)
    if merged:
        model = merge(model)
    return model.to(map_location).eval(), head.eval(), config
