"""LoRA adapters folded into a plain backbone without peft.

Inference only ever needs the merged weights, ``W + (alpha / rank) B A`` for every adapted
layer. peft computes the same (``merge_and_unload``), but importing it pulls in transformers
and costs seconds at every start of ``spectrumfm classify`` or ``spectrumfm run``. This module
reads ``adapter.safetensors`` under peft's own key names
(``base_model.model.<module>.lora_A.weight`` / ``.lora_B.weight``, no adapter name), checks it
against the layers peft would have adapted, and adds the update in place. Training keeps
using :func:`spectrumfm.train.lora.load_adapter`; a test holds the two equal.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from spectrumfm.errors import InputError
from spectrumfm.train.adapter_files import (ADAPTER_FILE, bad_config, build_head,
                                            check_backbone, load_head_weights, load_tensors,
                                            read_adapter_config, resolve_targets)
from spectrumfm.train.checkpoint import describe_mismatch, load_pretrained

__all__ = ["lora_layers", "merge_lora", "load_merged"]

_PREFIX = "base_model.model."   # peft's wrapper (PeftModel.base_model = LoraModel.model)


def lora_layers(model: nn.Module, targets, rank: int) -> dict[str, dict[str, tuple]]:
    """The layers peft adapts and the LoRA shapes it gives them.

    peft matches a target name against the module name itself or its last dotted part; the
    SpectrumFM targets are all ``nn.Linear`` or ``nn.Conv1d``, LWM-Spectro's (its
    Transformer blocks' linears, loaded by ``lwm_finetune.load_lwm_adapter``) ``nn.Linear``.

    Returns:
        ``{module name: {"A": lora_A shape, "B": lora_B shape}}``; Linear ``(r, in)`` and
        ``(out, r)``, Conv1d ``(r, in, k)`` and ``(out, r, 1)``.

    Raises:
        ValueError: a target that matches no module, or a module of another type.
    """
    wanted = set(targets)
    out: dict[str, dict[str, tuple]] = {}
    for name, module in model.named_modules():
        if name not in wanted and name.rsplit(".", 1)[-1] not in wanted:
            continue
        if isinstance(module, nn.Linear):
            out[name] = {"A": (rank, module.in_features), "B": (module.out_features, rank)}
        elif isinstance(module, nn.Conv1d) and module.groups == 1:
            out[name] = {"A": (rank, module.in_channels, module.kernel_size[0]),
                         "B": (module.out_channels, rank, 1)}
        else:
            raise ValueError(f"LoRA target {name} is a {type(module).__name__}, not a Linear "
                             "or pointwise Conv1d")
    found = {n.rsplit(".", 1)[-1] for n in out} | set(out)
    if not out or wanted - found:
        raise ValueError(f"LoRA targets {sorted(wanted - found) or sorted(wanted)} match no "
                         "layer of the backbone")
    return out


@torch.no_grad()
def merge_lora(model: nn.Module, tensors: dict, layers: dict, scale: float) -> nn.Module:
    """``W += scale * B @ A`` for every layer in ``layers`` (tensors already checked)."""
    for name, module in model.named_modules():
        if name not in layers:
            continue
        a = tensors[f"{_PREFIX}{name}.lora_A.weight"].to(module.weight)
        b = tensors[f"{_PREFIX}{name}.lora_B.weight"].to(module.weight)
        if a.ndim == 3:
            # Conv1d: lora_A is a (r, in, k) conv, lora_B a 1x1 conv; their composition is
            # one (out, in, k) kernel (k = 1 for the pointwise targets).
            delta = torch.einsum("or,rik->oik", b[..., 0], a)
        else:
            delta = b @ a   # (out, r) @ (r, in)
        module.weight.add_(delta, alpha=scale)
    return model


def load_merged(adapter_dir, *, map_location="cpu",
                backbone_dir=None) -> tuple[nn.Module, nn.Module, dict]:
    """Load an adapter merged into the backbone it names, as
    ``load_adapter(..., merged=True)`` does but without peft.

    Args:
        adapter_dir: an adapter folder (``adapter_config.json``, ``adapter.safetensors``,
            ``head.safetensors``).
        map_location: device for the model and head.
        backbone_dir: use this backbone folder instead of the recorded path; its weights
            must still hash to the recorded SHA-256.

    Returns:
        ``(plain backbone with the LoRA update in its weights, head, config)``, in eval mode.

    Raises:
        InputError: the same one-line errors as ``load_adapter``: a missing or malformed
            file, a backbone with other weights, adapter or head tensors that do not fit.
    """
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    backbone = check_backbone(adapter_dir, config, backbone_dir)
    model, _ = load_pretrained(backbone, map_location=map_location)
    lora = config["lora"]
    try:
        rank, alpha = int(lora["rank"]), float(lora["alpha"])
        if rank < 1 or alpha <= 0:
            raise ValueError(f"LoRA needs rank >= 1 and alpha > 0, got rank {rank}, "
                             f"alpha {alpha}")
        layers = lora_layers(model, resolve_targets(lora["targets"]), rank)
    except (KeyError, TypeError, ValueError) as e:
        raise bad_config(adapter_dir, e) from None
    head = build_head(adapter_dir, config, map_location)
    tensors = load_tensors(adapter_dir / ADAPTER_FILE, map_location)
    expected = {f"{_PREFIX}{name}.lora_{m}.weight": torch.empty(shape, device="meta")
                for name, shapes in layers.items() for m, shape in shapes.items()}
    problem = describe_mismatch(expected, tensors)
    if problem:
        raise InputError(f"{adapter_dir / ADAPTER_FILE}: does not fit the backbone: {problem}")
    merge_lora(model, tensors, layers, alpha / rank)
    head = load_head_weights(adapter_dir, head, map_location)
    # Frozen, as peft leaves a merged base model: nothing here is meant to train.
    return model.requires_grad_(False).to(map_location).eval(), head, config
