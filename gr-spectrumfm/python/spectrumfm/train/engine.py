"""The training loop: one engine for every trainer (pretraining and fine-tuning).

``fit`` owns everything a run needs besides the model and its objective: AdamW with a linear
warm-up then cosine decay, early stopping on a validation split, a stop on the first
non-finite loss, seeds, resumable state, a progress bar, mixed precision on CUDA and
DistributedDataParallel when started by ``torchrun``. The objective is a plain function
``loss_fn(model, batch, generator) -> {"loss": scalar, ...} | scalar`` so the engine never
needs to know what a batch holds.

Datasets are read a batch at a time: ``data[list_of_indices]`` returns the whole batch (a
tensor or a tuple of tensors; ``TensorDataset`` qualifies). Lazy HDF5 readers then do one
read per batch instead of one per window.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from spectrumfm.errors import InputError

from .checkpoint import (STATE_FILE, describe_mismatch, load_train_state, rng_state,
                         save_train_state, set_rng_state)

__all__ = ["TrainConfig", "FitResult", "DistContext", "NonFiniteLossError", "fit",
           "init_distributed", "resolve_device", "seed_everything", "warmup_cosine"]


@dataclass
class TrainConfig:
    """Optimisation settings; defaults are the paper's pretraining (§III-A) where it says."""

    epochs: int = 10            # the paper pretrains for 10 epochs
    batch_size: int = 256       # the paper's batch (per process under torchrun)
    lr: float = 1e-3            # the paper's AdamW learning rate, reached after warm-up
    weight_decay: float = 0.05  # MAE's value; not applied to biases and norms (see fit)
    warmup_steps: int = 100     # post-norm attention stacks diverge easily at full lr early
    min_lr_ratio: float = 0.0   # the cosine decays to lr * this at the last planned step
    patience: int = 3           # epochs without a better val loss before stopping; 0: never
    grad_clip: float = 1.0      # max gradient norm, a guard against rare spikes; 0: off
    seed: int = 0
    amp: bool = True            # bf16 (or fp16 + loss scaling) autocast on CUDA; none on CPU
    num_workers: int = 0        # DataLoader worker processes
    progress: bool = True       # tqdm bar on rank 0
    resume: bool = False        # continue from out_dir/train_state.pt


@dataclass
class FitResult:
    epochs_completed: int       # including those of earlier, resumed sessions
    steps: int                  # optimiser steps, likewise
    best_val: float
    best_epoch: int             # 1-based; 0 if no epoch finished
    stopped_early: bool
    windows_per_s: float        # training throughput of this session, all processes together
    resumed_from: int | None    # epochs completed before this session, if resumed


@dataclass
class DistContext:
    """Where this process runs: rank and world size under torchrun, else 0 and 1."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def close(self) -> None:
        if self.initialized and dist.is_initialized():
            dist.destroy_process_group()
        self.initialized = False


class NonFiniteLossError(InputError):
    """The loss became NaN or inf. Almost always the settings (learning rate) or the data
    (NaN/inf windows), so it reaches the user as one line like any other input error."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r}: this PyTorch sees no CUDA device")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA devices")
        return dev
    raise InputError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): NCCL with one GPU
    per process (cuda:LOCAL_RANK) on CUDA, gloo on CPU. Otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return DistContext(device=dev)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dist.init_process_group("gloo")
    return DistContext(rank=rank, world_size=world, device=dev, initialized=True)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """LR factor for step k (0-based): linear from 1/warmup up to 1 over ``warmup_steps``,
    then a half cosine down to ``min_ratio`` at ``total_steps``."""
    warmup = max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return factor


class _Objective(nn.Module):
    # DDP synchronises gradients only for work done inside its forward(), so the objective
    # (which calls e.g. model.forward_pretrain, not model.forward) runs as this forward().
    def __init__(self, model: nn.Module, loss_fn: Callable):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch, generator=None) -> dict:
        out = self.loss_fn(self.model, batch, generator)
        return out if isinstance(out, dict) else {"loss": out}


def _nonfinite_message(value, ctx, step, epoch, batch, n_batches, out) -> str:
    if math.isfinite(value):
        what = "on another rank"
    else:
        what = f"{value} on rank {ctx.rank}" if ctx.initialized else f"{value}"
    saved = (f"the last finished epoch ({epoch}) is in {out / STATE_FILE}" if epoch
             else "no epoch had finished, nothing was saved")
    return (f"non-finite training loss ({what}) at step {step + 1} (epoch {epoch + 1}, batch "
            f"{batch + 1} of {n_batches}); stopped. Lower --lr or check the data for NaN/inf; "
            f"{saved}")


