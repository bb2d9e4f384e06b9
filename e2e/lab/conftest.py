"""Fixtures for the lab suite; the helpers themselves are in labkit.py.

`lab` (session): makes sure the lab is up, running lab/up.sh if needed, and
skips the test when not root (namespaces need it). If this session brought the
lab up, it takes it down again at the end (unless SLUICE_LAB_KEEP=1) and fails
if lab/down.sh left anything behind.
"""
import os

import pytest

import labkit


@pytest.fixture(scope="session")
def lab():
    if not labkit.is_root():
        pytest.skip("the lab needs root (it creates network namespaces): "
                    "run as root, e.g. sudo make lab-test")
    started = False
    if not labkit.lab_is_up():
        labkit.lab_up()
        started = True
    yield labkit
    if started and os.environ.get("SLUICE_LAB_KEEP") != "1":
        labkit.lab_down()
        assert not labkit.leftovers(), f"lab/down.sh left: {labkit.leftovers()}"
