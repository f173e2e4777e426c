"""`spectrumfm generate`: datasets on disk, the same bytes from the same seed, levels, bad input.

Runs the installed command (and the core functions behind it) on small sets; the waveforms'
own structure is checked in tests/test_synth_*.py.
"""

import json

import h5py
import numpy as np
import pytest
import scipy.signal

from sfm_testutil import run_cli
from test_bad_input import assert_one_line_error
from spectrumfm.data import open_dataset
from spectrumfm.synth.dataset import generate, make_example, signal_level
from spectrumfm.synth.impairments import Impairments
from spectrumfm.synth.recipe import Recipe


def _recipe(**kw):
    s = dict(family="modulation", classes="bpsk,qpsk,16qam", n_per_class=6, length=256,
             snr_range=(0, 10), seed=3, shard_size=5)
    s.update(kw)
    return Recipe.build(s)


def test_cli_writes_shards_that_read_back(tmp_path):
    out = tmp_path / "mod"
    res = run_cli("generate", "--family", "modulation", "--classes", "bpsk,qpsk,gmsk",
                  "--n-per-class", 8, "--length", 512, "--snr-range", "-5,15", "--seed", 1,
                  "--shard-size", 10, "--workers", 2, "--out", out, "-q")
    assert res.returncode == 0, res.stderr
    assert "24 examples" in res.stdout
    info = json.loads((out / "dataset.json").read_text())
    assert info["classes"] == ["bpsk", "qpsk", "gmsk"] and info["n_examples"] == 24
    assert [s["n"] for s in info["shards"]] == [10, 10, 4]
    with h5py.File(out / "shard-00000.h5") as f:
        assert f["iq"].dtype == np.complex64 and f["iq"].shape == (10, 512)
        assert f["label"].dtype == np.int64 and f["snr_db"].dtype == np.float32
        assert json.loads(f.attrs["classes"]) == ["bpsk", "qpsk", "gmsk"]
        assert f.attrs["samp_rate"] == 1e6
        assert "sps" in f and "bandwidth_hz" in f   # per-example parameters beside them
    ds = open_dataset(f"shards:{out}", window_len=128)
    assert ds.classes == ["bpsk", "qpsk", "gmsk"]
    assert np.bincount(ds.labels).tolist() == [32, 32, 32]   # 8 frames x 4 windows each
    assert np.all((ds.snr_db >= -5) & (ds.snr_db <= 15))


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    r = _recipe()
    generate(r, str(tmp_path / "a"), workers=1, progress=False)
    generate(r, str(tmp_path / "b"), workers=2, progress=False)
    names = sorted(p.name for p in (tmp_path / "a").glob("*.h5"))
    assert len(names) == 4
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "dataset.json").read_bytes() == \
        (tmp_path / "b" / "dataset.json").read_bytes()
    # Another shard size cuts the same examples differently; another seed makes others.
    generate(_recipe(shard_size=18), str(tmp_path / "c"), workers=1, progress=False)
    a = open_dataset(f"shards:{tmp_path / 'a'}", whole_frames=True)
    c = open_dataset(f"shards:{tmp_path / 'c'}", whole_frames=True)
    np.testing.assert_array_equal(a.iq[:], c.iq[:])
    generate(_recipe(seed=4), str(tmp_path / "d"), workers=1, progress=False)
    d = open_dataset(f"shards:{tmp_path / 'd'}", whole_frames=True)
    assert not np.array_equal(a.iq[:], d.iq[:])


def test_one_example_regenerates_alone():
    r = _recipe()
    imp = Impairments.from_dict({})
    x1, snr1, p1 = make_example(r, imp, 1, 4)
    x2, snr2, p2 = make_example(r, imp, 1, 4)
    np.testing.assert_array_equal(x1, x2)
    assert snr1 == snr2 and p1 == p2


