"""Checkpoints: shipped weights as safetensors + JSON, resumable training state as tensors.

A shipped model is a folder that rebuilds itself:

* ``model.safetensors``: the state dict, nothing but named tensors (loading it runs no code);
* ``config.json``: ``arch`` (the registry name for :func:`spectrumfm.models.create_model`),
  ``model_config``, ``features`` (the input recipe and window length a caller must feed;
  a model class with its own input says so through a ``feature_recipe`` attribute and a
  ``checkpoint_features(config)`` method, as LWM-Spectro's spectrograms do),
  ``code_version``, ``command`` (the exact command line that trained it), ``created`` (UTC),
  plus whatever the trainer adds (data spec, class names, metrics);
* ``README.md``: a short model card for people, generated from the same facts.

LWM-Spectro's mixture of experts is saved the same way under ``arch`` ``"lwm-spectro-moe"``:
its ``model_config`` holds the experts' registry name, their names in router order, each
expert's config and the router's (:meth:`~spectrumfm.models.LWMSpectroMoE.checkpoint_config`),
and its card gives the parameters one input runs through beside the total.

The resumable state of a run, ``train_state.pt``, also holds optimiser moments, the schedule
and RNG states. It is written with ``torch.save`` but only ever read back with
``torch.load(weights_only=True)``, so every value in it is a tensor, a number, a string, None
or a list/dict of those: RNG states are stored as tensors, never as pickled objects.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import sys
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from spectrumfm.errors import InputError

__all__ = ["save_pretrained", "load_pretrained", "describe_mismatch", "save_train_state",
           "load_train_state", "rng_state", "set_rng_state", "WEIGHTS_FILE", "CONFIG_FILE",
           "STATE_FILE", "FEATURE_RECIPE"]

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
STATE_FILE = "train_state.pt"
# The name of spectrumfm.features.iq_features' recipe (eq. 1). A model trained on other
# features must name another recipe, so an inference path can refuse a mismatch.
FEATURE_RECIPE = "amp-phase-minmax"
_RESERVED = ("arch", "model_config", "features", "code_version", "command", "created")


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel keeps the real model in .module; its keys must not carry the
    # "module." prefix, or a single-process load would see every key as unexpected.
    return getattr(model, "module", model)


def _atomic_write(path: Path, write) -> None:
    # Write beside the target and rename: an interrupted save leaves the previous file whole,
    # never a half-written one next to a config that no longer matches it.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_pretrained(out_dir, model: nn.Module, *, arch: str, config: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write ``out_dir/model.safetensors``, ``out_dir/config.json`` and a model card.

    Args:
        out_dir: folder, created if needed.
        model: the model (a DDP wrapper is unwrapped).
        arch: its registry name, e.g. ``"spectrumfm-tiny"``, or ``"lwm-spectro-moe"`` for
            an LWM-Spectro mixture of experts (rebuilt from its config, not the registry).
        config: its config as a dict; default ``model.checkpoint_config()`` where the model
            has one (a mixture of experts), else ``model.config.to_dict()``.
        extra: more top-level JSON keys (data spec, class names, metrics); may not reuse
            the reserved keys above.

    Returns:
        the folder.
    """
    from safetensors.torch import save_file

    from spectrumfm import __version__

    model = _unwrap(model)
    if config is None:
        own = getattr(model, "checkpoint_config", None)   # a mixture: no one dataclass
        config = own() if own is not None else model.config.to_dict()
    config = dict(config)
    clash = sorted(set(extra or {}) & set(_RESERVED))
    if clash:
        raise ValueError(f"extra keys {clash} would overwrite checkpoint fields")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    describe = getattr(model, "checkpoint_features", None)
    features = (describe(config) if describe is not None else
                {"recipe": FEATURE_RECIPE, "window_len": config.get("window_len"),
                 "in_features": config.get("in_features")})
    meta = {
        "arch": arch,
        "model_config": config,
        "features": features,
        "code_version": __version__,
        "command": shlex.join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _atomic_write(out / WEIGHTS_FILE,
                  lambda p: save_file(tensors, str(p), metadata={"format": "pt", "arch": arch}))
    _atomic_write(out / CONFIG_FILE,
                  lambda p: p.write_text(json.dumps(meta, indent=2, default=str) + "\n"))
    n_params = sum(v.numel() for v in tensors.values())
    active = getattr(model, "active_parameters", None)
    card = _model_card(meta, n_params, active() if active is not None else None)
    _atomic_write(out / CARD_FILE, lambda p: p.write_text(card))
    return out


def _model_card(meta: dict, n_params: int, n_active: int | None = None) -> str:
    skip = {"model_config", "command"}
    features = meta["features"]
    if features["recipe"] == FEATURE_RECIPE:
        how = f"the `{FEATURE_RECIPE}` features (spectrumfm.features.iq_features)"
    else:
        how = f"the `{features['recipe']}` features"
        if features.get("image"):
            how += f", as {' x '.join(map(str, features['image']))} images"
    count = f"{n_params:,} parameters"
    if n_active is not None:   # a top-1 mixture: the cost of one input is not the total
        count += (f" in all, {n_active:,} active per input (the router and the one expert it "
                  "picks)")
    lines = [f"# {meta['arch']}", "",
             f"{count}; input: {features['window_len']}-sample complex "
             f"windows through {how}.",
             "", "Load with `spectrumfm.train.load_pretrained(this_folder)`.", "",
             "Trained by:", "", "    " + meta["command"], ""]
    lines += [f"- {k}: {json.dumps(v, default=str)}" for k, v in meta.items() if k not in skip]
    return "\n".join(lines) + "\n"


def _index_set(idx: list[str]) -> str:
    """``["3"]`` -> ``3``, ``["0", "1", "2"]`` -> ``{0..2}``, ``["1", "5"]`` -> ``{1,5}``."""
    nums = sorted(int(i) for i in idx)
    if len(nums) == 1:
        return str(nums[0])
    if len(nums) > 2 and nums == list(range(nums[0], nums[-1] + 1)):
        return f"{{{nums[0]}..{nums[-1]}}}"
    return "{" + ",".join(map(str, nums)) + "}"


def _group_keys(items: dict[str, str]) -> list[str]:
    """Collapse ``blocks.3.attn.q_proj.weight`` style keys that differ only in their layer
    index and share a description into ``blocks.{2,3}.attn.q_proj.weight``, so a report on a
    16-block model stays one readable line while still naming every key exactly."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    order = []
    for key, note in items.items():
        m = re.search(r"\.(\d+)\.", key)
        pattern = key if m is None else key[:m.start()] + ".{}." + key[m.end():]
        gid = (pattern, note)
        if gid not in groups:
            order.append(gid)
        groups[gid].append("" if m is None else m.group(1))
    out = []
    for pattern, note in order:
        idx = groups[(pattern, note)]
        name = pattern if idx == [""] else pattern.replace("{}", _index_set(idx), 1)
        out.append(name + (f" {note}" if note else ""))
    return out


def _collapse_modules(keys: list[str], universe) -> dict[str, str]:
    """Replace all keys of one indexed module (``blocks.3.``) by ``blocks.3.*`` when every
    key the model (or checkpoint) has under it is in ``keys``: a whole block missing."""
    out, covered = {}, set()
    for key in keys:
        m = re.match(r".*?\.\d+\.", key)
        if key in covered:
            continue
        if m and all(k in keys for k in universe if k.startswith(m.group(0))):
            covered.update(k for k in keys if k.startswith(m.group(0)))
            out[m.group(0) + "*"] = ""
        else:
            out[key] = ""
    return out


# Shape mismatches listed in full up to this many groups: a changed d_model changes every
# tensor, and the first few already say what differs.
_MAX_SHAPE_GROUPS = 8


def describe_mismatch(expected: dict, found: dict) -> str | None:
    """Compare a model's state dict with loaded tensors; ``None`` when they fit exactly.

    Returns one line: ``"missing K, ...; unexpected K, ...; shape mismatch (checkpoint vs
    config) K (found) vs (expected), ..."``. Missing and unexpected keys are all named
    (``blocks.{2,3}.*`` for whole blocks); shape mismatches up to 8 groups, then a count.
    """
    missing = _collapse_modules([k for k in expected if k not in found], expected)
    unexpected = _collapse_modules([k for k in found if k not in expected], found)
    shapes = {k: f"{tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
              for k in expected if k in found and found[k].shape != expected[k].shape}
    parts = [f"{what} {', '.join(_group_keys(keys))}" for what, keys in
             (("missing", missing), ("unexpected", unexpected)) if keys]
    if shapes:
        groups = _group_keys(shapes)
        more = len(groups) - _MAX_SHAPE_GROUPS
        parts.append("shape mismatch (checkpoint vs config) "
                     + ", ".join(groups[:_MAX_SHAPE_GROUPS])
                     + (f" and {more} more groups of keys" if more > 0 else ""))
    return "; ".join(parts) or None


def _read_config(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing (not a spectrumfm checkpoint folder?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: malformed JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: malformed: expected a JSON object")
    lacking = [k for k in ("arch", "model_config") if k not in meta]
    if lacking or not isinstance(meta.get("model_config"), dict):
        raise InputError(f"{path}: malformed: needs 'arch' and a 'model_config' object "
                         f"(lacking {', '.join(lacking) or 'an object model_config'})")
    return meta


def load_pretrained(path, *, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild a model saved by :func:`save_pretrained` and load its weights strictly.

    Args:
        path: the checkpoint folder, or its ``config.json`` or ``model.safetensors``.
        map_location: device for the weights and the model.

    Returns:
        ``(model in eval mode, the parsed config.json)``; for ``arch`` ``"lwm-spectro-moe"``
        an :class:`~spectrumfm.models.LWMSpectroMoE` with its experts and router.

    Raises:
        InputError: a missing or malformed file, an unknown architecture, or weights that
            do not fit the config (every missing, unexpected and mis-shaped key named).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from spectrumfm.models import LWMSpectroMoE, create_model
    from spectrumfm.models.lwm_spectro_moe import MOE_ARCH

    folder = Path(path)
    if folder.is_file() and folder.name in (CONFIG_FILE, WEIGHTS_FILE):
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{folder}: no such checkpoint folder")
    meta = _read_config(folder / CONFIG_FILE)
    try:
        if meta["arch"] == MOE_ARCH:
            model = LWMSpectroMoE.from_config(meta["model_config"])
        else:
            model = create_model(meta["arch"], **meta["model_config"])
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{folder / CONFIG_FILE}: {exc}") from None
    computes = getattr(model, "feature_recipe", FEATURE_RECIPE)
    recipe = (meta.get("features") or {}).get("recipe", computes)
    if recipe != computes:   # its outputs would be meaningless on our features
        raise InputError(f"{folder / CONFIG_FILE}: trained on {recipe!r} features; this code "
                         f"computes {computes!r}")
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(f"{weights}: missing")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{weights}: not a readable safetensors file: {exc}") from None
    problem = describe_mismatch(model.state_dict(), state)
    if problem:
        raise InputError(f"{folder}: checkpoint does not match its config: {problem}")
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), meta


# ---- resumable training state -----------------------------------------------------------

def rng_state(device: torch.device | None = None) -> dict:
    """This process's RNG states (Python, NumPy, torch CPU and CUDA) as tensors and numbers."""
    py_version, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    cuda = None
    if device is not None and device.type == "cuda":
        cuda = torch.cuda.get_rng_state(device)
    return {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def save_train_state(out_dir, state: dict) -> Path:
    """Write ``out_dir/train_state.pt`` atomically (only tensors, numbers, strings, None)."""
    path = Path(out_dir) / STATE_FILE
    _atomic_write(path, lambda p: torch.save(state, p))
    return path


def load_train_state(out_dir, *, map_location="cpu") -> dict:
    """Read ``out_dir/train_state.pt`` without unpickling arbitrary objects.

    Raises:
        InputError: the file is missing, or is not a state this code wrote.
    """
    path = Path(out_dir) / STATE_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing: nothing to resume (run without --resume first)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # weights_only refusal, truncation, not a torch file at all
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable training state: {msg}") from None
    if not isinstance(state, dict) or not {"epoch", "step", "model", "optimizer"} <= set(state):
        raise InputError(f"{path}: not a spectrumfm training state")
    return state
