"""The one way a picture is written: tight layout, atomic PNG write, figure closed (no window, no leak)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vito.io import atomic_write  # noqa: E402


def save_figure(figure: Figure, path: str | Path, dpi: int = 100, tight: bool = False) -> Path:
    """Write ``figure`` as a PNG at ``path`` atomically and close it; ``tight`` crops to the drawn content."""
    path = Path(path)
    figure.tight_layout()
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi, bbox_inches="tight" if tight else None,
                       metadata={"Software": None})
    plt.close(figure)
    return path
