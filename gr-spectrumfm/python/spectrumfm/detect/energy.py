"""Classical energy detector over time–frequency boxes: the baseline for every model.

The stream is cut into non-overlapping frames of ``fft_size`` samples (Hann window, FFT,
``|.|**2``, DC in the middle, scaled so white noise of variance s2 has mean s2 per bin: see
``dsp.frame_powers``); ``frames_per_slot`` frames make a *slot*, the time step of the
occupancy grid.

Statistic under H0 (noise only). A bin's power is ``s2 * Exp(1)``, independent across frames;
the mean of T frames x B adjacent bins over s2 is approximated by ``Gamma(L, 1/L)`` with L
the equivalent degrees of freedom (``dsp.equivalent_dof``: L = T B for independent bins, less
for the window's correlated neighbours). The threshold for false-alarm probability ``pfa`` is
``gammainccinv(L, pfa) / L`` times s2 (scipy.special; = ``gamma(L, scale=1/L).isf(pfa)``),
and a statistic t has p-value ``gammaincc(L, L t)``.

Noise floor. Per slot, the ``floor_quantile`` quantile q of the per-bin powers averaged over
the slot's F frames (each ``s2 * Gamma(F, 1/F)`` under H0) is divided by
``gammaincinv(F, floor_quantile) / F``, which makes it a consistent estimate of s2 on noise, and
a low quantile keeps it right while most bins are occupied. The estimate is smoothed across
slots (exponential, ``floor_alpha``).

Scores. With z = log(p) / log(pfa) (0 for a typical noise cell, 1 at the threshold),
``score = z / (1 + z)``: monotone in the statistic, in [0, 1], and 0.5 exactly at the
Neyman–Pearson threshold, so ``label == "occupied"`` iff ``score > 0.5``. It ranks evidence
against noise; it is not a calibrated posterior (that would need a prior on occupancy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal import lfilter
from scipy.special import gammaincc, gammainccinv, gammaincinv

from spectrumfm import dsp
from spectrumfm.schema import make_decision

from .boxes import BoxTracker, Emission


@dataclass
class EnergyDetectorConfig:
    """Detector settings; defaults suit 0.25 to 20 MS/s receivers.

    fft_size: FFT and frame length, samples. 256 gives 9.4 kHz bins and 107 us frames at
        2.4 MS/s: fine enough for narrowband channels, short enough for bursts.
    frames_per_slot: frames per occupancy slot (a slot is fft_size * frames_per_slot samples).
        16 frames x 16 bins per channel give ~136 degrees of freedom: 1.3 dB above the floor
        is detected at pfa 1e-3.
    n_channels: equal sub-bands of the occupancy grid (must divide fft_size).
    pfa: false-alarm probability per occupancy cell (channel x slot) and per emission cell.
    max_box_s: longest emission box, seconds; a longer emission is reported in pieces so
        that a carrier that never stops still yields decisions.
    min_snr_db: emission boxes whose mean SNR (over the floor) is below this are not reported.
    cell_frames, cell_bins: size of the moving average that makes each emission cell's
        statistic (3 x 3: ~5.6 degrees of freedom, so a cell needs ~5 dB over the floor
        instead of 8.4 dB for one bin of one frame). Odd, so the cell is centred.
    floor_quantile: quantile of the bin powers that estimates the floor; right while up to
        about 1 - floor_quantile of the band is occupied.
    floor_alpha: weight of the newest slot in the floor's exponential smoothing.
    window: STFT window name (see ``dsp.WINDOWS``).
    """

    fft_size: int = 256
    frames_per_slot: int = 16
    n_channels: int = 16
    pfa: float = 1e-3
    max_box_s: float = 1.0
    min_snr_db: float = 0.0
    cell_frames: int = 3
    cell_bins: int = 3
    floor_quantile: float = 0.25
    floor_alpha: float = 0.1
    window: str = "hann"

    def __post_init__(self):
        checks = {
            "fft_size must be >= 8": self.fft_size >= 8,
            "frames_per_slot must be >= 1": self.frames_per_slot >= 1,
            "n_channels must divide fft_size":
                self.n_channels >= 1 and self.fft_size % self.n_channels == 0,
            "pfa must be in (0, 0.5)": 0.0 < self.pfa < 0.5,
            "cell_frames and cell_bins must be odd": self.cell_frames % 2 and self.cell_bins % 2,
            "floor_quantile must be in (0, 1)": 0.0 < self.floor_quantile < 1.0,
            "floor_alpha must be in (0, 1]": 0.0 < self.floor_alpha <= 1.0,
            "max_box_s must be positive": self.max_box_s > 0,
        }
        for message, ok in checks.items():
            if not ok:
                raise ValueError(f"{message}: {self}")

    @property
    def slot_len(self) -> int:
        return self.fft_size * self.frames_per_slot


def confidence(stat, dof: float, pfa: float) -> np.ndarray:
    """z / (1 + z) with z = log p / log pfa: 0.5 at the threshold, -> 1 for strong signals."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log(gammaincc(dof, np.asarray(stat, dtype=np.float64) * dof)) / np.log(pfa)
        return np.where(np.isinf(z), 1.0, np.clip(z / (1.0 + z), 0.0, 1.0))


