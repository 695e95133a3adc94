"""One canvas for every figure: its size and resolution, the colours, and saving.

Every figure is built on its own :class:`matplotlib.figure.Figure` and written
with ``fig.savefig``. Pyplot is never imported, so no global figure state is
shared and drawing is safe from worker threads.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

DPI = 120
GLOBAL_COLOR = "#7f7f7f"
MOE_COLOR = "#1f77b4"


def new_figure(width: float, height: float) -> Figure:
    """A new figure of ``width`` x ``height`` inches."""
    # Constrained layout keeps labels, colorbars and titles from overlapping
    # without hand-tuned margins.
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG to ``path`` (its folder created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path
