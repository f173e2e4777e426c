"""Band analysis: turn a complex stream into model jobs, and model outputs into decisions.

One :class:`BandAnalyzer` serves every task of a model bundle on one stream:

* **occupancy / anomaly** (the grid): the stream is cut into *slots* (``slot_s`` rounded to
  whole blocks of ``window_len x n_channels`` samples); from each slot the
  :class:`~spectrumfm.infer.channelizer.Channelizer` makes the first ``windows_per_cell``
  windows of every channel, scaled to unit noise variance by the energy detector's noise
  floor (so a level-aware adapter sees the SNR), and one job per task carries them (the same
  array for both tasks: one channelisation and one framing). :meth:`BandAnalyzer.decide` makes one
  decision per channel and slot.
* **technology / modulation** (emissions): an
  :class:`~spectrumfm.detect.energy.EnergyDetector` runs on the same slots and reports
  time-frequency boxes as they end; each box is cut out of a ring buffer of the last
  ``history_s`` seconds (:func:`~spectrumfm.infer.cutout.cut_out`: shifted to 0 Hz,
  low-passed to its width, resampled to the rate the adapter was trained at) into up to
  ``windows_per_emission`` windows spread over it (each of the runner's input length: 128
  samples for SpectrumFM, one image's IQ for a spectrogram model), with the band outside
  the box filled with white noise at the stream's noise floor (the training receiver's
  noise, see :mod:`~spectrumfm.infer.cutout`), one job per task; ``decide`` averages the
  windows' probabilities into one decision per box. Emissions longer than the history
  (less two slots) are reported in pieces of that length; a box whose start has already
  left the history is classified from the rest (``truncated`` in its decision).

Fusion. The energy detector's grid uses the same slots and channels as the model's, so
every model cell has an energy statistic: its mean power over the noise floor, about
``Gamma(L, 1/L)`` on noise (L degrees of freedom). :func:`energy_z` maps it to the standard
normal score of its p-value (exactly N(0, 1) on noise at any rate or slot length, about 37 at
most), and with a sensing adapter's ``"fusion": {"w_model": a, "w_energy": b, "bias": c}``
the occupancy probability is ``sigmoid(a * logit(p_model) + b * energy_z + c)``
(:func:`fuse`); the training lead fits a, b, c with these same two functions.

The ML core: numpy, scipy and torch only (no GNU Radio, no Qt).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from scipy.special import gammaincc
from scipy.stats import norm

from spectrumfm.detect.energy import EnergyDetector, EnergyDetectorConfig, confidence
from spectrumfm.infer.channelizer import Channelizer
from spectrumfm.infer.cutout import Ring, cut_out, window_span
from spectrumfm.infer.worker import Job
from spectrumfm.schema import make_decision

__all__ = ["BandAnalyzer", "SlotContext", "EmissionContext", "energy_z", "fuse", "cut_out",
           "GRID_TASKS", "EMISSION_TASKS"]

GRID_TASKS = ("occupancy", "anomaly")
EMISSION_TASKS = ("technology", "modulation")
# (label when the positive class wins, label otherwise) of the binary grid tasks.
_GRID_LABELS = {"occupancy": ("occupied", "vacant"), "anomaly": ("anomalous", "normal")}
# A box covering at least this share of the band is flagged: the emission may extend beyond
# the capture, and the model sees only the part inside it.
WIDE_SHARE = 0.9
def energy_z(stat, dof) -> np.ndarray:
    """Standard normal score of an energy cell's p-value under noise.

    Args:
        stat: mean power over the noise floor (``Gamma(dof, 1/dof)`` on noise).
        dof: its equivalent degrees of freedom.

    Returns:
        float64 ``norm.isf(p)``, ``p = gammaincc(dof, dof * stat)``: N(0, 1) on noise, 3.1 at
        p = 1e-3; p is floored at 1e-300, so strong signals saturate near 37.
    """
    p = gammaincc(np.asarray(dof, np.float64), np.asarray(dof, np.float64) *
                  np.maximum(np.asarray(stat, np.float64), 0.0))
    return norm.isf(np.clip(p, 1e-300, 1.0))


def fuse(p_model, z, fusion: Mapping[str, float] | None) -> np.ndarray:
    """Occupancy probability from the model's P(occupied) and the cell's :func:`energy_z`.

    ``sigmoid(w_model * logit(p_model) + w_energy * z + bias)``; ``p_model`` is clipped to
    [1e-6, 1 - 1e-6] first. Without ``fusion`` the model's probability is returned as is.
    """
    p = np.asarray(p_model, np.float64)
    if not fusion:
        return p
    q = np.clip(p, 1e-6, 1.0 - 1e-6)
    logit = np.log(q) - np.log1p(-q)
    a = float(fusion.get("w_model", 1.0))
    b = float(fusion.get("w_energy", 0.0))
    c = float(fusion.get("bias", 0.0))
    # A cell with no energy statistic (no floor estimate yet) counts as no evidence.
    z = np.nan_to_num(np.asarray(z, np.float64), nan=0.0, posinf=40.0, neginf=-40.0)
    return 1.0 / (1.0 + np.exp(-(a * logit + b * z + c)))


@dataclass(frozen=True)
class SlotContext:
    """A grid job's bookkeeping: one slot, all channels (``Job.context``)."""

    sample_start: int
    sample_count: int
    samp_rate: float
    center_freq: float
    edges: np.ndarray            # (C, 2) channel edges, Hz
    windows_per_cell: int
    energy_z: np.ndarray         # (C,) energy_z of each cell
    energy_score: np.ndarray     # (C,) the energy detector's score of each cell
    time_offset: float