def _inband_snr_db(x, fs, bw):
    """In-band SNR measured from the PSD: the noise floor is unit variance per sample."""
    # detrend=False: a carrier at DC (AM with carrier) is signal, not a trend to remove.
    f, p = scipy.signal.welch(x, fs=fs, nperseg=1024, return_onesided=False, scaling="density",
                              detrend=False)
    inband = np.abs(f) <= bw / 2
    p_in = np.sum(p[inband]) * (f[1] - f[0])       # signal + noise power in the band
    n_in = bw / fs                                  # unit-variance white noise in the band
    return 10 * np.log10((p_in - n_in) / n_in)


@pytest.mark.parametrize("family,name,fs", [("modulation", "qpsk", 1e6),
                                           ("modulation", "16qam", 1e6),
                                           ("technology", "lte", 20e6),
                                           ("technology", "wifi", 20e6),
                                           ("technology", "gsm", 2e6),
                                           ("technology", "nr", 20e6),
                                           ("technology", "dvbt", 10e6),
                                           ("technology", "fm", 1e6),
                                           ("technology", "lora", 1e6),
                                           ("technology", "zigbee", 4e6),
                                           ("modulation", "fm", 1e6),
                                           ("modulation", "am-dsb-wc", 1e6)])
@pytest.mark.parametrize("snr", [0.0, 10.0])
def test_measured_inband_snr_matches_the_label(family, name, fs, snr):
    r = Recipe.build(dict(family=family, classes=name, n_per_class=1, length=1 << 17,
                          samp_rate=fs, snr_db=snr, seed=5))
    x, label_snr, params = make_example(r, Impairments.from_dict({}), 0, 0)
    assert label_snr == snr
    measured = _inband_snr_db(x, fs, params["bandwidth_hz"])
    assert abs(measured - snr) < 1.0, (name, measured, snr)


def test_noise_examples_are_the_floor_alone():
    r = Recipe.build(dict(family="sensing", classes="noise,lte", n_per_class=1, length=1 << 16,
                          samp_rate=20e6, snr_db=-3, seed=2))
    x, snr, _ = make_example(r, Impairments.from_dict({}), 0, 0)
    assert np.isnan(snr)
    assert abs(np.mean(np.abs(x) ** 2) - 1.0) < 0.02
    y, snr, p = make_example(r, Impairments.from_dict({}), 1, 0)
    expected = 1.0 + signal_level(-3, p["bandwidth_hz"], 20e6) ** 2
    assert abs(np.mean(np.abs(y) ** 2) / expected - 1) < 0.05


def test_every_family_generates(tmp_path):
    for family, classes, rate in [("technology", None, 20e6), ("anomaly", None, 25e6),
                                  ("sensing", "noise,ble,modulation:fm", 4e6)]:
        r = Recipe.build(dict(family=family, classes=classes, n_per_class=2, length=1024,
                              samp_rate=rate, seed=1,
                              impairments={"cfo_hz": [-1000, 1000], "multipath": "tdl-a",
                                           "delay_spread_ns": 50, "speed_kmh": 30,
                                           "carrier_hz": 2.4e9}))
        info = generate(r, str(tmp_path / family), workers=1, progress=False)
        ds = open_dataset(f"shards:{tmp_path / family}", whole_frames=True)
        assert ds.classes == info["classes"] and len(ds.labels) == 2 * len(ds.classes)
        iq = ds.iq[:]
        assert np.all(np.isfinite(iq.view(np.float32)))


def test_recipe_file_and_command_line_override(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nfamily: technology\nclasses: [lte, nr]\nn_per_class: 3\n"
                      "samp_rate: 20e6\nlength: 256\nsnr_db: [0, 5]\nseed: 9\n"
                      "impairments: {cfo_hz: [-2000, 2000], iq_gain_db: 0.5}\n"
                      "params: {lte: {bandwidth_mhz: 5}}\n")
    out = tmp_path / "t"
    res = run_cli("generate", "--recipe", recipe, "--n-per-class", 2, "--out", out, "-q")
    assert res.returncode == 0, res.stderr
    info = json.loads((out / "dataset.json").read_text())
    assert info["n_examples"] == 4 and info["recipe"]["seed"] == 9
    assert info["recipe"]["impairments"]["cfo_hz"] == [-2000, 2000]
    with h5py.File(out / "shard-00000.h5") as f:
        lte = f["label"][:] == 0
        assert np.all(f["bandwidth_mhz"][:][lte] == 5)
        assert np.all(np.abs(f["cfo_hz"][:]) <= 2000)


