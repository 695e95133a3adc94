"""Benchmarks run on the machine's own BLAS kernel and say which; tests never do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.kernel import FORCED, check_same_kernel, describe_kernels, kernel_of  # noqa: E402

PROBE = """
import json, os, sys
sys.path.insert(0, {root!r})
from benchmarks.kernel import run_on_native_kernel
run_on_native_kernel("probe")
print(json.dumps({{k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                  "SNR_MOE_BENCH_UNSET")}}))
"""


def test_an_entry_point_starts_again_without_the_forcing_variables(tmp_path):
    (tmp_path / "probe.py").write_text(PROBE.format(root=str(ROOT)))
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576"}
    done = subprocess.run(
        [sys.executable, "probe.py"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["OPENBLAS_CORETYPE"] is None and seen["OPENBLAS_L2_SIZE"] is None
    assert "OPENBLAS_CORETYPE=Haswell" in seen["SNR_MOE_BENCH_UNSET"]


def test_this_test_process_keeps_its_environment():
    # The suite runs on whatever kernel CI forces: nothing here may unset it.
    before = {k: os.environ.get(k) for k in FORCED}
    describe_kernels([{"architecture": "Haswell"}], {})
    assert {k: os.environ.get(k) for k in FORCED} == before


def test_workers_on_another_kernel_are_refused():
    driver = [{"architecture": "SkylakeX"}]
    assert describe_kernels(driver, {"w1": driver})["driver"] == "SkylakeX"
    with pytest.raises(RuntimeError, match="another BLAS kernel"):
        describe_kernels(driver, {"w1": [{"architecture": "Haswell"}]})
    assert kernel_of([]) == "unknown"


def test_runs_on_different_kernels_never_share_a_table():
    a = {"machine": {"kernel": {"driver": "SkylakeX"}}}
    b = {"machine": {"kernel": {"driver": "Haswell"}}}
    assert check_same_kernel([a, a]) == "SkylakeX"
    with pytest.raises(ValueError, match="different BLAS kernels"):
        check_same_kernel([a, b])
