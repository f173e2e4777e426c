"""A model folder loaded for inference: one runner per task, LoRA merged, on one device.

A model folder (see ``models/README.md``) holds a backbone and one LoRA adapter per task
under ``adapters/<adapter-task>/``. :func:`load_bundle` loads the adapters the engine's tasks
need onto that backbone, folds each adapter into a copy of the backbone's weights
(:mod:`.merge`, what peft's ``merge_and_unload`` computes without importing peft: inference
then costs what the plain backbone costs, no LoRA matmuls) and wraps each in a
:class:`TaskRunner`: complex windows on the device in, class probabilities on the device
out. A spectrogram model (LWM-Spectro, :mod:`.spectro`) loads the same way, its adapters
through :func:`~spectrumfm.train.lwm_finetune.load_lwm_adapter` (probe, merged LoRA or
full), and its runners take one image's worth of IQ each.

Model names are looked up in ``$SPECTRUMFM_MODELS`` (a path list) and then in the folders
the applications register with :func:`add_search_dir` (the installed
``<prefix>/share/spectrumfm/models``); a path to a folder works anywhere.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from spectrumfm.errors import InputError
from spectrumfm.features import features_for

from .device import resolve_device
from .spectro import SPECTROGRAM_TASKS, is_spectrogram_model, refuse_grid_tasks, spectrogram_input

__all__ = ["ENGINE_TASKS", "ADAPTER_FOR", "TaskRunner", "ModelBundle", "load_bundle",
           "model_search_dirs", "add_search_dir", "available_models", "resolve_model"]

ENGINE_TASKS = ("occupancy", "anomaly", "technology", "modulation")
# The engine's task names are what a decision reports; adapters are named after the
# training task that produced them (sensing is the paper's name for occupancy).
ADAPTER_FOR = {"occupancy": "sensing", "anomaly": "anomaly", "technology": "technology",
               "modulation": "modulation"}
_ENGINE_FOR = {a: t for t, a in ADAPTER_FOR.items()}
ADAPTERS_DIR = "adapters"
MODELS_ENV = "SPECTRUMFM_MODELS"

_search_dirs: list[Path] = []


def add_search_dir(path) -> None:
    """Look for model names in ``path`` too (after ``$SPECTRUMFM_MODELS``)."""
    p = Path(path)
    if p not in _search_dirs:
        _search_dirs.append(p)


def model_search_dirs() -> list[Path]:
    """``$SPECTRUMFM_MODELS`` (``os.pathsep``-separated), then the registered folders."""
    env = [Path(p) for p in os.environ.get(MODELS_ENV, "").split(os.pathsep) if p.strip()]
    out: list[Path] = []
    for p in env + _search_dirs:
        if p not in out:
            out.append(p)
    return out


def available_models() -> list[str]:
    """Names of the model folders (those with a config.json) in the search folders."""
    names = set()
    for d in model_search_dirs():
        if d.is_dir():
            names.update(p.name for p in d.iterdir() if (p / "config.json").is_file())
    return sorted(names)


def _check_folder(spec: str, folder: Path) -> Path:
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise InputError(f"--model {spec}: {folder / name} missing (a model folder holds "
                             "config.json, model.safetensors and adapters/)")
    return folder


def resolve_model(spec: str) -> Path:
    """A model folder path, or a model name in the search folders -> the folder.

    Raises:
        InputError: no such folder or name (listing the names found), or a folder that
            lacks config.json or model.safetensors.
    """
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _check_folder(spec, path)
    if os.sep not in spec and (os.altsep is None or os.altsep not in spec):
        for d in model_search_dirs():
            if (d / spec).is_dir():
                return _check_folder(spec, d / spec)
    names = available_models()
    where = ", ".join(str(d) for d in model_search_dirs()) or f"none (set ${MODELS_ENV})"
    shipped = (f"shipped models: {', '.join(names)}" if names else
               f"no models are installed (searched: {where})")
    raise InputError(f"--model {spec}: no such model folder and no shipped model of that "
                     f"name; {shipped}")


def _autocast_dtype(device: torch.device):
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass(eq=False)
class TaskRunner:
    """One task of a model on its device: ``runner(iq (B, N) complex64) -> (B, C) float32``.

    N is :attr:`window_len`: a SpectrumFM window (128), or the IQ samples of one
    LWM-Spectro image (``(n_frames - 1) * hop + win_length``, 8256 at the defaults).

    Attributes:
        task, adapter_task: the engine's task name and the adapter's (occupancy / sensing).
        classes: class names in output-column order.
        name: ``"<model>/<adapter_task>"``, the ``model`` field of its decisions.
        input: the adapter's ``input`` block: ``samp_rate`` (Hz the adapter was trained at,
            None for channel windows), ``bandwidth_fraction`` (None unless trained on
            signals occupying that share of the rate), ``window_len``; a spectrogram
            adapter's also its STFT settings and corpus statistics.
        fusion: the sensing adapter's calibrated model/energy fusion weights, or None.
        config: the whole adapter_config.json.
        positive: the detected class's column (occupied, anomalous) of a binary task.
        model: the :class:`~spectrumfm.tasks.TaskModel` (merged encoder + head).
        window_len: IQ samples per input (N).
        features_fn: IQ ``(B, N)`` -> model input on the device; default the recipe
            ``input.features`` names (:func:`~spectrumfm.features.features_for`), for a
            spectrogram model its own ``features`` (its hop and dB statistics).
    """

    task: str
    adapter_task: str
    classes: list[str]
    name: str
    input: dict
    fusion: dict | None
    config: dict
    positive: int | None
    model: nn.Module
    device: torch.device
    window_len: int
    compiled: bool = False
    forward_fn: object = field(default=None, repr=False)   # model, or torch.compile of it
    features_fn: object = field(default=None, repr=False)

    def __post_init__(self):
        self._dtype = _autocast_dtype(self.device)
        if self.forward_fn is None:
            self.forward_fn = self.model
        if self.features_fn is None:
            self.features_fn = features_for(self.input.get("features"))

    def __call__(self, iq: torch.Tensor) -> torch.Tensor:
        """iq complex ``(B, N)`` on the device -> probabilities ``(B, C)`` float32 there.

        The adapter's ``input.features`` recipe makes the features (default the paper's
        per-window min-max; ``amp-phase-level`` wants windows at unit noise variance, as the
        band analysis gives its grid tasks; ``stft-db-corpus`` the spectrogram images)."""

        if iq.ndim != 2 or iq.shape[-1] != self.window_len:
            raise ValueError(f"{self.name}: expects (B, {self.window_len}) windows, got "
                             f"{tuple(iq.shape)}")
        autocast = (torch.autocast("cuda", dtype=self._dtype) if self._dtype is not None
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            # Features in float32 whatever autocast does: the recipes compute their
            # normalisation in float32 for reduced-precision input anyway.
            feats = self.features_fn(iq)
            return torch.softmax(self.forward_fn(feats).float(), dim=-1)


@dataclass(eq=False)
class ModelBundle:
    """A loaded model: its runners by engine task, on one device.

    ``window_len`` frames the stream for the band analysis (its grid windows and slots);
    each runner's own ``window_len`` is the length of its inputs. They differ for a
    spectrogram model, whose bundle keeps SpectrumFM's 128-sample framing of the slots.
    """

    name: str
    path: Path
    device: torch.device
    window_len: int
    runners: dict[str, TaskRunner]
    shared: str
    config: dict = field(default_factory=dict)

    def runner(self, task: str) -> TaskRunner:
        try:
            return self.runners[task]
        except KeyError:
            raise InputError(f"task {task}: not loaded (loaded: "
                             f"{', '.join(self.runners) or 'none'})") from None

    def describe(self) -> str:
        """``"spectrumfm-tiny on cpu: occupancy (sensing), technology (technology)"``."""
        tasks = ", ".join(f"{t} ({r.adapter_task})" for t, r in self.runners.items())
        return f"{self.name} on {self.device}: {tasks}"


def adapter_tasks(path) -> list[str]:
    """Adapter task names in a model folder that the engine can run (those with an
    adapter_config.json; of a spectrogram model, those of :data:`SPECTROGRAM_TASKS`)."""
    d = Path(path) / ADAPTERS_DIR
    if not d.is_dir():
        return []
    names = sorted(p.name for p in d.iterdir() if (p / "adapter_config.json").is_file())
    if _is_spectrogram_folder(Path(path)):
        names = [a for a in names if _ENGINE_FOR.get(a) in SPECTROGRAM_TASKS]
    return names


def _is_spectrogram_folder(path: Path) -> bool:
    from spectrumfm.train.checkpoint import _read_config

    try:
        return is_spectrogram_model(_read_config(path / "config.json"))
    except InputError:
        return False     # load_bundle reports the bad config.json itself


def _parse_tasks(tasks, model_name: str, present: list[str],
                 spectrogram: bool = False) -> list[str]:
    """Engine task names, in ENGINE_TASKS order; None = every task with an adapter (that
    the model can serve: a spectrogram model's grid tasks are refused)."""
    if tasks is None:
        chosen = [_ENGINE_FOR[a] for a in present if a in _ENGINE_FOR]
        if not chosen and spectrogram:
            raise InputError(f"--model {model_name}: a spectrogram model (LWM-Spectro) with no "
                             f"{' or '.join(SPECTROGRAM_TASKS)} adapter, the tasks the engine "
                             "runs it for")
        if not chosen:
            raise InputError(f"--model {model_name}: has no task adapters (adapters/ holds "
                             f"{', '.join(present) or 'nothing'})")
        return [t for t in ENGINE_TASKS if t in chosen]
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",")]
    out = []
    for t in (str(t).strip().lower() for t in tasks):
        t = "occupancy" if t == "sensing" else t   # the adapter's name for it
        if t not in ENGINE_TASKS:
            raise InputError(f"--tasks {t}: unknown task; tasks: {', '.join(ENGINE_TASKS)}")
        if spectrogram:
            refuse_grid_tasks([t], model_name)
        if ADAPTER_FOR[t] not in present:
            raise InputError(f"--tasks {t}: model {model_name} has no adapter for it "
                             f"(adapters: {', '.join(present) or 'none'})")
        if t not in out:
            out.append(t)
    if not out:
        raise InputError(f"--tasks: no task given; tasks: {', '.join(ENGINE_TASKS)}")
    return [t for t in ENGINE_TASKS if t in out]


