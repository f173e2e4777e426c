"""The files of a LoRA adapter folder, read without peft.

Training (:mod:`.lora`) and inference (:mod:`spectrumfm.infer.merge`) read the same folder:
``adapter_config.json``, ``adapter.safetensors`` (peft's key names), ``head.safetensors``.
What both need lives here, so that loading a model for inference does not import peft
and transformers (seconds of start-up for a library inference never calls).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from torch import nn

from spectrumfm.errors import InputError
from spectrumfm.models import LORA_TARGETS
from spectrumfm.tasks import head_from_config

from .checkpoint import WEIGHTS_FILE, describe_mismatch

__all__ = ["ADAPTER_FILE", "HEAD_FILE", "ADAPTER_CONFIG_FILE", "ADAPTER_FORMAT",
           "TARGET_PRESETS", "resolve_targets", "file_sha256", "backbone_sha256",
           "read_adapter_config", "check_backbone", "bad_config", "build_head", "load_head_weights",
           "load_tensors"]

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


def check_backbone(adapter_dir, config: dict, backbone_dir=None) -> Path:
    """The backbone folder an adapter was trained on, its weights' SHA-256 checked.

    Args:
        adapter_dir: the adapter folder; config: its :func:`read_adapter_config`.
        backbone_dir: use this folder instead of the recorded path (a moved backbone).

    Raises:
        InputError: no weights there, or weights whose SHA-256 differs from the recorded one.
    """
    ref = config["backbone"]
    backbone = _find_backbone(Path(adapter_dir), ref, backbone_dir)
    digest = backbone_sha256(backbone)
    if digest != ref.get("sha256"):
        raise InputError(f"{adapter_dir}: adapter was trained on backbone sha256 "
                         f"{str(ref.get('sha256'))[:12]}… ({ref.get('path')}), but "
                         f"{backbone / WEIGHTS_FILE} has {digest[:12]}…: an adapter only "
                         "fits the backbone it was trained on")
    return backbone


def bad_config(adapter_dir, e: Exception) -> InputError:
    """The one-line error for an adapter config whose lora or head block cannot be built."""
    return InputError(f"{Path(adapter_dir) / ADAPTER_CONFIG_FILE}: bad lora/head config ({e})")


def build_head(adapter_dir, config: dict, device) -> nn.Module:
    """The task head the config describes, on ``device``, weights not yet loaded."""
    try:
        return head_from_config(config["head"]).to(device)
    except (KeyError, TypeError, ValueError) as e:
        raise bad_config(adapter_dir, e) from None


def load_tensors(path: Path, device) -> dict:
    """A safetensors file's tensors on ``device``; InputError when missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except FileNotFoundError:
        raise InputError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({e})") from None


def load_head_weights(adapter_dir, head: nn.Module, device) -> nn.Module:
    """Load ``head.safetensors`` into ``head`` strictly; returns it in eval mode."""
    path = Path(adapter_dir) / HEAD_FILE
    head_tensors = load_tensors(path, device)
    problem = describe_mismatch(head.state_dict(), head_tensors)
    if problem:
        raise InputError(f"{path}: does not fit its config: {problem}")
    head.load_state_dict(head_tensors)
    return head.eval()
