"""The dataset readers on small files written here in each real format, their bad inputs,
and the stratified split."""

import io
import json
import os
import pickle
import struct
import tarfile

import h5py
import numpy as np
import pytest

from spectrumfm.data import (
    RML2018_CLASSES, SENSING_CLASSES, IQDataset, open_dataset, split_indices,
)
from spectrumfm.errors import InputError


def iq_pairs_to_complex(a):
    """(k, 2, N) rows I and Q -> (k, N) complex64."""
    return (a[:, 0, :] + 1j * a[:, 1, :]).astype(np.complex64)


# ---------------------------------------------------------------- RadioML 2016.10a

class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2's str (BINSTRING), as in the real file written by Python 2,
    where Python 3 at protocol 2 would write a call to _codecs.encode instead."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


@pytest.fixture(params=["python2", "python3"])
def rml2016(tmp_path, request):
    rng = np.random.default_rng(0)
    # Inserted out of name order: labels must follow the sorted names, not the dict order.
    data = {(mod, snr): rng.standard_normal((3, 2, 128)).astype(np.float32)
            for mod in ("QPSK", "BPSK", "AM-DSB") for snr in (10, -2)}
    path = tmp_path / "RML2016.10a_dict.pkl"
    if request.param == "python2":
        buf = io.BytesIO()
        Python2Pickler(buf, protocol=2).dump({(m.encode(), s): a for (m, s), a in data.items()})
        path.write_bytes(buf.getvalue())
        assert b"_codecs" not in buf.getvalue()
    else:
        path.write_bytes(pickle.dumps(data, protocol=2))
    return path, data


def test_001_rml2016_values_labels_snr(rml2016):
    path, data = rml2016
    ds = open_dataset(f"rml2016:{path}")
    assert ds.classes == ["AM-DSB", "BPSK", "QPSK"]
    assert ds.iq.shape == (18, 128) and ds.iq.dtype == np.complex64
    assert ds.labels.dtype == np.int64 and ds.snr_db.dtype == np.float32
    assert ds.samp_rate is None
    for (mod, snr), arr in data.items():
        sel = (ds.labels == ds.classes.index(mod)) & (ds.snr_db == snr)
        np.testing.assert_array_equal(ds.iq[sel], iq_pairs_to_complex(arr))
    window, label, snr = ds[0]
    assert window.shape == (128,) and isinstance(label, int) and isinstance(snr, float)


def test_002_rml2016_cut_into_shorter_windows(rml2016):
    path, data = rml2016
    ds = open_dataset(f"rml2016:{path}", window_len=64)
    full = open_dataset(f"rml2016:{path}")
    assert len(ds) == 2 * len(full)
    np.testing.assert_array_equal(ds.iq.reshape(-1, 128), full.iq)
    np.testing.assert_array_equal(ds.frame_index, np.repeat(np.arange(18), 2))
    np.testing.assert_array_equal(ds.labels, np.repeat(full.labels, 2))


def test_003_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({("BPSK", 0): Evil()}, protocol=2))
    with pytest.raises(InputError, match=r"rml2016:.*evil\.pkl: unsafe pickle.*system"):
        open_dataset(f"rml2016:{path}")
    assert not marker.exists()

    class EvalEvil:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w')",)

    path.write_bytes(pickle.dumps(EvalEvil(), protocol=2))
    with pytest.raises(InputError, match=r"refused: it calls (__builtin__|builtins)\.eval"):
        open_dataset(f"rml2016:{path}")
    assert not marker.exists()


