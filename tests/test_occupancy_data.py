"""Channel-window training data for the occupancy and channel-anomaly adapters
(spectrumfm.synth.occupancy): labels by received power, the written datasets, the CLI."""

import json
import subprocess

import numpy as np
import pytest

from spectrumfm.synth import occupancy
from spectrumfm.synth.scenes import Emitter, Scene

from sfm_testutil import SPECTRUMFM

FS, C, N = 1.6e6, 16, 128          # 100 kHz channels
SPAN = N * C


def test_label_cells_by_each_emitters_power_in_the_cell():
    # Two emitters, 3 channels, 2 cells; in-band SNRs 0 dB (linear 1) and 10 dB (linear 10).
    snr_cells = np.zeros((2, 3, 2))
    snr_cells[0, 0] = [0.6, 0.4]      # >= half its in-band SNR, then below: left out
    snr_cells[1, 1] = [6.0, 0.005]    # >= 5 (half of 10): occupied; then 23 dB under: vacant
    snr_cells[0, 2] = [0.009, 0.02]   # a skirt under -20 dB: vacant; above: left out
    labels, snr = occupancy.label_cells(snr_cells, [0.0, 10.0])
    assert labels.tolist() == [[1, -1], [1, 0], [0, -1]]
    assert snr[0, 0] == 0.0 and snr[1, 0] == 10.0 and np.isnan(snr[[0, 1, 2], [1, 1, 1]]).all()


def test_label_cells_of_a_scene_without_emitters_are_all_vacant():
    labels, snr = occupancy.label_cells(np.zeros((0, 4, 3)), [])
    assert (labels == 0).all() and np.isnan(snr).all()


def test_scene_labels_follow_the_emitters_received_power():
    """A rendered scene: channels inside a wide emitter are occupied from when it starts (at
    about its in-band SNR), a narrow emitter's channel (1/10 of it filled, 10 dB down in the
    channel) is left out, and channels far from both are vacant."""
    width = FS / C
    wide = Emitter("modulation:qpsk", freq_hz=-0.35e6, snr_db=3.0, start_s=4 * SPAN / FS,
                   params={"sps": 4})                              # about 4.5 channels wide
    narrow = Emitter("modulation:qpsk", freq_hz=10.5 * width - FS / 2, snr_db=6.0,
                     params={"sps": 80})                           # 1/10 of channel 10
    scene = Scene(FS, 0.0, 12 * SPAN / FS, [wide, narrow], seed=3)
    parts = []
    from spectrumfm.synth.scenes import render
    render(scene, parts=parts)
    assert len(parts) == 2 and all(p.shape == (scene.n_samples,) for p in parts)
    cells = occupancy.cell_snr(parts, C, N, 12)
    inside = int(round((-0.35e6 + FS / 2) / width - 0.5))         # the wide emitter's centre
    # Received power inside the wide emitter is about its in-band SNR (3 dB: 2.0) once on;
    # the centre of an RRC spectrum lies above the mean density over its annotated band.
    assert 1.4 < cells[0, inside, 6:].mean() < 4.0
    assert cells[0, inside, :3].max() < 1e-3                       # before it starts
    iq, labels, snr = occupancy.scene_labels(scene, C, N)
    assert (labels[inside, 5:] == 1).all() and (snr[inside, 5:] == 3.0).all()
    assert (labels[inside, :4] == 0).all()
    assert (labels[10] == -1).all()                                # narrow: left out
    assert (labels[[0, 15]] == 0).all()
    assert len(iq) == scene.n_samples


@pytest.mark.parametrize("oversample", [1, 2])
def test_scene_windows_occupied_cells_carry_the_emitter(oversample):
    """Each window's label is that of its own samples: an emitter switched on a third of
    the way in fills exactly the windows labelled occupied (at 20 dB every one of them
    stands far above every vacant one), with either channel view."""
    scene = Scene(FS, 0.0, 24 * SPAN / FS, [Emitter("modulation:qpsk", freq_hz=-0.3e6,
                                                      snr_db=20.0, start_s=8 * SPAN / FS,
                                                      params={"sps": 16})], seed=5)
    w, lab, snr = occupancy.scene_windows(scene, C, N, oversample=oversample)
    assert w.shape[1] == N and w.dtype == np.complex64 and len(w) == len(lab) == len(snr)
    occ, vac = lab == 1, lab == 0
    assert occ.any() and vac.any()
    power = (np.abs(w) ** 2).mean(axis=1)
    # Unit noise variance per channel sample: vacant windows about 1 (the oversampled view
    # of a channel beside the emitter catches some of it).
    assert np.median(power[vac]) == pytest.approx(1.0, rel=0.2)
    assert power[occ].min() > 3 * np.quantile(power[vac], 0.99)
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
    w0, lab0, _ = occupancy.anomaly_scene_windows(scene, rng, n_channels=C, window_len=N)
    assert not lab0.any()                                   # no jammer, all normal
    # Scaled as the engine scales its grid windows: unit noise variance per channel sample.
    assert (np.abs(w0) ** 2).mean() == pytest.approx(1.0, rel=0.1)


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
    assert info["recipe"]["oversample"] == 1          # the shipped adapters' channel view
    from spectrumfm.data import open_dataset
    task = "sensing" if family == "occupancy" else "anomaly"
    ds = open_dataset(f"shards:{out}", window_len=N, task=task)
    assert len(ds) == info["n_examples"] and set(np.unique(ds.labels)) <= {0, 1}
    if family == "occupancy":
        assert set(np.unique(ds.labels)) == {0, 1}
