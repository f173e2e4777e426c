"""Model registry: every named model size is built by ``create_model(name, **overrides)``.

As in timm, a model family registers a factory per named size with ``@register_model(name)``;
the commands, the benchmark and the tests only ever name sizes, so adding a size is one
decorated function. Overrides are config fields (``create_model("spectrumfm-tiny",
dropout=0.0)``); an unknown field raises ``ValueError``.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "SpectrumFM", "SpectrumFMConfig",
           "LORA_TARGETS", "GRUHead", "LinearHead", "LWMSpectro", "LWMSpectroConfig",
           "ResCNNHead", "Router", "RouterConfig", "LWMSpectroMoE", "supcon_loss"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``fn(**overrides) -> nn.Module`` under ``name``.

    Registering a taken name raises ``ValueError``: two sizes silently sharing a name would
    make a checkpoint's ``model`` field ambiguous.
    """
    def decorate(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn
    return decorate


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, **overrides) -> nn.Module:
    """Build the registered model ``name`` with fresh weights, config fields overridden.

    Raises:
        ValueError: ``name`` is not registered (the message lists the known names), or an
            override is not a config field or makes the config invalid.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") \
            from None
    return factory(**overrides)


# Imported last: the family modules call register_model at import time.
from .heads import GRUHead, LinearHead  # noqa: E402
from .spectrumfm import LORA_TARGETS, SpectrumFM, SpectrumFMConfig  # noqa: E402
from .lwm_spectro import LWMSpectro, LWMSpectroConfig, ResCNNHead, supcon_loss  # noqa: E402
from .lwm_spectro_moe import LWMSpectroMoE, Router, RouterConfig  # noqa: E402