@dataclass(frozen=True)
class EmissionContext:
    """An emission job's bookkeeping (``Job.context``)."""

    box: dict                    # the energy detector's "emission" decision
    rate: float                  # the windows' sample rate, Hz
    windows: int
    truncated: bool              # its start had left the history: only the rest was cut
    wider_than_capture: bool
    time_offset: float


class BandAnalyzer:
    """Jobs for every task of a model on one stream, and decisions from their results.

    Args:
        runners: engine task -> object with ``classes``, ``name``, ``input`` (dict),
            ``fusion`` (dict or None), ``positive`` (column of the detected class of a
            binary task, or None) and optionally ``window_len`` (samples per input of an
            emission runner; default ``window_len``); only read here, never called. Tasks
            without a runner make no jobs.
        samp_rate: sample rate, Hz.
        center_freq: tuned centre frequency, Hz.
        n_channels: channels of the grid (C).
        slot_s: grid time step, s; rounded to whole blocks of ``window_len * C`` samples,
            at least as many as the grid windows span.
        windows_per_cell: windows per channel per slot given to the grid tasks.
        pfa: the energy detector's false-alarm probability per cell.
        window_len: samples per grid window (N), the unit of the slots.
        windows_per_emission: at most this many windows per emission box.
        max_emissions_per_slot: at most this many boxes classified per slot (the ones of
            highest SNR); the rest are counted in ``emissions_skipped``.
        history_s: seconds of signal kept for cutting out boxes (memory: 8 bytes per
            sample, 80 MB at 20 MS/s and 0.5 s). Longer emissions are reported in pieces.
        device: where the channelizer runs (the model's device).

    Attributes:
        time_offset: seconds added to every decision's ``time`` (from ``rx_time``);
            :meth:`retune` and :meth:`gap` advance it so that time runs on continuously.
        slot_len: samples per slot.
        detector: the :class:`EnergyDetector` (its ``noise_floor_db`` is the stream's floor).
        emissions_skipped, emissions_truncated, emissions_lost: boxes beyond
            ``max_emissions_per_slot``; boxes whose start had left the history (the rest
            was classified); boxes entirely gone from it (not classified).

    Threads: :meth:`decide` reads only the runners and the job's (immutable) context, so
    an inference thread may call it while the stream thread calls the other methods.
    """

    def __init__(self, runners: Mapping[str, Any], samp_rate, center_freq=0.0, *,
                 n_channels=16, slot_s=0.05, windows_per_cell=1, pfa=1e-3, window_len=128,
                 windows_per_emission=8, max_emissions_per_slot=8, history_s=0.5,
                 device="cpu"):
        checks = {
            "n_channels must be >= 1": n_channels >= 1,
            "slot_s must be positive": slot_s > 0,
            "windows_per_cell must be >= 1": windows_per_cell >= 1,
            "window_len must be >= 8": window_len >= 8,
            "windows_per_emission must be >= 1": windows_per_emission >= 1,
            "max_emissions_per_slot must be >= 0": max_emissions_per_slot >= 0,
            "history_s must be positive": history_s > 0,
            "samp_rate must be positive": float(samp_rate) > 0,
        }
        for message, ok in checks.items():
            if not ok:
                raise ValueError(message)
        self.runners = dict(runners)
        self.n_channels, self.window_len = int(n_channels), int(window_len)
        self.slot_s, self.windows_per_cell = float(slot_s), int(windows_per_cell)
        self.pfa, self.history_s = float(pfa), float(history_s)
        self.windows_per_emission = int(windows_per_emission)
        self.max_emissions_per_slot = int(max_emissions_per_slot)
        self.grid_tasks = [t for t in GRID_TASKS if t in self.runners]
        self.emission_tasks = [t for t in EMISSION_TASKS if t in self.runners]
        # The grid adapters' channel view (``input.oversample``: 1 the channel alone, 2 with
        # half of each neighbour; see the channelizer), the one they were trained on.
        views = {int((self.runners[t].input or {}).get("oversample") or 1)
                 for t in self.grid_tasks}
        if len(views) > 1:
            raise ValueError(f"the grid adapters were trained on different channel views "
                             f"(oversample {sorted(views)}); they share one channelisation")
        self.oversample = views.pop() if views else 1
        self.channelizer = Channelizer(self.n_channels, device=device, oversample=self.oversample)
        C = self.n_channels
        # Context either side of the windows the channelizer needs (its filter's half length).
        self._margin = -(-(self.channelizer.n_taps // 2 + C) // C) * C
        self.time_offset = 0.0
        self.emissions_skipped = self.emissions_truncated = self.emissions_lost = 0
        self._pending: list[Job] = []
        self._slot_at = None            # absolute index of the slot in progress
        self.center_freq = float(center_freq)
        self._set_rate(float(samp_rate))

    # -- settings ----------------------------------------------------------------------------
    def _set_rate(self, samp_rate: float) -> None:
        C, N = self.n_channels, self.window_len
        self.samp_rate = samp_rate
        block = N * C
        # At least the input samples the grid windows span: windows_per_cell windows of N
        # channel samples at decimation D (D = C, or C / 2 for the twice-wide view).
        need = self.windows_per_cell * N * self.channelizer.decimation
        blocks = max(int(round(self.slot_s * samp_rate / block)), -(-need // block))
        self.slot_len = blocks * block
        # A slot no longer than its windows needs context after it for the channelizer's
        # filter: it is analysed once that context has arrived (the stream's last slot, in
        # flush(), without it).
        self._lookahead = self._margin if self.slot_len < need + 2 * self._margin else 0
        fft = next((m * C for m in range(max(1, 256 // C), 0, -1)
                    if self.slot_len % (m * C) == 0 and m * C >= 8), None)
        if fft is None:                 # C < 8 with no multiple dividing the slot: N * C does
            fft = block
        slot_time = self.slot_len / samp_rate
        config = EnergyDetectorConfig(
            fft_size=fft, frames_per_slot=self.slot_len // fft, n_channels=C, pfa=self.pfa,
            # A box closes within a slot or two of its end; pieces this long still fit the
            # history when they are cut out.
            max_box_s=max(slot_time, self.history_s - 2 * slot_time))
        tasks = ("occupancy", "emission") if self.emission_tasks else ("occupancy",)
        self.detector = EnergyDetector(config, samp_rate, self.center_freq, tasks=tasks)
        old = getattr(self, "_ring", None)
        self._ring = Ring(int(math.ceil(self.history_s * samp_rate)) + 2 * self.slot_len)
        if old is not None and old.started:
            self._ring.reset(old.end)

    def retune(self, samp_rate=None, center_freq=None) -> None:
        """New rate and/or centre (``rx_rate``/``rx_freq`` tags) from the next sample on.

        Open emissions are closed and cut out at the old settings (their jobs come with the
        next :meth:`process` or :meth:`flush`), the slot in progress is dropped (it spans
        the change) and the history is forgotten. A new rate also advances ``time_offset``
        so that time runs on at the new rate from the sample after the last one processed.
        """
        fs = self.samp_rate if samp_rate is None else float(samp_rate)
        fc = self.center_freq if center_freq is None else float(center_freq)
        if not (fs > 0 and math.isfinite(fs) and math.isfinite(fc)):
            raise ValueError(f"retune: bad samp_rate {samp_rate!r} or center_freq {center_freq!r}")
        if fs == self.samp_rate and fc == self.center_freq:
            return
        self._pending += self._break()
        self.center_freq = fc
        if fs != self.samp_rate:
            if self._ring.started:
                end = self._ring.end
                self.time_offset += end / self.samp_rate - end / fs
            self._set_rate(fs)
        else:
            self.detector.set_center_freq(fc)

    def gap(self, lost: int = 0) -> None:
        """Samples were lost (an overflow) before the next one: the slot in progress is
        dropped, open emissions close (jobs with the next call), nothing is cut across the
        gap, and ``time_offset`` advances by ``lost`` samples."""
        self._pending += self._break()
        if lost and lost > 0:
            self.time_offset += float(lost) / self.samp_rate

    # -- stream ------------------------------------------------------------------------------
    def process(self, x: np.ndarray, sample_start: int,
                t_arrival: float | None = None) -> list[Job]:
        """Take samples from absolute index ``sample_start``; return the jobs now ready.

        Any length is accepted; whole slots are analysed as they complete. A
        ``sample_start`` that does not follow the previous call is a gap (see :meth:`gap`).
        ``t_arrival`` (``time.monotonic()``, default now) is when these samples arrived.
        """
        x = np.asarray(x, np.complex64).ravel()
        t = time.monotonic() if t_arrival is None else float(t_arrival)
        start = int(sample_start)
        jobs, self._pending = self._pending, []
        if not self._ring.started or start != self._ring.end:
            if self._ring.started:
                jobs += self._break()
            self._ring.reset(start)
        if self._slot_at is None:
            self._slot_at = start
        for i in range(0, x.size, self.slot_len):
            self._ring.write(x[i:i + self.slot_len])
            while self._ring.end - self._slot_at >= self.slot_len + self._lookahead:
                jobs += self._slot(self._slot_at, self.slot_len, t)
                self._slot_at += self.slot_len
        return jobs

    def flush(self) -> list[Job]:
        """End of stream: analyse the partial slot (whole FFT frames of it; grid jobs when it
        holds the windows) and close every open emission."""
        jobs, self._pending = self._pending, []
        if self._ring.started and self._slot_at is not None:
            fft = self.detector.config.fft_size
            usable = (self._ring.end - self._slot_at) // fft * fft
            if usable > 0:
                jobs += self._slot(self._slot_at, usable, time.monotonic())
        return jobs + self._break()

    def _break(self) -> list[Job]:
        """Close open emissions (cut out now), drop the partial slot, forget the history."""
        jobs = []
        if self._ring.started:
            boxes = [d for d in self.detector.flush() if d["task"] == "emission"]
            jobs = self._emission_jobs(boxes, time.monotonic())
            self._ring.forget()
        self._slot_at = None
        return jobs

    def _slot(self, s0: int, n: int, t: float) -> list[Job]:
        decisions = self.detector.process(self._ring.read(s0, n), s0)
        jobs = []
        need = self.windows_per_cell * self.window_len * self.channelizer.decimation
        if self.grid_tasks and n >= need:
            stats = {start: (stat, dof) for start, stat, dof in self.detector.last_grid}
            stat, dof = stats.get(s0, (np.ones(self.n_channels), 1.0))
            ctx = SlotContext(
                sample_start=s0, sample_count=n, samp_rate=self.samp_rate,
                center_freq=self.center_freq,
                edges=self.channelizer.channel_edges(self.samp_rate, self.center_freq),
                windows_per_cell=self.windows_per_cell, energy_z=energy_z(stat, dof),
                energy_score=np.asarray(confidence(stat, dof, self.pfa)),
                time_offset=self.time_offset)
            windows = self._cell_windows(s0, n)
            jobs += [Job(task, windows, ctx, t) for task in self.grid_tasks]
        boxes = [d for d in decisions if d["task"] == "emission"]
        return jobs + self._emission_jobs(boxes, t)

    def _cell_windows(self, s0: int, n: int) -> np.ndarray:
        """(C * windows_per_cell, N) complex64: channel c's windows are rows c*W .. c*W+W-1,
        the first of the slot after the channelizer's filter has settled, scaled to unit
        noise variance per channel sample by the energy detector's noise floor."""
        C, N, W, m = self.n_channels, self.window_len, self.windows_per_cell, self._margin
        D = self.channelizer.decimation
        need = W * N * D
        off = m if n >= need + 2 * m else (n - need) // 2 // C * C
        y = self.channelizer(self._ring.read(s0 + off - m, need + 2 * m))     # (C, W N + 2m/D)
        y = y[:, m // D:m // D + W * N]                                        # (C, W N)
        # Unit noise variance per channel sample, by the stream's noise floor (what the
        # amp-phase-level features expect; per-window min-max features ignore the scale).
        floor_db = self.detector.noise_floor_db
        if floor_db is not None and math.isfinite(floor_db):
            y = y * float(1.0 / math.sqrt(self.channelizer.noise_gain * 10.0 ** (floor_db / 10)))
        return np.ascontiguousarray(y.reshape(C * W, N).cpu().numpy())       # (C W, N)

    # -- emissions -----------------------------------------------------------------------
    def _emission_jobs(self, boxes: list[dict], t: float) -> list[Job]:
        if not self.emission_tasks or not boxes:
            return []
        boxes = sorted(boxes, key=lambda d: -(d.get("snr_db") if _finite(d.get("snr_db"))
                                               else -math.inf))
        self.emissions_skipped += max(0, len(boxes) - self.max_emissions_per_slot)
        jobs = []
        for box in boxes[:self.max_emissions_per_slot]:
            start, count = box["sample_start"], box["sample_count"]
            oldest = self._ring.oldest
            truncated = start < oldest
            if truncated:
                count, start = start + count - oldest, oldest
                if count <= 0:
                    self.emissions_lost += 1
                    continue
                self.emissions_truncated += 1
            fs, fc = box["samp_rate"], box["center_freq"]
            width = box["freq_hi"] - box["freq_lo"]
            offset = (box["freq_hi"] + box["freq_lo"]) / 2 - fc
            noise_var = _noise_var(box.get("noise_floor_db"), self.detector.noise_floor_db)
            for task in self.emission_tasks:
                rate = self._target_rate(task, width, fs)
                s0, n = self._cut_span(task, start, count, fs, width, rate)
                windows, rate_out = cut_out(self._ring.read, fs, offset, width, s0, n, rate,
                                            self.windows_per_emission, self._input_len(task),
                                            noise_var=noise_var)
                ctx = EmissionContext(box=box, rate=rate_out, windows=len(windows),
                                      truncated=truncated,
                                      wider_than_capture=width >= WIDE_SHARE * fs,
                                      time_offset=self.time_offset)
                jobs.append(Job(task, windows, ctx, t))
        return jobs

    def _input_len(self, task: str) -> int:
        """Samples per input of an emission task's runner (its ``window_len``)."""
        return int(getattr(self.runners[task], "window_len", None) or self.window_len)

    def _cut_span(self, task: str, start: int, count: int, fs: float, width: float,
                  rate: float) -> tuple[int, int]:
        """The stream span to cut a box's windows from: the box itself, except that a
        runner's input longer than the grid's windows (a spectrogram's worth of IQ) that
        outlasts its box is kept inside the history. Centred on a short burst, an image can
        reach past the newest sample (the box closes a slot or two after it ends) or before
        the oldest, where the ring has only zeros, a spectrum no model saw in training; it
        is moved to lie within the samples there are, with as much of the burst as they
        hold. SpectrumFM's 128-sample windows are cut as they always were."""
        n_len = self._input_len(task)
        if n_len <= self.window_len:
            return start, count
        need, reach = window_span(fs, width, rate, n_len)
        oldest, end = self._ring.oldest, self._ring.end
        lo = start + (count - need) // 2
        if (count >= need or end - oldest < need + 2 * reach
                or (lo - reach >= oldest and lo + need + reach <= end)):
            return start, count
        return min(max(lo, oldest + reach), end - reach - need), need

    def _target_rate(self, task: str, width: float, samp_rate: float) -> float:
        """Technology: the adapter's rate (absolute bandwidth kept); modulation: the rate at
        which the box is the adapter's bandwidth_fraction of it."""
        spec = getattr(self.runners[task], "input", None) or {}
        rate, frac = spec.get("samp_rate"), spec.get("bandwidth_fraction")
        if task == "modulation" and frac:
            return max(width, samp_rate / self.detector.config.fft_size) / float(frac)
        return float(rate) if rate else samp_rate

    # -- decisions ---------------------------------------------------------------------------
    def decide(self, job: Job, probs: np.ndarray) -> list[dict]:
        """Schema-v1 decisions from a job's probabilities ``(n_windows, n_classes)``."""
        runner = self.runners[job.task]
        probs = np.asarray(probs, np.float64)
        if probs.ndim != 2 or probs.shape[0] != len(job.windows):
            raise ValueError(f"{job.task}: expected probabilities for {len(job.windows)} "
                             f"windows, got shape {probs.shape}")
        if isinstance(job.context, SlotContext):
            return self._decide_grid(job.task, runner, job.context, probs)
        return [self._decide_emission(job.task, runner, job.context, probs)]

    def _decide_grid(self, task, runner, ctx: SlotContext, probs) -> list[dict]:
        pos = _positive_column(runner, task, probs.shape[1])
        p_model = probs[:, pos].reshape(-1, ctx.windows_per_cell).mean(axis=1)   # (C,)
        fusion = getattr(runner, "fusion", None) if task == "occupancy" else None
        p = fuse(p_model, ctx.energy_z, fusion)
        yes, no = _GRID_LABELS[task]
        return [make_decision(
            task=task, label=yes if p[c] > 0.5 else no, score=float(p[c]),
            sample_start=ctx.sample_start, sample_count=ctx.sample_count,
            samp_rate=ctx.samp_rate, center_freq=ctx.center_freq,
            freq_lo=float(ctx.edges[c, 0]), freq_hi=float(ctx.edges[c, 1]), model=runner.name,
            time_offset=ctx.time_offset, channel=c, model_score=float(p_model[c]),
            energy_score=float(ctx.energy_score[c]), energy_z=float(ctx.energy_z[c]))
            for c in range(len(p))]

    def _decide_emission(self, task, runner, ctx: EmissionContext, probs) -> dict:
        p = probs.mean(axis=0)
        k = int(np.argmax(p))
        classes = list(runner.classes)
        box = ctx.box
        snr = box.get("snr_db")
        return make_decision(
            task=task, label=classes[k] if k < len(classes) else str(k), score=float(p[k]),
            sample_start=box["sample_start"], sample_count=box["sample_count"],
            samp_rate=box["samp_rate"], center_freq=box["center_freq"],
            freq_lo=box["freq_lo"], freq_hi=box["freq_hi"], model=runner.name,
            time_offset=ctx.time_offset, snr_db=float(snr) if _finite(snr) else None,
            wider_than_capture=ctx.wider_than_capture, windows=ctx.windows,
            energy_score=float(box["score"]), truncated=ctx.truncated,
            resampled_rate=float(ctx.rate))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _noise_var(*floors_db) -> float | None:
    """Noise variance per sample from the first finite floor in dB (the box's, then the
    detector's), for the cut-out's noise fill; None when there is none."""
    for f in floors_db:
        if _finite(f):
            return 10.0 ** (f / 10.0)
    return None


def _positive_column(runner, task: str, n_classes: int) -> int:
    pos = getattr(runner, "positive", None)
    if pos is not None:
        return int(pos)
    classes = list(getattr(runner, "classes", []))
    yes = _GRID_LABELS[task][0]
    return classes.index(yes) if yes in classes else n_classes - 1
