"""The data side of LWM-Spectro's joint SNR-bin x mobility task (paper §V-B).

``{one_of: [...]}`` impairment settings, the stored receiver speed, shard columns reaching
the dataset as ``params``, the ``snr-mobility`` relabelling and its recipes. Small sets of
short examples: the task needs SNRs and speeds, not long waveforms.
"""

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from spectrumfm.data import SNR_MOBILITY_CLASSES, TASKS, open_dataset
from spectrumfm.errors import InputError
from spectrumfm.synth.dataset import generate
from spectrumfm.synth.impairments import PARAM_KEYS, Impairments, OneOf, apply_channel
from spectrumfm.synth.recipe import Recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SPEEDS = [3, 20, 120]          # 20 km/h is neither pedestrian nor vehicular: left out


def _generate(folder, speed_kmh=None, n_per_class=30, classes="lte", length=256, seed=5):
    imp = {"multipath": "tdl-a", "delay_spread_ns": 100, "carrier_hz": 28e9,
           "speed_kmh": {"one_of": SPEEDS} if speed_kmh is None else speed_kmh}
    recipe = Recipe.build(dict(family="technology", classes=classes, n_per_class=n_per_class,
                               length=length, snr_range=(-5, 25), seed=seed, shard_size=16,
                               impairments=imp))
    generate(recipe, str(folder), progress=False)
    return f"shards:{folder}"


@pytest.fixture(scope="module")
def mobility_set(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("snrmob") / "set")


def _columns(spec, *keys):
    folder = Path(spec.partition(":")[2])
    cols = {k: [] for k in keys}
    for shard in sorted(folder.glob("*.h5")):
        with h5py.File(shard) as f:
            for k in keys:
                cols[k].append(f[k][:])
    return {k: np.concatenate(v) for k, v in cols.items()}


# -- one_of ---------------------------------------------------------------------------------

def test_001_one_of_draws_only_the_listed_values_each_about_equally():
    imp = Impairments(multipath="tdl-a", speed_kmh={"one_of": SPEEDS}, carrier_hz=28e9)
    assert imp.speed_kmh == OneOf((3.0, 20.0, 120.0))
    rng = np.random.default_rng(0)
    seen = [apply_channel(np.ones(64, np.complex64), rng, 20e6, imp)[1]["speed_kmh"]
            for _ in range(300)]
    values, counts = np.unique(seen, return_counts=True)
    assert values.tolist() == [3.0, 20.0, 120.0] and counts.min() > 70


def test_002_one_of_round_trips_through_to_dict_recipe_and_dataset_json(mobility_set):
    imp = Impairments.from_dict({"speed_kmh": {"one_of": [3, 120]}, "cfo_hz": [-1, 1]})
    d = imp.to_dict()
    assert d["speed_kmh"] == {"one_of": [3.0, 120.0]} and d["cfo_hz"] == [-1.0, 1.0]
    assert Impairments.from_dict(json.loads(json.dumps(d))) == imp
    info = json.loads((Path(mobility_set[7:]) / "dataset.json").read_text())
    assert info["recipe"]["impairments"]["speed_kmh"] == {"one_of": SPEEDS}
    again = Recipe.build(info["recipe"])
    assert Impairments.from_dict(again.impairments).speed_kmh == OneOf((3.0, 20.0, 120.0))


@pytest.mark.parametrize("value, words", [
    ({"one_of": []}, "non-empty list"),
    ({"one_of": 3}, "non-empty list"),
    ({"one_of": [3, 120], "p": [0.5, 0.5]}, "alone"),
    ({}, "alone"),
    ({"one_of": [3, "fast"]}, "expected a number"),
    ({"one_of": [3, -1]}, "outside"),
    ({"one_of": [3, math.inf]}, "finite"),
])
def test_003_bad_one_of_forms_are_one_line_errors(value, words):
    with pytest.raises(InputError) as e:
        Impairments.from_dict({"speed_kmh": value})
    msg = str(e.value)
    assert "\n" not in msg and "speed_kmh" in msg and words in msg, msg


