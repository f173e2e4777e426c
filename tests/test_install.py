"""The install works from a clean shell: no PYTHONPATH, another directory, the venv's python."""

import os
import subprocess
import sys

from sfm_testutil import ROOT, SPECTRUMFM

CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}


def clean(cmd, tmp_path):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=CLEAN_ENV, timeout=120)


def test_module_imports_from_clean_shell(tmp_path):
    res = clean([sys.executable, "-c",
                 "from gnuradio import spectrumfm, gr; import spectrumfm as core;"
                 "print(spectrumfm.__file__); print(core.__file__);"
                 "print(spectrumfm.file_source, spectrumfm.analysis_chain, spectrumfm.zmq_publisher)"],
                tmp_path)
    assert res.returncode == 0, res.stderr
    paths = res.stdout.splitlines()[:2]
    for p in paths:  # the installed copy, not the source tree
        assert str(ROOT / ".venv") in p and "gr-spectrumfm/python" not in p, p


def test_command_on_venv_path(tmp_path):
    assert SPECTRUMFM.exists()
    res = clean([str(SPECTRUMFM), "--version"], tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("spectrumfm "), res.stderr


def test_grc_blocks_installed():
    installed = ROOT / ".venv/share/gnuradio/grc/blocks"
    source = sorted(p.name for p in (ROOT / "gr-spectrumfm/grc").glob("*.block.yml"))
    assert source
    for name in source:
        assert (installed / name).exists(), name


def test_every_block_has_yml_and_qa():
    """STYLE: one block per file, one name end to end (block.py, grc yml, qa test)."""
    pkg = ROOT / "gr-spectrumfm/python/gnuradio/spectrumfm"
    helpers = {"__init__", "pmtutil"}
    blocks = [p.stem for p in pkg.glob("*.py") if not p.stem.startswith("qa_") and p.stem not in helpers]
    assert blocks
    for name in blocks:
        assert (ROOT / f"gr-spectrumfm/grc/spectrumfm_{name}.block.yml").exists(), name
    for name in blocks:
        assert (pkg / f"qa_{name}.py").exists(), name


def test_make_install_is_idempotent():
    res = subprocess.run(["make", "-s", "install"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr + res.stdout
    # A second run only checks and copies; it never reinstalls packages.
    assert "Installing Debian packages" not in res.stdout
    assert "pip install" not in res.stdout