def test_list_names_every_family():
    res = run_cli("generate", "--list")
    assert res.returncode == 0, res.stderr
    for word in ("256qam", "oqpsk", "wifi", "lte", "nr", "lora", "adsb", "alias-30mhz"):
        assert word in res.stdout


@pytest.mark.parametrize("args,words", [
    (["--family", "radar"], ["unknown family", "radar"]),
    (["--family", "modulation", "--classes", "qpsk,9psk"], ["9psk", "unknown"]),
    (["--family", "technology", "--classes", "lte", "-s", "1e6"], ["lte", "at least", "MS/s"]),
    (["--family", "technology", "--classes", "wifi", "-s", "10e6"], ["wifi", "at least"]),
    (["--family", "modulation", "--snr-range", "10,-10"], ["upside down", "10"]),
    (["--family", "modulation", "--n-per-class", "0"], ["n_per_class"]),
    (["--recipe", "missing.yaml"], ["missing.yaml", "no such"]),
])
def test_bad_input_one_line(tmp_path, args, words):
    res = run_cli("generate", *args, "--out", tmp_path / "o", "-q", cwd=tmp_path)
    assert_one_line_error(res, *words)
    assert not (tmp_path / "o" / "dataset.json").exists()


def test_bad_recipe_files(tmp_path):
    cases = {"notyaml.yaml": ("family: [unclosed\n", "not valid YAML"),
             "v2.yaml": ("version: 2\nfamily: modulation\n", "version 2"),
             "typo.yaml": ("family: modulation\nn_per_clas: 3\n", "n_per_clas"),
             "imp.yaml": ("family: modulation\nimpairments: {cfo: 3}\n", "cfo")}
    for name, (text, word) in cases.items():
        (tmp_path / name).write_text(text)
        res = run_cli("generate", "--recipe", tmp_path / name, "--out", tmp_path / "o", "-q")
        assert_one_line_error(res, name, word)


def test_output_folder_not_empty_needs_overwrite(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["generate", "--family", "modulation", "--classes", "bpsk", "--n-per-class", 2,
            "--length", 128, "--out", out, "-q"]
    assert_one_line_error(run_cli(*args), str(out), "not empty", "--overwrite")
    assert run_cli(*args, "--overwrite").returncode == 0
    assert (out / "notes.txt").read_text() == "mine"   # only the dataset is replaced
    assert (out / "dataset.json").exists()


@pytest.mark.parametrize("name", ["modulation-radioml", "technology", "sensing", "anomaly"])
def test_shipped_recipes_generate(tmp_path, name):
    from sfm_testutil import ROOT
    settings = Recipe.load(str(ROOT / "recipes" / f"{name}.yaml"))
    settings["n_per_class"] = 1
    recipe = Recipe.build(settings, where=name)
    assert recipe.impairments            # numbers like 2.4e9 read as numbers, not strings
    info = generate(recipe, str(tmp_path / name), workers=1, progress=False)
    assert info["n_examples"] == len(recipe.classes)


def test_ctrl_c_says_what_was_written_and_leaves_no_partial_files(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from sfm_testutil import SPECTRUMFM
    out = tmp_path / "big"
    proc = subprocess.Popen([str(SPECTRUMFM), "generate", "--family", "technology",
                             "--n-per-class", "5000", "--shard-size", "1000", "--workers", "2",
                             "--out", str(out), "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not list(out.glob("shard-*.h5")) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)          # a terminal's Ctrl-C: the whole group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert err.count("\n") == 1 and "interrupted after" in err and "shards" in err
    assert not (out / "dataset.json").exists()
    assert not list(out.glob(".*.tmp"))             # only whole shards are left
    assert list(out.glob("shard-*.h5"))
