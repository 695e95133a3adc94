"""notebooks/quickstart.ipynb runs from top to bottom and shows the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"
KERNEL = "snr-moe-test-python"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch) -> str:
    """A kernel spec that runs this interpreter, so the kernel imports this package.

    It lives in a temporary JUPYTER_PATH entry (searched first), so neither a
    missing ``python3`` spec in a fresh venv nor a user's own ``python3`` spec
    pointing at another interpreter can get in the way.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": "snr-moe tests", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    assert KernelSpecManager().get_kernel_spec(KERNEL).argv[0] == sys.executable
    return KERNEL


def _outputs(nb, kind: str) -> list[str]:
    """Every ``kind`` (e.g. text/markdown) output of the notebook, as text."""
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and kind == "stream":
                texts.append(out["text"])
            data = out.get("data", {})
            if kind in data:
                value = data[kind]
                texts.append("".join(value) if isinstance(value, list) else value)
    return texts


def test_quickstart_runs_and_shows_report(kernel_name, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel_name,
        timeout=300,
        startup_timeout=120,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    markdown = "\n".join(_outputs(nb, "text/markdown"))
    assert "Dashboard: [http://127.0.0.1:" in markdown
    assert "| bin | SNR range | train N (%) | test N | expert R² | global R² |" in markdown
    assert "## Results per SNR bin" in markdown and "**Hypothesis" in markdown
    assert "| name | n_train | n_test | r2_expert | r2_global | delta_r2 |" in markdown
    assert len(_outputs(nb, "image/png")) >= 3, "expected the report figures"
    assert "R2 global" in "".join(_outputs(nb, "stream"))
    assert not list(cwd.iterdir()), "the notebook should write only to its own temp directory"
