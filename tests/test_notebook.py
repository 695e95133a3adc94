"""notebooks/quickstart.ipynb runs from top to bottom and shows the report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def _kernel_name() -> str:
    """A kernel that runs this interpreter (so it imports the installed package).

    ipykernel's native spec is always available through KernelSpecManager; its
    ``python`` is replaced with ``sys.executable`` when the kernel starts.
    """
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(NATIVE_KERNEL_NAME)
    assert spec.argv[0] in ("python", "python3", sys.executable), spec.argv
    return NATIVE_KERNEL_NAME


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


def test_quickstart_runs_and_shows_report(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=_kernel_name(),
        timeout=300,
        startup_timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
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
    assert not list(tmp_path.iterdir()), "the notebook should work in its own temp directory"
