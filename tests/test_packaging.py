"""The built wheel installs exactly one top-level import package, densekit.

Builds the wheel from the repository (pip wheel, in an isolated build environment), checks
the names at its top level, then installs it into a folder of its own and imports it from
there with the repository root off sys.path: densekit.eval works, a bare `eval` does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}")
    (found,) = out.glob("densekit-*.whl")
    return found


def test_wheel_has_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert top - dist_info == {"densekit"}
    # The mapped folders land inside the package, with their subpackages.
    for module in (
        "densekit/eval/suite.py",
        "densekit/index/dense_index.py",
        "densekit/service/routes/search.py",
        "densekit/training/losses/mw.py",
        "densekit/rerankers/llm.py",
        "densekit/demo/guide.md",
    ):
        assert module in names, module


def test_installed_wheel_imports_densekit_and_no_bare_eval(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True, timeout=300
    )
    code = (
        "import densekit, densekit.index, densekit.eval, densekit.service, densekit.training, densekit.eval.suite\n"
        f"assert densekit.__file__.startswith({str(target)!r}), densekit.__file__\n"
        f"assert densekit.eval.suite.__file__.startswith({str(target)!r}), densekit.eval.suite.__file__\n"
        "try:\n"
        "    import eval.suite\n"
        "except ModuleNotFoundError:\n"
        "    print('no bare eval')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-P", "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no bare eval"