def test_004_rml2016_malformed(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(InputError, match=r"x\.pkl: not a RadioML 2016\.10a pickle"):
        open_dataset(f"rml2016:{path}")
    path.write_bytes(pickle.dumps({("BPSK", 0): np.zeros((2, 128), np.float32)}, protocol=2))
    with pytest.raises(InputError, match=r"BPSK at 0 dB is not a numeric \(k, 2, N\)"):
        open_dataset(f"rml2016:{path}")


# ---------------------------------------------------------------- RadioML 2018.01A

@pytest.fixture
def rml2018(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.array([0, 3, 23, 3, 5, 0])
    x = rng.standard_normal((6, 1024, 2)).astype(np.float32)
    z = np.array([[-20], [0], [30], [0], [-20], [-20]], np.int64)
    path = tmp_path / "GOLD_XYZ_OSC.0001_1024.hdf5"
    with h5py.File(path, "w") as f:
        f["X"] = x
        f["Y"] = np.eye(24, dtype=np.int64)[labels]
        f["Z"] = z
    return path, x, labels, z


def test_005_rml2018_windows_inherit_frame(rml2018):
    path, x, labels, z = rml2018
    with open_dataset(f"rml2018:{path}") as ds:
        assert ds.classes == RML2018_CLASSES and len(ds.classes) == 24
        assert ds.iq.shape == (48, 128) and len(ds) == 48
        np.testing.assert_array_equal(ds.labels, np.repeat(labels, 8))
        np.testing.assert_array_equal(ds.snr_db, np.repeat(z[:, 0], 8).astype(np.float32))
        np.testing.assert_array_equal(ds.frame_index, np.repeat(np.arange(6), 8))
        frames = x[..., 0] + 1j * x[..., 1]
        for i in (0, 7, 8, 21, 47):
            np.testing.assert_array_equal(ds.iq[i], frames[i // 8, (i % 8) * 128:][:128])
        # Any order, with repeats, as a sampler asks: the same as one window at a time.
        idx = np.array([47, 3, 3, 20, 0, 46])
        np.testing.assert_array_equal(ds.iq[idx], np.stack([ds.iq[int(i)] for i in idx]))
        assert ds[9][1:] == (3, 0.0)
        assert ds.classes[ds.labels[7]] == "OOK" and ds.classes[ds.labels[16]] == "OQPSK"


def test_006_rml2018_whole_frames_and_other_window(rml2018):
    path, x, labels, _ = rml2018
    ds = open_dataset(f"rml2018:{path}", whole_frames=True)
    assert ds.iq.shape == (6, 1024)
    np.testing.assert_array_equal(ds.iq[:], (x[..., 0] + 1j * x[..., 1]).astype(np.complex64))
    np.testing.assert_array_equal(ds.labels, labels)
    assert open_dataset(f"rml2018:{path}", window_len=256).iq.shape == (24, 256)
    with pytest.raises(InputError, match="1024 samples do not split into windows of 100"):
        open_dataset(f"rml2018:{path}", window_len=100)


def test_007_rml2018_malformed(tmp_path):
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as f:
        f["Y"] = np.eye(24)[[0, 1]]
        f["Z"] = np.zeros((2, 1))
    with pytest.raises(InputError, match=r"rml2018:.*bad\.hdf5: no dataset 'X'"):
        open_dataset(f"rml2018:{path}")
    with h5py.File(path, "a") as f:
        f["X"] = np.zeros((2, 1024, 2), np.float32)
        del f["Y"]
        f["Y"] = np.ones((2, 24))
    with pytest.raises(InputError, match="Y row 0 is not one-hot"):
        open_dataset(f"rml2018:{path}")
    text = tmp_path / "text.hdf5"
    text.write_text("hello")
    with pytest.raises(InputError, match=r"text\.hdf5: not an HDF5 file"):
        open_dataset(f"rml2018:{text}")


# ---------------------------------------------------------------- generator shards

def write_shard(path, iq, labels, snr, classes, rate=1e6):
    with h5py.File(path, "w") as f:
        f["iq"], f["label"], f["snr_db"] = iq, labels, snr
        f.attrs["classes"] = json.dumps(classes)
        f.attrs["samp_rate"] = rate


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(2)
    classes = ["bpsk", "noise", "qpsk"]
    iq = (rng.standard_normal((5, 256)) + 1j * rng.standard_normal((5, 256))).astype(np.complex64)
    labels = np.array([0, 1, 2, 2, 0], np.int64)
    snr = np.array([0, 5, 10, 15, 20], np.float32)
    write_shard(tmp_path / "shard-00000.h5", iq[:3], labels[:3], snr[:3], classes)
    write_shard(tmp_path / "shard-00001.h5", iq[3:], labels[3:], snr[3:], classes)
    (tmp_path / "dataset.json").write_text(json.dumps({"classes": classes, "length": 256}))
    return tmp_path, iq, labels, snr, classes


def test_008_shards_across_files(shards):
    path, iq, labels, snr, classes = shards
    ds = open_dataset(f"shards:{path}")
    assert ds.classes == classes and ds.samp_rate == 1e6 and ds.iq.shape == (10, 128)
    np.testing.assert_array_equal(ds.iq[:], iq.reshape(10, 128))
    np.testing.assert_array_equal(ds.iq[[9, 5, 4]], iq.reshape(10, 128)[[9, 5, 4]])
    np.testing.assert_array_equal(ds.labels, np.repeat(labels, 2))
    np.testing.assert_array_equal(ds.snr_db, np.repeat(snr, 2))
    np.testing.assert_array_equal(ds.frame_index, np.repeat(np.arange(5), 2))
    whole = open_dataset(f"shards:{path}", whole_frames=True)
    np.testing.assert_array_equal(whole.iq[:], iq)
    # Lazy arrays pickle without their file handles, as DataLoader workers need.
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(ds.iq))[[1, 8]], ds.iq[[1, 8]])


def test_009_shards_bad(shards, tmp_path_factory):
    path, iq, labels, snr, _ = shards
    with pytest.raises(InputError, match="do not split into windows of 100"):
        open_dataset(f"shards:{path}", window_len=100)
    write_shard(path / "shard-00002.h5", iq[:1], labels[:1], snr[:1], ["bpsk", "qpsk"])
    with pytest.raises(InputError, match=r"shard shard-00002\.h5: classes .* differ .* "
                                         r"shard shard-00000\.h5"):
        open_dataset(f"shards:{path}")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(InputError, match=r"no \*\.h5 shards"):
        open_dataset(f"shards:{empty}")
    (empty / "a.h5").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=r"shard a\.h5: not an HDF5 file"):
        open_dataset(f"shards:{empty}")


def test_010_tasks_relabel(shards, rml2018):
    path, *_ = shards
    sensing = open_dataset(f"shards:{path}", task="sensing")
    assert sensing.classes == SENSING_CLASSES
    np.testing.assert_array_equal(sensing.labels, np.repeat([1, 0, 1, 1, 1], 2))
    # RadioML has no noise class: as many pure-noise windows are added, seeded, vacant.
    rml = open_dataset(f"rml2018:{rml2018[0]}", task="sensing", seed=3)
    assert len(rml) == 96 and rml.labels[:48].all() and not rml.labels[48:].any()
    assert np.isnan(rml.snr_db[48:]).all()
    np.testing.assert_array_equal(rml.frame_index[48:], 6 + np.arange(48) // 8)
    noise = rml.iq[48:]
    np.testing.assert_array_equal(noise, open_dataset(f"rml2018:{rml2018[0]}", task="sensing",
                                                      seed=3).iq[48:])
    assert abs(np.mean(np.abs(noise) ** 2) - 1) < 0.1
    with pytest.raises(InputError, match="no normal class for the anomaly task"):
        open_dataset(f"rml2018:{rml2018[0]}", task="anomaly")
    with pytest.raises(InputError, match="unknown task 'weather'"):
        open_dataset(f"shards:{path}", task="weather")


# ---------------------------------------------------------------- SigMF

def write_sigmf(base, samples, annotations, rate=2e6):
    base.with_suffix(".sigmf-data").write_bytes(samples.astype(np.complex64).tobytes())
    meta = {"global": {"core:datatype": "cf32_le", "core:sample_rate": rate,
                       "core:version": "1.2.0"},
            "captures": [{"core:sample_start": 0, "core:frequency": 2.4e9}],
            "annotations": annotations}
    base.with_suffix(".sigmf-meta").write_text(json.dumps(meta))


@pytest.fixture
def sigmf_rec(tmp_path):
    x = (np.arange(2000) * (1 + 0.5j)).astype(np.complex64)
    anns = [{"core:sample_start": 100, "core:sample_count": 300, "core:label": "wifi",
             "spectrumfm:snr_db": 5.0},
            {"core:sample_start": 500, "core:sample_count": 128, "core:label": "lte"},
            {"core:sample_start": 700, "core:sample_count": 400, "core:comment": "unlabelled"},
            {"core:sample_start": 1900, "core:sample_count": 500, "core:label": "ble"}]
    write_sigmf(tmp_path / "scene", x, anns)
    return tmp_path / "scene", x


def test_011_sigmf_annotations_to_windows(sigmf_rec):
    base, x = sigmf_rec
    ds = open_dataset(f"sigmf:{base}.sigmf-meta")
    # ble runs past the end: 100 samples remain, less than a window, so it is left out.
    assert ds.classes == ["lte", "wifi"] and ds.samp_rate == 2e6
    assert ds.iq.shape == (3, 128)
    np.testing.assert_array_equal(ds.iq[:], np.stack([x[100:228], x[228:356], x[500:628]]))
    np.testing.assert_array_equal(ds.labels, [1, 1, 0])
    np.testing.assert_array_equal(ds.frame_index, [0, 0, 1])
    assert ds.snr_db[0] == 5.0 and np.isnan(ds.snr_db[2])
    assert len(open_dataset(f"sigmf:{base}", window_len=64)) == 4 + 2 + 1   # ble now fits one


def test_012_sigmf_folder_and_archive(sigmf_rec, tmp_path):
    base, x = sigmf_rec
    write_sigmf(tmp_path / "other", x[::-1], [{"core:sample_start": 0, "core:sample_count": 256,
                                              "core:label": "nr", "spectrumfm:snr_db": -3}])
    ds = open_dataset(f"sigmf:{tmp_path}")
    assert ds.classes == ["lte", "nr", "wifi"] and len(ds) == 5
    np.testing.assert_array_equal(ds.iq[[0, 1]], x[::-1][:256].reshape(2, 128))
    np.testing.assert_array_equal(ds.frame_index, [0, 0, 1, 1, 2])
    archive = tmp_path / "arch" / "scene.sigmf"
    archive.parent.mkdir()
    with tarfile.open(archive, "w") as tar:
        for suffix in (".sigmf-meta", ".sigmf-data"):
            tar.add(base.with_suffix(suffix), arcname=f"scene/scene{suffix}")
    from_archive = open_dataset(f"sigmf:{archive}")
    np.testing.assert_array_equal(from_archive.iq[:], open_dataset(f"sigmf:{base}").iq[:])
    with pytest.raises(InputError, match="SigMF annotations vary in length"):
        open_dataset(f"sigmf:{base}", whole_frames=True)


def test_013_sigmf_bad(tmp_path):
    write_sigmf(tmp_path / "r", np.zeros(300), [{"core:sample_start": 0, "core:label": 7}])
    with pytest.raises(InputError, match=r"annotation 0: core:label must be non-empty text"):
        open_dataset(f"sigmf:{tmp_path / 'r'}")
    write_sigmf(tmp_path / "r", np.zeros(300), [{"core:sample_start": 0, "core:label": "a",
                                                 "x:snr_db": "high"}])
    with pytest.raises(InputError, match="x:snr_db must be a finite number"):
        open_dataset(f"sigmf:{tmp_path / 'r'}")
    write_sigmf(tmp_path / "r", np.zeros(300), [])
    with pytest.raises(InputError, match="no annotation with a core:label"):
        open_dataset(f"sigmf:{tmp_path / 'r.sigmf-meta'}")


# ---------------------------------------------------------------- specs, torch

def test_014_bad_specs(tmp_path):
    with pytest.raises(InputError, match=r"^foo:x: unknown dataset kind 'foo'"):
        open_dataset("foo:x")
    with pytest.raises(InputError, match=r"^data\.h5: no dataset kind"):
        open_dataset("data.h5")
    missing = tmp_path / "nope.hdf5"
    with pytest.raises(InputError, match=rf"^rml2018:{missing}: no such file or directory$"):
        open_dataset(f"rml2018:{missing}")
    with pytest.raises(InputError, match="window length must be a whole number >= 1"):
        open_dataset(f"rml2018:{missing}", window_len=0)


def test_015_torch_adapter(rml2018):
    torch = pytest.importorskip("torch")
    ds = open_dataset(f"rml2018:{rml2018[0]}")
    loader = torch.utils.data.DataLoader(ds.torch(), batch_size=5, shuffle=False)
    iq, labels, snr = next(iter(loader))
    assert iq.dtype == torch.complex64 and iq.shape == (5, 128)
    assert labels.dtype == torch.int64 and snr.dtype == torch.float32
    np.testing.assert_array_equal(iq.numpy(), ds.iq[:5])
    sub = ds.subset([40, 2])
    assert isinstance(sub, IQDataset) and sub.labels.tolist() == [ds.labels[40], ds.labels[2]]
    np.testing.assert_array_equal(sub.torch()[0][0].numpy(), ds.iq[40])


# ---------------------------------------------------------------- split

def test_016_split_stratified_disjoint_reproducible():
    labels = np.repeat(np.arange(3), 200)
    snr = np.tile(np.repeat([-10.0, 0.0, 10.0, np.nan], 50), 3).astype(np.float32)
    train, val, test = split_indices(labels, snr, seed=0)
    assert len(np.intersect1d(train, val)) == len(np.intersect1d(train, test)) == 0
    assert len(np.intersect1d(val, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val, test])), np.arange(600))
    for c in range(3):
        for s in (-10.0, 0.0, 10.0, np.nan):
            stratum = (labels == c) & ((snr == s) | (np.isnan(snr) & np.isnan(s)))
            assert [stratum[part].sum() for part in (train, val, test)] == [40, 5, 5]
    again = split_indices(labels, snr, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(train, split_indices(labels, snr, seed=1)[0])


def test_017_split_small_strata_and_groups():
    rng = np.random.default_rng(5)
    labels, snr = rng.integers(0, 4, 3000), rng.choice([-4.0, 2.0, 8.0], 3000)
    train, val, test = split_indices(labels, snr, fractions=(0.6, 0.2, 0.2), seed=7)
    assert abs(len(train) / 3000 - 0.6) < 0.01 and abs(len(val) / 3000 - 0.2) < 0.01
    frame = np.repeat(np.arange(100), 8)
    parts = split_indices(np.repeat(labels[:100], 8), np.repeat(snr[:100], 8), seed=0,
                          groups=frame)
    for part in parts:
        assert np.isin(frame, frame[part]).sum() == len(part)   # whole frames only
    assert sum(len(p) for p in parts) == 800
    with pytest.raises(ValueError, match="fractions"):
        split_indices(labels, snr, fractions=(0.5, 0.2, 0.2))


def test_018_h5_rows_scattered_and_contiguous(tmp_path):
    from spectrumfm.data.dataset import H5Rows
    rows = np.arange(300 * 4, dtype=np.float32).reshape(300, 4)
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f.create_dataset("a", data=rows, chunks=(16, 4))
    reader = H5Rows(str(tmp_path / "r.h5"), "a", 300)
    for idx in ([0, 1, 2, 150, 151, 299], [5], list(range(10, 40)), [0, 299]):
        np.testing.assert_array_equal(reader.rows(np.array(idx)), rows[idx])
    reader.close()