class EnergyDetector:
    """Occupancy grid and emission boxes from a complex baseband stream.

    Args:
        config: ``EnergyDetectorConfig`` (defaults if None).
        samp_rate: sample rate, Hz.
        center_freq: tuned centre frequency, Hz.
        model: the ``model`` field of every decision.
        tasks: which decisions to make, among "occupancy" and "emission".

    ``time_offset`` (seconds, default 0) is added to every decision's ``time``; set it from
    ``rx_time``. Emission cells pass a loose threshold (pfa) and a box must contain at least
    one *seed* cell above a strict one (pfa / cells per slot, so on noise about pfa false boxes
    per slot appear); box edges are then trimmed to where the box's own frequency profile
    falls below half its peak (the window's leakage) and, by a few frames at most, where its
    time profile falls below half the level just inside (the cell averaging): within about
    one bin and one frame of the truth, and a weaker end is kept. A box's score
    is its strongest cell's ``confidence`` against the seed threshold (> 0.5). Cells at the
    stream's ends and the band's edges average only the cells that exist, with thresholds for
    their own degrees of freedom.
    """

    def __init__(self, config: EnergyDetectorConfig | None = None, samp_rate: float = 1.0,
                 center_freq: float = 0.0, model: str = "energy-detector",
                 tasks=("occupancy", "emission")):
        self.config = config if config is not None else EnergyDetectorConfig()
        c = self.config
        self.tasks = frozenset(tasks)
        if not self.tasks or not self.tasks <= {"occupancy", "emission"}:
            raise ValueError(f"tasks must be among occupancy, emission; got {tasks!r}")
        self.model, self.time_offset = str(model), 0.0
        self.samp_rate, self.center_freq = float(samp_rate), float(center_freq)
        if not self.samp_rate > 0:
            raise ValueError(f"samp_rate must be positive, got {samp_rate}")
        self._window = dsp.get_window(c.window, c.fft_size)
        self._floor = None
        #: The occupancy grid's statistics from the last ``process`` call, one
        #: ``(sample_start, stat, dof)`` per slot it analysed: ``stat`` (n_channels,) is each
        #: cell's mean power over the noise floor (about ``Gamma(dof, 1/dof)`` on noise), so
        #: another detector can fuse with the same cells (``spectrumfm.infer.band``).
        self.last_grid: list[tuple[int, np.ndarray, float]] = []
        self._pending: list[dict] = []
        self.set_pfa(c.pfa)
        self._reset_tracking()

    # -- settings ------------------------------------------------------------------------
    def set_pfa(self, pfa: float) -> None:
        """Change the false-alarm probability (thresholds follow from the next slot)."""
        c = self.config
        if not 0.0 < pfa < 0.5:
            raise ValueError(f"pfa must be in (0, 0.5), got {pfa}")
        c.pfa = float(pfa)
        self._pfa_seed = c.pfa / c.slot_len
        self._per_length = {}        # slot length in frames -> (dof, threshold) of a channel
        self._cell_tables()

    def set_center_freq(self, freq: float) -> None:
        """Retune: open boxes close at the old frequency (returned by the next call)."""
        if float(freq) != self.center_freq:
            self._pending += self._end_stream()
            self.center_freq = float(freq)

    def set_samp_rate(self, rate: float) -> None:
        """New sample rate: open boxes close and the floor is estimated afresh."""
        if not float(rate) > 0:
            raise ValueError(f"samp_rate must be positive, got {rate}")
        if float(rate) != self.samp_rate:
            self._pending += self._end_stream()
            self.samp_rate, self._floor = float(rate), None

    @property
    def noise_floor_db(self) -> float | None:
        """Smoothed noise variance per complex sample in dB (full scale = 0 dB); None before
        the first slot. ``dsp.noise_bin_gain_db`` converts it to a spectrum display's scale."""
        return None if self._floor is None else float(10.0 * np.log10(self._floor))

    # -- stream --------------------------------------------------------------------------
    def process(self, x: np.ndarray, sample_start: int) -> list[dict]:
        """Analyse whole frames (normally whole slots) starting at absolute ``sample_start``.

        ``x`` is 1-D complex64 whose length is a multiple of ``fft_size``; frames after the
        last whole slot form one shorter slot (used at end of stream). A ``sample_start`` that
        does not follow the previous call is a gap: open boxes are closed first. Returns the
        decisions completed by this call: occupancy for every slot x channel, and emission
        boxes that ended.
        """
        c, K = self.config, self.config.fft_size
        x = np.asarray(x).ravel()
        if x.size % K:
            raise ValueError(f"input length {x.size} is not a multiple of fft_size {K}")
        out, self._pending = self._pending, []
        self.last_grid = []
        if x.size == 0:
            return out
        if self._next is not None and int(sample_start) != self._next:
            out += self._end_stream()
        power = dsp.frame_powers(x, self._window, K)                      # (frames, K)
        n_full = power.shape[0] // c.frames_per_slot * c.frames_per_slot
        rows, start = [], int(sample_start)
        parts = ((power[:n_full], c.frames_per_slot), (power[n_full:], power.shape[0] - n_full))
        for part, f in parts:
            if part.shape[0] == 0:
                continue
            slots = part.reshape(-1, f, K)                                  # (slots, frames, K)
            floors = self._update_floor(slots)
            if "occupancy" in self.tasks:
                out += self._occupancy(slots, floors, start)
            rows.append(part / np.repeat(floors, f)[:, None].astype(np.float32))
            start += part.shape[0] * K
        if "emission" in self.tasks:
            out += self._emissions(np.concatenate(rows), int(sample_start))
        self._next = start
        return out

    def flush(self) -> list[dict]:
        """End of stream: close every open emission box and return what is pending."""
        out, self._pending = self._pending, []
        return out + self._end_stream()

    # -- noise floor and occupancy ---------------------------------------------------------
    def _update_floor(self, slots: np.ndarray) -> np.ndarray:
        c, f = self.config, slots.shape[1]
        cells = slots.mean(axis=1)                                          # (slots, K)
        k = int(round(c.floor_quantile * (cells.shape[1] - 1)))             # order statistic
        q = k / (cells.shape[1] - 1)
        est = np.maximum(np.partition(cells, k, axis=1)[:, k] / (gammaincinv(f, q) / f), 1e-30)
        prev, a = est[0] if self._floor is None else self._floor, c.floor_alpha
        floors, _ = lfilter([a], [1.0, a - 1.0], est, zi=[(1.0 - a) * prev])
        self._floor = float(floors[-1])
        return floors

    def _occupancy(self, slots: np.ndarray, floors: np.ndarray, start: int) -> list[dict]:
        c, (n_slots, f, K) = self.config, slots.shape
        nb = K // c.n_channels
        stat = slots.reshape(n_slots, f, c.n_channels, nb).mean(axis=(1, 3)) / floors[:, None]
        if f not in self._per_length:
            dof = dsp.equivalent_dof(self._window, f, nb)
            self._per_length[f] = dof, gammainccinv(dof, c.pfa) / dof
        dof, threshold = self._per_length[f]
        self.last_grid += [(start + s * f * K, stat[s], float(dof)) for s in range(n_slots)]
        occupied = stat > threshold
        score = confidence(stat, dof, c.pfa)
        snr_db = 10.0 * np.log10(np.maximum(stat - 1.0, 1e-5))
        floor_db = 10.0 * np.log10(floors)
        fractions = np.arange(c.n_channels + 1) / c.n_channels - 0.5
        edges = self.center_freq + self.samp_rate * fractions               # channel edges, Hz
        return [make_decision(
            task="occupancy", label="occupied" if occupied[s, ch] else "vacant",
            score=float(score[s, ch]), sample_start=start + s * f * K, sample_count=f * K,
            samp_rate=self.samp_rate, center_freq=self.center_freq, freq_lo=float(edges[ch]),
            freq_hi=float(edges[ch + 1]), model=self.model, time_offset=self.time_offset,
            snr_db=float(snr_db[s, ch]), noise_floor_db=float(floor_db[s]))
            for s in range(n_slots) for ch in range(c.n_channels)]

    # -- emission boxes --------------------------------------------------------------------
    def _cell_tables(self) -> None:
        """dof and thresholds of a cell whose average spans nt frames x nb bins: cells at
        the stream's ends and the band's edges average fewer (padding is excluded, not
        repeated, so their false-alarm rate stays pfa)."""
        c = self.config
        tf, tb = np.meshgrid(np.arange(1, c.cell_frames + 1), np.arange(1, c.cell_bins + 1),
                             indexing="ij")
        dof = np.vectorize(lambda t, b: dsp.equivalent_dof(self._window, t, b))(tf, tb)
        pad = lambda a: np.pad(a, ((1, 0), (1, 0)), constant_values=np.inf)   # index = count
        self._cell_dof = pad(dof)
        self._thr_cell = pad(gammainccinv(dof, c.pfa) / dof)
        self._thr_seed = pad(gammainccinv(dof, self._pfa_seed) / dof)
        self._bin_count = np.rint(ndimage.uniform_filter1d(
            np.ones(c.fft_size), c.cell_bins, mode="constant") * c.cell_bins).astype(int)

    def _reset_tracking(self) -> None:
        self._next = None            # sample expected next (gap detection)
        self._tail = None            # (2h, K) normalised rows: h of context, h held back
        self._tail_start = 0
        self._boxes = BoxTracker(self.config.fft_size, self._seed_confidence,
                                 edge_frames=self.config.cell_frames + 2)

    def _seed_confidence(self, stat: np.ndarray, dof: np.ndarray) -> np.ndarray:
        return confidence(stat, dof, self._pfa_seed)

    def _emissions(self, rows: np.ndarray, start: int) -> list[dict]:
        """rows: (frames, K) power / floor. A cell's average is centred and needs h frames
        after it, so the last h frames wait for the next call (or the end of the stream).
        Frames before the stream start are NaN: absent, not zero."""
        h, K = self.config.cell_frames // 2, self.config.fft_size
        if self._tail is None:       # (at least 2h rows in all, for a first call of few frames)
            lead = max(h, 2 * h - rows.shape[0])
            ctx, base = np.full((lead, K), np.nan, np.float32), start - lead * K
        else:
            ctx, base = self._tail, self._tail_start
        stack = np.concatenate([ctx, rows])
        keep = stack.shape[0] - 2 * h
        self._tail, self._tail_start = stack[keep:], base + keep * K
        return self._evaluate(stack, base + h * K)

    def _end_stream(self) -> list[dict]:
        out, h = [], self.config.cell_frames // 2
        if self._tail is not None and h:     # the held frames, with nothing after them
            after = np.full((h, self.config.fft_size), np.nan, np.float32)
            stack = np.concatenate([self._tail, after])
            out += self._evaluate(stack, self._tail_start + h * self.config.fft_size)
        out += self._decisions(self._boxes.close_all())
        self._reset_tracking()
        return out

    def _evaluate(self, stack: np.ndarray, start: int) -> list[dict]:
        """Cell statistics for the frames stack[h:-h] (the first at sample ``start``)."""
        c = self.config
        h, m = c.cell_frames // 2, stack.shape[0] - 2 * (c.cell_frames // 2)
        if m <= 0:
            return []
        valid = np.isfinite(stack[:, 0])
        filled = np.where(valid[:, None], stack, 0.0).astype(np.float32)
        n_t = np.rint(ndimage.uniform_filter1d(valid.astype(float), c.cell_frames, mode="constant")
                      * c.cell_frames).astype(int)[h:h + m].clip(1)
        size = (c.cell_frames, c.cell_bins)
        stat = ndimage.uniform_filter(filled, size, mode="constant")[h:h + m]
        stat *= (c.cell_frames * c.cell_bins) / np.outer(n_t, self._bin_count)  # mean of real cells
        loose = (stat > self._per_cell(self._thr_cell, n_t)) & valid[h:h + m, None]
        seed = stat > self._per_cell(self._thr_seed, n_t)
        dof = self._per_cell(self._cell_dof, n_t)
        # Recomputed per call: samp_rate and max_box_s may change between calls.
        max_frames = max(1, int(round(c.max_box_s * self.samp_rate / c.fft_size)))
        return self._decisions(self._boxes.update(filled[h:h + m], stat, loose, seed, dof,
                                                  start, max_frames))

    def _per_cell(self, table: np.ndarray, n_t: np.ndarray) -> np.ndarray:
        """(m, K) values of a (frames, bins)-count table; only rows at the stream's ends
        differ from the common row, so the rest is a broadcast view."""
        common = table[self.config.cell_frames, self._bin_count]
        grid = np.broadcast_to(common, (n_t.size, common.size))
        short = np.flatnonzero(n_t < self.config.cell_frames)
        if short.size:
            grid = grid.copy()
            grid[short] = table[n_t[short]][:, self._bin_count]
        return grid

    def _decisions(self, emissions: list[Emission]) -> list[dict]:
        """Emission decisions at the current tuning, floor and time offset; boxes weaker
        than min_snr_db are left out."""
        K = self.config.fft_size
        bin_hz = self.samp_rate / K
        return [make_decision(
            task="emission", label="emission", score=e.score, sample_start=e.sample_start,
            sample_count=e.sample_count, samp_rate=self.samp_rate, center_freq=self.center_freq,
            freq_lo=self.center_freq + (e.k0 - K // 2 - 0.5) * bin_hz,
            freq_hi=self.center_freq + (e.k1 - K // 2 - 0.5) * bin_hz, model=self.model,
            time_offset=self.time_offset, snr_db=e.snr_db,
            noise_floor_db=float(10.0 * np.log10(self._floor)))
            for e in emissions if not e.snr_db < self.config.min_snr_db]   # NaN SNR is kept
