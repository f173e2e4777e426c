"""Spectrogram models (LWM-Spectro) in the engine: which folders they are, what they serve.

An LWM-Spectro model folder has the layout of a SpectrumFM one (``config.json``,
``model.safetensors``, ``adapters/<task>/``), but its adapters come in three modes (probe,
merged LoRA, full; :func:`spectrumfm.train.lwm_finetune.load_lwm_adapter` loads each) and
its runners take one image's worth of IQ, ``S = (n_frames - 1) * hop + win_length`` samples
at the adapter's rate, and make the spectrogram on the device with the model's own
:meth:`~spectrumfm.models.LWMSpectro.features` (the hop, window and corpus dB statistics it
was pretrained with), the code the fine-tuning loader used.

Only the emission tasks (technology, modulation) run on spectrograms: the grid tasks read
128-sample channel windows scaled to unit noise per channel, a framing and a level no
spectrogram adapter was trained on, so they are refused in one line.

The ML core: torch only (no GNU Radio, no Qt).
"""

from __future__ import annotations

from pathlib import Path

from spectrumfm.errors import InputError

__all__ = ["SPECTROGRAM_TASKS", "is_spectrogram_model", "refuse_grid_tasks",
           "spectrogram_input"]

# The engine tasks a spectrogram model serves (emission boxes cut out of the stream).
SPECTROGRAM_TASKS = ("technology", "modulation")
_ARCH_PREFIX = "lwm-spectro"
# Adapter input fields that must equal the backbone's config: what made the images.
_FEATURE_FIELDS = {"hop": "hop", "win_length": "win_length", "n_fft": "n_fft",
                   "window": "window", "spec_mean": "spec_mean", "spec_std": "spec_std"}


def is_spectrogram_model(meta: dict) -> bool:
    """Whether a checkpoint's ``config.json`` (as read) is an LWM-Spectro encoder's: its
    ``arch`` is ``lwm-spectro-*`` or its feature recipe is the spectrogram one."""
    from spectrumfm.models.lwm_spectro import FEATURE_RECIPE

    arch = str(meta.get("arch") or "")
    recipe = (meta.get("features") or {}).get("recipe")
    return arch.startswith(_ARCH_PREFIX) or recipe == FEATURE_RECIPE


def refuse_grid_tasks(tasks, model_name: str) -> None:
    """One line for a grid task asked of a spectrogram model.

    Raises:
        InputError: ``tasks`` (engine names) holds one outside :data:`SPECTROGRAM_TASKS`.
    """
    for t in tasks:
        if t not in SPECTROGRAM_TASKS:
            raise InputError(f"--tasks {t}: model {model_name} is a spectrogram model "
                             f"(LWM-Spectro); the engine runs it for "
                             f"{' and '.join(SPECTROGRAM_TASKS)} only")


def spectrogram_input(adapter_dir: Path, config: dict, model) -> dict:
    """The runner's ``input`` block of an LWM-Spectro adapter, checked against its model.

    Args:
        adapter_dir: the adapter folder (for messages).
        config: its ``adapter_config.json``.
        model: the loaded :class:`~spectrumfm.models.LWMSpectro`.

    Returns:
        the adapter's ``input`` with ``samp_rate`` and ``bandwidth_fraction`` defaulted to
        None and ``window_len`` set to the model's samples per image.

    Raises:
        InputError: the adapter names another feature recipe, or spectrogram settings (hop,
            window, FFT size, dB statistics) other than its backbone's: the images it was
            trained on are not the ones the backbone makes.
    """
    from spectrumfm.models.lwm_spectro import FEATURE_RECIPE

    path = Path(adapter_dir) / "adapter_config.json"
    inp = dict(config.get("input") or {})
    recipe = inp.get("features")
    if recipe not in (None, FEATURE_RECIPE):
        raise InputError(f"{path}: input recipe {recipe!r} on an LWM-Spectro backbone, "
                         f"which reads {FEATURE_RECIPE!r} spectrograms")
    c = model.config
    for key, attr in _FEATURE_FIELDS.items():
        if key in inp and inp[key] != getattr(c, attr):
            raise InputError(f"{path}: trained on spectrograms with {key} {inp[key]!r}, but "
                             f"its backbone makes them with {getattr(c, attr)!r}")
    if "image" in inp and list(inp["image"]) != [c.n_frames, c.n_fft]:
        raise InputError(f"{path}: trained on {inp['image']} images, its backbone makes "
                         f"{[c.n_frames, c.n_fft]}")
    return {"samp_rate": None, "bandwidth_fraction": None, **inp,
            "features": FEATURE_RECIPE, "window_len": c.input_len}
