"""Channel-window training data for the occupancy and channel-anomaly adapters
(spectrumfm.synth.occupancy): labels from annotations, the written datasets, the CLI."""

import json
import subprocess

import numpy as np
import pytest

from spectrumfm.infer.channelizer import Channelizer
from spectrumfm.synth import occupancy
from spectrumfm.synth.scenes import Emitter, Scene

from sfm_testutil import SPECTRUMFM

FS, C, N = 1.6e6, 16, 128          # 100 kHz channels
SPAN = N * C


def _ann(lo, hi, start, count, snr=3.0):
    return {"core:sample_start": start, "core:sample_count": count,
            "core:freq_lower_edge": lo, "core:freq_upper_edge": hi, "spectrumfm:snr_db": snr}


def _edges():
    return Channelizer(C).channel_edges(FS, 0.0)


def test_label_cells_occupied_vacant_and_ambiguous():
    e = _edges()
    # Channel 3 exactly, cells 0..9; a narrow emitter (10 % of a channel) inside channel 10
    # for cells 4..5 only.
    ann = [_ann(e[3, 0], e[3, 1], 0, 10 * SPAN, snr=-2.0),
           _ann(e[10, 0] + 40e3, e[10, 0] + 50e3, 4 * SPAN, 2 * SPAN, snr=7.0)]
    labels, snr = occupancy.label_cells(ann, e, SPAN, 12)
    assert (labels[3, :10] == 1).all() and (snr[3, :10] == -2.0).all()
    assert (labels[3, 10:] == 0).all()                      # the emitter has stopped
    # Neighbours of channel 3 lie within the guard: no right answer, left out.
    assert (labels[[2, 4], :10] == -1).all()
    assert (labels[10, 4:6] == 1).all() and (snr[10, 4:6] == 7.0).all()
    assert (labels[10, :4] == 0).all() and (labels[10, 6:] == 0).all()
    assert (labels[[0, 1, 6, 7, 8, 13, 14, 15]] == 0).all()


def test_label_cells_a_cell_only_half_covered_in_time_is_left_out():
    e = _edges()
    ann = [_ann(e[5, 0], e[5, 1], SPAN // 4, SPAN // 8)]    # 1/8 of cell 0
    labels, _ = occupancy.label_cells(ann, e, SPAN, 2)
    assert labels[5, 0] == -1 and labels[5, 1] == 0


def test_scene_windows_occupied_cells_carry_the_emitter():
    scene = Scene(FS, 0.0, 24 * SPAN / FS, [Emitter("modulation:qpsk", freq_hz=-0.3e6,
                                                      snr_db=20.0, params={"sps": 16})], seed=5)
    w, lab, snr = occupancy.scene_windows(scene, C, N)
    assert w.shape[1] == N and w.dtype == np.complex64 and len(w) == len(lab) == len(snr)
    occ, vac = lab == 1, lab == 0
    assert occ.any() and vac.any()
    power = (np.abs(w) ** 2).mean(axis=1)
    # At 20 dB in-band SNR an occupied cell holds far more power than a vacant one.
    assert np.median(power[occ]) > 10 * np.median(power[vac])
    assert (snr[occ] == 20.0).all()


@pytest.mark.parametrize("oversample", [1, 2])
def test_anomaly_windows_label_the_channels_that_see_the_jammer(oversample):
    scene = Scene(FS, 0.0, 8 * SPAN / FS, [], seed=2)
    rng = np.random.default_rng(0)
    w, lab, snr = occupancy.anomaly_scene_windows(scene, rng, n_channels=C, window_len=N,
                                                  jammer="cw", jnr_db=10.0,
                                                  oversample=oversample)
    lab = lab.reshape(C, -1)
    jammed = np.flatnonzero(lab.any(axis=1))
    # The tone is in one channel, and in the twice-wide view of one neighbour as well.
    assert len(jammed) == oversample and all(lab[k].all() for k in jammed)
    power = (np.abs(w.reshape(C, -1, N)) ** 2).mean(axis=(1, 2))
    assert np.argmax(power) in jammed
    # Elsewhere at most filter leakage into a channel beside them.
    loud = np.flatnonzero(power > 10 * np.median(power))
    assert all(np.abs(jammed - k).min() <= 1 for k in loud)
    _, lab0, _ = occupancy.anomaly_scene_windows(scene, rng, n_channels=C, window_len=N)
    assert not lab0.any()                                   # no jammer, all normal


@pytest.mark.parametrize("family, classes", [("occupancy", ["vacant", "occupied"]),
                                             ("channel-anomaly", ["normal", "anomalous"])])
def test_generate_channel_families(tmp_path, family, classes):
    out = tmp_path / family
    r = subprocess.run([SPECTRUMFM, "generate", "--family", family, "--scenes", "3",
                        "--seed", "1", "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    info = json.loads((out / "dataset.json").read_text())
    assert info["classes"] == classes and info["n_examples"] > 0
    from spectrumfm.data import open_dataset
    task = "sensing" if family == "occupancy" else "anomaly"
    ds = open_dataset(f"shards:{out}", window_len=N, task=task)
    assert len(ds) == info["n_examples"] and set(np.unique(ds.labels)) <= {0, 1}
    if family == "occupancy":
        assert set(np.unique(ds.labels)) == {0, 1}