def _to_device(batch, device):
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch.to(device, non_blocking=True)


def _batch_len(batch) -> int:
    return len(batch[0] if isinstance(batch, (tuple, list)) else batch)


def _loader(data, sampler, batch_size, cfg, device) -> DataLoader:
    # batch_size=None: each sampled item is already a list of indices, read in one go.
    return DataLoader(data, sampler=BatchSampler(sampler, batch_size, drop_last=False),
                      batch_size=None, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Decay shrinks weights towards zero; for biases and LayerNorm gains that is only harm.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]   # e.g. LoRA trains matrices only


@torch.no_grad()
def _validate(objective, loader, ctx: DistContext, amp_ctx, seed: int) -> dict[str, float]:
    objective.eval()
    # The same masks every epoch, so val losses of different epochs are comparable.
    gen = torch.Generator(device=ctx.device).manual_seed(seed)
    sums, count = None, torch.zeros((), device=ctx.device)
    for batch in loader:
        batch = _to_device(batch, ctx.device)
        n = _batch_len(batch)
        with amp_ctx():
            out = objective(batch, generator=gen)
        vals = torch.stack([out[k].detach().float() for k in sorted(out)]) * n
        sums = vals if sums is None else sums + vals
        count += n
        keys = sorted(out)
    if ctx.initialized:
        dist.all_reduce(sums)
        dist.all_reduce(count)
    return {k: float(v) for k, v in zip(keys, (sums / count).tolist())}


