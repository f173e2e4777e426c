"""Where inference runs: the ``--device`` option and the CPU's thread count.

``--device auto`` is the default of every command that runs a model, so a machine without a
GPU must work without the user knowing about devices; it says once, at INFO, that it fell back
to the CPU. An explicit ``--device cuda`` on such a machine is a mistake the user should hear
about as one line, not a CUDA traceback from deep inside PyTorch.
"""

from __future__ import annotations

import logging
import os

import torch

from spectrumfm.errors import InputError

__all__ = ["resolve_device", "configure_cpu_threads", "cpu_count"]

log = logging.getLogger("spectrumfm")


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> a torch device that exists here.

    Args:
        spec: the ``--device`` value (case and surrounding spaces ignored; None = auto).

    Returns:
        ``cuda:0`` for auto when PyTorch sees a GPU, else the CPU (with an INFO notice).

    Raises:
        InputError: CUDA asked for and none present, an index beyond the GPUs present, or
            anything that is not a device name.
    """
    name = str(spec if spec is not None else "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        log.info("no CUDA GPU: running on the CPU")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA GPU is available here (PyTorch sees "
                             "none); use --device cpu or auto")
        index = int(name[5:]) if ":" in name else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise InputError(f"--device {name}: only {count} CUDA GPU{'s' * (count != 1)} "
                             f"here (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    raise InputError(f"--device {spec}: unknown device; use auto, cpu, cuda or cuda:N")


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_cpu_threads() -> int:
    """Set PyTorch's intra-op threads for inference beside a GNU Radio flowgraph; returns it.

    ``OMP_NUM_THREADS``, when set to a positive integer, is the user's choice and is kept.
    Otherwise one core is left to the flowgraph (the source, the channel filters and the
    sinks run on their own threads and starve if the model takes every core): cores - 1,
    at least 1.
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    threads = int(env) if env.isdigit() and int(env) > 0 else max(1, cpu_count() - 1)
    torch.set_num_threads(threads)
    return threads
