"""`spectrumfm benchmark`: inference throughput of a named model size, in windows per second
(and, with ``--generator FAMILY``, the data generator's examples per second: bench_generate;
with ``--pipeline``, the inference engine's overhead over a model's runners: bench_pipeline;
for LWM-Spectro sizes, spectrograms per second, with ``--moe`` of the mixture: bench_lwm).

    spectrumfm benchmark --model spectrumfm-paper --batch 16 --device cpu --seconds 20 --json
    spectrumfm benchmark --model spectrumfm-paper --batch 16 --device cpu --seconds 20 --json \
        --baseline

Times what live inference does per batch: the features (``iq_features``) and the encoder
forward, under ``torch.inference_mode``, on random complex windows already on the device,
after a warm-up (allocator, oneDNN / cuDNN kernel choice). On CUDA it runs under bf16
autocast (fp16 where bf16 is unsupported) unless ``--precision fp32``. ``--baseline`` times
``spectrumfm.models.reference.ReferenceEncoder`` instead: the same encoder written plainly
with hand-written attention, the yardstick the library encoder must not be slower than.

Fresh weights are used: speed does not depend on their values. The last line with
``--json`` is ``{"model", "params", "lora_params", "windows_per_s", "device", ...}``;
``params`` counts what is timed (input projection and encoder blocks), ``params_total``
adds the pretraining decoder and next-slot head, ``lora_params`` is the trainable count
at LoRA rank 8 on every target, ``windows_per_s_median`` the rate of the median batch (see
:func:`measure`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from spectrumfm.errors import InputError

DESCRIPTION = ("Inference throughput of a model size, in windows per second (spectrograms per "
               "second for lwm-spectro sizes); with --generator, the data generator's examples "
               "per second; with --pipeline, the inference engine's throughput and latency "
               "beside the bare model.")
DEFAULT_MODEL = "spectrumfm-paper"
DEFAULT_BATCH = 16
DEFAULT_SECONDS = 10.0
# --pipeline times every task three ways and the band analysis four ways: 2 s each keeps
# the whole run of a four-task model near a minute.
PIPELINE_SECONDS = 2.0


def get_args_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="spectrumfm benchmark",
                                          description=DESCRIPTION)
    p.add_argument("--model", help=f"registered model size (default {DEFAULT_MODEL}); with "
                                   "--pipeline a model folder or name (default spectrumfm-tiny)")
    p.add_argument("--batch", type=int, help=f"windows per forward (default {DEFAULT_BATCH}; "
                                             "256 with --pipeline)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--seconds", type=float,
                   help=f"timed duration (default {DEFAULT_SECONDS:g}; with --pipeline "
                        f"{PIPELINE_SECONDS:g} per measurement)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds of untimed warm-up, at least 3 batches (default 2)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: bf16 (else fp16) autocast on CUDA, fp32 on CPU")
    p.add_argument("--baseline", action="store_true",
                   help="time the plain eager reference encoder instead")
    p.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    p.add_argument("--moe", action="store_true",
                   help="LWM-Spectro sizes: time the top-1 mixture of three experts of the "
                        "size and the paper's router (one expert plus the router run per "
                        "spectrogram) beside one expert alone")
    gen = p.add_argument_group("data generator (instead of a model)")
    gen.add_argument("--generator", metavar="FAMILY",
                     help="time `spectrumfm generate` per example for FAMILY: modulation, "
                          "technology, sensing or anomaly (--seconds is then per class)")
    gen.add_argument("--length", type=int, default=1024, help="samples per example (1024)")
    gen.add_argument("--samp-rate", type=float, help="sample rate (the family's default)")
    gen.add_argument("--impairments", choices=("typical", "none"), default="typical",
                     help="channel impairments while timing (default typical)")
    pipe = p.add_argument_group("inference pipeline (a model folder's task runners)")
    pipe.add_argument("--pipeline", action="store_true",
                      help="time each task runner bare and through the batching worker "
                           "(overhead %%, latency)")
    pipe.add_argument("--tasks", help="comma-separated engine tasks (default: every adapter)")
    pipe.add_argument("--job-windows", type=int,
                      help="windows per submitted job (default 16: one slot of 16 channels)")
    pipe.add_argument("--compile", action="store_true", help="torch.compile the runners")
    return p


def add_parser(sub):
    p = sub.add_parser("benchmark", help="inference throughput of a model size (or, with "
                                         "--generator, of the data generator)",
                       description=DESCRIPTION)
    get_args_parser(p)
    p.set_defaults(func=main)
    return p


def lora_param_count(name: str, rank: int = 8) -> int:
    """Trainable parameters LoRA adds at ``rank`` on every target, counted by peft itself
    on a copy of the model built on the meta device (no memory, no initialisation)."""
    import torch

    from spectrumfm.models import create_model
    from spectrumfm.train.lora import apply_lora, trainable_share

    with torch.device("meta"):
        model = create_model(name)
    return trainable_share(apply_lora(model, rank=rank, alpha=2.0 * rank))[0]


def _cpu_name() -> str:
    # platform.processor() is empty on most Linux systems; the kernel's cpuinfo names it.
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _autocast_dtype(precision: str, device):
    import torch

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def measure(forward, x, *, seconds: float, warmup: float, device) -> dict:
    """Run ``forward(x)`` repeatedly: warm-up, then ``seconds`` timed.

    Returns ``{"seconds", "batches", "windows_per_s", "windows_per_s_median"}``: the mean
    rate over the whole run, and the rate of the median batch, which a machine shared with
    other jobs disturbs far less than the mean (one stalled batch moves the mean, not the
    median). On CUDA the clock reads only after a synchronise, so queued kernels count;
    there the median is over groups of 4 batches, to keep the GPU's queue fed.
    """
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    group = 4 if device.type == "cuda" else 1
    t0, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - t0 < warmup:
        forward(x)
        n += 1
    sync()
    t0 = last = time.perf_counter()
    n, per_batch = 0, []
    while True:
        forward(x)
        n += 1
        if n % group == 0:
            sync()
            now = time.perf_counter()
            per_batch.append((now - last) / group)
            last = now
            if now - t0 >= seconds:
                break
    elapsed = last - t0
    return {"seconds": elapsed, "batches": n, "windows_per_s": n * x.shape[0] / elapsed,
            "windows_per_s_median": x.shape[0] / statistics.median(per_batch)}


def main(args) -> int:
    if args.seconds is None:
        args.seconds = PIPELINE_SECONDS if getattr(args, "pipeline", False) else DEFAULT_SECONDS
    if args.generator:
        from .bench_generate import run
        return run(args)
    if getattr(args, "pipeline", False):
        from .bench_pipeline import run
        return run(args)
    import torch

    from spectrumfm.features import iq_features
    from spectrumfm.models import create_model
    from spectrumfm.models.reference import ReferenceEncoder
    from spectrumfm.train import resolve_device

    args.model = args.model or DEFAULT_MODEL
    args.batch = DEFAULT_BATCH if args.batch is None else args.batch
    if args.batch < 1 or args.seconds <= 0 or args.warmup < 0:
        raise InputError("--batch must be >= 1, --seconds > 0 and --warmup >= 0")
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    try:
        model = create_model(args.model)
    except ValueError as e:
        raise InputError(str(e)) from None
    from spectrumfm.models import LWMSpectro
    if isinstance(model, LWMSpectro):
        from .bench_lwm import run
        return run(args, model, device)
    if args.moe:
        raise InputError(f"--moe: only for spectrogram models (lwm-spectro-*), not --model "
                         f"{args.model}")
    params_total = sum(p.numel() for p in model.parameters())
    encoder = ReferenceEncoder(model.config) if args.baseline else model
    timed = (encoder.parameters() if args.baseline else
             (p for n, p in model.named_parameters() if n.startswith(("input_proj.", "blocks."))))
    params = sum(p.numel() for p in timed)
    encoder = encoder.to(device).eval()
    forward_encoder = encoder.forward if args.baseline else encoder.forward_encoder
    dtype = _autocast_dtype(args.precision, device)

    def forward(iq):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            return forward_encoder(iq_features(iq))

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, model.config.window_len, dtype=torch.complex64,
                    generator=gen).to(device)
    with torch.inference_mode():
        timing = measure(forward, x, seconds=args.seconds, warmup=args.warmup, device=device)
    rate, elapsed = timing["windows_per_s"], timing["seconds"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    res = {"model": args.model, "implementation": "reference" if args.baseline else "spectrumfm",
           "params": params, "params_total": params_total,
           "lora_params": lora_param_count(args.model), "windows_per_s": round(rate, 2),
           "windows_per_s_median": round(timing["windows_per_s_median"], 2),
           "device": str(device), "device_name": where, "batch": args.batch,
           "threads": torch.get_num_threads(),
           "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
           "batches": timing["batches"], "seconds": round(elapsed, 3),
           "torch": torch.__version__}
    print(f"{args.model} ({res['implementation']}, {params:,} parameters) on {device} "
          f"[{where}], batch {args.batch}, {res['threads']} threads, {res['precision']}: "
          f"{rate:,.1f} windows/s over {elapsed:.1f} s (median batch: "
          f"{timing['windows_per_s_median']:,.1f} windows/s)")
    if args.json:
        print(json.dumps(res))
    return 0