def _check_classes(adapter_dir: Path, config: dict, head: nn.Module) -> list[str]:
    from spectrumfm.tasks import BINARY_TASKS

    classes = [str(c) for c in config.get("classes") or []]
    n_out = getattr(getattr(head, "classifier", None), "out_features", 2)
    if len(classes) != n_out or (config.get("task") in BINARY_TASKS and n_out != 2):
        raise InputError(f"{adapter_dir / 'adapter_config.json'}: {len(classes)} class names "
                         f"for a head with {n_out} outputs")
    return classes


def load_bundle(model: str, tasks=None, device: str = "auto", *,
                compile: bool = False) -> ModelBundle:
    """Load ``model``'s adapters for ``tasks`` onto ``device``.

    Args:
        model: a model folder or a model name (see :func:`resolve_model`).
        tasks: engine task names (a list or a comma-separated string); None = every task the
            model has an adapter for.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        compile: ``torch.compile`` each runner's model (slower start, faster batches).

    Returns:
        the :class:`ModelBundle`.

    Raises:
        InputError: one line naming the input and the problem.
    """
    from spectrumfm.tasks import BINARY_TASKS, POSITIVE, TaskModel
    from spectrumfm.train.checkpoint import _read_config
    from spectrumfm.train.adapter_files import ADAPTER_FILE, file_sha256

    from .merge import load_merged

    dev = resolve_device(device)
    path = resolve_model(model)
    name = path.name
    meta = _read_config(path / "config.json")
    spectrogram = is_spectrogram_model(meta)
    present = adapter_tasks(path)
    chosen = _parse_tasks(tasks, name, present, spectrogram)
    mc = meta.get("model_config") or {}
    if spectrogram:
        from spectrumfm.features import WINDOW_LEN
        from spectrumfm.train.lwm_finetune import load_lwm_adapter as load

        window_len = WINDOW_LEN      # the slots' framing; each runner says its input length
    else:
        load = load_merged
        window_len = int((meta.get("features") or {}).get("window_len") or mc.get("window_len")
                         or 128)

    # Identical adapters (same backbone, same LoRA file) give identical merged weights: keep
    # one copy on the device. Their heads stay separate.
    encoders: dict[tuple[str, str], tuple[nn.Module, str]] = {}
    runners: dict[str, TaskRunner] = {}
    sharing: dict[str, list[str]] = {}
    for task in chosen:
        adapter_dir = path / ADAPTERS_DIR / ADAPTER_FOR[task]
        encoder, head, config = load(adapter_dir, map_location=dev, backbone_dir=path)
        if config.get("task") != ADAPTER_FOR[task]:
            raise InputError(f"{adapter_dir / 'adapter_config.json'}: task "
                             f"{config.get('task')!r} in the {ADAPTER_FOR[task]} slot")
        classes = _check_classes(adapter_dir, config, head)
        key = (str(config["backbone"].get("sha256")), file_sha256(adapter_dir / ADAPTER_FILE))
        if key in encoders:
            encoder, first = encoders[key]
            sharing.setdefault(first, [first]).append(task)
        else:
            encoders[key] = (encoder, task)
        task_model = TaskModel(encoder, head, config["task"]).eval()
        forward = torch.compile(task_model) if compile else task_model
        fusion = config.get("fusion") if isinstance(config.get("fusion"), dict) else None
        if spectrogram:
            inp = spectrogram_input(adapter_dir, config, encoder)
            features = encoder.features     # its hop and dB statistics, on the device
        else:
            inp = {"samp_rate": None, "bandwidth_fraction": None, "window_len": window_len,
                   **(config.get("input") or {})}
            try:
                features = features_for(inp.get("features"))
            except ValueError as e:
                raise InputError(f"{adapter_dir / 'adapter_config.json'}: {e}") from None
        runners[task] = TaskRunner(
            task=task, adapter_task=config["task"], classes=classes,
            name=f"{name}/{config['task']}", input=inp, fusion=fusion, config=config,
            positive=POSITIVE if config["task"] in BINARY_TASKS else None, model=task_model,
            device=dev, window_len=int(inp["window_len"]) if spectrogram else window_len,
            compiled=compile, forward_fn=forward, features_fn=features)

    groups = [g for g in sharing.values() if len(g) > 1]
    if groups:
        shared = "; ".join(f"{' and '.join(g)} have identical adapters and share one merged "
                           "backbone" for g in groups) + \
            "; every task runs its own forward pass (different heads)"
    elif spectrogram:
        shared = ("each task has its own copy of the backbone (frozen, LoRA-merged or fine-"
                  "tuned, as its adapter's mode says) and its own forward pass on its own "
                  "spectrograms; tasks share the energy detector's boxes")
    else:
        shared = ("each task has its own LoRA-merged copy of the backbone and its own "
                  "forward pass; tasks share the channelizer and the framing of the stream")
    return ModelBundle(name=name, path=path, device=dev, window_len=window_len,
                       runners=runners, shared=shared, config=meta)
