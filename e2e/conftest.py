"""Fixtures shared by every e2e suite."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import ProcSet  # noqa: E402


@pytest.fixture
def procs(tmp_path):
    """Start processes with procs.start(argv); they are stopped after the test, and the test
    fails if any of them printed a sanitizer report."""
    ps = ProcSet(tmp_path)
    yield ps
    reports = ps.cleanup()
    if reports:
        pytest.fail("sanitizer reports:\n" + "\n".join(reports))
