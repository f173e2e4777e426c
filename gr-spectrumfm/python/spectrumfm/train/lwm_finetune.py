"""Fine-tuning LWM-Spectro for a task (paper §III-F and §III-G): three modes, one folder.

The modes, and what each trains:

* ``probe``: the encoder frozen, only the task head (the paper's frozen-encoder "LWM");
* ``lora``: peft LoRA matrices on the Transformer blocks' linears
  (:data:`~spectrumfm.models.lwm_spectro.LORA_TARGETS`) and the head, everything else frozen;
* ``full``: the whole encoder and the head (the paper's "LWM_FT"). The contrastive
  projection never trains (no task reads it); the decoder and mask token train only for
  anomaly, whose objective is the masked reconstruction.

Every mode writes the adapter folder of :mod:`spectrumfm.train.lora`, the same three files
and the same ``adapter_config.json`` (``mode`` says which, ``lora`` is null outside LoRA).
What ``adapter.safetensors`` holds depends on the mode:

* ``lora``: the LoRA matrices under peft's key names, as SpectrumFM's adapters;
* ``probe``: no tensors (the encoder is the backbone's, unchanged);
* ``full``: the whole fine-tuned :class:`~spectrumfm.models.LWMSpectro` state dict under
  ``model.safetensors``' key names (megabytes: the encoder is the adapter).

In every mode the backbone's SHA-256 is checked on load: its ``config.json`` gives the
architecture and the features (hop, corpus statistics), and for probe and LoRA its weights
are the encoder's.

Examples are read as :func:`spectrumfm.train.lwm.open_examples` reads them for pretraining,
relabelled for the task, and turned into spectrograms by the backbone's own
:meth:`~spectrumfm.models.LWMSpectro.features`: the hop and statistics it was pretrained
with, never refitted (a hop that no longer fits the data is an error, not a silent change).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from spectrumfm.errors import InputError
from spectrumfm.models import LWMSpectro
from spectrumfm.models.lwm_spectro import FEATURE_RECIPE, LORA_TARGETS

from .adapter_files import (ADAPTER_FILE, HEAD_FILE, build_head, check_backbone,
                            load_head_weights, load_tensors, read_adapter_config)
from .checkpoint import describe_mismatch, load_pretrained

__all__ = ["MODES", "lwm_targets", "prepare_encoder", "save_lwm_adapter", "restore_best",
           "load_lwm_adapter", "is_spectrogram_adapter", "open_task_examples",
           "source_opener", "input_description"]

MODES = ("probe", "lora", "full")
# The encoder's parts that only pretraining reads: frozen in "full" unless the task's
# objective uses them (anomaly trains the reconstruction).
_PRETRAIN_ONLY = ("proj.", "decoder.", "mask_token")
_ANOMALY_TRAINS = ("decoder.", "mask_token")


def lwm_targets(spec) -> list[str]:
    """``--targets`` for an LWM-Spectro encoder: ``all`` (its six block linears),
    ``attention`` (the four projections) or a comma list of
    :data:`~spectrumfm.models.lwm_spectro.LORA_TARGETS` names."""
    if spec in (None, "all"):
        return list(LORA_TARGETS)
    if spec == "attention":
        return ["q_proj", "k_proj", "v_proj", "out_proj"]
    names = [t.strip() for t in str(spec).split(",") if t.strip()]
    unknown = sorted(set(names) - set(LORA_TARGETS))
    if unknown or not names:
        raise InputError(f"--targets {spec}: unknown LoRA targets {unknown or names} for "
                         f"LWM-Spectro; choose from {', '.join(LORA_TARGETS)}, all or attention")
    return [t for t in LORA_TARGETS if t in set(names)]


def prepare_encoder(backbone: LWMSpectro, mode: str, task: str, *, rank: int = 8,
                    alpha: float = 16.0, targets=None) -> nn.Module:
    """The encoder to train in ``mode``, its frozen parts set ``requires_grad = False``.

    ``lora`` wraps ``backbone`` with peft (modified in place, see
    :func:`spectrumfm.train.lora.apply_lora`); the other modes return it as it is.
    """
    if mode not in MODES:
        raise InputError(f"--mode {mode}: unknown; modes: {', '.join(MODES)}")
    if mode == "lora":
        from .lora import apply_lora
        return apply_lora(backbone, rank=rank, alpha=alpha, targets=lwm_targets(targets))
    for name, p in backbone.named_parameters():
        trains = mode == "full" and not name.startswith(_PRETRAIN_ONLY)
        if mode == "full" and task == "anomaly" and name.startswith(_ANOMALY_TRAINS):
            trains = True
        p.requires_grad_(trains)
    return backbone


def input_description(config, samp_rate=None, **extra) -> dict:
    """The ``input`` entry of an LWM-Spectro adapter's config: the recipe (under
    ``features``, where SpectrumFM adapters name theirs), the IQ samples per image, the
    STFT and the image it becomes, and the corpus statistics."""
    return {"samp_rate": samp_rate, **extra, "window_len": config.input_len,
            "features": FEATURE_RECIPE, "hop": config.hop, "win_length": config.win_length,
            "n_fft": config.n_fft, "window": config.window,
            "image": [config.n_frames, config.n_fft], "spec_mean": config.spec_mean,
            "spec_std": config.spec_std}


def _unwrapped(encoder: nn.Module) -> nn.Module:
    return encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder


def save_lwm_adapter(out_dir, mode: str, encoder: nn.Module, head: nn.Module, **kw) -> Path:
    """Write the adapter folder of ``mode`` (module docstring); ``kw`` as for
    :func:`spectrumfm.train.lora.save_adapter` (task, classes, backbone_dir,
    backbone_sha256, extra)."""
    from .lora import save_adapter, write_adapter_folder

    if mode == "lora":
        return save_adapter(out_dir, encoder, head, **kw)
    tensors = _unwrapped(encoder).state_dict() if mode == "full" else {}
    return write_adapter_folder(out_dir, tensors, head, mode=mode, lora=None, **kw)


def restore_best(out_dir, mode: str, encoder: nn.Module, head: nn.Module, device) -> None:
    """Load the adapter folder's weights (the best epoch, written by ``on_best``) back into
    the live ``encoder`` and ``head``, in place."""
    out = Path(out_dir)
    tensors = load_tensors(out / ADAPTER_FILE, device)
    if mode == "lora":
        from peft import set_peft_model_state_dict
        set_peft_model_state_dict(encoder, tensors)
    elif mode == "full":
        _unwrapped(encoder).load_state_dict(tensors)
    head.load_state_dict(load_tensors(out / HEAD_FILE, device))


def is_spectrogram_adapter(config: dict) -> bool:
    """Whether an adapter config's input is LWM-Spectro's spectrograms."""
    return (config.get("input") or {}).get("features") == FEATURE_RECIPE


def load_lwm_adapter(adapter_dir, *, map_location="cpu",
                     backbone_dir=None) -> tuple[LWMSpectro, nn.Module, dict]:
    """Load an LWM-Spectro adapter of any mode for inference.

    Args:
        adapter_dir: the folder ``spectrumfm finetune`` wrote.
        map_location: device for the model and head.
        backbone_dir: use this backbone folder instead of the recorded path (a moved
            backbone); its weights must still hash to the recorded SHA-256.

    Returns:
        ``(LWMSpectro with the adapter's weights, LoRA merged by
        :func:`spectrumfm.infer.merge.load_merged`; head; config)``, in eval mode, nothing
        trainable.

    Raises:
        InputError: one line: missing or malformed files, another backbone, tensors that do
            not fit, an unknown mode.
    """
    adapter_dir = Path(adapter_dir)
    config = read_adapter_config(adapter_dir)
    mode = config.get("mode", "lora")
    if mode not in MODES:
        raise InputError(f"{adapter_dir / 'adapter_config.json'}: unknown mode {mode!r} "
                         f"(one of {', '.join(MODES)})")
    if mode == "lora":
        # Merged without peft (what merge_and_unload computes): importing peft costs the
        # engine seconds at every start.
        from spectrumfm.infer.merge import load_merged
        model, head, config = load_merged(adapter_dir, map_location=map_location,
                                          backbone_dir=backbone_dir)
    else:
        backbone = check_backbone(adapter_dir, config, backbone_dir)
        model, _ = load_pretrained(backbone, map_location=map_location)
        head = build_head(adapter_dir, config, map_location)
        tensors = load_tensors(adapter_dir / ADAPTER_FILE, map_location)
        expected = model.state_dict() if mode == "full" else {}
        problem = describe_mismatch(expected, tensors)
        if problem:
            raise InputError(f"{adapter_dir / ADAPTER_FILE}: does not fit a {mode}-mode "
                             f"adapter of its backbone: {problem}")
        if mode == "full":
            model.load_state_dict(tensors)
        head = load_head_weights(adapter_dir, head, map_location)
    if not isinstance(model, LWMSpectro):
        raise InputError(f"{adapter_dir}: its backbone is no LWM-Spectro model")
    return model.requires_grad_(False).to(map_location).eval(), head, config


def open_task_examples(spec: str, config, task: str, seed: int = 0):
    """``spec``'s examples relabelled for ``task``, one image's worth of IQ each at the
    backbone's own hop (:func:`spectrumfm.train.lwm.open_examples` with ``allow_fit``
    False): an IQDataset of ``(n, config.input_len)`` examples."""
    from .lwm import open_examples

    hint = f": the backbone's images at hop {config.hop} need that many"
    return open_examples(spec, config, allow_fit=False, task=task, seed=seed,
                         fixed_hint=hint)[0]


def source_opener(spec: str, config):
    """For :func:`spectrumfm_apps.finetune.task_split`: opens ``spec`` as pretraining did."""
    from .lwm import open_examples

    return lambda: open_examples(spec, config, allow_fit=False, fixed_hint="")[0]

