"""Emission boxes for the energy detector: cells above threshold grown into time–frequency boxes.

``BoxTracker`` is fed, frame by frame in order, the detector's per-cell masks and statistics
and follows each connected group of cells across calls as an open box; a box closes when its
cells stop, and the closed box comes back as an ``Emission`` with its edges trimmed. It knows
frames and bins only: the detector turns bins into Hz and emissions into decisions
(numpy/scipy only).

A closed box is never reopened, so whatever its time trim drops is lost for good: the trim
may only take the few frames at each end that the cell average added, that the emission
only grazes, or that noise cells joined there (at most ``edge_frames``), judged against the
level just inside them, never the box's overall level: a weak end is still the emission.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Emission:
    """A closed, trimmed box.

    sample_start: absolute index of its first sample (a frame boundary).
    sample_count: length, samples (whole frames).
    k0, k1: first and one-past-last FFT bin, fftshift order (DC at ``fft_size // 2``).
    score: its strongest cell's confidence against the seed threshold, in (0.5, 1].
    snr_db: mean SNR over the noise floor across the trimmed bins, dB.
    """

    sample_start: int
    sample_count: int
    k0: int
    k1: int
    score: float
    snr_db: float


class _Box:
    """An emission being tracked: extent, evidence and the profiles used to trim its edges."""

    __slots__ = ("t0", "n_frames", "k0", "k1", "score", "seeded", "tprof", "bin_sum")

    def __init__(self, t0: int, n_bins: int, seeded: bool = False):
        self.t0, self.n_frames, self.k0, self.k1 = t0, 0, n_bins, 0
        self.score, self.seeded, self.tprof = 0.0, seeded, []
        self.bin_sum = np.zeros(n_bins)


class BoxTracker:
    """Open emission boxes of one stream.

    Args:
        fft_size: bins per frame, which is also the frame length in samples.
        confidence: ``confidence(stat, dof)`` -> a cell's score in [0, 1] against the seed
            threshold (read at every call, so a changed pfa applies at once).
        edge_frames: the most frames the time trim may drop at each end of a box, and the
            frames just inside it that it is compared to: the ``cell_frames // 2`` the cell
            average spreads an emission by, one it only grazes and a few noise cells that
            joined it there (the detector gives ``cell_frames + 2``).

    A box must contain at least one seed cell to be reported; one that never does is dropped
    silently when it closes.
    """

    def __init__(self, fft_size: int, confidence: Callable[[np.ndarray, np.ndarray], np.ndarray],
                 edge_frames: int = 5):
        self.fft_size, self._confidence = int(fft_size), confidence
        self.edge_frames = max(1, int(edge_frames))
        self._clear()

    def _clear(self) -> None:
        K = self.fft_size
        self._prev_mask = np.zeros(K, bool)        # loose mask of the last evaluated frame
        self._prev_owner = np.full(K, -1)          # which open box owns each of its cells
        self._open: list[_Box] = []

    def update(self, raw, stat, loose, seed, dof, start: int, max_frames: int) -> list[Emission]:
        """Take m consecutive frames, the first at sample ``start``; return the boxes they end.

        Every array is (m, fft_size): ``raw`` power over the floor of each bin, ``stat`` the
        cell statistic (over the floor), ``dof`` its degrees of freedom, ``loose`` and ``seed``
        the cells over the loose and the strict threshold. A box reaching ``max_frames``
        frames is reported and continues in a fresh box.
        """
        if not loose.any() and not self._open:
            self._prev_mask[:] = False
            return []
        return self._track(raw, stat, loose, seed, dof, start, max_frames)

    def close_all(self) -> list[Emission]:
        """Close every open box (end of stream, gap or retune) and start afresh."""
        out = [e for e in map(self._close, self._open) if e is not None]
        self._clear()
        return out

    def _track(self, raw, stat, loose, seed, dof, start, max_frames) -> list[Emission]:
        """Label 8-connected loose cells with the previous frame's cells on top, so that a
        component touching an open box continues it; boxes one component joins merge."""
        K, m = self.fft_size, raw.shape[0]
        lab, n = ndimage.label(np.vstack([self._prev_mask[None], loose]), np.ones((3, 3), bool))
        parent = np.arange(n + 1)           # label -> group: labels one open box touches unite
        box_root = []
        for b in range(len(self._open)):
            roots = np.unique(parent[lab[0, self._prev_owner == b]])
            for r in roots[1:]:
                parent[parent == r] = roots[0]
            box_root.append(roots[0])
        groups = np.where(loose, parent[lab[1:]], 0)                        # (m, K)
        box_group = parent[np.asarray(box_root, dtype=int)]
        objects = ndimage.find_objects(groups)
        out, still_open, owner = [], [], np.full(K, -1)
        for g in np.union1d(np.unique(groups[groups > 0]), box_group):
            boxes = [self._open[b] for b in np.flatnonzero(box_group == g)]
            sl = objects[g - 1] if g - 1 < len(objects) else None
            if sl is None:           # no cell in this call: the emission ended last frame
                out += [self._close(b) for b in boxes]
                continue
            cells = groups[sl] == g
            at_end = sl[0].stop == m
            if not boxes and not at_end and not (cells & seed[sl]).any():
                continue             # an isolated noise cluster without a seed
            box = _merge(boxes) if boxes else _Box(start + sl[0].start * K, K)
            for full in self._extend(box, cells, sl, raw, stat, seed, dof, max_frames):
                out.append(self._close(full))   # before _extend starts the box afresh
            if at_end:
                owner[groups[-1] == g] = len(still_open)
                still_open.append(box)
            elif box.n_frames:
                out.append(self._close(box))
        self._open, self._prev_owner, self._prev_mask = still_open, owner, loose[-1].copy()
        return [e for e in out if e is not None]

    def _extend(self, box: _Box, cells, sl, raw, stat, seed, dof, max_frames):
        """Add a component's frames to ``box``; yields each box that reaches max_frames (the
        caller closes it and continues in a fresh box); the last one stays in ``box``."""
        K = self.fft_size
        rows, bins = sl
        k_first = bins.start + np.argmax(cells, axis=1)
        k_last = bins.stop - np.argmax(cells[:, ::-1], axis=1)
        score = np.where(cells, self._confidence(stat[sl], dof[sl]), 0.0).max(axis=1)
        seeded = (cells & seed[sl]).any(axis=1)
        # Per frame, the peak over the component's own cells: forks that widen a frame (a
        # burst's switching splatter, the cells the average spreads it to, a weaker emission
        # joining it) add low cells, and a mean over them (or over the bounding box) would
        # dilute the emission's frames below the level _edge_trim compares them to.
        tprof = np.where(cells, raw[sl], 0.0).max(axis=1)
        r = 0
        while r < cells.shape[0]:
            seg = slice(r, min(cells.shape[0], r + max_frames - box.n_frames))
            box.n_frames += seg.stop - seg.start
            box.k0 = min(box.k0, int(k_first[seg].min()))
            box.k1 = max(box.k1, int(k_last[seg].max()))
            box.score = max(box.score, float(score[seg].max()))
            box.seeded |= bool(seeded[seg].any())
            box.tprof.append(tprof[seg])
            box.bin_sum += raw[rows.start + seg.start:rows.start + seg.stop].sum(axis=0)
            r = seg.stop
            if box.n_frames >= max_frames:
                yield box
                box.__init__(box.t0 + box.n_frames * K, K, box.seeded)

    def _close(self, box: _Box) -> Emission | None:
        """A finished box with its edges trimmed; None if it never had a seed."""
        K = self.fft_size
        if not box.seeded or box.n_frames == 0:
            return None
        # Frequency: keep bins whose SNR is at least half the box's peak SNR. A band's edge bin
        # loses ~1 dB to the window, the first bin outside it gets ~-8 dB (Hann leakage), a
        # tone's neighbours -6 dB: half (-3 dB) separates them.
        prof = box.bin_sum[box.k0:box.k1] / box.n_frames - 1.0
        keep = prof >= 0.5 * prof.max()
        k0 = box.k0 + int(np.argmax(keep))
        k1 = box.k1 - int(np.argmax(keep[::-1]))
        # Time: drop the frames at each end that the cell average added or the emission only
        # grazes, and no more: a closed box is never reopened, so what it drops is lost.
        tprof = np.concatenate(box.tprof) - 1.0
        lo, hi = self._edge_trim(tprof), self._edge_trim(tprof[::-1])
        snr = float(np.mean(prof[k0 - box.k0:k1 - box.k0]))
        return Emission(sample_start=box.t0 + lo * K, sample_count=(box.n_frames - lo - hi) * K,
                        k0=k0, k1=k1, score=box.score,
                        snr_db=float(10.0 * np.log10(max(snr, 1e-5))))

    def _edge_trim(self, tprof: np.ndarray) -> int:
        """How many of the first frames of a box's time profile (peak SNR per frame) to drop.

        Walking in from the edge, each frame is compared to the level inside it: the median
        of the next ``2 * edge_frames + 1`` frames that reach a tenth of their peak (frames
        that hold no emission, here or at the far end of a short box, do not count). Under a
        tenth of it, the frame holds no emission (the cell average added it, or noise cells
        joined there) and goes. Between a tenth and half, it goes if the next frame is at the
        level (the frame the emission switches on in) and ends the walk; otherwise it stays,
        with the rest (a weaker stretch of the emission: a fading or stepped burst, or a weak
        emission merged into a strong one). At most ``edge_frames`` go, and the strongest
        frame always stays (half a median never exceeds the maximum)."""
        prof, w = np.maximum(tprof, 0.0), 2 * self.edge_frames + 1
        cap = min(self.edge_frames, prof.size - 1)
        for i in range(cap):
            inside = prof[i + 1:i + 1 + w]
            level = float(np.median(inside[inside >= 0.1 * inside.max()]))
            if prof[i] >= 0.5 * level:
                return i
            if prof[i] >= 0.1 * level:
                return i + 1 if prof[i + 1] >= 0.5 * level else i
        return cap


def _merge(boxes: list[_Box]) -> _Box:
    """Join open boxes that one component connects (all end at the same frame); time
    profiles are aligned at that frame and the larger value kept."""
    if len(boxes) == 1:
        return boxes[0]
    first = min(boxes, key=lambda b: b.t0)
    box = _Box(first.t0, first.bin_sum.size, any(b.seeded for b in boxes))
    box.n_frames, box.score = first.n_frames, max(b.score for b in boxes)
    box.k0, box.k1 = min(b.k0 for b in boxes), max(b.k1 for b in boxes)
    tprof = np.zeros(box.n_frames)
    for tp in (np.concatenate([np.zeros(0)] + b.tprof) for b in boxes):
        tprof[tprof.size - tp.size:] = np.maximum(tprof[tprof.size - tp.size:], tp)
    box.tprof = [tprof]
    # Frame-weighted mean profile: a short, noisy fork barely moves a long emission's.
    weight = box.n_frames / max(1, sum(b.n_frames for b in boxes))
    box.bin_sum = sum(b.bin_sum for b in boxes) * weight
    return box
