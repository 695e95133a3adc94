"""What a fresh clone needs: nothing tracked points outside the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tracked() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return [p for p in out.split("\0") if p]


def test_no_tracked_link_points_outside_the_repository():
    for rel in _tracked():
        path = ROOT / rel
        if path.is_symlink():
            target = os.readlink(path)
            assert not os.path.isabs(target), f"{rel} -> {target} is an absolute link"
            resolved = (path.parent / target).resolve()
            assert resolved.is_relative_to(ROOT), f"{rel} -> {target} leaves the repository"


def test_generated_outputs_are_ignored():
    ignored = subprocess.run(
        ["git", "check-ignore", "data/demo/train.zarr", "demo-output/report.md", ".snr-moe/x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == ["data/demo/train.zarr", "demo-output/report.md", ".snr-moe/x"]
