"""Fixtures for the system tests (helpers live in sfm_testutil.py, on pytest's pythonpath)."""

import pytest

from sfm_testutil import make_scene


@pytest.fixture(scope="session")
def scene():
    return make_scene()