def fit(model: nn.Module, loss_fn: Callable, train_data, val_data, cfg: TrainConfig, *,
        out_dir, ctx: DistContext | None = None, on_best: Callable | None = None,
        run_info: dict | None = None) -> FitResult:
    """Train ``model`` on ``loss_fn`` until ``cfg.epochs`` or early stopping.

    Args:
        model: the module to train (moved to ``ctx.device``).
        loss_fn: ``(model, batch, generator) -> {"loss": scalar, ...}`` or a scalar; in
            validation it gets a fixed-seed generator, in training ``None``.
        train_data, val_data: batch-indexable datasets (module docstring). The validation
            split decides early stopping and the best checkpoint; test data never comes here.
        cfg: optimisation settings.
        out_dir: for ``run_config.json`` and ``train_state.pt`` (written by rank 0 only).
        ctx: from :func:`init_distributed`; default one CPU process.
        on_best: ``on_best(model, metrics)``, called on rank 0 after every epoch that
            improves the val loss (the trainer writes its shipped checkpoint there).
        run_info: more JSON for ``run_config.json`` (model name, data spec, ...).

    Raises:
        NonFiniteLossError: naming the step, on every rank at once.
        InputError: ``cfg.resume`` without a usable ``train_state.pt``.
    """
    from tqdm import tqdm

    ctx = ctx or DistContext()
    dev, out = ctx.device, Path(out_dir)
    if len(train_data) < ctx.world_size or len(val_data) < ctx.world_size:
        raise InputError(f"too few windows: {len(train_data)} for training and "
                         f"{len(val_data)} for validation; each of the {ctx.world_size} "
                         f"processes needs at least one of each")
    seed_everything(cfg.seed + ctx.rank)   # each process its own dropout and masks
    model.to(dev)
    sampler = DistributedSampler(train_data, num_replicas=ctx.world_size, rank=ctx.rank,
                                 shuffle=True, seed=cfg.seed)
    steps_per_epoch = math.ceil(len(sampler) / cfg.batch_size)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr,
                            fused=dev.type == "cuda")
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(cfg.epochs * steps_per_epoch, cfg.warmup_steps, cfg.min_lr_ratio))
    amp_dtype = None
    if cfg.amp and dev.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    # fp16 has too few exponent bits for small gradients; bf16 needs no loss scaling.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def amp_ctx():
        return torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else nullcontext()

    epoch = step = best_epoch = bad_epochs = 0
    best_val, resumed_from = math.inf, None
    if cfg.resume:
        # Every rank reads the file (multi-node runs need out_dir on a shared filesystem),
        # before DDP's construction broadcasts rank 0's weights.
        state = load_train_state(out, map_location="cpu")
        problem = describe_mismatch(model.state_dict(), state["model"])
        if problem:
            raise InputError(f"{out / STATE_FILE}: does not match this model: {problem}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch = resumed_from = state["epoch"]
        step, best_val, best_epoch = state["step"], state["best_val"], state["best_epoch"]
        bad_epochs = state["bad_epochs"]
    objective = _Objective(model, loss_fn)
    train_obj = (nn.parallel.DistributedDataParallel(
        objective, device_ids=[dev.index] if dev.type == "cuda" else None)
        if ctx.initialized else objective)
    train_loader = _loader(train_data, sampler, cfg.batch_size, cfg, dev)
    # Validation is sharded without DistributedSampler's padding, so no window counts twice.
    val_loader = _loader(val_data, list(range(ctx.rank, len(val_data), ctx.world_size)),
                         cfg.batch_size, cfg, dev)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run_config.json").write_text(json.dumps({
            "train": dataclasses.asdict(cfg), "world_size": ctx.world_size,
            "device": str(dev), "amp_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype
            else None, "steps_per_epoch": steps_per_epoch, "resumed_from_epoch": resumed_from,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(run_info or {})}, indent=2, default=str) + "\n")
    if cfg.resume:
        # Restored last, after everything above that draws random numbers, so the epochs
        # ahead see exactly the RNG stream an uninterrupted run would have seen.
        ranks = state.get("rng") or []
        if len(ranks) == ctx.world_size:
            set_rng_state(ranks[ctx.rank], dev)
        else:   # another world size: a fresh, still reproducible stream per process
            seed_everything(cfg.seed + ctx.rank + 1000 * epoch)

    stopped = cfg.patience > 0 and bad_epochs >= cfg.patience
    t_start, windows_seen = time.perf_counter(), 0
    while epoch < cfg.epochs and not stopped:
        sampler.set_epoch(epoch)
        train_obj.train()
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   disable=not (ctx.is_main and cfg.progress), leave=False, file=sys.stderr)
        t_epoch, epoch_windows, loss_sum = time.perf_counter(), 0, 0.0
        for i, batch in enumerate(bar):
            batch = _to_device(batch, dev)
            with amp_ctx():
                loss = train_obj(batch)["loss"]
            value = loss.detach().float()
            finite = torch.isfinite(value).float()
            if ctx.initialized:   # every rank learns of any rank's NaN, so all stop together
                dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            if not finite.item():
                raise NonFiniteLossError(_nonfinite_message(
                    value.item(), ctx, step, epoch, i, steps_per_epoch, out))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            n = _batch_len(batch) * ctx.world_size
            epoch_windows += n
            v = value.item()
            loss_sum += v
            bar.set_postfix(loss=f"{v:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}",
                            win_s=f"{epoch_windows / (time.perf_counter() - t_epoch):,.0f}")
        bar.close()
        windows_seen += epoch_windows
        val = _validate(objective, val_loader, ctx, amp_ctx, cfg.seed)
        epoch += 1
        if not math.isfinite(val["loss"]):
            raise NonFiniteLossError(f"non-finite validation loss after epoch {epoch} "
                                     f"(step {step}); lower --lr or check the data")
        improved = val["loss"] < best_val
        if improved:
            best_val, best_epoch, bad_epochs = val["loss"], epoch, 0
        else:
            bad_epochs += 1
        stopped = cfg.patience > 0 and bad_epochs >= cfg.patience
        metrics = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(1, i + 1),
                   **{f"val_{k}": v for k, v in val.items()}}
        if ctx.is_main:
            rate = epoch_windows / (time.perf_counter() - t_epoch)
            print(f"epoch {epoch}/{cfg.epochs}: train loss {metrics['train_loss']:.5f}, "
                  f"val loss {val['loss']:.5f}{' (best)' if improved else ''}, "
                  f"{rate:,.0f} windows/s" + (", stopping early" if stopped else ""),
                  file=sys.stderr, flush=True)
            if improved and on_best is not None:
                on_best(model, metrics)
        rngs = [rng_state(dev)]
        if ctx.initialized:
            rngs = [None] * ctx.world_size
            dist.all_gather_object(rngs, rng_state(dev))
        if ctx.is_main:
            save_train_state(out, {
                "epoch": epoch, "step": step, "best_val": best_val, "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": rngs, "world_size": ctx.world_size, "config": dataclasses.asdict(cfg)})
    if ctx.initialized:
        dist.barrier()   # no rank leaves (and tears the group down) before rank 0 has saved
    elapsed = time.perf_counter() - t_start
    return FitResult(epochs_completed=epoch, steps=step, best_val=best_val,
                     best_epoch=best_epoch, stopped_early=stopped,
                     windows_per_s=windows_seen / elapsed if windows_seen else 0.0,
                     resumed_from=resumed_from)
