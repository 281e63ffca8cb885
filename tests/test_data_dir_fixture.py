"""The real datasets come only from DENSEKIT_DATA_DIR: without it (or with a folder that lacks
them) the tests that need them skip and say which variable to set, rather than guessing a folder
next to the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# The smallest test that needs the real data: it only reads WikiQA's pairs file.
NEEDS_DATA = "test_data.py::test_real_pairs_files_load"


def _run_pytest(env_data_dir: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DENSEKIT_DATA_DIR"}
    if env_data_dir is not None:
        env["DENSEKIT_DATA_DIR"] = env_data_dir
    cmd = [sys.executable, "-P", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", NEEDS_DATA]
    return subprocess.run(cmd, cwd=TESTS, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("env_data_dir", [None, "empty"])
def test_data_tests_skip_naming_the_variable(tmp_path, env_data_dir):
    folder = None if env_data_dir is None else str(tmp_path)
    proc = _run_pytest(folder)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 skipped" in out and "passed" not in out, out
    assert "DENSEKIT_DATA_DIR" in out, out
    if folder is not None:
        assert folder in out, "the skip names the folder it looked in"
