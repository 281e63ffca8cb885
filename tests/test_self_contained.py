"""The repository explains itself: no source, test, configuration or document points at a
tracker's issue numbers, at design notes kept elsewhere, or at folders and lock files outside
the checkout. What such a reference would say belongs in docs/ (see docs/architecture.md)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Folders that hold build outputs, environments, data or caches, not the project's own text.
SKIP_DIRS = {".git", ".venv", "build", "dist", ".cache", "runs", "data", ".demo", ".hypothesis", ".pytest_cache", "__pycache__"}
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".cfg", ".ini", ".txt"}
TEXT_NAMES = {"Makefile", "Dockerfile", "Dockerfile.cpu", "run"}

FORBIDDEN = {
    "an issue number": re.compile(r"\bissue\s?#?\d", re.IGNORECASE),
    "design notes outside the repository": re.compile(r"\bDESIGN\.md\b"),
    "a folder beside the checkout": re.compile(r"\.\./shared\b"),
    "a machine-wide lock file": re.compile(r"/tmp/" r"densekit-cpu\.lock"),  # split so this line does not match itself
}


def project_text_files() -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(ROOT):
        # Pruned in place, so environments and data folders are never walked.
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(folder) / name
            if (path.suffix in TEXT_SUFFIXES or name in TEXT_NAMES) and path != Path(__file__).resolve():
                out.append(path)
    return sorted(out)


def test_the_scan_sees_the_project():
    names = {p.relative_to(ROOT).as_posix() for p in project_text_files()}
    assert {"README.md", "docs/architecture.md", "densekit/settings.py", "tests/conftest.py", "Makefile"} <= names


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_no_reference_outside_the_repository(what):
    pattern = FORBIDDEN[what]
    hits = []
    for path in project_text_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:120]}")
    assert not hits, f"{len(hits)} line(s) refer to {what}:\n" + "\n".join(hits[:40])