def test_004_recipes_load_and_speed_is_stored_before_doppler():
    for path in sorted(RECIPES.glob("lwm-*.yaml")):
        recipe = Recipe.build(Recipe.load(str(path)), where=path.name)
        assert recipe.length == 8256 and recipe.samp_rate == 20e6, path.name
    mob = Recipe.build(Recipe.load(str(RECIPES / "lwm-snr-mobility.yaml")))
    assert mob.impairments["speed_kmh"] == {"one_of": [3, 120]}
    # The speed a Doppler shift was derived from comes before it in the stored columns.
    assert PARAM_KEYS.index("speed_kmh") < PARAM_KEYS.index("doppler_hz")


# -- the stored speed and params ------------------------------------------------------------

def test_005_speed_is_written_and_read_back_as_a_param(mobility_set):
    cols = _columns(mobility_set, "speed_kmh", "doppler_hz", "snr_db")
    assert set(np.unique(cols["speed_kmh"])) == set(SPEEDS)
    np.testing.assert_allclose(cols["doppler_hz"],
                               cols["speed_kmh"] / 3.6 * 28e9 / 299_792_458.0)
    frames = open_dataset(mobility_set, whole_frames=True)
    assert {"speed_kmh", "doppler_hz"} <= set(frames.params)
    np.testing.assert_array_equal(frames.params["speed_kmh"], cols["speed_kmh"])
    windows = open_dataset(mobility_set, window_len=64)       # 4 windows per frame
    np.testing.assert_array_equal(windows.params["speed_kmh"],
                                  np.repeat(cols["speed_kmh"], 4).astype(np.float32))
    sub = windows.subset([5, 0, 77])
    assert sub.params["speed_kmh"].tolist() == windows.params["speed_kmh"][[5, 0, 77]].tolist()


def test_006_speed_is_nan_without_multipath(tmp_path):
    recipe = Recipe.build(dict(family="technology", classes="lte", n_per_class=3, length=128,
                               snr_db=10, impairments={"speed_kmh": 50}))
    generate(recipe, str(tmp_path / "flat"), progress=False)
    ds = open_dataset(f"shards:{tmp_path / 'flat'}", whole_frames=True)
    assert np.isnan(ds.params["speed_kmh"]).all() and np.isnan(ds.params["doppler_hz"]).all()
    with pytest.raises(InputError, match="lwm-snr-mobility.yaml") as e:
        open_dataset(f"shards:{tmp_path / 'flat'}", whole_frames=True, task="snr-mobility")
    assert "\n" not in str(e.value)


# -- the task -------------------------------------------------------------------------------

def test_007_labels_follow_the_stored_snr_and_speed(mobility_set):
    cols = _columns(mobility_set, "speed_kmh", "snr_db")
    ds = open_dataset(mobility_set, whole_frames=True, task="snr-mobility")
    assert ds.classes == SNR_MOBILITY_CLASSES == [
        "low-pedestrian", "low-vehicular", "mid-pedestrian", "mid-vehicular",
        "high-pedestrian", "high-vehicular"]
    kept = cols["speed_kmh"] != 20
    assert ds.left_out == int((~kept).sum()) > 0 and len(ds) == int(kept.sum())
    np.testing.assert_array_equal(ds.source_rows, np.flatnonzero(kept))
    snr, speed = cols["snr_db"][kept], cols["speed_kmh"][kept]
    expected = [("low" if s < 5 else "mid" if s < 15 else "high")
                + ("-pedestrian" if v == 3 else "-vehicular") for s, v in zip(snr, speed)]
    assert [ds.classes[i] for i in ds.labels] == expected
    np.testing.assert_array_equal(ds.snr_db, snr)
    assert set(ds.labels) == set(range(6))
    # Left-out frames go whole: windows keep their frame's label and parameters.
    windows = open_dataset(mobility_set, window_len=64, task="snr-mobility")
    np.testing.assert_array_equal(windows.labels, np.repeat(ds.labels, 4))
    assert windows.left_out == 4 * ds.left_out


def test_008_bin_edges_and_speed_limits():
    from spectrumfm.data.readers import snr_mobility_labels
    labels = snr_mobility_labels([4.99, 5.0, 14.99, 15.0, 30, 0, np.nan, 10],
                                 [10.0, 30.0, 3, 120, 10.01, 29.99, 3, np.nan])
    assert labels.tolist() == [0, 3, 2, 5, -1, -1, -1, -1]


