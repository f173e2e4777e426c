"""`spectrumfm benchmark --model lwm-spectro-...`: spectrograms per second of an LWM-Spectro
encoder, or with ``--moe`` of its mixture of experts.

    spectrumfm benchmark --model lwm-spectro-paper --batch 16 --device cuda --seconds 20 --json
    spectrumfm benchmark --model lwm-spectro-paper --moe --batch 16 --device cuda --json

Times what live inference does per batch, as the SpectrumFM benchmark does: random complex
IQ already on the device, one spectrogram's worth per row (``config.input_len`` samples),
through the model's features (STFT, dB, normalisation) and the encoder, under
``torch.inference_mode`` and the same autocast rule. The JSON line has the SpectrumFM
benchmark's keys, with ``windows_per_s`` counting spectrograms and ``params`` the encoder's
parameters (patch embedding, positions, blocks, final norm).

``--moe`` builds three experts of the size (wifi, lte, nr) and the paper's router (2 layers,
d = 64, the experts' patch grid), all with fresh weights, and times the top-1 mixture: per
spectrogram the router and the one expert it picks run, so ``params`` counts one expert plus
the router. One expert alone is timed first with the same input, and the output shows the
router's share of the parameters and the time routing adds per spectrogram. Each of the two
measurements runs for ``--seconds``.
"""

from __future__ import annotations

import json

from spectrumfm.errors import InputError

FAMILIES = ("wifi", "lte", "nr")


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def run(args, model, device) -> int:
    import torch

    from spectrumfm.models import LWMSpectroMoE, Router, RouterConfig, create_model

    from .benchmark import _autocast_dtype, _cpu_name, lora_param_count, measure

    if args.baseline:
        raise InputError(f"--baseline: the plain reference encoder is SpectrumFM's; "
                         f"--model {args.model} has none")
    cfg = model.config
    dtype = _autocast_dtype(args.precision, device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, cfg.input_len, dtype=torch.complex64, generator=gen).to(device)

    def timed(encode):
        def forward(iq):
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return encode(model.features(iq))
        with torch.inference_mode():
            return measure(forward, x, seconds=args.seconds, warmup=args.warmup, device=device)

    expert_params = _count(model.encoder)
    model = model.to(device).eval()
    timing = expert = timed(model.forward_encoder)
    params, params_total = expert_params, _count(model)
    moe_info = {"moe": False}
    if args.moe:
        experts = {FAMILIES[0]: model, **{f: create_model(args.model) for f in FAMILIES[1:]}}
        router = Router(RouterConfig(n_experts=len(FAMILIES), n_frames=cfg.n_frames,
                                     n_fft=cfg.n_fft, patch_size=cfg.patch_size))
        moe = LWMSpectroMoE(experts, router).to(device).eval()
        timing = timed(lambda images: moe(images)[0])
        params, params_total = moe.active_parameters(), _count(moe)
        router_params = _count(router)
        # Medians: a machine shared with other jobs disturbs them far less than the means.
        extra_time = 1.0 - timing["windows_per_s_median"] / expert["windows_per_s_median"]
        moe_info = {"moe": True, "experts": list(FAMILIES), "moe_cost":
                    "one expert plus the router per spectrogram (top-1 routing)",
                    "router_params": router_params, "expert_params": expert_params,
                    "router_param_share": round(router_params / params, 4),
                    "expert_windows_per_s": round(expert["windows_per_s"], 2),
                    "expert_windows_per_s_median": round(expert["windows_per_s_median"], 2),
                    "routing_time_share": round(extra_time, 4)}
    rate, elapsed = timing["windows_per_s"], timing["seconds"]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    res = {"model": args.model, "implementation": "lwm-spectro-moe" if args.moe else
           "lwm-spectro", "params": params, "params_total": params_total,
           "lora_params": lora_param_count(args.model), "windows_per_s": round(rate, 2),
           "windows_per_s_median": round(timing["windows_per_s_median"], 2),
           "device": str(device), "device_name": where, "batch": args.batch,
           "threads": torch.get_num_threads(),
           "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype],
           "batches": timing["batches"], "seconds": round(elapsed, 3),
           "torch": torch.__version__, "input_samples": cfg.input_len,
           "image": [cfg.n_frames, cfg.n_fft], **moe_info}
    print(f"{args.model} ({res['implementation']}, {params:,} parameters) on {device} "
          f"[{where}], batch {args.batch}, {res['threads']} threads, {res['precision']}: "
          f"{rate:,.1f} spectrograms/s over {elapsed:.1f} s (median batch: "
          f"{timing['windows_per_s_median']:,.1f} spectrograms/s); each {cfg.n_frames} x "
          f"{cfg.n_fft} from {cfg.input_len} samples")
    if args.moe:
        print(f"mixture of {len(FAMILIES)} experts, top-1: the cost per spectrogram is one "
              f"expert plus the router. Router {router_params:,} parameters = "
              f"{router_params / params:.1%} of the {params:,} that run (one expert "
              f"{expert_params:,}); one expert alone {expert['windows_per_s']:,.1f} "
              f"spectrograms/s (median batch {expert['windows_per_s_median']:,.1f}): "
              + (f"routing takes {extra_time:.1%} of the mixture's time per spectrogram"
                 if extra_time > 0 else "the routing's cost is below the run-to-run noise "
                 f"(the mixture measured {-extra_time:.1%} faster than the expert alone)"))
    if args.json:
        print(json.dumps(res))
    return 0
