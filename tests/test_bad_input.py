"""Bad input gets one clear line on stderr naming the input and the problem, and exit 2."""

import pytest

from sfm_testutil import SCENE_RATE, read_jsonl, run_cli, write_raw


def assert_one_line_error(res, *words):
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, res.stderr
    for word in words:
        assert word in errors[0], (word, errors[0])


def test_missing_file(tmp_path):
    path = tmp_path / "nope.cf32"
    assert_one_line_error(run_cli("run", path, "--fast", "-s", "1e6"), str(path), "no such file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.cf32"
    path.write_bytes(b"")
    assert_one_line_error(run_cli("run", path, "--fast", "-s", "1e6"), "empty.cf32", "empty")


def test_meta_not_json(tmp_path):
    meta = tmp_path / "bad.sigmf-meta"
    meta.write_text("{not json")
    (tmp_path / "bad.sigmf-data").write_bytes(b"\0" * 64)
    assert_one_line_error(run_cli("run", meta, "--fast"), "bad.sigmf-meta", "JSON")


def test_meta_unknown_datatype(tmp_path):
    meta = tmp_path / "odd.sigmf-meta"
    meta.write_text('{"global": {"core:datatype": "cq7_le", "core:sample_rate": 1e6, '
                    '"core:version": "1.0.0"}, "captures": [{"core:sample_start": 0}], "annotations": []}')
    (tmp_path / "odd.sigmf-data").write_bytes(b"\0" * 64)
    assert_one_line_error(run_cli("run", meta, "--fast"), "odd.sigmf-meta", "cq7_le")


def test_raw_without_rate(tmp_path, scene):
    path = write_raw(tmp_path / "norate.cf32", scene[:1000], "cf32")
    assert_one_line_error(run_cli("run", path, "--fast"), "norate.cf32", "sample rate")


@pytest.mark.parametrize("rate", ["0", "-1e6"])
def test_bad_rate(tmp_path, scene, rate):
    path = write_raw(tmp_path / "r.cf32", scene[:1000], "cf32")
    assert_one_line_error(run_cli("run", path, "--fast", "--samp-rate", rate), "samp-rate")


def test_bad_rate_in_metadata(tmp_path, scene):
    from sfm_testutil import write_sigmf

    meta = write_sigmf(tmp_path / "neg", scene[:1000], "cf32_le", rate=-5.0)
    assert_one_line_error(run_cli("run", meta, "--fast"), "neg.sigmf-meta", "sample rate")


def test_unknown_extension(tmp_path):
    path = tmp_path / "capture.xyz"
    path.write_bytes(b"\0" * 64)
    assert_one_line_error(run_cli("run", path, "--fast", "-s", "1e6"), "capture.xyz")


def test_truncated_reads_whole_samples_and_warns(tmp_path, scene):
    path = tmp_path / "trunc.cf32"
    path.write_bytes(scene.astype("<c8").tobytes() + b"\x01\x02\x03")
    out = tmp_path / "d.jsonl"
    res = run_cli("run", path, "--fast", "-s", SCENE_RATE, "--model", "energy-detector",
                  "--decisions", out, "--stats", tmp_path / "s.json")
    assert res.returncode == 0, res.stderr
    assert "truncated" in res.stderr
    assert "Traceback" not in res.stderr
    assert read_jsonl(out)


def test_unknown_task(tmp_path, scene):
    path = write_raw(tmp_path / "t.cf32", scene[:1000], "cf32")
    assert_one_line_error(run_cli("run", path, "-s", "1e6", "--tasks", "telepathy"), "telepathy")


def test_task_needing_a_model_says_so(tmp_path, scene):
    path = write_raw(tmp_path / "t.cf32", scene[:1000], "cf32")
    assert_one_line_error(run_cli("run", path, "-s", "1e6", "--model", "energy-detector",
                                  "--tasks", "technology"),
                          "technology", "model")


def test_unknown_model(tmp_path, scene):
    path = write_raw(tmp_path / "t.cf32", scene[:1000], "cf32")
    assert_one_line_error(run_cli("run", path, "-s", "1e6", "--model", "gpt-9"), "gpt-9")


def test_decisions_into_missing_directory(tmp_path, scene):
    path = write_raw(tmp_path / "t.cf32", scene[:1000], "cf32")
    assert_one_line_error(run_cli("run", path, "-s", "1e6", "--decisions", tmp_path / "no/d.jsonl"),
                          "no/d.jsonl")


def test_no_path_and_no_source():
    assert_one_line_error(run_cli("run"), "PATH")


def test_version():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("spectrumfm 0.")
