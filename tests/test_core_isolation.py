"""The ML core imports neither GNU Radio nor Qt, so training runs where only PyTorch is.

A fresh interpreter with an import hook that makes `gnuradio`, `pmt`, `PyQt5`, `PyQt6`,
`PySide6` and `pyqtgraph` unimportable imports every module of the `spectrumfm` package.
"""

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent("""
    import importlib.abc, importlib, pkgutil, sys

    FORBIDDEN = {"gnuradio", "pmt", "PyQt5", "PyQt6", "PySide6", "pyqtgraph", "osmosdr"}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"{name} is made unimportable for this test")
            return None

    sys.meta_path.insert(0, Block())
    import spectrumfm
    names = [m.name for m in pkgutil.walk_packages(spectrumfm.__path__, "spectrumfm.")]
    for name in names:
        importlib.import_module(name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    assert not loaded, loaded
    print(len(names), "modules")
""")


def test_core_imports_without_gnuradio_or_qt(tmp_path):
    res = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert int(res.stdout.split()[0]) >= 3  # schema, errors, recording at least


def test_blocker_really_blocks(tmp_path):
    """The hook itself works: importing gnuradio under it fails."""
    code = BLOCKER.split("import spectrumfm")[0] + "import gnuradio\n"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode != 0 and "unimportable" in res.stderr