def test_009_no_speed_column_is_a_one_line_error(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    with h5py.File(folder / "shard-00000.h5", "w") as f:
        f["iq"] = np.ones((4, 64), np.complex64)
        f["label"] = np.zeros(4, np.int64)
        f["snr_db"] = np.full(4, 10.0, np.float32)
        f.attrs["classes"] = json.dumps(["lte"])
    with pytest.raises(InputError) as e:
        open_dataset(f"shards:{folder}", task="snr-mobility", window_len=64)
    msg = str(e.value)
    assert "\n" not in msg and "speed_kmh" in msg and "recipes/lwm-snr-mobility.yaml" in msg


def test_010_sensing_keeps_params_beside_its_noise_windows(mobility_set):
    ds = open_dataset(mobility_set, window_len=64, task="sensing")
    n = len(ds) // 2
    assert np.isfinite(ds.params["speed_kmh"][:n]).all()
    assert np.isnan(ds.params["speed_kmh"][n:]).all()


# -- the commands ---------------------------------------------------------------------------

def test_011_finetune_accepts_the_task_and_follows_the_backbones_split(mobility_set):
    from spectrumfm.data import split_indices
    from spectrumfm_apps import finetune

    assert set(finetune.TASK_CHOICES) == set(TASKS)
    args = finetune.get_args_parser().parse_args(
        ["--task", "snr-mobility", "--backbone", "b", "--data", mobility_set, "--out", "o"])
    assert args.task == "snr-mobility"
    data = open_dataset(mobility_set, window_len=64, task="snr-mobility")
    parts = finetune.task_split(mobility_set, data, window_len=64, fractions=(0.6, 0.2, 0.2),
                                seed=1)
    source = open_dataset(mobility_set, window_len=64)
    src_parts = split_indices(source.labels, source.snr_db, (0.6, 0.2, 0.2), seed=1,
                              groups=source.frame_index)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(data)))
    for part, src in zip(parts, src_parts):
        assert set(data.source_rows[part]) <= set(src)


def test_012_lwm_examples_carry_params_and_rows(mobility_set):
    from spectrumfm.models import create_model
    from spectrumfm.train.lwm import fit_hop
    from spectrumfm.train.lwm_finetune import open_task_examples

    config = fit_hop(create_model("lwm-spectro-tiny").config, 256)
    data = open_task_examples(mobility_set, config, "snr-mobility")
    frames = open_dataset(mobility_set, whole_frames=True, task="snr-mobility")
    assert data.classes == SNR_MOBILITY_CLASSES and data.left_out == frames.left_out
    np.testing.assert_array_equal(data.source_rows, frames.source_rows)
    np.testing.assert_array_equal(data.params["speed_kmh"], frames.params["speed_kmh"])
    assert data.batch([0, 1])[0].shape == (2, config.input_len)


@pytest.mark.slow
def test_013_lwm_spectro_finetunes_and_evaluates_the_task(mobility_set, tmp_path, capsys):
    from spectrumfm_apps import evaluate, finetune, pretrain

    def run(module, *argv):
        return module.main(module.get_args_parser().parse_args([str(a) for a in argv]))

    common = ("--batch", 16, "--device", "cpu", "--no-progress")
    assert run(pretrain, "--model", "lwm-spectro-tiny", "--data", mobility_set, "--out",
               tmp_path / "bb", "--epochs", 1, *common) == 0
    assert run(finetune, "--task", "snr-mobility", "--backbone", tmp_path / "bb", "--data",
               mobility_set, "--mode", "probe", "--epochs", 1, "--out", tmp_path / "ad",
               *common) == 0
    config = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert config["task"] == "snr-mobility" and config["classes"] == SNR_MOBILITY_CLASSES
    capsys.readouterr()
    assert run(evaluate, "--model", tmp_path / "ad", "--data", mobility_set, "--json",
               "--device", "cpu") == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["task"] == "snr-mobility" and res["n"] > 0
