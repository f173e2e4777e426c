"""Training: the engine every trainer shares, and checkpoints that rebuild themselves.

``fit`` (in :mod:`.engine`) runs any objective with AdamW, warm-up + cosine, early stopping
on a validation split, resumable state, mixed precision on CUDA and DDP under torchrun.
:mod:`.checkpoint` writes shipped weights as ``model.safetensors`` + ``config.json`` and
reads them back without unpickling anything.
"""

from .checkpoint import (CONFIG_FILE, FEATURE_RECIPE, STATE_FILE, WEIGHTS_FILE,
                         describe_mismatch, load_pretrained, load_train_state, save_pretrained,
                         save_train_state)
from .engine import (DistContext, FitResult, NonFiniteLossError, TrainConfig, fit,
                     init_distributed, resolve_device, seed_everything, warmup_cosine)
from .few_shot import FewShotConfig, TooFewExamplesError, few_shot_split, run_trial

__all__ = ["CONFIG_FILE", "FEATURE_RECIPE", "STATE_FILE", "WEIGHTS_FILE", "describe_mismatch",
           "load_pretrained", "load_train_state", "save_pretrained", "save_train_state",
           "DistContext", "FitResult", "NonFiniteLossError", "TrainConfig", "fit",
           "init_distributed", "resolve_device", "seed_everything", "warmup_cosine",
           "FewShotConfig", "TooFewExamplesError", "few_shot_split", "run_trial"]
